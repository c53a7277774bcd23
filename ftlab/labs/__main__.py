import sys

from ftlab.labs.generate import main

sys.exit(main())

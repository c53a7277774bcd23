"""`python -m ftlab ...`: the `ftlab` command, where the environment's scripts folder is not
on PATH (a notebook kernel's `!python -m ftlab check`, say)."""

import sys

from ftlab.cli import main

sys.exit(main())

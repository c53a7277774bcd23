"""`python -m ftlab.server ARGS` is `ftlab serve ARGS` (used by `start_server`)."""

import sys

from ftlab.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))

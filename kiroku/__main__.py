"""``python -m kiroku``: the ``kiroku`` command, for a venv whose scripts are not on PATH."""

import sys

from kiroku.cli import main

sys.exit(main())

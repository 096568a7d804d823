"""``python -m stockops``: the command line of :mod:`stockops.cli`."""

import sys

from stockops.cli import main

sys.exit(main())

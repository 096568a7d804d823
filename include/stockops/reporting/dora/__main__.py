"""``python -m stockops.reporting.dora``: the same as ``python -m stockops dora``."""

import sys

from stockops.reporting.dora import main

sys.exit(main())

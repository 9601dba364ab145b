"""``python -m incasem``: the command line."""

import sys

from incasem.cli import main

sys.exit(main())

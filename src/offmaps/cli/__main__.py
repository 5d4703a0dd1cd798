"""``python -m offmaps.cli``."""

import sys

from offmaps.cli import main

sys.exit(main())

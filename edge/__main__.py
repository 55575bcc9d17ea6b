"""``python -m edge`` is ``edge-tsm``."""
import sys

from edge.cli import main

sys.exit(main())

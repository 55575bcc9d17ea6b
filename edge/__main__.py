"""``python -m edge`` is ``edge-tsm``."""
import sys

from edge.cli import main

if __name__ == "__main__":  # not when a spawned or fork-server child imports it (the training loader's workers)
    sys.exit(main())

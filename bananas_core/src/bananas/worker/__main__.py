"""``python -m bananas.worker APP [options]``: the same as ``bananas worker APP``."""

import sys

from bananas.worker.command import main

if __name__ == "__main__":
    sys.exit(main())

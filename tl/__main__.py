"""Entry point of ``python -m tl``."""

import sys

from tl.cli import main

if __name__ == "__main__":
    sys.exit(main())

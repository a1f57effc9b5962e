"""``python -m cxrlib``: the command line of :mod:`cxrlib.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

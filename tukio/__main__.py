"""``python -m tukio``: the ``tukio`` command line."""

import sys

from tukio.cli import main

if __name__ == "__main__":
    sys.exit(main())

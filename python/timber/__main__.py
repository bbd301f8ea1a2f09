"""``python -m timber``: the same as the ``timber`` command."""

import sys

from timber.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m flowdag.cli``: the same as the ``flowdag`` command."""

import sys

from flowdag.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m checkbox_dist ...` is the same as the `checkbox-dist` command."""

import sys

from checkbox_dist.cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn re-imports this module in a worker
    sys.exit(main())

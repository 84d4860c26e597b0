"""python -m checkbox_dist.train --config C [overrides]: the same as `checkbox-dist train` (an entry point,
like the root train.py; it is the command line's, not the library's)."""

import sys

from checkbox_dist.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))

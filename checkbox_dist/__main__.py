"""`python -m checkbox_dist ...` is the same as the `checkbox-dist` command."""

import sys

from checkbox_dist.cli import main

sys.exit(main())

"""`python -m ramster` is the `ramster` command."""

import sys

from ramster.cli import main

sys.exit(main())

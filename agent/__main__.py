"""`python -m agent` is the same as the `dutytail` command."""

import sys

from agent.cli import main

sys.exit(main())

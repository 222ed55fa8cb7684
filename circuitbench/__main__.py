"""`python -m circuitbench`: the command line."""

import sys

from circuitbench.cli import main

sys.exit(main())

"""`posterm-fleet` and `python -m fleet`: the command line (fleet/cli.py)."""

from __future__ import annotations

import sys

from fleet.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench``: run the load scenarios and print the tables."""

from __future__ import annotations

import sys

from bench.cli import main

sys.exit(main())

"""`python -m dsh` runs the command-line interface."""

from __future__ import annotations

import sys

from dsh.cli import main

sys.exit(main())

"""`python -m dsh` runs the command-line interface."""

from __future__ import annotations

from dsh.cli import entry

entry()

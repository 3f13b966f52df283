"""dsh: an interactive distributed shell whose sessions live in a store."""

from __future__ import annotations

__version__ = "0.1.0"

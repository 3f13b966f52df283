"""Remote execution: the Remote protocol and its implementations (local shell; SSH later)."""

from __future__ import annotations

"""The executor: host flows, timeouts, retries, bindings and result sets."""

from __future__ import annotations

"""The conformance suite runs against every Store implementation (tests.helpers.storekinds)."""

from tests.helpers.storekinds import kind, store

__all__ = ["kind", "store"]

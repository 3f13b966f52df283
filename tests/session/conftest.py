"""The session's protocols hold on every Store implementation (tests.helpers.storekinds)."""

from tests.helpers.storekinds import kind, store

__all__ = ["kind", "store"]

"""The conformance suite runs against every Store implementation.

A `StoreKind` opens fresh stores for a test (several handles on one store,
as separate processes would have) and names the store for a subprocess, so
that races between processes are real. The etcd adapter will add its kind
here and must pass the same tests unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dsh.store.base import Store
from dsh.store.sqlite import SqliteStore


@dataclass
class StoreKind:
    name: str
    spec: str  # how tests/store/racer.py opens the same store in another process
    min_ttl: float  # the shortest lease TTL the implementation honours
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        kind, _, where = self.spec.partition(":")
        assert kind == "sqlite"
        store = SqliteStore(where, poll_interval=0.01)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite"])
async def kind(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreKind]:
    found = StoreKind("sqlite", f"sqlite:{tmp_path / 'store.db'}", min_ttl=0.5)
    yield found
    for store in found.opened:
        await store.close()


@pytest.fixture
def store(kind: StoreKind) -> Store:
    return kind.open()

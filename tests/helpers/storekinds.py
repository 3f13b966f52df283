"""Stores of every kind for tests that hold for each (the conformance suite, the
session's control protocol).

A `StoreKind` opens fresh stores for a test (several handles on one store,
as separate processes would have) and names the store for a subprocess, so
that races between processes are real. The SQLite store gets a new file per
test and etcd a new single-member server per test (revisions start afresh,
as the tests expect). A conftest takes the fixtures with
`from tests.helpers.storekinds import kind, store`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dsh.store import open_store
from dsh.store.base import Store
from dsh.store.sqlite import SqliteStore
from tests.etcd import Etcd


@dataclass
class StoreKind:
    name: str
    spec: str  # the store's URL: tests/store/racer.py opens the same store in another process
    min_ttl: float  # the shortest lease TTL the implementation honours
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        if self.spec.startswith("sqlite://"):
            store: Store = SqliteStore(self.spec.removeprefix("sqlite://"), poll_interval=0.01)
        else:
            store = open_store(self.spec, {})
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "etcd"])
async def kind(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreKind]:
    server = None
    if request.param == "sqlite":
        found = StoreKind("sqlite", f"sqlite://{tmp_path / 'store.db'}", min_ttl=0.5)
    else:
        server = Etcd().start()
        # Election settings of tests/etcd.py make etcd's shortest lease 1 s.
        found = StoreKind("etcd", server.url, min_ttl=1.0)
    try:
        yield found
    finally:
        for store in found.opened:
            await store.close()
        if server is not None:
            server.stop()


@pytest.fixture
def store(kind: StoreKind) -> Store:
    return kind.open()

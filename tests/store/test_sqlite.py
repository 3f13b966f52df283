"""What only the embedded SQLite store does: its file, its locks, its schema."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from dsh.errors import StoreError
from dsh.store.base import Compacted, LeaseNotFound, StoreTimeout
from dsh.store.sqlite import SqliteStore, default_path


async def test_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "deep" / "store.db")
    try:
        await store.put(b"k", b"v", timeout=5)
    finally:
        await store.close()
    path = tmp_path / "deep" / "store.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_path_follows_xdg_state_home(tmp_path: Path) -> None:
    assert default_path({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "dsh" / "store.db"
    assert default_path({"HOME": "/home/u"}) == Path("/home/u/.local/state/dsh/store.db")


async def test_a_locked_store_times_out_within_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path, busy_timeout=0.3)
    await store.put(b"k", b"v", timeout=5)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        started = time.monotonic()
        with pytest.raises(StoreTimeout):
            await store.put(b"k", b"w", timeout=5)
        assert time.monotonic() - started < 3
        with pytest.raises(StoreTimeout):
            await store.put(b"k", b"w", timeout=0.1)  # the call's own timeout
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        await store.close()


async def test_a_write_that_finds_the_lock_held_waits_for_it_on_the_worker(tmp_path: Path) -> None:
    """Short calls are tried on the loop's thread without waiting for a lock; one
    that finds it held must not fail, nor half-apply, but wait on the worker."""
    import asyncio
    import threading

    path = tmp_path / "store.db"
    store = SqliteStore(path, busy_timeout=5)
    try:
        await store.put(b"k", b"v", timeout=5)
        lease = await store.grant(30, timeout=5)
        blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        threading.Timer(0.3, lambda: blocker.execute("ROLLBACK")).start()
        put = asyncio.ensure_future(store.put(b"k", b"w", lease=lease.id, timeout=5))
        await asyncio.sleep(0.1)
        assert not put.done()  # waiting for the lock, not failed
        revision = await put
        kv = await store.get(b"k", timeout=5)
        assert kv is not None and (kv.value, kv.mod_revision, kv.version, kv.lease) == (
            b"w",
            revision,
            2,
            lease.id,
        )
        events = [e async for e in _first(await store.watch(b"k", start_revision=1, timeout=5))]
        assert [e.kv.value for e in events] == [b"v", b"w"]  # each write once, in order
        blocker.close()
    finally:
        await store.close()


async def test_a_write_given_up_on_still_lands_before_the_writes_after_it(tmp_path: Path) -> None:
    """A caller that timed out retries and goes on (the checkpointer does); the
    first try, still waiting on the worker, must not land after what follows."""
    import asyncio

    path = tmp_path / "store.db"
    store = SqliteStore(path, busy_timeout=5)
    try:
        await store.put(b"k", b"v0", timeout=5)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with pytest.raises(StoreTimeout):
            await store.put(b"k", b"v1", timeout=0.3)  # given up on; it waits on the worker
        blocker.execute("COMMIT")
        blocker.close()
        await store.put(b"k", b"v1", timeout=5)  # the retry
        await store.put(b"k", b"v2", timeout=5)
        await asyncio.sleep(0.3)
        kv = await store.get(b"k", timeout=5)
        assert kv is not None and kv.value == b"v2"
    finally:
        await store.close()


async def _first(watch):  # type: ignore[no-untyped-def]
    async for batch in watch:
        for event in batch:
            yield event
        return


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    await store.put(b"k", b"v", timeout=5)
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 99 WHERE name = 'schema'")
    again = SqliteStore(path)
    try:
        with pytest.raises(StoreError, match="newer dsh"):
            await again.get(b"k", timeout=5)
    finally:
        await again.close()


async def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not sqlite" * 100)
    store = SqliteStore(path)
    try:
        with pytest.raises(StoreError, match="not a dsh store"):
            await store.get(b"k", timeout=5)
    finally:
        await store.close()


async def test_history_is_compacted_as_writes_go(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", history_keep=100)
    try:
        for i in range(1000):
            await store.put(b"k", str(i).encode(), timeout=5)
        with pytest.raises(Compacted):
            await store.watch(b"k", start_revision=2, timeout=5)
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "store.db") as db:
        assert db.execute("SELECT COUNT(*) FROM history").fetchone()[0] <= 100 + 10


async def test_low_a_zero_length_store_file_is_refused_as_damaged(tmp_path: Path) -> None:
    # Lower-priority observation: an empty store.db was silently taken for a new store.
    path = tmp_path / "store.db"
    path.write_bytes(b"")
    store = SqliteStore(path)
    with pytest.raises(StoreError, match="an empty file: damaged, not a new store"):
        await store.get(b"k", timeout=5)
    await store.close()
    assert path.stat().st_size == 0  # left as it was, for the user to look at


async def test_a_new_store_appears_whole(tmp_path: Path) -> None:
    stores = [SqliteStore(tmp_path / "store.db") for _ in range(4)]
    try:
        await asyncio.gather(*(s.put(b"k%d" % i, b"v", timeout=10) for i, s in enumerate(stores)))
        kvs, _ = await stores[0].range(b"k", timeout=5)
        assert len(kvs) == 4
    finally:
        for s in stores:
            await s.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no file left half made


async def test_low_leases_do_not_follow_the_wall_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lower-priority observation: a clock step expired every lease of the embedded store.
    store = SqliteStore(tmp_path / "store.db")
    try:
        lease = await store.grant(2.0, timeout=5)
        await store.put(b"owner", b"me", lease=lease.id, timeout=5)
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 3600)  # the wall clock jumps an hour
        assert await store.keepalive(lease.id, timeout=5) == 2.0
        assert await store.get(b"owner", timeout=5) is not None
    finally:
        await store.close()


async def test_a_lease_of_another_boot_is_over(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    try:
        lease = await store.grant(60.0, timeout=5)
        await store.put(b"owner", b"before the reboot", lease=lease.id, timeout=5)
        with sqlite3.connect(path, isolation_level=None) as db:
            db.execute("UPDATE leases SET boot = 'an-earlier-boot'")
        assert await store.get(b"owner", timeout=5) is None
        with pytest.raises(LeaseNotFound):
            await store.keepalive(lease.id, timeout=5)
    finally:
        await store.close()


async def test_a_store_of_schema_1_is_upgraded_and_its_wall_clock_leases_end(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with sqlite3.connect(path, isolation_level=None) as db:  # what dsh wrote before schema 2
        db.executescript(
            """
            CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
                mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL) WITHOUT ROWID;
            CREATE TABLE history (rev INTEGER NOT NULL, sub INTEGER NOT NULL, kind INTEGER NOT NULL,
                key BLOB NOT NULL, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
                version INTEGER NOT NULL, lease INTEGER NOT NULL, PRIMARY KEY (rev, sub)) WITHOUT ROWID;
            CREATE TABLE leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expires REAL NOT NULL);
            INSERT INTO meta VALUES ('schema', 1), ('revision', 3), ('compacted', 0);
            INSERT INTO kv VALUES (X'6b', X'76', 2, 2, 1, 0), (X'6f', X'6d65', 3, 3, 1, 7);
            INSERT INTO leases VALUES (7, 5.0, 99999999999.0);
            PRAGMA user_version=1;
            """
        )
    store = SqliteStore(path)
    try:
        held = await store.get(b"k", timeout=5)
        assert held is not None and held.value == b"v"  # what it held is kept
        assert await store.get(b"o", timeout=5) is None  # a wall-clock lease is over
        lease = await store.grant(5.0, timeout=5)
        await store.put(b"o", b"new", lease=lease.id, timeout=5)
        assert await store.keepalive(lease.id, timeout=5) == 5.0
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2

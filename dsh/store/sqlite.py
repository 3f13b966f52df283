"""The embedded store: SQLite in WAL mode, with etcd's semantics, for one machine.

Several processes share one database file. Writers serialise with
`BEGIN IMMEDIATE` under a bounded busy timeout; each transaction that changes
something takes the next revision and records its events in a history table,
which watches poll. Leases expire on the wall clock: whoever reads, writes or
polls first deletes the keys of dead leases, at a new revision, so watchers
see it. History older than `history_keep` revisions is compacted as writes go.

Short calls (point reads, transactions, leases) are first tried on the event
loop's own thread, on a second connection that never waits for a lock: most
take a fraction of a millisecond, less than the hop to a thread and back. A
call that finds the database locked (by another process, or by this store's
worker) goes to the worker, and so does every call while the worker still has
one (even one whose caller gave up on it): calls land in the order they were
made. Everything else, and everything that waits for a lock, happens on one
worker thread per store; the event loop only waits for it, with the call's
timeout. (A call that times out may still finish: the caller must treat it as
unknown, exactly as with etcd.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from dsh import state
from dsh.errors import StoreError
from dsh.store.base import (
    KV,
    Compacted,
    Compare,
    Delete,
    Event,
    Lease,
    LeaseNotFound,
    Op,
    Put,
    StoreTimeout,
    TxnResult,
    check_request,
    prefix_end,
)

#: 2: leases count on this machine's monotonic clock, for the boot they name (1: the wall clock).
SCHEMA_VERSION = 2
#: Revisions a watch reads per poll.
WATCH_WINDOW = 500
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL, version INTEGER NOT NULL, lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS history (
    rev INTEGER NOT NULL, sub INTEGER NOT NULL, kind INTEGER NOT NULL, key BLOB NOT NULL,
    value BLOB NOT NULL, create_rev INTEGER NOT NULL, version INTEGER NOT NULL,
    lease INTEGER NOT NULL, PRIMARY KEY (rev, sub)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expires REAL NOT NULL, boot TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS leases_expires ON leases (expires);
"""
_PUT, _DELETE = 0, 1
#: One statement per put (SQLite >= 3.35): a new key starts at version 1, an old one counts up.
_UPSERT = (
    "INSERT INTO kv VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
    "mod_rev = excluded.mod_rev, version = version + 1, lease = excluded.lease RETURNING create_rev, version"
)


def default_path(env: Mapping[str, str]) -> Path:
    """The embedded store's file, in the private state directory (dsh.state)."""
    return state.directory(env) / "store.db"


class SqliteStore:
    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout: float = 5.0,
        poll_interval: float = 0.02,
        history_keep: int = 100_000,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = Path(path)
        #: Leases count on the monotonic clock of this boot (every process on the machine
        #: shares it; a wall-clock step or a suspend does not expire them), and a lease
        #: of another boot is over: its processes are gone.
        self.boot = _boot_id()
        clock = clock or (time.monotonic if self.boot else time.time)
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self.history_keep = history_keep
        self.clock = clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsh-sqlite")
        self._db: sqlite3.Connection | None = None
        #: The event loop thread's connection (busy timeout 0), opened on first use.
        self._quick: sqlite3.Connection | None = None
        #: Calls handed to the worker and not yet over (cancelled ones included).
        self._pending: set[Future[Any]] = set()
        self.closed = False

    @property
    def name(self) -> str:
        return f"local:{self.path}"

    # -- the worker thread --------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, timeout: float, quick: bool = False) -> T:
        """Run fn(connection, *args) on the worker thread, within `timeout`. A `quick`
        call is tried first on this thread, without waiting for any lock, when
        the worker has nothing left to do: not even a call whose caller gave up
        on it (it may still land, and what is called after it must land after
        it). Each fn is one transaction: a lock found held undoes it whole."""
        if self.closed and self._db is None:
            raise StoreError(f"the store at {self.path} is closed")
        if quick and self._db is not None and not self.closed and not self._worker_busy():
            db = self._quick
            try:
                if db is None:
                    db = self._quick = sqlite3.connect(self.path, timeout=0, isolation_level=None)
                    db.execute("PRAGMA synchronous=NORMAL")
                return fn(db, *args)
            except BaseException as exc:  # a signal's exception too: never leave the lock held
                if db is not None and db.in_transaction:
                    db.execute("ROLLBACK")
                if not isinstance(exc, sqlite3.DatabaseError):
                    raise
                if not isinstance(exc, sqlite3.OperationalError) or not _locked(exc):
                    raise self._failed(exc) from exc
        work = self._thread.submit(self._guarded, fn, *args)
        self._pending.add(work)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(work), timeout)
        except TimeoutError:
            raise StoreTimeout(f"the store at {self.path} did not answer within {timeout:g}s") from None

    def _worker_busy(self) -> bool:
        self._pending = {w for w in self._pending if not w.done()}
        return bool(self._pending)

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(self._conn(), *args)
        except sqlite3.DatabaseError as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: sqlite3.DatabaseError) -> StoreError:
        if isinstance(exc, sqlite3.OperationalError):
            if _locked(exc):
                return StoreTimeout(f"the store at {self.path} stayed busy for {self.busy_timeout:g}s")
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            if code == _SQLITE_FULL or (code == _SQLITE_IOERR and _disk_full(self.path.parent)):
                return StoreError(
                    f"the store's disk is full: no space left on the device of {self.path} (ENOSPC; "
                    f"SQLite said: {exc})"
                )
            return StoreError(f"the store at {self.path} failed: {exc}")
        return StoreError(f"the store at {self.path} is damaged or not a dsh store: {exc}")

    def _conn(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        try:
            state.make_dirs(self.path.parent)
            size = self._made_or_size()
        except OSError as exc:
            raise StoreError(f"the store at {self.path} cannot be made: {exc.strerror or exc}") from None
        if size == 0:  # never a store being made: those appear whole (_made_or_size)
            raise StoreError(
                f"the store at {self.path} is an empty file: damaged, not a new store (its sessions "
                "would be lost); move it away to start a new store there"
            )
        db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        if db.execute("PRAGMA user_version").fetchone()[0]:  # made before: no write to open it
            schema = _meta(db, "schema")
            if schema > SCHEMA_VERSION:
                db.close()
                raise StoreError(
                    f"the store at {self.path} was written by a newer dsh (schema {schema}); upgrade dsh"
                )
            if schema < SCHEMA_VERSION:
                try:
                    _upgrade(db)
                except BaseException:
                    db.close()
                    raise
            self._db = db
            return db
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.strip().split(";\n"):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
            if row is None:
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("schema", SCHEMA_VERSION), ("revision", 1), ("compacted", 0)],
                )
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"the store at {self.path} was written by a newer dsh (schema {row[0]}); upgrade dsh"
                )
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            db.close()
            raise
        os.chmod(self.path, 0o600)
        self._db = db
        return db

    def _made_or_size(self) -> int | None:
        """Make the store if there is no file at its path (None), else its size. A new
        store is made whole in a file of its own and linked into place, so that
        nobody ever sees a store half made, and an empty file there is damage."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            pass
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        try:
            # 0600 before SQLite makes it (its -wal and -shm files then take its mode).
            state.create_private(temporary)
            db = sqlite3.connect(temporary, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")  # kept in the file's header
                db.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.strip().split(";\n"):
                    if statement.strip():
                        db.execute(statement)
                db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [("schema", SCHEMA_VERSION), ("revision", 1), ("compacted", 0)],
                )
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            finally:
                db.close()  # the last connection: its WAL is checkpointed into the file
            with contextlib.suppress(FileExistsError):  # another dsh made it meanwhile: theirs
                os.link(temporary, self.path)
        finally:
            for leftover in (temporary, *(temporary.with_name(temporary.name + x) for x in ("-wal", "-shm"))):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return None

    # -- reads --------------------------------------------------------------------

    async def get(self, key: bytes, *, timeout: float) -> KV | None:
        return await self._call(self._get, key, timeout=timeout, quick=True)

    def _get(self, db: sqlite3.Connection, key: bytes) -> KV | None:
        self._expire(db)
        row = db.execute(
            "SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else KV(*row)

    async def range(self, prefix: bytes, *, timeout: float) -> tuple[list[KV], int]:
        return await self._call(self._range, prefix, timeout=timeout)

    def _range(self, db: sqlite3.Connection, prefix: bytes) -> tuple[list[KV], int]:
        self._expire(db)
        db.execute("BEGIN")
        try:
            where, args = _prefix_clause(prefix)
            rows = db.execute(
                f"SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE {where} ORDER BY key",
                args,
            ).fetchall()
            revision = _meta(db, "revision")
        finally:
            db.execute("COMMIT")
        return [KV(*r) for r in rows], revision

    async def ranges(self, prefixes: Sequence[bytes], *, timeout: float) -> tuple[list[list[KV]], int]:
        if not prefixes:
            return [], 0
        return await self._call(self._ranges, list(prefixes), timeout=timeout)

    def _ranges(self, db: sqlite3.Connection, prefixes: list[bytes]) -> tuple[list[list[KV]], int]:
        self._expire(db)
        db.execute("BEGIN")  # one read transaction: one snapshot
        try:
            found: list[list[KV]] = []
            columns = "key, value, create_rev, mod_rev, version, lease"
            for prefix in prefixes:
                where, args = _prefix_clause(prefix)
                rows = db.execute(f"SELECT {columns} FROM kv WHERE {where} ORDER BY key", args).fetchall()
                found.append([KV(*r) for r in rows])
            revision = _meta(db, "revision")
        finally:
            db.execute("COMMIT")
        return found, revision

    async def last(self, prefix: bytes, *, timeout: float) -> KV | None:
        return await self._call(self._last, prefix, timeout=timeout, quick=True)

    def _last(self, db: sqlite3.Connection, prefix: bytes) -> KV | None:
        self._expire(db)
        where, args = _prefix_clause(prefix)
        columns = "key, value, create_rev, mod_rev, version, lease"
        row = db.execute(f"SELECT {columns} FROM kv WHERE {where} ORDER BY key DESC LIMIT 1", args).fetchone()
        return None if row is None else KV(*row)

    # -- writes -------------------------------------------------------------------

    async def put(self, key: bytes, value: bytes, *, lease: int = 0, timeout: float) -> int:
        result = await self.txn((), (Put(key, value, lease),), timeout=timeout)
        return result.revision

    async def delete(self, key: bytes, *, prefix: bool = False, timeout: float) -> int:
        return await self._call(self._delete_count, key, prefix, timeout=timeout, quick=not prefix)

    def _delete_count(self, db: sqlite3.Connection, key: bytes, prefix: bool) -> int:
        with _Write(db) as w:
            self._expire_locked(db, w)
            return self._apply(db, w, [Delete(key, prefix)])

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float,
    ) -> TxnResult:
        check_request(success, failure, compares)
        return await self._call(
            self._txn, list(compares), list(success), list(failure), timeout=timeout, quick=True
        )

    def _txn(
        self, db: sqlite3.Connection, compares: list[Compare], success: list[Op], failure: list[Op]
    ) -> TxnResult:
        with _Write(db) as w:
            self._expire_locked(db, w)  # so a compare never sees a dead lease's key
            ok = all(_holds(db, c) for c in compares)
            self._apply(db, w, success if ok else failure)
            return TxnResult(ok, w.revision)

    def _apply(self, db: sqlite3.Connection, w: _Write, ops: Sequence[Op]) -> int:
        """Apply ops at the next revision (taken only if something changes)."""
        touched: set[bytes] = set()
        changed = 0
        rev = w.revision + 1
        for op in ops:
            if isinstance(op, Put):
                if op.key in touched:
                    raise StoreError("a transaction cannot change one key twice")
                touched.add(op.key)
                if (
                    op.lease
                    and not db.execute(
                        "SELECT 1 FROM leases WHERE id = ? AND expires >= ? AND boot = ?",
                        (op.lease, self.clock(), self.boot),
                    ).fetchone()
                ):
                    raise LeaseNotFound(op.lease)
                create, version = db.execute(_UPSERT, (op.key, op.value, rev, rev, op.lease)).fetchone()
                db.execute(
                    "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (rev, changed, _PUT, op.key, op.value, create, version, op.lease),
                )
                changed += 1
            else:
                if op.prefix:
                    where, args = _prefix_clause(op.key)
                else:
                    where, args = "key = ?", (op.key,)
                for (key,) in db.execute(f"SELECT key FROM kv WHERE {where}", args).fetchall():
                    if key in touched:
                        raise StoreError("a transaction cannot change one key twice")
                    touched.add(key)
                    changed += self._delete_key(db, rev, changed, key)
        if changed:
            w.revision = rev
            _set_meta(db, "revision", rev)
            every = min(1000, max(1, self.history_keep // 10))
            if rev % every == 0 and rev > self.history_keep:
                _compact(db, rev - self.history_keep)
        return changed

    @staticmethod
    def _delete_key(db: sqlite3.Connection, rev: int, sub: int, key: bytes) -> int:
        db.execute("DELETE FROM kv WHERE key = ?", (key,))
        db.execute("INSERT INTO history VALUES (?, ?, ?, ?, X'', 0, 0, 0)", (rev, sub, _DELETE, key))
        return 1

    # -- leases -----------------------------------------------------------------------

    async def grant(self, ttl: float, *, timeout: float) -> Lease:
        return await self._call(self._grant, ttl, timeout=timeout, quick=True)

    def _grant(self, db: sqlite3.Connection, ttl: float) -> Lease:
        lease = (int.from_bytes(os.urandom(8), "big") >> 2) + 1
        db.execute("INSERT INTO leases VALUES (?, ?, ?, ?)", (lease, ttl, self.clock() + ttl, self.boot))
        return Lease(lease, ttl)

    async def keepalive(self, lease: int, *, timeout: float) -> float:
        return await self._call(self._keepalive, lease, timeout=timeout, quick=True)

    def _keepalive(self, db: sqlite3.Connection, lease: int) -> float:
        with _Write(db) as w:  # check and renew in one transaction: expiry cannot slip between
            self._expire_locked(db, w)
            now = self.clock()
            row = db.execute(
                "SELECT ttl FROM leases WHERE id = ? AND expires >= ? AND boot = ?", (lease, now, self.boot)
            ).fetchone()
            if row is None:
                raise LeaseNotFound(lease)
            db.execute("UPDATE leases SET expires = ? WHERE id = ?", (now + row[0], lease))
            return float(row[0])

    async def revoke(self, lease: int, *, timeout: float) -> None:
        await self._call(self._revoke, lease, timeout=timeout, quick=True)

    def _revoke(self, db: sqlite3.Connection, lease: int) -> None:
        with _Write(db) as w:
            self._expire_locked(db, w)
            if db.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
                raise LeaseNotFound(lease)
            self._drop_leases(db, w, [lease])

    def _drop_leases(self, db: sqlite3.Connection, w: _Write, leases: list[int]) -> None:
        keys = [
            k
            for lease in leases
            for (k,) in db.execute("SELECT key FROM kv WHERE lease = ?", (lease,)).fetchall()
        ]
        self._apply(db, w, [Delete(k) for k in keys])
        db.executemany("DELETE FROM leases WHERE id = ?", [(lease,) for lease in leases])

    def _expire(self, db: sqlite3.Connection) -> None:
        """Delete the keys of leases that have expired, at a new revision (for readers)."""
        found = db.execute(
            "SELECT 1 FROM leases WHERE expires < ? OR boot != ? LIMIT 1", (self.clock(), self.boot)
        ).fetchone()
        if found is None:
            return
        with _Write(db) as w:
            self._expire_locked(db, w)

    def _expire_locked(self, db: sqlite3.Connection, w: _Write) -> None:
        """The same, inside a write transaction that is already open."""
        now = self.clock()
        dead = [
            r[0] for r in db.execute("SELECT id FROM leases WHERE expires < ? OR boot != ?", (now, self.boot))
        ]
        if dead:
            self._drop_leases(db, w, dead)

    # -- watches and compaction ----------------------------------------------------------

    async def watch(self, prefix: bytes, *, start_revision: int, timeout: float) -> _Watch:
        start = start_revision
        if start <= 0:
            start = await self._call(lambda db: _meta(db, "revision") + 1, timeout=timeout)
        else:
            compacted = await self._call(lambda db: _meta(db, "compacted"), timeout=timeout)
            if start < compacted:
                raise Compacted(start, compacted)
        return _Watch(self, prefix, start)

    def _events(self, db: sqlite3.Connection, prefix: bytes, start: int) -> tuple[list[Event], int]:
        """Events under prefix in revisions [start, start + WATCH_WINDOW), and the next start."""
        self._expire(db)
        db.execute("BEGIN")
        try:
            compacted = _meta(db, "compacted")
            if start < compacted:
                raise Compacted(start, compacted)
            where, args = _prefix_clause(prefix)
            revision = _meta(db, "revision")
            end = max(start, min(revision + 1, start + WATCH_WINDOW))  # a future start waits
            rows = db.execute(
                "SELECT rev, kind, key, value, create_rev, version, lease FROM history "
                f"WHERE rev >= ? AND rev < ? AND {where} ORDER BY rev, sub",
                (start, end, *args),
            ).fetchall()
        finally:
            db.execute("COMMIT")
        events = [
            Event("put" if kind == _PUT else "delete", KV(key, value, create, rev, version, lease))
            for rev, kind, key, value, create, version, lease in rows
        ]
        return events, end

    async def compact(self, revision: int, *, timeout: float) -> None:
        await self._call(self._compact, revision, timeout=timeout)

    def _compact(self, db: sqlite3.Connection, revision: int) -> None:
        with _Write(db) as w:
            if revision > w.revision:
                raise StoreError(f"cannot compact at revision {revision}: the store is at {w.revision}")
            compacted = _meta(db, "compacted")
            if revision < compacted:
                raise Compacted(revision, compacted)
            _compact(db, revision)

    async def close(self) -> None:
        def shut(db: sqlite3.Connection) -> None:
            db.close()
            self._db = None

        self.closed = True
        if self._quick is not None:
            self._quick.close()
            self._quick = None
        try:
            if self._db is not None:
                await self._call(shut, timeout=self.busy_timeout + 1)
        finally:
            self._thread.shutdown(wait=False)


class _Watch:
    def __init__(self, store: SqliteStore, prefix: bytes, start: int) -> None:
        self.store = store
        self.prefix = prefix
        self.next = start
        self.closed = False

    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return self._run()

    async def _run(self) -> AsyncIterator[list[Event]]:
        interval = self.store.poll_interval
        while not self.closed:
            events, following = await self.store._call(
                self.store._events, self.prefix, self.next, timeout=self.store.busy_timeout + 5
            )
            caught_up = following == self.next
            self.next = following
            if events:
                yield events
                interval = self.store.poll_interval
            elif caught_up:
                await asyncio.sleep(interval)
                interval = min(interval * 1.5, 0.25)

    async def close(self) -> None:
        self.closed = True


class _Write:
    """`BEGIN IMMEDIATE` … `COMMIT` (or `ROLLBACK` on error), tracking the revision."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.revision = 0

    def __enter__(self) -> _Write:
        self.db.execute("BEGIN IMMEDIATE")
        self.revision = _meta(self.db, "revision")
        return self

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        self.db.execute("ROLLBACK" if kind else "COMMIT")


#: SQLite's primary result codes for "database or disk is full" and "disk I/O error".
_SQLITE_FULL = 13
_SQLITE_IOERR = 10
#: Free bytes under which a disk I/O error is taken for a full disk (SQLite writes
#: pages and WAL frames of a few KiB; a disk this close to full is full for it).
_NEARLY_FULL = 1 << 20


def _disk_full(directory: Path) -> bool:
    """Whether the file system of `directory` has (next to) no space left for this user."""
    try:
        fs = os.statvfs(directory)
    except OSError:
        return False
    free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail
    return free * fs.f_frsize < _NEARLY_FULL


def _boot_id() -> str:
    """This boot's id (Linux), or "" where the system has none (then the wall clock)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _upgrade(db: sqlite3.Connection) -> None:
    """A store of schema 1 to 2: leases get a boot, and those counted on the wall clock
    are over (their keys go with the next expiry, at a new revision, as any)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        if _meta(db, "schema") < 2:  # another process may have done it meanwhile
            db.execute("ALTER TABLE leases ADD COLUMN boot TEXT NOT NULL DEFAULT ''")
            db.execute("UPDATE leases SET expires = -1, boot = '-'")
            db.execute("UPDATE meta SET value = 2 WHERE name = 'schema'")
            db.execute("PRAGMA user_version=2")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _locked(exc: sqlite3.OperationalError) -> bool:
    return "locked" in str(exc) or "busy" in str(exc)


def _meta(db: sqlite3.Connection, name: str) -> int:
    return int(db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])


def _set_meta(db: sqlite3.Connection, name: str, value: int) -> None:
    db.execute("UPDATE meta SET value = ? WHERE name = ?", (value, name))


def _compact(db: sqlite3.Connection, revision: int) -> None:
    if revision > _meta(db, "compacted"):
        db.execute("DELETE FROM history WHERE rev < ?", (revision,))
        _set_meta(db, "compacted", revision)


def _prefix_clause(prefix: bytes) -> tuple[str, tuple[bytes, ...]]:
    end = prefix_end(prefix)
    if end == b"\x00":
        return "key >= ?", (prefix,)
    return "key >= ? AND key < ?", (prefix, end)


def _holds(db: sqlite3.Connection, c: Compare) -> bool:
    row = db.execute("SELECT value, version, create_rev, mod_rev FROM kv WHERE key = ?", (c.key,)).fetchone()
    if c.target == "value":
        if row is None:
            return False
        actual: bytes | int = row[0]
    else:
        index = {"version": 1, "create": 2, "mod": 3}[c.target]
        actual = 0 if row is None else row[index]
    operand = c.operand
    if type(actual) is not type(operand):
        raise StoreError(f"cannot compare the {c.target} of a key with {operand!r}")
    if c.op == "==":
        return actual == operand
    if c.op == "!=":
        return actual != operand
    if c.op == "<":
        return actual < operand  # type: ignore[operator]
    return actual > operand  # type: ignore[operator]

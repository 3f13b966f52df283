"""Replay: a session whose owner died after any number of its transactions, taken
over and resumed through the driver's own path, ends with the same results as
a run that never stopped — and no command ran twice on any host.

The store is the embedded one, acted on through a wrapper that stops taking
anything once the chosen number of transactions is in (as a process killed
right then would: what it wrote is durable, nothing after it). The hosts are
fakes with a spool's memory: an action claimed once is never run again, and a
probe says how it ended, which is all a resume asks of a real spool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dsh import plan as p
from dsh.config import Config
from dsh.driver import Driver
from dsh.errors import DshError, StoreError
from dsh.remote.base import Exec, Identity, OutputSink, Spot
from dsh.session.catalogue import read_journal
from dsh.session.keys import Keys, user_tree
from dsh.session.lease import Session
from dsh.store.base import LeaseNotFound
from dsh.store.sqlite import SqliteStore
from tests.helpers.reporter import Recorder
from tests.helpers.runtime import FakeRemote

KEYS = Keys(user_tree("u"), "replayed")
TEXT = "x = @h[1-3] echo one\n@h[1-2] echo two | echo done\nif @h1 true {\n  @h[2-3] echo three\n}\n"


class SpoolHost(FakeRemote):
    """A host whose spool runs each action once: `launched` counts every launch, and
    a probe says how a launched action ended (the rest as FakeRemote)."""

    def __init__(self, name: str) -> None:
        super().__init__(name, who=Identity(f"dshtest@{name}:22", "SHA256:fake"))
        self.launched: Counter[str] = Counter()

    async def run(
        self,
        command: str,
        *,
        spot: Spot,
        timeout: float,
        output: OutputSink,
        env: object = None,
        stdin: object = None,
        told: object = None,
    ) -> Exec:
        self.launched[spot.action] += 1
        output("stdout", f"{self.name}:{command}\n".encode())
        return Exec(p.Outcome.OK, 0, 0.01)

    async def probe(self, spot: Spot) -> str:
        return "status 0" if spot.action in self.launched else "none"


class Fleet:
    def __init__(self) -> None:
        self.hosts: dict[str, SpoolHost] = {}

    def __call__(self, alias: str) -> SpoolHost:
        return self.hosts.setdefault(alias, SpoolHost(alias))

    async def close(self) -> None:
        pass

    def launches(self) -> Counter[tuple[str, str]]:
        return Counter({(h, a): n for h, host in self.hosts.items() for a, n in host.launched.items()})


class Crashing:
    """A store that takes `after` transactions, then nothing more (the process is
    gone): every later call fails, and the lease is left to run out."""

    def __init__(self, inner: SqliteStore, after: int) -> None:
        self.inner = inner
        self.left = after
        self.crashed = False
        #: Transactions count once armed (after the claim: what the run writes).
        self.armed = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name in ("close",):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.crashed:
                raise StoreError("the process is gone")
            result = await attr(*args, **kwargs)
            if name == "txn" and self.armed:
                self.left -= 1
                if self.left <= 0:
                    self.crashed = True
            return result

        return call


def driver(store: Any, fleet: Fleet, tmp_path: Path) -> Driver:
    session = Session(store, KEYS, "m1", lease_ttl=30, timeout=5)
    return Driver(
        config=Config(),
        reporter=Recorder(),
        say=lambda text: None,
        spool_root=tmp_path / "spool",
        session=session,
        hosts=fleet,
    )


async def run_clean(
    path: Path, tmp_path: Path, text: str = TEXT
) -> tuple[list[tuple[Any, ...]], Counter[tuple[str, str]], int]:
    store = SqliteStore(path)
    fleet = Fleet()
    counting = Crashing(store, after=10**9)
    d = driver(counting, fleet, tmp_path)
    await d.claim()
    counting.armed = True
    try:
        await d.run(d.compile(text, "t.dsh"))
    finally:
        await d.release()
    return await _ended(path), fleet.launches(), 10**9 - counting.left


async def crash_then_resume(
    path: Path, tmp_path: Path, *crashes: int, text: str = TEXT
) -> tuple[list[tuple[Any, ...]], Fleet]:
    """Run `text`, its owner dying after `crashes[0]` transactions; then each next
    owner takes the session over and resumes it, dying after `crashes[i]`; the
    last owner resumes it to its end."""
    fleet = Fleet()
    for index, after in enumerate((*crashes, None)):
        store = SqliteStore(path)
        crashing = Crashing(store, after if after is not None else 10**9)
        owner = driver(crashing, fleet, tmp_path)
        if index == 0:
            await owner.claim()
        else:
            await owner.take(patience=0.0)
        crashing.armed = True
        lease = owner.owned.lease if owner.owned is not None else 0
        with contextlib.suppress(DshError, StoreError, asyncio.CancelledError):
            if index == 0:
                await owner.run(owner.compile(text, "t.dsh"))
            else:
                await owner.resume()
            await owner.release()  # (the process may die as it writes its last records)
        if crashing.crashed and owner.owned is not None:  # gone with the process, keeper and timer too
            with contextlib.suppress(BaseException):
                await owner.owned._let_go()
            with contextlib.suppress(BaseException):
                await owner.owned.checkpoints.close()
        await store.close()
        store = SqliteStore(path)
        with contextlib.suppress(LeaseNotFound):  # its lease ran out (a clean end gave it back)
            await store.revoke(lease, timeout=5)
        await store.close()
    return await _ended(path), fleet


async def _ended(path: Path) -> list[tuple[Any, ...]]:
    store = SqliteStore(path)
    try:
        return ended(await read_journal(store, KEYS, timeout=5))
    finally:
        await store.close()


def ended(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What the journal says ended, and how (the order of hosts within a wave aside)."""
    ends = sorted((e["action"], e["host"], e["outcome"], e["exit"]) for e in entries if e["kind"] == "end")
    done = [("done", e["run"], e["ok"]) for e in entries if e["kind"] == "done"]
    return ends + done


async def test_a_session_crashed_after_any_transaction_resumes_to_the_same_end(tmp_path: Path) -> None:
    clean, launches, transactions = await run_clean(tmp_path / "clean.db", tmp_path)
    # 3, 2 (the second stage runs here, in the real local spool), 1 (the `if`'s test), 2
    assert set(launches.values()) == {1} and len(launches) == 8
    assert transactions >= 4  # batched: intents of a wave together, results with the next
    for after in range(1, transactions + 1):
        got, fleet = await crash_then_resume(tmp_path / f"crash{after}.db", tmp_path, after)
        assert got == clean, f"crashed after transaction {after}"
        twice = [k for k, n in fleet.launches().items() if n > 1]
        assert twice == [], f"crashed after transaction {after}: launched twice: {twice}"
        assert set(fleet.launches()) == set(launches), f"crashed after transaction {after}"


#: Statements one after the other on one host: a resumed plan's own runs must say
#: which plan they are (its id), or a second takeover starts them again.
SEQUENCE = "@h1 echo A\n@h1 echo B\n@h1 echo C\n@h1 echo D\nif @h1 true {\n  @h2 echo E\n}\n"


async def test_a_resumed_session_crashed_again_resumes_to_the_same_end(tmp_path: Path) -> None:
    clean, launches, transactions = await run_clean(tmp_path / "clean.db", tmp_path, SEQUENCE)
    assert set(launches.values()) == {1} and len(launches) == 6
    for first in range(1, transactions + 1):
        for second in (1, 2, 3):
            path = tmp_path / f"crash{first}-{second}.db"
            got, fleet = await crash_then_resume(path, tmp_path, first, second, text=SEQUENCE)
            where = f"crashed after transaction {first}, then after {second} of the resume"
            assert got == clean, where
            twice = [k for k, n in fleet.launches().items() if n > 1]
            assert twice == [], f"{where}: launched twice: {twice}"
            assert set(fleet.launches()) == set(launches), where


async def test_the_crashing_store_takes_nothing_after_its_last_transaction(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    crashing = Crashing(store, 1)
    await crashing.txn([], [], timeout=5)  # before it is armed: not counted
    crashing.armed = True
    await crashing.put(b"a", b"1", timeout=5)  # a put is not a transaction
    await crashing.txn([], [], timeout=5)
    with pytest.raises(StoreError):
        await crashing.get(b"a", timeout=5)
    assert await store.get(b"a", timeout=5) is not None
    await store.close()

"""Checkpoints on a real embedded store: batching, sizes, ordering, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsh.errors import StoreError
from dsh.lang.compiler import Context, compile_source
from dsh.lang.source import Source
from dsh.remote.base import Exec, OutputSink, Spot
from dsh.remote.local import LocalShell
from dsh.runtime.executor import Executor
from dsh.runtime.values import BindRefused
from dsh.session.catalogue import read_journal
from dsh.session.history import in_flight
from dsh.session.keys import Keys, user_tree
from dsh.session.lease import Owned, Session
from dsh.session.recorder import SessionRecorder
from dsh.store.base import Put
from dsh.store.sqlite import SqliteStore
from tests.conftest import SPOOL
from tests.helpers.reporter import Recorder


class Loud:
    """A host that prints 64 KiB of binary noise on stdout and stderr."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def identity(self) -> None:
        return None  # no login to tell apart

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
        noise = bytes(range(256)) * 256
        output("stdout", noise)
        output("stderr", noise)
        return Exec("ok", 0, 0.01)


async def open_session(tmp_path: Path, name: str = "t") -> Owned:
    session = Session(
        SqliteStore(tmp_path / "store.db"), Keys(user_tree("u"), name), "m", lease_ttl=30, timeout=10
    )
    return await session.claim()


async def test_F6_forty_loud_hosts_are_refused_whole_not_cut(tmp_path: Path) -> None:
    # 40 hosts x 128 KiB of output is over the binding cap: refused, never stored cut.
    session = await open_session(tmp_path)
    executor = Executor(
        reporter=Recorder(), local=LocalShell(SPOOL), hosts=Loud, recorder=SessionRecorder(session)
    )
    plan = compile_source(Source("t", "v = @h[1-40] noise"), Context())
    with pytest.raises(BindRefused, match="v: 5242880 bytes, over the cap of 1048576 bytes"):
        await executor.run_plan(plan)
    assert "v" not in executor.bindings
    await session.release()
    store = SqliteStore(tmp_path / "store.db")
    try:
        entries = await read_journal(store, Keys(user_tree("u"), "t"), timeout=10)
        assert len([e for e in entries if e["kind"] == "end"]) == 40
        assert in_flight(entries) == []
        assert await store.get(Keys(user_tree("u"), "t").bindings + b"v", timeout=10) is None
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    finally:
        await store.close()


async def test_a_failed_deferred_write_stops_later_writes(tmp_path: Path) -> None:
    session = await open_session(tmp_path, "hole")
    cp = session.checkpointer()
    cp.defer([Put(b"", b"an empty key: the store refuses it")])
    with pytest.raises(StoreError):
        await cp.flush()
    with pytest.raises(StoreError, match="earlier checkpoint"):
        await cp.write([cp.entry("start", action="1.1.1", host=None, command="true", timeout=1)])
    await session._let_go()
    await session.store.close()


async def test_a_plan_writes_its_progress_once_at_its_end_and_a_resume_goes_by_its_run_records(
    tmp_path: Path,
) -> None:
    """`todo-next` is written with the plan (0) and once more when it is over, not
    after each statement: one key less per step (issue 22 §3.4); where a plan stands
    meanwhile is its last run record, which `resume_point` reads."""
    from dsh.session.history import last_run, left, resume_point

    session = await open_session(tmp_path)
    keys = Keys(user_tree("u"), "t")
    recorder = SessionRecorder(session)
    executor = Executor(reporter=Recorder(), local=LocalShell(SPOOL), hosts=Loud, recorder=recorder)
    plan = compile_source(Source("t", "echo 1\necho 2\necho 3\necho 4\n"), Context())
    await recorder.plan_started(plan, ())
    await executor.run_plan(plan)
    await session.release()
    store = SqliteStore(tmp_path / "store.db")
    try:
        held = await store.get(keys.todo_next, timeout=10)
        assert held is not None and held.value == b"4"
        assert held.version == 2  # the plan's start and its end: no write per statement
        # Had its owner stopped before the fourth statement began, a resume goes on there.
        await store.put(keys.todo_next, b"0", timeout=10)
        last = await last_run(store, keys, timeout=10)
        assert last is not None and last.index == 3 and last.done
        await store.delete(keys.run(last.run), timeout=10)
        point = resume_point(await left(store, keys, timeout=10), await last_run(store, keys, timeout=10))
        assert point is not None and point.start == 3
    finally:
        await store.close()

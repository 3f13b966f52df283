"""The resume decision (dsh.session.history.resume_point), as a table: what a
session left (the plan kept to resume, the last run, what the statements of an
unfinished compound statement did) → where the resume goes on, what it takes
up, and whether it replays; or nothing left to run."""

from __future__ import annotations

import pytest

from dsh import plan as p
from dsh.runtime.context import Replayed
from dsh.session.history import LastRun, Left, ResumePoint, compound_at, resume_point
from tests.helpers.lang import compile_text

#: Statement 0 and 2 simple, 1 compound (an `if`); the plan kept has id "P".
PLAN = compile_text("@h1 true\nif @h1 true {\n  @h1 true\n}\n@h1 false\n", groups={}, bindings={})
ALONE = compile_text("@h2 true\n", groups={}, bindings={})


def left(start: int = 0) -> Left:
    return Left(PLAN, start, ("a",), "P")


def last(index: int, *, done: bool, ok: bool = True, plan_id: str = "P", run: int = 7) -> LastRun:
    return LastRun(PLAN if plan_id else ALONE, run, ("b",), index, done, ok, plan_id)


def top(*, done: bool, ok: bool = True) -> dict[str, Replayed]:
    return {"": Replayed(9, done, ok, None)}


#: (name, left, last, replayed) → (start, take_up, replay), or None: nothing to run.
TABLE: list[
    tuple[str, Left | None, LastRun | None, dict[str, Replayed] | None, tuple[int, int | None, bool] | None]
] = [
    ("nothing was ever run", None, None, None, None),
    ("a statement on its own, ended", None, last(0, done=True, plan_id=""), None, None),
    ("a statement on its own, ended not ok", None, last(0, done=True, ok=False, plan_id=""), None, None),
    (
        "a statement on its own, not ended: taken up",
        None,
        last(0, done=False, plan_id=""),
        None,
        (0, 7, False),
    ),
    ("a plan left, nothing of it run yet", left(0), None, None, (0, None, False)),
    (
        "a plan left, the last run from an earlier plan",
        left(0),
        last(0, done=True, plan_id="Q"),
        None,
        (0, None, False),
    ),
    (
        "a plan left at 1, the last run from an earlier plan",
        left(1),
        last(2, done=False, plan_id="Q"),
        None,
        (1, None, False),
    ),
    ("its first statement ended ok: the next", left(0), last(0, done=True), None, (1, None, False)),
    ("its first statement ended not ok: the plan stopped", left(0), last(0, done=True, ok=False), None, None),
    ("its first statement did not end: taken up", left(0), last(0, done=False), None, (0, 7, False)),
    ("progress recorded past the last run", left(2), last(0, done=True), None, (2, None, False)),
    ("its last statement ended ok: over", left(2), last(2, done=True), None, None),
    ("its last statement ended not ok: over", left(2), last(2, done=True, ok=False), None, None),
    ("its last statement did not end: taken up", left(2), last(2, done=False), None, (2, 7, False)),
    (
        "a compound statement ended ok: the next",
        left(1),
        last(1, done=False),
        top(done=True),
        (2, None, False),
    ),
    (
        "a compound statement ended not ok: stopped",
        left(1),
        last(1, done=False),
        top(done=True, ok=False),
        None,
    ),
    (
        "a compound statement not ended: replayed",
        left(1),
        last(1, done=False),
        top(done=False),
        (1, None, True),
    ),
    (
        "a compound statement with no record of itself: replayed",
        left(1),
        last(1, done=True),
        {},
        (1, None, True),
    ),
    ("a compound statement, the table not read", left(1), last(1, done=True), None, (1, None, True)),
]


@pytest.mark.parametrize(
    ("name", "left_", "last_", "replayed", "expected"), TABLE, ids=[row[0] for row in TABLE]
)
def test_the_resume_decision(
    name: str,
    left_: Left | None,
    last_: LastRun | None,
    replayed: dict[str, Replayed] | None,
    expected: tuple[int, int | None, bool] | None,
) -> None:
    point = resume_point(left_, last_, replayed)
    if expected is None:
        assert point is None
        return
    assert point is not None
    start, take_up, replay = expected
    plan = left_.plan if left_ is not None else ALONE
    args = left_.args if left_ is not None else ("b",)
    assert point == ResumePoint(plan, start, args, take_up, replay)


def test_only_a_compound_statement_of_the_plan_left_is_replayed() -> None:
    assert isinstance(PLAN.statements[1], p.If)
    assert compound_at(left(1), last(1, done=False)) == 1
    assert compound_at(left(0), last(1, done=True)) == 1
    assert compound_at(left(0), last(0, done=True)) is None  # a simple statement
    assert compound_at(left(2), last(1, done=True)) is None  # progress is past it
    assert compound_at(left(1), last(1, done=False, plan_id="Q")) is None  # another plan's run
    assert compound_at(None, last(1, done=False)) is None
    assert compound_at(left(1), None) is None


@pytest.mark.parametrize("bad", ["../../etc", "h1;reboot", "-oProxyCommand=x", ""])
def test_kept_hosts_that_cannot_name_a_host_are_a_corrupt_record(tmp_path, bad: str) -> None:  # type: ignore[no-untyped-def]
    """hosts/RUN is read back as names of hosts only: each becomes a spool file's name
    and an ssh alias, so a record that holds anything else is refused by name."""
    import asyncio

    from dsh.session import history
    from dsh.session.codec import dumps
    from dsh.session.keys import Keys, user_tree
    from dsh.session.records import CorruptRecord, RunHosts
    from dsh.store.sqlite import SqliteStore

    async def run() -> None:
        store = SqliteStore(tmp_path / "store.db")
        keys = Keys(user_tree("u"), "s")
        try:
            await store.put(keys.hosts(3), dumps(RunHosts(3, ("h1", bad))), timeout=5)
            with pytest.raises(CorruptRecord, match="cannot name a host"):
                await history.resume(store, keys, 3, timeout=5)
            await store.put(keys.hosts(3), dumps(RunHosts(3, ("h1", "h-2.x"))), timeout=5)
            resumed = await history.resume(store, keys, 3, timeout=5)
            assert resumed.hosts == ("h1", "h-2.x")
        finally:
            await store.close()

    asyncio.run(run())

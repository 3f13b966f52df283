"""What a session did, read back: its journal, its last run, the plan a previous
owner left, and the records of the actions a resume takes up.

`resume_point` is the resume decision itself, a pure function of what was read:
where the plan goes on, and what the statement it goes on at takes up.
"""

from __future__ import annotations

from typing import Any

from dsh import nodeset
from dsh.plan import Bound, For, If, Plan, version_of
from dsh.record import record
from dsh.runtime.context import Replayed, Resume
from dsh.session.codec import as_dict, load_action, load_entry, loads
from dsh.session.keys import Keys
from dsh.session.records import (
    CorruptRecord,
    DoneEntry,
    Journaled,
    LineEntry,
    RunHead,
    RunHosts,
    RunRecord,
    Todo,
)
from dsh.store.base import Store


@record
class LastRun:
    """The last statement a session ran: as a plan of its own, its run number, the
    script's arguments, its index in the plan it was part of (whose id is
    `plan_id`), whether it ended (a `done` entry) and whether it ended ok."""

    plan: Plan
    run: int
    args: tuple[str, ...]
    index: int
    done: bool
    ok: bool
    plan_id: str


@record
class Left:
    """The plan a previous owner was running (`plan_id`), with its arguments, and
    the index of its first statement not over (`start`: it may be the one that
    was running)."""

    plan: Plan
    start: int
    args: tuple[str, ...]
    plan_id: str


@record
class ResumePoint:
    """Where a resume goes on: at statement `start` of `plan`, with `args`. That
    statement takes up the actions of run `take_up` (its journal and records say
    which ended, which were started and which only intended), or, when it is a
    compound one, `replay`s what its statements did (`replay`'s table)."""

    plan: Plan
    start: int
    args: tuple[str, ...]
    take_up: int | None = None
    replay: bool = False


def compound_at(left: Left | None, last: LastRun | None) -> int | None:
    """The index of the compound statement (`if`, `for`) of the plan left that was
    running when its owner stopped, if one was: what it did is read (`replay`)
    before `resume_point` decides."""
    if left is None or last is None or last.plan_id != left.plan_id or last.index < left.start:
        return None
    return last.index if isinstance(left.plan.statements[last.index], If | For) else None


def resume_point(
    left: Left | None, last: LastRun | None, replayed: dict[str, Replayed] | None = None
) -> ResumePoint | None:
    """The resume decision, from what the session left: None when nothing is left
    to run (all done, or the plan stopped at a statement that ended not ok).

    - A plan left, whose statement `last` ran in (progress lags the runs): a
      simple statement that ended goes on after it, or stops the plan if it
      ended not ok; one that did not end is taken up. A compound statement
      (`replayed`, by path: "" is the statement itself) goes on likewise, its
      inner statements replayed.
    - A plan left, `last` from before it: the plan goes on at its first
      statement not over.
    - No plan left (a statement on its own) and `last` did not end: taken up.
    """
    if left is None:
        if last is not None and not last.done:
            return ResumePoint(last.plan, 0, last.args, take_up=last.run)
        return None
    start, take_up, replay = left.start, None, False
    if compound_at(left, last) is not None:
        assert last is not None
        top = (replayed or {}).get("")
        if top is not None and top.done and not top.ok:
            return None
        start = last.index + 1 if top is not None and top.done else last.index
        replay = start == last.index
    elif last is not None and last.plan_id == left.plan_id and last.index >= start:
        if last.done and not last.ok:  # it ended not ok: the plan stopped there
            return None
        start = last.index + 1 if last.done else last.index
        take_up = None if last.done else last.run
    if start >= len(left.plan.statements):
        return None
    return ResumePoint(left.plan, start, left.args, take_up, replay)


async def journal(store: Store, keys: Keys, *, timeout: float) -> list[Journaled]:
    """The session's journal, in order; CorruptRecord at an entry that cannot be read."""
    kvs, _ = await store.range(keys.journal, timeout=timeout)
    return [load_entry(kv.value, key=kv.key) for kv in kvs]


def in_flight(entries: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(action, host) of every effect whose intent is journaled but not its result:
    what a resume must ask the host's spool about."""
    open_: dict[tuple[str, str | None], None] = {}
    for e in entries:
        if e.get("kind") == "start":
            open_[(e["action"], e["host"])] = None
        elif e.get("kind") == "end":
            open_.pop((e["action"], e["host"]), None)
    return list(open_)


async def last_run(store: Store, keys: Keys, *, timeout: float) -> LastRun | None:
    """The last statement run in this session; None if nothing ran yet."""
    last = await store.last(keys.runs, timeout=timeout)
    if last is None:
        return None
    record = loads(RunRecord, last.value, key=last.key)
    run = record.run
    done = False
    ok = True
    for journaled in reversed(await journal(store, keys, timeout=timeout)):
        entry = journaled.entry
        if isinstance(entry, DoneEntry) and entry.run == run:
            done, ok = True, entry.ok
            break
        if isinstance(entry, LineEntry) and entry.run == run:
            break
    limits = record.limits
    plan = Plan(
        limits.name,
        (record.plan,),
        Bound(None, None, 0.0),
        limits.step_budget,
        limits.fanout,
        version_of((record.plan,)),
    )
    return LastRun(plan, run, record.args, record.index, done, ok, record.plan_id)


async def left(store: Store, keys: Keys, *, timeout: float) -> Left | None:
    """The plan a previous owner was running and the index of its first statement
    not over (which may be the unfinished one), with its arguments; None when
    it was run to its end."""
    held = await store.get(keys.todo, timeout=timeout)
    if held is None:
        return None
    todo = loads(Todo, held.value, key=held.key)
    done = await store.get(keys.todo_next, timeout=timeout)
    index = int(done.value) if done is not None else 0
    if index >= len(todo.plan.statements):
        return None
    return Left(todo.plan, index, todo.args, todo.id)


async def replay(
    store: Store, keys: Keys, plan_id: str, index: int, *, timeout: float
) -> dict[str, Replayed]:
    """What the statements of a compound statement (index `index` of plan
    `plan_id`) did before a takeover, by path: the one that did not end comes
    with its actions' records, to be taken up."""
    kvs, _ = await store.range(keys.runs, timeout=timeout)
    runs: dict[int, str] = {}
    for kv in kvs:
        head = loads(RunHead, kv.value, key=kv.key)
        if head.plan_id == plan_id and head.index == index:
            runs[head.run] = head.path
    ended: dict[int, bool] = {}
    for journaled in await journal(store, keys, timeout=timeout):
        entry = journaled.entry
        if isinstance(entry, DoneEntry) and entry.run in runs:
            ended[entry.run] = entry.ok
    table: dict[str, Replayed] = {}
    for run, path in runs.items():
        done = run in ended
        table[path] = Replayed(
            run,
            done,
            ended.get(run, False),
            None if done else await resume(store, keys, run, timeout=timeout),
        )
    return table


async def resume(store: Store, keys: Keys, run: int, *, timeout: float) -> Resume:
    """The records of the actions of `run`: what a resume takes up (as their JSON
    objects, which the executor reads)."""
    kvs, _ = await store.range(keys.actions_of(run), timeout=timeout)
    actions: dict[tuple[str, str | None], dict[str, Any]] = {}
    for kv in kvs:
        record = load_action(kv.value, key=kv.key)
        actions[(record.action, record.host)] = as_dict(record)
    held = await store.get(keys.hosts(run), timeout=timeout)
    if held is None:
        return Resume(run, actions)
    line = loads(RunHosts, held.value, key=held.key)
    bad = next((h for h in line.hosts if not nodeset.is_alias(h)), None)
    if bad is not None:  # a name that would become a spool file's name and an ssh alias
        raise CorruptRecord(held.key, f"holds {bad!r}, which cannot name a host", "hosts")
    return Resume(run, actions, line.hosts, {i.stage: i.input for i in line.inputs}, line.items)

"""What the executor tells a session it owns (executor.Recorder): a run's record
before its statement runs, intent before each effect and its result after,
awaits' and sleeps' deadlines, bindings, and the plan being run with its
progress — each in the journal too, through the session's checkpointer.

Also how big a plan's records are (`stored_size`): a plan whose largest record
would not fit the store is refused when it is compiled, before anything runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence

from dsh.bytestext import from_bytes
from dsh.plan import KILL_GRACE, For, If, Plan, Run, Statement
from dsh.remote.base import CopyFacts, Identity, InputFacts
from dsh.runtime.ports import ActionResult
from dsh.runtime.targets import Refused
from dsh.runtime.values import BindRefused, Value
from dsh.session.bindings import encode_value
from dsh.session.codec import dumps
from dsh.session.control import taken_put
from dsh.session.journal import TAIL_BYTES
from dsh.session.keys import user_name
from dsh.session.lease import Owned
from dsh.session.records import (
    ActAwait,
    ActDone,
    ActIntent,
    ActSleep,
    AwaitEntry,
    BindEntry,
    CallbackEntry,
    DoneEntry,
    EndEntry,
    LineEntry,
    NoteEntry,
    PlanLimits,
    PromptEntry,
    ResultSets,
    RunHosts,
    RunRecord,
    SleepEntry,
    StageInput,
    StartEntry,
    Todo,
)
from dsh.store.base import MAX_VALUE, Put

#: A plan's id, which its statements' run records name: random bytes, in hex.
PLAN_ID_BYTES = 6


#: Room kept in the records of a plan for what only a run knows: a run's number
#: and the path of a statement inside compound ones (a key's length, too).
PLAN_ROOM = 1024


#: The most bytes a plan may take in its largest record (see `stored_size`): what
#: the store takes in one value, less that room. A plan over it is refused when
#: it is compiled, before anything runs.
MAX_PLAN = MAX_VALUE - PLAN_ROOM


def run_record(
    run: int, stmt: Statement, args: Sequence[str], plan: Plan, index: int, path: str, plan_id: str
) -> RunRecord:
    """The `run/RUN` record of a statement about to run (its index in the plan and
    path inside a compound statement, the script's arguments and the plan's limits,
    which a resume needs)."""
    limits = PlanLimits(plan.step_budget, plan.fanout, plan.source_name)
    return RunRecord(run, stmt.line, stmt.source, tuple(args), stmt, index, path, plan_id, limits)


def stored_size(plan: Plan, args: Sequence[str]) -> tuple[int, Statement | None]:
    """The bytes of the largest record a plan is kept in while it runs, and the
    statement whose run record that is (None: the plan's own `todo`). Each
    statement, those inside an `if` or a `for` too, has a run record of its own,
    which holds its source and its compiled form again."""
    plan_id = "0" * 2 * PLAN_ID_BYTES
    largest, which = len(dumps(Todo(plan_id, plan, tuple(args)))), None
    if largest > MAX_PLAN:
        return largest, which
    todo: list[Statement] = list(plan.statements)
    while todo:
        stmt = todo.pop()
        size = len(dumps(run_record(0, stmt, args, plan, 0, "", plan_id)))
        if size > largest:
            largest, which = size, stmt
        if isinstance(stmt, If):
            todo += [*((stmt.cond,) if isinstance(stmt.cond, Run) else ()), *stmt.then, *stmt.orelse]
        elif isinstance(stmt, For):
            todo += stmt.body
    return largest, which


class SessionRecorder:
    """What the executor tells a session: intent before each effect, then its result."""

    def __init__(self, session: Owned) -> None:
        self.session = session
        self.keys = session.keys
        self.plan_id = ""  # of the plan running (see plan_started)

    async def line_started(
        self, stmt: Statement, args: Sequence[str], plan: Plan, index: int, path: str = ""
    ) -> int:
        if self.session.draining:  # handing over: this line is the next owner's, by its person
            await asyncio.Future()  # until the work is stopped
        run = self.session.next_run()
        cp = self.session.checkpointer()
        record = run_record(run, stmt, args, plan, index, path, self.plan_id)
        by, machine = self.session.by or (self.keys.me, self.session.machine)
        entry = LineEntry(run, stmt.line, stmt.source, by, machine)
        cp.defer([Put(self.keys.run(run), dumps(record)), cp.entry(entry)])
        return run

    async def intent(
        self,
        action: str,
        host: str | None,
        command: str,
        timeout: float,
        where: Identity | None = None,
        copy: CopyFacts | None = None,
        stdin: InputFacts | None = None,
    ) -> None:
        session = self.session
        if session.draining:  # handing over: this action is the next owner's
            await asyncio.Future()  # until the work is stopped
        session.in_flight[(action, host)] = time.monotonic() + timeout + KILL_GRACE + 5.0
        cp = session.checkpointer()
        # `where`: who the host is for this owner (a later one checks it)
        at = round(time.time(), 3)
        local = user_name() if host is None else None  # whose spool holds it
        record = ActIntent(action, host, command, timeout, session.machine, at, where, copy, stdin, local)
        await cp.write(
            [
                Put(self.keys.action(action, host), dumps(record)),
                cp.entry(StartEntry(action, host, command, timeout, copy, stdin)),
            ]
        )
        if session.draining:  # asked meanwhile: not launched; the next owner starts it (no claim)
            session.in_flight.pop((action, host), None)
            await asyncio.Future()

    async def line_hosts(
        self,
        run: int,
        hosts: Sequence[str],
        inputs: Mapping[int, InputFacts],
        items: Sequence[str] | None = None,
    ) -> None:
        """What run `run` resolved as it starts (a `for`: its `items`): kept with its
        first action's intent (the same transaction, before it), or with its end."""
        given = tuple(StageInput(i, f) for i, f in sorted(inputs.items()))
        record = RunHosts(run, tuple(hosts), given, None if items is None else tuple(items))
        key, encoded = self.keys.hosts(run), dumps(record)
        if len(key) + len(encoded) > MAX_VALUE:  # refused before anything of the line runs
            what = f"its {len(items)} items" if items is not None else f"its {len(hosts)} hosts"
            raise Refused(
                f"{what} take {len(encoded)} bytes once kept for a resume, over what the store "
                f"takes in one value ({MAX_VALUE}): split the line"
            )
        self.session.checkpointer().defer([Put(key, encoded)])

    async def taking_up(self, action: str, host: str | None, timeout: float) -> None:
        """An action of an earlier owner's is about to be followed (or started)."""
        if self.session.draining:
            await asyncio.Future()
        self.session.in_flight[(action, host)] = time.monotonic() + timeout + KILL_GRACE + 5.0

    async def result(self, result: ActionResult) -> None:
        action, host = result.action, result.host
        cp = self.session.checkpointer()
        seconds = round(result.seconds, 6)
        out_tail, err_tail = from_bytes(result.out[-TAIL_BYTES:]), from_bytes(result.err[-TAIL_BYTES:])
        outcome, exit_status, message = result.outcome, result.exit_status, result.message
        machine, copied = self.session.machine, result.copied
        record = ActDone(
            action, host, outcome, exit_status, seconds, message, out_tail, err_tail, machine, copied
        )
        self.session.in_flight.pop((action, host), None)
        cp.defer(
            [
                Put(self.keys.action(action, host), dumps(record)),
                cp.entry(EndEntry(action, host, outcome, exit_status, seconds, message, copied)),
            ]
        )

    async def awaiting(self, action: str, host: str | None, what: str, deadline: float) -> None:
        cp = self.session.checkpointer()
        deadline = round(deadline, 6)
        await cp.write(
            [
                Put(self.keys.action(action, host), dumps(ActAwait(action, host, what, deadline))),
                cp.entry(AwaitEntry(action, host, what, deadline)),
            ]
        )

    async def callback(self, action: str, host: str | None, url: str) -> None:
        cp = self.session.checkpointer()
        await cp.write([cp.entry(CallbackEntry(action, host, url))])

    async def note(self, text: str) -> None:
        """Something said of the session for later (`dsh log` shows it)."""
        cp = self.session.checkpointer()
        await cp.write([cp.entry(NoteEntry(text))])

    async def prompt(self, id: str, text: str, state: str, bound: float) -> None:
        """A question asked (`pending`) or over (answered, refused, timed out): never its answer."""
        cp = self.session.checkpointer()
        await cp.write([cp.entry(PromptEntry(id, text, state, round(bound, 3)))])

    async def sleep(self, action: str, host: str | None, seconds: float, deadline: float) -> None:
        cp = self.session.checkpointer()
        deadline = round(deadline, 6)
        await cp.write(
            [
                Put(self.keys.action(action, host), dumps(ActSleep(action, host, deadline))),
                cp.entry(SleepEntry(action, host, seconds, deadline)),
            ]
        )

    async def bound(self, run: int, name: str, value: Value) -> None:
        cp = self.session.checkpointer()
        key = self.keys.bindings + name.encode()
        encoded = encode_value(value)
        if len(key) + len(encoded) > MAX_VALUE:  # many hosts' framing on top of the cap
            raise BindRefused(
                f"{name}: {len(encoded)} bytes once stored, over what the store takes in one value "
                f"({MAX_VALUE}); nothing is bound"
            )
        cp.defer([Put(key, encoded), cp.entry(BindEntry(run, name))])

    def resuming(self, plan_id: str) -> None:
        """The statements that run next belong to plan `plan_id`, which a previous
        owner started (a resume): their run records say so, so that a later
        resume, after this owner goes too, finds where that plan stands."""
        self.plan_id = plan_id

    async def plan_started(self, plan: Plan, args: Sequence[str], taken: int | None = None) -> None:
        """The plan about to run (kept for a resume); `taken`: the submission it came
        from, which is then consumed in the same transaction (so that a plan is
        either in the inbox or kept to resume, never both, never neither)."""
        cp = self.session.checkpointer()
        self.plan_id = os.urandom(PLAN_ID_BYTES).hex()
        todo = Todo(self.plan_id, plan, tuple(args))
        puts = [Put(self.keys.todo, dumps(todo)), Put(self.keys.todo_next, b"0")]
        if taken is not None:
            puts.append(taken_put(self.keys, taken))
        cp.defer(puts)

    async def progress(self, done: int) -> None:
        self.session.checkpointer().defer([Put(self.keys.todo_next, str(done).encode())])

    async def line_done(
        self, run: int, ok: bool, seconds: float, sets: dict[str, tuple[str, ...]] | None
    ) -> None:
        cp = self.session.checkpointer()
        puts = [cp.entry(DoneEntry(run, ok, round(seconds, 6)))]
        if sets is not None:
            puts.append(Put(self.keys.sets, dumps(ResultSets(sets))))
        cp.defer(puts)

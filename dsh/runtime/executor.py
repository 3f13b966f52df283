"""The executor: runs a plan's statements as host flows and keeps the bindings.

One flow per host (or one for the session's own machine) advances through the
stages of a line on its own, up to the fan-out limit at once. A stage that
does not end ok ends its flow; `retry` gives it more attempts with a doubling
backoff. Results of a line that ran on hosts become the result sets
(`@{failed}`…) of the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from dsh import nodeset
from dsh import plan as p
from dsh.bytestext import from_bytes, loaded, to_bytes
from dsh.errors import DshError
from dsh.names import key_problem
from dsh.record import record
from dsh.remote.base import Exec, Identity, OutputSink, Remote, RemoteUnreachable, Spot
from dsh.runtime.clock import Clock, SystemClock
from dsh.runtime.events import Arrived, CallbackError, Events, looker, timed_out, wait_for_event
from dsh.runtime.flows import Barrier, where_holds
from dsh.runtime.results import KEEP_BYTES, HostResult, LineResult
from dsh.runtime.values import (
    BindingError,
    BindRefused,
    HostsValue,
    ResultValue,
    StrValue,
    Value,
    render,
    value_bytes,
    value_text,
)

#: The `@src:name` groups that the compiler writes into a pattern.
_REFERENCE = re.compile(r"@(inv|res|var):([A-Za-z_][A-Za-z0-9_-]*)")
#: The alias of the session's own machine in its spool.
LOCAL_ALIAS = "local"
#: Outcomes that make an `if` condition neither true nor false: the line fails.
_BROKEN = frozenset({"unreachable", "refused", "lost", "cancelled"})
#: Outcomes that another attempt cannot change.
_FINAL = frozenset({"ok", "refused", "cancelled", "skipped", "lost"})


class Refused(DshError):
    """A line refused at run time, before anything of it ran."""

    exit_code = 2


class Reporter(Protocol):
    """Where the executor tells what happens, as it happens."""

    def line_started(self, stmt: p.Statement, hosts: Sequence[str] | None) -> None: ...

    def output(self, stmt: p.Statement, host: str | None, stream: str, data: bytes, shown: bool) -> None: ...

    def retrying(self, stmt: p.Statement, host: str | None, failed: Exec, attempt: int, wait: float) -> None:
        """Attempt `attempt` (1-based) ended as `failed`; the next starts after `wait`."""
        ...

    def host_done(self, stmt: p.Statement, result: HostResult) -> None: ...

    def line_done(self, result: LineResult) -> None: ...


class Recorder(Protocol):
    """Where the executor checkpoints: intent before every effect, then its result.

    Each call returns once its record is in the store; one that cannot be
    written (the lease is lost) raises, and the effect it announced does not
    happen.
    """

    async def line_started(
        self, stmt: p.Statement, args: Sequence[str], plan: p.Plan, index: int, path: str = ""
    ) -> int:
        """Record a statement about to run (its compiled form, its index in the plan
        and its path inside a compound statement there, the script's arguments and
        the plan's limits, which a resume needs); returns its run number."""
        ...

    async def intent(
        self, action: str, host: str | None, command: str, timeout: float, where: Identity | None = None
    ) -> None:
        """Checkpoint before effect: the action is about to start, on `where`."""
        ...

    async def result(
        self,
        action: str,
        host: str | None,
        outcome: str,
        exit_status: int | None,
        seconds: float,
        message: str,
        out: bytes,
        err: bytes,
    ) -> None: ...

    async def sleep(self, action: str, host: str | None, seconds: float, deadline: float) -> None:
        """A durable timer: its absolute deadline (wall clock), which a resume keeps."""
        ...

    async def bound(self, run: int, name: str, value: Value) -> None: ...

    async def line_done(
        self, run: int, ok: bool, seconds: float, sets: dict[str, tuple[str, ...]] | None
    ) -> None: ...

    async def callback(self, action: str, host: str | None, url: str) -> None:
        """A callback was made: its URL, journaled."""
        ...

    async def taking_up(self, action: str, host: str | None, timeout: float) -> None:
        """An action an earlier owner started is taken up (followed, or started)."""
        ...

    async def awaiting(self, action: str, host: str | None, what: str, deadline: float) -> None:
        """An await begins: what it waits for, and its deadline (absolute, so that a
        resumed await keeps it)."""
        ...

    async def plan_started(self, plan: p.Plan, args: Sequence[str], taken: int | None = None) -> None:
        """Record a plan about to run (a script, or the text of one `-c` or prompt
        line), so that a new owner can run what is left of it; `taken` is the
        number of the submitted line it came from, consumed with it."""
        ...

    async def progress(self, done: int) -> None:
        """The statements of the plan before index `done` are over."""
        ...


@record
class _Shared:
    """What one host flow shares with the others of its wave."""

    barriers: Mapping[int, Barrier]
    passed: set[int]
    fan: asyncio.Semaphore


@record
class Replayed:
    """A statement inside a compound one, as a previous owner left it: its run, whether
    it ended (and ok), and what its actions were when it did not."""

    run: int
    done: bool
    ok: bool
    resume: Resume | None


@dataclass(frozen=True)
class Resume:
    """A run that a previous owner started and did not finish: its run number, and
    the records of its actions by (action, host) — `state` `intent` or `done`, or
    a `deadline` for a durable timer."""

    run: int
    actions: Mapping[tuple[str, str | None], Mapping[str, object]]


def _recorded(held: Mapping[str, object]) -> Exec:
    exit_status = held.get("exit")
    return Exec(
        str(held.get("outcome", "lost")),
        exit_status if isinstance(exit_status, int) else None,
        float(held.get("seconds", 0.0)),  # type: ignore[arg-type]
        str(held.get("message", "")),
    )


def _untail(value: object) -> bytes:
    """The output tail a result record keeps, as the bytes it was (records older
    than dsh.bytestext kept bytes that were not UTF-8 as `\\xNN` text)."""
    return to_bytes(loaded(value)) if isinstance(value, str | dict) else b""


class Executor:
    """Runs statements in order; owns bindings and the result sets of the session."""

    def __init__(
        self,
        *,
        reporter: Reporter,
        local: Remote,
        hosts: Callable[[str], Remote] | None = None,
        clock: Clock | None = None,
        args: Sequence[str] = (),
        inventory: Mapping[str, str] | None = None,
        recorder: Recorder | None = None,
        max_binding: int = p.MAX_BINDING,
    ) -> None:
        self.reporter = reporter
        #: The most bytes one binding may hold: more is refused, never cut.
        self.max_binding = max_binding
        #: dsh's own messages (a callback's URL): the reporter's, when it has them.
        self.say: Callable[[str], None] = getattr(reporter, "message", lambda text: None)
        self.recorder = recorder
        self.local = local
        self.host_remote = hosts
        self.clock = clock or SystemClock()
        self.args = tuple(args)
        self.inventory = dict(inventory or {})
        self.bindings: dict[str, Value] = {}
        self.result_sets: dict[str, tuple[str, ...]] = {}
        #: The name under which hosts spool this executor's actions (the session's,
        #: once it is claimed; unique for a run without a session).
        self.spool_name = f"anon.{os.getpid()}.{os.urandom(4).hex()}"
        self._unrecorded = 0
        self._index = 0  # of the statement running, in its plan
        #: This machine's id: a local action another machine launched is out of reach.
        self.machine = ""
        #: The run being resumed, if the current statement is one.
        self.resume: Resume | None = None
        #: A compound statement being resumed: what its inner statements did, by path.
        self.replay: Mapping[str, Replayed] | None = None
        #: Keys and signals in the store (a session's); awaits on them need it.
        self.events: Events | None = None
        #: A signal awaited in a host flow: one wait (and one signal) for all its hosts.
        self._shared: dict[tuple[int, int], asyncio.Future[Arrived]] = {}

    def binding_kinds(self) -> dict[str, str]:
        """Each bound name's kind, for compiling the lines that follow."""
        kinds = {StrValue: p.VALUE, HostsValue: p.HOSTS, ResultValue: p.RESULT}
        return {name: kinds[type(value)] for name, value in self.bindings.items()}

    async def run_plan(
        self, plan: p.Plan, *, stop_on_failure: bool = True, start: int = 0, first: Resume | None = None
    ) -> list[LineResult]:
        """Run the statements from index `start` (the first of them resumed from
        `first`, if given); with stop_on_failure, stop after the first line not ok."""
        results = []
        for index in range(start, len(plan.statements)):
            self._index = index
            resume = first if index == start else None
            try:
                result = await self.run_statement(plan.statements[index], plan, resume=resume)
            finally:
                self.replay = None  # it was for the statement a previous owner left unfinished
            results.append(result)
            stop = stop_on_failure and not result.ok
            if self.recorder:
                await self.recorder.progress(len(plan.statements) if stop else index + 1)
            if stop:
                break
        return results

    async def run_statement(
        self, stmt: p.Statement, plan: p.Plan, *, resume: Resume | None = None, path: str = ""
    ) -> LineResult:
        """Run one statement; with `resume`, the run a previous owner started, whose
        recorded actions are taken up where they stand instead of started again.
        `path` places a statement inside a compound one (`if`, `for`): `c` its
        condition, `t0`… and `e0`… its branches, `f3.0`… the iterations of a loop."""
        replayed = self.replay.get(path) if self.replay is not None else None
        if resume is None and replayed is not None:
            resume = replayed.resume
        self.resume = resume
        if resume is not None:
            run = resume.run
        elif replayed is not None:
            run = replayed.run
        elif self.recorder:
            run = await self.recorder.line_started(stmt, self.args, plan, self._index, path)
        else:  # unrecorded runs still need action ids of their own for the spool
            self._unrecorded += 1
            run = self._unrecorded
        started = self.clock.monotonic()
        try:
            return await self._statement(stmt, plan, run, path)
        except BaseException:
            if self.recorder:  # refused or cancelled: the run is over all the same, after this long
                with contextlib.suppress(Exception):
                    await self.recorder.line_done(run, False, self.clock.monotonic() - started, None)
            raise
        finally:
            for shared in self._shared.values():
                shared.cancel()
            self._shared.clear()

    async def _statement(self, stmt: p.Statement, plan: p.Plan, run: int, path: str) -> LineResult:
        if isinstance(stmt, p.If | p.For):
            result = await (
                self._if(stmt, plan, run, path)
                if isinstance(stmt, p.If)
                else self._for(stmt, plan, run, path)
            )
        elif isinstance(stmt, p.Run):
            consumed = path.endswith("c")  # an if's condition
            result = await self._pipeline(stmt, stmt.pipeline, plan, run, capture=False, consumed=consumed)
        elif isinstance(stmt.value, p.Pipeline):
            result = await self._pipeline(stmt, stmt.value, plan, run, capture=True)
            await self._bind(run, stmt.name, ResultValue(result.hosts))
        else:
            value: Value
            if isinstance(stmt.value, p.HostSet):
                value = HostsValue(tuple(self.resolve(stmt.value, plan.step_budget)))
            else:
                try:
                    value = StrValue(render(stmt.value, self.bindings, self.args, None))
                except BindingError as exc:
                    raise Refused(f"line {stmt.line}: {exc.message}") from exc
            await self._bind(run, stmt.name, value)
            result = LineResult(stmt, (), 0.0, on_hosts=False)
        if self.recorder:
            sets = self.result_sets if result.on_hosts else None
            await self.recorder.line_done(run, result.ok, result.seconds, sets)
        return result

    # -- compound statements ----------------------------------------------------------

    async def _inner(self, stmt: p.Statement, plan: p.Plan, path: str) -> LineResult:
        """A statement inside a compound one. Resumed, one that ended before is not run
        again: its recorded end stands (its bindings are in the store already)."""
        replayed = self.replay.get(path) if self.replay is not None else None
        if replayed is not None and replayed.done:
            outcome = "ok" if replayed.ok else "failed"
            recorded = HostResult(None, outcome, None, 0.0, 0, "as recorded before the takeover")
            return LineResult(stmt, (recorded,), 0.0, on_hosts=False)
        saved = self.resume
        try:
            return await self.run_statement(stmt, plan, path=path)
        finally:
            self.resume = saved

    async def _sequence(
        self, statements: tuple[p.Statement, ...], plan: p.Plan, path: str, last: LineResult | None
    ) -> LineResult | None:
        """Statements one after another, stopping after the first not ok."""
        for i, inner in enumerate(statements):
            last = await self._inner(inner, plan, f"{path}{i}")
            if not last.ok:
                break
        return last

    async def _if(self, stmt: p.If, plan: p.Plan, run: int, path: str) -> LineResult:
        started = self.clock.monotonic()
        prefix = f"{path}/" if path else ""
        if isinstance(stmt.cond, p.Compare):
            try:
                left = render(stmt.cond.left, self.bindings, self.args, None)
                right = render(stmt.cond.right, self.bindings, self.args, None)
            except BindingError as exc:
                raise Refused(f"line {stmt.line}: {exc.message}") from exc
            holds = (left == right) == (stmt.cond.op == "==")
            last: LineResult | None = None
        else:
            last = await self._inner(stmt.cond, plan, f"{prefix}c")
            broken = [h for h in last.hosts if h.outcome in _BROKEN]
            if broken:  # not false: unknown; the line fails
                return LineResult(stmt, last.hosts, self.clock.monotonic() - started, on_hosts=False)
            holds = last.ok
        branch, mark = (stmt.then, "t") if holds else (stmt.orelse, "e")
        ran = await self._sequence(branch, plan, f"{prefix}{mark}", None)
        hosts = ran.hosts if ran is not None else ()  # a failure of the condition is consumed
        return LineResult(stmt, hosts, self.clock.monotonic() - started, on_hosts=False)

    async def _for(self, stmt: p.For, plan: p.Plan, run: int, path: str) -> LineResult:
        started = self.clock.monotonic()
        prefix = f"{path}/" if path else ""
        items: list[str] = []
        for item in stmt.items:
            if isinstance(item, p.HostSet):
                items += self.resolve(item, plan.step_budget)
                continue
            try:
                text = render(item, self.bindings, self.args, None)
            except BindingError as exc:
                raise Refused(f"line {stmt.line}: {exc.message}") from exc
            only = item.parts[0] if len(item.parts) == 1 else None
            held = self.bindings.get(only.name) if isinstance(only, p.Var) and only.field is None else None
            if isinstance(held, HostsValue):  # a node set: its hosts
                items += held.hosts
                continue
            lines = isinstance(only, p.Var) and only.field in ("out", "err")  # an output: its lines
            items += [x for x in text.splitlines() if x] if lines else text.split()
        body_steps = sum(s.bound.steps or 0 for s in stmt.body)
        if len(items) * body_steps > plan.step_budget:
            raise Refused(
                f"line {stmt.line}: this for goes through {len(items)} items, so it may take "
                f"{len(items) * body_steps} steps, over the step budget of {plan.step_budget}"
            )
        last: LineResult | None = None
        for j, value in enumerate(items):
            await self._bind(run, stmt.name, StrValue(value))
            last = await self._sequence(stmt.body, plan, f"{prefix}f{j}.", None)
            if last is not None and not last.ok:
                break
        hosts = last.hosts if last is not None else ()
        return LineResult(stmt, hosts, self.clock.monotonic() - started, on_hosts=False)

    async def _launch(
        self, remote: Remote, spot: Spot, host: str | None, command: str, timeout: float, sink: OutputSink
    ) -> Exec:
        """Start an action: who the host is (connecting), then the intent (checkpoint
        before effect), then the launch. A host that cannot be reached starts nothing.
        Connecting counts against the attempt's timeout, as `dsh explain` does."""
        started = self.clock.monotonic()
        try:
            where = await asyncio.wait_for(remote.identity(), timeout) if host is not None else None
        except RemoteUnreachable as exc:
            return Exec(exc.outcome, None, self.clock.monotonic() - started, exc.message)
        except TimeoutError:
            message = f"no connection within the command's timeout ({timeout:g}s)"
            return Exec("unreachable", None, self.clock.monotonic() - started, message)
        if self.recorder:
            await self.recorder.intent(spot.action, host, command, timeout, where)
        left = max(timeout - (self.clock.monotonic() - started), 0.001)
        return await remote.run(command, spot=spot, timeout=left, output=sink)

    async def _take_up(
        self,
        remote: Remote,
        spot: Spot,
        command: str,
        timeout: float,
        sink: OutputSink,
        where: object = None,
    ) -> Exec:
        """An action whose intent a previous owner recorded: collect its status, follow
        it if it still runs, start it if it never was (the claim keeps a late launch
        of the old owner's from running too), or call it lost. Never twice. `where`:
        who the host was for that owner; if this machine reaches the alias elsewhere,
        the action is lost: it neither asks that spool nor starts anything there."""
        if isinstance(where, dict):
            try:
                here = await remote.identity()
            except RemoteUnreachable as exc:
                return Exec("lost", None, 0.0, f"launched before; its host cannot be reached: {exc.message}")
            moved = _elsewhere(spot.alias, where, here)
            if moved:
                return Exec("lost", None, 0.0, moved)
        try:
            state = await remote.probe(spot)
        except RemoteUnreachable as exc:
            return Exec("lost", None, 0.0, f"launched before; its spool cannot be asked: {exc.message}")
        if state == "none":
            return await remote.run(command, spot=spot, timeout=timeout, output=sink)
        if state == "lost":
            return Exec("lost", None, 0.0, "launched before, and nobody is left to report its end")
        return await remote.follow(spot, timeout=timeout, output=sink)

    async def _await(
        self, stage: p.Await, run: int, index: int, host: str | None, remote: Remote
    ) -> tuple[Exec, str]:
        """Wait for an event (design §3), journaled as pending, then its end; a
        resumed await keeps its deadline, and one that ended keeps its record."""
        action = f"{run}.{index}.1"
        resume = self.resume
        held = resume.actions.get((action, host)) if resume else None
        if stage.kind == "signal" and resume is not None:  # consumed for every host at once
            consumed = resume.actions.get((action, None))
            if consumed is not None and consumed.get("state") == "done":
                held = consumed
        if held is not None and held.get("state") == "done":
            return _recorded(held), from_bytes(_untail(held.get("out")))
        try:
            args = [render(text, self.bindings, self.args, host) for text in stage.args]
        except BindingError as exc:
            return Exec("failed", None, 0.0, exc.message), ""
        problem = key_problem(args[0]) if stage.kind == "key" else None
        if problem:  # a key from a binding, which `dsh key` could never set
            return Exec("failed", None, 0.0, problem), ""
        if stage.kind == p.NEW_CALLBACK or (stage.kind == "callback" and not args):
            try:
                args = [await self._new_callback(stage, action, host)]
            except CallbackError as exc:
                failed = Exec("failed", None, 0.0, exc.message)
                if self.recorder:
                    await self.recorder.result(action, host, "failed", None, 0.0, exc.message, b"", b"")
                return failed, ""
            if stage.kind == p.NEW_CALLBACK:
                if self.recorder:
                    await self.recorder.result(action, host, "ok", 0, 0.0, "", args[0].encode(), b"")
                return Exec("ok", 0, 0.0), args[0]
        started = self.clock.monotonic()
        deadline = held.get("deadline") if held is not None else None
        if not isinstance(deadline, int | float):
            deadline = self.clock.wall() + stage.timeout
            if self.recorder:
                await self.recorder.awaiting(action, host, stage.written, deadline)
        shared_host = None if stage.kind == "signal" else host
        look, what = looker(stage.kind, args, remote, self.events, action, shared_host, float(deadline))
        wait = wait_for_event(self.clock, float(deadline), stage.every, look, timed_out(what, stage.timeout))
        if stage.kind == "signal" and host is not None:
            shared = self._shared.get((run, index))
            if shared is None:
                shared = self._shared[(run, index)] = asyncio.ensure_future(wait)
            else:
                wait.close()
            arrived = await asyncio.shield(shared)
        else:
            arrived = await wait
        seconds = self.clock.monotonic() - started
        ended = Exec("ok", 0, seconds) if arrived.ok else Exec("timeout", None, seconds, arrived.message)
        if self.recorder:
            value = to_bytes(arrived.value)
            await self.recorder.result(
                action, host, ended.outcome, ended.exit_status, seconds, ended.message, value, b""
            )
        return ended, arrived.value

    async def _new_callback(self, stage: p.Await, action: str, host: str | None) -> str:
        """Make (or make again, after a takeover) the callback of an action: its URL,
        shown, and journaled when new."""
        if self.events is None:
            raise CallbackError("callbacks need a session (its store is where `dsh serve` writes)")
        url, new = await self.events.new_callback(action, host)
        who = f" {stage.bind}" if stage.bind else ""
        self.say(f"callback{who}: POST to {url}")
        if new and self.recorder:
            await self.recorder.callback(action, host, url)
        return url

    async def _cancelled(
        self, action: str, host: str | None, seconds: float, out: bytearray, err: bytearray
    ) -> None:
        """Journal a cancelled action that ran `seconds`, if the store still takes it
        (it may be why). The outcome says it all: no message repeats it."""
        if self.recorder:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(
                    self.recorder.result(action, host, "cancelled", None, seconds, "", bytes(out), bytes(err))
                )

    async def _bind(self, run: int, name: str, value: Value) -> None:
        """Bind `name` (kept with the session first): a value over the cap is refused
        whole, the statement fails, and the name keeps what it had."""
        size = value_bytes(value)
        if size is None or size > self.max_binding:
            held = f"{size} bytes" if size is not None else "more output than dsh keeps in memory"
            raise BindRefused(
                f"{name}: {held}, over the cap of {self.max_binding} bytes (limits.max_binding); "
                "nothing is bound"
            )
        if self.recorder:
            await self.recorder.bound(run, name, value)
        self.bindings[name] = value

    # -- targets -------------------------------------------------------------------

    def resolve(self, target: p.HostSet, limit: int) -> list[str]:
        """The hosts of a target, with the groups, result sets and bindings it names."""
        groups: dict[str, dict[str, str]] = {}
        for source, name in _REFERENCE.findall(target.pattern):
            groups.setdefault(source, {})[name] = self._members(source, name, target)
        try:
            return nodeset.expand(target.pattern, groups, limit=limit)
        except nodeset.HostSetError as exc:
            raise Refused(f"{target.written}: {exc}") from exc

    def _members(self, source: str, name: str, target: p.HostSet) -> str:
        if source == nodeset.RESULTS:
            return nodeset.fold(self.result_sets.get(name, ()))
        if source == nodeset.INVENTORY:
            if name in self.inventory:
                return self.inventory[name]
        else:
            value = self.bindings.get(name)
            if isinstance(value, HostsValue | StrValue):
                return value_text(name, value)
        raise Refused(f"{target.written}: {name!r} is not defined")

    # -- lines ---------------------------------------------------------------------------

    async def _pipeline(
        self,
        stmt: p.Statement,
        pipe: p.Pipeline,
        plan: p.Plan,
        run: int,
        *,
        capture: bool,
        consumed: bool = False,
    ) -> LineResult:
        started = self.clock.monotonic()
        if pipe.target is None:
            self.reporter.line_started(stmt, None)
            host_result = await self._flow(stmt, pipe, run, None, self.local, capture)
            seconds = self.clock.monotonic() - started
            result = LineResult(stmt, (host_result,), seconds, on_hosts=False, consumed=consumed)
            self.reporter.line_done(result)
            return result
        hosts = self.resolve(pipe.target, plan.step_budget)
        if not hosts:
            result = LineResult(
                stmt, (), 0.0, on_hosts=False, note=f"{pipe.target.written} is empty: nothing to run"
            )
            self.reporter.line_done(result)
            return result
        steps = len(hosts) * pipe.steps_per_host()
        if steps > plan.step_budget:
            raise Refused(
                f"line {stmt.line}: {pipe.target.written} holds {len(hosts)} hosts, so the line "
                f"may take {steps} steps, over the step budget of {plan.step_budget}"
            )
        if self.host_remote is None:
            raise Refused(
                f"line {stmt.line}: running on remote hosts needs SSH, which this version "
                "of dsh does not have yet; a line without a target runs here"
            )
        self.reporter.line_started(stmt, hosts)
        results = await self._waves(stmt, pipe, plan, run, hosts, capture)
        seconds = self.clock.monotonic() - started
        result = LineResult(stmt, tuple(results), seconds, on_hosts=True, consumed=consumed)
        self.result_sets = result.result_sets()
        self.reporter.line_done(result)
        return result

    async def _waves(
        self, stmt: p.Statement, pipe: p.Pipeline, plan: p.Plan, run: int, hosts: list[str], capture: bool
    ) -> list[HostResult]:
        """The hosts' flows, up to the fan-out at once; with `batch`, a wave at a time,
        the rest skipped once more than max-fail hosts are not ok."""
        fan = asyncio.Semaphore(plan.fanout)
        make = self.host_remote
        assert make is not None
        size = pipe.batch.wave(len(hosts)) if pipe.batch else len(hosts)
        results: list[HostResult] = []
        failed = 0

        async def one(host: str, barriers: Mapping[int, Barrier]) -> HostResult:
            passed: set[int] = set()
            try:
                async with fan:
                    shared = _Shared(barriers, passed, fan)
                    return await self._flow(stmt, pipe, run, host, make(host), capture, shared)
            finally:
                for index, barrier in barriers.items():
                    if index not in passed:  # it ended before: the others need not wait for it
                        barrier.leave()

        for first in range(0, len(hosts), size):
            wave = hosts[first : first + size]
            if pipe.batch is not None and failed > pipe.batch.max_fail:
                why = f"not started: {failed} hosts were not ok, over max-fail {pipe.batch.max_fail}"
                for host in wave:
                    skipped = HostResult(host, "skipped", None, 0.0, 0, why)
                    self.reporter.host_done(stmt, skipped)
                    results.append(skipped)
                continue
            gathers = [i for i, s in enumerate(pipe.stages, 1) if isinstance(s, p.Gather)]
            barriers = {i: Barrier(len(wave)) for i in gathers}
            flows = [asyncio.ensure_future(one(h, barriers)) for h in wave]
            try:
                done = await asyncio.gather(*flows)
            except BaseException:  # e.g. the lease is lost: no flow may go on acting
                for flow in flows:
                    flow.cancel()
                await asyncio.gather(*flows, return_exceptions=True)
                raise
            results += done
            failed += sum(not r.ok for r in done)
        return results

    async def _flow(
        self,
        stmt: p.Statement,
        pipe: p.Pipeline,
        run: int,
        host: str | None,
        remote: Remote,
        capture: bool,
        shared: _Shared | None = None,
    ) -> HostResult:
        started = self.clock.monotonic()
        out = bytearray()
        err = bytearray()
        truncated = False

        # `gather` folds: the hosts' stdout is shown once they have all come, in the
        # summary, identical outputs together, not line by line as it streams.
        folded = host is not None and any(isinstance(s, p.Gather) for s in pipe.stages)

        def sink(stream: str, data: bytes) -> None:
            nonlocal truncated
            buf = out if stream == "stdout" else err
            room = KEEP_BYTES - len(buf)
            if room < len(data):
                truncated = True
            buf += data[: max(room, 0)]
            self.reporter.output(stmt, host, stream, data, not (stream == "stdout" and (capture or folded)))

        attempts = 0
        ended = Exec("ok", 0, 0.0)
        resume = self.resume
        for index, stage in enumerate(pipe.stages, 1):
            if isinstance(stage, p.Where):
                if not where_holds(stage, ended, bytes(out), bytes(err)):
                    break  # the flow ends here, with the outcome it had
                ended = Exec("ok", 0, ended.seconds)  # a failure let through is consumed
                continue
            if ended.outcome != "ok":
                break
            if isinstance(stage, p.Gather):
                if shared is not None and index in shared.barriers:
                    shared.passed.add(index)
                    shared.fan.release()  # waiting for the others frees a place in the fan-out
                    try:
                        await shared.barriers[index].arrive()
                    finally:
                        await shared.fan.acquire()
                continue
            if isinstance(stage, p.Sleep):
                action = f"{run}.{index}.1"
                held = resume.actions.get((action, host)) if resume else None
                if held is not None and "deadline" in held:  # a durable timer: its stored deadline
                    await self.clock.sleep(max(0.0, float(str(held["deadline"])) - self.clock.wall()))
                    continue
                if self.recorder:
                    deadline = self.clock.wall() + stage.seconds
                    await self.recorder.sleep(action, host, stage.seconds, deadline)
                await self.clock.sleep(stage.seconds)
                continue
            if isinstance(stage, p.Await):
                ended, value = await self._await(stage, run, index, host, remote)
                if stage.kind == p.NEW_CALLBACK and ended.outcome == "ok":  # `cb = callback`: its URL
                    out[:] = to_bytes(value)
                if ended.outcome == "ok" and stage.bind is not None:
                    await self._bind(run, stage.bind, StrValue(value))
                continue
            try:
                command = render(stage.text, self.bindings, self.args, host)
            except BindingError as exc:
                ended = Exec("failed", None, 0.0, exc.message)
                continue
            for attempt in range(stage.attempts):
                action = f"{run}.{index}.{attempt + 1}"
                held = resume.actions.get((action, host)) if resume else None
                if attempt:
                    wait = stage.backoff * 2 ** (attempt - 1)
                    self.reporter.retrying(stmt, host, ended, attempt, wait)
                    if held is None:  # else the wait was over before the crash
                        await self.clock.sleep(wait)
                out.clear()
                err.clear()
                truncated = False
                attempts += 1
                spot = Spot(self.spool_name, action, host or LOCAL_ALIAS)
                began = self.clock.monotonic()
                if held is not None and held.get("state") == "done":  # ended before: its record
                    ended = _recorded(held)
                    sink("stdout", _untail(held.get("out")))
                    sink("stderr", _untail(held.get("err")))
                    if ended.outcome in _FINAL:
                        break
                    continue
                try:
                    if held is not None and host is None and held.get("machine") != self.machine:
                        ended = Exec(
                            "lost",
                            None,
                            0.0,
                            f"launched on machine {held.get('machine')}, whose local spool is out of reach",
                        )
                    elif held is not None:  # intent recorded, end unknown: ask the host's spool
                        at = held.get("at")  # what is left of its timeout, since it was started
                        since = self.clock.wall() - float(at) if isinstance(at, int | float) else 0.0
                        left = max(1.0, stage.timeout - max(0.0, since))
                        if self.recorder:
                            await self.recorder.taking_up(action, host, left)
                        ended = await self._take_up(remote, spot, command, left, sink, held.get("where"))
                    else:
                        ended = await self._launch(remote, spot, host, command, stage.timeout, sink)
                except asyncio.CancelledError:
                    await self._cancelled(action, host, self.clock.monotonic() - began, out, err)
                    raise
                if self.recorder:
                    await self.recorder.result(
                        action,
                        host,
                        ended.outcome,
                        ended.exit_status,
                        ended.seconds,
                        ended.message,
                        bytes(out),
                        bytes(err),
                    )
                if ended.outcome in _FINAL:
                    break
        result = HostResult(
            host,
            ended.outcome,
            ended.exit_status,
            self.clock.monotonic() - started,
            attempts,
            ended.message,
            bytes(out),
            bytes(err),
            truncated,
        )
        self.reporter.host_done(stmt, result)
        return result


def _elsewhere(alias: str, was: dict[str, object], here: Identity | None) -> str:
    """Why `alias` is not the host an earlier owner launched on ("" when it is)."""
    if here is None:
        return ""
    login, key = str(was.get("login", "")), str(was.get("key", ""))
    if login and login != here.login:
        return (
            f"{alias} is {login} in this session; here it is {here.login}: "
            "its spool is not asked and nothing is started there"
        )
    if key and here.key and key != here.key:
        return (
            f"{alias}'s host key was {key} in this session; here it is {here.key}: "
            "its spool is not asked and nothing is started there"
        )
    return ""

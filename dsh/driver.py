"""Text in, results out: compiles dsh text and runs it in one executor.

The driver is where the language and the runtime meet for a session: it keeps
the compile context in step with what the executor has bound, so each new
chunk of text (a script, a `-c` line, a line typed or piped in) compiles
against the bindings made before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dsh import housekeeping
from dsh import plan as p
from dsh.config import Config
from dsh.errors import DshError, IncompleteInput, LangError, UsageError
from dsh.lang.ast import FnDef
from dsh.lang.compiler import Context, compile_source
from dsh.lang.source import Source
from dsh.remote import spool
from dsh.remote.base import Gate, Hosts, Spot
from dsh.remote.local import LocalShell
from dsh.runtime.executor import LOCAL_ALIAS, Executor, Reporter, Resume
from dsh.runtime.journal import LeaseLost
from dsh.runtime.results import LineResult
from dsh.runtime.session import (
    MAX_PLAN,
    Keys,
    Session,
    SessionEvents,
    SessionRecorder,
    readable,
    stored_size,
)
from dsh.session.codec import dumps
from dsh.session.records import KillRequest, Owner
from dsh.store.base import Put

T = TypeVar("T")
#: How long `dsh kill` waits, beyond the owner's lease TTL, for a live owner to stop.
KILL_PATIENCE = 15.0
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@dataclass
class Driver:
    config: Config
    reporter: Reporter
    say: Callable[[str], None]
    #: This machine's spool (one per machine id: two "machines" on one box keep apart).
    spool_root: Path
    args: tuple[str, ...] | None = None
    session: Session | None = None
    hosts: Hosts | None = None
    #: Where executor processes write their logs (cleaned with the local spools).
    log_dir: Path | None = None
    #: Shared with the hosts: open while the session's lease is surely held.
    gate: Gate = field(default_factory=Gate)
    #: Sweep the store ([store] keep) at the end of every session, not one in 16 (tests).
    sweep_always: bool = False

    def __post_init__(self) -> None:
        #: Whether this session sweeps the store when it ends (decided when it claims).
        self._sweep_due = False
        #: Functions defined by the text compiled so far (a REPL's earlier lines), and
        #: those of them not kept with the session yet (name → source text).
        self.functions: dict[str, FnDef] = {}
        self._unsaved: dict[str, str] = {}
        self.executor = Executor(
            reporter=self.reporter,
            local=LocalShell(self.spool_root, gate=self.gate),
            hosts=self.hosts,
            args=self.args or (),
            inventory=self.config.groups,
            max_binding=self.config.limits.max_binding,
        )

    async def load(self) -> None:
        """The bindings, result sets and functions of earlier runs of the session (a read)."""
        if self.session is not None:
            bindings, sets = await self.session.load()
            self.executor.bindings.update(bindings)
            self.executor.result_sets = sets
            ctx = Context(limits=self.config.limits)
            for name, text in sorted((await self.session.function_sources()).items()):
                if name in self._unsaved:  # defined again here, and not kept yet: the newer wins
                    continue
                with contextlib.suppress(LangError):  # one a newer dsh wrote, say: left out
                    compile_source(Source(f"<fn {name}>", text), ctx, self.functions)

    async def keep_functions(self) -> None:
        """Functions defined since the last time, kept with the session (fenced)."""
        if self.session is not None and self._unsaved and self.session.checkpoints is not None:
            keys = self.session.keys
            puts = [
                Put(keys.functions + name.encode(), text.encode()) for name, text in self._unsaved.items()
            ]
            self.session.checkpoints.defer(puts)
            self._unsaved.clear()

    async def claim(self) -> None:
        """Own the session (its lease) and checkpoint everything from now on."""
        if self.session is not None:
            self.session.say = self.say
            await self.session.claim(busy="choose another --session")
            self.gate.bind(self.session.may_act)
            await self.load()  # what a previous owner left, now that nobody else writes
            if spool.cleans(self.session.spool_name):  # one session in 16 pays for it
                await self.clean_local()
                self._sweep_due = True  # the store's old sessions too, after the work
            self._sweep_due = self._sweep_due or self.sweep_always
            self.executor.spool_name = self.session.spool_name
            self.executor.machine = self.session.machine
            self.executor.recorder = SessionRecorder(self.session)
            self.executor.events = SessionEvents(self.session)

    async def take(self, patience: float = 1.0, wanted: Callable[[], bool] | None = None) -> None:
        """Own an existing session: if its owner died, once its lease has run out
        (waiting `patience` s more, for an owner asked to hand over)."""
        if self.session is not None:
            if await self.session.store.get(self.session.keys.meta, timeout=self.session.timeout) is None:
                raise UsageError(f"no session named {self.session.keys.name!r} in {self.session.store.name}")
            self.session.say = self.say
            await self.session.take(patience=patience, wanted=wanted)
            self.gate.bind(self.session.may_act)
            await self.load()
            self.executor.spool_name = self.session.spool_name
            self.executor.machine = self.session.machine
            self.executor.recorder = SessionRecorder(self.session)
            self.executor.events = SessionEvents(self.session)

    async def kill(self) -> int:
        """`dsh kill`: a live owner is asked to stop (and waited for); then, as the
        owner, end what a dead one left running on its hosts, and mark its work
        over. Returns how many actions were ended."""
        session = self.session
        assert session is not None
        store, keys, timeout = session.store, session.keys, session.timeout
        if await store.get(keys.meta, timeout=timeout) is None:
            raise UsageError(f"no session named {keys.name!r} in {store.name}")
        held = await store.get(keys.owner, timeout=timeout)
        if held is not None:
            await store.put(keys.kill, dumps(KillRequest(session.machine)), timeout=timeout)
            owner = readable(Owner, held)  # one that cannot be read: as long as ours
            ttl = owner.ttl if owner is not None else session.lease_ttl
            deadline = time.monotonic() + ttl + KILL_PATIENCE
            while await store.get(keys.owner, timeout=timeout) is not None:
                if time.monotonic() > deadline:
                    raise UsageError(f"session {keys.name!r}: its owner did not stop")
                await asyncio.sleep(0.1)
        await self.take()
        ended = 0
        recorder = SessionRecorder(session)
        last = await session.last_run()
        if last is not None and not last.done:
            table = await session.resume(last.run)
            for (action, host), record in table.actions.items():
                if record.get("state") != "intent":
                    continue
                if host is None and record.get("machine") != session.machine:
                    continue  # another machine's local spool is out of reach
                hosts = self.executor.host_remote
                remote = self.executor.local if host is None or hosts is None else hosts(host)
                spot = Spot(session.spool_name, action, host or LOCAL_ALIAS)
                await remote.kill(spot)
                ended += 1
                await recorder.result(action, host, "cancelled", None, 0.0, "dsh kill", b"", b"")
            await recorder.line_done(last.run, False, 0.0, None)
        left = await session.left()
        if left is not None:
            await recorder.progress(len(left[0].statements))
        await store.delete(keys.kill, timeout=timeout)
        return ended

    async def remove(self) -> list[str]:
        """`dsh rm`: the session and its spools (here and on every host it ran on)
        removed; refused while an owner runs it. Returns the hosts whose spool
        could not be removed."""
        session = self.session
        assert session is not None
        self.executor.recorder = None
        try:
            return await housekeeping.remove(session, self.executor.local, self.executor.host_remote)
        except housekeeping.InUse as exc:
            raise UsageError(f"{exc.message}; stop it first with `dsh kill {session.keys.name}`") from None

    async def sweep(self) -> None:
        """The store's sweep ([store] keep, keep_unnamed), after the work of a session
        that cleaned the local spools (one in 16, see `claim`): the user's finished
        sessions untouched for their keep, with their callbacks and this machine's
        spools. Bounded (housekeeping.sweep) and quiet: what it cannot do now (the
        store slow, a session in use), a later sweep does. Not when interrupted."""
        session, due = self.session, self._sweep_due
        self._sweep_due = False
        keep = housekeeping.Keep(self.config.store.keep, self.config.store.keep_unnamed)
        task = asyncio.current_task()
        if session is None or not due or (task is not None and task.cancelling()):
            return

        def make(name: str) -> Session:
            keys = Keys(session.keys.user, name)
            budget = housekeeping.SWEEP_BUDGET  # each store call is bounded by it too
            return Session(session.store, keys, session.machine, lease_ttl=session.lease_ttl, timeout=budget)

        # A record it cannot read (ValueError, KeyError, TypeError) ends it too: the
        # session's work is over and ended well or not, whatever becomes of this.
        with contextlib.suppress(DshError, TimeoutError, ValueError, KeyError, TypeError):
            await housekeeping.sweep(session, keep, make, self.executor.local)

    async def clean_local(self) -> None:
        """This machine's spools and executor logs untouched for `[spool] keep`, removed."""
        await self.executor.local.clean(self.config.spool.keep)
        if self.log_dir is not None:
            before = time.time() - self.config.spool.keep
            for log in self.log_dir.glob("*.log"):
                with contextlib.suppress(OSError):
                    if log.stat().st_mtime < before:
                        log.unlink()

    async def release(self) -> None:
        """Write what is deferred, let the lease go, close the store."""
        try:
            if self.hosts is not None:
                await self.hosts.close()
        finally:
            if self.session is not None:
                self.executor.recorder = None
                try:
                    await self.session.release()
                    await self.sweep()  # after the work, and once the lease is let go
                finally:
                    await self.session.store.close()

    async def idle(self) -> None:
        """Before waiting for input: nothing may sit deferred while nobody runs."""
        if self.session is not None and self.session.checkpoints is not None:
            await self.session.checkpoints.flush()

    async def ensure_owner(self) -> None:
        """Before running a line read after a wait: own the session again if the
        lease ran out meanwhile (nothing ran then), or fail if another took it."""
        if self.session is not None and not await self.session.alive():
            with contextlib.suppress(DshError):  # what it could not write is reported already
                await self.session.release()
            await self.claim()

    async def resume(self) -> list[LineResult]:
        """Once claimed: finish what a previous owner was running — the statement it
        started and did not finish, each of its actions collected, followed,
        started (if never claimed) or lost, none launched twice; then the rest
        of its plan. [] when there was nothing left."""
        if self.session is None:
            return []
        last = await self.session.last_run()
        left = await self.session.left()
        first: Resume | None = None
        if left is not None:
            plan, start, args, plan_id = left
            if last is not None and last.plan_id == plan_id and last.index >= start:  # progress lags
                if isinstance(plan.statements[last.index], p.If | p.For):  # a compound statement
                    table = await self.session.replay(plan_id, last.index)
                    top = table.get("")
                    if top is not None and top.done and not top.ok:
                        return []
                    start = last.index + 1 if top is not None and top.done else last.index
                    if start == last.index:
                        self.executor.replay = table
                        self.say(
                            f"resuming line {plan.statements[start].line}: {plan.statements[start].source}"
                        )
                elif last.done and not last.ok:  # it ended not ok: the plan stopped there
                    return []
                else:
                    start = last.index + 1 if last.done else last.index
                    if not last.done:
                        first = await self.session.resume(last.run)
            if start >= len(plan.statements):
                return []
        elif last is not None and not last.done:  # a statement on its own (no plan kept)
            plan, start, args = last.plan, 0, last.args
            first = await self.session.resume(last.run)
        else:
            return []
        if first is not None:
            self.say(f"resuming run {first.run}: {plan.statements[start].source}")
        self.executor.args = args
        return await self._guard_lost(self.executor.run_plan(plan, start=start, first=first))

    async def _guard_lost(self, work: Awaitable[T]) -> T:
        """Run `work` so that a lost lease (or `dsh kill`) cancels it and says so. A
        lost lease abandons the commands in flight (the gate shuts first: they are
        neither killed nor followed, but left to their spools for the next owner);
        a kill ends them."""
        task = asyncio.current_task()
        session = self.session
        if session is not None and task is not None:

            def stop() -> None:  # at once
                if not session.killed:
                    self.gate.close()
                task.cancel()

            session.on_lost = stop
        try:
            return await work
        except asyncio.CancelledError:
            if self.session is not None and self.session.killed:
                raise Killed(f"session {self.session.keys.name!r} was killed (dsh kill)") from None
            checkpoints = self.session.checkpoints if self.session else None
            if checkpoints is not None and checkpoints.lost:
                raise LeaseLost(
                    "the session's lease was lost: this executor stops, and leaves the commands "
                    "it ran to their spools, for the next owner"
                ) from None
            raise
        finally:
            if self.session is not None:
                self.session.on_lost = None

    def compile(self, text: str, name: str, first_line: int = 1) -> p.Plan:
        ctx = Context(
            limits=self.config.limits,
            groups=self.config.groups,
            bindings=self.executor.binding_kinds(),
            args=self.args,
            functions=self.functions,
        )
        before = dict(self.functions)
        source = Source(name, text, first_line)
        functions = dict(self.functions)  # kept only once the plan fits the store too
        plan = compile_source(source, ctx, functions)
        new = {fn_name: fn for fn_name, fn in functions.items() if before.get(fn_name) is not fn}
        _check_fits(source, plan, self.args or (), new)
        self.functions.update(functions)
        for fn_name, fn in new.items():
            self._unsaved[fn_name] = fn.span.text
        return plan

    async def run(
        self, plan: p.Plan, *, stop_on_failure: bool = True, taken: int | None = None
    ) -> list[LineResult]:
        """Run a plan, kept for a resume first; `taken`: the submitted line it is."""
        await self.keep_functions()
        if self.executor.recorder is not None:
            await self.executor.recorder.plan_started(plan, self.executor.args, taken)
        results = await self._guard_lost(self.executor.run_plan(plan, stop_on_failure=stop_on_failure))
        left = len(plan.statements) - len(results)
        if left and results and not results[-1].ok:
            self.say(
                f"line {results[-1].statement.line} did not end ok; "
                f"{left} more statement{'s' if left != 1 else ''} not run"
            )
        return results


def _check_fits(source: Source, plan: p.Plan, args: Sequence[str], functions: dict[str, FnDef]) -> None:
    """Refuse, as a compile error, a plan (or a function defined with it) that the
    store could not keep: a session stores the plan and each statement's compiled
    form before running it, and the largest of those records must fit in one of
    the store's values (session.MAX_PLAN)."""
    for fn in functions.values():
        size = len(fn.span.text.encode("utf-8", "surrogateescape"))
        if size > MAX_PLAN:
            raise LangError(
                f"function {fn.name} is {size} bytes; the store takes at most {MAX_PLAN} "
                "(keep large data in a file)",
                fn.span,
            )
    if not plan.statements:
        return
    size, stmt = stored_size(plan, args)
    if size > MAX_PLAN:
        where = source.span(0, len(source.text)) if stmt is None else source.line_span(stmt.line)
        raise LangError(
            f"the script's plan is {size} bytes as stored; the store takes at most {MAX_PLAN} "
            "(split the script, or keep large data in a file)",
            where,
        )


class Killed(DshError):
    """`dsh kill` stopped the session's work; its commands were killed."""

    exit_code = 4


class Interrupted(DshError):
    """dsh was told to stop by a signal; its commands were killed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum


async def guarded(work: Awaitable[T]) -> T:
    """Run `work`; SIGINT, SIGTERM or SIGHUP cancel it, so that its commands are
    killed (on hosts too, which takes a round trip), then raise KeyboardInterrupt
    (SIGINT) or Interrupted. A second signal while the kills are under way does
    not cut them short: every one of them is bounded."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            task.cancel()

    signals = (signal.SIGINT, *_STOP_SIGNALS)
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await work
    except asyncio.CancelledError:
        if received and received[0] == signal.SIGINT:
            raise KeyboardInterrupt from None
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def status_of(results: Sequence[LineResult]) -> int:
    """Design §6: 0 when every final outcome is ok, else 1."""
    return 0 if all(r.ok for r in results) else 1


def run_text(driver: Driver, text: str, name: str) -> int:
    """Compile a whole text, then run it; stop at the first line not ok."""

    async def main() -> list[LineResult]:
        try:
            await driver.load()
            plan = driver.compile(text, name)  # compile errors touch no state
            await driver.claim()
            return await driver.run(plan)
        finally:
            await driver.release()

    return status_of(asyncio.run(guarded(main())))


def run_lines(
    driver: Driver,
    read: Callable[[str], str | None],
    name: str,
    *,
    interactive: bool,
    report_error: Callable[[DshError], object],
) -> int:
    """Read and run text a statement at a time, here (lines piped in; the REPL is
    a client of an executor process, dsh.client).

    `read(prompt)` returns the next line without its newline, or None at the
    end. Interactive: errors and failures are shown and reading goes on, and
    Ctrl-C cancels the running line. Otherwise the first error ends it.
    """
    with asyncio.Runner() as runner:
        try:
            runner.run(driver.claim())
            return _read_eval(driver, runner, read, name, interactive, report_error)
        finally:
            runner.run(driver.release())


def _read_eval(
    driver: Driver,
    runner: asyncio.Runner,
    read: Callable[[str], str | None],
    name: str,
    interactive: bool,
    report_error: Callable[[DshError], object],
) -> int:
    status = 0
    buffer: list[str] = []
    first_line = 1
    while True:
        try:
            runner.run(driver.idle())
        except DshError as exc:  # e.g. the lease ran out: the next line claims it again
            if not interactive:
                raise
            report_error(exc)
        try:
            line = read("... " if buffer else "dsh> ")
        except KeyboardInterrupt:
            if not interactive:
                raise
            buffer = []
            print()
            continue
        if line is None:
            break
        buffer.append(line)
        text = "\n".join(buffer) + "\n"
        try:
            plan = driver.compile(text, name, first_line)
        except IncompleteInput:
            continue
        except LangError as exc:
            report_error(exc)
            first_line += len(buffer)
            buffer = []
            if not interactive:
                return exc.exit_code
            status = exc.exit_code
            continue
        first_line += len(buffer)
        buffer = []
        if not plan.statements:
            runner.run(driver.ensure_owner())
            runner.run(driver.keep_functions())
            continue
        try:
            runner.run(driver.ensure_owner())
            results = runner.run(guarded(driver.run(plan, stop_on_failure=True)))
        except KeyboardInterrupt:
            if not interactive:
                raise
            driver.say("cancelled")
            status = 130
            continue
        except DshError as exc:
            if not interactive:
                raise
            report_error(exc)
            status = exc.exit_code
            continue
        status = status_of(results)
        if status and not interactive:
            return status
    if buffer and any(b.strip() for b in buffer):
        try:
            driver.compile("\n".join(buffer), name, first_line)
        except LangError as exc:
            report_error(exc)
            return exc.exit_code
    return status

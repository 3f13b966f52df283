"""Text in, results out: compiles dsh text and runs it in one executor.

The driver is where the language and the runtime meet for a session: it keeps
the compile context in step with what the executor has bound, so each new
chunk of text (a script, a `-c` line, a line typed or piped in) compiles
against the bindings made before it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dsh import plan as p
from dsh.config import Config
from dsh.errors import DshError, LangError, UsageError
from dsh.exits import Exit
from dsh.filesize import local_size
from dsh.inventory.base import TrustingLookup
from dsh.inventory.lookup import Inventory
from dsh.lang.ast import FnDef
from dsh.lang.compiler import Context, compile_source
from dsh.lang.source import Source
from dsh.prompt import NoPrompter, Prompt, Prompter
from dsh.remote import spool
from dsh.remote.base import Asks, Gate, Hosts, Spot
from dsh.remote.local import LocalShell
from dsh.runtime.context import Resume
from dsh.runtime.executor import Executor
from dsh.runtime.inputs import OwnInput
from dsh.runtime.outdir import OutputFiles
from dsh.runtime.ports import ActionResult, Reporter
from dsh.runtime.results import LineResult
from dsh.runtime.steps import LOCAL_ALIAS
from dsh.runtime.sudo import SudoAnswers
from dsh.runtime.values import SecretValue
from dsh.session import admin, bindings, control, history
from dsh.session.events import SessionEvents
from dsh.session.journal import LeaseLost
from dsh.session.keys import Keys
from dsh.session.lease import Owned, Session
from dsh.session.recorder import MAX_PLAN, SessionRecorder, stored_size
from dsh.session.records import ControlEntry
from dsh.store.base import Put

T = TypeVar("T")


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
    #: Shared with the hosts: where a command's sudo asking for a password goes.
    asks: Asks = field(default_factory=Asks)
    #: Where a password is asked for (None: nobody can be asked; each ask fails at once).
    prompter: Prompter | None = None
    #: Where every action's output is written too (--outdir: absolute), if anywhere.
    outdir: str | None = None
    #: Every inventory's groups (None: the config's [groups] alone).
    inventory: Inventory | None = None
    #: dsh's own standard input, for `| stdin -` (None: this process reads none).
    own_input: OwnInput | None = None
    #: DSH_HOST_AGENT: whether local actions go through a local host agent ("off": the wrapper).
    host_agent: str = "auto"
    #: Compile with every inventory group taken on trust (a client's check of a line
    #: its executor compiles again): no group source is asked.
    trust_groups: bool = False
    #: Compile to explain, not to run: `stdin -` is taken as where dsh's own
    #: standard input can be read (`dsh -c`, a script in the foreground).
    explaining: bool = False

    def __post_init__(self) -> None:
        #: Whether this session sweeps the store when it ends (decided when it claims).
        self._sweep_due = False
        #: Functions defined by the text compiled so far (a REPL's earlier lines), and
        #: those of them not kept with the session yet (name → source text).
        self.functions: dict[str, FnDef] = {}
        self._unsaved: dict[str, str] = {}
        #: The session while this driver owns it (from a claim or a take until it lets go).
        self.owned: Owned | None = None
        #: Where this process's clients reach it (kept in the owner record at each claim).
        self._socket: str | None = None
        #: What the executor records through, while the session is owned.
        self._recorder: SessionRecorder | None = None
        #: Answers to hosts' sudo, kept in this process only; its questions journaled.
        asking = _Journaled(self, self.prompter or NoPrompter(self.say))
        self.sudo = SudoAnswers(asking, self.say)
        self.asks.sink = self.sudo
        self.asks.prompter = asking
        #: This machine, for local actions (closed with the session: its agent ends).
        self.local = LocalShell(self.spool_root, gate=self.gate, asks=self.asks, host_agent=self.host_agent)
        self.executor = Executor(
            reporter=self.reporter,
            local=self.local,
            hosts=self.hosts,
            args=self.args or (),
            inventory=self.config.groups,
            max_binding=self.config.limits.max_binding,
            lookup=self.inventory,
        )
        self.executor.max_stdin = self.config.limits.max_stdin
        self.executor.own_input = self.own_input
        self.executor.prompter = asking  # `x = secret "…"` asks there too
        if self.outdir is not None:
            self.executor.outdir = OutputFiles(self.outdir)

    async def load(self) -> None:
        """The bindings, result sets and functions of earlier runs of the session (a read)."""
        held = self.owned or self.session  # owned: calls bounded by the lease too
        if held is not None:
            store, keys, timeout = held.store, held.keys, held.timeout
            bound, sets = await bindings.load(store, keys, timeout=timeout)
            self.executor.know(bound, sets)
            ctx = Context(limits=self.config.limits)
            for name, text in sorted((await bindings.function_sources(store, keys, timeout=timeout)).items()):
                if name in self._unsaved:  # defined again here, and not kept yet: the newer wins
                    continue
                with contextlib.suppress(LangError):  # one a newer dsh wrote, say: left out
                    compile_source(Source(f"<fn {name}>", text), ctx, self.functions)

    async def keep_functions(self) -> None:
        """Functions defined since the last time, kept with the session (fenced)."""
        if self.owned is not None and self._unsaved:
            keys = self.owned.keys
            puts = [
                Put(keys.functions + name.encode(), text.encode()) for name, text in self._unsaved.items()
            ]
            self.owned.checkpoints.defer(puts)
            self._unsaved.clear()

    async def claim(self, socket: str | None = None) -> None:
        """Own the session (its lease) and checkpoint everything from now on; `socket`:
        where this process's clients reach it (kept for a later claim too)."""
        if self.session is not None:
            self._socket = socket or self._socket
            owned = await self.session.claim("choose another --session", say=self.say, socket=self._socket)
            await self._own(owned)
            if spool.cleans(owned.spool_name):  # one session in 16 pays for it
                await self.clean_local()
                self._sweep_due = True  # the store's old sessions too, after the work
            self._sweep_due = self._sweep_due or self.sweep_always

    async def take(
        self, patience: float = 1.0, wanted: Callable[[], bool] | None = None, socket: str | None = None
    ) -> None:
        """Own an existing session: if its owner died, once its lease has run out
        (waiting `patience` s more, for an owner asked to hand over)."""
        if self.session is not None:
            session = self.session
            await admin.require(session.store, session.keys, timeout=session.timeout)
            self._socket = socket or self._socket
            await self._own(
                await session.take(patience=patience, wanted=wanted, say=self.say, socket=self._socket)
            )

    async def _own(self, owned: Owned) -> None:
        """Run on `owned` from now on: what a previous owner left is read (nobody else
        writes now), and the executor records, waits and spools through it."""
        self.owned = owned
        self.gate.bind(owned.may_act)
        await self.load()
        self._recorder = SessionRecorder(owned)
        self.executor.own(
            spool_name=owned.spool_name,
            machine=owned.machine,
            recorder=self._recorder,
            events=SessionEvents(owned, requester_counts=self.config.approval.requester_counts),
        )

    async def kill(self) -> int:
        """`dsh kill`: a live owner is asked to stop (and waited for); then, as the
        owner, end what a dead one left running on its hosts, and mark its work
        over. Returns how many actions were ended."""
        session = self.session
        assert session is not None
        store, keys, timeout = session.store, session.keys, session.timeout
        await admin.require(store, keys, timeout=timeout)
        await admin.stop_owner(store, keys, session.machine, lease_ttl=session.lease_ttl, timeout=timeout)
        await self.take()
        owned = self.owned
        assert owned is not None
        ended = 0
        recorder = SessionRecorder(owned)
        last = await history.last_run(store, keys, timeout=owned.timeout)
        if last is not None and not last.done:
            table = await history.resume(store, keys, last.run, timeout=owned.timeout)
            for (action, host), record in table.actions.items():
                if record.get("state") != "intent":
                    continue
                if host is None and record.get("machine") != session.machine:
                    continue  # another machine's local spool is out of reach
                hosts = self.executor.host_remote
                remote = self.executor.local if host is None or hosts is None else hosts(host)
                spot = Spot(owned.spool_name, action, host or LOCAL_ALIAS)
                await remote.kill(spot)
                ended += 1
                killed = ActionResult(action, host, p.Outcome.CANCELLED, None, 0.0, "dsh kill", b"", b"")
                await recorder.result(killed)
            await recorder.line_done(last.run, False, 0.0, None)
        left = await history.left(store, keys, timeout=owned.timeout)
        if left is not None:
            await recorder.progress(len(left.plan.statements))
        cp = owned.checkpointer()
        await cp.write([cp.entry(ControlEntry("kill", keys.me, session.machine))])
        await control.kill_done(store, keys, timeout=owned.timeout)
        return ended

    async def remove(self) -> list[str]:
        """`dsh rm`: the session and its spools (here and on every host it ran on)
        removed; refused while an owner runs it. Returns the hosts whose spool
        could not be removed."""
        session = self.session
        assert session is not None
        self.executor.disown()
        try:
            return await admin.remove(session, self.executor.local, self.executor.host_remote)
        except admin.InUse as exc:
            raise UsageError(f"{exc.message}; stop it first with `dsh kill {session.keys.name}`") from None

    async def sweep(self) -> None:
        """The store's sweep ([store] keep, keep_unnamed), after the work of a session
        that cleaned the local spools (one in 16, see `claim`): the user's finished
        sessions untouched for their keep, with their callbacks and this machine's
        spools. Bounded (housekeeping.sweep) and quiet: what it cannot do now (the
        store slow, a session in use), a later sweep does. Not when interrupted."""
        session, due = self.session, self._sweep_due
        self._sweep_due = False
        task = asyncio.current_task()
        if session is None or not due or (task is not None and task.cancelling()):
            return
        from dsh import housekeeping  # one session in 16 sweeps: the others never import it

        keep = housekeeping.Keep(self.config.store.keep, self.config.store.keep_unnamed)

        def make(name: str) -> Session:
            keys = Keys(session.keys.tree, name, session.keys.person)
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
            await self.sudo.close()
            if self.hosts is not None:
                await self.hosts.close()
        finally:
            await self.local.close()
            if self.session is not None:
                self.executor.disown()
                try:
                    if self.owned is not None:
                        owned, self.owned = self.owned, None
                        await owned.release()
                    await self.sweep()  # after the work, and once the lease is let go
                finally:
                    await self.session.store.close()

    async def idle(self) -> None:
        """Before waiting for input: nothing may sit deferred while nobody runs; the
        hosts may get ready for the next line meanwhile (their agents)."""
        if self.hosts is not None:
            self.hosts.idle()
        if self.owned is not None:
            await self.owned.checkpoints.flush()

    async def ensure_owner(self) -> None:
        """Before running a line read after a wait: own the session again if the
        lease ran out meanwhile (nothing ran then), or fail if another took it."""
        if self.session is None:
            return
        if self.owned is not None:
            if await self.owned.alive():
                return
            owned, self.owned = self.owned, None
            self.executor.disown()
            with contextlib.suppress(DshError):  # what it could not write is reported already
                await owned.release()
        await self.claim()  # (again, after a claim that failed: another may have let go)

    async def resume(self) -> list[LineResult]:
        """Once claimed: finish what a previous owner was running — the statement it
        started and did not finish, each of its actions collected, followed,
        started (if never claimed) or lost, none launched twice; then the rest
        of its plan. [] when there was nothing left."""
        if self.owned is None:
            return []
        store, keys, timeout = self.owned.store, self.owned.keys, self.owned.timeout
        last = await history.last_run(store, keys, timeout=timeout)
        left = await history.left(store, keys, timeout=timeout)
        at = history.compound_at(left, last)
        replayed = None
        if left is not None and at is not None:
            replayed = await history.replay(store, keys, left.plan_id, at, timeout=timeout)
        point = history.resume_point(left, last, replayed)
        if point is None:
            return []
        plan, start, args = point.plan, point.start, point.args
        if left is not None and self._recorder is not None:
            self._recorder.resuming(left.plan_id)  # its runs are that plan's, for a later resume
        first: Resume | None = None
        if point.replay:
            self.say(f"resuming line {plan.statements[start].line}: {plan.statements[start].source}")
        if point.take_up is not None:
            first = await history.resume(store, keys, point.take_up, timeout=timeout)
            self.say(f"resuming run {first.run}: {plan.statements[start].source}")
        work = self.executor.run_plan(
            plan, start=start, first=first, replay=replayed if point.replay else None, args=args
        )
        return await self._guard_lost(work)

    async def _guard_lost(self, work: Awaitable[T]) -> T:
        """Run `work` so that a lost lease (or `dsh kill`) cancels it and says so. A
        lost lease abandons the commands in flight (the gate shuts first: they are
        neither killed nor followed, but left to their spools for the next owner);
        a kill ends them."""
        task = asyncio.current_task()
        owned = self.owned
        if owned is None or task is None:
            return await work

        def stop() -> None:  # at once
            if not owned.killed:
                self.gate.close()
            task.cancel()

        with owned.stopping(stop):
            try:
                return await work
            except asyncio.CancelledError:
                if owned.killed:
                    raise Killed(f"session {owned.keys.name!r} was killed (dsh kill)") from None
                if owned.checkpoints.lost:
                    raise LeaseLost(
                        "the session's lease was lost: this executor stops, and leaves the commands "
                        "it ran to their spools, for the next owner"
                    ) from None
                raise

    def compile(self, text: str, name: str, first_line: int = 1) -> p.Plan:
        ctx = Context(
            limits=self.config.limits,
            groups=self.config.groups,
            inventory=TrustingLookup() if self.trust_groups else self.executor.lookup,
            bindings=self.executor.binding_kinds(),
            args=self.args,
            functions=self.functions,
            sizes=local_size,
            secrets=frozenset(n for n, v in self.executor.bindings.items() if isinstance(v, SecretValue)),
            own_stdin=self.own_input is not None or self.explaining,
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

    def ready_local(self, plan: p.Plan) -> None:
        """A plan that starts with a local command: the local agent boots now, in the
        background (dsh -c: during the claim), not at its first launch."""
        first = plan.statements[0] if plan.statements else None
        if (
            isinstance(first, p.Run)
            and first.pipeline.target is None
            and any(isinstance(stage, p.Command) for stage in first.pipeline.stages)
        ):
            self.local.agent.start()

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

    exit_code = Exit.KILLED


def status_of(results: Sequence[LineResult]) -> int:
    """Design §6: 0 when every final outcome is ok, else 1."""
    return Exit.OK if all(r.ok for r in results) else Exit.NOT_OK


class _Journaled:
    """A prompter whose questions the session's journal keeps (pending, then how they
    ended: `dsh ls` shows a session waiting for input); the answer is never written."""

    def __init__(self, driver: Driver, inner: Prompter) -> None:
        self.driver = driver
        self.inner = inner

    async def ask(self, prompt: Prompt) -> str | None:
        await self._note(prompt, "pending", prompt.bound)
        started = time.monotonic()
        answer = await self.inner.ask(prompt)
        if answer is not None:
            state = "answered"
        else:
            state = "timed out" if time.monotonic() - started >= prompt.bound - 0.05 else "refused"
        await self._note(prompt, state, prompt.bound)
        return answer

    async def _note(self, prompt: Prompt, state: str, bound: float) -> None:
        recorder = self.driver._recorder
        if recorder is not None:
            with contextlib.suppress(DshError):  # a lost lease ends the work, not the question
                await recorder.prompt(prompt.id, prompt.text, state, bound)

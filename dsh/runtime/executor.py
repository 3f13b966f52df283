"""The executor: runs a plan's statements and keeps the bindings and result sets.

Statements run in order: a pipeline as host flows (dsh.runtime.flow) fanned out
over its target's hosts (dsh.runtime.waves), or one flow on the session's own
machine; a binding keeps its value with the session first; `if` and `for` run
the statements inside them. Each statement's effects go through its `Steps`
(dsh.runtime.steps): started here, or taken up from what a previous owner left.
Results of a line that ran on hosts become the result sets (`@{failed}`…) of
the next.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence

from dsh import plan as p
from dsh.inventory.lookup import Inventory
from dsh.plan import Outcome
from dsh.prompt import NoPrompter, Prompt, Prompter
from dsh.remote.base import Remote
from dsh.runtime import inputs
from dsh.runtime.clock import Clock, SystemClock
from dsh.runtime.context import Replayed, Resume, RunContext
from dsh.runtime.copies import Sources
from dsh.runtime.flow import HostFlow, Line
from dsh.runtime.inputs import MAX_INPUT, Input, OwnInput
from dsh.runtime.outdir import OutputFiles
from dsh.runtime.ports import Events, NoEvents, NullRecorder, Recorder, Reporter
from dsh.runtime.results import HostResult, LineResult
from dsh.runtime.steps import LiveSteps, SharedAwaits, Steps, TakenUp
from dsh.runtime.targets import Refused, hosts_of
from dsh.runtime.values import (
    BindingError,
    BindRefused,
    HostsValue,
    ResultValue,
    SecretValue,
    StrValue,
    Value,
    is_secret_in,
    names_in,
    render,
    value_bytes,
)
from dsh.runtime.waves import Seat, fan_out

#: How long a `secret` may wait for its answer.
SECRET_BOUND = 300.0
#: Outcomes that make an `if` condition neither true nor false: the line fails.
_BROKEN = frozenset({Outcome.UNREACHABLE, Outcome.REFUSED, Outcome.LOST, Outcome.CANCELLED})


#: A command's `| stdin -`: dsh's own standard input.
_OWN_STDIN = p.Text((p.Lit(p.OWN_STDIN),))


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
        lookup: Inventory | None = None,
    ) -> None:
        self.reporter = reporter
        #: The most bytes one binding may hold: more is refused, never cut.
        self.max_binding = max_binding
        #: dsh's own messages (a callback's URL): the reporter's, when it has them.
        self.say: Callable[[str], None] = getattr(reporter, "message", lambda text: None)
        #: Without a session: it keeps nothing, and numbers the runs (one for the
        #: executor's life, so that action ids, and the spool's claims, never meet).
        self._unrecorded = NullRecorder()
        self._recorder: Recorder = recorder if recorder is not None else self._unrecorded
        self.local = local
        self.host_remote = hosts
        self.clock = clock or SystemClock()
        self.args = tuple(args)
        #: Every inventory's groups (the config's `@inv:` references, the others'
        #: `@grp:`), looked up when a line starts.
        self.lookup = lookup if lookup is not None else Inventory(inventory or {})
        #: The most bytes a command's input may hold (limits.max_stdin).
        self.max_stdin = MAX_INPUT
        #: dsh's own standard input, read once, for `| stdin -` (None: it has none).
        self.own_input: OwnInput | None = None
        self.bindings: dict[str, Value] = {}
        self.result_sets: dict[str, tuple[str, ...]] = {}
        #: Where every action's output is written too (--outdir), if anywhere.
        self.outdir: OutputFiles | None = None
        #: The name under which hosts spool this executor's actions (the session's,
        #: once it is claimed; unique for a run without a session).
        self.spool_name = f"anon.{os.getpid()}.{os.urandom(4).hex()}"
        #: This machine's id: a local action another machine launched is out of reach.
        self.machine = ""
        #: Keys and signals in the store (a session's); awaits on them need it.
        self.events: Events = NoEvents()
        #: Where a `secret` is asked (the driver's: the terminal, a program, clients).
        self.prompter: Prompter = NoPrompter(self.say)
        self._asked = 0

    def own(self, *, spool_name: str, machine: str, recorder: Recorder, events: Events) -> None:
        """Run for a session this process owns: its spools on hosts, this machine's id,
        where each step is recorded, and what its awaits look at in the store."""
        self.spool_name, self.machine = spool_name, machine
        self.recorder, self.events = recorder, events

    def disown(self) -> None:
        """Record nothing more (the session is being let go, or removed)."""
        self.recorder = None

    def know(self, bindings: Mapping[str, Value], sets: Mapping[str, tuple[str, ...]] | None = None) -> None:
        """What the session bound before (and its result sets): later lines see them."""
        self.bindings.update(bindings)
        if sets is not None:
            self.result_sets = dict(sets)

    @property
    def recorder(self) -> Recorder:
        """Where the executor checkpoints (a NullRecorder without a session)."""
        return self._recorder

    @recorder.setter
    def recorder(self, recorder: Recorder | None) -> None:
        self._recorder = recorder if recorder is not None else self._unrecorded

    def binding_kinds(self) -> dict[str, str]:
        """Each bound name's kind, for compiling the lines that follow."""
        kinds = {StrValue: p.VALUE, SecretValue: p.VALUE, HostsValue: p.HOSTS, ResultValue: p.RESULT}
        return {name: kinds[type(value)] for name, value in self.bindings.items()}

    def text(self, text: p.Text, host: str | None) -> str:
        """`text` with the values bound now, each quoted for where it stands."""
        return render(text, self.bindings, self.args, host)

    def value(self, text: p.Text) -> str:
        """A dsh value's text (a binding, a comparison): a secret in it is itself."""
        return render(text, self.bindings, self.args, None, values=True)

    def command(self, text: p.Text, host: str | None) -> tuple[str, dict[str, str]]:
        """A command's text with the values bound now, and the environment its secrets
        travel in (the text names their variables: a secret is never in an argv)."""
        env: dict[str, str] = {}
        return render(text, self.bindings, self.args, host, env), env

    def secrets(self) -> tuple[bytes, ...]:
        """The secrets bound now, as bytes: shown and stored output masks them."""
        return tuple(
            v.text.encode("utf-8", "surrogateescape")
            for v in self.bindings.values()
            if isinstance(v, SecretValue) and v.text
        )

    async def _secrets_ready(self, stmt: p.Statement) -> None:
        """Ask again for the secrets `stmt` uses that this process does not hold (a new
        owner: the store keeps their prompts, never their values)."""
        for name in sorted(names_in(stmt)):
            value = self.bindings.get(name)
            if isinstance(value, SecretValue) and value.text is None:
                self.bindings[name] = await self._ask_secret(name, value.prompt)

    async def _ask_secret(self, name: str, prompt: str) -> SecretValue:
        self._asked += 1
        text = prompt if prompt.rstrip().endswith(":") else f"{prompt}:"
        asked = Prompt(f"secret-{self._asked}", text.rstrip() + " ", True, SECRET_BOUND)
        answer = await self.prompter.ask(asked)
        if answer is None:
            raise BindRefused(f"{name}: no answer to its prompt ({prompt}); nothing is bound")
        if "\n" in answer or "\0" in answer:
            raise BindRefused(f"{name}: a secret cannot hold a line break or a NUL; nothing is bound")
        return SecretValue(answer, prompt)

    async def run_plan(
        self,
        plan: p.Plan,
        *,
        stop_on_failure: bool = True,
        start: int = 0,
        first: Resume | None = None,
        replay: Mapping[str, Replayed] | None = None,
        args: Sequence[str] | None = None,
    ) -> list[LineResult]:
        """Run the statements from index `start`, the first of them resumed from
        `first` (a run a previous owner left unfinished) or `replay` (what the inner
        statements of a compound one it left did, by path); with `args`, the
        script's arguments it ran with; with stop_on_failure, stop after the
        first line not ok."""
        if args is not None:
            self.args = tuple(args)
        results = []
        for index in range(start, len(plan.statements)):
            ctx = RunContext(index, "", first, replay) if index == start else RunContext(index)
            result = await self.run_statement(plan.statements[index], plan, ctx)
            results.append(result)
            stop = stop_on_failure and not result.ok
            if stop or index + 1 == len(plan.statements):
                # The plan is over. Before that a resume goes by the last run record
                # (every statement has one): one key less per step.
                await self.recorder.progress(len(plan.statements))
            if stop:
                break
        return results

    async def run_statement(self, stmt: p.Statement, plan: p.Plan, ctx: RunContext) -> LineResult:
        """Run one statement. Its run is the one a previous owner started, if it did
        (`ctx.resume`, or its `ctx.replay` entry), whose actions are taken up where
        they stand instead of started again; else a new one."""
        replayed = ctx.replayed()
        resume = ctx.resume if ctx.resume is not None else replayed.resume if replayed is not None else None
        if resume is not None:
            run = resume.run
        elif replayed is not None:
            run = replayed.run
        else:
            run = await self.recorder.line_started(stmt, self.args, plan, ctx.index, ctx.path)
        live = LiveSteps(self)
        steps: Steps = TakenUp(resume, live) if resume is not None else live
        started = self.clock.monotonic()
        try:
            await self._secrets_ready(stmt)
            return await self._statement(stmt, plan, run, steps, ctx, resume)
        except BaseException:  # refused or cancelled: the run is over all the same, after this long
            with contextlib.suppress(Exception):
                await self.recorder.line_done(run, False, self.clock.monotonic() - started, None)
            raise

    async def _statement(
        self, stmt: p.Statement, plan: p.Plan, run: int, steps: Steps, ctx: RunContext, resume: Resume | None
    ) -> LineResult:
        if isinstance(stmt, p.If):
            result = await self._if(stmt, plan, run, ctx)
        elif isinstance(stmt, p.For):
            result = await self._for(stmt, plan, run, ctx, resume)
        elif isinstance(stmt, p.Run):
            consumed = ctx.path.endswith("c")  # an if's condition
            result = await self._pipeline(
                stmt, stmt.pipeline, plan, run, steps, resume, capture=False, consumed=consumed
            )
        elif isinstance(stmt.value, p.Pipeline):
            result = await self._pipeline(stmt, stmt.value, plan, run, steps, resume, capture=True)
            await self._bind(run, stmt.name, ResultValue(result.hosts))
        else:
            value: Value
            if isinstance(stmt.value, p.HostSet):
                value = HostsValue(tuple(await self.hosts_of(stmt.value, plan.step_budget)))
            elif isinstance(stmt.value, p.Secret):
                try:
                    prompt = self.text(stmt.value.prompt, None)
                except BindingError as exc:
                    raise Refused(f"line {stmt.line}: {exc.message}") from exc
                value = await self._ask_secret(stmt.name, prompt)
            else:
                try:
                    text = self.value(stmt.value)
                except BindingError as exc:
                    raise Refused(f"line {stmt.line}: {exc.message}") from exc
                secret = is_secret_in(stmt.value, self.bindings)  # made from a secret: secret too
                value = SecretValue(text, f"value of {stmt.name}") if secret else StrValue(text)
            await self._bind(run, stmt.name, value)
            result = LineResult(stmt, (), 0.0, on_hosts=False)
        sets = self.result_sets if result.on_hosts else None
        await self.recorder.line_done(run, result.ok, result.seconds, sets)
        return result

    # -- compound statements ----------------------------------------------------------

    async def _inner(self, stmt: p.Statement, plan: p.Plan, ctx: RunContext) -> LineResult:
        """A statement inside a compound one. Resumed, one that ended before is not run
        again: its recorded end stands (its bindings are in the store already)."""
        replayed = ctx.replayed()
        if replayed is not None and replayed.done:
            outcome = Outcome.OK if replayed.ok else Outcome.FAILED
            recorded = HostResult(None, outcome, None, 0.0, 0, "as recorded before the takeover")
            return LineResult(stmt, (recorded,), 0.0, on_hosts=False)
        return await self.run_statement(stmt, plan, ctx)

    async def _sequence(
        self, statements: tuple[p.Statement, ...], plan: p.Plan, ctx: RunContext, path: str
    ) -> LineResult | None:
        """Statements one after another, stopping after the first not ok."""
        last = None
        for i, inner in enumerate(statements):
            last = await self._inner(inner, plan, ctx.inner(f"{path}{i}"))
            if not last.ok:
                break
        return last

    async def _if(self, stmt: p.If, plan: p.Plan, run: int, ctx: RunContext) -> LineResult:
        started = self.clock.monotonic()
        prefix = f"{ctx.path}/" if ctx.path else ""
        if isinstance(stmt.cond, p.Compare):
            try:
                left = self.value(stmt.cond.left)
                right = self.value(stmt.cond.right)
            except BindingError as exc:
                raise Refused(f"line {stmt.line}: {exc.message}") from exc
            holds = (left == right) == (stmt.cond.op == "==")
        else:
            last = await self._inner(stmt.cond, plan, ctx.inner(f"{prefix}c"))
            broken = [h for h in last.hosts if h.outcome in _BROKEN]
            if broken:  # not false: unknown; the line fails
                return LineResult(stmt, last.hosts, self.clock.monotonic() - started, on_hosts=False)
            holds = last.ok
        branch, mark = (stmt.then, "t") if holds else (stmt.orelse, "e")
        ran = await self._sequence(branch, plan, ctx, f"{prefix}{mark}")
        hosts = ran.hosts if ran is not None else ()  # a failure of the condition is consumed
        return LineResult(stmt, hosts, self.clock.monotonic() - started, on_hosts=False)

    async def _for(
        self, stmt: p.For, plan: p.Plan, run: int, ctx: RunContext, resume: Resume | None
    ) -> LineResult:
        started = self.clock.monotonic()
        prefix = f"{ctx.path}/" if ctx.path else ""
        kept = resume.items if resume is not None else None  # a resume goes through the same items
        items = list(kept) if kept is not None else await self._items(stmt, plan)
        body_steps = sum(s.bound.steps or 0 for s in stmt.body)
        if len(items) * body_steps > plan.step_budget:
            raise Refused(
                f"line {stmt.line}: this for goes through {len(items)} items, so it may take "
                f"{len(items) * body_steps} steps, over the step budget of {plan.step_budget}"
            )
        if kept is None:
            await self._kept(stmt, self.recorder.line_hosts(run, (), {}, items))
        last: LineResult | None = None
        for j, value in enumerate(items):
            await self._bind(run, stmt.name, StrValue(value))
            last = await self._sequence(stmt.body, plan, ctx, f"{prefix}f{j}.")
            if last is not None and not last.ok:
                break
        hosts = last.hosts if last is not None else ()
        return LineResult(stmt, hosts, self.clock.monotonic() - started, on_hosts=False)

    async def _items(self, stmt: p.For, plan: p.Plan) -> list[str]:
        """A `for`'s items now: node sets' hosts, values' words, outputs' lines."""
        items: list[str] = []
        for item in stmt.items:
            if isinstance(item, p.HostSet):
                items += await self.hosts_of(item, plan.step_budget)
                continue
            try:
                text = self.text(item, None)
            except BindingError as exc:
                raise Refused(f"line {stmt.line}: {exc.message}") from exc
            only = item.parts[0] if len(item.parts) == 1 else None
            held = self.bindings.get(only.name) if isinstance(only, p.Var) and only.field is None else None
            if isinstance(held, HostsValue):  # a node set: its hosts
                items += held.hosts
                continue
            lines = isinstance(only, p.Var) and only.field in ("out", "err")  # an output: its lines
            items += [x for x in text.splitlines() if x] if lines else text.split()
        return items

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
        await self.recorder.bound(run, name, value)
        self.bindings[name] = value

    # -- targets -------------------------------------------------------------------

    async def hosts_of(self, target: p.HostSet, limit: int) -> list[str]:
        """The hosts of a target now (dsh.runtime.targets)."""
        return await hosts_of(
            target, limit, lookup=self.lookup, sets=self.result_sets, bindings=self.bindings
        )

    # -- lines ---------------------------------------------------------------------------

    async def _kept(self, stmt: p.Statement, keeping: Awaitable[None]) -> None:
        """What a line resolved, kept for a resume (refused whole when it cannot be)."""
        try:
            await keeping
        except Refused as exc:
            raise Refused(f"line {stmt.line}: {exc.message}") from exc

    async def _inputs(self, stmt: p.Statement, pipe: p.Pipeline, resume: Resume | None) -> dict[int, Input]:
        """The inputs of a line's command stages (`| stdin`), by stage, read whole now;
        on a resume, read again from where the line read them."""
        out: dict[int, Input] = {}
        for index, stage in enumerate(pipe.stages, 1):
            if not isinstance(stage, p.Command) or stage.stdin is None:
                continue
            kept = resume.inputs.get(index) if resume is not None and resume.inputs is not None else None
            try:
                if kept is not None:
                    out[index] = await inputs.again(kept, cap=self.max_stdin)
                else:
                    path = None if stage.stdin == _OWN_STDIN else self.value(stage.stdin)
                    if path == p.OWN_STDIN:  # a file named `-`, from a binding
                        path = "./-"
                    out[index] = await inputs.read(path, cap=self.max_stdin, own=self.own_input)
            except (inputs.InputError, BindingError) as exc:
                raise Refused(f"line {stmt.line}: {exc}") from exc
        return out

    async def _pipeline(
        self,
        stmt: p.Statement,
        pipe: p.Pipeline,
        plan: p.Plan,
        run: int,
        steps: Steps,
        resume: Resume | None,
        *,
        capture: bool,
        consumed: bool = False,
    ) -> LineResult:
        started = self.clock.monotonic()
        hosts: list[str] = []
        if pipe.target is not None:  # as resolved when the line started, on a resume
            kept = resume.hosts if resume is not None else None
            hosts = list(kept) if kept is not None else await self.hosts_of(pipe.target, plan.step_budget)
        inputs = await self._inputs(stmt, pipe, resume)
        if (pipe.target is not None or inputs) and (resume is None or resume.hosts is None):
            facts = {i: given.facts for i, given in inputs.items()}
            await self._kept(stmt, self.recorder.line_hosts(run, hosts, facts))
        with SharedAwaits() as shared:

            async def bind(name: str, value: Value) -> None:
                await self._bind(run, name, value)

            line = Line(
                stmt,
                pipe,
                run,
                capture,
                steps,
                shared,
                self.reporter,
                self.clock,
                self.text,
                bind,
                self.command,
                self.secrets,
                Sources(),
                self.outdir,
                inputs,
            )
            if pipe.target is None:
                self.reporter.line_started(stmt, None)
                host_result = await HostFlow(line, None, self.local).run()
                seconds = self.clock.monotonic() - started
                result = LineResult(stmt, (host_result,), seconds, on_hosts=False, consumed=consumed)
                self.reporter.line_done(result)
                return result
            if not hosts:
                note = f"{pipe.target.written} is empty: nothing to run"
                result = LineResult(stmt, (), 0.0, on_hosts=False, note=note)
                self.reporter.line_done(result)
                return result
            count = len(hosts) * pipe.steps_per_host()
            if count > plan.step_budget:
                raise Refused(
                    f"line {stmt.line}: {pipe.target.written} holds {len(hosts)} hosts, so the line "
                    f"may take {count} steps, over the step budget of {plan.step_budget}"
                )
            make = self.host_remote
            if make is None:
                raise Refused(
                    f"line {stmt.line}: running on remote hosts needs SSH, which this version "
                    "of dsh does not have yet; a line without a target runs here"
                )
            self.reporter.line_started(stmt, hosts)

            async def flow(host: str, seat: Seat) -> HostResult:
                return await HostFlow(line, host, make(host), seat).run()

            results = await fan_out(
                hosts,
                fanout=plan.fanout,
                batch=pipe.batch,
                gathers=[i for i, s in enumerate(pipe.stages, 1) if isinstance(s, p.Gather)],
                flow=flow,
                skipped=lambda skipped: self.reporter.host_done(stmt, skipped),
            )
        seconds = self.clock.monotonic() - started
        result = LineResult(stmt, tuple(results), seconds, on_hosts=True, consumed=consumed)
        self.result_sets = result.result_sets()
        self.reporter.line_done(result)
        return result

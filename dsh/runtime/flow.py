"""A host flow: one host's way through the stages of a line, one handler per stage type.

A flow runs its stages in order. A stage that does not end ok ends the flow,
with that outcome (a `where` decides instead whether the flow goes on); a
command stage gets `retry` more attempts, each after a doubling backoff. The
effects themselves go through `Steps` (dsh.runtime.steps), which alone knows
whether they run now or were run before a takeover: a flow reads the same live
and on resume.

A flow never raises for what happens on its host: that is its outcome. What
does raise (the lease lost, a value over the binding cap, a cancellation) ends
the whole line.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from dsh import plan as p
from dsh.bytestext import to_bytes
from dsh.plan import Outcome
from dsh.record import record
from dsh.remote.base import Exec, Remote
from dsh.runtime.capture import Capture
from dsh.runtime.clock import Clock
from dsh.runtime.context import StepId
from dsh.runtime.copies import CopyOrder, Sources, local_path
from dsh.runtime.inputs import Input
from dsh.runtime.outdir import OutdirError, OutputFiles
from dsh.runtime.ports import Reporter
from dsh.runtime.results import HostResult
from dsh.runtime.steps import SharedAwaits, Steps
from dsh.runtime.values import BindingError, StrValue, Value
from dsh.runtime.waves import Seat

#: Outcomes that another attempt cannot change.
FINAL = frozenset({Outcome.OK, Outcome.REFUSED, Outcome.CANCELLED, Outcome.SKIPPED, Outcome.LOST})


@record
class Line:
    """What every flow of one line shares: its statement and pipeline, its run, its
    steps (live or taken up), its signal awaits, and the executor's parts they use:
    `text` renders a text with the values bound now, `bind` binds a name, `command`
    renders a command's text (its secrets as environment variables)."""

    stmt: p.Statement
    pipe: p.Pipeline
    run: int
    #: A bound stage: its stdout is captured for the binding, not shown.
    capture: bool
    steps: Steps
    shared: SharedAwaits
    reporter: Reporter
    clock: Clock
    text: Callable[[p.Text, str | None], str]
    bind: Callable[[str, Value], Awaitable[None]]
    #: A command's text and the environment its secrets travel in.
    command: Callable[[p.Text, str | None], tuple[str, dict[str, str]]]
    #: The secrets bound now: masked in what is shown and kept of output.
    secrets: Callable[[], tuple[bytes, ...]]
    #: The sources of the line's puts, each read once.
    sources: Sources
    #: Where every action's output is written too (--outdir), if anywhere.
    outdir: OutputFiles | None = None
    #: The inputs of its command stages (`| stdin`), by stage, read once.
    inputs: Mapping[int, Input] | None = None


class HostFlow:
    """The flow of one host (None: the session's own machine) through a line."""

    def __init__(self, line: Line, host: str | None, remote: Remote, seat: Seat | None = None) -> None:
        self.line = line
        self.host = host
        self.remote = remote
        self.seat = seat
        # `gather` folds: the hosts' stdout is shown once they have all come, in the
        # summary, identical outputs together, not line by line as it streams.
        folded = host is not None and any(isinstance(s, p.Gather) for s in line.pipe.stages)
        hidden = line.capture or folded

        def show(stream: str, data: bytes) -> None:
            line.reporter.output(line.stmt, host, stream, data, not (stream == "stdout" and hidden))
            if line.outdir is not None and not self.output.replaying:
                try:
                    line.outdir.write(self.action, host, stream, data)
                except OutdirError as exc:  # said once: the files are left alone after
                    getattr(line.reporter, "message", lambda text: None)(exc.message)

        self.output = Capture(show, line.secrets)
        self.ended = Exec(Outcome.OK, 0, 0.0)
        self.attempts = 0
        #: The action running (its output goes to --outdir under its id).
        self.action = ""

    async def run(self) -> HostResult:
        """Run the stages; the host's result, reported."""
        line = self.line
        started = line.clock.monotonic()
        for index, stage in enumerate(line.pipe.stages, 1):
            if not isinstance(stage, p.Where) and self.ended.outcome != Outcome.OK:
                break
            handler = _STAGES.get(type(stage))
            if handler is None:
                raise TypeError(f"a stage of a kind the executor does not know: {stage!r}")
            if not await handler(self, index, stage):
                break  # the flow ends here, with the outcome it had
        ended, output = self.ended, self.output
        result = HostResult(
            self.host,
            ended.outcome,
            ended.exit_status,
            line.clock.monotonic() - started,
            self.attempts,
            ended.message,
            bytes(output.out),
            bytes(output.err),
            output.truncated,
        )
        line.reporter.host_done(line.stmt, result)
        return result

    # -- one handler per stage type: True when the flow goes on -------------------------

    async def where(self, index: int, stage: p.Where) -> bool:
        if not where_holds(stage, self.ended, bytes(self.output.out), bytes(self.output.err)):
            return False
        self.ended = Exec(Outcome.OK, 0, self.ended.seconds)  # a failure let through is consumed
        return True

    async def gather(self, index: int, stage: p.Gather) -> bool:
        if self.seat is not None:
            await self.seat.gather(index)
        return True

    async def sleep(self, index: int, stage: p.Sleep) -> bool:
        await self.line.steps.sleep(StepId(self.line.run, index, 1, self.host), stage.seconds)
        return True

    async def await_(self, index: int, stage: p.Await) -> bool:
        line = self.line
        step = StepId(line.run, index, 1, self.host)
        self.ended, value = await line.steps.await_(step, stage, remote=self.remote, shared=line.shared)
        if stage.kind == p.NEW_CALLBACK and self.ended.outcome == Outcome.OK:  # `cb = callback`: its URL
            self.output.out[:] = to_bytes(value)
        if self.ended.outcome == Outcome.OK and stage.bind is not None:
            await line.bind(stage.bind, StrValue(value))
        return True

    async def command(self, index: int, stage: p.Command) -> bool:
        line = self.line
        try:
            command, env = line.command(stage.text, self.host)
        except BindingError as exc:
            self.ended = Exec(Outcome.FAILED, None, 0.0, exc.message)
            return True

        stdin = line.inputs.get(index) if line.inputs is not None else None

        async def attempt(step: StepId) -> Exec:
            return await line.steps.command(
                step,
                command,
                timeout=stage.timeout,
                remote=self.remote,
                output=self.output,
                env=env,
                stdin=stdin,
            )

        await self._attempts(index, stage, attempt)
        return True

    async def copy(self, index: int, stage: p.Copy) -> bool:
        line = self.line
        try:
            local, remote_path = line.text(stage.local, self.host), line.text(stage.remote, self.host)
        except BindingError as exc:
            self.ended = Exec(Outcome.FAILED, None, 0.0, exc.message)
            return True
        if "\0" in local + remote_path or not local or not remote_path:  # from a binding
            why = "a copy's path " + ("holds a NUL byte" if "\0" in local + remote_path else "is empty")
            self.ended = Exec(Outcome.FAILED, None, 0.0, why)
            return True

        told = [-1.0]

        def progress(done: int, total: int) -> None:  # told at most 5 times a second, and at the end
            now = line.clock.monotonic()
            if done >= total or now - told[0] >= 0.2:
                told[0] = now
                line.reporter.copying(line.stmt, self.host, done, total)

        order = CopyOrder(
            stage, local_path(local), remote_path, self.remote, self.output, progress, line.sources
        )

        async def attempt(step: StepId) -> Exec:
            return await line.steps.copy(step, order)

        await self._attempts(index, stage, attempt)
        return True

    async def _attempts(
        self, index: int, stage: p.Command | p.Copy, attempt: Callable[[StepId], Awaitable[Exec]]
    ) -> None:
        """A stage's attempts, each after a doubling backoff, until one ends for good."""
        line = self.line
        for n in range(stage.attempts):
            step = StepId(line.run, index, n + 1, self.host)
            if n:
                wait = stage.backoff * 2 ** (n - 1)
                line.reporter.retrying(line.stmt, self.host, self.ended, n, wait)
                await line.steps.backoff(step, wait)
            self.output.clear()
            self.attempts += 1
            self.action = step.action
            self.ended = await attempt(step)
            if self.ended.outcome in FINAL:
                break


#: The handler of each stage type (an unknown one is a bug, said as such).
_STAGES: dict[type, Callable[[HostFlow, int, Any], Awaitable[bool]]] = {
    p.Command: HostFlow.command,
    p.Copy: HostFlow.copy,
    p.Sleep: HostFlow.sleep,
    p.Await: HostFlow.await_,
    p.Where: HostFlow.where,
    p.Gather: HostFlow.gather,
}


def where_holds(stage: p.Where, ended: Exec, out: bytes, err: bytes) -> bool:
    """Whether a host's flow goes on past a `where`."""
    if stage.regex is not None:
        data = out if stage.stream == "out" else err
        return re.search(stage.regex, data.decode("utf-8", "replace")) is not None
    if stage.outcome == "notok":
        return ended.outcome != Outcome.OK
    return ended.outcome == stage.outcome

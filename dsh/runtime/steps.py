"""Steps: the one layer that decides, per step id, between "recorded", "take up" and
"start", so that a host flow reads the same live and on resume.

A host flow asks `Steps` for each effect — an attempt of a command, the wait
before a retry, a sleep, an await — by its `StepId`. `LiveSteps` starts it:
the intent (checkpoint before effect), the effect, then its result. `TakenUp`
holds what a previous owner stored of the run, and for each step:

- a result is stored: it is the step's end (recorded; a command's output tail
  is shown again), nothing runs;
- an intent is stored: the host's spool is asked (probed), and the action is
  followed if it still runs, launched if it was never claimed, or lost — never
  launched twice; a local action another machine launched is out of reach (lost);
- a deadline is stored (a sleep, an await): the wait keeps it;
- nothing is stored: it starts, as `LiveSteps` does.

A step is journaled exactly as it would have been live: the result of every
effect this owner ran or followed, a cancelled one's too (if the store still
takes it), and nothing again for one that was recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Mapping
from typing import Protocol

from dsh import plan as p
from dsh.bytestext import from_bytes, to_bytes
from dsh.names import key_problem
from dsh.osuser import os_user
from dsh.plan import Outcome
from dsh.remote.base import (
    Copied,
    CopyFacts,
    Exec,
    Identity,
    OutputSink,
    Remote,
    RemoteUnreachable,
    Spot,
)
from dsh.runtime.capture import Capture
from dsh.runtime.clock import Clock
from dsh.runtime.context import Resume, StepId
from dsh.runtime.copies import CopyOrder, copy_live, copy_taken_up, summary
from dsh.runtime.events import Arrived, looker, timed_out, wait_for_event
from dsh.runtime.inputs import Input
from dsh.runtime.ports import ActionResult, AwaitEnded, CallbackError, Events, Recorder
from dsh.runtime.takeup import moved_host, recorded, untail
from dsh.runtime.values import BindingError

#: The alias of the session's own machine in its spool.
LOCAL_ALIAS = "local"


class SharedAwaits:
    """The signal awaits of one line: a signal awaited in a host flow is one wait
    (and one signal) for all its hosts, in every wave. Closing cancels a wait that
    no flow is left to take."""

    def __init__(self) -> None:
        self._waits: dict[tuple[int, int], asyncio.Future[Arrived]] = {}

    async def wait(self, step: StepId, wait: Awaitable[Arrived]) -> Arrived:
        """The end of the line's wait for `step`'s stage: `wait` if it is the first
        flow to come (else `wait` is dropped, unstarted)."""
        key = (step.run, step.stage)
        shared = self._waits.get(key)
        if shared is None:
            shared = self._waits[key] = asyncio.ensure_future(wait)
        elif asyncio.iscoroutine(wait):
            wait.close()
        return await asyncio.shield(shared)

    def __enter__(self) -> SharedAwaits:
        return self

    def __exit__(self, *exc: object) -> None:
        for shared in self._waits.values():
            shared.cancel()
        self._waits.clear()


class Wiring(Protocol):
    """What steps read from the executor at each call (the driver plugs a session's
    recorder and events in, and takes the recorder out, between statements)."""

    @property
    def recorder(self) -> Recorder: ...

    @property
    def events(self) -> Events: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def spool_name(self) -> str:
        """The name under which hosts spool this executor's actions."""
        ...

    @property
    def machine(self) -> str:
        """This machine's id: a local action another machine launched is out of reach."""
        ...

    def say(self, text: str) -> None:
        """dsh's own messages (a callback's URL)."""
        ...

    def text(self, text: p.Text, host: str | None) -> str:
        """`text` with the values bound now (BindingError when one is missing)."""
        ...


class Steps(Protocol):
    """The effects of a host flow, each by its step id."""

    async def backoff(self, step: StepId, seconds: float) -> None:
        """The wait before attempt `step` (over already if the attempt was stored)."""
        ...

    async def command(
        self,
        step: StepId,
        command: str,
        *,
        timeout: float,
        remote: Remote,
        output: Capture,
        env: Mapping[str, str] | None = None,
        stdin: Input | None = None,
    ) -> Exec:
        """One attempt of a command on `remote`, its output streamed to `output`; `env`:
        the secrets it reads from its environment; `stdin`, its input (None: /dev/null)."""
        ...

    async def copy(self, step: StepId, order: CopyOrder) -> Exec:
        """One attempt of a copy (dsh/runtime/copies.py)."""
        ...

    async def sleep(self, step: StepId, seconds: float) -> None:
        """A durable timer."""
        ...

    async def await_(
        self, step: StepId, stage: p.Await, *, remote: Remote, shared: SharedAwaits
    ) -> tuple[Exec, str]:
        """Wait for an event (design §3): how the wait ended, and the value it brought."""
        ...


class LiveSteps:
    """Steps started here: the intent (checkpoint before effect), the effect, its result."""

    def __init__(self, wiring: Wiring) -> None:
        self.wiring = wiring

    async def backoff(self, step: StepId, seconds: float) -> None:
        await self.wiring.clock.sleep(seconds)

    async def command(
        self,
        step: StepId,
        command: str,
        *,
        timeout: float,
        remote: Remote,
        output: Capture,
        env: Mapping[str, str] | None = None,
        stdin: Input | None = None,
    ) -> Exec:
        spot = self.spot(step)
        return await self.journaled(
            step, output, self._launch(remote, spot, step.host, command, timeout, output, env, stdin)
        )

    async def copy(self, step: StepId, order: CopyOrder) -> Exec:
        return await copy_live(self, step, order)

    async def sleep(self, step: StepId, seconds: float) -> None:
        clock = self.wiring.clock
        await self.wiring.recorder.sleep(step.action, step.host, seconds, clock.wall() + seconds)
        await clock.sleep(seconds)

    async def await_(
        self,
        step: StepId,
        stage: p.Await,
        *,
        remote: Remote,
        shared: SharedAwaits,
        deadline: float | None = None,
    ) -> tuple[Exec, str]:
        """`deadline`: the one a previous owner stored (a resumed await keeps it)."""
        wiring, clock = self.wiring, self.wiring.clock  # its recorder: read at each use
        action, host = step.action, step.host
        try:
            args = [wiring.text(text, host) for text in stage.args]
        except BindingError as exc:
            return Exec(Outcome.FAILED, None, 0.0, exc.message), ""
        problem = key_problem(args[0]) if stage.kind == "key" else None
        if problem:  # a key from a binding, which `dsh key` could never set
            return Exec(Outcome.FAILED, None, 0.0, problem), ""
        if stage.kind == p.NEW_CALLBACK or (stage.kind == "callback" and not args):
            try:
                args = [await self._new_callback(stage, step)]
            except CallbackError as exc:
                failed = Exec(Outcome.FAILED, None, 0.0, exc.message)
                await wiring.recorder.result(
                    ActionResult(action, host, Outcome.FAILED, None, 0.0, exc.message, b"", b"")
                )
                return failed, ""
            if stage.kind == p.NEW_CALLBACK:
                await wiring.recorder.result(
                    ActionResult(action, host, Outcome.OK, 0, 0.0, "", args[0].encode(), b"")
                )
                return Exec(Outcome.OK, 0, 0.0), args[0]
        started = clock.monotonic()
        if deadline is None:
            deadline = clock.wall() + stage.timeout
            await wiring.recorder.awaiting(action, host, stage.written, deadline)
        shared_host = None if stage.kind == "signal" else host
        look, what = looker(stage.kind, args, remote, wiring.events, action, shared_host, deadline)
        wait = wait_for_event(clock, deadline, stage.every, look, timed_out(what, stage.timeout))
        try:
            if stage.kind == "signal" and host is not None:  # one wait, and one signal, for every host
                arrived = await shared.wait(step, wait)
            else:
                arrived = await wait
        except AwaitEnded as exc:  # what it waits for cannot come (a denial, another's callback)
            arrived = Arrived(False, "", exc.message)
            refused = True
        else:
            refused = False
        finally:
            if stage.kind == "approval":  # its ask withdrawn, however it ended (a cancel too)
                await asyncio.shield(wiring.events.approval_over(action))
        seconds = clock.monotonic() - started
        if arrived.ok:
            ended = Exec(Outcome.OK, 0, seconds)
        else:
            ended = Exec(Outcome.FAILED if refused else Outcome.TIMEOUT, None, seconds, arrived.message)
        value = to_bytes(arrived.value)
        await wiring.recorder.result(
            ActionResult(action, host, ended.outcome, ended.exit_status, seconds, ended.message, value, b"")
        )
        return ended, arrived.value

    # -- shared with TakenUp ----------------------------------------------------------

    def spot(self, step: StepId) -> Spot:
        return Spot(self.wiring.spool_name, step.action, step.host or LOCAL_ALIAS)

    async def journaled(self, step: StepId, output: Capture, effect: Awaitable[Exec | Copied]) -> Exec:
        """Run an action's `effect` and journal its end; a cancelled one is journaled
        `cancelled`, after the time it ran, if the store still takes it (it may be
        why; the outcome says it all: no message repeats it). A copy's end says what
        it copied on its stdout, and is journaled with it."""
        clock, began = self.wiring.clock, self.wiring.clock.monotonic()
        copied: CopyFacts | None = None
        try:
            ended = await effect
            if isinstance(ended, Copied):
                copied, ended = ended.facts, ended.ended
                if ended.outcome == Outcome.OK:
                    output("stdout", summary(copied, step.host))
        except asyncio.CancelledError:
            output.end()
            seconds = clock.monotonic() - began
            cancelled = ActionResult(
                step.action,
                step.host,
                Outcome.CANCELLED,
                None,
                seconds,
                "",
                bytes(output.out),
                bytes(output.err),
            )
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.shield(self.wiring.recorder.result(cancelled))
            raise
        output.end()
        await self.wiring.recorder.result(
            ActionResult(
                step.action,
                step.host,
                ended.outcome,
                ended.exit_status,
                ended.seconds,
                ended.message,
                bytes(output.out),
                bytes(output.err),
                copied,
            )
        )
        return ended

    # -- effects ------------------------------------------------------------------------

    async def _launch(
        self,
        remote: Remote,
        spot: Spot,
        host: str | None,
        command: str,
        timeout: float,
        sink: OutputSink,
        env: Mapping[str, str] | None = None,
        stdin: Input | None = None,
    ) -> Exec:
        """Start an action: who the host is (connecting), then the intent (checkpoint
        before effect), then the launch. A host that cannot be reached starts nothing;
        nor does one whose input this owner has not (it fails, saying why).
        Connecting counts against the attempt's timeout, as `dsh explain` does."""
        if stdin is not None and stdin.data is None:
            return Exec(Outcome.FAILED, None, 0.0, f"not started: {stdin.missing}")
        started = self.wiring.clock.monotonic()
        where = await self.reach(remote, host, timeout, "command")
        if isinstance(where, Exec):
            return where
        facts = stdin.facts if stdin is not None else None
        await self.wiring.recorder.intent(spot.action, host, command, timeout, where, stdin=facts)
        left = max(timeout - (self.wiring.clock.monotonic() - started), 0.001)
        data = stdin.data if stdin is not None else None
        return await remote.run(
            command, spot=spot, timeout=left, output=sink, env=env, stdin=data, told=timeout
        )

    async def reach(
        self, remote: Remote, host: str | None, timeout: float, what: str
    ) -> Identity | Exec | None:
        """Who the host is, connecting within `timeout` (None: this machine); an Exec
        when it cannot be reached."""
        clock = self.wiring.clock
        started = clock.monotonic()
        try:
            return await asyncio.wait_for(remote.identity(), timeout) if host is not None else None
        except RemoteUnreachable as exc:
            return Exec(exc.outcome, None, clock.monotonic() - started, exc.message)
        except TimeoutError:
            message = f"no connection within the {what}'s timeout ({timeout:g}s)"
            return Exec(Outcome.UNREACHABLE, None, clock.monotonic() - started, message)

    async def _new_callback(self, stage: p.Await, step: StepId) -> str:
        """Make (or make again, after a takeover) the callback of an action: its URL,
        shown, and journaled when new."""
        url, new = await self.wiring.events.new_callback(step.action, step.host)
        who = f" {stage.bind}" if stage.bind else ""
        self.wiring.say(f"callback{who}: POST to {url}")
        if new:
            await self.wiring.recorder.callback(step.action, step.host, url)
        return url


class TakenUp:
    """The steps of a run a previous owner started (`resume`): each step stored is
    taken where it stands, each step not stored is started (`live`)."""

    def __init__(self, resume: Resume, live: LiveSteps) -> None:
        self.resume = resume
        self.live = live

    async def backoff(self, step: StepId, seconds: float) -> None:
        if self.resume.held(step) is None:  # else the wait was over before the takeover
            await self.live.backoff(step, seconds)

    async def command(
        self,
        step: StepId,
        command: str,
        *,
        timeout: float,
        remote: Remote,
        output: Capture,
        env: Mapping[str, str] | None = None,
        stdin: Input | None = None,
    ) -> Exec:
        held = self.resume.held(step)
        if held is None:
            return await self.live.command(
                step, command, timeout=timeout, remote=remote, output=output, env=env, stdin=stdin
            )
        if held.get("state") == "done":  # ended before: its record, and its output's tail
            output.replay("stdout", untail(held.get("out")))
            output.replay("stderr", untail(held.get("err")))
            return recorded(held)
        return await self.live.journaled(
            step, output, self._take_up(step, held, command, timeout, remote, output, env, stdin)
        )

    async def copy(self, step: StepId, order: CopyOrder) -> Exec:
        return await copy_taken_up(self, step, order)

    async def sleep(self, step: StepId, seconds: float) -> None:
        held = self.resume.held(step)
        if held is not None and "deadline" in held:  # a durable timer: its stored deadline
            clock = self.live.wiring.clock
            await clock.sleep(max(0.0, float(str(held["deadline"])) - clock.wall()))
            return
        await self.live.sleep(step, seconds)

    async def await_(
        self, step: StepId, stage: p.Await, *, remote: Remote, shared: SharedAwaits
    ) -> tuple[Exec, str]:
        held = self.resume.held(step)
        if stage.kind == "signal":  # consumed for every host at once
            consumed = self.resume.actions.get((step.action, None))
            if consumed is not None and consumed.get("state") == "done":
                held = consumed
        if held is not None and held.get("state") == "done":
            return recorded(held), from_bytes(untail(held.get("out")))
        deadline = held.get("deadline") if held is not None else None
        kept = float(deadline) if isinstance(deadline, int | float) else None
        return await self.live.await_(step, stage, remote=remote, shared=shared, deadline=kept)

    async def _take_up(
        self,
        step: StepId,
        held: Mapping[str, object],
        command: str,
        timeout: float,
        remote: Remote,
        sink: OutputSink,
        env: Mapping[str, str] | None = None,
        stdin: Input | None = None,
    ) -> Exec:
        """An action whose intent a previous owner recorded: collect its status, follow
        it if it still runs, start it if it never was (the claim keeps a late launch
        of the old owner's from running too), or call it lost. Never twice. A local
        action another machine launched is lost: its spool is out of reach. `where`:
        who the host was for that owner; if this machine reaches the alias elsewhere,
        the action is lost: it neither asks that spool nor starts anything there."""
        wiring = self.live.wiring
        if step.host is None and held.get("machine") != wiring.machine:
            why = f"launched on machine {held.get('machine')}, whose local spool is out of reach"
            return Exec(Outcome.LOST, None, 0.0, why)
        if step.host is None and held.get("os_user") not in (None, os_user()):
            who, where = held.get("os_user"), held.get("machine")
            why = f"launched by OS user {who} on {where}, whose local spool is theirs"
            return Exec(Outcome.LOST, None, 0.0, why)
        at = held.get("at")  # what is left of its timeout, since it was started
        since = wiring.clock.wall() - float(at) if isinstance(at, int | float) else 0.0
        left = max(1.0, timeout - max(0.0, since))
        await wiring.recorder.taking_up(step.action, step.host, left)
        spot = self.live.spot(step)
        moved = await moved_host(remote, spot, held)
        if moved is not None:
            return moved
        try:
            state = await remote.probe(spot)
        except RemoteUnreachable as exc:
            return Exec(Outcome.LOST, None, 0.0, f"launched before; its spool cannot be asked: {exc.message}")
        if state == "none":
            if stdin is not None and stdin.data is None:  # never started, and its input is not here
                return Exec(Outcome.FAILED, None, 0.0, f"not started: {stdin.missing}")
            data = stdin.data if stdin is not None else None
            return await remote.run(
                command, spot=spot, timeout=left, output=sink, env=env, stdin=data, told=timeout
            )
        if state == "lost":
            return Exec(Outcome.LOST, None, 0.0, "launched before, and nobody is left to report its end")
        return await remote.follow(spot, timeout=left, output=sink, told=timeout)

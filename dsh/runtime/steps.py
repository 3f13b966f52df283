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
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

from dsh import plan as p
from dsh.bytestext import from_bytes, loaded, to_bytes
from dsh.names import key_problem
from dsh.plan import Outcome
from dsh.remote.base import Exec, Identity, OutputSink, Remote, RemoteUnreachable, Spot
from dsh.runtime.clock import Clock
from dsh.runtime.context import Resume, StepId
from dsh.runtime.events import Arrived, looker, timed_out, wait_for_event
from dsh.runtime.ports import ActionResult, CallbackError, Events, Recorder
from dsh.runtime.results import KEEP_BYTES
from dsh.runtime.values import BindingError

#: The alias of the session's own machine in its spool.
LOCAL_ALIAS = "local"


class Capture:
    """What a flow keeps of the output of its current action: the first KEEP_BYTES
    of each stream (`truncated` once more came), each piece passed on to `show`.
    The secrets bound now (`secrets`) are masked as `***` in both: the end of a piece
    that may begin one is held back until the next piece, or the action's end
    (`end`)."""

    def __init__(self, show: OutputSink, secrets: Callable[[], tuple[bytes, ...]] = tuple) -> None:
        self.show = show
        self.secrets = secrets
        self.out = bytearray()
        self.err = bytearray()
        self.truncated = False
        self._held: dict[str, bytes] = {}

    def __call__(self, stream: str, data: bytes) -> None:
        secrets = self.secrets()
        if secrets:
            data = self._held.pop(stream, b"") + data
            keep = _partial_secret(data, secrets)
            if keep:
                data, self._held[stream] = data[:-keep], data[-keep:]
            for secret in secrets:
                data = data.replace(secret, MASK)
        self._pass(stream, data)

    def _pass(self, stream: str, data: bytes) -> None:
        buf = self.out if stream == "stdout" else self.err
        room = KEEP_BYTES - len(buf)
        if room < len(data):
            self.truncated = True
        buf += data[: max(room, 0)]
        self.show(stream, data)

    def end(self) -> None:
        """The action is over: what was held back (no secret after all) goes on."""
        for stream, held in list(self._held.items()):
            del self._held[stream]
            self._pass(stream, held)

    def clear(self) -> None:
        self.out.clear()
        self.err.clear()
        self.truncated = False
        self._held.clear()


#: What a secret is shown and kept as.
MASK = b"***"


def _partial_secret(data: bytes, secrets: tuple[bytes, ...]) -> int:
    """The length of the longest end of `data` that begins a secret (and is not one)."""
    for size in range(min(len(data), max(len(s) for s in secrets) - 1), 0, -1):
        tail = data[-size:]
        if any(len(s) > size and s.startswith(tail) for s in secrets):
            return size
    return 0


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
    ) -> Exec:
        """One attempt of a command on `remote`, its output streamed to `output`; `env`:
        the secrets it reads from its environment."""
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
    ) -> Exec:
        spot = self.spot(step)
        return await self.journaled(
            step, output, self._launch(remote, spot, step.host, command, timeout, output, env)
        )

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
        if stage.kind == "signal" and host is not None:  # one wait, and one signal, for every host
            arrived = await shared.wait(step, wait)
        else:
            arrived = await wait
        seconds = clock.monotonic() - started
        if arrived.ok:
            ended = Exec(Outcome.OK, 0, seconds)
        else:
            ended = Exec(Outcome.TIMEOUT, None, seconds, arrived.message)
        value = to_bytes(arrived.value)
        await wiring.recorder.result(
            ActionResult(action, host, ended.outcome, ended.exit_status, seconds, ended.message, value, b"")
        )
        return ended, arrived.value

    # -- shared with TakenUp ----------------------------------------------------------

    def spot(self, step: StepId) -> Spot:
        return Spot(self.wiring.spool_name, step.action, step.host or LOCAL_ALIAS)

    async def journaled(self, step: StepId, output: Capture, effect: Awaitable[Exec]) -> Exec:
        """Run an action's `effect` and journal its end; a cancelled one is journaled
        `cancelled`, after the time it ran, if the store still takes it (it may be
        why; the outcome says it all: no message repeats it)."""
        clock, began = self.wiring.clock, self.wiring.clock.monotonic()
        try:
            ended = await effect
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
    ) -> Exec:
        """Start an action: who the host is (connecting), then the intent (checkpoint
        before effect), then the launch. A host that cannot be reached starts nothing.
        Connecting counts against the attempt's timeout, as `dsh explain` does."""
        clock = self.wiring.clock
        started = clock.monotonic()
        try:
            where = await asyncio.wait_for(remote.identity(), timeout) if host is not None else None
        except RemoteUnreachable as exc:
            return Exec(exc.outcome, None, clock.monotonic() - started, exc.message)
        except TimeoutError:
            message = f"no connection within the command's timeout ({timeout:g}s)"
            return Exec(Outcome.UNREACHABLE, None, clock.monotonic() - started, message)
        await self.wiring.recorder.intent(spot.action, host, command, timeout, where)
        left = max(timeout - (clock.monotonic() - started), 0.001)
        return await remote.run(command, spot=spot, timeout=left, output=sink, env=env)

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
    ) -> Exec:
        held = self.resume.held(step)
        if held is None:
            return await self.live.command(
                step, command, timeout=timeout, remote=remote, output=output, env=env
            )
        if held.get("state") == "done":  # ended before: its record, and its output's tail
            output("stdout", _untail(held.get("out")))
            output("stderr", _untail(held.get("err")))
            return recorded(held)
        return await self.live.journaled(
            step, output, self._take_up(step, held, command, timeout, remote, output, env)
        )

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
            return recorded(held), from_bytes(_untail(held.get("out")))
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
        at = held.get("at")  # what is left of its timeout, since it was started
        since = wiring.clock.wall() - float(at) if isinstance(at, int | float) else 0.0
        left = max(1.0, timeout - max(0.0, since))
        await wiring.recorder.taking_up(step.action, step.host, left)
        spot = self.live.spot(step)
        where = held.get("where")
        if isinstance(where, dict):
            try:
                here = await remote.identity()
            except RemoteUnreachable as exc:
                return Exec(
                    Outcome.LOST, None, 0.0, f"launched before; its host cannot be reached: {exc.message}"
                )
            moved = _elsewhere(spot.alias, where, here)
            if moved:
                return Exec(Outcome.LOST, None, 0.0, moved)
        try:
            state = await remote.probe(spot)
        except RemoteUnreachable as exc:
            return Exec(Outcome.LOST, None, 0.0, f"launched before; its spool cannot be asked: {exc.message}")
        if state == "none":
            return await remote.run(command, spot=spot, timeout=left, output=sink, env=env)
        if state == "lost":
            return Exec(Outcome.LOST, None, 0.0, "launched before, and nobody is left to report its end")
        return await remote.follow(spot, timeout=left, output=sink)


def recorded(held: Mapping[str, object]) -> Exec:
    """The end of a step as its result record has it."""
    exit_status = held.get("exit")
    return Exec(
        str(held.get("outcome", Outcome.LOST)),
        exit_status if isinstance(exit_status, int) else None,
        float(held.get("seconds", 0.0)),  # type: ignore[arg-type]
        str(held.get("message", "")),
    )


def _untail(value: object) -> bytes:
    """The output tail a result record keeps, as the bytes it was (records older
    than dsh.bytestext kept bytes that were not UTF-8 as `\\xNN` text)."""
    return to_bytes(loaded(value)) if isinstance(value, str | dict) else b""


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

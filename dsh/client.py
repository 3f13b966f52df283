"""A client of a session's executor process: what the prompt and `dsh attach` are.

A client never runs work itself. It finds the session's executor through the
owner record in the store (or starts one, which takes the session over if
its owner died), connects to its socket (only one that its own user serves:
dsh.localsocket), and then: submits each complete line to the session's
inbox in the store (numbered by compare-and-set), shows the live output the
executor sends, and waits for that line's status. The two talk the protocol
of dsh.runtime.protocol; an executor that speaks another version is refused
with a sentence (exit 3).
Ctrl-C asks the executor to cancel the line; Ctrl-\\ or `detach` leaves the
work running and ends only the client (dsh.readeval); so does the terminal
closing (SIGHUP ends the client, never the executor, which is in a process
session of its own). At the end of its input a client waits for the
session's work to be over and exits with its status.

When the executor runs on another machine, the client follows the session
through the store instead (dsh.follow), and takes it over if its owner goes
away; `dsh attach --take` asks a live owner to hand over (it lets the actions
in hand end, checkpoints and lets go) and then takes over.

One event loop, on the main thread, and no thread or signal of the client's
own: each method that callers without a loop call (`connect`, `submit`,
`read_line`, …) runs the loop until it is done, and meanwhile the loop's
tasks go on — the reader of the executor's socket, which shows its output at
once (even while the prompt waits), and the follower.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from dsh.errors import DshError, StoreError
from dsh.exits import Exit
from dsh.follow import Follower, Gone
from dsh.osuser import os_user
from dsh.questions import Answering
from dsh.reach import LINE_LIMIT, Connection, Reach
from dsh.reach import Link as Link
from dsh.reach import SessionEnded as SessionEnded
from dsh.repl.lines import Detach as Detach
from dsh.repl.lines import Woken
from dsh.runtime.protocol import (
    Agent,
    Ask,
    Asked,
    Bye,
    Cancel,
    Done,
    End,
    Event,
    HostDone,
    Idle,
    Leave,
    Line,
    LineDone,
    Op,
    Poke,
    ProtocolError,
    Stmt,
    Wait,
    encode,
)
from dsh.runtime.values import Value
from dsh.runtime.wire import Replay
from dsh.session import control
from dsh.session.bindings import decode_value
from dsh.session.records import Submission

T = TypeVar("T")
#: How long a client waits for the executor's answer to `bye`.
#: The bound of one store call.
STORE_TIMEOUT = 10.0
BYE_TIMEOUT = 10.0
#: Control events (statuses, ends) a client keeps until it looks at them.
CLIENT_QUEUE = 10_000

#: What a client acts on: control events of the executor's or the follower's, and
#: CLOSED (the executor's socket closed).
Control = Event | Gone | None
CLOSED: Control = None


@dataclass
class Running:
    """A line the executor runs now, for the toolbar."""

    source: str
    hosts: int
    done: int
    started: float


class Client:
    def __init__(
        self,
        link: Link,
        replay: Replay,
        say: Callable[[str], None],
        show_error: Callable[[str], None],
        show_entry: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.link = link
        self.replay = replay
        self.say = say
        self.show_error = show_error
        self.runner = asyncio.Runner()
        #: Finds, starts or follows the executor (a follower shows each journal entry
        #: of a session followed from another machine with `show_entry`).
        self.reach = Reach(link, say, show_entry or (lambda entry: say(str(entry))), self._control)
        #: The session's executor on its socket; or, on another machine, the follower.
        self.connection: Connection | None = None
        self.follower: Follower | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.controls: deque[Control] = deque()
        self.arrived = asyncio.Event()
        #: Set when the session ended or its owner went: a wait for input ends.
        self.woken = asyncio.Event()
        self.status = 0
        #: Lines the executor runs now, by statement number.
        self.running: dict[int, Running] = {}
        self.last_line = ""
        self._main: asyncio.Task[Any] | None = None
        self._interrupt: BaseException | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        #: `connect_soon`'s work, until something that needs the session waits for it.
        self._connecting: asyncio.Future[None] | None = None
        #: The executor's questions (a sudo password), asked of this client's user.
        self.answering = Answering(self._send, say)

    # -- the loop ------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the client's loop until it is done (how callers without a
        loop wait); `interrupt` ends it with an exception of its own."""
        return self.runner.run(self._interruptible(coro))

    _run = run  # the name the command line calls it by

    async def _interruptible(self, coro: Coroutine[Any, Any, T]) -> T:
        self._main = asyncio.current_task()
        try:
            if self._interrupt is not None:
                coro.close()
                raise self._take_interrupt()
            return await coro
        except asyncio.CancelledError:
            if self._interrupt is not None:
                raise self._take_interrupt() from None
            raise
        finally:
            self._main = None

    def interrupt(self, exc: BaseException) -> None:
        """End what the loop waits for now (or the next wait) with `exc` (a signal
        handler's: Ctrl-\\ detaches)."""
        self._interrupt = exc
        if self._main is not None and not self._main.done():
            self._main.cancel()

    def _take_interrupt(self) -> BaseException:
        exc, self._interrupt = self._interrupt, None
        assert exc is not None
        return exc

    @contextlib.contextmanager
    def on_signal(self, signum: int, exc: type[BaseException]) -> Iterator[None]:
        """While in the block, signal `signum` ends the client's wait with `exc`."""
        loop = self.runner.get_loop()
        loop.add_signal_handler(signum, lambda: self.interrupt(exc()))
        try:
            yield
        finally:
            loop.remove_signal_handler(signum)
            self._interrupt = None

    def read_line(self, reading: Awaitable[T]) -> T:
        """Run a reader's coroutine (a line of input) on the loop; Woken if the
        session ended or its owner went meanwhile."""
        return self.run(self._until_woken(reading))

    async def _until_woken(self, reading: Awaitable[T]) -> T:
        work = asyncio.ensure_future(reading)
        woken = asyncio.ensure_future(self.woken.wait())
        try:
            await asyncio.wait({work, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            if not work.done():  # the prompt goes first (it gives the terminal back)
                work.cancel()
                await asyncio.wait({work}, timeout=5.0)
        if work.cancelled():
            raise Woken
        return work.result()

    def _soon(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connecting ------------------------------------------------------------------

    def connect(self, *, take: bool, handover: bool = False) -> None:
        """Connect to the session's executor, starting one if none runs here; follow
        it if it runs on another machine (or, with `handover`, ask it to hand over)."""
        self.run(self._use(self.reach.connect(take=take, handover=handover)))

    def connect_soon(
        self, *, take: bool, handover: bool = False, then: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """`connect`, begun now and carried on by the client's loop while it runs
        (while the prompt waits for a line), then `then`; whatever needs the
        session waits for it (`_connected`), and an error of it wakes a wait for a
        line: the next `drain` raises it, as `connect` would have."""

        async def reach() -> None:
            await self._use(self.reach.connect(take=take, handover=handover))
            if then is not None:
                await then()

        def failed(task: asyncio.Future[None]) -> None:
            if not task.cancelled() and task.exception() is not None:
                self.woken.set()

        async def begin() -> None:
            self._connecting = asyncio.ensure_future(reach())
            self._connecting.add_done_callback(failed)

        self.run(begin())

    def connecting(self) -> bool:
        """Whether the session is still being reached (`connect_soon`)."""
        return self._connecting is not None and not self._connecting.done()

    async def _connected(self) -> None:
        """Wait for `connect_soon`'s work (its error raised here); a cancel of this
        wait (Ctrl-C) leaves the connect going."""
        task = self._connecting
        if task is not None:
            await asyncio.shield(task)
            self._connecting = None

    async def _use(self, reaching: Coroutine[Any, Any, Connection | Follower]) -> None:
        """Talk through what `reaching` gives: the executor's socket, or a follower."""
        got = await reaching
        if isinstance(got, Follower):
            self.follower = got
            return
        self.connection = got
        self.reader_task = asyncio.create_task(self._read(got))
        self._send(Agent(os.environ.get("SSH_AUTH_SOCK") or None))  # its hosts' ForwardAgent

    # -- the executor's events -------------------------------------------------------

    async def _read(self, connection: Connection) -> None:
        """The reader task: the executor's events, replayed at once (even while a
        prompt waits) or kept for whoever waits for them. An executor is silent
        while the session idles: the wait has no bound but the socket's end."""
        try:
            while raw := await connection.reader.readline():
                event = connection.decode(raw)
                if isinstance(event, Ask | Asked):
                    self.answering.event(event)
                    continue
                self._track(event)
                try:
                    if self.replay(event):  # shown at once, even while a prompt waits
                        continue
                except OSError:
                    continue  # our own output closed: act on what else comes
                self._control(event)
        except ProtocolError as exc:
            self._control(End(exc.exit_code, exc.message))
            return
        except ValueError:  # a line over LINE_LIMIT
            self._control(End(Exit.STORE, f"{connection.peer} sent a line of over {LINE_LIMIT} bytes"))
            return
        except OSError:
            pass
        self._control(CLOSED)

    def _control(self, event: Control) -> None:
        """Keep a control event (the reader's or the follower's) for whoever waits."""
        if len(self.controls) < CLIENT_QUEUE:
            self.controls.append(event)
        self.arrived.set()
        if event is CLOSED or isinstance(event, End | Gone):
            self.woken.set()

    def _track(self, event: Event) -> None:
        """What runs now, for the toolbar and for Ctrl-D."""
        if isinstance(event, Line | Stmt):  # stmt: running when we connected
            hosts = len(event.hosts) if isinstance(event, Line) else 0
            self.running[event.k] = Running(event.def_.source, hosts, 0, time.monotonic())
        elif isinstance(event, HostDone) and event.k in self.running:
            self.running[event.k].done += 1
        elif isinstance(event, LineDone):
            self.running.pop(event.k, None)
        elif isinstance(event, Done | Idle):  # a unit of work is over (a cancelled one says no done-line)
            self.running.clear()

    def busy(self) -> bool:
        return bool(self.running)

    def progress(self) -> str:
        """The lines running now, as the toolbar shows them (or how the last one ended)."""
        if self.connecting():
            return "starting the session…"
        if not self.running and self.last_line:
            return self.last_line
        parts = []
        for line in list(self.running.values()):
            hosts = f" {line.done}/{line.hosts} hosts" if line.hosts else ""
            parts.append(f"running {line.source[:40]!r}{hosts}, {time.monotonic() - line.started:.0f}s")
        return "; ".join(parts)

    def _send(self, op: Op) -> None:
        if self.connection is not None and not self.connection.writer.is_closing():
            self.connection.writer.write(encode(op))

    async def _cancel(self, sid: str) -> None:
        await self._connected()
        if self.follower is not None:  # no socket: what the store can carry
            await self.follower.cancel(sid)
        else:
            self._send(Cancel(sid))

    def cancel_all(self) -> None:
        self.run(self._cancel("*"))

    def drain(self) -> None:
        """Act on what the executor said while nobody looked (before a prompt)."""
        self.run(self._drain())

    async def _drain(self) -> None:
        self.woken.clear()
        if self._connecting is not None and self._connecting.done():
            await self._connected()  # its error, if it failed
        while self.controls:
            await self._handle(self.controls.popleft())

    async def _wait(self, until: Callable[[Control], bool], timeout: float | None = None) -> Control:
        """Wait for a control event that satisfies `until` (returned); None at `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while self.controls:
                event = self.controls.popleft()
                if await self._handle(event) and until(event):
                    return event
            self.arrived.clear()
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except TimeoutError:
                return None

    async def _handle(self, event: Control) -> bool:
        """Act on one control event; True when the caller should see it."""
        if event is CLOSED:
            retry = f"dsh attach {self.link.keys.name} takes over"
            raise SessionEnded(self.reach.why(f"its executor stopped unexpectedly ({retry})"), Exit.STORE)
        if isinstance(event, End):
            raise SessionEnded(event.message, event.exit)
        if isinstance(event, Gone):
            if self.follower is not None:  # the owner followed went: take the session over
                await self.follower.stop()
                self.follower = None
            await self._use(self.reach.take_over(event.handover))
            return False
        return True

    # -- lines -------------------------------------------------------------------------

    def submit(self, text: str, name: str, first_line: int) -> int | None:
        """Run a line in the session: submit it, show its output, return its status
        (None when it ran nothing). Ctrl-C asks the executor to cancel it."""
        return self.run(self._submit(text, name, first_line))

    async def _submit(self, text: str, name: str, first_line: int) -> int | None:
        if self.connecting():  # Ctrl-C meanwhile drops the line, as at the prompt
            loop = asyncio.get_running_loop()
            waiting = asyncio.current_task()
            assert waiting is not None
            loop.add_signal_handler(signal.SIGINT, waiting.cancel)
            try:
                await self._connected()
            except asyncio.CancelledError:
                if waiting.uncancel() or self._interrupt is not None:
                    raise  # cancelled by another hand (Ctrl-\\ detaches)
                self.say("the line did not run: the session was still starting")
                return None
            finally:
                loop.remove_signal_handler(signal.SIGINT)
        await self._connected()
        sid = os.urandom(6).hex()
        began = time.monotonic()
        item = Submission(sid, text, name, first_line, self.link.machine, os_user())
        await control.submit(self.link.store, self.link.keys, item, timeout=STORE_TIMEOUT)
        self._send(Poke())
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, lambda: self._soon(self._cancel(sid)))
        try:
            done = await self._wait(lambda e: isinstance(e, Done) and e.id == sid)
        finally:
            loop.remove_signal_handler(signal.SIGINT)
        with contextlib.suppress(StoreError, TimeoutError):  # answered: the owner took it; it goes
            await control.withdraw(self.link.store, self.link.keys, sid, timeout=STORE_TIMEOUT)
            await control.cancel_done(self.link.store, self.link.keys, sid, timeout=STORE_TIMEOUT)
        assert isinstance(done, Done)
        if done.error:
            self.show_error(done.error)
        status = done.status
        if status is not None:
            self.status = status
            word = "ok" if status == 0 else f"status {status}"
            self.last_line = f"last line: {word} in {time.monotonic() - began:.1f}s"
        return status

    def wait_idle(self) -> int:
        """Wait for the session's work to be over; its status."""
        return self.run(self._wait_idle())

    async def _wait_idle(self) -> int:
        await self._connected()
        while self.follower is not None and await self.follower.work_left():
            await self._wait(lambda e: False, timeout=0.5)  # taken over meanwhile, perhaps
        if self.follower is not None:
            return self.status
        self._send(Wait())
        event = await self._wait(lambda e: isinstance(e, Idle | Bye))
        if isinstance(event, Idle):
            return event.status
        return (event.exit or 0) if isinstance(event, Bye) else self.status

    def leave(self) -> bool:
        """Say bye; True when the executor stays (work runs, or other clients)."""
        return self.run(self._leave())

    async def _leave(self) -> bool:
        await self._connected()
        if self.follower is not None:
            await self.follower.stop()
            self.follower = None
            await self.reach.stop_standby()
            return True
        if self.connection is None:
            return False
        self._send(Leave())
        event = None
        with contextlib.suppress(DshError):
            event = await self._wait(lambda e: isinstance(e, Bye), BYE_TIMEOUT)
        return event.stays if isinstance(event, Bye) else False

    def close(self) -> None:
        self._interrupt = None
        try:
            self.run(self._close())
        finally:
            self.runner.close()

    async def _close(self) -> None:
        if self._connecting is not None:  # never reached (an error ended the client first)
            self._connecting.cancel()
            await asyncio.wait({self._connecting}, timeout=1.0)
        if self.follower is not None:
            await self.follower.stop()
        await self.reach.stop_standby()
        if self.reader_task is not None:
            self.reader_task.cancel()
            await asyncio.wait({self.reader_task}, timeout=1.0)
        if self.connection is not None:
            self.connection.writer.close()
        with contextlib.suppress(DshError, TimeoutError, OSError):
            await self.link.store.close()

    def bindings(self) -> dict[str, Value]:
        """What the session has bound (for checking and completing what is typed)."""
        return self.run(self._bindings())

    async def _bindings(self) -> dict[str, Value]:
        store, keys = self.link.store, self.link.keys
        kvs, _ = await store.range(keys.bindings, timeout=STORE_TIMEOUT)
        out: dict[str, Value] = {}
        for kv in kvs:
            with contextlib.suppress(DshError):
                out[kv.key[len(keys.bindings) :].decode()] = decode_value(kv.value, key=kv.key)
        return out

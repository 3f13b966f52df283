"""The executor process of a session: owns it, runs its work, serves its clients.

`dsh run --detach`, the REPL and `dsh attach` start it with subprocess (never
fork), in a process session of its own, its output to a log file. It holds
the session's lease; finishes what a previous owner left (a resume); runs the
script it was given, if any; then takes the lines that clients submit through
the store (each under its person's path: dsh.session.control), one at a time,
in the order they were made, each taken in the same transaction as the plan it
becomes, and journaled with who submitted it and from which machine.

Clients on this machine connect to a Unix socket (dsh.localsocket: the
user's alone; its path is in the owner record) and talk the protocol of
dsh.runtime.protocol: they receive `hello`, live output (dsh.runtime.wire),
the status of each submission, and `idle` when asked to wait for the
session's work. They send `poke` (a line was submitted: read the inbox now),
`cancel ID`, `wait` and `bye`; a client whose line cannot be taken (another
protocol version, an unknown message) is told why (`end`) and hung up on. A
slow client never slows the work (dsh.attached).

The process stays while a client is connected or a line is queued, and for
`linger` seconds after it starts; then it lets the session go and exits with
the status of the last work it ran (or 3 when the lease was lost, 4 when the
session was killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dsh import plan as p
from dsh.agentrelay import AgentRelay
from dsh.attached import CLIENT_STALL, Attached, Tee
from dsh.driver import Driver, Killed, status_of
from dsh.errors import DshError, LangError, StoreError
from dsh.exits import Exit
from dsh.localsocket import listen
from dsh.osuser import os_user
from dsh.questions import ClientQuestions
from dsh.runtime.protocol import (
    Agent,
    Answer,
    Bye,
    Cancel,
    Done,
    End,
    Event,
    Hello,
    Idle,
    Leave,
    Op,
    ProtocolError,
    Wait,
    decode_op,
)
from dsh.runtime.results import LineResult
from dsh.runtime.wire import WireReporter
from dsh.session import control
from dsh.session.journal import Checkpointer, LeaseLost
from dsh.session.lease import Owned, Session
from dsh.session.records import ControlEntry, Handover, Owner, RejectedEntry, Submission, SubmissionDone
from dsh.store.base import StoreDenied

#: The inbox and the cancel requests in the store are read at least this often.
POLL = 0.25
#: What a client of another protocol version is told (before it is hung up on).
_REMEDY = "another version of dsh runs this session's executor; attach with that version"
#: The exit status of a line cancelled by a client (as for Ctrl-C).
CANCELLED = Exit.INTERRUPTED


class Daemon:
    """Serves one session until nobody needs it; see the module's doc."""

    def __init__(self, session: Session, state: Path, log_renderer: Any) -> None:
        self.session = session
        #: The state directory: the socket goes under it (or, too long a path, elsewhere).
        self.state = state
        self.clients: set[Attached] = set()
        self.wire = WireReporter(self._broadcast)
        self.reporter = Tee(log_renderer, self.wire)
        self.wake = asyncio.Event()
        self.status: int = Exit.OK
        self.taken = 0
        self.current: tuple[str, asyncio.Future[list[LineResult]]] | None = None
        self.cancelled: set[str] = set()
        #: The inbox could not be read (said once until it can again).
        self.unreachable = False
        #: `dsh attach --take` on another machine asked for the session: who.
        self.handover: Handover | None = None
        self.connected = asyncio.Event()  # a first client came
        #: The driver running the session's work (from `serve`).
        self.driver: Driver | None = None
        #: The agent of the client attached now, for hosts reached with ForwardAgent.
        self.relay = AgentRelay(Path(os.devnull), lambda text: None)  # serve() makes the real one
        #: Questions for the clients (a password for hosts' sudo): the driver's prompter.
        self.questions = ClientQuestions(lambda event: self._broadcast(event, control=True))

    @property
    def owned(self) -> Owned:
        """The session as this executor owns it (once `serve` has claimed it)."""
        owned = self.driver.owned if self.driver is not None else None
        if owned is None:
            raise LeaseLost("the session is not owned here")
        return owned

    def _note(self, text: str) -> None:
        """Said now, and kept in the journal for later (nobody may be attached)."""
        self.reporter.message(text)
        recorder = self.driver._recorder if self.driver is not None else None
        if recorder is not None:
            task = asyncio.ensure_future(recorder.note(text))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _broadcast(self, event: Event, *, control: bool = False) -> None:
        for client in list(self.clients):
            client.send(event, control=control)

    # -- clients -------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = Attached(writer)
        running = self.current[0] if self.current else None
        client.send(Hello(self.session.keys.name, os.getpid(), running), control=True)
        for event in [*self.wire.greeting(), *self.questions.pending()]:
            client.send(event, control=True)
        self.clients.add(client)
        self.connected.set()
        pump = client.task = asyncio.ensure_future(client.pump())
        try:
            while not client.gone:
                raw = await reader.readline()
                if not raw:
                    break
                try:
                    op = decode_op(raw, peer="a client", remedy=_REMEDY)
                except ProtocolError as exc:  # told why, and hung up on: the others go on
                    self.reporter.log.message(exc.message)
                    client.send(End(exc.exit_code, exc.message), control=True)
                    client.close()
                    await asyncio.wait({pump}, timeout=CLIENT_STALL)  # what is queued, then the end
                    break
                self._op(client, op)
        except (OSError, ValueError):  # gone, or a line longer than a client's ever is
            pass
        finally:
            client.gone = True
            client.ready.set()
            self.clients.discard(client)
            self.relay.detach(client)
            self.wake.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pump, CLIENT_STALL)

    def _op(self, client: Attached, op: Op) -> None:
        if isinstance(op, Answer):
            self.questions.answer(op.id, op.text)
        elif isinstance(op, Agent):
            self.relay.attach(client, op.path)
        elif isinstance(op, Cancel):
            self.cancel(op.id)
        elif isinstance(op, Wait):
            client.waiting = True
        elif isinstance(op, Leave):
            others = [c for c in self.clients if c is not client and not c.leaving]
            if others or self.current is not None:
                client.send(Bye(True), control=True)
            else:
                client.leaving = True
        self.wake.set()

    def cancel(self, sid: str) -> bool:
        """Cancel the work `sid` names ("*": whatever runs); whether there was any."""
        if self.current is not None and sid in (self.current[0], "*"):
            self.cancelled.add(self.current[0])
            self.current[1].cancel()
            return True
        return False

    # -- the work ----------------------------------------------------------------------

    async def work(self, sid: str, coro: Awaitable[list[LineResult]]) -> int | None:
        """Run one unit of work (a resume, the script, a submitted line) so that it
        can be cancelled by a client; its status (None when it ran nothing)."""
        task = asyncio.ensure_future(coro)
        self.current = (sid, task)
        self.wake.set()
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=POLL)
                if not task.done():
                    await self._store_control()
                if self.handover is not None and not task.done() and self._drained():
                    await self.owned.checkpointer().flush()  # every result in the store first
                    if self._drained():  # (an intent written meanwhile is not launched: see intent)
                        self.owned.lost()  # the lease goes with release(): the next owner claims
            results = task.result()
        except asyncio.CancelledError:
            if sid in self.cancelled and task.cancelled():
                self.reporter.message("cancelled")
                return CANCELLED
            raise
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            self.current = None
            self.cancelled.discard(sid)
            self.wire.running.clear()
        return status_of(results) if results else None

    async def _store_control(self) -> None:
        """What clients without a socket (on other machines) ask through the store:
        cancels, and a handover, which stops new actions from starting."""
        keys, store, timeout = self.owned.keys, self.owned.store, self.owned.timeout
        with contextlib.suppress(StoreError, TimeoutError):  # the checkpoints will say so
            asked: list[ControlEntry] = []

            def cancel(sid: str, person: str, machine: str) -> None:
                if self.cancel(sid):
                    asked.append(ControlEntry("cancel", person, machine, sid))

            await control.take_cancels(store, keys, cancel, timeout=timeout)
            if asked:
                cp = self.owned.checkpointer()
                await cp.write([cp.entry(entry) for entry in asked])
            if self.handover is None:
                found = await control.handover_asked(store, keys, timeout=timeout)
                if found is not None and not found[1].to(self.owned.machine, os_user()):
                    person, self.handover = found
                    to = self.handover.machine
                    self.owned.drain()
                    cp = self.owned.checkpointer()
                    await cp.write(
                        [cp.entry(ControlEntry("handover", person, to, f"from {self.owned.machine}"))]
                    )
                    me = Owner(
                        self.owned.machine, os.getpid(), time.time(), self.owned.lease_ttl, None, keys.me
                    )
                    await control.handing_over(store, keys, me, timeout=timeout)
                    self.reporter.message(
                        f"handing session {keys.name} over to {person} on {to}: "
                        "the actions running end, then it goes on there"
                    )

    async def _took_over(self, previous: Owner) -> None:
        """Journal the takeover, and say so when it was another person's."""
        keys, cp = self.owned.keys, self.owned.checkpointer()
        was = f"{previous.person or '?'}@{previous.machine}"
        await cp.write([cp.entry(ControlEntry("takeover", keys.me, self.owned.machine, f"from {was}"))])
        if previous.person not in (None, keys.me):
            self.reporter.message(
                f"took session {keys.name} over from {was}: what is left runs with your SSH access"
            )

    def _drained(self) -> bool:
        """No action runs any more (or those left are past their timeout and grace)."""
        now = time.monotonic()
        return all(until < now for until in self.owned.in_flight.values())

    async def _viewers(self) -> bool:
        """Whether clients on other machines follow the session (through the store)."""
        try:
            return await control.has_viewers(self.owned.store, self.owned.keys, timeout=self.owned.timeout)
        except (StoreError, TimeoutError):
            return True  # cannot tell: stay

    async def _answer(self, item: Submission | None, sid: str, status: int | None, error: str = "") -> None:
        """Tell the clients that submission `sid` is over: over the socket, and through
        the store when it came from another machine (or another OS user's client)."""
        self._broadcast(Done(sid, status, error or None), control=True)
        if item is not None and item.elsewhere(self.owned.machine, os_user()):
            done = SubmissionDone(status, error)
            with contextlib.suppress(StoreError, TimeoutError):
                await control.answer(self.owned.store, self.owned.keys, sid, done, timeout=self.owned.timeout)

    async def _inbox(self) -> tuple[int, str, Submission] | None:
        """`_next`, or None while the store cannot be reached (said once): the
        lease decides how long that may last."""
        try:
            found = await self._next()
        except (LeaseLost, StoreDenied):  # a refusal is no outage: waiting will not help
            raise
        except (StoreError, TimeoutError) as exc:
            if not self.unreachable:
                self.reporter.message(f"the store cannot be reached ({exc}); trying again")
            self.unreachable = True
            return None
        if self.unreachable:
            self.reporter.message("the store answers again")
        self.unreachable = False
        return found

    async def _next(self) -> tuple[int, str, Submission] | None:
        """The oldest submission not taken yet (its revision, its person, it). One
        that cannot be read (a damaged or forged record) is journaled as rejected and
        skipped: it never stops the executor (fault report #9)."""

        async def rejected(revision: int, person: str, why: str) -> None:
            error = f"a submission of {person}'s (revision {revision}) cannot be read ({why}): skipped"
            await self._reject(revision, error)
            self.reporter.message(error)

        owned = self.owned
        return await control.next_submission(
            owned.store, owned.keys, self.taken, timeout=owned.timeout, rejected=rejected
        )

    async def _reject(self, seq: int, error: str) -> None:
        """Submission `seq` is taken and not run: journaled with why."""
        cp = self.owned.checkpointer()
        await cp.write([control.taken_put(self.owned.keys, seq), cp.entry(RejectedEntry(error))])
        self.taken = seq

    async def submission(self, driver: Driver, seq: int, person: str, item: Submission) -> None:
        cp = self.owned.checkpointer()
        self.owned.by = (person, item.by)  # whose lines these are, in the journal
        try:
            await self._submission(driver, seq, item, cp)
        finally:
            self.owned.by = None

    async def _submission(self, driver: Driver, seq: int, item: Submission, cp: Checkpointer) -> None:
        sid = item.id
        try:
            # in a thread: a group source's program may take its timeout, and the lease is kept meanwhile
            plan = await asyncio.to_thread(driver.compile, item.text, item.name, item.first_line)
        except LangError as exc:
            await self._reject(seq, exc.message)
            self.status = exc.exit_code
            await self._answer(item, sid, exc.exit_code, exc.render())
            return
        self.taken = seq
        status: int | None = None
        if plan.statements:
            status = await self.work(sid, driver.run(plan, stop_on_failure=True, taken=seq))
        else:
            await driver.keep_functions()  # a line of only `fn` definitions
            await cp.write([control.taken_put(self.owned.keys, seq)])
        await driver.idle()
        if status is not None:
            self.status = status
        await self._answer(item, sid, status)

    async def serve(
        self,
        driver: Driver,
        *,
        take: bool,
        script: p.Plan | None,
        linger: float,
        first_client: float,
        patience: float = 1.0,
        wanted: Callable[[], bool] | None = None,
    ) -> int:
        """Own the session, run its work, serve its clients; the exit status."""
        listener = listen(self.state, self.session.machine, self.session.keys.name)
        if listener.note is not None:
            self.reporter.message(listener.note)
        try:
            server = await asyncio.start_unix_server(self._client, sock=listener.sock)
        except BaseException:
            listener.close()
            raise
        socket = str(listener.path)
        self.driver = driver
        code: int | None = None
        # Its agent relay: no longer a path than the control socket's (".agt" < ".sock").
        relay = self.relay = AgentRelay(listener.path.with_suffix(".agt"), self._note)
        try:
            if (cannot := await relay.start()) is not None:
                self.reporter.message(cannot)
            await (driver.take(patience, wanted, socket) if take else driver.claim(socket))
            store, keys, timeout = self.owned.store, self.owned.keys, self.owned.timeout
            await control.upgrade(store, keys, self.owned.checkpointer().fence, timeout=timeout)
            # whom it was taken from: the owner it found, or the one that handed it over
            previous = self.owned.previous or await control.handed_by(store, keys, timeout=timeout)
            asked = await control.handover_asked(store, keys, timeout=timeout)
            if asked is not None and asked[1].to(self.owned.machine, os_user()):
                await control.handover_done(store, keys, timeout=timeout)  # handed to us: done
            # The line taken last may be the one to resume: its client waits for it.
            self.taken, pending = await control.last_taken(store, keys, timeout=timeout)
            if first_client > 0:  # started for a client: let it see the work from its start
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.connected.wait(), first_client)
            if previous is not None:  # taken over from a live owner, or one whose lease ran out
                await self._took_over(previous)
            status = await self.work("resume", driver.resume())
            self.status = self.status if status is None else status
            if status is not None and pending is not None:
                await self._answer(pending, pending.id, status)
            if script is not None:
                status = await self.work("script", driver.run(script))
                self.status = self.status if status is None else status
            started = time.monotonic()
            while True:
                if self.owned.killed:
                    raise Killed(f"session {self.owned.keys.name!r} was killed (dsh kill)")
                self.owned.ensure_owned()  # a lease lost while idle ends it
                await self._store_control()
                if self.handover is not None:
                    break
                found = await self._inbox()
                if found is not None:
                    await self.submission(driver, *found)
                    continue
                await driver.idle()
                for client in self.clients:
                    if client.waiting:
                        client.waiting = False
                        client.send(Idle(self.status), control=True)
                staying = [c for c in self.clients if not c.leaving and not c.gone]
                if not staying and time.monotonic() - started >= linger and not await self._viewers():
                    break
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), POLL)
            code = self.status
            if self.handover is not None:
                raise LeaseLost("handed over")
        except (Killed, LeaseLost) as exc:
            code = exc.exit_code
            message = exc.message
            if self.handover is not None and isinstance(exc, LeaseLost):
                where = self.handover.machine
                message = f"session {self.session.keys.name} was handed over to {where}; it goes on there"
            self.reporter.message(message)
            self._broadcast(End(code, message), control=True)
        except DshError as exc:
            code = exc.exit_code
            self.reporter.message(exc.message)
            self._broadcast(End(code, exc.message), control=True)
        finally:
            server.close()
            await relay.close()  # before the listener, which removes its directory
            listener.close()
            try:
                await driver.release()
            finally:
                self._broadcast(Bye(False, code), control=True)
                pumps = [c.task for c in self.clients if c.task is not None]
                for client in list(self.clients):
                    client.close()
                if pumps:
                    await asyncio.wait(pumps, timeout=2.0)
        return code if code is not None else self.status

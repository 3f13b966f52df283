"""A client of a session's executor process: what the REPL and `dsh attach` are.

A client never runs work itself. It finds the session's executor through the
owner record in the store (or starts one, which takes the session over if
its owner died), connects to its socket (only one that its own user serves:
dsh.localsocket), and then: submits each complete line to the session's
inbox in the store (numbered by compare-and-set), shows the live output the
executor sends, and waits for that line's status.
Ctrl-C asks the executor to cancel the line; Ctrl-\\ or `detach` leaves the
work running and ends only the client; so does the terminal closing (SIGHUP
ends the client, never the executor, which is in a process session of its
own). At the end of its input a client waits for the session's work to be
over and exits with its status.

When the executor runs on another machine, the client follows the session
through the store instead (dsh.follow), and takes it over if its owner goes
away; `dsh attach --take` asks a live owner to hand over (it lets the actions
in hand end, checkpoints and lets go) and then takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dsh.bytestext import loaded, to_bytes
from dsh.errors import DshError, IncompleteInput, LangError, StoreError, UsageError
from dsh.follow import Follower
from dsh.localsocket import dial
from dsh.runtime.session import Keys, decode_value, read_journal
from dsh.runtime.values import Value
from dsh.runtime.wire import Event, Replay
from dsh.session.codec import dumps, load_action, loads
from dsh.session.records import ActDone, CorruptRecord, Handover, Owner, Submission
from dsh.store.base import Compare, Put, Store

T = TypeVar("T")
#: How long a client waits for the executor it started to own the session,
#: beyond the lease TTL of an owner that died (a takeover waits for it).
SPAWN_TIMEOUT = 15.0
#: How long `dsh attach --take` waits for a live owner to hand over: the actions
#: it runs end first (each has a timeout).
HANDOVER_WAIT = 900.0
#: How long a follower's standby executor waits for the owner to let go (then a
#: takeover starts an executor afresh).
STANDBY_WAIT = 86400.0
#: The TTL of a handover request's lease: it goes this long after its client.
HANDOVER_TTL = 10.0
#: How long a client waits for the executor's answer to `bye`.
BYE_TIMEOUT = 10.0
#: An owner record that cannot be read (damaged, or forged): someone holds the
#: session, on a machine that is not this one, with no socket to dial: it is
#: followed through the store.
UNREADABLE_OWNER = Owner("?", 0, 0.0)
#: Journal entries shown when attaching (the rest: `dsh log SESSION`).
HISTORY = 20
#: Lines of output tail shown per action in that history.
TAIL_LINES = 3
#: Control events (statuses, ends) a client keeps until it looks at them.
CLIENT_QUEUE = 10_000
_POLL = 0.1


class Detach(Exception):
    """The user asked to leave the session running (Ctrl-\\ or `detach`)."""


class _Woken(Exception):
    """Raised in the main thread, while it waits for input, when the session ends."""


class SessionEnded(DshError):
    """The session's executor stopped: killed (4), lease lost (3), or gone."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Link:
    """How to reach a session's executor, or start one."""

    store: Store
    keys: Keys
    machine: str
    #: Starts an executor process for the session (with take: taking it over,
    #: waiting up to the given seconds more for a live owner to let go).
    spawn: Callable[[bool, float], subprocess.Popen[bytes]]
    log: Path
    #: Opens another handle on the store (for a follower's thread).
    reopen: Callable[[], Store]


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
        #: Shows a journal entry of a session followed from another machine.
        self.show_entry = show_entry or (lambda entry: say(json.dumps(entry)))
        self.follower: Follower | None = None
        #: A follower's executor in waiting: it takes the session over when its owner goes.
        self.standby: subprocess.Popen[bytes] | None = None
        #: The lease of this client's request for a handover (0: none).
        self.handover_lease = 0
        self.replay = replay
        self.say = say
        self.show_error = show_error
        self.runner = asyncio.Runner()
        self.sock: socket.socket | None = None
        self.events: queue.Queue[Event | None] = queue.Queue(CLIENT_QUEUE)
        self.status = 0
        #: The main thread is waiting for input: an ending session interrupts it.
        self.reading = False
        #: Lines the executor runs now (by statement number): source, hosts, hosts done, start.
        self.running: dict[int, list[Any]] = {}
        self.last_line = ""

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    # -- connecting ------------------------------------------------------------------

    def _owner(self) -> Owner | None:
        held = self._run(self.link.store.get(self.link.keys.owner, timeout=10.0))
        if held is None:
            return None
        try:
            return loads(Owner, held.value, key=held.key)
        except CorruptRecord:
            return UNREADABLE_OWNER

    def connect(self, *, take: bool, handover: bool = False) -> None:
        """Connect to the session's executor, starting one if none runs here; follow
        it if it runs on another machine (or, with `handover`, ask it to hand over)."""
        owner = self._owner()
        here = owner is not None and owner.machine == self.link.machine
        if here and owner is not None and owner.socket:
            self.sock = dial(owner.socket)
        if self.sock is None and owner is not None and not here:
            if not handover:
                self._follow(owner)
                return
            if not owner.socket:
                raise UsageError(
                    f"session {self.link.keys.name} runs in the foreground on {owner.machine} "
                    "(dsh -c, a script or piped lines), which cannot hand it over: follow it with "
                    f"dsh attach {self.link.keys.name}, or stop it there"
                )
            self._run(self._ask_handover())
            self.say(
                f"asked {owner.machine} to hand session {self.link.keys.name} over: "
                "the actions it runs end first"
            )
        if self.sock is None:
            try:
                self._start(take or owner is not None, HANDOVER_WAIT if handover else 0.0)
            finally:
                self._withdraw_handover()
            if self.sock is None:  # another machine took it first: follow that one
                owner = self._owner()
                assert owner is not None
                self._follow(owner)
                return
        reader = threading.Thread(target=self._read, args=(self.sock,), daemon=True)
        reader.start()

    def _start(self, take: bool, patience: float) -> None:
        """Start an executor here and connect to it; no socket if another machine
        won the session meanwhile."""
        owner = self._owner()
        ttl = owner.ttl if owner else 0.0
        child = self.link.spawn(take, patience)
        deadline = time.monotonic() + SPAWN_TIMEOUT + ttl + patience
        renewed = time.monotonic()
        while self.sock is None:
            if self.handover_lease and time.monotonic() - renewed > HANDOVER_TTL / 3:
                renewed = time.monotonic()
                with contextlib.suppress(DshError, TimeoutError):
                    self._run(self.link.store.keepalive(self.handover_lease, timeout=HANDOVER_TTL / 3))
            code = child.poll()
            if code is not None:
                owner = self._owner()
                if code == 2 and owner is not None:  # it lost a race to take the session over
                    if owner.machine != self.link.machine:
                        return  # to another machine: follow that one
                    if owner.socket:  # to another executor here: join that one
                        self.sock = dial(owner.socket)
                        if self.sock is not None:
                            return
                raise SessionEnded(self._why(f"its executor stopped (exit {code})"), code or 3)
            if time.monotonic() > deadline:
                child.terminate()
                raise SessionEnded(self._why("its executor did not take it in time"), 3)
            owner = self._owner()
            here = owner is not None and owner.machine == self.link.machine
            if here and owner is not None and owner.socket:
                # Ours, or another executor here that won the session (a second attach
                # at the same time): join it. A dead owner's socket does not answer.
                self.sock = dial(owner.socket)
                if self.sock is not None and owner.pid != child.pid:
                    child.terminate()  # it only waited to take the session: it goes
            if self.sock is None:
                time.sleep(0.05)

    async def _ask_handover(self) -> None:
        """Ask for the session, on a lease this client keeps while it waits: a request
        that nobody waits for any more goes away by itself."""
        store = self.link.store
        lease = await store.grant(HANDOVER_TTL, timeout=10.0)
        self.handover_lease = lease.id
        record = Handover(self.link.machine, os.getpid(), time.time())
        await store.put(self.link.keys.handover, dumps(record), lease=lease.id, timeout=10.0)

    def _withdraw_handover(self) -> None:
        if self.handover_lease:
            with contextlib.suppress(DshError, TimeoutError):
                self._run(self.link.store.revoke(self.handover_lease, timeout=10.0))
            self.handover_lease = 0

    def _follow(self, owner: Owner) -> None:
        """Follow the session through the store, with an executor in waiting here
        that takes it over as soon as its owner lets go or dies."""
        self.follower = Follower(
            self.link.reopen, self.link.keys, self.link.machine, self.events, self.show_entry, self._wake
        )
        self.follower.start()
        if self.standby is None or self.standby.poll() is not None:
            self.standby = self.link.spawn(True, STANDBY_WAIT)
        name = self.link.keys.name
        self.say(
            f"session {name} runs on {owner.machine} (pid {owner.pid}): following it "
            f"from here, and lines run there; dsh attach --take {name} takes it over"
        )

    def _take_over(self, handed: bool = False) -> None:
        """The owner a follower followed let go or died: the executor in waiting here
        takes the session over (or another machine's did: follow that one).
        `handed`: it went while asked to hand over (else it stopped, or its lease
        ran out: a store cannot tell the two apart)."""
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        standby, self.standby = self.standby, None
        if standby is None or standby.poll() is not None:
            self.connect(take=True)
            return
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while time.monotonic() < deadline and standby.poll() is None:
            owner = self._owner()
            if owner is not None and owner.pid == standby.pid and owner.socket:
                self.sock = dial(owner.socket)
                if self.sock is not None:
                    self.say(f"{_gone(self.link.keys.name, handed)}: taken over here")
                    threading.Thread(target=self._read, args=(self.sock,), daemon=True).start()
                    return
            elif owner is not None and owner.machine != self.link.machine:
                self.standby = standby  # another machine was first: it goes on waiting
                self._follow(owner)
                return
            time.sleep(0.02)
        self._stop_standby(standby)
        self.connect(take=True)

    def _stop_standby(self, standby: subprocess.Popen[bytes] | None) -> None:
        """Stop an executor in waiting, unless it has just taken the session over
        (then it is the owner, with its work: it is left to run)."""
        if standby is not None and standby.poll() is None:
            with contextlib.suppress(DshError, TimeoutError):
                owner = self._owner()
                if owner is not None and owner.pid == standby.pid:
                    return
            standby.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                standby.wait(5.0)

    def _why(self, what: str) -> str:
        name = self.link.keys.name
        try:
            lines = self.link.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        said = [line.removeprefix("dsh: ") for line in lines[-3:] if line.startswith("dsh: ")]
        because = f": {' / '.join(said)}" if said else ""
        return f"session {name!r}: {what}{because} (log: {self.link.log})"

    def _read(self, sock: socket.socket) -> None:
        """The reader thread: events from the socket into the queue; an end of the
        session wakes the main thread if it waits for input."""
        with contextlib.suppress(OSError), sock.makefile("rb") as stream:
            for raw in stream:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                self._track(event)
                try:
                    if self.replay(event):  # shown at once, even while a prompt waits
                        continue
                except (OSError, ValueError, KeyError):
                    continue  # a broken event, or our own output closed: show what else comes
                with contextlib.suppress(queue.Full):
                    self.events.put(event, timeout=60.0)
                if event.get("ev") == "end":
                    self._wake()
        with contextlib.suppress(queue.Full):
            self.events.put(None, timeout=5.0)
        self._wake()

    def _track(self, event: Event) -> None:
        """What runs now, for the toolbar and for Ctrl-D (the reader thread's)."""
        kind, k = event.get("ev"), event.get("k")
        if kind in ("line", "stmt") and isinstance(k, int):  # stmt: running when we connected
            source = str(event.get("def", {}).get("statement", {}).get("source", ""))
            self.running[k] = [source, len(event.get("hosts") or []), 0, time.monotonic()]
        elif kind == "host" and k in self.running:
            self.running[k][2] += 1
        elif kind == "done-line":
            self.running.pop(k, None)  # type: ignore[arg-type]
        elif kind in ("done", "idle"):  # a unit of work is over (a cancelled one says no done-line)
            self.running.clear()

    def busy(self) -> bool:
        return bool(self.running)

    def progress(self) -> str:
        """The lines running now, as the toolbar shows them (or how the last one ended)."""
        if not self.running and self.last_line:
            return self.last_line
        parts = []
        for source, total, done, started in list(self.running.values()):
            hosts = f" {done}/{total} hosts" if total else ""
            parts.append(f"running {source[:40]!r}{hosts}, {time.monotonic() - started:.0f}s")
        return "; ".join(parts)

    def cancel_all(self) -> None:
        self._send({"op": "cancel", "id": "*"})

    def _wake(self) -> None:
        if self.reading:
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_wake(self, signum: int, frame: object) -> None:
        if self.reading:
            raise _Woken

    def _send(self, op: dict[str, Any]) -> None:
        if self.follower is not None:  # no socket: what the store can carry
            if op.get("op") == "cancel":
                self.follower.cancel(str(op.get("id", "*")))
            return
        assert self.sock is not None
        with contextlib.suppress(OSError):
            self.sock.sendall(json.dumps(op).encode() + b"\n")

    # -- events ------------------------------------------------------------------------

    def drain(self) -> None:
        """Act on what the executor said while nobody looked (before a prompt)."""
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)

    def _wait(self, until: Callable[[Event], bool], timeout: float | None = None) -> Event | None:
        """Wait for a control event that satisfies `until` (returned); None at `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=_POLL)
            except queue.Empty:
                continue
            if self._handle(event) and event is not None and until(event):
                return event
        return None

    def _handle(self, event: Event | None) -> bool:
        """Act on one control event; True when the caller should see it."""
        if event is None:
            retry = f"dsh attach {self.link.keys.name} takes over"
            raise SessionEnded(self._why(f"its executor stopped unexpectedly ({retry})"), 3)
        kind = event.get("ev")
        if kind == "end":
            raise SessionEnded(str(event.get("message", "the session ended")), int(event.get("exit", 3)))
        if kind == "gone":
            self._take_over(bool(event.get("handover")))
            return False
        return True

    # -- lines -------------------------------------------------------------------------

    def submit(self, text: str, name: str, first_line: int) -> int | None:
        """Run a line in the session: submit it, show its output, return its status
        (None when it ran nothing). Ctrl-C asks the executor to cancel it."""
        sid = os.urandom(6).hex()
        began = time.monotonic()
        record = Submission(sid, text, name, first_line, self.link.machine)
        self._run(self._put(dumps(record)))
        self._send({"op": "poke"})

        def finished(event: Event) -> bool:
            return event.get("ev") == "done" and event.get("id") == sid

        while True:
            try:
                done = self._wait(finished)
                break
            except KeyboardInterrupt:
                self._send({"op": "cancel", "id": sid})
        assert done is not None
        if done.get("error"):
            self.show_error(str(done["error"]))
        status = done.get("status")
        if status is not None:
            self.status = int(status)
            word = "ok" if status == 0 else f"status {status}"
            self.last_line = f"last line: {word} in {time.monotonic() - began:.1f}s"
        return None if status is None else int(status)

    async def _put(self, record: bytes) -> None:
        store, keys = self.link.store, self.link.keys
        for _ in range(100):  # a race with other clients is lost at most this often
            held = await store.get(keys.in_seq, timeout=10.0)
            seq = int(held.value) + 1 if held is not None else 1
            mod = held.mod_revision if held is not None else 0
            result = await store.txn(
                [Compare(keys.in_seq, "mod", "==", mod)],
                [Put(keys.in_seq, b"%d" % seq), Put(keys.submission(seq), record)],
                timeout=10.0,
            )
            if result.succeeded:
                return
        raise StoreError("the line could not be submitted: too many clients submitting at once")

    def wait_idle(self) -> int:
        """Wait for the session's work to be over; its status."""
        while self.follower is not None and self.follower.work_left():
            self._wait(lambda e: False, timeout=0.5)  # taken over meanwhile, perhaps
        if self.follower is not None:
            return self.status
        self._send({"op": "wait"})
        event = self._wait(lambda e: e.get("ev") in ("idle", "bye"))
        if event is not None and event.get("ev") == "idle":
            return int(event.get("status", 0))
        return int(event.get("exit") or 0) if event is not None else self.status

    def leave(self) -> bool:
        """Say bye; True when the executor stays (work runs, or other clients)."""
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
            self._stop_standby(self.standby)
            return True
        if self.sock is None:
            return False
        self._send({"op": "bye"})
        event = None
        with contextlib.suppress(DshError):
            event = self._wait(lambda e: e.get("ev") == "bye", BYE_TIMEOUT)
        return bool(event.get("stays")) if event is not None else False

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        self._stop_standby(self.standby)
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        with contextlib.suppress(Exception):
            self._run(self.link.store.close())
        self.runner.close()

    def bindings(self) -> dict[str, Value]:
        """What the session has bound (for checking and completing what is typed)."""
        store, keys = self.link.store, self.link.keys
        kvs, _ = self._run(store.range(keys.bindings, timeout=10.0))
        out: dict[str, Value] = {}
        for kv in kvs:
            with contextlib.suppress(DshError):
                out[kv.key[len(keys.bindings) :].decode()] = decode_value(kv.value, key=kv.key)
        return out

    # -- attaching ---------------------------------------------------------------------

    def history(self, timeline: Callable[[list[dict[str, Any]]], str]) -> str:
        """What happened in the session lately: its last journal entries, with the
        tail of the output of the actions among them."""
        store, keys = self.link.store, self.link.keys
        entries = self._run(read_journal(store, keys, timeout=10.0))
        if not entries:
            return ""
        shown = entries[-HISTORY:]
        lines = []
        if len(entries) > len(shown):
            lines.append(f"… {len(entries) - len(shown)} earlier entries: dsh log {keys.name}\n")
        for entry in shown:
            lines.append(timeline([entry]))
            if entry.get("kind") == "end":
                held = self._run(store.get(keys.action(entry["action"], entry.get("host")), timeout=10.0))
                record = load_action(held.value, key=held.key) if held is not None else None
                lines.append(output_tail(record.out if isinstance(record, ActDone) else ""))
        return "".join(lines)


def _gone(name: str, handed: bool) -> str:
    """How the owner a follower followed went."""
    if handed:
        return f"the owner of session {name} handed it over"
    return f"the owner of session {name} is gone (it stopped, or its lease ran out)"


def output_tail(out: object) -> str:
    """The last TAIL_LINES of an action's output (as a record keeps it: dsh.bytestext),
    indented under its journal entry, neutralised like a host's live output."""
    from dsh.render import neutralise

    data = to_bytes(loaded(out))
    tail = data.rstrip(b"\n").split(b"\n")[-TAIL_LINES:] if data.strip() else []
    return "".join(f"{'':25}| {neutralise(line)}\n" for line in tail)


def read_eval(
    client: Client,
    read: Callable[[str], str | None],
    complete: Callable[[str, int], bool],
    name: str,
    *,
    interactive: bool,
    builtin: Callable[[str], str | None] | None = None,
) -> int:
    """Read lines, submit each complete statement, show what it does.

    Interactive, errors and failures are shown and reading goes on; else the
    first line not ok ends the reading with its status. At the end of input,
    the client waits for the session's work to be over and returns its
    status (a line's, else whatever the session was running)."""
    buffer: list[str] = []
    first_line = 1
    ran = False
    status = 0

    def detach(signum: int, frame: object) -> None:
        raise Detach

    old = signal.signal(signal.SIGQUIT, detach)
    old_usr1 = signal.signal(signal.SIGUSR1, client.on_wake)
    try:
        while True:
            client.drain()
            try:
                client.reading = True
                line = read("... " if buffer else "dsh> ")
            except _Woken:
                continue  # the session ended: drain() says how
            except KeyboardInterrupt:
                if not interactive:
                    raise
                buffer = []
                print()
                continue
            finally:
                client.reading = False
            if line is None:
                if interactive and client.busy():  # Ctrl-D while the session works: which?
                    client.reading = True
                    try:
                        answer = read("work is running in this session: [d]etach or [c]ancel it? ")
                    finally:
                        client.reading = False
                    if answer is None or not answer.strip().lower().startswith("c"):
                        raise Detach
                    client.cancel_all()
                break
            if not buffer and line.strip() == "detach":
                raise Detach
            buffer.append(line)
            text = "\n".join(buffer) + "\n"
            if not complete(text, first_line):
                continue
            start, first_line, buffer = first_line, first_line + len(buffer), []
            if not text.strip() or all(not t.strip() or t.lstrip().startswith("#") for t in text.split("\n")):
                continue
            done = builtin(text) if builtin is not None else None
            if done == "exit":
                break
            if done is not None:
                continue
            got = client.submit(text, name, start)
            if got is None:
                continue
            ran, status = True, got
            if status and not interactive:
                return status
        if buffer and any(b.strip() for b in buffer):
            got = client.submit("\n".join(buffer) + "\n", name, first_line)  # its error, shown
            return got if got is not None else 2
        idle = client.wait_idle()
        return status if ran else idle
    finally:
        signal.signal(signal.SIGQUIT, old)
        signal.signal(signal.SIGUSR1, old_usr1)


def completeness(compile_: Callable[[str, int], object]) -> Callable[[str, int], bool]:
    """Whether text is a whole statement (else the reader continues it): what the
    local compile says, without its other errors (the executor reports them)."""

    def complete(text: str, first_line: int) -> bool:
        try:
            compile_(text, first_line)
        except IncompleteInput:
            return False
        except (LangError, UsageError):
            return True
        return True

    return complete

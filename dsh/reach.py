"""Reaching a session's executor, for a client: dial it, start it, or follow it.

The owner record in the store says where the session's executor is. On this
machine, with a socket, a client dials it (dsh.localsocket: only one its own
user serves) and takes its `hello`, which must speak this dsh's protocol
(dsh.runtime.protocol; another version is refused with a sentence, exit 3).
When none runs, or its owner died (its socket does not answer), the client
starts one (`Link.spawn`: an executor process, taking the session over when an
owner record exists) and polls the owner record until that executor owns the
session and serves its socket. On another machine the session is followed
through the store (dsh.follow), with an executor in waiting here (a standby)
that takes it over as soon as its owner lets go or dies; `dsh attach --take`
first asks the owner to hand it over (`ctl/handover`, on a lease of the
client's). What `Reach` gives back is a `Connection` or a `Follower`: the
client (dsh.client) talks through either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsh.errors import DshError, UsageError
from dsh.exits import Exit
from dsh.follow import Follower, Gone
from dsh.localsocket import open_connection
from dsh.osuser import os_user
from dsh.runtime.protocol import Done, End, Event, Hello, ProtocolError, decode_event
from dsh.session import control
from dsh.session.codec import loads
from dsh.session.keys import Keys
from dsh.session.records import CorruptRecord, Handover, Owner
from dsh.store.base import Store

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
#: How long a client waits for an executor it connected to to say `hello`.
HELLO_TIMEOUT = 30.0
#: The longest line a client reads from its executor (a line's summary carries
#: up to 16 KiB of output per host, in base64, and a line may run on thousands).
LINE_LIMIT = 1 << 30
#: An owner record that cannot be read (damaged, or forged): someone holds the
#: session, on a machine that is not this one, with no socket to dial: it is
#: followed through the store.
UNREADABLE_OWNER = Owner("?", 0, 0.0)
#: What a client is told of an executor of another protocol version.
REMEDY = "another version of dsh runs it; attach with that version, or once its work is over, attach again"


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


@dataclass
class Connection:
    """A session's executor on the socket, past its `hello`."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    #: Who it is, in sentences: "the executor of session NAME".
    peer: str

    def decode(self, raw: bytes) -> Event:
        """An event it sent; ProtocolError if it cannot be taken."""
        return decode_event(raw, peer=self.peer, remedy=REMEDY)


class Reach:
    """Finds, starts and takes over a session's executor for one client."""

    def __init__(
        self,
        link: Link,
        say: Callable[[str], None],
        show_entry: Callable[[dict[str, Any]], None],
        tell: Callable[[Done | End | Gone], None],
    ) -> None:
        self.link = link
        self.say = say
        #: What a follower shows and tells (dsh.follow).
        self.show_entry = show_entry
        self.tell = tell
        #: A follower's executor in waiting: it takes the session over when its owner goes.
        self.standby: subprocess.Popen[bytes] | None = None
        #: The lease of this client's request for a handover (0: none).
        self.handover_lease = 0

    async def owner(self) -> Owner | None:
        held = await self.link.store.get(self.link.keys.owner, timeout=10.0)
        if held is None:
            return None
        try:
            return loads(Owner, held.value, key=held.key)
        except CorruptRecord:
            return UNREADABLE_OWNER

    def _here(self, owner: Owner) -> bool:
        """Whether `owner` runs on this machine as this OS user: its socket is one to
        dial (another OS user's, on a machine several people share, is followed)."""
        return owner.machine == self.link.machine and owner.os_user in (None, os_user())

    async def connect(self, *, take: bool, handover: bool = False) -> Connection | Follower:
        """The session's executor, started if none runs here; followed if it runs on
        another machine (or, with `handover`, asked to hand over, then taken)."""
        owner = await self.owner()
        here = owner is not None and self._here(owner)
        if here and owner is not None and owner.socket:
            connection = await self.dial(owner.socket)
            if connection is not None:
                return connection
        if owner is not None and not here:
            if not handover:
                return await self._follow(owner)
            if not owner.socket:
                raise UsageError(
                    f"session {self.link.keys.name} runs in the foreground on {owner.machine} "
                    "(dsh -c, a script or piped lines), which cannot hand it over: follow it with "
                    f"dsh attach {self.link.keys.name}, or stop it there"
                )
            await self._ask_handover()
            self.say(
                f"asked {owner.machine} to hand session {self.link.keys.name} over: "
                "the actions it runs end first"
            )
        try:
            started = await self._start(take or owner is not None, HANDOVER_WAIT if handover else 0.0)
        finally:
            await self._withdraw_handover()
        if started is None:  # another machine took it first: follow that one
            owner = await self.owner()
            assert owner is not None
            return await self._follow(owner)
        return started

    async def dial(self, path: str) -> Connection | None:
        """The executor at `path`, past its `hello`; None if none answers there (it
        is gone). A hello of another protocol version is a ProtocolError."""
        streams = await open_connection(path, limit=LINE_LIMIT)
        if streams is None:
            return None
        connection = Connection(*streams, f"the executor of session {self.link.keys.name}")
        try:
            try:
                raw = await asyncio.wait_for(connection.reader.readline(), HELLO_TIMEOUT)
            except (OSError, ValueError):
                raw = b""
            except TimeoutError:
                raise SessionEnded(
                    self.why(f"its executor did not answer in {HELLO_TIMEOUT:g}s"), 3
                ) from None
            if not raw:  # it went as we came
                connection.writer.close()
                return None
            hello = connection.decode(raw)
            if not isinstance(hello, Hello):
                raise ProtocolError(f"{connection.peer} did not begin with hello ({type(hello).__name__})")
        except BaseException:
            connection.writer.close()
            raise
        return connection

    async def _start(self, take: bool, patience: float) -> Connection | None:
        """Start an executor here and connect to it; None if another machine won
        the session meanwhile."""
        owner = await self.owner()
        ttl = owner.ttl if owner else 0.0
        child = self.link.spawn(take, patience)
        deadline = time.monotonic() + SPAWN_TIMEOUT + ttl + patience
        renewed = time.monotonic()
        while True:
            if self.handover_lease and time.monotonic() - renewed > HANDOVER_TTL / 3:
                renewed = time.monotonic()
                with contextlib.suppress(DshError, TimeoutError):
                    await self.link.store.keepalive(self.handover_lease, timeout=HANDOVER_TTL / 3)
            code = child.poll()
            if code is not None:
                owner = await self.owner()
                if code == Exit.USAGE and owner is not None:  # it lost a race to take the session over
                    if not self._here(owner):
                        return None  # to another machine (or OS user): follow that one
                    if owner.socket:  # to another executor here: join that one
                        connection = await self.dial(owner.socket)
                        if connection is not None:
                            return connection
                # killed by a signal (a negative code): no status of ours, the store's
                status = code if code is not None and 0 < code < 128 else Exit.STORE
                raise SessionEnded(self.why(f"its executor stopped (exit {code})"), status)
            if time.monotonic() > deadline:
                child.terminate()
                raise SessionEnded(self.why("its executor did not take it in time"), Exit.STORE)
            owner = await self.owner()
            if owner is not None and self._here(owner) and owner.socket:
                # Ours, or another executor here that won the session (a second attach
                # at the same time): join it. A dead owner's socket does not answer.
                connection = await self.dial(owner.socket)
                if connection is not None:
                    if owner.pid != child.pid:
                        child.terminate()  # it only waited to take the session: it goes
                    return connection
            await asyncio.sleep(0.05)

    async def _ask_handover(self) -> None:
        """Ask for the session, on a lease this client keeps while it waits: a request
        that nobody waits for any more goes away by itself."""
        store = self.link.store
        lease = await store.grant(HANDOVER_TTL, timeout=10.0)
        self.handover_lease = lease.id
        record = Handover(self.link.machine, os.getpid(), time.time(), os_user())
        await control.ask_handover(store, self.link.keys, record, lease=lease.id, timeout=10.0)

    async def _withdraw_handover(self) -> None:
        if self.handover_lease:
            with contextlib.suppress(DshError, TimeoutError):
                await self.link.store.revoke(self.handover_lease, timeout=10.0)
            self.handover_lease = 0

    async def _follow(self, owner: Owner) -> Follower:
        """Follow the session through the store, with an executor in waiting here
        that takes it over as soon as its owner lets go or dies."""
        link = self.link
        follower = Follower(link.store, link.keys, link.machine, self.tell, self.show_entry)
        await follower.start()
        if self.standby is None or self.standby.poll() is not None:
            self.standby = link.spawn(True, STANDBY_WAIT)
        name = link.keys.name
        self.say(
            f"session {name} runs on {owner.machine} (pid {owner.pid}): following it "
            f"from here, and lines run there; dsh attach --take {name} takes it over"
        )
        return follower

    async def take_over(self, handed: bool) -> Connection | Follower:
        """The owner a follower followed (stopped by now) let go or died: the executor
        in waiting here takes the session over (or another machine's did: follow
        that one). `handed`: it went while asked to hand over (else it stopped, or
        its lease ran out: a store cannot tell the two apart)."""
        standby, self.standby = self.standby, None
        if standby is None or standby.poll() is not None:
            return await self.connect(take=True)
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while time.monotonic() < deadline and standby.poll() is None:
            owner = await self.owner()
            if owner is not None and owner.pid == standby.pid and owner.socket:
                connection = await self.dial(owner.socket)
                if connection is not None:
                    self.say(f"{_gone(self.link.keys.name, handed)}: taken over here")
                    return connection
            elif owner is not None and not self._here(owner):
                self.standby = standby  # another machine was first: it goes on waiting
                return await self._follow(owner)
            await asyncio.sleep(0.02)
        await self._stop(standby)
        return await self.connect(take=True)

    async def stop_standby(self) -> None:
        """Stop the executor in waiting, unless it has just taken the session over
        (then it is the owner, with its work: it is left to run)."""
        await self._stop(self.standby)

    async def _stop(self, standby: subprocess.Popen[bytes] | None) -> None:
        if standby is not None and standby.poll() is None:
            with contextlib.suppress(DshError, TimeoutError):
                owner = await self.owner()
                if owner is not None and owner.pid == standby.pid:
                    return
            standby.terminate()
            deadline = time.monotonic() + 5.0
            while standby.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)

    def why(self, what: str) -> str:
        """`what` befell the session's executor, with the last words of its log."""
        name = self.link.keys.name
        try:
            lines = self.link.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        said = [line.removeprefix("dsh: ") for line in lines[-3:] if line.startswith("dsh: ")]
        because = f": {' / '.join(said)}" if said else ""
        return f"session {name!r}: {what}{because} (log: {self.link.log})"


def _gone(name: str, handed: bool) -> str:
    """How the owner a follower followed went."""
    if handed:
        return f"the owner of session {name} handed it over"
    return f"the owner of session {name} is gone (it stopped, or its lease ran out)"

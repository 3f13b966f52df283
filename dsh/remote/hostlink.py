"""One host agent over one SSH channel: booted (dsh.remote.hostboot), then its
requests by id and their replies as they come (dsh.remote.hostwire).

The channel is an exec of `sh -s` like the wrapper's, kept open: the agent lives
as long as it (and so as the connection), and dies with it, leaving whatever
it started to its keeper and spool. A link that dies ends every request waiting
on it with `LinkLost`; what was in flight is then followed or probed through the
wrapper, as after a dropped exec.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from dsh.remote import hostboot, spool
from dsh.remote.hostwire import PROTOCOL, Frame, Kind, ProtocolError, Reader, encode
from dsh.remote.sshrun import asyncssh

#: The most a login shell may write before the boot's hello (then it is no host for an agent).
_MAX_BEFORE = 64 * 1024
#: What the agent writes on stderr kept (its last words, for the log).
_KEEP_ERR = 4096


class LinkLost(Exception):
    """The agent's channel closed (or it broke the protocol): `why` says how;
    `booted`: a python3 on the host answered the boot (else the wrapper will say
    what is wrong with the host, if anything)."""

    def __init__(self, why: str, booted: bool = True) -> None:
        super().__init__(why)
        self.why = why
        self.booted = booted


class _Channel(asyncssh.SSHClientSession[bytes]):
    """The boot's hello, then frames, to its link."""

    def __init__(self, link: HostLink) -> None:
        self.link = link

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            if not self.link.hello0.done():  # the login shell's, before the boot said hello
                self.link.dropped += len(data)
                return
            self.link.stderr = (self.link.stderr + data)[-_KEEP_ERR:]
            return
        self.link.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost(f"its channel closed ({exc})" if exc else "its channel closed")


class HostLink:
    """A booted agent on one connection; `start` makes one."""

    def __init__(self, tag: str) -> None:
        #: The boot exec's tag: on the host, the agent's (and its keeper's) argv ends with it.
        self.tag = tag
        self._chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._before = b""  # stdout before the boot's hello (the login shell's)
        self.dropped = 0
        self.hello0: asyncio.Future[hostboot.Hello0] = asyncio.get_running_loop().create_future()
        self.hello: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._reader: Reader | None = None
        self._queues: dict[int, asyncio.Queue[Frame | LinkLost]] = {}
        self._next = 1
        #: Requests sent (the tests tell the agent's answers from the wrapper's by it).
        self.sent = 0
        self.stderr = b""
        #: Why the link is gone ("" while it lives).
        self.why = ""

    @classmethod
    async def start(cls, conn: asyncssh.SSHClientConnection, *, timeout: float) -> HostLink:
        """Boot an agent on `conn` within `timeout` seconds; LinkLost (with why) when
        the host has none to run (no python3, too old) or it did not come up."""
        argv = hostboot.boot_argv()
        link = cls(spool.tag_of(argv))
        try:
            chan, _ = await asyncio.wait_for(
                conn.create_session(lambda: _Channel(link), spool.REMOTE_SHELL, encoding=None), timeout
            )
            link._chan = chan
            chan.write(spool.as_stdin(argv).encode())
            hello0 = await asyncio.wait_for(asyncio.shield(link.hello0), timeout)
            if hello0.refusal:
                raise LinkLost(f"no python3 to run it ({hello0.refusal})")
            link._reader = Reader()
            chan.write(hostboot.stage2(hello0.magic, hello0.zlib))
            hello = await asyncio.wait_for(asyncio.shield(link.hello), timeout)
            if hello.text(0) != str(PROTOCOL):
                raise LinkLost(f"it speaks protocol {hello.text(0)!r}, not {PROTOCOL}")
        except TimeoutError:
            link.close()
            raise LinkLost(f"it did not say hello within {timeout:g}s", link.booted) from None
        except (asyncssh.Error, OSError) as exc:
            link.close()
            raise LinkLost(f"cannot start it: {exc}", link.booted) from None
        except LinkLost as exc:
            link.close()
            raise LinkLost(exc.why, link.booted and not exc.why.startswith("no python3")) from None
        return link

    @property
    def booted(self) -> bool:
        """Whether a python3 on the host answered the boot."""
        return self.hello0.done() and not self.hello0.exception() and not self.hello0.result().refusal

    # -- from the channel --------------------------------------------------------------

    def received(self, data: bytes) -> None:
        if self._reader is None and not self.hello0.done():
            self._before += data
            at = self._before.find(self.tag.encode() + b" agent")  # anywhere: noise need not end a line
            if at >= 0 and b"\n" in self._before[at:]:
                line, _, rest = self._before[at:].partition(b"\n")
                hello0 = hostboot.parse_hello0(self.tag, line)
                if hello0 is not None:
                    self.dropped += at
                    self._before = rest
                    self.hello0.set_result(hello0)
            if len(self._before) > _MAX_BEFORE:
                self.lost("the login shell wrote too much before the boot's hello")
            return
        if self._reader is None:  # stage 2 is on its way: its frames come after
            self._before += data
            return
        try:
            frames = self._reader.feed(self._before + data)
        except ProtocolError as exc:
            self.lost(f"it broke the protocol: {exc}")
            return
        self._before = b""
        for frame in frames:
            if frame.kind == Kind.HELLO and not self.hello.done():
                self.hello.set_result(frame)
            elif (queue := self._queues.get(frame.rid)) is not None:
                queue.put_nowait(frame)

    def lost(self, why: str) -> None:
        if self.why:
            return
        self.why = why
        gone = LinkLost(why)
        for future in (self.hello0, self.hello):
            if not future.done():
                future.set_exception(gone)
                future.exception()  # retrieved: a boot that never waited is no error
        for queue in self._queues.values():
            queue.put_nowait(gone)
        self.close()

    # -- requests ------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return not self.why and self._chan is not None

    def request(self, kind: Kind, *fields: bytes | str | int) -> int:
        """Send a request; its id (its replies: `reply(id)`, then `finish(id)`)."""
        if not self.alive:
            raise LinkLost(self.why or "it is not started")
        rid, self._next = self._next, self._next + 1
        self.sent += 1
        self._queues[rid] = asyncio.Queue()
        assert self._chan is not None
        try:
            self._chan.write(encode(kind, rid, *fields))
        except (asyncssh.Error, OSError) as exc:
            self.lost(f"cannot write to it: {exc}")
            raise LinkLost(self.why) from None
        return rid

    async def reply(self, rid: int) -> Frame:
        """The next reply to request `rid` (LinkLost when the link dies first)."""
        queue = self._queues.get(rid)
        if queue is None:
            raise LinkLost(self.why or "no such request")
        item = await queue.get()
        if isinstance(item, LinkLost):
            raise item
        return item

    def finish(self, rid: int) -> None:
        """Request `rid` needs no more replies (those still coming are dropped)."""
        self._queues.pop(rid, None)

    def stop(self, rid: int) -> None:
        """Request `rid` is given up: the agent is told (STOP: it ends a stream, and
        kills a RUN's child), and its replies are dropped."""
        self.finish(rid)
        if self.alive and self._chan is not None:
            with contextlib.suppress(asyncssh.Error, OSError):
                self._chan.write(encode(Kind.STOP, rid))

    async def ask(self, kind: Kind, *fields: bytes | str | int, until: Callable[[Frame], bool]) -> Frame:
        """One request whose reply `until` recognises (or ERROR): that reply."""
        rid = self.request(kind, *fields)
        try:
            while True:
                frame = await self.reply(rid)
                if frame.kind == Kind.ERROR or until(frame):
                    return frame
        finally:
            self.finish(rid)

    def close(self) -> None:
        if self._chan is not None:
            with contextlib.suppress(Exception):
                self._chan.close()
        if not self.why:
            self.why = "closed"

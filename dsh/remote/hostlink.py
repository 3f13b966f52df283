"""One host agent over one channel: booted (dsh.remote.hostboot), then its
requests by id and their replies as they come (dsh.remote.hostwire).

The channel is an exec of `sh -s` like the wrapper's, kept open (dsh.remote.sshlink
opens it), or a local agent's pipes (`HostLink.spawn`): the agent lives as long
as it, and dies with it, leaving whatever it started to its keeper and spool. A
link that dies ends every request waiting on it with `LinkLost`; what was in
flight is then followed or probed through the wrapper, as after a dropped exec.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Protocol

from dsh.remote import hostboot, spool
from dsh.remote.hostwire import PROTOCOL, Frame, Kind, ProtocolError, Reader, encode

#: The most a login shell may write before the boot's hello (then it is no host for an agent).
_MAX_BEFORE = 64 * 1024
#: What the agent writes on stderr kept (its last words, for the log).
KEEP_ERR = 4096


class LinkLost(Exception):
    """The agent's channel closed (or it broke the protocol): `why` says how;
    `booted`: a python3 on the host answered the boot (else the wrapper will say
    what is wrong with the host, if anything)."""

    def __init__(self, why: str, booted: bool = True) -> None:
        super().__init__(why)
        self.why = why
        self.booted = booted


class Channel(Protocol):
    """What a link writes its frames to: an SSH channel (dsh.remote.sshlink) or a local
    agent's stdin (`_PipeChannel`)."""

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class _Pipes(asyncio.SubprocessProtocol):
    """A local agent's stdout and stderr, to its link, as _Channel's are."""

    def __init__(self, link: HostLink) -> None:
        self.link = link
        self.exited: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        data = data.encode() if isinstance(data, str) else data
        if fd == 2:
            self.link.stderr = (self.link.stderr + data)[-KEEP_ERR:]
        else:
            self.link.received(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self.link.lost("it closed its stdout")

    def process_exited(self) -> None:
        self.link.lost("it exited")
        if not self.exited.done():
            self.exited.set_result(None)


class _PipeChannel:
    """A local agent's stdin as the link's channel: what it writes goes there; closing
    it ends the agent (EOF), whose keeper goes on with what it started."""

    def __init__(self, transport: asyncio.SubprocessTransport, exited: asyncio.Future[None]) -> None:
        self._transport = transport
        self._exited = exited
        stdin = transport.get_pipe_transport(0)
        assert isinstance(stdin, asyncio.WriteTransport)
        self._stdin = stdin

    def write(self, data: bytes) -> None:
        if self._stdin.is_closing():
            raise OSError("the local host agent's stdin is closed")
        self._stdin.write(data)

    def close(self) -> None:
        self._stdin.close()

    def kill(self) -> None:
        """The agent killed (SIGKILL, to it alone: not to its keeper's session)."""
        self._transport.close()

    async def wait_closed(self, seconds: float) -> None:
        """Waits (at most `seconds`) for the agent to exit after its EOF, then closes the
        transport: one still there then is killed (its keeper, in a session of its own,
        goes on)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._exited), seconds)
        except TimeoutError:
            pass
        finally:
            self._transport.close()


class HostLink:
    """A booted agent on one connection; `start` makes one."""

    def __init__(self, tag: str) -> None:
        #: The boot exec's tag: on the host, the agent's (and its keeper's) argv ends with it.
        self.tag = tag
        self._chan: Channel | None = None
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
        #: Whether stage 2 goes compressed where the host has zlib (not over a local pipe).
        self.compress = True

    @classmethod
    async def spawn(cls, *, timeout: float) -> HostLink:
        """Boot an agent as this process's child, in a session of its own (the local
        actions' agent): this interpreter runs STAGE1, its pipes are the channel, and
        it gets dsh's environment and working directory as they are now."""
        tag = spool.new_tag()
        link = cls(tag)
        link.compress = False
        lc = os.environ.get("LC_CTYPE")
        argv = [sys.executable, "-I", "-S", "-c", hostboot.STAGE1, "dsh-agent", tag]
        argv += ["set", lc] if lc is not None else ["", ""]

        async def channel() -> None:
            loop = asyncio.get_running_loop()
            transport, pipes = await asyncio.wait_for(
                loop.subprocess_exec(
                    lambda: _Pipes(link),
                    *argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,  # the terminal's ^C is dsh's to handle, as for the wrapper
                ),
                timeout,
            )
            link.attach(_PipeChannel(transport, pipes.exited))

        try:
            await link.boot(channel, timeout)
        except BaseException:  # a boot that failed or was cut short: no agent is left behind
            if isinstance(link._chan, _PipeChannel):
                link._chan.kill()
            raise
        return link

    async def boot(self, channel: Callable[[], Awaitable[None]], timeout: float) -> None:
        """The boot's handshake on the channel `channel` opens: stage 1's hello, stage 2,
        the agent's HELLO; LinkLost (the link closed) when any of it fails."""
        try:
            await channel()
            hello0 = await asyncio.wait_for(asyncio.shield(self.hello0), timeout)
            if hello0.refusal:
                raise LinkLost(f"no python3 to run it ({hello0.refusal})")
            self._reader = Reader()
            assert self._chan is not None
            self._chan.write(hostboot.stage2(hello0.magic, hello0.zlib and self.compress))
            hello = await asyncio.wait_for(asyncio.shield(self.hello), timeout)
            if hello.text(0) != str(PROTOCOL):
                raise LinkLost(f"it speaks protocol {hello.text(0)!r}, not {PROTOCOL}")
        except TimeoutError:
            self.close()
            raise LinkLost(f"it did not say hello within {timeout:g}s", self.booted) from None
        except OSError as exc:
            self.close()
            raise LinkLost(f"cannot start it: {exc}", self.booted) from None
        except LinkLost as exc:
            self.close()
            raise LinkLost(exc.why, self.booted and not exc.why.startswith("no python3")) from None
        except BaseException:  # cancelled (the session ends while it boots): nothing is left
            self.close()
            raise

    def attach(self, chan: Channel) -> None:
        """The channel its frames go to (dsh.remote.sshlink's, once its session is open)."""
        self._chan = chan

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
        except Exception as exc:  # the channel's own (asyncssh's, a pipe's): the link is gone
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
            with contextlib.suppress(Exception):  # the channel's own: the link is going anyway
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

    async def wait_closed(self, seconds: float) -> None:
        """After `close`: a local agent's end, waited for at most `seconds` (an SSH
        channel's goes with its connection)."""
        if isinstance(self._chan, _PipeChannel):
            await self._chan.wait_closed(seconds)

    def close(self) -> None:
        if self._chan is not None:
            with contextlib.suppress(Exception):
                self._chan.close()
        if not self.why:
            self.why = "closed"

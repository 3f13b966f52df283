"""`dsh serve`: accepts the POSTs that callbacks wait for, and writes them into the store.

    POST /cb/u/NAME/TOKEN   (a body of at most 64 KiB, with a Content-Length or chunked)
        202  accepted: the waiting `await callback` goes on with the body
        404  no such callback (a wrong or forged token)
        409  the callback was used already: each is accepted once
        410  its wait is over (timed out)
        411  no Content-Length and not chunked;  413  the body is too large
        500  the store refused this server's account (it says why on its stderr)
        503  the store cannot be reached (try again), or no room for the connection
    GET /health  200
    400 not HTTP/1.1 (or 1.0), 405 another method, 408 too slow, 431 a head too large,
    501 a Transfer-Encoding other than chunked

HTTP is h11's (this module is its only user): one request per connection,
each answered with `Connection: close`. `Limits` bounds what a client can
hold: its head (16 KiB, 100 headers), its body, the time for each, and the
connections open at once. `Expect: 100-continue` is answered before the body
is read, or refused (404/409/410/413) without reading it.

A callback is `/dsh/v1/cb/u/NAME/TOKEN` in the store (a `Callback` of
dsh.session.records: {"user", "session", "action", "host", "deadline"}), made by
the executor that waits for it, in its session's tree. Accepting it is one
transaction: the callback exists, its event (`/dsh/v1/ev/u/NAME/TOKEN`) does
not, then the event is put. On an etcd with authentication on, `dsh serve`
logs in with an account made for it (`dsh admin user add NAME --serve`),
whose role reads callbacks, writes events and registers servers, and reads
nothing else. So any number of `dsh
serve` instances can run against one store, and a callback is accepted once
whichever of them gets the POST. Each instance says where it is reachable in
`/dsh/v1/serve/ID` (a `Registration`: {"url", "pid", "host"}, on a lease of its
own), which is where executors find the base of the URLs they hand out.

The token is 32 characters of an HMAC (SHA-256) of the action under a secret
of the session: unguessable from outside, and the same after a takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import socket
import ssl
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dsh.errors import StoreError, UsageError
from dsh.lang.durations import format_duration
from dsh.render import json_line
from dsh.session.callbacks import STORE_TIMEOUT, TOKEN, accept, check
from dsh.session.codec import dumps
from dsh.session.keys import SERVERS, parse_callback_path
from dsh.session.records import Registration
from dsh.store.base import LeaseNotFound, Store, StoreDenied

if TYPE_CHECKING:  # h11 is imported when a server runs
    import h11

#: The largest body a callback takes.
BODY_MAX = 64 * 1024
#: How long writing an answer may take (a store call: STORE_TIMEOUT).
WRITE_TIMEOUT = 10.0
#: After an answer given before the request was read whole, how long and how much
#: of the rest is read and dropped, so that the client sees the answer, not a reset.
LINGER_TIME = 2.0
LINGER_BYTES = 1024 * 1024
#: The same for a connection refused for want of room: only what it sent at once.
REFUSED_LINGER_TIME = 0.25
#: The lease of a server's registration: gone this long after the server is.
REGISTRATION_TTL = 10.0
_READ = 64 * 1024
_QUOTED = re.compile(r""":? (?:bytearray\(|b['"])""")  # where h11 quotes the bytes it refused
_REASONS = {
    100: "Continue",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may hold of a `dsh serve` (its options, with their defaults)."""

    #: From the connection to the end of the request's head (`--header-timeout`).
    header_timeout: float = 10.0
    #: From the head (or the 100 Continue) to the end of the body (`--body-timeout`).
    body_timeout: float = 10.0
    #: Connections open at once (`--max-connections`). A new one beyond makes room by
    #: dropping the oldest that is still sending its head (or being drained after
    #: its answer); when every one is further along, it is answered 503.
    connections: int = 256
    #: The request line and headers together, and the headers' count.
    head_bytes: int = 16 * 1024
    headers: int = 100
    body_bytes: int = BODY_MAX


class Server:
    def __init__(
        self,
        store: Store,
        *,
        host: str,
        port: int,
        public_url: str | None,
        tls: ssl.SSLContext | None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.tls = tls
        self.public_url = public_url
        self.limits = limits or Limits()
        self.id = os.urandom(6).hex()
        #: Every open connection (oldest first), and whether it may make room for a
        #: new one: while it sends its head, and while it is drained after its answer.
        #: Keyed by the task that serves it: making room cancels that task (aborting the
        #: transport instead breaks a TLS handshake under way, in asyncio).
        self._open: dict[asyncio.Task[None], bool] = {}
        #: Connections refused for want of room whose requests are being read and dropped
        #: (at most as many as `connections`: beyond, they are closed at once).
        self._refused = 0

    @property
    def _key(self) -> bytes:
        """Where this server says where it is reachable."""
        return SERVERS + self.id.encode()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        make_room_for(self.limits.connections)
        server = await asyncio.start_server(self._handle, self.host, self.port)  # TLS: in _head
        port = server.sockets[0].getsockname()[1]
        if self.public_url is None:
            host = self.host if self.host not in ("0.0.0.0", "::", "") else socket.getfqdn()
            host = f"[{host}]" if ":" in host else host
            self.public_url = f"{'https' if self.tls else 'http'}://{host}:{port}"
        lease = await self.store.grant(REGISTRATION_TTL, timeout=STORE_TIMEOUT)
        registered = dumps(Registration(self.public_url, os.getpid(), socket.gethostname()))
        try:
            await self.store.put(self._key, registered, lease=lease.id, timeout=STORE_TIMEOUT)
        except StoreDenied:
            raise StoreDenied(
                f"{self.store.name} refused to register this server: dsh serve needs an etcd account "
                "made for it (dsh admin user add NAME --serve); a person's account may not register servers"
            ) from None
        print(
            f"dsh serve: callbacks at {self.public_url}/cb/u/NAME/TOKEN (listening on {self.host}:{port})",
            flush=True,
        )
        if ready is not None:
            ready.set()
        try:
            async with server:
                while True:
                    await asyncio.sleep(REGISTRATION_TTL / 3)
                    try:
                        await self.store.keepalive(lease.id, timeout=REGISTRATION_TTL / 3)
                    except LeaseNotFound:  # gone in a long store outage: register again
                        with contextlib.suppress(StoreError, TimeoutError):
                            lease = await self.store.grant(REGISTRATION_TTL, timeout=STORE_TIMEOUT)
                            await self.store.put(self._key, registered, lease=lease.id, timeout=STORE_TIMEOUT)
                    except (StoreError, TimeoutError):
                        pass
        finally:
            with contextlib.suppress(StoreError, TimeoutError):
                await self.store.revoke(lease.id, timeout=STORE_TIMEOUT)

    # -- one connection ------------------------------------------------------------

    def _admit(self) -> bool:
        """Count this task's connection in, dropping the oldest idle one if it must; False:
        no room."""
        if len(self._open) >= self.limits.connections:
            oldest = next((task for task, idle in self._open.items() if idle), None)
            if oldest is None:
                return False
            del self._open[oldest]
            oldest.cancel()
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = True
        return True

    def _idle(self, idle: bool) -> None:
        """Say whether this task's connection may be dropped to make room."""
        task = asyncio.current_task()
        if task is not None and task in self._open:
            self._open[task] = idle

    def _forget(self) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._open.pop(task, None)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import h11

        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.head_bytes)
        refused = False
        try:
            head_only = False
            if not self._admit():
                if self.tls is not None:  # no room for a handshake: closed at once
                    return
                linger = REFUSED_LINGER_TIME if self._refused < self.limits.connections else 0
                self._refused += 1
                refused = True
                answer: _Answer | None = _Answer(
                    503, "too many connections at once; try again", linger=linger
                )
            else:
                got = await self._head(conn, reader, writer)
                if isinstance(got, h11.Request):
                    self._idle(False)
                    head_only = got.method == b"HEAD"
                    try:
                        answer = await self._answer(conn, got, reader, writer)
                    except StoreDenied as exc:  # this server's account may not: waiting will not help
                        print(f"dsh serve: {exc.message}", file=sys.stderr, flush=True)
                        answer = _Answer(500, "this server cannot take callbacks of that tree")
                    except (StoreError, TimeoutError):  # the store's calls have bounds of their own
                        answer = _Answer(503, "the store cannot be reached; try again")
                else:
                    answer = got
            if answer is None or writer.transport.is_closing():  # nothing to say, or nobody to hear it
                return
            async with asyncio.timeout(WRITE_TIMEOUT):
                writer.write(_response(conn, answer, head_only=head_only))
                await writer.drain()
            if answer.linger and conn.their_state not in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED):
                await self._linger(reader, writer, answer.linger)
        except (OSError, TimeoutError):  # the client went away, or would not read its answer
            pass
        except asyncio.CancelledError:  # dropped to make room, or the server stops (a handler
            pass  # of asyncio's server that ends cancelled is printed as a traceback)
        finally:
            self._forget()
            if refused:
                self._refused -= 1
            writer.close()

    async def _head(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> h11.Request | _Answer | None:
        """The TLS handshake if any, then the request's line and headers, within their time
        and size; else the answer, or None for none (gone first, or no handshake).

        The handshake is made here, not by the listening server, so that a connection
        counts against the bound (and may be dropped to make room) from its start."""
        import h11

        try:
            async with asyncio.timeout(self.limits.header_timeout):
                if self.tls is not None:
                    await writer.start_tls(self.tls, ssl_handshake_timeout=self.limits.header_timeout)
                event = await _next(conn, reader, most=self.limits.head_bytes)
        except TimeoutError:
            if self.tls is not None and writer.get_extra_info("ssl_object") is None:
                return None  # no TLS yet: an answer could not be read
            return _Answer(
                408,
                f"a request's head must come within {format_duration(self.limits.header_timeout)}",
                linger=0,
            )
        except h11.RemoteProtocolError as exc:
            return _malformed(exc, self.limits)
        except _TooLarge:
            return _Answer(431, f"a request's line and headers are at most {self.limits.head_bytes} bytes")
        if isinstance(event, h11.Request):
            if len(event.headers) > self.limits.headers:
                return _Answer(431, f"a request has at most {self.limits.headers} headers")
            return event
        return None  # closed before a request

    async def _answer(
        self,
        conn: h11.Connection,
        request: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> _Answer | None:
        """Act on a request: route it, read its body within the limits, accept the callback."""
        import h11

        limits = self.limits
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        if path == "/health":
            return _Answer(200, "ok")
        where = parse_callback_path(path[len("/cb/") :]) if path.startswith("/cb/") else None
        if where is None:
            return _Answer(404, "no such callback")
        tree, token = where
        if request.method != b"POST":
            return _Answer(405, "a callback takes a POST")
        length = _header(request, b"content-length")
        chunked = _header(request, b"transfer-encoding") is not None  # h11 lets only chunked through
        if length is not None and chunked:
            return _Answer(400, "a request's body has a Content-Length or is chunked, not both")
        if length is None and not chunked:
            return _Answer(411, "a POST to a callback needs a Content-Length (or a chunked body)")
        too_large = _Answer(413, f"a callback's body is at most {limits.body_bytes} bytes")
        if length is not None and int(length) > limits.body_bytes:  # h11 took only digits
            return too_large
        if conn.they_are_waiting_for_100_continue:  # say now whether the body is wanted
            refused = await check(self.store, tree, token)
            if refused is not None:
                return _Answer(*refused)
            writer.write(
                conn.send(h11.InformationalResponse(status_code=100, headers=[], reason=b"Continue"))
            )
        elif not TOKEN.fullmatch(token):
            return _Answer(404, "no such callback")
        body = bytearray()
        try:
            async with asyncio.timeout(limits.body_timeout):
                while True:
                    event = await _next(conn, reader)
                    if isinstance(event, h11.Data):
                        body += event.data
                        if len(body) > limits.body_bytes:  # chunked: counted as it comes
                            return too_large
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:
                        return None
        except TimeoutError:
            return _Answer(
                408, f"a request's body must come within {format_duration(limits.body_timeout)}", linger=0
            )
        except h11.RemoteProtocolError as exc:
            return _malformed(exc, limits)
        peer = str(writer.get_extra_info("peername", ("?",))[0])
        return _Answer(*await accept(self.store, tree, token, bytes(body), peer))

    async def _linger(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float
    ) -> None:
        """Read and drop what the client still sends (bounded), then let it go.

        Closing a socket with unread data resets the connection, and a client that
        is still sending may then lose the answer it was given."""
        self._idle(True)
        if writer.can_write_eof():
            writer.write_eof()
        dropped = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while dropped < LINGER_BYTES:
                    chunk = await reader.read(_READ)
                    if not chunk:
                        break
                    dropped += len(chunk)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    message: str
    #: How long to read and drop what the client still sends after the answer, when
    #: it was given before the request was read whole (0: not at all, for a client
    #: dropped as too slow).
    linger: float = LINGER_TIME


class _TooLarge(Exception):
    """More than `most` bytes came before the event was whole."""


async def _next(conn: h11.Connection, reader: asyncio.StreamReader, *, most: int = 0) -> h11.Event | None:
    """The client's next h11 event, reading as it needs, and at most `most` bytes for it if
    given (None: it asks to switch protocols). h11 bounds only what it holds unparsed:
    a head that comes in one piece is bounded here."""
    import h11

    read = 0
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Event):
            return event
        if event is h11.PAUSED:
            return None
        if most and read >= most:
            raise _TooLarge
        chunk = await reader.read(min(_READ, most - read) if most else _READ)
        read += len(chunk)
        conn.receive_data(chunk)


def _header(request: h11.Request, name: bytes) -> bytes | None:
    return next((value for key, value in request.headers if key == name), None)


def _malformed(exc: h11.RemoteProtocolError, limits: Limits) -> _Answer:
    if exc.error_status_hint == 431:
        return _Answer(431, f"a request's line and headers are at most {limits.head_bytes} bytes")
    if exc.error_status_hint == 501:
        return _Answer(501, "a body comes with a Content-Length or chunked, in no other Transfer-Encoding")
    what = _QUOTED.split(str(exc), maxsplit=1)[0]  # not the bytes themselves
    return _Answer(400, f"not a valid HTTP/1.1 request: {what}")


def _response(conn: h11.Connection, answer: _Answer, *, head_only: bool) -> bytes:
    import h11

    body = json_line({"status": answer.status, "message": answer.message}, ascii_only=True).encode() + b"\n"
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Connection", "close"),
    ]
    if answer.status == 405:
        headers.append(("Allow", "POST"))
    reason = _REASONS.get(answer.status, "Error").encode()
    out = conn.send(h11.Response(status_code=answer.status, headers=headers, reason=reason))
    if not head_only:
        out += conn.send(h11.Data(data=body))
    return out + conn.send(h11.EndOfMessage())


def make_room_for(connections: int) -> None:
    """Raise the soft limit of open files so that `connections` fit, or say why they cannot."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * connections + 64  # and as many refused, the store's, the listening sockets'...
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise UsageError(
                f"--max-connections {connections} needs {needed} open files, "
                f"and this process may open at most {hard} (ulimit -Hn)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))

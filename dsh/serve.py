"""`dsh serve`: accepts the POSTs that callbacks wait for, and writes them into the store.

    POST /cb/TOKEN   (a body of at most 64 KiB)
        202  accepted: the waiting `await callback` goes on with the body
        404  no such callback (a wrong or forged token)
        409  the callback was used already: each is accepted once
        410  its wait is over (timed out)
        413  the body is too large;  411  no Content-Length
        503  the store cannot be reached (try again)
    GET /health  200

A callback is `/dsh/v1/cb/TOKEN` in the store ({"user", "session", "action",
"host", "deadline"}), made by the executor that waits for it. Accepting it is
one transaction: the callback exists, its `/event` does not, then the event
is put. So any number of `dsh serve` instances can run against one store, and
a callback is accepted once whichever of them gets the POST. Each instance
says where it is reachable in `/dsh/v1/serve/ID` ({"url"}, on a lease of its
own), which is where executors find the base of the URLs they hand out.

The token is 32 characters of an HMAC (SHA-256) of the action under a secret
of the session: unguessable from outside, and the same after a takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import ssl
import time
from typing import Any

from dsh.errors import StoreError, UsageError
from dsh.store.base import Compare, LeaseNotFound, Put, Store

#: The largest body a callback takes.
BODY_MAX = 64 * 1024
#: How long a client has to send its request, and a store call to answer.
REQUEST_TIMEOUT = 10.0
STORE_TIMEOUT = 10.0
#: The lease of a server's registration: gone this long after the server is.
REGISTRATION_TTL = 10.0
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,128}")
_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    411: "Length Required",
    413: "Payload Too Large",
    503: "Service Unavailable",
}


def callback_key(token: str) -> bytes:
    return f"/dsh/v1/cb/{token}".encode()


def event_key(token: str) -> bytes:
    return f"/dsh/v1/cb/{token}/event".encode()


SERVERS = b"/dsh/v1/serve/"


async def callback_base(store: Store, env: dict[str, str] | None = None) -> str | None:
    """Where callbacks are POSTed: DSH_CALLBACK_URL, else a running `dsh serve`'s URL."""
    given = (env if env is not None else os.environ).get("DSH_CALLBACK_URL")
    if given:
        return given.rstrip("/")
    kvs, _ = await store.range(SERVERS, timeout=STORE_TIMEOUT)
    for kv in kvs:
        with contextlib.suppress(ValueError, KeyError):
            return str(json.loads(kv.value)["url"]).rstrip("/")
    return None


async def accept(store: Store, token: str, body: bytes, peer: str) -> tuple[int, str]:
    """Accept one POST to a callback: (HTTP status, what to say)."""
    if not _TOKEN.fullmatch(token):
        return 404, "no such callback"
    held = await store.get(callback_key(token), timeout=STORE_TIMEOUT)
    if held is None:
        return 404, "no such callback"
    deadline = json.loads(held.value).get("deadline")
    if isinstance(deadline, int | float) and time.time() > deadline:
        return 410, "the wait for this callback is over"
    record = {"body": body.decode("utf-8", "replace"), "t": time.time(), "from": peer}
    result = await store.txn(  # the callback is there, and no event yet
        [
            Compare(callback_key(token), "version", ">", 0),
            Compare(event_key(token), "version", "==", 0),
        ],
        [Put(event_key(token), json.dumps(record).encode())],
        timeout=STORE_TIMEOUT,
    )
    if result.succeeded:
        return 202, "accepted"
    if await store.get(event_key(token), timeout=STORE_TIMEOUT) is not None:
        return 409, "this callback was used already: each is accepted once"
    return 404, "no such callback"  # removed meanwhile (dsh rm)


class Server:
    def __init__(
        self, store: Store, *, host: str, port: int, public_url: str | None, tls: ssl.SSLContext | None
    ) -> None:
        self.store = store
        self.host = host
        self.port = port
        self.tls = tls
        self.public_url = public_url
        self.id = os.urandom(6).hex()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        server = await asyncio.start_server(self._handle, self.host, self.port, ssl=self.tls)
        port = server.sockets[0].getsockname()[1]
        if self.public_url is None:
            host = self.host if self.host not in ("0.0.0.0", "::", "") else socket.getfqdn()
            host = f"[{host}]" if ":" in host else host
            self.public_url = f"{'https' if self.tls else 'http'}://{host}:{port}"
        lease = await self.store.grant(REGISTRATION_TTL, timeout=STORE_TIMEOUT)
        registration = {"url": self.public_url, "pid": os.getpid(), "host": socket.gethostname()}
        registered = json.dumps(registration).encode()
        await self.store.put(SERVERS + self.id.encode(), registered, lease=lease.id, timeout=STORE_TIMEOUT)
        print(
            f"dsh serve: callbacks at {self.public_url}/cb/TOKEN (listening on {self.host}:{port})",
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
                            await self.store.put(
                                SERVERS + self.id.encode(), registered, lease=lease.id, timeout=STORE_TIMEOUT
                            )
                    except (StoreError, TimeoutError):
                        pass
        finally:
            with contextlib.suppress(StoreError, TimeoutError):
                await self.store.revoke(lease.id, timeout=STORE_TIMEOUT)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername", ("?",))[0])
        try:
            try:  # reading is bounded here; the store's calls have their own bounds
                asked = await asyncio.wait_for(self._request(reader), REQUEST_TIMEOUT)
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                asked = (400, "a request must be HTTP/1.1, whole, and within 10s")
            if isinstance(asked[0], int):
                status, text = int(asked[0]), str(asked[1])
            else:
                status, text = await accept(self.store, asked[0], bytes(asked[1]), peer)
        except (StoreError, TimeoutError):
            status, text = 503, "the store cannot be reached; try again"
        except OSError:  # the client went away
            writer.close()
            return
        body = json.dumps({"status": status, "message": text}).encode() + b"\n"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(OSError, TimeoutError):
            writer.write(head.encode() + body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[int, str] | tuple[str, bytes]:
        """A response to give at once, or the token and body of a callback's POST."""
        line = (await reader.readuntil(b"\r\n")).decode("latin-1").split()
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readuntil(b"\r\n")
            if raw == b"\r\n":
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
            if len(headers) > 100:
                raise ValueError("too many headers")
        if len(line) != 3:
            return 400, "not an HTTP request"
        method, path = line[0], line[1].split("?", 1)[0]
        if path == "/health":
            return 200, "ok"
        if not path.startswith("/cb/"):
            return 404, "no such callback"
        if method != "POST":
            return 405, "a callback takes a POST"
        if "content-length" not in headers:
            return 411, "a POST to a callback needs a Content-Length"
        length = int(headers["content-length"])
        if length > BODY_MAX or length < 0:
            return 413, f"a callback's body is at most {BODY_MAX} bytes"
        return path[len("/cb/") :], await reader.readexactly(length)


def parse_listen(text: str) -> tuple[str, int]:
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UsageError(f"--listen {text!r}: give ADDRESS:PORT, like 127.0.0.1:8470")
    return host.strip("[]") or "0.0.0.0", int(port)


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not (cert and key):
        raise UsageError("dsh serve needs both --cert and --key for HTTPS")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"dsh serve: cannot load {cert} and {key}: {exc}") from None
    return context


def options(rest: list[str]) -> dict[str, Any]:
    """`serve [--listen ADDR:PORT] [--public-url URL] [--cert F --key F]`."""
    found: dict[str, Any] = {"listen": "127.0.0.1:8470", "public_url": None, "cert": None, "key": None}
    names = {"--listen": "listen", "--public-url": "public_url", "--cert": "cert", "--key": "key"}
    while rest:
        arg = rest.pop(0)
        flag, eq, value = arg.partition("=")
        if flag not in names:
            raise UsageError(f"serve: unknown option {arg!r} (--listen, --public-url, --cert, --key)")
        if not eq:
            if not rest:
                raise UsageError(f"serve: {flag} needs a value")
            value = rest.pop(0)
        found[names[flag]] = value
    if found["public_url"] is not None and not str(found["public_url"]).startswith(("http://", "https://")):
        raise UsageError(f"--public-url {found['public_url']!r}: give an http:// or https:// URL")
    return found

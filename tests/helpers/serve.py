"""A real `dsh serve` process for the tests, and clients for it: urllib, and raw sockets
for the requests no library would send."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

from tests.conftest import dsh_path
from tests.sshd import free_port


class Serve:
    """One `dsh serve` process on a loopback port (`extra`: more options of it)."""

    def __init__(self, env: dict[str, str], *extra: str, scheme: str = "http") -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [dsh_path(), "serve", "--listen", f"127.0.0.1:{self.port}", *extra],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert f"callbacks at {scheme}://127.0.0.1:" in line, line + (
            self.proc.stderr.read() if self.proc.stderr else ""
        )
        self.base = f"{scheme}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def post(url: str, body: bytes, **urlopen: object) -> tuple[int, dict]:  # type: ignore[type-arg]
    """POST `body` to `url` as urllib does: (status, the JSON answer)."""
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10, **urlopen) as answer:  # type: ignore[arg-type]
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def connect(port: int, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (a reset ends it too)."""
    got = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return got + b"<reset>"
        if not chunk:
            return got
        got += chunk


def exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` raw on a new connection; all the server answers, until it closes."""
    with connect(port, timeout) as sock:
        sock.sendall(data)
        return read_all(sock)


def answer(raw: bytes) -> tuple[int, dict]:  # type: ignore[type-arg]
    """The status and the JSON body of one whole answer of `dsh serve`."""
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), raw
    return int(head.split()[1]), json.loads(body)


def timed(port: int, data: bytes, timeout: float = 10) -> tuple[bytes, float]:
    """As `exchange`, and the seconds until the server closed."""
    start = time.monotonic()
    got = exchange(port, data, timeout)
    return got, time.monotonic() - start


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    """A request's bytes, with a Host header and the given ones."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

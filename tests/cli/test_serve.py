"""`dsh serve` facing the network: HTTP through h11, and the limits of what a client may hold.

Each test runs a real `dsh serve` process (the local store, in the test's own state
directory) and speaks to it with raw sockets, for the requests no library would send.
"""

from __future__ import annotations

import re
import sqlite3
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dsh.session.keys import user_name
from tests.conftest import dsh_path
from tests.etcd import make_tls
from tests.helpers.serve import Serve, answer, connect, exchange, post, read_all, request, timed

ROOT = Path(__file__).resolve().parents[2]
FORGED = f"/cb/u/{user_name()}/" + "A" * 32  # a token of the right form that no callback has


@pytest.fixture
def serve(env: dict[str, str]) -> Iterator[Callable[..., Serve]]:
    """Start `dsh serve` with the given options; all are stopped at the end."""
    started: list[Serve] = []

    def start(*extra: str, scheme: str = "http") -> Serve:
        started.append(Serve(env, *extra, scheme=scheme))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def make_callback(env: dict[str, str], session: str) -> str:
    """A new callback of `session`, bound as `cb` there: its path (/cb/u/USER/TOKEN)."""
    r = subprocess.run(
        [dsh_path(), "--session", session, "-c", "cb = callback\necho ${cb.url}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    found = re.fullmatch(r"https?://127\.0\.0\.1:\d+(/cb/u/[^/\s]+/[A-Za-z0-9_-]+)\n", r.stdout)
    assert found, r.stdout
    return found.group(1)


def awaited_body(env: dict[str, str], session: str) -> str:
    """What `await callback $cb` of `session` binds (the callback was POSTed already)."""
    r = subprocess.run(
        [
            dsh_path(),
            "--session",
            session,
            "-c",
            'await callback $cb as body within 5s\nprintf "[%s]" "$body"',
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def post_raw(port: int, path: str, body: bytes) -> tuple[int, dict]:  # type: ignore[type-arg]
    return answer(exchange(port, request("POST", path, f"Content-Length: {len(body)}", body=body)))


# -- Content-Length, parsed strictly (fault report, lower-priority observations) --------


def test_low_content_length_with_a_sign_an_underscore_or_no_digits_is_refused_with_400(
    env: dict[str, str], serve: Callable[..., Serve]
) -> None:
    server = serve()
    path = make_callback(env, "strict")
    for value in ("+5", "1_0", "-1", "abc", "0x5", "5.0"):
        got = exchange(server.port, request("POST", path, f"Content-Length: {value}", body=b"hello12345"))
        status, said = answer(got)
        assert status == 400 and "Content-Length" in said["message"], (value, got)
    # None of them was taken as the callback's POST: it is still there, once.
    assert post_raw(server.port, path, b"the real one") == (202, {"status": 202, "message": "accepted"})
    assert post_raw(server.port, path, b"again")[0] == 409
    assert awaited_body(env, "strict") == "[the real one]"


# -- Expect: 100-continue ------------------------------------------------------------


def test_low_expect_100_continue_is_answered_before_the_body_is_sent(
    env: dict[str, str], serve: Callable[..., Serve]
) -> None:
    server = serve()
    path = make_callback(env, "expecting")
    body = b"build 42 ok"
    with connect(server.port) as sock:  # as curl does: the head, then wait for 100 before the body
        sock.sendall(request("POST", path, f"Content-Length: {len(body)}", "Expect: 100-continue"))
        start = time.monotonic()
        sock.settimeout(5)
        interim = sock.recv(4096)
        waited = time.monotonic() - start
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        assert waited < 2, waited  # not after a timeout of ours: no body was sent
        sock.sendall(body)
        final = read_all(sock)
    assert answer(final) == (202, {"status": 202, "message": "accepted"})
    assert awaited_body(env, "expecting") == "[build 42 ok]"


def test_low_expect_100_continue_is_refused_without_reading_the_body(
    env: dict[str, str], serve: Callable[..., Serve]
) -> None:
    server = serve()
    used = make_callback(env, "used")
    assert post_raw(server.port, used, b"first")[0] == 202
    for path, length, status in ((FORGED, 5, 404), (used, 5, 409), (make_callback(env, "big"), 70000, 413)):
        with connect(server.port) as sock:
            sock.sendall(request("POST", path, f"Content-Length: {length}", "Expect: 100-continue"))
            got = read_all(sock)  # the final answer, and the end: no 100, no wait for the body
        assert not got.startswith(b"HTTP/1.1 100"), got
        assert answer(got)[0] == status, (path, got)


# -- limits on the head --------------------------------------------------------------


def test_F10item_a_head_larger_than_16_KiB_is_refused_with_431(serve: Callable[..., Serve]) -> None:
    server = serve()
    whole = request("POST", FORGED, "X-Big: " + "a" * 20000, "Content-Length: 1", body=b"x")
    status, said = answer(exchange(server.port, whole))  # in one piece: h11 alone would take it
    assert status == 431 and "16384 bytes" in said["message"]
    with connect(server.port) as sock:  # one that never ends, still being sent when refused
        sock.sendall(b"POST " + FORGED.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000)
        assert answer(read_all(sock))[0] == 431  # the answer, not a reset
    assert answer(exchange(server.port, request("GET", "/health", "X-Fits: " + "a" * 15000)))[0] == 200


def test_F10item_more_than_100_headers_are_refused_with_431(serve: Callable[..., Serve]) -> None:
    server = serve()
    many = [f"X-H{i}: {i}" for i in range(101)]
    status, said = answer(exchange(server.port, request("GET", "/health", *many)))
    assert status == 431 and "100 headers" in said["message"]
    assert answer(exchange(server.port, request("GET", "/health", *many[:99])))[0] == 200  # with Host: 100


# -- deadlines ------------------------------------------------------------------------


def test_F10item_a_client_slow_to_send_its_head_is_dropped_at_the_deadline(
    serve: Callable[..., Serve],
) -> None:
    server = serve("--header-timeout", "500ms")
    got, took = timed(server.port, b"POST " + FORGED.encode() + b" HTTP/1.1\r\nHost: x\r\n")
    status, said = answer(got)
    assert status == 408 and "within 500ms" in said["message"]
    assert 0.4 <= took < 3, took
    with connect(server.port) as sock:  # a byte at a time does not keep it alive either
        start = time.monotonic()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for byte in b"GET /health HTTP/1.1\r\nHost: x\r\n" * 10:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        assert time.monotonic() - start < 3
    assert answer(exchange(server.port, request("GET", "/health")))[0] == 200


def test_F10item_a_client_slow_to_send_its_body_is_dropped_at_the_deadline(
    env: dict[str, str], serve: Callable[..., Serve]
) -> None:
    server = serve("--body-timeout", "500ms")
    path = make_callback(env, "slowbody")
    got, took = timed(server.port, request("POST", path, "Content-Length: 10", body=b"abc"))
    status, said = answer(got)
    assert status == 408 and "body must come within 500ms" in said["message"]
    assert 0.4 <= took < 3, took
    assert post_raw(server.port, path, b"whole")[0] == 202  # the slow one took nothing


# -- connections at once ----------------------------------------------------------------


def test_F10item_idle_connections_beyond_the_bound_make_room_and_health_answers(
    serve: Callable[..., Serve],
) -> None:
    server = serve("--max-connections", "4", "--header-timeout", "30s")
    idle = [connect(server.port) for _ in range(50)]  # a slowloris: heads begun, never ended
    try:
        for sock in idle:
            sock.sendall(b"POST /cb/x HTTP/1.1\r\nHost: x\r\n")
        for _ in range(5):
            start = time.monotonic()
            assert answer(exchange(server.port, request("GET", "/health")))[0] == 200
            assert time.monotonic() - start < 1
        dropped = 0
        for sock in idle:
            sock.settimeout(0.2)
            try:
                dropped += sock.recv(100) in (b"",)
            except ConnectionResetError:
                dropped += 1
            except TimeoutError:
                pass
        assert dropped >= 46, dropped  # at most 4 open at once
    finally:
        for sock in idle:
            sock.close()


def test_F10item_a_connection_beyond_the_bound_is_refused_503_when_none_is_idle(
    serve: Callable[..., Serve],
) -> None:
    server = serve("--max-connections", "3", "--body-timeout", "2s")
    busy = [connect(server.port) for _ in range(3)]  # each sending its body, slowly
    try:
        for sock in busy:
            sock.sendall(request("POST", FORGED, "Content-Length: 10", body=b"abc"))
        time.sleep(0.3)
        status, said = answer(exchange(server.port, request("GET", "/health")))
        assert status == 503 and "too many connections" in said["message"]
        for sock in busy:  # each is dropped at its deadline, and then there is room
            assert answer(read_all(sock))[0] == 408
    finally:
        for sock in busy:
            sock.close()
    assert answer(exchange(server.port, request("GET", "/health")))[0] == 200


# -- bodies ---------------------------------------------------------------------------


def chunked(body: bytes, size: int = 1000) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def test_F10item_a_chunked_body_is_taken_within_the_same_cap(
    env: dict[str, str], serve: Callable[..., Serve]
) -> None:
    server = serve()
    path = make_callback(env, "chunks")
    too_big = chunked(b"a" * (64 * 1024 + 1))
    status, said = answer(
        exchange(server.port, request("POST", path, "Transfer-Encoding: chunked", body=too_big))
    )
    assert status == 413 and "65536 bytes" in said["message"]
    good = chunked(b"deployed " * 10, size=7)
    assert (
        answer(exchange(server.port, request("POST", path, "Transfer-Encoding: chunked", body=good)))[0]
        == 202
    )
    assert awaited_body(env, "chunks") == "[" + "deployed " * 10 + "]"


def test_F10item_the_answers_of_the_old_server_are_kept(
    env: dict[str, str], serve: Callable[..., Serve]
) -> None:
    server = serve()
    port = server.port
    got = exchange(port, request("GET", FORGED))
    assert answer(got)[0] == 405 and b"\r\nAllow: POST\r\n" in got
    assert answer(exchange(port, request("POST", FORGED)))[0] == 411  # no length, not chunked
    assert answer(exchange(port, request("POST", "/elsewhere", "Content-Length: 0")))[0] == 404
    assert answer(exchange(port, request("POST", "/cb/short", "Content-Length: 2", body=b"hi")))[0] == 404
    big = request("POST", FORGED, "Content-Length: 70000", body=b"a" * 70000)  # sent whole, unasked
    assert answer(exchange(port, big))[0] == 413  # the answer reaches the client, not a reset
    assert answer(exchange(port, b"NOT HTTP\r\n\r\n"))[0] == 400
    assert answer(exchange(port, b"GET /health HTTP/1.1\r\n\r\n"))[0] == 400  # no Host
    assert answer(exchange(port, request("POST", FORGED, "Transfer-Encoding: gzip", body=b"x")))[0] == 501
    both = request("POST", FORGED, "Transfer-Encoding: chunked", "Content-Length: 5", body=b"0\r\n\r\n")
    assert answer(exchange(port, both))[0] == 400
    assert answer(exchange(port, b"GET /health?x=1 HTTP/1.0\r\n\r\n"))[0] == 200
    head = exchange(port, request("HEAD", "/health"))
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n"), head  # no body
    assert b"\r\nConnection: close\r\n" in exchange(port, request("GET", "/health"))
    path = make_callback(env, "kept")
    assert post(server.base + path, b"once")[0] == 202
    assert post(server.base + path, b"twice")[0] == 409


def test_F10item_store_trouble_is_503(env: dict[str, str], serve: Callable[..., Serve]) -> None:
    server = serve()
    path = make_callback(env, "locked")
    db = sqlite3.connect(Path(env["XDG_STATE_HOME"]) / "dsh" / "store.db", isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")  # another process holds the store's write lock
        start = time.monotonic()
        status, said = post_raw(server.port, path, b"blocked")
        assert status == 503 and "try again" in said["message"]
        assert time.monotonic() - start < 15
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert post_raw(server.port, path, b"later")[0] == 202


def test_F10item_https_with_cert_and_key(
    env: dict[str, str], serve: Callable[..., Serve], tmp_path: Path
) -> None:
    tls = make_tls(tmp_path)
    cert = ["--cert", str(tls["server_cert"]), "--key", str(tls["server_key"])]
    server = serve(*cert, "--max-connections", "3", "--header-timeout", "30s", scheme="https")
    trusted = ssl.create_default_context(cafile=str(tls["ca"]))
    path = make_callback(env, "secure")
    assert post(f"{server.base}{FORGED}", b"x", context=trusted)[0] == 404
    assert post(f"{server.base}{path}", b"over TLS", context=trusted)[0] == 202
    assert awaited_body(env, "secure") == "[over TLS]"
    silent = [connect(server.port) for _ in range(10)]  # never begin their handshakes
    try:
        time.sleep(0.3)
        with urllib.request.urlopen(f"{server.base}/health", timeout=5, context=trusted) as health:
            assert health.status == 200  # they count against the bound, and make room
    finally:
        for sock in silent:
            sock.close()
    quick = serve(*cert, "--header-timeout", "500ms", scheme="https")
    with connect(quick.port) as sock:  # and they are dropped at the head's deadline
        start = time.monotonic()
        assert read_all(sock) in (b"", b"<reset>")
        assert time.monotonic() - start < 3


def test_F10item_bad_limits_are_usage_errors(run_dsh) -> None:  # type: ignore[no-untyped-def]
    for args in (
        ["--header-timeout", "0s"],
        ["--body-timeout", "10"],
        ["--body-timeout=2h"],
        ["--max-connections", "0"],
        ["--max-connections", "many"],
    ):
        r = run_dsh(["serve", *args])
        assert r.returncode == 2 and args[0].split("=")[0] in r.stderr and "give " in r.stderr, (
            args,
            r.stderr,
        )


def test_F10item_h11_is_imported_only_by_dsh_serve() -> None:
    users = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "dsh").rglob("*.py")
        if re.search(r"^\s*(?:import h11|from h11\b)", path.read_text(encoding="utf-8"), re.M)
    ]
    assert users == ["dsh/serve.py"]


def test_F10item_stopping_with_connections_open_is_quiet(serve: Callable[..., Serve]) -> None:
    server = serve()
    idle, busy = connect(server.port), connect(server.port)
    with idle, busy:
        idle.sendall(b"POST /cb/x HTTP/1.1\r\nHost: x\r\n")
        busy.sendall(request("POST", FORGED, "Content-Length: 10", body=b"abc"))
        time.sleep(0.3)
        server.proc.terminate()
        _out, err = server.proc.communicate(timeout=10)
        assert server.proc.returncode == 0 and err == "", err
        assert read_all(idle) in (b"", b"<reset>") and read_all(busy) in (b"", b"<reset>")

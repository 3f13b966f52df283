"""Callbacks: `await callback`, `cb = callback`, and `dsh serve` instances sharing one etcd."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import dsh_path
from tests.etcd import Etcd
from tests.helpers.serve import Serve, post


@pytest.fixture(scope="module")
def etcd() -> Iterator[Etcd]:
    server = Etcd().start()
    yield server
    server.stop()


@pytest.fixture
def served(env: dict[str, str], etcd: Etcd, tmp_path: Path) -> Iterator[tuple[dict[str, str], list[Serve]]]:
    e = {**env, "DSH_STORE": etcd.url, "DSH_ETCD_PREFIX": tmp_path.name}
    servers = [Serve(e), Serve(e)]
    yield e, servers
    for server in servers:
        server.stop()


def run_until_url(e: dict[str, str], script: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Start a script; return it, the callback URL it printed, and what it said before."""
    proc = subprocess.Popen(
        [dsh_path(), str(script)],
        env=e,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    said: list[str] = []
    for line in proc.stderr:
        said.append(line)
        found = re.search(r"POST to (http://\S+/cb/u/[^/\s]+/[A-Za-z0-9_-]+)", line)
        if found:
            return proc, found.group(1), said
    raise AssertionError("no callback URL was printed: " + "".join(said))


def test_await_callback_resumes_on_a_post_to_either_server_and_only_once(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    e, (first, second) = served
    script = tmp_path / "cb.dsh"
    script.write_text("await callback as cb within 30s\necho got: $cb\n")
    proc, url, _ = run_until_url(e, script)
    try:
        token_path = url.split("/cb/", 1)[1]
        assert len(token_path) >= 32
        assert url.startswith((first.base, second.base))
        other = second.base if url.startswith(first.base) else first.base
        # A forged token is refused, and the wait goes on.
        assert post(f"{other}/cb/{token_path[:-4]}AAAA", b"forged")[0] == 404
        status, answer = post(f"{other}/cb/{token_path}", b"deployed v42")  # the other server
        assert (status, answer["message"]) == (202, "accepted")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "got: deployed v42\n"
    status, answer = post(url, b"again")  # the same URL again, to the first server
    assert status == 409 and "used already" in answer["message"]
    log = subprocess.run([dsh_path(), "log", "--json", script.stem], env=e, capture_output=True, text=True)
    assert log.returncode == 0 or "no session" in log.stderr  # generated names: checked below instead


def test_a_callback_made_first_and_awaited_later(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    e, (_first, _) = served
    script = tmp_path / "made.dsh"
    script.write_text(
        "cb = callback\necho url: ${cb.url}\nawait callback $cb within 20s as body\necho body: $body\n"
    )
    proc = subprocess.Popen(
        [dsh_path(), "--session", "made", str(script)],
        env=e,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("url: http://127.0.0.1:"), line
        url = line.split("url: ", 1)[1].strip()
        posted = threading.Timer(0.5, lambda: post(url, b"hello"))
        posted.start()
        rest = proc.stdout.read()
        proc.wait(30)
        posted.join()
    finally:
        proc.kill()
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert rest == "body: hello\n"
    log = subprocess.run([dsh_path(), "log", "--json", "made"], env=e, capture_output=True, text=True)
    entries = [json.loads(x) for x in log.stdout.splitlines()]
    kinds = [x.get("kind") for x in entries]
    assert "callback" in kinds, kinds  # the URL is journaled
    assert any(x.get("url") == url for x in entries if x.get("kind") == "callback")


def test_a_callback_not_called_times_out(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    e, _ = served
    script = tmp_path / "late.dsh"
    script.write_text("await callback as cb within 1s\n")
    proc, url, _ = run_until_url(e, script)
    try:
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1 and "timeout" in err
    status, answer = post(url, b"too late")
    assert status == 410 and "over" in answer["message"]


def test_no_server_means_a_clear_failure(env, etcd: Etcd, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    e = {**env, "DSH_STORE": etcd.url, "DSH_ETCD_PREFIX": tmp_path.name}
    r = subprocess.run(
        [dsh_path(), "-c", "await callback as cb within 5s"],
        env=e,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 1 and "no `dsh serve`" in r.stderr, r.stderr


def test_rm_removes_the_sessions_callbacks(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    e, _ = served
    r = subprocess.run(
        [dsh_path(), "--session", "gone", "-c", "cb = callback\necho ${cb.url}"],
        env=e,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    url = r.stdout.strip()
    log = subprocess.run([dsh_path(), "log", "gone"], env=e, capture_output=True, text=True, timeout=30)
    assert f"callback 1.1.1 here: {url}" in log.stdout, log.stdout
    assert subprocess.run([dsh_path(), "rm", "gone"], env=e, capture_output=True, timeout=30).returncode == 0
    assert post(url, b"late")[0] == 404  # the callback went with the session

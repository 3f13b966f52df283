"""Events: `await` on signals, keys, ports, files, commands and URLs, durable across a takeover."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import SshSetup, dsh_path
from tests.helpers.wait import wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def listener_after(port: int, delay: float) -> Iterator[None]:
    """A TCP listener on port that appears after `delay` seconds."""
    stop = threading.Event()

    def serve() -> None:
        if stop.wait(delay):
            return
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
            s.listen()
            stop.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)


def journal(run_dsh, name: str) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in run_dsh(["log", "--json", name]).stdout.splitlines()]


def test_an_unsent_signal_times_out_at_its_bound(run_dsh) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    r = run_dsh(["--json", "--session", "e1", "-c", "await signal go within 5s"])
    elapsed = time.monotonic() - started
    assert r.returncode == 1
    (result,) = [e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "result"]
    assert result["outcome"] == "timeout" and "no signal 'go'" in result["message"]
    assert 5 <= elapsed < 9, elapsed


def test_a_signal_sent_while_the_script_waits_releases_it_with_its_value(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    script = tmp_path / "gate.dsh"
    script.write_text("await signal go as v within 15s\necho got-$v\n")
    assert run_dsh(["--session", "e2", "-c", "true"]).returncode == 0  # the session exists
    proc = subprocess.Popen(
        [dsh_path(), "--session", "e2", str(script)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1.0)
        assert run_dsh(["signal", "e2", "go", "42"]).returncode == 0
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (0, "got-42\n")


def test_a_signal_sent_before_its_await_is_kept_and_taken_once(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "gate.dsh"
    script.write_text("await signal go as v within 15s\necho got-$v\n")
    assert run_dsh(["signal", "nosuch", "go"]).returncode == 2  # no such session
    assert run_dsh(["--session", "e3", "-c", "true"]).returncode == 0
    assert run_dsh(["signal", "e3", "go", "42"]).returncode == 0
    r = run_dsh(["--session", "e3", str(script)])
    assert (r.returncode, r.stdout) == (0, "got-42\n")
    r = run_dsh(["--session", "e3", "-c", "await signal go within 1s"])  # taken: not there again
    assert r.returncode == 1
    taken = [e for e in journal(run_dsh, "e3") if e["kind"] == "signal"]
    assert [(e["name"], e["value"]) for e in taken] == [("go", "42")]


def test_await_port_from_the_sessions_machine(run_dsh) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    with listener_after(port, 2.0):
        started = time.monotonic()
        r = run_dsh(["-c", f"await port 127.0.0.1:{port} within 10s every 200ms\necho open"])
        assert (r.returncode, r.stdout) == (0, "open\n"), r.stderr
        assert 1.8 < time.monotonic() - started < 8
    r = run_dsh(["-c", f"await port 127.0.0.1:{free_port()} within 1s"])
    assert r.returncode == 1 and "not open within 1s" in r.stderr


def test_await_key_file_cmd_and_http(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ready = tmp_path / "ready"
    toucher = threading.Timer(0.8, ready.touch)
    toucher.start()
    r = run_dsh(["-c", f"await file {ready} within 5s every 100ms\necho file-ok"])
    assert (r.returncode, r.stdout) == (0, "file-ok\n"), r.stderr
    r = run_dsh(["-c", f"await cmd 'cat {ready} && echo yes' as said within 3s\necho said=$said"])
    assert (r.returncode, r.stdout) == (0, "said=yes\n"), r.stderr
    assert run_dsh(["key", "get", "/deploy/go"]).returncode == 1
    putter = threading.Timer(0.8, lambda: run_dsh(["key", "put", "/deploy/go", "yes"]))
    putter.start()
    r = run_dsh(["-c", "await key /deploy/go = yes as k within 10s\necho key=$k"])
    putter.join()
    assert (r.returncode, r.stdout) == (0, "key=yes\n"), r.stderr
    assert run_dsh(["key", "get", "/deploy/go"]).stdout == "yes\n"

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b"fine")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        text = f"await http {base}/health as body within 5s\n"
        text += f"await http {base}/gone status 404 within 5s\necho $body"
        r = run_dsh(["-c", text])
        assert (r.returncode, r.stdout) == (0, "fine\n"), r.stderr
        r = run_dsh(["-c", f"await http {base}/gone within 1s every 200ms"])
        assert r.returncode == 1 and "did not answer 2xx" in r.stderr and "status 404" in r.stderr
    finally:
        server.shutdown()


def test_awaits_in_a_host_flow_over_ssh(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    port = ssh_setup.server.port  # each host's own localhost: its sshd
    r = run_dsh([*ssh_setup.args(), "-c", f"@h[1-3] true | await port {port} within 10s | echo up $host"])
    assert r.returncode == 0, r.stderr
    assert sorted(line for line in r.stdout.splitlines() if " | " in line) == [
        "h1 | up h1",
        "h2 | up h2",
        "h3 | up h3",
    ]
    r = run_dsh([*ssh_setup.args(), "-c", "@h1 true | await file /nonexistent/x within 1s"])
    assert r.returncode == 1 and "did not appear" in r.stdout + r.stderr


def test_one_signal_releases_every_host_of_a_flow(run_dsh, env, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    assert run_dsh(["--session", "e6", "-c", "true"]).returncode == 0
    proc = subprocess.Popen(
        [
            dsh_path(),
            *ssh_setup.args(),
            "--session",
            "e6",
            "-c",
            "@h[1-3] true | await signal go within 15s | echo released",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)
        assert run_dsh(["signal", "e6", "go"]).returncode == 0
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert sum(line.endswith(" | released") for line in out.splitlines()) == 3
    assert len([e for e in journal(run_dsh, "e6") if e["kind"] == "signal"]) == 1


def test_an_await_keeps_its_deadline_across_a_takeover(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "wait.dsh"
    script.write_text("await signal go as v within 6s\necho got-$v\n")
    env["DSH_LEASE_TTL"] = "1"
    assert run_dsh(["run", "--detach", "--session", "e7", str(script)]).returncode == 0
    wait_for(lambda: any(e["kind"] == "await" for e in journal(run_dsh, "e7")))
    (owner,) = [json.loads(x) for x in run_dsh(["ls", "--json"]).stdout.splitlines()]
    os.kill(owner["owner_pid"], signal.SIGKILL)
    r = run_dsh(["attach", "e7"], env_extra={"DSH_MACHINE_ID": "other"}, timeout=30)
    assert r.returncode == 1  # timed out at its first deadline, not 6 s after the takeover
    entries = journal(run_dsh, "e7")
    (pending,) = [e for e in entries if e["kind"] == "await"]
    (end,) = [e for e in entries if e["kind"] == "end"]
    assert end["outcome"] == "timeout"
    assert float(end["t"]) - float(pending["deadline"]) < 1.5


def test_await_is_checked_at_compile_time(run_dsh) -> None:  # type: ignore[no-untyped-def]
    cases = {
        "await nothing": "cannot await 'nothing'",
        "await port": "takes one argument",
        "await port 99999": "is not a port",
        "await signal": "takes one argument",
        "await signal go as": "'as' needs a name",
        "await port 80 as x": "brings no value",
        "true | await port 80 | retry 2": "'retry' applies to a command",
        "await callback a b within 1h": "a callback made before, or nothing",
        "@h[1-2] true | await callback as x": "each host would bind",
        "cb = callback 5s": "unexpected",
        "await http ftp://x": "not an http",
        "@h[1-2] true | await cmd 'true' as x": "each host would bind",
    }
    for text, message in cases.items():
        r = run_dsh(["-c", text])
        assert r.returncode == 2 and message in r.stderr, (text, r.stderr)
        assert "^" in r.stderr
    r = run_dsh(["explain", "@h[1-4] true | await port 80 within 30s every 2s"])
    assert r.returncode == 0 and "within 30s, looks every 2s" in r.stdout


def test_a_probe_that_outlives_its_wait_is_ended_on_the_host(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    from tests.sshd import USER, processes_of

    r = run_dsh([*ssh_setup.args(), "-c", "@h1 true | await cmd 'sleep 31.75' within 2s every 1s"])
    assert r.returncode == 1 and "did not exit 0 within 2s" in r.stdout + r.stderr
    deadline = time.monotonic() + 5
    while processes_of(USER, "sleep 31.75"):  # a probe over SSH without a pty: dsh ends it itself
        assert time.monotonic() < deadline, "the probe was left running on the host"
        time.sleep(0.1)
    r = run_dsh([*ssh_setup.args(), "-c", "@h1 true | await cmd 'test -d /' within 5s | echo after"])
    assert r.returncode == 0 and "h1 | after" in r.stdout, r.stdout + r.stderr

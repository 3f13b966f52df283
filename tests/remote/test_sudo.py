"""sudo with a password (issue 18): asked once per login user, tried on one host,
given to the rest; never stored, never in an argv.

The test users have passwords and a sudoers rule that asks for them every time
(`timestamp_timeout=0`; scripts/system-deps): sudo's cache cannot hide a feed
that does not work.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from tests.conftest import SshSetup, dsh_path
from tests.credentials import PASSWORD, PASSWORD2, sudo_ready
from tests.etcd import Etcd
from tests.sshd import USER, USER2


@pytest.fixture(autouse=True)
def _sudo_rule() -> None:
    assert sudo_ready(), (
        "the test users' passwords and sudo rule are missing: run scripts/system-deps as root"
    )


@pytest.fixture
def config(ssh_setup: SshSetup, tmp_path: Path) -> list[str]:
    """The suite's ssh config, and `other`: the same sshd as the second test user."""
    path = tmp_path / "ssh_config"
    server = ssh_setup.server
    other = server.host_block(["other"], ssh_setup.known_hosts).replace(f"User {USER}\n", f"User {USER2}\n")
    path.write_text(other + ssh_setup.config.read_text())
    return ["--ssh-config", str(path)]
    return config


def _spawn(env: dict[str, str], args: list[str]) -> pexpect.spawn:
    env = {**env, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
    return pexpect.spawn(dsh_path(), args, env=env, dimensions=(24, 120), encoding="utf-8", timeout=40)


def test_one_prompt_for_three_hosts(env: dict[str, str], config: list[str]) -> None:
    child = _spawn(env, [*config, "-c", "@h[1-3] sudo id -u"])
    child.expect(rf"\[sudo\] password for {USER} on h\[1-3\]: ")
    child.sendline(PASSWORD)
    child.expect(pexpect.EOF)
    child.close()
    out = child.before
    assert child.exitstatus == 0, out
    for host in ("h1", "h2", "h3"):
        assert f"{host} | 0\r\n" in out, out
    assert "password for" not in out  # asked once (the one above), never again
    assert PASSWORD not in out


def test_script_with_two_sudo_lines_asks_once(env: dict[str, str], config: list[str], tmp_path: Path) -> None:
    script = tmp_path / "two.dsh"
    script.write_text("@h[1-2] sudo id -u\n@h[1-2] echo x | xargs sudo true\n@h1 echo done $((1+1))\n")
    child = _spawn(env, [*config, str(script)])
    child.expect(r"password for .* on h\[1-2\]: ")
    child.sendline(PASSWORD)
    index = child.expect([r"password for", "done 2"])
    assert index == 1, child.before
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def test_another_login_user_is_asked_apart(env: dict[str, str], config: list[str]) -> None:
    child = _spawn(env, [*config, "-c", "@h1,h2,h3,other sudo id -u"])
    asked = set()
    for _ in range(2):
        child.expect(r"password for (\S+) on (\S+): ")
        user, hosts = child.match.group(1), child.match.group(2)
        asked.add((user, hosts))
        child.sendline(PASSWORD if user == USER else PASSWORD2)
    child.expect(pexpect.EOF)
    child.close()
    assert asked == {(USER, "h[1-3]"), (USER2, "other")}
    assert child.exitstatus == 0, child.before


def test_a_wrong_password_fails_one_host_only(env: dict[str, str], config: list[str]) -> None:
    """The wrong answer is tried on one host (its sudo's words are said), never given
    to the others; they are asked again, and the right answer reaches them."""
    child = _spawn(env, [*config, "-c", "@h[1-3] sudo id -u"])
    child.expect(r"password for .* on h\[1-3\]: ")
    child.sendline("not-the-password")
    child.expect(r"(h[1-3]): the password typed for \S+ is wrong here \(sudo: 1 incorrect password attempt\)")
    failed = child.match.group(1)
    child.expect(r"password for .* on (h\S+): ")
    rest = child.match.group(1)
    assert failed not in rest
    child.sendline(PASSWORD)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1, child.before  # the one host failed
    assert f"{failed} (1)  failed (exit 1)" in child.before, child.before


def _detached(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """dsh with no controlling terminal (a session of its own: cron, CI)."""
    return subprocess.run(
        [dsh_path(), *args], capture_output=True, text=True, env=env, timeout=60, start_new_session=True
    )


def test_no_terminal_fails_at_once_and_says_how(env: dict[str, str], config: list[str]) -> None:
    started = time.monotonic()
    done = _detached(env, *config, "-c", "@h1 sudo id -u")
    assert time.monotonic() - started < 20
    assert done.returncode == 1
    assert "no terminal" in done.stderr and "--askpass PROG or DSH_ASKPASS" in done.stderr


def test_askpass_program_answers(env: dict[str, str], config: list[str], tmp_path: Path) -> None:
    prog = tmp_path / "askpass"
    prog.write_text(f"#!/bin/sh\necho \"$1\" >>{tmp_path}/asked\necho '{PASSWORD}'\n")
    prog.chmod(0o700)
    done = _detached(env, *config, "--askpass", str(prog), "-c", "@h[1-2] sudo id -u")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "asked").read_text() == f"[sudo] password for {USER} on h[1-2]: \n"
    done = _detached({**env, "DSH_ASKPASS": str(prog)}, *config, "-c", "@h1 sudo id -u")
    assert done.returncode == 0, done.stderr


def _holders(secret: bytes) -> list[str]:
    """Processes whose argv or environment holds `secret`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = (proc / part).read_bytes()
            except OSError:
                continue
            if secret in data:
                found.append(f"{proc.name} {part}: {(proc / 'cmdline').read_bytes()[:200]!r}")
    return found


def _files_holding(secret: bytes, *roots: Path) -> list[str]:
    found = []
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    if secret in path.read_bytes():
                        found.append(str(path))
    return found


@pytest.mark.parametrize("store", ["local", "etcd"])
def test_the_password_is_nowhere(env: dict[str, str], config: list[str], tmp_path: Path, store: str) -> None:
    """While sudo commands run (each host asks twice), no process's argv or environment
    holds the password; after, no file of dsh's (state, SQLite and its WAL, spools, logs),
    of the host's spool, or of etcd's data (wal, snap: every revision) does."""
    secret = PASSWORD.encode()
    prog = tmp_path / "askpass"
    prog.write_text(f"#!/bin/sh\necho '{PASSWORD}'\n")
    prog.chmod(0o700)
    server = Etcd().start() if store == "etcd" else None
    try:
        args = [*config, "--askpass", str(prog), "--session", "secrecy"]
        if server is not None:
            args += ["--store", server.url]
        text = "@h[1-3] sudo id -u; sudo true; sleep 0.3\n@h1 sudo true"
        proc = subprocess.Popen(
            [dsh_path(), *args, "-c", text],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        seen: list[str] = []
        while proc.poll() is None:
            seen += _holders(secret)
            time.sleep(0.005)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert out.count(b" | 0\n") == 3, out
        assert seen == []
        home = Path(pwd.getpwnam(USER).pw_dir)
        roots = [tmp_path / "state", home / ".local/state/dsh"]
        if server is not None:
            roots.append(server.root)
            ended = subprocess.run(
                ["etcdctl", f"--endpoints={server.endpoints}", "get", "", "--prefix", "-w", "json"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            revision = json.loads(ended.stdout)["header"]["revision"]
            for rev in range(1, revision + 1):
                every = subprocess.run(
                    ["etcdctl", f"--endpoints={server.endpoints}", "get", "", "--prefix", f"--rev={rev}"],
                    capture_output=True,
                    timeout=30,
                )
                assert secret not in every.stdout, f"revision {rev}"
        assert (tmp_path / "state").exists()
        assert _files_holding(secret, *roots) == []
    finally:
        if server is not None:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)


def _detach(env: dict[str, str], config: list[str], name: str, script: Path) -> None:
    """`dsh run --detach` of `script` as session `name`."""
    started = _detached(env, *config, "run", "--detach", "--session", name, str(script))
    assert started.returncode == 0, started.stderr


def _sessions(env: dict[str, str]) -> str:
    return subprocess.run(
        [dsh_path(), "ls"], capture_output=True, text=True, env=env, timeout=30, start_new_session=True
    ).stdout


def test_a_detached_script_waits_for_input_and_attach_asks(
    env: dict[str, str], config: list[str], tmp_path: Path
) -> None:
    """A detached script's sudo waits (its bound) and shows as waiting for input in
    `dsh ls`; `dsh attach` asks, the answer is used, and the script goes on."""
    script = tmp_path / "s.dsh"
    script.write_text("@h[1-2] sudo id -u | within 60s\n@h1 echo after $((40+2))\n")
    _detach(env, config, "waits", script)
    deadline = time.monotonic() + 20
    while "waiting for input" not in (listed := _sessions(env)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"waiting for input ([sudo] password for {USER} on h[1-2]): dsh attach waits" in listed, listed
    child = _spawn(env, [*config, "attach", "waits"])
    seen = io.StringIO()
    child.logfile_read = seen
    child.expect(rf"\[sudo\] password for {USER} on h\[1-2\]: ")
    child.sendline(PASSWORD)
    child.expect("after 42")
    child.expect("dsh>")
    child.sendeof()
    child.expect(pexpect.EOF)
    assert PASSWORD not in seen.getvalue()  # not echoed, not taken for a line
    log = subprocess.run(
        [dsh_path(), "log", "waits"], capture_output=True, text=True, env=env, timeout=30
    ).stdout
    assert "prompt" in log and "answered" in log, log
    assert PASSWORD not in log


def test_a_takeover_of_a_session_waiting_at_a_prompt_asks_again(
    env: dict[str, str], config: list[str], tmp_path: Path
) -> None:
    """The owner waiting at a sudo prompt dies; the new owner (another machine, on the
    same hosts) follows the command, whose sudo still waits, and asks again."""
    script = tmp_path / "s.dsh"
    script.write_text("@h1 sudo id -u | within 60s\n@h1 echo after $((40+2))\n")
    env = {**env, "DSH_LEASE_TTL": "1"}
    _detach(env, config, "tk", script)
    deadline = time.monotonic() + 20
    while "waiting for input" not in _sessions(env) and time.monotonic() < deadline:
        time.sleep(0.2)
    listed = subprocess.run(
        [dsh_path(), "ls", "--json"], capture_output=True, text=True, env=env, timeout=30
    ).stdout
    (entry,) = [e for e in map(json.loads, listed.splitlines()) if e["name"] == "tk"]
    assert entry["state"] == "waiting", entry
    os.kill(entry["owner_pid"], signal.SIGKILL)  # the answer it would have held dies with it
    child = _spawn({**env, "DSH_MACHINE_ID": "other"}, [*config, "attach", "tk"])
    child.expect(rf"\[sudo\] password for {USER} on h1: ")
    child.sendline(PASSWORD)
    child.expect(r"h1 \| 0|\r\n0\r\n")
    child.expect("after 42")
    child.expect("dsh>")
    child.sendeof()
    child.expect(pexpect.EOF)


def test_a_client_on_another_machine_cannot_answer_and_says_where(
    env: dict[str, str], config: list[str], tmp_path: Path
) -> None:
    script = tmp_path / "s.dsh"
    script.write_text("@h1 sudo id -u | within 30s\n")
    _detach(env, config, "far", script)
    child = _spawn({**env, "DSH_MACHINE_ID": "elsewhere"}, [*config, "attach", "far"])
    child.expect("session far waits for input on the machine that runs it; answer there")
    child.sendcontrol("\\")  # detach: the work goes on
    child.expect(pexpect.EOF)
    near = _spawn(env, [*config, "attach", "far"])  # on its machine, it is asked
    near.expect(rf"\[sudo\] password for {USER} on h1: ")
    near.sendline(PASSWORD)
    near.expect("1 host: 1 ok")
    near.expect("dsh>")
    near.sendeof()
    near.expect(pexpect.EOF)

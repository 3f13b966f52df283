"""Shared fixtures: the installed `dsh` command, a clean environment, temp XDG dirs."""

from __future__ import annotations

import os

# Before anything imports grpc (the etcd client): its fork handlers make a child of a plain
# fork() (pexpect's pty.fork) start a poller that dies on EBADF as the fds are closed before
# the exec, and the child never runs (grpc/grpc#43055). The tests fork after etcd tests ran.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsh.cli.wiring import host_agent_mode
from tests.sshd import USER as SSH_USER
from tests.sshd import Sshd

BIN = Path(sys.executable).parent
#: How this run reaches hosts (scripts/test runs the suite with the host agent on,
#: then the `ssh` tests again with it off): given to every dsh the tests start, and
#: to the fleets they make (`HOST_AGENT`); unset, dsh's own default.
HOST_AGENT_SET = os.environ.get("DSH_HOST_AGENT", "")
HOST_AGENT = host_agent_mode(os.environ)
#: The local spool of in-process tests (claims never meet: executors spool under
#: a name of their own).
SPOOL = Path(tempfile.mkdtemp(prefix="dsh-test-spool-"))
#: Every Python process the tests start records there each "internal error" and
#: traceback it prints (tests/helpers/faultwatch): the test that started it fails.
FAULTS = Path(tempfile.mkdtemp(prefix="dsh-test-faults-"))
os.environ["DSHTEST_FAULTS"] = str(FAULTS)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(__file__).parent / "helpers" / "faultwatch"), os.environ.get("PYTHONPATH")) if p
)


def dsh_path() -> str:
    found = shutil.which("dsh", path=str(BIN)) or shutil.which("dsh")
    assert found, "the dsh command is not installed (pip install -e '.[test]')"
    return found


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with private XDG dirs, no colour, and the venv first on PATH."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("DSH_") and k != "SSH_AUTH_SOCK"}
    if HOST_AGENT_SET:
        e["DSH_HOST_AGENT"] = HOST_AGENT_SET
    e.update(
        {
            "NO_COLOR": "1",
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "PATH": f"{BIN}{os.pathsep}{e.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            # SIGABRT makes a stuck dsh print every thread's stack (see `finish`).
            "PYTHONFAULTHANDLER": "1",
        }
    )
    return e


@pytest.fixture
def run_dsh(env: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run the dsh command; returns the CompletedProcess (text mode)."""

    def run(
        args: Sequence[str],
        *,
        input: str | None = None,
        timeout: float = 30,
        cwd: Path | None = None,
        env_extra: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [dsh_path(), *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env={**env, **(env_extra or {})},
            timeout=timeout,
            cwd=cwd or tmp_path,
        )

    return run


def stop_sleeper(
    env: dict[str, str], marker: str, signals: Sequence[int], *, trap_term: bool = False
) -> tuple[int, str]:
    """Run `command sleep MARKER` under dsh, send it `signals` 0.3 s apart once it
    has started; return dsh's exit status and stderr, after checking that no
    process of that sleep is left."""
    import time

    trap = "trap '' TERM; " if trap_term else ""
    proc = start_dsh(env, ["-c", f"echo started; {trap}command sleep {marker}"])
    try:
        for signum in signals:
            time.sleep(0.3)
            proc.send_signal(signum)
        _out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    time.sleep(0.2)
    assert_no_process(f"sleep {marker}")
    return proc.returncode, err


def start_dsh(env: dict[str, str], args: Sequence[str]) -> subprocess.Popen[str]:
    """Start dsh in the background; return once it has printed its first line,
    which must be `started` (the text given makes sure of it)."""
    proc = subprocess.Popen(
        [dsh_path(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline() == "started\n"
    return proc


def finish(proc: subprocess.Popen[str], timeout: float) -> int:
    """Wait for a dsh started with the `env` fixture and its stderr piped; if it
    does not end within `timeout`, fail with every thread's stack (faulthandler
    prints them on SIGABRT) and what it wrote to stderr."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
        pytest.fail(f"dsh did not end within {timeout:g}s; its stacks and stderr:\n{err}")


def assert_no_process(pattern: str) -> None:
    left = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    assert left.stdout == "", f"left behind: {left.stdout}"


#: Modules whose tests run local actions through both paths (the local agent and the
#: wrapper): marked `local`, and run again with DSH_HOST_AGENT=off by scripts/test.
LOCAL_MODULES = ("test_local.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `ssh` every test that reaches an sshd: the session's, or one of its own;
    and `local` those of LOCAL_MODULES."""
    starts_one: dict[str, bool] = {}
    for item in items:
        path = str(item.path)
        if path not in starts_one:
            starts_one[path] = "Sshd(" in item.path.read_text()
        if "sshd" in getattr(item, "fixturenames", ()) or starts_one[path]:
            item.add_marker(pytest.mark.ssh)
        if item.path.name in LOCAL_MODULES:
            item.add_marker(pytest.mark.local)


@pytest.fixture(scope="session")
def sshd() -> Iterator[Sshd]:
    """A real OpenSSH sshd on loopback, logging in the non-root test user."""
    server = Sshd().start()
    yield server
    server.cleanup()


@dataclass(frozen=True)
class SshSetup:
    """A private ssh config: `h*` and `web*` reach `sshd`; `down` is a closed port."""

    server: Sshd
    config: Path
    known_hosts: Path

    def args(self) -> list[str]:
        return ["--ssh-config", str(self.config)]


@pytest.fixture(scope="session")
def ssh_setup(sshd: Sshd) -> Iterator[SshSetup]:
    d = Path(tempfile.mkdtemp(prefix="dsh-ssh-client-"))
    known = d / "known_hosts"
    known.write_text(sshd.known_hosts_line())
    config = d / "ssh_config"
    # A port bound but not listening refuses connections, and no later server takes it.
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    closed = reserved.getsockname()[1]
    config.write_text(
        sshd.host_block(["h*", "web*"], known)
        + f"Host down\n  HostName 127.0.0.1\n  Port {closed}\n  User {SSH_USER}\n"
        + f"  IdentityFile {sshd.client_key}\n  UserKnownHostsFile {known}\n"
    )
    yield SshSetup(sshd, config, known)
    reserved.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def _remove_the_test_spool() -> Iterator[None]:
    yield
    shutil.rmtree(SPOOL, ignore_errors=True)
    shutil.rmtree(FAULTS, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_internal_error_or_traceback() -> Iterator[None]:
    """Fail a test whose dsh (or any Python it started) printed "internal error" or a
    traceback: exit 70 is for genuine bugs, and no test may hide one."""
    before = set(FAULTS.iterdir())
    yield
    found = sorted(set(FAULTS.iterdir()) - before)
    if found:
        texts = "\n".join(path.read_text(errors="replace")[:2000] for path in found[:3])
        pytest.fail(f"a process printed an internal error or a traceback:\n{texts}", pytrace=False)

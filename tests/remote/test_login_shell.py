"""A host whose login shell is noisy, exits early, or lacks setsid (fault report #15).

A real OpenSSH sshd of this module's own, whose one key is forced through
`command=". DIR/login.sh"`: the test user's shell (/bin/sh) sources the
login.sh a test writes — as bash sources ~/.bashrc for a command over SSH —
before it runs the command asked for (`$SSH_ORIGINAL_COMMAND`: the wrapper's
`sh -s`) if it gets that far.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from dsh.remote import spool
from dsh.remote.base import RemoteUnreachable, Spot
from dsh.remote.ssh import SshFleet
from dsh.remote.sshconfig import SshConfig
from tests.conftest import HOST_AGENT, dsh_path
from tests.sshd import Sshd, user_home

RUN = 'eval "$SSH_ORIGINAL_COMMAND"\n'
NOISE = "echo motd-garbage\necho rc-noise >&2\n"


@dataclass
class Login:
    server: Sshd
    config: Path

    def shell(self, text: str) -> None:
        """What the login shell does before (or instead of) the command."""
        script = self.server.dir / "login.sh"
        script.write_text(text)
        script.chmod(0o644)

    def fleet(self, said: list[str]) -> SshFleet:
        return SshFleet(
            SshConfig.load([self.config]), kill_grace=0.5, warn=said.append, host_agent=HOST_AGENT
        )


@pytest.fixture(scope="module")
def login() -> Iterator[Login]:
    server = Sshd().start()
    try:
        key = Path(f"{server.client_key}.pub").read_text().strip()
        authorized = server.dir / "authorized_keys"
        authorized.write_text(f'command=". {server.dir}/login.sh" {key}\n')
        bin_dir = server.dir / "bin"  # what the wrapper needs, but no setsid, python3 or perl
        bin_dir.mkdir()
        for tool in ("sh", "cat", "sleep", "mkdir", "rm", "tr"):
            found = shutil.which(tool, path="/usr/bin:/bin")
            assert found, tool
            (bin_dir / tool).symlink_to(found)
        bin_dir.chmod(0o755)
        known = server.dir / "known_hosts"
        known.write_text(server.known_hosts_line())
        config = server.dir / "ssh_config"
        config.write_text(server.host_block(["h*"], known))
        yield Login(server, config)
    finally:
        server.cleanup()


def session() -> str:
    return f"test-login.{os.getpid()}.{time.time_ns()}"


def spool_file(spot: Spot, ext: str) -> Path:
    return user_home() / spool.REMOTE_ROOT / spot.session / f"{spot.action}@{spot.alias}.{ext}"


class Collect:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def __call__(self, stream: str, data: bytes) -> None:
        self.data[stream] += data


async def test_F15_login_shell_noise_is_not_output_and_is_said_once_per_host(login: Login) -> None:
    login.shell(NOISE + RUN)
    said: list[str] = []
    fleet = login.fleet(said)
    name = session()
    try:
        for n in (1, 2):
            out = Collect()
            ended = await fleet("h1").run(
                "echo hi; echo err >&2", spot=Spot(name, f"{n}.1.1", "h1"), timeout=10, output=out
            )
            assert ended.outcome == "ok", ended
            assert out.data == {"stdout": b"hi\n", "stderr": b"err\n"}
        assert await fleet("h1").probe(Spot(name, "1.1.1", "h1")) == "status 0"  # not the motd
        check = await fleet("h1").check("echo probe-out", timeout=5)
        assert (check.status, check.out) == (0, b"probe-out\n")
    finally:
        await fleet.close()
    dropped = len(b"motd-garbage\nrc-noise\n")
    assert said == [f"h1: {dropped} bytes before dsh's wrapper started (login shell output) were dropped"]


def test_F15_login_shell_noise_never_reaches_a_binding(login: Login, env: dict[str, str]) -> None:
    login.shell(NOISE + RUN)
    text = 'v = @h1 echo value\necho "[${v.out}]"'
    r = subprocess.run(
        [dsh_path(), "--ssh-config", str(login.config), "-c", text],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "[value]" in r.stdout and "motd-garbage" not in r.stdout + r.stderr
    assert "h1: 22 bytes before dsh's wrapper started (login shell output) were dropped" in r.stderr


async def test_F15_a_login_shell_that_exits_first_started_nothing(login: Login) -> None:
    said: list[str] = []
    fleet = login.fleet(said)
    where = Spot(session(), "1.1.1", "h1")
    marker = f"/tmp/dsh-login-{os.getpid()}-{time.time_ns()}"
    try:
        login.shell("echo 'bash: cannot set terminal process group' >&2\nexit 1\n")
        ended = await fleet("h1").run(f": > {marker}", spot=where, timeout=10, output=(out := Collect()))
        assert (ended.outcome, ended.exit_status) == ("failed", None)
        assert ended.message == (
            "nothing started: the login shell exited 1 before the wrapper ran "
            "(it said: bash: cannot set terminal process group)"
        )
        assert out.data == {"stdout": b"", "stderr": b""}
        assert not spool_file(where, "claim").exists() and not os.path.exists(marker)
        with pytest.raises(RemoteUnreachable, match="the login shell exited 1"):
            await fleet("h1").probe(where)
        login.shell(RUN)  # the shell is fixed: the same action starts (no claim was taken)
        again = await fleet("h1").run(f": > {marker}", spot=where, timeout=10, output=Collect())
        assert again.outcome == "ok", again
        assert os.path.exists(marker)
    finally:
        await fleet.close()
        if os.path.exists(marker):
            os.unlink(marker)
    assert said == []


async def test_F15_a_login_shell_gone_before_the_script_is_written_is_still_failed(
    login: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel may close (exit status 1) before dsh writes the wrapper's script to
    it: the write then fails, and the outcome is still what the exit said (CI saw `lost`)."""
    opened = asyncssh.SSHClientConnection.create_session

    async def late(self: asyncssh.SSHClientConnection, *args: Any, **kw: Any) -> Any:
        chan, sess = await opened(self, *args, **kw)
        await asyncio.wait_for(chan.wait_closed(), 5)  # the shell has exited
        return chan, sess

    monkeypatch.setattr(asyncssh.SSHClientConnection, "create_session", late)
    login.shell("echo 'bash: cannot set terminal process group' >&2\nexit 1\n")
    fleet = login.fleet([])
    where = Spot(session(), "1.1.1", "h1")
    try:
        ended = await fleet("h1").run("echo never", spot=where, timeout=10, output=(out := Collect()))
        with pytest.raises(RemoteUnreachable, match="the login shell exited 1"):
            await fleet("h1").probe(where)  # a short exec: not "cannot ask the spool: Channel not open"
        check = await fleet("h1").check("true", timeout=5)
    finally:
        await fleet.close()
    assert (ended.outcome, ended.exit_status) == ("failed", None), ended
    assert ended.message.startswith("nothing started: the login shell exited 1 before the wrapper ran")
    assert out.data == {"stdout": b"", "stderr": b""}
    assert (check.status, check.message) == (None, "the login shell exited 1 before the probe ran")


async def test_F15_no_setsid_on_the_host_claims_nothing(login: Login) -> None:
    login.shell(f"PATH={login.server.dir}/bin; export PATH\n" + RUN)
    fleet = login.fleet([])
    where = Spot(session(), "1.1.1", "h1")
    try:
        ended = await fleet("h1").run("echo never", spot=where, timeout=10, output=(out := Collect()))
    finally:
        await fleet.close()
    assert (ended.outcome, ended.exit_status) == ("failed", None)
    assert ended.message == "nothing started: no setsid on h1 (nor python3 or perl to start a session with)"
    assert out.data == {"stdout": b"", "stderr": b""}
    assert not spool_file(where, "claim").exists()

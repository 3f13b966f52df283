"""SshFleet in-process against a real OpenSSH sshd: the claim, reuse, kills, ProxyJump."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from dsh.remote.base import Spot
from dsh.remote.ssh import SshFleet
from dsh.remote.sshconfig import SshConfig
from tests.conftest import HOST_AGENT, SshSetup
from tests.sshd import USER, kill_user_processes, processes_of


class Collect:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def __call__(self, stream: str, data: bytes) -> None:
        self.data[stream] += data


def spot(action: str, alias: str = "h1") -> Spot:
    return Spot(f"test-ssh.{os.getpid()}", action, alias)


@pytest.fixture
async def fleet(ssh_setup: SshSetup):  # type: ignore[no-untyped-def]
    f = SshFleet(SshConfig.load([ssh_setup.config]), kill_grace=0.5, host_agent=HOST_AGENT)
    yield f
    await f.close()


async def test_the_claim_refuses_a_second_start(fleet: SshFleet) -> None:
    mark = f"/tmp/dsh-claim-{os.getpid()}-{time.time_ns()}"
    where = spot(f"{time.time_ns()}.1.1")
    first = await fleet("h1").run(f"echo x >> {mark}", spot=where, timeout=10, output=Collect())
    again = await fleet("h1").run(f"echo x >> {mark}", spot=where, timeout=10, output=(out := Collect()))
    assert first.outcome == "ok"
    assert again.outcome == "lost" and "started before" in again.message
    assert out.data["stderr"] == b""  # the wrapper's refusal is the outcome, not output
    assert Path(mark).read_text() == "x\n"
    os.unlink(mark)


async def test_one_connection_per_host_is_reused(fleet: SshFleet) -> None:
    for n in range(3):
        ex = await fleet("h1").run("true", spot=spot(f"{time.time_ns()}.{n}.1"), timeout=10, output=Collect())
        assert ex.outcome == "ok"
    assert len(fleet._conns) == 1


async def test_a_command_cancelled_is_killed_on_the_host(fleet: SshFleet) -> None:
    marker = "sleep 32.25"
    task = asyncio.ensure_future(
        fleet("h2").run(marker, spot=spot(f"{time.time_ns()}.1.1", "h2"), timeout=60, output=Collect())
    )
    try:
        deadline = time.monotonic() + 10
        while not processes_of(USER, marker) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert processes_of(USER, marker)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert processes_of(USER, marker) == {}
    finally:
        kill_user_processes(USER, marker)


async def test_output_streams_and_exit_status(fleet: SshFleet) -> None:
    out = Collect()
    ex = await fleet("h3").run(
        "echo out; echo err >&2; exit 4", spot=spot(f"{time.time_ns()}.1.1", "h3"), timeout=10, output=out
    )
    assert (ex.outcome, ex.exit_status) == ("failed", 4)
    assert out.data == {"stdout": b"out\n", "stderr": b"err\n"}


async def test_proxy_jump_reaches_a_host_behind_another(ssh_setup: SshSetup, tmp_path: Path) -> None:
    server = ssh_setup.server
    config = tmp_path / "ssh_config"
    config.write_text(
        ssh_setup.config.read_text() + server.host_block(["behind"], ssh_setup.known_hosts, ProxyJump="h9")
    )
    fleet = SshFleet(SshConfig.load([config]), host_agent=HOST_AGENT)
    try:
        out = Collect()
        ex = await fleet("behind").run(
            "echo $SSH_CLIENT", spot=spot(f"{time.time_ns()}.1.1", "behind"), timeout=10, output=out
        )
        assert ex.outcome == "ok", ex
        assert out.data["stdout"].startswith(b"127.0.0.1 ")
        assert len(fleet._conns) == 2  # the jump host's connection, and the one through it
    finally:
        await fleet.close()


async def test_unreachable_within_the_connect_timeout(ssh_setup: SshSetup) -> None:
    fleet = SshFleet(SshConfig.load([ssh_setup.config]), connect_timeout=2, host_agent=HOST_AGENT)
    try:
        ex = await fleet("down").run("true", spot=spot("1.1.1", "down"), timeout=10, output=Collect())
        assert ex.outcome == "unreachable" and ex.seconds < 3
    finally:
        await fleet.close()


async def test_a_session_that_cleans_removes_old_spools_on_its_hosts(ssh_setup: SshSetup) -> None:
    import itertools
    import pwd

    from dsh.remote import spool as spool_module
    from tests.sshd import user_home

    stamp = time.time_ns()  # spools on the test host outlive test runs: a name of its own
    name = next(n for n in (f"clean{stamp}-{i}" for i in itertools.count()) if spool_module.cleans(n))
    root = user_home() / ".local/state/dsh/spool"
    old = root / f"old-{time.time_ns()}"
    old.mkdir(parents=True)
    account = pwd.getpwnam(USER)
    os.chown(old, account.pw_uid, account.pw_gid)
    month_ago = time.time() - 30 * 86400
    os.utime(old, (month_ago, month_ago))
    fleet = SshFleet(SshConfig.load([ssh_setup.config]), host_agent=HOST_AGENT)
    try:
        ex = await fleet("h1").run("true", spot=Spot(name, "1.1.1", "h1"), timeout=10, output=Collect())
        assert ex.outcome == "ok"
    finally:
        await fleet.close()  # waits (bounded) for the cleaning it started
    assert not old.exists()
    assert list(root.glob(f"{name}*"))  # this session's own spool stays

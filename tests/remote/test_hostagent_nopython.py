"""A host without python3: with the host agent on (eager), its actions go through
the sh wrapper, silently, and run as anywhere else."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsh.remote.base import Spot
from dsh.remote.ssh import SshFleet
from dsh.remote.sshconfig import SshConfig
from tests.sshd import Sshd

#: Agent-only: its fleets set their mode, so scripts/test's off pass skips it.
pytestmark = pytest.mark.agent

#: What the wrapper runs on a host (no python3 among them).
TOOLS = ("sh", "setsid", "sleep", "cat", "mkdir", "rm", "mv", "chmod", "mkfifo", "find", "env", "id")


def _tools_host(alias: str, python3: str | None) -> Iterator[Path]:
    """An sshd whose sessions' PATH has the wrapper's tools, and python3 only as the
    script `python3` (none if None); the ssh config that reaches it as `alias`."""
    home = Path(tempfile.mkdtemp(prefix="dsh-nopython-"))  # the test user reads it (pytest's: not)
    home.chmod(0o755)
    tools = home / "tools"
    tools.mkdir(mode=0o755)
    for name in TOOLS:
        found = shutil.which(name)
        assert found, f"{name} is missing here"
        (tools / name).symlink_to(found)
    if python3 is not None:
        (tools / "python3").write_text(python3)
        (tools / "python3").chmod(0o755)
    server = Sshd(config=[f"SetEnv PATH={tools}"]).start()
    try:
        known = tools.parent / "known_hosts"
        known.write_text(server.known_hosts_line())
        config = tools.parent / "ssh_config"
        config.write_text(server.host_block([alias], known))
        yield config
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def bare() -> Iterator[Path]:
    """A host without python3."""
    yield from _tools_host("bare", None)


@pytest.fixture(scope="module")
def hung() -> Iterator[Path]:
    """A host whose python3 never answers the agent's boot (it reads until its channel closes)."""
    yield from _tools_host("hung", f"#!{shutil.which('sh')}\nexec cat >/dev/null\n")


class Output:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def __call__(self, stream: str, data: bytes) -> None:
        self.data[stream] += data


async def test_a_host_without_python3_runs_its_actions_through_the_wrapper_silently(bare: Path) -> None:
    said: list[str] = []
    fleet = SshFleet(SshConfig.load([bare]), kill_grace=0.5, host_agent="eager", warn=said.append)
    session = f"test-nopython.{os.getpid()}.{time.time_ns()}"
    try:
        conn = await fleet.connection("bare")
        assert await fleet.link("bare", conn) is None  # no python3: no agent
        for n in (1, 2):
            out = Output()
            spot = Spot(session, f"1.{n}.1", "bare")
            done = await fleet("bare").run(
                "command -v python3 || echo none; echo $((40+n))",
                spot=spot,
                timeout=20,
                output=out,
                env={"n": str(n)},
            )
            assert done.outcome == "ok", (done, out.data)
            assert out.data["stdout"] == f"none\n{40 + n}\n".encode()
            assert await fleet("bare").probe(spot) == "status 0"
    finally:
        await fleet("bare").remove(session)
        await fleet.close()
    assert said == []  # nothing to say: the wrapper is how such a host is reached


async def test_an_agent_boot_that_hangs_takes_at_most_half_the_actions_time(hung: Path) -> None:
    """Eager: the first action waits for the agent's boot at most half its timeout, then
    runs through the wrapper in what is left; the whole within the timeout (its wait was
    once outside it: a hung boot made `within 6s` take 6 s, then the command)."""
    fleet = SshFleet(SshConfig.load([hung]), kill_grace=0.5, host_agent="eager", connect_timeout=20)
    session = f"test-hungboot.{os.getpid()}.{time.time_ns()}"
    try:
        await fleet.connection("hung")
        out = Output()
        spot = Spot(session, "1.1.1", "hung")
        started = time.monotonic()
        done = await fleet("hung").run("echo through the wrapper", spot=spot, timeout=6, output=out)
        took = time.monotonic() - started
        assert done.outcome == "ok", (done, out.data)
        assert out.data["stdout"] == b"through the wrapper\n"
        assert 3 <= took < 6, f"the action took {took:.2f}s of its 6s"
    finally:
        await fleet("hung").remove(session)
        await fleet.close()

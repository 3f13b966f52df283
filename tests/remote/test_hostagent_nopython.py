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


@pytest.fixture(scope="module")
def bare() -> Iterator[Path]:
    """An sshd whose sessions' PATH has the wrapper's tools and no python3; its ssh config."""
    home = Path(tempfile.mkdtemp(prefix="dsh-nopython-"))  # the test user reads it (pytest's: not)
    home.chmod(0o755)
    tools = home / "tools"
    tools.mkdir(mode=0o755)
    for name in TOOLS:
        found = shutil.which(name)
        assert found, f"{name} is missing here"
        (tools / name).symlink_to(found)
    server = Sshd(config=[f"SetEnv PATH={tools}"]).start()
    try:
        known = tools.parent / "known_hosts"
        known.write_text(server.known_hosts_line())
        config = tools.parent / "ssh_config"
        config.write_text(server.host_block(["bare"], known))
        yield config
    finally:
        server.cleanup()
        shutil.rmtree(home, ignore_errors=True)


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

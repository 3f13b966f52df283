"""A sudo's prompt answered through the host agent (REPLY, the wrapper's ANSWER):
the same helper, FIFO and files; the answer never in an argv or a file."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from dsh.remote.askpass import Ask
from dsh.remote.base import Asks, Remote, Spot
from dsh.remote.ssh import SshFleet
from dsh.remote.sshconfig import SshConfig
from tests.conftest import SshSetup
from tests.credentials import PASSWORD, sudo_ready

#: Agent-only: its fleets set their mode, so scripts/test's off pass skips it.
pytestmark = pytest.mark.agent


@pytest.fixture(autouse=True)
def _sudo_rule() -> None:
    assert sudo_ready(), "the test users' passwords and sudo rule are missing: run scripts/system-deps"


class Output:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def __call__(self, stream: str, data: bytes) -> None:
        self.data[stream] += data


def answering(answer: str, given: list[bool], tasks: list[asyncio.Task[None]]) -> Asks:
    """Asks that answer every sudo with `answer`, through the remote that asked."""
    asks = Asks()

    def sink(remote: Remote, spot: Spot, ask: Ask, deadline: float) -> None:
        async def give() -> None:
            given.append(await remote.answer(spot, ask.id, answer))

        if not ask.wrong:
            tasks.append(asyncio.ensure_future(give()))

    asks.sink = sink
    return asks


@pytest.mark.parametrize(("answer", "ok"), [(PASSWORD, True), ("not-the-password", False)])
async def test_a_sudo_prompt_is_answered_through_the_agent(
    ssh_setup: SshSetup, answer: str, ok: bool
) -> None:
    given: list[bool] = []
    tasks: list[asyncio.Task[None]] = []
    fleet = SshFleet(
        SshConfig.load([ssh_setup.config]),
        kill_grace=0.5,
        host_agent="eager",
        asks=answering(answer, given, tasks),
    )
    spot = Spot(f"test-agent-sudo.{os.getpid()}.{time.time_ns()}", "1.1.1", "h1")
    out = Output()
    try:
        conn = await fleet.connection("h1")
        link = await fleet.link("h1", conn)
        assert link is not None
        sent = link.sent
        done = await fleet("h1").run("sudo -k id -u", spot=spot, timeout=20, output=out)
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        # its LAUNCH and each REPLY went to the agent: no exec carried an answer
        assert link.sent == sent + 1 + len(given), given
    finally:
        await fleet("h1").remove(spot.session)
        await fleet.close()
    assert given and given[0] is True, given  # the helper waited, and was given the line
    if ok:
        assert done.outcome == "ok", (done, out.data)
        assert out.data["stdout"] == b"0\n"
    else:
        assert done.outcome == "failed", (done, out.data)
        assert b"0\n" not in out.data["stdout"]
    assert answer.encode() not in out.data["stdout"] + out.data["stderr"]

"""The host agent over SSH (issue 22): actions launched through it against the test
sshd, with the wrapper's outcomes, and the wrapper of another owner reading its
spool (probe, follow, kill) as it reads its own."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from dsh.remote import hostboot
from dsh.remote.base import Gate, Spot
from dsh.remote.hostlink import HostLink
from dsh.remote.ssh import SshFleet
from dsh.remote.sshconfig import SshConfig
from tests.conftest import SshSetup
from tests.sshd import USER, kill_user_processes, processes_of, user_home

#: Agent-only: its fleets set their mode, so scripts/test's off pass skips it.
pytestmark = pytest.mark.agent


class Collect:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def __call__(self, stream: str, data: bytes) -> None:
        self.data[stream] += data


def fleet(ssh_setup: SshSetup, mode: str, said: list[str] | None = None) -> SshFleet:
    warn = said.append if said is not None else None
    return SshFleet(SshConfig.load([ssh_setup.config]), kill_grace=0.5, host_agent=mode, warn=warn)


def spot(action: str = "1.1.1") -> Spot:
    return Spot(f"test-agent.{os.getpid()}.{time.time_ns()}", action, "h1")


def agents() -> dict[int, str]:
    """The agents (and their keepers) running on the test host."""
    return processes_of(USER, "dsh-agent dsh-spool-")


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(") ")[2].split()[1])


async def test_an_action_through_the_agent_ends_as_through_the_wrapper(ssh_setup: SshSetup) -> None:
    said: list[str] = []
    on, off = fleet(ssh_setup, "eager", said), fleet(ssh_setup, "off")
    try:
        results = []
        for remote in (on, off):
            out = Collect()
            ended = await remote("h1").run(
                "echo hi; echo err >&2; exit 3", spot=spot(), timeout=10, output=out
            )
            results.append((ended.outcome, ended.exit_status, out.data))
        assert results[0] == results[1] == ("failed", 3, {"stdout": b"hi\n", "stderr": b"err\n"})
        conn = await on.connection("h1")
        assert await on.link("h1", conn) is not None  # it went through the agent
        assert agents(), "no agent runs on the host"
        again = await on("h1").run("echo two", spot=spot("2.1.1"), timeout=10, output=(out := Collect()))
        assert (again.outcome, out.data["stdout"]) == ("ok", b"two\n")
    finally:
        await on.close()
        await off.close()
    assert said == []


async def test_the_wrapper_of_another_owner_probes_and_follows_what_the_agent_launched(
    ssh_setup: SshSetup,
) -> None:
    on, off = fleet(ssh_setup, "eager"), fleet(ssh_setup, "off")
    where = spot()
    try:
        task = asyncio.ensure_future(
            on("h1").run("echo begun; sleep 2; echo done", spot=where, timeout=20, output=Collect())
        )
        deadline = time.monotonic() + 10
        while await off("h1").probe(where) == "none":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert await off("h1").probe(where) == "alive"
        followed = await off("h1").follow(where, timeout=20, output=(out := Collect()))
        assert (followed.outcome, out.data["stdout"]) == ("ok", b"begun\ndone\n")
        first = await task
        assert first.outcome == "ok"
        assert await off("h1").probe(where) == "status 0"
    finally:
        await on.close()
        await off.close()


async def test_a_timeout_through_the_agent_is_killed_and_nothing_is_left(ssh_setup: SshSetup) -> None:
    marker = f"sleep 31.{os.getpid() % 1000}"
    on = fleet(ssh_setup, "eager")
    try:
        ended = await on("h1").run(marker, spot=spot(), timeout=1, output=Collect())
        assert ended.outcome == "timeout", ended
        assert processes_of(USER, marker) == {}
    finally:
        await on.close()
        kill_user_processes(USER, marker)


async def test_the_agent_dying_mid_command_leaves_it_running_and_followed_once(ssh_setup: SshSetup) -> None:
    mark = f"/tmp/dsh-agent-death-{os.getpid()}-{time.time_ns()}"
    on = fleet(ssh_setup, "eager")
    try:
        task = asyncio.ensure_future(
            on("h1").run(
                f"echo x >> {mark}; sleep 2; echo finished",
                spot=spot(),
                timeout=20,
                output=(out := Collect()),
            )
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(mark):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        link = await on.link("h1", await on.connection("h1"))
        assert link is not None
        found = processes_of(USER, f"dsh-agent {link.tag}")  # this test's agent and its keeper
        assert len(found) == 2, found
        # the agent alone (the keeper's parent is its agent): the keeper goes on. Parents are
        # read first: once the agent is dead, its keeper's parent is another process
        (agent,) = [pid for pid in found if parent(pid) not in found]
        os.kill(agent, 9)
        ended = await task
        assert ended.outcome == "ok", ended
        assert out.data["stdout"] == b"finished\n"
        with open(mark) as f:
            assert f.read() == "x\n"  # once
    finally:
        await on.close()
        if os.path.exists(mark):
            os.unlink(mark)


async def test_the_agent_probes_and_follows_what_the_wrapper_launched(ssh_setup: SshSetup) -> None:
    on, off = fleet(ssh_setup, "eager"), fleet(ssh_setup, "off")
    where = spot()
    try:
        task = asyncio.ensure_future(
            off("h1").run("echo begun; sleep 2; echo done", spot=where, timeout=20, output=Collect())
        )
        deadline = time.monotonic() + 10
        while await on("h1").probe(where) == "none":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        assert await on("h1").probe(where) == "alive"
        followed = await on("h1").follow(where, timeout=20, output=(out := Collect()))
        assert (followed.outcome, out.data["stdout"]) == ("ok", b"begun\ndone\n")
        assert (await task).outcome == "ok"
        assert await on("h1").probe(where) == "status 0"
        conn = await on.connection("h1")
        link = await on.link("h1", conn)
        assert link is not None and link.sent >= 4  # the probes and the follow went to the agent
    finally:
        await on.close()
        await off.close()


async def test_auto_boots_the_agent_while_the_session_waits_and_the_next_line_uses_it(
    ssh_setup: SshSetup,
) -> None:
    """auto: the first action goes through the wrapper (the cold line pays nothing for
    the agent); `idle` (the session waits for its next line) boots it; the next uses it."""
    auto = fleet(ssh_setup, "auto")
    try:
        where = spot()
        first = await auto("h1").run("echo one", spot=where, timeout=10, output=(out := Collect()))
        assert (first.outcome, out.data["stdout"]) == ("ok", b"one\n")
        conn = await auto.connection("h1")
        assert await auto.link("h1", conn) is None  # not booted by an action
        auto.idle()
        deadline = time.monotonic() + 15
        while (link := await auto.link("h1", conn)) is None:
            assert time.monotonic() < deadline, "the agent never came up"
            await asyncio.sleep(0.05)
        # it was warmed as it booted (hostops.warm): a LAUNCH of `:` in the session's spool
        assert link.sent == 1
        (warmed,) = (user_home(USER) / ".local/state/dsh/spool" / where.session).glob("warm-*@h1.status")
        assert warmed.read_text() == "0\n"
        sent = link.sent
        second = await auto("h1").run("echo two", spot=spot("2.1.1"), timeout=10, output=(out := Collect()))
        assert (second.outcome, out.data["stdout"]) == ("ok", b"two\n")
        assert link.sent == sent + 1  # its LAUNCH
    finally:
        await auto.close()


async def test_an_agent_that_died_is_booted_again_while_the_session_waits(ssh_setup: SshSetup) -> None:
    """auto: an agent killed on the host (its connection alive) leaves the next line to the
    wrapper, and the wait before the line after boots a new one, which that line uses."""
    auto = fleet(ssh_setup, "auto")
    try:
        conn = await auto.connection("h1")

        async def up(old: object = None) -> HostLink:
            auto.idle()
            deadline = time.monotonic() + 15
            while (link := await auto.link("h1", conn)) is None or link is old:
                assert time.monotonic() < deadline, "no agent came up"
                await asyncio.sleep(0.05)
            return link

        first = await auto("h1").run("echo one", spot=spot(), timeout=10, output=Collect())
        assert first.outcome == "ok"
        link = await up()
        found = processes_of(USER, f"dsh-agent {link.tag}")
        (agent,) = [pid for pid in found if parent(pid) not in found]
        os.kill(agent, 9)
        deadline = time.monotonic() + 10
        while link.alive:
            assert time.monotonic() < deadline, "the link never saw its agent die"
            await asyncio.sleep(0.05)
        second = await auto("h1").run("echo two", spot=spot("2.1.1"), timeout=10, output=(out := Collect()))
        assert (second.outcome, out.data["stdout"]) == ("ok", b"two\n")  # through the wrapper
        again = await up(link)
        assert again.alive and again.tag != link.tag
        sent = again.sent
        third = await auto("h1").run("echo three", spot=spot("3.1.1"), timeout=10, output=(out := Collect()))
        assert (third.outcome, out.data["stdout"]) == ("ok", b"three\n")
        assert again.sent == sent + 1  # its LAUNCH went to the new agent
    finally:
        await auto.close()


async def test_a_session_that_ends_while_agents_boot_says_nothing_of_them(
    ssh_setup: SshSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A boot that python3 answered but that has not said HELLO yet (a stage 2 that
    takes its time, here) is cut short by the session's end: nothing to say."""
    slow = b"import time\ntime.sleep(8)\n"  # then it ends: its channel is closed by then
    monkeypatch.setattr(hostboot, "stage2", lambda magic, z: (len(slow) + 1).to_bytes(4, "big") + b"s" + slow)
    said: list[str] = []
    auto = fleet(ssh_setup, "auto", said)
    try:
        ran = await auto("h1").run("true", spot=spot(), timeout=10, output=Collect())
        assert ran.outcome == "ok"
        before = set(agents())
        auto.idle()
        deadline = time.monotonic() + 10
        while not set(agents()) - before:  # its python3 runs: it answered the boot
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        await auto.close()
    await asyncio.sleep(0.2)
    assert said == []


HOSTILE = b"""import os, struct
def frame(kind, rid, *fields):
    body = bytes([kind]) + struct.pack("!I", rid) + b"".join(struct.pack("!I", len(f)) + f for f in fields)
    os.write(1, struct.pack("!I", len(body)) + body)
frame(64, 0, b"1", b"1", b"1", b"boot", b"3.11.2", b"/", b"")
while True:
    head = os.read(0, 9)
    if not head:
        break
    size, kind, rid = struct.unpack("!IBI", head[:9])
    os.read(0, size - 5)
    frame(65, rid, b"\\x1b]0;owned\\x07 out")
    frame(68, rid, b"not a number")
"""


async def test_a_hostile_agent_gets_no_word_taken_and_no_traceback(
    ssh_setup: SshSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that answers the boot with an agent of its own making: an ENDED that is
    not a status breaks the link; the action is not taken as ended (nothing of it is
    in the spool: lost, never started again), and dsh says why in a sentence."""
    monkeypatch.setattr(
        hostboot, "stage2", lambda magic, z: (len(HOSTILE) + 1).to_bytes(4, "big") + b"s" + HOSTILE
    )
    on = fleet(ssh_setup, "eager")
    try:
        ended = await on("h1").run("echo hi", spot=spot(), timeout=10, output=(out := Collect()))
    finally:
        await on.close()
    assert ended.outcome == "lost", ended
    assert "it broke the protocol: ENDED: field 0 is not a number" in ended.message
    assert out.data["stdout"] == b"\x1b]0;owned\x07 out"  # a host's bytes, as any output (shown neutralised)


def hostile(ended: bytes) -> bytes:
    return HOSTILE.replace(b'b"not a number"', repr(ended).encode())


@pytest.mark.parametrize("status", [b"-7", b"256", b"5-", b"--3", b"9" * 5000])
async def test_an_ended_that_is_no_exit_status_is_not_taken(
    ssh_setup: SshSetup, monkeypatch: pytest.MonkeyPatch, status: bytes
) -> None:
    """Review 22 #4: `5-`, `--3` or 5000 digits escaped as a ValueError; -7 or 256
    were taken as a command's exit status."""
    stage = hostile(status)
    monkeypatch.setattr(
        hostboot, "stage2", lambda magic, z: (len(stage) + 1).to_bytes(4, "big") + b"s" + stage
    )
    on = fleet(ssh_setup, "eager")
    try:
        ended = await on("h1").run("echo hi", spot=spot(), timeout=10, output=Collect())
    finally:
        await on.close()
    assert ended.outcome == "lost" and "it broke the protocol" in ended.message, ended


async def test_output_that_fails_stops_the_command_through_the_agent(ssh_setup: SshSetup) -> None:
    """Review 22 #3: dsh's own output failing (stdout closed under `| head`) left the
    command running on the host until its backstop."""

    class Failing(Collect):
        def __call__(self, stream: str, data: bytes) -> None:
            raise BrokenPipeError(32, "Broken pipe")

    marker = f"sleep 42.{os.getpid() % 1000}"
    on = fleet(ssh_setup, "eager")
    try:
        with pytest.raises(BrokenPipeError):
            await on("h1").run(f"echo a; {marker}", spot=spot(), timeout=20, output=Failing())
        assert processes_of(USER, marker) == {}
    finally:
        await on.close()
        kill_user_processes(USER, marker)


async def test_a_link_lost_mid_command_with_the_host_out_of_reach_is_lost_not_unreachable(
    ssh_setup: SshSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 22 #1: the command ran, so `unreachable` ("nothing ran") would invite
    running it again: as through the wrapper, it is `lost`."""
    from dsh.remote.base import RemoteUnreachable

    mark = f"/tmp/dsh-agent-unreach-{os.getpid()}-{time.time_ns()}"
    on = fleet(ssh_setup, "eager")
    try:
        task = asyncio.ensure_future(
            on("h1").run(f"echo ran > {mark}; sleep 2", spot=spot(), timeout=10, output=Collect())
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(mark):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        conn = await on.connection("h1")

        async def down(alias: str) -> None:
            raise RemoteUnreachable("unreachable", "no route to host")

        monkeypatch.setattr(on, "connection", down)
        conn.abort()
        ended = await asyncio.wait_for(task, 20)
        assert ended.outcome == "lost", ended
    finally:
        monkeypatch.undo()
        await on.close()
        if os.path.exists(mark):
            os.unlink(mark)


async def test_a_command_too_large_for_the_agent_goes_through_the_wrapper(ssh_setup: SshSetup) -> None:
    """Review 22 #7: a command over the frame bound escaped as a ValueError; one over
    MAX_COMMAND goes through the wrapper, which says what the host makes of it."""
    big = f"printf %s '{'x' * (200 * 1024)}' | wc -c"
    results = []
    for mode in ("eager", "off"):
        remote = fleet(ssh_setup, mode)
        try:
            ended = await remote("h1").run(big, spot=spot(), timeout=20, output=(out := Collect()))
            results.append((ended.outcome, ended.exit_status, out.data["stdout"]))
        finally:
            await remote.close()
    assert results[0] == results[1], results


async def test_an_eager_boot_is_bounded_by_the_actions_time(
    ssh_setup: SshSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 22 #10: a boot that never says HELLO held an action with a 1 s timeout for
    the whole connect timeout (three times over)."""
    slow = b"import time\ntime.sleep(8)\n"
    monkeypatch.setattr(hostboot, "stage2", lambda magic, z: (len(slow) + 1).to_bytes(4, "big") + b"s" + slow)
    on = SshFleet(SshConfig.load([ssh_setup.config]), kill_grace=0.5, host_agent="eager", connect_timeout=3)
    try:
        await on.connection("h1")
        started = time.monotonic()
        ended = await on("h1").run("echo quick", spot=spot(), timeout=1, output=Collect())
        took = time.monotonic() - started
    finally:
        await on.close()
    assert took < 2.5, took
    assert ended.outcome in ("ok", "timeout"), ended  # through the wrapper, in what was left


async def test_the_boots_hello_is_found_after_noise_that_ends_no_line() -> None:
    """Review 22 #11: a login shell's title escape or `Last login…` without a newline
    hid the hello; the host then stayed on the wrapper after the whole timeout."""
    from dsh.remote.hostlink import HostLink

    link = HostLink("dsh-spool-0123456789abcdef")
    link.received(b"\x1b]0;user@host\x07Last login: today")
    link.received(b"dsh-spool-0123456789abcdef agent0 3.11.2 a70d0d0a 1\n")
    assert link.hello0.done() and link.hello0.result() == hostboot.Hello0("3.11.2", "a70d0d0a", True)
    assert link.dropped == len(b"\x1b]0;user@host\x07Last login: today")


def test_a_launch_never_shows_its_secrets() -> None:
    from dsh.remote.hostops import Launch

    job = Launch("/r", "s", "1.1.1", "h1", 10, "true", 2, "TOKEN=hunter2", False, False)
    assert "hunter2" not in repr(job)


DIES = b"""import os, struct
fields = (b"1", b"1", b"1")
body = bytes([64]) + struct.pack("!I", 0) + b"".join(struct.pack("!I", len(f)) + f for f in fields)
os.write(1, struct.pack("!I", len(body)) + body)
os.read(0, 4)  # a request begins: the agent dies before anything of it is done
os._exit(0)
"""


async def test_an_agent_that_dies_before_a_launch_reaches_it_leaves_it_to_the_wrapper(
    ssh_setup: SshSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review 22 #2: nothing ran and nothing was claimed, so the action is no `lost`:
    the wrapper's PROBE says `none` and the wrapper launches it, once."""
    monkeypatch.setattr(hostboot, "stage2", lambda magic, z: (len(DIES) + 1).to_bytes(4, "big") + b"s" + DIES)
    mark = f"/tmp/dsh-agent-relaunch-{os.getpid()}-{time.time_ns()}"
    on = fleet(ssh_setup, "eager")
    try:
        ended = await on("h1").run(
            f"echo once >> {mark}; echo out", spot=spot(), timeout=10, output=(out := Collect())
        )
    finally:
        await on.close()
    try:
        assert (ended.outcome, out.data["stdout"]) == ("ok", b"out\n"), ended
        with open(mark) as f:
            assert f.read() == "once\n"
    finally:
        if os.path.exists(mark):
            os.unlink(mark)


async def test_commands_get_the_locale_the_wrapper_gives_them(ssh_setup: SshSetup) -> None:
    """Review 22 #6: python3 in a C locale sets LC_CTYPE=C.UTF-8 in its own environment
    (PEP 538); the agent's commands must not inherit it (sort, ls would differ)."""
    seen = []
    for mode in ("off", "eager"):
        remote = fleet(ssh_setup, mode)
        try:
            cmd = 'echo "${LC_CTYPE-unset} ${LANG-unset}"'
            ended = await remote("h1").run(cmd, spot=spot(), timeout=10, output=(out := Collect()))
            assert ended.outcome == "ok", ended
            seen.append(out.data["stdout"])
        finally:
            await remote.close()
    assert seen[0] == seen[1], seen


async def test_what_a_command_says_as_its_timeout_ends_it_is_shown_as_through_the_wrapper(
    ssh_setup: SshSetup,
) -> None:
    """Review 22 #9: output printed after the timeout's TERM (a trap's last words) was
    dropped through the agent."""
    seen = []
    for mode in ("off", "eager"):
        remote = fleet(ssh_setup, mode)
        try:
            cmd = "trap 'echo cleanup; exit 1' TERM; echo begun; sleep 10 & wait"
            ended = await remote("h1").run(cmd, spot=spot(), timeout=1, output=(out := Collect()))
            seen.append((ended.outcome, out.data["stdout"]))
        finally:
            await remote.close()
    assert seen[0] == seen[1] == ("timeout", b"begun\ncleanup\n"), seen


async def _booted(fleet: SshFleet, alias: str) -> None:
    conn = await fleet.connection(alias)
    deadline = time.monotonic() + 15
    while (await fleet.link(alias, conn)) is None:
        assert time.monotonic() < deadline, "the agent never came up"
        await asyncio.sleep(0.05)


async def test_an_agent_booted_once_the_lease_is_lost_is_not_warmed(ssh_setup: SshSetup) -> None:
    """The gate shut while the agent boots (the lease lost): its warm-up launches
    nothing (remotes launch nothing more), not even `:`."""
    gate = Gate()
    auto = SshFleet(SshConfig.load([ssh_setup.config]), kill_grace=0.5, host_agent="auto", gate=gate)
    try:
        where = spot()
        assert (await auto("h1").run("true", spot=where, timeout=10, output=Collect())).outcome == "ok"
        auto.idle()
        gate.close()
        await _booted(auto, "h1")
        assert list((user_home(USER) / ".local/state/dsh/spool" / where.session).glob("warm-*")) == []
    finally:
        await auto.close()


async def test_an_agent_on_a_host_that_only_ran_a_check_is_not_warmed(ssh_setup: SshSetup) -> None:
    """A host whose connection only answered a check (`await cmd`) has no spool of the
    session (nothing `dsh rm` would clean there): its agent's warm-up leaves none."""
    auto = fleet(ssh_setup, "auto")
    try:
        where = spot()
        assert (await auto("h1").run("true", spot=where, timeout=10, output=Collect())).outcome == "ok"
        auto.idle()
        await _booted(auto, "h1")
        assert (await auto("h2").check("true", timeout=10)).status == 0
        auto.idle()
        await _booted(auto, "h2")
        spool = user_home(USER) / ".local/state/dsh/spool" / where.session
        assert len(list(spool.glob("warm-*@h1.status"))) == 1
        assert list(spool.glob("warm-*@h2.*")) == []
    finally:
        await auto.close()

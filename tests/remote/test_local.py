"""Commands on this machine: output streams, exits, and timeouts that kill the group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path

import pytest

from dsh.remote.base import Exec, OutputSink, Spot
from dsh.remote.local import LocalShell
from tests.conftest import HOST_AGENT, SPOOL
from tests.helpers.procs import alive

_actions = iter(range(1, 1_000_000))


async def run(
    command: str, *, timeout: float, output: OutputSink, kill_grace: float = 2.0, mode: str = HOST_AGENT
) -> Exec:
    """One local action, through the local agent unless DSH_HOST_AGENT (or `mode`) is off."""
    shell = LocalShell(SPOOL, kill_grace=kill_grace, host_agent=mode)
    spot = Spot("test-local", f"{next(_actions)}.1.1", "local")
    try:
        return await shell.run(command, spot=spot, timeout=timeout, output=output)
    finally:
        await shell.close()


class Collect:
    def __init__(self) -> None:
        self.chunks: list[tuple[str, bytes, float]] = []

    def __call__(self, stream: str, data: bytes) -> None:
        self.chunks.append((stream, data, time.monotonic()))

    def text(self, stream: str) -> bytes:
        return b"".join(d for s, d, _ in self.chunks if s == stream)


async def test_output_and_exit_status() -> None:
    out = Collect()
    ex = await run("echo out; echo err >&2; exit 3", timeout=5, output=out)
    assert (ex.outcome, ex.exit_status) == ("failed", 3)
    assert out.text("stdout") == b"out\n"
    assert out.text("stderr") == b"err\n"


async def test_output_streams_while_the_command_runs() -> None:
    out = Collect()
    started = time.monotonic()
    ex = await run("echo first; sleep 0.5; echo second", timeout=5, output=out)
    assert ex.outcome == "ok"
    first = next(t for s, d, t in out.chunks if b"first" in d)
    assert first - started < 0.4


async def test_stdin_is_dev_null() -> None:
    out = Collect()
    ex = await run("cat; echo done", timeout=5, output=out)
    assert ex.outcome == "ok" and out.text("stdout") == b"done\n"


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    command = f"sleep 30 & echo $! > {pids}; sh -c 'echo $$ >> {pids}; exec sleep 30'"
    started = time.monotonic()
    ex = await run(command, timeout=0.5, output=Collect())
    elapsed = time.monotonic() - started
    assert ex.outcome == "timeout" and ex.exit_status is None
    assert 0.4 < elapsed < 3
    for pid in map(int, pids.read_text().split()):
        assert not alive(pid), f"process {pid} outlived the timeout"


async def test_term_ignoring_process_gets_killed() -> None:
    started = time.monotonic()
    ex = await run("trap '' TERM; sleep 30", timeout=0.3, output=Collect(), kill_grace=0.3)
    assert ex.outcome == "timeout"
    assert time.monotonic() - started < 3


async def test_background_children_end_with_the_command(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    ex = await run(f"sleep 30 & echo $! > {pidfile}", timeout=5, output=Collect())
    assert ex.outcome == "ok"
    assert time.monotonic() - started < 3
    assert not alive(int(pidfile.read_text()))


async def test_cancel_kills_and_reraises(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.ensure_future(run(f"echo $$ > {pidfile}; exec sleep 30", timeout=30, output=Collect()))
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not alive(int(pidfile.read_text()))


async def test_signal_death_is_reported() -> None:
    ex = await run("kill -KILL $$", timeout=5, output=Collect())
    assert (ex.outcome, ex.exit_status) == ("failed", 137)
    assert "SIGKILL" in ex.message


async def test_environment_and_cwd_are_inherited(tmp_path: Path) -> None:
    out = Collect()
    os.environ["DSH_TEST_MARK"] = "m1"
    try:
        await run("echo $DSH_TEST_MARK", timeout=5, output=out)
    finally:
        del os.environ["DSH_TEST_MARK"]
    assert out.text("stdout") == b"m1\n"


async def test_an_environment_changed_after_the_agent_booted_goes_through_the_wrapper() -> None:
    """The local agent runs commands in dsh's environment as it was at its boot: a
    launch after a change goes through the wrapper, which gives the command the new one."""
    shell = LocalShell(SPOOL, host_agent="auto")
    try:
        first, out = Spot("test-local", f"{next(_actions)}.1.1", "local"), Collect()
        assert (
            await shell.run("echo ${DSH_TEST_MARK-unset}", spot=first, timeout=5, output=out)
        ).outcome == "ok"
        link = await shell.agent.link(5)
        assert link is not None and out.text("stdout") == b"unset\n"
        sent = link.sent
        os.environ["DSH_TEST_MARK"] = "m2"
        try:
            again, out = Spot("test-local", f"{next(_actions)}.1.1", "local"), Collect()
            assert (await shell.run("echo $DSH_TEST_MARK", spot=again, timeout=5, output=out)).outcome == "ok"
        finally:
            del os.environ["DSH_TEST_MARK"]
        assert out.text("stdout") == b"m2\n" and link.sent == sent  # not through the agent
        last, out = Spot("test-local", f"{next(_actions)}.1.1", "local"), Collect()
        assert (
            await shell.run("echo ${DSH_TEST_MARK-unset}", spot=last, timeout=5, output=out)
        ).outcome == "ok"
        assert out.text("stdout") == b"unset\n" and link.sent == sent + 1  # as it was: the agent again
    finally:
        await shell.close()


async def test_a_local_agent_that_dies_mid_command_leaves_it_to_its_keeper() -> None:
    """The agent killed while its command runs: the keeper (a session of its own)
    finishes the command and writes its status, which the wrapper's FOLLOW reads."""
    shell = LocalShell(SPOOL, host_agent="auto")
    try:
        spot, out = Spot("test-local", f"{next(_actions)}.1.1", "local"), Collect()
        ran = asyncio.ensure_future(
            shell.run("echo one; sleep 1; echo two; exit 4", spot=spot, timeout=10, output=out)
        )
        link = await shell.agent.link(5)
        assert link is not None
        spooled = SPOOL / spot.session / f"{spot.action}@local"
        deadline = time.monotonic() + 5
        while b"one" not in out.text("stdout"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        keeper = int((spooled.parent / (spooled.name + ".run")).read_text().split()[0])
        agent = int(Path(f"/proc/{keeper}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        assert b"dsh-agent" in Path(f"/proc/{agent}/cmdline").read_bytes()
        os.kill(agent, 9)
        ex = await ran
        assert (ex.outcome, ex.exit_status) == ("failed", 4), ex
        assert out.text("stdout") == b"one\ntwo\n"  # followed from what was shown: nothing twice
        assert (spooled.parent / (spooled.name + ".status")).read_text() == "4\n"
        assert not alive(agent)
    finally:
        await shell.close()


async def test_a_local_agent_that_died_is_booted_again_for_the_next_launch() -> None:
    """The agent killed between actions: the next launch boots a new one (in dsh's
    environment and directory as they are then) and goes through it."""
    shell = LocalShell(SPOOL, host_agent="auto")
    try:
        spot, out = Spot("test-local", f"{next(_actions)}.1.1", "local"), Collect()
        assert (await shell.run("echo one", spot=spot, timeout=10, output=out)).outcome == "ok"
        link = await shell.agent.link(5)
        assert link is not None and link.sent >= 1
        spooled = SPOOL / spot.session / f"{spot.action}@local"
        keeper = int((spooled.parent / (spooled.name + ".run")).read_text().split()[0])
        agent = int(Path(f"/proc/{keeper}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        assert b"dsh-agent" in Path(f"/proc/{agent}/cmdline").read_bytes()
        os.kill(agent, 9)
        deadline = time.monotonic() + 5
        while link.alive:
            assert time.monotonic() < deadline, "the link never saw its agent die"
            await asyncio.sleep(0.02)
        spot, out = Spot("test-local", f"{next(_actions)}.1.1", "local"), Collect()
        assert (await shell.run("echo two", spot=spot, timeout=10, output=out)).outcome == "ok"
        assert out.text("stdout") == b"two\n"
        again = await shell.agent.link(5)
        assert again is not None and again is not link and again.alive
        assert again.sent == 1  # the second launch went through the new agent
    finally:
        await shell.close()


async def test_off_boots_no_local_agent() -> None:
    shell = LocalShell(SPOOL, host_agent="off")
    try:
        spot = Spot("test-local", f"{next(_actions)}.1.1", "local")
        assert (await shell.run("true", spot=spot, timeout=5, output=Collect())).outcome == "ok"
        booting = shell.agent.start()  # as Driver.ready_local asks
        assert booting.done() and booting.result() is None
    finally:
        await shell.close()


@pytest.mark.parametrize("mode", ["auto", "off"])
async def test_kill_all_ends_a_running_commands_group(mode: str) -> None:
    """dsh torn down (dsh.cli calls kill_all): the command's group is killed, from its
    .pid (`PGID START`), whichever path launched it."""
    from dsh.remote import local

    shell = LocalShell(SPOOL, host_agent=mode)
    spot = Spot("test-local", f"{next(_actions)}.1.1", "local")
    ran = asyncio.ensure_future(shell.run("command sleep 30", spot=spot, timeout=60, output=Collect()))
    try:
        pid_file = SPOOL / spot.session / f"{spot.action}@local.pid"
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline, "the command never started"
            await asyncio.sleep(0.02)
        group = int(pid_file.read_text().split()[0])
        local.kill_all()
        deadline = time.monotonic() + 5
        while alive(group):
            assert time.monotonic() < deadline, "kill_all left the command running"
            await asyncio.sleep(0.02)
    finally:
        ran.cancel()
        with contextlib.suppress(BaseException):
            await ran
        await shell.close()


async def test_a_local_agent_that_never_says_hello_costs_half_the_time_at_most(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An interpreter that hangs at start: the action goes through the wrapper once half
    its time is spent, and the hung boot is killed when the session ends."""
    hung = tmp_path / "python3"
    hung.write_text("#!/bin/sh\nexec sleep 41.3\n")
    hung.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hung))
    shell = LocalShell(SPOOL, host_agent="auto")
    try:
        spot, out = Spot("test-local", f"{next(_actions)}.1.1", "local"), Collect()
        began = time.monotonic()
        ex = await shell.run("echo hi", spot=spot, timeout=2, output=out)
        assert (ex.outcome, out.text("stdout")) == ("ok", b"hi\n"), ex
        assert time.monotonic() - began < 2 + 1, "the boot's wait was not within the action's time"
    finally:
        await shell.close()
    deadline = time.monotonic() + 5
    while _processes("sleep 41.3"):
        assert time.monotonic() < deadline, "the hung boot outlived the session"
        await asyncio.sleep(0.05)


async def test_no_interpreter_to_run_the_agent_falls_back_to_the_wrapper(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", None)  # Python's own word for "cannot tell"
    shell = LocalShell(SPOOL, host_agent="auto")
    try:
        spot, out = Spot("test-local", f"{next(_actions)}.1.1", "local"), Collect()
        ex = await shell.run("echo hi", spot=spot, timeout=5, output=out)
        assert (ex.outcome, out.text("stdout")) == ("ok", b"hi\n"), ex
    finally:
        await shell.close()


def _processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in (entry / "cmdline").read_bytes().replace(b"\0", b" "):
                    found.append(int(entry.name))
    return found


def test_a_local_timeout_is_said_as_the_line_gave_it(env: dict[str, str]) -> None:
    """What the session's start and the intent took comes off the action's budget, never
    off what its message says (it said `no exit within 0.982316s`)."""
    import subprocess

    from tests.conftest import dsh_path

    argv = [dsh_path(), "-c", "command sleep 7.38 | within 1s"]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "timeout: no exit within 1s\n" in r.stderr, r.stderr

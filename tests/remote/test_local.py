"""Commands on this machine: output streams, exits, and timeouts that kill the group."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from dsh.remote.base import Exec, OutputSink, Spot
from dsh.remote.local import LocalShell
from tests.conftest import SPOOL
from tests.helpers.procs import alive

_actions = iter(range(1, 1_000_000))


async def run(command: str, *, timeout: float, output: OutputSink, kill_grace: float = 2.0) -> Exec:
    shell = LocalShell(SPOOL, kill_grace=kill_grace)
    spot = Spot("test-local", f"{next(_actions)}.1.1", "local")
    return await shell.run(command, spot=spot, timeout=timeout, output=output)


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

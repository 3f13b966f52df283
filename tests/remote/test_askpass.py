"""The spool's askpass helper on its own (dsh/remote/askpass.py), without sudo: a
command calls `$SUDO_ASKPASS` as sudo would; the wrapper says the ask, PROBE says
the action waits for an answer, ANSWER feeds it, and the same caller asking again
is stopped (one try)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

from dsh.remote import askpass, spool
from dsh.remote.base import Spot
from dsh.remote.local import LocalShell

#: Asks twice from one shell (the same parent: a sudo asking again after an answer).
TWICE = '"$SUDO_ASKPASS" "Password: "; "$SUDO_ASKPASS" "Password: " || echo "refused $?"'


def _asks(root: Path) -> str:
    path = root / "s1" / "1.1.1@h1.ask"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError("no ask")


def _answer(root: Path, ask: str, line: str) -> int:
    argv = spool.answer_argv(str(root), "s1", "1.1.1", "h1", ask)
    return subprocess.run(argv, input=line + "\n", text=True, capture_output=True, timeout=15).returncode


def test_the_helper_asks_is_answered_and_gives_one_try(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 20, TWICE)
    asked: list[askpass.Ask] = []
    out: list[bytes] = []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    first = _asks(tmp_path)
    ask_id, sudo, kind, prompt = first.split(" ", 3)
    assert (kind, prompt) == ("ask", "Password: \n")
    probe = spool.probe_argv(str(tmp_path), "s1", "1.1.1", "h1")
    said = spool.answer(probe, subprocess.run(probe, capture_output=True, timeout=10).stdout)
    assert said == "alive asking"
    assert _answer(tmp_path, ask_id, askpass.feed("s3cret: with spaces ")) == 0
    stdout, stderr = proc.communicate(timeout=20)
    watch = spool.Watch(lambda stream, data: out.append(data), argv, asks=asked.append)
    watch.sink("stdout", stdout)
    watch.sink("stderr", stderr)
    result = watch.result(proc.returncode, 0.0)
    assert result.outcome == "ok", result
    assert b"".join(out) == b"s3cret: with spaces \nrefused 1\n"
    assert (asked[0].id, asked[0].sudo, asked[0].wrong, asked[0].prompt) == (ask_id, sudo, False, "Password:")
    assert asked[-1].wrong and asked[-1].sudo == sudo  # the second ask, stopped by the helper
    assert _answer(tmp_path, ask_id, askpass.feed("late")) == 3  # nobody asks any more
    files = {p.name for p in (tmp_path / "s1").iterdir()}
    assert "1.1.1@h1.pw" in files  # the FIFO: no regular file ever held the answer
    assert (tmp_path / "s1" / "1.1.1@h1.pw").is_fifo()
    for path in (tmp_path / "s1").iterdir():  # but the output, where this command printed it
        if path.is_file() and path.suffix != ".out":
            assert b"s3cret" not in path.read_bytes(), path


def test_a_refusal_says_why_on_the_commands_stderr(tmp_path: Path) -> None:
    command = 'a=$("$SUDO_ASKPASS" "Password: ") || echo "refused $?"'
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 20, command)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    ask_id = _asks(tmp_path).split(" ")[0]
    assert _answer(tmp_path, ask_id, askpass.feed(None, "no terminal to ask")) == 0
    stdout, stderr = proc.communicate(timeout=20)
    assert stdout.splitlines()[-1] == b"refused 1"
    assert b"dsh: no terminal to ask\n" in stderr


def test_the_helper_text_rides_on_the_first_launch_only_and_again_once_missing(tmp_path: Path) -> None:
    """A LAUNCH sent without the helper's text (the host had it) that finds none says
    so and runs the command without one; the next launch carries the text again."""
    shell = LocalShell(tmp_path)
    helper = tmp_path / askpass.HELPER_NAME
    out: list[bytes] = []

    async def run(action: str) -> str:
        spot = Spot("s1", action, "h1")
        ended = await shell.run(
            'echo "[$SUDO_ASKPASS]"', spot=spot, timeout=10, output=lambda s, d: out.append(d)
        )
        assert ended.outcome == "ok", ended
        return out.pop().decode().strip()

    async def scenario() -> list[str]:
        first = await run("1.1.1")
        helper.unlink()  # someone removed it meanwhile
        second = await run("1.1.2")  # sent without the text: runs without a helper
        third = await run("1.1.3")  # the text again
        return [first, second, third]

    first, second, third = asyncio.run(scenario())
    assert first == third == f"[{helper}]" and second == "[]"
    assert os.access(helper, os.X_OK)
    assert len(spool.launch_argv("r", "s", "a", "h", 1, "true", helper=False)[2]) < len(
        spool.launch_argv("r", "s", "a", "h", 1, "true")[2]
    )

"""The spool's askpass helper on its own (dsh/remote/askpass.py), without sudo: a
command calls `$SUDO_ASKPASS` as sudo would; the wrapper says the ask, PROBE says
the action waits for an answer, ANSWER feeds it, and the same caller asking again
is stopped (one try)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from dsh.remote import askpass, spool

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

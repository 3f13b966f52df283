"""The REPL to its prompt: `dsh` on a terminal (a pty) from its start to the
moment `dsh>` is drawn, against `python -c pass` for scale (issue 22's target:
300 ms). Each run is a new session in a private state directory; it is ended
with Ctrl-D once the prompt is there (and killed if it is not within TIMEOUT).
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Row

#: What the REPL draws when it is ready for a line.
PROMPT = b"dsh>"  # the space after it is drawn as a cursor move
TIMEOUT = 30.0
TARGET_MS = 300.0


def _to_prompt(dsh: str, env: dict[str, str]) -> float:
    """Seconds from starting `dsh` on a pty to its prompt on the screen."""
    main, sub = os.openpty()
    started = time.perf_counter()
    proc = subprocess.Popen([dsh], stdin=sub, stdout=sub, stderr=sub, env=env, start_new_session=True)
    os.close(sub)
    seen = b""
    try:
        while PROMPT not in seen:
            left = TIMEOUT - (time.perf_counter() - started)
            if left <= 0 or not select.select([main], [], [], left)[0]:
                raise RuntimeError(f"bench: no prompt within {TIMEOUT:g}s: {seen[-300:]!r}")
            try:
                seen += os.read(main, 65536)
            except OSError:  # the pty closed: dsh ended before its prompt
                raise RuntimeError(f"bench: dsh ended before its prompt: {seen[-300:]!r}") from None
        elapsed = time.perf_counter() - started
        os.write(main, b"\x04")  # Ctrl-D: the session ends
        deadline = time.monotonic() + TIMEOUT
        while proc.poll() is None and time.monotonic() < deadline:
            if select.select([main], [], [], 0.1)[0]:
                try:
                    os.read(main, 65536)
                except OSError:
                    break
        return elapsed
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(TIMEOUT)
        os.close(main)


def prompt(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    from bench.run import _alternate, _timed

    dsh = shutil.which("dsh", path=os.path.dirname(sys.executable)) or "dsh"
    state = tempfile.mkdtemp(prefix="dsh-bench-")
    try:
        env = {
            **os.environ,
            "NO_COLOR": "1",
            "TERM": "xterm-256color",
            "PROMPT_TOOLKIT_NO_CPR": "1",
            "XDG_STATE_HOME": state,
            "XDG_CONFIG_HOME": os.path.join(state, "config"),
        }
        rows = _alternate(
            "prompt",
            {
                "dsh (REPL) to its prompt": lambda: _to_prompt(dsh, env),
                "python -c pass": lambda: _timed([sys.executable, "-c", "pass"], env),
            },
            repeat,
        )
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return rows, {f"dsh to its prompt / {TARGET_MS:g} ms target": rows[0].median_ms / TARGET_MS}

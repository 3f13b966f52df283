"""The prompt in a real terminal (pexpect): starting it, and ending it cleanly."""

from __future__ import annotations

import pexpect

from tests.conftest import dsh_path


def spawn(env: dict[str, str]) -> pexpect.spawn:
    env = {**env, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
    return pexpect.spawn(dsh_path(), env=env, dimensions=(24, 120), encoding="utf-8", timeout=30)


def end(child: pexpect.spawn) -> None:
    """Ctrl-D at a prompt that is surely up: a built-in's answer comes before it (a
    Ctrl-D sent while the prompt before is still going away would be lost)."""
    child.sendline("help builtins")
    child.expect("explain LINE")
    child.expect("dsh>")
    child.sendeof()
    child.expect(pexpect.EOF)

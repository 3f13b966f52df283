"""Questions for whoever runs a session (a password for hosts' sudo, an SSH key's
passphrase): what one is (`Prompt`) and where one is asked (`Prompter`). The
terminal, a program and attached clients answer them (dsh/asking.py,
dsh/questions.py); an answer is only ever held in memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from dsh.record import record


@record
class Prompt:
    """A question for whoever runs the session (a password for hosts' sudo): `id`,
    unique in the session; `text`, what to show; `secret`, typed without echo;
    `bound`, seconds it may wait for an answer; `hosts`, for whom it asks."""

    id: str
    text: str
    secret: bool
    bound: float
    hosts: tuple[str, ...] = ()


class Prompter(Protocol):
    """Where the executor asks a question (a terminal, a program, attached clients)."""

    async def ask(self, prompt: Prompt) -> str | None:
        """The answer, or None: refused, nobody to ask, or no answer within the bound."""
        ...


class NoPrompter:
    """Nobody to ask: every prompt fails at once, saying how to answer it."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    async def ask(self, prompt: Prompt) -> str | None:
        self.say(
            f"cannot ask {prompt.text.strip().rstrip(':')}: no terminal; "
            "run dsh at a terminal (or attach to the session), or give --askpass PROG or DSH_ASKPASS"
        )
        return None

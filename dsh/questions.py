"""An executor's questions to its clients (a password for hosts' sudo), asked of
every client attached now or later, on this machine (issue 18).

A detached session waits, within the question's bound: `dsh ls` shows it waiting
for input (the journal says so), and the first client to attach is asked. Any
attached client may answer; the first answer wins, and the others are told to
stop asking (`asked`). The answer comes over the executor's socket, which only
its user can reach (dsh.localsocket), and stays in this process's memory.
Clients on other machines follow the session through the store and cannot
answer: an answer would have to cross the store, and until the store has
authentication on, no secret may (they are told so).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from dsh.prompt import Prompt, Prompter
from dsh.runtime.protocol import Answer, Ask, Asked, Event, Op


@dataclass
class _Open:
    prompt: Prompt
    until: float  # monotonic
    answer: asyncio.Future[str | None]


class ClientQuestions:
    """The Prompter of an executor process: its questions go to its clients."""

    def __init__(self, broadcast: Callable[[Event], None]) -> None:
        self.broadcast = broadcast
        self._open: dict[str, _Open] = {}

    def pending(self) -> list[Event]:
        """The questions a client that connects now is asked (with their time left)."""
        now = time.monotonic()
        return [
            Ask(q.prompt.id, q.prompt.text, q.prompt.secret, round(max(q.until - now, 0.0), 3))
            for q in self._open.values()
            if not q.answer.done()
        ]

    async def ask(self, prompt: Prompt) -> str | None:
        asked = _Open(prompt, time.monotonic() + prompt.bound, asyncio.get_running_loop().create_future())
        self._open[prompt.id] = asked
        self.broadcast(Ask(prompt.id, prompt.text, prompt.secret, round(prompt.bound, 3)))
        how = "answered"
        try:
            return await asyncio.wait_for(asyncio.shield(asked.answer), max(prompt.bound, 0.001))
        except TimeoutError:
            how = "timed out"
            return None
        finally:
            del self._open[prompt.id]
            if not asked.answer.done():
                asked.answer.cancel()
            self.broadcast(Asked(prompt.id, how))

    def answer(self, id: str, text: str | None) -> None:
        """A client's answer to question `id` (the first wins; a late one is dropped)."""
        asked = self._open.get(id)
        if asked is not None and not asked.answer.done():
            asked.answer.set_result(text)


class Answering:
    """A client's side: asks its user the executor's questions (with `asker`; None
    when it cannot: no terminal, no askpass program) and sends the answers."""

    def __init__(self, send: Callable[[Op], None], say: Callable[[str], None]) -> None:
        self.send = send
        self.say = say
        self.asker: Prompter | None = None
        self._asking: dict[str, asyncio.Task[None]] = {}
        #: Set while no question is being asked (a prompt waits for it: the terminal
        #: is the question's until it is answered).
        self.idle = asyncio.Event()
        self.idle.set()
        #: Run before a question is asked: gives the terminal up (the REPL's prompt
        #: is put aside, and comes back once no question is asked).
        self.before: Callable[[], Awaitable[None]] | None = None

    def event(self, event: Ask | Asked) -> None:
        """Ask the question (`ask`) and send the answer; stop asking once it needs no
        answer any more (`asked`: another client answered, or its time is up)."""
        if isinstance(event, Asked):
            task = self._asking.pop(event.id, None)
            if task is not None:
                task.cancel()
                if not self._asking:
                    self.idle.set()
                if event.how != "answered":
                    self.say(f"{event.how}: no answer came in time")
            return
        asker = self.asker
        if asker is None:
            self.say(
                f"the session waits for input ({event.text.strip().rstrip(':')}): "
                "attach at a terminal (or with --askpass PROG) to answer"
            )
            return
        if event.id in self._asking:
            return

        async def ask() -> None:
            try:
                if self.before is not None:
                    await self.before()
                answer = await asker.ask(Prompt(event.id, event.text, event.secret, event.bound))
                self.send(Answer(event.id, answer))
            finally:
                self._asking.pop(event.id, None)
                if not self._asking:
                    self.idle.set()

        self.idle.clear()
        self._asking[event.id] = asyncio.ensure_future(ask())

"""Passwords for hosts' sudo: asked once, tried on one host, then given to the rest
(issue 18; the host's side is dsh/remote/askpass.py).

Answers are kept per login user and host (sudo asks for the password of the
user dsh logged in as), in this process's memory only: never in the store, the
journal, a spool, a log or an argv. When sudo asks on hosts that have no
working answer yet, the hosts asking for one login user are gathered (a
fan-out asks from many hosts within moments) and one prompt names them all:
`[sudo] password for dshtest on h[1-3]: `. The answer is tried on one of them
first (VERIFY: sudo -k -S -v, nothing run); only if it is right is it given
to the others. A host never gets an answer that failed anywhere; a sudo that
asks again after an answer (it was wrong there) is stopped by the helper
after that one try, and its answer joins the failed ones. A wrong answer in
the trial ends the trial host's command (sudo's words are said) and asks the
others again, at most TRIES times. A prompt nobody answers (no terminal, a
refusal, its bound) refuses every host waiting on it: their sudo says that no
password was provided.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import hmac
import itertools
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from dsh.nodeset import fold
from dsh.prompt import Prompt, Prompter
from dsh.remote import askpass
from dsh.remote.base import Remote, RemoteUnreachable, Spot

#: How long the asks of a fan-out are gathered into one prompt.
GATHER = 0.2
#: Prompts for one group of hosts before they are all refused (sudo's own default).
TRIES = 3
#: The most a trial of an answer may take (sudo waits ~2 s after a wrong one).
VERIFY_BOUND = 15.0


@dataclass
class _Waiting:
    """A sudo asking on a host for a password, until `deadline` (monotonic)."""

    remote: Remote
    spot: Spot
    ask: askpass.Ask
    where: str  # user@host:port: whose password, where
    deadline: float


class SudoAnswers:
    """The asks of a session's sudo commands (the remotes' `Asks` sink)."""

    def __init__(self, prompter: Prompter, say: Callable[[str], None], machine: str = "local") -> None:
        self.prompter = prompter
        self.say = say
        self.machine = machine
        self._working: dict[str, str] = {}  # user@host:port -> the answer that worked there
        self._failed: set[bytes] = set()  # digests of answers that failed somewhere
        self._given: dict[tuple[str, str, str], str] = {}  # (alias, action, sudo pid) -> answer
        self._waiting: dict[str, list[_Waiting]] = {}  # login user -> hosts waiting
        self._rounds: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._asking = asyncio.Lock()  # one prompt at a time
        self._key = secrets.token_bytes(32)
        self._ids = itertools.count(1)

    def __call__(self, remote: Remote, spot: Spot, ask: askpass.Ask, deadline: float) -> None:
        task = asyncio.ensure_future(self._asked(remote, spot, ask, deadline))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop asking (the session's work is over): nothing is left waiting here."""
        for task in [*self._tasks, *self._rounds.values()]:
            task.cancel()
        for task in [*self._tasks, *self._rounds.values()]:
            with contextlib.suppress(BaseException):
                await task
        self._working.clear()

    def _digest(self, answer: str) -> bytes:
        return hmac.new(self._key, answer.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    async def _where(self, remote: Remote) -> str:
        try:
            who = await asyncio.wait_for(remote.identity(), 10.0)
        except (RemoteUnreachable, TimeoutError):
            who = None
        if who is None:
            return f"{getpass.getuser()}@{self.machine}"
        return who.login

    async def _asked(self, remote: Remote, spot: Spot, ask: askpass.Ask, deadline: float) -> None:
        given_key = (spot.alias, spot.action, ask.sudo)
        if ask.wrong:
            answer = self._given.pop(given_key, None)
            if answer is not None:
                self._failed.add(self._digest(answer))
                where = await self._where(remote)
                if self._working.get(where) == answer:
                    del self._working[where]
            self.say(
                f"{spot.alias}: sudo did not take the password (one try only; no other host is given it)"
            )
            return
        where = await self._where(remote)
        answer = self._working.get(where)
        if answer is not None and self._digest(answer) not in self._failed:
            await self._give(remote, spot, ask, answer)
            return
        user = where.partition("@")[0]
        self._waiting.setdefault(user, []).append(_Waiting(remote, spot, ask, where, deadline))
        if user not in self._rounds or self._rounds[user].done():
            self._rounds[user] = asyncio.ensure_future(self._round(user))

    async def _give(
        self, remote: Remote, spot: Spot, ask: askpass.Ask, answer: str | None, why: str = ""
    ) -> None:
        if answer is not None:
            self._given[(spot.alias, spot.action, ask.sudo)] = answer
        with contextlib.suppress(Exception):
            await remote.answer(spot, ask.id, answer, why)

    async def _round(self, user: str) -> None:
        """Ask for `user`'s password for the hosts waiting on it, until they all have
        an answer or a refusal."""
        await asyncio.sleep(GATHER)
        for _ in range(TRIES):
            waiting = self._live(user)
            if not waiting:
                return
            hosts = tuple(sorted({w.spot.alias for w in waiting}))
            bound = max(w.deadline for w in waiting) - time.monotonic()
            prompt = Prompt(
                f"sudo-{next(self._ids)}",
                f"[sudo] password for {user} on {fold(hosts)}: ",
                True,
                bound,
                hosts,
            )
            async with self._asking:
                answer = await self.prompter.ask(prompt)
            waiting = self._live(user)
            if not waiting:
                return
            if answer is not None and (why := askpass.usable(answer)) is not None:
                self.say(f"not given to sudo: {why}")
                answer = None
            if answer is None:
                await self._refuse(user, waiting, f"no password for {user} was given to dsh")
                return
            if self._digest(answer) in self._failed:
                self.say(f"that password failed before for {user}: not given to {fold(hosts)}")
                continue
            trial, rest = waiting[0], waiting[1:]
            left = min(VERIFY_BOUND, max(trial.deadline - time.monotonic(), 0.1))
            right, said = await trial.remote.verify_sudo(answer, timeout=left)
            if right is not True:  # wrong, or sudo could not tell: that host is refused, the rest asked again
                self._waiting[user] = rest
                if right is False:
                    self._failed.add(self._digest(answer))
                    why = f"the password typed for {user} is wrong here ({_last(said)}); no other host got it"
                else:
                    why = f"cannot try the password here: {_last(said)}"
                self.say(f"{trial.spot.alias}: {why}")
                await self._give(trial.remote, trial.spot, trial.ask, None, why)
                continue
            self._waiting[user] = []
            for w in waiting:
                self._working[w.where] = answer
            await asyncio.gather(*(self._give(w.remote, w.spot, w.ask, answer) for w in waiting))
            return
        await self._refuse(user, self._live(user), f"no right password for {user} after {TRIES} prompts")

    def _live(self, user: str) -> list[_Waiting]:
        """The hosts still waiting for `user`'s password (whose command has time left)."""
        now = time.monotonic()
        waiting = [w for w in self._waiting.get(user, []) if w.deadline > now]
        self._waiting[user] = waiting
        return waiting

    async def _refuse(self, user: str, waiting: list[_Waiting], why: str) -> None:
        self._waiting[user] = []
        await asyncio.gather(*(self._give(w.remote, w.spot, w.ask, None, why) for w in waiting))


def _last(said: str) -> str:
    """The last line of what sudo said (its verdict), as one line."""
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    return lines[-1] if lines else "no answer"

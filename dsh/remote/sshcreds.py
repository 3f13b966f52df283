"""SSH login credentials (issue 18): a key file's passphrase, a login password and
the other questions of a keyboard-interactive login (a one-time code), asked of
whoever runs the session (`Asks.prompter`: the terminal, an askpass program, the
clients attached to a detached session) and held only in this process's memory:
never written to a file, the store, the journal, a log, an argv or an exception.

- A passphrase is asked once per key file per session, however many connections
  want the key at once (the first asks, the others wait for its answer); a wrong
  one is said, and asked again, `TRIES` times at most. Only a key that opened is
  kept: after a refusal a later connection asks again.
- A password is asked once per login user and tried on every host that user logs
  in to. The hosts that do not take it ask again, once for all of them (a typo
  costs one more prompt, not one per host), `TRIES` answers at most per login; a
  reconnection starts with the answer that worked there.
- Any other keyboard-interactive question (echoed, or not about a password) is
  asked for each login, and its answer is never reused.

A question inside a login waits within `LOGIN_BOUND` (sshd ends a login that
takes longer than its LoginGraceTime, 120 s by default); `Login` tells how long
it waited, which the connect timeout does not count (dsh/remote/ssh.py). The
asyncssh side is in dsh/remote/ssh.py: this module needs only the standard library.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from dsh.prompt import Prompt
from dsh.remote.base import Asks

#: How long a passphrase may take to type (asked before connecting: no login waits).
PASSPHRASE_BOUND = 120.0
#: How long a question inside a login may wait (below sshd's LoginGraceTime, 120 s).
LOGIN_BOUND = 100.0
#: Passphrases tried per key file, answers per login (ssh's NumberOfPasswordPrompts).
TRIES = 3

K = TypeVar("K")
T = TypeVar("T")


class WrongPassphrase(Exception):
    """The passphrase given does not open the key (raised by the function that decrypts)."""


def _no_answer(asked: asyncio.Future[Any]) -> bool:
    """Whether a question is over without an answer (refused, timed out, cancelled, failed)."""
    return asked.done() and (asked.cancelled() or asked.exception() is not None or asked.result() is None)


def is_password(text: str, echo: bool) -> bool:
    """Whether a keyboard-interactive question asks for the login's password."""
    return not echo and "password" in text.lower()


class Credentials:
    """The SSH credentials of one session's hosts (one per SshFleet)."""

    def __init__(self, asks: Asks, warn: Callable[[str], None]) -> None:
        self.asks = asks
        self.warn = warn
        self._ids = itertools.count(1)
        #: Key file -> its key, once opened (or the question still open).
        self._keys: dict[str, asyncio.Future[Any]] = {}
        #: Login user -> the passwords asked for it, in turn.
        self._passwords: dict[str, list[asyncio.Future[str | None]]] = {}
        #: (login user, alias) -> which of them logged in there.
        self._worked: dict[tuple[str, str], int] = {}

    async def ask(self, kind: str, text: str, secret: bool, bound: float, alias: str) -> str | None:
        """One question for whoever runs the session (None: no answer)."""
        return await self.asks.prompter.ask(
            Prompt(f"ssh-{kind}-{next(self._ids)}", text, secret, bound, (alias,))
        )

    async def unlock(self, path: str, alias: str, decrypt: Callable[[str], Awaitable[K]]) -> K | None:
        """The key in file `path`, opened by `decrypt` (which raises WrongPassphrase) with
        a passphrase asked once for every connection that wants it now or later; None
        when no passphrase opened it (said with `warn`)."""
        opening = self._keys.get(path)
        if opening is None:
            opening = self._keys[path] = asyncio.ensure_future(self._unlock(path, alias, decrypt))
        try:
            key: K | None = await asyncio.shield(opening)
        finally:  # only a key that opened is kept: after anything else, a later connection asks again
            if opening.done() and self._keys.get(path) is opening and _no_answer(opening):
                del self._keys[path]
        return key

    async def _unlock(self, path: str, alias: str, decrypt: Callable[[str], Awaitable[K]]) -> K | None:
        for attempt in range(1, TRIES + 1):
            answer = await self.ask(
                "key", f"Enter passphrase for key {path}: ", True, PASSPHRASE_BOUND, alias
            )
            if answer is None:
                self.warn(f"ssh: identity file {path} not used: no passphrase given")
                return None
            try:
                return await decrypt(answer)
            except WrongPassphrase:
                if attempt < TRIES:
                    self.warn(f"ssh: wrong passphrase for {path}, try again")
        self.warn(f"ssh: identity file {path} not used: the passphrase was wrong {TRIES} times")
        return None

    def login(self, user: str, alias: str) -> Login:
        """The answers of one login as `user` to `alias` (one connection)."""
        asked = self._passwords.get(user, [])
        first = self._worked.get((user, alias))
        if first is None:  # the newest password, unless it went unanswered: then a new one
            first = len(asked) if asked and _no_answer(asked[-1]) else max(len(asked) - 1, 0)
        return Login(self, user, alias, first)

    def password(self, user: str, alias: str, index: int) -> asyncio.Future[str | None]:
        """The `index`th password asked for `user` (asked now if it is the next one)."""
        asked = self._passwords.setdefault(user, [])
        while len(asked) <= index:
            asked.append(
                asyncio.ensure_future(
                    self.ask("pw", f"{user}@{alias}'s password: ", True, LOGIN_BOUND, alias)
                )
            )
        return asked[index]

    def worked(self, user: str, alias: str, index: int) -> None:
        self._worked[(user, alias)] = index

    def close(self) -> None:
        """The session's hosts are done with: questions still open are withdrawn."""
        for asking in [*self._keys.values(), *(f for asked in self._passwords.values() for f in asked)]:
            asking.cancel()


class Login:
    """One login's answers: the passwords it tried (an index into its user's), and how
    long it waited for answers, which its connect timeout does not count. Once a
    question goes unanswered, the login asks nothing more."""

    def __init__(self, creds: Credentials, user: str, alias: str, first: int) -> None:
        self.creds = creds
        self.user = user
        self.alias = alias
        self._next = first
        self._tries = 0  # passwords
        self._challenges = 0  # other keyboard-interactive questions
        self._used: int | None = None
        self._waited = 0.0
        self._since: float | None = None

    @property
    def asking(self) -> bool:
        """Whether the login is waiting for an answer now."""
        return self._since is not None

    def waited(self) -> float:
        """Seconds spent waiting for answers so far (the current wait included)."""
        now = time.monotonic()
        return self._waited + (now - self._since if self._since is not None else 0.0)

    async def _wait(self, answer: Awaitable[T]) -> T:
        self._since = time.monotonic()
        try:
            return await answer
        finally:
            self._waited += time.monotonic() - self._since
            self._since = None

    async def password(self) -> str | None:
        """The next password to try here (None: stop; unanswered, or `TRIES` tried)."""
        if self._tries >= TRIES:
            return None
        self._tries += 1
        index, self._next = self._next, self._next + 1
        answer = await self._wait(asyncio.shield(self.creds.password(self.user, self.alias, index)))
        self._used = index if answer is not None else None
        if answer is None:
            self._tries = TRIES  # refused, or no answer in time: nothing more is asked
        return answer

    async def questions(self, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str] | None:
        """The answers to a keyboard-interactive challenge: a lone hidden question about a
        password is the login's password; any other is asked for this login only."""
        if not prompts:
            return []  # a message only
        if len(prompts) == 1 and is_password(*prompts[0]):
            answer = await self.password()
            return None if answer is None else [answer]
        if self._challenges >= TRIES:
            return None
        self._challenges += 1
        if instructions.strip():
            self.creds.warn(f"ssh: {self.user}@{self.alias}: {instructions.strip()}")
        answers = []
        for text, echo in prompts:
            asked = self.creds.ask(
                "code", f"({self.user}@{self.alias}) {text}", not echo, LOGIN_BOUND, self.alias
            )
            answer = await self._wait(asked)
            if answer is None:
                self._tries = self._challenges = TRIES
                return None
            answers.append(answer)
        return answers

    def succeeded(self) -> None:
        """Logged in: the password used (if one was) is the first tried there next time."""
        if self._used is not None:
            self.creds.worked(self.user, self.alias, self._used)

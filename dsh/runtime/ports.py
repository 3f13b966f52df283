"""The executor's ports: where it tells what happens (Reporter), where it checkpoints
(Recorder) and where it reads the store's events (Events), with the values that
cross them (ActionResult) and the null objects that stand in when nothing is
plugged in (NullRecorder: a run without a session; NoEvents: no store).

The executor calls its ports unconditionally: a run without a session has a
NullRecorder, which records nothing and numbers the runs itself, not a None
that every call site tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from dsh import plan as p
from dsh.errors import DshError
from dsh.record import record
from dsh.remote.base import CopyFacts, Exec, Identity, InputFacts
from dsh.runtime.results import HostResult, LineResult
from dsh.runtime.values import Value


class Reporter(Protocol):
    """Where the executor tells what happens, as it happens."""

    def line_started(self, stmt: p.Statement, hosts: Sequence[str] | None) -> None: ...

    def output(self, stmt: p.Statement, host: str | None, stream: str, data: bytes, shown: bool) -> None: ...

    def retrying(self, stmt: p.Statement, host: str | None, failed: Exec, attempt: int, wait: float) -> None:
        """Attempt `attempt` (1-based) ended as `failed`; the next starts after `wait`."""
        ...

    def copying(self, stmt: p.Statement, host: str | None, done: int, total: int) -> None:
        """A copy to or from `host` has moved `done` bytes of `total`."""
        ...

    def host_done(self, stmt: p.Statement, result: HostResult) -> None: ...

    def line_done(self, result: LineResult) -> None: ...


@record
class ActionResult:
    """How one action ended, as the recorder keeps it: `out` and `err` are what the
    flow kept of its output (the recorder keeps their tails)."""

    action: str
    host: str | None
    outcome: str
    exit_status: int | None
    seconds: float
    message: str
    out: bytes
    err: bytes
    #: A copy's: what it copied (its size and SHA-256), and whether it was there already.
    copied: CopyFacts | None = None


class Recorder(Protocol):
    """Where the executor checkpoints: intent before every effect, then its result.

    Each call returns once its record is in the store; one that cannot be
    written (the lease is lost) raises, and the effect it announced does not
    happen.
    """

    async def line_started(
        self, stmt: p.Statement, args: Sequence[str], plan: p.Plan, index: int, path: str = ""
    ) -> int:
        """Record a statement about to run (its compiled form, its index in the plan
        and its path inside a compound statement there, the script's arguments and
        the plan's limits, which a resume needs); returns its run number."""
        ...

    async def intent(
        self,
        action: str,
        host: str | None,
        command: str,
        timeout: float,
        where: Identity | None = None,
        copy: CopyFacts | None = None,
        stdin: InputFacts | None = None,
    ) -> None:
        """Checkpoint before effect: the action is about to start, on `where`; a copy's
        `copy` says what it copies (a put's source's size and SHA-256); a command's
        `stdin`, the input it is given."""
        ...

    async def line_hosts(
        self,
        run: int,
        hosts: Sequence[str],
        inputs: Mapping[int, InputFacts],
        items: Sequence[str] | None = None,
    ) -> None:
        """What a line resolved as it starts (its hosts, its stages' inputs by stage; a
        `for`, its items), kept before any of its actions: a resume goes on with them."""
        ...

    async def result(self, result: ActionResult) -> None:
        """An action ended (or was cancelled, or taken from an earlier record)."""
        ...

    async def sleep(self, action: str, host: str | None, seconds: float, deadline: float) -> None:
        """A durable timer: its absolute deadline (wall clock), which a resume keeps."""
        ...

    async def bound(self, run: int, name: str, value: Value) -> None: ...

    async def line_done(
        self, run: int, ok: bool, seconds: float, sets: dict[str, tuple[str, ...]] | None
    ) -> None: ...

    async def callback(self, action: str, host: str | None, url: str) -> None:
        """A callback was made: its URL, journaled."""
        ...

    async def taking_up(self, action: str, host: str | None, timeout: float) -> None:
        """An action an earlier owner started is taken up (followed, or started)."""
        ...

    async def awaiting(self, action: str, host: str | None, what: str, deadline: float) -> None:
        """An await begins: what it waits for, and its deadline (absolute, so that a
        resumed await keeps it)."""
        ...

    async def plan_started(self, plan: p.Plan, args: Sequence[str], taken: int | None = None) -> None:
        """Record a plan about to run (a script, or the text of one `-c` or prompt
        line), so that a new owner can run what is left of it; `taken` is the
        number of the submitted line it came from, consumed with it."""
        ...

    async def progress(self, done: int) -> None:
        """The statements of the plan before index `done` are over."""
        ...


class NullRecorder:
    """The recorder of a run without a session: it keeps nothing, and numbers the
    runs itself (their action ids name the spool's claims, which must not meet)."""

    def __init__(self) -> None:
        self.runs = 0

    async def line_started(
        self, stmt: p.Statement, args: Sequence[str], plan: p.Plan, index: int, path: str = ""
    ) -> int:
        self.runs += 1
        return self.runs

    async def intent(
        self,
        action: str,
        host: str | None,
        command: str,
        timeout: float,
        where: Identity | None = None,
        copy: CopyFacts | None = None,
        stdin: InputFacts | None = None,
    ) -> None:
        pass

    async def line_hosts(
        self,
        run: int,
        hosts: Sequence[str],
        inputs: Mapping[int, InputFacts],
        items: Sequence[str] | None = None,
    ) -> None:
        pass

    async def result(self, result: ActionResult) -> None:
        pass

    async def sleep(self, action: str, host: str | None, seconds: float, deadline: float) -> None:
        pass

    async def bound(self, run: int, name: str, value: Value) -> None:
        pass

    async def line_done(
        self, run: int, ok: bool, seconds: float, sets: dict[str, tuple[str, ...]] | None
    ) -> None:
        pass

    async def callback(self, action: str, host: str | None, url: str) -> None:
        pass

    async def taking_up(self, action: str, host: str | None, timeout: float) -> None:
        pass

    async def awaiting(self, action: str, host: str | None, what: str, deadline: float) -> None:
        pass

    async def plan_started(self, plan: p.Plan, args: Sequence[str], taken: int | None = None) -> None:
        pass

    async def progress(self, done: int) -> None:
        pass


class AwaitEnded(DshError):
    """An await ends now, failed, whatever its bound says: what it waits for can no
    longer come (a callback of another session's, an approval denied)."""


class CallbackError(AwaitEnded):
    """A callback cannot be made (no `dsh serve` is known to the store)."""


@record
class Approval:
    """Where an `await approval` stands: who approved (in the order they did),
    and how many must."""

    approvers: tuple[str, ...]
    needed: int


class Events(Protocol):
    """The store's side of awaits: keys and durable signals of a session's user."""

    async def key(self, key: str) -> str | None:
        """The value of `key`, None when it is not set."""
        ...

    async def take_signal(self, name: str, action: str, host: str | None) -> str | None:
        """Consume the oldest signal `name` sent to the session, if any (recording,
        in the same fenced transaction, that `action` got it); its value."""
        ...

    async def new_callback(self, action: str, host: str | None) -> tuple[str, bool]:
        """Make the callback of `action` (the same one again after a takeover): its
        URL, and whether it is new. CallbackError when no `dsh serve` is known."""
        ...

    async def callback(self, url: str, deadline: float | None) -> str | None:
        """The body POSTed to the callback at `url`, None while none was; the first
        look also records until when it is awaited (later POSTs are refused)."""
        ...

    async def approval(self, action: str, principals: str, quorum: int, deadline: float) -> Approval:
        """Ask for `action`'s approval (once: where the approvers can see it, until
        `deadline`) and say who approved so far; AwaitEnded when one denied it, or
        it cannot be asked (nobody could see it)."""
        ...

    async def approval_over(self, action: str) -> None:
        """`action`'s await approval is over, however it ended: its ask is withdrawn."""
        ...


class NoEvents:
    """The events of a run without a session: there is no store to look in. A
    callback cannot be made (CallbackError); looking for a key, a signal or a
    callback's POST is a bug (the driver gives every session's executor the
    session's events)."""

    async def key(self, key: str) -> str | None:
        raise RuntimeError("awaiting keys and signals needs a session")

    async def take_signal(self, name: str, action: str, host: str | None) -> str | None:
        raise RuntimeError("awaiting keys and signals needs a session")

    async def new_callback(self, action: str, host: str | None) -> tuple[str, bool]:
        raise CallbackError("callbacks need a session (its store is where `dsh serve` writes)")

    async def callback(self, url: str, deadline: float | None) -> str | None:
        raise RuntimeError("awaiting keys and signals needs a session")

    async def approval(self, action: str, principals: str, quorum: int, deadline: float) -> Approval:
        raise AwaitEnded("approvals need a session on a shared etcd (the approvers see it there)")

    async def approval_over(self, action: str) -> None:
        pass

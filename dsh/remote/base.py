"""The Remote protocol: run one command on one host, bounded, streaming its output."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from dsh.prompt import NoPrompter, Prompter
from dsh.record import record
from dsh.remote.askpass import Ask
from dsh.remote.manifest import Manifest

#: Called with ("stdout" | "stderr", bytes) as output arrives.
OutputSink = Callable[[str, bytes], None]


@record
class Exec:
    """How one command ended on one host.

    `outcome` is one of plan.OUTCOMES; `exit_status` is set when the command
    ran to an exit (128+N when a signal N ended it); `message` explains any
    outcome other than ok or failed.
    """

    outcome: str
    exit_status: int | None
    seconds: float
    message: str = ""


@record
class Spot:
    """Where one action's spool is on its host: the claim key (design §4).

    `session` is the session's spool name (unique per session incarnation),
    `action` is RUN.STAGE.ATTEMPT, `alias` the host's name as the target
    wrote it (aliases of one machine share its filesystem).
    """

    session: str
    action: str
    alias: str


@record
class Check:
    """How one probe ended (`await file`, `await cmd`): its exit status, or None
    when it did not end in time or could not run (`message` says why)."""

    status: int | None
    out: bytes = b""
    message: str = ""


@record
class Identity:
    """Who a host is, as this machine reaches it: `user@hostname:port` (after its
    ProxyJump hops) and the fingerprint of the host key it showed. Kept with
    each action's intent: a later owner that reaches the alias elsewhere (another
    machine, another ssh config) neither probes nor starts there."""

    login: str
    key: str


@record
class CopyFacts:
    """What is kept of a copy (its intent, its result on each host): its `direction`
    (plan.PUT or plan.GET), the `local` path (absolute) and the `remote` one as
    written for the host; the bytes copied (`size`, a tree's files together) and
    their SHA-256 (`sha256`: a tree's digest, dsh/remote/manifest.py), as known; and
    whether the destination held them already (`unchanged`: nothing was written)."""

    direction: str
    local: str
    remote: str
    sha256: str = ""
    unchanged: bool = False
    size: int | None = None


@record
class InputFacts:
    """A command's standard input, the same bytes for every host (`| stdin FILE`): the
    file's absolute path on the machine that read it (plan.OWN_STDIN: that dsh's own
    standard input), its size and its SHA-256. Kept with the line and each intent:
    a later owner gives a host that has not started the same bytes, or nothing."""

    path: str
    size: int
    sha256: str


@record
class CopyJob:
    """One copy on one host: `facts` (the source's size and digest, for a put, as
    read when the line started); `source`, a put's source as read then (a
    manifest.Manifest); `resume`: claimed by an earlier owner, with no status: it
    is finished, not claimed again; `sudo` (a put's `--sudo`), `owner`, `mode`."""

    facts: CopyFacts
    source: Manifest | None = None
    resume: bool = False
    sudo: str | None = None
    owner: str | None = None
    mode: int | None = None


@record
class Copied:
    """How a copy ended on one host, and what it copied (`facts`, with the size and
    digest the destination holds now)."""

    ended: Exec
    facts: CopyFacts


#: Called with (bytes done, bytes in all) as a copy goes on.
Progress = Callable[[int, int], None]


class RemoteUnreachable(Exception):
    """A host could not be asked (its outcome and message say why)."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


class Asks:
    """Where a session's remotes ask, shared by them like the Gate: a sudo asking a
    command's host for a password goes to `sink` (dsh/remote/askpass.py; called
    with the remote, the action's spot, the ask and the command's deadline,
    monotonic); a passphrase or a login password is asked of `prompter`. Whoever
    runs the session plugs both in; with none, nothing can be asked."""

    def __init__(self) -> None:
        self.sink: Callable[[Remote, Spot, Ask, float], None] | None = None
        self.prompter: Prompter = NoPrompter(lambda text: None)

    def __call__(self, remote: Remote, spot: Spot, ask: Ask, deadline: float) -> None:
        if self.sink is not None:
            self.sink(remote, spot, ask, deadline)


class Remote(Protocol):
    """A place commands run: this machine, or one host over SSH."""

    @property
    def name(self) -> str: ...

    async def run(
        self,
        command: str,
        *,
        spot: Spot,
        timeout: float,
        output: OutputSink,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        told: float | None = None,
    ) -> Exec:
        """Run `command` with `/bin/sh -c` through the spool wrapper, claimed at `spot`,
        stdin from /dev/null, or from `stdin`'s bytes, written into the spool first
        (ACTION@ALIAS.in, within the timeout); `env`: variables (secrets) for the
        command alone, which reach the host on the exec's stdin, never in an argv.

        Ends within `timeout` (plus a short kill grace): on timeout or
        cancellation the command's process group is killed from a new exec.
        Cancellation is re-raised after the kill. `told`: the timeout as the line
        gave it, which its messages say (`timeout` may be what is left of it).
        """
        ...

    async def identity(self) -> Identity | None:
        """Who this host is as this machine reaches it (None for this machine's own
        shell), connecting if need be. Raises RemoteUnreachable when it cannot."""
        ...

    async def probe(self, spot: Spot) -> str:
        """What became of an action launched before: `none` (never claimed), `alive`
        (`alive asking`: a sudo in it waits for a password),
        `lost` (claimed, nobody left to report its end) or `status S` (S is an exit
        status, `timeout` or `cancelled`). Raises RemoteUnreachable when it cannot ask."""
        ...

    async def clean(self, keep: float) -> None:
        """Remove the spools of sessions untouched for `keep` seconds (bounded; a host
        that does not answer keeps them)."""
        ...

    async def remove(self, session: str) -> bool:
        """Remove a session's spool from this host; True when the host confirmed it."""
        ...

    async def kill(self, spot: Spot) -> bool:
        """End an action from a new exec (or tombstone it if never claimed); True
        when the host confirmed it."""
        ...

    async def follow(
        self, spot: Spot, *, timeout: float, output: OutputSink, told: float | None = None
    ) -> Exec:
        """Stream an action launched before (by another owner) from its start to its
        end, like `run` without starting anything; bounded and killed like `run`."""
        ...

    async def check(self, command: str, *, timeout: float) -> Check:
        """Run a probe with `/bin/sh -c`, outside the spool (a probe is read-only and
        may run many times), bounded by `timeout`; its stdout is kept (64 KiB)."""
        ...

    async def port_open(self, port: int, *, timeout: float) -> bool:
        """Whether TCP `port` of this host takes a connection (over SSH: a channel
        to the host's own localhost), within `timeout`."""
        ...

    async def answer(self, spot: Spot, ask: str, answer: str | None, why: str = "") -> bool:
        """Give the sudo asking at `spot` (ask `ask`) its password, or refuse it (None;
        `why` is said on the command's stderr), from a new exec, bounded; True when
        the helper was still there to take it."""
        ...

    async def verify_sudo(self, answer: str, *, timeout: float) -> tuple[bool | None, str]:
        """Whether `answer` is this host's sudo's password (None: it cannot tell), and
        sudo's words when it is not, within `timeout`."""
        ...

    async def copy(
        self, job: CopyJob, *, spot: Spot, timeout: float, progress: Progress, output: OutputSink
    ) -> Copied:
        """Copy a file or a tree to (put) or from (get) this host, claimed at `spot`
        like a command: written beside its destination and renamed into place once its
        SHA-256 matches, skipped where the destination holds the same already; within
        `timeout` (what it wrote but did not rename is removed when it ends early);
        `output`: what a command it runs says (an install through sudo)."""
        ...


class Gate:
    """Whether this process may still act on hosts, shared by a session's remotes.

    Launching and killing need the session's lease (design §4): once the owner's
    lease is lost or in doubt (`check` says no) or the gate is closed (`close`,
    when the lease was found lost), remotes launch and kill nothing more, and an
    exec waiting for its command drops its channel instead: the command is left
    to its spool, for the next owner to follow, as if this process had died.
    """

    def __init__(self) -> None:
        self._check: Callable[[], bool] = lambda: True
        self.closed = False

    def bind(self, check: Callable[[], bool]) -> None:
        """Open (again) while `check()` says so: a lease newly held, while it is held."""
        self._check = check
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def open(self) -> bool:
        return not self.closed and self._check()


#: What a remote answers when asked to launch with its gate shut.
NOT_OWNER = "not started: this executor's lease is lost or in doubt (the next owner starts it)"


class Hosts(Protocol):
    """The remotes of a session's hosts, by alias; closed when the session ends."""

    def __call__(self, alias: str) -> Remote: ...

    def idle(self) -> None:
        """The session waits for its next line: work that makes the next one faster
        may start in the background (host agents)."""
        ...

    async def close(self) -> None: ...


class LazyHosts:
    """Hosts made on first use: a line that targets no host never pays for SSH
    (importing asyncssh alone costs ~140 ms of start-up)."""

    def __init__(self, make: Callable[[], Hosts]) -> None:
        self._make = make
        self._hosts: Hosts | None = None

    def __call__(self, alias: str) -> Remote:
        if self._hosts is None:
            self._hosts = self._make()
        return self._hosts(alias)

    def idle(self) -> None:
        if self._hosts is not None:
            self._hosts.idle()

    async def close(self) -> None:
        if self._hosts is not None:
            await self._hosts.close()

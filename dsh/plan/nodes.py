"""The plan's nodes: targets, stages, statements and the plan itself, each a frozen
record, with the constants the compiler and the runtime share."""

from __future__ import annotations

from enum import StrEnum

from dsh.record import record

#: The newest plan version this dsh reads. 2: `Secret` bindings (issue 18); 3: `Copy`
#: stages (issue 19); 4: a target's `groups` from inventories, a command's `stdin`
#: (issue 20); 5: `await approval` (issue 21: its args are the principals and the
#: quorum). A plan or statement is written with the lowest version that holds it
#: (`version_of`): one with none of them is version 1, byte for byte as before.
PLAN_VERSION = 5


class Outcome(StrEnum):
    """How an action, or a host's flow, ended (design §3), in display order. A member
    is its string: it compares equal to it, and JSON writes it as that string."""

    OK = "ok"
    FAILED = "failed"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    REFUSED = "refused"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    LOST = "lost"


#: The outcomes a host can end a line with, in display order, as plain strings.
OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)
#: Result sets of the previous line: one per outcome, plus every host not ok.
RESULT_SETS = (*OUTCOMES, "notok")
#: What `await` waits for.
AWAIT_KINDS = ("port", "http", "file", "cmd", "key", "signal", "callback", "approval")
#: The await kind of `NAME = callback`: it makes a callback and binds its URL, waiting for nothing.
NEW_CALLBACK = "new-callback"
#: How long a timed-out command's process group has after TERM before KILL.
KILL_GRACE = 2.0
#: After an attempt's timeout, stopping its command takes at most this long: TERM,
#: KILL after KILL_GRACE, and the host's confirmation; unconfirmed by then, the
#: action is `lost`. The worst case counts it for every attempt.
STOP_CONFIRM = 3.0
STOP_SECONDS = KILL_GRACE + STOP_CONFIRM
#: What the runtime keeps of that for itself (the time to say and record the end, and
#: the line's own start and end: 0.25 s was too little on two busy cores).
STOP_MARGIN = 0.5
#: An await's last look (a probe in flight at its deadline) ends at most this long
#: after the deadline; the worst case counts it.
LOOK_SLACK = 0.5
#: The most bytes one binding may hold (limits.max_binding caps it, its default):
#: what one store value holds once encoded.
MAX_BINDING = 1 << 20
#: Kinds of bindings: a value, a node set, or the result of a stage.
VALUE, HOSTS, RESULT = "value", "hosts", "result"
#: Fields of a binding that holds the result of a stage.
RESULT_FIELDS = ("out", "err", "rc", "outcome", "hosts", "url")


# -- text with dsh references ------------------------------------------------


@record
class Lit:
    text: str


@record
class Var:
    """A dsh-bound name to insert. `quoting` is how the value is made data:

    - `shell`: outside quotes in sh text, inserted single-quoted;
    - `dquote`: inside double quotes, `${…}` or `$((…))`, `\\ " $ `` ` escaped;
    - `heredoc`: in a here-document body, `\\ $ `` ` escaped;
    - `raw`: in a dsh value, inserted as it is.
    """

    name: str
    field: str | None
    quoting: str


@record
class Text:
    parts: tuple[Lit | Var, ...]


# -- targets and stages ---------------------------------------------------------


@record
class GroupRef:
    """A group an inventory holds, `@{NAME}` or `@{SOURCE:NAME}` as written: `source`
    None means the first source that has it, in dsh's order (dsh.inventory)."""

    source: str | None
    name: str

    def __str__(self) -> str:
        return f"@{{{self.name}}}" if self.source is None else f"@{{{self.source}:{self.name}}}"


@record
class HostSet:
    """A target: ClusterShell pattern with `@inv:` / `@res:` / `@var:` groups, and
    `@grp:gN` for `groups[N]`, a group of an inventory, resolved when the line
    starts (its hosts are then kept with the run, for a resume)."""

    written: str
    pattern: str
    size: int | None  # known at compile time when it names no group or binding
    groups: tuple[GroupRef, ...] = ()


#: `| stdin -`: the input is dsh's own standard input.
OWN_STDIN = "-"


@record
class Command:
    """A command stage. `stdin` (`| stdin FILE`): the path of a file on this machine
    whose bytes every host's command reads as its standard input (OWN_STDIN: dsh's
    own); None: the command reads /dev/null."""

    text: Text
    written: str
    timeout: float
    retries: int = 0
    backoff: float = 1.0
    stdin: Text | None = None

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def worst_seconds(self) -> float:
        """Every attempt's timeout (connecting included) and the stop that may follow
        it, and the waits between attempts: a true bound of the stage."""
        return float(self.attempts * (self.timeout + STOP_SECONDS) + self.backoff * (2**self.retries - 1))


#: A copy's default timeout grows by a second for every COPY_RATE bytes of its SRC
#: (as big as it is when the line is compiled), on top of the command default.
COPY_RATE = 4 << 20
#: Copy directions.
PUT, GET = "put", "get"


@record
class Copy:
    """`put PATH TARGET:RPATH` (this machine to each host) or `get TARGET:RPATH PATH`
    (each host to this machine): an action, claimed at most once in the host's spool,
    written beside its destination and renamed into place once its SHA-256 matches,
    skipped where the destination holds the same content already.

    `local` is PATH on this machine (relative: to the executor's working directory);
    `remote` is RPATH on the host (relative: under the login user's home, where a
    written `~/…` is compiled to what follows `~/`).
    `timeout` bounds one attempt on one host, connecting included; `size` is SRC's
    size when the line was compiled (a put of a plain path), else None. `sudo` (a put's
    `--sudo [USER]`) installs as that user ("root" unless named), with `owner`
    (`U[:G]`) and `mode` (the permission bits) when given."""

    direction: str
    local: Text
    remote: Text
    written: str
    timeout: float
    retries: int = 0
    backoff: float = 1.0
    size: int | None = None
    sudo: str | None = None
    owner: str | None = None
    mode: int | None = None

    @property
    def attempts(self) -> int:
        return self.retries + 1

    def worst_seconds(self) -> float:
        """As a command's: every attempt's timeout and the stop after it, and the
        waits between attempts."""
        return float(self.attempts * (self.timeout + STOP_SECONDS) + self.backoff * (2**self.retries - 1))


@record
class Sleep:
    seconds: float

    def worst_seconds(self) -> float:
        return self.seconds


@record
class Await:
    """An event to wait for (design §3): `kind` is one of AWAIT_KINDS; `args` are
    what to wait for (see the language reference); `bind` names the value it
    brings (a signal's, a key's, a body, a probe's output)."""

    kind: str
    args: tuple[Text, ...]
    written: str
    timeout: float
    every: float
    bind: str | None = None

    def worst_seconds(self) -> float:
        return self.timeout + LOOK_SLACK


@record
class Where:
    """A filter: a host's flow goes on when its last outcome is `outcome` (or any
    but ok, for `notok`), or when the `stream` of its last stage matches `regex`;
    else the flow ends there, with that outcome. A failure it lets through is
    consumed: it does not fail the line."""

    outcome: str | None
    stream: str | None = None
    regex: str | None = None

    def worst_seconds(self) -> float:
        return 0.0


@record
class Gather:
    """A barrier: every host's flow waits here until all the others have come or ended."""

    def worst_seconds(self) -> float:
        return 0.0


@record
class Batch:
    """Roll `size` hosts (a percentage of them, with `percent`) at a time through the
    whole pipeline; once more than `max_fail` hosts are not ok, the rest are skipped."""

    size: int
    percent: bool = False
    max_fail: int = 0

    def wave(self, hosts: int) -> int:
        """How many hosts one wave holds."""
        return max(1, -(-hosts * self.size // 100)) if self.percent else self.size


Stage = Command | Copy | Sleep | Await | Where | Gather


@record
class Pipeline:
    target: HostSet | None
    stages: tuple[Stage, ...]
    batch: Batch | None = None

    def steps_per_host(self) -> int:
        return sum(
            s.attempts if isinstance(s, Command | Copy) else 1 if isinstance(s, Sleep | Await) else 0
            for s in self.stages
        )

    def seconds_per_host(self) -> float:
        return sum(s.worst_seconds() for s in self.stages)

    def waves(self, hosts: int, fanout: int) -> int:
        """How many rounds the hosts go through at worst: the fan-out's, or the batch's."""
        at_once = min(fanout, self.batch.wave(hosts)) if self.batch else fanout
        return -(-max(hosts, 1) // max(at_once, 1))


@record
class Bound:
    """The worst case of a statement: steps are None when hosts are known only at run time."""

    hosts: int | None
    steps: int | None
    seconds: float


# -- statements -------------------------------------------------------------------


@record
class Run:
    line: int
    source: str
    pipeline: Pipeline
    bound: Bound
    unbound: tuple[str, ...] = ()


@record
class Secret:
    """`NAME = secret "PROMPT"`: a value asked of whoever runs the session (no echo)
    and bound in memory only: never stored, journaled, spooled or put in an argv;
    a command reads it from an environment variable (plan version 2)."""

    prompt: Text


@record
class Bind:
    line: int
    source: str
    name: str
    value: Text | HostSet | Pipeline | Secret
    bound: Bound
    unbound: tuple[str, ...] = ()


@record
class Compare:
    """`$x == value` / `!=` in an `if`: texts compared once rendered."""

    left: Text
    op: str
    right: Text


@record
class If:
    """`if COND { … } else { … }`: COND is a statement of its own (true when every
    host is ok; a failure there is consumed) or a comparison."""

    line: int
    source: str
    cond: Run | Compare
    then: tuple[Statement, ...]
    orelse: tuple[Statement, ...]
    bound: Bound
    unbound: tuple[str, ...] = ()


@record
class For:
    """`for NAME in ITEMS { … }`, one iteration after another; `count` is None when
    the items are known only at run time (checked against the budget then)."""

    line: int
    source: str
    name: str
    items: tuple[Text | HostSet, ...]
    body: tuple[Statement, ...]
    bound: Bound
    count: int | None
    unbound: tuple[str, ...] = ()


Statement = Run | Bind | If | For


@record
class Plan:
    source_name: str
    statements: tuple[Statement, ...]
    bound: Bound
    step_budget: int
    fanout: int
    version: int = PLAN_VERSION

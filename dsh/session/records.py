"""Records: one type per value dsh writes to the store and per journal entry kind.

dsh.session.codec writes and reads them (dumps, loads, load_action, load_entry,
load_binding): see it for how each field type is written in JSON. A field with a
default is optional: a record written before the field existed reads as that
default, which its class documents; a default of None also means "not written
while None". Any other field missing or malformed is a CorruptRecord, defined
here: a StoreError naming the key and the field, never a default made up on
the spot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from dsh.bytestext import from_bytes, shown
from dsh.errors import StoreError
from dsh.plan import Plan, Statement
from dsh.record import record
from dsh.remote.base import CopyFacts, Identity, InputFacts

R = TypeVar("R")

#: A str that may hold bytes that are not UTF-8 (surrogate escapes): written as
#: dsh.bytestext.stored writes it, read back as the same str.
Text = str


#: The format of the records this dsh writes, kept in each as "v" (a record without
#: one was written before formats were numbered: format 1). A new record kind, or a
#: new field an older dsh would misread without, makes it one more; a reader refuses
#: a record of a newer format (NewerRecord), so that a dsh on a shared store that has
#: not been upgraded stops at such a session instead of misreading it.
#: Format 2: the journal's `prompt` and `note` entries, `secret` bindings (issue 18).
#: Format 3: copies: an intent's `copy`, a result's `copied` (issue 19).
#: Format 4: a line's `hosts/RUN` record, an intent's `stdin` (issue 20).
#: Format 5: `people/NAME` and `t/TEAM/members` records; who a line, a signal came
#: from; `control` entries; who owns (issue 21).
FORMAT = 5


class CorruptRecord(StoreError):
    """A stored record that cannot be read: `key` is where it is, `field` the field
    at fault ("" for the whole record), `problem` what is wrong (with the field)."""

    def __init__(self, key: bytes, problem: str, field: str = "") -> None:
        self.key = key
        self.field = field
        self.problem = f"field {field!r} {problem}" if field else problem
        super().__init__(f"corrupt record {shown(from_bytes(key))}: {self.problem}")


class NewerRecord(CorruptRecord):
    """A record of a newer format than this dsh reads (`version` > FORMAT)."""

    def __init__(self, key: bytes, version: int) -> None:
        self.version = version
        super().__init__(key, f"written by a newer dsh (format {version} > {FORMAT}); upgrade dsh to read it")


# -- the session ------------------------------------------------------------------


@record
class Owner:
    """`owner`, on the owner's lease: who runs the session."""

    machine: str
    pid: int
    since: float
    #: The lease's TTL as the store granted it. Owners before 0e3fec9 did not write
    #: it; their lease was the default one, 5 s.
    ttl: float = 5.0
    #: An executor process's Unix socket (its clients on this machine dial it);
    #: not written for an owner that serves no clients (`dsh -c`, a script).
    socket: str | None = None
    #: The person it runs as (format 5; none before): whose SSH access runs the work.
    person: str | None = None
    #: The OS user it runs as (format 5; none before): its socket and spools are theirs.
    os_user: str | None = None


@record
class Meta:
    """`meta`: the session itself, written once, when it is first claimed."""

    name: str
    created: float
    machine: str
    #: Tells this session from an earlier one of the same name (its spools are
    #: NAME.ID). Sessions made before 18c5197 have none: their spools are NAME.0.
    id: str = "0"
    #: Named by the user (--session), not generated for one `dsh -c`. Sessions
    #: made before 53efb4c do not say: they were all listed.
    named: bool = True


@record
class PlanLimits:
    """What a resume needs of the plan a statement was part of."""

    step_budget: int
    fanout: int
    #: The plan's source name; run records before 4161f16 did not keep it.
    name: str = "<resumed>"


#: A run record's limits when it has none (records before c029511): the defaults.
NO_LIMITS = PlanLimits(10000, 256)


@record
class RunRecord:
    """`run/RUN`: a statement about to run, compiled, with what a resume needs.
    Written in the order run, line, source, args, index, path, plan_id, limits,
    plan (the statement last: its JSON, made once, is spliced in)."""

    COMPACT = True

    run: int
    line: int
    source: str
    args: tuple[Text, ...]
    plan: Statement
    #: The statement's index in its plan (records before 1791ce7: 0).
    index: int = 0
    #: Its place inside a compound statement ("t0", "f1.0"; records before fde10db: "").
    path: str = ""
    #: The id of the plan it is part of (`todo`'s); records before 1791ce7 have none.
    plan_id: str = ""
    limits: PlanLimits = NO_LIMITS


@record
class RunHead:
    """The fields of a run record that a listing and a replay read: the compiled
    statement is not decoded (a listing reads every run record of every session).
    Read only."""

    READ_ONLY = True

    run: int
    line: int
    source: str
    index: int = 0
    path: str = ""
    plan_id: str = ""


@record
class Todo:
    """`todo`: the plan being run (a script, a `-c` text, a prompt line), whole,
    with the script's arguments; `id` is its run records' `plan_id`."""

    COMPACT = True

    id: str
    plan: Plan
    args: tuple[Text, ...]


@record
class StageInput:
    """The input of the command stage `stage` (1-based) of a line."""

    stage: int
    input: InputFacts


@record
class RunHosts:
    """`hosts/RUN`: what a line resolved when it started, kept before any of its
    actions, so that a resume, on any machine, runs on the same hosts with the same
    input: its hosts in order (groups of inventories, result sets and bindings as
    they were then), and the input of each command stage that has one; for a `for`,
    its items instead (`items`: the loop goes through the same ones)."""

    COMPACT = True

    run: int
    hosts: tuple[str, ...]
    inputs: tuple[StageInput, ...] = ()
    #: A `for`'s items, as it went through them (None: not a `for`).
    items: tuple[Text, ...] | None = None


@record
class ResultSets:
    """`sets`: the result sets of the last line that ran on hosts, by name
    (ok, failed, …), each its hosts. Written as that mapping itself."""

    sets: Mapping[str, tuple[str, ...]]


# -- actions: act/ACTION/HOST, told apart by "state" -----------------------------


@record
class ActIntent:
    """An action about to start: written (and durable) before it does."""

    TAG = ("state", "intent")

    action: str
    host: str | None
    command: Text
    timeout: float
    machine: str
    #: When it started (seconds since the epoch, to the ms): a later owner that
    #: follows it keeps what is left of its timeout. Not kept before 0dce3f9.
    at: float | None = None
    #: Who the host was for this owner (a later one checks it before it probes);
    #: none for the session's own machine, nor before 6e48ecb.
    where: Identity | None = None
    #: A copy's: what it copies (a put's source's size and SHA-256); none for a command.
    copy: CopyFacts | None = None
    #: A command's standard input (`| stdin`): none when it reads /dev/null.
    stdin: InputFacts | None = None
    #: A local action's: the OS user whose spool holds it (on a shared machine a
    #: teammate's executor cannot reach it); none for a host's, nor before format 5.
    os_user: str | None = None


@record
class ActDone:
    """How an action ended, with the last TAIL_BYTES of its output."""

    TAG = ("state", "done")

    action: str
    host: str | None
    outcome: str
    exit: int | None
    seconds: float
    message: str
    out: Text
    err: Text
    #: The machine of the owner that ran it; a signal taken by an await is written
    #: without one.
    machine: str | None = None
    #: A copy's: what it copied (size, SHA-256) and whether it was there already.
    copied: CopyFacts | None = None


@record
class ActSleep:
    """A durable timer: a `sleep` stage's deadline (seconds since the epoch)."""

    TAG = ("state", "sleep")

    action: str
    host: str | None
    deadline: float


@record
class ActAwait:
    """An await waiting: what it waits for, and until when."""

    TAG = ("state", "await")

    action: str
    host: str | None
    what: Text
    deadline: float


ActionRecord = ActIntent | ActDone | ActSleep | ActAwait
ACTION_STATES: tuple[type[ActionRecord], ...] = (ActIntent, ActDone, ActSleep, ActAwait)


# -- the journal: j/SEQ, {"seq", "t", "kind", …} ----------------------------------


@record
class LineEntry:
    """A statement starts (run RUN, at line `line` of its source)."""

    TAG = ("kind", "line")

    run: int
    line: int
    source: str
    #: Who it came from: the person whose submission (or script) it is, and their
    #: machine (format 5; none before).
    by: str | None = None
    machine: str | None = None


@record
class StartEntry:
    """An action starts (its intent is durable)."""

    TAG = ("kind", "start")

    action: str
    host: str | None
    command: Text
    timeout: float
    #: A copy's: what it copies (format 3).
    copy: CopyFacts | None = None
    #: A command's standard input (`| stdin`, format 4).
    stdin: InputFacts | None = None


@record
class EndEntry:
    """An action ended."""

    TAG = ("kind", "end")

    action: str
    host: str | None
    outcome: str
    exit: int | None
    seconds: float
    message: str
    #: A copy's: the size and SHA-256 the host (or this machine) holds now (format 3).
    copied: CopyFacts | None = None


@record
class SleepEntry:
    """A sleep stage started (a durable timer)."""

    TAG = ("kind", "sleep")

    action: str
    host: str | None
    seconds: float
    deadline: float


@record
class AwaitEntry:
    """An await started waiting."""

    TAG = ("kind", "await")

    action: str
    host: str | None
    what: Text
    deadline: float


@record
class SignalEntry:
    """An await took a signal sent to the session (for every host at once)."""

    TAG = ("kind", "signal")

    action: str
    name: str
    value: Text
    #: The person who sent it (format 5; none before).
    by: str | None = None


@record
class CallbackEntry:
    """A callback was made: where it is POSTed."""

    TAG = ("kind", "callback")

    action: str
    host: str | None
    url: str


@record
class BindEntry:
    """A name was bound (its value is `bind/NAME`)."""

    TAG = ("kind", "bind")

    run: int
    name: str


@record
class DoneEntry:
    """A statement ended, ok or not."""

    TAG = ("kind", "done")

    run: int
    ok: bool
    seconds: float


@record
class RejectedEntry:
    """A submitted line was not run: it did not compile, or could not be read."""

    TAG = ("kind", "rejected")

    error: str


@record
class PromptEntry:
    """A question for whoever runs the session (a password for hosts' sudo): asked
    (`pending`, with its bound in seconds), then `answered`, `refused` or `timed
    out`. The answer itself is never written anywhere. (Format 2.)"""

    TAG = ("kind", "prompt")

    id: str
    text: str
    state: str
    bound: float


@record
class ControlEntry:
    """Someone acted on the session from outside: `what` is "cancel" (detail: the
    submission), "kill", "handover" (detail: "from MACHINE", the owner that hands
    it over), "takeover" (detail: "from PERSON@MACHINE", the owner it was taken
    from), "ask" (an approval asked for: its action, quorum, principals, team),
    "approve" or "deny" (a vote counted: its action, and comment). `by` is the
    person, from the path their request was under (a takeover: the new owner; an
    ask: the requester); `machine` theirs (a handover: the machine it goes to).
    (Format 5.)"""

    TAG = ("kind", "control")

    what: str
    by: str
    machine: str
    detail: str = ""


@record
class NoteEntry:
    """Something the owner says of the session for later (an ssh agent asked for that
    no attached client had). (Format 2.)"""

    TAG = ("kind", "note")

    text: str


JournalEntry = (
    LineEntry
    | StartEntry
    | EndEntry
    | SleepEntry
    | AwaitEntry
    | SignalEntry
    | CallbackEntry
    | BindEntry
    | DoneEntry
    | RejectedEntry
    | PromptEntry
    | NoteEntry
    | ControlEntry
)
ENTRY_KINDS: tuple[type[JournalEntry], ...] = (
    LineEntry,
    StartEntry,
    EndEntry,
    SleepEntry,
    AwaitEntry,
    SignalEntry,
    CallbackEntry,
    BindEntry,
    DoneEntry,
    RejectedEntry,
    PromptEntry,
    NoteEntry,
    ControlEntry,
)


@record
class Journaled:
    """A journal entry as the journal holds it: its number, when (seconds since the
    epoch, to the µs), and the entry, written flat: {"seq", "t", "kind", …}."""

    COMPACT = True

    seq: int
    t: float
    entry: JournalEntry


# -- bindings: bind/NAME, told apart by "kind" ------------------------------------


@record
class BoundText:
    """A value bound to a name: its bytes."""

    COMPACT = True
    TAG = ("kind", "value")

    text: bytes


@record
class BoundHosts:
    """A node set bound to a name: its hosts."""

    COMPACT = True
    TAG = ("kind", "hosts")

    hosts: tuple[str, ...]


@record
class BoundHost:
    """One host's result in a bound result (`v = @web uptime`)."""

    host: str | None
    outcome: str
    exit: int | None
    seconds: float
    attempts: int
    message: str
    out: bytes
    err: bytes
    truncated: bool


@record
class BoundResults:
    """A line's results bound to a name, whole."""

    COMPACT = True
    TAG = ("kind", "result")

    hosts: tuple[BoundHost, ...]


@record
class BoundSecret:
    """A secret bound to a name: only the prompt it was asked with, never its value
    (a new owner asks again). (Format 2.)"""

    COMPACT = True
    TAG = ("kind", "secret")

    prompt: str


Binding = BoundText | BoundHosts | BoundResults | BoundSecret
BINDING_KINDS: tuple[type[Binding], ...] = (BoundText, BoundHosts, BoundResults, BoundSecret)


# -- control: what processes ask each other through the store ---------------------


@record
class Submission:
    """`by/PERSON/s/NAME/in/ID`: a line a client submitted, for the executor to run."""

    id: str
    text: str
    #: The name its errors give the source ("<stdin>", a file).
    name: str
    first_line: int
    #: The client's machine (the executor answers another machine in `ctl/done/`).
    by: str
    #: The client's OS user (format 5; none before): another OS user's client on the
    #: owner's machine has no socket to it either.
    os_user: str | None = None

    def elsewhere(self, machine: str, os_user: str) -> bool:
        """Whether its client is not one on the owner's socket (`machine`, `os_user`)."""
        return self.by != machine or self.os_user not in (None, os_user)


@record
class SubmissionDone:
    """`ctl/done/ID`: how submission ID ended, for a client on another machine."""

    status: int | None
    error: str


@record
class Handover:
    """`ctl/handover`: a client (`dsh attach --take`) asks the owner to hand the
    session over to its machine; on the client's lease."""

    machine: str
    pid: int
    t: float
    #: The asking OS user (format 5; none before): on a machine several people share,
    #: the machine alone does not say where the session goes.
    os_user: str | None = None

    def to(self, machine: str, os_user: str) -> bool:
        """Whether it asks for the session to go to `os_user` on `machine`."""
        return self.machine == machine and self.os_user in (None, os_user)


@record
class Viewer:
    """`ctl/viewer/ID`: a client on another machine follows the session; on its lease."""

    machine: str
    pid: int


@record
class KillRequest:
    """`kill`: `dsh kill` asks the owner to stop."""

    by: str


# -- callbacks and servers (outside any user's keys) ------------------------------


@record
class Callback:
    """`/dsh/v1/cb/u/USER/TOKEN`: a callback an await waits for (`user`: its tree's name)."""

    user: str
    session: str
    action: str
    host: str | None
    #: Until when a POST is taken (seconds since the epoch): written once the
    #: await has looked, and none before.
    deadline: float | None = None


@record
class CallbackEvent:
    """`/dsh/v1/ev/u/USER/TOKEN`: the POST a callback received (written once)."""

    body: str
    t: float
    from_: str


@record
class Registration:
    """`/dsh/v1/serve/ID`: a running `dsh serve`, where it is reachable; on its lease."""

    url: str
    pid: int
    host: str


# -- who is who on a shared etcd (dsh.session.access) -------------------------------


@record
class Team:
    """`/dsh/v1/t/TEAM/members`: who is in team TEAM (written by `dsh admin`, as
    etcd's root); the owner of a team session reads its members' requests only."""

    name: str
    members: tuple[str, ...]
    changed: float


@record
class ApprovalAsk:
    """`/dsh/v1/t/TEAM/by/OWNER/ask/REQ`: an owner asks the team for an approval
    (on the owner's lease); REQ is the session's id and the action."""

    req: str
    tree: str
    session: str
    action: str
    #: Who asked (whose line the await is in): not counted as an approver (nor the
    #: owner) unless `requester_counts`.
    requester: str
    principals: str
    quorum: int
    deadline: float
    #: The owner's `[approval] self`: the requester and the owner count too.
    requester_counts: bool = False


@record
class Vote:
    """`/dsh/v1/t/TEAM/by/VOTER/vote/REQ`: VOTER approves (or denies) ask REQ."""

    req: str
    deny: bool
    comment: str
    machine: str
    t: float
    #: The session it was cast for, as the voter read it: the owner counts only votes
    #: cast for its own (an ask is the asker's words).
    tree: str
    session: str


@record
class Seen:
    """`u/NAME/seen/MACHINE`: the OS user that used etcd user NAME on MACHINE for team
    features, and when (seconds since the epoch): the shared-account tripwire."""

    os_user: str
    t: float


@record
class Person:
    """`/dsh/v1/people/NAME`: etcd user NAME is one person's account (`kind`
    "person") or a service's ("service"); written by `dsh admin` (etcd's root)."""

    name: str
    kind: str
    #: When it was made (seconds since the epoch), and by which etcd user.
    created: float
    by: str

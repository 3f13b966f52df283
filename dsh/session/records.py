"""Records: one type per value dsh writes to the store and per journal entry kind, and
the one codec that writes and reads them.

    dumps(record) -> bytes                 the bytes dsh has always written for it
    loads(Cls, raw, key=KEY) -> Cls        read one back (and load_action, load_entry,
                                           load_binding for the kinds told apart by a tag)
    as_dict(record) -> dict                its JSON object, for `--json` and for the
                                           executor's resume table

A record's fields are its annotations; each is written as its JSON field of the
same name (a trailing `_` dropped: `from_` is "from"), in the order declared.
Kinds told apart by a tag (`"state"` of an action record, `"kind"` of a journal
entry and of a binding) write it first. What the field types mean in JSON:

    str, int, float, bool    as they are (a float field takes an int too)
    Text                     a str that may hold bytes that are not UTF-8: the text
                             itself when it is UTF-8, else {"b64": …} (dsh.bytestext)
    bytes                    base64
    X | None                 null, or an X
    tuple[X, ...]            a list
    a record type            an object (PlanLimits, Identity, BoundHost)
    Statement, Plan          as dsh.plan encodes them (the run and todo records splice
                             that JSON text in: it is made once per statement)

Separators are each kind's own, as its first writer chose: `json.dumps`'s
defaults (`", "` and `": "`) for most, compact ones (`COMPACT = True`) for the
journal, run records, bindings and `todo`. A field with a default is optional:
a record written before the field existed reads as that default, which its
class documents. A default of None also means "not written while None" (the
owner's socket, an intent's `where`). Any other field missing or malformed, a
value that is not JSON, or an unknown tag is a `CorruptRecord`: a StoreError
naming the key and the field, never a default made up on the spot. (Readers of
control records that anyone with the store could forge, such as the inbox,
catch it and go on: see their modules.)

Encoding runs for every checkpoint step, so what a record type is in JSON is
found once, on its first use (plan.py's habit), and each record is then written
as a dict built as the old writers' dict literals were.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import inspect
import json
import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from dsh.bytestext import from_bytes, shown, stored
from dsh.errors import StoreError
from dsh.plan import Plan, Statement, dump_statement, load_statement
from dsh.plan import dumps as plan_dumps
from dsh.plan import loads as plan_loads
from dsh.record import record
from dsh.remote.base import Identity

R = TypeVar("R")

#: A str that may hold bytes that are not UTF-8 (surrogate escapes): written as
#: dsh.bytestext.stored writes it, read back as the same str.
Text = str


class CorruptRecord(StoreError):
    """A stored record that cannot be read: `key` is where it is, `field` the field
    at fault ("" for the whole record), `problem` what is wrong (with the field)."""

    def __init__(self, key: bytes, problem: str, field: str = "") -> None:
        self.key = key
        self.field = field
        self.problem = f"field {field!r} {problem}" if field else problem
        super().__init__(f"corrupt record {shown(from_bytes(key))}: {self.problem}")


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


@record
class StartEntry:
    """An action starts (its intent is durable)."""

    TAG = ("kind", "start")

    action: str
    host: str | None
    command: Text
    timeout: float


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


Binding = BoundText | BoundHosts | BoundResults
BINDING_KINDS: tuple[type[Binding], ...] = (BoundText, BoundHosts, BoundResults)


# -- control: what processes ask each other through the store ---------------------


@record
class Submission:
    """`ctl/in/SEQ`: a line a client submitted, for the executor to run."""

    id: str
    text: str
    #: The name its errors give the source ("<stdin>", a file).
    name: str
    first_line: int
    #: The client's machine (the executor answers another machine in `ctl/done/`).
    by: str


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
    """`/dsh/v1/cb/TOKEN`: a callback an await waits for."""

    user: str
    session: str
    action: str
    host: str | None
    #: Until when a POST is taken (seconds since the epoch): written once the
    #: await has looked, and none before.
    deadline: float | None = None


@record
class CallbackEvent:
    """`/dsh/v1/cb/TOKEN/event`: the POST a callback received (written once)."""

    body: str
    t: float
    from_: str


@record
class Registration:
    """`/dsh/v1/serve/ID`: a running `dsh serve`, where it is reachable; on its lease."""

    url: str
    pid: int
    host: str


# -- the codec ----------------------------------------------------------------------

_spaced = json.JSONEncoder().encode  # what json.dumps(x) writes
_compact = json.JSONEncoder(separators=(",", ":")).encode


def dumps(rec: object) -> bytes:
    """The bytes of `rec` in the store."""
    cls = type(rec)
    encode = _ENCODERS.get(cls)
    if encode is None:
        encode = _ENCODERS[cls] = _made(cls)[1]
    return encode(rec)


def as_dict(rec: object) -> dict[str, Any]:
    """The JSON object `rec` is written as (what `json.loads(dumps(rec))` gives)."""
    return _data_of(type(rec))(rec)


def entry_bytes(seq: int, t: float, entry: object, fields: Mapping[str, Any]) -> bytes:
    """A journal entry's bytes: `entry` a JournalEntry, or the name of its kind
    and `fields` its fields (dsh.runtime.journal.Checkpointer calls this)."""
    if isinstance(entry, str):
        entry = _ENTRY_BY_KIND[entry](**fields)
    return dumps(Journaled(seq, t, entry))  # type: ignore[arg-type]


def loads(cls: type[R], raw: bytes, *, key: bytes) -> R:
    """The record of type `cls` stored at `key` as `raw`. CorruptRecord if it is not
    one (a PlanError from dsh.plan for a statement or a plan it cannot read)."""
    try:
        data = _object(raw, key)
        special = _DECODERS.get(cls)
        if special is not None:
            return special(data)  # type: ignore[no-any-return]
        tag = _spec(cls).tag
        if tag is not None and data.get(tag[0]) != tag[1]:
            raise _Bad("is missing" if tag[0] not in data else f"is not {tag[1]!r}", tag[0])
        return _from(cls, data)
    except _Bad as bad:
        raise CorruptRecord(key, bad.problem, bad.field) from None


def load_action(raw: bytes, *, key: bytes) -> ActionRecord:
    """An action record: an intent, a result, a sleep or an await (by its "state")."""
    return _tagged(ACTION_STATES, raw, key)


def load_entry(raw: bytes, *, key: bytes) -> Journaled:
    """A journal entry, of any kind."""
    return loads(Journaled, raw, key=key)


def load_binding(raw: bytes, *, key: bytes) -> Binding:
    """A bound value: a value, a node set or a result (by its "kind")."""
    return _tagged(BINDING_KINDS, raw, key)


def _tagged(family: tuple[type[R], ...], raw: bytes, key: bytes) -> R:
    try:
        return _of_family(family, _object(raw, key))
    except _Bad as bad:
        raise CorruptRecord(key, bad.problem, bad.field) from None


def _of_family(family: tuple[type[R], ...], data: dict[str, Any]) -> R:
    by_tag = _FAMILIES.get(family)
    if by_tag is None:
        by_tag = _FAMILIES[family] = {_tag(cls)[1]: cls for cls in family}
    name = _tag(family[0])[0]
    cls = by_tag.get(data.get(name))  # type: ignore[arg-type]
    if cls is None:
        raise _Bad("is missing" if name not in data else f"is not one of {', '.join(by_tag)}", name)
    return _from(cls, data)


def _tag(cls: type) -> tuple[str, str]:
    tag = _spec(cls).tag
    assert tag is not None, cls
    return tag


_FAMILIES: dict[tuple[type, ...], dict[str, type]] = {}
_ENTRY_BY_KIND: dict[str, type[JournalEntry]] = {cls.TAG[1]: cls for cls in ENTRY_KINDS}


class _Bad(Exception):
    """A value that is not what its field holds: `problem`, at `field` (a path)."""

    def __init__(self, problem: str, field: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.field = field


_MISSING: Any = object()


def _object(raw: bytes, key: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise CorruptRecord(key, f"not JSON: {exc}") from None
    except RecursionError:
        raise CorruptRecord(key, "not JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise CorruptRecord(key, "not a JSON object")
    return data


def _from(cls: type[R], data: object) -> R:
    """A record of `cls` from its JSON object (its tag is the caller's to check)."""
    if not isinstance(data, dict):
        raise _Bad("is not an object")
    values = []
    for f in _spec(cls).fields:
        value = data.get(f.json, _MISSING)
        if value is _MISSING:
            if f.default is dataclasses.MISSING:
                raise _Bad("is missing", f.json)
            values.append(f.default)
            continue
        try:
            values.append(f.read(value))
        except _Bad as bad:
            raise _Bad(bad.problem, _path(f.json, bad.field)) from None
    return cls(*values)


def _path(outer: str, inner: str) -> str:
    """A field's path: `limits.fanout`, `hosts[2].exit`."""
    return outer if not inner else f"{outer}{inner}" if inner.startswith("[") else f"{outer}.{inner}"


def _reads(read: Callable[[object], object], value: object) -> bool:
    try:
        read(value)
    except _Bad:
        return False
    return True


# Reading a field: a check (and conversion) of its JSON value, _Bad if it is not one.


def _str(value: object) -> object:
    if type(value) is not str:
        raise _Bad("is not a string")
    return value


def _int(value: object) -> object:
    if type(value) is not int:
        raise _Bad("is not a whole number" if type(value) is float else "is not a number")
    return value


def _float(value: object) -> object:
    if type(value) is not float and type(value) is not int:
        raise _Bad("is not a number")
    return value


def _bool(value: object) -> object:
    if type(value) is not bool:
        raise _Bad("is not true or false")
    return value


def _text(value: object) -> object:
    if type(value) is str:
        return value
    if isinstance(value, dict) and len(value) == 1 and type(value.get("b64")) is str:
        try:
            return from_bytes(base64.b64decode(value["b64"], validate=True))
        except binascii.Error:
            pass
    raise _Bad("is not text")


def _bytes(value: object) -> object:
    if type(value) is str:
        try:
            return base64.b64decode(value)
        except binascii.Error:
            pass
    raise _Bad("is not base64")


def _statement(value: object) -> object:
    return load_statement(value)  # type: ignore[arg-type]  # PlanError if it is not one


def _plan(value: object) -> object:
    return plan_loads(_compact(value))  # PlanError if it is not one


_READERS: dict[str, Callable[[object], object]] = {
    "str": _str,
    "int": _int,
    "float": _float,
    "bool": _bool,
    "Text": _text,
    "bytes": _bytes,
    "Statement": _statement,
    "Plan": _plan,
}


def _reader(kind: str) -> Callable[[object], object]:
    if kind.endswith(" | None"):
        inner = _reader(kind.removesuffix(" | None"))
        return lambda value: None if value is None else inner(value)
    if kind.startswith("tuple[") and kind.endswith(", ...]"):
        item = _reader(kind[len("tuple[") : -len(", ...]")])

        def items(value: object) -> object:
            if not isinstance(value, list):
                raise _Bad("is not a list")
            try:
                return tuple([item(v) for v in value])
            except _Bad as bad:  # which one: the first that is not one
                at = next(i for i, v in enumerate(value) if not _reads(item, v))
                raise _Bad(bad.problem, _path(f"[{at}]", bad.field)) from None

        return items
    if kind in _READERS:
        return _READERS[kind]
    cls = _nested(kind)
    return lambda value: _from(cls, value)


def _nested(kind: str) -> type:
    cls = globals().get(kind)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"records: no codec for a field of type {kind}")
    return cls


# What a record type is in JSON, found once per type.


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str  # the attribute
    json: str  # the JSON field
    kind: str  # the annotation, as written
    read: Callable[[object], object]
    default: object  # dataclasses.MISSING: required


@dataclasses.dataclass(frozen=True, slots=True)
class _Spec:
    tag: tuple[str, str] | None
    compact: bool
    fields: tuple[_Field, ...]


_SPECS: dict[type, _Spec] = {}


def _spec(cls: type) -> _Spec:
    spec = _SPECS.get(cls)
    if spec is None:
        kinds = inspect.get_annotations(cls)
        spec = _SPECS[cls] = _Spec(
            getattr(cls, "TAG", None),
            bool(getattr(cls, "COMPACT", False)),
            tuple(
                _Field(f.name, f.name.rstrip("_"), str(kinds[f.name]), _reader(str(kinds[f.name])), f.default)
                for f in dataclasses.fields(cls)
            ),
        )
    return spec


# Writing: per record type, found once, each field's JSON name, how its value is
# written (None: as it is) and whether it is left out while None; its JSON object
# is then the tag, and the fields in order (a dict built as the old writers' dict
# literals were: about as fast, and nothing compiled at start-up).

_DATA: dict[type, Callable[[Any], dict[str, Any]]] = {}
_ENCODERS: dict[type, Callable[[Any], bytes]] = {}
_PLAIN = ("str", "int", "float", "bool")


def _data_of(cls: type) -> Callable[[Any], dict[str, Any]]:
    data = _DATA.get(cls)
    if data is None:
        data = _DATA[cls] = _made(cls)[0]
    return data


def _made(cls: type) -> tuple[Callable[[Any], dict[str, Any]], Callable[[Any], bytes]]:
    special = _SPECIAL_ENCODERS.get(cls)
    if special is not None:
        return special
    if getattr(cls, "READ_ONLY", False):
        raise TypeError(f"records: {cls.__name__} is read, never written")
    spec = _spec(cls)
    get = operator.attrgetter(*[f.name for f in spec.fields])
    # attrgetter of one name gives the value itself, not a tuple of one
    values: Callable[[Any], tuple[Any, ...]] = get if len(spec.fields) > 1 else lambda r: (get(r),)
    fields: list[tuple[str, Callable[[Any], Any] | None, bool]] = []
    for f in spec.fields:
        omitted = f.default is None
        if not omitted and any(later for _, _, later in fields):
            raise TypeError(f"records: {cls.__name__}.{f.name} is always written, after one that is not")
        fields.append((f.json, _writer(f.kind), omitted))
    tag = spec.tag
    encode = _compact if spec.compact else _spaced

    def data(r: Any) -> dict[str, Any]:
        d: dict[str, Any] = {tag[0]: tag[1]} if tag is not None else {}
        for (name, write, omitted), value in zip(fields, values(r), strict=True):
            if value is None:
                if omitted:
                    continue
            elif write is not None:
                value = write(value)
            d[name] = value
        return d

    def dumps(r: Any) -> bytes:
        return encode(data(r)).encode()

    return data, dumps


def _writer(kind: str) -> Callable[[Any], Any] | None:
    """How a value of type `kind` is written (None: as it is; None is null)."""
    if kind.endswith(" | None"):
        return _writer(kind.removesuffix(" | None"))
    if kind.startswith("tuple[") and kind.endswith(", ...]"):
        item = _writer(kind[len("tuple[") : -len(", ...]")])
        if item is None:
            return None  # json writes a tuple as a list
        return lambda values: [item(v) for v in values]
    if kind in _PLAIN:
        return None
    if kind == "Text":
        return stored
    if kind == "bytes":
        return _b64
    return _data_of(_nested(kind))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


#: A statement's JSON text, by id (the statement is kept: its id stays its own). A
#: loop runs one statement many times, and the plan's size is checked with the
#: same statements before: each is encoded once.
_STATEMENTS: dict[int, tuple[Statement, str]] = {}


def statement_json(stmt: Statement) -> str:
    """A compiled statement as the JSON text its run records hold."""
    held = _STATEMENTS.get(id(stmt))
    if held is None or held[0] is not stmt:
        if len(_STATEMENTS) > 1000:
            _STATEMENTS.clear()
        held = _STATEMENTS[id(stmt)] = (stmt, _compact(dump_statement(stmt)))
    return held[1]


def _run_data(r: RunRecord) -> dict[str, Any]:
    raise TypeError("records: a run record is written whole (dumps), with its statement spliced in")


def _run_dumps(r: RunRecord) -> bytes:
    head = _compact(
        {
            "run": r.run,
            "line": r.line,
            "source": r.source,
            "args": [stored(a) for a in r.args],
            "index": r.index,
            "path": r.path,
            "plan_id": r.plan_id,
            "limits": _data_of(PlanLimits)(r.limits),
        }
    )
    return f'{head[:-1]},"plan":{statement_json(r.plan)}}}'.encode()


def _todo_data(r: Todo) -> dict[str, Any]:
    raise TypeError("records: a todo record is written whole (dumps), with its plan spliced in")


def _todo_dumps(r: Todo) -> bytes:
    args = _spaced([stored(a) for a in r.args])
    return f'{{"id":{_spaced(r.id)},"plan":{plan_dumps(r.plan)},"args":{args}}}'.encode()


def _journaled_data(r: Journaled) -> dict[str, Any]:
    return {"seq": r.seq, "t": r.t, **_data_of(type(r.entry))(r.entry)}


def _journaled_dumps(r: Journaled) -> bytes:
    return _compact(_journaled_data(r)).encode()


def _sets_data(r: ResultSets) -> dict[str, Any]:
    return {name: list(hosts) for name, hosts in r.sets.items()}


def _sets_dumps(r: ResultSets) -> bytes:
    return _spaced(r.sets).encode()  # json writes each tuple of hosts as a list


_SPECIAL_ENCODERS: dict[type, tuple[Callable[[Any], dict[str, Any]], Callable[[Any], bytes]]] = {
    RunRecord: (_run_data, _run_dumps),
    Todo: (_todo_data, _todo_dumps),
    Journaled: (_journaled_data, _journaled_dumps),
    ResultSets: (_sets_data, _sets_dumps),
}


# Reading the records that are not one JSON object of fields.


def _load_journaled(data: dict[str, Any]) -> Journaled:
    entry: JournalEntry = _of_family(ENTRY_KINDS, data)
    seq, t = _field(data, "seq", _int), _field(data, "t", _float)
    return Journaled(seq, t, entry)  # type: ignore[arg-type]


def _field(data: dict[str, Any], name: str, read: Callable[[object], object]) -> object:
    if name not in data:
        raise _Bad("is missing", name)
    try:
        return read(data[name])
    except _Bad as bad:
        raise _Bad(bad.problem, name) from None


def _load_sets(data: dict[str, Any]) -> ResultSets:
    sets: dict[str, tuple[str, ...]] = {}
    for name, hosts in data.items():
        if not isinstance(hosts, list) or any(type(h) is not str for h in hosts):
            raise _Bad("is not a list of hosts", name)
        sets[name] = tuple(hosts)
    return ResultSets(sets)


_DECODERS: dict[type, Callable[[dict[str, Any]], Any]] = {
    Journaled: _load_journaled,
    ResultSets: _load_sets,
}

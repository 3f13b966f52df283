"""The client↔executor protocol: one record type per message, its version, its bytes.

An executor process and its clients on the same machine talk over the
executor's Unix socket (dsh.localsocket) in JSON lines, one message a line.
This module is the only place those lines are made and read:

    encode(message) -> bytes                  one line, with its newline
    decode_event(raw, peer=…) -> Event        a line an executor sent (a client reads it)
    decode_op(raw, peer=…) -> Op              a line a client sent (an executor reads it)

Every message carries the protocol version, "v": PROTOCOL, after its tag ("ev"
for what an executor says, "op" for what a client asks); a line without one was
written by a dsh from before versions were numbered, which spoke version 1.
The two ends talk only when they speak the same version: any other is refused
with one sentence (OtherProtocol), as is a message whose tag this dsh does not
know or whose fields are not what its record says (ProtocolError): a
ProtocolError is a DshError of exit status 3, never a traceback.

A record's fields are its annotations, each written as the JSON field of the same
name (a trailing `_` dropped: `def_` is "def"), in the order declared; a field
with a default of None is not written while None. Field types in JSON:

    str, int, float, bool    as they are (a float field takes an int too)
    bytes                    base64
    X | None                 null, or an X
    tuple[str, ...]          a list
    Statement                as dsh.plan.dump_statement writes it (with the plan version)
    HostResult               {"host", "outcome", "exit", "seconds", "attempts", "message",
                             "out", "err", "truncated"}, out and err in base64
    Exec                     {"outcome", "exit", "seconds", "message"}

Events (an executor's): the reporter's calls (`stmt`, `line`, `out`, `retry`,
`host`, `done-line`, `msg`, and `copying` (version 3): dsh.runtime.wire makes
them and replays them),
`hello` first on every connection, the control events `done`, `idle`,
`end` and `bye`, and the questions `ask` and `asked` (version 2). Ops (a
client's): `poke`, `cancel`, `wait`, `bye`, and `answer` and `agent` (version 2).
docs/architecture.md ("The executor process and its clients") says what each means.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
from collections.abc import Callable
from typing import Any, get_args

from dsh.errors import DshError, PlanError
from dsh.exits import Exit
from dsh.plan import Statement, dump_statement, load_statement
from dsh.record import record
from dsh.remote.base import Exec
from dsh.runtime.results import HostResult

#: The version of the protocol this dsh speaks. A new message, or a new field that
#: the other end would misread without, makes it one more. 3: `copying` (issue 19).
PROTOCOL = 3
#: The JSON field of a message's version.
VERSION = "v"


class ProtocolError(DshError):
    """A line from the other end that this dsh cannot take: not JSON, an unknown
    tag, a field missing or malformed. The session cannot go on with that peer."""

    exit_code = Exit.STORE


class OtherProtocol(ProtocolError):
    """The other end speaks another version of the protocol (`version`)."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


# -- what an executor says ---------------------------------------------------------


@record
class Hello:
    """The first line on every connection: who serves it, and what it runs now (the
    submission's id, "resume" or "script"; None when idle)."""

    TAG = "hello"

    session: str
    pid: int
    running: str | None


@record
class Stmt:
    """A statement that runs already when the client connects (after `hello`)."""

    TAG = "stmt"

    k: int
    def_: Statement


@record
class Line:
    """A statement starts (`k` numbers it for the events that follow), on `hosts`."""

    TAG = "line"

    k: int
    def_: Statement
    hosts: tuple[str, ...]


@record
class Out:
    """Output of statement `k` from a host (None: this machine), as it comes."""

    TAG = "out"

    k: int
    host: str | None
    stream: str
    data: bytes


@record
class Copying:
    """A copy of statement `k` to or from a host has moved `done` bytes of `total`."""

    TAG = "copying"

    k: int
    host: str | None
    done: int
    total: int


@record
class Retry:
    """An attempt of statement `k` on a host failed; another comes after `wait` s."""

    TAG = "retry"

    k: int
    host: str | None
    failed: Exec
    attempt: int
    wait: float


@record
class HostDone:
    """A host's flow of statement `k` ended (its output is not repeated here)."""

    TAG = "host"

    k: int
    result: HostResult


@record
class LineDone:
    """Statement `k` ended: its results, with at most wire.SUMMARY_BYTES of each
    host's stdout and of its stderr."""

    TAG = "done-line"

    k: int
    def_: Statement
    hosts: tuple[HostResult, ...]
    seconds: float
    on_hosts: bool
    note: str
    consumed: bool


@record
class Msg:
    """A message of the executor's, shown as dsh's own."""

    TAG = "msg"

    text: str


@record
class Done:
    """Submission `id` is over: its status (None: it ran nothing), or why it was
    refused (a compile error, with its caret)."""

    TAG = "done"

    id: str
    status: int | None
    error: str | None = None


@record
class Idle:
    """The answer to `wait`: the session's work is over, with its status."""

    TAG = "idle"

    status: int


@record
class End:
    """The session ended for its clients (killed, its lease lost, handed over, or
    another error): the status a client exits with, and why."""

    TAG = "end"

    exit: int
    message: str


@record
class Bye:
    """The answer to `bye` (whether the executor stays), and the executor's last word
    (with the status it exits with)."""

    TAG = "bye"

    stays: bool
    exit: int | None = None


@record
class Ask:
    """A question for whoever is attached (a password for hosts' sudo): ask it, and
    send `answer` with its id; the first answer from any client wins. `secret`:
    typed without echo. `bound`: seconds left to answer when it was sent."""

    TAG = "ask"

    id: str
    text: str
    secret: bool
    bound: float


@record
class Asked:
    """Question `id` needs no answer any more (answered, by this client or another,
    or out of time): a client still asking it stops."""

    TAG = "asked"

    id: str
    how: str


# -- what a client asks ------------------------------------------------------------


@record
class Poke:
    """A line was submitted to the inbox: read it now."""

    TAG = "poke"


@record
class Cancel:
    """Cancel submission `id` if it runs ("*": whatever runs)."""

    TAG = "cancel"

    id: str


@record
class Wait:
    """Say `idle` when the session's work is over."""

    TAG = "wait"


@record
class Leave:
    """The client goes (`bye`): answer whether the executor stays."""

    TAG = "bye"


@record
class Answer:
    """The answer to question `id` (None: the user declined). It travels only over
    the executor's socket, which only its user can reach; the executor keeps it in
    memory and nowhere else."""

    TAG = "answer"

    id: str
    text: str | None = None


@record
class Agent:
    """The client's ssh-agent (its SSH_AUTH_SOCK; None: it has none): while it is
    attached, hosts reached with ForwardAgent get this agent (dsh/agentrelay.py)."""

    TAG = "agent"

    path: str | None = None


Event = (
    Hello
    | Stmt
    | Line
    | Out
    | Copying
    | Retry
    | HostDone
    | LineDone
    | Msg
    | Done
    | Idle
    | End
    | Bye
    | Ask
    | Asked
)
Op = Poke | Cancel | Wait | Leave | Answer | Agent
Message = Event | Op

EVENTS: tuple[type[Event], ...] = get_args(Event)
OPS: tuple[type[Op], ...] = get_args(Op)


# -- the bytes ---------------------------------------------------------------------

_compact = json.JSONEncoder(separators=(",", ":")).encode  # an executor's lines
_spaced = json.JSONEncoder().encode  # a client's (json.dumps's defaults, as they always were)


def encode(message: Message) -> bytes:
    """The line `message` is sent as (with its newline)."""
    spec = _specs()[type(message)]
    data: dict[str, Any] = {spec.tag_key: spec.tag, VERSION: PROTOCOL}
    for name, wire_name, kind, optional in spec.fields:
        value = getattr(message, name)
        if value is None and optional:
            continue
        data[wire_name] = None if value is None else _KINDS[kind][0](value)
    return (spec.dumps(data) + "\n").encode()


def decode_event(raw: bytes, *, peer: str, remedy: str) -> Event:
    """The event in the line `raw` from `peer` (an executor, said in sentences as
    "the executor of session NAME"); ProtocolError, ending in `remedy` for another
    version, if it cannot be taken."""
    return _decode(raw, "ev", peer, remedy)  # type: ignore[return-value]


def decode_op(raw: bytes, *, peer: str, remedy: str) -> Op:
    """The op in the line `raw` from `peer` (a client); ProtocolError if it cannot be taken."""
    return _decode(raw, "op", peer, remedy)  # type: ignore[return-value]


def _decode(raw: bytes, tag_key: str, peer: str, remedy: str) -> Message:
    try:
        data = json.loads(raw)
    except ValueError:  # UnicodeDecodeError is one too
        raise ProtocolError(f"{peer} sent a line that is not JSON: {_shown(raw)}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{peer} sent a line that is not a message: {_shown(raw)}")
    version = data.get(VERSION, 1)
    if type(version) is not int:
        raise ProtocolError(f"{peer} sent a message whose version is not a number: {_shown(raw)}")
    if version != PROTOCOL:
        raise OtherProtocol(f"{peer} speaks protocol {version}, this dsh {PROTOCOL}: {remedy}", version)
    tag = data.get(tag_key)
    spec = _by_tag(tag_key).get(tag) if isinstance(tag, str) else None
    if spec is None:
        raise ProtocolError(f"{peer} sent a message this dsh does not know ({tag_key} {tag!r})")
    values: list[Any] = []
    for _name, wire_name, kind, optional in spec.fields:
        if wire_name not in data:
            if not optional:
                raise ProtocolError(f"{peer} sent {tag!r} without its field {wire_name!r}")
            values.append(None)
            continue
        value = data[wire_name]
        try:
            values.append(None if value is None and _nullable(kind) else _KINDS[kind][1](value))
        except (_Bad, PlanError) as exc:
            why = exc.message if isinstance(exc, PlanError) else str(exc)
            raise ProtocolError(f"{peer} sent {tag!r} whose field {wire_name!r} {why}") from None
    message: Message = spec.cls(*values)
    return message


def _shown(raw: bytes) -> str:
    text = raw.decode("utf-8", "backslashreplace").strip()
    return repr(text if len(text) <= 80 else text[:80] + "…")


# -- what each record is in JSON (found once) -------------------------------------


class _Spec:
    def __init__(self, cls: type[Any], tag_key: str) -> None:
        self.cls = cls
        self.tag_key = tag_key
        self.tag: str = cls.TAG
        self.dumps = _compact if tag_key == "ev" else _spaced
        #: (attribute, JSON name, kind, optional: a default of None)
        self.fields: list[tuple[str, str, str, bool]] = []
        defaults = {n: p.default for n, p in inspect.signature(cls).parameters.items()}
        for name, kind in inspect.get_annotations(cls).items():
            if kind not in _KINDS:
                raise TypeError(f"{cls.__name__}.{name}: {kind} has no wire form")
            optional = defaults.get(name) is None
            self.fields.append((name, name.removesuffix("_"), kind, optional))


_SPECS: dict[type[Any], _Spec] = {}
_TAGS: dict[str, dict[str, _Spec]] = {}


def _specs() -> dict[type[Any], _Spec]:
    if not _SPECS:
        for family, key in ((EVENTS, "ev"), (OPS, "op")):
            for cls in family:
                spec = _SPECS[cls] = _Spec(cls, key)
                _TAGS.setdefault(key, {})[spec.tag] = spec
    return _SPECS


def _by_tag(tag_key: str) -> dict[str, _Spec]:
    _specs()
    return _TAGS[tag_key]


class _Bad(Exception):
    """A field's value is not what its record says (the text says what it is not)."""


def _nullable(kind: str) -> bool:
    return kind.endswith("| None")


def _plain(kind: type[Any], name: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not kind and not (kind is float and type(value) is int):
            raise _Bad(f"is not {name}")
        return float(value) if kind is float else value

    return check


def _bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Bad("is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("is not base64") from None


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad("is not a list of strings")
    return tuple(value)


def _object(value: Any, *names: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad("is not an object")
    for name in names:
        if name not in value:
            raise _Bad(f"has no {name!r}")
    return value


_INT, _STR, _FLOAT, _BOOL = (
    _plain(int, "a number"),
    _plain(str, "text"),
    _plain(float, "a number"),
    _plain(bool, "true or false"),
)


def _dump_result(result: HostResult) -> dict[str, Any]:
    return {
        "host": result.host,
        "outcome": result.outcome,
        "exit": result.exit_status,
        "seconds": result.seconds,
        "attempts": result.attempts,
        "message": result.message,
        "out": base64.b64encode(result.out).decode(),
        "err": base64.b64encode(result.err).decode(),
        "truncated": result.truncated,
    }


def _load_result(value: Any) -> HostResult:
    data = _object(value, "host", "outcome", "exit", "seconds", "out", "err", "truncated")
    host = data["host"]
    exit_status = data["exit"]
    return HostResult(
        None if host is None else _STR(host),
        _STR(data["outcome"]),
        None if exit_status is None else _INT(exit_status),
        _FLOAT(data["seconds"]),
        attempts=_INT(data.get("attempts", 1)),
        message=_STR(data.get("message", "")),
        out=_bytes(data["out"]),
        err=_bytes(data["err"]),
        truncated=_BOOL(data["truncated"]),
    )


def _load_results(value: Any) -> tuple[HostResult, ...]:
    if not isinstance(value, list):
        raise _Bad("is not a list")
    return tuple(_load_result(v) for v in value)


def _dump_exec(failed: Exec) -> dict[str, Any]:
    return {
        "outcome": failed.outcome,
        "exit": failed.exit_status,
        "seconds": failed.seconds,
        "message": failed.message,
    }


def _load_exec(value: Any) -> Exec:
    data = _object(value, "outcome", "exit", "seconds", "message")
    status = data["exit"]
    return Exec(
        _STR(data["outcome"]),
        None if status is None else _INT(status),
        _FLOAT(data["seconds"]),
        _STR(data["message"]),
    )


def _load_statement(value: Any) -> Statement:
    return load_statement(_object(value))


def _same(value: Any) -> Any:
    return value


#: Each field type: how it is written, and how it is read back (raising _Bad).
_KINDS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    "str": (_same, _STR),
    "int": (_same, _INT),
    "float": (_same, _FLOAT),
    "bool": (_same, _BOOL),
    "str | None": (_same, _STR),
    "int | None": (_same, _INT),
    "bytes": (lambda data: base64.b64encode(data).decode(), _bytes),
    "tuple[str, ...]": (list, _strings),
    "Statement": (dump_statement, _load_statement),
    "HostResult": (_dump_result, _load_result),
    "tuple[HostResult, ...]": (lambda results: [_dump_result(r) for r in results], _load_results),
    "Exec": (_dump_exec, _load_exec),
}

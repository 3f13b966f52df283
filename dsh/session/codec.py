"""The codec of dsh.session.records: the one place a stored record becomes bytes and
bytes become a record again.


    dumps(record) -> bytes                 the bytes dsh has always written for it
    loads(Cls, raw, key=KEY) -> Cls        read one back (and load_action, load_entry,
                                           load_binding for the kinds told apart by a tag)
    as_dict(record) -> dict                its JSON object (without its format), for
                                           `--json` and for the executor's resume table

Every record is written with its format, "v": records.FORMAT (after its tag, if
it has one; a journal entry's after its "seq" and "t"), and read back only if it
is not newer: a record without one is format 1; a newer one is a NewerRecord,
which names the key and both formats.

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

from dsh.bytestext import from_bytes, stored
from dsh.plan import Statement, dump_statement, load_statement
from dsh.plan import dumps as plan_dumps
from dsh.plan import loads as plan_loads
from dsh.session import records
from dsh.session.records import (
    ACTION_STATES,
    BINDING_KINDS,
    ENTRY_KINDS,
    FORMAT,
    ActionRecord,
    Binding,
    CorruptRecord,
    Journaled,
    JournalEntry,
    NewerRecord,
    PlanLimits,
    ResultSets,
    RunRecord,
    Todo,
)
from dsh.store.base import KV

R = TypeVar("R")
#: The JSON field of a record's format (dsh.session.records.FORMAT).
VERSION = "v"


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


def readable(cls: type[R], held: KV | None) -> R | None:
    """A control record (owner, handover, …) as `cls`, or None when there is none or
    it cannot be read (damaged, or written by someone else): whoever reads it goes
    on without it, and a forged record never stops a process (fault report #9)."""
    if held is None:
        return None
    try:
        return loads(cls, held.value, key=held.key)
    except CorruptRecord:
        return None


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
    version = data.pop(VERSION, 1)  # none: written before formats were numbered
    if type(version) is not int or version < 1:
        raise CorruptRecord(key, "is not a format number", VERSION)
    if version > FORMAT:
        raise NewerRecord(key, version)
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
    cls = vars(records).get(kind)
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

    def data(r: Any, top: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {tag[0]: tag[1]} if tag is not None else {}
        if top:  # a record in the store (not one inside another): its format
            d[VERSION] = FORMAT
        for (name, write, omitted), value in zip(fields, values(r), strict=True):
            if value is None:
                if omitted:
                    continue
            elif write is not None:
                value = write(value)
            d[name] = value
        return d

    def dumps(r: Any) -> bytes:
        return encode(data(r, True)).encode()

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
            VERSION: FORMAT,
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
    return f'{{"{VERSION}":{FORMAT},"id":{_spaced(r.id)},"plan":{plan_dumps(r.plan)},"args":{args}}}'.encode()


def _journaled_data(r: Journaled) -> dict[str, Any]:
    return {"seq": r.seq, "t": r.t, **_data_of(type(r.entry))(r.entry)}


def _journaled_dumps(r: Journaled) -> bytes:
    return _compact({"seq": r.seq, "t": r.t, VERSION: FORMAT, **_data_of(type(r.entry))(r.entry)}).encode()


def _sets_data(r: ResultSets) -> dict[str, Any]:
    return {name: list(hosts) for name, hosts in r.sets.items()}


def _sets_dumps(r: ResultSets) -> bytes:
    return _spaced({VERSION: FORMAT, **r.sets}).encode()  # json writes each tuple of hosts as a list


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

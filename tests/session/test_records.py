"""The records of the store and their one codec (issue 17, item 2): every kind reads
back as itself and writes the bytes its old writer wrote; every record of the
stores that older dsh releases wrote reads, and writes back the same bytes; a
required field missing or malformed is a CorruptRecord naming the key and the
field; an optional field's absence gives the default its class documents."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from dsh.bytestext import from_bytes
from dsh.errors import StoreError
from dsh.lang.compiler import Context, compile_source
from dsh.lang.source import Source
from dsh.plan import dump_statement
from dsh.plan import dumps as plan_dumps
from dsh.remote.base import CopyFacts, Identity, InputFacts
from dsh.session import codec
from dsh.session import records as r
from dsh.session.keys import Keys, callback_key, callback_path, event_key, parse_callback_path, user_tree

FIXTURES = Path(__file__).parent.parent / "fixtures" / "stores"
PLAN = compile_source(Source("t.dsh", "echo hi\nx = 5\n"), Context())
STMT = PLAN.statements[0]
STMT_JSON = json.dumps(dump_statement(STMT), separators=(",", ":"))
NOT_UTF8 = from_bytes(b"\xff\n")  # b64: "/wo="

#: (a record, the bytes its writer wrote before records.py existed: the old dict
#: literal through json.dumps, with that writer's separators).
SAMPLES: list[tuple[object, bytes]] = [
    (
        r.Owner("m1", 4242, 1796497974.167442, 1.0),
        b'{"machine": "m1", "pid": 4242, "since": 1796497974.167442, "ttl": 1.0}',
    ),
    (
        r.Owner("m1", 4242, 1796497974.5, 5, "/run/dsh/s1.sock"),
        b'{"machine": "m1", "pid": 4242, "since": 1796497974.5, "ttl": 5, "socket": "/run/dsh/s1.sock"}',
    ),
    (
        r.Meta("s1", 1796497973.718463, "m1", "d260b6fd4e8f", False),
        b'{"name": "s1", "created": 1796497973.718463, "machine": "m1", "id": "d260b6fd4e8f", '
        b'"named": false}',
    ),
    (
        r.ActIntent(
            "3.1.1", "web1", "uptime", 600.0, "m1", 1796497974.185, Identity("root@web1:22", "SHA256:k")
        ),
        b'{"state": "intent", "action": "3.1.1", "host": "web1", "command": "uptime", "timeout": 600.0, '
        b'"machine": "m1", "at": 1796497974.185, "where": {"login": "root@web1:22", "key": "SHA256:k"}}',
    ),
    (
        r.ActIntent(
            "5.1.1", "web1", "wc -c", 10.0, "m1", 1.5, None, None, InputFacts("/tmp/in.txt", 6, "ab" * 32)
        ),
        b'{"state": "intent", "action": "5.1.1", "host": "web1", "command": "wc -c", "timeout": 10.0, '
        b'"machine": "m1", "at": 1.5, "stdin": {"path": "/tmp/in.txt", "size": 6, "sha256": "'
        + b"ab" * 32
        + b'"}}',
    ),
    (
        r.ActIntent("3.1.1", None, "printf '\\377'", 1.5, "m1", 1796497974.185),
        b'{"state": "intent", "action": "3.1.1", "host": null, "command": "printf \'\\\\377\'", '
        b'"timeout": 1.5, "machine": "m1", "at": 1796497974.185}',
    ),
    (
        r.ActDone("1.1.1", None, "ok", 0, 0.014887, "", "started\n", NOT_UTF8, "m1"),
        b'{"state": "done", "action": "1.1.1", "host": null, "outcome": "ok", "exit": 0, '
        b'"seconds": 0.014887, "message": "", "out": "started\\n", "err": {"b64": "/wo="}, "machine": "m1"}',
    ),
    (  # a signal taken by an await: no machine
        r.ActDone("8.1.1", None, "ok", 0, 0.0, "", "alice", ""),
        b'{"state": "done", "action": "8.1.1", "host": null, "outcome": "ok", "exit": 0, "seconds": 0.0, '
        b'"message": "", "out": "alice", "err": ""}',
    ),
    (
        r.ActDone("2.1.2", "web1", "timeout", None, 5.0, "no exit within 5s", "", "", "m1"),
        b'{"state": "done", "action": "2.1.2", "host": "web1", "outcome": "timeout", "exit": null, '
        b'"seconds": 5.0, "message": "no exit within 5s", "out": "", "err": "", "machine": "m1"}',
    ),
    (
        r.ActSleep("9.1.1", None, 1796497973.986927),
        b'{"state": "sleep", "action": "9.1.1", "host": null, "deadline": 1796497973.986927}',
    ),
    (
        r.ActAwait("7.1.1", "web2", "await key k1 within 5s", 1796497978.97481),
        b'{"state": "await", "action": "7.1.1", "host": "web2", "what": "await key k1 within 5s", '
        b'"deadline": 1796497978.97481}',
    ),
    (
        r.Journaled(1, 1796497973.720309, r.LineEntry(1, 1, "echo made")),
        b'{"seq":1,"t":1796497973.720309,"kind":"line","run":1,"line":1,"source":"echo made"}',
    ),
    (
        r.Journaled(2, 1796497973.720381, r.StartEntry("1.1.1", "web1", NOT_UTF8, 600.0)),
        b'{"seq":2,"t":1796497973.720381,"kind":"start","action":"1.1.1","host":"web1",'
        b'"command":{"b64":"/wo="},"timeout":600.0}',
    ),
    (
        r.Journaled(3, 1796497973.737741, r.EndEntry("1.1.1", None, "failed", 1, 0.01668, "")),
        b'{"seq":3,"t":1796497973.737741,"kind":"end","action":"1.1.1","host":null,"outcome":"failed",'
        b'"exit":1,"seconds":0.01668,"message":""}',
    ),
    (
        r.Journaled(35, 1796497973.976941, r.SleepEntry("9.1.1", None, 0.01, 1796497973.986927)),
        b'{"seq":35,"t":1796497973.976941,"kind":"sleep","action":"9.1.1","host":null,"seconds":0.01,'
        b'"deadline":1796497973.986927}',
    ),
    (
        r.Journaled(24, 1796497973.974828, r.AwaitEntry("7.1.1", None, "await key k1", 1796497978.97481)),
        b'{"seq":24,"t":1796497973.974828,"kind":"await","action":"7.1.1","host":null,"what":"await key k1",'
        b'"deadline":1796497978.97481}',
    ),
    (
        r.Journaled(30, 1796497973.976427, r.SignalEntry("8.1.1", "go", "alice")),
        b'{"seq":30,"t":1796497973.976427,"kind":"signal","action":"8.1.1","name":"go","value":"alice"}',
    ),
    (
        r.Journaled(4, 1796497974.5, r.CallbackEntry("5.1.1", None, "http://h:8080/cb/TOKEN")),
        b'{"seq":4,"t":1796497974.5,"kind":"callback","action":"5.1.1","host":null,'
        b'"url":"http://h:8080/cb/TOKEN"}',
    ),
    (
        r.Journaled(6, 1796497973.943684, r.BindEntry(2, "x")),
        b'{"seq":6,"t":1796497973.943684,"kind":"bind","run":2,"name":"x"}',
    ),
    (
        r.Journaled(7, 1796497973.943703, r.DoneEntry(2, True, 0.0)),
        b'{"seq":7,"t":1796497973.943703,"kind":"done","run":2,"ok":true,"seconds":0.0}',
    ),
    (
        r.Journaled(8, 1796497974.0, r.RejectedEntry("submission 1 cannot be read (not JSON): skipped")),
        b'{"seq":8,"t":1796497974.0,"kind":"rejected",'
        b'"error":"submission 1 cannot be read (not JSON): skipped"}',
    ),
    (
        r.Journaled(
            9, 1796497975.0, r.PromptEntry("sudo-1", "[sudo] password for u on h[1-3]: ", "pending", 29.5)
        ),
        b'{"seq":9,"t":1796497975.0,"kind":"prompt","id":"sudo-1",'
        b'"text":"[sudo] password for u on h[1-3]: ","state":"pending","bound":29.5}',
    ),
    (
        r.Journaled(10, 1796497976.0, r.NoteEntry("ssh agent: none attached")),
        b'{"seq":10,"t":1796497976.0,"kind":"note","text":"ssh agent: none attached"}',
    ),
    (
        r.Journaled(11, 1796497977.0, r.ControlEntry("cancel", "bob", "m2", "a1b2")),
        b'{"seq":11,"t":1796497977.0,"kind":"control","what":"cancel","by":"bob","machine":"m2","detail":"a1b2"}',
    ),
    (
        r.Journaled(12, 1796497978.0, r.LineEntry(3, 1, "echo hi", "bob", "m2")),
        b'{"seq":12,"t":1796497978.0,"kind":"line","run":3,"line":1,"source":"echo hi",'
        b'"by":"bob","machine":"m2"}',
    ),
    (
        r.RunRecord(
            3,
            1,
            "echo hi",
            ("a", NOT_UTF8),
            STMT,
            2,
            "f1.0",
            "6933249eca1c",
            r.PlanLimits(10000, 256, "t.dsh"),
        ),
        b'{"run":3,"line":1,"source":"echo hi","args":["a",{"b64":"/wo="}],"index":2,"path":"f1.0",'
        b'"plan_id":"6933249eca1c","limits":{"step_budget":10000,"fanout":256,"name":"t.dsh"},"plan":'
        + STMT_JSON.encode()
        + b"}",
    ),
    (
        r.Todo("6933249eca1c", PLAN, ("a", NOT_UTF8)),
        b'{"id":"6933249eca1c","plan":' + plan_dumps(PLAN).encode() + b',"args":["a", {"b64": "/wo="}]}',
    ),
    (r.RunHosts(4, ("web1", "web2")), b'{"run":4,"hosts":["web1","web2"],"inputs":[]}'),
    (
        r.RunHosts(6, (), (), ("web1", "a file")),
        b'{"run":6,"hosts":[],"inputs":[],"items":["web1","a file"]}',
    ),
    (
        r.RunHosts(5, ("web1",), (r.StageInput(1, InputFacts("/tmp/in.txt", 6, "ab" * 32)),)),
        b'{"run":5,"hosts":["web1"],"inputs":[{"stage":1,"input":{"path":"/tmp/in.txt","size":6,"sha256":"'
        + b"ab" * 32
        + b'"}}]}',
    ),
    (
        r.ResultSets({"ok": ("web1", "web2"), "failed": ()}),
        b'{"ok": ["web1", "web2"], "failed": []}',
    ),
    (r.BoundText(b"5"), b'{"kind":"value","text":"NQ=="}'),
    (r.BoundHosts(("web1", "web2", "web3")), b'{"kind":"hosts","hosts":["web1","web2","web3"]}'),
    (r.BoundSecret("db password"), b'{"kind":"secret","prompt":"db password"}'),
    (
        r.BoundResults((r.BoundHost(None, "ok", 0, 0.0152, 1, "", b"hello\n", b"", False),)),
        b'{"kind":"result","hosts":[{"host":null,"outcome":"ok","exit":0,"seconds":0.0152,"attempts":1,'
        b'"message":"","out":"aGVsbG8K","err":"","truncated":false}]}',
    ),
    (
        r.Submission("a1b2c3d4e5f6", "echo hi", "<stdin>", 1, "m2"),
        b'{"id": "a1b2c3d4e5f6", "text": "echo hi", "name": "<stdin>", "first_line": 1, "by": "m2"}',
    ),
    (r.SubmissionDone(0, ""), b'{"status": 0, "error": ""}'),
    (
        r.SubmissionDone(None, "t.dsh:1:1: no such thing"),
        b'{"status": null, "error": "t.dsh:1:1: no such thing"}',
    ),
    (r.Handover("m2", 77, 1796497974.5), b'{"machine": "m2", "pid": 77, "t": 1796497974.5}'),
    (r.Viewer("m2", 77), b'{"machine": "m2", "pid": 77}'),
    (r.KillRequest("m2"), b'{"by": "m2"}'),
    (
        r.Callback("root", "s1", "5.1.1", None),
        b'{"user": "root", "session": "s1", "action": "5.1.1", "host": null}',
    ),
    (
        r.Callback("root", "s1", "5.1.1", "web1", 1796497999.5),
        b'{"user": "root", "session": "s1", "action": "5.1.1", "host": "web1", "deadline": 1796497999.5}',
    ),
    (
        r.CallbackEvent("done", 1796497990.25, "127.0.0.1"),
        b'{"body": "done", "t": 1796497990.25, "from": "127.0.0.1"}',
    ),
    (
        r.Registration("http://h:8080", 99, "h"),
        b'{"url": "http://h:8080", "pid": 99, "host": "h"}',
    ),
    (
        r.Team("ops", ("alice", "bob"), 1796497990.5),
        b'{"name": "ops", "members": ["alice", "bob"], "changed": 1796497990.5}',
    ),
    (
        r.ApprovalAsk("id1.3.1.1", "t/ops", "dep", "3.1.1", "alice", "team:ops", 2, 1796497999.5, True),
        b'{"req": "id1.3.1.1", "tree": "t/ops", "session": "dep", "action": "3.1.1", "requester": "alice", '
        b'"principals": "team:ops", "quorum": 2, "deadline": 1796497999.5, "requester_counts": true}',
    ),
    (
        r.Vote("id1.3.1.1", False, "looks fine", "m2", 1796497991.5, "t/ops", "dep"),
        b'{"req": "id1.3.1.1", "deny": false, "comment": "looks fine", "machine": "m2", "t": 1796497991.5, '
        b'"tree": "t/ops", "session": "dep"}',
    ),
    (r.Seen("alice", 1796497990.5), b'{"os_user": "alice", "t": 1796497990.5}'),
    (
        r.Person("alice", "person", 1796497990.5, "root"),
        b'{"name": "alice", "kind": "person", "created": 1796497990.5, "by": "root"}',
    ),
]


def _unversioned(raw: bytes) -> bytes:
    """Bytes as dsh wrote them before records carried their format ("v")."""
    v = str(r.FORMAT).encode()
    for field in (b'"v": ' + v + b", ", b'"v":' + v + b",", b', "v": ' + v, b',"v":' + v):
        if field in raw:
            return raw.replace(field, b"", 1)
    raise AssertionError(f"no format in {raw!r}")


def _load(kind: type, raw: bytes, key: bytes = b"/k") -> object:
    """Read `raw` as a record of `kind`, through the reader a store's reader uses."""
    if kind in r.ACTION_STATES:
        return codec.load_action(raw, key=key)
    if kind in r.BINDING_KINDS:
        return codec.load_binding(raw, key=key)
    return codec.loads(kind, raw, key=key)


@pytest.mark.parametrize(
    "record, written", SAMPLES, ids=[f"{type(s[0]).__name__}-{i}" for i, s in enumerate(SAMPLES)]
)
def test_records_every_kind_writes_its_old_bytes_and_reads_back_as_itself(
    record: object, written: bytes
) -> None:
    # The bytes an older dsh wrote (format 1, no "v"), now with the format, and both
    # read back as the record.
    made = codec.dumps(record)
    assert _unversioned(made) == written
    assert json.loads(made)["v"] == r.FORMAT
    assert _load(type(record), written) == record == _load(type(record), made)
    assert codec.loads(type(record), written, key=b"/k") == record


def test_records_every_kind_and_journal_entry_kind_has_a_sample() -> None:
    kinds = {type(record) for record, _ in SAMPLES}
    kinds |= {type(record.entry) for record, _ in SAMPLES if isinstance(record, r.Journaled)}
    written = {
        cls
        for cls in vars(r).values()
        if isinstance(cls, type)
        and cls.__module__ == r.__name__
        and hasattr(cls, "__dataclass_fields__")
        and not cls.__name__.startswith("_")
    }
    written -= {r.RunHead, r.PlanLimits, r.BoundHost, r.StageInput}  # read only; parts of others
    assert written <= kinds, written - kinds
    assert set(r.ENTRY_KINDS) <= kinds and set(r.ACTION_STATES) <= kinds


def test_records_a_journal_entry_is_written_from_its_kind_and_fields_as_from_its_record() -> None:
    # dsh.runtime.journal.Checkpointer.entry("start", action=…): the old call, the same bytes
    entry = r.StartEntry("1.1.1", None, "true", 1)
    assert codec.entry_bytes(
        5, 1.5, "start", {"action": "1.1.1", "host": None, "command": "true", "timeout": 1}
    ) == (codec.entry_bytes(5, 1.5, entry, {}))
    written = json.loads(codec.dumps(r.Journaled(5, 1.5, entry)))
    assert written.pop("v") == r.FORMAT  # as_dict: the record's fields, without its format
    assert codec.as_dict(r.Journaled(5, 1.5, entry)) == written


def _codec_of(key: bytes) -> type | None:
    """The record kind stored at `key` (None: not a JSON record)."""
    rest = key.split(b"/s/", 1)[1].split(b"/", 1)[1] if b"/s/" in key else b""
    for prefix, kind in (
        (b"meta", r.Meta),
        (b"owner", r.Owner),
        (b"sets", r.ResultSets),
        (b"todo", r.Todo),
        (b"run/", r.RunRecord),
        (b"act/", r.ActIntent),  # any state (load_action)
        (b"bind/", r.BoundText),  # any kind (load_binding)
        (b"j/", r.Journaled),
    ):
        if rest == prefix or (prefix.endswith(b"/") and rest.startswith(prefix)):
            return kind
    return None


@pytest.mark.parametrize("store", ["4027279", "hardening"])
def test_records_every_record_an_older_dsh_wrote_reads_and_writes_back_its_bytes(store: str) -> None:
    with sqlite3.connect(FIXTURES / f"{store}.db") as db:
        rows = [(bytes(k), bytes(v)) for k, v in db.execute("SELECT key, value FROM kv ORDER BY key")]
    read = 0
    for key, raw in rows:
        kind = _codec_of(key)
        if kind is None:
            continue
        record = _load(kind, raw, key)
        read += 1
        made = codec.dumps(record)
        if store == "4027279" and kind is r.Todo:  # its writer used json.dumps's separators then
            assert {k: v for k, v in json.loads(made).items() if k != "v"} == json.loads(raw)
            continue
        assert _unversioned(made) == raw, key
    assert read > 100


KEY = b"/dsh/v1/u/u/s/s1/owner"


@pytest.mark.parametrize(
    "kind, raw, field, problem",
    [
        (r.Owner, b'{"machine": "m", "since": 1.0, "ttl": 5.0}', "pid", "is missing"),
        (r.Meta, b'{"name": "s", "machine": "m"}', "created", "is missing"),
        (
            r.ActDone,
            b'{"state": "done", "action": "1.1.1", "host": null, "outcome": "ok"}',
            "exit",
            "is missing",
        ),
        (r.ActIntent, b'{"action": "1.1.1"}', "state", "is missing"),
        (
            r.Journaled,
            b'{"seq":3,"t":1.0,"kind":"end","action":"1.1.1","host":null,"outcome":"ok","exit":0,"message":""}',
            "seconds",
            "is missing",
        ),
        (r.Journaled, b'{"t":1.0,"kind":"bind","run":2,"name":"x"}', "seq", "is missing"),
        (r.Journaled, b'{"seq":1,"t":1.0,"run":2,"name":"x"}', "kind", "is missing"),
        (
            r.RunRecord,
            b'{"run":1,"line":1,"source":"x","args":[],"limits":{"step_budget":1},"plan":'
            + STMT_JSON.encode()
            + b"}",
            "limits.fanout",
            "is missing",
        ),
        (r.Submission, b'{"id": "a", "name": "<stdin>", "first_line": 1, "by": "m"}', "text", "is missing"),
        (r.Callback, b'{"user": "u", "session": "s", "action": "1.1.1"}', "host", "is missing"),
    ],
)
def test_records_a_missing_required_field_is_a_corrupt_record_naming_key_and_field(
    kind: type, raw: bytes, field: str, problem: str
) -> None:
    with pytest.raises(r.CorruptRecord) as caught:
        _load(kind, raw, KEY)
    assert (caught.value.key, caught.value.field) == (KEY, field)
    assert caught.value.message == f"corrupt record /dsh/v1/u/u/s/s1/owner: field {field!r} {problem}"


@pytest.mark.parametrize(
    "kind, raw, field, problem",
    [
        (r.Owner, b'{"machine": "m", "pid": "4242", "since": 1.0}', "pid", "is not a number"),
        (r.Owner, b'{"machine": "m", "pid": 4242.5, "since": 1.0}', "pid", "is not a whole number"),
        (r.Owner, b'{"machine": "m", "pid": true, "since": 1.0}', "pid", "is not a number"),
        (r.Owner, b'{"machine": 7, "pid": 4242, "since": 1.0}', "machine", "is not a string"),
        (r.Owner, b'{"machine": "m", "pid": 4242, "since": 1.0, "ttl": null}', "ttl", "is not a number"),
        (
            r.Meta,
            b'{"name": "s", "created": 1.0, "machine": "m", "named": "yes"}',
            "named",
            "is not true or false",
        ),
        (
            r.ActDone,
            b'{"state": "done", "action": "1.1.1", "host": null, "outcome": "ok", "exit": 0, "seconds": 0.0, '
            b'"message": "", "out": {"b64": "@@"}, "err": ""}',
            "out",
            "is not text",
        ),
        (
            r.ActDone,
            b'{"state": "finished", "action": "1.1.1"}',
            "state",
            "is not one of intent, done, sleep, await",
        ),
        (
            r.ActIntent,
            b'{"state": "intent", "action": "1", "host": "h", "command": "c", "timeout": 1.0, '
            b'"machine": "m", "where": {"login": "a"}}',
            "where.key",
            "is missing",
        ),
        (
            r.Journaled,
            b'{"seq":1,"t":1.0,"kind":"renamed"}',
            "kind",
            "is not one of " + ", ".join(cls.TAG[1] for cls in r.ENTRY_KINDS),
        ),
        (
            r.RunRecord,
            b'{"run":1,"line":1,"source":"x","args":[1],"plan":' + STMT_JSON.encode() + b"}",
            "args[0]",
            "is not text",
        ),
        (
            r.Todo,
            b'{"id": "a", "plan": ' + plan_dumps(PLAN).encode() + b', "args": {}}',
            "args",
            "is not a list",
        ),
        (r.BoundText, b'{"kind":"value","text":"NQ="}', "text", "is not base64"),
        (
            r.BoundText,
            b'{"kind":"values","text":"NQ=="}',
            "kind",
            "is not one of value, hosts, result, secret",
        ),
        (r.ResultSets, b'{"ok": "web1"}', "ok", "is not a list of hosts"),
        (
            r.BoundResults,
            b'{"kind":"result","hosts":[{"host":null,"outcome":"ok","exit":0,"seconds":0.1,"attempts":1,'
            b'"message":"","out":"","err":"","truncated":false},{"host":"h"}]}',
            "hosts[1].outcome",
            "is missing",
        ),
    ],
)
def test_records_a_malformed_field_is_a_corrupt_record_naming_key_and_field(
    kind: type, raw: bytes, field: str, problem: str
) -> None:
    with pytest.raises(r.CorruptRecord) as caught:
        _load(kind, raw, KEY)
    assert (caught.value.key, caught.value.field) == (KEY, field)
    assert caught.value.message == f"corrupt record /dsh/v1/u/u/s/s1/owner: field {field!r} {problem}"


def test_records_a_record_of_another_kind_is_a_corrupt_record() -> None:
    done = codec.dumps(r.ActDone("1.1.1", None, "ok", 0, 0.0, "", "", "", "m"))
    with pytest.raises(r.CorruptRecord, match=r"^corrupt record /k: field 'state' is not 'intent'$"):
        codec.loads(r.ActIntent, done, key=b"/k")


@pytest.mark.parametrize(
    "raw, problem",
    [
        (b"{", "not JSON: "),
        (b"[1, 2]", "not a JSON object"),
        (b"\xff", "not JSON: "),
        (b"[" * 100_000, "not JSON: "),
    ],
)
def test_records_a_value_that_is_no_json_object_is_a_corrupt_record_naming_its_key(
    raw: bytes, problem: str
) -> None:
    with pytest.raises(r.CorruptRecord) as caught:
        codec.loads(r.Submission, raw, key=KEY)
    assert caught.value.field == "" and caught.value.problem.startswith(problem)
    assert caught.value.message.startswith(f"corrupt record /dsh/v1/u/u/s/s1/owner: {problem}")


@pytest.mark.parametrize("version", [r.FORMAT + 1, 99])
def test_records_a_record_of_a_newer_format_is_refused_naming_key_and_both_formats(version: int) -> None:
    raw = b'{"v": %d, "machine": "m", "pid": 1, "since": 1.0, "ttl": 5.0}' % version
    with pytest.raises(r.NewerRecord) as refused:
        codec.loads(r.Owner, raw, key=KEY)
    said = f"written by a newer dsh (format {version} > {r.FORMAT}); upgrade dsh to read it"
    assert str(refused.value) == f"corrupt record {KEY.decode()}: {said}"
    assert refused.value.exit_code == 3
    with pytest.raises(r.CorruptRecord, match="field 'v' is not a format number"):
        codec.loads(r.Owner, b'{"v": "x", "machine": "m", "pid": 1, "since": 1.0}', key=KEY)


def test_records_a_corrupt_record_is_a_store_error_exit_3() -> None:
    with pytest.raises(StoreError) as caught:
        codec.loads(r.Owner, b"{}", key=KEY)
    assert caught.value.exit_code == 3


def test_records_a_key_that_is_not_utf8_is_named_as_dsh_shows_bytes() -> None:
    with pytest.raises(r.CorruptRecord, match=r"^corrupt record /dsh/v1/u/u/keys/\\xff: not a JSON object$"):
        codec.loads(r.Owner, b"1", key=b"/dsh/v1/u/u/keys/\xff")


def test_records_a_copys_intent_and_end_are_the_golden_bytes_and_older_ones_read() -> None:
    """Format 3: a copy's facts in its intent and result records and in the journal's
    start and end entries; a record written before them reads with none."""
    facts = CopyFacts("put", "/src/f", "/tmp/x.h1", "ab" * 32, False, 300)
    intent = r.ActIntent("2.1.1", "h1", "put f @h1:/tmp/x.h1", 600.0, "m", 1.5, None, facts)
    sha = "ab" * 32
    copy = '{"direction": "put", "local": "/src/f", "remote": "/tmp/x.h1", "sha256": "' + sha + '", '
    copy += '"unchanged": false, "size": 300}'
    head = f'{{"state": "intent", "v": {r.FORMAT}, "action": "2.1.1", "host": "h1", '
    head += '"command": "put f @h1:/tmp/x.h1", '
    assert (
        codec.dumps(intent)
        == (head + '"timeout": 600.0, "machine": "m", "at": 1.5, "copy": ' + copy + "}").encode()
    )
    done = r.ActDone("2.1.1", "h1", "ok", 0, 0.5, "", "", "", "m", facts)
    for record in (intent, done):
        assert codec.load_action(codec.dumps(record), key=KEY) == record
    start = r.StartEntry("2.1.1", "h1", "put f @h1:/tmp/x.h1", 600.0, facts)
    end = r.EndEntry("2.1.1", "h1", "ok", 0, 0.5, "", facts)
    compact = copy.replace(": ", ":").replace(", ", ",")
    for entry, head in ((start, '"kind":"start"'), (end, '"kind":"end"')):
        made = codec.dumps(r.Journaled(1, 2.0, entry))
        assert made.startswith(f'{{"seq":1,"t":2.0,"v":{r.FORMAT},'.encode() + head.encode()), made
        assert made.endswith(b',"copy":' + compact.encode() + b"}") or made.endswith(
            b',"copied":' + compact.encode() + b"}"
        ), made
    older = b'{"state": "intent", "v": 2, "action": "1.1.1", "host": null, "command": "true", '
    older += b'"timeout": 1.0, "machine": "m"}'
    assert codec.load_action(older, key=KEY).copy is None  # type: ignore[union-attr]


def test_records_an_optional_fields_absence_gives_its_documented_default() -> None:
    stmt = STMT_JSON.encode()
    cases: list[tuple[type, bytes, dict[str, Any]]] = [
        (r.Owner, b'{"machine": "m", "pid": 1, "since": 1.0}', {"ttl": 5.0, "socket": None}),
        (r.Meta, b'{"name": "s", "created": 1.0, "machine": "m"}', {"id": "0", "named": True}),
        (
            r.ActIntent,
            b'{"state": "intent", "action": "1.1.1", "host": null, "command": "c", "timeout": 1.0, '
            b'"machine": "m"}',
            {"at": None, "where": None},
        ),
        (
            r.ActDone,
            b'{"state": "done", "action": "1.1.1", "host": null, "outcome": "ok", "exit": 0, "seconds": 0.0, '
            b'"message": "", "out": "", "err": ""}',
            {"machine": None},
        ),
        (
            r.RunRecord,
            b'{"run":1,"line":1,"source":"x","args":[],"plan":' + stmt + b"}",
            {"index": 0, "path": "", "plan_id": "", "limits": r.PlanLimits(10000, 256, "<resumed>")},
        ),
        (
            r.RunRecord,
            b'{"run":1,"line":1,"source":"x","args":[],"limits":{"step_budget":5,"fanout":2},"plan":'
            + stmt
            + b"}",
            {"limits": r.PlanLimits(5, 2, "<resumed>")},
        ),
        (r.RunHead, b'{"run":1,"line":1,"source":"x"}', {"index": 0, "path": "", "plan_id": ""}),
        (r.Callback, b'{"user": "u", "session": "s", "action": "1.1.1", "host": null}', {"deadline": None}),
    ]
    for kind, raw, defaults in cases:
        record = _load(kind, raw)
        assert {name: getattr(record, name) for name in defaults} == defaults, kind
    # A default of None is also not written: the record reads back as it was written.
    owner = r.Owner("m", 1, 1.0)
    assert codec.dumps(owner) == b'{"v": %d, "machine": "m", "pid": 1, "since": 1.0, "ttl": 5.0}' % r.FORMAT


def test_records_a_text_field_keeps_bytes_that_are_not_utf8_exactly() -> None:
    done = r.ActDone("1.1.1", None, "ok", 0, 0.0, "", from_bytes(bytes(range(256))), "", "m")
    back = codec.load_action(codec.dumps(done), key=b"/k")
    assert isinstance(back, r.ActDone) and back.out == done.out
    assert codec.as_dict(back)["out"] == {"b64": json.loads(codec.dumps(done))["out"]["b64"]}


def test_records_the_key_layout_is_the_one_older_dsh_used() -> None:
    keys = Keys(user_tree("alice"), "s1")
    assert keys.owner == b"/dsh/v1/u/alice/s/s1/owner"
    assert keys.run(3) == b"/dsh/v1/u/alice/s/s1/run/00000003"
    assert keys.action("3.1.1", None) == b"/dsh/v1/u/alice/s/s1/act/3.1.1/-"
    assert keys.actions_of(3) == b"/dsh/v1/u/alice/s/s1/act/3."
    # each person's requests, outside the session's state (issue 21)
    assert keys.inbox_of() == b"/dsh/v1/u/alice/by/alice/s/s1/in/"
    assert keys.kill_of("bob") == b"/dsh/v1/u/alice/by/bob/s/s1/kill"
    assert keys.taken == b"/dsh/v1/u/alice/s/s1/ctl/taken-rev"
    tree = user_tree("alice")
    assert keys.user_key("/a/\udcff") == tree.key("a/\udcff") == b"/dsh/v1/u/alice/keys/a/\xff"
    assert tree.sessions == b"/dsh/v1/u/alice/s/"
    assert (callback_key(tree, "T"), event_key(tree, "T")) == (
        b"/dsh/v1/cb/u/alice/T",
        b"/dsh/v1/ev/u/alice/T",
    )
    assert parse_callback_path("u/alice/T") == (tree, "T")
    assert parse_callback_path(callback_path(user_tree("o ne"), "T")) == (user_tree("o ne"), "T")  # quoted
    for bad in ("T", "u//T", "x/alice/T", "u/alice/T/more", "u/%2F/T", "u/a%0a/T"):
        assert parse_callback_path(bad) is None, bad

"""The client↔executor protocol (dsh.runtime.protocol): every message round-trips, and
what cannot be taken — another version, an unknown tag, a broken field — is refused
with one sentence (a ProtocolError, exit 3), never a traceback."""

from __future__ import annotations

import pytest

from dsh.exits import Exit
from dsh.lang.compiler import compile_source
from dsh.lang.source import Source
from dsh.remote.base import Exec
from dsh.runtime import protocol as pr
from dsh.runtime.results import HostResult

PEER = "the executor of session s1"
REMEDY = "attach with that version"
STMT = compile_source(Source("t", "@h[1-3] echo hi | within 5s")).statements[0]
RESULT = HostResult(
    "h1", "failed", 3, 1.5, attempts=2, message="", out=b"o\xff\n", err=b"e\n", truncated=True
)
LOCAL = HostResult(None, "ok", 0, 0.25)

SAMPLES: list[pr.Message] = [
    pr.Hello("s1", 4242, None),
    pr.Hello("s1", 4242, "a1b2c3"),
    pr.Stmt(1, STMT),
    pr.Line(2, STMT, ("h1", "h2", "h3")),
    pr.Line(3, STMT, ()),
    pr.Out(2, "h1", "stdout", b"bytes \xff\x00 that are not text\n"),
    pr.Out(2, None, "stderr", b""),
    pr.Copying(2, "h1", 4 << 20, 100 << 20),
    pr.Retry(2, "h2", Exec("timeout", None, 5.0, "no answer"), 1, 1.0),
    pr.HostDone(2, RESULT),
    pr.LineDone(2, STMT, (RESULT, LOCAL), 3.5, True, "a note", False),
    pr.Msg("the store answers again"),
    pr.Done("a1b2c3", 0),
    pr.Done("a1b2c3", None, "t:1:6: not a duration"),
    pr.Idle(1),
    pr.End(4, "session 's1' was killed (dsh kill)"),
    pr.Bye(True),
    pr.Bye(False, 1),
    pr.Poke(),
    pr.Cancel("*"),
    pr.Wait(),
    pr.Leave(),
    pr.Ask("sudo-1", "[sudo] password for deploy on web[1-3]: ", True, 29.5),
    pr.Asked("sudo-1", "answered"),
    pr.Answer("sudo-1", "an answer"),
    pr.Answer("sudo-1"),
    pr.Agent("/tmp/ssh-XXXX/agent.1234"),
    pr.Agent(),
]


def decode(raw: bytes) -> pr.Message:
    if raw.startswith(b'{"op"'):
        return pr.decode_op(raw, peer="a client", remedy=REMEDY)
    return pr.decode_event(raw, peer=PEER, remedy=REMEDY)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: pr.Message) -> None:
    raw = pr.encode(message)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert decode(raw) == message


def test_every_message_kind_has_a_sample_and_a_tag_of_its_own() -> None:
    assert {type(m) for m in SAMPLES} == set(pr.EVENTS) | set(pr.OPS)
    for family in (pr.EVENTS, pr.OPS):
        tags = [cls.TAG for cls in family]  # type: ignore[attr-defined]
        assert len(tags) == len(set(tags))


def test_each_message_carries_the_version_after_its_tag() -> None:
    assert pr.encode(pr.Idle(0)) == b'{"ev":"idle","v":3,"status":0}\n'
    assert pr.encode(pr.Cancel("x")) == b'{"op": "cancel", "v": 3, "id": "x"}\n'
    assert pr.encode(pr.Done("x", 0)) == b'{"ev":"done","v":3,"id":"x","status":0}\n'  # no error: not written


def test_a_line_without_a_version_is_version_1_and_refused() -> None:
    # What an executor of a dsh from before versions were numbered says: version 1,
    # which knew no questions (an answer it could not take must not be sent to it).
    raw = b'{"ev":"hello","session":"s1","pid":7,"running":null}'
    with pytest.raises(pr.OtherProtocol) as refused:
        decode(raw)
    assert refused.value.version == 1
    assert refused.value.message == f"{PEER} speaks protocol 1, this dsh 3: {REMEDY}"


def test_another_version_is_refused_with_a_sentence() -> None:
    with pytest.raises(pr.OtherProtocol) as refused:
        decode(b'{"ev":"hello","v":4,"session":"s1","pid":7,"running":null,"new":1}')
    assert refused.value.message == f"{PEER} speaks protocol 4, this dsh 3: {REMEDY}"
    assert refused.value.exit_code == Exit.STORE == 3
    assert refused.value.version == 4
    with pytest.raises(pr.OtherProtocol, match=r"^a client speaks protocol 5, this dsh 3: "):
        decode(b'{"op": "poke", "v": 5}')


def test_an_unknown_tag_is_refused_with_a_sentence() -> None:
    with pytest.raises(pr.ProtocolError) as refused:
        decode(b'{"ev":"teleport","v":3,"k":1}')
    assert refused.value.message == f"{PEER} sent a message this dsh does not know (ev 'teleport')"
    assert refused.value.exit_code == 3
    with pytest.raises(
        pr.ProtocolError, match=r"^a client sent a message this dsh does not know \(op 'shutdown'\)$"
    ):
        decode(b'{"op": "shutdown", "v": 3}')
    # An event where an op belongs (and the other way round) is as unknown.
    with pytest.raises(pr.ProtocolError, match=r"does not know \(ev None\)"):
        pr.decode_event(b'{"op": "poke", "v": 3}', peer=PEER, remedy=REMEDY)


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        (b"not json", f"{PEER} sent a line that is not JSON: 'not json'"),
        (b"[1, 2]", f"{PEER} sent a line that is not a message: '[1, 2]'"),
        (b'{"ev":"idle","v":"1","status":0}', f"{PEER} sent a message whose version is not a number"),
        (b'{"ev":"idle","v":3}', f"{PEER} sent 'idle' without its field 'status'"),
        (b'{"ev":"idle","v":3,"status":"0"}', f"{PEER} sent 'idle' whose field 'status' is not a number"),
        (b'{"ev":"bye","v":3,"stays":1}', "field 'stays' is not true or false"),
        (b'{"ev":"out","v":3,"k":1,"host":null,"stream":"stdout","data":"%%"}', "field 'data' is not base64"),
        (b'{"ev":"line","v":3,"k":1,"def":{"version":1},"hosts":[]}', "field 'def' "),
        (b'{"ev":"line","v":3,"k":1,"def":{"version":99,"statement":{}},"hosts":[]}', "field 'def' "),
        (b'{"ev":"host","v":3,"k":1,"result":{"host":null}}', "field 'result' has no 'outcome'"),
        (b'{"ev":"line","v":3,"k":1,"def":null,"hosts":[]}', "field 'def' is not an object"),
    ],
)
def test_a_broken_message_is_refused_with_a_sentence(raw: bytes, said: str) -> None:
    with pytest.raises(pr.ProtocolError) as refused:
        decode(raw)
    assert said in refused.value.message
    assert refused.value.exit_code == 3

"""The host agent's frames on dsh's side (dsh.remote.hostwire): bytes as the
contract says, read back whole or in pieces, and what breaks it refused."""

from __future__ import annotations

import pytest

from dsh.remote.hostwire import MAX_BODY, Frame, Kind, ProtocolError, Reader, encode


def test_a_frame_is_length_kind_id_and_fields() -> None:
    assert encode(Kind.PROBE, 7, "r", b"s", 12) == (
        b"\x00\x00\x00\x15"
        + b"\x04"
        + b"\x00\x00\x00\x07"
        + b"\x00\x00\x00\x01r"
        + b"\x00\x00\x00\x01s"
        + b"\x00\x00\x00\x0212"
    )


def test_frames_read_back_whole_or_byte_by_byte() -> None:
    data = encode(Kind.OUT, 3, b"\x00\xffbytes") + encode(Kind.ENDED, 3, 253) + encode(Kind.HELLO, 0)
    whole = Reader().feed(data)
    assert whole == [
        Frame(Kind.OUT, 3, (b"\x00\xffbytes",)),
        Frame(Kind.ENDED, 3, (b"253",)),
        Frame(Kind.HELLO, 0, ()),
    ]
    reader = Reader()
    pieces = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert pieces == whole
    assert whole[1].number(0) == 253 and whole[0].text(1) == ""


@pytest.mark.parametrize(
    "data, said",
    [
        ((MAX_BODY + 1).to_bytes(4, "big"), "a frame of"),
        (b"\x00\x00\x00\x05\x2a\x00\x00\x00\x01", "unknown kind 42"),
        (b"\x00\x00\x00\x07\x41\x00\x00\x00\x01\x00\x00", "length is cut"),
        (b"\x00\x00\x00\x0a\x41\x00\x00\x00\x01\x00\x00\x00\x09x", "is cut"),
    ],
)
def test_what_breaks_the_protocol_is_a_protocol_error(data: bytes, said: str) -> None:
    with pytest.raises(ProtocolError, match=said):
        Reader().feed(data)


def test_a_number_that_is_not_one_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="ENDED: field 0 is not a number"):
        Frame(Kind.ENDED, 1, (b"x1",)).number(0)


def test_dsh_and_the_agent_encode_alike_and_read_each_other() -> None:
    """The two codecs (dsh's typed one, the agent's stdlib one) are one format."""
    from dsh.remote.hostagent import wire as agent

    for kind in Kind:
        assert getattr(agent, kind.name) == kind.value, kind
    ours = encode(Kind.LAUNCH, 9, "/r", "s", "1.1.1", "h1", "echo é", 12, 2, "", "A=1\n", "")
    theirs = agent.encode(agent.LAUNCH, 9, ["/r", "s", "1.1.1", "h1", "echo é", "12", "2", "", "A=1\n", ""])
    assert ours == theirs
    (frame,) = Reader().feed(agent.encode(agent.ENDED, 4, ["253"]))
    assert (frame.kind, frame.rid, frame.number(0)) == (Kind.ENDED, 4, 253)


def test_both_codecs_number_every_kind_alike() -> None:
    """dsh's Kind and the agent's constants (dsh/remote/hostagent/wire.py, its own
    codec for Python 3.6) are one contract: the same name, the same number."""
    from dsh.remote.hostagent import wire

    for kind in Kind:
        assert getattr(wire, kind.name) == kind.value, kind
    agents = {name: value for name, value in vars(wire).items() if name.isupper() and isinstance(value, int)}
    requests = {name for name, value in agents.items() if value in wire.NAMES}
    assert requests == {k.name for k in Kind if k.value < 32}
    assert set(wire.FIELDS) == set(wire.NAMES)

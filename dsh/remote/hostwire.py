"""The host agent's frames, on dsh's side: typed, versioned, the only encoder here.

A frame is a 4-byte big-endian length, then its body: a kind (one byte), a
request id (4 bytes, big-endian), then fields, each a 4-byte length and its
bytes; integers are ASCII decimal fields. The agent speaks the same format with
its own codec (dsh/remote/hostagent/wire.py, standard library only, for Python
3.6): the two are checked against each other in the tests. `PROTOCOL` is
exchanged in the agent's HELLO; another one is refused by name.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

#: The frames' protocol, as the agent's HELLO says it.
PROTOCOL = 1
#: The largest body a frame may have (a reader ends the link past it).
MAX_BODY = (1 << 20) + 64
_U32 = struct.Struct("!I")


class Kind(IntEnum):
    """What a frame is: a request (dsh to the agent) or a reply."""

    LAUNCH = 1
    FOLLOW = 2
    KILL = 3
    PROBE = 4
    REMOVE = 5
    CLEAN = 6
    STOP = 7
    REPLY = 8
    RUN = 9
    FS = 10
    HELLO = 64
    OUT = 65
    ERR = 66
    SAID = 67
    ENDED = 68
    ANSWER = 69
    DONE = 70
    ERROR = 71
    FAILED = 72


class ProtocolError(Exception):
    """The agent sent what this protocol does not allow."""


@dataclass(frozen=True)
class Frame:
    kind: Kind
    rid: int
    fields: tuple[bytes, ...] = ()

    def text(self, at: int) -> str:
        """Field `at` as text (undecodable bytes escaped, never an error)."""
        return self.fields[at].decode("utf-8", "surrogateescape") if at < len(self.fields) else ""

    def number(self, at: int) -> int:
        """Field `at` as an integer (ProtocolError when it is not one)."""
        raw = self.fields[at] if at < len(self.fields) else b""
        if not (raw.isdigit() and len(raw) <= 18):  # what the agent sends: 0 and up, bounded
            raise ProtocolError(f"{self.kind.name}: field {at} is not a number")
        return int(raw)


def encode(kind: Kind, rid: int, *fields: bytes | str | int) -> bytes:
    """One frame's bytes."""
    parts = [bytes([kind]), _U32.pack(rid)]
    for field in fields:
        data = field if isinstance(field, bytes) else str(field).encode("utf-8", "surrogateescape")
        parts += [_U32.pack(len(data)), data]
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise ValueError(f"a {kind.name} frame of {len(body)} bytes is over {MAX_BODY}")
    return _U32.pack(len(body)) + body


class Reader:
    """Frames from a byte stream, as they complete."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while len(self._buf) >= 4:
            (size,) = _U32.unpack_from(self._buf, 0)
            if size > MAX_BODY or size < 5:
                raise ProtocolError(f"a frame of {size} bytes")
            if len(self._buf) < 4 + size:
                break
            body = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            frames.append(_decode(body))
        return frames


def _decode(body: bytes) -> Frame:
    try:
        kind = Kind(body[0])
    except ValueError:
        raise ProtocolError(f"a frame of unknown kind {body[0]}") from None
    (rid,) = _U32.unpack_from(body, 1)
    fields: list[bytes] = []
    at = 5
    while at < len(body):
        if at + 4 > len(body):
            raise ProtocolError(f"{kind.name}: a field's length is cut")
        (size,) = _U32.unpack_from(body, at)
        at += 4
        if at + size > len(body):
            raise ProtocolError(f"{kind.name}: a field is cut")
        fields.append(body[at : at + size])
        at += size
    return Frame(kind, rid, tuple(fields))

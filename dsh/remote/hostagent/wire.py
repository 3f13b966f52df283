"""The host agent's frames: their kinds, encoding and decoding (protocol 1).

A frame is a 4-byte big-endian length L, then a body of L bytes: 1 byte KIND,
a 4-byte big-endian request id, then fields, each a 4-byte big-endian length
and its bytes. Integers travel as ASCII decimal fields. A body over MAX_BODY
ends the link. The same frames go between the agent and its keeper (the kinds
from 32), on a pipe of their own.
"""

import struct

# Requests (dsh -> agent), with the number of fields each takes.
LAUNCH = 1
FOLLOW = 2
KILL = 3
PROBE = 4
REMOVE = 5
CLEAN = 6
STOP = 7
REPLY = 8  # an answer to a command's prompt (the wrapper's ANSWER)
RUN = 9  # a child of the agent, bounded, its output returned (checks, sums, sudo -v)
FS = 10  # one file operation (copies, stdin files)

FIELDS = {LAUNCH: 10, FOLLOW: 4, KILL: 6, PROBE: 4, REMOVE: 2, CLEAN: 2, STOP: 0, REPLY: 6, RUN: 4, FS: 2}
#: Kinds whose FIELDS is a least number of fields, not an exact one.
VARIADIC = frozenset((RUN, FS))
NAMES = {
    LAUNCH: "LAUNCH",
    FOLLOW: "FOLLOW",
    KILL: "KILL",
    PROBE: "PROBE",
    REMOVE: "REMOVE",
    CLEAN: "CLEAN",
    STOP: "STOP",
    REPLY: "REPLY",
    RUN: "RUN",
    FS: "FS",
}

# Replies (agent -> dsh).
HELLO = 64
OUT = 65
ERR = 66
SAID = 67
ENDED = 68
ANSWER = 69
DONE = 70
ERROR = 71
FAILED = 72  # an FS operation the host refused: its reason (strerror), and errno's name

# Between the agent and its keeper (never on the link to dsh).
SPAWN = 32  # fields: path, command, backstop, grace, input, helper, secrets
GONE = 33  # fields: status ("" when it could not be written)

#: The largest body a reader takes (a frame of output, its header and more).
MAX_BODY = 1024 * 1024 + 64
#: The most bytes of output in one OUT or ERR frame.
CHUNK = 64 * 1024

_LEN = struct.Struct("!I")
_HEAD = struct.Struct("!BI")


class WireError(Exception):
    """A frame that cannot be read (its text names no field's content)."""


def field(value):
    """A field's bytes: bytes as they are, text as UTF-8, an integer in decimal."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, int):
        return str(value).encode("ascii")
    return value.encode("utf-8", "surrogateescape")


def encode(kind, rid, fields=()):
    """One whole frame (length prefix included)."""
    parts = [_HEAD.pack(kind, rid)]
    for value in fields:
        data = field(value)
        parts.append(_LEN.pack(len(data)))
        parts.append(data)
    body = b"".join(parts)
    if len(body) > MAX_BODY:
        raise WireError("a frame over the bound")
    return _LEN.pack(len(body)) + body


def decode(body):
    """(kind, rid, [fields as bytes]) of a frame's body."""
    if len(body) < _HEAD.size:
        raise WireError("a frame too short for its header")
    kind, rid = _HEAD.unpack_from(body, 0)
    fields = []
    at = _HEAD.size
    while at < len(body):
        if at + 4 > len(body):
            raise WireError("a field's length cut short")
        (size,) = _LEN.unpack_from(body, at)
        at += 4
        if at + size > len(body):
            raise WireError("a field longer than its frame")
        fields.append(body[at : at + size])
        at += size
    return kind, rid, fields


def rid_of(body):
    """The request id of a body that may not decode (0 when it has none)."""
    return _HEAD.unpack_from(body, 0)[1] if len(body) >= _HEAD.size else 0


def text(data):
    """A field as text (bytes that are not UTF-8 kept as surrogates)."""
    return data.decode("utf-8", "surrogateescape")


def number(data):
    """A field as a non-negative integer (ValueError when it is not one)."""
    if not data or not data.isdigit() or len(data) > 18:
        raise ValueError("not a number")
    return int(data)


class Reader:
    """Frames out of a byte stream that comes in pieces."""

    def __init__(self):
        self._buf = bytearray()

    def feed(self, data):
        """The bodies completed by `data` (WireError for a frame over the bound)."""
        self._buf += data
        bodies = []
        while len(self._buf) >= 4:
            (size,) = _LEN.unpack_from(self._buf, 0)
            if size > MAX_BODY:
                raise WireError("a frame over the bound")
            if len(self._buf) < 4 + size:
                break
            bodies.append(bytes(self._buf[4 : 4 + size]))
            del self._buf[: 4 + size]
        return bodies

    def pending(self):
        """Whether a frame was begun and not finished."""
        return bool(self._buf)

"""What a flow keeps of the output of its current action, with the secrets bound now
masked: the one place output passes between a remote and the reporter."""

from __future__ import annotations

from collections.abc import Callable

from dsh.remote.base import OutputSink
from dsh.runtime.results import KEEP_BYTES


class Capture:
    """What a flow keeps of the output of its current action: the first KEEP_BYTES
    of each stream (`truncated` once more came), each piece passed on to `show`.
    The secrets bound now (`secrets`) are masked as `***` in both: the end of a piece
    that may begin one is held back until the next piece, or the action's end
    (`end`)."""

    def __init__(self, show: OutputSink, secrets: Callable[[], tuple[bytes, ...]] = tuple) -> None:
        self.show = show
        self.secrets = secrets
        self.out = bytearray()
        self.err = bytearray()
        self.truncated = False
        self._held: dict[str, bytes] = {}
        #: Output told again from a record (see `replay`).
        self.replaying = False

    def __call__(self, stream: str, data: bytes) -> None:
        secrets = self.secrets()
        if secrets:
            data = self._held.pop(stream, b"") + data
            keep = _partial_secret(data, secrets)
            if keep:
                data, self._held[stream] = data[:-keep], data[-keep:]
            for secret in secrets:
                data = data.replace(secret, MASK)
        self._pass(stream, data)

    def _pass(self, stream: str, data: bytes) -> None:
        buf = self.out if stream == "stdout" else self.err
        room = KEEP_BYTES - len(buf)
        if room < len(data):
            self.truncated = True
        buf += data[: max(room, 0)]
        self.show(stream, data)

    def replay(self, stream: str, data: bytes) -> None:
        """Output of an action that had ended before a takeover (its record's tail): shown
        and kept again, while `replaying` says so (it is not written to --outdir again)."""
        self.replaying = True
        try:
            self(stream, data)
        finally:
            self.replaying = False

    def end(self) -> None:
        """The action is over: what was held back (no secret after all) goes on."""
        for stream, held in list(self._held.items()):
            del self._held[stream]
            self._pass(stream, held)

    def clear(self) -> None:
        self.out.clear()
        self.err.clear()
        self.truncated = False
        self._held.clear()


#: What a secret is shown and kept as.
MASK = b"***"


def _partial_secret(data: bytes, secrets: tuple[bytes, ...]) -> int:
    """The length of the longest end of `data` that begins a secret (and is not one)."""
    for size in range(min(len(data), max(len(s) for s in secrets) - 1), 0, -1):
        tail = data[-size:]
        if any(len(s) > size and s.startswith(tail) for s in secrets):
            return size
    return 0

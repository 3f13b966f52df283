"""The Remote protocol: run one command on one host, bounded, streaming its output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

#: Called with ("stdout" | "stderr", bytes) as output arrives.
OutputSink = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class Exec:
    """How one command ended on one host.

    `outcome` is one of plan.OUTCOMES; `exit_status` is set when the command
    ran to an exit (128+N when a signal N ended it); `message` explains any
    outcome other than ok or failed.
    """

    outcome: str
    exit_status: int | None
    seconds: float
    message: str = ""


class Remote(Protocol):
    """A place commands run: this machine, or one host over SSH."""

    @property
    def name(self) -> str: ...

    async def run(self, command: str, *, timeout: float, output: OutputSink) -> Exec:
        """Run `command` with `/bin/sh -c`, stdin from /dev/null.

        Ends within `timeout` (plus a short kill grace): on timeout or
        cancellation the whole process group is killed. Cancellation is
        re-raised after the kill.
        """
        ...

"""What host flows share within one line: `gather` barriers and `where` filters."""

from __future__ import annotations

import asyncio
import re

from dsh import plan as p
from dsh.remote.base import Exec


class Barrier:
    """`gather`: every flow of a wave waits until all the others have come, or
    ended before reaching it (a flow that ended early leaves)."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.come = 0
        self.open = asyncio.Event()

    def leave(self) -> None:
        self.parties -= 1
        self._check()

    async def arrive(self) -> None:
        self.come += 1
        self._check()
        await self.open.wait()

    def _check(self) -> None:
        if self.come >= self.parties:
            self.open.set()


def where_holds(stage: p.Where, ended: Exec, out: bytes, err: bytes) -> bool:
    """Whether a host's flow goes on past a `where`."""
    if stage.regex is not None:
        data = out if stage.stream == "out" else err
        return re.search(stage.regex, data.decode("utf-8", "replace")) is not None
    if stage.outcome == "notok":
        return ended.outcome != "ok"
    return ended.outcome == stage.outcome

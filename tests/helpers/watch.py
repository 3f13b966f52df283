"""Reading a store watch in tests, within a bound."""

from __future__ import annotations

import asyncio
import time

from dsh.store.base import Event, Watch


async def collect(watch: Watch, count: int, within: float = 5.0) -> list[Event]:
    events: list[Event] = []
    iterator = watch.__aiter__()
    deadline = time.monotonic() + within
    while len(events) < count:
        events += await asyncio.wait_for(iterator.__anext__(), max(deadline - time.monotonic(), 0.01))
    return events

"""Following a session through the store: how its owner went (fault report P4)."""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path
from typing import Any

import pytest

from dsh.follow import Follower
from dsh.runtime.session import Keys
from dsh.store.sqlite import SqliteStore

KEYS = Keys("u", "s")


def store_call(path: Path, *ops: tuple[str, bytes]) -> None:
    async def run() -> None:
        store = SqliteStore(path)
        try:
            for op, key in ops:
                if op == "put":
                    await store.put(key, b'{"machine": "A"}', timeout=5)
                else:
                    await store.delete(key, timeout=5)
        finally:
            await store.close()

    asyncio.run(run())


@pytest.mark.parametrize("asked", ["never", "before", "while following"])
def test_P4_the_follower_tells_an_owner_that_handed_over_from_one_gone(tmp_path: Path, asked: str) -> None:
    """The owner key goes both when the owner lets go and when its lease runs out;
    only a standing handover request tells that it handed the session over."""
    path = tmp_path / "store.db"
    store_call(path, ("put", KEYS.owner), *([("put", KEYS.handover)] if asked == "before" else []))
    events: queue.Queue[Any] = queue.Queue()
    follower = Follower(
        lambda: SqliteStore(path), KEYS, "B", events, show=lambda entry: None, wake=lambda: None
    )
    follower.start()
    try:
        if asked == "while following":
            store_call(path, ("put", KEYS.handover))
        store_call(path, ("delete", KEYS.owner))
        event = events.get(timeout=10)
    finally:
        follower.stop()
    assert event == {"ev": "gone", "handover": asked != "never"}

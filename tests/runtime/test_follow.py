"""Following a session through the store: how its owner went (fault report P4); the
follower is a task of the client's loop, on the client's store handle."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from dsh.follow import Follower, Gone
from dsh.runtime.protocol import Done, End
from dsh.session.keys import Keys, user_tree
from dsh.store.sqlite import SqliteStore

KEYS = Keys(user_tree("u"), "s")


async def put(store: SqliteStore, key: bytes, value: bytes = b'{"machine": "A"}') -> None:
    await store.put(key, value, timeout=5)


@pytest.mark.parametrize("asked", ["never", "before", "while following"])
def test_P4_the_follower_tells_an_owner_that_handed_over_from_one_gone(tmp_path: Path, asked: str) -> None:
    """The owner key goes both when the owner lets go and when its lease runs out;
    only a standing handover request tells that it handed the session over."""

    async def follow() -> list[Done | End | Gone]:
        store = SqliteStore(tmp_path / "store.db")
        told: list[Done | End | Gone] = []
        arrived = asyncio.Event()

        def tell(event: Done | End | Gone) -> None:
            told.append(event)
            arrived.set()

        try:
            await put(store, KEYS.owner)
            if asked == "before":  # asked for (a request under its person's path)
                await put(store, KEYS.handover_of())
            follower = Follower(store, KEYS, "B", tell, show=lambda entry: None)
            await follower.start()
            assert (await store.range(KEYS.viewers_of(), timeout=5))[0], "no viewer key while it follows"
            threads = threading.active_count()
            if asked == "while following":  # the owner says it hands over
                await put(store, KEYS.handing)
            await store.delete(KEYS.owner, timeout=5)
            await asyncio.wait_for(arrived.wait(), 10)
            assert threading.active_count() <= threads  # it started none of its own
            await follower.stop()
            assert (await store.range(KEYS.viewers_of(), timeout=5))[0] == []  # its lease went with it
        finally:
            await store.close()
        return told

    assert asyncio.run(follow()) == [Gone(asked != "never")]


def test_a_follower_tells_a_line_done_and_a_kill(tmp_path: Path) -> None:
    async def follow() -> list[Done | End | Gone]:
        store = SqliteStore(tmp_path / "store.db")
        told: list[Done | End | Gone] = []
        try:
            await put(store, KEYS.owner)
            follower = Follower(store, KEYS, "B", told.append, show=lambda entry: None)
            await follower.start()
            await put(store, KEYS.done + b"abc", b'{"status": 1, "error": ""}')
            await put(store, KEYS.killed, b"")  # the owner stops for a kill
            for _ in range(200):
                if len(told) == 2:
                    break
                await asyncio.sleep(0.05)
            assert not await follower.work_left()  # following is over: nothing to wait for
            await follower.stop()
        finally:
            await store.close()
        return told

    assert asyncio.run(follow()) == [Done("abc", 1), End(4, "session 's' was killed (dsh kill)")]

"""Taking a session over: waiting on the owner key, whatever the age of its history."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dsh.errors import UsageError
from dsh.session.keys import Keys, user_tree
from dsh.session.lease import Session
from dsh.store.sqlite import SqliteStore


async def test_a_take_waits_on_an_owner_whose_claim_is_older_than_the_history(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db", history_keep=10)
    owner = Session(store, Keys(user_tree("u"), "s"), "m1", lease_ttl=1, timeout=5)
    other = Session(store, Keys(user_tree("u"), "s"), "m2", lease_ttl=1, timeout=5)
    owned = taken = None
    try:
        owned = await owner.claim()
        for i in range(50):  # the owner's claim falls out of the kept history
            await store.put(b"/noise", b"%d" % i, timeout=5)
        started = time.monotonic()
        with pytest.raises(UsageError, match="running on m1"):
            await other.take(patience=0.5)  # waits (TTL + patience) for the live owner, then says who
        assert time.monotonic() - started >= 1.5
        await owned.release()  # the owner lets go: a take now succeeds at once
        taken = await other.take(patience=0.5)
        assert taken.lease
    finally:
        for held in (owned, taken):
            if held is not None:
                await held.release()
        await store.close()

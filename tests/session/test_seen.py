"""The shared-account tripwire (dsh.session.seen), on a real store with an injected clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsh.session.codec import dumps
from dsh.session.keys import seen_key
from dsh.session.records import Seen
from dsh.session.seen import HOLD, REFRESH, SharedAccount, vouch
from dsh.store.sqlite import SqliteStore

T = 10.0
NOW = 1_800_000_000.0


async def test_the_first_os_user_holds_the_mark_and_another_is_refused_until_it_fades(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    try:
        await vouch(store, "alice", "m1", "alice", now=NOW, timeout=T)
        with pytest.raises(SharedAccount) as refused:
            await vouch(store, "alice", "m1", "bob", now=NOW + 60, timeout=T)
        assert refused.value.message == (
            "etcd user alice is used by OS users alice and bob on m1: "
            "team features need one etcd account per person (dsh admin user add bob)"
        )
        assert refused.value.exit_code == 2
        await vouch(store, "alice", "m2", "bob", now=NOW + 60, timeout=T)  # another machine: its own mark
        await vouch(store, "alice", "m1", "alice", now=NOW + 120, timeout=T)  # she goes on
        await vouch(store, "alice", "m1", "bob", now=NOW + HOLD + 1, timeout=T)  # faded: bob's now
        with pytest.raises(SharedAccount):
            await vouch(store, "alice", "m1", "alice", now=NOW + HOLD + 2, timeout=T)
    finally:
        await store.close()


async def test_the_mark_is_written_when_new_or_stale_only(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    key = seen_key("alice", "m/1")
    try:
        await vouch(store, "alice", "m/1", "alice", now=NOW, timeout=T)
        first = await store.get(key, timeout=T)
        assert first is not None and first.value == dumps(Seen("alice", NOW))
        await vouch(store, "alice", "m/1", "alice", now=NOW + REFRESH - 1, timeout=T)
        same = await store.get(key, timeout=T)
        assert same is not None and same.mod_revision == first.mod_revision
        await vouch(store, "alice", "m/1", "alice", now=NOW + REFRESH + 1, timeout=T)
        later = await store.get(key, timeout=T)
        assert later is not None and later.value == dumps(Seen("alice", NOW + REFRESH + 1))
        assert key.endswith(b"/u/alice/seen/m%2F1")  # the machine id cannot leave the tree
        await store.put(key, b"{not a record", timeout=T)  # damaged: replaced, not an error
        await vouch(store, "alice", "m/1", "bob", now=NOW + REFRESH + 2, timeout=T)
        replaced = await store.get(key, timeout=T)
        assert replaced is not None and replaced.value == dumps(Seen("bob", NOW + REFRESH + 2))
    finally:
        await store.close()

"""Attack review of issue 21's shared-account tripwire (third round): the etcd
store's `first` check (EtcdStore.first), on a real etcd with a check of the test's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsh.errors import UsageError
from dsh.session.access import checked_name
from dsh.session.seen import SharedAccount, vouch
from dsh.store.base import StoreTimeout, StoreUnavailable
from dsh.store.etcd import EtcdStore, parse_url
from dsh.store.sqlite import SqliteStore
from tests.etcd import Etcd

T = 5.0
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def etcd() -> Iterator[Etcd]:
    server = Etcd().start()
    yield server
    server.stop()


class Flaky:
    """A first check that fails with an outage `fails` times (after `delay`), then passes."""

    def __init__(self, fails: int, delay: float = 0.0) -> None:
        self.fails, self.delay, self.runs = fails, delay, 0

    async def __call__(self) -> None:
        self.runs += 1
        await asyncio.sleep(self.delay)
        if self.runs <= self.fails:
            raise StoreUnavailable("etcd at the test's is unavailable (a blip)")


async def test_an_outage_the_first_check_met_after_its_caller_gave_up_is_not_the_next_calls(
    etcd: Etcd,
) -> None:
    """A call that stopped waiting (its own time ran out) leaves the check running; when
    that check then meets an outage, the next call runs it again: it is not failed with
    the old outage (etcd answers again by then)."""
    store = EtcdStore(parse_url(etcd.url))
    check = store.first = Flaky(1, delay=0.3)
    try:
        with pytest.raises(StoreTimeout):
            await store.get(b"/k", timeout=0.1)
        await asyncio.sleep(0.5)  # the check has failed meanwhile, with nobody waiting
        await store.put(b"/k", b"v", timeout=T)  # not retried: a write
        assert check.runs == 2
    finally:
        await store.close()


async def test_a_read_retried_within_its_time_rides_out_an_outage_of_the_first_check(etcd: Etcd) -> None:
    """A read is retried within its time when etcd is away (`retry`), the first check's
    outage too: the check runs again, and the read goes on."""
    store = EtcdStore(parse_url(etcd.url))
    check = store.first = Flaky(2)
    try:
        assert await store.get(b"/nothing", timeout=T) is None
        assert check.runs == 3
        await store.get(b"/nothing", timeout=T)
        assert check.runs == 3  # once passed, never again
    finally:
        await store.close()


@pytest.mark.parametrize("other", ["root", "dshtest2", "John.Doe"])
async def test_the_refusal_never_advises_an_account_dsh_admin_cannot_make(tmp_path: Path, other: str) -> None:
    """The refusal names `dsh admin user add OS_USER` as the way out; for an OS user
    whose name cannot name a person (root, dsh…, capitals), that command fails too."""
    store = SqliteStore(tmp_path / "s.db")
    try:
        await vouch(store, "alice", "m1", "alice", now=NOW, timeout=T)
        with pytest.raises(SharedAccount) as refused:
            await vouch(store, "alice", "m1", other, now=NOW + 60, timeout=T)
        said = refused.value.message
        assert said.startswith(f"etcd user alice is used by OS users alice and {other} on m1: "), said
        assert "team features need one etcd account per person" in said
        assert f"user add {other}" not in said, said
        with pytest.raises(UsageError):
            checked_name(other)  # so: never advised
    finally:
        await store.close()


async def test_a_vote_is_never_cast_over_one_for_another_session_under_the_same_req(tmp_path: Path) -> None:
    """An ask that names another session's REQ must not let `dsh approve` replace the
    vote its voter cast for that other session (erasing an approval)."""
    from dsh.session.approvals import vote, vote_key
    from dsh.session.codec import loads
    from dsh.session.records import ApprovalAsk, Vote
    from dsh.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "s.db")
    try:
        real = ApprovalAsk("id2.1.1.1", "t/ops", "s2", "1.1.1", "alice", "", 1, 2e9)
        await vote(store, "ops", "carol", real, False, "ok", "m", timeout=10)
        planted = ApprovalAsk("id2.1.1.1", "t/ops", "s1", "1.1.1", "bob", "", 1, 2e9)
        await vote(store, "ops", "carol", planted, True, "", "m", timeout=10)
        held = await store.get(vote_key("ops", "carol", "id2.1.1.1"), timeout=10)
        assert held is not None
        kept = loads(Vote, held.value, key=held.key)
        assert (kept.session, kept.deny, kept.comment) == ("s2", False, "ok")
        await vote(store, "ops", "carol", real, True, "changed my mind", "m", timeout=10)  # her own: replaced
        held = await store.get(vote_key("ops", "carol", "id2.1.1.1"), timeout=10)
        assert held is not None and loads(Vote, held.value, key=held.key).deny
    finally:
        await store.close()

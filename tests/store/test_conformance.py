"""Store conformance: etcd's semantics, checked on every implementation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsh.errors import StoreError
from dsh.store.base import (
    MAX_TXN_OPS,
    MAX_VALUE,
    Compacted,
    Compare,
    Delete,
    Event,
    LeaseNotFound,
    Put,
    RequestTooLarge,
    Store,
    Watch,
)
from tests.helpers.storekinds import StoreKind
from tests.helpers.watch import collect

T = 10.0  # the timeout of every call in these tests
ROOT = Path(__file__).parent.parent.parent


async def next_batch(watch: Watch, within: float = 5.0) -> list[Event]:
    iterator = watch.__aiter__()
    return await asyncio.wait_for(iterator.__anext__(), within)


async def test_put_get_and_revisions(store: Store) -> None:
    assert await store.get(b"a", timeout=T) is None
    r1 = await store.put(b"a", b"1", timeout=T)
    r2 = await store.put(b"a", b"2", timeout=T)
    r3 = await store.put(b"b", b"x", timeout=T)
    assert r1 < r2 < r3
    kv = await store.get(b"a", timeout=T)
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", r1, r2, 2)


async def test_range_by_prefix_in_key_order(store: Store) -> None:
    for key in (b"p/b", b"p/a", b"p\xff", b"q", b"p/c/d", b"o"):
        await store.put(key, key, timeout=T)
    kvs, revision = await store.range(b"p/", timeout=T)
    assert [kv.key for kv in kvs] == [b"p/a", b"p/b", b"p/c/d"]
    assert revision == max(kv.mod_revision for kv in (await store.range(b"", timeout=T))[0])
    everything, _ = await store.range(b"", timeout=T)
    assert len(everything) == 6


async def test_ranges_read_several_prefixes_in_one_snapshot(store: Store) -> None:
    assert await store.ranges([], timeout=T) == ([], 0)

    async def writer() -> None:  # b/N is put after a/N, each on its own
        for i in range(60):
            await store.put(b"a/%03d" % i, b"x", timeout=T)
            await store.put(b"b/%03d" % i, b"x", timeout=T)

    task = asyncio.ensure_future(writer())
    try:
        while not task.done():
            (a, b, none), revision = await store.ranges([b"a/", b"b/", b"c/"], timeout=T)
            # One snapshot: every b/N read has its a/N (a later read of b/ would see more)
            assert len(b) <= len(a) and none == []
            assert all(kv.mod_revision <= revision for kv in a + b)
            await asyncio.sleep(0)
    finally:
        await task
    (a, b), revision = await store.ranges([b"a/", b"b/"], timeout=T)
    assert [kv.key for kv in a] == [b"a/%03d" % i for i in range(60)] and len(b) == 60
    assert revision == (await store.range(b"", timeout=T))[1]


async def test_delete_key_and_prefix(store: Store) -> None:
    for key in (b"d/1", b"d/2", b"d/3", b"e"):
        await store.put(key, b"v", timeout=T)
    assert await store.delete(b"d/1", timeout=T) == 1
    assert await store.delete(b"d/1", timeout=T) == 0
    assert await store.delete(b"d/", prefix=True, timeout=T) == 2
    kvs, _ = await store.range(b"", timeout=T)
    assert [kv.key for kv in kvs] == [b"e"]
    # A re-created key starts a new life: new create revision, version 1.
    await store.put(b"d/1", b"again", timeout=T)
    kv = await store.get(b"d/1", timeout=T)
    assert kv is not None and kv.version == 1


async def test_txn_compares_and_branches(store: Store) -> None:
    rev = await store.put(b"k", b"v1", timeout=T)
    ok = await store.txn(
        [
            Compare(b"k", "value", "==", b"v1"),
            Compare(b"k", "version", "==", 1),
            Compare(b"k", "create", "==", rev),
            Compare(b"k", "mod", "<", rev + 1),
            Compare(b"absent", "version", "==", 0),
        ],
        [Put(b"k", b"v2"), Put(b"other", b"o")],
        [Put(b"failed", b"f")],
        timeout=T,
    )
    assert ok.succeeded and ok.revision == rev + 1
    bad = await store.txn(
        [Compare(b"k", "value", "==", b"v1")], [Put(b"k", b"v3")], [Delete(b"other")], timeout=T
    )
    assert not bad.succeeded
    assert (await store.get(b"k", timeout=T)).value == b"v2"  # type: ignore[union-attr]
    assert await store.get(b"other", timeout=T) is None
    assert await store.get(b"failed", timeout=T) is None
    # A value compare on a missing key is false (etcd).
    missing = await store.txn([Compare(b"absent", "value", "!=", b"x")], [Put(b"z", b"z")], timeout=T)
    assert not missing.succeeded


async def test_txn_writes_one_revision(store: Store) -> None:
    result = await store.txn([], [Put(f"t/{i}".encode(), b"v") for i in range(5)], timeout=T)
    kvs, _ = await store.range(b"t/", timeout=T)
    assert {kv.mod_revision for kv in kvs} == {result.revision}


async def test_transaction_of_128_operations_and_not_more(store: Store) -> None:
    ops = [Put(f"m/{i:03}".encode(), b"x" * 100) for i in range(MAX_TXN_OPS)]
    assert (await store.txn([], ops, timeout=T)).succeeded
    assert len((await store.range(b"m/", timeout=T))[0]) == MAX_TXN_OPS
    with pytest.raises(RequestTooLarge):
        await store.txn([], [*ops, Put(b"m/one-more", b"x")], timeout=T)
    with pytest.raises(RequestTooLarge):
        await store.txn(
            [], [Put(b"n/1", b"x")], [Put(f"n/{i}".encode(), b"x") for i in range(129)], timeout=T
        )
    assert await store.get(b"m/one-more", timeout=T) is None


async def test_values_up_to_the_limit(store: Store) -> None:
    big = bytes(range(256)) * (MAX_VALUE // 256) + b"z" * (MAX_VALUE % 256)
    assert len(big) == MAX_VALUE and MAX_VALUE < 1536 * 1024
    await store.put(b"big", big, timeout=T)
    assert (await store.get(b"big", timeout=T)).value == big  # type: ignore[union-attr]
    with pytest.raises(RequestTooLarge):
        await store.put(b"bigger", b"x" * (1536 * 1024 + 1), timeout=T)
    assert await store.get(b"bigger", timeout=T) is None


async def test_two_processes_race_on_one_compare_and_set(kind: StoreKind) -> None:
    store = kind.open()
    await store.get(b"init", timeout=T)  # the store exists before the racers open it
    for round_ in range(3):
        key = f"race/{round_}"
        racers = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.store.racer", kind.spec, key, f"p{i}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for i in range(2)
        ]
        try:
            for racer in racers:
                assert racer.stdout is not None and racer.stdout.readline().strip() == "ready"
            for racer in racers:
                assert racer.stdin is not None
                racer.stdin.write("go\n")
                racer.stdin.flush()
            outcomes = sorted(racer.communicate(timeout=30)[0].strip() for racer in racers)
        finally:
            for racer in racers:
                racer.kill()
        assert outcomes == ["lost", "won"], outcomes
        kv = await store.get(key.encode(), timeout=T)
        assert kv is not None and kv.version == 1


async def test_lease_keepalive_expiry_and_revoke(kind: StoreKind) -> None:
    store = kind.open()
    ttl = kind.min_ttl
    lease = await store.grant(ttl, timeout=T)
    await store.put(b"l/held", b"v", lease=lease.id, timeout=T)
    await store.put(b"l/plain", b"v", timeout=T)
    for _ in range(3):  # keep-alive holds it past several TTLs
        await asyncio.sleep(ttl / 2)
        await store.keepalive(lease.id, timeout=T)
    assert await store.get(b"l/held", timeout=T) is not None
    await store.revoke(lease.id, timeout=T)
    assert await store.get(b"l/held", timeout=T) is None
    assert await store.get(b"l/plain", timeout=T) is not None
    with pytest.raises(LeaseNotFound):
        await store.keepalive(lease.id, timeout=T)
    with pytest.raises(LeaseNotFound):
        await store.put(b"l/late", b"v", lease=lease.id, timeout=T)


async def test_lease_expiring_while_a_watcher_waits(kind: StoreKind) -> None:
    owner, watcher = kind.open(), kind.open()
    lease = await owner.grant(kind.min_ttl, timeout=T)
    rev = await owner.put(b"s/owner", b"me", lease=lease.id, timeout=T)
    watch = await watcher.watch(b"s/", start_revision=rev + 1, timeout=T)
    try:
        started = time.monotonic()
        (event,) = await next_batch(watch, within=kind.min_ttl + 5)
        assert (event.kind, event.kv.key) == ("delete", b"s/owner")
        assert time.monotonic() - started >= kind.min_ttl * 0.5
    finally:
        await watch.close()
    assert await owner.get(b"s/owner", timeout=T) is None
    with pytest.raises(LeaseNotFound):
        await owner.keepalive(lease.id, timeout=T)


async def test_watch_from_an_old_revision_replays_in_order(store: Store) -> None:
    first = await store.put(b"w/a", b"1", timeout=T)
    await store.put(b"x/ignored", b"1", timeout=T)
    await store.put(b"w/b", b"2", timeout=T)
    await store.delete(b"w/a", timeout=T)
    watch = await store.watch(b"w/", start_revision=first, timeout=T)
    try:
        events = await collect(watch, 3)
        assert [(e.kind, e.kv.key) for e in events] == [("put", b"w/a"), ("put", b"w/b"), ("delete", b"w/a")]
        assert [e.kv.mod_revision for e in events] == sorted(e.kv.mod_revision for e in events)
        await store.put(b"w/c", b"3", timeout=T)
        (live,) = await next_batch(watch)
        assert live.kv.key == b"w/c" and live.kv.value == b"3"
    finally:
        await watch.close()


async def test_watch_from_now_sees_only_new_events(store: Store) -> None:
    await store.put(b"n/old", b"1", timeout=T)
    watch = await store.watch(b"n/", start_revision=0, timeout=T)
    try:
        iterator = watch.__aiter__()
        pending = asyncio.ensure_future(iterator.__anext__())
        await asyncio.sleep(0.1)
        await store.put(b"n/new", b"2", timeout=T)
        events = await asyncio.wait_for(pending, 5)
        assert [e.kv.key for e in events] == [b"n/new"]
    finally:
        await watch.close()


async def test_compacted_history_is_refused(store: Store) -> None:
    revs = [await store.put(b"c/k", str(i).encode(), timeout=T) for i in range(5)]
    await store.compact(revs[3], timeout=T)
    with pytest.raises(Compacted) as info:
        await store.watch(b"c/", start_revision=revs[1], timeout=T)
    assert info.value.compacted == revs[3]
    watch = await store.watch(b"c/", start_revision=revs[3], timeout=T)
    try:
        events = await collect(watch, 2)
        assert [e.kv.value for e in events] == [b"3", b"4"]
    finally:
        await watch.close()
    assert (await store.get(b"c/k", timeout=T)).value == b"4"  # type: ignore[union-attr]


async def test_watch_from_now_survives_compaction_and_a_future_start_waits(store: Store) -> None:
    revs = [await store.put(b"f/k", str(i).encode(), timeout=T) for i in range(3)]
    await store.compact(revs[2], timeout=T)
    now = await store.watch(b"f/", start_revision=0, timeout=T)
    future = await store.watch(b"f/", start_revision=revs[2] + 2, timeout=T)
    try:
        await store.put(b"f/k", b"a", timeout=T)  # revs[2] + 1: before the future start
        await store.put(b"f/k", b"b", timeout=T)  # revs[2] + 2
        assert [e.kv.value for e in await collect(now, 2)] == [b"a", b"b"]
        assert [e.kv.value for e in await next_batch(future)] == [b"b"]
    finally:
        await now.close()
        await future.close()


async def test_compaction_bounds(store: Store) -> None:
    rev = await store.put(b"b/k", b"1", timeout=T)
    await store.put(b"b/k", b"2", timeout=T)
    with pytest.raises(StoreError):
        await store.compact(rev + 100, timeout=T)  # a future revision
    await store.compact(rev + 1, timeout=T)
    with pytest.raises(Compacted):
        await store.compact(rev, timeout=T)  # already compacted


async def test_delete_events_and_failed_txn_revision(store: Store) -> None:
    rev = await store.put(b"e/k", b"v", timeout=T)
    watch = await store.watch(b"e/", start_revision=rev + 1, timeout=T)
    try:
        deleted_at = rev + 1
        assert await store.delete(b"e/k", timeout=T) == 1
        (event,) = await next_batch(watch)
        assert (event.kind, event.kv.create_revision, event.kv.version, event.kv.mod_revision) == (
            "delete",
            0,
            0,
            deleted_at,
        )
    finally:
        await watch.close()
    failed = await store.txn([Compare(b"e/k", "version", ">", 0)], [Put(b"e/x", b"x")], timeout=T)
    assert (failed.succeeded, failed.revision) == (False, deleted_at)


async def test_requests_etcd_would_refuse(store: Store) -> None:
    with pytest.raises(StoreError):
        await store.txn([], [Put(b"d", b"1"), Put(b"d", b"2")], timeout=T)  # one key twice
    with pytest.raises(RequestTooLarge):
        await store.put(b"", b"empty key", timeout=T)
    with pytest.raises(RequestTooLarge):
        await store.txn([Compare(f"c{i}".encode(), "version", "==", 0) for i in range(129)], [], timeout=T)
    assert (await store.range(b"", timeout=T))[0] == []


async def test_last_key_under_a_prefix(store: Store) -> None:
    for key in (b"j/001", b"j/010", b"j/002", b"k/999"):
        await store.put(key, key, timeout=T)
    last = await store.last(b"j/", timeout=T)
    assert last is not None and last.key == b"j/010"
    assert await store.last(b"none/", timeout=T) is None

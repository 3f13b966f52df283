"""What only the etcd store has: URLs, several members, TLS, auth, prefixes, restarts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from dsh.errors import StoreError, UsageError
from dsh.store import open_store
from dsh.store.base import Compacted, Compare, Event, Put, StoreTimeout, Watch
from dsh.store.etcd import EtcdStore, parse_url
from tests.etcd import Etcd, etcdctl, make_tls
from tests.helpers.watch import collect

T = 10.0


@pytest.fixture
def etcd() -> Iterator[Etcd]:
    server = Etcd().start()
    yield server
    server.stop()


async def take(watch: Watch, count: int) -> list[Event]:
    return await collect(watch, count, within=10.0)


def test_urls_name_endpoints_tls_users_and_prefixes() -> None:
    options = parse_url("etcd://a.example:2379,10.0.0.2:2380/team-a")
    assert options.endpoints == (("a.example", 2379), ("10.0.0.2", 2380))
    assert (options.tls, options.prefix, options.user) == (False, b"/team-a", None)
    assert parse_url("etcd://u@h:1/p/", user="other", password="x", prefix="q").user == "u"  # the URL wins
    assert parse_url("etcd://h:1", prefix="/q/").prefix == b"/q"
    secure = parse_url("etcds://ops@[::1]:2379", password="pw")
    assert (secure.tls, secure.user, secure.endpoints) == (True, "ops", (("::1", 2379),))
    assert parse_url("etcd://h:1", ca="/ca.pem").tls  # a CA alone means TLS
    for bad, says in [
        ("etcd://h", "not HOST:PORT"),
        ("etcd://h:0", "not HOST:PORT"),
        ("etcd://u:pw@h:1", "not in the URL"),
        ("etcd://u@h:1", "needs a password"),
    ]:
        with pytest.raises(UsageError, match=says):
            parse_url(bad)
    with pytest.raises(UsageError, match="needs its key"):
        parse_url("etcd://h:1", cert="/c.pem")


async def test_a_prefix_keeps_two_stores_apart(etcd: Etcd) -> None:
    a = open_store(f"{etcd.url}/a", {})
    b = open_store(etcd.url, {"DSH_ETCD_PREFIX": "b"})
    try:
        await a.put(b"/k", b"from a", timeout=T)
        rev = await b.put(b"/k", b"from b", timeout=T)
        watch = await a.watch(b"", start_revision=rev - 1, timeout=T)
        try:
            (event,) = await take(watch, 1)
            assert (event.kv.key, event.kv.value) == (b"/k", b"from a")
        finally:
            await watch.close()
        assert [kv.value for kv in (await a.range(b"", timeout=T))[0]] == [b"from a"]
        assert (await b.get(b"/k", timeout=T)).value == b"from b"  # type: ignore[union-attr]
        assert await a.delete(b"/k", prefix=True, timeout=T) == 1
        assert (await b.last(b"", timeout=T)).value == b"from b"  # type: ignore[union-attr]
        assert a.name.endswith("/a") and "etcd://127.0.0.1:" in b.name
    finally:
        await a.close()
        await b.close()
    raw = etcdctl(etcd.members[0].endpoint, "get", "--prefix", "/b/", "--keys-only")
    assert raw.split() == ["/b/k"]  # "/b" + "/k": dsh's keys start with "/"


async def test_a_range_larger_than_a_page_is_read_whole(etcd: Etcd) -> None:
    store = open_store(etcd.url, {})
    try:
        for first in range(0, 2500, 100):
            await store.txn([], [Put(b"r/%05d" % i, b"v") for i in range(first, first + 100)], timeout=T)
        kvs, revision = await store.range(b"r/", timeout=T)
        assert [kv.key for kv in kvs] == [b"r/%05d" % i for i in range(2500)]
        assert revision == max(kv.mod_revision for kv in kvs)
    finally:
        await store.close()


async def until_channel_left_ready(store: object, bound: float = 5.0) -> None:
    assert isinstance(store, EtcdStore)
    channel = store._channel
    assert channel is not None
    deadline = time.monotonic() + bound
    while channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY:
        assert time.monotonic() < deadline, f"the channel still reports READY {bound:g}s after the kill"
        await asyncio.sleep(0.01)


async def test_a_restarted_etcd_pauses_calls_and_watches_resume_without_a_gap(etcd: Etcd) -> None:
    store = open_store(etcd.url, {})
    try:
        rev = await store.put(b"w/0", b"0", timeout=T)
        watch = await store.watch(b"w/", start_revision=rev + 1, timeout=T)
        await store.put(b"w/1", b"1", timeout=T)
        assert [e.kv.key for e in await take(watch, 1)] == [b"w/1"]
        etcd.members[0].kill()
        # A write already on the wire when the member died fails (it may have been
        # applied: it is not retried). Start this one once the channel has seen the loss.
        await until_channel_left_ready(store)
        started = time.monotonic()
        pending = asyncio.ensure_future(store.put(b"w/2", b"2", timeout=15))
        await asyncio.sleep(1.0)
        assert not pending.done()  # no member: the put waits (within its timeout)
        await asyncio.to_thread(etcd.members[0].start, new=False)
        await asyncio.to_thread(etcd.wait)
        await pending
        assert time.monotonic() - started < 15
        await store.put(b"w/3", b"3", timeout=T)
        events = await take(watch, 2)
        assert [e.kv.key for e in events] == [b"w/2", b"w/3"]
    finally:
        await store.close()


async def test_a_call_with_no_member_up_ends_at_its_timeout(tmp_path: Path) -> None:
    server = Etcd().start()
    url = server.url
    server.stop()
    store = open_store(url, {})
    try:
        started = time.monotonic()
        with pytest.raises(StoreTimeout):
            await store.get(b"k", timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        await store.close()


async def test_three_members_lose_their_leader_and_nothing_written_is_lost() -> None:
    with Etcd(3) as cluster:
        store = open_store(cluster.url, {})
        try:
            lease = await store.grant(2, timeout=T)
            await store.put(b"held", b"v", lease=lease.id, timeout=T)

            async def keep() -> None:  # as a session does: every TTL/3, beside the writes
                while True:
                    await asyncio.sleep(0.6)
                    await store.keepalive(lease.id, timeout=T)

            keeper = asyncio.ensure_future(keep())
            revisions = []
            unknown = 0
            for i in range(20):
                if i == 10:
                    await asyncio.to_thread(cluster.leader().kill)
                try:
                    result = await store.txn(
                        [Compare(b"c/seq", "version", "==", i)], [Put(b"c/seq", b"%d" % i)], timeout=T
                    )
                    assert result.succeeded
                    revisions.append(result.revision)
                except StoreError:
                    # A write in flight when the leader died: its outcome is unknown,
                    # and a read (retried until a leader answers) tells.
                    unknown += 1
                    now = await store.get(b"c/seq", timeout=T)
                    if now is None or now.version != i + 1:
                        assert (await store.txn([], [Put(b"c/seq", b"%d" % i)], timeout=T)).succeeded
                assert not keeper.done()
            keeper.cancel()
            assert revisions == sorted(revisions) and unknown <= 2
            kv = await store.get(b"c/seq", timeout=T)
            assert kv is not None and (kv.version, kv.value) == (20, b"19")
            assert await store.get(b"held", timeout=T) is not None  # the lease lived through it
        finally:
            await store.close()


async def test_tls_with_a_ca_and_a_client_certificate(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    extra = [
        f"--cert-file={tls['server_cert']}",
        f"--key-file={tls['server_key']}",
        f"--trusted-ca-file={tls['ca']}",
        "--client-cert-auth",
    ]
    with Etcd(extra=extra) as server:
        env = {
            "DSH_ETCD_CA": str(tls["ca"]),
            "DSH_ETCD_CERT": str(tls["client_cert"]),
            "DSH_ETCD_KEY": str(tls["client_key"]),
        }
        store = open_store(f"etcds://localhost:{server.members[0].client_port}", env)
        try:
            await store.put(b"k", b"over tls", timeout=T)
            assert (await store.get(b"k", timeout=T)).value == b"over tls"  # type: ignore[union-attr]
        finally:
            await store.close()
        # Without the client certificate the server refuses the connection.
        anonymous = open_store(server.url.replace("etcd://", "etcds://"), {"DSH_ETCD_CA": str(tls["ca"])})
        try:
            with pytest.raises(StoreError):
                await anonymous.get(b"k", timeout=1.0)
        finally:
            await anonymous.close()


async def test_user_and_password_with_a_token_that_expires(tmp_path: Path) -> None:
    with Etcd(extra=["--auth-token-ttl", "1"]) as server:
        endpoint = server.members[0].endpoint
        etcdctl(endpoint, "user", "add", "root", "--new-user-password=rootpw")
        etcdctl(endpoint, "user", "grant-role", "root", "root")
        etcdctl(endpoint, "auth", "enable")
        password = tmp_path / "password"
        password.write_text("rootpw\n")
        store = open_store(f"etcd://root@{endpoint}", {"DSH_ETCD_PASSWORD_FILE": str(password)})
        assert isinstance(store, EtcdStore)
        try:
            await store.put(b"k", b"1", timeout=T)
            first = store._token
            await asyncio.sleep(2.5)  # etcd forgets an unused simple token after its TTL
            await store.put(b"k", b"2", timeout=T)
            assert store._token != first  # renewed, and the call went through
            lease = await store.grant(5, timeout=T)
            await asyncio.sleep(2.5)
            assert await store.keepalive(lease.id, timeout=T) > 0
            watch = await store.watch(b"k", start_revision=0, timeout=T)
            await store.put(b"k", b"3", timeout=T)
            assert [e.kv.value for e in await take(watch, 1)] == [b"3"]
            await watch.close()
        finally:
            await store.close()
        wrong = open_store(f"etcd://root@{endpoint}", {"DSH_ETCD_PASSWORD": "nope"})
        try:
            with pytest.raises(StoreError, match="authenticate"):
                await wrong.get(b"k", timeout=T)
        finally:
            await wrong.close()


async def test_history_is_compacted_as_writes_go(etcd: Etcd, monkeypatch: pytest.MonkeyPatch) -> None:
    import dsh.store.etcd as adapter

    monkeypatch.setattr(adapter, "COMPACT_EVERY", 20)
    store = EtcdStore(parse_url(etcd.url), history_keep=50)
    try:
        first = await store.put(b"/h", b"0", timeout=T)
        for i in range(100):
            last = await store.put(b"/h", b"%d" % i, timeout=T)
        if store._compacting is not None:
            await store._compacting
        with pytest.raises(Compacted):  # the oldest history is gone, the last 50 revisions stay
            await store.watch(b"/h", start_revision=first, timeout=T)
        watch = await store.watch(b"/h", start_revision=last - 40, timeout=T)
        await watch.close()
    finally:
        await store.close()

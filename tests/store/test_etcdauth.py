"""etcd's users, roles and permissions through `dsh.store.etcdauth`, against a real
etcd 3.4: what is granted is what etcd enforces, and read back in the store's keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from dsh.errors import StoreError
from dsh.store.base import StoreDenied, prefix_end
from dsh.store.etcd import EtcdStore, parse_url
from dsh.store.etcdauth import EtcdAuth, Permission, metrics
from tests.etcd import ROOT_PASSWORD, Etcd, etcdctl, make_tls
from tests.sshd import free_port

T = 10.0
ALICE = b"/dsh/v1/u/alice/"


@pytest.fixture(scope="module")
def server() -> Iterator[Etcd]:
    """One etcd with authentication on, root's password ROOT_PASSWORD; each test uses
    users and roles of its own."""
    etcd = Etcd(auth=True).start()
    yield etcd
    etcd.stop()


@asynccontextmanager
async def opened(
    url: str, user: str | None = None, password: str | None = None, prefix: str = "team-a"
) -> AsyncIterator[EtcdStore]:
    store = EtcdStore(parse_url(url, user=user, password=password, prefix=prefix))
    try:
        yield store
    finally:
        await store.close()


def refused(exc: StoreError) -> bool:
    """etcd's PERMISSION_DENIED, as the store maps it."""
    return isinstance(exc, StoreDenied) or "permission denied" in str(exc)


async def test_authentication_goes_on_and_off_and_either_twice_is_fine() -> None:
    with Etcd(extra=["--bcrypt-cost", "4"]) as server:
        # A handle with user root on an etcd whose authentication is still off.
        async with opened(server.url, "root", ROOT_PASSWORD) as store:
            auth = EtcdAuth(store)
            assert await auth.user_add("root", ROOT_PASSWORD, timeout=T)
            await auth.grant_role("root", "root", timeout=T)
            await auth.enable(timeout=T)
            await auth.enable(timeout=T)
            await store.put(b"/k", b"as root", timeout=T)
            async with opened(server.url) as anonymous:
                with pytest.raises(StoreDenied):
                    await anonymous.get(b"/k", timeout=T)
            await auth.disable(timeout=T)
            await auth.disable(timeout=T)
            async with opened(server.url) as anonymous:
                assert (await anonymous.get(b"/k", timeout=T)).value == b"as root"  # type: ignore[union-attr]


async def test_a_user_is_added_once_listed_and_deleted(server: Etcd) -> None:
    async with opened(server.url, "root", ROOT_PASSWORD) as store:
        auth = EtcdAuth(store)
        assert await auth.user_add("add-1", "first", timeout=T)
        assert not await auth.user_add("add-1", "second", timeout=T)  # it existed: its password stays
        assert "add-1" in await auth.users(timeout=T)
        assert await auth.user_roles("add-1", timeout=T) == ()
        assert await auth.user_roles("add-none", timeout=T) is None
        async with opened(server.url, "add-1", "first") as theirs:
            assert (await EtcdAuth(theirs).status(timeout=T)).version  # logged in with the first
        assert await auth.user_delete("add-1", timeout=T)
        assert not await auth.user_delete("add-1", timeout=T)
        assert "add-1" not in await auth.users(timeout=T)


async def test_permissions_are_granted_and_read_back_in_the_stores_keys(server: Etcd) -> None:
    async with opened(server.url, "root", ROOT_PASSWORD) as store:
        auth = EtcdAuth(store)
        assert await auth.role_add("perms-1", timeout=T)
        assert not await auth.role_add("perms-1", timeout=T)
        granted = [
            Permission("readwrite", ALICE, prefix_end(ALICE)),
            Permission("read", b"/dsh/v1/serve/", prefix_end(b"/dsh/v1/serve/")),
            Permission("write", b"/dsh/v1/one"),
            Permission("read", b"/", prefix_end(b"/")),  # every key of the store
        ]
        for permission in granted:
            await auth.grant(role="perms-1", permission=permission, timeout=T)
        assert sorted(await auth.role_permissions("perms-1", timeout=T) or [], key=repr) == sorted(
            granted, key=repr
        )
        # etcd holds the prefix's keys: what a raw client of that etcd sees.
        shown = etcdctl(server.members[0].endpoint, "role", "get", "perms-1", user="root")
        assert "[/team-a/dsh/v1/u/alice/, /team-a/dsh/v1/u/alice0)" in shown
        assert "[/team-a/, /team-a0)" in shown
        # A permission on keys outside the store's prefix, or reaching out of it, is not the store's.
        for keys in (["/other"], ["/team-a/dsh/v1/y", "/zzz"], ["/team-a/dsh/v1/x", "--from-key"]):
            etcdctl(
                server.members[0].endpoint, "role", "grant-permission", "perms-1", "read", *keys, user="root"
            )
        assert len(await auth.role_permissions("perms-1", timeout=T) or []) == 4
        assert await auth.revoke("perms-1", granted[0], timeout=T)
        assert not await auth.revoke("perms-1", granted[0], timeout=T)
        assert not await auth.revoke("perms-none", granted[0], timeout=T)
        assert granted[0] not in (await auth.role_permissions("perms-1", timeout=T) or [])
        assert await auth.role_permissions("perms-none", timeout=T) is None
        with pytest.raises(ValueError, match="beyond a store's prefix"):
            await auth.grant("perms-1", Permission("read", b"/a", b"\x00"), timeout=T)
        async with opened(server.url, "root", ROOT_PASSWORD, prefix="") as whole:
            everything = Permission("read", b"/from/here", b"\x00")  # without a prefix: every key on
            await EtcdAuth(whole).grant("perms-1", everything, timeout=T)
            assert everything in (await EtcdAuth(whole).role_permissions("perms-1", timeout=T) or [])
        assert len(await auth.role_permissions("perms-1", timeout=T) or []) == 3  # not team-a's
        assert "perms-1" in await auth.roles(timeout=T)
        assert await auth.role_delete("perms-1", timeout=T)
        assert not await auth.role_delete("perms-1", timeout=T)
        assert "perms-1" not in await auth.roles(timeout=T)


async def test_a_users_role_reaches_its_prefix_and_nothing_beside_it(server: Etcd) -> None:
    async with opened(server.url, "root", ROOT_PASSWORD) as store:
        auth = EtcdAuth(store)
        await auth.user_add("alice", "alice-pw", timeout=T)
        await auth.role_add("u-alice", timeout=T)
        await auth.grant("u-alice", Permission("readwrite", ALICE, prefix_end(ALICE)), timeout=T)
        await auth.grant_role("alice", "u-alice", timeout=T)
        await auth.grant_role("alice", "u-alice", timeout=T)  # again: no change
        assert await auth.user_roles("alice", timeout=T) == ("u-alice",)
        async with opened(server.url, "alice", "alice-pw") as alice:
            await alice.put(ALICE + b"x", b"hers", timeout=T)
            assert (await alice.get(ALICE + b"x", timeout=T)).value == b"hers"  # type: ignore[union-attr]
            for outside in (b"/dsh/v1/u/al", b"/dsh/v1/u/alicex/y", b"/dsh/v1/u/bob/x"):
                with pytest.raises(StoreError) as caught:
                    await alice.put(outside, b"not hers", timeout=T)
                assert refused(caught.value), caught.value
            async with opened(server.url, "alice", "alice-pw", prefix="") as raw:
                with pytest.raises(StoreError) as caught:  # the same key under another prefix
                    await raw.put(ALICE + b"x", b"not hers", timeout=T)
                assert refused(caught.value), caught.value
            assert await auth.revoke_role("alice", "u-alice", timeout=T)
            assert not await auth.revoke_role("alice", "u-alice", timeout=T)
            assert not await auth.revoke_role("alice-none", "u-alice", timeout=T)
            with pytest.raises(StoreError) as caught:  # at once, with the token she holds
                await alice.put(ALICE + b"x", b"again", timeout=T)
            assert refused(caught.value), caught.value


async def test_a_new_password_or_a_deleted_user_ends_their_tokens(server: Etcd) -> None:
    async with opened(server.url, "root", ROOT_PASSWORD) as store:
        auth = EtcdAuth(store)
        await auth.user_add("carol", "old-pw", timeout=T)
        await auth.role_add("u-carol", timeout=T)
        carols = b"/dsh/v1/u/carol/"
        await auth.grant("u-carol", Permission("readwrite", carols, prefix_end(carols)), timeout=T)
        await auth.grant_role("carol", "u-carol", timeout=T)
        async with opened(server.url, "carol", "old-pw") as old:
            await old.put(carols + b"k", b"1", timeout=T)
            await auth.user_passwd("carol", "new-pw", timeout=T)
            with pytest.raises(StoreError, match="password"):
                await old.put(carols + b"k", b"2", timeout=T)
        async with opened(server.url, "carol", "new-pw") as new:
            await new.put(carols + b"k", b"3", timeout=T)
            assert await auth.user_delete("carol", timeout=T)
            with pytest.raises(StoreError):
                await new.put(carols + b"k", b"4", timeout=T)
        assert await auth.role_delete("u-carol", timeout=T)


async def test_status_alarms_and_metrics(server: Etcd) -> None:
    async with opened(server.url, "root", ROOT_PASSWORD) as store:
        auth = EtcdAuth(store)
        status = await auth.status(timeout=T)
        assert status.version.startswith("3.4.") and status.db_size > 0
        assert status.db_size_in_use > 0 and status.raft_index > 0
        assert status.leader == status.member != 0  # one member: it leads
        assert await auth.alarms(timeout=T) == []
    member = server.members[0]
    dead = free_port()  # nothing listens there: it refuses
    both = parse_url(f"etcd://127.0.0.1:{dead},{member.endpoint}")
    gauges = metrics(both, T)
    assert gauges["etcd_server_quota_backend_bytes"] > 0
    assert gauges["etcd_mvcc_db_total_size_in_bytes"] > 0
    assert "etcd_debugging_mvcc_compact_revision" in gauges
    with pytest.raises(StoreError, match=r"no etcd endpoint answered GET /metrics.*refused"):
        metrics(parse_url(f"etcd://127.0.0.1:{dead}"), 2.0)


def test_metrics_over_tls_with_a_client_certificate(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    extra = [
        f"--cert-file={tls['server_cert']}",
        f"--key-file={tls['server_key']}",
        f"--trusted-ca-file={tls['ca']}",
        "--client-cert-auth",
    ]
    with Etcd(extra=extra) as server:
        where = f"etcds://localhost:{server.members[0].client_port}"
        options = parse_url(
            where, ca=str(tls["ca"]), cert=str(tls["client_cert"]), key=str(tls["client_key"])
        )
        assert metrics(options, T)["etcd_server_quota_backend_bytes"] > 0
        with pytest.raises(StoreError, match="no etcd endpoint answered"):  # no client certificate
            metrics(parse_url(where, ca=str(tls["ca"])), T)

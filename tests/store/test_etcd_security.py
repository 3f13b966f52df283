"""The shared store's security rule (issue 21): dsh refuses an etcd off this
machine that is reached without TLS (before a password is sent) or whose
authentication is off, unless the operator says --insecure-store; a refusal by
etcd's access control is a StoreDenied with a sentence and exit 2.

etcd runs in a network namespace at 10.213.8.8 (tests/helpers/netns.py) so that
its address is not loopback; loopback cases run on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsh.store import open_store
from dsh.store.base import InsecureStore, StoreDenied
from dsh.store.etcd import EtcdStore, _target, parse_url
from tests.etcd import Etcd, etcdctl, make_tls
from tests.helpers import netns

T = 10.0
AWAY = "10.213.8.8"
ROOT_PW = "root-test-pw"

needs_netns = pytest.mark.skipif(bool(netns.missing()), reason=netns.missing() or "-")


def test_loopback_is_every_address_of_every_endpoint() -> None:
    assert _target([("127.0.0.1", 1), ("127.0.0.2", 2)])[1] is True
    assert _target([("localhost", 1)])[1] is True  # a name that resolves to loopback only
    assert _target([("::1", 1)])[1] is True
    assert _target([("::ffff:127.0.0.1", 1)])[1] is True  # IPv4-mapped
    assert _target([("127.0.0.1", 1), ("192.0.2.1", 2)])[1] is False  # one member elsewhere
    assert _target([("::ffff:192.0.2.1", 1)])[1] is False


async def test_no_tls_off_this_machine_is_refused_before_anything_is_sent() -> None:
    # 192.0.2.1 (TEST-NET-1) is never reached: the refusal comes before a connection.
    store = EtcdStore(parse_url("etcd://root@192.0.2.1:2379", password="secret"))
    started = time.monotonic()
    try:
        with pytest.raises(InsecureStore, match="not on this machine and its connection is not encrypted"):
            await store.get(b"k", timeout=T)
        assert time.monotonic() - started < 1.0
        assert store._token is None  # no Authenticate was sent
    finally:
        await store.close()


def test_the_command_line_refuses_it_with_a_sentence_and_exit_2(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["--store", "etcd://192.0.2.1:2379", "ls"])
    assert r.returncode == 2
    assert "is not on this machine and its connection is not encrypted" in r.stderr
    assert "--insecure-store" in r.stderr and "Traceback" not in r.stderr


def test_the_config_or_the_environment_can_accept_it(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for settings, env in (({"insecure": "true"}, {}), ({}, {"DSH_INSECURE_STORE": "1"})):
        store = open_store("etcd://192.0.2.1:2379", env, settings)
        assert isinstance(store, EtcdStore) and store.options.insecure
    assert not open_store("etcd://192.0.2.1:2379", {}, {"insecure": "false"}).options.insecure  # type: ignore[attr-defined]
    config = tmp_path / "config" / "dsh" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[etcd]\ninsecure = 1\n")
    r = run_dsh(["--store", "etcd://192.0.2.1:2379", "ls"])
    assert (r.returncode, r.stderr.strip()) == (2, f"dsh: {config}: etcd.insecure must be true or false")


# -- an etcd at an address of another namespace ---------------------------------------


@pytest.fixture(scope="module")
def away(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Etcd, Etcd, dict[str, Path]]]:
    """Two etcds at AWAY: one plain, one with TLS (auth off in both, at first)."""
    if netns.missing():
        pytest.fail(netns.missing())
    tls = make_tls(tmp_path_factory.mktemp("tls"), addresses=(AWAY,))
    with netns.Namespaces() as ns:
        service = ns.service("e", AWAY)
        ns.link(None, service, AWAY)
        plain = Etcd(host=AWAY, netns=service, extra=["--bcrypt-cost", "4"]).start()
        secure = Etcd(
            host=AWAY,
            netns=service,
            extra=[
                f"--cert-file={tls['server_cert']}",
                f"--key-file={tls['server_key']}",
                "--bcrypt-cost",
                "4",
            ],
        ).start()
        try:
            yield plain, secure, tls
        finally:
            plain.stop()
            secure.stop()


@needs_netns
def test_insecure_store_accepts_a_plain_etcd_elsewhere(  # type: ignore[no-untyped-def]
    run_dsh, away: tuple[Etcd, Etcd, dict[str, Path]]
) -> None:
    plain, _, _ = away
    refused = run_dsh(["--store", plain.url, "ls"])
    assert refused.returncode == 2 and "connection is not encrypted" in refused.stderr
    for how in (["--insecure-store"], []):
        extra = {} if how else {"DSH_INSECURE_STORE": "1"}
        r = run_dsh([*how, "--store", plain.url, "-c", "echo accepted"], env_extra=extra)
        assert (r.returncode, r.stdout.strip()) == (0, "accepted"), r.stderr


@needs_netns
async def test_tls_with_auth_off_elsewhere_is_refused_then_accepted_once_auth_is_on(
    away: tuple[Etcd, Etcd, dict[str, Path]],
) -> None:
    _, secure, tls = away
    url = secure.url.replace("etcd://", "etcds://")

    async def attempt(user: str | None = None, password: str | None = None, insecure: bool = False) -> None:
        store = EtcdStore(parse_url(url, ca=str(tls["ca"]), user=user, password=password, insecure=insecure))
        try:
            await store.put(b"/dsh/v1/probe", b"x", timeout=T)
        finally:
            await store.close()

    # auth off: anonymous (found by a probe) and with a user (etcd says so) are refused
    for user, password in ((None, None), ("root", ROOT_PW)):
        with pytest.raises(InsecureStore, match="has authentication off: anyone who can reach it"):
            await attempt(user, password)
    await attempt(insecure=True)  # accepted when the operator says so
    await attempt("root", ROOT_PW, insecure=True)

    ca = ["--cacert", str(tls["ca"])]
    endpoint = f"https://{secure.endpoints}"
    etcdctl(endpoint, "user", "add", "root", f"--new-user-password={ROOT_PW}", extra=ca)
    etcdctl(endpoint, "user", "grant-role", "root", "root", extra=ca)
    etcdctl(endpoint, "auth", "enable", extra=ca)
    try:
        await attempt("root", ROOT_PW)  # TLS and auth: used
        with pytest.raises(StoreDenied, match="has authentication on: give your etcd user and password"):
            await attempt()
        with pytest.raises(StoreDenied, match="refused user root's password"):
            await attempt("root", "wrong")
    finally:
        etcdctl(endpoint, "auth", "disable", extra=[*ca, "--user", f"root:{ROOT_PW}"])


# -- etcd's access control on this machine ---------------------------------------------


@pytest.fixture(scope="module")
def guarded() -> Iterator[Etcd]:
    """An etcd on loopback with auth on: root, and alice with her tree only."""
    server = Etcd(extra=["--bcrypt-cost", "4"]).start()
    endpoint = server.members[0].endpoint
    etcdctl(endpoint, "user", "add", "root", f"--new-user-password={ROOT_PW}")
    etcdctl(endpoint, "user", "grant-role", "root", "root")
    etcdctl(endpoint, "user", "add", "alice", "--new-user-password=alice-pw")
    etcdctl(endpoint, "role", "add", "u-alice")
    etcdctl(endpoint, "role", "grant-permission", "u-alice", "readwrite", "--prefix=true", "/dsh/v1/u/alice/")
    etcdctl(endpoint, "user", "grant-role", "alice", "u-alice")
    etcdctl(endpoint, "auth", "enable")
    yield server
    server.stop()


async def test_a_key_outside_the_users_role_is_denied_with_what_was_refused(guarded: Etcd) -> None:
    alice = EtcdStore(parse_url(guarded.url, user="alice", password="alice-pw"))
    try:
        await alice.put(b"/dsh/v1/u/alice/x", b"mine", timeout=T)
        assert alice.security.auth is True and alice.security.loopback is True
        with pytest.raises(StoreDenied, match=r"refused user alice reading /dsh/v1/u/al: its etcd roles"):
            await alice.get(b"/dsh/v1/u/al", timeout=T)
        with pytest.raises(StoreDenied, match=r"refused user alice writing /dsh/v1/u/bob/x"):
            await alice.put(b"/dsh/v1/u/bob/x", b"theirs", timeout=T)
        with pytest.raises(StoreDenied, match=r"refused user alice watching /dsh/v1/u/bob/"):
            await alice.watch(b"/dsh/v1/u/bob/", start_revision=0, timeout=T)
        kv = await alice.get(b"/dsh/v1/u/alice/x", timeout=T)
        assert kv is not None and kv.value == b"mine"  # her own tree is unaffected
    finally:
        await alice.close()


def test_the_command_line_says_who_to_log_in_as_and_exits_2(  # type: ignore[no-untyped-def]
    run_dsh, guarded: Etcd, tmp_path: Path
) -> None:
    anonymous = run_dsh(["--store", guarded.url, "ls"])
    assert anonymous.returncode == 2, anonymous.stderr
    assert "has authentication on: give your etcd user and password" in anonymous.stderr
    wrong = run_dsh(
        ["--store", f"etcd://alice@{guarded.endpoints}", "ls"], env_extra={"DSH_ETCD_PASSWORD": "no"}
    )
    assert wrong.returncode == 2 and "refused user alice's password" in wrong.stderr
    assert "Traceback" not in anonymous.stderr + wrong.stderr


async def test_a_handle_that_found_auth_off_logs_in_once_it_is_turned_on() -> None:
    with Etcd(extra=["--bcrypt-cost", "4"]) as server:
        endpoint = server.members[0].endpoint
        etcdctl(endpoint, "user", "add", "root", f"--new-user-password={ROOT_PW}")
        etcdctl(endpoint, "user", "grant-role", "root", "root")
        store = open_store(f"etcd://root@{endpoint}", {"DSH_ETCD_PASSWORD": ROOT_PW})
        assert isinstance(store, EtcdStore)
        try:
            await store.put(b"k", b"1", timeout=T)  # auth off on loopback: no token, and on
            assert store.security.auth is False
            etcdctl(endpoint, "auth", "enable")
            await asyncio.sleep(0)
            await store.put(b"k", b"2", timeout=T)  # etcd wants a user now: it logs in
            assert store.security.auth is True
        finally:
            await store.close()

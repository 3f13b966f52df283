"""Attacks on issue 21's security rule (review): ways in which a password or a
command could still leave this machine in clear, or a handle could fail to log
in, against a real etcd on loopback."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest

from dsh.store import open_store
from dsh.store.etcd import EtcdStore, parse_url
from tests.etcd import ROOT_PASSWORD, Etcd, etcdctl

T = 10.0


class Relay:
    """An HTTP CONNECT proxy (as `https_proxy` names one, on any machine) that
    relays to `target` and keeps every byte its clients sent."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sent = bytearray()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        rest = head.split(b"\r\n\r\n", 1)[1]
        upstream = socket.create_connection(self.target)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.sent += rest
        upstream.sendall(rest)
        threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()
        self._pump(client, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, keep: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if keep:
                    self.sent += chunk
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            sink.close()

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def guarded() -> Iterator[Etcd]:
    server = Etcd(auth=True).start()
    yield server
    server.stop()


async def test_a_loopback_etcd_is_not_reached_through_an_http_proxy(
    guarded: Etcd, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gRPC follows http_proxy/https_proxy/grpc_proxy: the "loopback" etcd is then
    # reached through the proxy (here on loopback for the test; in an office, a
    # machine on the network), in clear, password included.
    member = guarded.members[0]
    relay = Relay((member.host, member.client_port))
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{relay.port}")
    store = EtcdStore(parse_url(f"etcd://root@{guarded.endpoints}", password=ROOT_PASSWORD))
    try:
        await store.put(b"/dsh/v1/probe", b"x", timeout=T)
        assert store.security.loopback is True
    finally:
        await store.close()
        relay.close()
    assert ROOT_PASSWORD.encode() not in relay.sent
    assert relay.connections == 0


async def test_a_watch_logs_in_once_authentication_came_on() -> None:
    # `_call` notices "user name is empty" after a handle found auth off and logs in;
    # a watch created first after `dsh admin init` does not.
    with Etcd(extra=["--bcrypt-cost", "4"]) as server:
        endpoint = server.members[0].endpoint
        etcdctl(endpoint, "user", "add", "root", f"--new-user-password={ROOT_PASSWORD}")
        etcdctl(endpoint, "user", "grant-role", "root", "root")
        store = EtcdStore(parse_url(f"etcd://root@{endpoint}", password=ROOT_PASSWORD))
        try:
            await store.put(b"/dsh/v1/k", b"1", timeout=T)  # auth off: no token
            etcdctl(endpoint, "auth", "enable")
            await asyncio.sleep(0)
            watch = await store.watch(b"/dsh/v1/", start_revision=0, timeout=T)
            await watch.close()
        finally:
            await store.close()


def test_dsh_insecure_store_0_overrides_the_config() -> None:
    # Each [etcd] setting is overridden by its variable; DSH_INSECURE_STORE=0 cannot
    # take back a config's `insecure = true` (a shared /etc/dsh/config.toml, say).
    store = open_store("etcd://192.0.2.1:2379", {"DSH_INSECURE_STORE": "0"}, {"insecure": "true"})
    assert isinstance(store, EtcdStore)
    assert store.options.insecure is False

"""Network namespaces for partition tests (root only).

A *service* namespace holds one server (an sshd, an etcd) at an address of its
own, a /32 on its loopback. A *client* namespace (the root one, or a namespace
that plays another machine) reaches it through a veth pair of its own: a /30
for the pair and a route to the service's /32 through it. Two clients reach the
same service at the same address through separate links, so that one of them
can be cut off (`Link.cut`: the link goes down and packets are dropped
silently, a real partition) while the other still reaches it.

Every address is in 10.213.0.0/16, on links the tests make; nothing is sent
anywhere else. A lock file keeps two runs on one machine from colliding on
the fixed names, and whatever an earlier run left behind is removed first.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
from pathlib import Path
from types import TracebackType

PREFIX = "dsht"
LOCK = Path("/run/dsh-test-netns.lock")


def missing() -> str:
    """Why partition tests cannot run here ("" when they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI runs as root)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is missing (scripts/system-deps installs it)"
    return ""


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _existing() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


class Link:
    """A veth pair between a client namespace and a service namespace."""

    def __init__(self, index: int, client: str | None, service: str, address: str) -> None:
        self.client_end = f"{PREFIX}{index}c"
        self.service_end = f"{PREFIX}{index}s"
        self.client = client
        near, far = f"10.213.{index}.1", f"10.213.{index}.2"
        ip("link", "add", self.client_end, "type", "veth", "peer", "name", self.service_end)
        ip("link", "set", self.service_end, "netns", service)
        if client is not None:
            ip("link", "set", self.client_end, "netns", client)
        self._in(client, "addr", "add", f"{near}/30", "dev", self.client_end)
        self._in(client, "link", "set", self.client_end, "up")
        self._in(client, "route", "add", f"{address}/32", "via", far, "dev", self.client_end)
        self._in(service, "addr", "add", f"{far}/30", "dev", self.service_end)
        self._in(service, "link", "set", self.service_end, "up")

    @staticmethod
    def _in(ns: str | None, *args: str) -> None:
        ip(*(["-n", ns] if ns else []), *args)

    def cut(self) -> None:
        """Take the link down: packets between the two sides are dropped silently."""
        self._in(self.client, "link", "set", self.client_end, "down")

    def mend(self) -> None:
        self._in(self.client, "link", "set", self.client_end, "up")


class Namespaces:
    """The namespaces and links of one test; everything removed on exit."""

    def __init__(self) -> None:
        self._lock = LOCK.open("a")
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.names: list[str] = []
        self.links: list[Link] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._clear()

    def _clear(self) -> None:
        for name in _existing():
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", name)
        out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            dev = line.split(":")[1].strip().split("@")[0]
            if dev.startswith(PREFIX):
                with contextlib.suppress(subprocess.CalledProcessError):
                    ip("link", "del", dev)

    def machine(self, name: str) -> str:
        """A namespace for a client (another machine): returns its name."""
        full = PREFIX + name
        ip("netns", "add", full)
        ip("-n", full, "link", "set", "lo", "up")
        self.names.append(full)
        return full

    def service(self, name: str, address: str) -> str:
        """A namespace whose loopback holds `address` (a service's own)."""
        full = self.machine(name)
        ip("-n", full, "addr", "add", f"{address}/32", "dev", "lo")
        return full

    def link(self, client: str | None, service: str, address: str) -> Link:
        """Let `client` (None: the root namespace) reach `address` in `service`."""
        made = Link(len(self.links) + 1, client, service, address)
        self.links.append(made)
        return made

    @staticmethod
    def wrap(ns: str | None, argv: list[str]) -> list[str]:
        """`argv` run inside namespace `ns` (None: as it is)."""
        return ["ip", "netns", "exec", ns, *argv] if ns else argv

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for name in self.names:
            # What still runs in the test's own namespaces (an sshd's sessions whose
            # client was cut off never hear it went, nor does what they run): killed.
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10)
            for pid in pids.stdout.split():
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("netns", "del", name)
        self._clear()
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def __enter__(self) -> Namespaces:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

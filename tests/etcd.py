"""Real etcd processes on loopback, for the tests: one member or a cluster.

Each member has a private data directory (0700) and its own client and peer
ports. Election settings are shortened (heartbeat 50 ms, election 500 ms) so
that a lease can be as short as 1 s and a new leader is chosen quickly. No
`ETCD_*` variable of the caller reaches etcd (it reads them all as flags).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.sshd import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def missing() -> str | None:
    if not os.access(ETCD, os.X_OK):
        return "etcd is not installed (scripts/system-deps installs etcd-server)"
    return None


class Member:
    def __init__(
        self, name: str, root: Path, cluster: str, client_port: int, peer_port: int, extra: list[str]
    ) -> None:
        self.name = name
        self.dir = root / name
        self.client_port = client_port
        self.peer_port = peer_port
        self.cluster = cluster
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / f"{name}.log"
        self.scheme = "https" if any(a.startswith("--cert-file") for a in extra) else "http"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def start(self, *, new: bool = True) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        client = f"{self.scheme}://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            ETCD,
            "--name",
            self.name,
            "--data-dir",
            str(self.dir),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            self.cluster,
            "--initial-cluster-state",
            "new" if new else "existing",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--logger",
            "zap",
            "--log-level",
            "warn",
            *self.extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, start_new_session=True
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def healthy(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return False
        if self.scheme == "https":
            return _port_open(self.client_port)
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as answer:
                return b'"health":"true"' in answer.read()
        except OSError:
            return False


class Etcd:
    """One etcd member, or `members` of one cluster; `url` names them for dsh."""

    def __init__(self, members: int = 1, *, extra: list[str] | None = None, root: Path | None = None) -> None:
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        self.root = root or Path(tempfile.mkdtemp(prefix="dsh-etcd-"))
        ports = [(free_port(), free_port()) for _ in range(members)]
        cluster = ",".join(f"m{i}=http://127.0.0.1:{peer}" for i, (_, peer) in enumerate(ports))
        self.members = [
            Member(f"m{i}", self.root, cluster, client, peer, extra or [])
            for i, (client, peer) in enumerate(ports)
        ]

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoints}"

    def start(self, timeout: float = 20.0) -> Etcd:
        for member in self.members:
            member.start()
        self.wait(timeout)
        return self

    def wait(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(m.healthy() for m in self.members if m.proc is not None):
            if time.monotonic() > deadline:
                logs = "\n".join(
                    m.log.read_text(errors="replace")[-2000:] for m in self.members if m.log.exists()
                )
                self.stop()
                raise RuntimeError(f"etcd did not become healthy within {timeout}s:\n{logs}")
            time.sleep(0.05)

    def leader(self) -> Member:
        """The member that leads now (asked of each: `etcdctl endpoint status`)."""
        for member in self.members:
            if member.proc is None:
                continue
            out = subprocess.run(
                [
                    shutil.which("etcdctl") or "etcdctl",
                    "--endpoints",
                    member.endpoint,
                    "endpoint",
                    "status",
                    "-w",
                    "fields",
                ],
                capture_output=True,
                text=True,
                timeout=10,
                env={"ETCDCTL_API": "3", "PATH": os.environ["PATH"]},
            ).stdout
            fields = dict(
                line.strip().strip('"').split('" : ', 1) for line in out.splitlines() if '" : ' in line
            )
            if fields.get("MemberID") and fields.get("MemberID") == fields.get("Leader"):
                return member
        raise RuntimeError("no etcd member says it leads")

    def restart(self, member: Member | None = None, *, down: float = 0.0) -> None:
        """kill -9 a member (the only one by default), wait `down` s, start it again."""
        target = member or self.members[0]
        target.kill()
        time.sleep(down)
        target.start(new=False)
        self.wait()

    def stop(self) -> None:
        for member in self.members:
            member.kill()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)

    def __enter__(self) -> Etcd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0

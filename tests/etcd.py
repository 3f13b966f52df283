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
#: etcd's root password in an `Etcd(auth=True)` (a test constant, nothing secret).
ROOT_PASSWORD = "dsh-test-root"


def missing() -> str | None:
    if not os.access(ETCD, os.X_OK):
        return "etcd is not installed (scripts/system-deps installs etcd-server)"
    return None


class Member:
    def __init__(
        self,
        name: str,
        root: Path,
        cluster: str,
        client_port: int,
        peer_port: int,
        extra: list[str],
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.netns = netns
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
        return f"{self.host}:{self.client_port}"

    def start(self, *, new: bool = True) -> None:
        self.dir.mkdir(mode=0o700, exist_ok=True)
        client = f"{self.scheme}://{self.host}:{self.client_port}"
        peer = f"http://{self.host}:{self.peer_port}"
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
            if self.netns:
                args = ["ip", "netns", "exec", self.netns, *args]
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
            return _port_open(self.host, self.client_port)
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as answer:
                return b'"health":"true"' in answer.read()
        except OSError:
            return False


class Etcd:
    """One etcd member, or `members` of one cluster; `url` names them for dsh."""

    def __init__(
        self,
        members: int = 1,
        *,
        extra: list[str] | None = None,
        root: Path | None = None,
        host: str = "127.0.0.1",
        netns: str | None = None,
        auth: bool = False,
    ) -> None:
        """`host`: the address the members listen on; `netns`: the network namespace
        they run in (tests/helpers/netns.py); `auth`: once healthy, user root (password
        ROOT_PASSWORD) holds role root and authentication is on (bcrypt at its lowest
        cost, 4: an Authenticate takes 2.4 ms instead of 57)."""
        reason = missing()
        if reason:
            raise RuntimeError(reason)
        self.auth = auth
        if auth:
            extra = [*(extra or []), "--bcrypt-cost", "4"]
        self.root = root or Path(tempfile.mkdtemp(prefix="dsh-etcd-"))
        ports = [(free_port(), free_port()) for _ in range(members)]
        cluster = ",".join(f"m{i}=http://{host}:{peer}" for i, (_, peer) in enumerate(ports))
        self.members = [
            Member(f"m{i}", self.root, cluster, client, peer, extra or [], host, netns)
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
        if self.auth:
            try:
                self.enable_auth()
            except BaseException:
                self.stop()
                raise
        return self

    def enable_auth(self) -> None:
        """User root with ROOT_PASSWORD and role root, then authentication on (etcdctl)."""
        endpoint = self.members[0].endpoint
        etcdctl(endpoint, "user", "add", "root", f"--new-user-password={ROOT_PASSWORD}")
        etcdctl(endpoint, "user", "grant-role", "root", "root")
        etcdctl(endpoint, "auth", "enable")

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


def _port_open(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def make_tls(where: Path, addresses: tuple[str, ...] = ("127.0.0.1",)) -> dict[str, Path]:
    """A CA, a server certificate for `addresses` and localhost, and a client
    certificate, all signed by the CA: {ca, server_cert, server_key, client_cert, client_key}."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    paths: dict[str, Path] = {}

    def save(name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
        paths[f"{name}_cert" if key is not None else name] = where / f"{name}.pem"
        (where / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            paths[f"{name}_key"] = where / f"{name}.key"
            (where / f"{name}.key").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            (where / f"{name}.key").chmod(0o600)

    def issue(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        *,
        ca: bool = False,
        usage: x509.ObjectIdentifier | None = None,
        san: bool = False,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if usage is not None:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            names: list[x509.GeneralName] = [x509.DNSName("localhost")]
            names += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dsh test CA")])
    save("ca", issue("dsh test CA", ca_key, ca_name, ca_key, ca=True))
    server_key = ec.generate_private_key(ec.SECP256R1())
    save(
        "server",
        issue("localhost", server_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH, san=True),
        server_key,
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    save(
        "client", issue("dsh", client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH), client_key
    )
    return paths


def etcdctl(
    endpoint: str,
    *args: str,
    extra: list[str] | None = None,
    user: str | None = None,
    password: str = ROOT_PASSWORD,
) -> str:
    """Run etcdctl against one member; its stdout (it must succeed). `user`: log in as
    that user (by default with root's password of an `Etcd(auth=True)`)."""
    login = ["--user", f"{user}:{password}"] if user else []
    done = subprocess.run(
        [shutil.which("etcdctl") or "etcdctl", "--endpoints", endpoint, *login, *(extra or []), *args],
        capture_output=True,
        text=True,
        timeout=20,
        env={"ETCDCTL_API": "3", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    if done.returncode != 0:
        raise RuntimeError(f"etcdctl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout

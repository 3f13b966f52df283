"""A real OpenSSH sshd on a loopback port, for the tests and the benchmarks.

It runs as a non-daemon (`sshd -D -e`) with a config of its own: its own host
key, an authorized_keys file holding one client key, `UsePAM no` and
`StrictModes no`, and MaxStartups high enough for hundreds of logins at once.
Clients log in as a non-root user (`dshtest`, made by scripts/system-deps):
root's logins cost far more CPU, and OpenSSH refuses signals for root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

SSHD = "/usr/sbin/sshd"
USER = os.environ.get("DSH_TEST_USER", "dshtest")
#: A second account on the same sshd (scripts/system-deps makes it).
USER2 = f"{USER}2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    path.chmod(0o600)


def user_home(user: str = USER) -> Path:
    return Path(pwd.getpwnam(user).pw_dir)


class Sshd:
    """One sshd; `start()` then `stop()` (or use it as a context manager)."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        client_key: Path | None = None,
        address: str = "127.0.0.1",
        netns: str | None = None,
        config: Sequence[str] = (),
        authorize: bool = True,
    ) -> None:
        self.missing = _missing()
        if self.missing:
            raise RuntimeError(self.missing)
        # Readable by the test user (pytest's tmp dirs are not): sshd reads
        # authorized_keys with the user's rights.
        self.dir = workdir or Path(tempfile.mkdtemp(prefix="dsh-sshd-"))
        self.dir.chmod(0o755)
        #: Where it listens; `netns`: the network namespace it runs in (tests/helpers/netns.py).
        self.address = address
        self.netns = netns
        self.port = free_port()
        self.host_key = self.dir / "host_key"
        self.client_key = client_key or self.dir / "id_ed25519"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "sshd.log"
        #: sshd_config lines put before the defaults (sshd takes the first value: they win).
        self.config = list(config)
        #: Whether `client_key` is in authorized_keys (no: it logs in only another way).
        self.authorize = authorize

    def start(self) -> Sshd:
        keygen(self.host_key)
        if not self.client_key.exists():
            keygen(self.client_key)
        authorized = self.dir / "authorized_keys"
        authorized.write_text(Path(f"{self.client_key}.pub").read_text() if self.authorize else "")
        authorized.chmod(0o644)
        config = self.dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    *self.config,
                    f"Port {self.port}",
                    f"ListenAddress {self.address}",
                    f"HostKey {self.host_key}",
                    f"PidFile {self.dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {authorized}",
                    f"AllowUsers {USER} {USER2}",
                    "UsePAM no",
                    "StrictModes no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "MaxStartups 1000:30:2000",
                    "MaxSessions 200",
                    "LogLevel ERROR",
                    "PrintMotd no",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",  # as Debian's sshd_config has it
                    "",
                ]
            )
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
        with self.log.open("ab") as log:
            argv = [SSHD, "-D", "-e", "-f", str(config)]
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection((self.address, self.port), 1) as s:
                if s.recv(8).startswith(b"SSH-"):
                    return self
            time.sleep(0.02)
        raise RuntimeError(f"sshd did not answer on port {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def known_hosts_line(self, key: Path | None = None) -> str:
        """known_hosts' line for this server (with another server's key, if given)."""
        algo, blob = Path(f"{key or self.host_key}.pub").read_text().split()[:2]
        return f"[{self.address}]:{self.port} {algo} {blob}\n"

    def host_block(self, patterns: Iterable[str], known_hosts: Path, **extra: object) -> str:
        """An ssh config block that sends `patterns` to this server as the test user."""
        lines = [
            f"Host {' '.join(patterns)}",
            f"  HostName {self.address}",
            f"  Port {self.port}",
            f"  User {USER}",
            f"  IdentityFile {self.client_key}",
            "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {known_hosts}",
            "  GlobalKnownHostsFile /dev/null",
        ]
        lines += [f"  {k} {v}" for k, v in extra.items()]
        return "\n".join(lines) + "\n"

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _missing() -> str:
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing: run scripts/system-deps as root"
    try:
        pwd.getpwnam(USER)
    except KeyError:
        return f"user {USER} is missing: run scripts/system-deps as root"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen is missing: run scripts/system-deps as root"
    return ""


def processes_of(user: str, pattern: str) -> dict[int, str]:
    """`user`'s processes whose command line contains `pattern`: pid -> command line."""
    uid = pwd.getpwnam(user).pw_uid
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if pattern in cmd:
                found[int(entry)] = cmd
    return found


def kill_user_processes(user: str, pattern: str) -> None:
    for pid in processes_of(user, pattern):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)

"""A hostile host for copies: an SSH server (asyncssh, run as a script in a process of
its own) whose SFTP lies about what is under its ROOT, and that runs what it is asked
with the system's shell otherwise (so that a copy's checksum scripts work):

- a path ending in `endless`: said to hold 10 bytes, then read without an end;
- a path ending in `liar`: said to hold 2**63 bytes (it holds what it holds);
- a link ending in `nullink`: its target holds a NUL byte.

    python tests/helpers/hostile.py PORT HOST_KEY AUTHORIZED_KEYS ROOT
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from tests.sshd import free_port, keygen

warnings.filterwarnings("ignore")


def _server(port: int, host_key: str, authorized: str, root: bytes) -> None:
    import asyncssh

    class Endless:
        pass

    class Hostile(asyncssh.SFTPServer):  # type: ignore[misc]
        def readlink(self, path: bytes) -> bytes:
            if path.startswith(root) and path.endswith(b"nullink"):
                return b"x\0y"
            return super().readlink(path)  # type: ignore[no-any-return]

        def open(self, path: bytes, pflags: int, attrs: object) -> object:
            if path.startswith(root) and path.endswith(b"endless"):
                return Endless()
            return super().open(path, pflags, attrs)

        def read(self, f: object, offset: int, size: int) -> bytes:
            if isinstance(f, Endless):
                return b"A" * size
            return super().read(f, offset, size)  # type: ignore[no-any-return]

        def close(self, f: object) -> None:
            if not isinstance(f, Endless):
                super().close(f)

        def fstat(self, f: object) -> object:
            if isinstance(f, Endless):
                return asyncssh.SFTPAttrs(size=10, permissions=0o100644)
            return super().fstat(f)

        def _lie(self, path: bytes, real: object) -> object:
            if path.startswith(root) and path.endswith(b"liar"):
                attrs = asyncssh.SFTPAttrs.from_local(real(path))  # type: ignore[operator]
                attrs.size = 2**63
                return attrs
            if path.startswith(root) and path.endswith(b"endless"):
                return asyncssh.SFTPAttrs(size=10, permissions=0o100644)
            return real(path)  # type: ignore[operator]

        def lstat(self, path: bytes) -> object:
            return self._lie(path, super().lstat)

        def stat(self, path: bytes) -> object:
            return self._lie(path, super().stat)

    async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
        proc = await asyncio.create_subprocess_shell(
            process.command or "sh",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await process.redirect(stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr)
        process.exit(await proc.wait())

    async def main() -> None:
        await asyncssh.listen(
            "127.0.0.1",
            port,
            server_host_keys=[host_key],
            authorized_client_keys=authorized,
            sftp_factory=Hostile,
            process_factory=handle,
            encoding=None,
        )
        print("listening", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


@contextlib.contextmanager
def hostile_host(workdir: Path, root: Path) -> Iterator[str]:
    """Run the hostile host (as this user) for what is under `root`; yields an ssh
    config block that names it `evil`."""
    host_key, client_key = workdir / "host_key", workdir / "id_ed25519"
    keygen(host_key)
    keygen(client_key)
    port = free_port()
    known = workdir / "known_hosts"
    algo, blob = Path(f"{host_key}.pub").read_text().split()[:2]
    known.write_text(f"[127.0.0.1]:{port} {algo} {blob}\n")
    argv = [sys.executable, __file__, str(port), str(host_key), f"{client_key}.pub", str(root)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent.parent)}
    # its cwd is its home: relative paths (a copy's spool) are under it, as under a user's home
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=workdir)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
        yield (
            f"Host evil\n  HostName 127.0.0.1\n  Port {port}\n  User evil\n"
            f"  IdentityFile {client_key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
            "  GlobalKnownHostsFile /dev/null\n"
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)


if __name__ == "__main__":
    _server(int(sys.argv[1]), sys.argv[2], sys.argv[3], os.fsencode(sys.argv[4]))

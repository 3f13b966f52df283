"""dsh's host agent run on this machine as a child over pipes, as it runs on a host
(`python3 -I -S -c LOADER dsh-agent TAG`): LOADER defines the package `dshagent`
from the sources of dsh/remote/hostagent in MODULES order and calls its
`serve.main`; `Link` speaks the frames to it, every read bounded."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from dsh.remote import askpass, hostagent
from dsh.remote.hostagent import wire

SOURCE = Path(hostagent.__file__).parent


def loader() -> str:
    """A program that defines `dshagent` from the agent's sources and runs it."""
    sources = {"__init__": (SOURCE / "__init__.py").read_text()}
    sources.update({name: (SOURCE / f"{name}.py").read_text() for name in hostagent.MODULES})
    return (
        "import sys\n"
        f"S = {sources!a}\n"  # ASCII: Python 3.6 in the C locale reads argv as ASCII
        "def define(name, source, package):\n"
        "    m = type(sys)(name)\n"
        "    m.__package__ = 'dshagent'\n"
        "    if package:\n"
        "        m.__path__ = []\n"
        "    sys.modules[name] = m\n"
        "    exec(compile(source, '<dshagent ' + name + '>', 'exec'), m.__dict__)\n"
        "    return m\n"
        "define('dshagent', S['__init__'], True)\n"
        "for n in sys.modules['dshagent'].MODULES:\n"
        "    setattr(sys.modules['dshagent'], n, define('dshagent.' + n, S[n], False))\n"
        "sys.modules['dshagent'].serve.main(sys.argv[2])\n"
    )


#: Older interpreters on this machine (pyenv's), as a host may have them: 3.6 and 3.7
#: have no posix_spawn (the keeper forks), 3.8 has no pidfd_open.
OLD_PYTHONS = [
    p
    for p in (f"/root/.pyenv/versions/{v}/bin/python3" for v in ("3.6.15", "3.7.16", "3.8.18"))
    if os.access(p, os.X_OK)
]

#: Opens /dev/null argv[1] times (inheritable), raising the open-file limit for it, then
#: execs the rest of its argv.
_TAKING = (
    "import os, resource, sys\n"
    "n = int(sys.argv[1])\n"
    "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, n + 100), hard))\n"
    "for _ in range(n):\n"
    "    os.set_inheritable(os.open('/dev/null', os.O_RDONLY), True)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

ENDS = (wire.ENDED, wire.ANSWER, wire.DONE, wire.ERROR, wire.FAILED)


class Link:
    """One agent process and the frames to and from it."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        python: str = sys.executable,
        taken: int = 0,
    ) -> None:
        argv = [python, "-I", "-S", "-c", loader(), "dsh-agent", "dsh-spool-test"]
        if taken:  # the agent starts with fds 3 to 3+taken open: each it makes is numbered past them
            argv = [python, "-I", "-S", "-c", _TAKING, str(taken), *argv]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
        self.reader = wire.Reader()
        self.frames: list[tuple[int, int, list[bytes]]] = []
        self.rid = 0
        self.stderr = b""
        kind, rid, fields = self.next_frame(10)
        assert (kind, rid) == (wire.HELLO, 0), (kind, rid, fields)
        self.hello = [f.decode() for f in fields]

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def keeper(self) -> int:
        """The keeper's pid (the agent's only child at its start)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        return int(children[0])

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, kind: int, fields: Sequence[str | bytes | int], rid: int | None = None) -> int:
        if rid is None:
            self.rid += 1
            rid = self.rid
        self.send_raw(wire.encode(kind, rid, fields))
        return rid

    def next_frame(self, timeout: float) -> tuple[int, int, list[bytes]]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        until = time.monotonic() + timeout
        while not self.frames:
            left = until - time.monotonic()
            assert left > 0, "no frame from the agent in time"
            poller = select.poll()  # not select(): a test may hold fds past 1024
            poller.register(fd, select.POLLIN)
            if poller.poll(int(left * 1000) + 1):
                data = os.read(fd, 1 << 16)
                assert data, "the agent closed its stdout"
                self.frames += [wire.decode(b) for b in self.reader.feed(data)]
        return self.frames.pop(0)

    def collect(self, rid: int, timeout: float = 15) -> list[tuple[int, list[bytes]]]:
        """The frames for `rid` up to and with its last (ENDED, ANSWER, DONE, ERROR);
        other requests' frames are kept for later."""
        got: list[tuple[int, list[bytes]]] = []
        kept: list[tuple[int, int, list[bytes]]] = []
        until = time.monotonic() + timeout
        try:
            while True:
                kind, r, fields = self.next_frame(max(until - time.monotonic(), 0.001))
                if r != rid:
                    kept.append((kind, r, fields))
                    continue
                got.append((kind, fields))
                if kind in ENDS:
                    return got
        finally:
            self.frames[:0] = kept

    def close(self) -> bytes:
        """Ends the link (EOF on the agent's stdin); what the agent wrote on stderr."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None and not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read()
            self.proc.stderr.close()
        self.proc.stdout.close()
        return self.stderr


def outcome(frames: list[tuple[int, list[bytes]]]) -> tuple[bytes, bytes, list[str], int | str]:
    """(stdout, stderr, SAID lines, the last frame's value: ENDED/DONE's number, or
    ANSWER/ERROR's text)."""
    out = b"".join(f[0] for k, f in frames if k == wire.OUT)
    err = b"".join(f[0] for k, f in frames if k == wire.ERR)
    said = [f[0].decode() for k, f in frames if k == wire.SAID]
    kind, fields = frames[-1]
    last: int | str = int(fields[0]) if kind in (wire.ENDED, wire.DONE) else fields[0].decode()
    return out, err, said, last


def launch_fields(
    root: Path | str,
    action: str,
    command: str,
    *,
    session: str = "s1",
    alias: str = "h1",
    backstop: int = 30,
    grace: int = 2,
    stdin: bool = False,
    secrets: str = "",
    helper: str = askpass.HELPER,
) -> list[str | int]:
    return [
        str(root),
        session,
        action,
        alias,
        command,
        backstop,
        grace,
        "in" if stdin else "",
        secrets,
        helper,
    ]

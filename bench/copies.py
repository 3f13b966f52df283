"""The copy case: one file to N aliases of one loopback OpenSSH sshd (bench/hosts.py).

    .venv/bin/python -m bench.run copy [--hosts 50] [--copy-size 100M] [--repeat 3]

A file of random bytes (100 MiB, or `--copy-size`) is made once per run in the
fleet's directory and copied to RPATH = `/tmp/bench/hK/f` on each alias hK,
K = 1…N (N: the smallest --hosts count, 50 by default). The sshd serves SFTP
with Debian's sftp-server (tests/sshd.py); the fan-out is the same for all
(256, or N when larger):

  dsh put                 `dsh --ssh-config CFG -c 'put SRC @h[1-N]:/tmp/bench/$host/f'`
  clush --copy            `clush -f F -w h[1-N] -o '-F CFG' -O scp_path=WRAPPER -S
                          --copy SRC --dest /tmp/bench/%h/f`: OpenSSH's `scp` per host
                          (the SFTP protocol, scp's default since OpenSSH 9.0). clush's
                          ssh worker gives every host the same --dest, so WRAPPER, a
                          bash script, makes `%h` in it the host's name and execs scp.
  parallel-ssh copy_file  `ParallelSSHClient(["127.0.0.1"] * N, pool_size=F)
                          .copy_file(SRC, DEST, copy_args=…)`: SFTP, libssh2.
  parallel-ssh scp_send   the same client's `scp_send`: the SCP protocol (`scp -t`).
                          Both are run: the faster one is the one to beat.

Before every run of every contender, untimed: each alias's directory exists,
belongs to the login user and is emptied (RPATH and anything else in it: no
contender finds the file already there, none merely overwrites it), then
`sync`. After every run, untimed: every RPATH's SHA-256 is compared with SRC's
(the aliases are this machine, so the files are read here). A run that exited
non-zero or left a file missing or different is failed, not timed.

Bytes per host ("lo rx"): the loopback interface's received bytes
(/sys/class/net/lo/statistics/rx_bytes) after the run minus before, divided
by N. On loopback each packet is counted once in rx whichever way it goes, so
this is all of the run's traffic both ways, TCP/IP and SSH framing, logins,
acknowledgements and replies included; any other loopback traffic on the
machine at the time is counted too. The server's own counts are not to be
had for every contender: sshd logs "Transferred: … received N bytes" (at
LogLevel VERBOSE) only when the client closes without a disconnect message,
which libssh2 and asyncssh send; its session processes' /proc/PID/io is gone
when they exit, and the listening sshd's own rchar does not gain their reads
(measured: 64 kB for a 10 MB scp).

Each run moves N × SIZE bytes (5 GiB by default), so a case makes
`max(1, min(repeat, 5))` runs of each, with no warm-up round.

This file is also the script that the parallel-ssh contenders run
(`python bench/copies.py pssh sftp|scp …`), so its top level imports the
standard library only. It is not named copy.py: run as a script, its
directory comes first on sys.path, and it would shadow the standard `copy`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from bench.hosts import Fleet
    from bench.run import Row

SIZE = 100 << 20
MAX_RUNS = 5
BASE = "/tmp/bench"
TARGET = 0.5  # dsh's time against the faster peer's

DSH = "dsh put"
CLUSH = "clush --copy"
PSSH_SFTP = "parallel-ssh copy_file"
PSSH_SCP = "parallel-ssh scp_send"
PEERS = (CLUSH, PSSH_SFTP, PSSH_SCP)

#: clush's scp_path: `%h` in a "[HOST]:PATH" argument becomes HOST (clush's ssh
#: worker expands nothing in --dest; only its exec worker, which runs `cp`, does).
SCP_PER_HOST = r"""#!/bin/bash
args=()
for a in "$@"; do
    if [[ $a == *\[*\]:* ]]; then
        host=${a#*\[}
        host=${host%%\]:*}
        a=${a//"%h"/$host}
    fi
    args+=("$a")
done
exec scp "${args[@]}"
"""


def rpath(host: str) -> str:
    return f"{BASE}/{host}/f"


# ---------------------------------------------------------------- contenders run as scripts


def _pssh(protocol: str, port: int, user: str, key: str, hosts: int, fanout: int, src: str) -> int:
    from gevent import joinall
    from pssh.clients import ParallelSSHClient

    client = ParallelSSHClient(
        ["127.0.0.1"] * hosts,
        port=port,
        user=user,
        pkey=key,
        pool_size=fanout,
        allow_agent=False,
        identity_auth=False,
    )
    dests = [rpath(f"h{i}") for i in range(1, hosts + 1)]
    if protocol == "sftp":
        greenlets = client.copy_file(src, "%(dest)s", copy_args=[{"dest": d} for d in dests])
    else:  # scp_send formats "%(local_file)s" and "%(remote_file)s" itself
        greenlets = client.scp_send(src, "", copy_args=[{"local_file": src, "remote_file": d} for d in dests])
    joinall(greenlets)
    bad = [(d, repr(g.exception)) for d, g in zip(dests, greenlets, strict=True) if g.exception]
    if len(greenlets) != hosts or bad:
        print(f"parallel-ssh: {len(greenlets)} copies, failed: {bad[:5]}", file=sys.stderr)
        return 1
    return 0


def _script(argv: list[str]) -> int:
    if len(argv) == 8 and argv[0] == "pssh" and argv[1] in ("sftp", "scp"):
        return _pssh(argv[1], int(argv[2]), argv[3], argv[4], int(argv[5]), int(argv[6]), argv[7])
    print("usage: copies.py pssh sftp|scp PORT USER KEY HOSTS FANOUT SRC", file=sys.stderr)
    return 2


# ---------------------------------------------------------------- the hosts' side


@contextlib.contextmanager
def _claimed() -> Iterator[Path]:
    """BASE, held for this case alone (another bench run would empty its directories)."""
    import fcntl
    from pathlib import Path

    base = Path(BASE)
    base.mkdir(exist_ok=True)
    base.chmod(0o755)
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"bench: another run of the copy case holds {BASE}") from None
        yield base
    finally:
        os.close(fd)


def _emptied(dirs: list[Path], user: str) -> None:
    """Each alias's directory, there, the login user's, and empty; then dirty pages flushed."""
    import pwd
    import shutil

    account = pwd.getpwnam(user)
    for d in dirs:
        d.mkdir(exist_ok=True)
        os.chown(d, account.pw_uid, account.pw_gid)
        d.chmod(0o755)
        for entry in os.scandir(d):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
    os.sync()


def _removed(dirs: list[Path], base: Path) -> None:
    import shutil

    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty: something else is in it
        base.rmdir()


def _sha256(path: Path | str) -> str | None:
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _unlike(dirs: list[Path], digest: str) -> list[str]:
    """The RPATHs whose content is not SRC's: missing, or a different SHA-256."""
    from concurrent.futures import ThreadPoolExecutor

    paths = [d / "f" for d in dirs]
    with ThreadPoolExecutor(max_workers=2) as pool:  # hashlib lets go of the GIL
        found = list(pool.map(_sha256, paths))
    return [
        f"{p} {'missing' if h is None else 'differs'}"
        for p, h in zip(paths, found, strict=True)
        if h != digest
    ]


def _random_file(path: Path, size: int) -> None:
    chunk = 1 << 20
    with path.open("wb") as f:
        for offset in range(0, size, chunk):
            f.write(os.urandom(min(chunk, size - offset)))


def _lo_rx() -> int:
    with open("/sys/class/net/lo/statistics/rx_bytes") as f:
        return int(f.read())


# ---------------------------------------------------------------- the case


def _argvs(fleet: Fleet, hosts: int, src: Path) -> dict[str, list[str]]:
    import importlib.util
    import shlex

    from bench.fanout import FANOUT, dsh_options
    from bench.hosts import INSTALL_HINT, tool

    dsh = tool("dsh", "pip install -e .")
    clush = tool("clush", "pip install -e . (ClusterShell is a dependency of dsh)")
    if importlib.util.find_spec("pssh") is None:
        raise RuntimeError(f"bench: pssh is not installed in {sys.prefix}: {INSTALL_HINT}")
    nodes = fleet.nodes(hosts)
    fan = str(max(FANOUT, hosts))
    wrapper = fleet.work / "scp-per-host"
    wrapper.write_text(SCP_PER_HOST)
    wrapper.chmod(0o755)
    config = dsh_options(fleet, hosts)
    pssh = [sys.executable, os.path.abspath(__file__), "pssh"]
    login = [str(fleet.port), fleet.user, fleet.key, str(hosts), fan, str(src)]
    return {
        DSH: [dsh, *config, "-c", f"put {src} @{nodes}:{BASE}/$host/f"],
        CLUSH: [
            clush,
            "-f",
            fan,
            "-w",
            nodes,
            "-o",
            f"-F {shlex.quote(str(fleet.ssh_config))}",
            "-O",
            f"scp_path={wrapper}",
            "-S",
            "--copy",
            str(src),
            "--dest",
            f"{BASE}/%h/f",
        ],
        PSSH_SFTP: [*pssh, "sftp", *login],
        PSSH_SCP: [*pssh, "scp", *login],
    }


def copy(repeat: int, hosts: list[int], *, size: int = SIZE) -> tuple[list[Row], dict[str, float]]:
    """SRC to every alias's RPATH: dsh's `put` against clush --copy and parallel-ssh's two copies."""
    import functools
    import statistics

    from bench.fanout import _measured, _quiet
    from bench.hosts import compiled, fleet
    from bench.run import RoundFailed, _alternate

    compiled()
    n = min(hosts)
    runs = max(1, min(repeat, MAX_RUNS))
    wires: dict[str, list[float]] = {}

    with _claimed() as base, fleet() as f:
        src = f.work / "copy-src"
        _random_file(src, size)
        digest = _sha256(src)
        assert digest is not None
        dirs = [base / f"h{i}" for i in range(1, n + 1)]

        def sample(name: str, argv: list[str]) -> float:
            _emptied(dirs, f.user)
            before = _lo_rx()
            try:
                result = _measured(name, argv, f.env)
            except RuntimeError as exc:  # exited non-zero, or hung
                raise RoundFailed(str(exc)) from None
            wire = (_lo_rx() - before) / n
            _quiet(name, result)
            wrong = _unlike(dirs, digest)
            if wrong:
                raise RoundFailed(f"bench: {name} exited 0, but {len(wrong)} of {n}: {', '.join(wrong[:3])}")
            wires.setdefault(name, []).append(wire)
            return float(result["seconds"])

        try:
            argvs = _argvs(f, n, src)
            rows = _alternate(
                "copy",
                {name: functools.partial(sample, name, a) for name, a in argvs.items()},
                runs,
                warmup=0,
            )
        finally:
            _removed(dirs, base)

    ms = {r.name: r.median_ms for r in rows if r.samples}
    ratios: dict[str, float] = {}
    done = [p for p in PEERS if p in ms]
    if DSH in ms:
        for peer in done:
            ratios[f"dsh / {peer}"] = ms[DSH] / ms[peer]
        if done:
            faster = min(done, key=ms.__getitem__)
            ratios[f"dsh / faster peer, {faster} (target {TARGET:g})"] = ms[DSH] / ms[faster]
    for row in rows:
        row.wire = wires.get(row.name, [])
        if row.wire:
            ratios[f"lo rx / file size, {row.name}"] = statistics.median(row.wire) / size
        row.name = f"{row.name} @{n}"
    ratios["file size, MiB"] = size / (1 << 20)
    return rows, ratios


if __name__ == "__main__":
    sys.exit(_script(sys.argv[1:]))

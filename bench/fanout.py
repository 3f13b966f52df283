"""The fan-out case: `true` on 200 ssh aliases of one loopback OpenSSH sshd, cold.

    .venv/bin/python -m bench.run fanout [--repeat N] [--json]

Every contender is a fresh process timed by its wall time, so each run makes new
connections; none uses an ssh-agent; fan-out 256 everywhere:

  dsh          `dsh --ssh-config CFG -c '@h[1-200] true'`
  clush        `clush -f 256 -w h[1-200] -o '-F CFG' -S -B true` (the `ssh` binary)
  parallel-ssh `ParallelSSHClient(["127.0.0.1"] * 200, pool_size=256)` (libssh2;
               reads neither ssh config nor known_hosts)
  asyncssh     the floor for dsh's own stack: one process, key and known_hosts
               loaded once, 200 `asyncssh.connect(..., config=[])` + `run("true")`

Each run takes seconds, so the case makes `max(1, min(repeat, 5))` runs of each,
after one warm-up round. The aliases h1..h200 all lead to 127.0.0.1:PORT as the
user `dshtest` (see tests/sshd.py), with the server's key in a known_hosts file
of their own. A contender that fails (non-zero exit, any host not ok) is an error,
not a sample.

This file is also the script that the parallel-ssh and asyncssh contenders run
(`python bench/fanout.py pssh|floor ...`), so its top level imports the standard
library only: what each contender imports is part of its time.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Row

HOSTS = 200
FANOUT = 256
MAX_RUNS = 5
TIMEOUT = 180.0  # seconds, per contender run
INSTALL_HINT = "pip install -e '.[bench]' (or: .venv/bin/python -m pip install 'parallel-ssh>=2.12')"

DSH = "dsh"
CLUSH = "clush"
PSSH = "parallel-ssh"
FLOOR = "asyncssh floor"


# ---------------------------------------------------------------- contenders run as scripts


def _pssh(port: int, user: str, key: str, hosts: int) -> int:
    from pssh.clients import ParallelSSHClient

    client = ParallelSSHClient(
        ["127.0.0.1"] * hosts,
        port=port,
        user=user,
        pkey=key,
        pool_size=FANOUT,
        allow_agent=False,
        identity_auth=False,
    )
    output = client.run_command("true")
    client.join(output)
    bad = [(o.host, o.exit_code, o.exception) for o in output if o.exception or o.exit_code != 0]
    if len(output) != hosts or bad:
        print(f"parallel-ssh: {len(output)} outputs, not ok: {bad[:5]}", file=sys.stderr)
        return 1
    return 0


def _floor(port: int, user: str, key_path: str, known_hosts_path: str, hosts: int) -> int:
    import asyncio

    import asyncssh

    async def fan_out() -> int:
        key = asyncssh.read_private_key(key_path)
        with open(known_hosts_path) as f:
            known_hosts = asyncssh.import_known_hosts(f.read())
        gate = asyncio.Semaphore(FANOUT)

        async def one() -> int | None:
            async with (
                gate,
                asyncssh.connect(
                    "127.0.0.1",
                    port=port,
                    username=user,
                    client_keys=[key],
                    known_hosts=known_hosts,
                    config=[],
                    agent_path=None,
                ) as conn,
            ):
                result = await conn.run("true", check=True)
                return result.exit_status

        statuses = await asyncio.gather(*(one() for _ in range(hosts)))
        return 0 if all(s == 0 for s in statuses) else 1

    return asyncio.run(fan_out())


def _script(argv: list[str]) -> int:
    if len(argv) == 5 and argv[0] == "pssh":
        return _pssh(int(argv[1]), argv[2], argv[3], int(argv[4]))
    if len(argv) == 6 and argv[0] == "floor":
        return _floor(int(argv[1]), argv[2], argv[3], argv[4], int(argv[5]))
    print(
        "usage: fanout.py pssh PORT USER KEY HOSTS | floor PORT USER KEY KNOWN_HOSTS HOSTS",
        file=sys.stderr,
    )
    return 2


# ---------------------------------------------------------------- the case


def _raise_nofile() -> None:
    """Raise the open-file soft limit to the hard one; the contenders inherit it."""
    import contextlib
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    # If it cannot be raised, keep it: a contender short of files fails loudly.
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _tool(name: str, hint: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"fanout: {path} is missing: {hint}")
    return path


def _check_peers() -> None:
    import importlib.util

    for module, what in (("pssh", "parallel-ssh"), ("asyncssh", "asyncssh")):
        if importlib.util.find_spec(module) is None:
            hint = INSTALL_HINT if module == "pssh" else "pip install -e ."
            raise RuntimeError(f"fanout: {what} is not installed in {sys.prefix}: {hint}")


_PROGRESS = re.compile(r"\s*$|clush: *\d+/\d+")


def _timed(name: str, argv: list[str], env: dict[str, str]) -> float:
    import subprocess
    import time

    started = time.perf_counter()
    done = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    elapsed = time.perf_counter() - started
    # clush's progress meter ("clush:  148/200\r") is not a complaint.
    err = [line for line in done.stderr.decode(errors="replace").splitlines() if not _PROGRESS.match(line)]
    if done.returncode != 0:
        tail = "\n".join(err[-10:])
        raise RuntimeError(f"fanout: {name} exited with {done.returncode}:\n{tail}")
    if err:
        # A run that exits 0 but complains is suspect; keep the sample, but say so.
        print(f"fanout: {name} wrote to stderr: {err[0][:200]}", file=sys.stderr)
    return elapsed


def case(repeat: int) -> tuple[list[Row], dict[str, float]]:
    """`true` on 200 aliases of one loopback sshd: dsh against clush, parallel-ssh and
    a bare asyncssh script; `max(1, min(repeat, 5))` runs of each after one warm-up."""
    import compileall
    import functools
    import shlex
    import tempfile
    from pathlib import Path

    import dsh as package
    from bench.run import _alternate
    from tests.sshd import USER, Sshd

    runs = max(1, min(repeat, MAX_RUNS))
    # As installed for users: bytecode present (PYTHONDONTWRITEBYTECODE may be set here).
    compileall.compile_dir(os.path.dirname(package.__file__), quiet=1)
    dsh = _tool("dsh", "pip install -e .")
    clush = _tool("clush", "pip install -e . (ClusterShell is a dependency of dsh)")
    _check_peers()
    _raise_nofile()

    sshd = Sshd()
    try:
        sshd.start()
        work = sshd.dir
        known_hosts = work / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line())
        ssh_config = work / "ssh_config"
        ssh_config.write_text(sshd.host_block(["h*"], known_hosts))
        home = Path(tempfile.mkdtemp(prefix="dsh-bench-", dir=work))
        (home / "state").mkdir()
        (home / "config").mkdir()
        env = {
            k: v
            for k, v in os.environ.items()
            if k != "SSH_AUTH_SOCK" and k != "SSH_AGENT_PID" and not k.startswith("DSH_")
        }
        # The sessions dsh makes stay out of the user's store; no user config for anyone.
        env.update(NO_COLOR="1", XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "config"))
        nodes = f"h[1-{HOSTS}]"
        key = str(sshd.client_key)
        script = os.path.abspath(__file__)
        argvs = {
            DSH: [dsh, "--ssh-config", str(ssh_config), "-c", f"@{nodes} true"],
            CLUSH: [
                clush,
                "-f",
                str(FANOUT),
                "-w",
                nodes,
                "-o",
                f"-F {shlex.quote(str(ssh_config))}",
                "-S",  # exit with the largest return code (255 if any ssh failed)
                "-B",
                "true",
            ],
            PSSH: [sys.executable, script, "pssh", str(sshd.port), USER, key, str(HOSTS)],
            FLOOR: [sys.executable, script, "floor", str(sshd.port), USER, key, str(known_hosts), str(HOSTS)],
        }
        rows = _alternate(
            "fanout",
            {name: functools.partial(_timed, name, argv, env) for name, argv in argvs.items()},
            runs,
            warmup=1,
        )
        lines = sshd.log.read_text(errors="replace").splitlines()
        # start() probes the port for the banner and hangs up: sshd logs that once.
        probe = next((i for i, line in enumerate(lines) if "kex_exchange_identification" in line), None)
        if probe is not None:
            del lines[probe]
        if lines:
            print(f"fanout: sshd logged {len(lines)} line(s), e.g.: {lines[0][:200]}", file=sys.stderr)
    finally:
        sshd.cleanup()

    ms = {r.name: r.median_ms for r in rows}
    ratios = {
        "dsh / clush (target 0.3)": ms[DSH] / ms[CLUSH],
        "dsh / parallel-ssh (target 0.6)": ms[DSH] / ms[PSSH],
        "dsh / floor (target 1.2)": ms[DSH] / ms[FLOOR],
    }
    return rows, ratios


if __name__ == "__main__":
    sys.exit(_script(sys.argv[1:]))

"""The SSH cases, on N aliases of one loopback OpenSSH sshd (bench/hosts.py).

    .venv/bin/python -m bench.run fanout warm output memory [--hosts 50,200,500]

Every contender is a fresh process, timed by its wall time (and its peak RSS,
from wait4), so each run makes new connections; none uses an ssh-agent; the
fan-out is the same for all (256, or the host count when larger):

  dsh          `dsh --ssh-config CFG -c '@h[1-N] CMD'`
  clush        `clush -f F -w h[1-N] -o '-F CFG' -S CMD` (OpenSSH's `ssh` per host)
  parallel-ssh `ParallelSSHClient(["127.0.0.1"] * N, pool_size=F)` (libssh2; reads
               neither ssh config nor known_hosts)
  asyncssh     the floor for dsh's own stack: one process, key and known_hosts
               loaded once, N `asyncssh.connect(..., config=[])` + `run(CMD)`

Cases:
  fanout   `true` on each host count of --hosts (cold): dsh against all three.
  warm     the second line of one dsh session (`@h[1-N] true` twice on stdin,
           THINK seconds apart, the second's `done` seconds: dsh's host agents
           boot while it waits) against the floor's second round on open
           connections, THINK seconds after its first too (timed inside the
           script: a pause costs both sides alike); and dsh's second line on
           hosts without python3 (an sshd whose PATH hides it: the sh wrapper).
  output   `seq 1 200000` on 50 hosts: wall time and peak memory against all
           three; every contender reads all of the output (dsh shows 1,000
           lines per host and keeps the rest in the host's spool). A contender
           still running after OUTPUT_LIMIT seconds is stopped and reported
           as taking more than that (its ratio is then "at most").
  memory   `true` on 1,000 aliases at fan-out 1,000: dsh's wall time against
           the floor's, and its peak RSS.

Each run takes seconds, so a case makes `max(1, min(repeat, 5))` runs of each
after one warm-up round. A contender that fails (non-zero exit, any host not
ok) is an error, not a sample.

This file is also the script that the parallel-ssh and asyncssh contenders run
(`python bench/fanout.py pssh|floor ...`), so its top level imports the standard
library only: what each contender imports is part of its time.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.hosts import Fleet
    from bench.run import Row

FANOUT = 256


def dsh_options(fleet: Fleet, hosts: int) -> list[str]:
    """dsh's options to reach `hosts` aliases of the fleet, all at once (dsh's fan-out
    comes from its configuration)."""
    config = ["--ssh-config", str(fleet.ssh_config)]
    if hosts > FANOUT:
        cfg = fleet.work / f"dsh-{hosts}.toml"
        cfg.write_text(f"[limits]\nfanout = {hosts}\n")
        config += ["--config", str(cfg)]
    return config


MAX_RUNS = 5
TIMEOUT = 900.0  # seconds, per contender run: one that takes longer has hung
OUTPUT_HOSTS = 50
#: Seconds after which a contender of the output case is stopped and reported as
#: "more than" this: clush and parallel-ssh print 10 million lines at 20,000 a
#: second (8 minutes a run), which would make the one command take an hour.
OUTPUT_LIMIT = 60.0
#: Lines per host of the output case (`--output-lines`: fewer for a quick check).
OUTPUT_LINES = 200_000
MEMORY_HOSTS = 1000

DSH = "dsh"
CLUSH = "clush"
PSSH = "parallel-ssh"
FLOOR = "asyncssh floor"


# ---------------------------------------------------------------- contenders run as scripts


def _pssh(port: int, user: str, key: str, hosts: int, command: str) -> int:
    from pssh.clients import ParallelSSHClient

    client = ParallelSSHClient(
        ["127.0.0.1"] * hosts,
        port=port,
        user=user,
        pkey=key,
        pool_size=max(FANOUT, hosts),
        allow_agent=False,
        identity_auth=False,
    )
    output = client.run_command(command)
    out = sys.stdout
    for host_output in output:  # every line read, as the others read theirs
        for line in host_output.stdout:
            out.write(f"{host_output.host}: {line}\n")
    client.join(output)
    bad = [(o.host, o.exit_code, o.exception) for o in output if o.exception or o.exit_code != 0]
    if len(output) != hosts or bad:
        print(f"parallel-ssh: {len(output)} outputs, not ok: {bad[:5]}", file=sys.stderr)
        return 1
    return 0


def _floor(
    port: int, user: str, key_path: str, known_hosts_path: str, hosts: int, command: str, warm: bool
) -> int:
    import asyncio
    import time
    import warnings

    from cryptography.utils import CryptographyDeprecationWarning

    # As dsh's adapter does: asyncssh's own deprecation noise (cryptography >= 51), no more.
    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"asyncssh(\.|$)")
    import asyncssh

    async def fan_out() -> int:
        key = asyncssh.read_private_key(key_path)
        with open(known_hosts_path) as f:
            known_hosts = asyncssh.import_known_hosts(f.read())
        gate = asyncio.Semaphore(max(FANOUT, hosts))
        out = sys.stdout

        async def connect() -> asyncssh.SSHClientConnection:
            return await asyncssh.connect(
                "127.0.0.1",
                port=port,
                username=user,
                client_keys=[key],
                known_hosts=known_hosts,
                config=[],
                agent_path=None,
            )

        async def run(conn: asyncssh.SSHClientConnection, name: str) -> int | None:
            result = await conn.run(command, check=True)
            for line in str(result.stdout).splitlines():
                out.write(f"{name}: {line}\n")
            return result.exit_status

        async def one(i: int) -> tuple[int | None, asyncssh.SSHClientConnection]:
            async with gate:
                conn = await connect()
                return await run(conn, f"h{i}"), conn

        done = await asyncio.gather(*(one(i) for i in range(hosts)))
        status = 0 if all(s == 0 for s, _ in done) else 1
        if warm:  # a second round on the open connections: the time of that alone
            await asyncio.sleep(think())  # after the pause dsh's second line comes after
            started = time.perf_counter()
            again = await asyncio.gather(*(run(conn, f"h{i}") for i, (_, conn) in enumerate(done)))
            print(f"warm-seconds {time.perf_counter() - started:.6f}", file=sys.stderr)
            status = status or (0 if all(s == 0 for s in again) else 1)
        for _, conn in done:
            conn.close()
        return status

    return asyncio.run(fan_out())


def _script(argv: list[str]) -> int:
    if len(argv) == 6 and argv[0] == "pssh":
        return _pssh(int(argv[1]), argv[2], argv[3], int(argv[4]), argv[5])
    if len(argv) in (7, 8) and argv[0] == "floor":
        warm = len(argv) == 8 and argv[7] == "--warm"
        return _floor(int(argv[1]), argv[2], argv[3], argv[4], int(argv[5]), argv[6], warm)
    print(
        "usage: fanout.py pssh PORT USER KEY HOSTS CMD | floor PORT USER KEY KNOWN_HOSTS HOSTS CMD [--warm]",
        file=sys.stderr,
    )
    return 2


# ---------------------------------------------------------------- timing a contender

_PROGRESS = re.compile(r"\s*$|clush: *\d+/\d+")


def _measured(
    name: str, argv: list[str], env: dict[str, str], stdin: bytes | None = None, limit: float | None = None
) -> dict[str, Any]:
    """Run a contender: its wall seconds, peak RSS (MiB), and stderr lines. Past
    `limit` seconds it is stopped (its process group: clush's `ssh` children
    too) and reported as `stopped`, with `limit` as its seconds; past TIMEOUT
    it has hung, an error."""
    import contextlib
    import signal
    import subprocess
    import tempfile
    import threading
    import time

    with tempfile.TemporaryFile() as err_file:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            env=env,
            start_new_session=True,
        )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        bound = min(limit or TIMEOUT, TIMEOUT)

        def stop() -> None:
            with contextlib.suppress(ProcessLookupError):  # reaped already
                os.killpg(proc.pid, signal.SIGKILL)

        killer = threading.Timer(bound, stop)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err_file.seek(0)
        err = err_file.read().decode(errors="replace").splitlines()
    if elapsed >= bound and limit is not None and limit < TIMEOUT:
        return {"seconds": limit, "rss_mib": usage.ru_maxrss / 1024, "stderr": [], "stopped": True}
    if elapsed >= TIMEOUT:
        raise RuntimeError(f"bench: {name} took over {TIMEOUT:.0f}s and was ended")
    # clush's progress meter ("clush:  148/200\r") is not a complaint.
    said = [line for line in err if not _PROGRESS.match(line)]
    if proc.returncode != 0:
        tail = "\n".join(said[-10:])
        raise RuntimeError(f"bench: {name} exited with {proc.returncode}:\n{tail}")
    return {"seconds": elapsed, "rss_mib": usage.ru_maxrss / 1024, "stderr": said}


#: What dsh says on stderr by design: the output past 1,000 lines per host stays in the spool.
_CAPPED = "output capped after"


def _quiet(name: str, result: dict[str, Any]) -> None:
    said = [line for line in result["stderr"] if _CAPPED not in line]
    if said:  # a run that exits 0 but complains is suspect; keep the sample, but say so
        print(f"bench: {name} wrote to stderr: {said[0][:200]}", file=sys.stderr)


def _argvs(fleet: Fleet, hosts: int, command: str) -> dict[str, list[str]]:
    import shlex

    from bench.hosts import INSTALL_HINT, tool

    dsh = tool("dsh", "pip install -e .")
    clush = tool("clush", "pip install -e . (ClusterShell is a dependency of dsh)")
    for module in ("pssh", "asyncssh"):
        import importlib.util

        if importlib.util.find_spec(module) is None:
            raise RuntimeError(f"bench: {module} is not installed in {sys.prefix}: {INSTALL_HINT}")
    nodes = fleet.nodes(hosts)
    fan = str(max(FANOUT, hosts))
    script = os.path.abspath(__file__)
    config = dsh_options(fleet, hosts)
    return {
        DSH: [dsh, *config, "-c", f"@{nodes} {command}"],
        CLUSH: [
            clush,
            "-f",
            fan,
            "-w",
            nodes,
            "-o",
            f"-F {shlex.quote(str(fleet.ssh_config))}",
            "-S",
            command,
        ],
        PSSH: [sys.executable, script, "pssh", str(fleet.port), fleet.user, fleet.key, str(hosts), command],
        FLOOR: [
            sys.executable,
            script,
            "floor",
            str(fleet.port),
            fleet.user,
            fleet.key,
            str(fleet.known_hosts),
            str(hosts),
            command,
        ],
    }


def _compare(
    case: str, fleet: Fleet, hosts: int, command: str, runs: int, warmup: int = 1, limit: float | None = None
) -> list[Row]:
    import functools

    from bench.run import _alternate

    def sample(name: str, argv: list[str]) -> float:
        result = _measured(name, argv, fleet.env, limit=limit)
        if result.get("stopped"):
            stopped.add(name)
        _quiet(name, result)
        peaks.setdefault(name, []).append(result["rss_mib"])
        return float(result["seconds"])

    peaks: dict[str, list[float]] = {}
    stopped: set[str] = set()
    argvs = _argvs(fleet, hosts, command)
    rows = _alternate(
        case, {n: functools.partial(sample, n, a) for n, a in argvs.items()}, runs, warmup=warmup
    )
    for row in rows:
        row.peaks = peaks[row.name][-len(row.samples) :]
        row.stopped = row.name in stopped
    return rows


def _ratios(ms: dict[str, float], targets: dict[str, float | None]) -> dict[str, float]:
    out: dict[str, float] = {}
    for peer, target in targets.items():
        label = f"dsh / {peer}" + (f" (target {target:g})" if target else "")
        out[label] = ms[DSH] / ms[peer]
    return out


# ---------------------------------------------------------------- the cases


def cold(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    """`true` on each host count, cold: dsh against clush, parallel-ssh and the floor."""
    from bench.hosts import compiled, fleet

    compiled()
    rows: list[Row] = []
    ratios: dict[str, float] = {}
    with fleet() as f:
        for n in hosts:
            found = _compare(f"fanout {n}", f, n, "true", max(1, min(repeat, MAX_RUNS)))
            for row in found:
                row.name = f"{row.name} @{n}"
            rows += found
            ms = {r.name.rsplit(" @", 1)[0]: r.median_ms for r in found}
            for label, value in _ratios(ms, {CLUSH: 0.3, PSSH: 0.75, FLOOR: 1.1}).items():
                ratios[f"{label} @{n}"] = value
    return rows, ratios


def output(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    """`seq 1 200000` on 50 hosts (fewer if --hosts says so): time and peak memory."""
    from bench.hosts import compiled, fleet

    compiled()
    n = min([OUTPUT_HOSTS, *hosts])
    with fleet() as f:  # 10 million lines per run: at most 2 runs, no warm-up
        command = f"seq 1 {int(os.environ.get('BENCH_OUTPUT_LINES', OUTPUT_LINES))}"
        rows = _compare("output", f, n, command, max(1, min(repeat, 2)), warmup=0, limit=OUTPUT_LIMIT)
    ms = {r.name: r.median_ms for r in rows}
    ratios = _ratios(ms, {CLUSH: None, PSSH: None, FLOOR: None})
    for r in rows:  # a peer stopped at the limit took longer: the ratio is at most this
        if r.stopped and r.name != DSH:
            key = f"dsh / {r.name}"
            ratios[f"{key} (at most: {r.name} stopped at {OUTPUT_LIMIT:g} s)"] = ratios.pop(key)
    import statistics

    peak = {r.name: statistics.median(r.peaks) for r in rows}
    for peer in (CLUSH, PSSH, FLOOR):
        ratios[f"dsh / {peer} peak RSS"] = peak[DSH] / peak[peer]
    lines = n * int(command.split()[-1])
    ratios["dsh lines received per second"] = lines / (ms[DSH] / 1000)
    return rows, ratios


def warm(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    """The second line of a session (connections open; dsh's host agents up) against
    the floor's second round; and the same line on hosts without python3 (the sh
    wrapper)."""
    from bench.hosts import compiled, fleet
    from bench.run import Row

    compiled()
    n = 200 if 200 in hosts or not hosts else max(hosts)
    runs = max(1, min(repeat, MAX_RUNS))
    with fleet() as f, fleet(python=False) as bare:
        argvs = _argvs(f, n, "true")
        dsh_argv = [*argvs[DSH][:-2], "--json"]  # lines on stdin, one JSON event per result
        bare_argv = [*_argvs(bare, n, "true")[DSH][:-2], "--json"]
        line = f"@{f.nodes(n)} true\n".encode()
        floor_argv = [*argvs[FLOOR], "--warm"]
        dsh_row, floor_row = Row("warm", f"{DSH} second line @{n}"), Row("warm", f"{FLOOR} second round @{n}")
        bare_row = Row("warm", f"{DSH} second line, no python3 (wrapper) @{n}")
        for i in range(runs + 1):
            seconds = _second_line(f, dsh_argv, line)
            result = _measured(FLOOR, floor_argv, f.env)
            floor_seconds = next(
                float(x.split()[1]) for x in result["stderr"] if x.startswith("warm-seconds ")
            )
            bare_seconds = _second_line(bare, bare_argv, line)
            if i:  # the first round warms up
                dsh_row.samples.append(seconds)
                floor_row.samples.append(floor_seconds)
                bare_row.samples.append(bare_seconds)
    rows = [dsh_row, floor_row, bare_row]
    return rows, {
        f"dsh / floor, warm (target 1.0) @{n}": dsh_row.median_ms / floor_row.median_ms,
        f"dsh without python3 / floor, warm @{n}": bare_row.median_ms / floor_row.median_ms,
    }


#: How long the operator thinks between the two lines of the warm case (dsh boots its
#: host agents then, as it waits for the next line: DSH_HOST_AGENT=auto).
THINK = 3.0


def think() -> float:
    """THINK, or what `--think` set (BENCH_THINK, in the environment the floor's script gets too)."""
    return float(os.environ.get("BENCH_THINK", THINK))


def _second_line(f: Fleet, argv: list[str], line: bytes) -> float:
    """Run two lines in one dsh, THINK seconds apart (the second is written once the
    first is done); the second one's seconds, from its `done` event."""
    import json
    import subprocess
    import tempfile
    import threading
    import time

    errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed below; never a pipe nobody reads)
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors, env=f.env)
    assert proc.stdin is not None and proc.stdout is not None
    killer = threading.Timer(TIMEOUT, proc.kill)
    killer.start()
    ends: list[dict[str, Any]] = []
    try:
        proc.stdin.write(line)
        proc.stdin.flush()
        for raw in proc.stdout:
            event = json.loads(raw)
            if event.get("event") != "done":
                continue
            ends.append(event)
            if len(ends) == 1:
                time.sleep(think())
                proc.stdin.write(line)
                proc.stdin.close()
        code = proc.wait()
        errors.seek(0)
        err = errors.read()
    finally:
        killer.cancel()
        errors.close()
    if code != 0:
        raise RuntimeError(f"bench: dsh exited with {code}: {err.decode()[-500:]}")
    if len(ends) != 2 or not all(e["ok"] for e in ends):
        raise RuntimeError(f"bench: dsh's two lines did not both end ok: {ends}")
    return float(ends[1]["seconds"])


def memory(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    """`true` on 1,000 aliases at fan-out 1,000 (twice the largest --hosts count if
    that is fewer), from one dsh: its wall time against the floor's (alternating),
    and its peak RSS (issue 22: no host unreachable, ≤ 300 MB, ≤ 1.15 × the floor)."""
    import functools
    import statistics

    from bench.hosts import compiled, fleet
    from bench.run import _alternate

    compiled()
    n = min(MEMORY_HOSTS, 2 * max(hosts)) if hosts else MEMORY_HOSTS  # 1,000 with the default --hosts
    runs = max(1, min(repeat, 3))
    peaks: list[float] = []

    def sample(name: str, argv: list[str]) -> float:
        result = _measured(name, argv, f.env)  # any host not ok: dsh exits 1, an error
        _quiet(name, result)
        if name == DSH:
            peaks.append(result["rss_mib"])
        return float(result["seconds"])

    with fleet() as f:
        argvs = _argvs(f, n, "true")
        rows = _alternate(
            "memory",
            {name: functools.partial(sample, name, argvs[name]) for name in (DSH, FLOOR)},
            runs,
            warmup=1,
        )
    for row in rows:
        row.name = f"{row.name} wall @{n}"
    peak = statistics.median(peaks[-runs:])
    rows[0].peaks = peaks[-runs:]
    return rows, {
        f"dsh / {FLOOR} @{n} (target 1.15)": rows[0].median_ms / rows[1].median_ms,
        f"dsh peak RSS MiB @{n} (target 300)": peak,
        "peak RSS / 300 MB target": peak / 286.1,
    }


if __name__ == "__main__":
    sys.exit(_script(sys.argv[1:]))

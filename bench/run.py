"""dsh benchmarks, run side by side with their references in one run, reported as ratios.

    scripts/bench [--repeat N] [--hosts 50,200,500] [--think S] [--output-lines N] [--json] [CASE …]
    (.venv/bin/python -m bench.run … once scripts/bench has installed the peers)

Cases (design §8 has the targets):
  fanout      `true` on 50, 200 and 500 aliases of one loopback sshd, cold, against
              clush, parallel-ssh and a bare asyncssh floor (bench/fanout.py).
  warm        the second line of a session, connections open, against the floor's
              second round on open connections, both after a pause (--think, 3 s).
  output      `seq 1 200000` on 50 hosts: time and peak memory against the three
              (--output-lines changes the 200000).
  checkpoint  a 200-step local fragment's checkpoint overhead per step, on the
              embedded store and on etcd (loopback), against one raw write of each.
  takeover    kill -9 of a session's owner to another machine owning it, on etcd
              with a 2 s lease.
  startup     `dsh -c 'echo hi'` wall time, against `python -c pass` for scale.
  prompt      `dsh` on a pty to its `dsh>` prompt, against `python -c pass` (bench/prompt.py).
  memory      `true` on 1,000 aliases at fan-out 1,000: dsh's wall time against the
              floor's, and its peak RSS.
  store       a fenced write on the embedded store, against a raw sqlite3 write.
  copy        `put` of a 100 MiB file to 50 aliases (`--copy-size` changes the size),
              against clush --copy and parallel-ssh's copy_file and scp_send, with
              the bytes each sends per alias over loopback (bench/copies.py).
Each case alternates dsh and its references run by run, so that load on the
machine hits both alike, and reports medians. The SSH cases make at most 5 runs.
A run that did not do its work (the copy case: a file missing or different) is
reported as failed, not timed; any failed run makes the exit status 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsh.store.base import Store

TARGET_STARTUP_MS = 150.0


@dataclass
class Row:
    case: str
    name: str
    samples: list[float] = field(default_factory=list)
    #: Peak RSS of each run, MiB (the cases that measure it).
    peaks: list[float] = field(default_factory=list)
    #: Some run hit the case's limit and was stopped: its samples are lower bounds.
    stopped: bool = False
    #: Why each failed run failed (a failed run is no sample).
    failed: list[str] = field(default_factory=list)
    #: Bytes per host that crossed the loopback interface in each run (the cases that measure it).
    wire: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000


class RoundFailed(Exception):
    """A run that did not do its work: reported as failed, not timed."""


def _timed(argv: Sequence[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, timeout=60)
    return time.perf_counter() - started


def _alternate(case: str, runs: dict[str, Callable[[], float]], repeat: int, *, warmup: int = 2) -> list[Row]:
    rows = {name: Row(case, name) for name in runs}
    for _ in range(warmup):  # warm the page cache and .pyc files
        for fn in runs.values():
            with contextlib.suppress(RoundFailed):  # the timed runs report it
                fn()
    for _ in range(repeat):
        for name, fn in runs.items():
            try:
                rows[name].samples.append(fn())
            except RoundFailed as exc:
                rows[name].failed.append(str(exc))
    return list(rows.values())


def startup(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    import compileall

    import dsh as package

    # As installed for users: bytecode present (PYTHONDONTWRITEBYTECODE may be set here).
    compileall.compile_dir(os.path.dirname(package.__file__), quiet=1)
    dsh = shutil.which("dsh", path=os.path.dirname(sys.executable)) or "dsh"
    import tempfile

    state = tempfile.mkdtemp(prefix="dsh-bench-")  # the sessions it makes stay out of the user's store
    env = {**os.environ, "NO_COLOR": "1", "XDG_STATE_HOME": state}
    rows = _alternate(
        "startup",
        {
            "dsh -c 'echo hi'": lambda: _timed([dsh, "-c", "echo hi"], env),
            "dsh -c 'echo hi', wrapper (DSH_HOST_AGENT=off)": lambda: _timed(
                [dsh, "-c", "echo hi"], {**env, "DSH_HOST_AGENT": "off"}
            ),
            "python -c pass": lambda: _timed([sys.executable, "-c", "pass"], env),
            "sh -c 'echo hi'": lambda: _timed(["/bin/sh", "-c", "echo hi"], env),
        },
        repeat,
    )
    dsh_ms, wrapped_ms, py_ms = rows[0].median_ms, rows[1].median_ms, rows[2].median_ms
    ratios = {
        "dsh / python -c pass (target 4)": dsh_ms / py_ms,
        "dsh with the local agent / with the wrapper": dsh_ms / wrapped_ms,
        "dsh / 150 ms target": dsh_ms / TARGET_STARTUP_MS,
    }
    return rows, ratios


def store(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    """A fenced write on the embedded store (one CAS transaction, as a checkpoint
    will be), against one raw sqlite3 insert+commit with the same pragmas."""
    import asyncio
    import sqlite3
    import tempfile

    from dsh.store.base import Compare, Put
    from dsh.store.sqlite import SqliteStore

    ops = 200
    with tempfile.TemporaryDirectory() as tmp:
        raw = sqlite3.connect(f"{tmp}/raw.db", isolation_level=None)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")
        raw.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v BLOB)")
        db = SqliteStore(f"{tmp}/store.db")

        def raw_writes() -> float:
            started = time.perf_counter()
            for i in range(ops):
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (b"k%d" % i, b"v" * 200))
                raw.execute("COMMIT")
            return (time.perf_counter() - started) / ops

        async def fenced() -> float:
            owner = await db.put(b"owner", b"me", timeout=10)
            started = time.perf_counter()
            for i in range(ops):
                await db.txn(
                    [Compare(b"owner", "mod", "==", owner)], [Put(b"k%d" % i, b"v" * 200)], timeout=10
                )
            return (time.perf_counter() - started) / ops

        loop = asyncio.new_event_loop()
        try:
            rows = _alternate(
                "store",
                {
                    "dsh SQLite CAS write": lambda: loop.run_until_complete(fenced()),
                    "raw sqlite3 write": raw_writes,
                },
                repeat,
            )
            loop.run_until_complete(db.close())
        finally:
            loop.close()
            raw.close()
    ratios = {
        "dsh CAS / raw write": rows[0].median_ms / rows[1].median_ms,
        "dsh CAS / 1 ms target": rows[0].median_ms,
    }
    return rows, ratios


class _Instant:
    """A remote whose commands end at once: what is left to time is dsh's own work."""

    name = "instant"

    async def run(
        self,
        command: str,
        *,
        spot: object,
        timeout: float,
        output: object,
        env: object = None,
        stdin: object = None,
        told: object = None,
    ) -> object:
        from dsh.remote.base import Exec

        return Exec("ok", 0, 0.0)


class _Quiet:
    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


def checkpoint(repeat: int, hosts: list[int], *, etcd: bool = True) -> tuple[list[Row], dict[str, float]]:
    """A 200-step local fragment with and without checkpoints (intent and result of
    every step, fenced on the lease), per step, on the embedded store and on etcd;
    and one raw write of each store for scale."""
    import tempfile

    from dsh.store.sqlite import SqliteStore

    rows: list[Row] = []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        found = _checkpoints("embedded", SqliteStore(f"{tmp}/store.db"), repeat)
        rows += found
        _overheads(ratios, "embedded", found)
        if etcd:
            from dsh.store import open_store
            from tests.etcd import Etcd

            with Etcd() as server:
                found = _checkpoints("etcd", open_store(server.url, {}), repeat)
            rows += found
            _overheads(ratios, "etcd", found)
    ratios["embedded overhead / 0.7 ms target"] = ratios["checkpoint overhead per step, embedded, ms"] / 0.7
    return rows, ratios


def _overheads(ratios: dict[str, float], kind: str, found: list[Row]) -> None:
    overhead = found[0].median_ms - found[1].median_ms
    ratios[f"checkpoint overhead per step, {kind}, ms"] = overhead
    ratios[f"overhead / one raw write, {kind}"] = overhead / found[2].median_ms


def _checkpoints(kind: str, store: Store, repeat: int) -> list[Row]:
    import asyncio

    from dsh.lang.compiler import compile_source
    from dsh.lang.source import Source
    from dsh.runtime.executor import Executor
    from dsh.session.keys import Keys, user_tree
    from dsh.session.lease import Session
    from dsh.session.recorder import SessionRecorder

    steps = 200
    plan = compile_source(Source("bench", "true\n" * steps))
    loop = asyncio.new_event_loop()
    session = Session(store, Keys(user_tree("bench"), "cp"), "bench", lease_ttl=30, timeout=10)
    owned = loop.run_until_complete(session.claim())

    def run(recorded: bool) -> float:
        executor = Executor(reporter=_Quiet(), local=_Instant())  # type: ignore[arg-type]
        executor.recorder = SessionRecorder(owned) if recorded else None
        started = time.perf_counter()
        loop.run_until_complete(executor.run_plan(plan))
        return (time.perf_counter() - started) / steps

    async def writes() -> float:
        started = time.perf_counter()
        for i in range(steps):
            await store.put(b"/raw/%d" % i, b"v" * 200, timeout=10)
        return (time.perf_counter() - started) / steps

    try:
        return _alternate(
            f"checkpoint {kind}",
            {
                f"step with checkpoints, {kind}": lambda: run(True),
                f"step without, {kind}": lambda: run(False),
                f"one raw write, {kind}": lambda: loop.run_until_complete(writes()),
            },
            repeat,
        )
    finally:
        loop.run_until_complete(owned.release())
        loop.run_until_complete(store.close())
        loop.close()


def takeover(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    """kill -9 of a detached session's executor on machine A, then `dsh attach` on
    machine B (another DSH_MACHINE_ID and state directory, the same etcd): the
    seconds from the kill to B owning the session (its owner key, polled in-process
    every 10 ms). The lease TTL is 2 s (etcd's minimum with default settings)."""
    import asyncio
    import json
    import signal
    import tempfile
    from pathlib import Path

    from bench.hosts import clean_env, compiled, tool
    from dsh.session.keys import Keys, user_name, user_tree
    from dsh.store import open_store
    from tests.etcd import Etcd

    compiled()
    dsh = tool("dsh", "pip install -e .")
    ttl = 2.0
    runs = max(1, min(repeat, 5))
    row = Row("takeover", "kill -9 to new owner, etcd, TTL 2 s")
    with tempfile.TemporaryDirectory() as tmp, Etcd() as server:
        script = Path(tmp) / "long.dsh"
        script.write_text("sleep 30s\n")
        machines = {m: clean_env(Path(tmp) / m) for m in ("A", "B")}
        for m, env in machines.items():
            env.update(DSH_MACHINE_ID=m, DSH_STORE=server.url, DSH_LEASE_TTL=str(ttl))
        store = open_store(server.url, {})
        loop = asyncio.new_event_loop()

        def owner(name: str) -> dict[str, object] | None:
            held = loop.run_until_complete(store.get(Keys(user_tree(user_name()), name).owner, timeout=10))
            return json.loads(held.value) if held is not None else None

        try:
            for i in range(runs):
                name = f"t{i}"
                subprocess.run(
                    [dsh, "run", "--detach", "--session", name, str(script)],
                    env=machines["A"],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
                held = owner(name)
                assert held is not None
                time.sleep(ttl)  # into the lease's life, as a real owner would be
                os.kill(int(str(held["pid"])), signal.SIGKILL)
                killed = time.perf_counter()
                attach = subprocess.Popen(
                    [dsh, "attach", name],
                    env=machines["B"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                while (owner(name) or {}).get("machine") != "B":
                    if time.perf_counter() - killed > 30:
                        raise RuntimeError("bench: machine B did not take the session over within 30 s")
                    time.sleep(0.01)
                row.samples.append(time.perf_counter() - killed)
                subprocess.run([dsh, "kill", name], env=machines["B"], capture_output=True, timeout=60)
                attach.wait(30)
        finally:
            loop.run_until_complete(store.close())
            loop.close()
    return [row], {"kill to new owner / (TTL + 1 s) target": row.median_ms / 1000 / (ttl + 1)}


def fanout(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    from bench.fanout import cold

    return cold(repeat, hosts)


def warm(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    from bench.fanout import warm as case

    return case(repeat, hosts)


def output(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    from bench.fanout import output as case

    return case(repeat, hosts)


def memory(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    from bench.fanout import memory as case

    return case(repeat, hosts)


def copy(repeat: int, hosts: list[int], *, size: int | None = None) -> tuple[list[Row], dict[str, float]]:
    from bench.copies import SIZE
    from bench.copies import copy as case

    return case(repeat, hosts, size=SIZE if size is None else size)


def prompt(repeat: int, hosts: list[int]) -> tuple[list[Row], dict[str, float]]:
    from bench.prompt import prompt as case

    return case(repeat, hosts)


CASES: dict[str, Callable[[int, list[int]], tuple[list[Row], dict[str, float]]]] = {
    "fanout": fanout,
    "warm": warm,
    "output": output,
    "checkpoint": checkpoint,
    "takeover": takeover,
    "startup": startup,
    "prompt": prompt,
    "memory": memory,
    "store": store,
    "copy": copy,
}


def _bytes(text: str) -> int:
    """`--copy-size`: bytes, or with a suffix k, M or G (powers of 1024)."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(text[-1:].lower(), 1)
    try:
        value = int(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size, like 100M or 4096") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a size of 1 byte or more")
    return value


def _line(text: str, width: int = 300) -> str:
    """A failure's message on one line."""
    lines = [part.strip() for part in text.splitlines() if part.strip()]
    flat = " | ".join(lines)
    if len(flat) > width and len(lines) > 1:  # what it was, and its last word
        flat = f"{lines[0]} … {lines[-1]}"
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"one of: {', '.join(CASES)}")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument(
        "--hosts", default="50,200,500", help="host counts of the fan-out case (and caps of the others)"
    )
    parser.add_argument(
        "--copy-size", type=_bytes, default=None, metavar="SIZE", help="the copy case's file (default 100M)"
    )
    parser.add_argument(
        "--think", type=float, default=None, metavar="SECONDS", help="the warm case's pause (default 3)"
    )
    parser.add_argument(
        "--output-lines", type=int, default=None, metavar="N", help="the output case's lines per host"
    )
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(argv)
    # in the environment: the contenders' scripts (the floor's) read them too
    if opts.think is not None:
        os.environ["BENCH_THINK"] = str(max(opts.think, 0.0))
    if opts.output_lines is not None:
        os.environ["BENCH_OUTPUT_LINES"] = str(max(opts.output_lines, 1))
    try:
        hosts = sorted({int(n) for n in opts.hosts.split(",") if n.strip()})
    except ValueError:
        parser.error(f"--hosts {opts.hosts!r}: give host counts, like 50,200,500")
    if not hosts or hosts[0] < 1:
        parser.error("--hosts: give host counts of 1 or more")
    unknown = [c for c in opts.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r} (cases: {', '.join(CASES)})")
    report: dict[str, object] = {}
    failed = 0
    for case in opts.cases or list(CASES):
        run = CASES[case]
        if case == "copy":
            run = functools.partial(copy, size=opts.copy_size)
        try:
            rows, ratios = run(opts.repeat, hosts)
        except RuntimeError as exc:  # a contender failed or hung: say so, and go on with the rest
            failed += 1
            report[case] = {"error": str(exc)}
            if not opts.json:
                print(f"== {case}: FAILED: {exc}", flush=True)
            continue
        # a case may cap its runs (fanout)
        runs = max((len(r.samples) + len(r.failed) for r in rows), default=opts.repeat)
        failed += any(r.failed for r in rows)
        entry: dict[str, object] = {
            "medians_ms": {r.name: round(r.median_ms, 2) for r in rows if r.samples},
            "peak_rss_mib": {r.name: round(statistics.median(r.peaks), 1) for r in rows if r.peaks},
            "stopped_at_limit": [r.name for r in rows if r.stopped],
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
            "repeat": runs,
        }
        if any(r.wire for r in rows):
            entry["lo_rx_bytes_per_host"] = {r.name: round(statistics.median(r.wire)) for r in rows if r.wire}
        if any(r.failed for r in rows):
            entry["failed"] = {r.name: r.failed for r in rows if r.failed}
        report[case] = entry
        if not opts.json:
            print(f"== {case} (median of {runs}, alternating)", flush=True)
            for r in rows:
                peak = f"  peak {statistics.median(r.peaks):7.1f} MiB" if r.peaks else ""
                wire = f"  lo rx {statistics.median(r.wire) / (1 << 20):8.2f} MiB/host" if r.wire else ""
                more = " (stopped: more than this)" if r.stopped else ""
                if r.failed:
                    more += (
                        f"  FAILED {len(r.failed)} of {len(r.samples) + len(r.failed)}: {_line(r.failed[0])}"
                    )
                median = f"{r.median_ms:10.1f} ms" if r.samples else f"{'—':>10}   "
                print(f"  {r.name:<44} {median}{peak}{wire}{more}")
            for k, v in ratios.items():
                unit = " ms" if k.endswith(", ms") else "" if "MiB" in k or "per second" in k else "x"
                print(f"  {k.removesuffix(', ms'):<44} {v:10.2f}{unit}", flush=True)
    if opts.json:
        print(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""dsh benchmarks, run side by side with their reference in one run, reported as ratios.

    .venv/bin/python -m bench.run [--repeat N] [--json] [CASE …]

Cases so far:
  startup   `dsh -c 'echo hi'` wall time, against `python -c pass` for scale and
            against the 150 ms target of design §8.
  store     a fenced write on the embedded store, against a raw sqlite3 write.
  checkpoint  a step's checkpoint overhead (intent and result in the store).
  fanout    `true` on 200 aliases of one loopback sshd, cold, against clush,
            parallel-ssh and a bare asyncssh floor (bench/fanout.py; at most 5
            runs, needs `pip install -e '.[bench]'`).
Each case alternates dsh and its references run by run, so that load on the
machine hits both alike, and reports medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

TARGET_STARTUP_MS = 150.0


@dataclass
class Row:
    case: str
    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000


def _timed(argv: Sequence[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env, timeout=60)
    return time.perf_counter() - started


def _alternate(case: str, runs: dict[str, Callable[[], float]], repeat: int, *, warmup: int = 2) -> list[Row]:
    rows = {name: Row(case, name) for name in runs}
    for _ in range(warmup):  # warm the page cache and .pyc files
        for fn in runs.values():
            fn()
    for _ in range(repeat):
        for name, fn in runs.items():
            rows[name].samples.append(fn())
    return list(rows.values())


def startup(repeat: int) -> tuple[list[Row], dict[str, float]]:
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
            "python -c pass": lambda: _timed([sys.executable, "-c", "pass"], env),
            "sh -c 'echo hi'": lambda: _timed(["/bin/sh", "-c", "echo hi"], env),
        },
        repeat,
    )
    dsh_ms, py_ms = rows[0].median_ms, rows[1].median_ms
    ratios = {
        "dsh / python -c pass": dsh_ms / py_ms,
        "dsh / 150 ms target": dsh_ms / TARGET_STARTUP_MS,
    }
    return rows, ratios


def store(repeat: int) -> tuple[list[Row], dict[str, float]]:
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

    async def run(self, command: str, *, spot: object, timeout: float, output: object) -> object:
        from dsh.remote.base import Exec

        return Exec("ok", 0, 0.0)


class _Quiet:
    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: None


def checkpoint(repeat: int) -> tuple[list[Row], dict[str, float]]:
    """A 200-step local fragment with and without the embedded store's checkpoints
    (intent and result of every step, fenced on the lease), per step."""
    import asyncio
    import tempfile

    from dsh.lang.compiler import compile_source
    from dsh.lang.source import Source
    from dsh.runtime.executor import Executor
    from dsh.runtime.session import Keys, Session, SessionRecorder
    from dsh.store.sqlite import SqliteStore

    steps = 200
    plan = compile_source(Source("bench", "true\n" * steps))

    with tempfile.TemporaryDirectory() as tmp:
        loop = asyncio.new_event_loop()
        store = SqliteStore(f"{tmp}/store.db")
        session = Session(store, Keys("bench", "cp"), "bench", lease_ttl=30, timeout=10)
        loop.run_until_complete(session.claim())

        def run(recorded: bool) -> float:
            executor = Executor(reporter=_Quiet(), local=_Instant())  # type: ignore[arg-type]
            executor.recorder = SessionRecorder(session) if recorded else None
            started = time.perf_counter()
            loop.run_until_complete(executor.run_plan(plan))
            return (time.perf_counter() - started) / steps

        try:
            rows = _alternate(
                "checkpoint",
                {"step with checkpoints": lambda: run(True), "step without": lambda: run(False)},
                repeat,
            )
        finally:
            loop.run_until_complete(session.release())
            loop.run_until_complete(store.close())
            loop.close()
    overhead = rows[0].median_ms - rows[1].median_ms
    return rows, {"checkpoint overhead per step, ms": overhead, "overhead / 1 ms target": overhead}


def fanout(repeat: int) -> tuple[list[Row], dict[str, float]]:
    from bench.fanout import case

    return case(repeat)


CASES = {"startup": startup, "store": store, "checkpoint": checkpoint, "fanout": fanout}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help=f"one of: {', '.join(CASES)}")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args(argv)
    unknown = [c for c in opts.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case {unknown[0]!r} (cases: {', '.join(CASES)})")
    report: dict[str, object] = {}
    for case in opts.cases or list(CASES):
        rows, ratios = CASES[case](opts.repeat)
        runs = len(rows[0].samples) if rows else opts.repeat  # a case may cap its runs (fanout)
        report[case] = {
            "medians_ms": {r.name: round(r.median_ms, 2) for r in rows},
            "ratios": {k: round(v, 3) for k, v in ratios.items()},
            "repeat": runs,
        }
        if not opts.json:
            print(f"== {case} (median of {runs}, alternating)")
            for r in rows:
                print(f"  {r.name:<28} {r.median_ms:8.1f} ms")
            for k, v in ratios.items():
                unit = " ms" if k.endswith(", ms") else "x"
                print(f"  {k.removesuffix(', ms'):<28} {v:8.2f}{unit}")
    if opts.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

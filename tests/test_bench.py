"""The quick benchmark cases still run (the benchmarks measure; this only keeps them working)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_quick_cases_run_and_report_json() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench.run", "store", "checkpoint", "--repeat", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report) == {"store", "checkpoint"}
    assert all(v > 0 for v in report["store"]["medians_ms"].values())

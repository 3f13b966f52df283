"""The benchmark still runs, every case, with tiny numbers (it measures; this keeps it working)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
CASES = ["fanout", "warm", "output", "checkpoint", "takeover", "startup", "memory", "store"]


def test_every_case_runs_with_tiny_numbers_and_prints_a_table() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench.run", *CASES, "--repeat", "1", "--hosts", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    for case in CASES:
        assert f"== {case} (median of 1, alternating)" in r.stdout, r.stdout
    for peer in ("clush", "parallel-ssh", "asyncssh floor"):
        assert f"dsh / {peer} (target" in r.stdout  # the fan-out ratios, against each peer
    assert "peak" in r.stdout and "kill to new owner" in r.stdout


def test_quick_cases_report_json() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench.run", "store", "startup", "--repeat", "1", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert set(report) == {"store", "startup"}
    assert all(v > 0 for v in report["store"]["medians_ms"].values())
    assert report["startup"]["ratios"]["dsh / python -c pass"] > 1


def test_a_contender_past_its_limit_is_stopped_with_its_children_and_reported_as_a_bound(
    tmp_path: Path,
) -> None:
    from bench.fanout import _measured

    child = tmp_path / "child.pid"
    argv = ["sh", "-c", f"sleep 30 & echo $! > {child}; wait"]  # like clush and its ssh children
    result = _measured("sleeper", argv, {"PATH": "/usr/bin:/bin"}, limit=0.5)
    assert result["stopped"] is True and result["seconds"] == 0.5
    pid = int(child.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert _measured("quick", ["true"], {"PATH": "/usr/bin:/bin"}, limit=5).get("stopped") is None

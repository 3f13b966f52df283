"""The benchmark still runs, every case, with tiny numbers (it measures; this keeps it working)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
#: Short pauses and outputs: these tests check that the cases run, not their figures.
TINY = ("--think", "0.3", "--output-lines", "2000")
CASES = ["fanout", "warm", "output", "checkpoint", "takeover", "startup", "prompt", "memory", "store"]


def test_every_case_runs_with_tiny_numbers_and_prints_a_table() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "bench.run", *CASES, *("--repeat", "1", "--hosts", "2"), *TINY],
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
    assert report["startup"]["ratios"]["dsh / python -c pass (target 4)"] > 1


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


def test_the_copy_case_copies_a_small_file_to_2_aliases_with_dsh_and_each_peer() -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "copy",
            "--repeat",
            "1",
            "--hosts",
            "2",
            "--copy-size",
            "64k",
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(r.stdout)["copy"]
    failed = report.get("failed", {})
    for tool in ("dsh put @2", "clush --copy @2", "parallel-ssh copy_file @2", "parallel-ssh scp_send @2"):
        assert tool not in failed, failed  # each file there, its SHA-256 the source's
        assert report["medians_ms"][tool] > 0
        assert report["lo_rx_bytes_per_host"][tool] > 64 << 10  # the file crossed loopback
    assert r.returncode == 0, r.stderr
    assert not Path("/tmp/bench/h1").exists()  # the copies are removed after the case


def test_a_copy_that_is_missing_or_different_is_found(tmp_path: Path) -> None:
    from bench.copies import _sha256, _unlike

    src = tmp_path / "src"
    src.write_bytes(b"x" * 1000)
    dirs = [tmp_path / h for h in ("h1", "h2", "h3")]
    for d in dirs:
        d.mkdir()
    (dirs[0] / "f").write_bytes(b"x" * 1000)
    (dirs[2] / "f").write_bytes(b"x" * 999 + b"y")
    digest = _sha256(src)
    assert digest is not None
    assert _unlike(dirs, digest) == [f"{dirs[1]}/f missing", f"{dirs[2]}/f differs"]


def test_clush_scp_path_gives_each_host_its_own_destination(tmp_path: Path) -> None:
    from bench.copies import SCP_PER_HOST

    (tmp_path / "scp").write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (tmp_path / "scp").chmod(0o755)
    (tmp_path / "wrapper").write_text(SCP_PER_HOST)
    # as clush's ssh worker calls it: options, the source, then [HOST]:DEST
    argv = ["bash", str(tmp_path / "wrapper"), "-F", "/a b/cfg", "/src/%h", "[h12]:/tmp/bench/%h/f"]
    out = subprocess.run(argv, env={"PATH": f"{tmp_path}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert out.stdout.splitlines() == ["-F", "/a b/cfg", "/src/%h", "[h12]:/tmp/bench/h12/f"]

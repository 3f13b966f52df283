"""The spool wrapper, run by the real /bin/sh (dash on Debian) on this machine."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from dsh.remote import spool


def launch(
    root: Path, action: str, command: str, timeout: float = 10, **kw: object
) -> subprocess.CompletedProcess[str]:
    argv = spool.launch_argv(str(root), "s1", action, "h1", timeout, command)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)  # type: ignore[call-overload]


def probe(root: Path, action: str) -> str:
    argv = spool.probe_argv(str(root), "s1", action, "h1")
    return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout.strip()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False


spool_files = ["claim", "err", "out", "pid", "run", "status"]


def test_output_status_and_spool_files(tmp_path: Path) -> None:
    r = launch(tmp_path, "1.1.1", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    d = tmp_path / "s1"
    assert sorted(p.name for p in d.iterdir()) == [f"1.1.1@h1.{ext}" for ext in spool_files]
    assert (d / "1.1.1@h1.out").read_text() == "out\n" and (d / "1.1.1@h1.status").read_text() == "3\n"
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert (d / "1.1.1@h1.claim").read_text().split()[0] == boot
    assert probe(tmp_path, "1.1.1") == "status 3"


def test_the_claim_refuses_a_second_start(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    assert launch(tmp_path, "1.1.1", f"echo x >> {marker}").returncode == 0
    again = launch(tmp_path, "1.1.1", f"echo x >> {marker}")
    assert again.returncode == spool.CLAIMED and again.stderr.startswith("dsh-spool: claimed")
    assert marker.read_text() == "x\n"
    assert probe(tmp_path, "2.1.1") == "none"


def test_stdin_is_dev_null_and_values_stay_data(tmp_path: Path) -> None:
    r = launch(tmp_path, "1.1.1", 'cat; printf \'%s|\' "$@" "$0"', input="not for the command")
    assert r.returncode == 0 and r.stdout == "sh|"  # no input, no arguments


def test_output_streams_while_the_command_runs(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, "echo first; sleep 1; echo second")
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "first\n"
    assert time.monotonic() - started < 0.8
    assert proc.stdout.readline() == "second\n"
    assert proc.wait(timeout=10) == 0


def test_a_dropped_connection_loses_nothing(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, "echo a; sleep 0.6; echo b")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"a\n"
    proc.stdout.close()  # the connection drops: nobody reads the stream any more
    proc.stderr.close()
    proc.kill()  # and the exec that streamed it dies (SIGPIPE would, at its next write)
    proc.wait(timeout=5)
    assert probe(tmp_path, "1.1.1") == "alive"
    deadline = time.monotonic() + 10
    while probe(tmp_path, "1.1.1") == "alive" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert probe(tmp_path, "1.1.1") == "status 0"
    assert (tmp_path / "s1" / "1.1.1@h1.out").read_text() == "a\nb\n"


def wait_for_line(path: Path) -> str:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} was not written")


def test_a_killed_runner_leaves_the_action_lost(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, "sleep 0.5")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runner = int(wait_for_line(tmp_path / "s1" / "1.1.1@h1.run").split()[0])
    assert probe(tmp_path, "1.1.1") == "alive"
    os.kill(runner, signal.SIGKILL)  # behind dsh's back: nobody will write the status
    assert probe(tmp_path, "1.1.1") == "lost"
    proc.kill()
    proc.wait(timeout=5)


def live_members(pgid: int) -> list[int]:
    """The processes of group `pgid` that are not zombies."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def test_kill_from_a_new_exec_ends_the_whole_group(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 60, "sleep 30 & sleep 30")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pgid = int(wait_for_line(tmp_path / "s1" / "1.1.1@h1.pid").split()[0])
    started = time.monotonic()
    subprocess.run(spool.kill_argv(str(tmp_path), "s1", "1.1.1", "h1"), check=True, timeout=10)
    assert proc.wait(timeout=10) == spool.CANCELLED
    assert time.monotonic() - started < 3
    assert live_members(pgid) == []  # (a zombie whose parent died may wait for its reaper)
    assert probe(tmp_path, "1.1.1") == "status cancelled"


def test_kill_for_a_timeout_is_recorded_as_one(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 60, "sleep 30")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_line(tmp_path / "s1" / "1.1.1@h1.pid")
    kill = spool.kill_argv(str(tmp_path), "s1", "1.1.1", "h1", 0.5, "timeout")
    subprocess.run(kill, check=True, timeout=10)
    assert proc.wait(timeout=10) == spool.TIMED_OUT
    assert probe(tmp_path, "1.1.1") == "status timeout"


def test_kill_before_launch_leaves_nothing_to_start(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    subprocess.run(spool.kill_argv(str(tmp_path), "s1", "1.1.1", "h1"), check=True, timeout=10)
    r = launch(tmp_path, "1.1.1", f"touch {marker}")
    assert r.returncode == spool.CLAIMED
    assert not marker.exists()
    assert probe(tmp_path, "1.1.1") == "status cancelled"


def test_the_spool_is_private(tmp_path: Path) -> None:
    assert launch(tmp_path, "1.1.1", "echo secret").returncode == 0
    for path in (tmp_path / "s1").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_the_wrapper_enforces_the_timeout_itself(tmp_path: Path) -> None:
    started = time.monotonic()
    r = launch(tmp_path, "1.1.1", "trap '' TERM; sleep 30", timeout=0.5)
    assert r.returncode == spool.TIMED_OUT and "timed out" in r.stderr
    assert time.monotonic() - started < 0.5 + spool.GRACE + 2
    assert probe(tmp_path, "1.1.1") == "status timeout"


def test_claimed_but_dead_without_status_is_lost(tmp_path: Path) -> None:
    d = tmp_path / "s1"
    d.mkdir(parents=True)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    me = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]
    claim = d / "1.1.1@h1.claim"
    claim.write_text(f"{boot} {os.getpid()} {me}\n")  # the wrapper that claimed it is alive
    assert probe(tmp_path, "1.1.1") == "alive"
    claim.write_text(f"{boot} {os.getpid()} 1\n")  # a live pid, but not the process that claimed
    assert probe(tmp_path, "1.1.1") == "lost"
    dead = subprocess.Popen(["true"])
    dead.wait()
    claim.write_text(f"{boot} {dead.pid} {me}\n")
    assert probe(tmp_path, "1.1.1") == "lost"
    claim.write_text(f"another-boot {os.getpid()} {me}\n")
    assert probe(tmp_path, "1.1.1") == "lost"


def test_follow_streams_an_action_from_its_start_to_its_end(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, "echo a; sleep 0.6; echo b; exit 4")
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.stdout is not None and first.stdout.readline() == b"a\n"
    first.kill()  # the first owner's exec is gone
    first.wait(5)
    r = subprocess.run(spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1"), capture_output=True, timeout=10)
    assert (r.returncode, r.stdout) == (4, b"a\nb\n")  # the whole output, once, and its status
    again = subprocess.run(
        spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1"), capture_output=True, timeout=10
    )
    assert (again.returncode, again.stdout) == (4, b"a\nb\n")  # an ended action: collected at once


def test_follow_of_an_action_whose_runner_died_is_lost(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, "sleep 1")
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runner = int(wait_for_line(tmp_path / "s1" / "1.1.1@h1.run").split()[0])
    os.kill(runner, signal.SIGKILL)
    r = subprocess.run(spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1"), capture_output=True, timeout=10)
    assert r.returncode == spool.LOST and b"dsh-spool: lost" in r.stderr
    first.kill()
    first.wait(5)
    none = subprocess.run(
        spool.follow_argv(str(tmp_path), "s1", "9.9.9", "h1"), capture_output=True, timeout=10
    )
    assert none.returncode == spool.LOST


def test_clean_removes_the_spools_of_sessions_untouched_for_long(tmp_path: Path) -> None:
    assert launch(tmp_path, "1.1.1", "true").returncode == 0
    old = tmp_path / "s1"
    fresh = tmp_path / "s2"
    fresh.mkdir()
    long_ago = time.time() - 3 * 3600
    os.utime(old, (long_ago, long_ago))
    subprocess.run(spool.clean_argv(str(tmp_path), 2 * 3600), check=True, timeout=10)
    assert not old.exists() and fresh.exists()


def test_one_session_in_sixteen_cleans() -> None:
    picked = sum(spool.cleans(f"s{i}.{i:012x}") for i in range(1600))
    assert 60 < picked < 140

"""The spool wrapper, run by the real /bin/sh (dash on Debian) on this machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsh.remote import spool
from dsh.remote.base import Exec
from tests.helpers import tmpfs
from tests.helpers.procs import alive


@dataclass
class Ran:
    """One wrapper exec: its exit status, the command's output (read by spool.Watch,
    after the wrapper's start marker, without its messages) and the outcome."""

    returncode: int
    stdout: str
    stderr: str
    ended: Exec


def watched(argv: list[str], returncode: int, stdout: bytes, stderr: bytes) -> Ran:
    seen: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def sink(stream: str, data: bytes) -> None:
        seen[stream] += data

    watch = spool.Watch(sink, argv)
    watch.sink("stdout", stdout)
    watch.sink("stderr", stderr)
    ended = watch.result(returncode, 0.0)
    return Ran(returncode, seen["stdout"].decode(), seen["stderr"].decode(), ended)


def wrapper(argv: list[str], **kw: object) -> Ran:
    done = subprocess.run(argv, capture_output=True, timeout=60, **kw)  # type: ignore[call-overload]
    return watched(argv, done.returncode, done.stdout, done.stderr)


def launch(root: Path, action: str, command: str, timeout: float = 10, **kw: object) -> Ran:
    return wrapper(spool.launch_argv(str(root), "s1", action, "h1", timeout, command), **kw)


def probe(root: Path, action: str) -> str:
    argv = spool.probe_argv(str(root), "s1", action, "h1")
    answer = spool.answer(argv, subprocess.run(argv, capture_output=True, timeout=10, check=True).stdout)
    assert answer is not None
    return answer


def marker(line: bytes | str) -> bool:
    """The wrapper's start marker (the first line of LAUNCH's and FOLLOW's streams)."""
    text = line.decode() if isinstance(line, bytes) else line
    return text.startswith("dsh-spool-") and text.endswith(" start\n")


spool_files = ["claim", "err", "out", "pid", "run", "status"]


def test_output_status_and_spool_files(tmp_path: Path) -> None:
    r = launch(tmp_path, "1.1.1", "echo out; echo err >&2; exit 3")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    d = tmp_path / "s1"
    assert sorted(p.name for p in d.iterdir()) == [f"1.1.1@h1.{ext}" for ext in spool_files]
    assert os.access(tmp_path / "askpass-1", os.X_OK)  # the sudo helper, once in the spool's root
    assert (d / "1.1.1@h1.out").read_text() == "out\n" and (d / "1.1.1@h1.status").read_text() == "3\n"
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert (d / "1.1.1@h1.claim").read_text().split()[0] == boot
    assert probe(tmp_path, "1.1.1") == "status 3"


def test_the_claim_refuses_a_second_start(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    assert launch(tmp_path, "1.1.1", f"echo x >> {marker}").returncode == 0
    again = launch(tmp_path, "1.1.1", f"echo x >> {marker}")
    assert again.returncode == spool.WrapperExit.CLAIMED and again.ended.outcome == "lost"
    assert again.ended.message.startswith("not started again: claimed") and again.stderr == ""
    assert marker.read_text() == "x\n"
    assert probe(tmp_path, "2.1.1") == "none"


def test_stdin_is_dev_null_and_values_stay_data(tmp_path: Path) -> None:
    r = launch(tmp_path, "1.1.1", 'cat; printf \'%s|\' "$@" "$0"', input=b"not for the command")
    assert r.returncode == 0 and r.stdout == "sh|"  # no input, no arguments


def test_output_streams_while_the_command_runs(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, "echo first; sleep 1; echo second")
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert marker(proc.stdout.readline())
    assert proc.stdout.readline() == "first\n"
    assert time.monotonic() - started < 0.8
    assert proc.stdout.readline() == "second\n"
    assert proc.wait(timeout=10) == 0


def test_a_dropped_connection_loses_nothing(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, "echo a; sleep 0.6; echo b")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    assert marker(proc.stdout.readline())
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
    dead_by(runner, time.monotonic() + 5)  # (dying takes it a moment: it must run to exit)
    assert probe(tmp_path, "1.1.1") == "lost"
    proc.kill()
    proc.wait(timeout=5)


def dead_by(pid: int, deadline: float) -> None:
    while alive(pid):
        assert time.monotonic() < deadline, f"{pid} still runs"
        time.sleep(0.01)


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
    assert proc.wait(timeout=10) == spool.WrapperExit.CANCELLED
    assert time.monotonic() - started < 3
    assert live_members(pgid) == []  # (a zombie whose parent died may wait for its reaper)
    assert probe(tmp_path, "1.1.1") == "status cancelled"


def test_kill_for_a_timeout_is_recorded_as_one(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 60, "sleep 30")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_line(tmp_path / "s1" / "1.1.1@h1.pid")
    kill = spool.kill_argv(str(tmp_path), "s1", "1.1.1", "h1", 0.5, "timeout")
    subprocess.run(kill, check=True, timeout=10)
    assert proc.wait(timeout=10) == spool.WrapperExit.TIMED_OUT
    assert probe(tmp_path, "1.1.1") == "status timeout"


def test_kill_before_launch_leaves_nothing_to_start(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    subprocess.run(spool.kill_argv(str(tmp_path), "s1", "1.1.1", "h1"), check=True, timeout=10)
    r = launch(tmp_path, "1.1.1", f"touch {marker}")
    assert r.returncode == spool.WrapperExit.CLAIMED
    assert not marker.exists()
    assert probe(tmp_path, "1.1.1") == "status cancelled"


def test_the_spool_is_private(tmp_path: Path) -> None:
    assert launch(tmp_path, "1.1.1", "echo secret").returncode == 0
    for path in (tmp_path / "s1").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path


def test_the_wrapper_enforces_the_timeout_itself(tmp_path: Path) -> None:
    started = time.monotonic()
    r = launch(tmp_path, "1.1.1", "trap '' TERM; sleep 30", timeout=0.5)
    assert r.returncode == spool.WrapperExit.TIMED_OUT and r.ended.outcome == "timeout" and r.stderr == ""
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
    assert first.stdout is not None and marker(first.stdout.readline())
    assert first.stdout.readline() == b"a\n"
    first.kill()  # the first owner's exec is gone
    first.wait(5)
    r = wrapper(spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1"))
    assert (r.returncode, r.stdout) == (4, "a\nb\n")  # the whole output, once, and its status
    again = wrapper(spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1"))
    assert (again.returncode, again.stdout) == (4, "a\nb\n")  # an ended action: collected at once


def test_follow_of_an_action_whose_runner_died_is_lost(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, "sleep 1")
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runner = int(wait_for_line(tmp_path / "s1" / "1.1.1@h1.run").split()[0])
    os.kill(runner, signal.SIGKILL)
    r = wrapper(spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1"))
    assert r.returncode == spool.WrapperExit.LOST and r.ended.outcome == "lost"
    assert r.ended.message == "its runner is gone and no status was written" and r.stderr == ""
    first.kill()
    first.wait(5)
    none = wrapper(spool.follow_argv(str(tmp_path), "s1", "9.9.9", "h1"))
    assert none.returncode == spool.WrapperExit.LOST and none.ended.message == "9.9.9 on h1 has no spool"


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


needs_tmpfs = pytest.mark.skipif(bool(tmpfs.missing()), reason=tmpfs.missing() or "-")


@needs_tmpfs
def test_F12_a_full_spool_disk_is_said_not_a_dead_runner(tmp_path: Path) -> None:
    """The command fills the spool's disk: its end cannot be written. That is what
    LAUNCH says (lost, for that reason), as does a FOLLOW; the next LAUNCH claims
    nothing and says the disk is full."""
    with tmpfs.Tmpfs(tmp_path / "full") as root:
        big = launch(root, "1.1.1", "head -c 1000000 /dev/zero | tr '\\0' a; echo; echo done")
        assert big.returncode == spool.WrapperExit.LOST and big.ended.outcome == "lost", big
        status = root / "s1" / "1.1.1@h1.status"
        assert big.ended.message == (
            f"the command's end could not be written: the spool's disk is full ({status}: "
            "No space left on device)"
        )
        followed = wrapper(spool.follow_argv(str(root), "s1", "1.1.1", "h1"))
        assert followed.ended.outcome == "lost" and "the spool's disk is full" in followed.ended.message
        assert "runner is gone" in followed.ended.message  # what it knows, and what it sees now
        second = launch(root, "2.1.1", "echo second")
        assert (second.ended.outcome, second.ended.exit_status) == ("failed", None), second
        claim = root / "s1" / "2.1.1@h1.claim"
        assert second.ended.message == (
            f"nothing started: the spool's disk is full ({claim}: No space left on device)"
        )
        assert not claim.exists()  # no claim taken: a later attempt may start it
        assert probe(root, "2.1.1") == "none"
        (root / "s1" / "1.1.1@h1.out").unlink()  # room again
        assert launch(root, "2.1.1", "echo second").stdout == "second\n"


def test_F12_a_spool_that_cannot_be_written_is_said_with_its_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    r = launch(blocker, "1.1.1", "echo never")
    assert r.ended.outcome == "failed" and r.ended.message == (
        f"nothing started: cannot write the spool: {blocker}/s1/1.1.1@h1.claim: Not a directory"
    )


def no_setsid_path(tmp_path: Path, *extra: str) -> str:
    """A PATH with what the wrapper needs but setsid (and python3 and perl), plus `extra`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("sh", "cat", "sleep", "mkdir", "rm", "tr", *extra):
        found = shutil.which(tool, path="/usr/local/bin:/usr/bin:/bin")
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_F15_without_setsid_nothing_is_claimed_or_started(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r = launch(tmp_path, "1.1.1", f": > {marker}", env={"PATH": no_setsid_path(tmp_path)})
    assert r.returncode == spool.WrapperExit.SPOOL_FAILED and r.ended.outcome == "failed" and r.stderr == ""
    assert r.ended.message == "nothing started: no setsid on h1 (nor python3 or perl to start a session with)"
    assert not marker.exists() and not (tmp_path / "s1").exists()
    assert launch(tmp_path, "1.1.1", f": > {marker}").returncode == 0  # no claim was left


@pytest.mark.parametrize("fallback", ["python3", "perl"])
def test_F15_without_setsid_python3_or_perl_starts_the_session(tmp_path: Path, fallback: str) -> None:
    """The command still gets a session and process group of its own (pid = pgid =
    sid), so that a timeout or a cancel ends all of it."""
    path = no_setsid_path(tmp_path, fallback)
    r = launch(tmp_path, "1.1.1", "read -r s < /proc/$$/stat; echo ${s#*) }", env={"PATH": path})
    assert r.ended.outcome == "ok", r
    fields = r.stdout.split()
    pid = r.stdout and (tmp_path / "s1" / "1.1.1@h1.pid").read_text().split()[0]
    assert fields[2] == fields[3] == pid  # its process group and session are its own
    argv = spool.launch_argv(str(tmp_path), "s1", "2.1.1", "h1", 60, "sleep 30 & sleep 30")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": path})
    pgid = int(wait_for_line(tmp_path / "s1" / "2.1.1@h1.pid").split()[0])
    kill = spool.kill_argv(str(tmp_path), "s1", "2.1.1", "h1")
    subprocess.run(kill, check=True, timeout=10, env={"PATH": path})
    out, err = proc.communicate(timeout=10)
    assert watched(argv, proc.returncode, out, err).ended.outcome == "cancelled"
    assert live_members(pgid) == []


def test_F15_what_comes_before_the_wrapper_is_dropped_and_counted(tmp_path: Path) -> None:
    """A login shell's motd and rc-file noise, on either stream, before the start
    marker: not the command's output; the wrapper's own messages never are either."""
    argv = spool.launch_argv(
        str(tmp_path), "s1", "1.1.1", "h1", 10, "printf 'out\\n'; printf err >&2; exit 3"
    )
    done = subprocess.run(argv, capture_output=True, timeout=30)
    seen: list[tuple[str, bytes]] = []
    watch = spool.Watch(lambda stream, data: seen.append((stream, data)), argv)
    for stream, data in (("stdout", b"motd-garbage\n"), ("stderr", b"rc: noise\n")):
        watch.sink(stream, data)
    for stream, data in (("stdout", done.stdout), ("stderr", done.stderr)):
        for i in range(len(data)):  # a byte at a time: a marker split anywhere is still found
            watch.sink(stream, data[i : i + 1])
    ended = watch.result(done.returncode, 0.1)
    assert (ended.outcome, ended.exit_status) == ("failed", 3)
    assert b"".join(d for s, d in seen if s == "stdout") == b"out\n"
    assert b"".join(d for s, d in seen if s == "stderr") == b"err"
    assert watch.dropped == len(b"motd-garbage\nrc: noise\n")
    assert spool.noise_note("h1", watch.dropped) == (
        "h1: 23 bytes before dsh's wrapper started (login shell output) were dropped"
    )


def test_F15_an_exec_that_never_ran_the_wrapper_started_nothing(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, "true")
    ended = watched(argv, 1, b"", b"bash: /etc/profile.d/x.sh: Permission denied\n").ended
    assert (ended.outcome, ended.exit_status) == ("failed", None)
    assert ended.message == (
        "nothing started: the login shell exited 1 before the wrapper ran "
        "(it said: bash: /etc/profile.d/x.sh: Permission denied)"
    )


def test_P4_a_followed_action_cancelled_shows_no_wrapper_text_as_output(tmp_path: Path) -> None:
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 60, "echo begun; echo oops >&2; sleep 30")
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for_line(tmp_path / "s1" / "1.1.1@h1.pid")
    follow = spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1")
    follower = subprocess.Popen(follow, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.3)
    subprocess.run(spool.kill_argv(str(tmp_path), "s1", "1.1.1", "h1", 0.5), check=True, timeout=10)
    out, err = follower.communicate(timeout=10)
    followed = watched(follow, follower.returncode, out, err)
    assert (followed.stdout, followed.stderr) == ("begun\n", "oops\n")  # no `dsh-spool: cancelled`
    assert (followed.ended.outcome, followed.ended.message) == ("cancelled", "")
    first.communicate(timeout=10)


def test_F15_spools_written_before_the_framing_are_still_probed_and_followed(tmp_path: Path) -> None:
    """The spool files are a durable format: an action an older wrapper left (these
    bytes, as it wrote them) reads the same through the framed scripts."""
    d = tmp_path / "s1"
    d.mkdir(mode=0o700)
    old = {
        "claim": "9d1e35f8-0000-4000-8000-000000000000 4242 1234567\n",
        "run": "4243 1234570\n",
        "pid": "4244 1234571\n",
        "out": "line one\nline two\n",
        "err": "a warning\n",
        "status": "3\n",
    }
    for ext, text in old.items():
        (d / f"1.1.1@h1.{ext}").write_text(text)
    (d / "2.1.1@h1.claim").write_text("cancelled\n")  # an older KILL's tombstone
    assert probe(tmp_path, "1.1.1") == "status 3"
    assert probe(tmp_path, "2.1.1") == "status cancelled"
    followed = wrapper(spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1"))
    assert (followed.stdout, followed.stderr) == ("line one\nline two\n", "a warning\n")
    assert (followed.ended.outcome, followed.ended.exit_status) == ("failed", 3)

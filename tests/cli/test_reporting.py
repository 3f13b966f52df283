"""What dsh says of hosts' output and of a line's end (fault report #13, P4, and the
lower-priority note on cancelled actions)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import SshSetup, dsh_path, start_dsh
from tests.etcd import Etcd
from tests.helpers.machines import machine


def test_F13_a_long_host_line_is_cut_once_live_and_in_the_summary(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "@h1 head -c 100000 /dev/zero | tr '\\0' a"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    cut = f"{'a' * 4000} … (96000 more bytes)"
    assert lines == [f"h1 | {cut}", "h1 (1)  ok  " + lines[1].split("  ")[-1], f"  {cut}", lines[-1]]
    assert max(len(line) for line in lines) < 4100


def test_F13_a_failed_group_shows_the_end_of_its_stderr(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    script = 'echo one >&2; echo two >&2; echo three >&2; echo "why $0" >&2; exit 2'
    r = run_dsh([*ssh_setup.args(), "-c", f"@h[1-2] sh -c '{script}' $host"])
    assert r.returncode == 1
    summary = r.stdout[r.stdout.index("h1 (1)") :]
    assert summary.startswith("h1 (1)  failed (exit 2)"), r.stdout
    assert "  stderr (last 3 lines):\n    two\n    three\n    why h1\n" in summary
    assert "    why h2\n" in summary  # another tail: a group of its own


def test_low_a_cancelled_action_keeps_its_duration_and_says_cancelled_once(env: dict[str, str]) -> None:
    proc = start_dsh(env, ["--session", "c1", "-c", "echo started; command sleep 31.25"])
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    log = subprocess.run(
        [dsh_path(), "log", "c1"], env=env, capture_output=True, text=True, timeout=30
    ).stdout
    end = re.search(r"end   1\.1\.1 here: (.*), ([0-9.]+)(ms|s)\n", log)
    assert end is not None, log
    assert end.group(1) == "cancelled", log
    assert end.group(3) == "s" and float(end.group(2)) >= 1.4, log
    done = re.search(r"done run 1: not ok in ([0-9.]+)(ms|s)\n", log)
    assert done is not None and done.group(2) == "s" and float(done.group(1)) >= 1.4, log


def test_P4_a_taker_does_not_say_an_owner_whose_lease_ran_out_let_go(  # type: ignore[no-untyped-def]
    env, ssh_setup: SshSetup, tmp_path: Path
) -> None:
    script = tmp_path / "slow.dsh"
    script.write_text("@h1 sleep 3\n@h1 echo second\n")
    with Etcd() as server:
        envs = {name: machine(env, tmp_path, name, server.url, "p4", ttl=2) for name in ("A", "B")}
        owner = subprocess.Popen(
            [dsh_path(), *ssh_setup.args(), "--session", "p4", str(script)],
            env=envs["A"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        taker: subprocess.Popen[str] | None = None
        try:
            deadline = time.monotonic() + 20
            while (
                "p4"
                not in subprocess.run(  # the owner holds the session
                    [dsh_path(), "ls"], env=envs["B"], capture_output=True, text=True, timeout=30
                ).stdout
            ):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            time.sleep(0.5)
            owner.send_signal(signal.SIGSTOP)  # its lease runs out: it does not let go
            taker = subprocess.Popen(
                [dsh_path(), *ssh_setup.args(), "attach", "p4"],
                env=envs["B"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            b_out, b_err = taker.communicate(timeout=60)
        finally:
            for proc in (owner, taker):
                if proc is not None and proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
    assert taker.returncode == 0, b_out + b_err
    assert "the owner of session p4 is gone (it stopped, or its lease ran out): taken over here" in b_err
    assert "let go" not in b_err

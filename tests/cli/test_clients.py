"""Clients of a session's executor process: a second attach, a closed terminal,
detaching, and `dsh kill` seen from a client (exit 4)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pexpect

from tests.conftest import assert_no_process, dsh_path, finish
from tests.helpers.prompt import end
from tests.helpers.wait import wait_for


def spawn(env: dict[str, str], args: list[str], cwd: Path) -> pexpect.spawn:
    env = {**env, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
    return pexpect.spawn(
        dsh_path(), args, env=env, dimensions=(24, 160), encoding="utf-8", timeout=15, cwd=str(cwd)
    )


def owner(run_dsh, name: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    entries = [json.loads(line) for line in run_dsh(["ls", "--all", "--json"]).stdout.splitlines()]
    (entry,) = [e for e in entries if e["name"] == name]
    return entry


def journal(run_dsh, name: str) -> list[dict[str, object]]:  # type: ignore[no-untyped-def]
    return [json.loads(line) for line in run_dsh(["log", "--json", name]).stdout.splitlines()]


def test_a_second_attach_follows_the_live_owner_and_its_lines_run_in_the_session(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    script = tmp_path / "ticks.dsh"
    script.write_text("x = 7\nsh -c 'for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.4; done'\n")
    assert run_dsh(["run", "--detach", "--session", "c1", str(script)]).returncode == 0
    pid = owner(run_dsh, "c1")["owner_pid"]
    child = spawn(env, ["attach", "c1"], tmp_path)
    try:
        child.expect(r"tick [2-4]")  # live progress of the line the owner runs
        assert owner(run_dsh, "c1")["owner_pid"] == pid  # not taken over
        child.sendline("echo typed-here $x")
        child.expect("tick 6")  # the owner finishes its line first,
        child.expect("typed-here 7")  # then runs the one typed here, with its bindings
        child.expect("dsh>")
        end(child)
    finally:
        child.close()
    assert child.exitstatus == 0
    lines = [e["source"] for e in journal(run_dsh, "c1") if e["kind"] == "line"]
    assert lines[-1] == "echo typed-here $x"
    wait_for(lambda: owner(run_dsh, "c1")["state"] == "idle")  # nobody left: the executor went


def test_closing_the_terminal_leaves_the_running_line_running(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    mark = tmp_path / "mark"
    child = spawn(env, ["--session", "c2"], tmp_path)
    try:
        child.expect("dsh>")
        child.sendline(f"sh -c 'echo be''gun; sleep 2; echo finished > {mark}'")
        child.expect("begun")
        client = child.pid
    finally:
        child.close(force=True)  # the terminal goes away (SIGHUP), not Ctrl-C
    assert child.signalstatus == signal.SIGHUP
    time.sleep(0.3)
    assert not Path(f"/proc/{client}").exists()
    assert owner(run_dsh, "c2")["state"] == "running"  # the executor goes on
    wait_for(mark.exists, timeout=10)
    r = run_dsh(["attach", "c2"])
    assert r.returncode == 0, r.stderr
    assert "done run 1: ok" in r.stdout  # attach shows it finished
    assert mark.read_text() == "finished\n"


def test_ctrl_backslash_detaches_and_the_line_goes_on(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mark = tmp_path / "mark"
    child = spawn(env, ["--session", "c3"], tmp_path)
    try:
        child.expect("dsh>")
        child.sendline(f"sh -c 'echo be''gun; sleep 1.5; echo finished > {mark}'")
        child.expect("begun")
        child.sendcontrol("\\")
        child.expect("detached from session c3: its work goes on")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    assert not mark.exists()
    wait_for(mark.exists, timeout=10)
    wait_for(lambda: owner(run_dsh, "c3")["state"] == "idle")


def test_detach_at_the_prompt_and_attach_again_keeps_the_bindings(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    child = spawn(env, ["--session", "c4"], tmp_path)
    try:
        child.expect("dsh>")
        child.sendline("y = 5")
        child.expect("dsh>")
        child.sendline("detach")
        child.expect("detached from session c4")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    r = run_dsh(["attach", "c4"], input="echo y=$y\n")
    assert (r.returncode, r.stdout.splitlines()[-1]) == (0, "y=5"), r.stdout + r.stderr


def test_a_client_of_a_killed_session_exits_4(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "long.dsh"
    script.write_text("command sleep 31.5\n")
    assert run_dsh(["run", "--detach", "--session", "c5", str(script)]).returncode == 0
    client = subprocess.Popen(
        [dsh_path(), "attach", "c5"],
        env=env,
        stdin=subprocess.PIPE,  # left open: the client waits for lines
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        wait_for(lambda: subprocess.run(["pgrep", "-f", "sleep 31.5"], capture_output=True).stdout != b"")
        time.sleep(0.5)  # the client is connected and waits for input
        assert run_dsh(["kill", "c5"]).returncode == 0
        _out, err = client.communicate(timeout=15)
    finally:
        client.kill()
    assert client.returncode == 4, err
    assert "killed" in err
    assert_no_process("sleep 31.5")


def test_a_line_with_an_error_is_refused_by_the_executor_with_a_caret(  # type: ignore[no-untyped-def]
    run_dsh, tmp_path: Path
) -> None:
    assert run_dsh(["--session", "c6", "-c", "true"]).returncode == 0
    r = run_dsh(["attach", "c6"], input="echo ok | within 5\n")
    assert r.returncode == 2
    assert "not a duration" in r.stderr and "^" in r.stderr
    assert any(e["kind"] == "rejected" for e in journal(run_dsh, "c6"))
    r = run_dsh(["attach", "c6"], input="echo fine\n")
    assert r.returncode == 0 and "fine" in r.stdout


def test_a_session_run_elsewhere_in_process_is_not_taken_from_its_live_owner(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [dsh_path(), "--session", "c7", "-c", "echo started; command sleep 32.5"],
        env={**env, "DSH_LEASE_TTL": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "started\n"
        r = run_dsh(["attach", "c7"], env_extra={"DSH_LEASE_TTL": "1"})
        assert r.returncode == 2, r.stderr
        assert "is running on" in r.stderr
        assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        # A cancel's kill is bounded by the kill grace and two settles (17 s).
        assert finish(proc, 30) == 128 + signal.SIGTERM


def test_a_submitted_line_whose_executor_crashes_runs_once_after_a_takeover(  # type: ignore[no-untyped-def]
    run_dsh, tmp_path: Path
) -> None:
    for crash_after in (1, 2):  # after its intent; after its result (the line is over)
        name, mark = f"c8-{crash_after}", tmp_path / f"mark{crash_after}"
        line = f"sh -c 'echo x >> {mark}'"
        extra = {"DSH_FAULT_CRASH_AFTER": str(crash_after), "DSH_LEASE_TTL": "1"}
        r = run_dsh(["--session", name, "attach", name], input="", env_extra={"DSH_LEASE_TTL": "1"})
        assert r.returncode == 2  # no such session yet: attach makes none
        assert run_dsh(["--session", name, "-c", "true"]).returncode == 0
        r = run_dsh(["attach", name], input=line + "\n", env_extra=extra)
        assert r.returncode == 3 and "stopped unexpectedly" in r.stderr, r.stderr
        r = run_dsh(["attach", name], env_extra={"DSH_LEASE_TTL": "1"})
        assert r.returncode == 0, r.stderr
        assert mark.read_text() == "x\n"  # launched once, whether it had started or ended
        sources = [e["source"] for e in journal(run_dsh, name) if e["kind"] == "line"]
        assert sources.count(line) == 1

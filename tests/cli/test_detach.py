"""Sessions that outlive their process: run --detach, kill -9, attach from another machine."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import SshSetup, dsh_path
from tests.helpers.wait import wait_for
from tests.sshd import USER, kill_user_processes, processes_of, user_home


def test_a_detached_session_killed_mid_fan_out_is_taken_over_and_followed(  # type: ignore[no-untyped-def]
    run_dsh, env, ssh_setup: SshSetup, tmp_path: Path
) -> None:
    marks = Path(tempfile.mkdtemp(prefix="dsh-detach-"))
    marks.chmod(0o777)  # the test user writes the markers
    script = tmp_path / "script.dsh"
    script.write_text(
        f"@h[1-3] sh -c 'echo start >> {marks}/M.$0; sleep 4; echo end >> {marks}/M.$0' $host\n"
    )
    env["DSH_LEASE_TTL"] = "1"
    r = run_dsh([*ssh_setup.args(), "run", "--detach", "--session", "s1", str(script)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "s1"
    ls = run_dsh(["ls", "--json"])
    (entry,) = [e for e in map(json.loads, ls.stdout.splitlines()) if e["name"] == "s1"]
    assert entry["state"] == "running" and isinstance(entry["owner_pid"], int)
    wait_for(lambda: all((marks / f"M.h{i}").exists() for i in (1, 2, 3)))
    os.kill(entry["owner_pid"], signal.SIGKILL)  # mid-sleep: the executor dies, the commands do not
    env["DSH_MACHINE_ID"] = "other"
    started = time.monotonic()
    r = run_dsh([*ssh_setup.args(), "attach", "s1"], timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - started < 8
    for i in (1, 2, 3):
        assert (marks / f"M.h{i}").read_text() == "start\nend\n"  # followed, not started again
    ls = run_dsh(["ls", "--json"])
    (entry,) = [e for e in map(json.loads, ls.stdout.splitlines()) if e["name"] == "s1"]
    assert entry["state"] == "idle"


def test_run_without_detach_runs_in_the_foreground(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "s.dsh"
    script.write_text("echo here $1\n")
    r = run_dsh(["run", str(script), "x"])
    assert (r.returncode, r.stdout) == (0, "here x\n")


def test_attach_to_no_such_session_is_a_usage_error(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["attach", "nosuch"])
    assert r.returncode == 2 and "no session named 'nosuch'" in r.stderr


def test_a_compile_error_is_reported_before_detaching(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "bad.dsh"
    script.write_text("echo ok | within\n")
    r = run_dsh(["run", "--detach", str(script)])
    assert r.returncode == 2 and "^" in r.stderr
    assert subprocess.run(["pgrep", "-f", str(script)], capture_output=True).stdout == b""


def owner_pid(run_dsh, name: str) -> int:  # type: ignore[no-untyped-def]
    ls = run_dsh(["ls", "--json"])
    (entry,) = [e for e in map(json.loads, ls.stdout.splitlines()) if e["name"] == name]
    assert entry["state"] == "running", entry
    return int(entry["owner_pid"])


def test_a_durable_timer_fires_at_its_deadline_and_the_rest_of_the_script_runs(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    mark = tmp_path / "M"
    script = tmp_path / "timer.dsh"
    script.write_text(f"echo before >> {mark}\nsleep 3s\necho after >> {mark}\n")
    env["DSH_LEASE_TTL"] = "1"
    started = time.monotonic()
    r = run_dsh(["run", "--detach", "--session", "t1", str(script)])
    assert r.returncode == 0, r.stderr
    wait_for(lambda: mark.exists())
    time.sleep(0.3)  # into the sleep
    os.kill(owner_pid(run_dsh, "t1"), signal.SIGKILL)
    r = run_dsh(["attach", "t1"], timeout=30)
    elapsed = time.monotonic() - started
    assert r.returncode == 0, r.stdout + r.stderr
    assert mark.read_text() == "before\nafter\n"  # each once: nothing before the crash ran again
    assert 3 <= elapsed < 5.5, elapsed  # the deadline was kept: not 3 s more after the takeover


def test_a_local_action_launched_by_another_machine_is_lost(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mark = tmp_path / "M"
    script = tmp_path / "local.dsh"
    script.write_text(f"sh -c 'echo start >> {mark}; sleep 3; echo end >> {mark}'\n")
    env["DSH_LEASE_TTL"] = "1"
    r = run_dsh(["run", "--detach", "--session", "l1", str(script)])
    assert r.returncode == 0, r.stderr
    wait_for(lambda: mark.exists())
    os.kill(owner_pid(run_dsh, "l1"), signal.SIGKILL)
    env["DSH_MACHINE_ID"] = "elsewhere"
    r = run_dsh(["--json", "attach", "l1"], timeout=30)
    assert r.returncode == 1
    (result,) = [e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "result"]
    assert result["outcome"] == "lost" and "out of reach" in result["message"]


def test_a_local_action_of_another_os_user_on_this_machine_is_lost(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """On a machine several people share, a teammate's executor (another OS user,
    the same machine id) cannot reach the local spool of the one it takes over from:
    its local action is lost, never started again."""
    from dsh.session.keys import Keys, user_name, user_tree
    from dsh.store.sqlite import SqliteStore
    from tests.helpers.store import with_store

    mark = tmp_path / "M"
    script = tmp_path / "local.dsh"
    script.write_text(f"sh -c 'echo start >> {mark}; sleep 3; echo end >> {mark}'\n")
    env["DSH_LEASE_TTL"] = "1"
    r = run_dsh(["run", "--detach", "--session", "l2", str(script)])
    assert r.returncode == 0, r.stderr
    wait_for(lambda: mark.exists())
    os.kill(owner_pid(run_dsh, "l2"), signal.SIGKILL)
    key = Keys(user_tree(user_name()), "l2").action("1.1.1", None)

    async def theirs(store: SqliteStore) -> None:  # as if another OS user's executor had launched it
        held = await store.get(key, timeout=10)
        assert held is not None and json.loads(held.value)["os_user"] == user_name()
        await store.put(
            key, held.value.replace(f'"os_user": "{user_name()}"'.encode(), b'"os_user": "mate"'), timeout=10
        )

    with_store(env, theirs)
    r = run_dsh(["--json", "attach", "l2"], timeout=30)
    assert r.returncode == 1
    (result,) = [e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "result"]
    assert result["outcome"] == "lost" and "launched by OS user mate" in result["message"]
    assert mark.read_text().count("start") == 1  # never started again


def test_kill_stops_a_live_detached_session_and_its_remote_commands(  # type: ignore[no-untyped-def]
    run_dsh, env, ssh_setup: SshSetup, tmp_path: Path
) -> None:
    marker = "sleep 35.5"
    script = tmp_path / "long.dsh"
    script.write_text(f"@h[1-3] {marker}\necho never\n")
    env["DSH_LEASE_TTL"] = "1"
    r = run_dsh([*ssh_setup.args(), "run", "--detach", "--session", "k1", str(script)])
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: len(processes_of(USER, marker)) >= 3)
        pid = owner_pid(run_dsh, "k1")
        r = run_dsh([*ssh_setup.args(), "kill", "k1"], timeout=30)
        assert r.returncode == 0, r.stderr
        assert processes_of(USER, marker) == {}
        wait_for(lambda: not Path(f"/proc/{pid}").exists())
        log = Path(env["XDG_STATE_HOME"]) / "dsh" / "log" / "k1.log"
        assert "was killed" in log.read_text()
        ls = run_dsh(["ls", "--json"])
        (entry,) = [e for e in map(json.loads, ls.stdout.splitlines()) if e["name"] == "k1"]
        assert entry["state"] == "idle"
        r = run_dsh([*ssh_setup.args(), "attach", "k1"])  # nothing left to resume: `echo never` stays unrun
        assert r.returncode == 0 and "never" not in r.stdout
    finally:
        kill_user_processes(USER, marker)


def test_kill_ends_what_a_dead_owner_left_running(run_dsh, env, ssh_setup: SshSetup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    marker = "sleep 36.5"
    script = tmp_path / "long.dsh"
    script.write_text(f"@h[1-2] {marker}\n")
    env["DSH_LEASE_TTL"] = "1"
    r = run_dsh([*ssh_setup.args(), "run", "--detach", "--session", "k2", str(script)])
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: len(processes_of(USER, marker)) >= 2)
        os.kill(owner_pid(run_dsh, "k2"), signal.SIGKILL)
        r = run_dsh([*ssh_setup.args(), "kill", "k2"], timeout=30)
        assert r.returncode == 0, r.stderr
        assert "ended 2 actions" in r.stderr
        assert processes_of(USER, marker) == {}
    finally:
        kill_user_processes(USER, marker)


def test_an_action_killed_behind_dshs_back_is_lost_and_lost_targets_it(  # type: ignore[no-untyped-def]
    run_dsh, env, ssh_setup: SshSetup, tmp_path: Path
) -> None:
    marker = "sleep 3.25"
    name = f"lost{time.time_ns()}"  # spools on the test host outlive test runs
    script = tmp_path / "lost.dsh"
    script.write_text(f"@h[1-2] {marker}\n")
    env["DSH_LEASE_TTL"] = "1"
    r = run_dsh([*ssh_setup.args(), "run", "--detach", "--session", name, str(script)])
    assert r.returncode == 0, r.stderr
    try:
        wait_for(lambda: len(processes_of(USER, marker)) >= 2)
        os.kill(owner_pid(run_dsh, name), signal.SIGKILL)
        # Behind dsh's back, h2's runner and command die: no status will ever be written.
        spool = user_home() / ".local/state/dsh/spool"
        (run_file,) = spool.glob(f"{name}.*/1.1.1@h2.run")
        os.kill(int(run_file.read_text().split()[0]), signal.SIGKILL)
        pid_file = run_file.with_name("1.1.1@h2.pid")
        os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        r = run_dsh([*ssh_setup.args(), "--json", "attach", name], input="@{lost} echo again on $host\n")
        events = [json.loads(line) for line in r.stdout.splitlines()]
        results = [e for e in events if e["event"] == "result"]
        assert sorted((e["host"], e["outcome"]) for e in results[:2]) == [("h1", "ok"), ("h2", "lost")]
        assert [(e["host"], e["outcome"]) for e in results[2:]] == [("h2", "ok")]
        assert any(e["event"] == "output" and e["text"] == "again on h2" for e in events)
    finally:
        kill_user_processes(USER, marker)


def test_rm_removes_the_session_and_its_spools(run_dsh, env, ssh_setup: SshSetup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    name = f"rm{time.time_ns()}"
    r = run_dsh([*ssh_setup.args(), "--session", name, "-c", "@h[1-2] echo x\necho here"])
    assert r.returncode == 0, r.stderr
    spool = user_home() / ".local/state/dsh/spool"
    assert len(list(spool.glob(f"{name}.*"))) == 1
    local = list((Path(env["XDG_STATE_HOME"]) / "dsh" / "spool").glob(f"*/{name}.*"))
    assert len(local) == 1
    r = run_dsh([*ssh_setup.args(), "rm", name])
    assert r.returncode == 0, r.stderr
    assert list(spool.glob(f"{name}.*")) == [] and not local[0].exists()
    ls = run_dsh(["ls", "--json"])
    assert name not in ls.stdout
    r = run_dsh(["rm", name])
    assert r.returncode == 2 and "no session named" in r.stderr


def test_rm_refuses_a_running_session(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "slow.dsh"
    script.write_text("command sleep 38.5\n")
    r = run_dsh(["run", "--detach", "--session", "busy", str(script)])
    assert r.returncode == 0, r.stderr
    try:
        r = run_dsh(["rm", "busy"])
        assert r.returncode == 2 and "dsh kill busy" in r.stderr
    finally:
        assert run_dsh(["kill", "busy"], timeout=30).returncode == 0


def test_log_output_fetches_an_actions_whole_output_from_its_spool(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    name = f"out{time.time_ns()}"
    r = run_dsh([*ssh_setup.args(), "--session", name, "-c", "@h1 seq 1 3000; echo warn >&2\nseq 1 2"])
    assert r.returncode == 0, r.stderr
    r = run_dsh([*ssh_setup.args(), "log", name, "--output", "1.1.1", "h1"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(f"{i}\n" for i in range(1, 3001)) and r.stderr == "warn\n"
    r = run_dsh(["log", name, "--output", "2.1.1", "-"])
    assert (r.returncode, r.stdout) == (0, "1\n2\n")


def test_log_follow_ends_when_the_work_is_over(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "short.dsh"
    script.write_text("echo one\ncommand sleep 1\necho two\n")
    r = run_dsh(["run", "--detach", "--session", "f1", str(script)])
    assert r.returncode == 0, r.stderr
    r = run_dsh(["log", "-f", "--json", "f1"], timeout=30)
    assert r.returncode == 0, r.stderr
    kinds = [json.loads(line)["kind"] for line in r.stdout.splitlines()]
    assert kinds.count("line") == 3 and kinds.count("done") == 3


def test_ls_hides_the_sessions_of_single_runs_unless_all(run_dsh) -> None:  # type: ignore[no-untyped-def]
    assert run_dsh(["-c", "echo once"]).returncode == 0
    assert run_dsh(["--session", "kept", "-c", "echo kept"]).returncode == 0
    names = [json.loads(line)["name"] for line in run_dsh(["ls", "--json"]).stdout.splitlines()]
    assert names == ["kept"]
    every = [json.loads(line) for line in run_dsh(["ls", "--all", "--json"]).stdout.splitlines()]
    assert len(every) == 2 and {e["named"] for e in every} == {True, False}
    text = run_dsh(["ls"]).stdout
    assert text.startswith("kept ") and "idle" in text


def test_a_followed_action_keeps_what_was_left_of_its_timeout(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "slow.dsh"
    script.write_text("command sleep 39.25 | within 4s\n")
    env["DSH_LEASE_TTL"] = "1"
    r = run_dsh(["run", "--detach", "--session", "w1", str(script)])
    assert r.returncode == 0, r.stderr
    wait_for(lambda: subprocess.run(["pgrep", "-f", "sleep 39.25"], capture_output=True).stdout != b"")
    time.sleep(1.0)  # a timeout counted again from the takeover would end 2 s late at least
    os.kill(owner_pid(run_dsh, "w1"), signal.SIGKILL)
    r = run_dsh(["--json", "attach", "w1"], timeout=30)
    assert r.returncode == 1
    (result,) = [e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "result"]
    assert result["outcome"] == "timeout", result
    journal = [json.loads(line) for line in run_dsh(["log", "--json", "w1"]).stdout.splitlines()]
    (start,) = [e["t"] for e in journal if e["kind"] == "start"]
    (end,) = [e["t"] for e in journal if e["kind"] == "end"]
    assert 3.9 < end - start < 5.5, end - start  # 4 s from its start, not 4 s more after the takeover
    assert subprocess.run(["pgrep", "-f", "sleep 39.25"], capture_output=True).stdout == b""


def test_a_reader_whose_dsh_died_ends_and_its_command_goes_on(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # the wrapper's reader and runner (tests/remote/test_local.py has the local agent's case)
    env = {**env, "DSH_HOST_AGENT": "off"}
    mark = tmp_path / "M"
    proc = subprocess.Popen(
        [
            dsh_path(),
            "--session",
            "orphan",
            "-c",
            f"sh -c 'echo start >> {mark}; sleep 4; echo end >> {mark}'",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: mark.exists())

    def spool_processes() -> list[int]:  # the reader and the runner (a fork of it) name the session
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                    state = (entry / "stat").read_text().split(")")[-1].split()[0]
                except OSError:
                    continue
                if b"dsh-spool" in cmdline and b"orphan." in cmdline and state != "Z":
                    found.append(int(entry.name))
        return found

    assert len(spool_processes()) == 2
    proc.kill()
    proc.wait()
    wait_for(lambda: len(spool_processes()) == 1, timeout=2)  # the reader saw it was adopted …
    assert "end" not in mark.read_text()  # … while its command still ran
    wait_for(lambda: mark.read_text() == "start\nend\n", timeout=10)  # the command went on
    wait_for(lambda: not spool_processes(), timeout=5)


def test_F14_log_output_refuses_a_host_or_action_that_is_not_a_name(run_dsh) -> None:  # type: ignore[no-untyped-def]
    # Host names reach a spool path and an ssh alias: only the node-set alphabet is taken.
    for action, host in (("1.1.1", "h1/../h2"), ("1.1.1", "a b"), ("../1", "h1"), ("1.1.1", "..")):
        r = run_dsh(["log", "s", "--output", action, host])
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "cannot name a host" in r.stderr or "is not an action" in r.stderr

"""Sessions in the store, as the CLI meets them: bindings that last, the journal,
fencing on the owner's lease, and a journal that survives kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TypeVar

from dsh.session.catalogue import read_journal
from dsh.session.history import in_flight
from dsh.session.keys import Keys, user_name, user_tree
from dsh.store.sqlite import SqliteStore
from tests.conftest import assert_no_process, dsh_path, start_dsh
from tests.helpers.store import with_store

T = TypeVar("T")


def journal(env: dict[str, str], session: str) -> list[dict[str, object]]:
    return with_store(
        env, lambda store: read_journal(store, Keys(user_tree(user_name()), session), timeout=10)
    )


def revoke_owner(env: dict[str, str], session: str) -> None:
    """Break the owner's lease from outside, as an operator or a failure would."""

    async def revoke(store: SqliteStore) -> None:
        owner = await store.get(Keys(user_tree(user_name()), session).owner, timeout=10)
        assert owner is not None and owner.lease
        await store.revoke(owner.lease, timeout=10)

    with_store(env, revoke)


def test_a_session_keeps_bindings_and_result_sets(run_dsh) -> None:  # type: ignore[no-untyped-def]
    assert run_dsh(["--session", "s1", "-c", "x = 5\nhosts = @web[1-3]"]).returncode == 0
    r = run_dsh(["--session", "s1", "-c", "echo $x $hosts"])
    assert (r.returncode, r.stdout) == (0, "5 web[1-3]\n")
    # Another session does not see them.
    assert run_dsh(["--session", "s2", "-c", "echo $x"]).stdout == "\n"


def test_session_from_the_environment(run_dsh, env) -> None:  # type: ignore[no-untyped-def]
    env["DSH_SESSION"] = "envs"
    run_dsh(["-c", "y = from-env"])
    assert run_dsh(["-c", "echo $y"]).stdout == "from-env\n"


def test_log_lists_lines_and_steps(run_dsh) -> None:  # type: ignore[no-untyped-def]
    run_dsh(["--session", "s1", "-c", "x = 5\necho $x | within 5s\nfalse | retry 1 backoff 10ms"])
    r = run_dsh(["log", "s1", "--json"])
    assert r.returncode == 0
    entries = [json.loads(line) for line in r.stdout.splitlines()]
    kinds = [e["kind"] for e in entries]
    assert kinds == [
        "line",
        "bind",
        "done",
        "line",
        "start",
        "end",
        "done",
        "line",
        "start",
        "end",
        "start",
        "end",
        "done",
    ]
    assert [e["source"] for e in entries if e["kind"] == "line"] == [
        "x = 5",
        "echo $x | within 5s",
        "false | retry 1 backoff 10ms",
    ]
    starts = [e for e in entries if e["kind"] == "start"]
    assert [(s["action"], s["command"], s["timeout"]) for s in starts] == [
        ("2.1.1", "echo 5", 5.0),
        ("3.1.1", "false", 600.0),
        ("3.1.2", "false", 600.0),
    ]
    ends = [e for e in entries if e["kind"] == "end"]
    assert [(e["action"], e["outcome"], e["exit"]) for e in ends] == [
        ("2.1.1", "ok", 0),
        ("3.1.1", "failed", 1),
        ("3.1.2", "failed", 1),
    ]
    assert all(e["t"] >= s["t"] for s, e in zip(starts, ends, strict=True))
    text = run_dsh(["log", "s1"]).stdout
    assert "line 2 (run 2): echo $x | within 5s" in text and "end   3.1.2 here: failed (exit 1)" in text
    assert run_dsh(["log", "nope"]).returncode == 2


def test_a_session_runs_in_one_process_at_a_time(env) -> None:  # type: ignore[no-untyped-def]
    marker = f"34.{os.getpid()}"
    first = start_dsh(env, ["--session", "busy", "-c", f"echo started; command sleep {marker}"])
    try:
        second = subprocess.run(
            [dsh_path(), "--session", "busy", "-c", "echo never"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2 and "is running on" in second.stderr and second.stdout == ""
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=20)
    assert_no_process(f"sleep {marker}")


def test_lost_lease_stops_the_executor_before_any_new_effect(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env["DSH_LEASE_TTL"] = "1"
    later = tmp_path / "later"
    proc = start_dsh(env, ["--session", "fenced", "-c", f"echo started; sleep 0.8\ntouch {later}"])
    try:
        revoke_owner(env, "fenced")
        _out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    assert "lease" in err
    assert not later.exists(), "an effect started after the lease was lost"
    kinds = [e["kind"] for e in journal(env, "fenced")]
    assert kinds == ["line", "start"]  # nothing written after the fence broke


def test_kill_9_between_intent_and_result_leaves_the_action_named(env) -> None:  # type: ignore[no-untyped-def]
    marker = f"35.{os.getpid()}"
    proc = subprocess.Popen(
        [dsh_path(), "--session", "crash", "-c", f"echo before\ncommand sleep {marker}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(e["kind"] == "start" and "sleep" in str(e["command"]) for e in journal(env, "crash")):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        subprocess.run(["pkill", "-f", f"sleep {marker}"], check=False)
    entries = journal(env, "crash")
    assert in_flight(entries) == [("2.1.1", None)]
    (start,) = [e for e in entries if e["kind"] == "start" and e["action"] == "2.1.1"]
    assert start["command"] == f"command sleep {marker}"


def test_an_interrupted_action_is_journaled_as_cancelled(env) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import stop_sleeper

    env["DSH_SESSION"] = "cancelled"
    status, _err = stop_sleeper(env, f"36.{os.getpid()}", [signal.SIGINT])
    assert status == 130
    ends = [e for e in journal(env, "cancelled") if e["kind"] == "end"]
    assert [(e["action"], e["outcome"]) for e in ends] == [("1.1.1", "cancelled")]


def test_each_run_stores_its_compiled_statement_and_arguments(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dsh import plan as p

    script = tmp_path / "s.dsh"
    script.write_text("echo $1 | within 7s\n")
    assert run_dsh(["--session", "planned", str(script), "arg one"]).returncode == 0

    kv = with_store(env, lambda store: store.get(Keys(user_tree(user_name()), "planned").run(1), timeout=10))
    assert kv is not None
    record = json.loads(kv.value)
    assert record["args"] == ["arg one"] and record["source"] == "echo $1 | within 7s"
    stmt = p.load_statement(record["plan"])  # type: ignore[arg-type]
    assert isinstance(stmt, p.Run)
    (cmd,) = stmt.pipeline.stages
    assert isinstance(cmd, p.Command) and cmd.timeout == 7


def test_piped_lines_keep_the_session_across_a_pause(env) -> None:  # type: ignore[no-untyped-def]
    env["DSH_LEASE_TTL"] = "0.6"
    feeder = "echo 'echo one'; sleep 1.5; echo 'echo two'"
    r = subprocess.run(
        f"({feeder}) | {dsh_path()} --session idle",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (r.returncode, r.stdout) == (0, "one\ntwo\n"), r.stderr
    ends = [(e["action"], e["outcome"]) for e in journal(env, "idle") if e["kind"] == "end"]
    assert ends == [("1.1.1", "ok"), ("2.1.1", "ok")]


def test_rebinding_a_name_in_one_run(run_dsh) -> None:  # type: ignore[no-untyped-def]
    assert run_dsh(["--session", "re", "-c", "x = a\nx = b\nx = c"]).returncode == 0
    assert run_dsh(["--session", "re", "-c", "echo $x"]).stdout == "c\n"


def test_P1_a_lost_lease_leaves_the_running_command_to_the_next_owner(env, run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Fault report P1: an owner that lost its lease killed the command it ran, though
    # the next owner was about to follow it. Now it acts no more, as if it had died.
    env["DSH_LEASE_TTL"] = "0.6"
    mark = tmp_path / "M"
    text = f"echo started; command sh -c 'sleep 1.5; echo end >> {mark}'\necho second >> {mark}"
    proc = start_dsh(env, ["--session", "left", "-c", text])
    try:
        revoke_owner(env, "left")
        _out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 3 and "lease" in err, err
    assert "internal error" not in err and "Traceback" not in err
    assert not mark.exists()  # the command still runs: it was not killed
    r = run_dsh(["attach", "left"], timeout=30)  # the next owner follows it to its end
    assert r.returncode == 0, r.stderr
    assert mark.read_text() == "end\nsecond\n"  # each once
    assert_no_process("sleep 1.5")


def test_a_failed_claim_lets_the_session_go(run_dsh, env) -> None:  # type: ignore[no-untyped-def]
    with_store(
        env,
        lambda store: store.put(Keys(user_tree(user_name()), "bad").bindings + b"x", b"not json", timeout=10),
    )
    r = run_dsh(["--session", "bad", "-c", "echo hi"])
    assert r.returncode == 3 and "corrupt" in r.stderr

    assert (
        with_store(env, lambda store: store.get(Keys(user_tree(user_name()), "bad").owner, timeout=10))
        is None
    )


def test_local_clean_up_removes_old_spools_and_executor_logs(tmp_path: Path) -> None:
    from dsh.config import Config
    from dsh.driver import Driver
    from dsh.render import TextRenderer

    spool_root, logs = tmp_path / "spool" / "m1", tmp_path / "log"
    old_spool, new_spool = spool_root / "old.1", spool_root / "new.2"
    old_log, new_log = logs / "old.log", logs / "new.log"
    for d in (old_spool, new_spool):
        d.mkdir(parents=True)
        (d / "1.1.1@local.status").write_text("0\n")
    logs.mkdir()
    old_log.write_text("x")
    new_log.write_text("y")
    month_ago = time.time() - 30 * 86400
    for path in (old_spool / "1.1.1@local.status", old_spool, old_log):
        os.utime(path, (month_ago, month_ago))
    renderer = TextRenderer()
    driver = Driver(Config(), renderer, renderer.message, spool_root, log_dir=logs)
    asyncio.run(driver.clean_local())
    assert (old_spool.exists(), new_spool.exists()) == (False, True)
    assert (old_log.exists(), new_log.exists()) == (False, True)


def test_F6_a_binding_is_stored_whole_and_a_resume_sees_the_same_value(run_dsh) -> None:  # type: ignore[no-untyped-def]
    # Fault report #6: values were cut to 64 KiB when stored, so the next run saw less.
    big = "x = head -c 100000 /dev/zero | tr '\\0' a\nprintf %s \"$x\" | wc -c"
    r = run_dsh(["--session", "big", "-c", big])
    assert (r.returncode, r.stdout.split()) == (0, ["100000"]), r.stderr
    r = run_dsh(["--session", "big", "-c", 'printf %s "$x" | wc -c'])
    assert (r.returncode, r.stdout.split()) == (0, ["100000"]), r.stderr


def test_F6_a_binding_over_the_cap_is_refused_and_binds_nothing(run_dsh, env) -> None:  # type: ignore[no-untyped-def]
    config = Path(env["XDG_CONFIG_HOME"]) / "dsh" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[limits]\nmax_binding = 50000\n")
    assert run_dsh(["--session", "cap", "-c", "x = small"]).returncode == 0
    r = run_dsh(["--session", "cap", "-c", "x = head -c 60000 /dev/zero | tr '\\0' a\necho after"])
    assert r.returncode == 1, r.stderr
    assert "x: 60000 bytes, over the cap of 50000 bytes" in r.stderr and "nothing is bound" in r.stderr
    assert "after" not in r.stdout  # the statement failed: the script stopped there
    r = run_dsh(["--session", "cap", "-c", 'echo "$x"'])
    assert (r.returncode, r.stdout) == (0, "small\n")  # it kept what it had
    config.write_text("[limits]\nmax_binding = 2000000\n")
    r = run_dsh(["--session", "cap", "-c", "echo hi"])
    assert r.returncode == 2 and "max_binding is at most 1048576 bytes" in r.stderr


def test_F9_a_malformed_inbox_record_is_rejected_and_the_session_goes_on(run_dsh, env) -> None:  # type: ignore[no-untyped-def]
    # Fault report #9: `{` in ctl/in killed every executor of the session, for good.
    assert run_dsh(["--session", "inbox", "-c", "echo first"]).returncode == 0
    keys = Keys(user_tree(user_name()), "inbox")

    async def damage(store: SqliteStore) -> None:
        await store.put(keys.inbox_of() + b"bad", b"{", timeout=10)
        await store.put(keys.handover_of(), b"[not a record", timeout=10)  # nor a handover request
        await store.put(keys.cancels_of() + b"\xff\xfe", b"\xff", timeout=10)  # nor a cancel

    with_store(env, damage)
    r = run_dsh(["attach", "inbox"], input="echo after\n", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    said = r.stdout + r.stderr
    assert (
        "after" in r.stdout
        and f"a submission of {user_name()}'s (revision" in said
        and "cannot be read" in said
    )
    rejected = [e for e in journal(env, "inbox") if e["kind"] == "rejected"]
    assert len(rejected) == 1 and "not JSON" in str(rejected[0]["error"])


def test_F5_concurrent_attaches_after_a_crash_all_show_the_resumed_work(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Fault report #5: of 2-3 attaches at once, each client said the session was busy
    # (exit 2), and the executor that won ran the rest unseen.
    env["DSH_LEASE_TTL"] = "1"
    script = tmp_path / "slow.dsh"
    script.write_text("echo started\ncommand sleep 2\necho two\n")
    proc = start_dsh(env, ["--session", "race", str(script)])
    time.sleep(0.3)
    proc.kill()
    proc.communicate(timeout=10)
    time.sleep(1.2)  # the lease runs out
    clients = [
        subprocess.Popen(
            [dsh_path(), "attach", "race"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    ended = [c.communicate(timeout=60) for c in clients]
    for client, (out, err) in zip(clients, ended, strict=True):
        assert client.returncode == 0, out + err
        assert "two" in out, out + err


def test_low_rm_of_a_running_session_does_not_say_choose_another_session(env, run_dsh) -> None:  # type: ignore[no-untyped-def]
    env["DSH_LEASE_TTL"] = "1"
    # Lower-priority observation: "choose another --session" was said for dsh rm and attach too.
    proc = start_dsh(env, ["--session", "busy", "-c", "echo started; command sleep 30"])
    try:
        r = run_dsh(["rm", "busy"])
        second = run_dsh(["--session", "busy", "-c", "echo again"])
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    assert r.returncode == 2 and "is running on" in r.stderr, r.stderr
    assert "choose another --session" not in r.stderr and "dsh kill busy" in r.stderr
    assert second.returncode == 2 and "choose another --session" in second.stderr


def test_F11_deleting_the_store_mid_run_stops_dsh_without_a_traceback(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Fault report #11: "Exception in thread dsh-lease: Traceback … CancelledError". The
    # lease keeper opens its own handle at its first renewal (TTL/3 = 1.7 s): after the
    # store is gone, so it finds no lease.
    script = tmp_path / "del.dsh"
    script.write_text("echo started\nsleep 2s\necho second\nsleep 2s\necho third\n")
    proc = start_dsh(env, ["--session", "d2", str(script)])
    time.sleep(0.5)
    for path in (Path(env["XDG_STATE_HOME"]) / "dsh").glob("store.db*"):
        path.unlink()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert "third" not in out

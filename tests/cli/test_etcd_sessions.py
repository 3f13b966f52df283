"""Sessions in etcd: takeover from another machine, races, etcd faults mid-session.

"Machines" are dsh processes with their own DSH_MACHINE_ID and their own
state directory (XDG_STATE_HOME), sharing one real etcd.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsh.store import open_store
from tests.conftest import SshSetup, dsh_path
from tests.etcd import Etcd
from tests.helpers.machines import machine
from tests.sshd import USER as SSH_USER
from tests.sshd import USER2 as SSH_USER2


@pytest.fixture(scope="module")
def etcd() -> Iterator[Etcd]:
    server = Etcd().start()
    yield server
    server.stop()


def dsh(args: list[str], env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dsh_path(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def sessions(env: dict[str, str]) -> dict[str, dict]:  # type: ignore[type-arg]
    r = dsh(["ls", "--json"], env)
    assert r.returncode == 0, r.stderr
    return {e["name"]: e for e in map(json.loads, r.stdout.splitlines())}


def wait_for(predicate, timeout: float = 15.0, step: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(step)


def marks_dir() -> Path:
    marks = Path(tempfile.mkdtemp(prefix="dsh-etcd-marks-"))
    marks.chmod(0o777)  # the test user writes the markers
    return marks


def owner_puts(url: str, prefix: str, name: str, since: int) -> list[str]:
    """The machines that put the session's owner key after revision `since`."""
    from dsh.session.keys import Keys, user_name, user_tree

    async def read() -> list[str]:
        store = open_store(url, {"DSH_ETCD_PREFIX": prefix})
        try:
            key = Keys(user_tree(user_name()), name).owner
            watch = await store.watch(key, start_revision=since, timeout=10)
            found: list[str] = []
            try:
                iterator = watch.__aiter__()
                while True:
                    try:
                        batch = await asyncio.wait_for(iterator.__anext__(), 0.5)
                    except TimeoutError:
                        return found
                    found += [json.loads(e.kv.value)["machine"] for e in batch if e.kind == "put"]
            finally:
                await watch.close()
        finally:
            await store.close()

    return asyncio.run(read())


def owner_machine(url: str, prefix: str, name: str) -> str | None:
    from dsh.session.keys import Keys, user_name, user_tree

    async def read() -> str | None:
        store = open_store(url, {"DSH_ETCD_PREFIX": prefix})
        try:
            held = await store.get(Keys(user_tree(user_name()), name).owner, timeout=10)
            return json.loads(held.value)["machine"] if held is not None else None
        finally:
            await store.close()

    return asyncio.run(read())


def revision_now(url: str, prefix: str) -> int:
    async def read() -> int:
        store = open_store(url, {"DSH_ETCD_PREFIX": prefix})
        try:
            return (await store.range(b"/", timeout=10))[1]
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_session_killed_on_one_machine_is_taken_over_from_another(  # type: ignore[no-untyped-def]
    env, ssh_setup: SshSetup, etcd: Etcd, tmp_path: Path
) -> None:
    """Story 4: kill -9 of the executor mid fan-out on A; B attaches and follows."""
    marks = marks_dir()
    script = tmp_path / "script.dsh"
    script.write_text(
        f"@h[1-3] sh -c 'echo start >> {marks}/M.$0; sleep 4; echo end >> {marks}/M.$0' $host\n"
        f"@h[1-3] sh -c 'echo second >> {marks}/M.$0' $host\n"
    )
    a = machine(env, tmp_path, "A", etcd.url, "story4")
    b = machine(env, tmp_path, "B", etcd.url, "story4")
    a["DSH_LEASE_TTL"] = b["DSH_LEASE_TTL"] = "2"
    r = dsh([*ssh_setup.args(), "run", "--detach", "--session", "s4", str(script)], a)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: all((marks / f"M.h{i}").exists() for i in (1, 2, 3)))
    entry = sessions(b)["s4"]  # B sees A's session through etcd
    assert (entry["state"], entry["owner_machine"]) == ("running", "A")
    since = revision_now(etcd.url, "story4")
    os.kill(entry["owner_pid"], signal.SIGKILL)
    killed = time.monotonic()
    attach = subprocess.Popen(
        [dsh_path(), *ssh_setup.args(), "attach", "s4"],
        env=b,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: owner_machine(etcd.url, "story4", "s4") == "B", step=0.01)
        resumed = time.monotonic() - killed
        out, err = attach.communicate(timeout=30)
    finally:
        attach.kill()
    assert attach.returncode == 0, out + err
    assert resumed < 2 + 1, resumed  # lease TTL + 1 s
    for i in (1, 2, 3):  # one launch per action: followed, not started again
        assert (marks / f"M.h{i}").read_text() == "start\nend\nsecond\n"
    assert owner_puts(etcd.url, "story4", "s4", since) == ["B"]
    assert not (tmp_path / "state-B" / "dsh" / "store.db").exists()  # no local store was used


def test_two_machines_racing_to_take_over_one_session_exactly_one_wins(  # type: ignore[no-untyped-def]
    env, etcd: Etcd, tmp_path: Path
) -> None:
    marks = marks_dir()
    script = tmp_path / "race.dsh"
    script.write_text(f"echo start >> {marks}/M\nsleep 6s\necho end >> {marks}/M\n")
    a = machine(env, tmp_path, "A", etcd.url, "race")
    others = [machine(env, tmp_path, name, etcd.url, "race") for name in ("B", "C")]
    for e in (a, *others):
        e["DSH_LEASE_TTL"] = "1"
    r = dsh(["run", "--detach", "--session", "r1", str(script)], a)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: (marks / "M").exists())
    time.sleep(0.3)
    since = revision_now(etcd.url, "race")
    os.kill(sessions(a)["r1"]["owner_pid"], signal.SIGKILL)
    racers = [
        subprocess.Popen(
            [dsh_path(), "attach", "r1"],
            env=e,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for e in others
    ]
    try:
        results = [(p.wait(timeout=40), p.stderr.read() if p.stderr else "") for p in racers]
    finally:
        for p in racers:
            p.kill()
    winners = owner_puts(etcd.url, "race", "r1", since)
    assert len(winners) == 1, (winners, results)
    assert [code for code, _ in results] == [0, 0], results
    # The loser follows the winner through the store, to the end of the work.
    loser = next(
        err for (_, err), e in zip(results, others, strict=True) if e["DSH_MACHINE_ID"] != winners[0]
    )
    assert f"runs on {winners[0]}" in loser, results
    assert (marks / "M").read_text() == "start\nend\n"


STEPS = 8


def stepping_script(tmp_path: Path, mark: Path) -> Path:
    script = tmp_path / "steps.dsh"
    script.write_text("".join(f"sh -c 'echo {i} >> {mark}; sleep 0.4'\n" for i in range(STEPS)))
    return script


def run_through_a_fault(
    env: dict[str, str], script: Path, mark: Path, fault
) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    proc = subprocess.Popen(
        [dsh_path(), "--session", "steps", str(script)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: mark.exists() and len(mark.read_text().split()) >= 2)
        fault()
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_restarted_etcd_pauses_the_session_and_it_completes(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mark = tmp_path / "M"
    with Etcd() as server:
        e = machine(env, tmp_path, "A", server.url, "restart")

        def restart() -> None:
            server.restart(down=1.5)

        r = run_through_a_fault(e, stepping_script(tmp_path, mark), mark, restart)
        assert r.returncode == 0, r.stderr
        assert mark.read_text().split() == [str(i) for i in range(STEPS)]  # each step once
        assert "waiting for the store" in r.stderr and "answers again" in r.stderr
        log = dsh(["log", "--json", "steps"], e)
        ends = [j for j in map(json.loads, log.stdout.splitlines()) if j.get("kind") == "done"]
        assert len(ends) == STEPS and all(j["ok"] for j in ends)  # no checkpoint lost


def test_a_three_member_cluster_loses_its_leader_and_the_session_completes(  # type: ignore[no-untyped-def]
    env, tmp_path: Path
) -> None:
    mark = tmp_path / "M"
    with Etcd(3) as cluster:
        e = machine(env, tmp_path, "A", cluster.url, "leader")

        def kill_leader() -> None:
            cluster.leader().kill()

        r = run_through_a_fault(e, stepping_script(tmp_path, mark), mark, kill_leader)
        assert r.returncode == 0, r.stderr
        assert mark.read_text().split() == [str(i) for i in range(STEPS)]
        log = dsh(["log", "--json", "steps"], e)
        ends = [j for j in map(json.loads, log.stdout.splitlines()) if j.get("kind") == "done"]
        assert len(ends) == STEPS and all(j["ok"] for j in ends)


def action_machines(url: str, prefix: str, name: str) -> dict[str, set[str]]:
    """Which machines launched the actions of each run: {run: {machine…}}."""
    from dsh.session.keys import Keys, user_name, user_tree

    async def read() -> dict[str, set[str]]:
        store = open_store(url, {"DSH_ETCD_PREFIX": prefix})
        try:
            keys = Keys(user_tree(user_name()), name)
            kvs, _ = await store.range(keys.root + b"act/", timeout=10)
        finally:
            await store.close()
        found: dict[str, set[str]] = {}
        for kv in kvs:
            record = json.loads(kv.value)
            run = str(record["action"]).split(".")[0]
            found.setdefault(run, set()).add(str(record.get("machine", "?")))
        return found

    return asyncio.run(read())


def test_attach_take_asks_a_live_owner_to_hand_over(  # type: ignore[no-untyped-def]
    env, ssh_setup: SshSetup, etcd: Etcd, tmp_path: Path
) -> None:
    marks = marks_dir()
    script = tmp_path / "hand.dsh"
    script.write_text(
        f"@h[1-3] sh -c 'echo start >> {marks}/M.$0; sleep 2; echo end >> {marks}/M.$0' $host\n"
        f"@h[1-3] sh -c 'echo second >> {marks}/M.$0' $host\n"
    )
    a = machine(env, tmp_path, "A", etcd.url, "handover")
    b = machine(env, tmp_path, "B", etcd.url, "handover")
    r = dsh([*ssh_setup.args(), "run", "--detach", "--session", "h1", str(script)], a)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: all((marks / f"M.h{i}").exists() for i in (1, 2, 3)))
    owner = sessions(b)["h1"]
    assert owner["owner_machine"] == "A"
    since = revision_now(etcd.url, "handover")
    started = time.monotonic()
    r = dsh([*ssh_setup.args(), "attach", "--take", "h1"], b, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "asked A to hand session h1 over" in r.stderr
    # Not a lease running out (its TTL is 5 s): A let go once its actions ended.
    assert time.monotonic() - started < 5, time.monotonic() - started
    for i in (1, 2, 3):  # the step in hand ended on A, the next ran on B: nothing lost or twice
        assert (marks / f"M.h{i}").read_text() == "start\nend\nsecond\n"
    assert owner_puts(etcd.url, "handover", "h1", since) == ["B"]
    assert action_machines(etcd.url, "handover", "h1") == {"1": {"A"}, "2": {"B"}}
    wait_for(lambda: not os.path.exists(f"/proc/{owner['owner_pid']}") or _zombie(owner["owner_pid"]))
    log = (tmp_path / "state-A" / "dsh" / "log" / "h1.log").read_text()
    assert "handed over to B" in log


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_attach_from_another_machine_follows_the_live_owner_and_lines_run_there(  # type: ignore[no-untyped-def]
    env, etcd: Etcd, tmp_path: Path
) -> None:
    script = tmp_path / "busy.dsh"
    script.write_text("sleep 2s\n")
    a = machine(env, tmp_path, "A", etcd.url, "follow")
    b = machine(env, tmp_path, "B", etcd.url, "follow")
    r = dsh(["run", "--detach", "--session", "f1", str(script)], a)
    assert r.returncode == 0, r.stderr
    pid = sessions(b)["f1"]["owner_pid"]
    since = revision_now(etcd.url, "follow")
    attach = subprocess.run(
        [dsh_path(), "attach", "f1"],
        env=b,
        input="echo from-$DSH_MACHINE_ID-$((6*7))\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert attach.returncode == 0, attach.stdout + attach.stderr
    assert "f1 runs on A" in attach.stderr and "following it" in attach.stderr
    # The line ran on A (its environment), and B showed its journal entries and output.
    assert "start" in attach.stdout and "| from-A-42" in attach.stdout, attach.stdout
    assert owner_puts(etcd.url, "follow", "f1", since) == []  # nobody took it over
    assert sessions(b)["f1"]["owner_pid"] in (pid, None)


def test_an_executor_that_cannot_renew_its_lease_stops_acting(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    mark = tmp_path / "M"
    with Etcd() as server:
        e = machine(env, tmp_path, "A", server.url, "lost")
        e["DSH_LEASE_TTL"] = "2"

        def outage() -> None:  # longer than the lease: this executor must assume it lost it
            server.members[0].kill()
            time.sleep(4)
            server.members[0].start(new=False)

        r = run_through_a_fault(e, stepping_script(tmp_path, mark), mark, outage)
        assert r.returncode == 3, r.stderr
        assert "lease" in r.stderr and "lost" in r.stderr
        done = mark.read_text().split()
        assert done == [str(i) for i in range(len(done))] and len(done) < STEPS  # stopped, nothing twice


def test_I9_a_takeover_that_reaches_an_alias_as_another_user_runs_nothing_twice(  # type: ignore[no-untyped-def]
    env, ssh_setup: SshSetup, etcd: Etcd, tmp_path: Path
) -> None:
    """Issue item 9: B's ssh config logs in to h1 as another user. Without the check,
    B's probe looked in that user's home, found no claim, and launched again."""
    marks = marks_dir()
    script = tmp_path / "moved.dsh"
    script.write_text(f"@h1 sh -c 'echo start >> {marks}/M; sleep 3; echo end >> {marks}/M'\n")
    a = machine(env, tmp_path, "A", etcd.url, "moved")
    b = machine(env, tmp_path, "B", etcd.url, "moved")
    a["DSH_LEASE_TTL"] = b["DSH_LEASE_TTL"] = "1"
    other = tmp_path / "ssh_config_b"
    other.write_text(ssh_setup.config.read_text().replace(f"User {SSH_USER}", f"User {SSH_USER2}"))
    r = dsh([*ssh_setup.args(), "run", "--detach", "--session", "mv", str(script)], a)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: (marks / "M").exists())
    os.kill(sessions(b)["mv"]["owner_pid"], signal.SIGKILL)
    attach = dsh(["--ssh-config", str(other), "attach", "mv"], b, timeout=40)
    assert attach.returncode == 1, attach.stdout + attach.stderr
    said = attach.stdout + attach.stderr
    assert f"h1 is {SSH_USER}@127.0.0.1:{ssh_setup.server.port} in this session" in said, said
    assert f"here it is {SSH_USER2}@" in said and "lost" in said, said
    wait_for(lambda: (marks / "M").read_text() == "start\nend\n", timeout=10)  # A's launch ends alone
    time.sleep(0.5)
    assert (marks / "M").read_text() == "start\nend\n"  # and nobody started it again

"""Two people with two OS logins on one machine, on one etcd with auth on (issue 21).

alice is OS user dshtest and etcd user alice; bob is OS user dshtest2 and etcd
user bob. Each runs dsh as themselves (tests/helpers/osusers.py), with their own
state and config directories, so what one OS user's files and sockets keep from
the other is real here, not a rewritten record.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.etcd import ROOT_PASSWORD, Etcd
from tests.helpers import osusers, teams
from tests.helpers.osusers import OsUser, OtherPython
from tests.sshd import USER, USER2, Sshd, kill_user_processes, processes_of

server = teams.server  # one etcd with auth on for the module (a fixture)
other_python = osusers.other_python
PASSWORDS = {"alice": "alice-os-pw-1", "bob": "bob-os-pw-2"}


@pytest.fixture(scope="module")
def people(server: Etcd, other_python: OtherPython) -> Iterator[dict[str, OsUser]]:
    """root (the admin, this test's OS user), alice (dshtest) and bob (dshtest2),
    both in team ops."""
    common = {"DSH_LEASE_TTL": "2"}
    admin = OsUser("root", other_python, {**common, "DSH_STORE": f"etcd://root@{server.endpoints}"})
    admin.env["DSH_ETCD_PASSWORD"] = ROOT_PASSWORD
    alice = OsUser(USER, other_python, {**common, "DSH_STORE": f"etcd://alice@{server.endpoints}"})
    bob = OsUser(USER2, other_python, {**common, "DSH_STORE": f"etcd://bob@{server.endpoints}"})
    try:
        assert admin.run(["admin", "init", "--yes"]).returncode == 0
        for name, password in PASSWORDS.items():
            made = admin.run(["admin", "user", "add", name], env={"DSH_ADMIN_PASSWORD": password})
            assert made.returncode == 0, made.stderr
        made = admin.run(["admin", "team", "add", "ops", "--member", "alice", "bob"])
        assert made.returncode == 0, made.stderr
        for who, name in ((alice, "alice"), (bob, "bob")):  # a password file of their own, 0600
            secret = who.file("etcd-password", PASSWORDS[name] + "\n", 0o600)
            who.env["DSH_ETCD_PASSWORD_FILE"] = str(secret)
        yield {"root": admin, "alice": alice, "bob": bob}
    finally:
        for who in (admin, alice, bob):
            who.cleanup()


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def session_of(who: OsUser, name: str) -> dict[str, object]:
    listed = who.run(["--team", "ops", "ls", "--json"])
    (entry,) = [e for e in map(json.loads, listed.stdout.splitlines()) if e["name"] == name]
    return dict(entry)


def events_of(done: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_bob_takes_over_alices_team_session_and_the_journal_says_who_ran_what(
    people: dict[str, OsUser],
) -> None:
    """bob (another OS user) cannot reach alice's executor's socket: he asks through
    the store; her running action ends first, then the rest runs on his executor."""
    alice, bob = people["alice"], people["bob"]
    mark = alice.dir / "handed"
    alice.file("dep.dsh", f"echo by-alice\nsh -c 'sleep 2; echo done >> {mark}'\necho alice-after\n")
    started = alice.run(["--team", "ops", "run", "--detach", "--session", "dep", "dep.dsh"])
    assert started.returncode == 0, started.stderr
    assert session_of(bob, "dep")["state"] == "running"

    taken = bob.run(["--team", "ops", "--json", "attach", "--take", "dep"], input="echo by-bob\n", timeout=60)
    assert taken.returncode == 0, taken.stdout + taken.stderr
    said = [str(e["message"]) for e in events_of(taken) if e["event"] == "error"]
    assert "took session dep over from alice@" in " ".join(said), said
    assert mark.read_text() == "done\n"  # her action ended on her executor, once

    log = alice.run(["--team", "ops", "log", "dep"])
    assert log.returncode == 0, log.stderr
    lines = log.stdout.splitlines()
    assert any("echo by-alice  (by alice@" in line for line in lines), log.stdout
    assert any("echo alice-after  (by bob@" in line for line in lines), log.stdout  # run with his access
    assert any("echo by-bob  (by bob@" in line for line in lines), log.stdout
    assert any("takeover from alice@" in line and " by bob@" in line for line in lines), log.stdout


def test_a_local_action_of_alices_is_lost_when_bob_takes_over_from_her_dead_executor(
    people: dict[str, OsUser],
) -> None:
    """Her local spool is hers (0700): bob's executor neither asks it nor starts the
    action again; it ends lost with a sentence, and the session goes on with him."""
    alice, bob = people["alice"], people["bob"]
    mark = alice.dir / "mark"
    alice.file("crash.dsh", f"sh -c 'echo start >> {mark}; sleep 20; echo end >> {mark}'\necho never-here\n")
    started = alice.run(["--team", "ops", "run", "--detach", "--session", "crash", "crash.dsh"])
    assert started.returncode == 0, started.stderr
    wait_for(mark.exists)
    pid = int(str(session_of(alice, "crash")["owner_pid"]))
    os.kill(pid, signal.SIGKILL)  # her executor dies; its action goes on in her spool
    try:
        taken = bob.run(
            ["--team", "ops", "--json", "attach", "--take", "crash"], input="echo by-bob\n", timeout=60
        )
        results = [e for e in events_of(taken) if e["event"] == "result"]
        lost = [e for e in results if e["outcome"] == "lost"]
        assert lost, taken.stdout + taken.stderr
        assert f"launched by OS user {USER}" in str(lost[0]["message"]), lost
        assert "by-bob" in taken.stdout and "never-here" not in taken.stdout, taken.stdout
        assert mark.read_text() == "start\n"  # never started again
    finally:
        subprocess.run(["pkill", "-u", USER, "-f", f"echo start >> {mark}"], check=False)


def test_each_os_users_files_are_their_own(people: dict[str, OsUser]) -> None:
    alice, bob = people["alice"], people["bob"]
    alice.file("mine.dsh", "v = echo private-value\nsleep 5s\n")
    ran = alice.run(["run", "--detach", "--session", "mine", "mine.dsh"])
    assert ran.returncode == 0, ran.stderr
    for path in (alice.dir / "state" / "dsh", alice.dir / "etcd-password"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0 and path.stat().st_uid == alice.uid, (path, oct(mode))
    stolen = bob.run(["ls"], env={"DSH_ETCD_PASSWORD_FILE": str(alice.dir / "etcd-password")})
    assert stolen.returncode == 2 and "Permission denied" in stolen.stderr, stolen.stderr
    theirs = bob.run(["ls", "--json"])
    assert theirs.returncode == 0 and "mine" not in theirs.stdout, theirs.stdout
    attach = bob.run(["attach", "mine"])
    assert attach.returncode != 0 and "mine" in attach.stderr, attach.stderr


def ssh_config(who: OsUser, server: Sshd, login: str) -> Path:
    """`who`'s ssh config: h1 is the test sshd, logged into as `login`, with a key
    file of their own (the one key the sshd takes, for either login)."""
    key = who.file("id_ed25519", server.client_key.read_text(), 0o600)
    known = who.file("known_hosts", server.known_hosts_line())
    block = server.host_block(["h1"], known).replace(f"User {USER}\n", f"User {login}\n")
    return who.file("ssh_config", block.replace(f"IdentityFile {server.client_key}", f"IdentityFile {key}"))


def test_bobs_ssh_access_runs_the_rest_and_a_host_he_reaches_as_another_login_is_lost(
    people: dict[str, OsUser],
) -> None:
    """After a takeover the rest runs with the new owner's SSH access (dsh.1): bob's
    config logs into h1 as dshtest2 where alice's was dshtest, so her action in
    flight there is neither probed nor started again: it ends lost, with a sentence."""
    alice, bob = people["alice"], people["bob"]
    server = Sshd().start()
    marker = f"sleep 21.{os.getpid() % 1000}"
    try:
        theirs = {who.name: ssh_config(who, server, login) for who, login in ((alice, USER), (bob, USER2))}
        alice.file("remote.dsh", f"@h1 {marker}\n@h1 id -un\n")
        started = alice.run(
            [
                "--ssh-config",
                str(theirs[USER]),
                "--team",
                "ops",
                "run",
                "--detach",
                "--session",
                "far",
                "remote.dsh",
            ]
        )
        assert started.returncode == 0, started.stderr
        wait_for(lambda: len(processes_of(USER, marker)) == 2)  # its sh, and the sleep
        running = processes_of(USER, marker)
        os.kill(int(str(session_of(alice, "far")["owner_pid"])), signal.SIGKILL)
        taken = bob.run(
            ["--ssh-config", str(theirs[USER2]), "--team", "ops", "--json", "attach", "--take", "far"],
            timeout=60,
        )
        results = [e for e in events_of(taken) if e["event"] == "result"]
        assert [e["outcome"] for e in results] == ["lost"], taken.stdout + taken.stderr
        assert str(results[0]["message"]) == (
            f"h1 is {USER}@127.0.0.1:{server.port} in this session; "
            f"here it is {USER2}@127.0.0.1:{server.port}: its spool is not asked and nothing is started there"
        ), results
        assert processes_of(USER, marker) == running and not processes_of(USER2, marker)  # not twice
        again = bob.run(
            ["--ssh-config", str(theirs[USER2]), "--team", "ops", "--json", "attach", "far"],
            input="@h1 id -un\n",
        )
        outputs = [e["text"] for e in events_of(again) if e["event"] == "output"]
        assert outputs == [USER2], again.stdout + again.stderr  # the rest: his access
    finally:
        kill_user_processes(USER, marker)
        server.cleanup()


def test_one_etcd_account_used_by_two_os_users_is_refused_for_team_features(
    people: dict[str, OsUser],
) -> None:
    """The shared-account tripwire: bob's login with alice's etcd password (handed to
    him) on her machine is refused for team features; she goes on."""
    alice, bob = people["alice"], people["bob"]
    assert alice.run(["--team", "ops", "ls"]).returncode == 0  # she uses her account here
    hers = bob.file("alices-password", PASSWORDS["alice"] + "\n", 0o600)
    as_her = {"DSH_STORE": alice.env["DSH_STORE"], "DSH_ETCD_PASSWORD_FILE": str(hers)}
    for args in (
        ["--team", "ops", "ls"],
        ["--team", "ops", "approve", "dep"],
        ["--team", "ops", "key", "get", "k"],
    ):
        refused = bob.run(args, env=as_her)
        assert refused.returncode == 2, (args, refused.stderr)
        assert f"etcd user alice is used by OS users {USER} and {USER2} on " in refused.stderr, refused.stderr
        assert "team features need one etcd account per person" in refused.stderr
    again = alice.run(["--team", "ops", "ls"])
    assert again.returncode == 0, again.stderr
    assert bob.run(["--team", "ops", "ls"]).returncode == 0  # his own account is his

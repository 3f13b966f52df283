"""An attack review of issue 21's later slices (control records by person, teams,
approvals), against a real etcd with auth on: each test shows one defect found
(it fails until it is mended). Members write only under their own `by/NAME/`
path; what they write there, or what dsh leaves there, must not stop, redirect or
misattribute another member's work."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsh.session.access import Admin
from dsh.store.etcd import EtcdStore, parse_url
from tests.conftest import dsh_path
from tests.etcd import ROOT_PASSWORD, Etcd
from tests.helpers import teams

T = 10.0
PASSWORDS = {"alice": "pw-alice", "bob": "pw-bob", "carol": "pw-carol", "dave": "pw-dave"}
R = "/dsh/v1/t/ops/"


@pytest.fixture(scope="module")
def server() -> Iterator[Etcd]:
    etcd = Etcd(auth=True).start()

    async def setup() -> None:
        store = EtcdStore(parse_url(etcd.url, user="root", password=ROOT_PASSWORD))
        try:
            admin = Admin(store, T)
            await admin.init(ROOT_PASSWORD)
            for name, password in PASSWORDS.items():
                await admin.add_user(name, password, "person", by="root")
            await admin.add_members("ops", ["alice", "bob", "carol"])  # dave is in no team
        finally:
            await store.close()

    asyncio.run(setup())
    yield etcd
    etcd.stop()


def person(env: dict[str, str], server: Etcd, tmp: Path, name: str) -> dict[str, str]:
    return teams.person(env, server, tmp, name, PASSWORDS)


def people(env: dict[str, str], server: Etcd, tmp: Path) -> dict[str, dict[str, str]]:
    return {name: person(env, server, tmp, name) for name in (*PASSWORDS, "root")}


def as_(server: Etcd, name: str, *calls: tuple[str, bytes, bytes]) -> list[object]:
    """Store calls made as etcd user `name`: ("put", key, value), ("get", prefix, b"")."""

    async def run() -> list[object]:
        store = EtcdStore(parse_url(server.url, user=name, password=PASSWORDS.get(name, ROOT_PASSWORD)))
        found: list[object] = []
        try:
            for op, key, value in calls:
                if op == "put":
                    found.append(await store.put(key, value, timeout=T))
                elif op == "delete":
                    found.append(await store.delete(key, prefix=True, timeout=T))
                else:
                    found.append((await store.range(key, timeout=T))[0])
        finally:
            await store.close()
        return found

    return asyncio.run(run())


def popen(env: dict[str, str], args: list[str], stdin: str | None = None) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [dsh_path(), *args],
        env=env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
        proc.stdin = None  # communicate() leaves it be
    return proc


def until_logged(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], session: str, text: str, team: str | None = "ops", *, fail: bool = True
) -> str:
    """The session's log once `text` is in it (or after 25 s: an AssertionError, or
    with `fail` False the log as it is then)."""
    where = ["--team", team] if team else []
    deadline = time.monotonic() + (25 if fail else 8)
    log = ""
    while time.monotonic() < deadline:
        log = run_dsh([*where, "log", session], env_extra=env).stdout
        if text in log:
            return log
        time.sleep(0.25)
    if not fail:
        return log
    raise AssertionError(f"{text!r} never in the log of {session}:\n{log}")


def the_ask(server: Etcd, owner: str, session: str) -> str:
    """The REQ of the live ask `owner` published in team ops for `session`."""
    (kvs,) = as_(server, "carol", ("get", f"{R}by/{owner}/ask/".encode(), b""))
    for kv in kvs:  # type: ignore[attr-defined]
        if json.loads(kv.value)["session"] == session:
            return str(json.loads(kv.value)["req"])
    raise AssertionError(f"no ask of {owner}'s for {session}")


def stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


# -- control records left under a teammate's path ----------------------------------


def test_a_teammates_cancel_of_whatever_runs_does_not_cancel_every_later_line(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """bob follows alice's team session from his machine and answers `c` to Ctrl-D
    while it works (readeval: client.cancel_all): his follower puts
    by/bob/s/c1/cancel/* and never deletes it; the owner cannot (StoreDenied,
    suppressed) and so cancels whatever runs at every poll, for ever."""
    p = people(env, server, tmp_path)
    (tmp_path / "long.dsh").write_text("sleep 4s\n")
    started = run_dsh(
        ["--team", "ops", "run", "--detach", "--session", "c1", "long.dsh"], env_extra=p["alice"]
    )
    assert started.returncode == 0, started.stderr
    until_logged(run_dsh, p["alice"], "c1", "sleep 4s here")
    as_(server, "bob", ("put", f"{R}by/bob/s/c1/cancel/*".encode(), b"m-bob"))  # follower.cancel("*")
    until_logged(run_dsh, p["alice"], "c1", "cancel * by bob@m-bob")  # the sleep he meant: cancelled
    later = run_dsh(
        ["--team", "ops", "attach", "c1"], env_extra=p["alice"], input="sleep 1s\necho after\n", timeout=60
    )
    assert (later.returncode, "after" in later.stdout) == (0, True), later.stdout + later.stderr


def test_a_teammates_kill_request_left_behind_does_not_kill_every_later_owner(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """`dsh kill` puts by/bob/s/k1/kill and deletes it only after the owner went and
    it took the session; one interrupted or timed out in between (admin.stop_owner's
    'its owner did not stop') leaves it. The owner never deletes a teammate's, nor
    does `dsh rm`: every later owner of k1 is killed, even a session made anew."""
    p = people(env, server, tmp_path)
    assert (
        run_dsh(["--team", "ops", "--session", "k1", "-c", "echo first"], env_extra=p["alice"]).returncode
        == 0
    )
    as_(server, "bob", ("put", f"{R}by/bob/s/k1/kill".encode(), b'{"v": 5, "by": "m-bob"}'))
    assert run_dsh(["--team", "ops", "rm", "k1"], env_extra=p["alice"]).returncode == 0
    anew = run_dsh(
        ["--team", "ops", "--session", "k1", "-c", "sleep 2s\necho alive"], env_extra=p["alice"], timeout=60
    )
    assert (anew.returncode, anew.stdout) == (0, "alive\n"), anew.stderr


def test_a_legacy_line_planted_in_a_team_sessions_state_is_not_run_as_the_owners(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """control.upgrade moves an older dsh's ctl/in/SEQ to the claiming owner's own
    path in any tree (plan §5.9: personal trees only, the tree's own person): bob
    writes one into the team's shared state, and alice's next claim runs it
    journaled '(by alice@m-alice)'."""
    p = people(env, server, tmp_path)
    assert (
        run_dsh(["--team", "ops", "--session", "up1", "-c", "echo first"], env_extra=p["alice"]).returncode
        == 0
    )
    planted = json.dumps(
        {"id": "planted", "text": "echo planted-by-bob", "name": "<stdin>", "first_line": 1, "by": "m-alice"}
    ).encode()
    as_(server, "bob", ("put", f"{R}s/up1/ctl/in/00000001".encode(), planted))
    later = run_dsh(
        ["--team", "ops", "attach", "up1"], env_extra=p["alice"], input="echo second\n", timeout=60
    )
    assert later.returncode == 0, later.stderr
    log = run_dsh(["--team", "ops", "log", "up1"], env_extra=p["carol"]).stdout
    assert "echo planted-by-bob  (by alice@m-alice)" not in log, log


# -- approvals -----------------------------------------------------------------------


def test_the_requester_cannot_approve_after_a_teammate_took_the_session_over(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """A resumed await has no Owned.by (only a submission sets it): events.approval
    takes the new owner as the requester, and the one who asked counts."""
    p = people(env, server, tmp_path)
    (tmp_path / "gate.dsh").write_text("await approval quorum 1 as who within 40s\necho released by $who\n")
    started = run_dsh(
        ["--team", "ops", "run", "--detach", "--session", "r1", "gate.dsh"], env_extra=p["alice"]
    )
    assert started.returncode == 0, started.stderr
    until_logged(run_dsh, p["alice"], "r1", "ask 1.1.1: ")
    taker = popen(p["bob"], ["--team", "ops", "attach", "--take", "r1"], stdin=None)
    try:
        until_logged(run_dsh, p["alice"], "r1", "takeover from alice@m-alice by bob@m-bob")
        deadline = time.monotonic() + 20  # bob's executor asks again: still in alice's name
        while run_dsh(["--team", "ops", "log", "r1"], env_extra=p["alice"]).stdout.count("ask 1.1.1: ") < 2:
            assert time.monotonic() < deadline, "the new owner never asked"
            time.sleep(0.2)
        own = run_dsh(["--team", "ops", "approve", "r1"], env_extra=p["alice"])
        time.sleep(2)  # the owner looks every second
        log = run_dsh(["--team", "ops", "log", "r1"], env_extra=p["carol"]).stdout
    finally:
        run_dsh(["--team", "ops", "kill", "r1"], env_extra=p["bob"], timeout=60)
        stop(taker)
    assert "approve 1.1.1 by alice" not in log, log
    assert own.returncode == 2 and "you asked for it" in own.stderr, own.stdout + own.stderr


def test_dsh_approve_votes_on_the_await_that_waits_not_on_a_cancelled_ones_ask(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """A cancelled await leaves its ask (nothing withdraws it but a quorum or a
    denial: no approval_over), live until its far deadline; `dsh approve` takes the
    oldest ask of the name: the vote goes to the dead one, the live await waits."""
    p = people(env, server, tmp_path)
    (tmp_path / "g1.dsh").write_text("await approval quorum 1 within 5m\n")
    started = run_dsh(["--team", "ops", "run", "--detach", "--session", "a1", "g1.dsh"], env_extra=p["alice"])
    assert started.returncode == 0, started.stderr
    until_logged(run_dsh, p["alice"], "a1", "ask 1.1.1: ")
    line = "await approval quorum 1 within 5m\necho second-released\n"
    follower = popen(p["bob"], ["--team", "ops", "attach", "a1"], stdin=line)
    try:
        deadline = time.monotonic() + 20
        while not as_(server, "bob", ("get", f"{R}by/bob/s/a1/in/".encode(), b""))[0]:
            assert time.monotonic() < deadline, "bob's line was never submitted"
            time.sleep(0.2)
        as_(server, "alice", ("put", f"{R}by/alice/s/a1/cancel/*".encode(), b"m-alice"))  # Ctrl-C, elsewhere
        until_logged(run_dsh, p["alice"], "a1", "ask 2.1.1: ")
        voted = run_dsh(["--team", "ops", "approve", "a1"], env_extra=p["carol"])
        released = until_logged(run_dsh, p["alice"], "a1", "approve 2.1.1 by carol", fail=False)
    finally:
        run_dsh(["--team", "ops", "kill", "a1"], env_extra=p["alice"], timeout=60)
        stop(follower)
    assert voted.returncode == 0 and "2.1.1" in voted.stdout, voted.stdout + voted.stderr
    assert "approve 2.1.1 by carol" in released, released


def test_a_vote_counts_only_for_the_session_its_voter_named(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """An ask's fields are the publisher's word: bob publishes, under his own path,
    an ask that says 'alice's hotfix' with the REQ of his own await; carol approves
    'hotfix' and the journal of bob's session says carol approved it."""
    p = people(env, server, tmp_path)
    evil = popen(
        p["bob"],
        ["--team", "ops", "--session", "evil", "-c", "await approval as who within 20s\necho by $who"],
    )
    try:
        until_logged(run_dsh, p["bob"], "evil", "ask 1.1.1: ")
        req = the_ask(server, "bob", "evil")
        fake = {
            "req": req, "tree": "t/ops", "session": "hotfix", "action": "3.1.1", "requester": "alice",
            "principals": "", "quorum": 2, "deadline": time.time() + 600,
        }  # fmt: skip
        as_(server, "bob", ("put", f"{R}by/bob/ask/fake".encode(), json.dumps(fake).encode()))
        run_dsh(["--team", "ops", "approve", "hotfix"], env_extra=p["carol"])
        time.sleep(2.5)  # the owner looks every second
        log = run_dsh(["--team", "ops", "log", "evil"], env_extra=p["alice"]).stdout
    finally:
        as_(server, "bob", ("delete", f"{R}by/bob/ask/fake".encode(), b""))
        stop(evil)
    assert "approve 1.1.1 by carol" not in log, log


def test_a_vote_comment_cannot_drive_the_requesters_terminal_nor_forge_log_lines(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """`dsh approve` checks --comment (printable, 1 KiB); the owner takes a Vote's
    comment and machine as written: escapes reach the requester's stderr raw, and a
    newline makes a line of `dsh log` that no entry wrote."""
    p = people(env, server, tmp_path)
    proc = popen(p["alice"], ["--team", "ops", "--session", "v1", "-c", "await approval within 30s"])
    try:
        until_logged(run_dsh, p["alice"], "v1", "ask 1.1.1: ")
        req = the_ask(server, "alice", "v1")
        vote = {
            "req": req, "deny": True, "machine": "m-bob", "t": time.time(), "tree": "t/ops", "session": "v1",
            "comment": "no\x1b]0;pwned\x07\x1b[2J\nFORGED approve 1.1.1 by carol@m-carol",
        }  # fmt: skip
        as_(server, "bob", ("put", f"{R}by/bob/vote/{req}".encode(), json.dumps(vote).encode()))
        _, err = proc.communicate(timeout=20)
    finally:
        stop(proc)
    assert proc.returncode == 1, err
    assert "\x1b" not in err, repr(err)
    log = run_dsh(["--team", "ops", "log", "v1"], env_extra=p["carol"]).stdout
    assert not [line for line in log.splitlines() if line.startswith("FORGED")], log


def test_an_approval_nobody_can_give_fails_at_the_ask(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """Plan §8.1/§8.4: quorum larger than the people who may approve, or a person
    who shares no team with the owner, is an error at the ask; it waits out its bound."""
    p = people(env, server, tmp_path)
    for written in ("await approval quorum 5 within 8s", "await approval from dave within 8s"):
        began = time.monotonic()
        got = run_dsh(["--team", "ops", "--session", "q1", "-c", written], env_extra=p["alice"], timeout=60)
        took = time.monotonic() - began
        assert got.returncode == 1 and took < 6, (written, took, got.stderr)


def test_two_sessions_of_one_name_asking_one_team_can_each_be_approved(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """alice's own 'dup' and the team's 'dup' both ask team ops: `dsh approve dup`
    says 'approve from one of them', and no name chooses one (`dsh ls` shows both as
    team:ops/dup, which approve refuses): neither can be approved."""
    p = people(env, server, tmp_path)
    mine = popen(p["alice"], ["--session", "dup", "-c", "await approval from team:ops within 25s"])
    ours = popen(p["bob"], ["--team", "ops", "--session", "dup", "-c", "await approval within 25s"])
    try:
        until_logged(run_dsh, p["alice"], "dup", "ask 1.1.1: ", team=None)
        until_logged(run_dsh, p["bob"], "dup", "ask 1.1.1: ")
        listed = run_dsh(["ls"], env_extra=p["carol"]).stdout
        tried = {
            name: run_dsh(["--team", "ops", "approve", name], env_extra=p["carol"])
            for name in ("dup", "team:ops/dup", "alice/dup")
        }
    finally:
        stop(mine, ours)
    assert any(got.returncode == 0 for got in tried.values()), (
        listed,
        {name: got.stderr for name, got in tried.items()},
    )


def test_an_owner_taken_out_of_the_team_it_asked_ends_the_await_failed(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """alice's own session asks team sec; she leaves sec meanwhile: the next look's
    read of sec's votes is StoreDenied, which is no AwaitEnded: the whole process
    stops with exit 2 (at times with grpc's 'Event loop is closed' traceback), and
    the await's end is never journaled."""
    p = people(env, server, tmp_path)

    async def team(add: bool) -> None:
        store = EtcdStore(parse_url(server.url, user="root", password=ROOT_PASSWORD))
        try:
            admin = Admin(store, T)
            await (
                admin.add_members("sec", ["alice", "carol"])
                if add
                else admin.remove_members("sec", ["alice"])
            )
        finally:
            await store.close()

    asyncio.run(team(True))
    proc = popen(p["alice"], ["--session", "sec1", "-c", "await approval from team:sec within 20s"])
    try:
        until_logged(run_dsh, p["alice"], "sec1", "ask 1.1.1: ", team=None)
        asyncio.run(team(False))
        _, err = proc.communicate(timeout=30)
    finally:
        stop(proc)
    log = run_dsh(["log", "sec1"], env_extra=p["alice"]).stdout
    assert proc.returncode == 1, err
    assert "end   1.1.1" in log, log


# -- what members see of each other's records -----------------------------------------


def test_dsh_ls_survives_a_members_ask_with_a_far_deadline(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """cli/sessions.ls: time.localtime(deadline) of any live ask: 1e300 is an
    OverflowError, so every other member's `dsh ls` is 'internal error' (70)."""
    p = people(env, server, tmp_path)
    ask = {
        "req": "x", "tree": "t/ops", "session": "far", "action": "1.1.1", "requester": "bob",
        "principals": "", "quorum": 1, "deadline": 1e300,
    }  # fmt: skip
    as_(server, "bob", ("put", f"{R}by/bob/ask/far".encode(), json.dumps(ask).encode()))
    try:
        listed = run_dsh(["ls"], env_extra=p["carol"])
    finally:
        as_(server, "bob", ("delete", f"{R}by/bob/ask/far".encode(), b""))
    assert listed.returncode == 0, listed.stderr


def test_dsh_ls_does_not_print_another_members_control_characters(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """`dsh ls` prints a team session's last line, and an ask's session, requester
    and action, as written: a teammate's escapes reach the reader's terminal (the
    last line through plain use of dsh)."""
    p = people(env, server, tmp_path)
    line = 'echo "\x1b]0;title\x07"'
    assert run_dsh(["--team", "ops", "--session", "esc", "-c", line], env_extra=p["bob"]).returncode == 0
    ask = {
        "req": "y", "tree": "t/ops", "session": "hot\x1b[31mfix", "action": "1.1.1\x1b]0;pwn\x07",
        "requester": "alice", "principals": "", "quorum": 1, "deadline": time.time() + 600,
    }  # fmt: skip
    as_(server, "bob", ("put", f"{R}by/bob/ask/esc".encode(), json.dumps(ask).encode()))
    try:
        listed = run_dsh(["ls"], env_extra=p["carol"])
    finally:
        as_(server, "bob", ("delete", f"{R}by/bob/ask/esc".encode(), b""))
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout, repr(listed.stdout)


# -- dsh admin -----------------------------------------------------------------------


def test_team_member_rm_of_someone_not_in_the_team_says_so(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """It prints 'etcd refuses zed in it from now on' and exits 0 for a name that
    was never a member (a typo goes unnoticed: the member meant stays in)."""
    p = people(env, server, tmp_path)
    for name in ("zed", "dave"):
        got = run_dsh(["admin", "team", "member", "rm", "ops", name], env_extra=p["root"])
        assert got.returncode != 0 and name in got.stderr, (name, got.stdout, got.stderr)

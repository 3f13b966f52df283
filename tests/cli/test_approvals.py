"""Approvals (issue 21): `await approval [from …] [quorum N]` released by N distinct
permitted people voting from their own paths (`dsh approve`), never by the one who
asked, failed at once by a denial; who approved is bound and journaled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from dsh.store.base import StoreDenied
from dsh.store.etcd import EtcdStore, parse_url
from tests.etcd import Etcd
from tests.helpers import teams

T = 10.0
server = teams.server  # one etcd with auth on for the module (a fixture)
PASSWORDS = {"alice": "pw-alice", "bob": "pw-bob", "carol": "pw-carol"}


def person(env: dict[str, str], server: Etcd, tmp: Path, name: str) -> dict[str, str]:
    return teams.person(env, server, tmp, name, PASSWORDS)


asking, until_asked = teams.asking, teams.until_asked


def test_a_quorum_of_distinct_members_releases_it_and_a_denial_fails_it(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    root = teams.accounts(run_dsh, env, server, tmp_path, PASSWORDS)
    team = run_dsh(["admin", "team", "add", "ops", "--member", "alice", "bob", "carol"], env_extra=root)
    assert team.returncode == 0, team.stderr
    alice, bob, carol = (person(env, server, tmp_path, n) for n in ("alice", "bob", "carol"))
    e_alice = {**env, **alice}

    proc = asking(e_alice, "await approval quorum 2 as who within 30s\necho approved by $who", "dep")
    try:
        until_asked(run_dsh, alice, "dep")
        first = run_dsh(["--team", "ops", "approve", "dep"], env_extra=bob)
        assert first.returncode == 0 and "approved dep (alice's 1.1.1): 1 of 2" in first.stdout, first.stderr
        again = run_dsh(["--team", "ops", "approve", "dep"], env_extra=bob)  # the same person twice
        assert again.returncode == 0 and ": 1 of 2" in again.stdout
        own = run_dsh(["--team", "ops", "approve", "dep"], env_extra=alice)
        assert own.returncode == 2 and "you asked for it" in own.stderr
        time.sleep(1.5)  # the owner looked meanwhile: not released by one person
        assert proc.poll() is None

        async def forge() -> bool:  # bob cannot vote as carol
            store = EtcdStore(parse_url(server.url, user="bob", password=PASSWORDS["bob"]))
            try:
                await store.put(b"/dsh/v1/t/ops/by/carol/vote/x", b"{}", timeout=T)
            except StoreDenied:
                return True
            finally:
                await store.close()
            return False

        assert asyncio.run(forge())
        second = run_dsh(["--team", "ops", "approve", "dep", "--comment", "looks fine"], env_extra=carol)
        assert second.returncode == 0 and ": 2 of 2" in second.stdout, second.stderr
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (0, "approved by bob,carol\n"), err
    log = run_dsh(["--team", "ops", "log", "dep"], env_extra=bob).stdout
    assert "ask 1.1.1: 2 of team:ops in team ops by alice@m-alice" in log
    assert "approve 1.1.1 by bob@m-bob" in log and "approve 1.1.1 (looks fine) by carol@m-carol" in log

    started = time.monotonic()
    proc = asking(e_alice, "await approval quorum 2 within 30s\necho never", "dep2")
    try:
        until_asked(run_dsh, alice, "dep2")
        denied = run_dsh(
            ["--team", "ops", "approve", "dep2", "--deny", "--comment", "not today"], env_extra=bob
        )
        assert denied.returncode == 0 and "denied dep2" in denied.stdout, denied.stderr
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 1 and out == "" and "denied by bob: not today" in err
    assert time.monotonic() - started < 20  # at once, not at the deadline

    out_of_team = run_dsh(["admin", "team", "member", "rm", "ops", "carol"], env_extra=root)
    assert out_of_team.returncode == 0, out_of_team.stderr
    proc = asking(e_alice, "await approval within 30s\necho never", "dep3")
    try:
        until_asked(run_dsh, alice, "dep3")
        refused = run_dsh(["--team", "ops", "approve", "dep3"], env_extra=carol)
        assert refused.returncode == 2 and "refused user carol" in refused.stderr
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    mine = run_dsh(["--session", "solo", "-c", "await approval within 5s"], env_extra=alice)
    assert mine.returncode == 1 and "say who may approve" in mine.stderr


def test_ls_lists_the_teams_sessions_and_the_approvals_waiting_for_you(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    root = person(env, server, tmp_path, "root")
    assert run_dsh(["admin", "init", "--yes"], env_extra=root).returncode == 0
    for name in ("alice", "bob"):
        run_dsh(["admin", "user", "add", name], env_extra={**root, "DSH_ADMIN_PASSWORD": PASSWORDS[name]})
    assert (
        run_dsh(["admin", "team", "add", "web", "--member", "alice", "bob"], env_extra=root).returncode == 0
    )
    alice, bob = (person(env, server, tmp_path, n) for n in ("alice", "bob"))
    proc = asking({**env, **alice}, "await approval within 30s", "rel", "web")
    try:
        deadline = time.monotonic() + 20
        listed = ""
        while time.monotonic() < deadline and "approve team:web/rel)" not in listed:  # its ask is out
            listed = run_dsh(["ls"], env_extra=bob).stdout  # no --team: his teams too
            time.sleep(0.2)
        assert "team:web/rel" in listed and "alice's 1.1.1: 0 of 1" in listed, listed
        assert "(dsh --team web approve team:web/rel)" in listed
        assert "waiting for your approval" not in run_dsh(["ls"], env_extra=alice).stdout  # hers
        assert run_dsh(["--team", "web", "approve", "rel"], env_extra=bob).returncode == 0
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.communicate(timeout=10)


def test_approval_self_lets_the_requester_count_and_says_so(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """`[approval] self = true` in the owner's config: the requester's own vote counts
    (the ask carries it, so `dsh approve` takes it), and the ask's entry says so."""
    root = person(env, server, tmp_path, "root")
    assert run_dsh(["admin", "init", "--yes"], env_extra=root).returncode == 0
    for name in ("alice", "bob"):
        run_dsh(["admin", "user", "add", name], env_extra={**root, "DSH_ADMIN_PASSWORD": PASSWORDS[name]})
    made = run_dsh(["admin", "team", "add", "solo", "--member", "alice"], env_extra=root)
    assert made.returncode == 0, made.stderr
    config = tmp_path / "alice.toml"
    config.write_text("[approval]\nself = true\n")
    alice = {**person(env, server, tmp_path, "alice"), "DSH_CONFIG": str(config)}
    bad = tmp_path / "bad.toml"
    bad.write_text('[approval]\nself = "yes"\n')
    wrong = run_dsh(["--team", "solo", "ls"], env_extra={**alice, "DSH_CONFIG": str(bad)})
    assert wrong.returncode == 2 and "approval.self must be true or false" in wrong.stderr, wrong.stderr

    proc = asking(
        {**env, **alice}, "await approval from team:solo as who within 30s\necho by $who", "s1", "solo"
    )
    try:
        until_asked(run_dsh, alice, "s1", "solo")
        own = run_dsh(["--team", "solo", "approve", "s1"], env_extra=alice)
        assert own.returncode == 0 and "approved s1 (alice's 1.1.1): 1 of 1" in own.stdout, own.stderr
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (0, "by alice\n"), err
    log = run_dsh(["--team", "solo", "log", "s1"], env_extra=alice).stdout
    assert "(the requester counts: [approval] self)" in log and "approve 1.1.1 by alice@m-alice" in log

    plain = person(env, server, tmp_path, "alice")  # without it: she alone cannot release it
    refused = run_dsh(["--team", "solo", "-c", "await approval from team:solo within 5s"], env_extra=plain)
    assert refused.returncode == 1 and "quorum 1, but 0 people may approve it" in refused.stderr, (
        refused.stderr
    )

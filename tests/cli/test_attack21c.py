"""Attack review of issue 21's shared-account tripwire, `[approval] self` and the
handover's line start (the third round): each test a defect found, failing first."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from dsh.session.codec import dumps
from dsh.session.keys import seen_key
from dsh.session.records import ApprovalAsk, Seen
from dsh.store.etcd import EtcdStore, parse_url
from tests.etcd import Etcd
from tests.helpers import teams

T = 10.0
server = teams.server  # one etcd with auth on for the module (a fixture)
PASSWORDS = {"alice": "alice-pw-21c", "bob": "bob-pw-21c", "carol": "carol-pw-21c"}


def person(env: dict[str, str], server: Etcd, tmp: Path, name: str) -> dict[str, str]:
    return teams.person(env, server, tmp, name, PASSWORDS)


def setup_team(run_dsh, env: dict[str, str], server: Etcd, tmp: Path) -> None:  # type: ignore[no-untyped-def]
    root = person(env, server, tmp, "root")
    run_dsh(["admin", "init", "--yes"], env_extra=root)
    for name, password in PASSWORDS.items():
        made = run_dsh(["admin", "user", "add", name], env_extra={**root, "DSH_ADMIN_PASSWORD": password})
        assert made.returncode == 0, made.stderr
    made = run_dsh(["admin", "team", "add", "ops", "--member", *PASSWORDS], env_extra=root)
    assert made.returncode == 0, made.stderr


def as_user(server: Etcd, name: str) -> EtcdStore:
    return EtcdStore(parse_url(server.url, user=name, password=PASSWORDS[name]))


def test_a_mark_planted_while_an_executor_runs_does_not_break_its_lease_keeping(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """The executor vouched when it claimed the session; its lease keeper's own store
    (Session.reopen) must not run the tripwire again: a refusal there is no StoreError,
    so the keeper thread would end with a traceback and the lease go unrenewed."""
    setup_team(run_dsh, env, server, tmp_path)
    alice = {**person(env, server, tmp_path, "alice"), "DSH_LEASE_TTL": "9"}
    (tmp_path / "k.dsh").write_text("sleep 6s\necho after-sleep\n")
    started = run_dsh(["--team", "ops", "run", "--detach", "--session", "k", "k.dsh"], env_extra=alice)
    assert started.returncode == 0, started.stderr

    async def plant() -> None:  # someone holding her password, as another OS user, meanwhile
        store = as_user(server, "alice")
        try:
            await store.put(seen_key("alice", "m-alice"), dumps(Seen("intruder", time.time())), timeout=T)
        finally:
            await store.close()

    asyncio.run(plant())
    time.sleep(8)
    log = run_dsh(["--team", "ops", "log", "k"], env_extra={**alice, "DSH_MACHINE_ID": "m-alice2"})
    assert log.returncode == 0, log.stderr
    assert "echo after-sleep" in log.stdout, log.stdout
    text = (tmp_path / "state-alice" / "dsh" / "log" / "k.log").read_text()
    assert "Traceback" not in text, text


def test_an_ask_a_member_plants_for_anothers_session_draws_no_vote_from_it(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    """bob plants, before alice's session asks, an ask for her session under his own
    path; carol's `dsh approve dep` must reach alice's real ask (it used to go by the
    oldest ask, bob's, and her await timed out while carol read "approved")."""
    setup_team(run_dsh, env, server, tmp_path)
    carol = person(env, server, tmp_path, "carol")
    alice = {**person(env, server, tmp_path, "alice"), "DSH_MACHINE_ID": "m-alice-2"}  # not the marked one

    async def plant() -> None:
        store = as_user(server, "bob")
        try:
            fake = ApprovalAsk("fake.1.1.1", "t/ops", "dep", "1.1.1", "alice", "", 1, time.time() + 60)
            await store.put(b"/dsh/v1/t/ops/by/bob/ask/fake.1.1.1", dumps(fake), timeout=T)
        finally:
            await store.close()

    asyncio.run(plant())
    proc = teams.asking({**env, **alice}, "await approval as who within 20s\necho by $who", "dep")
    try:
        teams.until_asked(run_dsh, alice, "dep")
        voted = run_dsh(["--team", "ops", "approve", "dep"], env_extra=carol)
        assert voted.returncode == 0 and "1 of 1" in voted.stdout, voted.stdout + voted.stderr
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert (proc.returncode, out) == (0, "by carol\n"), err


def test_etcds_root_and_a_service_account_are_refused_team_features(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    setup_team(run_dsh, env, server, tmp_path)
    root = person(env, server, tmp_path, "root")
    made = run_dsh(
        ["admin", "user", "add", "ci", "--service"], env_extra={**root, "DSH_ADMIN_PASSWORD": "ci-pw-21c"}
    )
    assert made.returncode == 0, made.stderr
    ci = {**root, "DSH_STORE": f"etcd://ci@{server.endpoints}", "DSH_ETCD_PASSWORD": "ci-pw-21c"}
    for who, what in ((root, "etcd user root is etcd's root"), (ci, "etcd user ci is a service account")):
        refused = run_dsh(["--team", "ops", "ls"], env_extra=who)
        assert refused.returncode == 2, refused.stderr
        assert f"{what}, not a person's: team features are people's" in refused.stderr, refused.stderr

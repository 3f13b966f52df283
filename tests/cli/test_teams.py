"""Teams on a shared etcd (issue 21): a team's sessions in its tree, which its
members share and nobody else reaches; each member's requests under a path of
their own, so that the journal says who ran each line and who took over."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from dsh.store.base import StoreDenied
from dsh.store.etcd import EtcdStore, parse_url
from tests.etcd import Etcd
from tests.helpers import teams

T = 10.0
server = teams.server  # one etcd with auth on for the module (a fixture)
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2", "carol": "carol-pw-3"}


def person(env: dict[str, str], server: Etcd, tmp: Path, name: str) -> dict[str, str]:
    return teams.person(env, server, tmp, name, PASSWORDS)


def test_members_share_a_team_session_and_the_journal_says_who_did_what(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    root = teams.accounts(run_dsh, env, server, tmp_path, PASSWORDS)
    team = run_dsh(["admin", "team", "add", "ops", "--member", "alice", "bob"], env_extra=root)
    assert team.returncode == 0 and "team ops: alice, bob; its tree is t/ops/" in team.stdout, team.stderr
    shown = run_dsh(["admin", "show", "--json"], env_extra=root)
    assert json.loads(shown.stdout)["teams"] == {"ops": ["alice", "bob"]}, shown.stderr
    assert "  ops: alice, bob" in run_dsh(["admin", "show"], env_extra=root).stdout
    alice, bob, carol = (person(env, server, tmp_path, n) for n in ("alice", "bob", "carol"))

    (tmp_path / "dep.dsh").write_text("echo by-alice\nsleep 3s\necho alice-after-sleep\n")
    started = run_dsh(["--team", "ops", "run", "--detach", "--session", "dep", "dep.dsh"], env_extra=alice)
    assert started.returncode == 0, started.stderr
    listed = run_dsh(["--team", "ops", "ls"], env_extra=bob)
    assert listed.returncode == 0 and "dep" in listed.stdout, listed.stderr
    taken = run_dsh(
        ["--team", "ops", "attach", "--take", "dep"], env_extra=bob, input="echo by-bob\n", timeout=60
    )
    assert taken.returncode == 0, taken.stdout + taken.stderr
    assert "by-bob" in taken.stdout

    log = run_dsh(["--team", "ops", "log", "dep"], env_extra=alice)
    assert log.returncode == 0, log.stderr
    assert "echo by-alice  (by alice@m-alice)" in log.stdout
    assert "echo by-bob  (by bob@m-bob)" in log.stdout
    assert "handover from m-alice by bob@m-bob" in log.stdout
    assert "takeover from alice@m-alice by bob@m-bob" in log.stdout
    # her script ran to its end, once: its rest on bob's executor, with his access (so "by bob")
    assert "echo alice-after-sleep  (by bob@m-bob)" in log.stdout
    mine = run_dsh(["ls"], env_extra=bob).stdout.splitlines()  # his own tree, then his teams'
    assert not [line for line in mine if line.startswith("dep ")] and any(
        line.startswith("team:ops/dep ") for line in mine
    )

    outsider = run_dsh(["--team", "ops", "ls"], env_extra=carol)
    assert outsider.returncode == 2 and "refused user carol" in outsider.stderr

    async def forge() -> list[str]:
        store = EtcdStore(parse_url(server.url, user="bob", password=PASSWORDS["bob"]))
        refused = []
        try:
            for what, key in (
                ("a line as alice's", b"/dsh/v1/t/ops/by/alice/s/dep/in/x"),
                ("a cancel as alice's", b"/dsh/v1/t/ops/by/alice/s/dep/cancel/x"),
                ("the members", b"/dsh/v1/t/ops/members"),
            ):
                try:
                    await store.put(key, b"{}", timeout=T)
                except StoreDenied:
                    refused.append(what)
        finally:
            await store.close()
        return refused

    assert asyncio.run(forge()) == ["a line as alice's", "a cancel as alice's", "the members"]

    removed = run_dsh(["admin", "team", "member", "rm", "ops", "bob"], env_extra=root)
    assert removed.returncode == 0 and "team ops: alice left" in removed.stdout, removed.stderr
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # his executor lingers, then goes (or is refused)
        if "running" not in run_dsh(["--team", "ops", "ls"], env_extra=alice).stdout:
            break
        time.sleep(0.3)
    for args in (["ls"], ["attach", "dep"], ["log", "dep"]):
        gone = run_dsh(["--team", "ops", *args], env_extra=bob, input="echo again\n")
        assert gone.returncode == 2 and "refused user bob" in gone.stderr, (args, gone.stderr)


def test_teams_take_people_only_and_go_with_their_members_paths(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], server: Etcd, tmp_path: Path
) -> None:
    from tests.etcd import etcdctl

    root = person(env, server, tmp_path, "root")
    assert run_dsh(["admin", "init", "--yes"], env_extra=root).returncode == 0
    for name, kind in (("dora", []), ("eve", []), ("ci", ["--service"])):
        made = run_dsh(
            ["admin", "user", "add", name, *kind], env_extra={**root, "DSH_ADMIN_PASSWORD": "pw-" + name}
        )
        assert made.returncode == 0, made.stderr
    service = run_dsh(["admin", "team", "add", "sec", "--member", "dora", "ci"], env_extra=root)
    assert service.returncode == 2 and "etcd user ci is a service account" in service.stderr
    nobody = run_dsh(["admin", "team", "add", "sec", "--member", "zed"], env_extra=root)
    assert nobody.returncode == 2 and "etcd user zed is no account of dsh's" in nobody.stderr
    assert run_dsh(["admin", "team", "add", "sec", "--member", "dora"], env_extra=root).returncode == 0
    added = run_dsh(["admin", "team", "member", "add", "sec", "eve"], env_extra=root)
    assert added.returncode == 0 and "team sec: dora, eve" in added.stdout
    dora = {**person(env, server, tmp_path, "dora"), "DSH_ETCD_PASSWORD": "pw-dora"}
    assert run_dsh(["--team", "sec", "key", "put", "k", "shared"], env_extra=dora).returncode == 0
    eve = {**person(env, server, tmp_path, "eve"), "DSH_ETCD_PASSWORD": "pw-eve"}
    assert run_dsh(["--team", "sec", "key", "get", "k"], env_extra=eve).stdout == "shared\n"
    assert run_dsh(["--team", "sec", "signal", "nosuch", "go"], env_extra=eve).returncode == 2  # no session
    roles = etcdctl(server.endpoints, "user", "get", "eve", user="root")
    assert {"dsh/t/sec", "dsh/t/sec/by/eve"} <= set(roles.split())
    gone = run_dsh(["admin", "user", "rm", "eve"], env_extra=root)  # out of her teams too
    assert gone.returncode == 0, gone.stderr
    assert "dsh/t/sec/by/eve" not in etcdctl(server.endpoints, "role", "list", user="root")
    assert run_dsh(["admin", "team", "rm", "sec", "--purge"], env_extra=root).returncode == 0
    listed = etcdctl(server.endpoints, "role", "list", user="root")
    assert "dsh/t/sec" not in listed
    assert etcdctl(server.endpoints, "get", "--prefix", "/dsh/v1/t/sec/", user="root").strip() == ""
    assert run_dsh(["admin", "team", "rm", "sec"], env_extra=root).returncode == 1  # no such team now
    bad = run_dsh(["--team", "No/pe", "ls"], env_extra=dora)
    assert bad.returncode == 2 and "not a team's name" in bad.stderr
    local = run_dsh(["--team", "sec", "ls"], env_extra={"DSH_STORE": "local"})
    assert local.returncode == 2 and "--team needs an etcd store" in local.stderr

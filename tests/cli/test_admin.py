"""`dsh admin` (issue 21): etcd's authentication turned on and dsh's roles made,
people added with a tree each that nobody else can read or write, passwords
changed and users removed, against a real etcd with auth on."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dsh.store.base import StoreDenied
from dsh.store.etcd import EtcdStore, parse_url
from tests.conftest import dsh_path
from tests.etcd import ROOT_PASSWORD, Etcd, etcdctl
from tests.helpers.serve import Serve, post

T = 10.0
ALICE_PW = "alice-pw-7f3e"
BOB_PW = "bob-pw-91aa"


def as_user(env: dict[str, str], server: Etcd, user: str | None, password: str | None) -> dict[str, str]:
    """The environment of a dsh that logs into `server` as `user`."""
    made = {**env, "DSH_STORE": server.url}
    if user is not None:
        made["DSH_STORE"] = f"etcd://{user}@{server.endpoints}"
        made["DSH_ETCD_PASSWORD"] = password or ""
    return made


@pytest.fixture
def fresh() -> Iterator[Etcd]:
    server = Etcd(extra=["--bcrypt-cost", "4"]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded() -> Iterator[Etcd]:
    """etcd with auth on (root with ROOT_PASSWORD), set up by dsh admin in the first test."""
    server = Etcd(auth=True).start()
    yield server
    server.stop()


def test_init_lists_what_changes_then_turns_authentication_on(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], fresh: Etcd
) -> None:
    endpoint = fresh.members[0].endpoint
    etcdctl(endpoint, "put", "/other/app", "x")  # another application's key
    root = as_user(env, fresh, "root", ROOT_PASSWORD)
    asked = run_dsh(["admin", "init"], env_extra=root)
    assert asked.returncode == 2 and "run it again with --yes" in asked.stderr
    assert "authentication goes on" in asked.stdout and "1 keys outside dsh's" in asked.stdout
    assert "etcd user root is made" in asked.stdout and "role dsh/r/user is made" in asked.stdout
    assert etcdctl(endpoint, "get", "/other/app").strip().endswith("x")  # nothing changed yet

    done = run_dsh(["admin", "init", "--yes"], env_extra=root)
    assert done.returncode == 0, done.stderr
    with pytest.raises(RuntimeError, match="user name is empty"):  # anonymous access has ended
        etcdctl(endpoint, "get", "/other/app")
    again = run_dsh(["admin", "init"], env_extra=root)
    assert (again.returncode, again.stderr) == (0, "")
    assert "is set up for dsh" in again.stdout
    anonymous = run_dsh(["ls"], env_extra=as_user(env, fresh, None, None))
    assert anonymous.returncode == 2 and "give your etcd user and password" in anonymous.stderr


def test_each_person_has_a_tree_nobody_else_reads_or_writes(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], guarded: Etcd, tmp_path: Path
) -> None:
    root = as_user(env, guarded, "root", ROOT_PASSWORD)
    assert run_dsh(["admin", "init", "--yes"], env_extra=root).returncode == 0
    for name, password in (("alice", ALICE_PW), ("bob", BOB_PW)):
        made = run_dsh(["admin", "user", "add", name], env_extra={**root, "DSH_ADMIN_PASSWORD": password})
        assert made.returncode == 0, made.stderr
        assert f"etcd user {name} made: a person's account; their tree is u/{name}/" in made.stdout
    alice = {**as_user(env, guarded, "alice", ALICE_PW), "DSH_LEASE_TTL": "2"}
    (tmp_path / "s.dsh").write_text("echo started\nsecret = echo bound-by-alice\nsleep 2s\necho finished\n")
    started = run_dsh(["run", "--detach", "--session", "al", "s.dsh"], env_extra=alice)
    assert started.returncode == 0, started.stderr
    assert etcdctl(guarded.endpoints, "get", "--keys-only", "/dsh/v1/u/alice/s/al/meta", user="root").strip()

    async def attack() -> list[str]:
        bob = EtcdStore(parse_url(guarded.url, user="bob", password=BOB_PW))
        refused: list[str] = []
        attempts: list[tuple[str, Callable[[], object]]] = [
            ("read her bindings", lambda: bob.get(b"/dsh/v1/u/alice/s/al/bind/secret", timeout=T)),
            ("read her journal", lambda: bob.range(b"/dsh/v1/u/alice/s/al/j/", timeout=T)),
            ("read her secret", lambda: bob.get(b"/dsh/v1/u/alice/s/al/secret", timeout=T)),
            ("put a line", lambda: bob.put(b"/dsh/v1/u/alice/s/al/ctl/in/00000009", b"{}", timeout=T)),
            ("kill it", lambda: bob.put(b"/dsh/v1/u/alice/s/al/kill", b"{}", timeout=T)),
            ("take it over", lambda: bob.delete(b"/dsh/v1/u/alice/s/al/owner", timeout=T)),
            ("watch her tree", lambda: bob.watch(b"/dsh/v1/u/alice/", start_revision=0, timeout=T)),
            ("call himself a person", lambda: bob.put(b"/dsh/v1/people/bob", b"{}", timeout=T)),
            ("register a server", lambda: bob.put(b"/dsh/v1/serve/evil", b"{}", timeout=T)),
            ("reach her as al", lambda: bob.get(b"/dsh/v1/u/al", timeout=T)),
        ]
        try:
            for what, attempt in attempts:
                try:
                    await attempt()  # type: ignore[misc]
                except StoreDenied:
                    refused.append(what)
            await bob.put(b"/dsh/v1/u/bob/keys/mine", b"ok", timeout=T)  # his own tree is his
        finally:
            await bob.close()
        return refused

    refused = asyncio.run(attack())
    assert refused == [
        "read her bindings",
        "read her journal",
        "read her secret",
        "put a line",
        "kill it",
        "take it over",
        "watch her tree",
        "call himself a person",
        "register a server",
        "reach her as al",
    ]
    bob = as_user(env, guarded, "bob", BOB_PW)
    assert "al" not in run_dsh(["ls"], env_extra=bob).stdout  # his ls is his tree
    denied = run_dsh(["log", "al"], env_extra=bob)
    assert denied.returncode == 2 and "no session" in denied.stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # alice's session runs on, unaffected
        log = run_dsh(["log", "al"], env_extra=alice)
        if "finished" in log.stdout and "running" not in run_dsh(["ls"], env_extra=alice).stdout:
            break
        time.sleep(0.3)
    assert log.stdout.count("finished") >= 1 and log.stdout.count("started") >= 1
    shown = run_dsh(["admin", "show", "--json"], env_extra=root)
    assert shown.returncode == 0, shown.stderr
    facts = json.loads(shown.stdout)
    kinds = {a["name"]: a["kind"] for a in facts["accounts"]}
    assert kinds == {"root": "root", "alice": "person", "bob": "person"}
    assert facts["auth"] is True and facts["quota"] > 0 and facts["db_size"] > 0
    text = run_dsh(["admin", "show"], env_extra=root).stdout
    assert "authentication on" in text and " quota (" in text and "alarms: none" in text
    mine = run_dsh(["admin", "show"], env_extra=bob)
    assert mine.returncode == 0 and "you are etcd user bob, with roles: dsh/r/user, dsh/u/bob" in mine.stdout


def test_a_new_password_or_a_removed_user_is_refused_at_once(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], guarded: Etcd
) -> None:
    root = as_user(env, guarded, "root", ROOT_PASSWORD)
    add = run_dsh(["admin", "user", "add", "carol"], env_extra={**root, "DSH_ADMIN_PASSWORD": "old-pw"})
    assert add.returncode == 0, add.stderr
    assert (
        run_dsh(["key", "put", "k", "v"], env_extra=as_user(env, guarded, "carol", "old-pw")).returncode == 0
    )
    changed = run_dsh(
        ["admin", "user", "passwd", "carol"], env_extra={**root, "DSH_ADMIN_PASSWORD": "new-pw"}
    )
    assert changed.returncode == 0, changed.stderr
    old = run_dsh(["key", "get", "k"], env_extra=as_user(env, guarded, "carol", "old-pw"))
    assert old.returncode == 2 and "refused user carol's password" in old.stderr
    new = run_dsh(["key", "get", "k"], env_extra=as_user(env, guarded, "carol", "new-pw"))
    assert (new.returncode, new.stdout) == (0, "v\n")
    removed = run_dsh(["admin", "user", "rm", "carol", "--purge"], env_extra=root)
    assert removed.returncode == 0 and "Watches they hold open go on" in removed.stdout
    gone = run_dsh(["key", "get", "k"], env_extra=as_user(env, guarded, "carol", "new-pw"))
    assert gone.returncode == 2 and "refused user carol's password" in gone.stderr
    assert run_dsh(["admin", "user", "rm", "carol"], env_extra=root).returncode == 1  # no such user now
    assert (
        etcdctl(guarded.endpoints, "get", "--prefix", "/dsh/v1/u/carol/", user="root").strip() == ""
    )  # purged
    assert etcdctl(guarded.endpoints, "get", "/dsh/v1/people/carol", user="root").strip() == ""


@pytest.mark.parametrize(
    ("args", "extra", "said"),
    [
        (["user", "add", "root"], {"DSH_ADMIN_PASSWORD": "x"}, "'root' cannot name a person"),
        (["user", "add", "a/b"], {"DSH_ADMIN_PASSWORD": "x"}, "'a/b' cannot name a person"),
        (["user", "add", "dshsvc"], {"DSH_ADMIN_PASSWORD": "x"}, "not starting with 'dsh'"),
        (["user", "add", "dave"], {"DSH_ADMIN_PASSWORD": ""}, "needs a password that is not empty"),
        (["user", "add", "dave"], {}, "give etcd user dave's password in DSH_ADMIN_PASSWORD"),
        (["user", "add", "dave", "--service", "--serve"], {"DSH_ADMIN_PASSWORD": "x"}, "not both"),
        (["user", "frob"], {}, "admin takes: dsh admin init"),
    ],
)
def test_bad_names_and_passwords_are_refused_before_etcd_is_asked(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], guarded: Etcd, args: list[str], extra: dict[str, str], said: str
) -> None:
    r = run_dsh(["admin", *args], env_extra={**as_user(env, guarded, "root", ROOT_PASSWORD), **extra})
    assert r.returncode == 2 and said in r.stderr and "Traceback" not in r.stderr


def test_only_root_administers_and_no_password_is_kept(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], guarded: Etcd, tmp_path: Path
) -> None:
    root = as_user(env, guarded, "root", ROOT_PASSWORD)
    made = run_dsh(
        ["admin", "user", "add", "erin"], env_extra={**root, "DSH_ADMIN_PASSWORD": "erin-Secret-77"}
    )
    assert made.returncode == 0, made.stderr
    erin = {**as_user(env, guarded, "erin", "erin-Secret-77"), "DSH_ADMIN_PASSWORD": "x"}
    refused = run_dsh(["admin", "user", "add", "frank"], env_extra=erin)
    assert refused.returncode == 2 and "runs as etcd's root user (you log in as erin)" in refused.stderr
    local = run_dsh(["admin", "show"], env_extra={"DSH_STORE": "local"})
    assert local.returncode == 2 and "give --store etcd" in local.stderr
    everything = etcdctl(guarded.endpoints, "get", "--prefix", "", user="root")
    assert "erin-Secret-77" not in everything and ALICE_PW not in everything
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*.log"))
    assert "erin-Secret-77" not in logs


def test_callbacks_live_in_the_persons_tree_and_come_through_serve_only(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], guarded: Etcd, tmp_path: Path
) -> None:
    root = as_user(env, guarded, "root", ROOT_PASSWORD)
    assert run_dsh(["admin", "init", "--yes"], env_extra=root).returncode == 0
    for name, kind in (("dave", []), ("mallory", []), ("cbserve", ["--serve"])):
        made = run_dsh(
            ["admin", "user", "add", name, *kind], env_extra={**root, "DSH_ADMIN_PASSWORD": name + "-pw"}
        )
        assert made.returncode == 0, made.stderr
    as_mallory = run_dsh(
        ["serve", "--listen", "127.0.0.1:0"], env_extra=as_user(env, guarded, "mallory", "mallory-pw")
    )
    assert as_mallory.returncode == 2 and "dsh serve needs an etcd account made for it" in as_mallory.stderr
    server = Serve({**env, **as_user(env, guarded, "cbserve", "cbserve-pw")})
    dave = as_user(env, guarded, "dave", "dave-pw")
    (tmp_path / "cb.dsh").write_text("await callback as body within 20s\necho got: $body\n")
    proc = subprocess.Popen(
        [dsh_path(), "--session", "cbs", "cb.dsh"],
        env={**env, **dave},
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = ""
        while not url:
            line = proc.stderr.readline()
            assert line, "no callback URL was said"
            found = re.search(r"POST to (\S+/cb/u/dave/([A-Za-z0-9_-]{32}))", line)
            url, token = (found.group(1), found.group(2)) if found else ("", "")
        assert url.startswith(server.base)

        async def attack() -> list[str]:
            mallory = EtcdStore(parse_url(guarded.url, user="mallory", password="mallory-pw"))
            refused: list[str] = []
            attempts: list[tuple[str, Callable[[], object]]] = [
                ("register a server", lambda: mallory.put(b"/dsh/v1/serve/x", b"{}", timeout=T)),
                ("read the callback", lambda: mallory.get(f"/dsh/v1/cb/u/dave/{token}".encode(), timeout=T)),
                ("list the callbacks", lambda: mallory.range(b"/dsh/v1/cb/", timeout=T)),
                ("deliver it", lambda: mallory.put(f"/dsh/v1/ev/u/dave/{token}".encode(), b"{}", timeout=T)),
                ("read the secret", lambda: mallory.range(b"/dsh/v1/u/dave/s/cbs/secret", timeout=T)),
            ]
            try:
                for what, attempt in attempts:
                    try:
                        await attempt()  # type: ignore[misc]
                    except StoreDenied:
                        refused.append(what)
            finally:
                await mallory.close()
            return refused

        refused = asyncio.run(attack())
        assert refused == [
            "register a server",
            "read the callback",
            "list the callbacks",
            "deliver it",
            "read the secret",
        ]
        assert post(url[: -len(token)] + "A" * 32, b"forged")[0] == 404  # a wrong token
        assert post(url.replace("/u/dave/", "/u/mallory/"), b"forged")[0] == 404  # another tree
        assert post(url, b"build 42 ok") == (202, {"status": 202, "message": "accepted"})
        out, err = proc.communicate(timeout=30)
        assert (proc.returncode, out) == (0, "got: build 42 ok\n"), err
    finally:
        proc.kill()
        server.stop()


def test_migrate_moves_an_os_users_tree_and_old_callbacks_to_the_etcd_users(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], fresh: Etcd
) -> None:
    from dsh.session.codec import dumps
    from dsh.session.records import Callback, CallbackEvent, Owner

    anonymous = as_user(env, fresh, None, None)  # before auth: the OS user's tree, u/root
    for args in (["--session", "old1", "-c", "echo from-before"], ["--session", "busy", "-c", "echo b"]):
        assert run_dsh(args, env_extra=anonymous).returncode == 0
    assert run_dsh(["key", "put", "k", "kept"], env_extra=anonymous).returncode == 0
    token, awaited = "T" * 32, "W" * 32

    async def legacy() -> None:  # what a dsh before issue 21 kept: global callbacks; and a live owner
        store = EtcdStore(parse_url(fresh.url))
        try:
            await store.put(
                b"/dsh/v1/cb/" + token.encode(),
                dumps(Callback("root", "old1", "1.1.1", None, 1.0)),
                timeout=T,
            )
            await store.put(
                b"/dsh/v1/cb/" + token.encode() + b"/event",
                dumps(CallbackEvent("posted", 2.0, "x")),
                timeout=T,
            )
            await store.put(
                b"/dsh/v1/cb/" + awaited.encode(),
                dumps(Callback("root", "old1", "2.1.1", None, 9e9)),
                timeout=T,
            )
            lease = await store.grant(60, timeout=T)
            await store.put(
                b"/dsh/v1/u/root/s/busy/owner", dumps(Owner("m", 1, 1.0)), lease=lease.id, timeout=T
            )
        finally:
            await store.close()

    asyncio.run(legacy())
    root = as_user(env, fresh, "root", ROOT_PASSWORD)
    assert run_dsh(["admin", "init", "--yes"], env_extra=root).returncode == 0
    added = run_dsh(["admin", "user", "add", "alice"], env_extra={**root, "DSH_ADMIN_PASSWORD": ALICE_PW})
    assert added.returncode == 0, added.stderr
    dry = run_dsh(["admin", "migrate", "--map", "root=alice", "--dry-run"], env_extra=root)
    assert dry.returncode == 1, dry.stderr  # something is left: the running session, the awaited callback
    assert "would move session old1 of u/root → u/alice" in dry.stdout
    assert "left session busy of u/root: it is running" in dry.stdout
    assert f"left callback {awaited} of session old1: still awaited" in dry.stdout
    assert "u/root/s/old1/meta" in etcdctl(
        fresh.endpoints, "get", "--prefix", "--keys-only", "/dsh/v1/u/root/", user="root"
    )
    moved = run_dsh(["admin", "migrate", "--map", "root=alice"], env_extra=root)
    assert moved.returncode == 1 and "moved session old1 of u/root → u/alice" in moved.stdout
    alice = as_user(env, fresh, "alice", ALICE_PW)
    log = run_dsh(["log", "old1"], env_extra=alice)
    assert log.returncode == 0 and "from-before" in log.stdout  # her journal, whole, in her tree
    assert run_dsh(["key", "get", "k"], env_extra=alice).stdout == "kept\n"
    left = etcdctl(fresh.endpoints, "get", "--prefix", "--keys-only", "/dsh/v1/", user="root").split()
    assert f"/dsh/v1/cb/u/alice/{token}" in left and f"/dsh/v1/ev/u/alice/{token}" in left
    assert f"/dsh/v1/cb/{token}" not in left and f"/dsh/v1/cb/{awaited}" in left  # the awaited one stays
    assert not [k for k in left if k.startswith("/dsh/v1/u/root/") and "/busy/" not in k]
    forced = run_dsh(["admin", "migrate", "--map", "root=alice", "--force"], env_extra=root)
    assert f"moved callback {awaited}" in forced.stdout and "left session busy" in forced.stdout

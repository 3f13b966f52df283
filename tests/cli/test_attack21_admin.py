"""Attacks on `dsh admin` (issue 21, review): installations that share one etcd,
users removed or added across them, a half-done init, against a real etcd with
auth on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.etcd import ROOT_PASSWORD, Etcd, etcdctl


@pytest.fixture(scope="module")
def guarded() -> Iterator[Etcd]:
    server = Etcd(auth=True).start()
    yield server
    server.stop()


def login(env: dict[str, str], server: Etcd, user: str, password: str, prefix: str = "") -> dict[str, str]:
    return {**env, "DSH_STORE": f"etcd://{user}@{server.endpoints}{prefix}", "DSH_ETCD_PASSWORD": password}


def add(run_dsh, env: dict[str, str], server: Etcd, name: str, prefix: str = "") -> None:  # type: ignore[no-untyped-def]
    root = {**login(env, server, "root", ROOT_PASSWORD, prefix), "DSH_ADMIN_PASSWORD": name + "-pw"}
    made = run_dsh(["admin", "user", "add", name], env_extra=root)
    assert made.returncode == 0, made.stderr


def test_two_installations_never_share_a_role(run_dsh, env: dict[str, str], guarded: Etcd) -> None:  # type: ignore[no-untyped-def]
    # Role names are "dsh" + prefix + "/user" and "dsh" + prefix + "/u/NAME": the
    # installation at prefix /u has role dsh/u/user, which is also the role of person
    # "user" of the installation without a prefix. Every person of /u holds it.
    root_u = login(env, guarded, "root", ROOT_PASSWORD, "/u")
    assert run_dsh(["admin", "init", "--yes"], env_extra=root_u).returncode == 0
    add(run_dsh, env, guarded, "carol", "/u")
    add(run_dsh, env, guarded, "user")
    put = run_dsh(["key", "put", "k", "private"], env_extra=login(env, guarded, "user", "user-pw"))
    assert put.returncode == 0, put.stderr
    with pytest.raises(RuntimeError, match="permission denied"):  # carol, of /u, reads it
        etcdctl(guarded.endpoints, "get", "/dsh/v1/u/user/keys/k", user="carol", password="carol-pw")


def test_user_rm_in_one_installation_keeps_the_user_of_another(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], guarded: Etcd
) -> None:
    add(run_dsh, env, guarded, "dora")
    add(run_dsh, env, guarded, "dora", "/team")  # users are etcd's: this adds /team's roles
    removed = run_dsh(
        ["admin", "user", "rm", "dora"], env_extra=login(env, guarded, "root", ROOT_PASSWORD, "/team")
    )
    assert removed.returncode == 0, removed.stderr
    mine = run_dsh(["key", "put", "k", "v"], env_extra=login(env, guarded, "dora", "dora-pw"))
    assert mine.returncode == 0, mine.stderr  # she is still a person of the installation without a prefix


def test_user_rm_leaves_an_account_dsh_did_not_make(run_dsh, env: dict[str, str], guarded: Etcd) -> None:  # type: ignore[no-untyped-def]
    etcdctl(guarded.endpoints, "user", "add", "backup", "--new-user-password=b", user="root")
    removed = run_dsh(["admin", "user", "rm", "backup"], env_extra=login(env, guarded, "root", ROOT_PASSWORD))
    assert removed.returncode != 0  # another application's account: not dsh's to delete
    assert "backup" in etcdctl(guarded.endpoints, "user", "list", user="root").split()


def test_user_add_serve_of_a_person_does_not_make_them_both(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], guarded: Etcd
) -> None:
    # A person who also holds dsh/serve reads every callback of every tree (cb/) and
    # writes every POST (ev/): it can complete anyone's `await callback` itself.
    add(run_dsh, env, guarded, "hal")
    root = {**login(env, guarded, "root", ROOT_PASSWORD), "DSH_ADMIN_PASSWORD": "x"}
    again = run_dsh(["admin", "user", "add", "hal", "--serve"], env_extra=root)
    roles = etcdctl(guarded.endpoints, "user", "get", "hal", user="root")
    assert again.returncode != 0 or "dsh/u/hal" not in roles, (again.stdout, roles)


def test_user_add_names_the_tree_in_a_store_with_a_prefix(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], guarded: Etcd
) -> None:
    root = {**login(env, guarded, "root", ROOT_PASSWORD, "/p8"), "DSH_ADMIN_PASSWORD": "fay-pw"}
    made = run_dsh(["admin", "user", "add", "fay"], env_extra=root)
    assert made.returncode == 0, made.stderr
    assert "their tree is u/fay/" in made.stdout, made.stdout  # it says u/p8/u/fay/


def test_an_etcd_user_named_with_an_at_sign_still_runs_dsh(  # type: ignore[no-untyped-def]
    run_dsh, env: dict[str, str], guarded: Etcd
) -> None:
    # An account made by hand before `dsh admin` (a mail-like name, a role over /dsh/v1/).
    for args in (
        ("user", "add", "al@corp", "--new-user-password=al-pw"),
        ("role", "add", "al-hand"),
        ("role", "grant-permission", "al-hand", "readwrite", "--prefix=true", "/dsh/v1/"),
        ("user", "grant-role", "al@corp", "al-hand"),
    ):
        etcdctl(guarded.endpoints, *args, user="root")
    extra = {"DSH_STORE": guarded.url, "DSH_ETCD_USER": "al@corp", "DSH_ETCD_PASSWORD": "al-pw"}
    r = run_dsh(["-c", "echo hi"], env_extra=extra)
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr


def test_init_with_a_root_already_there_never_locks_etcd(run_dsh, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    # auth off, root made earlier with another password than the one dsh admin gives:
    # init turns authentication on, then cannot log in (exit 2); a rerun cannot fix it.
    with Etcd(extra=["--bcrypt-cost", "4"]) as server:
        endpoint = server.members[0].endpoint
        etcdctl(endpoint, "user", "add", "root", "--new-user-password=an-older-root-pw")
        root = login(env, server, "root", ROOT_PASSWORD)
        done = run_dsh(["admin", "init", "--yes"], env_extra=root)
        if done.returncode == 0 and run_dsh(["ls"], env_extra=root).returncode == 0:
            return  # it made root's password the one given (and said so)
        try:  # or it refused before turning authentication on
            etcdctl(endpoint, "put", "/anonymous", "auth is still off")
            off = True
        except RuntimeError:
            off = False
        assert off, f"init failed with authentication turned on, root locked out: {done.stderr}"


def test_migrate_moves_a_legacy_callback_without_deleting_others(run_dsh, env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    # Before auth anyone could write /dsh/v1/cb/u (a "legacy callback" with token "u");
    # migrate, as root, moves it and deletes with prefix=True every key under cb/u…
    from dsh.session.codec import dumps
    from dsh.session.records import Callback

    with Etcd(extra=["--bcrypt-cost", "4"]) as server:
        endpoint = server.members[0].endpoint
        etcdctl(endpoint, "put", "/dsh/v1/cb/u", dumps(Callback("mallory", "x", "1.1.1", None)).decode())
        etcdctl(endpoint, "put", "/dsh/v1/cb/u/alice/" + "T" * 32, "{}")  # a callback of today's layout
        root = login(env, server, "root", "any: auth is off")
        assert run_dsh(["admin", "migrate"], env_extra=root).returncode in (0, 1)
        left = etcdctl(endpoint, "get", "--prefix", "--keys-only", "/dsh/v1/cb/u/alice/")
        assert "T" * 32 in left, "alice's callback was deleted by the migration of token 'u'"

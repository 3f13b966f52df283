"""`dsh admin`: etcd's users and roles for dsh, set up and shown (issue 21).

    dsh admin init [--yes]                       authentication on, root and dsh's roles
    dsh admin show [--json]                      the accounts, the database, the alarms
    dsh admin user add NAME [--service|--serve]  a person (or a service, or dsh serve)
    dsh admin user rm NAME [--purge]             the user, its role, its record (its tree)
    dsh admin user passwd NAME                   a new password (the old tokens die)
    dsh admin team add TEAM --member NAME…       a team (its tree t/TEAM/) with these people in it
    dsh admin team rm TEAM [--purge]             every member out, its role gone (its tree too)
    dsh admin team member add|rm TEAM NAME…      people into, or out of, a team
    dsh admin migrate [--map OSUSER=ETCDUSER…] [--dry-run] [--force]
                                                 what dsh kept before issue 21, where it is now

Every subcommand but `show` runs as etcd's root user (DSH_ETCD_USER=root and
its password, as for any etcd client of dsh). A new user's password comes from
DSH_ADMIN_PASSWORD, else from a prompt at the terminal (asked twice, not
echoed); it goes to etcd and nowhere else. The work is dsh.session.access's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from dsh.cli.args import flag
from dsh.cli.wiring import STORE_TIMEOUT, Wiring
from dsh.errors import StoreError, UsageError
from dsh.exits import Exit

if TYPE_CHECKING:
    from dsh.session.access import Admin

T = TypeVar("T")

USAGE = (
    "dsh admin init [--yes] | show [--json] | user add NAME [--service|--serve] | "
    "user rm NAME [--purge] | user passwd NAME | team add TEAM --member NAME… | team rm TEAM [--purge] | "
    "team member add|rm TEAM NAME… | migrate [--map OSUSER=ETCDUSER]… [--dry-run] [--force]"
)


def admin(wiring: Wiring, rest: list[str]) -> int:
    """`dsh admin …`: see the module."""
    args = list(rest)
    if args[:1] == ["init"]:
        yes = flag(args, "--yes")
        _no_more(args[1:])
        return _init(wiring, yes)
    if args[:1] == ["show"]:
        as_json = flag(args, "--json")
        _no_more(args[1:])
        return _show(wiring, as_json)
    if args[:2] == ["user", "add"] and len(args) >= 3:
        service, serve = flag(args, "--service"), flag(args, "--serve")
        if service and serve:
            raise UsageError("a user is a --service account or a --serve one, not both")
        _no_more(args[3:])
        kind = "serve" if serve else "service" if service else "person"
        return _user_add(wiring, _name(args[2]), kind)
    if args[:2] == ["user", "rm"] and len(args) >= 3:
        purge = flag(args, "--purge")
        _no_more(args[3:])
        return _user_rm(wiring, _name(args[2]), purge)
    if args[:2] == ["user", "passwd"] and len(args) == 3:
        return _passwd(wiring, _name(args[2]))
    if args[:2] == ["team", "add"] and len(args) >= 3 and "--member" in args:
        at = args.index("--member")
        names = [_name(n) for n in args[at + 1 :]]
        if at != 3 or not names:
            raise UsageError("team add takes: dsh admin team add TEAM --member NAME [NAME…]")
        return _team(wiring, _name(args[2], "a team"), names, add=True)
    if args[:2] == ["team", "rm"] and len(args) >= 3:
        purge = flag(args, "--purge")
        _no_more(args[3:])
        return _team_rm(wiring, _name(args[2], "a team"), purge)
    if args[:3] in (["team", "member", "add"], ["team", "member", "rm"]) and len(args) >= 5:
        names = [_name(n) for n in args[4:]]
        return _team(wiring, _name(args[3], "a team"), names, add=args[2] == "add")
    if args[:1] == ["migrate"]:
        dry, force = flag(args, "--dry-run"), flag(args, "--force")
        mapping: dict[str, str] = {}
        rest = args[1:]
        while rest[:1] == ["--map"] and len(rest) >= 2:
            old, equals, new = rest[1].partition("=")
            if not equals or not old or "/" in old:
                raise UsageError(
                    f"--map {rest[1]!r}: give OSUSER=ETCDUSER (the tree's old name, the new one)"
                )
            mapping[old] = _name(new)
            rest = rest[2:]
        _no_more(rest)
        return _migrate(wiring, mapping, dry=dry, force=force)
    raise UsageError(f"admin takes: {USAGE}")


def _no_more(args: list[str]) -> None:
    if args:
        raise UsageError(f"dsh admin: {args[0]!r} is not understood here ({USAGE})")


def _name(name: str, what: str = "a person") -> str:
    from dsh.session.access import checked_name

    return checked_name(name, what)


def _run(
    wiring: Wiring, work: Callable[[Admin], Awaitable[T]], *, root: bool = True, init: bool = False
) -> T:
    """`work` with an Admin of the settings' etcd store (as root, unless not `root`)."""
    from dsh.session.access import ROOT, Admin
    from dsh.store.etcd import EtcdStore

    settings = wiring.settings
    if not settings.store.startswith("etcd"):
        raise UsageError("dsh admin manages an etcd store's users: give --store etcd[s]://…")
    user = wiring.etcd_user()
    if root and user != ROOT:
        who = f"you log in as {user}" if user else "you give no etcd user"
        raise UsageError(
            f"dsh admin runs as etcd's root user ({who}): give DSH_ETCD_USER=root (or etcd://root@…) "
            "and its password (DSH_ETCD_PASSWORD_FILE)"
        )
    store = wiring.store()
    assert isinstance(store, EtcdStore)
    if init:  # it is what turns authentication on
        store = EtcdStore(dataclasses.replace(store.options, auth_off_ok=True))

    async def run() -> T:
        try:
            return await work(Admin(store, STORE_TIMEOUT))
        finally:
            await store.close()

    return asyncio.run(run())


def _init(wiring: Wiring, yes: bool) -> int:
    async def work(admin: Admin) -> int:
        changes = await admin.init_changes()
        where = admin.store.name
        if not changes:
            print(f"etcd at {where} is set up for dsh: authentication is on, and dsh's roles are there")
            return Exit.OK
        print(f"dsh admin init would change etcd at {where}:")
        for change in changes:
            print(f"  - {change}")
        if not yes:
            sys.stderr.write("dsh: run it again with --yes to make these changes\n")
            return Exit.USAGE
        await admin.init(admin.store.options.password or "")
        print("done: add people with dsh admin user add NAME")
        return Exit.OK

    return _run(wiring, work, init=True)


def _user_add(wiring: Wiring, name: str, kind: str) -> int:
    password = _new_password(wiring, name)

    async def work(admin: Admin) -> int:
        made = await admin.add_user(name, password, kind, by=admin.store.options.user or "")
        what = {"person": "a person's", "service": "a service's", "serve": "dsh serve's"}[kind]
        tree = "" if kind == "serve" else f"; their tree is u/{name}/"
        if made:
            print(f"etcd user {name} made: {what} account{tree}")
        else:
            print(f"etcd user {name} was there (its password is unchanged): now {what} account{tree}")
        return Exit.OK

    return _run(wiring, work)


def _user_rm(wiring: Wiring, name: str, purge: bool) -> int:
    async def work(admin: Admin) -> int:
        done = await admin.remove_user(name, purge=purge)
        if done is None:
            sys.stderr.write(f"dsh: etcd has no user {name!r} of dsh's here\n")
            return Exit.NOT_OK
        kept = "" if purge else f"; their sessions are kept under u/{name}/ (--purge removes them)"
        print(f"etcd user {name} {done}{kept}. Watches they hold open go on until their connection breaks.")
        return Exit.OK

    return _run(wiring, work)


def _passwd(wiring: Wiring, name: str) -> int:
    password = _new_password(wiring, name)

    async def work(admin: Admin) -> int:
        await admin.passwd(name, password)
        print(f"etcd user {name}'s password changed: their running dsh stops at its next call to etcd")
        return Exit.OK

    return _run(wiring, work)


def _team(wiring: Wiring, team: str, names: list[str], *, add: bool) -> int:
    async def work(admin: Admin) -> int:
        if add:
            made = await admin.add_members(team, names)
            print(f"team {team}: {', '.join(made.members)}; its tree is t/{team}/")
        else:
            left = await admin.remove_members(team, names)
            print(
                f"team {team}: {', '.join(left.members) or 'nobody'} left; etcd refuses "
                f"{', '.join(names)} in it from now on (watches they hold open go on until "
                "their connection breaks)"
            )
        return Exit.OK

    return _run(wiring, work)


def _team_rm(wiring: Wiring, team: str, purge: bool) -> int:
    async def work(admin: Admin) -> int:
        if not await admin.remove_team(team, purge=purge):
            sys.stderr.write(f"dsh: there is no team {team!r}\n")
            return Exit.NOT_OK
        kept = "" if purge else f"; its sessions are kept under t/{team}/ (--purge removes them)"
        print(f"team {team} removed{kept}")
        return Exit.OK

    return _run(wiring, work)


def _migrate(wiring: Wiring, mapping: dict[str, str], *, dry: bool, force: bool) -> int:
    async def work(admin: Admin) -> int:
        from dsh.session.migrate import Migration

        moves = await Migration(admin.store, mapping, dry=dry, force=force, timeout=admin.timeout).run()
        verb = "would move" if dry else "moved"
        for line in moves.moved:
            print(f"{verb} {line}")
        for line in moves.left:
            print(f"left {line}")
        if not moves.moved and not moves.left:
            print("nothing to move")
        return Exit.NOT_OK if moves.left else Exit.OK

    return _run(wiring, work)


def _new_password(wiring: Wiring, name: str) -> str:
    """The new user's password: DSH_ADMIN_PASSWORD, else asked twice at the terminal."""
    given = wiring.settings.env.get("DSH_ADMIN_PASSWORD")
    if given is None:
        if not sys.stdin.isatty():
            raise UsageError(f"give etcd user {name}'s password in DSH_ADMIN_PASSWORD, or run at a terminal")
        given = getpass.getpass(f"password for etcd user {name}: ")
        if getpass.getpass("the same again: ") != given:
            raise UsageError("the two passwords differ: nothing was changed")
    if not given:
        raise UsageError(f"etcd user {name} needs a password that is not empty")
    return given


# -- show -----------------------------------------------------------------------------


def _show(wiring: Wiring, as_json: bool) -> int:
    from dsh.session.access import ROOT

    async def work(admin: Admin) -> dict[str, object]:
        from dsh.store.etcdauth import metrics

        store, t = admin.store, admin.timeout
        on = await admin.auth_on()
        status = await admin.auth.status(timeout=t)
        facts: dict[str, object] = {
            "store": store.name,
            "version": status.version,
            "auth": on,
            "db_size": status.db_size,
            "db_size_in_use": status.db_size_in_use,
            "alarms": await admin.auth.alarms(timeout=t),
        }
        try:
            gauges = await asyncio.to_thread(metrics, store.options, t)
        except StoreError as exc:
            facts["metrics"] = str(exc)
        else:
            facts["quota"] = gauges.get("etcd_server_quota_backend_bytes")
            facts["compact_revision"] = gauges.get("etcd_debugging_mvcc_compact_revision")
        user = store.options.user
        if user == ROOT or not on:
            facts["accounts"] = [
                {"name": a.name, "kind": a.kind, "roles": list(a.roles)} for a in await admin.accounts()
            ]
            facts["teams"] = {team: list(members) for team, members in (await admin.teams()).items()}
        elif user is not None:
            facts["you"] = {"name": user, "roles": list(await admin.auth.user_roles(user, timeout=t) or ())}
        return facts

    facts = _run(wiring, work, root=False, init=True)
    if as_json:
        from dsh.render import json_line

        print(json_line(facts))
        return Exit.OK
    on = "on" if facts["auth"] else "OFF"
    print(f"etcd at {facts['store']}: version {facts['version']}, authentication {on}")
    print(_database(facts))
    print(
        "auto-compaction: etcd does not say whether it is on; dsh compacts history beyond "
        "100,000 revisions as it writes"
    )
    alarms = facts["alarms"]
    print("alarms: " + (", ".join(alarms) if isinstance(alarms, list) and alarms else "none"))
    accounts = facts.get("accounts")
    if isinstance(accounts, list):
        print("accounts:")
        width = max((len(a["name"]) for a in accounts), default=4)
        for account in accounts:
            print(f"  {account['name']:<{width}}  {account['kind']:<7}  {', '.join(account['roles'])}")
    teams = facts.get("teams")
    if isinstance(teams, dict) and teams:
        print("teams:")
        for team, members in sorted(teams.items()):
            print(f"  {team}: {', '.join(members) or 'nobody'}")
    you = facts.get("you")
    if isinstance(you, dict):
        print(f"you are etcd user {you['name']}, with roles: {', '.join(you['roles']) or 'none'}")
    return Exit.OK


def _database(facts: dict[str, object]) -> str:
    size, used, quota = facts["db_size"], facts["db_size_in_use"], facts.get("quota")
    assert isinstance(size, int) and isinstance(used, int)
    text = f"database {_mib(size)}"
    if isinstance(quota, float) and quota > 0:
        text += f" of {_mib(int(quota))} quota ({100 * size / quota:.0f}%)"
    text += f", {_mib(used)} in use"
    compacted = facts.get("compact_revision")
    if isinstance(compacted, float):
        text += f"; history compacted to revision {int(compacted)}"
    if "metrics" in facts:
        text += f" (the quota is not known: {facts['metrics']})"
    return text


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB" if size < 1024**3 else f"{size / 1024**3:.1f} GiB"

"""Who may do what on a shared etcd (issue 21): persons, their trees, and the
etcd roles that enforce it. `dsh admin` (dsh.cli.admin) is its command line.

Separation is etcd's own: each person is an etcd user whose role reads and
writes that person's tree only, so that nobody else can read their bindings or
journal, put a line into their sessions, or stop or take them over. The roles,
each permission a prefix that ends at a "/" (user `al` gets nothing of
`alice`'s), with R = the store's prefix and /dsh/v1/:

    dsh{P}/r/user      READ R serve/, READ R people/       every person and service account
    dsh{P}/u/NAME      READWRITE R u/NAME/, R cb/u/NAME/,  NAME: their tree, their callbacks
                       R ev/u/NAME/                        and the POSTs those received
    dsh{P}/r/serve     READWRITE R serve/, READ R cb/,     accounts of `dsh serve`: it registers,
                       READWRITE R ev/                     finds callbacks, writes their POSTs
    dsh{P}/t/TEAM      READ R t/TEAM/; READWRITE R         every member of TEAM: its sessions'
                       t/TEAM/s/, t/TEAM/keys/, R          state (any member may take one
                       cb/t/TEAM/, R ev/t/TEAM/            over), keys and callbacks
    dsh{P}/t/TEAM/by/NAME  READWRITE R t/TEAM/by/NAME/     member NAME: their own requests

So nobody else can read a person's bindings, journal or callback secret (so
compute a callback's token), put a line into their sessions, stop or take them
over, register a callback server (and redirect callback URLs), or deliver a
POST to their callbacks but through `dsh serve` and the callback's URL.

P is the store's prefix ("" or "/team-a"), so that two dsh installations in one
etcd keep roles of their own. `R people/NAME` (Person, written by root only)
says that an etcd user is a person's (or a service's) account.

A person's tree is that of the etcd user dsh logs in as (`person_of`); with no
etcd user, the OS user's, as before issue 21.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import TYPE_CHECKING

from dsh.errors import UsageError
from dsh.record import record
from dsh.session import codec
from dsh.session.keys import CALLBACKS, EVENTS, KEY_ROOT, SERVERS, members_key, user_name
from dsh.session.records import Person, Team
from dsh.store.base import prefix_end

if TYPE_CHECKING:  # gRPC is loaded by Admin alone: whose tree a process works in needs none
    from dsh.store.etcd import EtcdStore
    from dsh.store.etcdauth import Permission

#: The name of a person, a service account or a team: what an etcd user (and a
#: key path) may be named by dsh admin.
NAME = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
#: Where each person's record is kept.
PEOPLE = KEY_ROOT + b"people/"
#: etcd's own all-powerful role and user.
ROOT = "root"
#: The most members a team has: the owner reads each one's requests in one snapshot.
MAX_MEMBERS = 128


def checked_name(name: str, what: str = "a person") -> str:
    """`name`, when it can name `what` (an etcd user or a team made by dsh admin)."""
    if name == ROOT:
        raise UsageError(f"{name!r} cannot name {what}: it is etcd's administrator")
    if name.startswith("dsh") or not NAME.fullmatch(name):
        raise UsageError(
            f"{name!r} cannot name {what}: lower-case letters, digits, '_', '.', '-', "
            "starting with a letter or '_', at most 32, and not starting with 'dsh'"
        )
    return name


def person_key(name: str) -> bytes:
    return PEOPLE + name.encode()


def person_of(etcd_user: str | None) -> str:
    """Whose tree a dsh process works in: its etcd user's, else its OS user's."""
    if etcd_user is None:
        return user_name()
    if "/" in etcd_user or not etcd_user.isprintable() or len(etcd_user) > 128:
        raise UsageError(
            f"etcd user {etcd_user!r} cannot name a tree of dsh's (a '/' or a control character)"
        )
    return etcd_user


def _under(key: bytes, kind: str = "readwrite") -> Permission:
    from dsh.store.etcdauth import Permission

    return Permission(kind, key, prefix_end(key))  # type: ignore[arg-type]


class Roles:
    """The names and permissions of dsh's roles, for one store prefix."""

    def __init__(self, store_prefix: bytes) -> None:
        self.tag = "dsh" + store_prefix.decode()

    # The shared roles have a kind of their own (r/), so that no person's role
    # (u/NAME) of this or of another installation's prefix can be named like them.
    @property
    def user(self) -> str:
        return f"{self.tag}/r/user"

    @property
    def serve(self) -> str:
        return f"{self.tag}/r/serve"

    def ours(self, role: str) -> bool:
        """Whether `role` is one of this installation's (its prefix's)."""
        if role in (self.user, self.serve):
            return True
        rest = role[len(self.tag) + 1 :].split("/") if role.startswith(self.tag + "/") else []
        return (len(rest) == 2 and rest[0] in ("u", "t")) or (len(rest) == 4 and rest[::2] == ["t", "by"])

    def teams_of(self, roles: tuple[str, ...]) -> list[str]:
        """The teams whose role is among `roles` (a user's)."""
        return sorted(
            r.split("/")[-1]
            for r in roles
            if self.ours(r) and r.startswith(self.tag + "/t/") and "/by/" not in r
        )

    def person(self, name: str) -> str:
        return f"{self.tag}/u/{name}"

    def team(self, team: str) -> str:
        return f"{self.tag}/t/{team}"

    def member(self, team: str, name: str) -> str:
        """A member's own path in a team: where their requests are theirs alone."""
        return f"{self.tag}/t/{team}/by/{name}"

    def permissions(self, role: str) -> list[Permission]:
        if role == self.user:
            return [_under(SERVERS, "read"), _under(PEOPLE, "read")]
        if role == self.serve:
            return [_under(SERVERS), _under(CALLBACKS, "read"), _under(EVENTS)]
        rest = role.removeprefix(self.tag + "/").split("/")
        if rest[0] == "t" and len(rest) == 4:  # a member's own path in the team
            return [_under(KEY_ROOT + f"t/{rest[1]}/by/{rest[3]}/".encode())]
        if rest[0] == "t":  # the team: all of it read, its sessions' state, keys, callbacks written
            team = f"t/{rest[1]}/".encode()
            return [
                _under(KEY_ROOT + team, "read"),
                *(_under(KEY_ROOT + team + part) for part in (b"s/", b"keys/")),
                *(_under(root + team) for root in (CALLBACKS, EVENTS)),
            ]
        return [_under(root + f"u/{rest[1]}/".encode()) for root in (KEY_ROOT, CALLBACKS, EVENTS)]


@record
class Account:
    """An etcd user as dsh admin sees it: `kind` person, service, serve (an account
    of dsh serve), root, or other (not made by dsh admin)."""

    name: str
    kind: str
    roles: tuple[str, ...]


class Admin:
    """dsh admin's work on one etcd store, as its root user (or, for `accounts`
    and `whoami`, any user)."""

    def __init__(self, store: EtcdStore, timeout: float) -> None:
        from dsh.store.etcdauth import EtcdAuth

        self.store = store
        self.auth = EtcdAuth(store)
        self.roles = Roles(store.raw_key(b""))
        self.timeout = timeout

    # -- init --------------------------------------------------------------------------

    async def auth_on(self) -> bool:
        """Whether etcd's authentication is on (asked with this handle's user)."""
        await self.auth.status(timeout=self.timeout)  # any user may ask it: it logs in first
        return bool(self.store.security.auth)

    async def init_changes(self) -> list[str]:
        """What `dsh admin init` would change, in sentences (none: nothing to do)."""
        t = self.timeout
        changes: list[str] = []
        on = await self.auth_on()
        users = await self.auth.users(timeout=t)
        roles = await self.auth.roles(timeout=t)
        if ROOT not in users:
            changes.append("etcd user root is made, with the password dsh logs in with, and role root")
        elif not on:  # with authentication off its password was never checked: it is set now
            changes.append("etcd user root's password is set to the one dsh logs in with")
        for role in (self.roles.user, self.roles.serve):
            if role not in roles or not await self._has_permissions(role):
                changes.append(f"role {role} is made: {_said(self.roles.permissions(role), self.store)}")
        if not on:
            outside = await self.auth.keys_outside(KEY_ROOT, timeout=t)
            others = f" (other applications too: {outside} keys outside dsh's)" if outside else ""
            changes.append(
                "authentication goes on: every client of this etcd" + others + " will need a user and "
                "password, and etcd's anonymous access ends"
            )
        return changes

    async def _has_permissions(self, role: str) -> bool:
        held = await self.auth.role_permissions(role, timeout=self.timeout) or []
        return all(p in held for p in self.roles.permissions(role))

    async def init(self, password: str) -> None:
        """Make root (if missing), dsh's roles, and turn authentication on."""
        t = self.timeout
        on = await self.auth_on()
        if not await self.auth.user_add(ROOT, password, timeout=t) and not on:
            # there, with a password nothing checked yet: the one dsh logs in with, so
            # that turning authentication on never locks the administrator out
            await self.auth.user_passwd(ROOT, password, timeout=t)
        if ROOT not in (await self.auth.user_roles(ROOT, timeout=t) or ()):
            await self.auth.grant_role(ROOT, ROOT, timeout=t)
        for role in (self.roles.user, self.roles.serve):
            await self._role(role)
        await self.auth.enable(timeout=t)
        if not await self.auth_on():
            raise UsageError("etcd's authentication did not come on: see etcd's log")

    async def _role(self, role: str) -> None:
        await self.auth.role_add(role, timeout=self.timeout)
        held = await self.auth.role_permissions(role, timeout=self.timeout) or []
        for permission in self.roles.permissions(role):
            if permission not in held:
                await self.auth.grant(role, permission, timeout=self.timeout)

    # -- users -------------------------------------------------------------------------

    async def add_user(self, name: str, password: str, kind: str, by: str) -> bool:
        """Add etcd user `name` with its roles: a person's or a service's tree, or
        the serve role. False when the user was there (its password left alone)."""
        t = self.timeout
        held = await self.auth.user_roles(name, timeout=t)
        if held is not None:
            was = (
                "serve" if self.roles.serve in held else "person" if self.roles.person(name) in held else None
            )
            if was is not None and (was == "serve") != (kind == "serve"):
                raise UsageError(
                    f"etcd user {name} is {'dsh serve' if was == 'serve' else 'a person'}'s account: "
                    "an account is a person's (or a service's) or dsh serve's, never both"
                )
        made = await self.auth.user_add(name, password, timeout=t)
        if kind == "serve":
            await self._role(self.roles.serve)
            await self.auth.grant_role(name, self.roles.serve, timeout=t)
            return made
        role = self.roles.person(name)
        await self._role(role)
        await self._role(self.roles.user)
        await self.auth.grant_role(name, role, timeout=t)
        await self.auth.grant_role(name, self.roles.user, timeout=t)
        person = Person(name=name, kind=kind, created=time.time(), by=by)
        await self.store.put(person_key(name), codec.dumps(person), timeout=t)
        return made

    async def remove_user(self, name: str, *, purge: bool) -> str | None:
        """Take etcd user `name` out of this installation: its roles here and its
        record go; the user itself (and every token of theirs, at once) when it holds
        no other role (another installation's, another application's). With `purge`,
        its tree too. What was done, in words; None when it was not dsh's here."""
        t = self.timeout
        held = await self.auth.user_roles(name, timeout=t)
        if held is None:
            return None
        for team in self.roles.teams_of(held):  # out of their teams first: their paths there go
            with contextlib.suppress(UsageError):
                await self.remove_members(team, [name])
        ours = [role for role in held if self.roles.ours(role)]
        if not ours and await self.store.get(person_key(name), timeout=t) is None:
            return None  # an account dsh did not make (here): not dsh's to remove
        for role in ours:
            await self.auth.revoke_role(name, role, timeout=t)
        await self.auth.role_delete(self.roles.person(name), timeout=t)
        await self.store.delete(person_key(name), timeout=t)
        others = [role for role in held if role not in ours]
        if not others:
            await self.auth.user_delete(name, timeout=t)
            done = "removed: every token of theirs is refused from now on"
        else:
            done = f"taken out of this installation; the user stays for its other roles ({', '.join(others)})"
        if purge:  # their tree, their callbacks and the POSTs those received
            for root in (KEY_ROOT, CALLBACKS, EVENTS):
                await self.store.delete(root + f"u/{name}/".encode(), prefix=True, timeout=t)
        return done

    # -- teams -------------------------------------------------------------------------

    async def team(self, team: str) -> Team | None:
        return codec.readable(Team, await self.store.get(members_key(team), timeout=self.timeout))

    async def add_members(self, team: str, names: list[str]) -> Team:
        """Make team `team` if it is not there, with `names` in it (each a person's
        account): its role and each member's own path in it; their record last."""
        t = self.timeout
        for name in names:
            person = codec.readable(Person, await self.store.get(person_key(name), timeout=t))
            if person is None or person.kind != "person":
                what = "no account of dsh's" if person is None else f"a {person.kind} account"
                raise UsageError(
                    f"etcd user {name} is {what}: a team's members are people (dsh admin user add {name})"
                )
        held = await self.team(team)
        members = tuple(dict.fromkeys([*(held.members if held else ()), *names]))
        if len(members) > MAX_MEMBERS:
            raise UsageError(f"team {team} would have {len(members)} members: at most {MAX_MEMBERS}")
        await self._role(self.roles.team(team))
        for name in names:
            await self._role(self.roles.member(team, name))
            await self.auth.grant_role(name, self.roles.team(team), timeout=t)
            await self.auth.grant_role(name, self.roles.member(team, name), timeout=t)
        made = Team(team, members, time.time())
        await self.store.put(members_key(team), codec.dumps(made), timeout=t)
        return made

    async def remove_members(self, team: str, names: list[str]) -> Team:
        """Take `names` out of team `team`: etcd refuses their next request at once;
        their own path in the team (their requests) goes."""
        t = self.timeout
        held = await self.team(team)
        if held is None:
            raise UsageError(f"there is no team {team}")
        strangers = [name for name in names if name not in held.members]
        if strangers:
            raise UsageError(
                f"{', '.join(strangers)} not in team {team} (its members: {', '.join(held.members)})"
            )
        for name in names:
            await self.auth.revoke_role(name, self.roles.team(team), timeout=t)
            await self.auth.revoke_role(name, self.roles.member(team, name), timeout=t)
            await self.auth.role_delete(self.roles.member(team, name), timeout=t)
            await self.store.delete(KEY_ROOT + f"t/{team}/by/{name}/".encode(), prefix=True, timeout=t)
        left = Team(team, tuple(m for m in held.members if m not in names), time.time())
        await self.store.put(members_key(team), codec.dumps(left), timeout=t)
        return left

    async def teams(self) -> dict[str, tuple[str, ...]]:
        """Every team of this installation (its role) and its members (its record; a
        role without a record: none)."""
        prefix = self.roles.team("")
        names = [
            r[len(prefix) :] for r in await self.auth.roles(timeout=self.timeout) if r.startswith(prefix)
        ]
        found: dict[str, tuple[str, ...]] = {}
        for name in names:
            if "/" not in name:
                held = await self.team(name)
                found[name] = held.members if held is not None else ()
        return found

    async def remove_team(self, team: str, *, purge: bool) -> bool:
        """Every member out, the team's role and record gone; with `purge`, its tree,
        callbacks and their POSTs too. False when there was no such team."""
        t = self.timeout
        held = await self.team(team)
        if held is None and self.roles.team(team) not in await self.auth.roles(timeout=t):
            return False
        if held is not None:
            await self.remove_members(team, list(held.members))
        await self.auth.role_delete(self.roles.team(team), timeout=t)
        await self.store.delete(members_key(team), timeout=t)
        if purge:
            for root in (KEY_ROOT, CALLBACKS, EVENTS):
                await self.store.delete(root + f"t/{team}/".encode(), prefix=True, timeout=t)
        return True

    async def passwd(self, name: str, password: str) -> None:
        if await self.auth.user_roles(name, timeout=self.timeout) is None:
            raise UsageError(f"etcd has no user {name!r}")
        await self.auth.user_passwd(name, password, timeout=self.timeout)

    async def accounts(self) -> list[Account]:
        """Every etcd user, told apart by dsh's records and roles."""
        t = self.timeout
        people: dict[str, str] = {}
        held, _ = await self.store.range(PEOPLE, timeout=t)
        for kv in held:
            record_ = codec.readable(Person, kv)
            if record_ is not None:
                people[record_.name] = record_.kind
        found: list[Account] = []
        for name in await self.auth.users(timeout=t):
            roles = await self.auth.user_roles(name, timeout=t) or ()
            if name == ROOT:
                kind = "root"
            elif name in people:
                kind = people[name]
            elif self.roles.serve in roles:
                kind = "serve"
            else:
                kind = "other"
            found.append(Account(name, kind, tuple(roles)))
        return found


def _said(permissions: list[Permission], store: EtcdStore) -> str:
    return ", ".join(f"{p.kind} {store.raw_key(p.key).decode(errors='replace')}" for p in permissions)

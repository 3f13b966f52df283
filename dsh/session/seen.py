"""The shared-account tripwire (issue 21): team features need one etcd account per
person, since the journal's "who" and an approval's count are etcd users.

Each dsh that uses team features marks which OS user uses its etcd user on this
machine (`u/NAME/seen/MACHINE`, in the etcd user's own tree). When the mark names
another OS user seen within `HOLD`, the command is refused with a sentence: two
people (two logins) share one etcd account. What it cannot see: one account used
by people who each have one login on different machines (docs/security.md).
"""

from __future__ import annotations

from dsh.errors import UsageError
from dsh.session.access import checked_name, person_key
from dsh.session.codec import dumps, readable
from dsh.session.keys import seen_key
from dsh.session.records import Person, Seen
from dsh.store.base import Compare, Put, Store

#: How long a mark keeps other OS users out (seconds).
HOLD = 30 * 86400.0
#: How old a mark of one's own may grow before it is written again (seconds).
REFRESH = 86400.0


class SharedAccount(UsageError):
    """One etcd account, two OS users on one machine."""


async def vouch(store: Store, person: str, machine: str, os_user: str, *, now: float, timeout: float) -> None:
    """Refuse when another OS user used etcd user `person` on `machine` lately; else
    mark `os_user` as its user there (written only when new, changed or stale, and
    only over the mark read: two first uses at once do not both win)."""
    key = seen_key(person, machine)
    for _ in range(3):  # a mark written meanwhile: read it again
        held = await store.get(key, timeout=timeout)
        seen = readable(Seen, held)  # a mark that cannot be read is replaced (the person's own tree)
        if seen is not None and seen.os_user != os_user and now - seen.t < HOLD:
            raise SharedAccount(
                f"etcd user {person} is used by OS users {seen.os_user} and {os_user} on {machine}: "
                f"team features need one etcd account per person ({_advice(os_user)})"
            )
        if seen is not None and seen.os_user == os_user and now - seen.t < REFRESH:
            return
        was = held.mod_revision if held is not None else 0
        put = Put(key, dumps(Seen(os_user, round(now, 3))))
        if (await store.txn([Compare(key, "mod", "==", was)], [put], timeout=timeout)).succeeded:
            return
    raise SharedAccount(f"etcd user {person}'s mark on {machine} keeps changing: another OS user is using it")


async def a_person(store: Store, person: str, *, timeout: float) -> None:
    """Refuse team features to an account that is not a person's (`people/NAME`, as
    `dsh admin user add` records it): etcd's root, a service's, one dsh did not make."""
    held = readable(Person, await store.get(person_key(person), timeout=timeout))
    if held is not None and held.kind == "person":
        return
    what = (
        "etcd's root"
        if person == "root"
        else "no account of dsh's"
        if held is None
        else f"a {held.kind} account"
    )
    raise UsageError(
        f"etcd user {person} is {what}, not a person's: team features are people's "
        "(dsh admin user add NAME makes one)"
    )


def _advice(os_user: str) -> str:
    """The way out: an etcd account of their own, under their OS name when that can
    name a person (never `root`, `dsh…`, capitals: dsh admin would refuse it)."""
    try:
        return f"dsh admin user add {checked_name(os_user)}"
    except UsageError:
        return f"dsh admin user add NAME, an account for OS user {os_user}"

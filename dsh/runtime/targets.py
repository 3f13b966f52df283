"""The hosts of a target when its line starts: ClusterShell's pattern, with the
groups of the config and of other inventories (looked up now, off the event
loop: a group source's program may take its timeout), the result sets of the
previous line and the bindings that hold hosts."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

from dsh import nodeset
from dsh import plan as p
from dsh.errors import DshError
from dsh.inventory.base import InventoryError
from dsh.inventory.lookup import Inventory
from dsh.runtime.values import HostsValue, StrValue, Value, value_text

#: The `@src:name` groups that the compiler writes into a pattern.
_REFERENCE = re.compile(r"@(inv|res|var|grp):([A-Za-z_][A-Za-z0-9_-]*)")


class Refused(DshError):
    """A line refused at run time, before anything of it ran."""

    exit_code = 2


async def hosts_of(
    target: p.HostSet,
    limit: int,
    *,
    lookup: Inventory,
    sets: Mapping[str, tuple[str, ...]],
    bindings: Mapping[str, Value],
) -> list[str]:
    """The hosts of `target` now, at most `limit`; Refused with a sentence."""
    looked: dict[str, str] = {}
    if target.groups:

        def look() -> dict[str, str]:
            return {f"g{i}": lookup.members(ref.source, ref.name) for i, ref in enumerate(target.groups)}

        try:
            looked = await asyncio.to_thread(look)
        except InventoryError as exc:
            raise Refused(f"{target.written}: {exc.message}") from exc
    groups: dict[str, dict[str, str]] = {}
    for source, name in _REFERENCE.findall(target.pattern):
        if source == nodeset.GROUPS:
            if name not in looked:
                raise Refused(f"{target.written}: {name!r} is not one of its groups")
            members = looked[name]
        else:
            members = _members(source, name, target, lookup.groups, sets, bindings)
        groups.setdefault(source, {})[name] = members
    try:
        return nodeset.expand(target.pattern, groups, limit=limit)
    except nodeset.HostSetError as exc:
        raise Refused(f"{target.written}: {exc}") from exc


def _members(
    source: str,
    name: str,
    target: p.HostSet,
    inventory: Mapping[str, str],
    sets: Mapping[str, tuple[str, ...]],
    bindings: Mapping[str, Value],
) -> str:
    if source == nodeset.RESULTS:
        return nodeset.as_text(sets.get(name, ()))
    if source == nodeset.INVENTORY:
        if name in inventory:
            return inventory[name]
    else:
        value = bindings.get(name)
        if isinstance(value, HostsValue | StrValue):
            return value_text(name, value)
    raise Refused(f"{target.written}: {name!r} is not defined")

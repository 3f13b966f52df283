"""Ansible inventories, read without Ansible (`--inventory FILE`): their groups,
children included, as node-set text, and how to reach each host (HostVars).

`load` reads the file in one of Ansible's two static formats: YAML (a name
ending in .yml, .yaml or .json: JSON is YAML) with `ansible_yaml`, anything
else as INI with `ansible_ini`; an INI read that fails on a file whose first
line of content looks like YAML (`---`, `{`, or a top-level `KEY:`) is read
as YAML instead. Both readers fill a `Builder` (host patterns, groups,
variables), and `Builder.finish` makes the inventory as Ansible sees it:

- a group no other group has as a child is a child of `all`; every host is in
  `all`, and a host in no group but `all` is in `ungrouped`;
- a host's variables are those of its groups (where it is written, and their
  ancestors) taken in Ansible's order (depth below `all`, then
  `ansible_group_priority`, then name), each over the ones before, then its
  own: a host's over a child group's over its parent's over `all`'s, and of
  two groups at the same depth the one later alphabetically;
- of a value's two names the legacy one wins, as in Ansible
  (`ansible_ssh_host` over `ansible_host` whichever level set either).

The variables dsh reads, and those it warns about (ansible_connection other
than ssh, passwords, templates), are listed and checked in ansible_vars; host
patterns are expanded by ansible_hosts.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import NoReturn

from dsh import nodeset
from dsh.inventory import ansible_hosts, ansible_vars
from dsh.inventory.ansible_hosts import shown
from dsh.inventory.base import INVENTORY, HostVars, InventoryError
from dsh.wholefile import NotRegular, OverCap, read_whole

#: An inventory file larger than this is refused before it is read.
MAX_BYTES = 16 << 20
#: The most names the host patterns of one file make together (each one makes at
#: most nodeset.MAX_EXPAND).
MAX_NAMES = 10 * nodeset.MAX_EXPAND
YAML_SUFFIXES = (".yml", ".yaml", ".json")

_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class AnsibleInventory:
    """An Ansible inventory as dsh uses it: a GroupSource (`@{inventory:NAME}`), every
    host's HostVars, and the warnings its reading gave."""

    def __init__(
        self,
        path: str,
        hosts: Mapping[str, HostVars],
        groups: Mapping[str, tuple[Collection[str], Collection[str]]],
        warnings: list[str],
    ) -> None:
        self.path = path
        self.hosts = hosts
        self.warnings = warnings
        self._groups = groups  # name -> (its own hosts, its children)

    @property
    def name(self) -> str:
        return INVENTORY

    def members(self, group: str) -> str | None:
        """The hosts of `group` and of its children, recursively, as node-set text
        (folded when they are few); None if there is no such group."""
        if group not in self._groups:
            return None
        found: set[str] = set()
        seen, todo = {group}, [group]
        while todo:
            hosts, children = self._groups[todo.pop()]
            found.update(hosts)
            fresh = [child for child in children if child not in seen]
            seen.update(fresh)
            todo.extend(fresh)
        return nodeset.as_text(sorted(found))

    def names(self) -> list[str]:
        return sorted(self._groups)


def load(path: Path | str, reserved: Collection[str] = ()) -> AnsibleInventory:
    """The inventory at `path`, in YAML or INI (see the module's docstring);
    InventoryError with a sentence (`FILE:LINE: …`) when it cannot be read.
    A group named like one of `reserved` (dsh's result sets) gives a warning."""
    from dsh.inventory import ansible_ini, ansible_yaml

    name = str(path)
    text = _read(name)
    if os.path.splitext(name)[1].lower() in YAML_SUFFIXES:
        return ansible_yaml.read(Builder(name, reserved), text)
    try:
        return ansible_ini.read(Builder(name, reserved), text)
    except InventoryError:
        if not _looks_like_yaml(text):
            raise
    return ansible_yaml.read(Builder(name, reserved), text)


_YAMLISH = re.compile(r"---|\{|[^\s\[#;:][^\s:]*:(?:\s|$)")


def _looks_like_yaml(text: str) -> bool:
    for line in text.split("\n"):
        if line.strip() and not line.lstrip().startswith(("#", ";")):
            return _YAMLISH.match(line) is not None
    return False


def _read(path: str) -> str:
    """The file's text: UTF-8, at most MAX_BYTES (its size checked before it is
    read); bytes that are not UTF-8 are kept as surrogates for the readers to place."""
    try:
        data = read_whole(os.path.expanduser(path), MAX_BYTES)
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read the inventory: {exc.strerror or exc}") from None
    except NotRegular:
        raise InventoryError(f"{path}: not a regular file; an inventory is one file") from None
    except OverCap:
        raise InventoryError(f"{path}: over {MAX_BYTES >> 20} MiB; dsh reads an inventory whole") from None
    return data.decode("utf-8", "surrogateescape").removeprefix("\ufeff")


_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def not_utf8(text: str) -> int | None:
    """Where the first byte of `_read`'s text that is not UTF-8 was, if any."""
    found = _NOT_UTF8.search(text)
    return None if found is None else found.start()


class _Group:
    __slots__ = ("children", "hosts", "vars")

    def __init__(self) -> None:
        self.hosts: dict[str, None] = {}
        self.children: dict[str, str] = {}  # child -> where it was made one
        self.vars: dict[str, object] = {}


class Builder:
    """An inventory as a reader fills it: groups (their hosts, children and
    variables), hosts (their own variables, where each was first written), and
    the warnings so far. Every place is a `where`, "FILE:LINE" or "FILE"."""

    def __init__(self, path: str, reserved: Collection[str] = ()) -> None:
        self.path = path
        self.reserved = frozenset(reserved)
        self.warnings: list[str] = []
        self.groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group()}
        self.host_vars: dict[str, dict[str, object]] = {}
        self.defined: dict[str, str] = {}
        self._made = 0
        self._passwords: dict[str, list[str]] = {}
        self._base = os.path.dirname(os.path.abspath(os.path.expanduser(path)))

    def at(self, line: int) -> str:
        return f"{self.path}:{line}"

    def fail(self, where: str, message: str) -> NoReturn:
        raise InventoryError(f"{where}: {message}")

    def warn(self, where: str, message: str) -> None:
        self.warnings.append(f"{where}: {message}")

    def group(self, name: object, where: str) -> str:
        """The group `name`, made if new: a name is letters, digits and `_`, not
        starting with a digit (`-` too, with a warning, as Ansible does)."""
        if not isinstance(name, str):
            self.fail(where, f"{shown(name)} cannot name a group: a group's name is text")
        if not _GROUP_NAME.fullmatch(name.replace("-", "_")):
            self.fail(
                where,
                f"{shown(name)} cannot name a group: a group's name is letters, digits and '_',"
                " not starting with a digit",
            )
        if name not in self.groups:
            self.groups[name] = _Group()
            if "-" in name:
                self.warn(
                    where, f"group {name!r} has a '-', which Ansible warns about (use '_'); dsh takes it"
                )
            if name in self.reserved:
                self.warn(
                    self.path,
                    f"group {name!r} has the name of a result set: @{{{name}}} is the previous line's"
                    f" {name} hosts; write @{{{INVENTORY}:{name}}} for this group",
                )
        return name

    def child(self, parent: str, child: str, where: str) -> None:
        self.groups[parent].children.setdefault(child, where)

    def variables(self, items: Iterable[tuple[object, object, str]]) -> dict[str, object]:
        """Of (name, value, where) items, the variables dsh uses, checked (see `take`)."""
        kept: dict[str, object] = {}
        for key, value, where in items:
            taken = self.take(key, value, where)
            if taken is not None:
                kept[taken[0]] = taken[1]
        return kept

    def take(self, key: object, value: object, where: str) -> tuple[str, object] | None:
        """A variable as dsh keeps it, or None when dsh does not use it (a
        password's is noted for a warning, its value dropped). InventoryError
        for a value dsh cannot use (a port out of range, a host name with blanks)."""
        if not isinstance(key, str):
            return None
        if key in ansible_vars.PASSWORDS:
            self._passwords.setdefault(key, []).append(where)
            return None
        if key not in ansible_vars.USED:
            return None
        value = ansible_vars.check(key, value, where, self._base)
        if isinstance(value, ansible_vars.Unread):
            instead = (
                ": the ssh config decides where it applies" if key in ansible_vars.CONNECTION_VARS else ""
            )
            self.warn(where, f"{key} is {value.why}{instead}")
        return key, value

    def add_hosts(self, group: str, pattern: object, where: str, variables: Mapping[str, object]) -> None:
        """The hosts of a pattern (`web[01:20]:2222`) into `group`, with `variables`
        (a port in the pattern is their ansible_port, under `variables`)."""
        if not isinstance(pattern, str):
            self.fail(where, f"host {shown(pattern)} is not text: quote it")
        names, port = ansible_hosts.expand(pattern, where, MAX_NAMES - self._made)
        self._made += len(names)
        for name in names:
            self.defined.setdefault(name, where)
            self.groups[group].hosts[name] = None
            own = self.host_vars.setdefault(name, {})
            if port is not None:
                own["ansible_port"] = port
            own.update(variables)

    def add_group_vars(self, group: str, variables: Mapping[str, object]) -> None:
        self.groups[group].vars.update(variables)

    def finish(self) -> AnsibleInventory:
        """The inventory (see the module's docstring); InventoryError for a cycle of children."""
        groups = self.groups
        parents: dict[str, set[str]] = {name: set() for name in groups}
        for name, group in groups.items():
            for child in group.children:
                parents[child].add(name)
        for name, mine in parents.items():
            if name != "all" and not mine:
                groups["all"].children[name] = ""
                mine.add("all")
        order = self._order(parents)
        depth = dict.fromkeys(groups, 0)
        ancestors: dict[str, frozenset[str]] = {name: frozenset() for name in groups}
        work = 0  # group memberships looked at: a chain of groups costs its length squared

        def spend(cost: int) -> None:
            nonlocal work
            work += cost
            if work > MAX_NAMES:
                self.fail(self.path, f"the groups nest too deep for dsh (over {MAX_NAMES} memberships)")

        for name in order:  # parents before their children
            for child in groups[name].children:
                spend(len(ancestors[name]) + 1)
                depth[child] = max(depth[child], depth[name] + 1)
                ancestors[child] = ancestors[child] | ancestors[name] | {name}
        direct: dict[str, set[str]] = {host: set() for host in self.host_vars}
        for name, group in groups.items():
            for host in group.hosts:
                direct[host].add(name)
        for host, mine in direct.items():  # Ansible's reconcile_inventory
            if mine - {"all", "ungrouped"}:
                groups["ungrouped"].hosts.pop(host, None)
                mine.discard("ungrouped")
            elif "ungrouped" not in mine:
                groups["ungrouped"].hosts[host] = None
                mine.add("ungrouped")
        groups["all"].hosts = dict.fromkeys(self.host_vars)

        def rank(name: str) -> tuple[int, int, str]:
            priority = groups[name].vars.get("ansible_group_priority")
            return depth[name], priority if isinstance(priority, int) else 1, name

        merged_for: dict[frozenset[str], dict[str, object]] = {}
        hosts: dict[str, HostVars] = {}
        connections: dict[str, list[str]] = {}
        for host, mine in direct.items():
            key = frozenset(mine)
            if key not in merged_for:
                spend(sum(len(ancestors[name]) + 1 for name in key))
                chain = {"all"}.union(key, *(ancestors[name] for name in key))
                merged: dict[str, object] = {}
                for name in sorted(chain, key=rank):
                    merged.update(groups[name].vars)
                merged_for[key] = merged
            found = {**merged_for[key], **self.host_vars[host]}
            values = {field: ansible_vars.first(found, names) for field, names in ansible_vars.FIELDS.items()}
            port = values["port"]
            hosts[host] = HostVars(
                hostname=_text(values["hostname"]),
                port=port if isinstance(port, int) else None,
                user=_text(values["user"]),
                identity_file=_text(values["identity_file"]),
                where=self.defined[host],
            )
            connection = found.get("ansible_connection")
            if isinstance(connection, str) and connection not in ansible_vars.SSH:
                connections.setdefault(connection, []).append(host)
        for connection, names in sorted(connections.items()):
            self.warn(
                self.path,
                f"{nodeset.fold(sorted(names))}: ansible_connection={connection} is not ssh;"
                " dsh connects over ssh anyway",
            )
        for password, wheres in self._passwords.items():
            more = f" (and {len(wheres) - 1} more places)" if len(wheres) > 1 else ""
            self.warn(wheres[0], f"{password}{more} is ignored: dsh never reads passwords from an inventory")
        members = {name: (tuple(group.hosts), tuple(group.children)) for name, group in groups.items()}
        return AnsibleInventory(self.path, hosts, members, self.warnings)

    def _order(self, parents: Mapping[str, set[str]]) -> list[str]:
        """The groups, every one after its parents; InventoryError naming a cycle."""
        waiting = {name: len(mine) for name, mine in parents.items()}
        ready = [name for name, count in waiting.items() if count == 0]
        order: list[str] = []
        while ready:
            name = ready.pop()
            order.append(name)
            for child in self.groups[name].children:
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        if len(order) == len(parents):
            return order
        left = set(parents) - set(order)
        walk, seen = [min(left)], {min(left): 0}
        while True:  # up through parents that are left: each left group has one
            parent = min(p for p in parents[walk[-1]] if p in left)
            if parent in seen:
                cycle = [*walk[seen[parent] :], parent][::-1]
                break
            seen[parent] = len(walk)
            walk.append(parent)
        edges = itertools.pairwise(cycle)
        where = next(w for w in (self.groups[p].children[c] for p, c in edges) if w)
        self.fail(
            where, f"the groups' children make a cycle: {' > '.join(cycle)} (a group cannot hold itself)"
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None

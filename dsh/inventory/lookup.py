"""The groups of every inventory a process knows, in dsh's order: the config's
[groups], the Ansible inventory of --inventory, then ClusterShell's default group
source; `@{SOURCE:NAME}` asks one source, `@{file:PATH}` reads a host file.

Result sets come before all of these, but they are the session's own: the
compiler decides them, and never asks here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from dsh.inventory import hostfile
from dsh.inventory.base import CONFIG, FILE, INVENTORY, Found, HostVars, InventoryError

if TYPE_CHECKING:
    from dsh.inventory.ansible import AnsibleInventory
    from dsh.inventory.clustershell import ClusterShellGroups


class Inventory:
    """A GroupLookup over the config's groups, an Ansible inventory (or None) and
    ClusterShell's group sources (made by `clustershell` when first needed: its
    module is not imported before; None: none). `find` and `members` may run a
    group source's program (bounded by its timeout): call them off the event loop."""

    def __init__(
        self,
        groups: Mapping[str, str],
        ansible: AnsibleInventory | None = None,
        clustershell: Callable[[], ClusterShellGroups] | None = None,
        cwd: Path | None = None,
        *,
        broken: str | None = None,
    ) -> None:
        self.groups = dict(groups)
        self.ansible = ansible
        #: Why the Ansible inventory given could not be read (None: it was, or none was
        #: given): a lookup that would ask it fails with that, rather than go past it.
        self.broken = broken
        self._make_clustershell = clustershell
        self._clustershell: ClusterShellGroups | None = None
        self.cwd = cwd

    @property
    def clustershell(self) -> ClusterShellGroups | None:
        """ClusterShell's group sources (None: not looked at)."""
        if self._clustershell is None and self._make_clustershell is not None:
            self._clustershell = self._make_clustershell()
        return self._clustershell

    def find(self, source: str | None, name: str) -> Found | None:
        """The group `name` of `source` (None: the first source that has it)."""
        if source is None:
            if name in self.groups:
                return Found(CONFIG, self.groups[name])
            if self.broken is not None:  # it comes before ClusterShell: no answer without it
                raise InventoryError(self.broken)
            if self.ansible is not None and (held := self.ansible.members(name)) is not None:
                return Found(INVENTORY, held)
            cs = self.clustershell
            members = cs.members(name) if cs is not None else None
            return Found(cs.default() or "", members) if cs is not None and members is not None else None
        return self._of(source, name)

    def members(self, source: str | None, name: str) -> str:
        """The hosts of a group as node-set text; InventoryError when no source has it."""
        found = self.find(source, name)
        if found is None or found.members is None:
            what = f"@{{{name}}}" if source is None else f"@{{{source}:{name}}}"
            raise InventoryError(f"{what}: no inventory has this group now")
        return found.members

    def listed(self) -> dict[str, str]:
        """The groups known without running anything, as completion and `hosts` show
        them: the config's by name, the Ansible inventory's by name (by
        `inventory:NAME` where the config has the name too), with their hosts."""
        out = dict(self.groups)
        if self.ansible is not None:
            for name in self.ansible.names():
                members = self.ansible.members(name)
                if members is not None:
                    out[f"{INVENTORY}:{name}" if name in out else name] = members
        return out

    def host_vars(self) -> Mapping[str, HostVars]:
        """How the Ansible inventory says to reach its hosts (none without one)."""
        return self.ansible.hosts if self.ansible is not None else {}

    def _of(self, source: str, name: str) -> Found | None:
        if source == CONFIG:
            text = self.groups.get(name)
            return Found(CONFIG, text) if text is not None else None
        if source == INVENTORY:
            if self.broken is not None:
                raise InventoryError(self.broken)
            if self.ansible is None:
                raise InventoryError(
                    f"@{{inventory:{name}}} names a group of an Ansible inventory, and none is given "
                    '(--inventory FILE, or inventory = "FILE" in the config)'
                )
            members = self.ansible.members(name)
            return Found(INVENTORY, members) if members is not None else None
        if source == FILE:
            return Found(FILE, hostfile.read(name, self.cwd))
        if self.clustershell is None:
            raise InventoryError(f"no group source {source!r}: ClusterShell's group configuration has none")
        members = self.clustershell.members(name, source)
        return Found(source, members) if members is not None else None

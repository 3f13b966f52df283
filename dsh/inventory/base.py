"""What every inventory source gives: groups by name (as node-set text), and, for
an Ansible inventory, how to reach each host (HostVars); InventoryError."""

from __future__ import annotations

from typing import Protocol

from dsh.errors import UsageError
from dsh.record import record

#: How long a group source's program (a ClusterShell upcall) may take, by default.
UPCALL_TIMEOUT = 10.0


class InventoryError(UsageError):
    """An inventory dsh cannot read, or a group it cannot resolve: one sentence,
    which starts `file:line:` when it is about a line of a file."""


@record
class HostVars:
    """What an inventory says about reaching one host (its `ansible_*` values);
    None: what the ssh config says. `where`: the file and line where the host is
    first defined, for messages."""

    hostname: str | None = None
    port: int | None = None
    user: str | None = None
    identity_file: str | None = None
    where: str = ""


class GroupSource(Protocol):
    """One place groups come from."""

    @property
    def name(self) -> str:
        """The source's name, as written in `@{SOURCE:NAME}`."""
        ...

    def members(self, group: str) -> str | None:
        """The group's hosts as node-set text (`web[1-3],db1`), None when this source
        has no such group; InventoryError when it cannot say (unreadable, timed out)."""
        ...

    def names(self) -> list[str]:
        """The groups it has, sorted; InventoryError when it cannot say."""
        ...


#: Source names that are dsh's own: `@{config:NAME}` (the config's [groups]),
#: `@{inventory:NAME}` (--inventory), `@{file:PATH}` (a host file). Any other
#: source name is one of ClusterShell's.
CONFIG, INVENTORY, FILE = "config", "inventory", "file"


@record
class Found:
    """A group found: the source that holds it, and its hosts as node-set text when
    known without running anything more (None: known when the line starts)."""

    source: str
    members: str | None


class GroupLookup(Protocol):
    """What the compiler may ask about inventories' groups (it does no I/O itself:
    the caller's lookup does, bounded)."""

    def find(self, source: str | None, name: str) -> Found | None:
        """The group `name` of `source` (None: the first source that has it, in dsh's
        order), None when there is none; InventoryError when a source cannot say."""
        ...


class TrustingLookup:
    """A lookup that takes every group on trust, its hosts known when the line starts:
    for a client's check of a line that its session's executor compiles again."""

    def find(self, source: str | None, name: str) -> Found | None:
        return Found(source or "", None)

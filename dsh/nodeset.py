"""Host sets: the one adapter to ClusterShell's NodeSet (parsing, expansion, folding).

dsh writes its own references into ClusterShell group syntax: `@inv:NAME` for an
inventory group, `@res:NAME` for a result set of the previous line, and
`@var:NAME` for a binding that holds hosts. A resolver built from plain
mappings answers them, so set operations (`,` `!` `&` `^`) apply to whole
groups, left to right, exactly as ClusterShell defines them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Where references of each kind live in a resolver.
INVENTORY, RESULTS, VARIABLES = "inv", "res", "var"

_PLAIN = re.compile(r"[A-Za-z0-9._\-\[\],!&^]*")


class HostSetError(ValueError):
    """A node-set pattern that ClusterShell cannot read."""


def check_literal(text: str) -> str | None:
    """Why a literal piece of a target is not node-set text, or None if it is."""
    m = _PLAIN.match(text)
    if m is not None and m.end() == len(text):
        return None
    bad = text[m.end() if m else 0]
    if bad == "@":
        return "a group is written @{name} in dsh"
    return f"{bad!r} cannot appear in a node set"


def _resolver(groups: Mapping[str, Mapping[str, str]]) -> Any:
    from ClusterShell.NodeUtils import GroupResolver, GroupSource

    resolver = GroupResolver()
    for source, members in groups.items():
        resolver.add_source(GroupSource(source, dict(members)))
    return resolver


def expand(pattern: str, groups: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """The hosts of a pattern, in ClusterShell's order; HostSetError if it is bad."""
    from ClusterShell.NodeSet import NodeSet
    from ClusterShell.NodeUtils import GroupResolverError

    try:
        return list(NodeSet(pattern, resolver=_resolver(groups or {})))
    except (GroupResolverError, ValueError, Exception) as exc:  # ClusterShell's own hierarchy
        raise HostSetError(_message(exc)) from exc


def fold(hosts: Iterable[str]) -> str:
    """`web[1-3,5]`-style folding of host names."""
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(list(hosts)))


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[0].lower() + text[1:]

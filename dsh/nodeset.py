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


class HostSetTooLarge(HostSetError):
    """A pattern that names more hosts than allowed; `size` may be an upper bound."""

    def __init__(self, size: int, limit: int, exact: bool) -> None:
        what = f"holds {size}" if exact else f"may hold up to {size}"
        super().__init__(f"it {what} hosts, more than the {limit} allowed")
        self.size, self.limit, self.exact = size, limit, exact


def check_literal(text: str) -> str | None:
    """Why a literal piece of a target is not node-set text, or None if it is."""
    m = _PLAIN.match(text)
    if m is not None and m.end() == len(text):
        return None
    bad = text[m.end() if m else 0]
    if bad == "@":
        return "a group is written @{name} in dsh"
    return f"{bad!r} cannot appear in a node set"


#: Patterns whose ranges may hold more names than this are refused before
#: ClusterShell builds them (it makes every number of a range: 10^8 costs minutes).
MAX_EXPAND = 100_000
_BRACKETS = re.compile(r"\[([^\]]*)\]")


def upper_bound(pattern: str) -> int:
    """At most how many names a pattern's ranges make (operators can only remove)."""
    total = 0
    for term in re.split(r"[,!&^](?![^\[]*\])", pattern):
        size = 1
        for inside in _BRACKETS.findall(term):
            width = 0
            for piece in inside.split(","):
                bounds = re.fullmatch(r"(\d+)(?:-(\d+))?(?:/(\d+))?", piece.strip())
                if bounds is None:
                    width += 1
                    continue
                low, high = int(bounds.group(1)), int(bounds.group(2) or bounds.group(1))
                step = max(int(bounds.group(3) or 1), 1)
                width += max(high - low, 0) // step + 1
            size *= width
        total += size
    return total


def _resolver(groups: Mapping[str, Mapping[str, str]]) -> Any:
    from ClusterShell.NodeUtils import GroupResolver, GroupSource

    resolver = GroupResolver()
    for source, members in groups.items():
        resolver.add_source(GroupSource(source, dict(members)))
    return resolver


def expand(pattern: str, groups: Mapping[str, Mapping[str, str]] | None = None, *, limit: int) -> list[str]:
    """The hosts of a pattern, in ClusterShell's order.

    HostSetError if the pattern is bad, or names more than `limit` hosts (it is
    counted from its ranges before any name is made, so `h[1-100000000]` costs
    nothing).
    """
    from ClusterShell.NodeSet import NodeSet, NodeSetException
    from ClusterShell.NodeUtils import GroupResolverError
    from ClusterShell.RangeSet import RangeSetException

    for text in (pattern, *(m for members in (groups or {}).values() for m in members.values())):
        most = upper_bound(text)
        if most > max(limit, MAX_EXPAND):
            raise HostSetTooLarge(most, limit, exact=False)
    try:
        hosts = NodeSet(pattern, resolver=_resolver(groups or {}))
        size = len(hosts)
        if size > limit:
            raise HostSetTooLarge(size, limit, exact=True)
        return list(hosts)
    except HostSetError:
        raise
    # AssertionError: ClusterShell's "range too large".
    except (NodeSetException, RangeSetException, GroupResolverError, AssertionError, ValueError) as exc:
        raise HostSetError(_message(exc)) from exc


def fold(hosts: Iterable[str]) -> str:
    """`web[1-3,5]`-style folding of host names."""
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(list(hosts)))


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[0].lower() + text[1:]

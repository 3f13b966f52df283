"""Host sets: the one adapter to ClusterShell's NodeSet (parsing, expansion, folding).

dsh writes its own references into ClusterShell group syntax: `@inv:NAME` for an
inventory group, `@res:NAME` for a result set of the previous line, and
`@var:NAME` for a binding that holds hosts. A resolver built from plain
mappings answers them, so set operations (`,` `!` `&` `^`) apply to whole
groups, left to right, exactly as ClusterShell defines them.

This is also where host names enter dsh, from the text of a script and from
bindings alike: every name a pattern expands to is an alias of the alphabet
`A-Z a-z 0-9 . _ -` (not `.` nor `..`), the node-set alphabet without its
operators; a binding's text with anything else (`/`, `:`, `@`, blanks, `;`,
`$`, quotes) is refused, naming the binding and the name.

ClusterShell's parser scans the rest of its text again for every name of a
list, which costs time quadratic in the list's length; long lists are handed
to it in slices of CHUNK_TERMS names, joined with its own set operations, so
that a pattern costs time linear in its length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Where references of each kind live in a resolver: the config's [groups], result
#: sets, bindings, and other inventories' groups (`@grp:gN`, a target's Nth).
INVENTORY, RESULTS, VARIABLES, GROUPS = "inv", "res", "var", "grp"
#: The names of a list ClusterShell is given at once (its parse of one slice is
#: quadratic in the slice's length: a few hundred names cost next to nothing).
CHUNK_TERMS = 256

_PLAIN = re.compile(r"[A-Za-z0-9._\-\[\],!&^]*")
_SPECIAL = re.compile(r"[\[\],!&^]")
#: The operators that can make a set smaller than its terms together.
_SUBTRACTS = re.compile(r"[!&^]")
#: A host alias, once a pattern is expanded.
_ALIAS = re.compile(r"[A-Za-z0-9._-]+")
#: ClusterShell's set operations, by their operator.
_OPERATIONS = {
    ",": "update",
    "!": "difference_update",
    "&": "intersection_update",
    "^": "symmetric_difference_update",
}


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
        return "inside a target a group is written {NAME}, without '@', as in @{web},{db}"
    return f"{bad!r} cannot appear in a node set"


#: Patterns whose ranges may hold more names than this are refused before
#: ClusterShell builds them (it makes every number of a range: 10^8 costs minutes).
MAX_EXPAND = 100_000
_BRACKETS = re.compile(r"\[([^\]]*)\]")


def terms(pattern: str) -> list[tuple[str, str]]:
    """A pattern's terms with the operator before each (`,` before the first),
    split at the operators outside brackets, in one pass."""
    out: list[tuple[str, str]] = []
    op, start, depth = ",", 0, 0
    for m in _SPECIAL.finditer(pattern):
        ch = m.group()
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif depth == 0:
            out.append((op, pattern[start : m.start()]))
            op, start = ch, m.end()
    out.append((op, pattern[start:]))
    return out


def members_problem(label: str, text: str) -> str | None:
    """Why the text of a binding (named `label`) cannot name hosts, or None: a
    name holds a character that is not of the node-set alphabet, or is `.` or
    `..`. The sentence names the binding and the name."""
    m = _PLAIN.match(text)
    end = m.end() if m is not None else 0
    if end < len(text):
        bad = text[end]
        cut = [i for i in (text.rfind(c, 0, end) for c in _OPERATIONS) if i >= 0]
        first = max(cut, default=-1) + 1
        last = min((i for i in (text.find(c, end) for c in _OPERATIONS) if i >= 0), default=len(text))
        name = text[first:last]
        shown = repr(name) if len(name) <= 80 else repr(name[:77]) + "…"
        what = "a blank" if bad.isspace() else "a control character" if not bad.isprintable() else repr(bad)
        hint = " (names are separated by ',')" if bad.isspace() else ""
        return f"{label} holds {shown}, which cannot name a host: {what} is not allowed in a host name{hint}"
    for _op, term in terms(text):
        if term in (".", ".."):
            return f"{label} holds {term!r}, which cannot name a host"
    return None


def upper_bound(pattern: str) -> int:
    """At most how many names a pattern's ranges make (operators can only remove)."""
    total = 0
    for _op, term in terms(pattern):
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

    HostSetError if the pattern is bad, if a binding's text cannot name hosts
    (see `members_problem`), or if it names more than `limit` hosts (it is
    counted from its ranges before any name is made, so `h[1-100000000]` costs
    nothing).
    """
    from ClusterShell.NodeSet import NodeSetException
    from ClusterShell.NodeUtils import GroupResolverError
    from ClusterShell.RangeSet import RangeSetException

    groups = groups or {}
    for name, members in groups.get(VARIABLES, {}).items():
        problem = members_problem(label(name), members)
        if problem:
            raise HostSetError(problem)
    for text in (pattern, *(m for members in groups.values() for m in members.values())):
        most = upper_bound(text)
        if most > max(limit, MAX_EXPAND):
            raise HostSetTooLarge(most, limit, exact=False)
    alone = {f"@{s}:{n}": t for s, members in groups.items() for n, t in members.items()}.get(pattern)
    if alone is not None and not _SUBTRACTS.search(alone):  # one group: counted before a name is made
        most = upper_bound(alone)
        if most > limit:
            raise HostSetTooLarge(most, limit, exact=False)
    try:
        # A group whose text names no other group is parsed here, in slices, never
        # folded into text again (folding names with two numbers costs ClusterShell
        # seconds for some thousands); the resolver answers the others.
        direct = {
            f"@{source}:{name}": text
            for source, members in groups.items()
            for name, text in members.items()
            if "@" not in text
        }
        hosts = _parse(pattern, _resolver(groups), direct)
        size = len(hosts)
        if size > limit:
            raise HostSetTooLarge(size, limit, exact=True)
        names = list(hosts)
    except HostSetError:
        raise
    # AssertionError: ClusterShell's "range too large".
    except (NodeSetException, RangeSetException, GroupResolverError, AssertionError, ValueError) as exc:
        raise HostSetError(_message(exc)) from exc
    for host in names:
        if not is_alias(host):
            raise HostSetError(f"{host!r} cannot name a host")
    return names


def is_alias(name: str) -> bool:
    """Whether `name` can name a host: letters, digits, `.`, `_` and `-`, not `.` or `..`
    (it becomes a spool file's name on the host and an ssh alias)."""
    return bool(_ALIAS.fullmatch(name)) and name not in (".", "..")


def label(variable: str) -> str:
    """How a binding is named to a user: `$hosts`, or `$h (of restart)` for the
    parameter h of function restart, which the compiler binds as `restart-h`."""
    fn, dash, param = variable.partition("-")
    return f"${param} (of {fn})" if dash else f"${variable}"


def _parse(pattern: str, resolver: Any, direct: Mapping[str, str] | None = None) -> Any:
    """ClusterShell's NodeSet of a pattern, its operators applied left to right as
    ClusterShell applies them, a run of `,` handed over CHUNK_TERMS names at a time;
    a term that is a reference of `direct` is the NodeSet of its text (parsed the
    same way), not the resolver's."""
    from ClusterShell.NodeSet import NodeSet

    direct = direct or {}
    pieces = terms(pattern)
    odd = any(not term for _op, term in pieces)
    if odd or (len(pieces) <= CHUNK_TERMS and not any(term in direct for _op, term in pieces)):
        return NodeSet(pattern, resolver=resolver)  # short, or odd: ClusterShell's own word
    result = NodeSet(resolver=resolver)
    run: list[str] = []

    def flush() -> None:
        if run:
            result.update(NodeSet(",".join(run), resolver=resolver))
            run.clear()

    for op, term in pieces:
        if term in direct:
            flush()
            piece = _parse(direct[term], resolver)
            if op == "," and not len(result):  # the first: taken as it is (a merge costs)
                result = piece
            else:
                getattr(result, _OPERATIONS[op])(piece)
            continue
        if op == "," and len(run) < CHUNK_TERMS:
            run.append(term)
            continue
        flush()
        if op == ",":
            run.append(term)
        else:
            getattr(result, _OPERATIONS[op])(NodeSet(term, resolver=resolver))
    flush()
    return result


#: At most this many names are folded into node-set text (`web[1-3]`) where the
#: text is only handed on: ClusterShell folds names with two numbers in time that
#: grows fast with their count.
FOLD_MOST = 1000


def as_text(hosts: Iterable[str]) -> str:
    """Node-set text of `hosts`: folded when they are few, else listed."""
    names = list(hosts)
    return fold(names) if len(names) <= FOLD_MOST else ",".join(names)


def fold(hosts: Iterable[str]) -> str:
    """`web[1-3,5]`-style folding of host names."""
    from ClusterShell.NodeSet import NodeSet

    return str(NodeSet.fromlist(list(hosts)))


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[0].lower() + text[1:]

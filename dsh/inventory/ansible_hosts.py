"""Ansible's host patterns: `NAME`, `NAME:PORT`, and ranges in a name (`web[01:20]`,
`db-[a:f]`, `h[1:9:2]`, several in one name), expanded as ansible-core expands
them, every name made checked to be a dsh alias (nodeset.is_alias).

A range is `[START:END]` or `[START:END:STEP]`: both numbers (an empty START is
0; a START with a leading 0 pads every number to its width, and END has the
same width) or both single letters (a-z, then A-Z). Unlike Ansible, a range
whose START comes after its END is refused, not silently empty. The names a
pattern makes are counted before any is made.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Callable, Iterable
from typing import NoReturn

from dsh import nodeset
from dsh.inventory.base import InventoryError

#: NAME:PORT, where NAME may hold ranges (Ansible's `hostport` pattern).
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)")
_RANGE = re.compile(r"(\[[^\[\]]*\])")
_NUMBER = re.compile(r"[0-9]{1,18}")
_RANGE_FORM = "a range is [START:END] or [START:END:STEP], like web[01:20] or db-[a:f]"


def expand(pattern: str, where: str, budget: int) -> tuple[list[str], int | None]:
    """The host names of `pattern` and its port (None: none given); InventoryError
    `where: …` for a bad port or range, a name that is not a dsh alias, or more
    names than nodeset.MAX_EXPAND (or than `budget`, what the file has left)."""
    port: int | None = None
    split = _HOST_PORT.fullmatch(pattern)
    if split is not None:
        pattern, digits = split.groups()
        port = int(digits) if len(digits) <= 5 else 0
        if not 1 <= port <= 65535:
            _fail(where, f"host {shown(pattern)}: port {cut(digits)} is not a number from 1 to 65535")
    elif pattern.endswith(":"):
        _fail(where, f"host {shown(pattern)}: a ':' after a host name is followed by its port")
    makers: list[Callable[[], Iterable[str]]] = []
    count = 1
    for index, piece in enumerate(_RANGE.split(pattern)):
        if index % 2 == 1:
            size, make = _range(pattern, piece[1:-1], where)
            count *= size
            makers.append(make)
        elif "[" in piece or "]" in piece:
            lone = "a '[' without its ']'" if "[" in piece else "a ']' without its '['"
            _fail(where, f"host {shown(pattern)}: {lone}; {_RANGE_FORM}")
        else:
            makers.append(_once(piece))
    if count > nodeset.MAX_EXPAND:
        _fail(where, f"{shown(pattern)} makes {count} host names, more than the {nodeset.MAX_EXPAND} allowed")
    if count > budget:
        _fail(where, f"{shown(pattern)}: the inventory's host patterns make too many names")
    names = ["".join(parts) for parts in itertools.product(*(make() for make in makers))]
    for name in names:
        if not nodeset.is_alias(name):
            _fail(
                where,
                f"host {shown(name)} cannot be a dsh host name: a name is letters, digits, '.', '_'"
                " and '-' (give the host such a name, and its address as ansible_host)",
            )
    return names, port


def _range(pattern: str, inside: str, where: str) -> tuple[int, Callable[[], Iterable[str]]]:
    """How many names a range makes, and how to make them."""

    def bad(reason: str) -> NoReturn:
        _fail(where, f"host {shown(pattern)}: bad range [{cut(inside)}]: {reason}; {_RANGE_FORM}")

    bounds = inside.split(":")
    if len(bounds) not in (2, 3):
        bad("it is not START:END nor START:END:STEP")
    start, end, step_text = bounds[0] or "0", bounds[1], bounds[2] if len(bounds) == 3 else "1"
    if not end:
        bad("it has no END")
    if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
        bad("its STEP is not a whole number from 1")
    step = int(step_text)
    if _NUMBER.fullmatch(start) and _NUMBER.fullmatch(end):
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        if width and len(end) != width:
            bad("a START with a leading 0 pads to its width, and END has the same width")
        low, high = int(start), int(end)
        if low > high:
            bad("START comes after END")
        return (high - low) // step + 1, lambda: (str(n).zfill(width) for n in range(low, high + 1, step))
    letters = string.ascii_letters
    if len(start) == len(end) == 1 and start in letters and end in letters:
        first, last = letters.index(start), letters.index(end)
        if first > last:
            bad("START comes after END (a-z, then A-Z)")
        return len(range(first, last + 1, step)), lambda: letters[first : last + 1 : step]
    bad("START and END are both numbers, or both single letters")


def _once(text: str) -> Callable[[], Iterable[str]]:
    return lambda: (text,)


def _fail(where: str, message: str) -> NoReturn:
    raise InventoryError(f"{where}: {message}")


def cut(text: str, most: int = 60) -> str:
    """`text`, cut to `most` characters for a message."""
    return text if len(text) <= most else text[: most - 1] + "…"


def shown(value: object) -> str:
    """A value as a message shows it: a text or a number as its repr, cut (the text
    cut first: it may be long); anything else by its kind (a YAML alias can make a
    list of billions of items, whose repr would never end)."""
    if isinstance(value, str):
        return cut(repr(str(value)[:100]), 80)
    if value is None or isinstance(value, bool | int | float):
        return cut(repr(value), 80)
    kinds = {list: "a list", tuple: "a list", dict: "a mapping", set: "a set", bytes: "binary data"}
    return next((k for t, k in kinds.items() if isinstance(value, t)), f"a {type(value).__name__}")

"""Ansible's INI inventory format, read line by line as ansible-core's `ini` plugin
reads it, into an ansible.Builder.

Lines before any section are hosts of `ungrouped`. A line whose first character
is `#` or `;` is a comment; a section is `[GROUP]` (host lines: a host pattern,
then KEY=VALUE words split as a POSIX shell does, `#` starting a comment),
`[GROUP:children]` (a group name a line) or `[GROUP:vars]` (KEY=VALUE a line,
the rest of the line the value). A value is read as a Python literal when it
is one (`'a b'`, `22`), else as written. A group named under `children` or
given `vars` must have a `[GROUP]` or `[GROUP:children]` section of its own.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings

from dsh.inventory.ansible import AnsibleInventory, Builder, not_utf8
from dsh.inventory.ansible_vars import PASSWORDS, USED

_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?")
_GROUP_LINE = re.compile(r"([^:\]\s]+)\s*(?:#.*)?")
_KINDS = ("hosts", "children", "vars")


def read(builder: Builder, text: str) -> AnsibleInventory:
    """The inventory the INI `text` holds; InventoryError `FILE:LINE: …` at the first
    line it cannot read."""
    b = builder
    group, kind = "ungrouped", "hosts"
    declared = {"all", "ungrouped"}
    pending: dict[str, tuple[str, str]] = {}  # group -> where, why it must be declared
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = b.at(number)
        if not_utf8(line) is not None:
            b.fail(where, "not UTF-8 text (an inventory is UTF-8)")
        section = _SECTION.fullmatch(line)
        if section is not None:
            name, kind = section.group(1), section.group(2) or "hosts"
            if kind not in _KINDS:
                b.fail(
                    where,
                    f"[{name}:{kind}] is not a section: a section is [GROUP], [GROUP:children]"
                    " or [GROUP:vars]",
                )
            group = b.group(name, where)
            if kind == "vars":
                pending.setdefault(group, (where, f"[{group}:vars] is for a group"))
            else:
                declared.add(group)
        elif line.startswith("["):
            b.fail(
                where, "not a section: a section is [GROUP], [GROUP:children] or [GROUP:vars], without blanks"
            )
        elif kind == "hosts":
            _host_line(b, group, line, where)
        elif kind == "vars":
            key, equals, value = (part.strip() for part in line.partition("="))
            if not equals or not key:
                b.fail(where, f"expected KEY=VALUE in [{group}:vars]")
            b.add_group_vars(group, b.variables([(key, _value(key, value), where)]))
        else:
            child = _GROUP_LINE.fullmatch(line)
            if child is None:
                b.fail(where, f"expected one group name a line in [{group}:children]")
            name = b.group(child.group(1), where)
            b.child(group, name, where)
            pending.setdefault(name, (where, f"[{group}:children] names group {name!r}"))
    for name, (where, what) in pending.items():
        if name not in declared:
            b.fail(
                where, f"{what} that has no [{name}] nor [{name}:children] section (Ansible refuses it too)"
            )
    return b.finish()


def _host_line(b: Builder, group: str, line: str, where: str) -> None:
    try:
        words = shlex.split(line, comments=True)
    except ValueError as exc:
        b.fail(where, f"cannot split the host line into words: {str(exc).lower()}")
    if not words:
        return
    pattern, *rest = words
    if pattern == "---":
        b.fail(where, "'---' starts a YAML document: a YAML inventory's name ends in .yml")
    secret = any(word.partition("=")[0] in PASSWORDS for word in rest)
    items: list[tuple[object, object, str]] = []
    for word in rest:
        key, equals, value = word.partition("=")
        if not equals:
            found = "a word without '='" if secret else repr(word)
            b.fail(where, f"expected KEY=VALUE after the host, found {found} (quote a value with blanks)")
        items.append((key, _value(key, value), where))
    b.add_hosts(group, pattern, where, b.variables(items))


def _value(key: str, text: str) -> object:
    """A value as Ansible's INI plugin reads it: a Python literal if it is one, else
    the text (read only for the variables dsh uses)."""
    if key not in USED:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return text

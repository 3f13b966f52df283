"""The variables of an Ansible inventory that dsh reads, and their values checked:
ansible_host, ansible_port, ansible_user, ansible_ssh_private_key_file (with
ansible_private_key_file and the legacy ansible_ssh_host, _port, _user),
ansible_connection and ansible_group_priority; the password variables, which
dsh never reads; and values it does not evaluate (Jinja templates, Vault).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import NoReturn

from dsh.inventory.ansible_hosts import shown
from dsh.inventory.base import InventoryError

#: HostVars' fields, each from the first of its variables a host has (Ansible's order:
#: the legacy name wins, whatever level set either).
FIELDS = {
    "hostname": ("ansible_ssh_host", "ansible_host"),
    "port": ("ansible_ssh_port", "ansible_port"),
    "user": ("ansible_ssh_user", "ansible_user"),
    "identity_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
}
CONNECTION_VARS = {name: field for field, names in FIELDS.items() for name in names}
#: The variables dsh reads; every other one is passed over.
USED = frozenset({*CONNECTION_VARS, "ansible_connection", "ansible_group_priority"})
#: Variables that hold a password: never read, never kept, a warning.
PASSWORDS = frozenset(
    {
        "ansible_password",
        "ansible_ssh_pass",
        "ansible_ssh_password",
        "ansible_become_pass",
        "ansible_become_password",
        "ansible_sudo_pass",
        "ansible_sudo_password",
        "ansible_su_pass",
        "ansible_su_password",
    }
)
#: ansible_connection values that are ssh.
SSH = frozenset({"ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh", "ansible.legacy.ssh"})

_DIGITS = re.compile(r"[0-9]{1,18}")
#: What ansible_host may be: a host name, an IPv4 or IPv6 address (bare or in [ ]).
_HOSTNAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:-]*|\[[0-9A-Fa-f:.%A-Za-z]+\]")
#: What ansible_user may be (a domain user's `@` too).
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]*")


class Unread:
    """A value dsh does not evaluate (a Jinja template, a Vault secret): where it
    applies, the ssh config decides, as when nothing is set."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


class Verbatim(str):
    """Text that is not a template (YAML's `!unsafe`)."""

    __slots__ = ()


def check(key: str, value: object, where: str, base: str) -> object:
    """The value of `key` (one of USED) as dsh keeps it: a port an int, a relative
    key file under `base`, a template Unread, None as None; InventoryError
    `where: …` for a value dsh cannot use (a port out of range, a user with blanks)."""
    if isinstance(value, str) and not isinstance(value, Verbatim) and ("{{" in value or "{%" in value):
        return Unread("a Jinja template, which dsh does not evaluate")
    if value is None or isinstance(value, Unread):
        return value
    field = CONNECTION_VARS.get(key)
    if field == "port" or key == "ansible_group_priority":
        if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            _fail(where, f"{key} {shown(value)} is not a whole number")
        if field == "port" and not 1 <= value <= 65535:
            _fail(where, f"{key} {shown(value)} is not a port (a number from 1 to 65535)")
        return value
    if field in ("hostname", "user"):
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value or value.startswith("-"):
            _fail(where, f"{key} {shown(value)} is not a host name nor a user name")
        if any(c.isspace() or not c.isprintable() for c in value):
            hint = " (in a [GROUP:vars] section a comment has a line of its own)" if "#" in value else ""
            _fail(where, f"{key} {shown(value)} holds a blank or a control character{hint}")
        # ssh puts them in a ProxyCommand's shell text (%h, %r) and in paths (%r):
        # a host name or address, a user name, nothing a shell or a path reads
        alphabet = _HOSTNAME if field == "hostname" else _USER
        if not alphabet.fullmatch(value):
            what = "a host name nor an address" if field == "hostname" else "a user name"
            allowed = "letters, digits, '.', '_', '-'" + (
                ", ':' ([…] around an IPv6 address)" if field == "hostname" else ", '@'"
            )
            _fail(where, f"{key} {shown(value)} is not {what}: it may hold {allowed} only")
        return value
    if field == "identity_file":
        if not isinstance(value, str) or not value or not value.isprintable():
            _fail(where, f"{key} {shown(value)} is not a file name")
        return os.path.join(base, os.path.expanduser(value))
    return value if isinstance(value, str) else None  # ansible_connection


def first(found: Mapping[str, object], names: Iterable[str]) -> object:
    """The value of the first of `names` that `found` has (None: none, or Unread)."""
    for name in names:
        if name in found:
            value = found[name]
            return None if isinstance(value, Unread) else value
    return None


def _fail(where: str, message: str) -> NoReturn:
    raise InventoryError(f"{where}: {message}")

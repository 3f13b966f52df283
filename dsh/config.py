"""The configuration file: limits, defaults and the inventory (TOML, XDG config dir).

[limits]
default_timeout = "10m"   # a command's timeout when no `within` is given
default_backoff = "1s"    # the first wait of `retry N` without `backoff`
max_wait = "7d"           # the cap on any single wait (`within`, `sleep`)
max_line = "30d"          # the cap on a line's worst-case duration
step_budget = 10000       # the most steps one line may take
fanout = 256              # host flows running at once
max_retries = 100
max_binding = 1048576     # bytes one binding may hold (a value, or all hosts' output); at most 1 MiB
max_stdin = 67108864      # bytes a command's input (`| stdin FILE`) may hold; it is read whole

[groups]
web = "web[01-40]"
db = "db[1-2]"

[inventory]
file = "~/hosts.ini"      # an Ansible inventory, INI or YAML (--inventory wins); relative: to this file
upcall_timeout = "10s"    # how long a ClusterShell group source's program may take

[ssh]
host_keys = "strict"      # strict | accept-new | off (--host-keys wins)
connect_timeout = "10s"   # unless the ssh config's ConnectTimeout says otherwise

[spool]
keep = "7d"               # a session's spool untouched this long is removed

[store]
keep = "90d"              # finished sessions untouched this long are removed (default: kept)
keep_unnamed = "1d"       # the same for the sessions dsh named itself (`dsh -c`)

[approval]
self = false              # true: the requester (and the owner) of an `await approval` count
                          # among its approvers; the owner's setting, journaled with the ask

[etcd]                    # for --store etcd://… (DSH_ETCD_* variables win)
prefix = "/team-a"        # every key under it
ca = "/etc/dsh/ca.pem"    # TLS: the CA, and a client certificate and key
cert = "/etc/dsh/client.pem"
key = "/etc/dsh/client.key"
user = "dsh"
password_file = "~/.config/dsh/etcd-password"
insecure = false          # true: accept an etcd off this machine without TLS or authentication
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dsh.errors import UsageError
from dsh.lang.compiler import Limits
from dsh.lang.durations import MIN_DURATION, parse_duration
from dsh.plan import MAX_BINDING, RESULT_SETS
from dsh.record import record

#: The most a command's input may be set to hold (limits.max_stdin): it is read into memory.
MAX_STDIN = 1 << 30

_GROUP_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_DURATIONS = {"default_timeout", "default_backoff", "max_wait", "max_line"}
HOST_KEY_POLICIES = ("strict", "accept-new", "off")


@record
class Spool:
    keep: float = 7 * 86400.0


@record
class Retention:
    """The [store] section: how long finished sessions nobody touches are kept,
    those named with --session (None: until `dsh rm`) and those dsh named."""

    keep: float | None = None
    keep_unnamed: float = 86400.0


@record
class Inventories:
    """The [inventory] section: an Ansible inventory (`file`, as --inventory gives
    it), and how long a ClusterShell group source's program may take."""

    file: str | None = None
    upcall_timeout: float = 10.0


@record
class Approvals:
    """The [approval] section: whether the requester of an `await approval` (and the
    session's owner) may count among its approvers (`self`)."""

    requester_counts: bool = False


@record
class Ssh:
    host_keys: str = "strict"
    connect_timeout: float = 10.0


#: The settings of the [etcd] section, each also a DSH_ETCD_* variable (insecure:
#: DSH_INSECURE_STORE).
ETCD_SETTINGS = ("prefix", "ca", "cert", "key", "user", "password_file", "insecure")


@dataclass(frozen=True, slots=True)
class Config:
    limits: Limits = field(default_factory=Limits)
    groups: Mapping[str, str] = field(default_factory=dict)
    path: Path | None = None
    ssh: Ssh = field(default_factory=Ssh)
    spool: Spool = field(default_factory=Spool)
    etcd: Mapping[str, str] = field(default_factory=dict)
    store: Retention = field(default_factory=Retention)
    inventory: Inventories = field(default_factory=Inventories)
    approval: Approvals = field(default_factory=Approvals)


def default_path(env: Mapping[str, str]) -> Path:
    if env.get("DSH_CONFIG"):
        return Path(env["DSH_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or os.path.join(env.get("HOME", "~"), ".config")
    return Path(base).expanduser() / "dsh" / "config.toml"


def load(path: Path, *, required: bool = False) -> Config:
    """Read a config file; a missing file gives the defaults unless `required`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise UsageError(f"{path}: no such configuration file") from None
        return Config()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the configuration: {exc}") from exc
    import tomllib  # only when there is a file: start-up

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from exc
    return parse(data, path)


def parse(data: Mapping[str, Any], path: Path) -> Config:
    sections = ("limits", "groups", "inventory", "ssh", "spool", "store", "etcd", "approval")
    unknown = set(data) - set(sections)
    if unknown:
        raise UsageError(f"{path}: unknown section {sorted(unknown)[0]!r} (known: {', '.join(sections)})")
    limits = _limits(data.get("limits", {}), path)
    groups = data.get("groups", {})
    if not isinstance(groups, dict):
        raise UsageError(f'{path}: [groups] must be a table of name = "nodeset"')
    for name, value in groups.items():
        if not _GROUP_NAME.fullmatch(name) or name in RESULT_SETS:
            raise UsageError(f"{path}: {name!r} cannot name a group")
        if not isinstance(value, str):
            raise UsageError(f'{path}: group {name!r} must be a node-set string like "web[1-4]"')
    return Config(
        limits,
        dict(groups),
        path,
        _ssh(data.get("ssh", {}), path),
        _spool(data.get("spool", {}), path),
        _etcd(data.get("etcd", {}), path),
        store=_retention(data.get("store", {}), path),
        inventory=_inventory(data.get("inventory", {}), path),
        approval=_approval(data.get("approval", {}), path),
    )


def _approval(table: Any, path: Path) -> Approvals:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [approval] must be a table")
    unknown = set(table) - {"self"}
    if unknown:
        raise UsageError(f"{path}: unknown setting approval.{sorted(unknown)[0]} (known: self)")
    counts = table.get("self", False)
    if not isinstance(counts, bool):
        raise UsageError(f"{path}: approval.self must be true or false")
    return Approvals(counts)


def _inventory(table: Any, path: Path) -> Inventories:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [inventory] must be a table")
    unknown = set(table) - {"file", "upcall_timeout"}
    if unknown:
        raise UsageError(
            f"{path}: unknown setting inventory.{sorted(unknown)[0]} (known: file, upcall_timeout)"
        )
    file = table.get("file")
    if file is not None and (not isinstance(file, str) or not file):
        like = '"~/hosts.ini"'
        raise UsageError(f"{path}: inventory.file must be the path of an Ansible inventory, like {like}")
    raw = table.get("upcall_timeout", "10s")
    seconds = parse_duration(raw) if isinstance(raw, str) else None
    if seconds is None or not 0 < seconds <= 600:
        raise UsageError(f'{path}: inventory.upcall_timeout must be a duration like "10s", at most 10m')
    if file is not None:  # relative: to the configuration file's directory
        file = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(file))
    return Inventories(file, seconds)


def _etcd(table: Any, path: Path) -> dict[str, str]:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [etcd] must be a table")
    unknown = set(table) - set(ETCD_SETTINGS)
    if unknown:
        raise UsageError(
            f"{path}: unknown setting etcd.{sorted(unknown)[0]} (known: {', '.join(ETCD_SETTINGS)})"
        )
    settings: dict[str, str] = {}
    for name, value in table.items():
        if name == "insecure":
            if not isinstance(value, bool):
                raise UsageError(f"{path}: etcd.insecure must be true or false")
            settings[name] = "true" if value else "false"
        elif not isinstance(value, str) or not value:
            raise UsageError(f"{path}: etcd.{name} must be a non-empty string")
        else:
            settings[name] = os.path.expanduser(value) if name != "prefix" else value
    return settings


def _spool(table: Any, path: Path) -> Spool:
    if not isinstance(table, dict) or set(table) - {"keep"}:
        raise UsageError(f'{path}: [spool] takes one setting, keep = "7d"')
    raw = table.get("keep", "7d")
    seconds = parse_duration(raw) if isinstance(raw, str) else None
    if seconds is None or seconds < 60:
        raise UsageError(f'{path}: spool.keep must be a duration of at least a minute, like "7d"')
    return Spool(seconds)


def _retention(table: Any, path: Path) -> Retention:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [store] must be a table")
    unknown = set(table) - {"keep", "keep_unnamed"}
    if unknown:
        raise UsageError(f"{path}: unknown setting store.{sorted(unknown)[0]} (known: keep, keep_unnamed)")
    found: dict[str, float] = {}
    for name, raw in table.items():
        seconds = parse_duration(raw) if isinstance(raw, str) else None
        if seconds is None or seconds < 60:
            raise UsageError(f'{path}: store.{name} must be a duration of at least a minute, like "30d"')
        found[name] = seconds
    return Retention(found.get("keep"), found.get("keep_unnamed", Retention().keep_unnamed))


def _ssh(table: Any, path: Path) -> Ssh:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [ssh] must be a table")
    unknown = set(table) - {"host_keys", "connect_timeout"}
    if unknown:
        raise UsageError(
            f"{path}: unknown setting ssh.{sorted(unknown)[0]} (known: connect_timeout, host_keys)"
        )
    host_keys = table.get("host_keys", "strict")
    if host_keys not in HOST_KEY_POLICIES:
        raise UsageError(f"{path}: ssh.host_keys must be one of {', '.join(HOST_KEY_POLICIES)}")
    raw = table.get("connect_timeout", "10s")
    seconds = parse_duration(raw) if isinstance(raw, str) else None
    if seconds is None or not 0 < seconds <= 3600:
        raise UsageError(f'{path}: ssh.connect_timeout must be a duration like "10s", at most 1h')
    return Ssh(host_keys, seconds)


def _limits(table: Any, path: Path) -> Limits:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [limits] must be a table")
    known = {f.name for f in fields(Limits)}
    changes: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise UsageError(f"{path}: unknown setting limits.{key} (known: {', '.join(sorted(known))})")
        if key in _DURATIONS:
            seconds = parse_duration(value) if isinstance(value, str) else None
            if seconds is None or seconds < MIN_DURATION:
                raise UsageError(
                    f'{path}: limits.{key} must be a duration of at least 1ms, like "30s" or "10m"'
                )
            changes[key] = seconds
        else:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{path}: limits.{key} must be a whole number of at least 1")
            if key == "max_stdin" and value > MAX_STDIN:
                held = "1 GiB: an input is held in memory"
                raise UsageError(f"{path}: limits.max_stdin is at most {MAX_STDIN} bytes ({held})")
            if key == "max_binding" and value > MAX_BINDING:
                raise UsageError(
                    f"{path}: limits.max_binding is at most {MAX_BINDING} bytes (what one store value holds)"
                )
            changes[key] = value
    return replace(Limits(), **changes)

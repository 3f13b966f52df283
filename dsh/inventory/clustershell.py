"""ClusterShell's own group configuration, read by ClusterShell's resolver, its
upcalls bounded in time and output; and the cache of group names completion offers.

The configuration is found where ClusterShell looks for `groups.conf`
(/etc/clustershell, ~/.local/etc/clustershell, `$XDG_CONFIG_HOME/clustershell`,
then `$CLUSTERSHELL_CFGDIR`), computed from the environment dsh is given, not
os.environ. ClusterShell's venv copy (`sys.prefix/etc/clustershell`, its
installed example) is not on the path: it is dsh's installation, not the
operator's. Without any groups.conf ClusterShell reads nothing at all; dsh then
gives its resolver what ClusterShell's shipped groups.conf says (`autodir` and
`confdir`: the `groups.d` and `groups.conf.d` directories beside each place
above), so `groups.d/*.yaml` alone is enough.

Upcalls (`map`, `mapall`, `list`, `all`, `reverse`) run as ClusterShell runs
them (`sh -c`, stdin /dev/null, cwd the source's cfgdir, `$CFGDIR` `$SOURCE`
`$GROUP` `$NODE` substituted), but each in its own session and process group,
read for at most `timeout` seconds and UPCALL_OUTPUT bytes, the whole group
killed (SIGKILL) past either. This replaces `_upcall_read(cmdtpl, args)` on
each UpcallGroupSource instance once the resolver is initialised: it relies on
ClusterShell >= 1.9, where every upcall goes through that method (and on
`GroupResolverConfig._parse_config` and `GroupResolver._source`); a test holds
their signatures. ClusterShell's cache (`cache_time`) stays in force.

A `map` upcall that exits non-zero says the source does not know the group
(None), as an empty answer does (ClusterShell's shipped `local` source answers
an unknown group so); any other upcall failing, a timeout, or a broken
configuration is an InventoryError naming the source and its file.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import secrets
import selectors
import shlex
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from configparser import ConfigParser
from configparser import Error as ConfigError
from pathlib import Path
from string import Template
from typing import Any

from dsh.inventory.base import UPCALL_TIMEOUT, InventoryError
from dsh.nodeset import MAX_EXPAND, upper_bound
from dsh.state import open_private, private_dir

#: The most an upcall may write to its stdout.
UPCALL_OUTPUT = 16 << 20
#: What is kept of an upcall's stderr, for the sentence about its failure.
_STDERR_KEPT = 4096
#: A group name dsh hands ClusterShell as `@SOURCE:NAME` (no operator, range, blank).
_GROUP = re.compile(r"[^\s@,!&^*\[\]]+")
#: The most a names cache file may hold.
_CACHE_MOST = 4 << 20


class ClusterShellGroups:
    """ClusterShell's group sources, through one resolver made on first use."""

    def __init__(
        self,
        *,
        environ: Mapping[str, str],
        timeout: float = UPCALL_TIMEOUT,
        config: Sequence[str] | None = None,
    ) -> None:
        self.timeout = timeout
        self.config = list(config) if config is not None else config_paths(environ)
        self._made: Any = None
        self._lock = threading.RLock()

    def sources(self) -> list[str]:
        """The sources' names, the default first."""
        with self._lock:
            return list(self._resolver().sources())

    def default(self) -> str | None:
        """The default source's name (None: there is no source at all)."""
        with self._lock:
            name = self._resolver().default_source_name
            return str(name) if name else None

    def source(self, name: str) -> ClusterShellSource:
        """One source, as a GroupSource; InventoryError if there is none of that name."""
        with self._lock:
            self._source(name)  # there is one
            return ClusterShellSource(self, name)

    def members(self, group: str, source: str | None = None) -> str | None:
        """The group's hosts, folded (`web[1-3]`), its own `@other` resolved by
        ClusterShell; None when the source (the default one if None) has no such group."""
        from ClusterShell.NodeSet import NodeSet
        from ClusterShell.NodeUtils import GroupSourceQueryFailed, UpcallGroupSource

        with self._lock:
            src = self._source(source)
            if src is None:
                return None
            if not _GROUP.fullmatch(group):
                raise InventoryError(f"{group!r} cannot name a group of ClusterShell's")
            resolver = self._resolver()

            def top() -> Any:
                if not isinstance(src, UpcallGroupSource):
                    return resolver.group_nodes(group, src.name) if group in src.groups else None
                try:
                    return resolver.group_nodes(group, src.name) or None
                except GroupSourceQueryFailed as exc:
                    if getattr(exc, "upcall", None) == "map":
                        return None  # the source does not know the group
                    raise

            if self._ask(src, top) is None:
                return None
            return str(self._ask(src, lambda: NodeSet(f"@{src.name}:{group}", resolver=resolver)))

    def names(self, source: str | None = None) -> list[str]:
        """The source's groups (the default one if None), sorted, ranges in their
        names expanded as ClusterShell does; [] for an upcall source without `list`."""
        from ClusterShell.NodeSet import grouplist
        from ClusterShell.NodeUtils import GroupSourceNoUpcall

        with self._lock:
            src = self._source(source)
            if src is None:
                return []
            try:
                found = self._ask(src, lambda: grouplist(src.name, resolver=self._resolver()))
            except GroupSourceNoUpcall:
                return []  # an upcall source without `list`
            return sorted({str(name) for name in found})

    # -- the resolver

    def _resolver(self) -> Any:
        if self._made is None:
            self._made = self._make()
        return self._made

    def _make(self) -> Any:
        from ClusterShell.NodeSet import ILLEGAL_GROUP_CHARS
        from ClusterShell.NodeUtils import GroupResolverConfig, GroupResolverError, UpcallGroupSource

        found = [path for path in self.config if os.path.isfile(path)]
        resolver = GroupResolverConfig(found, ILLEGAL_GROUP_CHARS)
        try:
            resolver.sources()  # ClusterShell reads its configuration on first use
            if not found:
                dirs = [os.path.dirname(path) for path in self.config]
                resolver.config.read_dict({"Main": _shipped_main(dirs)})
                resolver._parse_config(dirs[-1] if dirs else "/etc/clustershell")
            names = list(resolver.sources())
        except (GroupResolverError, ConfigError, OSError, ValueError) as exc:
            where = ", ".join(found) or " ".join(self.config)
            raise InventoryError(
                f"ClusterShell's group configuration ({where}) cannot be read: {exc}"
            ) from None
        for name in names:
            src = resolver._source(name)
            if isinstance(src, UpcallGroupSource):
                src._upcall_read = _BoundedUpcall(src, self.timeout)
        asked = resolver.group_nodes

        def group_nodes(group: str, namespace: str | None = None) -> Any:
            nodes = asked(group, namespace)
            most = upper_bound(",".join(nodes))
            if most > MAX_EXPAND:
                raise InventoryError(
                    f"group source {namespace or resolver.default_source_name!r}: group {group!r}"
                    f" may hold up to {most} hosts, more than the {MAX_EXPAND} allowed"
                )
            return nodes

        resolver.group_nodes = group_nodes  # every group's text passes here, nested ones too
        return resolver

    def _source(self, name: str | None) -> Any:
        """The source of that name, or the default one (None if there is none)."""
        resolver = self._resolver()
        if name is None and not resolver.default_source_name:
            return None
        name = name if name is not None else resolver.default_source_name
        known = list(resolver.sources())
        if name not in known:
            have = f"its sources are {', '.join(known)}" if known else "it has no source"
            where = ", ".join(p for p in self.config if os.path.isfile(p)) or "no groups.conf"
            raise InventoryError(f"ClusterShell has no group source {name!r} ({where}): {have}")
        return resolver._source(name)

    def _ask(self, src: Any, call: Callable[[], Any]) -> Any:
        """`call()` with ClusterShell's errors as InventoryErrors about `src` (a
        missing upcall is left to the caller)."""
        from ClusterShell.NodeSet import NodeSetException
        from ClusterShell.NodeUtils import GroupResolverError, GroupSourceNoUpcall, GroupSourceQueryFailed
        from ClusterShell.RangeSet import RangeSetException

        try:
            return call()
        except GroupSourceNoUpcall:
            raise
        # AttributeError, TypeError: a YAML value that is no text (`web: 5`).
        except (NodeSetException, GroupResolverError, GroupSourceQueryFailed, RangeSetException) as exc:
            failed = _failed_upcall(exc)
            raise InventoryError(failed or f"group source {src.name!r} ({_where(src)}): {exc}") from None
        except (ConfigError, OSError, AttributeError, TypeError) as exc:
            raise InventoryError(f"group source {src.name!r} ({_where(src)}): {exc}") from None


class ClusterShellSource:
    """One of ClusterShell's sources, as a GroupSource."""

    def __init__(self, groups: ClusterShellGroups, name: str) -> None:
        self._groups, self._name = groups, name

    @property
    def name(self) -> str:
        return self._name

    def members(self, group: str) -> str | None:
        return self._groups.members(group, self._name)

    def names(self) -> list[str]:
        return self._groups.names(self._name)


def config_paths(environ: Mapping[str, str]) -> list[str]:
    """Where ClusterShell looks for groups.conf, lowest precedence first (see the
    module's docstring), from `environ`."""
    home = environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    user = environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    dirs = [
        "/etc/clustershell",
        os.path.join(home, ".local/etc/clustershell"),
        os.path.join(user, "clustershell"),
    ]
    if environ.get("CLUSTERSHELL_CFGDIR"):
        dirs.append(environ["CLUSTERSHELL_CFGDIR"])
    return [os.path.join(d, "groups.conf") for d in dirs]


def _shipped_main(dirs: list[str]) -> dict[str, str]:
    """The [Main] of ClusterShell's shipped groups.conf, for the directories `dirs`
    (quoted for its shlex.split, `%` doubled for ConfigParser)."""
    unique = list(dict.fromkeys(dirs))
    return {
        key: shlex.join(os.path.join(d, sub) for d in unique).replace("%", "%%")
        for key, sub in (("autodir", "groups.d"), ("confdir", "groups.conf.d"))
    }


def _where(src: Any) -> str:
    """The file that defines a source: its YAML file, or the *.conf of its cfgdir
    that has its section (else the cfgdir)."""
    loader = getattr(src, "loader", None)
    if loader is not None:
        return str(loader.filename)
    cfgdir = str(getattr(src, "cfgdir", None) or "")
    for path in sorted(glob.glob(os.path.join(glob.escape(cfgdir), "*.conf"))):
        parser = ConfigParser()
        try:
            parser.read(path)
        except (ConfigError, OSError, UnicodeDecodeError):
            continue
        if any(src.name in section.split(",") for section in parser.sections()):
            return path
    return cfgdir


def _failed_upcall(exc: BaseException) -> str | None:
    """The sentence of the failed upcall behind an error, even one ClusterShell wrapped."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "upcall", None) is not None:
            return str(seen)
        seen = seen.__context__
    return None


class _BoundedUpcall:
    """ClusterShell's `UpcallGroupSource._upcall_read(cmdtpl, args)`, bounded."""

    def __init__(self, src: Any, timeout: float) -> None:
        self.src, self.timeout = src, timeout

    def __call__(self, cmdtpl: str, args: Mapping[str, Any] | None = None) -> str:
        from ClusterShell.NodeUtils import GroupSourceQueryFailed

        configured = self.src.upcalls[cmdtpl]
        cmdline = Template(configured).safe_substitute(args or {})
        about, where = f"group source {self.src.name!r}: its {cmdtpl} upcall", f"({_where(self.src)})"
        try:
            proc = subprocess.Popen(
                cmdline,
                shell=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.src.cfgdir,
                start_new_session=True,
            )
        except OSError as exc:
            raise InventoryError(
                f"{about} cannot start: {exc.strerror or exc}: {configured} {where}"
            ) from None
        try:
            out, err, over = _collect(proc, self.timeout)
        finally:
            if proc.returncode is None:  # past a bound, or interrupted: the whole group goes
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
        said = {
            "time": f"did not answer within {self.timeout:g} s",
            "size": f"wrote more than {UPCALL_OUTPUT >> 20} MiB",
        }.get(over or "", f"exited with status {proc.returncode}")
        if over:
            raise InventoryError(f"{about} {said}: {configured} {where}")
        if proc.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            why = f" saying {lines[0]!r}" if lines else ""
            failed = GroupSourceQueryFailed(f"{about} {said}{why}: {configured} {where}", self.src)
            failed.upcall = cmdtpl  # for members(): a failed `map` says "no such group"
            raise failed
        return out.decode(errors="replace").strip()


def _collect(proc: subprocess.Popen[bytes], timeout: float) -> tuple[bytes, bytes, str | None]:
    """What `proc` writes until it exits: (stdout, stderr's start, None), or
    "time"/"size" as the third when a bound is passed first (it is left running)."""
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    out, err = bytearray(), bytearray()
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return bytes(out), bytes(err), "time"
            for key, _ in sel.select(left):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    sel.unregister(key.fileobj)
                elif key.data is out:
                    out += chunk
                    if len(out) > UPCALL_OUTPUT:
                        return bytes(out), bytes(err), "size"
                elif len(err) < _STDERR_KEPT:
                    err += chunk[: _STDERR_KEPT - len(err)]
    try:
        proc.wait(max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
        return bytes(out), bytes(err), "time"
    return bytes(out), bytes(err), None


class NamesCache:
    """The group names completion offers, kept in a private JSON file at `path`:
    {"v": 1, "at": EPOCH, "names": {SOURCE: [NAME, ...]}, "default": SOURCE}.
    `names()` answers from the file at once; `refresh()` asks ClusterShell (each
    upcall bounded) and rewrites it. A file that is not this user's own regular
    file, or not of this form, is ignored, and replaced at the next refresh."""

    def __init__(
        self,
        path: Path,
        groups: ClusterShellGroups,
        ttl: float = 300,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path, self.groups, self.ttl, self.clock = path, groups, ttl, clock

    def names(self) -> list[str]:
        """The default source's groups as NAME, then every source's as SOURCE:NAME."""
        cached = self._read()
        return _offered(cached["names"], cached["default"]) if cached else []

    def stale(self) -> bool:
        """Whether there is no usable file, or it is older than `ttl` (or from the future)."""
        cached = self._read()
        return cached is None or not 0 <= self.clock() - cached["at"] <= self.ttl

    def refresh(self) -> list[str]:
        """Ask ClusterShell again (a source that fails is left out) and write the file."""
        found: dict[str, list[str]] = {}
        default: str | None = None
        try:
            default = self.groups.default()
            for source in self.groups.sources():
                try:
                    found[source] = self.groups.names(source)
                except InventoryError:
                    continue
        except InventoryError:
            pass
        data = {"v": 1, "at": self.clock(), "names": found, "default": default}
        private_dir(self.path.parent)
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}")
        try:
            with open_private(temp) as f:
                f.write(json.dumps(data, sort_keys=True).encode())
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)
        return _offered(found, default)

    def _read(self) -> dict[str, Any] | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_size > _CACHE_MOST:
                return None
            with os.fdopen(os.dup(fd), "rb") as f:
                data = json.loads(f.read(_CACHE_MOST))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)
        return data if _well_formed(data) else None


def _well_formed(data: Any) -> bool:
    if not isinstance(data, dict) or data.get("v") != 1 or not isinstance(data.get("names"), dict):
        return False
    lists = data["names"].values()
    return (
        isinstance(data.get("at"), (int, float))
        and isinstance(data.get("default"), (str, type(None)))
        and all(isinstance(names, list) and all(isinstance(n, str) for n in names) for names in lists)
    )


def _offered(found: Mapping[str, list[str]], default: str | None) -> list[str]:
    plain = sorted(found.get(default, [])) if default is not None else []
    return plain + sorted(f"{source}:{name}" for source, names in found.items() for name in names)

"""The OpenSSH client configuration, read once per fan-out and resolved by dsh itself.

asyncssh would re-read ~/.ssh/config for every connection, which at a few
hundred hosts costs more than the connections. So `SshConfig.load` parses the
files once, `SshConfig.resolve` answers each alias from the parsed blocks, and
dsh hands asyncssh explicit options with its own config reading turned off.

The rules are OpenSSH's (ssh_config(5), checked against `ssh -G` of 9.2 in
the tests):

- the first obtained value of an option wins; IdentityFile and CertificateFile
  accumulate in order, duplicates dropped;
- `Host` patterns (`*`, `?`, `!` negation) match the alias as typed, case
  sensitively; `Match host` and `originalhost` compare without case, `host`
  against the HostName obtained so far; `Match user` sees the User so far
  (else the local user);
- `Match exec`, `canonical`, `final` and criteria newer than 9.2 are not
  supported: such a block never applies, and `warnings` says so;
- `Include` is expanded at parse time under the condition of the block that
  holds it; an included file's own Host and Match lines open blocks of their own;
- the hostname is lowercased after HostName substitution, and so is
  HostKeyAlias, as ssh does: %h and %k see the lowercased names.

Blocks whose Host patterns are all plain names are indexed by name, so one
alias walks only its own blocks and the general (wildcard, negated, Match)
ones. Standard library only: importing this must not import asyncssh.
"""

from __future__ import annotations

import getpass
import glob
import hashlib
import os
import pwd
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import cast

from dsh.errors import UsageError
from dsh.record import record

#: The system-wide file, read after the user's; relative Includes in it start here.
SYSTEM_CONFIG = Path("/etc/ssh/ssh_config")
SYSTEM_DIR = Path("/etc/ssh")
#: Nesting of Include that OpenSSH allows below a top-level file.
MAX_INCLUDE_DEPTH = 16
MAX_IDENTITY_FILES = 100
DEFAULT_USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
DEFAULT_GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


class SshConfigError(UsageError):
    """An ssh config dsh cannot use; the message starts `file:line:` when about a line."""


@record
class HostOptions:
    """What one alias resolves to, ready to hand to asyncssh.

    Paths are expanded where ssh expands them (`~`, %-tokens, `${VAR}`).
    `identity_agent` keeps ssh's special values as written: `none`,
    `SSH_AUTH_SOCK`, `$NAME` (read that variable); so does `forward_agent`
    (`yes`, `no`, a socket's path or `$NAME`; None when not set).
    `password_authentication` and `kbd_interactive_authentication` are None
    when not set: dsh then asks for no password (unless --ask-pass).
    """

    alias: str  # the name as written in the dsh target
    hostname: str  # HostName (tokens expanded), else the alias; lowercased like ssh
    port: int
    user: str
    identity_files: tuple[str, ...]  # () if none given (ssh would try its defaults)
    identities_only: bool
    identity_agent: str | None
    proxy_jump: tuple[str, ...]  # hops "[user@]host[:port]"; () if unset or none
    proxy_command: str | None
    user_known_hosts: tuple[str, ...]
    global_known_hosts: tuple[str, ...]  # as written: ssh expands nothing here
    host_key_alias: str | None  # lowercased like ssh
    connect_timeout: float | None
    server_alive_interval: float | None
    server_alive_count_max: int | None
    strict_host_key_checking: str | None  # yes, no, ask or accept-new; recorded only
    certificate_files: tuple[str, ...] = ()
    forward_agent: str | None = None
    password_authentication: bool | None = None
    kbd_interactive_authentication: bool | None = None


# -- lines ---------------------------------------------------------------------------------

#: ssh's strdelim for the keyword: it ends at blanks or `=`; one `=` may follow.
_LINE = re.compile(r"[ \t]*([^ \t=]*)[ \t]*(?:=[ \t]*)?(.*)", re.DOTALL)
_PLAIN_ARGS = re.compile(r"[^\"'\\#]*")
_BLANKS = re.compile(r"[ \t]+")


def _split_args(text: str) -> list[str] | None:
    """ssh's argv_split: blanks separate, `"` and `'` quote, `\\` escapes quotes,
    backslash and blank, `#` at the start of a word ends the line. None: open quote."""
    if _PLAIN_ARGS.fullmatch(text):
        return [arg for arg in _BLANKS.split(text) if arg]
    args: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t":
            i += 1
            continue
        if text[i] == "#":
            break
        arg: list[str] = []
        quote = ""
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n and (text[i + 1] in "'\"\\" or (not quote and text[i + 1] == " ")):
                arg.append(text[i + 1])
                i += 2
                continue
            if not quote and c in " \t":
                break
            if not quote and c in "'\"":
                quote = c
            elif quote and c == quote:
                quote = ""
            else:
                arg.append(c)
            i += 1
        if quote:
            return None
        args.append("".join(arg))
    return args


# -- patterns and conditions ---------------------------------------------------------------


def _is_literal(pattern: str) -> bool:
    return "*" not in pattern and "?" not in pattern


def _compile(pattern: str) -> str | re.Pattern[str]:
    if _is_literal(pattern):
        return pattern
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL)


@record
class _Patterns:
    """A pattern list: true if some pattern matches and no negated one does."""

    items: tuple[tuple[bool, str | re.Pattern[str]], ...]

    @classmethod
    def of(cls, patterns: Iterable[str], fold: bool) -> _Patterns:
        items = []
        for pattern in patterns:
            negated = pattern.startswith("!")
            body = pattern[1:] if negated else pattern
            items.append((negated, _compile(body.lower() if fold else body)))
        return cls(tuple(items))

    def match(self, text: str) -> bool:
        found = False
        for negated, pattern in self.items:
            if pattern == text if isinstance(pattern, str) else pattern.fullmatch(text) is not None:
                if negated:
                    return False
                found = True
        return found


@record
class _Host:
    """A `Host` line. `names`: its patterns when all are plain, positive names."""

    ident: int
    patterns: _Patterns
    names: frozenset[str] | None


@record
class _Match:
    """A `Match` line: all criteria must hold; `never` if one is unsupported."""

    ident: int
    criteria: tuple[tuple[str, bool, _Patterns], ...]  # (kind, negated, patterns)
    never: bool


_Condition = _Host | _Match
_Setting = tuple[str, object, str]  # (keyword, parsed value, "file:line")
_UNSET: tuple[object, str] = (None, "")


@record
class _Block:
    """Settings that apply when every condition holds (enclosing Includes first)."""

    conditions: tuple[_Condition, ...]
    settings: tuple[_Setting, ...]


# -- values --------------------------------------------------------------------------------

#: The keywords dsh reads, in their usual spelling (for messages); others are ignored.
_NAMES = {
    name.lower(): name
    for name in (
        "HostName",
        "Port",
        "User",
        "IdentityFile",
        "CertificateFile",
        "IdentitiesOnly",
        "IdentityAgent",
        "ProxyJump",
        "ProxyCommand",
        "UserKnownHostsFile",
        "GlobalKnownHostsFile",
        "HostKeyAlias",
        "ConnectTimeout",
        "ServerAliveInterval",
        "ServerAliveCountMax",
        "StrictHostKeyChecking",
        "ForwardAgent",
        "PasswordAuthentication",
        "KbdInteractiveAuthentication",
    )
}
_ACCUMULATE = frozenset({"identityfile", "certificatefile"})
_LISTS = frozenset({"userknownhostsfile", "globalknownhostsfile"})
_TIME = re.compile(r"(\d+)([sSmMhHdDwW]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRICT = {
    "yes": "yes",
    "true": "yes",
    "no": "no",
    "false": "no",
    "off": "no",
    "ask": "ask",
    "accept-new": "accept-new",
}
_INT_MAX = 2**31 - 1


def _port(text: str) -> int | None:
    """A port number 1..65535 or a TCP service name, as ssh's a2port."""
    if text.isascii() and text.isdigit():
        number = int(text)
        return number if 0 < number <= 65535 else None
    try:
        return socket.getservbyname(text, "tcp")
    except (OSError, ValueError):
        return None


def _seconds(text: str) -> int | None:
    """ssh's convtime: `90`, `1m30s`, `2h`; None if malformed."""
    total, pos = 0, 0
    while pos < len(text):
        m = _TIME.match(text, pos)
        if m is None or (not m.group(2) and m.end() < len(text)):
            return None
        total += int(m.group(1)) * _UNITS[m.group(2).lower()]
        pos = m.end()
    return total if text and total <= _INT_MAX else None


def _jump(text: str, where: str) -> tuple[str, ...]:
    """ProxyJump hops as `[user@]host[:port]` (an ssh:// URI loses its scheme)."""
    if text.lower() == "none":
        return ()
    hops = []
    for hop in text.split(","):
        plain = hop[6:].removesuffix("/") if hop.lower().startswith("ssh://") else hop
        user, at, rest = plain.rpartition("@")
        if rest.startswith("["):
            host, close, port = rest[1:].partition("]")
            ok = bool(close) and (not port or port.startswith(":"))
            port = port[1:]
        else:
            host, _, port = rest.partition(":")
            ok = ":" not in port
        if (
            not ok
            or not host
            or (at and not user)
            or (port and _port(port) is None)
            or any(q in hop for q in "\"'")
        ):
            raise SshConfigError(f"{where}: ProxyJump: bad hop {hop!r} (want [user@]host[:port])")
        hops.append(plain)
    return tuple(hops)


def _tilde(path: str, home: Path, where: str, name: str) -> str:
    """`~` and `~/x` mean home, `~user/x` that user's home, as ssh's tilde_expand_filename."""
    if not path.startswith("~"):
        return path
    user, slash, rest = path[1:].partition("/")
    if user:
        try:
            base = pwd.getpwnam(user).pw_dir
        except KeyError:
            raise SshConfigError(f"{where}: {name}: no user {user!r} for {path!r}") from None
    else:
        base = str(home)
    return f"{base.rstrip('/')}/{rest}" if slash else base


_PERCENT = re.compile(r"%(.?)", re.DOTALL)
_PERCENT_DOLLAR = re.compile(r"%(.?)|\$\{([^}]*)(\}?)", re.DOTALL)


def _expand(
    text: str, tokens: Mapping[str, str], environ: Mapping[str, str] | None, where: str, name: str
) -> str:
    """%-tokens from `tokens` (`%%` is one of them); `${VAR}` too when `environ` is given."""
    if "%" not in text and (environ is None or "${" not in text):
        return text

    def one(m: re.Match[str]) -> str:
        if m.group(0).startswith("%"):
            token = m.group(1)
            if token not in tokens:
                what = f"%{token} is not a token of {name}" if token else "a lone % ends the value"
                raise SshConfigError(f"{where}: {name}: {what} (write %% for a percent sign)")
            return tokens[token]
        var = m.group(2)
        if not m.group(3):
            raise SshConfigError(f"{where}: {name}: unterminated ${{ in {text!r}")
        assert environ is not None
        if var not in environ:
            raise SshConfigError(f"{where}: {name}: environment variable {var} is not set")
        return environ[var]

    return (_PERCENT if environ is None else _PERCENT_DOLLAR).sub(one, text)


# -- parsing -------------------------------------------------------------------------------


class _Parser:
    """Reads files into a flat list of blocks, expanding Includes in place."""

    def __init__(self, home: Path, environ: Mapping[str, str]) -> None:
        self.home = home
        self.environ = environ
        self.blocks: list[_Block] = []
        self.aliases: dict[str, None] = {}
        self.warnings: list[str] = []
        self._conditions = 0

    def feed(self, text: str, name: str, *, system: bool, outer: tuple[_Condition, ...], depth: int) -> None:
        chain = outer
        settings: list[_Setting] = []
        for lineno, raw in enumerate(text.split("\n"), 1):
            m = _LINE.match(raw.rstrip(" \t\r\n\f"))
            assert m is not None
            keyword, rest = m.group(1), m.group(2)
            if not keyword or keyword.startswith("#"):
                continue
            key = keyword.lower()
            where = f"{name}:{lineno}"
            if key in ("host", "match", "include"):
                self._flush(chain, settings)
                settings = []
                if key == "include":
                    self._include(self._args(rest, where, "Include"), where, system, chain, depth)
                elif key == "host":
                    chain = (*outer, self._host(self._args(rest, where, "Host"), where))
                else:
                    chain = (*outer, self._match(self._args(rest, where, "Match"), where))
            elif key in _NAMES:
                setting = self._setting(key, rest, where)
                if setting is not None:
                    settings.append(setting)
        self._flush(chain, settings)

    def _flush(self, chain: tuple[_Condition, ...], settings: list[_Setting]) -> None:
        if settings:
            self.blocks.append(_Block(chain, tuple(settings)))

    def _ident(self) -> int:
        self._conditions += 1
        return self._conditions

    @staticmethod
    def _args(rest: str, where: str, name: str) -> list[str]:
        args = _split_args(rest)
        if args is None:
            raise SshConfigError(f"{where}: {name}: unterminated quote")
        if not args:
            raise SshConfigError(f"{where}: {name} needs an argument")
        if "" in args:
            raise SshConfigError(f"{where}: {name}: empty argument")
        return args

    def _host(self, patterns: list[str], where: str) -> _Host:
        plain = [p for p in patterns if not p.startswith("!") and _is_literal(p)]
        for alias in plain:
            self.aliases.setdefault(alias)
        names = frozenset(patterns) if len(plain) == len(patterns) else None
        return _Host(self._ident(), _Patterns.of(patterns, fold=False), names)

    def _match(self, args: list[str], where: str) -> _Match:
        criteria: list[tuple[str, bool, _Patterns]] = []
        unsupported: list[str] = []
        never = False
        i = 0
        while i < len(args):
            word = args[i]
            i += 1
            negated = word.startswith("!")
            attr, eq, value = (word[1:] if negated else word).partition("=")
            attr = attr.lower()
            if attr == "all":
                if i != len(args) or any(
                    a.lstrip("!").lower() not in ("canonical", "final") for a in args[:-1]
                ):
                    raise SshConfigError(f"{where}: Match all must stand alone (or follow canonical/final)")
                never = never or negated
            elif attr in ("canonical", "final"):
                unsupported.append(attr)
            else:
                if not eq:
                    if i == len(args):
                        raise SshConfigError(f"{where}: Match {attr} needs an argument")
                    value = args[i]
                    i += 1
                if attr in ("host", "originalhost", "user", "localuser"):
                    fold = attr in ("host", "originalhost")
                    criteria.append((attr, negated, _Patterns.of(value.split(","), fold)))
                else:
                    unsupported.append(attr)
        if unsupported:
            what = ", ".join(dict.fromkeys(unsupported))
            self.warnings.append(f"{where}: Match {what} is not supported by dsh; this block is ignored")
        return _Match(self._ident(), tuple(criteria), never or bool(unsupported))

    def _include(
        self, patterns: list[str], where: str, system: bool, chain: tuple[_Condition, ...], depth: int
    ) -> None:
        base = SYSTEM_DIR if system else self.home / ".ssh"
        for pattern in patterns:
            path = _tilde(pattern, self.home, where, "Include")
            for found in sorted(glob.glob(path if os.path.isabs(path) else str(base / path))):
                if os.path.isdir(found):
                    continue
                if depth >= MAX_INCLUDE_DEPTH:
                    raise SshConfigError(
                        f"{where}: Include of {found} nests more than {MAX_INCLUDE_DEPTH} deep"
                        " (does a file include itself?)"
                    )
                try:
                    text = Path(found).read_text(encoding="utf-8", errors="surrogateescape")
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise SshConfigError(f"{where}: Include: cannot read {found}: {exc.strerror}") from None
                self.feed(text, found, system=system, outer=chain, depth=depth + 1)

    def _setting(self, key: str, rest: str, where: str) -> _Setting | None:
        name = _NAMES[key]
        if key == "proxycommand":  # the rest of the line, verbatim
            command = rest.lstrip(" \t=")
            if not command:
                raise SshConfigError(f"{where}: {name} needs an argument")
            return (key, None if command.lower() == "none" else command, where)
        if key == "proxyjump":  # like ssh: the first word of the line as written, no quoting
            words = rest.lstrip(" \t=").split(None, 1)
            if not words:
                raise SshConfigError(f"{where}: {name} needs an argument")
            return (key, _jump(words[0], where), where)
        args = self._args(rest, where, name)
        if key in _LISTS:
            return (key, tuple(args), where)
        if len(args) > 1:
            raise SshConfigError(f"{where}: {name} takes one argument, not {len(args)}")
        arg = args[0]
        value: object = arg
        if key == "port":
            value = _port(arg)
            if value is None:
                raise SshConfigError(f"{where}: Port {arg!r} is not a port number (1..65535) or service")
        elif key in ("connecttimeout", "serveraliveinterval"):
            if arg.lower() == "none":
                return None  # as in ssh: the option stays unset, a later value may set it
            seconds = _seconds(arg)
            if seconds is None:
                raise SshConfigError(f"{where}: {name} {arg!r} is not a time (seconds, or like 1m30s)")
            value = float(seconds)
        elif key == "serveralivecountmax":
            if not (arg.isascii() and arg.isdigit() and int(arg) <= _INT_MAX):
                raise SshConfigError(f"{where}: {name} {arg!r} is not a whole number")
            value = int(arg)
        elif key in ("identitiesonly", "passwordauthentication", "kbdinteractiveauthentication"):
            if arg.lower() not in ("yes", "true", "no", "false"):
                raise SshConfigError(f"{where}: {name} takes yes or no, not {arg!r}")
            value = arg.lower() in ("yes", "true")
        elif key == "stricthostkeychecking":
            if arg.lower() not in _STRICT:
                raise SshConfigError(f"{where}: {name} takes yes, no, ask or accept-new, not {arg!r}")
            value = _STRICT[arg.lower()]
        elif key == "forwardagent" and arg.lower() in ("yes", "true", "no", "false"):
            value = "yes" if arg.lower() in ("yes", "true") else "no"
        elif key in ("identityagent", "forwardagent"):
            if arg.startswith("$") and not arg.startswith("${") and not _ENV_NAME.fullmatch(arg[1:]):
                raise SshConfigError(f"{where}: {name} {arg!r}: $ must be followed by a variable name")
            _expand(arg.replace("%", "%%"), {"%": "%"}, self.environ, where, name)  # ssh checks ${} here
        return (key, value, where)


# -- resolving -----------------------------------------------------------------------------


class _State:
    """The options obtained so far for one alias: first value wins."""

    __slots__ = ("alias", "certificates", "identities", "local_user", "values")

    def __init__(self, alias: str, local_user: str) -> None:
        self.alias = alias
        self.local_user = local_user
        self.values: dict[str, tuple[object, str]] = {}
        self.identities: dict[str, str] = {}  # raw value -> where, in order
        self.certificates: dict[str, str] = {}

    def apply(self, settings: tuple[_Setting, ...]) -> None:
        values = self.values
        for key, value, where in settings:
            if key in _ACCUMULATE:
                got = self.identities if key == "identityfile" else self.certificates
                raw = cast(str, value)
                if raw not in got:
                    if len(got) >= MAX_IDENTITY_FILES:
                        name = _NAMES[key]
                        raise SshConfigError(
                            f"{where}: more than {MAX_IDENTITY_FILES} {name} for {self.alias}"
                        )
                    got[raw] = where
            elif key in values:
                continue
            elif key == "proxyjump":
                if "proxycommand" not in values:
                    values[key] = (value, where)
            elif key == "proxycommand":
                if values.get("proxyjump", ((), ""))[0] == ():  # ProxyJump none leaves it open
                    values[key] = (value, where)
            else:
                values[key] = (value, where)

    def hostname(self) -> str:
        """HostName so far, %h expanded, else the alias; lowercased."""
        got = self.values.get("hostname")
        if got is None:
            return self.alias.lower()
        raw, where = cast(tuple[str, str], got)
        return _expand(raw, {"%": "%", "h": self.alias}, None, where, "HostName").lower()

    def user(self) -> str:
        got = self.values.get("user")
        return self.local_user if got is None else cast(str, got[0])

    def holds(self, condition: _Condition) -> bool:
        if isinstance(condition, _Host):
            return condition.patterns.match(self.alias)
        if condition.never:
            return False
        for kind, negated, patterns in condition.criteria:
            if kind == "host":
                text = self.hostname()
            elif kind == "originalhost":
                text = self.alias.lower()
            elif kind == "user":
                text = self.user()
            else:
                text = self.local_user
            if patterns.match(text) == negated:
                return False
        return True


class SshConfig:
    """Parsed ssh client config files (made by `load` or `parse_text`); `resolve`
    answers one alias at a time.

    `warnings` lists what dsh cannot honour (`file:line: ...`), for the user.
    """

    __slots__ = (
        "_blocks",
        "_by_name",
        "_default_known",
        "_environ",
        "_general",
        "_home",
        "_local_host",
        "_local_user",
        "_names",
        "_overrides",
        "_resolved",
        "_uid",
        "warnings",
    )

    def __init__(self, parser: _Parser, local_user: str) -> None:
        self._blocks = parser.blocks
        self._names = list(parser.aliases)
        self.warnings: list[str] = parser.warnings
        self._home = parser.home
        self._environ = parser.environ
        self._local_user = local_user
        self._local_host = socket.gethostname()
        self._uid = str(os.getuid())
        self._default_known = tuple(_tilde(p, self._home, "", "") for p in DEFAULT_USER_KNOWN_HOSTS)
        self._general: list[int] = []
        self._by_name: dict[str, list[int]] = {}
        self._overrides: dict[str, tuple[_Setting, ...]] = {}
        #: Each alias resolved once (every action asks, for its intent's identity).
        self._resolved: dict[str, HostOptions] = {}
        for index, block in enumerate(self._blocks):
            if any(isinstance(c, _Match) and c.never for c in block.conditions):
                continue
            names = next((c.names for c in block.conditions if isinstance(c, _Host) and c.names), None)
            if names is None:
                self._general.append(index)
            else:
                for name in names:
                    self._by_name.setdefault(name, []).append(index)

    @classmethod
    def load(
        cls,
        paths: Sequence[Path] | None = None,
        *,
        home: Path | None = None,
        local_user: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> SshConfig:
        """Read ~/.ssh/config then /etc/ssh/ssh_config (either may be missing), or,
        like `ssh -F`, only `paths`, which must all be readable."""
        home = Path.home() if home is None else home
        parser = _Parser(home, dict(os.environ if environ is None else environ))
        if paths is None:
            files = [(home / ".ssh" / "config", False, False), (SYSTEM_CONFIG, True, False)]
        else:
            files = [(Path(path), False, True) for path in paths]
        for path, system, required in files:
            try:
                text = path.read_text(encoding="utf-8", errors="surrogateescape")
            except (FileNotFoundError, NotADirectoryError) as exc:
                if required:
                    raise SshConfigError(f"{path}: cannot read ssh config: {exc.strerror}") from None
                continue
            except OSError as exc:
                raise SshConfigError(f"{path}: cannot read ssh config: {exc.strerror}") from None
            parser.feed(text, str(path), system=system, outer=(), depth=0)
        return cls(parser, getpass.getuser() if local_user is None else local_user)

    @classmethod
    def parse_text(
        cls,
        text: str,
        name: str = "<text>",
        *,
        home: Path,
        local_user: str,
        environ: Mapping[str, str] | None = None,
    ) -> SshConfig:
        """A config from text, read as a user config file called `name`."""
        parser = _Parser(home, dict(os.environ if environ is None else environ))
        parser.feed(text, name, system=False, outer=(), depth=0)
        return cls(parser, local_user)

    def override(
        self,
        alias: str,
        *,
        hostname: str | None = None,
        port: int | None = None,
        user: str | None = None,
        identity_file: str | None = None,
        where: str = "",
    ) -> None:
        """What an inventory says of `alias`: its values come first, as `ssh -o` would
        give them, so they win over every block; the blocks still match the alias and
        give the rest (and more identity files after this one)."""
        settings: list[_Setting] = []
        if hostname is not None:
            settings.append(("hostname", hostname.replace("%", "%%"), where))
        if port is not None:
            settings.append(("port", port, where))
        if user is not None:
            settings.append(("user", user, where))
        if identity_file is not None:
            settings.append(("identityfile", identity_file.replace("%", "%%"), where))
        self._overrides[alias] = tuple(settings)
        self._resolved.pop(alias, None)

    def aliases(self) -> list[str]:
        """Plain names from Host lines (no wildcard, not negated), in file order, once each."""
        return list(self._names)

    def resolve(self, alias: str) -> HostOptions:
        """The options for `alias`, as ssh would use them to connect to it (worked out
        once per alias: the files are read once too)."""
        found = self._resolved.get(alias)
        if found is None:
            found = self._resolved[alias] = self._resolve(alias)
        return found

    def _resolve(self, alias: str) -> HostOptions:
        hits = self._by_name.get(alias)
        order = sorted(self._general + hits) if hits else self._general
        state = _State(alias, self._local_user)
        state.apply(self._overrides.get(alias, ()))
        seen: dict[int, bool] = {}
        for index in order:
            block = self._blocks[index]
            for condition in block.conditions:
                # A condition is decided where it stands, once: blocks after an
                # Include share it, whatever the included file set meanwhile.
                held = seen.get(condition.ident)
                if held is None:
                    held = seen[condition.ident] = state.holds(condition)
                if not held:
                    break
            else:
                state.apply(block.settings)
        return self._options(state)

    def _options(self, state: _State) -> HostOptions:
        values, alias, home, env = state.values, state.alias, self._home, self._environ
        hostname = state.hostname()
        port = cast(int, values.get("port", _UNSET)[0] or 22)
        user = state.user()
        key_alias = cast("str | None", values.get("hostkeyalias", _UNSET)[0])
        key_alias = None if key_alias is None else key_alias.lower()
        tokens: dict[str, str] = {}

        def expand(text: str, at: str, name: str) -> str:
            if "%" in text and not tokens:  # most configs have none: build them on demand
                tokens.update(self._tokens(alias, hostname, port, user, key_alias))
            return _expand(text, tokens, env, at, name)

        def path(raw: str, at: str, name: str) -> str:
            return expand(_tilde(raw, home, at, name), at, name)

        known: tuple[str, ...] = self._default_known
        if "userknownhostsfile" in values:
            raw_known, at = cast(tuple[tuple[str, ...], str], values["userknownhostsfile"])
            known = tuple(path(p, at, "UserKnownHostsFile") for p in raw_known)
        agent, at = cast(tuple["str | None", str], values.get("identityagent", _UNSET))
        if agent is not None:
            agent = path(agent, at, "IdentityAgent")
        forward, at = cast(tuple["str | None", str], values.get("forwardagent", _UNSET))
        if forward not in (None, "yes", "no"):
            forward = path(forward, at, "ForwardAgent")
        command, at = cast(tuple["str | None", str], values.get("proxycommand", _UNSET))
        if command is not None and "%" in command:
            proxy_tokens = {"%": "%", "h": hostname, "n": alias, "p": str(port), "r": user}
            command = _expand(command, proxy_tokens, None, at, "ProxyCommand")

        def value(key: str) -> object:
            return values.get(key, _UNSET)[0]

        return HostOptions(
            alias=alias,
            hostname=hostname,
            port=port,
            user=user,
            identity_files=tuple(path(raw, at, "IdentityFile") for raw, at in state.identities.items()),
            identities_only=bool(value("identitiesonly")),
            identity_agent=agent,
            proxy_jump=cast(tuple[str, ...], value("proxyjump") or ()),
            proxy_command=command,
            user_known_hosts=known,
            global_known_hosts=cast(
                tuple[str, ...], value("globalknownhostsfile") or DEFAULT_GLOBAL_KNOWN_HOSTS
            ),
            host_key_alias=key_alias,
            connect_timeout=cast("float | None", value("connecttimeout")),
            server_alive_interval=cast("float | None", value("serveraliveinterval")),
            server_alive_count_max=cast("int | None", value("serveralivecountmax")),
            strict_host_key_checking=cast("str | None", value("stricthostkeychecking")),
            certificate_files=tuple(
                path(raw, at, "CertificateFile") for raw, at in state.certificates.items()
            ),
            forward_agent=forward,
            password_authentication=cast("bool | None", value("passwordauthentication")),
            kbd_interactive_authentication=cast("bool | None", value("kbdinteractiveauthentication")),
        )

    def _tokens(
        self, alias: str, hostname: str, port: int, user: str, key_alias: str | None
    ) -> dict[str, str]:
        """The %-tokens of ssh_config(5) for one host (%% included)."""
        local = self._local_host
        return {
            "%": "%",
            "C": hashlib.sha1(f"{local}{hostname}{port}{user}".encode()).hexdigest(),
            "d": str(self._home),
            "h": hostname,
            "i": self._uid,
            "k": key_alias or alias,
            "L": local.split(".")[0],
            "l": local,
            "n": alias,
            "p": str(port),
            "r": user,
            "u": self._local_user,
        }

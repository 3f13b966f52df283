"""Hosts over SSH (the only asyncssh user): one connection per host, reused by a session.

A `SshFleet` serves the lines of one session. It reads the ssh config once
(dsh/remote/sshconfig.py: asyncssh's own reading is off, it would parse the
files again for every connection), loads each identity and known_hosts file
once, and keeps one connection per alias, opened on first use and reused by
later lines. Every command starts through the spool wrapper as one exec
(claim, launch and streaming together); a timeout or a cancel runs KILL as a
second exec on the same connection.

Host keys: `strict` (the default) trusts only known_hosts; `accept-new`
trusts and records the key of a host that known_hosts does not name at all;
`off` trusts such a host without recording it. Under every policy a key that
differs from the one known_hosts holds for the host is refused.

Credentials (dsh/remote/sshcreds.py asks and keeps them): an encrypted identity
file is opened before connecting, with a passphrase asked once per file per
session (not when the agent the host is reached with holds its key), then paired
with its `-cert.pub` and the CertificateFile certificates. A password or a
keyboard-interactive login is offered only where asked for (--ask-pass, or
PasswordAuthentication / KbdInteractiveAuthentication yes for the host);
elsewhere a host that takes no key is refused at once. ForwardAgent (or -A)
forwards the agent at this process's SSH_AUTH_SOCK (in an executor process, its
relay to the attached client's agent: dsh/agentrelay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import stat
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from dsh.bytestext import to_bytes
from dsh.plan import KILL_GRACE, PUT, STOP_CONFIRM, STOP_MARGIN
from dsh.remote import askpass, hostops, spool, sshlink
from dsh.remote.base import (
    NOT_OWNER,
    Asks,
    Check,
    Copied,
    CopyJob,
    Exec,
    Gate,
    Identity,
    OutputSink,
    Progress,
    Spot,
)
from dsh.remote.base import RemoteUnreachable as Unusable
from dsh.remote.hostlink import HostLink, LinkLost
from dsh.remote.local import CHECK_BYTES
from dsh.remote.sshconfig import HostOptions, SshConfig, SshConfigError
from dsh.remote.sshcreds import LOGIN_BOUND, TRIES, Credentials, Login, WrongPassphrase
from dsh.remote.sshrun import asyncssh, run_script  # asyncssh as dsh imports it: filtered

if TYPE_CHECKING:
    from dsh.remote.copying import Files

#: Defaults, unless the ssh config's ConnectTimeout / ServerAlive* say otherwise.
CONNECT_TIMEOUT = 10.0
KEEPALIVE_INTERVAL = 15.0
KEEPALIVE_COUNT = 3
#: SSH handshakes in progress at once, whatever the fan-out: a thousand at once on a
#: small machine share its CPU so thinly that none ends within its connect timeout
#: (the benchmark's 1,000 flows all came back unreachable). Each connection's
#: timeout counts from the start of its own handshake.
HANDSHAKES = 128
#: How long the wrapper may take to notice its command ended (its slowest poll, and more).
SETTLE = 5.0
#: How many times a connection's agent is booted again after it died.
AGENT_REBOOTS = 3
T = TypeVar("T")
#: Ciphers, in the order offered: AES-GCM first (in asyncssh, AES runs in OpenSSL with
#: the CPU's AES instructions, ChaCha20-Poly1305 in two passes: a copy moves ~30 % more
#: bytes a second with AES-GCM on loopback), then asyncssh's own order.
CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
)
_DEFAULT_IDENTITIES = ("id_rsa", "id_ecdsa", "id_ecdsa_sk", "id_ed25519", "id_ed25519_sk", "id_dsa")


class SshFleet:
    """Connections to hosts for one session (callable: alias -> Remote)."""

    def __init__(
        self,
        config: SshConfig,
        *,
        host_keys: str = "strict",
        connect_timeout: float = CONNECT_TIMEOUT,
        kill_grace: float = KILL_GRACE,
        root: str = spool.REMOTE_ROOT,
        spool_keep: float = 7 * 86400.0,
        warn: Callable[[str], None] | None = None,
        gate: Gate | None = None,
        asks: Asks | None = None,
        ask_pass: bool = False,
        forward_agent: bool = False,
        host_agent: str = "auto",
    ) -> None:
        self.config = config
        #: Whether actions go through a host agent (dsh.remote.hostlink): "off" (the sh
        #: wrapper for everything), "auto" (an agent booted, while the session waits for
        #: its next line, on each connection that ran an action), "eager" (one booted
        #: with each connection, before its first action).
        self.host_agent = host_agent
        self._links: dict[asyncssh.SSHClientConnection, asyncio.Future[HostLink | None]] = {}
        #: Agents booted again on a connection after theirs died (at most AGENT_REBOOTS each).
        self._reboots: dict[asyncssh.SSHClientConnection, int] = {}
        #: Connections that ran an action through the wrapper, by alias (auto: their
        #: agents boot at the next `idle`).
        self._ran: dict[asyncssh.SSHClientConnection, str] = {}
        #: The session spool the last launch went to (an agent's warm-up goes there too),
        #: and the aliases that launched something (only their agents are warmed: a host
        #: that only answered checks or copies has no spool of the session to clean).
        self.spool_session = ""
        self.launched: set[str] = set()
        #: Where a command's sudo asking for a password is passed on, and where a
        #: passphrase or a login's password is asked.
        self.asks = asks or Asks()
        #: Aliases sent the sudo helper's text already (dsh/remote/askpass.py).
        self.helped: set[str] = set()
        #: Password logins for every host (--ask-pass), not only those the config names.
        self.ask_pass = ask_pass
        #: The agent forwarded to every host (-A), not only those the config names.
        self.forward_agent = forward_agent
        #: Shut when the session's lease is lost or in doubt: nothing is launched or killed.
        self.gate = gate or Gate()
        self.host_keys = host_keys
        self.connect_timeout = connect_timeout
        self.kill_grace = kill_grace
        self.root = root
        self.spool_keep = spool_keep
        self._cleaning: dict[str, asyncio.Task[None]] = {}
        self.warn = warn or (lambda text: None)
        self.creds = Credentials(self.asks, self.warn)
        self._conns: dict[tuple[str, ...], asyncio.Future[asyncssh.SSHClientConnection]] = {}
        #: The session's puts, shared per machine (remote/copying.py's Blobs, made by
        #: the first copy).
        self.blobs: Any = None
        #: An SFTP session per connection, opened by its first copy.
        self._sftp: dict[asyncssh.SSHClientConnection, asyncio.Future[asyncssh.SFTPClient]] = {}
        self._key_files: dict[str, _KeyFile | None] = {}
        self._certs: dict[str, list[asyncssh.SSHCertificate]] = {}
        self._pairs: dict[tuple[str, tuple[str, ...]], list[asyncssh.SSHKeyPair]] = {}
        self._agents: dict[str, asyncio.Future[frozenset[bytes]]] = {}
        self._said_no_agent = False
        self._known: dict[tuple[str, ...], asyncssh.SSHKnownHosts] = {}
        self._hosts: dict[str, SshHost] = {}
        #: Hosts whose login shell wrote something before the wrapper (said once each).
        self.noisy: set[str] = set()
        self._recorded: set[str] = set()
        self._handshakes = asyncio.Semaphore(HANDSHAKES)
        _raise_open_file_limit()

    def __call__(self, alias: str) -> SshHost:
        host = self._hosts.get(alias)
        if host is None:
            host = self._hosts[alias] = SshHost(self, alias)
        return host

    def clean_once(self, alias: str, session: str) -> None:
        """For one session in spool.CLEAN_EVERY, clean each host's old spools once,
        beside its first command (on the same connection, not waited for)."""
        if alias not in self._cleaning and spool.cleans(session):
            self._cleaning[alias] = asyncio.ensure_future(self(alias).clean(self.spool_keep))

    async def close(self) -> None:
        """Close every connection (bounded: a peer that does not answer is dropped);
        questions still open for a login are withdrawn."""
        self.creds.close()
        cleaning = [t for t in self._cleaning.values() if not t.done()]
        if cleaning:
            _done, late = await asyncio.wait(cleaning, timeout=2.0)
            for task in late:
                task.cancel()
        for booting in self._links.values():  # a boot cut short by the end is nothing to say
            booting.cancel()
        conns = [f.result() for f in self._conns.values() if f.done() and not f.exception()]
        for f in self._conns.values():
            f.cancel()
        self._conns.clear()
        if not self.gate.open():  # an owner that lost its lease drops them, as if it had died
            for conn in conns:
                conn.abort()
            return
        for conn in conns:
            conn.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.wait_closed() for c in conns)), 2.0)

    # -- connections -------------------------------------------------------------

    async def connection(self, alias: str) -> asyncssh.SSHClientConnection:
        """The open connection to `alias` (through its ProxyJump hosts), made on first use."""
        try:
            path = self._path(alias, self.config.resolve(alias), 0)
        except SshConfigError as exc:
            raise Unusable("refused", f"ssh config: {exc.message}") from None
        return await self._open(path)

    def _path(self, name: str, opts: HostOptions, depth: int) -> list[tuple[str, HostOptions]]:
        """The hops to `name`, itself last: its ProxyJump hosts in order, the first of
        them reached through its own ProxyJump if it has one (as ssh -J does)."""
        if depth > 8:
            raise Unusable("unreachable", f"ProxyJump: more than 8 jumps on the way to {name}")
        path: list[tuple[str, HostOptions]] = []
        for spec in opts.proxy_jump:
            hop = _hop(self.config, spec)
            if path:
                path.append((spec, hop))
            else:
                path = self._path(spec, hop, depth + 1)
        path.append((name, opts))
        return path

    async def sftp(self, conn: asyncssh.SSHClientConnection) -> asyncssh.SFTPClient:
        """The SFTP session on `conn`, opened on first use (bounded by the connect timeout)."""
        from dsh.remote.sftp import open_sftp

        fut = self._sftp.get(conn)
        if fut is None or (fut.done() and (fut.cancelled() or fut.exception() is not None)):
            fut = self._sftp[conn] = asyncio.ensure_future(open_sftp(conn, self.connect_timeout))
        return await asyncio.shield(fut)

    async def link(self, alias: str, conn: asyncssh.SSHClientConnection) -> HostLink | None:
        """The host agent on `conn` (None: off, or this connection's host cannot run
        one: the wrapper then). Eager: booted on first use, and waited for; auto: only
        one that is up already (`idle` boots them)."""
        if self.host_agent == "off":
            return None
        fut = self._links.get(conn)
        if fut is not None and self._died(conn, fut):
            fut = None  # booted anew, as if never booted (auto: at the next `idle`)
        if fut is None:
            if self.host_agent != "eager":
                self._ran.setdefault(conn, alias)
                return None
            fut = self._boot(alias, conn, warm=False)  # this action warms it
        elif not fut.done():
            return None  # booting: this action goes through the wrapper
        link = await asyncio.shield(fut)
        return link if link is not None and link.alive else None

    def _died(self, conn: asyncssh.SSHClientConnection, fut: asyncio.Future[HostLink | None]) -> bool:
        """Whether `conn`'s agent came up and has died since (killed on the host, its channel
        closed) while the connection lives; then it is forgotten, to be booted again, at most
        AGENT_REBOOTS times a connection (an agent that keeps dying is left dead: the wrapper)."""
        if not fut.done() or fut.cancelled() or fut.exception() is not None:
            return False
        link = fut.result()
        if link is None or link.alive or conn.is_closed() or self._reboots.get(conn, 0) >= AGENT_REBOOTS:
            return False
        self._reboots[conn] = self._reboots.get(conn, 0) + 1
        del self._links[conn]
        link.close()
        return True

    def _boot(
        self, alias: str, conn: asyncssh.SSHClientConnection, *, warm: bool
    ) -> asyncio.Future[HostLink | None]:
        """Start booting the agent on `conn` (None when it does not come up, said once
        when the host has a python3 that could run it); `warm`: its first action's extra
        cost is paid before it is used (hostops.warm)."""

        async def boot() -> HostLink | None:
            try:
                link = await sshlink.start(conn, timeout=self.connect_timeout)
                if warm and self.spool_session and alias in self.launched and self.gate.open():
                    await hostops.warm(link, self.root, self.spool_session, alias, self.connect_timeout)
                return link
            except LinkLost as exc:
                if exc.booted:  # else: no python3, or the login shell failed (the wrapper says so)
                    said = (
                        f"{alias}: dsh's host agent did not start ({exc.why}); going on with the sh wrapper"
                    )
                    self.warn(said)
                return None

        fut = self._links[conn] = asyncio.ensure_future(boot())
        return fut

    def idle(self) -> None:
        """Auto: boot an agent on each connection that ran an action, while the
        session waits for its next line."""
        ran, self._ran = self._ran, {}
        if self.host_agent != "auto" or not self.gate.open():
            return
        for conn, alias in ran.items():
            if conn not in self._links and not conn.is_closed():
                self._boot(alias, conn, warm=True)

    def forget(self, conn: asyncssh.SSHClientConnection) -> None:
        """Drop (and close) a connection that broke, so that the next use makes a new one."""
        self._sftp.pop(conn, None)
        self._ran.pop(conn, None)
        self._reboots.pop(conn, None)
        gone = self._links.pop(conn, None)
        if gone is not None and gone.done() and not gone.cancelled() and gone.exception() is None:
            link = gone.result()
            if link is not None:
                link.close()
        for key, fut in list(self._conns.items()):
            if fut.done() and not fut.cancelled() and not fut.exception() and fut.result() is conn:
                del self._conns[key]
        conn.close()

    async def _open(self, path: list[tuple[str, HostOptions]]) -> asyncssh.SSHClientConnection:
        key = tuple(name for name, _ in path)
        fut = self._conns.get(key)
        if (
            fut is not None
            and fut.done()
            and not fut.cancelled()
            and not fut.exception()
            and fut.result().is_closed()
        ):
            del self._conns[key]
            fut = None
        if fut is None:
            fut = asyncio.ensure_future(self._connect(path))
            self._conns[key] = fut
        try:
            return await asyncio.shield(fut)
        except Exception:
            if self._conns.get(key) is fut:  # a later line tries again
                del self._conns[key]
            raise

    async def _connect(self, path: list[tuple[str, HostOptions]]) -> asyncssh.SSHClientConnection:
        opts = path[-1][1]
        where = f"{opts.hostname}:{opts.port}"
        tunnel: asyncssh.SSHClientConnection | None = None
        if len(path) > 1:
            try:
                tunnel = await self._open(path[:-1])
            except Unusable as exc:
                raise Unusable("unreachable", f"through ProxyJump {path[-2][0]}: {exc.message}") from None
        try:
            return await self._login(opts, where, tunnel)
        except Unusable:
            raise
        except Exception as exc:  # whatever asyncssh or the system says, it is this host's outcome
            raise Unusable("unreachable", f"{where}: {type(exc).__name__}: {exc}") from None

    async def _login(
        self, opts: HostOptions, where: str, tunnel: asyncssh.SSHClientConnection | None
    ) -> asyncssh.SSHClientConnection:
        timeout = opts.connect_timeout or self.connect_timeout
        keys = await self._client_keys(opts)  # first: a passphrase is asked outside any timeout
        known = self._known_hosts(opts)
        passwords = self.ask_pass if opts.password_authentication is None else opts.password_authentication
        kbdint = (
            passwords if opts.kbd_interactive_authentication is None else opts.kbd_interactive_authentication
        )
        login = self.creds.login(opts.user, opts.alias)
        client = _Client(self, opts, known, login)
        kwargs: dict[str, Any] = {
            "port": opts.port,
            "username": opts.user,
            "config": [],
            "client_factory": lambda: client,
            "known_hosts": known,
            "client_keys": keys,
            "password_auth": passwords,
            "kbdint_auth": kbdint,
            "connect_timeout": timeout,
            "login_timeout": timeout,
            "keepalive_interval": opts.server_alive_interval or KEEPALIVE_INTERVAL,
            "keepalive_count_max": opts.server_alive_count_max or KEEPALIVE_COUNT,
            "host_key_alias": opts.host_key_alias,
            "encryption_algs": list(CIPHERS),
        }
        if passwords or kbdint:  # a login may wait for answers: the timeout leaves that out
            kwargs["connect_timeout"] = None
            kwargs["login_timeout"] = timeout + TRIES * LOGIN_BOUND
        agent = _agent_path(opts)
        if agent is not None:
            kwargs["agent_path"] = agent or None
        forward = self._forwarded(opts)
        if forward:
            kwargs["agent_forwarding"] = forward
        if tunnel is not None:
            kwargs["tunnel"] = tunnel
        elif opts.proxy_command:  # a shell command line, as ssh runs it
            kwargs["proxy_command"] = ["/bin/sh", "-c", opts.proxy_command]
        try:
            async with self._handshakes:
                return await _within(asyncssh.connect(opts.hostname, **kwargs), timeout + 1, login)
        except asyncssh.HostKeyNotVerifiable:
            raise Unusable("refused", client.verdict or f"the host key of {where} is not trusted") from None
        except asyncssh.PermissionDenied as exc:
            raise Unusable("refused", f"{opts.user}@{where}: authentication failed ({exc.reason})") from None
        except TimeoutError:
            raise Unusable("unreachable", f"{where}: no SSH connection within {timeout:g}s") from None
        except asyncssh.Error as exc:
            raise Unusable("unreachable", f"{where}: {exc.reason}") from None
        except OSError as exc:
            raise Unusable("unreachable", f"{where}: {exc.strerror or exc}") from None

    def _forwarded(self, opts: HostOptions) -> str | None:
        """The agent socket forwarded to this host (ForwardAgent, -A), or None; a
        forwarding asked for with no agent here is said once."""
        setting = "yes" if self.forward_agent else opts.forward_agent
        if setting in (None, "no"):
            return None
        if setting == "yes":
            path = os.environ.get("SSH_AUTH_SOCK", "")
        elif setting.startswith("$"):
            path = os.environ.get(setting[1:], "")
        else:
            path = setting
        try:
            usable = bool(path) and stat.S_ISSOCK(os.stat(path).st_mode)
        except OSError:
            usable = False
        if usable:
            return path
        if not self._said_no_agent:
            self._said_no_agent = True
            why = f"no agent at {path}" if path else "no SSH_AUTH_SOCK here"
            self.warn(f"ssh: ForwardAgent: {why}; hosts are reached without an agent")
        return None

    async def _client_keys(self, opts: HostOptions) -> list[asyncssh.SSHKeyPair]:
        """The keys offered to this host: its identity files (else ssh's default ones),
        each opened once (a passphrase asked if need be) and paired with certificates."""
        explicit = bool(opts.identity_files)
        paths = list(opts.identity_files)
        if not paths:
            home = Path.home() / ".ssh"
            paths = [str(home / name) for name in _DEFAULT_IDENTITIES if (home / name).exists()]
        certs = [cert for name in opts.certificate_files for cert in self._certificates(name, explicit=True)]
        agent = _agent_path(opts)
        keys: list[asyncssh.SSHKeyPair] = []
        for path in paths:
            key = await self._identity(path, opts.alias, agent, explicit=explicit)
            if key is None:
                continue
            pairs = self._pairs.get((path, opts.certificate_files))
            if pairs is None:  # with a certificate first (as ssh offers them), then alone
                own = self._certificates(f"{path}-cert.pub", explicit=False)
                pairs = list(asyncssh.load_keypairs([key], certlist=[*own, *certs]))
                self._pairs[(path, opts.certificate_files)] = pairs
            keys.extend(pairs)
        return keys

    async def _identity(
        self, path: str, alias: str, agent: str | None, *, explicit: bool
    ) -> asyncssh.SSHKey | None:
        """The private key in `path` (None: not used, said once). An encrypted one is
        opened with a passphrase asked once per session, unless the agent the host is
        reached with holds it (the agent signs then, as with ssh)."""
        if path not in self._key_files:
            self._key_files[path] = self._read_key(path, explicit=explicit)
        found = self._key_files[path]
        if found is None:
            return None
        if found.key is not None:
            return found.key
        if found.public is not None and await self._agent_holds(agent, found.public):
            return None

        async def decrypt(passphrase: str) -> asyncssh.SSHKey:
            try:  # off the loop: a passphrase's key derivation takes a while
                key = await asyncio.to_thread(asyncssh.import_private_key, found.data, passphrase)
            except ValueError:  # asyncssh's KeyImportError and KeyEncryptionError
                raise WrongPassphrase from None
            key.set_filename(path)
            return key

        return await self.creds.unlock(path, alias, decrypt)

    def _read_key(self, path: str, *, explicit: bool) -> _KeyFile | None:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            if explicit:
                self.warn(f"ssh: identity file {path} does not exist")
            return None
        except OSError as exc:
            self.warn(f"ssh: identity file {path} not used ({exc.strerror or exc})")
            return None
        try:
            key = asyncssh.import_private_key(data)
        except ValueError as exc:
            if not str(exc).startswith("Passphrase"):
                self.warn(f"ssh: identity file {path} not used ({exc}); an ssh-agent may hold it")
                return None
        else:
            key.set_filename(path)
            return _KeyFile(key, b"", None)
        public = None  # encrypted: its public half tells whether an agent holds it
        with contextlib.suppress(OSError, ValueError):
            public = asyncssh.read_public_key(f"{path}.pub").public_data
        return _KeyFile(None, data, public)

    def _certificates(self, path: str, *, explicit: bool) -> list[asyncssh.SSHCertificate]:
        """The certificates in file `path`, read once (a CertificateFile that cannot be
        read is said once; a missing `-cert.pub` beside a key is not)."""
        certs = self._certs.get(path)
        if certs is None:
            certs = []
            try:
                certs = list(asyncssh.read_certificate_list(path))
            except FileNotFoundError:
                if explicit:
                    self.warn(f"ssh: certificate file {path} does not exist")
            except (OSError, ValueError) as exc:
                self.warn(f"ssh: certificate file {path} not used ({getattr(exc, 'strerror', None) or exc})")
            self._certs[path] = certs
        return certs

    async def _agent_holds(self, agent: str | None, public: bytes) -> bool:
        """Whether the agent at `agent` ($SSH_AUTH_SOCK when None) holds this public key
        (its keys are listed once per session)."""
        path = os.environ.get("SSH_AUTH_SOCK", "") if agent is None else agent
        if not path:
            return False
        listing = self._agents.get(path)
        if listing is None:
            listing = self._agents[path] = asyncio.ensure_future(_agent_keys(path))
        return public in await asyncio.shield(listing)

    def _known_hosts(self, opts: HostOptions) -> asyncssh.SSHKnownHosts:
        files = (*opts.user_known_hosts, *opts.global_known_hosts)
        known = self._known.get(files)
        if known is None:
            good = []
            for name in files:
                try:
                    lines = Path(name).read_text(encoding="utf-8", errors="replace").splitlines()
                except OSError:
                    continue
                for number, line in enumerate(lines, 1):
                    if not line.strip() or line.lstrip().startswith("#"):
                        continue
                    try:  # OpenSSH skips a line it cannot read; so does dsh, saying so
                        asyncssh.import_known_hosts(line)
                    except (ValueError, asyncssh.KeyImportError) as exc:
                        self.warn(f"ssh: {name}:{number}: known_hosts line skipped ({exc})")
                        continue
                    good.append(line)
            known = self._known[files] = asyncssh.import_known_hosts("\n".join(good))
        return known

    def record(self, opts: HostOptions, name: str, key: asyncssh.SSHKey) -> None:
        """accept-new: append a new host's key to the first UserKnownHostsFile."""
        line = f"{name} {key.export_public_key().decode().strip()}\n"
        if not opts.user_known_hosts or line in self._recorded:
            return
        self._recorded.add(line)
        path = Path(opts.user_known_hosts[0])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as fh:
                fh.write(line)
        except OSError as exc:
            self.warn(f"ssh: cannot record the host key of {name} in {path}: {exc.strerror}")
            return
        files = (*opts.user_known_hosts, *opts.global_known_hosts)
        self._known.pop(files, None)  # read again, with the new line, by the next connection


class _Client(asyncssh.SSHClient):
    """One login, as asyncssh asks it: dsh's host-key policy (when known_hosts does not
    trust a key) and the login's answers (a password, a keyboard-interactive challenge:
    asyncssh asks only for the methods the login allows)."""

    def __init__(
        self, fleet: SshFleet, opts: HostOptions, known: asyncssh.SSHKnownHosts, login: Login
    ) -> None:
        self.fleet = fleet
        self.opts = opts
        self.known = known
        self.login = login
        self.verdict = ""
        self.accepted: tuple[str, asyncssh.SSHKey] | None = None

    async def password_auth_requested(self) -> str | None:
        return await self.login.password()

    def kbdint_auth_requested(self) -> str:
        return ""  # no submethods: the server's own

    async def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str] | None:
        return await self.login.questions(instructions, prompts)

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        name = host if port == 22 else f"[{host}]:{port}"
        # By name only: OpenSSH no longer checks host keys by address (CheckHostIP no).
        host_keys, ca_keys, revoked, *_ = self.known.match(host, "", port if port != 22 else None)
        if host_keys or ca_keys or key in revoked:
            self.verdict = (
                f"HOST KEY CHANGED for {name}: the key it offers ({key.get_algorithm()}) is not the "
                "one known_hosts holds; nothing was run (remove the old key if the change is expected)"
            )
            return False
        if self.fleet.host_keys == "strict":
            self.verdict = (
                f"the host key of {name} is not in known_hosts; nothing was run "
                "(add it, e.g. with ssh-keyscan, or use --host-keys accept-new)"
            )
            return False
        if self.fleet.host_keys == "accept-new":
            self.accepted = (name, key)
        return True

    def auth_completed(self) -> None:
        self.login.succeeded()
        if self.accepted is not None:
            name, key = self.accepted
            self.fleet.record(self.opts, name, key)


class SshHost:
    """One host over SSH (a Remote)."""

    def __init__(self, fleet: SshFleet, alias: str) -> None:
        self.fleet = fleet
        self._name = alias

    @property
    def name(self) -> str:
        return self._name

    async def run(
        self,
        command: str,
        *,
        spot: Spot,
        timeout: float,
        output: OutputSink,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        told: float | None = None,
    ) -> Exec:
        fleet = self.fleet
        if not fleet.gate.open():
            return Exec("lost", None, 0.0, NOT_OWNER)
        told = timeout if told is None else told  # what its messages say; the budget is below
        fleet.clean_once(self._name, spot.session)
        fleet.spool_session = spot.session
        fleet.launched.add(self._name)
        if stdin is not None:  # its input goes first, into the spool, within the timeout
            started = time.monotonic()
            failed = await self._place_input(spot, stdin, timeout, told)
            if failed is not None:
                return failed
            timeout = max(timeout - (time.monotonic() - started), 0.001)
        backstop = timeout + fleet.kill_grace + SETTLE
        helper = self._name not in fleet.helped  # its text rides on a host's first launch only
        fleet.helped.add(self._name)
        secrets = spool.env_lines(env) if env else None
        job = hostops.Launch(
            fleet.root,
            spot.session,
            spot.action,
            spot.alias,
            backstop,
            command,
            fleet.kill_grace,
            secrets or "",
            helper,
            stdin is not None,
        )
        argv = job.argv()
        big = len(command.encode("utf-8", "surrogateescape")) + len(secrets or "") > hostops.MAX_COMMAND
        # The agent's boot (eager) waits at most half the time; what it took comes off the action's.
        deadline = time.monotonic() + timeout
        link = None if big else await self._link(timeout / 2)  # the wrapper says what the host makes of it
        timeout = max(deadline - time.monotonic(), 0.001)
        if link is not None:
            return await self._through(
                lambda w: hostops.launch(link, job, w, timeout),
                argv,
                spot,
                timeout,
                output,
                again=lambda left: self._exec(argv, spot, left, output, secrets=secrets, told=told),
                told=told,
            )
        return await self._exec(argv, spot, timeout, output, secrets=secrets, told=told)

    async def _link(self, timeout: float) -> HostLink | None:
        """This host's agent (None: agents are off, the host has none, or the
        connection is not there: `_exec` then says why as it always has)."""
        fleet = self.fleet
        if fleet.host_agent == "off":
            return None
        try:  # asyncio.timeout: wait_for drops a caller's cancel that comes as it ends (3.11)
            async with asyncio.timeout(timeout):
                conn = await fleet.connection(self._name)
                link = await fleet.link(self._name, conn)  # a boot within the action's time
        except (Unusable, TimeoutError):
            return None
        if link is not None:
            self._noted(link.dropped)  # what its login shell wrote before the boot's hello
        return link

    async def _through(
        self,
        streaming: Callable[[spool.Watch], Awaitable[int | hostops.Broken | hostops.Late]],
        argv: list[str],
        spot: Spot,
        timeout: float,
        output: OutputSink,
        again: Callable[[float], Awaitable[Exec]] | None = None,
        *,
        told: float,
    ) -> Exec:
        """A LAUNCH or FOLLOW through the agent (`streaming`), with the wrapper's
        outcomes: past `timeout` it is killed (by the wrapper's KILL); a link that dies
        meanwhile is followed through the wrapper from what was shown (the spool is
        the same). A LAUNCH the agent died before saying anything of, that the spool
        has never heard of either (PROBE: none), is launched `again` through the
        wrapper: its claim keeps it at most once."""
        fleet = self.fleet
        started = time.monotonic()
        deadline = started + timeout
        watch = spool.Watch(output, argv, asks=lambda ask: fleet.asks(self, spot, ask, deadline))

        async def kill(why: str) -> bool:  # by the wrapper's KILL, on the connection if it is there
            try:
                conn = await fleet.connection(self._name)
            except Unusable:
                return False
            return await self._kill(conn, spot, None, why)

        try:
            got = await streaming(watch)
        except BaseException:  # cancelled, or dsh's output failed: the command is stopped too
            await asyncio.shield(kill("cancelled"))
            raise
        if isinstance(got, int):
            if watch.helper_missing:
                fleet.helped.discard(self._name)
            return watch.result(got, time.monotonic() - started)
        if isinstance(got, hostops.Late):
            until = time.monotonic() + fleet.kill_grace + STOP_CONFIRM - STOP_MARGIN  # as `_kill`'s
            killed = await kill("timeout")
            if killed:  # what it says as it ends (a trap's last words), within the same stop budget
                await hostops.drain(got, watch, max(until - time.monotonic(), 0.001))
            else:  # the link may be dead (a partition): nothing more is waited for
                got.link.finish(got.rid)
            if killed:
                return Exec("timeout", None, time.monotonic() - started, f"no exit within {told:g}s")
            return Exec(
                "lost",
                None,
                time.monotonic() - started,
                f"no exit within {told:g}s, and the kill could not be confirmed; the backstop ends it",
            )
        left = max(deadline - time.monotonic(), 0.001)
        if again is not None and not got.heard:
            with contextlib.suppress(Unusable):
                if await self.probe(spot) == "none":  # the link is dead: the wrapper's PROBE
                    return await again(max(deadline - time.monotonic(), 0.001))
        follow = spool.follow_argv(fleet.root, spot.session, spot.action, spot.alias)
        rejoined = await self._exec(follow, spot, left, output, got.watch.passed, told=told)
        if rejoined.outcome in ("lost", "unreachable", "refused"):  # it may have run: never "nothing ran"
            why = f"the host agent's link broke ({got.why}), and {rejoined.message}"
            return Exec("lost", None, time.monotonic() - started, why)
        return Exec(rejoined.outcome, rejoined.exit_status, time.monotonic() - started, rejoined.message)

    async def _place_input(self, spot: Spot, data: bytes, timeout: float, told: float) -> Exec | None:
        """The action's input written into its spool through the host agent or SFTP
        (dsh/remote/inputfile.py) within `timeout`; an Exec when it could not be (nothing
        was launched), saying `told` (the action's timeout as the line gave it)."""
        from dsh.remote import inputfile
        from dsh.remote.copying import CopyFailed, FilesLost

        fleet = self.fleet
        started = time.monotonic()

        def ended(outcome: str, message: str) -> Exec:
            return Exec(outcome, None, time.monotonic() - started, message)

        try:
            async with asyncio.timeout(timeout):
                conn = await fleet.connection(self._name)
                try:
                    await inputfile.place(await self._files(conn, timeout), fleet.root, spot, data)
                except FilesLost as exc:
                    fleet.forget(conn)
                    return ended("unreachable", f"the connection broke while its input was written: {exc}")
        except Unusable as exc:
            return ended(exc.outcome, exc.message)
        except TimeoutError:
            said = f"its input ({len(data)} bytes) was not written to the host in time ({told:g}s)"
            return ended("timeout", said)
        except CopyFailed as exc:
            return ended("failed", f"cannot write its input to the spool: {exc.message}")
        return None

    async def _files(self, conn: asyncssh.SSHClientConnection, timeout: float) -> Files:
        """The host's files for a copy or an input: through its agent, else over SFTP."""
        from dsh.remote.agentfiles import AgentFiles
        from dsh.remote.sftp import SftpFiles

        link = await self._link(timeout)
        return AgentFiles(link) if link is not None else SftpFiles(await self.fleet.sftp(conn), conn)

    async def identity(self) -> Identity:
        conn = await self.fleet.connection(self._name)
        opts = self.fleet.config.resolve(self._name)
        key = conn.get_server_host_key()
        return Identity(f"{opts.user}@{opts.hostname}:{opts.port}", key.get_fingerprint() if key else "")

    async def follow(
        self, spot: Spot, *, timeout: float, output: OutputSink, told: float | None = None
    ) -> Exec:
        root = self.fleet.root
        argv = spool.follow_argv(root, spot.session, spot.action, spot.alias)
        told, deadline = timeout if told is None else told, time.monotonic() + timeout
        link = await self._link(timeout / 2)  # as `run`'s: its boot's time comes off the follow's
        timeout = max(deadline - time.monotonic(), 0.001)
        if link is not None:
            return await self._through(
                lambda w: hostops.follow(link, root, spot, w, timeout), argv, spot, timeout, output, told=told
            )
        return await self._exec(argv, spot, timeout, output, told=told)

    async def copy(
        self, job: CopyJob, *, spot: Spot, timeout: float, progress: Progress, output: OutputSink
    ) -> Copied:
        # a session without copies does without these
        from dsh.remote.copying import Blobs, Copier, CopyFailed, FilesLost, NotOwner
        from dsh.remote.getting import Get
        from dsh.remote.putting import Put

        fleet = self.fleet
        started = time.monotonic()
        deadline = started + timeout

        def ended(outcome: str, message: str) -> Copied:
            return Copied(Exec(outcome, None, time.monotonic() - started, message), job.facts)

        for attempt in (1, 2):
            if not fleet.gate.open():
                return ended("lost", NOT_OWNER)
            try:
                left = max(deadline - time.monotonic(), 0)
                conn = await asyncio.wait_for(fleet.connection(self._name), left)
            except Unusable as exc:
                return ended(exc.outcome, exc.message)
            except TimeoutError:
                return ended("unreachable", f"no connection within the copy's timeout ({timeout:g}s)")
            copier: Copier | None = None
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):
                    files = await self._files(conn, max(deadline - time.monotonic(), 0.001))
                    if fleet.blobs is None:
                        fleet.blobs = Blobs()
                    who = await self.identity()
                    make = Put if job.facts.direction == PUT else Get
                    copier = make(
                        files,
                        job,
                        spot,
                        root=fleet.root,
                        deadline=deadline,
                        progress=progress,
                        alive=fleet.gate.open,
                        remote=self,
                        output=output,
                        clock=time.monotonic,
                        blobs=fleet.blobs,
                        machine=f"{who.login} {who.key}",
                    )
                    done = await copier.run()
                return Copied(Exec("ok", 0, time.monotonic() - started), done.facts)
            except TimeoutError:
                if copier is not None:
                    await _bounded(copier.abandon("timeout"), fleet.connect_timeout)
                return ended("timeout", f"the copy did not end within {timeout:g}s")
            except asyncio.CancelledError:
                if copier is not None:
                    await asyncio.shield(_bounded(copier.abandon("cancelled"), fleet.connect_timeout))
                raise
            except CopyFailed as exc:
                if copier is not None:
                    await _bounded(copier.abandon("1"), fleet.connect_timeout)
                return ended("failed", exc.message)
            except NotOwner:
                return ended("lost", NOT_OWNER)
            except FilesLost as exc:
                fleet.forget(conn)
                if attempt == 2 or copier is None or deadline - time.monotonic() < 1.0:
                    return ended("unreachable", f"the connection broke during the copy: {exc}")
                job = CopyJob(job.facts, job.source, True, job.sudo, job.owner, job.mode)  # go on from there
        raise AssertionError("unreachable")

    async def kill(self, spot: Spot) -> bool:
        try:
            conn = await self.fleet.connection(self._name)
        except Unusable:
            return False
        return await self._kill(conn, spot, None, "cancelled")

    async def clean(self, keep: float) -> None:
        fleet = self.fleet
        with contextlib.suppress(Unusable, asyncssh.Error, OSError, TimeoutError):
            conn = await fleet.connection(self._name)
            argv = spool.clean_argv(fleet.root, keep)
            await asyncio.wait_for(run_script(conn, spool.as_stdin(argv)), fleet.connect_timeout)

    async def remove(self, session: str) -> bool:
        fleet = self.fleet
        try:
            conn = await fleet.connection(self._name)
            argv = spool.remove_argv(fleet.root, session)
            done = await asyncio.wait_for(run_script(conn, spool.as_stdin(argv)), fleet.connect_timeout)
        except (Unusable, asyncssh.Error, OSError, TimeoutError):
            return False
        return done.exit_status == 0

    async def check(self, command: str, *, timeout: float) -> Check:
        from dsh.remote import hostfiles

        started = time.monotonic()
        link = await self._link(timeout)
        if link is not None:
            with contextlib.suppress(LinkLost):  # else through the wrapper: a probe may run again
                left = max(timeout - (time.monotonic() - started), 0.001)
                return await hostfiles.check(link, command, left, CHECK_BYTES, timeout)
        late = f"the probe did not end within {timeout:g}s"
        if time.monotonic() - started >= timeout:  # its time went to the agent (booting, or dying)
            return Check(None, b"", late)
        left = max(timeout - (time.monotonic() - started), 0.001)
        try:
            conn = await self.fleet.connection(self._name)
        except Unusable as exc:
            return Check(None, b"", exc.message)
        argv = spool.check_argv(command, left)  # bounded on the host too
        script = to_bytes(spool.as_stdin(argv))  # bound values may hold any bytes
        try:
            done = await run_script(conn, script, timeout=left + SETTLE)
        except TimeoutError:  # asyncssh's is one too
            return Check(None, b"", late)
        except (asyncssh.Error, OSError) as exc:
            self.fleet.forget(conn)
            return Check(None, b"", _why(exc))
        unwrapped = spool.unwrap(argv, done.stdout if isinstance(done.stdout, bytes) else b"")
        if unwrapped is None:  # the login shell ended before the probe's wrapper began
            return Check(None, b"", f"the login shell exited {done.exit_status} before the probe ran")
        out, dropped = unwrapped
        self._noted(dropped)
        if done.exit_status == spool.WrapperExit.CHECK_TIMED_OUT:
            return Check(None, out[:CHECK_BYTES], late)
        return Check(done.exit_status, out[:CHECK_BYTES])

    async def port_open(self, port: int, *, timeout: float) -> bool:
        try:
            conn = await self.fleet.connection(self._name)
            _, writer = await asyncio.wait_for(conn.open_connection("localhost", port), timeout)
        except (Unusable, asyncssh.Error, OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def answer(self, spot: Spot, ask: str, answer: str | None, why: str = "") -> bool:
        fleet = self.fleet
        bound = fleet.connect_timeout + 5.0
        link = await self._link(fleet.connect_timeout)
        if link is not None:  # never also the wrapper's ANSWER: the FIFO would hold two lines
            try:
                line = askpass.feed(answer, why)
                async with asyncio.timeout(bound):
                    return await hostops.reply(link, fleet.root, spot, ask, line) == 0
            except (LinkLost, TimeoutError):
                return False
        argv = spool.answer_argv(fleet.root, spot.session, spot.action, spot.alias, ask)
        code, _ = await self._fed(argv, askpass.feed(answer, why), bound)
        return code == 0

    async def verify_sudo(self, answer: str, *, timeout: float) -> tuple[bool | None, str]:
        from dsh.remote import hostfiles

        started = time.monotonic()
        left = timeout
        link = await self._link(timeout)
        if link is not None:
            with contextlib.suppress(LinkLost):  # else the wrapper's VERIFY, in what is left
                left = max(timeout - (time.monotonic() - started), 0.001)
                return askpass.verdict(*await hostfiles.verify(link, answer, left), timeout)
            left = max(timeout - (time.monotonic() - started), 0.001)
        return askpass.verdict(*await self._fed(spool.verify_argv(), answer, left), timeout)

    async def _fed(self, argv: list[str], secret: str, timeout: float) -> tuple[int | None, str]:
        """A wrapper exec whose script sets `secret` (on the channel, never in an argv),
        bounded; its exit status (None: it did not run or end) and its stderr's end."""
        script = askpass.secret_script(spool.as_stdin(argv), secret)
        try:
            conn = await self.fleet.connection(self._name)
            done = await asyncio.wait_for(run_script(conn, script), timeout)
        except Unusable as exc:
            return None, exc.message
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            return None, _why(exc)
        return done.exit_status, str(done.stderr or "").strip()[-500:]

    async def probe(self, spot: Spot) -> str:
        fleet = self.fleet
        link = await self._link(fleet.connect_timeout)
        if link is not None:
            with contextlib.suppress(LinkLost, TimeoutError):  # else: the wrapper's PROBE
                return await asyncio.wait_for(hostops.probe(link, fleet.root, spot), fleet.connect_timeout)
        conn = await fleet.connection(self._name)
        argv = spool.probe_argv(fleet.root, spot.session, spot.action, spot.alias)
        try:
            done = await asyncio.wait_for(run_script(conn, spool.as_stdin(argv)), fleet.connect_timeout)
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            fleet.forget(conn)
            raise Unusable("unreachable", f"cannot ask the spool: {_why(exc)}") from None
        answer = spool.answer(argv, str(done.stdout or ""))
        if answer is None:
            raise Unusable("unreachable", f"cannot ask the spool: the login shell exited {done.exit_status}")
        return answer

    async def _exec(
        self,
        argv: list[str],
        spot: Spot,
        timeout: float,
        output: OutputSink,
        skip: dict[str, int] | None = None,
        secrets: str | None = None,
        *,
        told: float,
    ) -> Exec:
        """One exec of the wrapper (LAUNCH or FOLLOW) on this host's connection. If the
        connection drops while the command runs, a new connection FOLLOWs it from
        where the stream stopped (once, within what is left of the timeout).

        Bounded as `dsh explain` counts it: connecting, opening the exec and the
        command all within `timeout` from the start; stopping it after that within
        STOP_SECONDS (unconfirmed by then, the action is lost). Its messages say `told`
        (the timeout as the line gave it) where `timeout` is what is left of it."""
        started = time.monotonic()
        deadline = started + timeout
        fleet = self.fleet

        def ended(outcome: str, message: str) -> Exec:
            return Exec(outcome, None, time.monotonic() - started, message)

        try:
            conn = await asyncio.wait_for(fleet.connection(self._name), max(deadline - time.monotonic(), 0))
        except Unusable as exc:
            return ended(exc.outcome, exc.message)
        except TimeoutError:  # the connection goes on being made, for later lines
            return ended("unreachable", f"no connection within the command's timeout ({told:g}s)")
        watch = spool.Watch(output, argv, skip=skip, asks=lambda ask: fleet.asks(self, spot, ask, deadline))
        exec_ = _Exec(watch.sink)
        try:
            chan, _ = await asyncio.wait_for(
                conn.create_session(lambda: exec_, spool.REMOTE_SHELL, encoding=None),
                max(min(fleet.connect_timeout, deadline - time.monotonic()), 0.001),
            )
            script = spool.as_stdin(argv)
            if secrets is not None:  # in the script's text, on the channel: never in an argv
                script = askpass.secret_script(script, secrets, "secrets")
            chan.write(to_bytes(script))  # bound values may hold any bytes
            chan.write_eof()
        except asyncssh.ChannelOpenError as exc:  # refused before anything was asked to run
            fleet.forget(conn)
            return ended("unreachable", f"cannot start a command: {exc.reason}")
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            if exec_.status is not None:  # it ended before the script was written: as it said
                await asyncio.wait([exec_.closed], timeout=max(deadline - time.monotonic(), 0))
                result = watch.result(exec_.status, time.monotonic() - started)
                self._noted(watch.dropped if any(watch.started.values()) else 0)
                return result
            # The exec may have started: end it (or claim it dead) before anyone retries.
            if await self._kill(conn, spot, None, "cancelled"):
                return ended("unreachable", f"cannot start a command: {_why(exc)}")
            fleet.forget(conn)
            return ended("lost", f"the command may have started, and cannot be reached: {_why(exc)}")
        except asyncio.CancelledError:
            await asyncio.shield(self._kill(conn, spot, None, "cancelled"))
            raise
        try:
            waits: list[asyncio.Future[Any]] = [exec_.closed, exec_.failed]
            left = max(deadline - time.monotonic(), 0)
            done, _ = await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if exec_.failed.done():
                raise exec_.failed.result()
            if not done:
                killed = await self._kill(conn, spot, exec_, "timeout")
                chan.close()
                if killed:
                    return ended("timeout", f"no exit within {told:g}s")
                fleet.forget(conn)
                return ended(
                    "lost",
                    f"no exit within {told:g}s, and the kill could not be confirmed; "
                    "the wrapper's backstop ends it",
                )
        except BaseException:
            await asyncio.shield(self._kill(conn, spot, exec_, "cancelled"))
            chan.close()
            raise
        if exec_.status is None:  # the command goes on in its spool: follow it there
            fleet.forget(conn)
            why = f"killed by {exec_.signal}" if exec_.signal else "the connection was lost"
            left = deadline - time.monotonic()
            if skip is None and left > 0:
                argv = spool.follow_argv(fleet.root, spot.session, spot.action, spot.alias)
                rejoined = await self._exec(argv, spot, left, output, watch.passed, told=told)
                if rejoined.outcome not in ("unreachable", "refused"):
                    return Exec(
                        rejoined.outcome,
                        rejoined.exit_status,
                        time.monotonic() - started,
                        rejoined.message,
                    )
            return ended(
                "lost", f"{why} while the command ran; its spool keeps it ({spot.action}@{spot.alias})"
            )
        if watch.helper_missing:  # removed since: its text goes with the next launch
            fleet.helped.discard(self._name)
        result = watch.result(exec_.status, time.monotonic() - started)
        self._noted(watch.dropped if any(watch.started.values()) else 0)
        return result

    def _noted(self, dropped: int) -> None:
        """Say once per host that its login shell wrote something before the wrapper."""
        if dropped and self._name not in self.fleet.noisy:
            self.fleet.noisy.add(self._name)
            self.fleet.warn(spool.noise_note(self._name, dropped))

    async def _kill(
        self, conn: asyncssh.SSHClientConnection, spot: Spot, exec_: _Exec | None, why: str
    ) -> bool:
        """KILL from a new exec; then the launching exec (if ours) ends as it sees the
        status. True when that is confirmed: the action is over on the host; all of
        it within the stop budget (kill_grace + STOP_CONFIRM), as `dsh explain`
        counts. With the gate shut nothing is sent (False): the command is left to
        its spool."""
        fleet = self.fleet
        if not fleet.gate.open():
            return False
        until = time.monotonic() + fleet.kill_grace + STOP_CONFIRM - STOP_MARGIN
        argv = spool.kill_argv(fleet.root, spot.session, spot.action, spot.alias, fleet.kill_grace, why)
        try:
            done = await asyncio.wait_for(run_script(conn, spool.as_stdin(argv)), until - time.monotonic())
        except (asyncssh.Error, OSError, TimeoutError):
            return False
        if done.exit_status != 0:
            return False
        if exec_ is not None:
            try:
                await asyncio.wait_for(asyncio.shield(exec_.closed), max(until - time.monotonic(), 0.001))
            except TimeoutError:
                return True  # over on the host (KILL said so); the last of its output is in its spool
        return True


async def _bounded(work: Awaitable[None], seconds: float) -> None:
    """Clean-up that may not take long (a host that does not answer keeps its mess)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(work, seconds)


def _why(exc: BaseException) -> str:
    return getattr(exc, "reason", "") or str(exc) or type(exc).__name__


class _Exec(asyncssh.SSHClientSession[bytes]):
    """One LAUNCH or FOLLOW exec: output to the sink (a spool.Watch's) as it
    arrives, then its exit status."""

    def __init__(self, sink: OutputSink) -> None:
        loop = asyncio.get_running_loop()
        self.sink = sink
        self.status: int | None = None
        self.signal = ""
        self.closed: asyncio.Future[None] = loop.create_future()
        #: The sink failed (dsh's own stdout closed): the command is stopped too.
        self.failed: asyncio.Future[BaseException] = loop.create_future()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.failed.done():
            return
        stream = "stderr" if datatype == asyncssh.EXTENDED_DATA_STDERR else "stdout"
        try:
            self.sink(stream, data)
        except Exception as exc:
            self.failed.set_result(exc)

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.signal = signal

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass(frozen=True)
class _KeyFile:
    """An identity file as read: its key if it needs no passphrase; else its bytes
    (opened later) and, from its `.pub`, its public key (None: no `.pub`)."""

    key: asyncssh.SSHKey | None
    data: bytes
    public: bytes | None


async def _within(connecting: Awaitable[T], seconds: float, login: Login) -> T:
    """What `connecting` returns within `seconds`, not counting the time its login
    waits for answers (a person typing); TimeoutError after that."""
    task = asyncio.ensure_future(connecting)
    started = time.monotonic()
    try:
        while True:
            left = seconds + login.waited() - (time.monotonic() - started)
            done, _ = await asyncio.wait({task}, timeout=max(left, 0.5) if login.asking else max(left, 0))
            if done:
                return task.result()
            if not login.asking and seconds + login.waited() - (time.monotonic() - started) <= 0:
                raise TimeoutError
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task})


async def _agent_keys(path: str) -> frozenset[bytes]:
    """The public keys the agent at `path` holds (none if it cannot be asked within 5 s)."""
    try:
        async with asyncio.timeout(5.0):
            agent = await asyncssh.connect_agent(path)
            try:
                keys = await agent.get_keys()
            finally:
                agent.close()
                await agent.wait_closed()
    except (asyncssh.Error, OSError, TimeoutError, ValueError):
        return frozenset()
    return frozenset(key.key_public_data for key in keys)


def _hop(config: SshConfig, spec: str) -> HostOptions:
    """A ProxyJump hop `[user@]host[:port]`, resolved through the ssh config like any host."""
    user, _, rest = spec.rpartition("@")
    host, port = rest, ""
    if rest.startswith("["):
        host, _, port = rest[1:].partition("]")
        port = port.removeprefix(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    opts = config.resolve(host)
    changes: dict[str, Any] = {}
    if user:
        changes["user"] = user
    if port.isdigit():
        changes["port"] = int(port)
    if changes:
        from dataclasses import replace

        opts = replace(opts, **changes)
    return opts


def _agent_path(opts: HostOptions) -> str | None:
    """None: asyncssh's default ($SSH_AUTH_SOCK); "": no agent; else the socket."""
    agent = opts.identity_agent
    if agent is None:
        return "" if opts.identities_only and opts.identity_files else None
    if agent == "none":
        return ""
    if agent == "SSH_AUTH_SOCK":
        return os.environ.get("SSH_AUTH_SOCK", "")
    if agent.startswith("$"):
        return os.environ.get(agent[1:], "")
    return agent


def _raise_open_file_limit() -> None:
    """One connection per host: hundreds of sockets want more than the usual 1024."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

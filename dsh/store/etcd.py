"""The shared store: etcd v3 over gRPC, for sessions that several machines share.

This is the only module that imports an etcd client. It drives aetcd's
generated stubs (`aetcd.rpc`) over a `grpc.aio` channel of its own, because
aetcd's `Client` takes one endpoint over an insecure channel. Here:

- several endpoints form one channel with gRPC's round-robin policy: a member
  that dies is skipped, and calls wait (within their timeout) for a ready one;
- `etcds://` (or a CA, a client certificate and key) gives a TLS channel;
- a user and password authenticate; a token that etcd forgot or let expire
  is renewed on the first call it fails (once per call);
- a key prefix puts every key of this store under it (several dsh
  installations, or tests, in one etcd);
- reads, lease grants and keep-alives are retried within their timeout when
  the cluster is unavailable (a member down, a leader election); writes are
  not (their outcome is unknown: the caller decides, see the checkpointer);
- a watch whose stream breaks (etcd restarted) is re-created from the
  revision after the last one it delivered, so no event is lost or repeated;
- history is compacted as writes go, as the embedded store does: once the
  revisions a write returns run `history_keep` + COMPACT_EVERY past the last
  compaction, the history before the last `history_keep` revisions is
  compacted (in the background; a compaction someone else did is fine).

etcd's limits are checked before sending (`check_request`), so a refusal is the
same on every store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import ipaddress
import math
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import unquote

import grpc
from aetcd import rpc
from grpc import aio

from dsh.errors import StoreError, UsageError
from dsh.record import record
from dsh.store.base import (
    KV,
    MAX_REQUEST,
    Compacted,
    Compare,
    Delete,
    Event,
    InsecureStore,
    Lease,
    LeaseNotFound,
    Op,
    Put,
    RequestTooLarge,
    StoreDenied,
    StoreTimeout,
    StoreUnavailable,
    TxnResult,
    check_request,
    prefix_end,
)

#: A broken watch stream is re-created after this wait, doubling up to RETRY_MAX.
RETRY_FIRST = 0.05
RETRY_MAX = 1.0
#: Pages of a range read: etcd answers at most this many keys per request.
RANGE_PAGE = 1000
#: Revisions kept when compacting, and how many more are written between compactions.
HISTORY_KEEP = 100_000
COMPACT_EVERY = 10_000
#: A host of an etcd URL: a name or an IPv4 address (IPv6 goes in brackets).
_HOST = re.compile(r"[A-Za-z0-9._-]+")

_TARGETS = {
    "value": rpc.Compare.VALUE,
    "version": rpc.Compare.VERSION,
    "create": rpc.Compare.CREATE,
    "mod": rpc.Compare.MOD,
}
_RESULTS = {
    "==": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE}


class EtcdFailed(StoreError):
    """A call etcd answered with an error no other StoreError names: `code` is the
    gRPC status's name (FAILED_PRECONDITION, NOT_FOUND, …), `details` etcd's words."""

    def __init__(self, message: str, code: str, details: str) -> None:
        super().__init__(message)
        self.code = code
        self.details = details


@dataclasses.dataclass(frozen=True, slots=True)
class EtcdOptions:
    """Where etcd is and how to talk to it (see `parse_url`; the password is not
    in its repr)."""

    endpoints: tuple[tuple[str, int], ...]
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    prefix: bytes = b""
    #: The operator accepts an etcd off this machine without TLS or authentication.
    insecure: bool = False
    #: Authentication off is no refusal (for `dsh admin init`, which turns it on).
    auth_off_ok: bool = False


@record
class Security:
    """What a handle found out about its etcd: `auth` on, off, or not known yet;
    TLS; whether every endpoint is this machine; the user it logs in as."""

    auth: bool | None
    tls: bool
    loopback: bool
    user: str | None


def parse_url(
    url: str,
    *,
    ca: str | None = None,
    cert: str | None = None,
    key: str | None = None,
    user: str | None = None,
    password: str | None = None,
    prefix: str | None = None,
    insecure: bool = False,
) -> EtcdOptions:
    """`etcd://[USER@]HOST:PORT[,HOST:PORT…][/PREFIX]`, `etcds://…` for TLS.

    A CA, certificate or key also turns TLS on; the password comes from the
    caller (an environment variable or a file), never from the URL.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("etcd", "etcds"):
        raise UsageError(f"{url!r} is not an etcd URL (etcd://HOST:PORT[,HOST:PORT…][/PREFIX])")
    where, _, path = rest.partition("/")
    if "@" in where:
        named, _, where = where.rpartition("@")
        if ":" in named:
            raise UsageError("give the etcd password in DSH_ETCD_PASSWORD or a file, not in the URL")
        user = unquote(named)  # the URL is the most specific: it wins
    endpoints: list[tuple[str, int]] = []
    for part in where.split(","):
        host, colon, port = part.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        if bracketed:
            host = host[1:-1]
        if not colon or not _host_ok(host, bracketed) or not port.isdigit() or not 0 < int(port) < 65536:
            hint = " (an IPv6 address goes in brackets: [::1]:2379)" if ":" in host and not bracketed else ""
            raise UsageError(f"{part!r} in {url!r} is not HOST:PORT{hint}")
        endpoints.append((host, int(port)))
    if password is not None and not user:
        raise UsageError("an etcd password was given without a user (etcd://USER@HOST:PORT or DSH_ETCD_USER)")
    if user and password is None:
        raise UsageError(f"etcd user {user!r} needs a password (DSH_ETCD_PASSWORD or [etcd] password_file)")
    if bool(cert) != bool(key):
        raise UsageError("an etcd client certificate needs its key, and a key its certificate")
    # The URL's path wins too. dsh's keys start with "/", so the prefix ends without
    # one: "/team-a" + "/dsh/v1/…".
    chosen = (unquote(path) or prefix or "").strip("/")
    return EtcdOptions(
        tuple(endpoints),
        tls=scheme == "etcds" or bool(ca or cert),
        ca=ca,
        cert=cert,
        key=key,
        user=user or None,
        password=password,
        prefix=("/" + chosen).encode() if chosen else b"",
        insecure=insecure,
    )


def _host_ok(host: str, bracketed: bool) -> bool:
    """A host name or IPv4 address; in brackets, an IPv6 address."""
    if bracketed:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        return True
    return _HOST.fullmatch(host) is not None


#: Set within the task of an EtcdStore's `first` check: its calls do not wait for it.
_IN_FIRST: contextvars.ContextVar[bool] = contextvars.ContextVar("dsh_etcd_in_first", default=False)


class EtcdStore:
    def __init__(self, options: EtcdOptions, *, history_keep: int = HISTORY_KEEP) -> None:
        self.options = options
        self.history_keep = history_keep
        #: The revision compacted at last (as far as this handle knows); -1 before the first write.
        self._compacted = -1
        self._compacting: asyncio.Task[None] | None = None
        self._prefix = options.prefix
        self._channel: aio.Channel | None = None
        self._token: str | None = None
        #: etcd's authentication: on, off, or not known until the first call.
        self._auth_on: bool | None = None
        self._loopback = False
        self._auth_lock = asyncio.Lock()
        self._watches: set[_EtcdWatch] = set()
        self.closed = False
        #: A check of the caller's, run once after the login and before any call goes on
        #: (every call waits for it, and fails with its error): dsh.session.seen's tripwire.
        self.first: Callable[[], Awaitable[None]] | None = None
        self._first: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        scheme = "etcds" if self.options.tls else "etcd"
        where = ",".join(f"{h}:{p}" for h, p in self.options.endpoints)
        return f"{scheme}://{where}{self._prefix.decode(errors='replace')}"

    # -- the channel ----------------------------------------------------------------

    def _open(self) -> aio.Channel:
        if self.closed:
            raise StoreError(f"the store at {self.name} is closed")
        if self._channel is not None:
            return self._channel
        options: list[tuple[str, Any]] = [
            ("grpc.lb_policy_name", "round_robin"),
            ("grpc.max_send_message_length", MAX_REQUEST + 65536),
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            # A member that went away is found within seconds, and a restarted one
            # is reconnected to within a second (gRPC's default backoff reaches 120 s).
            # Never through a proxy of the environment (http_proxy, grpc_proxy): the security
            # rule judges the addresses dialled, and a proxy would see the password.
            ("grpc.enable_http_proxy", 0),
            ("grpc.keepalive_time_ms", 5000),
            ("grpc.keepalive_timeout_ms", 3000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        target, self._loopback = _target(self.options.endpoints)
        if not (self._loopback or self.options.tls or self.options.insecure):
            raise InsecureStore(
                f"etcd at {self.name} is not on this machine and its connection is not encrypted: "
                "its password, the commands and the values bound in sessions would cross the network "
                "in clear. Use etcds:// (TLS), or say --insecure-store to accept that"
            )
        if self.options.tls:
            first = self.options.endpoints[0][0]
            if not _is_ip(first):  # the certificate names the host, the target is its addresses
                options.append(("grpc.ssl_target_name_override", first))
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(self.options.ca),
                private_key=_read(self.options.key),
                certificate_chain=_read(self.options.cert),
            )
            self._channel = aio.secure_channel(target, credentials, options=options)
        else:
            self._channel = aio.insecure_channel(target, options=options)
        channel = self._channel
        self._kv = rpc.KVStub(channel)
        self._lease = rpc.LeaseStub(channel)
        self._watch = rpc.WatchStub(channel)
        self._auth = rpc.AuthStub(channel)
        self._services: dict[str, Any] = {
            "KV": self._kv,
            "Lease": self._lease,
            "Auth": self._auth,
            "Maintenance": rpc.MaintenanceStub(channel),
        }
        return channel

    def recheck(self) -> None:
        """Forget what this handle learnt of etcd's authentication (after turning it
        on or off): the next call authenticates again, or finds it off."""
        self._token = None
        self._auth_on = None

    @property
    def security(self) -> Security:
        """What this handle knows of its etcd's security (auth: None before a first call)."""
        if self._channel is None and not self.closed:
            self._open()
        return Security(self._auth_on, self.options.tls, self._loopback, self.options.user)

    def _auth_off(self) -> None:
        """etcd said its authentication is off: go on without a token on this machine
        or when the operator accepted it, else refuse."""
        if not (self._loopback or self.options.insecure or self.options.auth_off_ok):
            raise InsecureStore(
                f"etcd at {self.name} has authentication off: anyone who can reach it can read every "
                "session and run commands with any dsh user's access (put a line into their sessions). "
                "Turn it on (dsh admin init), or say --insecure-store to accept that"
            )
        self._auth_on = False

    async def _ready(self, timeout: float) -> None:
        """Before a call: a token when this handle has a user and etcd wants one; for an
        anonymous handle to an etcd off this machine, once, whether etcd's auth is off."""
        if self.options.user:
            if self._token is None and self._auth_on is not False:
                await self._authenticate(None, timeout)
            return
        if self._auth_on is not None:
            return
        if self._loopback:
            self._auth_on = False  # as far as this handle knows: a refusal will say otherwise
            return
        probe = rpc.RangeRequest(key=self._key(b"/dsh/v1/"), count_only=True)
        try:
            await self._kv.Range(probe, timeout=timeout, wait_for_ready=True)
        except aio.AioRpcError as exc:
            raise self._error(exc, "Range", probe) from None
        self._auth_off()

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("token", self._token),) if self._token else None

    def _forget(self, stale: str | None) -> None:
        """Drop a token etcd refused; the next call authenticates again."""
        if self._token == stale:
            self._token = None

    async def _after_first(self, timeout: float) -> None:
        """Once `first` has run (started by the first call to get here); an outage
        in it leaves it to the next call (also when the call that waited for it gave
        up first), its refusal is every call's."""
        task = self._first
        if task is None or (task.done() and (task.cancelled() or isinstance(task.exception(), StoreError))):
            check = self.first
            assert check is not None

            async def run() -> None:
                _IN_FIRST.set(True)  # its own calls go on (the task's own context)
                await check()

            task = self._first = asyncio.ensure_future(run())
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            raise StoreTimeout(f"etcd at {self.name} did not answer within {timeout:g}s") from None
        except StoreError:
            if self._first is task:
                self._first = None
            raise

    async def _authenticate(self, stale: str | None, timeout: float) -> None:
        async with self._auth_lock:
            if self._token != stale:  # another call renewed it meanwhile
                return
            if self._auth_on is False:
                return
            request = rpc.AuthenticateRequest(name=self.options.user, password=self.options.password)
            try:
                response = await self._auth.Authenticate(request, timeout=timeout, wait_for_ready=True)
            except aio.AioRpcError as exc:
                details = exc.details() or ""
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "not enabled" in details:
                    self._auth_off()
                    return
                raise self._error(exc, "authenticate") from None
            self._token = response.token
            self._auth_on = True

    async def unary(
        self, service: str, method: str, request: Any, *, timeout: float, retry: bool = False
    ) -> Any:
        """One call of etcd's `service` (Auth, Maintenance) with this handle's channel,
        token and error map: for `dsh.store.etcdauth`. Writes are not retried."""
        return await self._call(method, request, timeout=timeout, retry=retry, service=service)

    async def _call(
        self, method: str, request: Any, *, timeout: float, retry: bool = False, service: str = ""
    ) -> Any:
        """One unary call of `service` (KV, Lease, Auth, Maintenance; by default KV,
        or Lease for a Lease* method), bounded by timeout; retried within it when `retry`."""
        self._open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wait = RETRY_FIRST
        renewed = False
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StoreTimeout(f"etcd at {self.name} did not answer within {timeout:g}s")
            try:
                await self._ready(remaining)
                if self.first is not None and not _IN_FIRST.get():
                    await self._after_first(deadline - loop.time())  # an outage in it: retried too
            except StoreUnavailable:
                if not retry or deadline - loop.time() <= wait:
                    raise
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_MAX)
                continue
            stub = self._services[service or ("Lease" if method.startswith("Lease") else "KV")]
            token = self._token
            try:
                return await getattr(stub, method)(
                    request, timeout=remaining, metadata=self._metadata(), wait_for_ready=True
                )
            except aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAUTHENTICATED and self.options.user and not renewed:
                    renewed = True  # an expired or forgotten token: once more with a new one
                    self._forget(token)
                    continue
                if _no_user(exc) and self.options.user and self._auth_on is False and not renewed:
                    renewed = True  # authentication was turned on since: log in
                    self.recheck()
                    continue
                if retry and code in _RETRYABLE and deadline - loop.time() > wait:
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, RETRY_MAX)
                    continue
                raise self._error(exc, method, request) from None

    def _error(self, exc: aio.AioRpcError, method: str, request: Any = None) -> StoreError:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return StoreTimeout(f"etcd at {self.name} did not answer in time ({method})")
        if code == grpc.StatusCode.NOT_FOUND and "lease" in details:
            lease = getattr(request, "ID", 0) or getattr(request, "lease", 0)
            return LeaseNotFound(int(lease))
        if code == grpc.StatusCode.OUT_OF_RANGE and "compacted" in details:
            revision = int(getattr(request, "revision", 0))
            return Compacted(revision, revision)
        if code == grpc.StatusCode.UNAVAILABLE:
            return StoreUnavailable(f"etcd at {self.name} is unavailable ({details})")
        if code == grpc.StatusCode.PERMISSION_DENIED:
            what = _what(method, request, self._prefix)
            return StoreDenied(f"etcd at {self.name} refused {self._who()} {what}")
        if _no_user(exc):
            return StoreDenied(
                f"etcd at {self.name} has authentication on: give your etcd user and password "
                "(DSH_ETCD_USER and DSH_ETCD_PASSWORD_FILE, or [etcd] user and password_file)"
            )
        if code == grpc.StatusCode.INVALID_ARGUMENT and "authentication failed" in details:
            return StoreDenied(
                f"etcd at {self.name} refused user {self.options.user}'s password "
                "(a wrong password, or the user was removed) when it tried to authenticate"
            )
        if code == grpc.StatusCode.UNAUTHENTICATED:
            return StoreDenied(f"etcd at {self.name} refused {self._who()}'s token: {details}")
        if code == grpc.StatusCode.INVALID_ARGUMENT and "too large" in details:
            return RequestTooLarge(f"etcd at {self.name} refused a request as too large ({details})")
        return EtcdFailed(f"etcd at {self.name} failed {method}: {details or code.name}", code.name, details)

    def _who(self) -> str:
        return f"user {self.options.user}" if self.options.user else "an anonymous client"

    # -- keys -------------------------------------------------------------------------

    def _key(self, key: bytes) -> bytes:
        return self._prefix + key

    def raw_key(self, key: bytes) -> bytes:
        """The key etcd holds for a key of this store (its prefix first): what etcd's
        role permissions name."""
        return self._key(key)

    def _kv_of(self, kv: Any) -> KV:
        return KV(
            kv.key[len(self._prefix) :], kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease
        )

    def _range_request(self, prefix: bytes) -> tuple[bytes, bytes]:
        full = self._key(prefix)
        return (full or b"\x00"), prefix_end(full)

    async def get(self, key: bytes, *, timeout: float) -> KV | None:
        response = await self._call(
            "Range", rpc.RangeRequest(key=self._key(key)), timeout=timeout, retry=True
        )
        return self._kv_of(response.kvs[0]) if response.kvs else None

    async def range(self, prefix: bytes, *, timeout: float) -> tuple[list[KV], int]:
        """Read in pages, every page at the revision of the first."""
        loop = asyncio.get_running_loop()
        return await self._range_at(prefix, 0, loop.time() + timeout)

    async def ranges(self, prefixes: Sequence[bytes], *, timeout: float) -> tuple[list[list[KV]], int]:
        """Each prefix in pages, every page at the revision of the first page read."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        found: list[list[KV]] = []
        revision = 0
        for prefix in prefixes:
            kvs, revision = await self._range_at(prefix, revision, deadline)
            found.append(kvs)
        return found, revision

    async def _range_at(self, prefix: bytes, revision: int, deadline: float) -> tuple[list[KV], int]:
        """Every key under prefix at `revision` (0: the current one), and that revision."""
        loop = asyncio.get_running_loop()
        start, end = self._range_request(prefix)
        found: list[KV] = []
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=RANGE_PAGE, revision=revision)
            response = await self._call(
                "Range", request, timeout=max(deadline - loop.time(), 0.001), retry=True
            )
            revision = revision or response.header.revision
            found += [self._kv_of(kv) for kv in response.kvs]
            if not response.more or not response.kvs:
                return found, revision
            start = response.kvs[-1].key + b"\x00"

    async def last(self, prefix: bytes, *, timeout: float) -> KV | None:
        start, end = self._range_request(prefix)
        request = rpc.RangeRequest(
            key=start,
            range_end=end,
            limit=1,
            sort_order=rpc.RangeRequest.DESCEND,
            sort_target=rpc.RangeRequest.KEY,
        )
        response = await self._call("Range", request, timeout=timeout, retry=True)
        return self._kv_of(response.kvs[0]) if response.kvs else None

    async def put(self, key: bytes, value: bytes, *, lease: int = 0, timeout: float) -> int:
        check_request([Put(key, value, lease)])
        request = rpc.PutRequest(key=self._key(key), value=value, lease=lease)
        response = await self._call("Put", request, timeout=timeout)
        self._wrote(int(response.header.revision))
        return int(response.header.revision)

    async def delete(self, key: bytes, *, prefix: bool = False, timeout: float) -> int:
        check_request([Delete(key, prefix)])
        if prefix:
            start, end = self._range_request(key)
            request = rpc.DeleteRangeRequest(key=start, range_end=end)
        else:
            request = rpc.DeleteRangeRequest(key=self._key(key))
        response = await self._call("DeleteRange", request, timeout=timeout)
        return int(response.deleted)

    def _op(self, op: Op) -> Any:
        if isinstance(op, Put):
            return rpc.RequestOp(
                request_put=rpc.PutRequest(key=self._key(op.key), value=op.value, lease=op.lease)
            )
        if op.prefix:
            start, end = self._range_request(op.key)
            return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=start, range_end=end))
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=self._key(op.key)))

    def _compare(self, compare: Compare) -> Any:
        message = rpc.Compare(
            key=self._key(compare.key), target=_TARGETS[compare.target], result=_RESULTS[compare.op]
        )
        if compare.target == "value":
            assert isinstance(compare.operand, bytes)
            message.value = compare.operand
        elif compare.target == "version":
            message.version = int(compare.operand)
        elif compare.target == "create":
            message.create_revision = int(compare.operand)
        else:
            message.mod_revision = int(compare.operand)
        return message

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float,
    ) -> TxnResult:
        check_request(success, failure, compares)
        request = rpc.TxnRequest(
            compare=[self._compare(c) for c in compares],
            success=[self._op(op) for op in success],
            failure=[self._op(op) for op in failure],
        )
        try:
            response = await self._call("Txn", request, timeout=timeout)
        except LeaseNotFound:
            raise LeaseNotFound(
                next((op.lease for op in success if isinstance(op, Put) and op.lease), 0)
            ) from None
        self._wrote(int(response.header.revision))
        return TxnResult(bool(response.succeeded), int(response.header.revision))

    def _wrote(self, revision: int) -> None:
        """Compact once enough history has piled up since the last compaction."""
        if self._compacted < 0:
            self._compacted = max(revision - self.history_keep, 0)  # a first guess; no work at start
        if revision - self._compacted < self.history_keep + COMPACT_EVERY:
            return
        if self._compacting is not None and not self._compacting.done():
            return
        self._compacted = revision - self.history_keep
        self._compacting = asyncio.ensure_future(self._compact_quietly(self._compacted))

    async def _compact_quietly(self, revision: int) -> None:
        with contextlib.suppress(StoreError, TimeoutError):  # done by another, or etcd away: later
            await self.compact(revision, timeout=30.0)

    # -- leases -----------------------------------------------------------------------

    async def grant(self, ttl: float, *, timeout: float) -> Lease:
        request = rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)))
        response = await self._call("LeaseGrant", request, timeout=timeout, retry=True)
        if response.error:
            raise StoreError(f"etcd at {self.name} granted no lease: {response.error}")
        return Lease(int(response.ID), float(response.TTL))

    async def keepalive(self, lease: int, *, timeout: float) -> float:
        self._open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wait = RETRY_FIRST
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise StoreTimeout(f"etcd at {self.name} did not renew lease {lease:x} within {timeout:g}s")
            await self._ready(remaining)
            token = self._token
            call = self._lease.LeaseKeepAlive(
                timeout=remaining, metadata=self._metadata(), wait_for_ready=True
            )
            try:
                await call.write(rpc.LeaseKeepAliveRequest(ID=lease))
                response = await call.read()
            except aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and self.options.user:
                    await self._authenticate(token, max(deadline - loop.time(), 0.1))
                    continue
                if exc.code() in _RETRYABLE and deadline - loop.time() > wait:
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, RETRY_MAX)
                    continue
                raise self._error(exc, "LeaseKeepAlive", rpc.LeaseKeepAliveRequest(ID=lease)) from None
            finally:
                call.cancel()
            if response is aio.EOF:  # the member went away mid-call: ask again
                await asyncio.sleep(min(wait, max(deadline - loop.time(), 0)))
                continue
            if response.TTL <= 0:
                raise LeaseNotFound(lease)
            return float(response.TTL)

    async def revoke(self, lease: int, *, timeout: float) -> None:
        with contextlib.suppress(LeaseNotFound):  # gone already: what revoking wants
            await self._call("LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease), timeout=timeout, retry=True)

    # -- watches and compaction ------------------------------------------------------

    async def watch(self, prefix: bytes, *, start_revision: int, timeout: float) -> _EtcdWatch:
        start, end = self._range_request(prefix)
        watch = _EtcdWatch(self, start, end, start_revision)
        await watch.open(timeout)
        self._watches.add(watch)
        return watch

    async def compact(self, revision: int, *, timeout: float) -> None:
        try:
            await self._call("Compact", rpc.CompactionRequest(revision=revision), timeout=timeout)
        except StoreError as exc:
            if "future revision" in str(exc):
                raise StoreError(f"cannot compact at revision {revision}: etcd is not there yet") from None
            raise

    async def close(self) -> None:
        self.closed = True
        if self._compacting is not None and not self._compacting.done():
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._compacting, 5.0)
        for watch in list(self._watches):
            await watch.close()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class _EtcdWatch:
    """One watch stream; re-created from the next revision when it breaks."""

    def __init__(self, store: EtcdStore, key: bytes, end: bytes, start_revision: int) -> None:
        self.store = store
        self.key = key
        self.end = end
        self.next = start_revision  # the first revision not yet delivered
        self._call: Any = None
        self._closed = False

    async def open(self, timeout: float) -> None:
        """Create the stream; Compacted if its start is older than etcd's history."""
        store = self.store
        store._open()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        wait = RETRY_FIRST
        while True:
            try:
                await asyncio.wait_for(self._create(), max(deadline - loop.time(), 0.001))
                return
            except TimeoutError:
                raise StoreTimeout(
                    f"etcd at {store.name} did not start a watch within {timeout:g}s"
                ) from None
            except aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.UNAUTHENTICATED and store.options.user:
                    await store._authenticate(store._token, max(deadline - loop.time(), 0.1))
                elif exc.code() not in _RETRYABLE or deadline - loop.time() <= wait:
                    raise store._error(exc, "Watch") from None
                else:
                    await asyncio.sleep(wait)
                    wait = min(wait * 2, RETRY_MAX)

    async def _create(self, *, again: bool = False) -> None:
        store = self.store
        await store._ready(10.0)
        if self.next > 0:
            # etcd creates a watch on compacted history and cancels it only later:
            # a read at the start revision tells at once.
            probe = rpc.RangeRequest(key=self.key, range_end=self.end, revision=self.next, count_only=True)
            try:
                await store._kv.Range(probe, timeout=10.0, metadata=store._metadata(), wait_for_ready=True)
            except aio.AioRpcError as exc:
                details = exc.details() or ""
                if exc.code() != grpc.StatusCode.OUT_OF_RANGE:
                    raise
                if "compacted" in details:
                    raise await self._compacted() from None
                # else a future revision: the watch waits for it
        token = store._token
        call = store._watch.Watch(metadata=store._metadata(), wait_for_ready=True)
        create = rpc.WatchCreateRequest(
            key=self.key, range_end=self.end, start_revision=max(self.next, 0), progress_notify=True
        )
        await call.write(rpc.WatchRequest(create_request=create))
        response = await call.read()
        if response is not aio.EOF and response.canceled and _is_auth(response.cancel_reason):
            call.cancel()  # a token etcd forgot: a new one, and the watch again
            store._forget(token)
            return await self._create()
        no_user = (
            response is not aio.EOF and response.canceled and "user name is empty" in response.cancel_reason
        )
        if no_user and store.options.user and store._auth_on is False and not again:
            call.cancel()  # authentication was turned on since: log in, and the watch again
            store.recheck()
            return await self._create(again=True)
        if response is not aio.EOF and response.canceled and "permission denied" in response.cancel_reason:
            call.cancel()
            raise StoreDenied(
                f"etcd at {store.name} refused {store._who()} {_what('Watch', create, store._prefix)}"
            )
        if response is aio.EOF or not response.created or response.canceled:
            call.cancel()
            reason = "" if response is aio.EOF else f" ({response.cancel_reason})"
            raise StoreError(f"etcd at {store.name} did not create the watch{reason}")
        if response.compact_revision:
            call.cancel()
            raise Compacted(self.next, int(response.compact_revision))
        if self.next <= 0:
            self.next = int(response.header.revision) + 1
        self._call = call

    async def _compacted(self) -> Compacted:
        """The compaction revision etcd reports for a start it has forgotten."""
        store = self.store
        call = store._watch.Watch(metadata=store._metadata(), wait_for_ready=True)
        try:
            create = rpc.WatchCreateRequest(key=self.key, range_end=self.end, start_revision=self.next)
            await call.write(rpc.WatchRequest(create_request=create))
            while True:
                response = await call.read()
                if response is aio.EOF:
                    return Compacted(self.next, self.next)
                if response.compact_revision:
                    return Compacted(self.next, int(response.compact_revision))
        finally:
            call.cancel()

    def __aiter__(self) -> AsyncIterator[list[Event]]:
        return self._events()

    async def _events(self) -> AsyncIterator[list[Event]]:
        store = self.store
        wait = RETRY_FIRST
        while not self._closed:
            try:
                if self._call is None:
                    await self._create()
                    wait = RETRY_FIRST
                response = await self._call.read()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    return  # closed from another task: its read was cancelled, not this task
                raise
            except (aio.AioRpcError, StoreUnavailable, StoreTimeout) as exc:
                if isinstance(exc, aio.AioRpcError):
                    if exc.code() == grpc.StatusCode.CANCELLED and self._closed:
                        return
                    if exc.code() == grpc.StatusCode.UNAUTHENTICATED and store.options.user:
                        store._forget(store._token)
                self._drop()
                await asyncio.sleep(wait)  # etcd restarting, or a member gone: again from self.next
                wait = min(wait * 2, RETRY_MAX)
                continue
            if response is aio.EOF:
                self._drop()
                continue
            if response.compact_revision:
                self._drop()
                raise Compacted(self.next, int(response.compact_revision))
            if response.canceled:
                self._drop()
                if _is_auth(response.cancel_reason):
                    store._forget(store._token)
                continue
            if not response.events:  # a progress notification: all before its revision was sent
                self.next = max(self.next, int(response.header.revision) + 1)
                continue
            events = [self._event(e) for e in response.events if e.kv.mod_revision >= self.next]
            if events:
                self.next = events[-1].kv.mod_revision + 1
                yield events

    def _event(self, event: Any) -> Event:
        kind = "put" if event.type == rpc.Event.PUT else "delete"
        return Event(kind, self.store._kv_of(event.kv))  # type: ignore[arg-type]

    def _drop(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def close(self) -> None:
        self._closed = True
        self._drop()
        self.store._watches.discard(self)


def _what(method: str, request: Any, prefix: bytes) -> str:
    """What a refused call was, for its sentence: "reading KEY", "a transaction", …"""
    key = getattr(request, "key", b"") if request is not None else b""
    shown = (key[len(prefix) :] if key.startswith(prefix) else key).decode(errors="replace")
    verbs = {"Range": "reading", "Put": "writing", "DeleteRange": "deleting", "Watch": "watching"}
    if method in verbs and shown:
        return f"{verbs[method]} {shown}: its etcd roles do not allow it"
    if method == "Txn":
        return "a transaction: its etcd roles do not allow one of its keys"
    return f"{method}: its etcd roles do not allow it"


def _no_user(exc: aio.AioRpcError) -> bool:
    """etcd's answer to a call without a token when its authentication is on."""
    return exc.code() == grpc.StatusCode.INVALID_ARGUMENT and "user name is empty" in (exc.details() or "")


def _is_auth(reason: str) -> bool:
    return "token" in reason or "auth" in reason


def _is_ip(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        return False
    return True


def _target(endpoints: Sequence[tuple[str, int]]) -> tuple[str, bool]:
    """One gRPC target for every member: `ipv4:A:P,B:Q` (names resolved once, here);
    and whether every address a name resolved to is this machine's (loopback)."""
    addresses: list[str] = []
    loopback = True
    for host, port in endpoints:
        if _is_ip(host):
            found = [host]
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise StoreError(f"etcd endpoint {host}:{port}: cannot resolve it ({exc})") from None
            found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        loopback = loopback and bool(found) and all(_is_loopback(a) for a in found)
        addresses += [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in found]
    six = any(a.startswith("[") for a in addresses)
    if six and not all(a.startswith("[") for a in addresses):
        return "ipv4:" + ",".join(a for a in addresses if not a.startswith("[")), loopback
    return ("ipv6:" if six else "ipv4:") + ",".join(addresses), loopback


def _is_loopback(address: str) -> bool:
    """127.0.0.0/8 and ::1, also written as an IPv4-mapped IPv6 address."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it for the etcd TLS connection ({exc.strerror})") from None

"""etcd's users, roles and permissions, and what its members say of themselves:
the Auth and Maintenance RPCs that `dsh admin` drives, through an `EtcdStore`.

It owns the mapping between etcd's messages and dsh's terms:

- a `Permission` names keys of the store (without its prefix); the adapter
  turns them into the keys etcd holds (`EtcdStore.raw_key`) and back, and a
  permission on keys outside the store's prefix is not the store's: it is
  left out of what `role_permissions` returns;
- etcd's "already exists" and "not found" answers are booleans or None here,
  never exceptions: a second add or delete is a plain answer;
- reads (`UserGet`, `RoleGet`, the lists, `Status`, `Alarm`) are retried on
  UNAVAILABLE within their timeout; writes are not (their outcome is unknown);
- passwords go into the request's `password` field only (etcd 3.4 ignores
  `hashedPassword`), and into nothing else: no message, no log;
- `metrics` reads the quota and the database's size from a member's HTTP
  `/metrics`, which no RPC exposes.

Names are passed through as they are: which names dsh accepts is
`dsh.session.access`'s business.
"""

from __future__ import annotations

import http.client
import ssl
import time
from typing import Any, Literal

from aetcd import rpc

from dsh.errors import StoreError, UsageError
from dsh.record import record
from dsh.store.base import prefix_end
from dsh.store.etcd import EtcdFailed, EtcdOptions, EtcdStore

PermissionKind = Literal["read", "write", "readwrite"]

_TYPES: dict[str, int] = {
    "read": rpc.Permission.READ,
    "write": rpc.Permission.WRITE,
    "readwrite": rpc.Permission.READWRITE,
}
_KINDS: dict[int, PermissionKind] = {
    rpc.Permission.READ: "read",
    rpc.Permission.WRITE: "write",
    rpc.Permission.READWRITE: "readwrite",
}

#: The gauges of a member's /metrics that `metrics` returns (those present).
GAUGES = (
    "etcd_server_quota_backend_bytes",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_debugging_mvcc_compact_revision",
)
#: More than a /metrics page ever is (about 100 KiB on etcd 3.4).
_METRICS_MAX = 16 * 1024 * 1024


@record
class Permission:
    """`kind` access to the store's keys from `key` up to `end` (etcd's range_end):
    `end` empty is the key alone, `prefix_end(key)` every key under `key` as a
    prefix (every key of the store: "/" and `prefix_end(b"/")`), b"\\x00" every
    key from `key` on (only for a store without a prefix)."""

    kind: PermissionKind
    key: bytes
    end: bytes = b""


@record
class MemberStatus:
    """What the member that answered says of itself (Maintenance.Status): ids in
    etcd's numbers, sizes in bytes."""

    version: str
    db_size: int
    db_size_in_use: int
    leader: int
    member: int
    raft_index: int


def _answered(exc: StoreError, *phrases: str) -> bool:
    """Whether etcd refused with one of these answers (FAILED_PRECONDITION's words)."""
    details = exc.details if isinstance(exc, EtcdFailed) else str(exc)
    return any(phrase in details for phrase in phrases)


class EtcdAuth:
    """etcd's users, roles and permissions, and its members' state, through `store`
    (its channel, token and error map). Changing them needs etcd's root role once
    authentication is on; every call takes a timeout."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store

    async def _write(self, method: str, request: Any, timeout: float) -> Any:
        return await self.store.unary("Auth", method, request, timeout=timeout)

    async def _read(self, method: str, request: Any, timeout: float) -> Any:
        return await self.store.unary("Auth", method, request, timeout=timeout, retry=True)

    # -- users -----------------------------------------------------------------------

    async def user_add(self, name: str, password: str, *, timeout: float) -> bool:
        """Add user `name`; False when it exists (its password is left as it is)."""
        try:
            await self._write("UserAdd", rpc.AuthUserAddRequest(name=name, password=password), timeout)
        except EtcdFailed as exc:
            if _answered(exc, "user name already exists"):
                return False
            raise
        return True

    async def user_delete(self, name: str, *, timeout: float) -> bool:
        """Delete user `name` (every token of theirs dies at once); False when there is none."""
        try:
            await self._write("UserDelete", rpc.AuthUserDeleteRequest(name=name), timeout)
        except EtcdFailed as exc:
            if _answered(exc, "user name not found"):
                return False
            raise
        return True

    async def user_passwd(self, name: str, password: str, *, timeout: float) -> None:
        """Give user `name` a new password (their tokens die at once)."""
        request = rpc.AuthUserChangePasswordRequest(name=name, password=password)
        await self._write("UserChangePassword", request, timeout)

    async def user_roles(self, name: str, *, timeout: float) -> tuple[str, ...] | None:
        """The roles of user `name`; None when there is no such user."""
        try:
            response = await self._read("UserGet", rpc.AuthUserGetRequest(name=name), timeout)
        except EtcdFailed as exc:
            if _answered(exc, "user name not found"):
                return None
            raise
        return tuple(str(role) for role in response.roles)

    async def users(self, *, timeout: float) -> list[str]:
        response = await self._read("UserList", rpc.AuthUserListRequest(), timeout)
        return [str(user) for user in response.users]

    async def grant_role(self, user: str, role: str, *, timeout: float) -> None:
        """Grant `role` to `user` (granting it again changes nothing)."""
        await self._write("UserGrantRole", rpc.AuthUserGrantRoleRequest(user=user, role=role), timeout)

    async def revoke_role(self, user: str, role: str, *, timeout: float) -> bool:
        """Take `role` from `user`; False when they did not hold it (or there is no such user)."""
        request = rpc.AuthUserRevokeRoleRequest(name=user, role=role)
        try:
            await self._write("UserRevokeRole", request, timeout)
        except EtcdFailed as exc:
            if _answered(exc, "role is not granted to the user", "user name not found"):
                return False
            raise
        return True

    # -- roles -----------------------------------------------------------------------

    async def role_add(self, name: str, *, timeout: float) -> bool:
        """Add role `name` (with no permission); False when it exists."""
        try:
            await self._write("RoleAdd", rpc.AuthRoleAddRequest(name=name), timeout)
        except EtcdFailed as exc:
            if _answered(exc, "role name already exists"):
                return False
            raise
        return True

    async def role_delete(self, name: str, *, timeout: float) -> bool:
        """Delete role `name` (etcd takes it from its users too); False when there is none."""
        try:
            await self._write("RoleDelete", rpc.AuthRoleDeleteRequest(role=name), timeout)
        except EtcdFailed as exc:
            if _answered(exc, "role name not found"):
                return False
            raise
        return True

    async def roles(self, *, timeout: float) -> list[str]:
        response = await self._read("RoleList", rpc.AuthRoleListRequest(), timeout)
        return [str(role) for role in response.roles]

    async def role_permissions(self, name: str, *, timeout: float) -> list[Permission] | None:
        """The permissions of role `name` on this store's keys; None when there is no such role."""
        try:
            response = await self._read("RoleGet", rpc.AuthRoleGetRequest(role=name), timeout)
        except EtcdFailed as exc:
            if _answered(exc, "role name not found"):
                return None
            raise
        found = (self._relative(p) for p in response.perm)
        return [p for p in found if p is not None]

    async def grant(self, role: str, permission: Permission, *, timeout: float) -> None:
        """Give `role` the permission (a second grant of the same keys sets its kind)."""
        key, end = self._raw(permission)
        perm = rpc.Permission(permType=_TYPES[permission.kind], key=key, range_end=end)
        await self._write(
            "RoleGrantPermission", rpc.AuthRoleGrantPermissionRequest(name=role, perm=perm), timeout
        )

    async def revoke(self, role: str, permission: Permission, *, timeout: float) -> bool:
        """Take the permission on these keys from `role` (whatever its kind); False when
        the role does not have it (or there is no such role)."""
        key, end = self._raw(permission)
        request = rpc.AuthRoleRevokePermissionRequest(role=role, key=key, range_end=end)
        try:
            await self._write("RoleRevokePermission", request, timeout)
        except EtcdFailed as exc:
            if _answered(exc, "permission is not granted to the role", "role name not found"):
                return False
            raise
        return True

    def _raw(self, permission: Permission) -> tuple[bytes, bytes]:
        """The keys etcd holds for a permission of this store."""
        if permission.end == b"\x00" and self.store.raw_key(b""):
            raise ValueError("a permission up to every key's end reaches beyond a store's prefix")
        end = self.store.raw_key(permission.end) if permission.end else b""
        return self.store.raw_key(permission.key), end

    def _relative(self, perm: Any) -> Permission | None:
        """A permission etcd holds, in this store's keys; None when it reaches outside them."""
        prefix = self.store.raw_key(b"")
        key, end = bytes(perm.key), bytes(perm.range_end)
        if not key.startswith(prefix):
            return None
        kind = _KINDS.get(int(perm.permType), "read")
        if not end:
            return Permission(kind, key[len(prefix) :])
        if not end.startswith(prefix):  # b"\x00" too, with a prefix
            return None  # beyond the store's keys
        return Permission(kind, key[len(prefix) :], end[len(prefix) :])

    # -- authentication on and off ---------------------------------------------------

    async def enable(self, *, timeout: float) -> None:
        """Turn authentication on (it needs user root holding role root; on again is
        fine). The store logs in again on its next call."""
        await self._write("AuthEnable", rpc.AuthEnableRequest(), timeout)
        self.store.recheck()

    async def disable(self, *, timeout: float) -> None:
        """Turn authentication off (off already is fine). The store finds it off on its
        next call."""
        try:
            await self._write("AuthDisable", rpc.AuthDisableRequest(), timeout)
        except EtcdFailed as exc:
            # A handle with a user that could not log in because authentication is off.
            if not _answered(exc, "authentication is not enabled"):
                raise
        self.store.recheck()

    async def keys_outside(self, inside: bytes, *, timeout: float) -> int:
        """How many keys etcd holds outside the store's keys under `inside` (other
        applications', other installations'): what turning auth on concerns too."""
        every = rpc.RangeRequest(key=b"\x00", range_end=b"\x00", count_only=True)
        raw = self.store.raw_key(inside)
        ours = rpc.RangeRequest(key=raw, range_end=prefix_end(raw), count_only=True)
        total = await self.store.unary("KV", "Range", every, timeout=timeout, retry=True)
        held = await self.store.unary("KV", "Range", ours, timeout=timeout, retry=True)
        return int(total.count) - int(held.count)

    # -- the members -----------------------------------------------------------------

    async def status(self, *, timeout: float) -> MemberStatus:
        """Maintenance.Status of whichever member answers."""
        response = await self.store.unary(
            "Maintenance", "Status", rpc.StatusRequest(), timeout=timeout, retry=True
        )
        return MemberStatus(
            str(response.version),
            int(response.dbSize),
            int(response.dbSizeInUse),
            int(response.leader),
            int(response.header.member_id),
            int(response.raftIndex),
        )

    async def alarms(self, *, timeout: float) -> list[str]:
        """The cluster's raised alarms, as "NOSPACE on member 8e9e05c52164694d"."""
        request = rpc.AlarmRequest(action=rpc.AlarmRequest.GET, memberID=0, alarm=rpc.AlarmType.NONE)
        response = await self.store.unary("Maintenance", "Alarm", request, timeout=timeout, retry=True)
        return [f"{rpc.AlarmType.Name(a.alarm)} on member {int(a.memberID):x}" for a in response.alarms]


def metrics(options: EtcdOptions, timeout: float) -> dict[str, float]:
    """The `GAUGES` (those present) of the first member whose `/metrics` answers,
    over HTTPS with the store's CA, certificate and key when it uses TLS; the whole
    within `timeout`. It blocks: an event loop runs it in a thread."""
    deadline = time.monotonic() + timeout
    context = _tls_context(options) if options.tls else None
    failures: list[str] = []
    for host, port in options.endpoints:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            failures.append(f"{_where(host, port)}: no time left")
            continue
        try:
            text = _get_metrics(host, port, context, deadline)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            failures.append(f"{_where(host, port)}: {str(exc) or type(exc).__name__}")
            continue
        return _gauges(text)
    raise StoreError(f"no etcd endpoint answered GET /metrics within {timeout:g}s ({'; '.join(failures)})")


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _tls_context(options: EtcdOptions) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=options.ca)
        if options.cert:
            context.load_cert_chain(options.cert, options.key)
    except (OSError, ssl.SSLError) as exc:
        files = ", ".join(f for f in (options.ca, options.cert, options.key) if f)
        raise UsageError(f"cannot load the etcd TLS files ({files}): {exc}") from None
    return context


def _get_metrics(host: str, port: int, context: ssl.SSLContext | None, deadline: float) -> str:
    """One member's /metrics page, read before `deadline` (time.monotonic)."""

    def left() -> float:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        return remaining

    connection: http.client.HTTPConnection
    if context is not None:
        connection = http.client.HTTPSConnection(host, port, timeout=left(), context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=left())
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        if response.status != 200:
            raise ValueError(f"HTTP {response.status} {response.reason}")
        chunks: list[bytes] = []
        size = 0
        while size <= _METRICS_MAX:
            if connection.sock is not None:
                connection.sock.settimeout(left())
            chunk = response.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    finally:
        connection.close()


def _gauges(text: str) -> dict[str, float]:
    """The `GAUGES` of a Prometheus text page (label-less samples)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if name in GAUGES:
            try:
                found[name] = float(rest.split()[0])
            except (IndexError, ValueError):
                continue
    return found

"""The Store protocol: etcd's semantics, which every implementation keeps.

Keys and values are bytes. Every change gets the store's next revision (one
per transaction, however many keys it touches). A key has a create and a mod
revision and a version (puts since it was created). Transactions compare keys
(value, version, create or mod revision) and then apply puts and deletes.
Leases have a TTL, are kept alive by their holder and take their keys with
them when they expire or are revoked. A watch follows a prefix from a
revision; history older than the last compaction is gone, and asking for it
raises `Compacted`. Every call takes a timeout.

etcd's limits hold for all: a request of at most 1.5 MiB, at most 128
operations in a transaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Literal, Protocol

from dsh.errors import StoreError
from dsh.exits import Exit
from dsh.record import record

#: etcd's default request limit (--max-request-bytes).
MAX_REQUEST = 1536 * 1024
#: etcd's default --max-txn-ops.
MAX_TXN_OPS = 128
#: Room kept in a request for keys and framing, so that values up to
#: MAX_VALUE fit in one request on etcd too.
MAX_VALUE = MAX_REQUEST - 4096


class StoreTimeout(StoreError, TimeoutError):
    """A store call did not finish within its timeout."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (no member up, a leader election): worth trying again."""


class Compacted(StoreError):
    """The revision asked for is older than the store's history."""

    def __init__(self, requested: int, compacted: int) -> None:
        super().__init__(
            f"revision {requested} is compacted (history starts at {compacted}); read the current state"
        )
        self.requested = requested
        self.compacted = compacted


class LeaseNotFound(StoreError):
    """The lease expired or was revoked."""

    def __init__(self, lease: int) -> None:
        super().__init__(f"lease {lease:x} is gone (expired or revoked)")
        self.lease = lease


class RequestTooLarge(StoreError):
    """A value or a transaction over etcd's limits."""

    exit_code = Exit.USAGE


class StoreDenied(StoreError):
    """The store refused who asked: a key outside their etcd role, a wrong password,
    no user where etcd wants one. Waiting does not change it (exit 2, not 3)."""

    exit_code = Exit.USAGE


class InsecureStore(StoreError):
    """A store that dsh will not use as it is: etcd off this machine without TLS, or
    with its authentication off, unless the operator accepted it (--insecure-store)."""

    exit_code = Exit.USAGE


@record
class KV:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@record
class Compare:
    """`target` of `key` compared with `operand`; a missing key has version,
    create and mod revision 0 and no value (a value compare on it is false)."""

    key: bytes
    target: Literal["value", "version", "create", "mod"]
    op: Literal["==", "!=", "<", ">"]
    operand: bytes | int


@record
class Put:
    key: bytes
    value: bytes
    lease: int = 0


@record
class Delete:
    key: bytes
    prefix: bool = False


Op = Put | Delete


@record
class TxnResult:
    succeeded: bool
    revision: int  # the revision after the transaction (unchanged if it wrote nothing)


@record
class Event:
    kind: Literal["put", "delete"]
    kv: KV  # for a delete: the key, empty value, mod_revision = the deleting revision


@record
class Lease:
    id: int
    ttl: float


class Watch(Protocol):
    """Batches of events in revision order; `close()` ends it."""

    def __aiter__(self) -> AsyncIterator[list[Event]]: ...

    async def close(self) -> None: ...


class Store(Protocol):
    """What dsh needs of a store. Implementations: SQLite (local), etcd."""

    @property
    def name(self) -> str:
        """Where it is, for people (`local:/path/…`, `etcd://host:port`)."""
        ...

    async def get(self, key: bytes, *, timeout: float) -> KV | None: ...

    async def range(self, prefix: bytes, *, timeout: float) -> tuple[list[KV], int]:
        """Every key under prefix, in key order, and the revision they were read at."""
        ...

    async def ranges(self, prefixes: Sequence[bytes], *, timeout: float) -> tuple[list[list[KV]], int]:
        """Every key under each prefix (a list per prefix, in key order), all read at
        one revision, which it returns: one snapshot of several places (of none:
        ([], 0))."""
        ...

    async def put(self, key: bytes, value: bytes, *, lease: int = 0, timeout: float) -> int: ...

    async def delete(self, key: bytes, *, prefix: bool = False, timeout: float) -> int:
        """Delete a key (or every key under a prefix); the number deleted."""
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float,
    ) -> TxnResult: ...

    async def grant(self, ttl: float, *, timeout: float) -> Lease: ...

    async def keepalive(self, lease: int, *, timeout: float) -> float:
        """Renew a lease for its TTL; LeaseNotFound if it is gone."""
        ...

    async def revoke(self, lease: int, *, timeout: float) -> None: ...

    async def last(self, prefix: bytes, *, timeout: float) -> KV | None:
        """The key-wise last key under prefix (etcd: sorted descending, limit 1)."""
        ...

    async def watch(self, prefix: bytes, *, start_revision: int, timeout: float) -> Watch:
        """Events under prefix from start_revision on; 0 means from now (the revision
        after the current one, fixed when the call returns). Compacted if it is gone."""
        ...

    async def compact(self, revision: int, *, timeout: float) -> None:
        """Forget history before `revision`."""
        ...

    async def close(self) -> None: ...


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with prefix (etcd's range_end)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"  # every key
    return stripped[:-1] + bytes([stripped[-1] + 1])


def check_request(
    success: Sequence[Op], failure: Sequence[Op] = (), compares: Sequence[Compare] = ()
) -> None:
    """Refuse what etcd would refuse: empty keys, too many operations or bytes."""
    ops = [*success, *failure]
    for count in (len(success), len(failure), len(compares)):
        if count > MAX_TXN_OPS:
            raise RequestTooLarge(f"a transaction of {count} operations is over the limit of {MAX_TXN_OPS}")
    if any(not op.key for op in ops) or any(not c.key for c in compares):
        raise RequestTooLarge("a key cannot be empty")
    size = sum(len(op.key) + (len(op.value) if isinstance(op, Put) else 0) for op in ops)
    size += sum(len(c.key) + (len(c.operand) if isinstance(c.operand, bytes) else 8) for c in compares)
    for op in ops:
        if isinstance(op, Put) and len(op.value) > MAX_VALUE:
            raise RequestTooLarge(f"a value of {len(op.value)} bytes is over the limit of {MAX_VALUE} bytes")
    if size > MAX_REQUEST - 1024:
        raise RequestTooLarge(f"a request of {size} bytes is over the limit of {MAX_REQUEST} bytes")

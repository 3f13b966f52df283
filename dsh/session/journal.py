"""The journal and checkpoints: every state change of a session, written to the store
before (intent) and after (result) each effect, fenced on the owner's lease.

Writes are batched: whatever the host flows hand in while one transaction is
in flight goes into the next (at most MAX_TXN_OPS operations each), so a
fan-out over 200 hosts costs a few transactions, not 200. Records that need
not precede an effect (results, line ends, bindings) are deferred: they go
out with the next intent, or within DEFER_SECONDS, or at `flush()`, always
in journal order — so a sequential step costs one transaction, not four. Every transaction
carries the fence — the owner key must still be the one this executor created
under its lease — so an executor that lost its lease cannot write, and since
intent is written before every effect, it cannot act either.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsh.errors import StoreError
from dsh.store.base import (
    MAX_REQUEST,
    MAX_TXN_OPS,
    Compare,
    Put,
    Store,
    StoreTimeout,
    StoreUnavailable,
    TxnResult,
)

#: Bytes of stdout and of stderr kept in the store per host and action.
TAIL_BYTES = 4096
#: How long a deferred record may wait for a transaction to carry it.
DEFER_SECONDS = 0.05
#: How long a checkpoint waits for an unreachable store before dsh stops (the
#: lease, renewed meanwhile or lost, usually decides first).
STORE_PATIENCE = 120.0
#: A checkpoint slower than this is said to be waiting for the store.
SLOW_STORE = 1.0


class LeaseLost(StoreError):
    """This executor no longer owns the session: it must stop acting."""


@dataclass
class _Pending:
    puts: list[Put]
    done: asyncio.Future[None]


@dataclass
class Checkpointer:
    """Writes journal entries and state records, batched and fenced."""

    store: Store
    journal_prefix: bytes
    fence: Compare
    clock: Callable[[], float]
    timeout: float = 10.0
    seq: int = 0
    _pending: list[_Pending] = field(default_factory=list)
    _flusher: asyncio.Task[None] | None = None
    _deferred: list[Put] = field(default_factory=list)
    _timer: asyncio.TimerHandle | None = None
    _deferred_task: asyncio.Task[None] | None = None
    lost: bool = False
    broken: Exception | None = None
    #: Fault injection for the crash tests (DSH_FAULT_CRASH_AFTER): the process
    #: dies (exit 137, as kill -9) right after this many transactions are durable.
    crash_after: int = 0
    _written: int = 0
    #: Tells the user that the store cannot be reached (and when it can again).
    say: Callable[[str], None] | None = None
    patience: float = STORE_PATIENCE
    #: What is left of the owner's lease (seconds): no try outlasts it.
    left: Callable[[], float] | None = None
    #: A journal entry's bytes, from its number, its time and the entry (or the name
    #: of its kind and its fields): the session's codec (dsh.session.records).
    encode: Callable[[int, float, object, dict[str, Any]], bytes] | None = None

    def entry(self, entry: object, /, **fields: Any) -> Put:
        """A journal entry (append-only, numbered) as a Put: `entry` is the entry's
        record, or the name of its kind with its `fields`."""
        if self.encode is None:
            raise TypeError("this checkpointer has no codec for journal entries")
        self.seq += 1
        key = self.journal_prefix + b"%012d" % self.seq
        return Put(key, self.encode(self.seq, round(self.clock(), 6), entry, fields))

    def defer(self, puts: Sequence[Put]) -> None:
        """Write puts with the next transaction (or within DEFER_SECONDS)."""
        self._deferred.extend(puts)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(DEFER_SECONDS, self._timed_flush)

    def _timed_flush(self) -> None:
        self._timer = None
        if self._deferred and self.broken is None:
            self._deferred_task = asyncio.ensure_future(self._quiet_flush())

    async def _quiet_flush(self) -> None:
        with contextlib.suppress(Exception):  # kept in self.broken: the next write raises it
            await self.flush()

    async def flush(self) -> None:
        """Write whatever is deferred and wait for batches in flight."""
        if self._deferred:
            await self.write([])
        if self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        self._check()

    async def close(self) -> None:
        """Flush, and stop the deferral timer (before the lease is let go)."""
        try:
            await self.flush()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _check(self) -> None:
        if self.lost:
            raise LeaseLost(
                "the session's lease is lost: nothing more is written, started or stopped here "
                "(commands in flight are left to their spools, for the next owner)"
            )
        if self.broken is not None:
            raise StoreError(f"an earlier checkpoint could not be written ({self.broken}); dsh stops")

    async def write(self, puts: Sequence[Put]) -> None:
        """Write puts (after anything deferred) in the next batch; returns once in the store."""
        self._check()
        puts = [*self._deferred, *puts]
        self._deferred.clear()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(list(puts), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await done

    async def _flush(self) -> None:
        """Write pending batches in order; the first failure stops every later write
        (a journal with a hole in it must not go on)."""
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                for chunk in put_batches([p for item in batch for p in item.puts]):
                    result = await self._txn(chunk)
                    self._written += 1
                    if self.crash_after and self._written >= self.crash_after and result.succeeded:
                        os._exit(137)
                    if not result.succeeded:
                        self.lost = True
                        raise LeaseLost(
                            "the session's lease was lost (expired, revoked or taken over): "
                            "this executor stops"
                        )
            except BaseException as exc:
                failure = exc if isinstance(exc, Exception) else StoreError("the checkpoint was interrupted")
                if not isinstance(exc, LeaseLost):
                    self.broken = failure
                for item in [*batch, *self._pending]:
                    if not item.done.done():
                        item.done.set_exception(failure)
                self._pending.clear()
                if not isinstance(exc, Exception):
                    raise
                return
            for item in batch:
                if not item.done.done():
                    item.done.set_result(None)

    async def _txn(self, chunk: list[Put]) -> TxnResult:
        """One fenced transaction, tried again while the store cannot be reached.

        Trying again is safe: its puts are the same (a first try that did land
        is only written over with the same values), and the fence still decides.
        Meanwhile nothing new starts, since every action waits for its intent.
        """
        started = time.monotonic()
        wait = 0.1
        said = False
        while True:
            bound = self.timeout if self.left is None else max(0.05, min(self.timeout, self.left()))
            call = asyncio.ensure_future(self.store.txn([self.fence], chunk, timeout=bound))
            if not said and self.say is not None:
                await asyncio.wait({call}, timeout=SLOW_STORE)
                if not call.done():
                    said = True
                    self.say(
                        f"waiting for the store ({self.store.name}): no new action starts until it answers"
                    )
            try:
                result = await call
            except (StoreTimeout, StoreUnavailable, TimeoutError) as exc:  # not a refusal: again
                if self.lost or time.monotonic() - started + wait > self.patience:
                    raise
                if not said and self.say is not None:
                    self.say(
                        f"the store cannot be reached ({exc}); no new action starts until it can "
                        f"(running ones go on); trying again for up to {self.patience:g}s"
                    )
                said = True
                await asyncio.sleep(wait)
                wait = min(wait * 2, 2.0)
                continue
            if said and self.say is not None:
                self.say(f"the store answers again after {time.monotonic() - started:.1f}s; going on")
            return result


def put_batches(puts: list[Put]) -> list[list[Put]]:
    """Transactions for puts, in order: one put per key (the last wins), at most
    MAX_TXN_OPS - 1 operations (the fence is a compare) and MAX_REQUEST/2 bytes each."""
    latest: dict[bytes, Put] = {}
    for put in puts:
        latest.pop(put.key, None)
        latest[put.key] = put
    chunks: list[list[Put]] = [[]]
    size = 0
    for put in latest.values():
        weight = len(put.key) + len(put.value)
        if chunks[-1] and (len(chunks[-1]) >= MAX_TXN_OPS - 1 or size + weight > MAX_REQUEST // 2):
            chunks.append([])
            size = 0
        chunks[-1].append(put)
        size += weight
    return [c for c in chunks if c]

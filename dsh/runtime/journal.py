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
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsh.errors import StoreError
from dsh.store.base import MAX_TXN_OPS, Compare, Put, Store

#: Bytes of stdout and of stderr kept in the store per host and action.
TAIL_BYTES = 4096
#: How long a deferred record may wait for a transaction to carry it.
DEFER_SECONDS = 0.05


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
    lost: bool = False

    def entry(self, kind: str, **fields: Any) -> Put:
        """A journal entry (append-only, numbered) as a Put."""
        self.seq += 1
        record = {"seq": self.seq, "t": round(self.clock(), 6), "kind": kind, **fields}
        key = self.journal_prefix + b"%012d" % self.seq
        return Put(key, json.dumps(record, separators=(",", ":")).encode())

    def defer(self, puts: Sequence[Put]) -> None:
        """Write puts with the next transaction (or within DEFER_SECONDS)."""
        self._deferred.extend(puts)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(DEFER_SECONDS, lambda: asyncio.ensure_future(self._timed_flush()))

    async def _timed_flush(self) -> None:
        self._timer = None
        with contextlib.suppress(Exception):  # the next write or flush() reports it
            await self.flush()

    async def flush(self) -> None:
        """Write whatever is deferred; returns once it is in the store."""
        if self._deferred:
            await self.write([])

    async def write(self, puts: Sequence[Put]) -> None:
        """Write puts (after anything deferred) in the next batch; returns once in the store."""
        if self.lost:
            raise LeaseLost("the session's lease is lost: nothing more is written or started")
        puts = [*self._deferred, *puts]
        self._deferred.clear()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(list(puts), done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            batch: list[_Pending] = []
            ops = 0
            while self._pending and ops + len(self._pending[0].puts) <= MAX_TXN_OPS:
                item = self._pending.pop(0)
                batch.append(item)
                ops += len(item.puts)
            if not batch:  # one request larger than a transaction: write it alone, split
                item = self._pending.pop(0)
                batch, chunks = (
                    [item],
                    [item.puts[i : i + MAX_TXN_OPS] for i in range(0, len(item.puts), MAX_TXN_OPS)],
                )
            else:
                chunks = [[p for item in batch for p in item.puts]]
            try:
                for chunk in chunks:
                    result = await self.store.txn([self.fence], chunk, timeout=self.timeout)
                    if not result.succeeded:
                        self.lost = True
                        raise LeaseLost(
                            "the session's lease was lost (expired, revoked or taken over): "
                            "this executor stops"
                        )
            except BaseException as exc:
                for item in batch:
                    if not item.done.done():
                        item.done.set_exception(exc if isinstance(exc, Exception) else StoreError(str(exc)))
                if isinstance(exc, LeaseLost):
                    for item in self._pending:
                        item.done.set_exception(exc)
                    self._pending.clear()
                if not isinstance(exc, Exception):
                    raise
                continue
            for item in batch:
                if not item.done.done():
                    item.done.set_result(None)


def tail(data: bytes) -> str:
    """The last TAIL_BYTES of output, as text safe to store."""
    return data[-TAIL_BYTES:].decode("utf-8", "backslashreplace")

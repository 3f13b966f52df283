"""Fan-out: the flows of a line's hosts, up to the fan-out limit at once; with `batch`,
a wave at a time, the rest skipped once more than max-fail hosts are not ok; and
the `gather` barriers every flow of a wave meets at.

A wave's flows run in one `asyncio.TaskGroup`. A flow's failures are outcomes,
so a flow raises only for what ends the whole line (the lease lost, a value over
the binding cap, a bug): then the wave's other flows are cancelled and waited
for, and that one exception — not a group of them — goes on to the caller, as
does a cancellation of the line. A cancelled flow's remote kills its command
only while the session's lease is held (the remote's `Gate`); otherwise the
command is left to its spool, for the next owner to take up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from dsh import plan as p
from dsh.plan import Outcome
from dsh.runtime.results import HostResult

T = TypeVar("T")


class Barrier:
    """`gather`: every flow of a wave waits until all the others have come, or
    ended before reaching it (a flow that ended early leaves)."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.come = 0
        self.open = asyncio.Event()

    def leave(self) -> None:
        self.parties -= 1
        self._check()

    async def arrive(self) -> None:
        self.come += 1
        self._check()
        await self.open.wait()

    def _check(self) -> None:
        if self.come >= self.parties:
            self.open.set()


class Seat:
    """A flow's place in its wave: the barriers of the wave's `gather` stages (by
    stage index), and the fan-out it holds a place in while it runs."""

    def __init__(self, barriers: Mapping[int, Barrier], fan: asyncio.Semaphore) -> None:
        self.barriers = barriers
        self.fan = fan
        self.passed: set[int] = set()

    async def gather(self, stage: int) -> None:
        """Wait at stage `stage` until the wave's other flows have come or ended."""
        barrier = self.barriers.get(stage)
        if barrier is None:
            return
        self.passed.add(stage)
        self.fan.release()  # waiting for the others frees a place in the fan-out
        try:
            await barrier.arrive()
        finally:
            await self.fan.acquire()

    def leave(self) -> None:
        """The flow ended: the barriers it did not reach need not wait for it."""
        for stage, barrier in self.barriers.items():
            if stage not in self.passed:
                barrier.leave()


#: A host's flow, given its seat in the wave: the host's result.
Flow = Callable[[str, Seat], Awaitable[HostResult]]


async def fan_out(
    hosts: Sequence[str],
    *,
    fanout: int,
    batch: p.Batch | None,
    gathers: Sequence[int],
    flow: Flow,
    skipped: Callable[[HostResult], None],
) -> list[HostResult]:
    """The hosts' results, in the hosts' order: their flows up to `fanout` at once,
    in waves of `batch` (all at once without), with a barrier at each stage index
    in `gathers`; a host of a wave not started (over max-fail) is `skipped`."""
    fan = asyncio.Semaphore(fanout)
    size = batch.wave(len(hosts)) if batch else len(hosts)
    results: list[HostResult] = []
    failed = 0
    for first in range(0, len(hosts), size):
        wave = hosts[first : first + size]
        if batch is not None and failed > batch.max_fail:
            why = f"not started: {failed} hosts were not ok, over max-fail {batch.max_fail}"
            for host in wave:
                result = HostResult(host, Outcome.SKIPPED, None, 0.0, 0, why)
                skipped(result)
                results.append(result)
            continue
        barriers = {i: Barrier(len(wave)) for i in gathers}

        async def one(host: str, barriers: Mapping[int, Barrier] = barriers) -> HostResult:
            seat = Seat(barriers, fan)
            try:
                async with fan:
                    return await flow(host, seat)
            finally:
                seat.leave()

        done = await all_of([one(host) for host in wave])
        results += done
        failed += sum(not r.ok for r in done)
    return results


async def all_of(coros: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run `coros` as tasks of one TaskGroup: their results, in order. When one
    raises, the others are cancelled and waited for, and that exception is raised
    itself (the first, if more than one did), not inside an ExceptionGroup; a
    cancellation of the caller cancels them all and is raised once they are over."""
    task = asyncio.current_task()
    cancelling = task.cancelling() if task is not None else 0
    error: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coro) for coro in coros]
    except BaseExceptionGroup as raised:
        error = raised.exceptions[0]
    if error is not None:
        # Python 3.11's TaskGroup cancels its parent to stop it when a task fails
        # while the parent already waits in __aexit__, and never takes that request
        # back: the caller would look cancelled ever after (Task.cancelling()).
        while task is not None and task.cancelling() > cancelling:
            task.uncancel()
        raise error
    return [t.result() for t in tasks]

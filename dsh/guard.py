"""Signals around a process's work: SIGINT, SIGTERM and SIGHUP cancel it, so that
what it started is stopped (its commands killed, on hosts too) before the
process ends with the signal's status."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable
from typing import TypeVar

from dsh.errors import DshError
from dsh.exits import signalled

T = TypeVar("T")
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(DshError):
    """dsh was told to stop by a signal; its commands were killed."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.exit_code = signalled(signum)


async def guarded(work: Awaitable[T]) -> T:
    """Run `work`; SIGINT, SIGTERM or SIGHUP cancel it, so that its commands are
    killed (on hosts too, which takes a round trip), then raise KeyboardInterrupt
    (SIGINT) or Interrupted. A second signal while the kills are under way does
    not cut them short: every one of them is bounded."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) == 1:
            task.cancel()

    signals = (signal.SIGINT, *_STOP_SIGNALS)
    for signum in signals:
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await work
    except asyncio.CancelledError:
        if received and received[0] == signal.SIGINT:
            raise KeyboardInterrupt from None
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)

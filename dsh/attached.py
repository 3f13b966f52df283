"""An executor process's attached clients: each one's queue of events, written by a
task of its own (a slow client never slows the work: past CLIENT_EVENTS queued
events its output is dropped, and it is told how much), and the reporter that
tells both the executor's log and its clients (`Tee`)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from dsh import plan as p
from dsh.remote.base import Exec
from dsh.runtime.protocol import Event, Msg, encode
from dsh.runtime.results import HostResult, LineResult
from dsh.runtime.wire import WireReporter

#: Output events queued for one client before its output is dropped.
CLIENT_EVENTS = 10_000
#: A client that does not read for this long is disconnected.
CLIENT_STALL = 30.0


class Attached:
    """One connected client: its queue of events, written by its own task."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.events: deque[Event] = deque()
        self.dropped = 0
        self.ready = asyncio.Event()
        self.waiting = False  # asked to be told when the session's work is over
        self.leaving = False  # said bye; answered once the executor knows whether it stays
        self.gone = False  # disconnected: nothing more is written
        self.closing = False  # write what is queued, then close
        self.task: asyncio.Future[None] | None = None

    def send(self, event: Event, *, control: bool = False) -> None:
        if self.gone or self.closing:
            return
        if not control and len(self.events) >= CLIENT_EVENTS:
            self.dropped += 1
            return
        self.events.append(event)
        self.ready.set()

    def close(self) -> None:
        self.closing = True
        self.ready.set()

    async def pump(self) -> None:
        """Write queued events until the client goes (or stalls), or is closed."""
        try:
            while not self.gone:
                await self.ready.wait()
                self.ready.clear()
                while self.events and not self.gone:
                    if self.dropped:
                        note = f"{self.dropped} events of output were dropped: this client read too slowly"
                        self.writer.write(encode(Msg(note)))
                        self.dropped = 0
                    self.writer.write(encode(self.events.popleft()))
                    await asyncio.wait_for(self.writer.drain(), CLIENT_STALL)
                if self.closing:
                    break
        except (OSError, TimeoutError):
            self.gone = True
        finally:
            self.writer.close()


class Tee:
    """A Reporter that tells the log (a renderer) and the clients (the wire)."""

    def __init__(self, log: Any, wire: WireReporter) -> None:
        self.log = log
        self.wire = wire

    def line_started(self, stmt: p.Statement, hosts: Any) -> None:
        self.log.line_started(stmt, hosts)
        self.wire.line_started(stmt, hosts)

    def output(self, stmt: p.Statement, host: str | None, stream: str, data: bytes, shown: bool) -> None:
        self.log.output(stmt, host, stream, data, shown)
        self.wire.output(stmt, host, stream, data, shown)

    def copying(self, stmt: p.Statement, host: str | None, done: int, total: int) -> None:
        self.wire.copying(stmt, host, done, total)  # the log keeps each copy's end, not its progress

    def retrying(self, stmt: p.Statement, host: str | None, failed: Exec, attempt: int, wait: float) -> None:
        self.log.retrying(stmt, host, failed, attempt, wait)
        self.wire.retrying(stmt, host, failed, attempt, wait)

    def host_done(self, stmt: p.Statement, result: HostResult) -> None:
        self.log.host_done(stmt, result)
        self.wire.host_done(stmt, result)

    def line_done(self, result: LineResult) -> None:
        self.log.line_done(result)
        self.wire.line_done(result)

    def message(self, text: str) -> None:
        self.log.message(text)
        self.wire.message(text)

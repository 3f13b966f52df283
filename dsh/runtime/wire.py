"""Reporter calls as protocol messages, and back: how live output reaches a session's clients.

An executor process serves its session's clients over a local socket. It
reports through a `WireReporter`, which turns each Reporter call into one
message of dsh.runtime.protocol (the only place messages become bytes); a
client gives those messages to `Replay`, which makes the same calls on its own
renderer. A statement travels whole with `line_started` and `line_done` (and
in the greeting, for the lines running when a client connects); the events
between refer to it by a number. A line's summary carries at most
SUMMARY_BYTES of each host's output: enough to show and fold it, not to copy a
flood through the socket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from dsh import plan as p
from dsh.remote.base import Exec
from dsh.runtime.ports import Reporter
from dsh.runtime.protocol import Copying, Event, HostDone, Line, LineDone, Msg, Out, Retry, Stmt
from dsh.runtime.results import HostResult, LineResult

#: Bytes of each host's stdout and stderr that a line's summary carries to clients.
SUMMARY_BYTES = 16 * 1024


def summary(result: HostResult, keep: int) -> HostResult:
    """`result` with at most `keep` bytes of its stdout and of its stderr (and marked
    truncated when some were left out)."""
    truncated = result.truncated or len(result.out) > keep or len(result.err) > keep
    return replace(result, out=result.out[:keep], err=result.err[:keep], truncated=truncated)


class WireReporter:
    """A Reporter whose calls become events passed to `send`."""

    def __init__(self, send: Callable[[Event], None]) -> None:
        self.send = send
        self._numbers: dict[int, int] = {}
        #: The statements running now (number → statement): a client that connects
        #: mid-line is told about them first.
        self.running: dict[int, p.Statement] = {}

    def _number(self, stmt: p.Statement) -> int:
        number = self._numbers.get(id(stmt))
        if number is None:
            number = self._numbers[id(stmt)] = len(self._numbers) + 1
        return number

    def greeting(self) -> list[Event]:
        """What a client that connects now must know to follow the running lines."""
        return [Stmt(k, s) for k, s in self.running.items()]

    def line_started(self, stmt: p.Statement, hosts: Sequence[str] | None) -> None:
        k = self._number(stmt)
        self.running[k] = stmt
        self.send(Line(k, stmt, tuple(hosts or ())))

    def output(self, stmt: p.Statement, host: str | None, stream: str, data: bytes, shown: bool) -> None:
        if shown:  # a bound stage's output is captured, and no client shows it
            self.send(Out(self._number(stmt), host, stream, data))

    def copying(self, stmt: p.Statement, host: str | None, done: int, total: int) -> None:
        self.send(Copying(self._number(stmt), host, done, total))

    def retrying(self, stmt: p.Statement, host: str | None, failed: Exec, attempt: int, wait: float) -> None:
        self.send(Retry(self._number(stmt), host, failed, attempt, wait))

    def host_done(self, stmt: p.Statement, result: HostResult) -> None:
        self.send(HostDone(self._number(stmt), summary(result, 0)))

    def line_done(self, result: LineResult) -> None:
        k = self._number(result.statement)
        self.running.pop(k, None)
        self._numbers.pop(id(result.statement), None)
        hosts = tuple(summary(h, SUMMARY_BYTES) for h in result.hosts)
        self.send(
            LineDone(
                k, result.statement, hosts, result.seconds, result.on_hosts, result.note, result.consumed
            )
        )

    def message(self, text: str) -> None:
        self.send(Msg(text))


class Replay:
    """Makes the Reporter calls that events stand for, on `reporter`; `message`
    receives the executor's messages. Events for statements it was never told
    about (it connected mid-line and missed them) are skipped."""

    def __init__(self, reporter: Reporter, message: Callable[[str], None]) -> None:
        self.reporter = reporter
        self.message = message
        self.statements: dict[int, p.Statement] = {}

    def __call__(self, event: Event) -> bool:
        """Replay one event; False if it is not a reporter event."""
        match event:
            case Msg(text):
                self.message(text)
            case Stmt(k, stmt):
                self.statements[k] = stmt
            case Line(k, stmt, hosts):
                self.statements[k] = stmt
                self.reporter.line_started(stmt, hosts or None)
            case LineDone(k, stmt, hosts, seconds, on_hosts, note, consumed):
                stmt = self.statements.pop(k, None) or stmt
                self.reporter.line_done(LineResult(stmt, hosts, seconds, on_hosts, note, consumed))
            case Out(k, host, stream, data):
                if k in self.statements:
                    self.reporter.output(self.statements[k], host, stream, data, True)
            case Copying(k, host, done, total):
                if k in self.statements:
                    self.reporter.copying(self.statements[k], host, done, total)
            case Retry(k, host, failed, attempt, wait):
                if k in self.statements:
                    self.reporter.retrying(self.statements[k], host, failed, attempt, wait)
            case HostDone(k, result):
                if k in self.statements:
                    self.reporter.host_done(self.statements[k], result)
            case _:
                return False
        return True

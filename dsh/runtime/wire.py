"""Reporter calls as JSON events, and back: how live output reaches a session's clients.

An executor process serves its session's clients over a local socket. It
reports through a `WireReporter`, which turns each Reporter call into one
JSON object; a client feeds those objects to `Replay`, which makes the same
calls on its own renderer. A statement travels whole with `line_started` and
`line_done` (and in the greeting, for the lines running when a client
connects); the events between refer to it by a number. A line's summary
carries at most SUMMARY_BYTES of each host's output: enough to show and fold
it, not to copy a flood through the socket.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from typing import Any

from dsh import plan as p
from dsh.remote.base import Exec
from dsh.runtime.executor import Reporter
from dsh.runtime.results import HostResult, LineResult, dump_host_result, load_host_result

#: Bytes of each host's stdout and stderr that a line's summary carries to clients.
SUMMARY_BYTES = 16 * 1024

Event = dict[str, Any]


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
        return [{"ev": "stmt", "k": k, "def": p.dump_statement(s)} for k, s in self.running.items()]

    def line_started(self, stmt: p.Statement, hosts: Sequence[str] | None) -> None:
        k = self._number(stmt)
        self.running[k] = stmt
        self.send({"ev": "line", "k": k, "def": p.dump_statement(stmt), "hosts": list(hosts or [])})

    def output(self, stmt: p.Statement, host: str | None, stream: str, data: bytes, shown: bool) -> None:
        if shown:  # a bound stage's output is captured, and no client shows it
            k = self._number(stmt)
            text = base64.b64encode(data).decode()
            self.send({"ev": "out", "k": k, "host": host, "stream": stream, "data": text})

    def retrying(self, stmt: p.Statement, host: str | None, failed: Exec, attempt: int, wait: float) -> None:
        how = {"outcome": failed.outcome, "exit": failed.exit_status, "seconds": failed.seconds}
        how["message"] = failed.message
        event = {"ev": "retry", "k": self._number(stmt), "host": host, "failed": how}
        self.send({**event, "attempt": attempt, "wait": wait})

    def host_done(self, stmt: p.Statement, result: HostResult) -> None:
        self.send({"ev": "host", "k": self._number(stmt), "result": dump_host_result(result, 0)})

    def line_done(self, result: LineResult) -> None:
        k = self._number(result.statement)
        self.running.pop(k, None)
        self._numbers.pop(id(result.statement), None)
        self.send(
            {
                "ev": "done-line",
                "k": k,
                "def": p.dump_statement(result.statement),
                "hosts": [dump_host_result(h, SUMMARY_BYTES) for h in result.hosts],
                "seconds": result.seconds,
                "on_hosts": result.on_hosts,
                "note": result.note,
                "consumed": result.consumed,
            }
        )

    def message(self, text: str) -> None:
        self.send({"ev": "msg", "text": text})


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
        kind = event.get("ev")
        if kind == "msg":
            self.message(str(event["text"]))
            return True
        if kind in ("stmt", "line"):
            stmt = self.statements[event["k"]] = p.load_statement(event["def"])
            if kind == "line":
                self.reporter.line_started(stmt, event["hosts"] or None)
            return True
        if kind == "done-line":
            stmt = self.statements.pop(event["k"], None) or p.load_statement(event["def"])
            hosts = tuple(load_host_result(h) for h in event["hosts"])
            seconds, on_hosts = float(event["seconds"]), bool(event["on_hosts"])
            result = LineResult(stmt, hosts, seconds, on_hosts, event["note"], bool(event.get("consumed")))
            self.reporter.line_done(result)
            return True
        if kind not in ("out", "retry", "host"):
            return False
        known = self.statements.get(event["k"])
        if known is None:
            return True
        if kind == "out":
            data = base64.b64decode(event["data"])
            self.reporter.output(known, event["host"], event["stream"], data, True)
        elif kind == "retry":
            f = event["failed"]
            failed = Exec(f["outcome"], f["exit"], float(f["seconds"]), f["message"])
            self.reporter.retrying(known, event["host"], failed, int(event["attempt"]), float(event["wait"]))
        else:
            self.reporter.host_done(known, load_host_result(event["result"]))
        return True

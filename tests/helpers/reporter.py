"""A reporter that records what the executor reports, for tests of the runtime."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dsh import plan as p
from dsh.remote.base import Exec
from dsh.runtime.results import HostResult, LineResult


@dataclass
class Recorder:
    started: list[str] = field(default_factory=list)
    out: list[tuple[str | None, str, bytes, bool]] = field(default_factory=list)
    done: list[HostResult] = field(default_factory=list)
    lines: list[LineResult] = field(default_factory=list)
    retries: list[tuple[str | None, int, str, float]] = field(default_factory=list)
    copied: list[tuple[str | None, int, int]] = field(default_factory=list)

    def line_started(self, stmt: p.Statement, hosts: Sequence[str] | None) -> None:
        self.started.append(stmt.source)

    def output(self, stmt: p.Statement, host: str | None, stream: str, data: bytes, shown: bool) -> None:
        self.out.append((host, stream, data, shown))

    def copying(self, stmt: p.Statement, host: str | None, done: int, total: int) -> None:
        self.copied.append((host, done, total))

    def retrying(self, stmt: p.Statement, host: str | None, failed: Exec, attempt: int, wait: float) -> None:
        self.retries.append((host, attempt, failed.outcome, wait))

    def host_done(self, stmt: p.Statement, result: HostResult) -> None:
        self.done.append(result)

    def line_done(self, result: LineResult) -> None:
        self.lines.append(result)

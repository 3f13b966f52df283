"""What a line produced: one result per host flow, and the line's result sets."""

from __future__ import annotations

from dsh.plan import OUTCOMES, Outcome, Statement
from dsh.record import record

#: Bytes of stdout and stderr kept per host for bindings and summaries.
KEEP_BYTES = 1 << 20


@record
class HostResult:
    """How one host flow ended. `host` is None for the session's own machine."""

    host: str | None
    outcome: str
    exit_status: int | None
    seconds: float
    attempts: int = 1
    message: str = ""
    out: bytes = b""
    err: bytes = b""
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.outcome == Outcome.OK


@record
class LineResult:
    statement: Statement
    hosts: tuple[HostResult, ...]
    seconds: float
    on_hosts: bool  # the line had a target (its results become the result sets)
    note: str = ""
    #: An `if` condition: a failure here is consumed (the renderer does not call it one).
    consumed: bool = False

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    def result_sets(self) -> dict[str, tuple[str, ...]]:
        """Hosts by outcome, plus `notok`; every set present, maybe empty."""
        sets: dict[str, list[str]] = {name: [] for name in (*OUTCOMES, "notok")}
        for h in self.hosts:
            if h.host is None:
                continue
            sets[h.outcome].append(h.host)
            if not h.ok:
                sets["notok"].append(h.host)
        return {k: tuple(v) for k, v in sets.items()}

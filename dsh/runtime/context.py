"""Where a statement and its steps stand: the id of each step, and what a previous
owner left of a run (`Resume`) or of a compound statement (`Replayed`).

A step's id is deterministic: `RUN.STAGE.ATTEMPT` on a host, the same in a run
and in its resume. It names the action's spool claim on its host and its record
in the store, so that a new owner finds what an earlier one did by asking for
the same id (dsh.runtime.steps).
"""

from __future__ import annotations

from collections.abc import Mapping

from dsh.record import record
from dsh.remote.base import InputFacts


@record
class StepId:
    """One step of a host flow: attempt `attempt` (1-based; 1 for a sleep or an
    await) of stage `stage` (1-based) of run `run`, on `host` (None: the session's
    own machine)."""

    run: int
    stage: int
    attempt: int
    host: str | None

    @property
    def action(self) -> str:
        """The action id, `RUN.STAGE.ATTEMPT`: the spool's claim key and the store's."""
        return f"{self.run}.{self.stage}.{self.attempt}"


@record
class Resume:
    """A run that a previous owner started and did not finish: its run number, the
    records of its actions by (action, host) — `state` `intent` or `done`, or a
    `deadline` for a durable timer — and what it resolved as it started."""

    run: int
    actions: Mapping[tuple[str, str | None], Mapping[str, object]]
    #: What the run resolved when it started (None: not kept: written before format 4, or
    #: it had not got that far): its hosts, and its command stages' inputs by stage.
    hosts: tuple[str, ...] | None = None
    inputs: Mapping[int, InputFacts] | None = None
    #: A `for`'s items, as it started going through them (None: not kept).
    items: tuple[str, ...] | None = None

    def held(self, step: StepId) -> Mapping[str, object] | None:
        """The record of `step`, None when nothing of it is stored."""
        return self.actions.get((step.action, step.host))


@record
class Replayed:
    """A statement inside a compound one, as a previous owner left it: its run, whether
    it ended (and ok), and what its actions were when it did not."""

    run: int
    done: bool
    ok: bool
    resume: Resume | None


@record
class RunContext:
    """Where a statement runs: `index`, that of the statement of the plan it is part
    of (itself, or the compound statement it is inside); `path`, its place inside
    that compound statement (`c` its condition, `t0`… and `e0`… its branches,
    `f3.0`… the iterations of a loop; "" the statement itself); `resume`, the run
    a previous owner started of it; `replay`, what the statements of a compound
    one did before a takeover, by path."""

    index: int
    path: str = ""
    resume: Resume | None = None
    replay: Mapping[str, Replayed] | None = None

    def inner(self, path: str) -> RunContext:
        """A statement inside this one, at `path`: taken up only from `replay`."""
        return RunContext(self.index, path, None, self.replay)

    def replayed(self) -> Replayed | None:
        """What a previous owner left of the statement at `path`, if anything."""
        return self.replay.get(self.path) if self.replay is not None else None

"""Copies in a flow: a line's sources, read once, and a copy's step, live or taken up.

A put's source is read (walked and hashed: dsh/remote/manifest.py) once per
line, whatever the hosts, in a thread; its size and SHA-256 go into each host's
intent before anything is claimed there. A new owner that takes a copy up
reads the source again from the intent's path: different bytes there (another
machine, a changed file) fail the host with "SRC differs on this machine";
else the host's spool says where the copy stands: ended (its status), never
claimed (started now), or claimed without a status: finished from where its
temporary file stops, never called lost.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dsh import plan as p
from dsh.plan import Outcome
from dsh.record import record
from dsh.remote.base import (
    Copied,
    CopyFacts,
    CopyJob,
    Exec,
    OutputSink,
    Progress,
    Remote,
    RemoteUnreachable,
    Spot,
)
from dsh.remote.manifest import Manifest, SourceError, read_manifest
from dsh.runtime.capture import Capture
from dsh.runtime.context import StepId
from dsh.runtime.ports import ActionResult
from dsh.runtime.takeup import moved_host, recorded, untail

if TYPE_CHECKING:
    from dsh.runtime.steps import LiveSteps, TakenUp


class Sources:
    """The sources of one line's puts, each read once (in a thread) by its path."""

    def __init__(self) -> None:
        self._read: dict[str, asyncio.Future[Manifest]] = {}

    async def read(self, path: str) -> Manifest:
        """`path`'s manifest; SourceError when it cannot be read."""
        fut = self._read.get(path)
        if fut is None:
            fut = self._read[path] = asyncio.ensure_future(asyncio.to_thread(read_manifest, path))
        return await asyncio.shield(fut)


def local_path(path: str) -> str:
    """A copy's PATH on this machine, absolute (relative: to the executor's working
    directory). A `~` in it is a name, as a quoted one is in sh (the compiler refuses
    an unquoted one), and as the compiler's size of it took it."""
    return os.path.abspath(path)


def _size(n: int | None) -> str:
    if n is None:
        return "? bytes"
    if n < 1024:
        return f"{n} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n_ = n / 1024
        if n_ < 1024 or unit == "TiB":
            return f"{n_:.1f} {unit}"
        n = int(n_)
    return f"{n} bytes"


def summary(facts: CopyFacts, host: str | None) -> bytes:
    """What a copy says on its host's stdout: where, how much, its SHA-256, and whether
    it was there already."""
    where = f"{host}:{facts.remote}"
    route = f"{facts.local} -> {where}" if facts.direction == p.PUT else f"{where} -> {facts.local}"
    state = "unchanged" if facts.unchanged else "copied"
    return f"{state} {route} ({_size(facts.size)}, sha256 {facts.sha256[:16]})\n".encode()


async def source_of(
    sources: Sources, stage: p.Copy, local: str, remote_path: str
) -> tuple[CopyFacts, Manifest | None] | Exec:
    """What a copy copies: a put's source read (its facts and manifest), a get's
    paths; an Exec (failed) when a put's source cannot be read."""
    if stage.direction != p.PUT:
        return CopyFacts(stage.direction, local, remote_path), None
    try:
        source = await sources.read(local)
    except SourceError as exc:
        return Exec(Outcome.FAILED, None, 0.0, exc.message)
    return CopyFacts(p.PUT, source.root, remote_path, source.sha256, size=source.size), source


def job_of(stage: p.Copy, facts: CopyFacts, source: Manifest | None, *, resume: bool = False) -> CopyJob:
    return CopyJob(facts, source, resume, stage.sudo, stage.owner, stage.mode)


def facts_held(held: Mapping[str, object]) -> CopyFacts | None:
    """The copy facts an intent record keeps (as the resume table has it)."""
    copy = held.get("copy")
    if not isinstance(copy, dict):
        return None
    size = copy.get("size")
    return CopyFacts(
        str(copy.get("direction", "")),
        str(copy.get("local", "")),
        str(copy.get("remote", "")),
        str(copy.get("sha256", "")),
        size=size if isinstance(size, int) else None,
    )


async def take_up(
    sources: Sources,
    stage: p.Copy,
    held: CopyFacts,
    *,
    remote: Remote,
    spot: Spot,
    timeout: float,
    progress: Progress,
    output: OutputSink,
) -> Copied:
    """A copy an earlier owner's intent announced: refused if its source differs here,
    else ended, started or finished as the host's spool says."""
    source: Manifest | None = None
    if held.direction == p.PUT:
        try:
            source = await sources.read(held.local)
        except SourceError as exc:
            return _differs(held, exc.message)
        if source.sha256 != held.sha256:
            return _differs(held, f"{held.local} is not what the copy began with (its SHA-256 changed)")
    try:
        state = await remote.probe(spot)
    except RemoteUnreachable as exc:
        why = f"began before; its spool cannot be asked: {exc.message}"
        return Copied(Exec(Outcome.UNREACHABLE, None, 0.0, why), held)
    if state.startswith("status "):
        return Copied(_ended(state.split(" ", 1)[1]), held)
    job = job_of(stage, held, source, resume=state != "none")
    return await remote.copy(job, spot=spot, timeout=timeout, progress=progress, output=output)


def _differs(held: CopyFacts, why: str) -> Copied:
    return Copied(Exec(Outcome.FAILED, None, 0.0, f"SRC differs on this machine: {why}"), held)


def _ended(status: str) -> Exec:
    """A copy's end as its spool status says it (its owner ended before journaling it)."""
    if status == "0":
        return Exec(Outcome.OK, 0, 0.0)
    if status in (Outcome.TIMEOUT, Outcome.CANCELLED):
        return Exec(status, None, 0.0, f"{status} before the takeover")
    return Exec(Outcome.FAILED, None, 0.0, "failed before the takeover")


@record
class CopyOrder:
    """One attempt of a copy, as a flow asks it of its steps: the stage, its paths
    rendered for the host (`local` absolute), where it goes, where its output and
    its progress are told, and the line's sources."""

    stage: p.Copy
    local: str
    remote_path: str
    remote: Remote
    output: Capture
    progress: Progress
    sources: Sources


async def copy_live(live: LiveSteps, step: StepId, order: CopyOrder) -> Exec:
    """A copy started here: its source read, then (connected) its intent, the copy, its
    result. A source that cannot be read starts nothing: the host fails with why."""
    found = await source_of(order.sources, order.stage, order.local, order.remote_path)
    if isinstance(found, Exec):
        failed = ActionResult(step.action, step.host, found.outcome, None, 0.0, found.message, b"", b"")
        await live.wiring.recorder.result(failed)
        return found
    facts, source = found
    job = job_of(order.stage, facts, source)

    async def start() -> Exec | Copied:
        clock, stage = live.wiring.clock, order.stage
        started = clock.monotonic()
        where = await live.reach(order.remote, step.host, stage.timeout, "copy")
        if isinstance(where, Exec):
            return Copied(where, facts)
        spot = live.spot(step)
        await live.wiring.recorder.intent(spot.action, step.host, stage.written, stage.timeout, where, facts)
        left = max(stage.timeout - (clock.monotonic() - started), 0.001)
        return await order.remote.copy(
            job, spot=spot, timeout=left, progress=order.progress, output=order.output
        )

    return await live.journaled(step, order.output, start())


async def copy_taken_up(up: TakenUp, step: StepId, order: CopyOrder) -> Exec:
    """A copy of a run an earlier owner started: its record if it ended, else taken up
    from its intent (`take_up`), else started."""
    held = up.resume.held(step)
    facts = facts_held(held) if held is not None else None
    if held is None or (facts is None and held.get("state") != "done"):
        return await copy_live(up.live, step, order)
    if held.get("state") == "done" or facts is None:  # ended before: its record, and its output
        order.output.replay("stdout", untail(held.get("out")))
        order.output.replay("stderr", untail(held.get("err")))
        return recorded(held)
    live, took = up.live, facts

    async def take() -> Exec | Copied:
        wiring = live.wiring
        at = held.get("at")
        since = wiring.clock.wall() - float(at) if isinstance(at, int | float) else 0.0
        left = max(1.0, order.stage.timeout - max(0.0, since))
        await wiring.recorder.taking_up(step.action, step.host, left)
        spot = live.spot(step)
        moved = await moved_host(order.remote, spot, held)
        if moved is not None:
            return Copied(moved, took)
        return await take_up(
            order.sources,
            order.stage,
            took,
            remote=order.remote,
            spot=spot,
            timeout=left,
            progress=order.progress,
            output=order.output,
        )

    return await live.journaled(step, order.output, take())

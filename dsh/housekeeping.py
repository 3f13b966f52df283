"""Removing the finished sessions nobody touched for a while (`dsh rm
--older-than D`, and the sweep that the configuration's [store] asks for), one
at a time through dsh.session.admin's `remove` (which `dsh rm SESSION` uses
too). A sweep checks again, once it holds a session, that it is still
finished and untouched: a session used between the listing and the take stays.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dsh.errors import DshError
from dsh.record import record
from dsh.remote.base import Remote
from dsh.session.admin import InUse, remove
from dsh.session.catalogue import list_sessions
from dsh.session.lease import Session

#: The automatic sweep's bounds: seconds for its listing and removals (it starts
#: no removal after them), and the most sessions it removes.
SWEEP_BUDGET = 1.0
SWEEP_MOST = 16


@record
class Keep:
    """How long a finished session that nobody touches is kept: one named by the
    user (--session) and one dsh named itself; None keeps it until `dsh rm`."""

    named: float | None
    unnamed: float | None

    def cutoff(self, entry: Mapping[str, Any], now: float) -> float | None:
        """Before when `entry` (of `list_sessions`) must have been touched last to go."""
        keep = self.named if entry.get("named", True) else self.unnamed
        return None if keep is None else now - keep


@record
class Swept:
    """What a sweep did: the sessions removed, those it left because they were in use
    (named), the hosts whose spools of a removed session could not be removed (by
    session), and the error that stopped it (None if it went through)."""

    removed: tuple[str, ...]
    in_use: tuple[str, ...]
    unreached: tuple[tuple[str, tuple[str, ...]], ...]
    error: DshError | None = None


def expired(entries: Sequence[dict[str, Any]], keep: Keep, now: float) -> list[dict[str, Any]]:
    """The entries (of `list_sessions`) of finished sessions (neither running nor
    unfinished) untouched for as long as `keep` keeps them, the oldest first."""
    old = []
    for entry in entries:
        cutoff = keep.cutoff(entry, now)
        if entry["state"] == "idle" and cutoff is not None and float(entry["touched"]) < cutoff:
            old.append(entry)
    return sorted(old, key=lambda e: float(e["touched"]))


async def remove_expired(
    entries: Sequence[dict[str, Any]],
    keep: Keep,
    now: float,
    make: Callable[[str], Session],
    local: Remote,
    hosts: Callable[[str], Remote] | None = None,
    *,
    most: int | None = None,
    deadline: float | None = None,
) -> Swept:
    """Remove the sessions that `expired` picks out of `entries` (as listed at
    `now`), one at a time (`make` opens one by name, unclaimed): at most `most`,
    none started after `deadline` (monotonic). A session in use is left and
    named; another error stops the sweep, and is returned with what was done."""
    removed: list[str] = []
    in_use: list[str] = []
    unreached: list[tuple[str, tuple[str, ...]]] = []
    for entry in expired(entries, keep, now)[:most]:
        if deadline is not None and time.monotonic() >= deadline:
            break
        name = str(entry["name"])
        try:
            failed = await remove(
                make(name), local, hosts, wait=False, untouched_since=keep.cutoff(entry, now)
            )
        except InUse:
            in_use.append(name)
            continue
        except DshError as exc:
            return Swept(tuple(removed), tuple(in_use), tuple(unreached), exc)
        removed.append(name)
        if failed:
            unreached.append((name, tuple(failed)))
    return Swept(tuple(removed), tuple(in_use), tuple(unreached))


async def sweep(
    session: Session,
    keep: Keep,
    make: Callable[[str], Session],
    local: Remote,
    *,
    budget: float = SWEEP_BUDGET,
    most: int = SWEEP_MOST,
) -> Swept:
    """The automatic sweep, run by `session`'s owner after its work: the finished
    sessions of its user (not itself) untouched for their `keep`, with their
    callbacks and this machine's spools (the hosts' spools go with the hosts'
    own [spool] keep clean-up). Bounded: `budget` seconds for the listing and
    the removals started (twice that at the very most), `most` removals."""
    started = time.monotonic()
    async with asyncio.timeout(2 * budget):
        entries = await list_sessions(session.store, session.keys.tree, timeout=budget)
        others = [e for e in entries if e["name"] != session.keys.name]
        return await remove_expired(
            others, keep, time.time(), make, local, most=most, deadline=started + budget
        )

"""Removing sessions from the store: one session with its callbacks and spools
(`dsh rm SESSION`), and the finished sessions nobody touched for a while (`dsh
rm --older-than D`, and the sweep that the configuration's [store] asks for).

A session is taken (its lease claimed) before anything of it is removed, so
that a removal never races an owner or an attach: one that holds it keeps it,
and the removal is refused (`InUse`). A sweep checks again, once it holds the
session, that it is still finished and untouched: a session used between the
listing and the take stays.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dsh.errors import DshError, UsageError
from dsh.record import record
from dsh.remote.base import Remote
from dsh.session import control
from dsh.session.catalogue import list_sessions, session_summary
from dsh.session.codec import loads
from dsh.session.keys import callback_key
from dsh.session.lease import Owned, Session
from dsh.session.records import Meta

#: The automatic sweep's bounds: seconds for its listing and removals (it starts
#: no removal after them), and the most sessions it removes.
SWEEP_BUDGET = 1.0
SWEEP_MOST = 16


class InUse(UsageError):
    """The session could not be taken (an owner holds it, or it is being handed
    over), or it was used after it was listed: it stays."""


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


async def remove(
    session: Session,
    local: Remote,
    hosts: Callable[[str], Remote] | None = None,
    *,
    wait: bool = True,
    untouched_since: float | None = None,
) -> list[str]:
    """Remove one session: take it, then remove its spools (this machine's, and its
    hosts' when `hosts` is given), its callbacks and every key of it. `wait`: for
    an owner that died, until its lease runs out (`dsh rm`); else an owner means
    InUse at once (a sweep). `untouched_since`: a sweep's cutoff; once taken, the
    session must still be finished and untouched since then, else InUse. Returns
    the hosts whose spool could not be removed. UsageError if there is no such
    session (not for a sweep: it removes the keys it listed, whatever they are)."""
    store, keys = session.store, session.keys
    meta = await store.get(keys.meta, timeout=session.timeout)
    if meta is None and untouched_since is None:
        raise UsageError(f"no session named {keys.name!r} in {store.name}")
    listed = loads(Meta, meta.value, key=meta.key).id if meta is not None else None
    owned = await _take(session, wait=wait)
    try:
        # A different id: the session was removed meanwhile and the claim made it
        # anew (its keys go now); else a sweep looks again, as the owner.
        if untouched_since is not None and owned.id == listed:
            entry = await session_summary(store, keys, timeout=owned.timeout)
            if entry is None or entry["state"] != "idle" or float(entry["touched"]) >= untouched_since:
                raise InUse(f"session {keys.name!r} was used meanwhile")
        where = sorted(await _hosts(owned) - {"-"}) if hosts is not None else []
        failed: list[str] = []
        await local.remove(owned.spool_name)
        if where and hosts is not None:
            done = await asyncio.gather(*(hosts(h).remove(owned.spool_name) for h in where))
            failed = [h for h, ok in zip(where, done, strict=True) if not ok]
        await owned.close_writes()  # nothing more is written: the keys go now
        made, _ = await store.range(keys.callbacks, timeout=owned.timeout)
        for kv in made:  # the callbacks (and their events) live outside the session's keys
            token = kv.key[len(keys.callbacks) :].decode()
            await store.delete(callback_key(token), prefix=True, timeout=owned.timeout)
        await store.delete(keys.root, prefix=True, timeout=owned.timeout)
        return failed
    finally:
        await owned.release()


async def _take(session: Session, *, wait: bool) -> Owned:
    try:
        if wait:
            return await session.take(patience=0.0)
        if await control.handover_pending(session.store, session.keys, timeout=session.timeout):
            raise UsageError(f"session {session.keys.name!r} is being handed over")
        return await session.claim()
    except InUse:
        raise
    except UsageError as exc:
        raise InUse(exc.message) from None


async def _hosts(session: Owned) -> set[str]:
    """The hosts the session acted on (`-`: this machine), from its action records."""
    kvs, _ = await session.store.range(session.keys.root + b"act/", timeout=session.timeout)
    return {kv.key.rsplit(b"/", 1)[1].decode() for kv in kvs}


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

"""What a user does to sessions from outside them: send a signal, put and get
keys, stop a session's live owner (`dsh kill`'s first half: the rest, ending
what it left on its hosts, is done as the session's owner), and remove a
session with its callbacks and spools (`dsh rm`).

A session is taken (its lease claimed) before anything of it is removed, so
that a removal never races an owner or an attach: one that holds it keeps it,
and the removal is refused (`InUse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

from dsh.bytestext import to_bytes
from dsh.errors import StoreError, UsageError
from dsh.remote.base import Remote
from dsh.session import control
from dsh.session.catalogue import session_summary
from dsh.session.codec import loads, readable
from dsh.session.keys import Keys, Tree, callback_key, event_key, legacy_callback
from dsh.session.lease import Owned, Session
from dsh.session.records import KillRequest, Meta, Owner
from dsh.store.base import Store, StoreDenied

#: How long `dsh kill` waits, beyond the owner's lease TTL, for a live owner to stop.
KILL_PATIENCE = 15.0


async def require(store: Store, keys: Keys, *, timeout: float) -> None:
    """A UsageError unless the session exists."""
    if await store.get(keys.meta, timeout=timeout) is None:
        raise UsageError(f"no session named {keys.name!r} in {store.name}")


async def send_signal(store: Store, keys: Keys, name: str, value: str, *, timeout: float) -> None:
    """`dsh signal`: kept until the first `await signal NAME` of the session takes it."""
    await require(store, keys, timeout=timeout)
    seq = b"%020d-%s" % (time.time_ns(), os.urandom(3).hex().encode())
    await store.put(keys.signals_of(name) + seq, to_bytes(value), timeout=timeout)


async def put_key(store: Store, tree: Tree, key: str, value: str, *, timeout: float) -> None:
    await store.put(tree.key(key), to_bytes(value), timeout=timeout)


async def get_key(store: Store, tree: Tree, key: str, *, timeout: float) -> bytes | None:
    """The bytes of `key` as they were put; None when it is not set."""
    held = await store.get(tree.key(key), timeout=timeout)
    return held.value if held is not None else None


async def stop_owner(store: Store, keys: Keys, machine: str, *, lease_ttl: float, timeout: float) -> None:
    """Ask a live owner to stop (`dsh kill`) and wait until it has let go: up to its
    lease's TTL and KILL_PATIENCE more (a UsageError then)."""
    held = await store.get(keys.owner, timeout=timeout)
    if held is None:
        return
    await control.ask_kill(store, keys, KillRequest(machine), timeout=timeout)
    owner = readable(Owner, held)  # one that cannot be read: as long as ours
    ttl = owner.ttl if owner is not None else lease_ttl
    deadline = time.monotonic() + ttl + KILL_PATIENCE
    while await store.get(keys.owner, timeout=timeout) is not None:
        if time.monotonic() > deadline:
            with contextlib.suppress(StoreError):  # not left behind for a later owner
                await control.withdraw_kill(store, keys, timeout=timeout)
            raise UsageError(f"session {keys.name!r}: its owner did not stop")
        await asyncio.sleep(0.1)


class InUse(UsageError):
    """The session could not be taken (an owner holds it, or it is being handed
    over), or it was used after it was listed: it stays."""


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
        for kv in made:  # the callbacks and their events live outside the session's keys
            token = kv.key[len(keys.callbacks) :].decode()
            await store.delete(callback_key(keys.tree, token), timeout=owned.timeout)
            await store.delete(event_key(keys.tree, token), timeout=owned.timeout)
            with contextlib.suppress(StoreDenied):  # one an older dsh made, where it may be reached
                await store.delete(legacy_callback(token), timeout=owned.timeout)
                await store.delete(legacy_callback(token) + b"/event", timeout=owned.timeout)
        await store.delete(keys.root, prefix=True, timeout=owned.timeout)
        people = await control.writers(store, keys.tree, timeout=owned.timeout)
        for person in people:  # the requests left for it (another person's: theirs to remove)
            with contextlib.suppress(StoreDenied):
                await store.delete(keys.control(person), prefix=True, timeout=owned.timeout)
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

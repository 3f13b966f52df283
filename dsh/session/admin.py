"""What a user does to sessions from outside them: send a signal, put and get
keys, and stop a session's live owner (`dsh kill`'s first half: the rest, ending
what it left on its hosts, is done as the session's owner).
"""

from __future__ import annotations

import asyncio
import os
import time

from dsh.bytestext import to_bytes
from dsh.errors import UsageError
from dsh.session import control
from dsh.session.codec import readable
from dsh.session.keys import Keys, Tree
from dsh.session.records import KillRequest, Owner
from dsh.store.base import Store

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
    await store.put(keys.signals(name) + seq, to_bytes(value), timeout=timeout)


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
            raise UsageError(f"session {keys.name!r}: its owner did not stop")
        await asyncio.sleep(0.1)

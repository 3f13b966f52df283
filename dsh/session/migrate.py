"""`dsh admin migrate`: moving what dsh kept before issue 21 to where it is now.

Two things moved:

- **Trees.** With an etcd user, a person's sessions and keys are in the tree of
  that etcd user (`u/ETCDUSER/`); before, in the OS user's (`u/OSUSER/`). A map
  OSUSER=ETCDUSER moves every session and key of the one tree into the other.
- **Callbacks.** They were global, `cb/TOKEN` with the POST at `cb/TOKEN/event`;
  now they are in their session's tree, `cb/u/NAME/TOKEN` and `ev/u/NAME/TOKEN`.
  Each one found is moved to its tree (after the tree's own move, if mapped).
  Its token is unchanged, its URL is not: a POST to the old URL gets 404, so a
  callback still awaited is left unless `force`.

A session is moved key by key (its `meta` last, so that a half-moved session
is not yet one where it goes), then its old keys are deleted; a re-run finishes
a move an interruption left (the new `meta` names the same session id). A
session with a live owner is never moved, one with work left (a line not taken,
a plan not run to its end) only with `force`. It runs as etcd's root (it
reads and writes every tree).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass, field

from dsh.session.callbacks import TOKEN
from dsh.session.codec import dumps, loads
from dsh.session.control import work_left
from dsh.session.journal import put_batches
from dsh.session.keys import CALLBACKS, EVENTS, Keys, Tree, callback_key, event_key, user_tree
from dsh.session.records import Callback, CorruptRecord, Meta, Owner
from dsh.store.base import Compare, Put, Store

#: The lease a migration holds a session on while it moves it (renewed after each
#: batch of keys).
HOLD_TTL = 60.0


@dataclass
class Moves:
    """What a migration did (or, dry, would do): sentences, and what it left."""

    moved: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


class Migration:
    def __init__(
        self, store: Store, mapping: dict[str, str], *, dry: bool, force: bool, timeout: float
    ) -> None:
        self.store = store
        self.mapping = mapping
        self.dry = dry
        self.force = force
        self.timeout = timeout
        self.moves = Moves()
        #: The lease the session being moved is held on (0: none).
        self._holding = 0

    async def run(self) -> Moves:
        for old, new in self.mapping.items():
            await self._tree(user_tree(old), user_tree(new))
        await self._callbacks()
        return self.moves

    # -- trees -------------------------------------------------------------------------

    async def _tree(self, old: Tree, new: Tree) -> None:
        t = self.timeout
        kvs, _ = await self.store.range(old.sessions, timeout=t)
        names = sorted({kv.key[len(old.sessions) :].split(b"/", 1)[0].decode() for kv in kvs})
        for name in names:
            await self._session(Keys(old, name), Keys(new, name))
        where = f"u/{old.name}/"
        await self._keys(old.prefix + b"keys/", new.prefix + b"keys/", f"keys of {_name(old)}")
        # callbacks a dsh of issue 21 made in the old tree, and their POSTs
        for root in (CALLBACKS, EVENTS):
            await self._keys(root + where.encode(), root + f"u/{new.name}/".encode(), "callback records")

    async def _keys(self, old: bytes, new: bytes, what: str) -> None:
        """Every key under `old` to the same place under `new` (one there already stays)."""
        t = self.timeout
        keys, _ = await self.store.range(old, timeout=t)
        if not keys:
            return
        there, _ = await self.store.range(new, timeout=t)
        taken = {kv.key[len(new) :] for kv in there}
        moving = [kv for kv in keys if kv.key[len(old) :] not in taken]
        self.moves.moved.append(f"{len(moving)} {what} → {new.decode(errors='replace')}")
        if len(moving) < len(keys):
            self.moves.left.append(f"{len(keys) - len(moving)} {what} that are there already")
        if self.dry:
            return
        for chunk in put_batches([Put(new + kv.key[len(old) :], kv.value) for kv in moving]):
            await self.store.txn([], chunk, timeout=t)
        for kv in moving:
            await self.store.delete(kv.key, timeout=t)

    async def _session(self, old: Keys, new: Keys) -> None:
        t, what = self.timeout, f"session {old.name} of {_name(old.tree)}"
        if await self.store.get(old.owner, timeout=t) is not None:
            self.moves.left.append(f"{what}: it is running (its owner holds it): move it once it ends")
            return
        if self.dry:
            await self._move(old, new, what)
            return
        # Held while it moves, as an owner holds it: nobody claims it meanwhile.
        lease = await self.store.grant(HOLD_TTL, timeout=t)
        holder = Owner(f"dsh admin migrate on {socket.gethostname()}", os.getpid(), time.time(), HOLD_TTL)
        try:
            held = await self.store.txn(
                [Compare(old.owner, "version", "==", 0)],
                [Put(old.owner, dumps(holder), lease=lease.id)],
                timeout=t,
            )
            if not held.succeeded:
                self.moves.left.append(f"{what}: it is running (its owner holds it): move it once it ends")
                return
            self._holding = lease.id
            await self._move(old, new, what)
        finally:
            self._holding = 0
            await self.store.revoke(lease.id, timeout=t)

    async def _move(self, old: Keys, new: Keys, what: str) -> None:
        t = self.timeout
        meta = await self.store.get(old.meta, timeout=t)
        there = await self.store.get(new.meta, timeout=t)
        if there is not None and (meta is None or _id(there) != _id(meta)):
            self.moves.left.append(f"{what}: {_name(new.tree)} has a session of that name already")
            return
        if (
            there is None
            and meta is not None
            and not self.force
            and await work_left(self.store, old, timeout=t)
        ):
            self.moves.left.append(f"{what}: it has work left (say --force to move it as it stands)")
            return
        kvs, _ = await self.store.range(old.root, timeout=t)
        lasting = [kv for kv in kvs if kv.lease == 0 and kv.key != old.meta]  # owner, viewers: not
        puts = [Put(new.root + kv.key[len(old.root) :], kv.value) for kv in lasting]
        if meta is not None:
            puts.append(Put(new.meta, meta.value))  # last: the session is there once it is whole
        self.moves.moved.append(f"{what} → {_name(new.tree)} ({len(puts)} keys)")
        if self.dry:
            return
        if there is None:
            for chunk in put_batches(puts):
                await self.store.txn([], chunk, timeout=t)
                if self._holding:
                    await self.store.keepalive(self._holding, timeout=t)
        await self.store.delete(old.root, prefix=True, timeout=t)

    # -- callbacks ---------------------------------------------------------------------

    async def _callbacks(self) -> None:
        """Every callback an older dsh kept at cb/TOKEN, into its session's tree."""
        t = self.timeout
        kvs, _ = await self.store.range(CALLBACKS, timeout=t)
        held = {kv.key: kv for kv in kvs}
        for kv in kvs:
            token = kv.key[len(CALLBACKS) :].decode(errors="replace")
            if not TOKEN.fullmatch(token):  # the new layout (u/NAME/TOKEN), an old event, or not dsh's
                continue
            try:
                record = loads(Callback, kv.value, key=kv.key)
            except CorruptRecord as exc:
                self.moves.left.append(f"callback {token}: {exc.problem}")
                continue
            tree = user_tree(self.mapping.get(record.user, record.user))
            event = held.get(kv.key + b"/event")
            if event is None and record.deadline is not None and not self.force:
                self.moves.left.append(
                    f"callback {token} of session {record.session}: still awaited, and its URL changes "
                    "(a POST to the old one gets 404): say --force to move it"
                )
                continue
            self.moves.moved.append(f"callback {token} of session {record.session} → {_name(tree)}")
            if self.dry:
                continue
            moved = record if record.user == tree.name else Callback(tree.name, *_rest(record))
            puts = [Put(callback_key(tree, token), dumps(moved))]
            if event is not None:
                puts.append(Put(event_key(tree, token), event.value))
            await self.store.txn([], puts, timeout=t)
            await self.store.delete(kv.key, timeout=t)  # the callback and its event, exactly those
            await self.store.delete(kv.key + b"/event", timeout=t)


def _rest(record: Callback) -> tuple[str, str, str | None, float | None]:
    return record.session, record.action, record.host, record.deadline


def _name(tree: Tree) -> str:
    return f"{tree.kind}/{tree.name}"


def _id(held: object) -> str | None:
    with contextlib.suppress(CorruptRecord, AttributeError):
        return loads(Meta, held.value, key=held.key).id  # type: ignore[attr-defined]
    return None

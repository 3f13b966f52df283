"""The store's side of an owned session's awaits (executor.Events): the user's
keys, durable signals (each taken once, in a fenced transaction that records
which action got it), callbacks (dsh.session.callbacks) and approvals
(dsh.session.approvals).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from dsh.bytestext import from_bytes
from dsh.errors import StoreError
from dsh.runtime.events import NO_SERVER, CallbackError
from dsh.runtime.ports import Approval
from dsh.session import control
from dsh.session.approvals import Asked
from dsh.session.callbacks import callback_base, make_token, secret
from dsh.session.codec import dumps, loads
from dsh.session.journal import LeaseLost
from dsh.session.keys import callback_key, callback_path, event_key, parse_callback_path
from dsh.session.lease import Owned
from dsh.session.records import ActDone, Callback, CallbackEvent, ControlEntry, SignalEntry
from dsh.store.base import Compare, Delete, Put


class SessionEvents:
    """Keys, signals and callbacks for the awaits of an owned session (executor.Events)."""

    def __init__(self, session: Owned, *, requester_counts: bool = False) -> None:
        self.session = session
        self._secret: bytes | None = None
        self._asked = Asked(requester_counts=requester_counts)

    async def approval_over(self, action: str) -> None:
        session = self.session
        with contextlib.suppress(StoreError, TimeoutError):  # it goes with the owner's lease anyway
            await self._asked.withdraw(
                session.store, session.keys, session.id, action, timeout=session.timeout
            )

    async def approval(self, action: str, principals: str, quorum: int, deadline: float) -> Approval:
        session = self.session
        requester = session.by if session.by is not None else (session.keys.me, session.machine)

        async def write(entries: list[ControlEntry]) -> None:
            cp = session.checkpointer()
            await cp.write([cp.entry(entry) for entry in entries])

        return await self._asked.look(
            session.store,
            session.keys,
            session_id=session.id,
            action=action,
            principals=principals,
            quorum=quorum,
            deadline=deadline,
            asked_by=requester,
            lease=session.lease,
            write=write,
            timeout=session.timeout,
        )

    async def _callback_secret(self) -> bytes:
        """The session's secret, made once: callback tokens are HMACs under it."""
        if self._secret is None:
            self._secret = await secret(
                self.session.store, self.session.keys.secret, timeout=self.session.timeout
            )
        return self._secret

    async def new_callback(self, action: str, host: str | None) -> tuple[str, bool]:
        session = self.session
        base = await callback_base(session.store)
        if base is None:
            raise CallbackError(NO_SERVER)
        tree = session.keys.tree
        token = make_token(await self._callback_secret(), session.id, action, host)
        record = Callback(tree.name, session.keys.name, action, host)
        cp = session.checkpointer()
        made = await session.store.txn(
            [cp.fence, Compare(callback_key(tree, token), "version", "==", 0)],
            # With the session's index of its callbacks, so that `dsh rm` removes them.
            [
                Put(callback_key(tree, token), dumps(record)),
                Put(session.keys.callbacks + token.encode(), b""),
            ],
            timeout=session.timeout,
        )
        if (
            not made.succeeded
            and await session.store.get(callback_key(tree, token), timeout=session.timeout) is None
        ):
            session.lost()  # the fence failed, not the callback's existence
            raise LeaseLost("the session's lease was lost: no callback was made")
        return f"{base}/cb/{callback_path(tree, token)}", made.succeeded

    async def callback(self, url: str, deadline: float | None) -> str | None:
        store, timeout = self.session.store, self.session.timeout
        tree = self.session.keys.tree
        found = parse_callback_path("/".join(url.rstrip("/").split("/")[-3:]))
        if found is None or found[0] != tree or "/cb/" not in url:
            raise CallbackError(
                f"{url} is not a callback of this session's ({tree.kind}/{tree.name}): "
                "await callback URL waits for one that `cb = callback` made in this session"
            )
        token = found[1]
        if deadline is not None:  # a POST after the wait is over is refused (410)
            held = await store.get(callback_key(tree, token), timeout=timeout)
            if held is not None:
                record = replace(loads(Callback, held.value, key=held.key), deadline=round(deadline, 3))
                await store.txn(
                    [Compare(callback_key(tree, token), "mod", "==", held.mod_revision)],
                    [Put(callback_key(tree, token), dumps(record))],
                    timeout=timeout,
                )
        event = await store.get(event_key(tree, token), timeout=timeout)
        return loads(CallbackEvent, event.value, key=event.key).body if event is not None else None

    async def key(self, key: str) -> str | None:
        held = await self.session.store.get(self.session.keys.user_key(key), timeout=self.session.timeout)
        return from_bytes(held.value) if held is not None else None

    async def take_signal(self, name: str, action: str, host: str | None) -> str | None:
        session, keys = self.session, self.session.keys
        marker, writers = (
            keys.signal_taken(name),
            await control.writers(session.store, keys.tree, timeout=session.timeout),
        )
        prefixes = [marker, *(keys.signals_of(name, person) for person in writers)]
        found, _ = await session.store.ranges(prefixes, timeout=session.timeout)
        held = next((kv for kv in found[0] if kv.key == marker), None)
        after = int(held.value) if held is not None and held.value.isdigit() else 0
        waiting = sorted(
            (kv.create_revision, kv.key, person, kv)
            for person, kvs in zip(writers, found[1:], strict=True)
            for kv in kvs
            if kv.create_revision > after
        )
        if not waiting:
            return None
        revision, _, sender, oldest = waiting[0]  # the oldest sent, whoever sent it
        value = from_bytes(oldest.value)
        cp = session.checkpointer()
        await cp.flush()  # the journal stays in order
        record = ActDone(action, host, "ok", 0, 0.0, "", value, "")  # no machine: taken for every host
        ops: list[Put | Delete] = [
            Put(marker, b"%d" % revision),
            Put(keys.action(action, host), dumps(record)),
            cp.entry(SignalEntry(action, name, value, sender)),
        ]
        if sender == keys.me:  # another person's is theirs to delete: the mark says it is taken
            ops.append(Delete(oldest.key))
        unchanged = (
            Compare(marker, "mod", "==", held.mod_revision) if held else Compare(marker, "version", "==", 0)
        )
        result = await session.store.txn([cp.fence, unchanged], ops, timeout=session.timeout)
        if result.succeeded:
            return value
        owner = await session.store.get(keys.owner, timeout=session.timeout)
        if owner is None or owner.create_revision != cp.fence.operand:
            session.lost()
            raise LeaseLost("the session's lease was lost: the signal was left for its next owner")
        return None  # taken meanwhile (it cannot be: one owner); look again

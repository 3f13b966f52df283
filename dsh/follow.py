"""Following a session whose executor runs on another machine, through the store.

A client that cannot reach the executor's socket (it is on another machine)
follows the session instead: it watches the session's keys and shows each
journal entry as it is written, submits lines to the inbox as any client does,
asks for cancels with `ctl/cancel/ID`, and learns a line's status from
`ctl/done/ID`. While it follows, its `ctl/viewer/ID` key (on a lease of its
own, renewed every TTL/3) keeps the executor from ending for want of clients.

The follower is a task of the client's event loop (no thread), on the client's
store handle. It tells the client what the client must act on, as it would
hear it from an executor's socket (dsh.runtime.protocol), or `Gone`:

    Done(id, status, error)     a submitted line is over
    Gone(handover)              the owner let go or died; handover: it was asked to hand over
    End(4, message)             the session was killed (3: following failed)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from dsh.errors import StoreError
from dsh.exits import Exit
from dsh.record import record
from dsh.runtime.protocol import Done, End
from dsh.session import control
from dsh.session.codec import as_dict, load_action, load_entry
from dsh.session.control import work_left
from dsh.session.keys import Keys
from dsh.session.records import CorruptRecord, Viewer
from dsh.store.base import Store, Watch

#: The TTL of a follower's viewer key: an executor stays at most this long for
#: a follower that died.
VIEWER_TTL = 5.0
#: Every store call of a follower is bounded by this.
TIMEOUT = 10.0


@record
class Gone:
    """The owner of the session followed went: it let go (`handover`: while a
    handover request stood), or died."""

    handover: bool


class Follower:
    def __init__(
        self,
        store: Store,
        keys: Keys,
        machine: str,
        tell: Callable[[Done | End | Gone], None],
        show: Callable[[dict[str, Any]], None],
    ) -> None:
        self.store = store
        self.keys = keys
        self.machine = machine
        self.tell = tell
        self.show = show
        self.id = os.urandom(6).hex()
        self._task: asyncio.Task[None] | None = None
        self._shown = 0  # the last journal entry shown
        #: A handover is asked for or under way: an owner that goes now handed over.
        self._handover = False

    async def start(self) -> None:
        """Begin following (the viewer key is in the store when this returns; a
        StoreError or TimeoutError if it cannot be put)."""
        store, keys = self.store, self.keys
        lease = await store.grant(VIEWER_TTL, timeout=TIMEOUT)
        try:
            viewer = Viewer(self.machine, os.getpid())
            await control.add_viewer(store, keys, self.id, viewer, lease=lease.id, timeout=TIMEOUT)
            # The owner read at a revision, and the watch from the next: no change between is missed.
            owner, revision = await store.range(keys.owner, timeout=TIMEOUT)
            watch = await store.watch(keys.root, start_revision=revision + 1, timeout=TIMEOUT)
        except BaseException:
            await self._revoke(lease.id)
            raise
        try:
            # Read after the watch's start: a change in between is in the watch too, later.
            self._handover = await control.handover_pending(store, keys, timeout=TIMEOUT)
        except BaseException:
            await watch.close()
            await self._revoke(lease.id)
            raise
        self._task = asyncio.create_task(self._follow(watch, lease.id, gone=not owner))

    async def cancel(self, sid: str) -> None:
        with contextlib.suppress(StoreError, TimeoutError):  # the line then runs to its end
            await control.ask_cancel(self.store, self.keys, sid, self.machine, timeout=TIMEOUT)

    async def work_left(self) -> bool:
        """Whether the session has work left (False once following ended: the
        client is told why)."""
        if self._task is None or self._task.done():
            return False
        try:
            return await work_left(self.store, self.keys, timeout=TIMEOUT)
        except (StoreError, TimeoutError):
            return True  # the store may be back at the next look

    async def stop(self) -> None:
        """Stop following (the viewer key goes with its lease)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=2 * TIMEOUT)

    # -- the follower's task -----------------------------------------------------------

    async def _follow(self, watch: Watch, lease: int, *, gone: bool) -> None:
        keeper = asyncio.create_task(self._keep(lease))
        try:
            if gone:
                self.tell(Gone(self._handover))
                return
            async for batch in watch:
                for event in batch:
                    key = event.kv.key[len(self.keys.root) :]
                    if await self._event(event.kind, key, event.kv.value):
                        return
            raise StoreError("the store ended the watch")
        except Exception as exc:  # said once, and the client ends with it
            why = exc.message if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
            self.tell(End(Exit.STORE, f"following session {self.keys.name} failed: {why}"))
        finally:
            keeper.cancel()
            with contextlib.suppress(StoreError, TimeoutError, OSError):
                await asyncio.wait_for(watch.close(), TIMEOUT)
            await self._revoke(lease)  # the viewer key goes with it

    async def _revoke(self, lease: int) -> None:
        with contextlib.suppress(StoreError, TimeoutError):
            await self.store.revoke(lease, timeout=TIMEOUT)

    async def _keep(self, lease: int) -> None:
        while True:
            await asyncio.sleep(VIEWER_TTL / 3)
            with contextlib.suppress(StoreError, TimeoutError):
                await self.store.keepalive(lease, timeout=VIEWER_TTL / 3)

    async def _event(self, kind: str, key: bytes, value: bytes) -> bool:
        """Act on one change of the session's keys; True when following is over."""
        if kind == "put" and key.startswith(b"j/"):
            await self._entry(key, value)
        elif kind == "put" and key.startswith(b"ctl/done/"):
            sid = key[len(b"ctl/done/") :].decode()
            done = control.read_answer(self.keys, key, value)  # unreadable: only "it is over"
            status, error = (done.status, done.error) if done is not None else (None, None)
            self.tell(Done(sid, status, error or None))
            with contextlib.suppress(StoreError, TimeoutError):
                await control.forget_answer(self.store, self.keys, sid, timeout=TIMEOUT)
        elif kind == "put" and key == self.keys.killed[len(self.keys.root) :]:  # the owner stops for it
            self.tell(End(Exit.KILLED, f"session {self.keys.name!r} was killed (dsh kill)"))
            return True
        elif key == self.keys.handing[len(self.keys.root) :]:  # the owner hands it over (or did)
            self._handover = kind == "put"
        elif kind == "delete" and key == b"owner":
            self.tell(Gone(self._handover))
            return True
        return False

    async def _entry(self, key: bytes, value: bytes) -> None:
        """Show a journal entry (one that cannot be read is not shown)."""
        with contextlib.suppress(CorruptRecord, ValueError):
            journaled = load_entry(value, key=self.keys.root + key)
            if journaled.seq <= self._shown:  # written again (a retried checkpoint)
                return
            self._shown = journaled.seq
            entry = as_dict(journaled)
            if entry["kind"] == "end":  # with the tail of its output, as attach shows it
                with contextlib.suppress(StoreError, TimeoutError):  # CorruptRecord is one
                    held = await self.store.get(
                        self.keys.action(entry["action"], entry["host"]), timeout=TIMEOUT
                    )
                    if held is not None:
                        entry["out"] = as_dict(load_action(held.value, key=held.key)).get("out", "")
            self.show(entry)

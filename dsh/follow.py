"""Following a session whose executor runs on another machine, through the store.

A client that cannot reach the executor's socket (it is on another machine)
follows the session instead: it watches the session's keys and shows each
journal entry as it is written, submits lines to the inbox as any client does,
asks for cancels with `ctl/cancel/ID`, and learns a line's status from
`ctl/done/ID`. While it follows, its `ctl/viewer/ID` key (on a lease of its
own, renewed every TTL/3) keeps the executor from ending for want of clients.

All of this runs on a thread of its own, with its own event loop and its own
store handle; the client's main thread sees control events in its queue:

    {"ev": "done", "id": SID, "status": N, "error": TEXT}   a submitted line is over
    {"ev": "gone", "handover": BOOL}                        the owner let go or died;
                                                            handover: it was asked to hand over
    {"ev": "end", "exit": 4, "message": TEXT}               the session was killed
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import Callable
from typing import Any

from dsh.errors import StoreError
from dsh.runtime.session import Keys, work_left
from dsh.session.codec import as_dict, dumps, load_action, load_entry, loads
from dsh.session.records import CorruptRecord, SubmissionDone, Viewer
from dsh.store.base import Store

#: The TTL of a follower's viewer key: an executor stays at most this long for
#: a follower that died.
VIEWER_TTL = 5.0
#: Every store call of a follower is bounded by this.
TIMEOUT = 10.0


class Follower:
    def __init__(
        self,
        open_store: Callable[[], Store],
        keys: Keys,
        machine: str,
        events: queue.Queue[Any],
        show: Callable[[dict[str, Any]], None],
        wake: Callable[[], None],
    ) -> None:
        self.open_store = open_store
        self.keys = keys
        self.machine = machine
        self.events = events
        self.show = show
        self.wake = wake
        self.id = os.urandom(6).hex()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="dsh-follow", daemon=True)
        self._shown = 0  # the last journal entry shown
        #: A handover request stands (`ctl/handover`): an owner that goes now handed over.
        self._handover = False

    def start(self, timeout: float = TIMEOUT) -> None:
        """Begin following (the viewer key is in the store when this returns)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise StoreError(f"could not follow session {self.keys.name!r} within {timeout:g}s")
        if self._failed is not None:
            raise self._failed

    def call(self, coro_fn: Callable[[Store], Any], timeout: float = TIMEOUT) -> Any:
        """Run `coro_fn(store)` on the follower's loop; its result."""
        assert self._loop is not None
        future = asyncio.run_coroutine_threadsafe(coro_fn(self._store), self._loop)
        return future.result(timeout)

    def cancel(self, sid: str) -> None:
        async def put(store: Store) -> None:
            await store.put(self.keys.cancels + sid.encode(), b"", timeout=TIMEOUT)

        with contextlib.suppress(Exception):
            self.call(put)

    def work_left(self) -> bool:
        """Whether the session has work left (False once following ended: the
        client sees why in its queue)."""

        async def ask(store: Store) -> bool:
            return await work_left(store, self.keys, timeout=TIMEOUT)

        if not self._thread.is_alive():
            return False
        try:
            return bool(self.call(ask))
        except (StoreError, TimeoutError):
            return True  # the store may be back at the next look
        except Exception:
            return self._thread.is_alive()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(TIMEOUT)

    # -- the follower's thread ----------------------------------------------------------

    def _main(self) -> None:
        try:
            asyncio.run(self._follow())
        except BaseException as exc:  # said by start(), or ends the following (and the client)
            self._failed = exc
            if self._ready.is_set():
                why = exc.message if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
                self._tell(
                    {"ev": "end", "exit": 3, "message": f"following session {self.keys.name} failed: {why}"}
                )
            self._ready.set()

    async def _follow(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        store = self._store = self.open_store()
        keys = self.keys
        try:
            lease = await store.grant(VIEWER_TTL, timeout=TIMEOUT)
            viewer = dumps(Viewer(self.machine, os.getpid()))
            await store.put(keys.viewers + self.id.encode(), viewer, lease=lease.id, timeout=TIMEOUT)
            # The owner read at a revision, and the watch from the next: no change between is missed.
            owner, revision = await store.range(keys.owner, timeout=TIMEOUT)
            watch = await store.watch(keys.root, start_revision=revision + 1, timeout=TIMEOUT)
            # Read after the watch's start: a change in between is in the watch too, later.
            self._handover = await store.get(keys.handover, timeout=TIMEOUT) is not None
            self._ready.set()
            if not owner:
                self._tell({"ev": "gone", "handover": self._handover})
                self._stop.set()
            keeper = asyncio.ensure_future(self._keep(store, lease.id))
            stopping = asyncio.ensure_future(self._stop.wait())
            try:
                iterator = watch.__aiter__()
                while not self._stop.is_set():
                    batch = asyncio.ensure_future(iterator.__anext__())
                    await asyncio.wait({batch, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if not batch.done():
                        batch.cancel()
                        break
                    for event in batch.result():
                        if await self._event(
                            store, event.kind, event.kv.key[len(keys.root) :], event.kv.value
                        ):
                            return
            finally:
                keeper.cancel()
                stopping.cancel()
                await watch.close()
                with contextlib.suppress(StoreError, TimeoutError):
                    await store.revoke(lease.id, timeout=TIMEOUT)  # the viewer key goes with it
        finally:
            await store.close()

    async def _keep(self, store: Store, lease: int) -> None:
        while True:
            await asyncio.sleep(VIEWER_TTL / 3)
            with contextlib.suppress(StoreError, TimeoutError):
                await store.keepalive(lease, timeout=VIEWER_TTL / 3)

    async def _event(self, store: Store, kind: str, key: bytes, value: bytes) -> bool:
        """Act on one change of the session's keys; True when following is over."""
        if kind == "put" and key.startswith(b"j/"):
            # An entry that cannot be read is not shown.
            with contextlib.suppress(CorruptRecord, ValueError):
                journaled = load_entry(value, key=self.keys.root + key)
                if journaled.seq <= self._shown:  # written again (a retried checkpoint)
                    return False
                self._shown = journaled.seq
                entry = as_dict(journaled)
                if entry["kind"] == "end":  # with the tail of its output, as attach shows it
                    with contextlib.suppress(StoreError, TimeoutError):  # CorruptRecord is one
                        held = await store.get(
                            self.keys.action(entry["action"], entry["host"]), timeout=TIMEOUT
                        )
                        if held is not None:
                            entry["out"] = as_dict(load_action(held.value, key=held.key)).get("out", "")
                self.show(entry)
        elif kind == "put" and key.startswith(b"ctl/done/"):
            sid = key[len(b"ctl/done/") :].decode()
            try:
                done: SubmissionDone | None = loads(SubmissionDone, value, key=self.keys.root + key)
            except CorruptRecord:  # one that cannot be read says nothing but that it is over
                done = None
            status, error = (done.status, done.error) if done is not None else (None, None)
            self._tell({"ev": "done", "id": sid, "status": status, "error": error})
            with contextlib.suppress(StoreError, TimeoutError):
                await store.delete(self.keys.done + sid.encode(), timeout=TIMEOUT)
        elif kind == "put" and key == b"kill":
            message = f"session {self.keys.name!r} was killed (dsh kill)"
            self._tell({"ev": "end", "exit": 4, "message": message})
            return True
        elif key == self.keys.handover[len(self.keys.root) :]:
            self._handover = kind == "put"
        elif kind == "delete" and key == b"owner":
            self._tell({"ev": "gone", "handover": self._handover})
            return True
        return False

    def _tell(self, event: dict[str, Any]) -> None:
        with contextlib.suppress(queue.Full):
            self.events.put(event, timeout=60.0)
        self.wake()

"""Owning a session: the owner record under a lease, claimed, taken over (waiting
for a dead owner's lease to run out, or for a live one to hand over), kept
alive, and let go.

The owner record (`owner`) is put under a lease only if there is none; every
checkpoint is fenced on it (dsh.session.journal), so an owner that lost its
lease can neither write nor, since intent precedes every effect, act. The
lease is renewed every TTL/3 by a task of the loop, or by a thread of its own
when the store can be opened twice (an event loop busy for longer than the TTL
must not lose it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator

from dsh.errors import StoreError, UsageError
from dsh.session.codec import dumps, entry_bytes, loads, readable
from dsh.session.control import handover_asked, kill_asked
from dsh.session.journal import Checkpointer, LeaseLost
from dsh.session.keys import Keys, user_name
from dsh.session.records import Meta, Owner
from dsh.store.base import Compacted, Compare, LeaseNotFound, Put, Store

#: The shortest bound of a store call made while the lease is in doubt (one try).
MIN_CALL = 0.05
#: An owner acts on hosts only while at least this much of its lease is surely left
#: (a quarter of the TTL when that is less): a launch or kill sent later could land
#: after the lease ran out, on work a new owner has taken up.
ACT_MARGIN = 0.5


class Session:
    """A session to own: its store and keys, and how this process owns one (the
    lease's TTL, the bound of a store call, a way to open a second handle)."""

    def __init__(
        self,
        store: Store,
        keys: Keys,
        machine: str,
        *,
        lease_ttl: float,
        timeout: float,
        crash_after: int = 0,
        reopen: Callable[[], Store] | None = None,
        named: bool = True,
    ) -> None:
        self.store = store
        self.keys = keys
        self.machine = machine
        self.lease_ttl = lease_ttl
        self.configured_timeout = timeout
        #: Fault injection for the crash tests (the checkpointer's `crash_after`).
        self.crash_after = crash_after
        #: Opens another handle on the store: the lease is then kept by a thread of its
        #: own, so that an event loop busy for longer than the TTL (hundreds of SSH
        #: handshakes at once) does not lose it. Without it, by a task of the loop.
        self.reopen = reopen
        #: Named by the user (--session), not generated for one `dsh -c`.
        self.named = named

    @property
    def timeout(self) -> float:
        """The bound of one store call (no lease is held through this handle)."""
        return self.configured_timeout

    async def claim(
        self, busy: str = "", *, say: Callable[[str], None] | None = None, socket: str | None = None
    ) -> Owned:
        """Take ownership under a new lease, or fail if a live owner holds it (a
        UsageError saying who, and `busy`, what the user can do about it). `say`
        tells the user what the store does (unreachable, back again); `socket`
        is where this owner's clients reach it (kept in the owner record)."""
        asked = time.monotonic()
        lease = await self.store.grant(self.lease_ttl, timeout=self.timeout)
        owner = Owner(
            self.machine,
            os.getpid(),
            time.time(),
            lease.ttl,  # what the store granted (etcd raises short TTLs)
            socket,
            self.keys.me,
            user_name(),
        )
        result = await self.store.txn(
            [Compare(self.keys.owner, "version", "==", 0)],
            [Put(self.keys.owner, dumps(owner), lease.id)],
            timeout=self.timeout,
        )
        if not result.succeeded:
            await self.store.revoke(lease.id, timeout=self.timeout)
            who = readable(Owner, await self.store.get(self.keys.owner, timeout=self.timeout))
            raise UsageError(
                f"session {self.keys.name!r} is running on {who.machine if who else '?'} "
                f"(pid {who.pid if who else '?'}){f'; {busy}' if busy else ''}"
            )
        owned = Owned(self, lease.id, lease.ttl, asked)
        try:
            await owned._begin(Compare(self.keys.owner, "create", "==", result.revision), say)
        except BaseException:
            await owned._let_go()
            raise
        return owned

    async def take(
        self,
        *,
        patience: float = 1.0,
        wanted: Callable[[], bool] | None = None,
        say: Callable[[str], None] | None = None,
        socket: str | None = None,
    ) -> Owned:
        """Claim, waiting for the owner to let go (or for its lease to run out): up to
        its TTL and `patience` more, watching its key. A UsageError still if it
        holds on. While a handover to another machine is asked for, that machine
        goes first. `wanted` says whether to go on waiting (checked every second)."""
        deadline = time.monotonic() + patience
        held = await self.store.get(self.keys.owner, timeout=self.timeout)
        holder = readable(Owner, held)
        if held is not None:  # one that cannot be read: as long as ours
            deadline += float(holder.ttl) if holder is not None else self.lease_ttl
        owned = await self._take(deadline, wanted, say, socket)
        owned.previous = holder
        return owned

    async def _take(
        self,
        deadline: float,
        wanted: Callable[[], bool] | None,
        say: Callable[[str], None] | None,
        socket: str | None,
    ) -> Owned:
        while True:
            if wanted is not None and not wanted():
                raise UsageError(f"no longer waiting to take session {self.keys.name!r} over")
            asked = await handover_asked(self.store, self.keys, timeout=self.timeout)
            # one that cannot be read asks nothing
            here = asked is None or asked[1].to(self.machine, user_name())
            to = asked[1].machine if asked is not None else self.machine
            owner = await self.store.get(self.keys.owner, timeout=self.timeout)
            if owner is None and here:  # only then: a waiting executor writes nothing
                with contextlib.suppress(UsageError):  # another was quicker: wait for it to go
                    return await self.claim(say=say, socket=socket)
            if time.monotonic() >= deadline:
                if not here:
                    raise UsageError(f"session {self.keys.name!r} is being handed over to {to}")
                return await self.claim(say=say, socket=socket)  # its error says who holds it
            await self._owner_changes(min(deadline, time.monotonic() + 1.0))

    async def _owner_changes(self, until: float) -> None:
        """Wait until the owner key changes (or `until`, a monotonic time)."""
        held, revision = await self.store.range(self.keys.owner, timeout=self.timeout)
        if not held:
            await asyncio.sleep(max(min(until - time.monotonic(), 0.2), 0))  # a handover goes first
            return
        try:  # from the revision read at: whatever changes after it is seen
            watch = await self.store.watch(self.keys.owner, start_revision=revision + 1, timeout=self.timeout)
        except Compacted:
            return  # compacted meanwhile: read again
        try:
            with contextlib.suppress(TimeoutError, StopAsyncIteration):
                await asyncio.wait_for(watch.__aiter__().__anext__(), max(until - time.monotonic(), 0.001))
        finally:
            await watch.close()


class Owned:
    """A session this process owns: exists from its claim until it lets go (or loses
    its lease). Its checkpointer is fenced on the owner record it created."""

    checkpoints: Checkpointer

    def __init__(self, session: Session, lease: int, lease_ttl: float, renewed: float) -> None:
        self.session = session
        self.store = session.store
        self.keys = session.keys
        self.machine = session.machine
        self.lease = lease
        #: What the store granted (etcd raises short TTLs).
        self.lease_ttl = lease_ttl
        #: When the last renewal that succeeded was sent (monotonic): the lease holds
        #: until a TTL after it at the latest, as the store counts it from later.
        self.renewed = renewed
        self.id = ""
        self.runs = 0
        #: `dsh kill` asked this owner to stop (its running line is cancelled).
        self.killed = False
        #: Handing over (`dsh attach --take`): no new action starts; those running end.
        self.draining = False
        #: Whose lines run now (the person and their machine): a submission's; else
        #: (None) this owner's, for a script or a resume.
        self.by: tuple[str, str] | None = None
        #: The owner it was taken from (`Session.take`), if one held it then.
        self.previous: Owner | None = None
        #: The actions started and not ended yet, (action, host): by when they end at
        #: the latest (monotonic; their timeout and the kill's grace).
        self.in_flight: dict[tuple[str, str | None], float] = {}
        #: Called when the lease is lost or a kill is asked: stops what runs.
        self._on_stop: Callable[[], None] | None = None
        self._keepalive: asyncio.Task[None] | None = None
        self._keeper: threading.Thread | None = None
        self._keeper_stop: Callable[[], None] | None = None
        #: Everything is written (close_writes): letting go writes nothing.
        self._written = False

    @property
    def spool_name(self) -> str:
        """The name of this session's spools on hosts (`NAME.ID`, see dsh.session.keys)."""
        return f"{self.keys.name}.{self.id}"

    @property
    def timeout(self) -> float:
        """The bound of one store call: the configured one, and while a lease is held,
        no more than what is left of it (a call made while the lease is in doubt
        must not outlast it)."""
        if not self.lease:
            return self.session.configured_timeout
        return max(MIN_CALL, min(self.session.configured_timeout, self.lease_left()))

    def lease_left(self) -> float:
        """Seconds until the lease may have run out, counted from the last renewal
        that succeeded (from when it was sent); negative once it may have."""
        return self.renewed + self.lease_ttl - time.monotonic()

    def may_act(self) -> bool:
        """Whether this executor may still act on hosts (launch or kill): it holds its
        lease, and surely for a while more. An owner without it, or in doubt, acts
        no more: it leaves the commands in flight to their spools for the next owner."""
        if not self.lease or (self.checkpoints is not None and self.checkpoints.lost):
            return False
        return self.lease_left() > min(ACT_MARGIN, self.lease_ttl / 4)

    def drain(self) -> None:
        """Handing over: no new action starts (those running end)."""
        self.draining = True

    @contextlib.contextmanager
    def stopping(self, stop: Callable[[], None]) -> Iterator[None]:
        """Within: `stop` is called at once when the lease is lost or a kill is asked."""
        self._on_stop = stop
        try:
            yield
        finally:
            self._on_stop = None

    async def close_writes(self) -> None:
        """Write what is deferred; nothing more is written after (the session's keys
        are being removed): letting go then only gives the lease back."""
        await self.checkpoints.close()
        self._written = True

    async def _begin(self, fence: Compare, say: Callable[[str], None] | None) -> None:
        """The session's id (made with its meta, by its first owner), its run count,
        the checkpointer fenced on this owner record, and the lease kept."""
        session, store, keys = self.session, self.store, self.keys
        held_meta = await store.get(keys.meta, timeout=self.timeout)
        if held_meta is None:
            self.id = os.urandom(6).hex()
            meta = Meta(keys.name, time.time(), self.machine, self.id, session.named)
            await store.put(keys.meta, dumps(meta), timeout=self.timeout)
        else:
            self.id = loads(Meta, held_meta.value, key=held_meta.key).id
        last_entry = await store.last(keys.journal, timeout=self.timeout)
        last_run = await store.last(keys.runs, timeout=self.timeout)
        self.runs = int(last_run.key.rsplit(b"/", 1)[1]) if last_run else 0
        self.checkpoints = Checkpointer(
            store,
            keys.journal,
            fence,
            time.time,
            session.configured_timeout,
            crash_after=session.crash_after,
            left=self.lease_left,
            encode=entry_bytes,
        )
        self.checkpoints.seq = int(last_entry.key.rsplit(b"/", 1)[1]) if last_entry else 0
        self.checkpoints.say = say
        self._start_keeping()

    def _start_keeping(self) -> None:
        if self.session.reopen is None:
            self._keepalive = asyncio.ensure_future(self._keep(self.store, self.lost, self._kill_asked))
            return
        main = asyncio.get_running_loop()
        reopen = self.session.reopen
        started = threading.Event()

        def lost() -> None:
            with contextlib.suppress(RuntimeError):  # the main loop closed: nothing to stop
                main.call_soon_threadsafe(self.lost)

        def killed() -> None:
            with contextlib.suppress(RuntimeError):
                main.call_soon_threadsafe(self._kill_asked)

        async def keep() -> None:
            store = reopen()
            loop = asyncio.get_running_loop()
            keeping = asyncio.ensure_future(self._keep(store, lost, killed))

            def stop() -> None:  # ends the renewals only: the store is still closed below
                loop.call_soon_threadsafe(keeping.cancel)

            self._keeper_stop = stop
            started.set()
            try:
                with contextlib.suppress(asyncio.CancelledError):
                    await keeping
            finally:
                # The store may be gone (its file deleted): closing it must not end the
                # thread with a traceback (fault report #11).
                with contextlib.suppress(Exception):
                    await store.close()

        self._keeper = threading.Thread(target=lambda: asyncio.run(keep()), name="dsh-lease", daemon=True)
        self._keeper.start()
        started.wait(5.0)

    def _kill_asked(self) -> None:
        if not self.killed:
            self.killed = True
            if self._on_stop is not None:  # stop what runs, its commands killed
                self._on_stop()

    async def _keep(self, store: Store, lost: Callable[[], None], killed: Callable[[], None]) -> None:
        """Renew the lease every TTL/3. A slow or failed renewal is tried again, each
        try bounded by what is left of the lease, until it may have run out (a TTL
        after the last renewal that succeeded was sent); then, or at once if the
        store says it is gone, the checkpointer is marked lost and the running work
        is abandoned (`lost`). A `dsh kill` seen meanwhile calls `killed`."""
        while True:
            await asyncio.sleep(max(0.0, min(self.lease_ttl / 3, self.lease_left())))
            left = self.lease_left()
            if left <= 0:
                break
            sent = time.monotonic()
            try:
                await store.keepalive(self.lease, timeout=min(self.lease_ttl / 3, left))
                self.renewed = sent
                bound = max(MIN_CALL, min(self.lease_ttl / 3, self.lease_left()))
                since = int(self.checkpoints.fence.operand)  # this owner's claim
                if await kill_asked(store, self.keys, since=since, timeout=bound):
                    killed()
            except LeaseNotFound:
                break
            except (StoreError, TimeoutError):
                continue
        lost()

    def lost(self) -> None:
        """The lease is lost (or may be): nothing more is written, and what runs stops."""
        self.checkpoints.lost = True
        if self._on_stop is not None:
            self._on_stop()

    async def alive(self) -> bool:
        """Whether this session still holds its lease (renewing it if so)."""
        try:
            await self.store.keepalive(self.lease, timeout=self.timeout)
        except LeaseNotFound:
            return False
        return not self.checkpoints.lost

    async def release(self) -> None:
        """Write what is deferred, then let the lease go. LeaseLost if it was lost."""
        try:
            if self.lease and not self._written:
                await self.checkpoints.close()
        finally:
            await self._let_go()

    async def _let_go(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
        if self._keeper is not None:
            if self._keeper_stop is not None:
                with contextlib.suppress(RuntimeError):  # its loop is over already
                    self._keeper_stop()
            await asyncio.to_thread(self._keeper.join, self.timeout)
            self._keeper = None
        if self.lease:
            if self.lease_left() > 0:  # still held (a handover lets go): the next owner needn't wait
                with contextlib.suppress(StoreError, TimeoutError):  # else it expires by itself
                    await self.store.revoke(self.lease, timeout=self.timeout)
            self.lease = 0

    def next_run(self) -> int:
        self.runs += 1
        return self.runs

    def ensure_owned(self) -> None:
        """LeaseLost unless this executor still owns the session."""
        if self.checkpoints.lost:
            raise LeaseLost("the session's lease was lost: this executor stops")

    def checkpointer(self) -> Checkpointer:
        return self.checkpoints

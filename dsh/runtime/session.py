"""Sessions as data: a session opened for running (its owner lease, what it left),
what the executor tells it (SessionRecorder), what its awaits look at
(SessionEvents), and the listing of a user's sessions.

Where each record lives is dsh.session.keys' (its docstring has the whole
layout); what each record is, and how it is written and read, is
dsh.session.records'. This module moves into dsh/session/ piece by piece
(issue 17); `Keys` stays importable from here meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from dsh.bytestext import from_bytes, to_bytes
from dsh.errors import StoreError, UsageError
from dsh.plan import KILL_GRACE, Bound, For, If, Plan, Run, Statement
from dsh.record import record
from dsh.remote.base import Identity
from dsh.runtime.executor import Replayed, Resume
from dsh.runtime.journal import TAIL_BYTES, Checkpointer, LeaseLost
from dsh.runtime.results import HostResult
from dsh.runtime.values import BindRefused, HostsValue, ResultValue, StrValue, Value
from dsh.session.codec import as_dict, dumps, entry_bytes, load_action, load_binding, load_entry, loads
from dsh.session.keys import Keys as Keys  # re-exported: its callers import it from here, for now
from dsh.session.keys import callback_key, event_key, sessions_prefix
from dsh.session.records import (
    ActAwait,
    ActDone,
    ActIntent,
    ActSleep,
    AwaitEntry,
    BindEntry,
    BoundHost,
    BoundHosts,
    BoundResults,
    BoundText,
    Callback,
    CallbackEntry,
    CallbackEvent,
    CorruptRecord,
    DoneEntry,
    EndEntry,
    Handover,
    Journaled,
    LineEntry,
    Meta,
    Owner,
    PlanLimits,
    ResultSets,
    RunHead,
    RunRecord,
    SignalEntry,
    SleepEntry,
    StartEntry,
    Todo,
)
from dsh.store.base import KV, MAX_VALUE, Compacted, Compare, Delete, LeaseNotFound, Put, Store

#: The shortest bound of a store call made while the lease is in doubt (one try).
MIN_CALL = 0.05
#: An owner acts on hosts only while at least this much of its lease is surely left
#: (a quarter of the TTL when that is less): a launch or kill sent later could land
#: after the lease ran out, on work a new owner has taken up.
ACT_MARGIN = 0.5
R = TypeVar("R")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid{os.getuid()}"


def machine_id(env: Mapping[str, str]) -> str:
    return env.get("DSH_MACHINE_ID") or socket.gethostname()


def generated_name() -> str:
    return time.strftime("s%Y%m%d-%H%M%S-") + os.urandom(2).hex()


def readable(cls: type[R], held: KV | None) -> R | None:
    """A control record (owner, handover, …) as `cls`, or None when there is none or
    it cannot be read (damaged, or written by someone else): whoever reads it goes
    on without it, and a forged record never stops a process (fault report #9)."""
    if held is None:
        return None
    try:
        return loads(cls, held.value, key=held.key)
    except CorruptRecord:
        return None


def encode_value(value: Value) -> bytes:
    if isinstance(value, StrValue):
        return dumps(BoundText(to_bytes(value.text)))
    if isinstance(value, HostsValue):
        return dumps(BoundHosts(value.hosts))
    # whole: the executor refused a value over the cap before it came here
    return dumps(BoundResults(tuple(_bound_host(r) for r in value.results)))


def _bound_host(r: HostResult) -> BoundHost:
    """A host result as bound: whole."""
    return BoundHost(
        r.host, r.outcome, r.exit_status, r.seconds, r.attempts, r.message, r.out, r.err, r.truncated
    )


def decode_value(raw: bytes, *, key: bytes) -> Value:
    """A bound value as stored at `key`; CorruptRecord if it is not one."""
    bound = load_binding(raw, key=key)
    if isinstance(bound, BoundText):
        return StrValue(bound.text.decode("utf-8", "surrogateescape"))
    if isinstance(bound, BoundHosts):
        return HostsValue(bound.hosts)
    return ResultValue(
        tuple(
            HostResult(
                h.host,
                h.outcome,
                h.exit,
                h.seconds,
                attempts=h.attempts,
                message=h.message,
                out=h.out,
                err=h.err,
                truncated=h.truncated,
            )
            for h in bound.hosts
        )
    )


@record
class LastRun:
    """The last statement a session ran: as a plan of its own, its run number, the
    script's arguments, its index in the plan it was part of (whose id is
    `plan_id`), whether it ended (a `done` entry) and whether it ended ok."""

    plan: Plan
    run: int
    args: tuple[str, ...]
    index: int
    done: bool
    ok: bool
    plan_id: str


class Session:
    """A session opened for running: its keys, its owner lease and its checkpointer."""

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
    ) -> None:
        self.crash_after = crash_after
        #: Opens another handle on the store: the lease is then kept by a thread of its
        #: own, so that an event loop busy for longer than the TTL (hundreds of SSH
        #: handshakes at once) does not lose it. Without it, by a task of the loop.
        self.reopen = reopen
        self._keeper: threading.Thread | None = None
        self._keeper_stop: Callable[[], None] | None = None
        #: Named by the user (--session), not generated for one `dsh -c`.
        self.named = True
        self.store = store
        self.keys = keys
        self.machine = machine
        self.lease_ttl = lease_ttl
        self._timeout = timeout
        self.lease = 0
        #: When the last renewal that succeeded was sent (monotonic): the lease holds
        #: until a TTL after it at the latest, as the store counts it from later.
        self.renewed = 0.0
        self.runs = 0
        self.id = ""  # known once claimed
        #: `dsh kill` asked this owner to stop (its running line is cancelled).
        self.killed = False
        self.checkpoints: Checkpointer | None = None
        self._keepalive: asyncio.Task[None] | None = None
        #: Called when the lease is lost: the driver cancels what is running.
        self.on_lost: Callable[[], None] | None = None
        #: An executor process's socket, for its clients (in the owner record).
        self.socket: str | None = None
        #: Tells the user what the session's store does (unreachable, back again).
        self.say: Callable[[str], None] | None = None
        #: Handing over (`dsh attach --take`): no new action starts; those running end.
        self.draining = False
        #: The actions started and not ended yet, (action, host): by when they end at
        #: the latest (monotonic; their timeout and the kill's grace).
        self.in_flight: dict[tuple[str, str | None], float] = {}

    async def take(self, *, patience: float = 1.0, wanted: Callable[[], bool] | None = None) -> None:
        """Claim, waiting for the owner to let go (or for its lease to run out): up to
        its TTL and `patience` more, watching its key. A UsageError still if it
        holds on. While a handover to another machine is asked for, that machine
        goes first. `wanted` says whether to go on waiting (checked every second)."""
        deadline = time.monotonic() + patience
        held = await self.store.get(self.keys.owner, timeout=self.timeout)
        if held is not None:
            holder = readable(Owner, held)  # one that cannot be read: as long as ours
            deadline += float(holder.ttl) if holder is not None else self.lease_ttl
        while True:
            if wanted is not None and not wanted():
                raise UsageError(f"no longer waiting to take session {self.keys.name!r} over")
            asked = readable(Handover, await self.store.get(self.keys.handover, timeout=self.timeout))
            to = asked.machine if asked is not None else self.machine  # one that cannot be read asks nothing
            owner = await self.store.get(self.keys.owner, timeout=self.timeout)
            if owner is None and to == self.machine:  # only then: a waiting executor writes nothing
                with contextlib.suppress(UsageError):  # another was quicker: wait for it to go
                    await self.claim()
                    return
            if time.monotonic() >= deadline:
                if to != self.machine:
                    raise UsageError(f"session {self.keys.name!r} is being handed over to {to}")
                await self.claim()  # its error says who holds the session
                return
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

    @property
    def timeout(self) -> float:
        """The bound of one store call: the configured one, and while a lease is held,
        no more than what is left of it (a call made while the lease is in doubt
        must not outlast it)."""
        if not self.lease:
            return self._timeout
        return max(MIN_CALL, min(self._timeout, self.lease_left()))

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

    async def claim(self, busy: str = "") -> None:
        """Take ownership under a new lease, or fail if a live owner holds it (a
        UsageError saying who, and `busy`, what the user can do about it)."""
        asked = time.monotonic()
        lease = await self.store.grant(self.lease_ttl, timeout=self.timeout)
        owner = Owner(
            self.machine,
            os.getpid(),
            time.time(),
            lease.ttl,  # what the store granted (etcd raises short TTLs)
            self.socket,
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
        self.lease_ttl = lease.ttl
        self.renewed = asked
        self.lease = lease.id
        held_meta = await self.store.get(self.keys.meta, timeout=self.timeout)
        if held_meta is None:
            self.id = os.urandom(6).hex()
            meta = Meta(self.keys.name, time.time(), self.machine, self.id, self.named)
            await self.store.put(self.keys.meta, dumps(meta), timeout=self.timeout)
        else:
            self.id = loads(Meta, held_meta.value, key=held_meta.key).id
        fence = Compare(self.keys.owner, "create", "==", result.revision)
        last_entry = await self.store.last(self.keys.journal, timeout=self.timeout)
        last_run = await self.store.last(self.keys.runs, timeout=self.timeout)
        self.runs = int(last_run.key.rsplit(b"/", 1)[1]) if last_run else 0
        self.checkpoints = Checkpointer(
            self.store,
            self.keys.journal,
            fence,
            time.time,
            self._timeout,
            crash_after=self.crash_after,
            left=self.lease_left,
            encode=entry_bytes,
        )
        self.checkpoints.seq = int(last_entry.key.rsplit(b"/", 1)[1]) if last_entry else 0
        self.checkpoints.say = self.say
        self._start_keeping()

    def _start_keeping(self) -> None:
        if self.reopen is None:
            self._keepalive = asyncio.ensure_future(self._keep(self.store, self.lost, self._kill_asked))
            return
        main = asyncio.get_running_loop()
        reopen = self.reopen
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
            if self.on_lost is not None:  # stop what runs, its commands killed
                self.on_lost()

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
                if await store.get(self.keys.kill, timeout=bound) is not None:
                    killed()
            except LeaseNotFound:
                break
            except (StoreError, TimeoutError):
                continue
        lost()

    def lost(self) -> None:
        if self.checkpoints is not None:
            self.checkpoints.lost = True
        if self.on_lost is not None:
            self.on_lost()

    async def alive(self) -> bool:
        """Whether this session still holds its lease (renewing it if so)."""
        try:
            await self.store.keepalive(self.lease, timeout=self.timeout)
        except LeaseNotFound:
            return False
        return self.checkpoints is not None and not self.checkpoints.lost

    async def load(self) -> tuple[dict[str, Value], dict[str, tuple[str, ...]]]:
        """The bindings and result sets left by earlier runs of this session."""
        kvs, _ = await self.store.range(self.keys.bindings, timeout=self.timeout)
        bindings = {
            kv.key[len(self.keys.bindings) :].decode(): decode_value(kv.value, key=kv.key) for kv in kvs
        }
        held = await self.store.get(self.keys.sets, timeout=self.timeout)
        sets = loads(ResultSets, held.value, key=held.key).sets if held else {}
        return bindings, dict(sets)

    async def function_sources(self) -> dict[str, str]:
        """The source text of each function the session defined, by name."""
        kvs, _ = await self.store.range(self.keys.functions, timeout=self.timeout)
        return {
            kv.key[len(self.keys.functions) :].decode(): kv.value.decode("utf-8", "replace") for kv in kvs
        }

    async def release(self) -> None:
        """Write what is deferred, then let the lease go. LeaseLost if it was lost."""
        try:
            if self.checkpoints is not None and self.lease:
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

    @property
    def spool_name(self) -> str:
        """The name of this session's spools on hosts (see the module's doc)."""
        return f"{self.keys.name}.{self.id}"

    async def last_run(self) -> LastRun | None:
        """The last statement run in this session; None if nothing ran yet."""
        last = await self.store.last(self.keys.runs, timeout=self.timeout)
        if last is None:
            return None
        record = loads(RunRecord, last.value, key=last.key)
        run = record.run
        done = False
        ok = True
        for journaled in reversed(await journal(self.store, self.keys, timeout=self.timeout)):
            entry = journaled.entry
            if isinstance(entry, DoneEntry) and entry.run == run:
                done, ok = True, entry.ok
                break
            if isinstance(entry, LineEntry) and entry.run == run:
                break
        limits = record.limits
        plan = Plan(limits.name, (record.plan,), Bound(None, None, 0.0), limits.step_budget, limits.fanout)
        return LastRun(plan, run, record.args, record.index, done, ok, record.plan_id)

    async def left(self) -> tuple[Plan, int, tuple[str, ...], str] | None:
        """The plan a previous owner was running and the index of its first statement
        not over (which may be the unfinished one), with its arguments; None when
        it was run to its end."""
        held = await self.store.get(self.keys.todo, timeout=self.timeout)
        if held is None:
            return None
        todo = loads(Todo, held.value, key=held.key)
        done = await self.store.get(self.keys.todo_next, timeout=self.timeout)
        index = int(done.value) if done is not None else 0
        if index >= len(todo.plan.statements):
            return None
        return todo.plan, index, todo.args, todo.id

    async def replay(self, plan_id: str, index: int) -> dict[str, Replayed]:
        """What the statements of a compound statement (index `index` of plan
        `plan_id`) did before a takeover, by path: the one that did not end comes
        with its actions' records, to be taken up."""
        kvs, _ = await self.store.range(self.keys.runs, timeout=self.timeout)
        runs: dict[int, str] = {}
        for kv in kvs:
            head = loads(RunHead, kv.value, key=kv.key)
            if head.plan_id == plan_id and head.index == index:
                runs[head.run] = head.path
        ended: dict[int, bool] = {}
        for journaled in await journal(self.store, self.keys, timeout=self.timeout):
            entry = journaled.entry
            if isinstance(entry, DoneEntry) and entry.run in runs:
                ended[entry.run] = entry.ok
        table: dict[str, Replayed] = {}
        for run, path in runs.items():
            done = run in ended
            table[path] = Replayed(run, done, ended.get(run, False), None if done else await self.resume(run))
        return table

    async def resume(self, run: int) -> Resume:
        """The records of the actions of `run`: what a resume takes up (as their JSON
        objects, which the executor reads)."""
        kvs, _ = await self.store.range(self.keys.actions_of(run), timeout=self.timeout)
        actions: dict[tuple[str, str | None], dict[str, Any]] = {}
        for kv in kvs:
            record = load_action(kv.value, key=kv.key)
            actions[(record.action, record.host)] = as_dict(record)
        return Resume(run, actions)

    def next_run(self) -> int:
        self.runs += 1
        return self.runs

    def ensure_owned(self) -> None:
        """LeaseLost unless this executor still owns the session."""
        if self.checkpoints is None or self.checkpoints.lost:
            raise LeaseLost("the session's lease was lost: this executor stops")

    def checkpointer(self) -> Checkpointer:
        if self.checkpoints is None:
            raise LeaseLost("the session is not claimed")
        return self.checkpoints


async def work_left(store: Store, keys: Keys, *, timeout: float) -> bool:
    """Whether the session has work to do: a plan not run to its end, or a
    submitted line not taken yet (what a client on another machine waits for)."""
    # The taken line first: a line taken after this read has its plan in `todo`
    # (written in the same transaction), which is read after.
    taken = await store.get(keys.taken, timeout=timeout)
    last = await store.get(keys.in_seq, timeout=timeout)
    if int(last.value if last else 0) > int(taken.value if taken else 0):
        return True
    held = await store.get(keys.todo, timeout=timeout)
    if held is None:
        return False
    count = len(loads(Todo, held.value, key=held.key).plan.statements)
    done = await store.get(keys.todo_next, timeout=timeout)
    return (int(done.value) if done is not None else 0) < count


class SessionEvents:
    """Keys, signals and callbacks for the awaits of an owned session (executor.Events)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._secret: bytes | None = None

    async def _callback_secret(self) -> bytes:
        """The session's secret, made once: callback tokens are HMACs under it."""
        if self._secret is None:
            store, key, timeout = self.session.store, self.session.keys.secret, self.session.timeout
            made = os.urandom(32).hex().encode()
            await store.txn([Compare(key, "version", "==", 0)], [Put(key, made)], timeout=timeout)
            held = await store.get(key, timeout=timeout)
            self._secret = held.value if held is not None else made
        return self._secret

    async def new_callback(self, action: str, host: str | None) -> tuple[str, bool]:
        from dsh.runtime.events import NO_SERVER, CallbackError
        from dsh.serve import callback_base

        session = self.session
        base = await callback_base(session.store)
        if base is None:
            raise CallbackError(NO_SERVER)
        secret = await self._callback_secret()
        mac = hmac.new(secret, f"{session.id}/{action}/{host or ''}".encode(), hashlib.sha256).digest()
        token = base64.urlsafe_b64encode(mac).decode().rstrip("=")[:32]
        record = Callback(session.keys.user, session.keys.name, action, host)
        cp = session.checkpointer()
        made = await session.store.txn(
            [cp.fence, Compare(callback_key(token), "version", "==", 0)],
            # With the session's index of its callbacks, so that `dsh rm` removes them.
            [
                Put(callback_key(token), dumps(record)),
                Put(session.keys.callbacks + token.encode(), b""),
            ],
            timeout=session.timeout,
        )
        if (
            not made.succeeded
            and await session.store.get(callback_key(token), timeout=session.timeout) is None
        ):
            session.lost()  # the fence failed, not the callback's existence
            raise LeaseLost("the session's lease was lost: no callback was made")
        return f"{base}/cb/{token}", made.succeeded

    async def callback(self, url: str, deadline: float | None) -> str | None:
        store, timeout = self.session.store, self.session.timeout
        token = url.rstrip("/").rsplit("/cb/", 1)[-1]
        if deadline is not None:  # a POST after the wait is over is refused (410)
            held = await store.get(callback_key(token), timeout=timeout)
            if held is not None:
                record = replace(loads(Callback, held.value, key=held.key), deadline=round(deadline, 3))
                await store.txn(
                    [Compare(callback_key(token), "mod", "==", held.mod_revision)],
                    [Put(callback_key(token), dumps(record))],
                    timeout=timeout,
                )
        event = await store.get(event_key(token), timeout=timeout)
        return loads(CallbackEvent, event.value, key=event.key).body if event is not None else None

    async def key(self, key: str) -> str | None:
        held = await self.session.store.get(self.session.keys.user_key(key), timeout=self.session.timeout)
        return from_bytes(held.value) if held is not None else None

    async def take_signal(self, name: str, action: str, host: str | None) -> str | None:
        session, keys = self.session, self.session.keys
        kvs, _ = await session.store.range(keys.signals(name), timeout=session.timeout)
        if not kvs:
            return None
        oldest = kvs[0]
        value = from_bytes(oldest.value)
        cp = session.checkpointer()
        await cp.flush()  # the journal stays in order
        record = ActDone(action, host, "ok", 0, 0.0, "", value, "")  # no machine: taken for every host
        ops: list[Put | Delete] = [
            Delete(oldest.key),
            Put(keys.action(action, host), dumps(record)),
            cp.entry(SignalEntry(action, name, value)),
        ]
        result = await session.store.txn(
            [cp.fence, Compare(oldest.key, "mod", "==", oldest.mod_revision)], ops, timeout=session.timeout
        )
        if result.succeeded:
            return value
        owner = await session.store.get(keys.owner, timeout=session.timeout)
        if owner is None or owner.create_revision != cp.fence.operand:
            session.lost()
            raise LeaseLost("the session's lease was lost: the signal was left for its next owner")
        return None  # taken meanwhile (it cannot be: one owner); look again


async def list_sessions(store: Store, user: str, *, timeout: float) -> list[dict[str, Any]]:
    """Every session of `user`: name, state (running: an owner holds its lease;
    unfinished: a run started and not done, nobody owns it; idle), owner, the
    last line run, when it was made, and when it was last touched (its last
    journal entry, else its creation; seconds since the epoch). Newest first."""
    prefix = sessions_prefix(user)
    kvs, _ = await store.range(prefix, timeout=timeout)
    return sorted(_summaries(prefix, kvs), key=lambda e: -float(e["created"]))


async def session_summary(store: Store, keys: Keys, *, timeout: float) -> dict[str, Any] | None:
    """One session's entry of `list_sessions`, read as if nobody owned it (its state
    is then unfinished or idle): what a removal checks once it holds the session.
    None if the session has no keys."""
    kvs, _ = await store.range(keys.root, timeout=timeout)
    found = _summaries(sessions_prefix(keys.user), [kv for kv in kvs if kv.key != keys.owner])
    return found[0] if found else None


def _summaries(prefix: bytes, kvs: Sequence[KV]) -> list[dict[str, Any]]:
    """The sessions whose keys (under `prefix`, the user's sessions) are `kvs`."""
    found: dict[str, dict[str, Any]] = {}
    for kv in kvs:
        name, _, rest = kv.key[len(prefix) :].decode(errors="replace").partition("/")
        entry = found.setdefault(
            name,
            {"name": name, "state": "idle", "owner_machine": None, "owner_pid": None, "created": 0.0},
        )
        entry.setdefault("last_line", None)
        entry.setdefault("_run", 0)
        entry.setdefault("_done", 0)
        # A record that cannot be read (damaged, or written by someone else) counts as
        # empty: the listing goes on without its fields.
        if rest == "meta":
            meta = readable(Meta, kv)
            entry["created"] = meta.created if meta is not None else 0.0
            entry["named"] = meta.named if meta is not None else True
        elif rest == "owner":
            owner = readable(Owner, kv)
            entry.update(
                state="running",
                owner_machine=owner.machine if owner is not None else None,
                owner_pid=owner.pid if owner is not None else None,
            )
        elif rest.startswith("run/"):
            head = readable(RunHead, kv)
            entry["_run"] = head.run if head is not None else 0
            entry["last_line"] = head.source if head is not None else None
        elif rest.startswith("j/"):
            journaled = readable(Journaled, kv)
            if journaled is not None:
                if isinstance(journaled.entry, DoneEntry):
                    entry["_done"] = max(entry["_done"], journaled.entry.run)
                entry["_touched"] = max(entry.get("_touched", 0.0), journaled.t)
    out = []
    for entry in found.values():
        if entry["state"] != "running" and entry.pop("_run") > entry.pop("_done"):
            entry["state"] = "unfinished"
        entry.pop("_run", None)
        entry.pop("_done", None)
        entry["touched"] = max(float(entry["created"]), entry.pop("_touched", 0.0))
        out.append(entry)
    return out


async def journal(store: Store, keys: Keys, *, timeout: float) -> list[Journaled]:
    """The session's journal, in order; CorruptRecord at an entry that cannot be read."""
    kvs, _ = await store.range(keys.journal, timeout=timeout)
    return [load_entry(kv.value, key=kv.key) for kv in kvs]


async def read_journal(store: Store, keys: Keys, *, timeout: float) -> list[dict[str, Any]]:
    """The session's journal as its entries' JSON objects (`dsh log`, the timeline)."""
    return [as_dict(e) for e in await journal(store, keys, timeout=timeout)]


def in_flight(entries: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """(action, host) of every effect whose intent is journaled but not its result:
    what a resume must ask the host's spool about."""
    open_: dict[tuple[str, str | None], None] = {}
    for e in entries:
        if e.get("kind") == "start":
            open_[(e["action"], e["host"])] = None
        elif e.get("kind") == "end":
            open_.pop((e["action"], e["host"]), None)
    return list(open_)


#: A plan's id, which its statements' run records name: random bytes, in hex.
PLAN_ID_BYTES = 6
#: Room kept in the records of a plan for what only a run knows: a run's number
#: and the path of a statement inside compound ones (a key's length, too).
PLAN_ROOM = 1024
#: The most bytes a plan may take in its largest record (see `stored_size`): what
#: the store takes in one value, less that room. A plan over it is refused when
#: it is compiled, before anything runs.
MAX_PLAN = MAX_VALUE - PLAN_ROOM


def run_record(
    run: int, stmt: Statement, args: Sequence[str], plan: Plan, index: int, path: str, plan_id: str
) -> RunRecord:
    """The `run/RUN` record of a statement about to run (its index in the plan and
    path inside a compound statement, the script's arguments and the plan's limits,
    which a resume needs)."""
    limits = PlanLimits(plan.step_budget, plan.fanout, plan.source_name)
    return RunRecord(run, stmt.line, stmt.source, tuple(args), stmt, index, path, plan_id, limits)


def stored_size(plan: Plan, args: Sequence[str]) -> tuple[int, Statement | None]:
    """The bytes of the largest record a plan is kept in while it runs, and the
    statement whose run record that is (None: the plan's own `todo`). Each
    statement, those inside an `if` or a `for` too, has a run record of its own,
    which holds its source and its compiled form again."""
    plan_id = "0" * 2 * PLAN_ID_BYTES
    largest, which = len(dumps(Todo(plan_id, plan, tuple(args)))), None
    if largest > MAX_PLAN:
        return largest, which
    todo: list[Statement] = list(plan.statements)
    while todo:
        stmt = todo.pop()
        size = len(dumps(run_record(0, stmt, args, plan, 0, "", plan_id)))
        if size > largest:
            largest, which = size, stmt
        if isinstance(stmt, If):
            todo += [*((stmt.cond,) if isinstance(stmt.cond, Run) else ()), *stmt.then, *stmt.orelse]
        elif isinstance(stmt, For):
            todo += stmt.body
    return largest, which


class SessionRecorder:
    """What the executor tells a session: intent before each effect, then its result."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.keys = session.keys
        self.plan_id = ""  # of the plan running (see plan_started)

    async def line_started(
        self, stmt: Statement, args: Sequence[str], plan: Plan, index: int, path: str = ""
    ) -> int:
        run = self.session.next_run()
        cp = self.session.checkpointer()
        record = run_record(run, stmt, args, plan, index, path, self.plan_id)
        cp.defer([Put(self.keys.run(run), dumps(record)), cp.entry(LineEntry(run, stmt.line, stmt.source))])
        return run

    async def intent(
        self, action: str, host: str | None, command: str, timeout: float, where: Identity | None = None
    ) -> None:
        session = self.session
        if session.draining:  # handing over: this action is the next owner's
            await asyncio.Future()  # until the work is stopped
        session.in_flight[(action, host)] = time.monotonic() + timeout + KILL_GRACE + 5.0
        cp = session.checkpointer()
        # `where`: who the host is for this owner (a later one checks it)
        record = ActIntent(action, host, command, timeout, session.machine, round(time.time(), 3), where)
        await cp.write(
            [
                Put(self.keys.action(action, host), dumps(record)),
                cp.entry(StartEntry(action, host, command, timeout)),
            ]
        )
        if session.draining:  # asked meanwhile: not launched; the next owner starts it (no claim)
            session.in_flight.pop((action, host), None)
            await asyncio.Future()

    async def taking_up(self, action: str, host: str | None, timeout: float) -> None:
        """An action of an earlier owner's is about to be followed (or started)."""
        if self.session.draining:
            await asyncio.Future()
        self.session.in_flight[(action, host)] = time.monotonic() + timeout + KILL_GRACE + 5.0

    async def result(
        self,
        action: str,
        host: str | None,
        outcome: str,
        exit_status: int | None,
        seconds: float,
        message: str,
        out: bytes,
        err: bytes,
    ) -> None:
        cp = self.session.checkpointer()
        seconds = round(seconds, 6)
        out_tail, err_tail = from_bytes(out[-TAIL_BYTES:]), from_bytes(err[-TAIL_BYTES:])
        record = ActDone(
            action, host, outcome, exit_status, seconds, message, out_tail, err_tail, self.session.machine
        )
        self.session.in_flight.pop((action, host), None)
        cp.defer(
            [
                Put(self.keys.action(action, host), dumps(record)),
                cp.entry(EndEntry(action, host, outcome, exit_status, seconds, message)),
            ]
        )

    async def awaiting(self, action: str, host: str | None, what: str, deadline: float) -> None:
        cp = self.session.checkpointer()
        deadline = round(deadline, 6)
        await cp.write(
            [
                Put(self.keys.action(action, host), dumps(ActAwait(action, host, what, deadline))),
                cp.entry(AwaitEntry(action, host, what, deadline)),
            ]
        )

    async def callback(self, action: str, host: str | None, url: str) -> None:
        cp = self.session.checkpointer()
        await cp.write([cp.entry(CallbackEntry(action, host, url))])

    async def sleep(self, action: str, host: str | None, seconds: float, deadline: float) -> None:
        cp = self.session.checkpointer()
        deadline = round(deadline, 6)
        await cp.write(
            [
                Put(self.keys.action(action, host), dumps(ActSleep(action, host, deadline))),
                cp.entry(SleepEntry(action, host, seconds, deadline)),
            ]
        )

    async def bound(self, run: int, name: str, value: Value) -> None:
        cp = self.session.checkpointer()
        key = self.keys.bindings + name.encode()
        encoded = encode_value(value)
        if len(key) + len(encoded) > MAX_VALUE:  # many hosts' framing on top of the cap
            raise BindRefused(
                f"{name}: {len(encoded)} bytes once stored, over what the store takes in one value "
                f"({MAX_VALUE}); nothing is bound"
            )
        cp.defer([Put(key, encoded), cp.entry(BindEntry(run, name))])

    async def plan_started(self, plan: Plan, args: Sequence[str], taken: int | None = None) -> None:
        """The plan about to run (kept for a resume); `taken`: the submission it came
        from, which is then consumed in the same transaction (so that a plan is
        either in the inbox or kept to resume, never both, never neither)."""
        cp = self.session.checkpointer()
        self.plan_id = os.urandom(PLAN_ID_BYTES).hex()
        todo = Todo(self.plan_id, plan, tuple(args))
        puts = [Put(self.keys.todo, dumps(todo)), Put(self.keys.todo_next, b"0")]
        if taken is not None:
            puts.append(Put(self.keys.taken, str(taken).encode()))
        cp.defer(puts)

    async def progress(self, done: int) -> None:
        self.session.checkpointer().defer([Put(self.keys.todo_next, str(done).encode())])

    async def line_done(
        self, run: int, ok: bool, seconds: float, sets: dict[str, tuple[str, ...]] | None
    ) -> None:
        cp = self.session.checkpointer()
        puts = [cp.entry(DoneEntry(run, ok, round(seconds, 6)))]
        if sets is not None:
            puts.append(Put(self.keys.sets, dumps(ResultSets(sets))))
        cp.defer(puts)

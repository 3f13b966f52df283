"""The session's control protocol: what processes ask each other through the store
about a session, and the one module that reads and writes those records.

- The inbox (`ctl/in/SEQ`): clients submit lines, numbered by compare-and-set on
  `ctl/in-seq` (`submit`); the owner takes them in order (`next_submission`)
  and records the last it took in `ctl/taken` — in the same transaction as the
  plan the line became (`taken_put`, written by the recorder), so a line is
  either in the inbox or kept to resume, never both, never neither.
- Cancels (`ctl/cancel/ID`) and answers (`ctl/done/ID`) for clients on other
  machines, which have no socket to the owner.
- Viewers (`ctl/viewer/ID`, on each viewer's lease): clients following the
  session through the store; the owner stays while there are any.
- Handover (`ctl/handover`, on the asking client's lease): `dsh attach --take`
  asks the live owner to let its running actions end and go.
- Kill (`kill`): `dsh kill` asks the owner to stop.

A record that cannot be read (damaged, or written by someone else) asks for
nothing: whoever reads it goes on without it (fault report #9).
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from dsh.errors import StoreError
from dsh.session.codec import dumps, loads, readable
from dsh.session.keys import Keys
from dsh.session.records import (
    CorruptRecord,
    Handover,
    KillRequest,
    Submission,
    SubmissionDone,
    Todo,
    Viewer,
)
from dsh.store.base import KV, Compare, Put, Store

#: How many times a submission retries a compare-and-set lost to another client.
SUBMIT_TRIES = 100


# -- the inbox ----------------------------------------------------------------------


async def submit(store: Store, keys: Keys, item: Submission, *, timeout: float) -> int:
    """Put `item` in the session's inbox under the next number; that number. (After
    the last taken too: a damaged `in-seq` must not number a line as taken.)"""
    record = dumps(item)
    for _ in range(SUBMIT_TRIES):  # a race with other clients is lost at most this often
        held = await store.get(keys.in_seq, timeout=timeout)
        taken = await store.get(keys.taken, timeout=timeout)
        seq = max(_number(held), _number(taken)) + 1
        mod = held.mod_revision if held is not None else 0
        result = await store.txn(
            [Compare(keys.in_seq, "mod", "==", mod)],
            [Put(keys.in_seq, b"%d" % seq), Put(keys.submission(seq), record)],
            timeout=timeout,
        )
        if result.succeeded:
            return seq
    raise StoreError("the line could not be submitted: too many clients submitting at once")


def read_submission(held: KV) -> tuple[Submission | None, str]:
    """A submitted line as a client wrote it, or None and why it cannot be one."""
    try:
        item = loads(Submission, held.value, key=held.key)
    except CorruptRecord as exc:
        return None, exc.problem
    if item.first_line < 1:
        return None, "field 'first_line' is not a line number"
    return item, ""


async def next_submission(
    store: Store,
    keys: Keys,
    after: int,
    *,
    timeout: float,
    rejected: Callable[[int, str], Awaitable[None]],
) -> tuple[int, Submission] | None:
    """The oldest submission after number `after` (the last taken). One that cannot
    be read is handed to `rejected` (its number and why) and skipped; those taken
    before are deleted on the way."""
    kvs, _ = await store.range(keys.inbox, timeout=timeout)
    for kv in kvs:
        suffix = kv.key[len(keys.inbox) :]
        seq = int(suffix) if suffix.isdigit() else 0
        if seq > after:
            item, why = read_submission(kv)
            if item is not None:
                return seq, item
            await rejected(seq, why)
            after = seq
            continue
        await store.delete(kv.key, timeout=timeout)  # consumed before (or not ours)
    return None


def taken_put(keys: Keys, seq: int) -> Put:
    """The write that marks submission `seq` taken (in its owner's fenced transaction)."""
    return Put(keys.taken, b"%d" % seq)


async def last_taken(store: Store, keys: Keys, *, timeout: float) -> tuple[int, Submission | None]:
    """The number of the submission taken last, and it (if it is still there and can
    be read): the line a resume may be finishing, whose client waits for it."""
    held = await store.get(keys.taken, timeout=timeout)
    seq = int(held.value) if held is not None and held.value.isdigit() else 0
    last = await store.get(keys.submission(seq), timeout=timeout)
    return seq, read_submission(last)[0] if last is not None else None


async def work_left(store: Store, keys: Keys, *, timeout: float) -> bool:
    """Whether the session has work to do: a plan not run to its end, or a
    submitted line not taken yet (what a client on another machine waits for)."""
    # The taken line first: a line taken after this read has its plan in `todo`
    # (written in the same transaction), which is read after.
    taken = await store.get(keys.taken, timeout=timeout)
    last = await store.get(keys.in_seq, timeout=timeout)
    if _number(last) > _number(taken):
        return True
    held = await store.get(keys.todo, timeout=timeout)
    if held is None:
        return False
    count = len(loads(Todo, held.value, key=held.key).plan.statements)
    return _number(await store.get(keys.todo_next, timeout=timeout)) < count


def _number(held: KV | None) -> int:
    """A counter record's value; 0 when there is none, or it is not a number (a
    damaged or forged one: whoever reads it goes on without it)."""
    return int(held.value) if held is not None and held.value.isdigit() else 0


# -- cancels and answers, for clients on other machines -----------------------------


async def ask_cancel(store: Store, keys: Keys, sid: str, *, timeout: float) -> None:
    await store.put(keys.cancels + sid.encode(), b"", timeout=timeout)


async def take_cancels(store: Store, keys: Keys, cancel: Callable[[str], object], *, timeout: float) -> None:
    """Hand each submission a client asked to cancel to `cancel`, then consume the
    request (in that order: a request is never gone unless it was acted on)."""
    kvs, _ = await store.range(keys.cancels, timeout=timeout)
    for kv in kvs:
        cancel(kv.key[len(keys.cancels) :].decode("utf-8", "replace"))
        await store.delete(kv.key, timeout=timeout)


async def answer(store: Store, keys: Keys, sid: str, done: SubmissionDone, *, timeout: float) -> None:
    """Tell a client on another machine that its submission `sid` is over."""
    await store.put(keys.done + sid.encode(), dumps(done), timeout=timeout)


def read_answer(keys: Keys, key: bytes, value: bytes) -> SubmissionDone | None:
    """An answer seen under `key` (relative to the session's root); None if it cannot
    be read (it says nothing but that the submission is over)."""
    with contextlib.suppress(CorruptRecord):
        return loads(SubmissionDone, value, key=keys.root + key)
    return None


async def forget_answer(store: Store, keys: Keys, sid: str, *, timeout: float) -> None:
    await store.delete(keys.done + sid.encode(), timeout=timeout)


# -- viewers ------------------------------------------------------------------------


async def add_viewer(
    store: Store, keys: Keys, viewer_id: str, viewer: Viewer, *, lease: int, timeout: float
) -> None:
    await store.put(keys.viewers + viewer_id.encode(), dumps(viewer), lease=lease, timeout=timeout)


async def has_viewers(store: Store, keys: Keys, *, timeout: float) -> bool:
    kvs, _ = await store.range(keys.viewers, timeout=timeout)
    return bool(kvs)


# -- handover -----------------------------------------------------------------------


async def ask_handover(store: Store, keys: Keys, asked: Handover, *, lease: int, timeout: float) -> None:
    """Ask the live owner to hand over, on `lease` (the asking client's: a request
    that nobody waits for any more goes away by itself)."""
    await store.put(keys.handover, dumps(asked), lease=lease, timeout=timeout)


async def handover_asked(store: Store, keys: Keys, *, timeout: float) -> Handover | None:
    """The handover asked for, if any (one that cannot be read asks nothing)."""
    return readable(Handover, await store.get(keys.handover, timeout=timeout))


async def handover_pending(store: Store, keys: Keys, *, timeout: float) -> bool:
    """Whether any handover record is there, readable or not (a removal waits)."""
    return await store.get(keys.handover, timeout=timeout) is not None


async def handover_done(store: Store, keys: Keys, *, timeout: float) -> None:
    await store.delete(keys.handover, timeout=timeout)


# -- kill ---------------------------------------------------------------------------


async def ask_kill(store: Store, keys: Keys, asked: KillRequest, *, timeout: float) -> None:
    await store.put(keys.kill, dumps(asked), timeout=timeout)


async def kill_asked(store: Store, keys: Keys, *, timeout: float) -> bool:
    return await store.get(keys.kill, timeout=timeout) is not None


async def kill_done(store: Store, keys: Keys, *, timeout: float) -> None:
    await store.delete(keys.kill, timeout=timeout)

"""The session's control protocol: what processes ask each other through the store
about a session, and the one module that reads and writes those records.

Every request is written by its person under a path of their own,
`TREE/by/PERSON/s/NAME/` (`Keys.control`), outside the session's state: on a
shared etcd each person's role writes theirs only, so nobody can make a request
appear as another's, and the owner attributes each by its path. The owner reads
every writer's requests (`writers`: a person's tree's person, a team's members)
in one snapshot (`Store.ranges`) and
never needs to delete them: it keeps what it consumed in the session's state.

- The inbox (`by/P/…/in/ID`): a client submits a line with one put; the owner
  takes them in the order of their create revisions (`next_submission`) and
  records the revision of the last it took in `ctl/taken-rev`, in the same
  transaction as the plan the line became (`taken_put`, written by the
  recorder): a line is either waiting or kept to resume, never both, never
  neither. One snapshot of every inbox makes that order exact: a line created
  at or before the snapshot's revision is in it.
- Cancels (`by/P/…/cancel/ID`) and answers (`ctl/done/ID`) for clients on other
  machines, which have no socket to the owner.
- Viewers (`by/P/…/viewer/ID`, on each viewer's lease): clients following the
  session through the store; the owner stays while there are any.
- Handover (`by/P/…/handover`, on the asking client's lease): `dsh attach
  --take` asks the live owner to let its running actions end and go; the owner
  says so in `ctl/handing` (its followers watch the session's state).
- Kill (`by/P/…/kill`): `dsh kill` asks the owner to stop; the owner says so in
  `ctl/killed`.
- Signals are the session events' (dsh.session.events), with `ctl/sig-taken/NAME`.

A record that cannot be read (damaged, or written by someone else) asks for
nothing: whoever reads it goes on without it (fault report #9). The requests an
older dsh kept in the session's state are moved to their person's path when an
owner first claims the session (`upgrade`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable

from dsh.session.codec import dumps, loads, readable
from dsh.session.journal import LeaseLost
from dsh.session.keys import TEAM, Keys, Tree, members_key
from dsh.session.records import (
    CorruptRecord,
    Handover,
    KillRequest,
    Owner,
    Submission,
    SubmissionDone,
    Team,
    Todo,
    Viewer,
)
from dsh.store.base import KV, Compare, Delete, Put, Store, StoreDenied

# -- the inbox ----------------------------------------------------------------------


async def submit(store: Store, keys: Keys, item: Submission, *, timeout: float) -> int:
    """Put `item` in this person's inbox of the session; the revision it was made at
    (its place in the order the owner takes lines in)."""
    return await store.put(keys.inbox_of() + item.id.encode(), dumps(item), timeout=timeout)


async def withdraw(store: Store, keys: Keys, sid: str, *, timeout: float) -> None:
    """Delete this person's submission `sid` (once it is answered: the owner took it)."""
    await store.delete(keys.inbox_of() + sid.encode(), timeout=timeout)


def read_submission(held: KV) -> tuple[Submission | None, str]:
    """A submitted line as a client wrote it, or None and why it cannot be one."""
    try:
        item = loads(Submission, held.value, key=held.key)
    except CorruptRecord as exc:
        return None, exc.problem
    if item.first_line < 1:
        return None, "field 'first_line' is not a line number"
    return item, ""


#: A team's members are read again after this long (a member removed is ignored
#: from then on: etcd refuses their writes at once anyway).
MEMBERS_TTL = 5.0
_members: dict[tuple[int, bytes], tuple[float, tuple[str, ...]]] = {}


async def writers(store: Store, tree: Tree, *, timeout: float) -> tuple[str, ...]:
    """Whose requests of the session are read: in a person's tree, that person's
    (anything else there is nobody's); in a team's, its members' (as its record says)."""
    if tree.kind != TEAM:
        return (tree.name,)
    cached = _members.get((id(store), tree.prefix))
    now = time.monotonic()
    if cached is not None and now - cached[0] < MEMBERS_TTL:
        return cached[1]
    team = readable(Team, await store.get(members_key(tree.name), timeout=timeout))
    members = team.members if team is not None else ()
    _members[(id(store), tree.prefix)] = (now, members)
    return members


async def _each(
    store: Store, keys: Keys, where: Callable[[str], bytes], *, timeout: float
) -> list[tuple[str, KV]]:
    """Every writer's records under `where(writer)`, read in one snapshot, each with
    its writer, oldest first (by create revision; then by key)."""
    people = await writers(store, keys.tree, timeout=timeout)
    found, _ = await store.ranges([where(w) for w in people], timeout=timeout)
    held = [(writer, kv) for writer, kvs in zip(people, found, strict=True) for kv in kvs]
    return sorted(held, key=lambda pair: (pair[1].create_revision, pair[1].key))


async def next_submission(
    store: Store,
    keys: Keys,
    after: int,
    *,
    timeout: float,
    rejected: Callable[[int, str, str], Awaitable[None]],
) -> tuple[int, str, Submission] | None:
    """The oldest submission made after revision `after` (the last taken): its
    revision, its person, it. One that cannot be read is handed to `rejected`
    (its revision, its person, why) and skipped; those taken before are deleted
    on the way, where this process may."""
    for person, kv in await _each(store, keys, keys.inbox_of, timeout=timeout):
        if kv.create_revision > after:
            item, why = read_submission(kv)
            if item is not None:
                return kv.create_revision, person, item
            await rejected(kv.create_revision, person, why)
            after = kv.create_revision
            continue
        with contextlib.suppress(StoreDenied):  # another person's: theirs to delete
            await store.delete(kv.key, timeout=timeout)  # consumed before
    return None


def taken_put(keys: Keys, revision: int) -> Put:
    """The write that marks the submission made at `revision` taken (in its owner's
    fenced transaction)."""
    return Put(keys.taken, b"%d" % revision)


async def last_taken(store: Store, keys: Keys, *, timeout: float) -> tuple[int, Submission | None]:
    """The revision of the submission taken last, and it (if it is still there and
    can be read): the line a resume may be finishing, whose client waits for it."""
    revision = _number(await store.get(keys.taken, timeout=timeout))
    for _, kv in await _each(store, keys, keys.inbox_of, timeout=timeout):
        if kv.create_revision == revision:
            return revision, read_submission(kv)[0]
    return revision, None


async def work_left(store: Store, keys: Keys, *, timeout: float) -> bool:
    """Whether the session has work to do: a plan not run to its end, or a
    submitted line not taken yet (what a client on another machine waits for)."""
    # The taken line first: a line taken after this read has its plan in `todo`
    # (written in the same transaction), which is read after.
    taken = _number(await store.get(keys.taken, timeout=timeout))
    if any(kv.create_revision > taken for _, kv in await _each(store, keys, keys.inbox_of, timeout=timeout)):
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


async def ask_cancel(store: Store, keys: Keys, sid: str, machine: str, *, timeout: float) -> None:
    """Ask the owner to cancel submission `sid` (the value: the asking machine)."""
    await store.put(keys.cancels_of() + sid.encode(), machine.encode(), timeout=timeout)


async def take_cancels(
    store: Store, keys: Keys, cancel: Callable[[str, str, str], object], *, timeout: float
) -> None:
    """Hand each submission a client asked to cancel to `cancel` (its id, who asked,
    from which machine), once: the newest request handled is marked in the session's
    state (`ctl/seen-cancel`), so one another person left behind (theirs to delete;
    a "*" above all) cancels nothing later. Requests of this person's go."""
    held = await _each(store, keys, keys.cancels_of, timeout=timeout)
    if not held:  # the poll's common case: nothing asked, nothing more read
        return
    seen = _number(await store.get(keys.seen_cancel, timeout=timeout))
    newest = seen
    for person, kv in held:
        if kv.mod_revision > seen:
            sid = kv.key[len(keys.cancels_of(person)) :].decode("utf-8", "replace")
            cancel(sid, person, kv.value.decode("utf-8", "replace"))
            newest = max(newest, kv.mod_revision)
        if person == keys.me:
            await store.delete(kv.key, timeout=timeout)
    if newest > seen:
        await store.put(keys.seen_cancel, b"%d" % newest, timeout=timeout)


async def cancel_done(store: Store, keys: Keys, sid: str, *, timeout: float) -> None:
    """This person's cancel request for `sid`, gone (its submission is over)."""
    await store.delete(keys.cancels_of() + sid.encode(), timeout=timeout)


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
    await store.put(keys.viewers_of() + viewer_id.encode(), dumps(viewer), lease=lease, timeout=timeout)


async def has_viewers(store: Store, keys: Keys, *, timeout: float) -> bool:
    return bool(await _each(store, keys, keys.viewers_of, timeout=timeout))


# -- handover -----------------------------------------------------------------------


async def ask_handover(store: Store, keys: Keys, asked: Handover, *, lease: int, timeout: float) -> None:
    """Ask the live owner to hand over, on `lease` (the asking client's: a request
    that nobody waits for any more goes away by itself)."""
    await store.put(keys.handover_of(), dumps(asked), lease=lease, timeout=timeout)


async def handover_asked(store: Store, keys: Keys, *, timeout: float) -> tuple[str, Handover] | None:
    """The first handover asked for, and who asked (one that cannot be read asks nothing)."""
    for person, kv in await _each(store, keys, keys.handover_of, timeout=timeout):
        asked = readable(Handover, kv)
        if asked is not None:
            return person, asked
    return None


async def handover_pending(store: Store, keys: Keys, *, timeout: float) -> bool:
    """Whether any handover is asked for or under way, readable or not (a removal waits)."""
    if await store.get(keys.handing, timeout=timeout) is not None:
        return True
    return bool(await _each(store, keys, keys.handover_of, timeout=timeout))


async def handing_over(store: Store, keys: Keys, owner: Owner, *, timeout: float) -> None:
    """The owner says it hands the session over (its own record: who hands it over)."""
    await store.put(keys.handing, dumps(owner), timeout=timeout)


async def handed_by(store: Store, keys: Keys, *, timeout: float) -> Owner | None:
    """The owner that said it hands the session over, if one did (and it can be read)."""
    return readable(Owner, await store.get(keys.handing, timeout=timeout))


async def handover_done(store: Store, keys: Keys, *, timeout: float) -> None:
    """The new owner: its request, and the old owner's word, gone."""
    await store.delete(keys.handover_of(), timeout=timeout)
    await store.delete(keys.handing, timeout=timeout)


# -- kill ---------------------------------------------------------------------------


async def ask_kill(store: Store, keys: Keys, asked: KillRequest, *, timeout: float) -> None:
    await store.put(keys.kill_of(), dumps(asked), timeout=timeout)


async def kill_asked(store: Store, keys: Keys, *, since: int = 0, timeout: float) -> bool:
    """Whether a kill was asked after revision `since` (an owner's claim: a request
    left behind from before, by a teammate's kill that gave up, is not for it)."""
    return any(kv.mod_revision > since for _, kv in await _each(store, keys, keys.kill_of, timeout=timeout))


async def kill_done(store: Store, keys: Keys, *, timeout: float) -> None:
    """The owner stopped for a kill: it says so (its followers end), and the
    requests go (where this process may delete them; the asker deletes its own)."""
    await store.put(keys.killed, b"", timeout=timeout)
    for person in await writers(store, keys.tree, timeout=timeout):
        with contextlib.suppress(StoreDenied):
            await store.delete(keys.kill_of(person), timeout=timeout)
    await store.delete(keys.killed, timeout=timeout)


async def withdraw_kill(store: Store, keys: Keys, *, timeout: float) -> None:
    await store.delete(keys.kill_of(), timeout=timeout)


# -- what an older dsh kept ---------------------------------------------------------

#: The control records a dsh before issue 21 kept in the session's state: prefixes,
#: then single keys.
_LEGACY_UNDER = (b"ctl/in/", b"ctl/cancel/", b"ctl/viewer/", b"sig/")
_LEGACY_KEYS = (b"ctl/in-seq", b"ctl/taken", b"ctl/handover", b"kill")


async def upgrade(store: Store, keys: Keys, fence: Compare, *, timeout: float) -> int:
    """Move the requests an older dsh kept in the session's state to this person's
    path (lines not taken yet, in their order; cancels; a kill; signals), as the
    session's new owner (each write under its `fence`); the old keys go. Requests
    on a lease (viewers, a handover) were a live process's: dropped. The number
    of requests moved; LeaseLost if the fence failed."""
    root = keys.root
    found, _ = await store.ranges([root + p for p in (*_LEGACY_UNDER, *_LEGACY_KEYS)], timeout=timeout)
    inbox, cancels, viewers, signals = found[: len(_LEGACY_UNDER)]
    single = {
        name: next((kv for kv in kvs if kv.key == root + name), None)
        for name, kvs in zip(_LEGACY_KEYS, found[len(_LEGACY_UNDER) :], strict=True)
    }
    old = [*inbox, *cancels, *viewers, *signals, *(kv for kv in single.values() if kv is not None)]
    if not old:
        return 0
    if keys.tree.kind == TEAM or keys.tree.name != keys.me:
        # Only a person's own tree held an older dsh's requests, all theirs; in a team's,
        # they are a member's writing by hand, whose they cannot tell: dropped, not run.
        for chunk in [old[i : i + 100] for i in range(0, len(old), 100)]:
            result = await store.txn([fence], [Delete(kv.key) for kv in chunk], timeout=timeout)
            if not result.succeeded:
                raise LeaseLost("the session's lease was lost while older requests were dropped")
        return 0
    done = _number(single[b"ctl/taken"])
    moved: list[Put] = []
    for kv in inbox:  # numbered: ctl/in/00000003
        number = kv.key[len(root + b"ctl/in/") :]
        item = readable(Submission, kv)
        if number.isdigit() and int(number) > done and item is not None:
            moved.append(Put(keys.inbox_of() + item.id.encode(), kv.value))
    moved += [Put(keys.cancels_of() + kv.key[len(root + b"ctl/cancel/") :], b"") for kv in cancels]
    if single[b"kill"] is not None:
        moved.append(Put(keys.kill_of(), single[b"kill"].value))
    moved += [Put(keys.control() + kv.key[len(root) :], kv.value) for kv in signals]
    gone = [Delete(kv.key) for kv in old]
    # One put each: each line is made at a revision of its own, in the old order.
    for ops in [[put] for put in moved] + [gone[i : i + 100] for i in range(0, len(gone), 100)]:
        result = await store.txn([fence], ops, timeout=timeout)
        if not result.succeeded:
            raise LeaseLost("the session's lease was lost while its older requests were moved")
    return len(moved)

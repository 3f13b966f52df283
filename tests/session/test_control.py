"""The session's control protocol (dsh.session.control) on every store: the inbox
under racing submitters, taking a line with its plan in one transaction, and
the round trips of cancels, answers, viewers, handovers and kills."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

from dsh.plan import Plan
from dsh.session import control
from dsh.session.codec import dumps
from dsh.session.keys import Keys, user_tree
from dsh.session.lease import Session
from dsh.session.recorder import SessionRecorder
from dsh.session.records import Handover, KillRequest, Submission, SubmissionDone, Viewer
from dsh.store.base import Store
from tests.helpers.lang import compile_text
from tests.helpers.storekinds import StoreKind

T = 10.0
ROOT = Path(__file__).parent.parent.parent
KEYS = Keys(user_tree("alice"), "s1")


def line(n: int, by: str = "m1") -> Submission:
    return Submission(f"id{n}", f"@h{n} true", "<stdin>", 1, by)


async def test_two_submitters_racing_lose_no_line_and_are_taken_in_the_order_made(kind: StoreKind) -> None:
    store = kind.open()
    await store.get(b"init", timeout=T)  # the store exists before the submitters open it
    count = 15
    submitters = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.helpers.submitter",
                kind.spec,
                KEYS.tree.name,
                KEYS.name,
                me,
                str(count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for me in ("p0", "p1")
    ]
    try:
        for submitter in submitters:
            assert submitter.stdout is not None and submitter.stdout.readline().strip() == "ready"
        for submitter in submitters:
            assert submitter.stdin is not None
            submitter.stdin.write("go\n")
            submitter.stdin.flush()
        outputs = [submitter.communicate(timeout=60)[0] for submitter in submitters]
    finally:
        for submitter in submitters:
            submitter.kill()
    got = [[int(n) for n in out.split()] for out in outputs]
    assert all(len(numbers) == count and numbers == sorted(numbers) for numbers in got), got
    assert len(set(got[0] + got[1])) == 2 * count  # each line made at a revision of its own
    # Every line is taken, once, in the order of those revisions.
    seen: dict[int, str] = {}
    after = 0
    while (
        found := await control.next_submission(store, KEYS, after, timeout=T, rejected=_never)
    ) is not None:
        after, person, item = found
        assert person == "alice"
        seen[after] = item.id
    assert list(seen) == sorted(got[0] + got[1])
    for me, numbers in zip(("p0", "p1"), got, strict=True):
        assert [seen[n] for n in numbers] == [f"{me}-{i}" for i in range(count)]


async def _never(revision: int, person: str, why: str) -> None:
    raise AssertionError(f"submission at {revision} of {person} rejected: {why}")


async def test_an_unreadable_submission_is_rejected_and_skipped_and_taken_ones_go(store: Store) -> None:
    first = await control.submit(store, KEYS, line(1), timeout=T)
    forged = await store.put(KEYS.inbox_of() + b"zz", b'{"kind": "submission", "id": 7}', timeout=T)
    second = await control.submit(store, KEYS, line(2), timeout=T)
    rejected: list[tuple[int, str, str]] = []

    async def reject(revision: int, person: str, why: str) -> None:
        rejected.append((revision, person, why))

    found = await control.next_submission(store, KEYS, first, timeout=T, rejected=reject)
    assert found is not None and found[0] == second and found[2].id == "id2"
    assert [(r, p) for r, p, _ in rejected] == [(forged, "alice")] and rejected[0][2]
    assert await store.get(KEYS.inbox_of() + b"id1", timeout=T) is None  # taken before: deleted
    bad = Submission("x", "true", "<stdin>", 0, "m1")
    late = await store.put(KEYS.inbox_of() + b"x", dumps(bad), timeout=T)
    found = await control.next_submission(store, KEYS, second, timeout=T, rejected=reject)
    assert found is None and rejected[-1] == (late, "alice", "field 'first_line' is not a line number")


async def test_requests_of_other_people_in_a_persons_tree_are_nobodys(store: Store) -> None:
    """In alice's tree only alice's path is read: a request put under another name
    there (by root, or before roles) asks nothing."""
    await store.put(KEYS.inbox_of("mallory") + b"m", dumps(line(9)), timeout=T)
    await store.put(KEYS.kill_of("mallory"), dumps(KillRequest("m9")), timeout=T)
    assert await control.next_submission(store, KEYS, 0, timeout=T, rejected=_never) is None
    assert not await control.kill_asked(store, KEYS, timeout=T)
    assert not await control.work_left(store, KEYS, timeout=T)


async def test_a_line_is_taken_with_its_plan_in_one_transaction(store: Store) -> None:
    """A submission is either waiting or kept to resume, never both, never neither."""
    seq = await control.submit(store, KEYS, line(1), timeout=T)
    assert await control.work_left(store, KEYS, timeout=T)  # submitted, not taken
    session = Session(store, KEYS, "m1", lease_ttl=5.0, timeout=T)
    owned = await session.claim()
    try:
        recorder = SessionRecorder(owned)
        plan: Plan = compile_text("@h1 true\n", groups={}, bindings={})
        await recorder.plan_started(plan, (), taken=seq)
        await owned.checkpointer().flush()
        todo = await store.get(KEYS.todo, timeout=T)
        taken = await store.get(KEYS.taken, timeout=T)
        assert todo is not None and taken is not None
        assert todo.mod_revision == taken.mod_revision  # one transaction
        assert await control.last_taken(store, KEYS, timeout=T) == (seq, line(1))
        assert await control.work_left(store, KEYS, timeout=T)  # taken, its plan not run
        await recorder.progress(1)
        await owned.checkpointer().flush()
        assert not await control.work_left(store, KEYS, timeout=T)
    finally:
        await owned.release()


async def test_cancels_answers_viewers_handovers_and_kills_round_trip(store: Store) -> None:
    await control.ask_cancel(store, KEYS, "id1", "m2", timeout=T)
    await control.ask_cancel(store, KEYS, "id2", "m3", timeout=T)
    taken: list[tuple[str, str, str]] = []

    def took(sid: str, person: str, machine: str) -> None:
        taken.append((sid, person, machine))

    await control.take_cancels(store, KEYS, took, timeout=T)
    assert taken == [("id1", "alice", "m2"), ("id2", "alice", "m3")]
    await control.take_cancels(store, KEYS, took, timeout=T)
    assert len(taken) == 2  # each request consumed
    await control.ask_cancel(store, KEYS, "id3", "m2", timeout=T)

    def refuse(sid: str, person: str, machine: str) -> None:
        raise RuntimeError("not acted on")

    with contextlib.suppress(RuntimeError):
        await control.take_cancels(store, KEYS, refuse, timeout=T)
    await control.take_cancels(store, KEYS, took, timeout=T)
    assert taken[-1][0] == "id3"  # a request not acted on stays

    await control.answer(store, KEYS, "id1", SubmissionDone(0, ""), timeout=T)
    held = await store.get(KEYS.done + b"id1", timeout=T)
    assert held is not None
    relative = held.key[len(KEYS.root) :]
    assert control.read_answer(KEYS, relative, held.value) == SubmissionDone(0, "")
    assert control.read_answer(KEYS, relative, b"{") is None  # unreadable: only "it is over"
    await control.forget_answer(store, KEYS, "id1", timeout=T)
    assert await store.get(KEYS.done + b"id1", timeout=T) is None

    assert not await control.has_viewers(store, KEYS, timeout=T)
    lease = await store.grant(5.0, timeout=T)
    await control.add_viewer(store, KEYS, "v1", Viewer("m2", 42), lease=lease.id, timeout=T)
    assert await control.has_viewers(store, KEYS, timeout=T)
    await store.revoke(lease.id, timeout=T)
    assert not await control.has_viewers(store, KEYS, timeout=T)  # gone with its lease

    asked = Handover("m2", 43, 1.5)
    lease = await store.grant(5.0, timeout=T)
    await control.ask_handover(store, KEYS, asked, lease=lease.id, timeout=T)
    assert await control.handover_asked(store, KEYS, timeout=T) == ("alice", asked)
    await store.put(KEYS.handover_of(), b"forged", timeout=T)
    assert await control.handover_asked(store, KEYS, timeout=T) is None  # asks nothing
    assert await control.handover_pending(store, KEYS, timeout=T)  # but a removal waits
    await control.handover_done(store, KEYS, timeout=T)
    assert not await control.handover_pending(store, KEYS, timeout=T)
    await control.handing_over(store, KEYS, asked, timeout=T)  # the owner says it hands over
    assert await control.handover_pending(store, KEYS, timeout=T)
    await control.handover_done(store, KEYS, timeout=T)
    assert not await control.handover_pending(store, KEYS, timeout=T)

    assert not await control.kill_asked(store, KEYS, timeout=T)
    await control.ask_kill(store, KEYS, KillRequest("m2"), timeout=T)
    assert await control.kill_asked(store, KEYS, timeout=T)
    await control.kill_done(store, KEYS, timeout=T)
    assert not await control.kill_asked(store, KEYS, timeout=T)
    assert await store.get(KEYS.killed, timeout=T) is None  # said, and gone


async def test_forged_counters_say_nothing_and_raise_nothing(store: Store) -> None:
    """A damaged or forged `ctl/taken-rev` or `todo-next` reads as 0: a client
    waiting for the session's work goes on (it used to raise ValueError)."""
    for key in (KEYS.taken, KEYS.todo_next):
        await store.put(key, b"not a number", timeout=T)
    assert await control.work_left(store, KEYS, timeout=T) is False
    assert await control.last_taken(store, KEYS, timeout=T) == (0, None)
    await control.submit(store, KEYS, line(1), timeout=T)
    assert await control.work_left(store, KEYS, timeout=T) is True


async def test_an_older_dshs_requests_are_moved_to_the_persons_path_on_claim(store: Store) -> None:
    """Lines not taken yet keep their order; cancels, a kill and signals move; the
    older keys go, and a line taken before stays taken."""
    root = KEYS.root
    for n in (1, 2, 3):
        await store.put(root + b"ctl/in/%08d" % n, dumps(line(n)), timeout=T)
    await store.put(root + b"ctl/in-seq", b"3", timeout=T)
    await store.put(root + b"ctl/taken", b"1", timeout=T)
    await store.put(root + b"ctl/cancel/id9", b"", timeout=T)
    await store.put(root + b"kill", dumps(KillRequest("m2")), timeout=T)
    await store.put(root + b"sig/go/00000001-aa", b"now", timeout=T)
    session = Session(store, KEYS, "m1", lease_ttl=5.0, timeout=T)
    owned = await session.claim()
    try:
        assert await control.upgrade(store, KEYS, owned.checkpointer().fence, timeout=T) == 5
        assert await control.upgrade(store, KEYS, owned.checkpointer().fence, timeout=T) == 0  # once
    finally:
        await owned.release()
    left, _ = await store.range(root + b"ctl/in", timeout=T)
    assert left == [] and await store.get(root + b"kill", timeout=T) is None
    order = []
    after = 0
    while (
        found := await control.next_submission(store, KEYS, after, timeout=T, rejected=_never)
    ) is not None:
        after = found[0]
        order.append(found[2].id)
    assert order == ["id2", "id3"]  # id1 was taken before
    assert await control.kill_asked(store, KEYS, timeout=T)
    assert await store.get(KEYS.signals_of("go") + b"00000001-aa", timeout=T) is not None

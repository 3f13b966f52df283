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


async def test_two_submitters_racing_get_every_number_once_and_lose_no_line(kind: StoreKind) -> None:
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
    assert sorted(got[0] + got[1]) == list(range(1, 2 * count + 1))  # each number given once
    # Every line is in the inbox under the number its submitter was told.
    seen: dict[int, str] = {}
    after = 0
    while (
        found := await control.next_submission(store, KEYS, after, timeout=T, rejected=_never)
    ) is not None:
        after, item = found
        seen[after] = item.id
    for me, numbers in zip(("p0", "p1"), got, strict=True):
        assert [seen[n] for n in numbers] == [f"{me}-{i}" for i in range(count)]


async def _never(seq: int, why: str) -> None:
    raise AssertionError(f"submission {seq} rejected: {why}")


async def test_an_unreadable_submission_is_rejected_and_skipped_and_taken_ones_go(store: Store) -> None:
    for n in (1, 3):
        await control.submit(store, KEYS, line(n), timeout=T)
    await control.submit(store, KEYS, line(2), timeout=T)  # number 3: the order is the number's
    await store.put(KEYS.submission(2), b'{"kind": "submission", "id": 7}', timeout=T)  # forged
    rejected: list[tuple[int, str]] = []

    async def reject(seq: int, why: str) -> None:
        rejected.append((seq, why))

    found = await control.next_submission(store, KEYS, 1, timeout=T, rejected=reject)
    assert found is not None and found[0] == 3 and found[1].id == "id2"
    assert [seq for seq, _ in rejected] == [2] and rejected[0][1]
    assert await store.get(KEYS.submission(1), timeout=T) is None  # taken before: deleted
    bad = Submission("x", "true", "<stdin>", 0, "m1")
    await store.put(KEYS.submission(9), dumps(bad), timeout=T)
    found = await control.next_submission(store, KEYS, 3, timeout=T, rejected=reject)
    assert found is None and rejected[-1] == (9, "field 'first_line' is not a line number")


async def test_a_line_is_taken_with_its_plan_in_one_transaction(store: Store) -> None:
    """A submission is either in the inbox or kept to resume, never both, never neither."""
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
    await control.ask_cancel(store, KEYS, "id1", timeout=T)
    await control.ask_cancel(store, KEYS, "id2", timeout=T)
    taken: list[str] = []
    await control.take_cancels(store, KEYS, taken.append, timeout=T)
    assert taken == ["id1", "id2"]
    await control.take_cancels(store, KEYS, taken.append, timeout=T)
    assert taken == ["id1", "id2"]  # each request consumed
    await control.ask_cancel(store, KEYS, "id3", timeout=T)

    def refuse(sid: str) -> None:
        raise RuntimeError("not acted on")

    with contextlib.suppress(RuntimeError):
        await control.take_cancels(store, KEYS, refuse, timeout=T)
    await control.take_cancels(store, KEYS, taken.append, timeout=T)
    assert taken[-1] == "id3"  # a request not acted on stays

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
    assert await control.handover_asked(store, KEYS, timeout=T) == asked
    await store.put(KEYS.handover, b"forged", timeout=T)
    assert await control.handover_asked(store, KEYS, timeout=T) is None  # asks nothing
    assert await control.handover_pending(store, KEYS, timeout=T)  # but a removal waits
    await control.handover_done(store, KEYS, timeout=T)
    assert not await control.handover_pending(store, KEYS, timeout=T)

    assert not await control.kill_asked(store, KEYS, timeout=T)
    await control.ask_kill(store, KEYS, KillRequest("m2"), timeout=T)
    assert await control.kill_asked(store, KEYS, timeout=T)
    await control.kill_done(store, KEYS, timeout=T)
    assert not await control.kill_asked(store, KEYS, timeout=T)


async def test_forged_counters_say_nothing_and_raise_nothing(store: Store) -> None:
    """A damaged or forged `ctl/in-seq`, `ctl/taken` or `todo-next` reads as 0: a
    client waiting for the session's work goes on (it used to raise ValueError)."""
    for key in (KEYS.in_seq, KEYS.taken, KEYS.todo_next):
        await store.put(key, b"not a number", timeout=T)
    assert await control.work_left(store, KEYS, timeout=T) is False
    assert await control.last_taken(store, KEYS, timeout=T) == (0, None)
    await control.submit(store, KEYS, line(1), timeout=T)  # numbered after "nothing": 1
    assert await control.work_left(store, KEYS, timeout=T) is True

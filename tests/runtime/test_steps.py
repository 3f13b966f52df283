"""Steps (dsh.runtime.steps): the one layer that decides, per step id, between
"recorded", "take up" and "start".

For each state a previous owner may have stored of a step (nothing, an intent,
a result, a deadline) and each answer the host's spool may give when probed,
`TakenUp` must do what the design says — and exactly what `LiveSteps` does
when nothing is stored. The host is a `FakeRemote` (it says what it was asked
and answers as told: the spool's real answers are tested in tests/remote and
the crash tests), the recorder lists its calls, and the wiring is a real
Executor on a fake clock. The last test runs a line on a real session, then
again from that session's own records: nothing runs twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

from dsh import plan as p
from dsh.lang.compiler import Context, compile_source
from dsh.lang.source import Source
from dsh.plan import Outcome
from dsh.remote.base import Exec, Identity, RemoteUnreachable
from dsh.runtime.capture import Capture
from dsh.runtime.context import Resume, StepId
from dsh.runtime.executor import Executor
from dsh.runtime.steps import LiveSteps, SharedAwaits, Steps, TakenUp
from dsh.session import history
from dsh.session.codec import as_dict
from dsh.session.keys import Keys, user_tree
from dsh.session.lease import Session
from dsh.session.recorder import SessionRecorder
from dsh.session.records import ActAwait, ActDone, ActIntent, ActSleep
from dsh.store.sqlite import SqliteStore
from tests.helpers.reporter import Recorder
from tests.helpers.runtime import DictEvents, FakeClock, FakeRemote, ListRecorder

STEP = StepId(7, 1, 1, "h1")
LOCAL = StepId(7, 1, 1, None)
WALL = 1_700_000_000.0  # FakeClock's wall clock at its start
WHO = Identity("u@h1:22", "SHA256:one")


def wiring(recorder: ListRecorder, *, machine: str = "m1", events: DictEvents | None = None) -> Executor:
    """A real executor as the steps' wiring: its clock, recorder, events, machine."""
    ex = Executor(reporter=Recorder(), local=FakeRemote("local"), clock=FakeClock(), recorder=recorder)
    ex.machine = machine
    if events is not None:
        ex.events = events
    return ex


def taken(stored: Mapping[tuple[str, str | None], object], live: LiveSteps) -> TakenUp:
    actions = {key: as_dict(record) for key, record in stored.items()}
    return TakenUp(Resume(7, actions), live)


def intent(
    step: StepId = STEP, *, machine: str = "m1", at: float | None = WALL - 4, where: Identity | None = None
):  # type: ignore[no-untyped-def]
    return ActIntent(step.action, step.host, "true", 10.0, machine, at, where)


def done(step: StepId = STEP, outcome: str = "ok", exit: int | None = 0, out: str = "was\n"):  # type: ignore[no-untyped-def]
    return ActDone(step.action, step.host, outcome, exit, 2.5, "", out, "", "m1")


def capture() -> tuple[Capture, list[tuple[str, bytes]]]:
    shown: list[tuple[str, bytes]] = []
    return Capture(lambda stream, data: shown.append((stream, data))), shown


async def command(
    steps: Steps, remote: FakeRemote, step: StepId = STEP
) -> tuple[Exec, list[tuple[str, bytes]]]:
    output, shown = capture()
    ended = await steps.command(step, "true", timeout=10.0, remote=remote, output=output)
    return ended, shown


# -- commands -------------------------------------------------------------------------


async def test_nothing_stored_starts_the_action_as_live_steps_do() -> None:
    ran = []
    for make in (lambda live: live, lambda live: taken({}, live)):
        rec, remote = ListRecorder(), FakeRemote(output=b"new\n")
        ended, shown = await command(make(LiveSteps(wiring(rec))), remote)
        ran.append((ended, shown, [c[0] for c in remote.calls], rec.kinds(), rec.results()))
    assert ran[0] == ran[1]
    ended, shown, calls, journal, (result,) = ran[0]
    assert ended.outcome == Outcome.OK and shown == [("stdout", b"new\n")]
    assert calls == ["identity", "run"]  # who the host is, then the launch
    assert journal == ["intent", "result"]  # checkpoint before effect, then its end
    assert (result.action, result.host, result.outcome, result.out) == ("7.1.1", "h1", "ok", b"new\n")


@pytest.mark.parametrize(("outcome", "exit"), [("ok", 0), ("failed", 3), ("timeout", None)])
async def test_a_result_stored_is_the_steps_end_and_nothing_runs(outcome: str, exit: int | None) -> None:
    rec, remote = ListRecorder(), FakeRemote()
    steps = taken({("7.1.1", "h1"): done(outcome=outcome, exit=exit)}, LiveSteps(wiring(rec)))
    ended, shown = await command(steps, remote)
    assert (ended.outcome, ended.exit_status, ended.seconds) == (outcome, exit, 2.5)
    assert shown == [("stdout", b"was\n"), ("stderr", b"")]  # its output's tail, shown again
    assert remote.calls == [] and rec.calls == []  # not run, not journaled again


@pytest.mark.parametrize(
    ("answer", "outcome", "calls"),
    [
        ("none", "ok", ["probe", "run"]),  # never claimed: started now (the claim keeps it once)
        ("alive", "ok", ["probe", "follow"]),  # still running: followed
        ("status 0", "ok", ["probe", "follow"]),  # ended: its status and output, by following
        ("status timeout", "ok", ["probe", "follow"]),
        ("lost", "lost", ["probe"]),  # claimed, and nobody left to report its end
        (RemoteUnreachable("unreachable", "no route"), "lost", ["probe"]),  # the spool cannot be asked
    ],
)
async def test_an_intent_stored_is_taken_up_by_what_the_spool_says(
    answer: str | RemoteUnreachable, outcome: str, calls: list[str]
) -> None:
    rec, remote = ListRecorder(), FakeRemote(answer=answer)
    ended, _ = await command(taken({("7.1.1", "h1"): intent()}, LiveSteps(wiring(rec))), remote)
    assert ended.outcome == outcome
    assert [c[0] for c in remote.calls] == calls
    assert rec.kinds() == ["taking_up", "result"]  # never an intent again
    assert rec.calls[0][1] == ("7.1.1", "h1", 6.0)  # what is left of its timeout (10 s, started 4 s ago)
    assert all(timeout == 6.0 for kind, _, timeout in remote.calls if kind in ("run", "follow"))
    if outcome == "lost":
        assert "launched before" in ended.message


async def test_a_taken_up_action_has_at_least_a_second_left() -> None:
    rec, remote = ListRecorder(), FakeRemote(answer="alive")
    await command(taken({("7.1.1", "h1"): intent(at=WALL - 100)}, LiveSteps(wiring(rec))), remote)
    assert remote.calls[-1] == ("follow", "7.1.1", 1.0)


async def test_a_local_action_another_machine_launched_is_lost_unasked() -> None:
    rec, local = ListRecorder(), FakeRemote("local")
    steps = taken({("7.1.1", None): intent(LOCAL, machine="m2")}, LiveSteps(wiring(rec, machine="m1")))
    ended, _ = await command(steps, local, LOCAL)
    assert ended.outcome == Outcome.LOST and "machine m2" in ended.message
    assert local.calls == [] and rec.kinds() == ["result"]
    rec, local = ListRecorder(), FakeRemote("local", answer="alive")  # this machine's own: asked
    steps = taken({("7.1.1", None): intent(LOCAL, machine="m1")}, LiveSteps(wiring(rec, machine="m1")))
    ended, _ = await command(steps, local, LOCAL)
    assert [c[0] for c in local.calls] == ["probe", "follow"]


@pytest.mark.parametrize(
    ("here", "why"),
    [
        (Identity("v@h1:22", "SHA256:one"), "h1 is u@h1:22 in this session; here it is v@h1:22"),
        (Identity("u@h1:22", "SHA256:two"), "h1's host key was SHA256:one in this session"),
        (RemoteUnreachable("unreachable", "no route"), "its host cannot be reached: no route"),
    ],
)
async def test_a_host_reached_elsewhere_is_neither_probed_nor_started(
    here: Identity | RemoteUnreachable, why: str
) -> None:
    rec, remote = ListRecorder(), FakeRemote(who=here)
    ended, _ = await command(taken({("7.1.1", "h1"): intent(where=WHO)}, LiveSteps(wiring(rec))), remote)
    assert ended.outcome == Outcome.LOST and why in ended.message
    assert [c[0] for c in remote.calls] == ["identity"]
    rec, remote = ListRecorder(), FakeRemote(who=WHO, answer="alive")  # the same host: probed
    await command(taken({("7.1.1", "h1"): intent(where=WHO)}, LiveSteps(wiring(rec))), remote)
    assert [c[0] for c in remote.calls] == ["identity", "probe", "follow"]


async def test_a_host_that_cannot_be_reached_starts_nothing() -> None:
    rec, remote = ListRecorder(), FakeRemote(who=RemoteUnreachable("refused", "host key not trusted"))
    ended, _ = await command(LiveSteps(wiring(rec)), remote)
    assert (ended.outcome, ended.message) == ("refused", "host key not trusted")
    assert [c[0] for c in remote.calls] == ["identity"] and rec.kinds() == ["result"]  # no intent


async def test_a_cancelled_action_is_journaled_cancelled_then_the_cancel_goes_on() -> None:
    class Hangs(FakeRemote):
        async def run(self, command, *, spot, timeout, output, env=None, stdin=None, told=None):  # type: ignore[no-untyped-def]
            output("stdout", b"partial\n")
            await asyncio.Event().wait()

    rec = ListRecorder()
    task = asyncio.ensure_future(command(LiveSteps(wiring(rec)), Hangs()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rec.kinds() == ["intent", "result"]
    (result,) = rec.results()
    assert (result.outcome, result.message, result.out) == (Outcome.CANCELLED, "", b"partial\n")


# -- waits: backoff, sleep, await ---------------------------------------------------------


@pytest.mark.parametrize("stored", [False, True])
async def test_the_wait_before_an_attempt_is_over_once_the_attempt_is_stored(stored: bool) -> None:
    ex = wiring(ListRecorder())
    step = StepId(7, 1, 2, "h1")
    await taken({("7.1.2", "h1"): intent(step)} if stored else {}, LiveSteps(ex)).backoff(step, 4.0)
    assert ex.clock.slept == ([] if stored else [4.0])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("deadline", "slept", "journal"),
    [
        (None, [30.0], ["sleep"]),  # nothing stored: a new durable timer, journaled
        (WALL + 12, [12.0], []),  # stored: what is left of it
        (WALL - 5, [0.0], []),  # over already
    ],
)
async def test_a_sleep_keeps_its_stored_deadline(
    deadline: float | None, slept: list[float], journal: list[str]
) -> None:
    rec = ListRecorder()
    ex = wiring(rec)
    stored = {("7.1.1", "h1"): ActSleep("7.1.1", "h1", deadline)} if deadline is not None else {}
    await taken(stored, LiveSteps(ex)).sleep(STEP, 30.0)
    assert ex.clock.slept == slept  # type: ignore[attr-defined]
    assert rec.kinds() == journal
    if journal:
        assert rec.calls[0][1] == ("7.1.1", "h1", 30.0, WALL + 30)


def key_await(kind: str = "key", name: str = "k") -> p.Await:
    return p.Await(kind, (p.Text((p.Lit(name),)),), f"await {kind} {name}", 10.0, 1.0)


async def wait(steps: Steps, stage: p.Await, step: StepId = STEP) -> tuple[Exec, str]:
    with SharedAwaits() as shared:
        return await steps.await_(step, stage, remote=FakeRemote(), shared=shared)


async def test_an_await_not_stored_is_journaled_waits_and_ends_with_its_value() -> None:
    for make in (lambda live: live, lambda live: taken({}, live)):
        rec = ListRecorder()
        ended, value = await wait(make(LiveSteps(wiring(rec, events=DictEvents({"k": "v"})))), key_await())
        assert (ended.outcome, value) == (Outcome.OK, "v")
        assert rec.kinds() == ["awaiting", "result"]
        assert rec.calls[0][1] == ("7.1.1", "h1", WALL + 10)
        assert rec.results()[0].out == b"v"


async def test_an_await_stored_ended_is_its_record_and_looks_at_nothing() -> None:
    rec, events = ListRecorder(), DictEvents({"k": "new"})
    steps = taken({("7.1.1", "h1"): done(out="old")}, LiveSteps(wiring(rec, events=events)))
    ended, value = await wait(steps, key_await())
    assert (ended.outcome, value) == (Outcome.OK, "old")
    assert events.looks == 0 and rec.calls == []


async def test_an_await_stored_waiting_keeps_its_deadline() -> None:
    rec = ListRecorder()
    ex = wiring(rec, events=DictEvents())  # the key never comes
    stored = {("7.1.1", "h1"): ActAwait("7.1.1", "h1", "await key k", WALL + 3)}
    ended, _ = await wait(taken(stored, LiveSteps(ex)), key_await())
    assert ended.outcome == Outcome.TIMEOUT and ended.seconds == 3.0  # not the stage's 10 s
    assert rec.kinds() == ["result"]  # no new deadline journaled


async def test_a_signal_taken_for_every_host_is_recorded_for_each() -> None:
    rec, events = ListRecorder(), DictEvents(signals=[("go", "later")])
    steps = taken({("7.1.1", None): done(LOCAL, out="now")}, LiveSteps(wiring(rec, events=events)))
    for host in ("h1", "h2"):
        ended, value = await wait(steps, key_await("signal", "go"), StepId(7, 1, 1, host))
        assert (ended.outcome, value) == (Outcome.OK, "now")
    assert events.looks == 0 and rec.calls == []


async def test_a_callback_without_a_session_fails_as_an_outcome() -> None:
    rec = ListRecorder()
    ex = Executor(reporter=Recorder(), local=FakeRemote("local"), clock=FakeClock(), recorder=rec)
    ended, _ = await wait(LiveSteps(ex), p.Await(p.NEW_CALLBACK, (), "cb = callback", 10.0, 1.0, "cb"))
    assert ended.outcome == Outcome.FAILED and "callbacks need a session" in ended.message
    assert [(r.outcome, r.message) for r in rec.results()] == [(Outcome.FAILED, ended.message)]


# -- a line, then the same line from its own records --------------------------------------


async def test_a_line_taken_up_from_its_own_records_runs_nothing_again(tmp_path: Path) -> None:
    plan = compile_source(Source("t", "@h[1-2] echo hi | sleep 5s | echo bye"), Context())
    store = SqliteStore(tmp_path / "store.db")
    owned = await Session(store, Keys(user_tree("u"), "s"), "m1", lease_ttl=30, timeout=10).claim()
    try:
        first = {h: FakeRemote(h, output=f"{h}\n".encode()) for h in ("h1", "h2")}
        ex = Executor(
            reporter=Recorder(),
            local=FakeRemote("local"),
            hosts=first.__getitem__,
            clock=FakeClock(),
            recorder=SessionRecorder(owned),
        )
        ex.machine = "m1"
        (line,) = await ex.run_plan(plan)
        await owned.checkpoints.flush()
        last = await history.last_run(store, owned.keys, timeout=10)
        assert last is not None
        resume = await history.resume(store, owned.keys, last.run, timeout=10)
    finally:
        await owned.release()
        await store.close()
    again = {h: FakeRemote(h) for h in ("h1", "h2")}
    rec = ListRecorder()
    ex = Executor(
        reporter=Recorder(),
        local=FakeRemote("local"),
        hosts=again.__getitem__,
        clock=FakeClock(),
        recorder=rec,
    )
    ex.machine = "m1"
    (taken_up,) = await ex.run_plan(plan, first=resume)
    assert [(h.host, h.outcome, h.out, h.attempts) for h in taken_up.hosts] == [
        (h.host, h.outcome, h.out, h.attempts) for h in line.hosts
    ]
    assert [c for r in again.values() for c in r.calls] == []  # nothing ran twice
    assert "intent" not in rec.kinds() and "result" not in rec.kinds() and "sleep" not in rec.kinds()

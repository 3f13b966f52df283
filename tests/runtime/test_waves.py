"""Fan-out (dsh.runtime.waves): a wave's flows in one TaskGroup, the fan-out limit,
batches and max-fail, gather barriers; and what a cancelled flow does to the
command it runs, with a real local spool: killed while the lease is held, left
to its spool for the next owner once it is not."""

from __future__ import annotations

import asyncio

import pytest

from dsh import plan as p
from dsh.lang.compiler import Context, Limits, compile_source
from dsh.lang.source import Source
from dsh.remote.base import Gate, Identity, Spot
from dsh.remote.local import LocalShell
from dsh.runtime.executor import Executor
from dsh.runtime.results import HostResult
from dsh.runtime.waves import Seat, all_of, fan_out
from dsh.session.journal import LeaseLost
from tests.conftest import SPOOL
from tests.helpers.reporter import Recorder
from tests.helpers.runtime import ListRecorder

HOSTS = [f"h{i}" for i in range(1, 7)]


# -- all_of: a TaskGroup that raises what its caller expects -------------------------------


async def test_all_of_gives_the_results_in_order() -> None:
    async def after(seconds: float, value: int) -> int:
        await asyncio.sleep(seconds)
        return value

    assert await all_of([after(0.03, 1), after(0.01, 2), after(0.0, 3)]) == [1, 2, 3]


async def test_one_raising_cancels_the_others_and_is_raised_itself() -> None:
    stopped: list[str] = []

    async def waits(name: str) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # what a cancelled flow does (kill, journal) is waited for
            stopped.append(name)
            raise

    async def fails() -> None:
        await asyncio.sleep(0.01)
        raise LeaseLost("the lease is lost")

    with pytest.raises(LeaseLost, match="the lease is lost"):  # not an ExceptionGroup
        await all_of([waits("a"), fails(), waits("b")])
    assert sorted(stopped) == ["a", "b"]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # the caller does not look cancelled after


async def test_the_first_of_several_errors_is_raised() -> None:
    async def fails(seconds: float, why: str) -> None:
        await asyncio.sleep(seconds)
        raise ValueError(why)

    with pytest.raises(ValueError, match="first"):
        await all_of([fails(0.02, "second"), fails(0.0, "first")])


async def test_a_cancelled_caller_cancels_every_flow_and_waits_for_them() -> None:
    stopped: list[int] = []

    async def waits(i: int) -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await asyncio.sleep(0.01)
            stopped.append(i)

    task = asyncio.ensure_future(all_of([waits(i) for i in range(3)]))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(stopped) == [0, 1, 2]  # all over before the cancel went on


# -- fan_out: limits, batches, max-fail, gather ---------------------------------------------


class Flows:
    """Flows that take `seconds`, end `failed` on the hosts in `fail`, and note how
    many ran at once and in what order they started."""

    def __init__(self, seconds: float = 0.02, fail: frozenset[str] = frozenset(), gather: int | None = None):
        self.seconds, self.fail, self.gather = seconds, fail, gather
        self.running = self.most = 0
        self.started: list[str] = []
        self.skipped: list[HostResult] = []
        self.passed: list[tuple[str, int]] = []  # (host, how many had arrived when it passed)
        self.arrived = 0

    async def __call__(self, host: str, seat: Seat) -> HostResult:
        self.started.append(host)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.seconds)
            if self.gather is not None and host not in self.fail:  # a failed flow ends before it
                self.running -= 1
                self.arrived += 1
                await seat.gather(self.gather)
                self.passed.append((host, self.arrived))
                self.running += 1
        finally:
            self.running -= 1
        return HostResult(host, "failed" if host in self.fail else "ok", None, self.seconds)

    async def fan(
        self, hosts: list[str], *, fanout: int = 64, batch: p.Batch | None = None
    ) -> list[HostResult]:
        gathers = [self.gather] if self.gather is not None else []
        return await fan_out(
            hosts, fanout=fanout, batch=batch, gathers=gathers, flow=self, skipped=self.skipped.append
        )


async def test_no_more_flows_at_once_than_the_fanout() -> None:
    flows = Flows()
    results = await flows.fan(HOSTS, fanout=2)
    assert [r.host for r in results] == HOSTS and flows.most == 2


async def test_batches_run_a_wave_at_a_time() -> None:
    flows = Flows()
    await flows.fan(HOSTS, batch=p.Batch(2, False, 99))
    assert flows.most == 2 and flows.started == HOSTS


async def test_past_max_fail_the_remaining_waves_are_skipped() -> None:
    flows = Flows(fail=frozenset({"h1", "h2"}))
    results = await flows.fan(HOSTS, batch=p.Batch(2, False, 1))
    assert flows.started == ["h1", "h2"]  # 2 not ok > max-fail 1: nothing more starts
    assert [(r.host, r.outcome) for r in results] == [
        ("h1", "failed"),
        ("h2", "failed"),
        *((h, "skipped") for h in HOSTS[2:]),
    ]
    assert flows.skipped == results[2:]
    assert results[2].message == "not started: 2 hosts were not ok, over max-fail 1"
    flows = Flows(fail=frozenset({"h1"}))  # at max-fail, not over it: the rest go on
    results = await flows.fan(HOSTS, batch=p.Batch(2, False, 1))
    assert flows.started == HOSTS


async def test_a_gather_holds_every_flow_of_its_wave_until_all_have_come() -> None:
    flows = Flows(gather=2)
    await flows.fan(HOSTS[:3])
    assert sorted(flows.passed) == [("h1", 3), ("h2", 3), ("h3", 3)]  # none passed before the third came


async def test_a_flow_that_ends_before_a_gather_leaves_it() -> None:
    flows = Flows(gather=2, fail=frozenset({"h2"}))
    await asyncio.wait_for(flows.fan(HOSTS[:3]), 5)  # h2 never comes: the others do not wait for it
    assert sorted(h for h, _ in flows.passed) == ["h1", "h3"]


async def test_waiting_at_a_gather_frees_a_place_in_the_fanout() -> None:
    flows = Flows(gather=2)
    await asyncio.wait_for(flows.fan(HOSTS[:3], fanout=1), 5)  # else the first would wait for ever
    assert len(flows.passed) == 3


async def test_gather_barriers_are_per_wave() -> None:
    flows = Flows(gather=2)
    await flows.fan(HOSTS[:4], batch=p.Batch(2, False, 0))
    assert sorted(flows.passed) == [("h1", 2), ("h2", 2), ("h3", 4), ("h4", 4)]


# -- a cancelled flow and the command it runs ------------------------------------------------


class LosesTheLease(ListRecorder):
    """The lease is lost while h2 is about to start: the gate shuts and the intent fails."""

    def __init__(self, gate: Gate) -> None:
        super().__init__()
        self.gate = gate

    async def intent(
        self,
        action: str,
        host: str | None,
        command: str,
        timeout: float,
        where: Identity | None = None,
        **facts: object,
    ) -> None:
        if host == "h2":
            await asyncio.sleep(0.5)  # h1's command is running by now
            self.gate.close()
            raise LeaseLost("the session's lease is lost")
        await super().intent(action, host, command, timeout, where, **facts)


def line_on(gate: Gate, recorder: ListRecorder) -> Executor:
    return Executor(
        reporter=Recorder(),
        local=LocalShell(SPOOL, gate=gate),
        hosts=lambda h: LocalShell(SPOOL, name=h, gate=gate),
        recorder=recorder,
    )


async def test_a_flow_cancelled_once_the_lease_is_lost_leaves_its_command_to_its_spool() -> None:
    gate = Gate()
    ex = line_on(gate, LosesTheLease(gate))
    plan = compile_source(Source("t", "@h[1-2] sleep 30"), Context(limits=Limits()))
    with pytest.raises(LeaseLost):  # itself, from the flow of h2
        await ex.run_plan(plan)
    spot = Spot(ex.spool_name, "1.1.1", "h1")
    try:
        assert await LocalShell(SPOOL).probe(spot) == "alive"  # not killed: the next owner's now
    finally:
        await LocalShell(SPOOL).kill(spot)


async def test_a_line_cancelled_while_the_lease_is_held_kills_its_commands() -> None:
    gate = Gate()
    ex = line_on(gate, ListRecorder())
    plan = compile_source(Source("t", "@h[1-2] sleep 30"), Context(limits=Limits()))
    task = asyncio.ensure_future(ex.run_plan(plan))
    await asyncio.sleep(0.5)
    task.cancel()  # the user's ^C
    with pytest.raises(asyncio.CancelledError):
        await task
    for host in ("h1", "h2"):
        assert await LocalShell(SPOOL).probe(Spot(ex.spool_name, "1.1.1", host)) == "status cancelled"

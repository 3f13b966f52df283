"""The executor: host flows, retries with backoff, bindings, result sets, budgets.

Hosts here are `FakeHost`s: the command runs on this machine through the real
local shell with HOST set, so that flows, folding and result sets are exercised
before SSH exists. Waits use `FakeClock`, so backoff costs no time.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dsh.errors import DshError
from dsh.lang.compiler import Context, Limits, compile_source
from dsh.lang.source import Source
from dsh.remote.base import Exec, OutputSink, Spot
from dsh.remote.local import LocalShell
from dsh.runtime.executor import Executor, Refused
from dsh.runtime.results import LineResult
from tests.conftest import SPOOL
from tests.helpers.reporter import Recorder
from tests.helpers.runtime import FakeClock


class FakeHost:
    """A 'host' whose commands run locally with HOST=<name> in the environment."""

    def __init__(self, name: str, log: list[tuple[str, str]]) -> None:
        self._name = name
        self.log = log

    @property
    def name(self) -> str:
        return self._name

    async def identity(self) -> None:
        return None  # no login to tell apart

    async def run(
        self,
        command: str,
        *,
        spot: Spot,
        timeout: float,
        output: OutputSink,
        env: object = None,
        stdin: object = None,
        told: object = None,
    ) -> Exec:
        self.log.append((self._name, command))
        return await LocalShell(SPOOL).run(
            f"HOST={self._name}; {command}", spot=spot, timeout=timeout, output=output
        )


@dataclass
class Rig:
    executor: Executor
    rec: Recorder
    clock: FakeClock
    log: list[tuple[str, str]]

    async def run(self, text: str, limits: Limits | None = None) -> list[LineResult]:
        ctx = Context(
            limits=limits or Limits(),
            groups=self.executor.lookup.groups,
            bindings=self.executor.binding_kinds(),
            args=self.executor.args or None,
        )
        plan = compile_source(Source("t", text), ctx)
        return await self.executor.run_plan(plan)


def make_rig(args: tuple[str, ...] = (), inventory: dict[str, str] | None = None) -> Rig:
    rec, clock, log = Recorder(), FakeClock(), []
    ex = Executor(
        reporter=rec,
        local=LocalShell(SPOOL),
        hosts=lambda h: FakeHost(h, log),
        clock=clock,
        args=args,
        inventory=inventory,
    )
    return Rig(ex, rec, clock, log)


async def test_one_flow_per_host_with_host_bound() -> None:
    rig = make_rig()
    (line,) = await rig.run("@h[1-3] echo $host $HOST")
    assert line.ok and line.on_hosts
    assert sorted(h.out for h in line.hosts) == [b"h1 h1\n", b"h2 h2\n", b"h3 h3\n"]


async def test_failed_host_ends_its_flow_others_go_on() -> None:
    rig = make_rig()
    (line,) = await rig.run('@h[1-3] test "$HOST" != h2 | within 5s | echo after')
    by_host = {h.host: h for h in line.hosts}
    assert by_host["h2"].outcome == "failed" and by_host["h2"].exit_status == 1
    assert by_host["h1"].out == b"after\n" and by_host["h3"].ok
    assert not line.ok
    assert line.result_sets()["failed"] == ("h2",)
    assert line.result_sets()["notok"] == ("h2",)
    assert line.result_sets()["ok"] == ("h1", "h3")


async def test_result_sets_target_the_next_line() -> None:
    rig = make_rig()
    await rig.executor.run_plan(
        compile_source(Source("t", '@h[1-4] case "$HOST" in h2|h4) exit 3;; esac'), Context())
    )
    rig.log.clear()
    (line,) = await rig.run("@{failed} echo again")
    assert sorted(h for h, _ in rig.log) == ["h2", "h4"]
    assert line.ok
    # Now every host of the last line is ok: @{failed} is empty and says so.
    (empty,) = await rig.run("@{failed} echo never")
    assert empty.hosts == () and "empty" in empty.note
    assert empty.ok


async def test_retry_with_doubling_backoff(tmp_path: object) -> None:
    rig = make_rig()
    counter = f"/tmp/dsh-test-retry-{id(rig)}"
    text = f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n+1)) > {counter}; [ $n -ge 2 ]"
    try:
        (line,) = await rig.run(f"{text} | retry 4 backoff 3s")
    finally:
        import os

        os.unlink(counter)
    (result,) = line.hosts
    assert result.ok and result.attempts == 3
    assert rig.clock.slept == [3, 6]
    assert rig.rec.retries == [(None, 1, "failed", 3), (None, 2, "failed", 6)]


async def test_retry_gives_up_after_n_more_attempts() -> None:
    rig = make_rig()
    (line,) = await rig.run("@h1 false | retry 2")
    assert line.hosts[0].attempts == 3 and line.hosts[0].outcome == "failed"
    assert rig.clock.slept == [1, 2]


async def test_timeout_outcome_and_retry_on_timeout() -> None:
    rig = make_rig()
    (line,) = await rig.run("command sleep 5 | within 200ms | retry 1")
    (result,) = line.hosts
    assert result.outcome == "timeout" and result.attempts == 2


async def test_sleep_stage_uses_the_clock() -> None:
    rig = make_rig()
    (line,) = await rig.run("sleep 90s | echo woke")
    assert line.ok and rig.clock.slept == [90]


async def test_bindings_values_nodesets_and_results() -> None:
    rig = make_rig(args=("1",))
    await rig.run(
        'greeting = "it\'s $1"\nhosts = @h[1-2]\nver = @db1 echo 1.2.3\n'
        '@$hosts echo "$greeting" ${ver.out} $greeting'
    )
    assert sorted(h for h, _ in rig.log) == ["db1", "h1", "h2"]
    (last,) = [line for line in rig.rec.lines if line.statement.line == 4]
    assert {h.out for h in last.hosts} == {b"it's 1 1.2.3 it's 1\n"}


async def test_bound_stage_output_is_captured_not_shown() -> None:
    rig = make_rig()
    await rig.run("v = echo hidden; echo shown >&2")
    shown = [(s, d, flag) for _h, s, d, flag in rig.rec.out]
    assert ("stdout", b"hidden\n", False) in shown
    assert ("stderr", b"shown\n", True) in shown


async def test_values_are_data_not_code() -> None:
    rig = make_rig()
    await rig.run('evil = \'$(echo pwned); `id`; "x\'\necho $evil "$evil"')
    line = rig.rec.lines[-1]
    assert line.hosts[0].out == b'$(echo pwned); `id`; "x $(echo pwned); `id`; "x\n'


async def test_script_arguments_are_quoted() -> None:
    rig = make_rig(args=("a b", "c;d"))
    (line,) = await rig.run('printf "[%s]" $1 $@ "$2"')
    assert line.hosts[0].out == b"[a b][a b][c;d][c;d]"


async def test_inventory_group_with_set_operations() -> None:
    rig = make_rig(inventory={"web": "web[1-4]"})
    (line,) = await rig.run("@{web}!web3 true")
    assert sorted(h for h, _ in rig.log) == ["web1", "web2", "web4"]
    assert line.ok


async def test_run_time_step_budget() -> None:
    rig = make_rig()
    await rig.run("hosts = @h[1-50]")
    with pytest.raises(Refused, match="step budget"):
        await rig.run("@$hosts true | retry 1", limits=Limits(step_budget=60))
    assert rig.log == []


async def test_fanout_limits_concurrency() -> None:
    rig = make_rig()
    plan = compile_source(Source("t", "@h[1-6] sleep 0.2"), Context(limits=Limits(fanout=2)))
    import time

    started = time.monotonic()
    (line,) = await rig.executor.run_plan(plan)
    assert line.ok
    assert time.monotonic() - started >= 0.55


async def test_hosts_without_a_remote_are_refused_before_running() -> None:
    ex = Executor(reporter=Recorder(), local=LocalShell(SPOOL))
    plan = compile_source(Source("t", "@h1 true"), Context())
    with pytest.raises(DshError, match="SSH"):
        await ex.run_plan(plan)


async def test_stops_after_the_first_line_not_ok() -> None:
    rig = make_rig()
    results = await rig.run("false\necho never")
    assert len(results) == 1
    assert rig.rec.started == ["false"]

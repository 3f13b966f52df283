"""Plans are frozen, round-trip through JSON, and refuse corrupt or newer data by name."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dsh import plan as p
from dsh.errors import PlanError
from dsh.lang.compiler import Context, compile_source
from dsh.lang.source import Source

SCRIPT = """\
hosts = @web[1-4]
v = @db1 cat /etc/version | within 5s | retry 1 backoff 2s
msg = "version ${v.out}"
@$hosts echo "$msg on $host" | sleep 1s | true | within 3s
"""


def make_plan() -> p.Plan:
    return compile_source(Source("s.dsh", SCRIPT), Context())


def test_round_trip_is_exact() -> None:
    plan = make_plan()
    assert p.loads(p.dumps(plan)) == plan


def test_plan_is_frozen() -> None:
    plan = make_plan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.fanout = 3  # type: ignore[misc]


def test_newer_version_is_refused_by_name() -> None:
    raw = json.loads(p.dumps(make_plan()))
    raw["version"] = p.PLAN_VERSION + 1
    with pytest.raises(PlanError, match="newer than this dsh"):
        p.loads(json.dumps(raw))


@pytest.mark.parametrize(
    "data",
    [
        "{not json",
        "[]",
        '{"@": "Plan"}',
        json.dumps({"@": "Plan", "version": 1, "statements": [{"@": "Evil"}]}),
        json.dumps({"@": "Plan", "version": 1, "bogus": 1}),
        b"\xff\xfe",
    ],
)
def test_corrupt_plans_are_refused(data: str | bytes) -> None:
    with pytest.raises(PlanError):
        p.loads(data)


def test_statements_round_trip_and_newer_ones_are_refused() -> None:
    plan = make_plan()
    for stmt in plan.statements:
        assert p.load_statement(json.loads(json.dumps(p.dump_statement(stmt)))) == stmt
    data = p.dump_statement(plan.statements[0])
    with pytest.raises(PlanError, match="newer"):
        p.load_statement({**data, "version": p.PLAN_VERSION + 1})
    with pytest.raises(PlanError):
        p.load_statement({"version": 1, "statement": {"@": "Lit", "text": "x"}})

"""`await approval [from PRINCIPALS] [quorum N] [as NAME] within D` (issue 21): its
words, its plan (args: the principals and the quorum; plan version 5), and each
refusal with its caret; `from` and `quorum` stay plain words after other awaits."""

from __future__ import annotations

import pytest

from dsh import plan as p
from dsh.explain import explain
from tests.helpers.lang import compile_text, error


def await_of(source: str) -> p.Await:
    stmt = compile_text(source).statements[-1]
    assert isinstance(stmt, p.Run | p.Bind), stmt
    pipeline = stmt.pipeline if isinstance(stmt, p.Run) else stmt.value.pipeline  # type: ignore[union-attr]
    stage = pipeline.stages[-1]
    assert isinstance(stage, p.Await), stage
    return stage


def literal(text: p.Text) -> str:
    return "".join(part.text for part in text.parts if isinstance(part, p.Lit))


def test_its_principals_and_quorum_are_its_args_and_it_needs_plan_version_5() -> None:
    stage = await_of("await approval from team:ops,bob quorum 2 as who within 1h\n")
    assert (stage.kind, [literal(a) for a in stage.args], stage.bind) == (
        "approval",
        ["team:ops,bob", "2"],
        "who",
    )
    assert (stage.timeout, stage.every) == (3600.0, 1.0)
    bare = await_of("await approval within 5m\n")
    assert [literal(a) for a in bare.args] == ["", "1"]
    plan = compile_text("await approval within 5m\n")
    assert p.version_of(plan.statements) == 5 == p.PLAN_VERSION
    assert p.version_of(compile_text("await key k within 5s\n").statements) == 1  # others unchanged
    assert "waits for 2 approval(s) from team:ops,bob (not the requester's)" in explain(
        compile_text("await approval from team:ops,bob quorum 2 within 1h\n")
    )


def test_from_and_quorum_are_plain_words_after_another_await() -> None:
    stage = await_of("await key from within 5s\n")
    assert [literal(a) for a in stage.args] == ["from"]


@pytest.mark.parametrize(
    ("source", "said", "column"),
    [
        ("await approval from team:ops\n", "needs its bound: within D", 1),
        ("await approval quorum 0 within 5m\n", "'quorum' takes a number from 1 to 100", 23),
        ("await approval quorum many within 5m\n", "'quorum' takes a number from 1 to 100", 23),
        ("await approval from Bob within 5m\n", "'Bob' is not a person's name or team:NAME", 21),
        ("await approval from team:ops,,bob within 5m\n", "no empty names", 21),
        ("await approval team:ops within 5m\n", "takes from/quorum, not arguments", 16),
        ("await approval from x from y within 5m\n", "already has a 'from'", 23),
        ("@h1 true | await approval within 5m\n", "waits for people once", 12),
    ],
)
def test_each_mistake_is_refused_with_a_caret(source: str, said: str, column: int) -> None:
    refused = error(source)
    assert said in refused.message and refused.span.column == column, (refused.message, refused.span)

"""Parsing and compiling: bounds, caps, `$` rules, targets, positioned errors."""

from __future__ import annotations

import pytest

from dsh import plan as p
from dsh.errors import IncompleteInput, LangError
from dsh.lang.compiler import Context, Limits, compile_source
from dsh.lang.source import Source
from tests.helpers.lang import compile_text, error


def test_worst_case_of_retry_and_within() -> None:
    plan = compile_text("@h[1-3] true | within 5s | retry 2")
    (run,) = plan.statements
    assert isinstance(run, p.Run)
    (cmd,) = run.pipeline.stages
    assert isinstance(cmd, p.Command)
    assert (cmd.timeout, cmd.attempts, cmd.backoff) == (5.0, 3, 1.0)
    # each attempt: its timeout and the stop that may follow it (fault report P3)
    assert run.bound == p.Bound(hosts=3, steps=9, seconds=3 * (5 + p.STOP_SECONDS) + 1 + 2)


def test_retry_backoff_doubles() -> None:
    (run,) = compile_text("false | retry 3 backoff 2s | within 1s").statements
    assert run.bound.seconds == 4 * (1 + p.STOP_SECONDS) + 2 * (2**3 - 1)


def test_default_timeout_comes_from_the_limits() -> None:
    (run,) = compile_text("true", limits=Limits(default_timeout=42)).statements
    assert isinstance(run, p.Run)
    assert run.pipeline.stages[0].worst_seconds() == 42 + p.STOP_SECONDS  # type: ignore[union-attr]


def test_fanout_waves_multiply_the_duration() -> None:
    (run,) = compile_text("@h[1-10] true | within 1s", limits=Limits(fanout=4)).statements
    assert run.bound.seconds == 3 * (1 + p.STOP_SECONDS)


def test_step_budget_refuses_the_line_with_its_position() -> None:
    err = error("echo ok\n@h[1-200] true | retry 9", limits=Limits(step_budget=1000))
    assert "step budget" in err.message and "2000 steps" in err.message
    assert (err.span.line, err.span.column) == (2, 1)


def test_wait_over_the_cap_is_refused_where_written() -> None:
    err = error("true | within 8d")
    assert "cap" in err.message
    assert err.span.text == "within 8d"
    assert "cap" in error("sleep 30d").message


def test_retry_count_is_capped() -> None:
    assert "retry 1000" in error("true | retry 1000").message


def test_line_duration_is_capped() -> None:
    err = error("true | within 1d | retry 40")
    assert "over the cap" in err.message


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("@h[1-3 true", 3, "unclosed '['"),
        ("true | within 5", 15, "not a duration"),
        ("true | retry x", 14, "whole number"),
        ("within 5s", 1, "must follow a stage"),
        ("sleep 1s | within 2s", 12, "applies to a command"),
        ("true | within 1s | within 2s", 20, "already has"),
        ("@h1", 1, "needs a command"),
        ("@web@x true", 1, "a group is written {NAME}, without '@'"),
        ("echo ${v.out}", 6, "not bound"),
        ("await port 99999", 12, "is not a port"),
        ("true | batch 2", 8, "this line has none"),
        ("x = 'a' b", 9, "unexpected"),
        ("@h[3-1] true", 1, "bad node set"),
        ("@{nope} true", 2, "unknown group"),
    ],
)
def test_errors_point_at_the_column(text: str, column: int, words: str) -> None:
    err = error(text)
    assert words in err.message
    assert err.span.column == column
    rendered = err.render()
    head, _line, caret = rendered.split("\n")
    assert head.startswith(f"t.dsh:1:{column}: ")
    assert caret.index("^") - 2 == column - 1


@pytest.mark.parametrize("text", ["true |", "echo 'x", "echo $(", "true | within"])
def test_incomplete_input_is_its_own_error(text: str) -> None:
    with pytest.raises(IncompleteInput):
        compile_text(text)


def test_only_bound_names_expand() -> None:
    plan = compile_text("x = 5\necho $x \"$x\" '$x' \\$x $HOME ${HOME} $(pwd)")
    run = plan.statements[1]
    assert isinstance(run, p.Run)
    (cmd,) = run.pipeline.stages
    assert isinstance(cmd, p.Command)
    assert cmd.text.parts == (
        p.Lit("echo "),
        p.Var("x", None, "shell"),
        p.Lit(' "'),
        p.Var("x", None, "dquote"),
        p.Lit("\" '$x' \\$x $HOME ${HOME} $(pwd)"),
    )
    assert run.unbound == ("$HOME", "${HOME}")


def test_host_is_bound_only_in_host_flows() -> None:
    local, remote = compile_text("echo $host\n@h1 echo $host").statements
    assert isinstance(local, p.Run) and isinstance(remote, p.Run)
    assert local.unbound == ("$host",)
    assert p.Var("host", None, "shell") in remote.pipeline.stages[0].text.parts  # type: ignore[union-attr]


def test_script_arguments() -> None:
    (run,) = compile_text("echo $1 $@", args=("a",)).statements
    assert isinstance(run, p.Run)
    assert p.Var("1", None, "shell") in run.pipeline.stages[0].text.parts  # type: ignore[union-attr]
    err = error("echo $2", args=("a",))
    assert "given 1 argument" in err.message
    # Outside a script, $1 belongs to the shell.
    (run,) = compile_text("echo $1").statements
    assert run.unbound == ("$1",)


def test_fields_only_on_results() -> None:
    assert "has no field" in error("x = 5\necho ${x.out}").message
    assert "no field 'nope'" in error("v = echo 1\necho ${v.nope}").message
    compile_text("v = @h1 cat /etc/version\necho ${v.out} ${v.rc} ${v.hosts}")


def test_targets_from_groups_result_sets_and_bindings() -> None:
    plan = compile_text(
        "hosts = @web[1-4]\n@{web}!web3 true\n@{failed} true\n@$hosts&web[2-9] true",
        groups={"web": "web[1-4]"},
    )
    patterns = [s.pipeline.target.pattern for s in plan.statements[1:]]  # type: ignore[union-attr]
    assert patterns == ["@inv:web!web3", "@res:failed", "@var:hosts&web[2-9]"]
    assert plan.statements[0].bound.hosts == 4
    # Inventory groups are known at compile time; result sets and bindings are not.
    assert [s.bound.hosts for s in plan.statements[1:]] == [3, None, None]
    assert plan.bound.steps is None


def test_inventory_groups_count_against_the_step_budget() -> None:
    err = error("@{big} true | retry 1", groups={"big": "n[1-600]"}, limits=Limits(step_budget=1000))
    assert "1200 steps" in err.message
    assert "bad node set" in error("@{bad} true", groups={"bad": "n[1-"}).message


def test_result_binding_is_not_a_node_set() -> None:
    assert "result of a stage" in error("v = @h1 true\n@$v true").message


def test_bindings_from_earlier_lines_are_known() -> None:
    plan = compile_text("echo $v", bindings={"v": p.VALUE})
    assert plan.statements[0].unbound == ()


def test_every_reserved_outcome_is_a_result_set() -> None:
    for name in p.RESULT_SETS:
        compile_text(f"@{{{name}}} true")


@pytest.mark.timeout(20)  # ClusterShell would spend minutes making 10^8 names
def test_huge_ranges_are_refused_before_they_are_expanded() -> None:
    assert "up to 100000000 hosts" in error("@h[1-100000000] true").message
    assert "up to 100000000 hosts" in error("x = @h[1-100000000]").message
    assert "holds 20000 hosts, over the step budget of 10000" in error("@r[1-200]n[1-100] true").message
    err = error("@{big} true", groups={"big": "h[1-100000000]"})
    assert "up to 100000000" in err.message


def test_digits_other_than_ascii_are_not_numbers() -> None:
    """`¹` is a digit to str.isdigit, not to int(): it is text, never a crash (a
    case the fuzz test found)."""
    plan = compile_source(Source("<t>", "echo $¹"), Context(args=("a",)))
    (stmt,) = plan.statements
    assert isinstance(stmt, p.Run)
    for text, said in (("true | retry ¹", "'retry' needs a whole number"), ("await port ¹", "is not a port")):
        with pytest.raises(LangError, match=said):
            compile_source(Source("<t>", text), Context(args=()))

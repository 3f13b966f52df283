"""Limits of the language, each a positioned compile error: nesting and call depth
(fault report #7), host names from bindings (#14), and the lower-priority
findings on durations, keys, comparisons, node-set lists and UTF-8."""

from __future__ import annotations

import json
import re
import time

import pytest

from dsh import nodeset
from dsh import plan as p
from dsh.errors import PlanError
from dsh.explain import explain
from dsh.lang.compiler import MAX_CALL_DEPTH, Limits
from dsh.lang.parser import MAX_BLOCK_DEPTH
from dsh.names import key_problem
from tests.helpers.lang import compile_text, error


def nested(depth: int, head: str = "if $1 == a {", inner: str = "echo deep") -> str:
    return "\n".join([head] * depth + [inner] + ["}"] * depth)


def chain(length: int) -> str:
    """Functions f0 … f(length-1), each calling the next; then a call of f0."""
    fns = [f"fn f{i}() {{ f{i + 1} }}" for i in range(length - 1)]
    return "\n".join([*fns, f"fn f{length - 1}() {{ echo bottom }}", "f0"])


# -- #7: nesting and call chains --------------------------------------------------------


@pytest.mark.parametrize("head", ["if $1 == a {", "for i in a {", "if true { echo } else {"])
def test_F7_deep_nesting_is_a_compile_error_at_its_position(head: str) -> None:
    compile_text(nested(MAX_BLOCK_DEPTH, head), args=("a",))  # the deepest allowed
    err = error(nested(MAX_BLOCK_DEPTH + 1, head), args=("a",))
    assert err.message == f"blocks nested too deeply (limit {MAX_BLOCK_DEPTH})"
    assert (err.span.line, err.span.text) == (MAX_BLOCK_DEPTH + 1, "{")
    # The report's input: 500 blocks on one line was a RecursionError (exit 70).
    one_line = "if a == a { " * 500 + "echo deep" + " }" * 500
    assert "nested too deeply" in error(one_line.replace("if a == a", "if $1 == a"), args=("a",)).message


def test_F7_long_call_chains_are_a_compile_error_at_the_call() -> None:
    (run,) = compile_text(chain(MAX_CALL_DEPTH)).statements  # the longest allowed, expanded
    assert isinstance(run, p.Run) and run.source == "echo bottom"
    err = error(chain(1000))  # the report's: 1000 functions, a RecursionError before
    assert err.message.startswith(f"calls nested too deeply (limit {MAX_CALL_DEPTH})")
    assert (err.span.line, err.span.text) == (MAX_CALL_DEPTH, f"f{MAX_CALL_DEPTH}")


def test_F7_a_call_graph_is_gone_through_once_per_function() -> None:
    # Each function calls the next twice: 2^40 paths, but 40 functions to look at.
    fns = [f"fn f{i}() {{\n  f{i + 1}\n  f{i + 1}\n}}" for i in range(40)]
    compile_text("\n".join([*fns, "fn f40() { echo bottom }"]))  # defined, never called


def test_F7_the_blocks_of_called_functions_count() -> None:
    half = MAX_BLOCK_DEPTH // 2 + 1
    text = f"fn deep() {{\n{nested(half)}\n}}\n{nested(half, inner='deep')}"
    err = error(text, args=("a",))
    assert err.message.startswith(f"blocks nested too deeply (limit {MAX_BLOCK_DEPTH}")
    assert "functions called" in err.message


def test_F7_the_deepest_plan_survives_explain_and_its_codec() -> None:
    body = nested(MAX_BLOCK_DEPTH // 2, "for i in a {", "f0")
    text = chain(MAX_CALL_DEPTH).removesuffix("f0") + nested(MAX_BLOCK_DEPTH // 2, "if $1 == a {", body)
    plan = compile_text(text, args=("a",))
    assert p.loads(p.dumps(plan)) == plan
    assert "echo bottom" in explain(plan)
    # A stored plan nested deeper than any compile makes is corrupt, not a crash.
    deep = '{"@":"Text","parts":[' * 5000 + '{"@":"Lit","text":"x"}' + "]}" * 5000
    with pytest.raises(PlanError, match="nested too deeply"):
        p.loads('{"@":"Plan","version":1,"statements":[' + deep + "]}")
    with pytest.raises(PlanError, match="nested too deeply"):
        p.load_statement({"version": 1, "statement": json.loads(deep[: 21 * 400] + "]}" * 400)})


# -- #14: host names from bindings -----------------------------------------------------------

BAD_NAMES = ["h1/../h2", ".", "..", "h1;id", "h1$(id)", "a@b", "h1:22", "h1'x", 'h1"x', "h1 h2", "h1,h2;x"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_F14_host_names_from_a_binding_known_at_compile_time_are_refused(name: str) -> None:
    err = error('hosts = "$1"\n@$hosts echo $host', args=(name,))
    assert err.message.startswith("$hosts holds ") and "cannot name a host" in err.message
    assert repr(name.split(",")[-1]) in err.message  # the bad name itself, not the whole list
    assert (err.span.line, err.span.text) == (2, "$hosts")


@pytest.mark.parametrize("name", BAD_NAMES)
def test_F14_host_names_from_a_binding_known_at_run_time_are_refused(name: str) -> None:
    with pytest.raises(nodeset.HostSetError, match=r"^\$h holds .*cannot name a host"):
        nodeset.expand("@var:h", {nodeset.VARIABLES: {"h": name}}, limit=100)


def test_F14_only_values_sure_to_hold_are_checked_at_compile_time() -> None:
    # A branch may not run, a loop may run again: their values are left to the run.
    compile_text('h = web1\nif $1 == a { h = "a;b" }\n@$h true', args=("a",))
    compile_text('h = web1\nfor i in a b {\n  @$h true\n  h = "a;b"\n}', args=("a",))
    compile_text("for h in a;b c { @$h true }")
    assert "$h (of f) holds 'x/y'" in error('fn f(h) { @$h true }\nf "x/y"').message
    assert "'..'" in error("@.. true").message
    assert compile_text('hosts = "$1"\n@$hosts true', args=("web[1-3],db_1.x-y",)).statements


# -- lower-priority observations ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "sleep 0.4ms",
        "true | within 0.0001ms",
        "true | within 0s",
        "true | retry 1 backoff 0.5ms",
        "await port 22 every 0.1ms",
        "await port 22 within 0.9ms",
        "await port 22 | within 0ms",
    ],
)
def test_low_subms_durations_are_refused_for_every_keyword(text: str) -> None:
    err = error(text)
    assert err.message.endswith("is shorter than 1ms: a duration must be at least 1ms")
    assert err.span.text.endswith("ms") or err.span.text == "0s"
    compile_text(re.sub(r"\d+(?:\.\d+)?m?s\b", "1ms", text))  # the shortest duration


@pytest.mark.parametrize("key", ['""', "''", "k" * 257])
def test_low_await_key_takes_the_keys_dsh_key_takes(key: str) -> None:
    err = error(f"await key {key} within 1s")
    assert err.message == key_problem(key.strip("'\""))
    assert err.span.text == key
    compile_text("await key deploy/go = yes within 1s")


def test_low_a_bare_word_before_a_comparison_is_a_compile_error() -> None:
    err = error("env = prod\nif deploy == $env { echo yes }")
    assert "write $deploy (a binding) or 'deploy' (a word)" in err.message
    assert "`command deploy == $env` runs the command" in err.message
    assert (err.span.line, err.span.text) == (2, "deploy")
    assert "'./x'" in error("if ./x != y { echo }").message
    for command in ("if command deploy == prod { echo }", "if test a == b { echo }", "if true { echo }"):
        (stmt,) = compile_text(command).statements
        assert isinstance(stmt, p.If) and isinstance(stmt.cond, p.Run)
    (stmt,) = compile_text("if 'deploy' == prod { echo }").statements
    assert isinstance(stmt, p.If) and isinstance(stmt.cond, p.Compare)


def test_low_comma_lists_compile_in_linear_time() -> None:
    def best(names: int) -> float:
        text = "@" + ",".join(f"h{i}" for i in range(names)) + " true"
        limits = Limits(step_budget=names)  # accepted: ClusterShell makes every name
        times = []
        for _ in range(3):
            started = time.perf_counter()
            compile_text(text, limits=limits)
            times.append(time.perf_counter() - started)
        return min(times)

    small, large = best(2_000), best(20_000)
    # Ten times the names: linear is ~10 times the work; the quadratic parse was ~50-100.
    assert large / small < 25, (small, large)
    refused = error("@" + ",".join(f"h{i}" for i in range(20_000)) + " true")
    assert "20000 hosts, over the step budget" in refused.message


def test_low_text_that_is_not_utf8_is_refused_at_its_byte() -> None:
    text = "echo ok\necho a\udcffb"  # what Python makes of the byte 0xff in an argument
    err = error(text)
    assert err.message == "not UTF-8 text (byte 0xff, at byte 14)"
    assert (err.span.line, err.span.column) == (2, 7)
    assert "echo a\ufffdb" in err.render()  # shown as one column, the caret under it
    assert err.render().splitlines()[-1] == "        ^"

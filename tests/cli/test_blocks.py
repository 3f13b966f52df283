"""Conditionals, loops and functions: run for real, bounded at compile time or at loop start."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import SshSetup


def test_if_on_a_remote_condition_takes_the_else_branch(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "if @h1 test -f /nonexistent { echo yes } else { echo no }"])
    assert r.returncode == 0, r.stderr  # the condition's failure is consumed
    assert r.stdout.splitlines()[-1] == "no"
    r = run_dsh([*ssh_setup.args(), "-c", "if @h1 test -d / { echo yes } else { echo no }"])
    assert r.stdout.splitlines()[-1] == "yes"


def test_an_unreachable_condition_fails_the_line(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "if @down true { echo yes } else { echo no }"])
    assert r.returncode == 1
    assert "yes" not in r.stdout and "no\n" not in r.stdout


def test_if_compares_bindings_and_blocks_span_lines(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "cmp.dsh"
    script.write_text(
        "x = abc\nif $x == abc {\n  echo same\n  echo twice\n}\nelse {\n  echo other\n}\n"
        'if "$x" != abc { echo differ } else { echo not-differ }\n'
    )
    r = run_dsh([str(script)])
    assert (r.returncode, r.stdout) == (0, "same\ntwice\nnot-differ\n"), r.stderr


def test_a_failing_statement_in_a_branch_fails_the_line(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "if true { false\necho after }"])
    assert r.returncode == 1 and "after" not in r.stdout


def test_for_over_words_nodesets_bindings_and_output_lines(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "for x in a b c { echo item $x }"])
    assert (r.returncode, r.stdout) == (0, "item a\nitem b\nitem c\n")
    text = "hosts = @h[1-2]\nfor h in $hosts @h3 { @$h echo on $h }"
    r = run_dsh([*ssh_setup.args(), "-c", text])
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if " | " in line] == [
        "h1 | on h1",
        "h2 | on h2",
        "h3 | on h3",
    ]
    r = run_dsh(["-c", "r = printf 'l1\\nl2\\n'\nfor l in ${r.out} { echo got $l }"])
    assert (r.returncode, r.stdout) == (0, "got l1\ngot l2\n"), r.stderr
    r = run_dsh(["-c", "for x in a b c { test $x != b }\necho not-reached"])
    assert r.returncode == 1 and "not-reached" not in r.stdout


def test_for_bounds_at_compile_time_and_at_loop_start(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "for x in @n[1-1000000] { echo $x }"])
    assert r.returncode == 2 and "1000000" in r.stderr and "step budget of 10000" in r.stderr
    config = tmp_path / "small.toml"
    config.write_text("[limits]\nstep_budget = 5\n")
    r = run_dsh(["--config", str(config), "-c", "for x in a b c d e f { echo $x }"])
    assert r.returncode == 2 and "6 items" in r.stderr and "step budget of 5" in r.stderr
    marker = tmp_path / "ran"
    text = f"words = 'a b c d e f'\ntouch {marker}\nfor x in $words {{ echo $x }}"
    r = run_dsh(["--config", str(config), "-c", text])
    assert r.returncode == 2 and "goes through 6 items" in r.stderr
    assert marker.exists()  # refused when the loop starts, after the lines before it


def test_functions_expand_with_their_arguments(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    text = (
        'fn greet(who, how) { echo $how $who }\ngreet world hello\ngreet "big world" hi\ncommand echo greet'
    )
    r = run_dsh(["--session", "fns", "-c", text])
    assert (r.returncode, r.stdout) == (0, "hello world\nhi big world\ngreet\n"), r.stderr
    binds = [json.loads(x) for x in run_dsh(["log", "--json", "fns"]).stdout.splitlines()]
    assert {e["name"] for e in binds if e["kind"] == "bind"} == {"greet-who", "greet-how"}
    text = "fn restart(h) { @$h echo restarting $h }\nfor h in @h[1-2] { restart $h }"
    r = run_dsh([*ssh_setup.args(), "-c", text])
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if " | " in line] == [
        "h1 | restarting h1",
        "h2 | restarting h2",
    ]


def test_function_errors_at_compile_time(run_dsh) -> None:  # type: ignore[no-untyped-def]
    cases = {
        "fn f() { f }": "f → f",
        "fn a() { b }\nfn b() { a }": "a → b → a",
        "fn a() { if true { b } }\nfn b() { for x in 1 { a } }": "a → b → a",
        "fn g(x) { echo $x }\ng": "g takes 1 argument (x); this call gives 0",
        "if true { fn h() { echo } }": "at the top level",
        "fn bad { echo }": "needs a name and parameters",
        "else { echo }": "'else' without an 'if'",
        "if { echo }": "needs a condition",
    }
    for text, message in cases.items():
        r = run_dsh(["-c", text])
        assert r.returncode == 2 and message in r.stderr, (text, r.stderr)
    r = run_dsh(["-c", "while false; do :; done; echo while-is-sh"])  # no `while` in dsh
    assert (r.returncode, r.stdout) == (0, "while-is-sh\n")


def test_explain_bounds_compound_statements(run_dsh) -> None:  # type: ignore[no-untyped-def]
    text = "for h in a b c { if test $h = b | within 1s { echo B | within 5s } else { true | within 2s } }"
    r = run_dsh(["explain", text])
    assert r.returncode == 0, r.stderr
    assert "for      h in 3 items" in r.stdout
    assert "worst    6 steps, 48s" in r.stdout  # 3 items x (condition 1s + 5s stop, longer branch 5s + 5s)


def test_functions_are_kept_with_the_session(run_dsh, env) -> None:  # type: ignore[no-untyped-def]
    assert run_dsh(["--session", "fk", "-c", "fn hi(who) { echo hi $who }"]).returncode == 0
    r = run_dsh(["--session", "fk", "-c", "hi there"])
    assert (r.returncode, r.stdout) == (0, "hi there\n"), r.stderr
    r = run_dsh(["attach", "fk"], input="hi attached\n", env_extra={"DSH_MACHINE_ID": "other"})
    assert (r.returncode, r.stdout.splitlines()[-1]) == (0, "hi attached"), r.stdout + r.stderr
    assert run_dsh(["--session", "fk", "-c", "fn hi(who) { echo hello $who }"]).returncode == 0
    assert run_dsh(["--session", "fk", "-c", "hi again"]).stdout == "hello again\n"  # the newer one
    r = run_dsh(["--session", "other-session", "-c", "hi x"])  # a session's own
    assert r.returncode == 1 and "not found" in r.stderr

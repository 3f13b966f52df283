"""The dsh command end to end, as a user meets it (a real process each time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsh.cli.args import SUBCOMMANDS
from tests.conftest import assert_no_process, dsh_path, stop_sleeper


def test_hello(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "echo hello"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")


def test_timeout_kills_and_exits_1(run_dsh) -> None:  # type: ignore[no-untyped-def]
    marker = f"30.{os.getpid()}"  # a sleep argument no other process uses
    started = time.monotonic()
    r = run_dsh(["-c", f"command sleep {marker} | within 1s"])
    elapsed = time.monotonic() - started
    assert r.returncode == 1
    assert 0.9 < elapsed < 5
    assert "timeout" in r.stderr
    assert_no_process(f"sleep {marker}")


def test_local_pipeline_and_protected_dollar(run_dsh) -> None:  # type: ignore[no-untyped-def]
    assert run_dsh(["-c", "echo a | grep a"]).stdout == "a\n"
    assert run_dsh(["-c", "echo '$HOME'"]).stdout == "$HOME\n"
    assert run_dsh(["-c", "echo \\$HOME"]).stdout == "$HOME\n"
    r = run_dsh(["-c", "echo $HOME"])
    assert r.stdout == os.environ["HOME"] + "\n"


def test_binding_in_a_script(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "s.dsh"
    script.write_text("x = 5\necho $x\n")
    r = run_dsh([str(script)])
    assert (r.returncode, r.stdout) == (0, "5\n")


def test_compile_error_caret_and_exit_2(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "@h[1-3 true"])
    assert r.returncode == 2
    head, line, caret = r.stderr.rstrip("\n").split("\n")
    assert head.startswith("<-c>:1:3: ")
    assert line.strip() == "@h[1-3 true"
    assert line.index("@") + 2 == caret.index("^")
    assert "Traceback" not in r.stderr


def test_script_error_names_file_line_and_column(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "bad.dsh"
    script.write_text("echo fine\ntrue | within 3 \n")
    r = run_dsh([str(script)])
    assert r.returncode == 2
    assert r.stderr.startswith(f"{script}:2:15: ")
    assert r.stdout == ""  # nothing ran: the script compiles before it runs


def test_explain_states_hosts_attempts_and_worst_case(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["explain", "@h[1-3] true | within 5s | retry 2"])
    assert r.returncode == 0
    assert "3 hosts" in r.stdout
    assert "at most 3 attempts" in r.stdout
    assert "33s = 3*(5s + 5s) + 1s + 2s" in r.stdout  # every attempt with the stop after it
    assert "9 steps" in r.stdout


def test_explain_lists_unbound_names(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["explain", "x = 1\necho $x $HOME '$USER'"])
    assert "unbound  $HOME" in r.stdout and "$USER" not in r.stdout.split("unbound")[1]


def test_explain_json_is_the_plan(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["--json", "explain", "@h[1-3] true"])
    assert json.loads(r.stdout)["@"] == "Plan"


def test_shebang_script_with_arguments(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "script.dsh"
    script.write_text('#!/usr/bin/env dsh\necho "one=$1"\necho "all=$@"\n')
    script.chmod(0o755)
    r = subprocess.run(
        ["./script.dsh", "a", "b c"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert (r.returncode, r.stdout) == (0, "one=a\nall=a b c\n")


def test_options_after_the_script_belong_to_it(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "s.dsh"
    script.write_text("echo $1 $2\n")
    assert run_dsh([str(script), "-v", "--json"]).stdout == "-v --json\n"


def test_json_output_parses_line_by_line(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["--json", "-c", "printf 'a\\nb\\n'; printf 'partial'; echo oops >&2\nfalse"])
    events = [json.loads(line) for line in r.stdout.splitlines()]
    texts = [(e["stream"], e["text"]) for e in events if e["event"] == "output"]
    assert [t for t in texts if t[0] == "stdout"] == [("stdout", "a"), ("stdout", "b"), ("stdout", "partial")]
    assert [t for t in texts if t[0] == "stderr"] == [("stderr", "oops")]
    results = [e for e in events if e["event"] == "result"]
    assert [(e["outcome"], e["exit"]) for e in results] == [("ok", 0), ("failed", 1)]
    assert r.returncode == 1


def test_script_stops_at_the_first_failed_line(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "echo one\nexit 4\necho three"])
    assert r.returncode == 1
    assert r.stdout == "one\n"
    assert "1 more statement not run" in r.stderr


def test_lines_from_stdin(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([], input="x = 7\necho $x |\n  tr 7 8\necho done\n")
    assert (r.returncode, r.stdout) == (0, "8\ndone\n")


def test_stdin_stops_at_an_error(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([], input="echo a\ntrue | within x\necho b\n")
    assert r.returncode == 2
    assert r.stdout == "a\n"
    assert "<stdin>:2:15:" in r.stderr


def test_stdin_incomplete_at_end(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([], input="echo 'open\n")
    assert r.returncode == 2 and "unclosed" in r.stderr


def test_subcommands_win_over_files(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "explain").write_text("echo from-file\n")
    assert run_dsh(["./explain"], cwd=tmp_path).stdout == "from-file\n"
    r = run_dsh(["explain", "true"], cwd=tmp_path)
    assert r.stdout.startswith("line 1: true")


def test_help_and_version(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["--help"])
    assert r.returncode == 0 and "explain" in r.stdout and "-c TEXT" in r.stdout
    r = run_dsh(["--version"])
    assert r.returncode == 0 and r.stdout.startswith("dsh ")


def test_usage_errors_exit_2_without_traceback(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for args in (
        ["--bogus"],
        ["no-such-script.dsh"],
        ["--store", "ftp://x", "-c", "true"],
        ["--session", "bad name", "-c", "true"],
        ["--ssh-config", str(tmp_path / "none"), "-c", "true"],
        ["--config", str(tmp_path / "none.toml"), "-c", "true"],
        ["explain"],
    ):
        r = run_dsh(args)
        assert r.returncode == 2, args
        assert r.stderr.startswith("dsh: "), (args, r.stderr)
        assert "Traceback" not in r.stderr


def test_session_from_environment_is_checked(run_dsh, env) -> None:  # type: ignore[no-untyped-def]
    env["DSH_SESSION"] = "has space"
    r = run_dsh(["-c", "true"])
    assert r.returncode == 2 and "session" in r.stderr


def test_config_groups_and_limits(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg = Path(env["XDG_CONFIG_HOME"]) / "dsh" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[limits]\ndefault_timeout = "7s"\nstep_budget = 5\n[groups]\nweb = "web[1-4]"\n')
    r = run_dsh(["explain", "@{web}!web2 true"])
    assert "timeout 7s" in r.stdout
    r = run_dsh(["explain", "@h[1-6] true"])
    assert r.returncode == 2 and "step budget of 5" in r.stderr
    cfg.write_text("[limits]\nfanout = 0\n")
    r = run_dsh(["-c", "true"])
    assert r.returncode == 2 and "limits.fanout" in r.stderr


def test_no_escape_sequences_when_not_a_terminal(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "false"])
    assert "\x1b" not in r.stdout + r.stderr


def test_a_host_name_that_does_not_resolve_is_unreachable(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "ssh_config"
    empty.write_text("")
    r = run_dsh(["--ssh-config", str(empty), "-c", "@no-such-host.invalid true"])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no-such-host.invalid (1)  unreachable: no-such-host.invalid:22: " in r.stdout


def test_start_up_imports_no_heavy_library(env) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import sys\nfrom dsh.cli import main\nrc = main(['-c', 'echo hi'])\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('asyncssh', 'prompt_toolkit', 'aetcd', 'grpc', 'rich', 'ClusterShell') "
        "or m in ('urllib.request', 'http.client')]\n"
        "print(rc, heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=30)
    assert r.stdout.splitlines()[-1] == "0 []", r.stdout + r.stderr


def test_dsh_is_on_path_in_the_venv() -> None:
    assert Path(dsh_path()).exists()


def test_reader_going_away_stops_the_command(env) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    r = subprocess.run(
        f"{dsh_path()} -c 'yes dsh-broken-pipe-test' | head -n 1",
        shell=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.stdout == "dsh-broken-pipe-test\n"
    assert "Traceback" not in r.stderr and "Exception" not in r.stderr
    assert time.monotonic() - started < 10
    assert_no_process("yes dsh-broken-pipe-test")


def test_interrupt_kills_the_command_and_exits_130(env) -> None:  # type: ignore[no-untyped-def]
    import signal

    status, err = stop_sleeper(env, f"31.{os.getpid()}", [signal.SIGINT])
    assert status == 130
    assert "interrupted" in err and "Traceback" not in err


def test_verbose_keeps_the_exit_status_and_adds_a_traceback(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-v", "no-such-script.dsh"])
    assert r.returncode == 2
    expected = f"(and not a subcommand: {', '.join(SUBCOMMANDS)})"
    assert "Traceback" in r.stderr and r.stderr.rstrip().endswith(expected)
    r = run_dsh(["-v", "-c", "@h[1-3 true"])
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_double_dash_ends_options(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "-odd.dsh").write_text("echo odd $1\n")
    assert run_dsh(["--", "-odd.dsh", "x"]).stdout == "odd x\n"
    assert run_dsh(["-c", "echo $@", "--", "-l", "--json"]).stdout == "-l --json\n"


def test_dsh_config_must_exist(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    env["DSH_CONFIG"] = str(tmp_path / "missing.toml")
    r = run_dsh(["-c", "true"])
    assert r.returncode == 2 and "no such configuration file" in r.stderr


def test_json_errors_are_events_too(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["--json", "-c", "echo ok\n@h[1-3 true"])
    (event,) = [json.loads(line) for line in r.stdout.splitlines()]
    assert event == {
        "event": "error",
        "message": "unclosed '[' in node set",
        "exit": 2,
        "location": "<-c>:2:3",
    }
    assert r.returncode == 2 and "^" in r.stderr


def test_stdin_backslash_newline_continues(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([], input="echo a \\\n  b\n")
    assert (r.returncode, r.stdout) == (0, "a b\n")


def test_quoted_all_arguments_are_separate_words(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "printf '<%s>' \"$@\"; printf '|%s|' \"x$@y\"", "a b", "c"])
    assert r.stdout == "<a b><c>|xa b||cy|"


def test_explain_counts_inventory_groups(run_dsh, env) -> None:  # type: ignore[no-untyped-def]
    cfg = Path(env["XDG_CONFIG_HOME"]) / "dsh" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text('[groups]\nweb = "web[01-40]"\n')
    r = run_dsh(["explain", "@{web}!web13 true | within 1s"])
    assert "39 hosts" in r.stdout and "39 steps" in r.stdout
    assert "1 step," in run_dsh(["explain", "true"]).stdout


@pytest.mark.parametrize(
    "args", [["-c", "echo hi"], ["explain", "true"], ["--json", "-c", "seq 1 10"], ["-c", "seq 1 100000"]]
)
def test_F8_a_write_error_on_stdout_is_one_sentence_and_status_1(env, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    # Fault report #8: "internal error: OSError" (exit 70), and with --json a traceback.
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [dsh_path(), *args], env=env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=30
        )
    assert r.returncode == 1, r.stderr
    assert r.stderr == "dsh: cannot write standard output: No space left on device\n"

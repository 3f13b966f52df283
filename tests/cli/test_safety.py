"""Values are data, never code, wherever a `$name` stands; and nothing outlives dsh."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import stop_sleeper

HOSTILE = "$(echo PWNED >&2) `echo PWNED >&2` ' \" \\ ; echo PWNED >&2 #"


@pytest.mark.parametrize(
    "line",
    [
        "printf '%s\\n' $1",
        "printf '%s\\n' \"$1\"",
        "printf '%s\\n' \"E:[${UNSET:-$1}]\"",
        "printf '%s\\n' E:[${UNSET:-$1}]",
        "printf '%s\\n' \"$(printf %s $1)\"",
        "cat <<EOF\n$1\nEOF",
        'echo "$(cat <<EOF\n$1\nEOF\n)"',
        "echo $(( 1 + $1 ))",
        'x = "$1"\nprintf \'%s\\n\' $x "${x}"',
    ],
)
def test_a_hostile_argument_never_runs(run_dsh, line: str) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", line, "--", HOSTILE])
    assert "PWNED" not in r.stderr.splitlines(), (line, r.stderr)  # (a shell error may quote it)
    if "(( " not in line:  # arithmetic refuses the text; everywhere else it arrives intact
        assert r.returncode == 0, r.stderr
        assert HOSTILE in r.stdout, (line, r.stdout)


def test_quoted_all_arguments_with_none_give_no_word(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "count.dsh"
    script.write_text("sh -c 'echo count=$#' x \"$@\"\n")
    assert run_dsh([str(script)]).stdout == "count=0\n"
    assert run_dsh([str(script), "a b", "c"]).stdout == "count=2\n"


def test_bytes_round_trip_through_a_binding(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "x = printf '\\377\\376a'\nprintf %s \"$x\" | od -An -c"])
    assert r.stdout.split() == ["377", "376", "a"]


def test_nul_in_a_value_fails_the_host_with_a_sentence(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "x = printf 'a\\000b'\necho \"$x\""])
    assert r.returncode == 1 and "NUL byte" in r.stderr and "Traceback" not in r.stderr


def test_crlf_script(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "crlf.dsh"
    script.write_bytes(b"x = 1\r\necho $x | within 5s\r\n")
    assert run_dsh([str(script)]).stdout == "1\n"


def test_explain_of_a_long_line(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["explain", "echo " + "a" * 5000])
    assert r.returncode == 0 and "1 step" in r.stdout


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_terminating_dsh_kills_its_commands(env, signum: int, status: int) -> None:  # type: ignore[no-untyped-def]
    code, err = stop_sleeper(env, f"32.{os.getpid()}{signum}", [signum], trap_term=True)
    assert code == status
    assert "interrupted by" in err and "Traceback" not in err


def test_second_interrupt_still_leaves_nothing_behind(env) -> None:  # type: ignore[no-untyped-def]
    code, _err = stop_sleeper(env, f"33.{os.getpid()}", [signal.SIGINT, signal.SIGINT], trap_term=True)
    assert code == 130


def test_json_usage_error_and_retry_events(run_dsh) -> None:  # type: ignore[no-untyped-def]
    import json

    r = run_dsh(["--json", "--bogus"])
    assert json.loads(r.stdout)["event"] == "error" and r.returncode == 2
    r = run_dsh(["--json", "-c", "v = echo captured\nprintf part; false | retry 1 backoff 10ms"])
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert not any(e.get("text") == "captured" for e in events)
    assert [e["text"] for e in events if e["event"] == "output"] == ["part", "part"]
    (retry,) = [e for e in events if e["event"] == "retry"]
    assert (retry["attempt"], retry["outcome"], retry["wait"]) == (1, "failed", 0.01)

"""The prompt-toolkit REPL in a real terminal (pexpect): marks, completion, history,
Ctrl-C over SSH, built-ins; and the dsh lexer for Pygments."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import time
from pathlib import Path

import pexpect

from tests.conftest import BIN, SshSetup
from tests.helpers.prompt import end, spawn
from tests.sshd import USER, processes_of

EXAMPLES = sorted((Path(__file__).parent.parent.parent / "examples").glob("*.dsh"))


def spawn_with(env: dict[str, str], args: list[str]) -> pexpect.spawn:
    env = {**env, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
    from tests.conftest import dsh_path

    return pexpect.spawn(dsh_path(), args, env=env, dimensions=(24, 120), encoding="utf-8", timeout=30)


def test_a_typo_is_marked_where_it_is(env) -> None:  # type: ignore[no-untyped-def]
    child = spawn(env)
    try:
        child.expect("dsh>")
        child.sendline("@h1 true | within 3 ")
        child.expect("'3' is not a duration")
        child.sendintr()
        child.expect("dsh>")
        child.sendline("@h[1-")  # an unclosed bracket: refused, not run
        child.expect("unclosed '\\['")
        child.sendintr()
        child.expect("dsh>")
        end(child)
    finally:
        child.close()


def test_tab_completes_hosts_inside_a_node_set(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "ssh_config"
    config.write_text("".join(f"Host h{i}\n  HostName 127.0.0.1\n" for i in range(1, 7)) + "Host web1\n")
    child = spawn_with(env, ["--ssh-config", str(config)])
    try:
        child.expect("dsh>")
        child.send("@h[1-")
        child.send("\t")
        child.expect(r"h\[1-6\]")
        child.expect("6 hosts")
        child.sendintr()
        child.expect("dsh>")
        child.send("wi")  # keywords at a statement's start
        child.send("\t")
        child.expect("thin")  # drawn after the "wi" typed
        child.sendintr()
        end(child)
    finally:
        child.close()


def test_ctrl_r_finds_an_earlier_line_after_a_restart(env) -> None:  # type: ignore[no-untyped-def]
    child = spawn(env)
    try:
        child.expect("dsh>")
        child.sendline("echo remembered''-line")
        child.expect("remembered-line")  # the output, not the line as typed
        child.expect("dsh>")
        end(child)
    finally:
        child.close()
    child = spawn(env)
    try:
        child.expect("dsh>")
        child.sendcontrol("r")
        child.expect("I-search backward")
        child.send("remembered")
        child.expect("-line")  # the entry found, its match highlighted
        child.send("\r")  # take it
        child.send("\r")  # and run it
        child.expect("remembered-line\r\n")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()


def test_ctrl_c_cancels_a_remote_sleep_at_once(env, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    child = spawn_with(env, ssh_setup.args())
    try:
        child.expect("dsh>")
        child.sendline("@h1 sleep 30.25")
        deadline = time.monotonic() + 10
        while not processes_of(USER, "sleep 30.25"):
            assert time.monotonic() < deadline, "the remote sleep never started"
            time.sleep(0.05)
        child.sendintr()
        child.expect("cancelled", timeout=5)
        child.expect("dsh>", timeout=5)
        assert processes_of(USER, "sleep 30.25") == {}
        child.sendline("echo still''-here")
        child.expect("still-here")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()


def test_builtins(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "ssh_config"
    config.write_text("Host db1 db2 web1\n  HostName 127.0.0.1\n")
    child = spawn_with(env, ["--ssh-config", str(config), "--session", "bi"])
    try:
        child.expect("dsh>")
        child.sendline("help events")
        child.expect("await port")
        child.sendline("hosts db*")
        child.expect("db1\r\ndb2\r\n")
        child.sendline("explain @web1 true | within 5s")
        child.expect("worst    1 step")
        child.sendline("sessions")
        child.expect(r"bi\s+running")
        child.sendline("history")
        child.expect("explain @web1 true")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_pygmentize_highlights_every_example_without_error_tokens() -> None:
    for example in EXAMPLES:
        r = subprocess.run(
            [str(BIN / "pygmentize"), "-l", "dsh", "-f", "raw", str(example)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert r.returncode == 0, r.stderr
        assert "Token.Keyword" in r.stdout or "Token.Name.Namespace" in r.stdout
        assert "Token.Error" not in r.stdout, example.name


def test_remote_escape_sequences_and_bad_utf8_are_shown_escaped(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    text = r"@h[1-2] printf '\033]0;pwned\007 \033[2J \377 end\n'"
    r = run_dsh([*ssh_setup.args(), "-c", text])
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert "h1 | \\x1b]0;pwned\\x07 \\x1b[2J \\xff end" in r.stdout.splitlines()


def test_no_escape_sequence_without_a_terminal(run_dsh, env, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    env.pop("NO_COLOR")  # colour is off because stdout is not a terminal, not because it was asked
    r = run_dsh([*ssh_setup.args(), "-c", "@h[1-2] echo hi\n@down true\nfalse"])
    assert r.returncode == 1
    assert "\x1b" not in r.stdout + r.stderr


def test_man_pages_render_with_no_warnings() -> None:
    root = Path(__file__).parent.parent.parent
    for page in ("dsh.1", "dsh.7"):
        r = subprocess.run(
            ["man", "--warnings", "-l", str(root / "man" / page)],
            capture_output=True,
            text=True,
            timeout=60,
            env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)
        assert len(r.stdout) > 1000


def test_ctrl_d_while_work_runs_asks_detach_or_cancel(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "long.dsh"
    script.write_text("command sleep 33.25\n")
    for answer, then in (("d", "detached from session"), ("c", "cancelled")):
        name = f"ask-{answer}"
        assert run_dsh(["run", "--detach", "--session", name, str(script)]).returncode == 0
        child = spawn_with(env, ["attach", name])
        try:
            child.expect("dsh>")
            time.sleep(0.5)  # the executor's greeting says what runs
            child.sendeof()
            child.expect(r"\[d\]etach or \[c\]ancel it\?")
            child.sendline(answer)
            child.expect(then)
            child.expect(pexpect.EOF)
        finally:
            child.close()
        if answer == "d":
            assert processes_of_any("sleep 33.25")
            assert run_dsh(["kill", name]).returncode == 0
    time.sleep(0.5)
    assert not processes_of_any("sleep 33.25")


def processes_of_any(pattern: str) -> list[str]:
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return r.stdout.split()


def test_the_toolbar_says_what_runs_and_how_the_last_line_ended() -> None:
    # (prompt-toolkit draws no toolbar where the terminal's height is unknown, as
    # under pexpect without cursor-position replies: so the parts, directly)
    import io

    from dsh.client import Client, Link
    from dsh.lang.compiler import compile_source
    from dsh.lang.source import Source
    from dsh.render import TextRenderer
    from dsh.repl.shell import Toolbar
    from dsh.runtime.protocol import HostDone, Line, LineDone
    from dsh.runtime.results import HostResult
    from dsh.runtime.wire import Replay

    renderer = TextRenderer(io.StringIO(), io.StringIO())
    link = Link(None, None, "m1", lambda take, patience: None, Path("/nonexistent"))  # type: ignore[arg-type]
    client = Client(link, Replay(renderer, renderer.message), renderer.message, print)
    toolbar = Toolbar("s1", "local", "m1", client.progress)
    assert toolbar() == " session s1 · store local · on m1"
    stmt = compile_source(Source("t", "@h[1-3] sleep 1")).statements[0]
    result = HostResult("h1", "ok", 0, 1.0)
    client._track(Line(1, stmt, ("h1", "h2", "h3")))
    client._track(HostDone(1, result))
    assert "running '@h[1-3] sleep 1' 1/3 hosts" in toolbar()
    client._track(LineDone(1, stmt, (result,), 1.0, True, "", False))
    assert toolbar() == " session s1 · store local · on m1"
    client.runner.close()


def test_tab_offers_every_inventorys_groups(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The config's [groups], --inventory's and ClusterShell's (from a cache made in the
    background: Tab never waits on a group source) after `@{`; `hosts` lists them."""
    groups_d = Path(env["XDG_CONFIG_HOME"]) / "clustershell" / "groups.d"
    groups_d.mkdir(parents=True)
    (groups_d / "site.yaml").write_text("site:\n  alpha: h1\n  beta: 'h[2-3]'\n")
    (Path(env["XDG_CONFIG_HOME"]) / "dsh").mkdir()
    (Path(env["XDG_CONFIG_HOME"]) / "dsh" / "config.toml").write_text('[groups]\ndelta = "h4"\n')
    inventory = tmp_path / "inv.ini"
    inventory.write_text("[gamma]\nh5\nh6\n")
    child = spawn_with(env, ["--inventory", str(inventory)])
    try:
        child.expect("dsh>")
        cache = Path(env["XDG_STATE_HOME"]) / "dsh" / "cache" / "clustershell-groups.json"
        deadline = time.monotonic() + 20
        while not cache.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cache.exists() and oct(cache.stat().st_mode & 0o777) == "0o600"
        child.send("@{")
        child.send("\t")
        for name in ("alpha", "beta", "delta", "gamma"):
            child.expect_exact(f"@{{{name}}}")
        child.sendintr()
        child.expect("dsh>")
        child.send("@{site:b")
        child.send("\t")
        child.expect_exact("eta}")  # the one completion, drawn after what was typed
        child.sendintr()
        child.expect("dsh>")
        child.sendline("hosts g*")
        child.expect_exact("@{gamma} = h[5-6]")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()


def _executor_of(state: Path) -> int | None:
    """The pid of the session executor started with `state` as XDG_STATE_HOME."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"XDG_STATE_HOME={state}\0".encode() in environ and b"\0_executor\0" in cmdline:
            return int(pid)
    return None


def test_the_prompt_is_drawn_while_the_executor_starts_and_a_line_typed_then_runs_once(  # type: ignore[no-untyped-def]
    env,
) -> None:
    child = spawn({**env, "DSH_FAULT_SLOW_START": "3"})  # its executor starts 3 s late
    seen = io.StringIO()
    child.logfile_read = seen
    try:
        started = time.monotonic()
        child.expect("dsh>")
        assert time.monotonic() - started < 2.5  # not after the executor's hello
        while _executor_of(Path(env["XDG_STATE_HOME"])) is None:  # it starts meanwhile
            assert time.monotonic() - started < 2.5, "no executor was started"
            time.sleep(0.02)
        child.sendline("echo once $((20+22))")
        child.expect("once 42")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()
    assert child.exitstatus == 0, seen.getvalue()
    assert seen.getvalue().count("once 42") == 1, seen.getvalue()


def test_an_executor_that_dies_before_its_hello_ends_the_prompt_with_why(env) -> None:  # type: ignore[no-untyped-def]
    state = Path(env["XDG_STATE_HOME"])
    child = spawn({**env, "DSH_FAULT_SLOW_START": "10"})
    try:
        child.expect("dsh>")
        deadline = time.monotonic() + 5
        while (pid := _executor_of(state)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pid is not None, "no executor was started"
        os.kill(pid, signal.SIGKILL)
        child.expect(r"its executor stopped \(exit -9\)")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3  # the session's executor is gone: dsh attach takes it over


def test_ctrl_c_while_the_first_line_waits_for_the_session_drops_that_line_only(  # type: ignore[no-untyped-def]
    env,
) -> None:
    child = spawn({**env, "DSH_FAULT_SLOW_START": "3"})
    seen = io.StringIO()
    child.logfile_read = seen
    try:
        child.expect("dsh>")
        child.sendline("echo dropped $((1+1))")
        time.sleep(0.5)  # it waits for the executor, which starts 3 s late
        child.sendintr()
        child.expect("the line did not run: the session was still starting")
        child.expect("dsh>")
        child.sendline("echo kept $((2+2))")
        child.expect("kept 4")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()
    assert child.exitstatus == 0, seen.getvalue()
    assert "dropped 2" not in seen.getvalue()

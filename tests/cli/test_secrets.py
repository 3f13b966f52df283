"""Secret values (issue 18, item 4): `x = secret "PROMPT"` asks, and binds a value
that only the commands that use it see, in their environment; it is never in an
argv, the store, the journal or a log, and is masked as *** in what is shown and
kept of output. A new owner asks again."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from dsh import plan as p
from dsh.lang.compiler import Context, compile_source
from dsh.lang.source import Source
from dsh.session.records import FORMAT
from tests.conftest import SshSetup, dsh_path

VALUE = "hunter2 'quoted' $HOME"


def _askpass(tmp_path: Path, value: str = VALUE) -> Path:
    """An askpass program that answers `value` and logs each prompt it gets."""
    prog = tmp_path / "askpass"
    prog.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >>{tmp_path}/asked\nprintf '%s\\n' {_sh(value)}\n")
    prog.chmod(0o700)
    return prog


def _sh(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dsh_path(), *args], capture_output=True, text=True, env=env, timeout=timeout, start_new_session=True
    )


def _files_holding(secret: bytes, root: Path) -> list[str]:
    """Files under `root` holding `secret`, but the spool's output files (where a
    command that prints its secret put it: that is the command's doing)."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.name.endswith((".out", ".err")) and secret in path.read_bytes():
            found.append(str(path))
    return found


def test_secret_compiles_to_a_binding_asked_at_run_time() -> None:
    plan = compile_source(Source("<t>", 'pw = secret "db password"\necho $pw'), Context())
    bind = plan.statements[0]
    assert isinstance(bind, p.Bind) and isinstance(bind.value, p.Secret)
    assert bind.value.prompt == p.Text((p.Lit("db password"),))
    reloaded = p.loads(p.dumps(plan))
    assert reloaded == plan and reloaded.version == 2  # the lowest that holds a secret
    # Without a secret, a plan is version 1, as an older dsh wrote (and reads) it.
    assert compile_source(Source("<t>", "echo hi"), Context()).version == 1


def test_a_secret_without_its_prompt_is_a_compile_error(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["-c", "pw = secret \necho $pw"])
    assert r.returncode == 2 and "`secret` takes the prompt to show" in r.stderr, r.stderr
    r = run_dsh(["-c", 'pw = secret "a" "b"'])
    assert r.returncode == 2 and "`secret` takes one prompt" in r.stderr and "^" in r.stderr


def test_a_command_reads_the_secret_from_its_environment_and_output_masks_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    prog = _askpass(tmp_path)
    script = tmp_path / "s.dsh"
    script.write_text(
        'pw = secret "db password"\n'
        'test "$pw" = "$DSH_S_pw" && echo same\n'
        'echo $pw; echo "[$pw]" >&2\n'
        'y = "pre-$pw"\n'
        "echo $y\n"
        "command sleep 1; echo $pw\n"
    )
    proc = subprocess.Popen(
        [dsh_path(), "--session", "sec", "--askpass", str(prog), str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    holders: list[str] = []
    secret = VALUE.encode()
    while proc.poll() is None:  # no argv holds it; only the command's processes (DSH_ASK) hold it
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if secret in cmdline or (secret in environ and b"DSH_ASK=" not in environ):
                holders.append(cmdline.decode(errors="replace"))
        time.sleep(0.01)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.decode().splitlines() == ["same", "***", "pre-***", "***"]
    assert "[***]" in err.decode() and VALUE not in err.decode()
    assert holders == []
    assert (tmp_path / "asked").read_text() == "db password: \n"  # asked once
    state = Path(env["XDG_STATE_HOME"])
    assert _files_holding(secret, state) == []  # the store (and its WAL), logs
    with sqlite3.connect(state / "dsh" / "store.db") as db:
        rows = dict(db.execute("SELECT key, value FROM kv").fetchall())
    bound = {bytes(k).decode(): bytes(v) for k, v in rows.items() if b"/bind/" in bytes(k)}
    assert json.loads(next(v for k, v in bound.items() if k.endswith("/bind/pw"))) == {
        "v": FORMAT,
        "kind": "secret",
        "prompt": "db password",
    }
    assert any(b"DSH_S_pw" in bytes(v) for v in rows.values())  # the intent names the variable


def test_a_secret_reaches_hosts_over_ssh_in_their_environment(
    env: dict[str, str], tmp_path: Path, ssh_setup: SshSetup
) -> None:
    prog = _askpass(tmp_path)
    r = _run(
        env,
        *ssh_setup.args(),
        "--askpass",
        str(prog),
        "-c",
        f'pw = secret "pw"\n@h[1-2] test "$pw" = {_sh(VALUE)} && echo $pw',
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("***") >= 2 and VALUE not in r.stdout + r.stderr


def test_a_secret_cannot_go_where_no_environment_reaches(env: dict[str, str], tmp_path: Path) -> None:
    prog = _askpass(tmp_path, "web1")
    r = _run(env, "--askpass", str(prog), "-c", 'h = secret "host"\nawait file /$h within 1s')
    assert r.returncode == 1
    assert "$h is a secret: only a command's text can use it" in r.stdout + r.stderr


def test_no_answer_binds_nothing_and_fails_the_line(env: dict[str, str]) -> None:
    r = _run(env, "-c", 'pw = secret "pw"\necho never')
    assert r.returncode == 1
    assert "pw: no answer to its prompt (pw); nothing is bound" in r.stderr
    assert "never" not in r.stdout


def test_a_new_owner_asks_again(env: dict[str, str], tmp_path: Path) -> None:
    """The store keeps a secret's prompt, never its value: the owner that takes the
    session over asks again before a command uses it."""
    prog = _askpass(tmp_path)
    script = tmp_path / "s.dsh"
    script.write_text('pw = secret "vault token"\nsleep 3s\ntest "$pw" = "$DSH_S_pw" && echo $pw done\n')
    env = {**env, "DSH_LEASE_TTL": "1"}
    r = _run(env, "--askpass", str(prog), "run", "--detach", "--session", "tk", str(script))
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 20
    while not (tmp_path / "asked").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # into the sleep
    listed = _run(env, "ls", "--json").stdout
    (entry,) = [e for e in map(json.loads, listed.splitlines()) if e["name"] == "tk"]
    os.kill(entry["owner_pid"], signal.SIGKILL)
    r = _run({**env, "DSH_MACHINE_ID": "other"}, "--askpass", str(prog), "attach", "tk")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "*** done" in r.stdout and VALUE not in r.stdout
    assert (tmp_path / "asked").read_text() == "vault token: \nvault token: \n"

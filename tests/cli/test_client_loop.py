"""The client on one event loop (issue 17, item 6): it starts no thread and sends itself
no signal (threads that libraries start are listed in docs/architecture.md); and the
protocol it speaks with its executor is versioned: either end refuses another version
with a sentence, exit 3."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pexpect

from dsh.session.codec import dumps
from dsh.session.keys import Keys, user_name, user_tree
from dsh.session.records import Owner
from dsh.store.sqlite import SqliteStore
from tests.conftest import BIN
from tests.helpers.prompt import end
from tests.helpers.store import with_store
from tests.helpers.wait import wait_for

#: Runs dsh (its arguments follow) with every thread start and every signal dsh
#: sends itself written to $DSHTEST_THREADS, with the code that asked for it: the
#: innermost frame outside the standard library.
_WATCHED = """
import os, runpy, signal, sys, sysconfig, threading, traceback
_OUT = os.environ["DSHTEST_THREADS"]
_STDLIB = sysconfig.get_paths()["stdlib"]

def _note(what):
    frames = traceback.extract_stack()[:-2]
    by = next((f for f in reversed(frames) if not f.filename.startswith(_STDLIB)), None)
    where = f"{by.filename}:{by.lineno}" if by is not None else "?"
    with open(_OUT, "a") as out:
        out.write(f"{what}\\t{where}\\n")

_start = threading.Thread.start
def start(self):
    _note(f"thread {self.name}")
    _start(self)
threading.Thread.start = start

_kill = os.kill
def kill(pid, signum):
    if pid in (0, os.getpid()):
        _note(f"signal {signum}")
    return _kill(pid, signum)
os.kill = kill
_raise = signal.raise_signal
def raise_signal(signum):
    _note(f"signal {signum}")
    return _raise(signum)
signal.raise_signal = raise_signal
_pthread_kill = signal.pthread_kill
def pthread_kill(ident, signum):
    _note(f"signal {signum}")
    return _pthread_kill(ident, signum)
signal.pthread_kill = pthread_kill

sys.argv = ["dsh", *sys.argv[1:]]
runpy.run_module("dsh", run_name="__main__", alter_sys=True)
"""

DSH = Path(__file__).parent.parent.parent / "dsh"


def watched(record: Path) -> tuple[list[str], list[str]]:
    """What the watched dsh started and sent: (dsh's own, the libraries')."""
    lines = record.read_text().splitlines() if record.exists() else []
    own = [line for line in lines if line.split("\t")[1].startswith(str(DSH))]
    # The store's worker (dsh/store/sqlite.py) is the store's, not the client's: it is listed
    # in docs/architecture.md with the libraries'.
    own_client = [line for line in own if not line.split("\t")[1].startswith(str(DSH / "store"))]
    return own_client, [line for line in lines if line not in own_client]


def test_the_client_starts_no_thread_and_sends_itself_no_signal(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    record = tmp_path / "threads"
    env = {**env, "DSHTEST_THREADS": str(record), "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
    python = str(BIN / "python")
    # At a terminal: a line with output, a line cancelled with Ctrl-C, Ctrl-D.
    child = pexpect.spawn(
        python,
        ["-c", _WATCHED, "--session", "t1"],
        env=env,
        dimensions=(24, 120),
        encoding="utf-8",
        timeout=30,
    )
    try:
        child.expect("dsh>")
        child.sendline("echo from''-the-prompt")
        child.expect("from-the-prompt")
        child.expect("dsh>")
        child.sendline("command sleep 30.75")
        child.expect(r"\r\n")
        time.sleep(0.5)
        child.sendintr()
        child.expect("cancelled")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()
    assert child.exitstatus == 130  # the status of the last line: cancelled
    # Following a session that another machine runs, lines piped in.
    script = tmp_path / "busy.dsh"
    script.write_text("sleep 1s\n")
    r = run_dsh(["run", "--detach", "--session", "t2", str(script)], env_extra={"DSH_MACHINE_ID": "A"})
    assert r.returncode == 0, r.stderr
    follow = subprocess.run(
        [python, "-c", _WATCHED, "attach", "t2"],
        env={**env, "DSH_MACHINE_ID": "B"},
        input="echo typed-on-B\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert follow.returncode == 0, follow.stdout + follow.stderr
    assert "following it" in follow.stderr and "typed-on-B" in follow.stdout, follow.stdout + follow.stderr
    own, libraries = watched(record)
    assert own == [], own
    assert not [line for line in libraries if line.startswith("signal")], libraries
    print("threads that libraries (and the store) started:", *sorted(set(libraries)), sep="\n  ")


def _owner_points_at(env: dict[str, str], name: str, machine: str, path: Path) -> None:
    async def put(store: SqliteStore) -> None:
        owner = Owner(machine, os.getpid(), time.time(), 5.0, str(path))
        await store.put(Keys(user_tree(user_name()), name).owner, dumps(owner), timeout=10)

    with_store(env, put)


def test_attach_refuses_an_executor_of_a_newer_protocol_with_a_sentence(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    machine = {"DSH_MACHINE_ID": "m1"}
    assert run_dsh(["--session", "pv", "-c", "true"], env_extra=machine).returncode == 0
    here = tmp_path / "run"
    here.mkdir(mode=0o700)
    path = here / "newer.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(20)
    heard: list[bytes] = []

    def newer_executor() -> None:  # says hello in protocol 3, then listens until hung up on
        with server, server.accept()[0] as client:
            client.settimeout(20)
            client.sendall(b'{"ev":"hello","v":4,"session":"pv","pid":1,"running":null,"tls":true}\n')
            while data := client.recv(4096):
                heard.append(data)

    thread = threading.Thread(target=newer_executor, daemon=True)
    thread.start()
    _owner_points_at(env, "pv", "m1", path)
    r = run_dsh(["attach", "pv"], input="echo never\n", env_extra=machine, timeout=30)
    thread.join(10)
    assert r.returncode == 3, r.stdout + r.stderr
    assert r.stderr.endswith(
        "dsh: the executor of session pv speaks protocol 4, this dsh 3: another version of dsh runs it; "
        "attach with that version, or once its work is over, attach again\n"
    ), r.stderr
    assert heard == []  # nothing was asked of it: no line submitted, no poke
    assert "never" not in r.stdout


def test_an_executor_refuses_a_client_of_a_newer_protocol_and_serves_the_others(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    script = tmp_path / "slow.dsh"
    script.write_text("sleep 2s\necho done-here\n")
    assert run_dsh(["run", "--detach", "--session", "pn", str(script)]).returncode == 0

    async def owner(store: SqliteStore) -> dict[str, object] | None:
        held = await store.get(Keys(user_tree(user_name()), "pn").owner, timeout=10)
        return json.loads(held.value) if held is not None else None

    wait_for(lambda: (with_store(env, owner) or {}).get("socket") is not None)
    held = with_store(env, owner)
    assert held is not None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(20)
        sock.connect(str(held["socket"]))
        stream = sock.makefile("rb")
        hello = json.loads(stream.readline())
        assert (hello["ev"], hello["v"], hello["session"]) == ("hello", 3, "pn")
        sock.sendall(b'{"op": "poke", "v": 4}\n')
        said = [json.loads(line) for line in stream]  # up to its hanging up
    assert said[-1] == {
        "ev": "end",
        "v": 3,
        "exit": 3,
        "message": "a client speaks protocol 4, this dsh 3: another version of dsh runs this session's "
        "executor; attach with that version",
    }
    r = run_dsh(["attach", "pn"], timeout=30)  # the executor goes on, for the others
    assert r.returncode == 0 and "done-here" in r.stdout, r.stdout + r.stderr
    log = Path(env["XDG_STATE_HOME"]) / "dsh" / "log" / "pn.log"
    assert "a client speaks protocol 4" in log.read_text()

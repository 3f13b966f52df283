"""What dsh keeps on this machine is its user's alone (fault report #2, #3): the
state directory and everything in it, the prompt's history, and the executor's
socket, wherever it goes; a client talks only to a socket its own user serves."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pexpect
import pytest

from dsh import localsocket
from dsh.remote.askpass import HELPER_NAME
from dsh.session.keys import Keys, user_name, user_tree
from dsh.state import is_own_private
from dsh.store.sqlite import SqliteStore
from tests.conftest import dsh_path
from tests.helpers.store import with_store
from tests.sshd import USER as OTHER_USER

#: A legal session name long enough that its socket path under the state
#: directory passes SOCKET_PATH_MAX: the socket goes under TMPDIR instead.
LONG_NAME = "deploy-" + "x" * 57
T = TypeVar("T")

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="making files of another user needs root")


def other_user() -> tuple[int, int]:
    entry = pwd.getpwnam(OTHER_USER)
    return entry.pw_uid, entry.pw_gid


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A TMPDIR of the test's own, world-writable and sticky as /tmp is (the real
    /tmp/dsh-UID is never touched), with a short path: a socket's must fit."""
    tmp = Path(tempfile.mkdtemp(prefix="dsh-t"))
    tmp.chmod(0o1777)
    yield tmp
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def tmpdir_env(env: dict[str, str], short_tmp: Path) -> dict[str, str]:
    return {**env, "TMPDIR": str(short_tmp)}


def modes(root: Path) -> dict[str, str]:
    """Every path under `root` (and root) that others could use: name -> what is wrong."""
    wrong: dict[str, str] = {}
    for where, dirs, files in os.walk(root):
        for name in [".", *dirs, *files]:
            path = Path(where) / name if name != "." else Path(where)
            try:
                st = os.lstat(path)
            except FileNotFoundError:  # gone meanwhile (the spool renames as it goes)
                continue
            mode = stat.S_IMODE(st.st_mode)
            # the sudo helper is its owner's to run, only; it is written through
            # NAME.PID, which is 0600 until its chmod (the walk may see it between)
            allowed = {0o600}
            if name == HELPER_NAME:
                allowed = {0o700}
            elif name.startswith(HELPER_NAME + "."):
                allowed = {0o600, 0o700}
            if stat.S_ISDIR(st.st_mode) and mode != 0o700:
                wrong[str(path)] = f"directory {mode:04o}"
            elif stat.S_ISREG(st.st_mode) and mode not in allowed:
                wrong[str(path)] = f"file {mode:04o}"
            elif mode & 0o077:
                wrong[str(path)] = f"{stat.filemode(st.st_mode)}"
    return wrong


def owner_record(env: dict[str, str], name: str) -> dict[str, object] | None:
    async def read(store: SqliteStore) -> dict[str, object] | None:
        held = await store.get(Keys(user_tree(user_name()), name).owner, timeout=10)
        return json.loads(held.value) if held is not None else None

    return with_store(env, read)


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


# -- #3: the state directory, its logs, its store and the history are private ---------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_F3_a_detached_run_first_makes_the_state_directory_private(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path, umask: int
) -> None:
    (tmp_path / "s.dsh").write_text("echo started\nsleep 1500ms\necho finished\n")
    old = os.umask(umask)
    try:
        r = run_dsh(["run", "--detach", "--session", "loc1", "s.dsh"])
        assert (r.returncode, r.stderr) == (0, "")
        state = Path(env["XDG_STATE_HOME"])
        running = modes(state)  # while it runs: its socket, the store's -wal and -shm, the log
        assert wait_until(lambda: owner_record(env, "loc1") is None, 20)
        done = modes(state)
    finally:
        os.umask(old)
    assert running == {} and done == {}
    assert (state / "dsh" / "log" / "loc1.log").read_text().count("finished") == 1
    assert (state / "dsh" / "store.db").exists()


@needs_root
def test_F3_a_state_directory_left_open_by_an_older_dsh_is_closed(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path, umask_022: None
) -> None:
    dsh_dir = Path(env["XDG_STATE_HOME"]) / "dsh"
    (dsh_dir / "log").mkdir(parents=True)
    (dsh_dir / "log" / "old.log").write_text("old output\n")
    for path, mode in ((dsh_dir, 0o755), (dsh_dir / "log", 0o755), (dsh_dir / "log" / "old.log", 0o644)):
        path.chmod(mode)
    (tmp_path / "s.dsh").write_text("echo again\n")
    r = run_dsh(["run", "--detach", "--session", "old", "s.dsh"])
    assert (r.returncode, r.stderr) == (0, "")
    assert stat.S_IMODE(dsh_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((dsh_dir / "log").stat().st_mode) == 0o700
    assert stat.S_IMODE((dsh_dir / "log" / "old.log").stat().st_mode) == 0o600
    # A directory of another user's is not dsh's to change (and nothing fails).
    uid, gid = other_user()
    os.chown(dsh_dir, uid, gid)
    dsh_dir.chmod(0o755)
    try:
        assert run_dsh(["--store", f"sqlite:///{tmp_path}/s.db", "-c", "true"]).returncode == 0
        assert stat.S_IMODE(dsh_dir.stat().st_mode) == 0o755
    finally:
        os.chown(dsh_dir, os.getuid(), os.getgid())


def test_F3_with_another_store_the_spool_and_logs_still_make_it_private(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path, umask_022: None
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    store = ["--store", f"sqlite:///{shared}/deep/s.db"]
    assert run_dsh([*store, "--session", "o1", "-c", "echo hi"]).stdout == "hi\n"
    (tmp_path / "s.dsh").write_text("echo detached\n")
    assert run_dsh([*store, "run", "--detach", "--session", "o2", "s.dsh"]).returncode == 0
    state = Path(env["XDG_STATE_HOME"])
    assert (state / "dsh" / "log" / "o2.log").exists() and not (state / "dsh" / "store.db").exists()
    assert modes(state) == {}
    # An explicit store path: its directory is made private, an existing one is left.
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert modes(shared / "deep") == {}


def test_F3_the_prompt_history_is_private(env, umask_022: None) -> None:  # type: ignore[no-untyped-def]
    child = pexpect.spawn(
        dsh_path(),
        env={**env, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"},
        dimensions=(24, 120),
        encoding="utf-8",
        timeout=30,
    )
    try:
        child.expect("dsh>")
        child.sendline('x = "hunter2-password"')
        child.expect("dsh>")
        child.sendline("help builtins")  # the prompt is surely up again before Ctrl-D
        child.expect("explain LINE")
        child.expect("dsh>")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    state = Path(env["XDG_STATE_HOME"])
    history = state / "dsh" / "history"
    assert "hunter2-password" in history.read_text()
    assert stat.S_IMODE(history.stat().st_mode) == 0o600
    assert modes(state) == {}


# -- #2: the socket directory under TMPDIR, binding, and what a client dials ----------------


def _tmp_squat(tmp: Path, kind: str) -> Path:
    """Put at `tmp/dsh-UID` what another user (or an older mistake) could have."""
    squat = tmp / f"dsh-{os.getuid()}"
    uid, gid = other_user()
    if kind == "file of another user":
        squat.write_text("")
        os.chown(squat, uid, gid)
    elif kind == "open directory of another user":
        squat.mkdir()
        squat.chmod(0o777)
        os.chown(squat, uid, gid)
    elif kind == "private directory of another user":
        squat.mkdir(mode=0o700)
        os.chown(squat, uid, gid)
    elif kind == "open directory of ours":
        squat.mkdir()
        squat.chmod(0o755)
    elif kind == "link to a private directory of ours":
        target = tmp / "mine"
        target.mkdir(mode=0o700)
        squat.symlink_to(target)
    return squat


@needs_root
@pytest.mark.parametrize(
    "kind",
    [
        "file of another user",
        "open directory of another user",
        "private directory of another user",
        "open directory of ours",
        "link to a private directory of ours",
    ],
)
def test_F2_the_tmpdir_socket_directory_is_used_only_if_it_is_ours_alone(
    tmp_path: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    tmp = short_tmp
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    squat = _tmp_squat(tmp, kind)
    before = os.lstat(squat)
    state_dir = tmp_path / ("state-" + "s" * 40) / "dsh"
    listener = localsocket.listen(state_dir, "vm", LONG_NAME)
    try:
        assert listener.path.parent != squat and listener.path.parent.parent == tmp
        assert is_own_private(listener.path.parent)
        assert stat.S_IMODE(os.lstat(listener.path).st_mode) & 0o077 == 0
        assert listener.note is not None and str(squat) in listener.note
        after = os.lstat(squat)
        assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)
    finally:
        listener.close()
    assert not listener.path.parent.exists()  # its own directory goes with it


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_F2_a_free_tmpdir_socket_directory_is_made_private_and_shared(
    tmp_path: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch, umask: int
) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(short_tmp))
    state_dir = tmp_path / ("state-" + "s" * 40) / "dsh"
    old = os.umask(umask)
    try:
        listener = localsocket.listen(state_dir, "vm", LONG_NAME)
    finally:
        os.umask(old)
    try:
        assert listener.path.parent == short_tmp / f"dsh-{os.getuid()}" and listener.note is None
        assert is_own_private(listener.path.parent)
        assert stat.S_IMODE(os.lstat(listener.path).st_mode) & 0o077 == 0
    finally:
        listener.close()
    assert listener.path.parent.exists()  # kept for the next executor


@needs_root
def test_F2_a_file_at_the_tmpdir_socket_directory_does_not_stop_the_run(  # type: ignore[no-untyped-def]
    run_dsh, tmpdir_env, tmp_path: Path
) -> None:
    tmp = Path(tmpdir_env["TMPDIR"])
    squat = _tmp_squat(tmp, "file of another user")
    (tmp_path / "s.dsh").write_text("echo started\nsleep 1s\necho finished\n")
    r = run_dsh(["run", "--detach", "--session", LONG_NAME, "s.dsh"], env_extra=tmpdir_env)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{LONG_NAME}\n", "")
    owner = owner_record(tmpdir_env, LONG_NAME)
    assert owner is not None, "the executor did not own the session"
    where = Path(str(owner["socket"])).parent
    assert where.parent == tmp and where != squat and is_own_private(where)
    r = run_dsh(["attach", LONG_NAME], env_extra=tmpdir_env)
    assert r.returncode == 0 and "finished" in r.stdout + r.stderr, r.stderr
    assert squat.is_file() and squat.read_text() == ""
    assert wait_until(lambda: not where.exists(), 15), "the executor's own socket directory was left"


@needs_root
def test_F2_an_open_directory_of_another_user_is_not_used_for_the_socket(  # type: ignore[no-untyped-def]
    run_dsh, tmpdir_env, tmp_path: Path
) -> None:
    tmp = Path(tmpdir_env["TMPDIR"])
    squat = _tmp_squat(tmp, "open directory of another user")
    (tmp_path / "s.dsh").write_text("echo started\nsleep 1s\necho finished\n")
    r = run_dsh(["run", "--detach", "--session", LONG_NAME, "s.dsh"], env_extra=tmpdir_env)
    assert r.returncode == 0, r.stderr
    owner = owner_record(tmpdir_env, LONG_NAME)
    assert owner is not None
    where = Path(str(owner["socket"])).parent
    assert where != squat and is_own_private(where)
    assert list(squat.iterdir()) == []  # nothing of the executor's in the other user's directory
    log = Path(tmpdir_env["XDG_STATE_HOME"]) / "dsh" / "log" / f"{LONG_NAME}.log"
    assert f"{squat} is a directory of uid {other_user()[0]}, mode 0777" in log.read_text()
    r = run_dsh(["attach", LONG_NAME], env_extra=tmpdir_env)
    assert r.returncode == 0 and "finished" in r.stdout + r.stderr, r.stderr


#: A fake executor: it says something, then reads until it is hung up on.
_IMPOSTOR = """
import socket, sys
s = socket.socket(fileno=int(sys.argv[1])); s.settimeout(20); s.listen()
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(20)
try:
    c.sendall(b'{"ev":"msg","text":"spoofed: deploy finished"}\\n')
    while c.recv(4096):
        pass
except OSError:
    pass
"""


@contextlib.contextmanager
def impostor(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A socket at `path` (bound by us, in our directory) that another user's
    process listens on and serves: as if it had swapped the executor's."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    server = subprocess.Popen(
        ["runuser", "-u", OTHER_USER, "--", "/usr/bin/python3", "-c", _IMPOSTOR, str(sock.fileno())],
        pass_fds=[sock.fileno()],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sock.close()
    try:
        assert server.stdout is not None and server.stdout.readline() == "ready\n"
        yield server
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 9)
        server.wait()


@needs_root
def test_F2_a_client_refuses_a_socket_served_by_another_user(tmp_path: Path) -> None:
    here = tmp_path / "run"
    here.mkdir(mode=0o700)  # a directory of ours: only the peer's credentials give it away
    path = here / "s.sock"
    with impostor(path) as server:
        with pytest.raises(localsocket.ForeignSocket) as refused:
            localsocket.dial(str(path))
        uid = other_user()[0]
        assert refused.value.message == (
            f"refusing the executor socket {path}: the process serving it runs as uid {uid}, "
            f"not as you (uid {os.getuid()})"
        )
        assert refused.value.exit_code == 1
        assert server.wait(10) == 0  # hung up on at once


@needs_root
def test_F2_attach_refuses_an_executor_socket_served_by_another_user(  # type: ignore[no-untyped-def]
    run_dsh, env, tmp_path: Path
) -> None:
    machine = {"DSH_MACHINE_ID": "m1"}
    assert run_dsh(["--session", "imp", "-c", "true"], env_extra=machine).returncode == 0
    here = tmp_path / "run"
    here.mkdir(mode=0o700)
    path = here / "s.sock"
    with impostor(path):
        record = {"machine": "m1", "pid": os.getpid(), "since": time.time(), "ttl": 5, "socket": str(path)}

        async def own(store: SqliteStore) -> None:
            await store.put(
                Keys(user_tree(user_name()), "imp").owner, json.dumps(record).encode(), timeout=10
            )

        with_store(env, own)
        r = run_dsh(["attach", "imp"], env_extra=machine, timeout=20)
    assert "spoofed" not in r.stdout + r.stderr
    assert r.returncode == 1
    assert r.stderr.endswith(
        f"dsh: refusing the executor socket {path}: the process serving it runs as "
        f"uid {other_user()[0]}, not as you (uid {os.getuid()})\n"
    )


@needs_root
def test_F2_a_client_refuses_a_socket_in_a_directory_not_its_own(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o777)
    os.chown(theirs, *other_user())
    path = theirs / "s.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))  # even served by us: anyone could have put it there, or swap it
    sock.listen()
    try:
        with pytest.raises(localsocket.ForeignSocket, match="its directory is a directory of uid"):
            localsocket.dial(str(path))
    finally:
        sock.close()
    # A socket of ours in a private directory of ours is dialled.
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(mine / "s.sock"))
    listener.listen()
    try:
        dialled = localsocket.dial(str(mine / "s.sock"))
        assert dialled is not None
        dialled.close()
        assert localsocket.dial(str(mine / "gone.sock")) is None  # nothing there: no executor
    finally:
        listener.close()


def test_F5_each_executor_binds_a_socket_of_its_own_and_removes_dead_ones(tmp_path: Path) -> None:
    # Executors that start for one session at once (one wins it) must not remove or
    # replace each other's socket: the loser's clients join the winner's.
    run = tmp_path / "state" / "run" / "vm"
    run.mkdir(parents=True, mode=0o700)
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead, live = run / f"s1.{gone.pid}.sock", run / f"s1.{os.getppid()}.sock"
    others = [run / f"s1.x.{gone.pid}.sock", run / f"s10.{gone.pid}.sock"]  # other sessions'
    for path in (dead, live, *others):
        path.write_text("")
    listener = localsocket.listen(tmp_path / "state", "vm", "s1")
    try:
        assert listener.path == run / f"s1.{os.getpid()}.sock"
        assert not dead.exists() and live.exists() and all(p.exists() for p in others)
    finally:
        listener.close()
    assert not listener.path.exists() and live.exists()

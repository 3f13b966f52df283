"""The host agent's FS and RUN (dsh/remote/hostagent/files.py, child.py), run on this
machine as a child over pipes (tests/helpers/hostagent.py), on this Python and on
the older ones a host may have: SFTP's meaning for each file operation, and a
bounded child whose stdin and environment go nowhere else."""

from __future__ import annotations

import os
import resource
import signal
import stat
import sys
import time
from pathlib import Path

import pytest

from dsh.remote.hostagent import child, files, wire
from tests.helpers.hostagent import OLD_PYTHONS, Link
from tests.helpers.procs import alive

PYTHONS = [sys.executable, *OLD_PYTHONS]


def agent(links: list[Link], cwd: Path, python: str = sys.executable, **env: str) -> Link:
    link = Link(env={**os.environ, **env}, cwd=str(cwd), python=python)
    links.append(link)
    return link


def fs(link: Link, *fields: bytes | str | int) -> tuple[int, list[bytes]]:
    """One FS request: (DONE, FAILED or ERROR, its fields)."""
    ((kind, got),) = link.collect(link.send(wire.FS, list(fields)))
    return kind, got


def done(link: Link, *fields: bytes | str | int) -> list[bytes]:
    kind, got = fs(link, *fields)
    assert kind == wire.DONE, (kind, got)
    return got


def run(link: Link, *argv: str, timeout: int = 10, stdin: bytes = b"", env: str = "") -> list[bytes]:
    frames = link.collect(link.send(wire.RUN, [timeout, stdin, env, *argv]), timeout=timeout + 15)
    ((kind, got),) = frames
    assert kind == wire.DONE, (kind, got)
    return got


# FS


@pytest.mark.parametrize("python", PYTHONS)
def test_file_operations_mean_what_sftp_means(tmp_path: Path, links: list[Link], python: str) -> None:
    umask = os.umask(0o022)  # the login's: what mkdir takes from a mode (the agent's own is 077)
    try:
        link = agent(links, tmp_path, python, LC_ALL="C")  # 3.6 in the C locale: paths as bytes
    finally:
        os.umask(umask)
    assert done(link, "lstat", "nothing") == [b"none"]
    assert done(link, "stat", "nothing/below") == [b"none"]
    assert done(link, "mkdir", "d", 0o777) == []
    assert done(link, "stat", "d") == [b"dir", b"%d" % 0o755, b"%d" % (tmp_path / "d").stat().st_size]
    kind, got = fs(link, "mkdir", "d", 0o700)
    assert (kind, got) == (wire.FAILED, [b"File exists", b"EEXIST"])
    data = b"\x00\xffany bytes\n"
    assert done(link, "create", b"d/caf\xe9", data) == [b"1"]
    assert (tmp_path / "d").joinpath(os.fsdecode(b"caf\xe9")).read_bytes() == data
    assert stat.S_IMODE((tmp_path / "d" / os.fsdecode(b"caf\xe9")).stat().st_mode) == 0o600
    assert done(link, "create", b"d/caf\xe9", b"other") == [b"0"]  # exists: left alone
    made = (tmp_path / "d").joinpath(os.fsdecode(b"caf\xe9")).stat()
    which = b"%d:%d" % (made.st_dev, made.st_ino)  # which file the bytes are of
    assert done(link, "read", b"d/caf\xe9", 1, 100) == [data[1:], which]
    assert done(link, "read", b"d/caf\xe9", 100, 10) == [b"", which]
    # a link planted at the name: never followed, by create or by a write anew
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    (tmp_path / "d" / "planted").symlink_to(target)
    assert done(link, "create", "d/planted", b"x") == [b"0"]
    assert fs(link, "write", "d/planted", 0, "0", b"x")[1][1] == b"ELOOP"
    assert fs(link, "truncate", "d/planted", 0)[1][1] == b"ELOOP"
    assert done(link, "lstat", "d/planted") == [b"link", b"511", b"%d" % len(str(target))]
    assert done(link, "stat", "d/planted") == [b"file", b"%d" % (target.stat().st_mode & 0o7777), b"8"]
    assert done(link, "write", "d/planted", 0, "1", b"new") == []
    assert target.read_bytes() == b"precious"
    assert (tmp_path / "d" / "planted").read_bytes() == b"new" and not (
        tmp_path / "d" / "planted"
    ).is_symlink()
    # taken up: at an offset of the same regular file, then cut to its length
    assert done(link, "write", "d/planted", 6, "0", b"tail") == []
    assert (tmp_path / "d" / "planted").read_bytes() == b"new\0\0\0tail"
    assert done(link, "truncate", "d/planted", 3) == []
    assert (tmp_path / "d" / "planted").read_bytes() == b"new"
    # a read of what is not a regular file is refused, never blocks (a FIFO)
    os.mkfifo(tmp_path / "fifo")
    assert fs(link, "read", "fifo", 0, 10) == (wire.FAILED, [b"not a regular file", b"EINVAL"])
    assert fs(link, "read", "d", 0, 10)[0] == wire.FAILED
    assert done(link, "chmod", "d/planted", 0o640) == []
    assert stat.S_IMODE((tmp_path / "d" / "planted").stat().st_mode) == 0o640
    assert done(link, "symlink", "../target", "d/l") == []
    assert done(link, "readlink", "d/l") == [b"../target"]
    assert done(link, "rename", "d/planted", "d/moved") == []
    assert done(link, "listdir", "d", 0) == [b"caf\xe9", b"l", b"moved", b"0"]
    assert done(link, "remove", "d/l") == []
    assert fs(link, "remove", "d/l") == (wire.FAILED, [b"No such file or directory", b"ENOENT"])
    assert fs(link, "remove", "d")[1][1] in (b"EISDIR", b"EPERM")


def test_a_large_directory_is_listed_in_pages(tmp_path: Path, links: list[Link]) -> None:
    names = sorted(f"{i:05d}{'x' * 240}" for i in range(2500))  # over a page's 512 KiB
    for name in names:
        (tmp_path / name).touch()
    link = agent(links, tmp_path)
    got: list[bytes] = []
    pages = 0
    while True:
        page = done(link, "listdir", ".", len(got))
        pages += 1
        got += page[:-1]
        if page[-1] == b"0":
            break
    assert pages == 2 and [n.decode() for n in got] == names


def test_a_read_gives_a_piece_at_most_and_a_malformed_request_is_an_error(
    tmp_path: Path, links: list[Link]
) -> None:
    (tmp_path / "big").write_bytes(bytes(files.PIECE + 10))
    link = agent(links, tmp_path)
    assert len(done(link, "read", "big", 0, files.PIECE)[0]) == files.PIECE
    assert fs(link, "read", "big", 0, files.PIECE + 1) == (
        wire.ERROR,
        [b"malformed FS: a read of over %d bytes" % files.PIECE],
    )
    assert fs(link, "frobnicate", "x") == (wire.ERROR, [b"malformed FS: an unknown operation"])
    assert fs(link, "stat") == (wire.ERROR, [b"malformed FS: 1 fields, wants 2"])
    assert fs(link, "stat", "a", "b") == (wire.ERROR, [b"malformed FS: stat takes 1 arguments"])
    assert fs(link, "read", "big", "x", 1) == (wire.ERROR, [b"malformed FS: OFFSET is not a number"])
    assert fs(link, "stat", "a\0b")[0] == wire.ERROR
    assert done(link, "stat", "big")[0] == b"file"  # it goes on


# RUN


@pytest.mark.parametrize("python", PYTHONS)
def test_a_run_returns_its_status_and_output(tmp_path: Path, links: list[Link], python: str) -> None:
    link = agent(links, tmp_path, python)
    assert run(link, "sh", "-c", "echo out; echo err >&2; exit 3") == [b"3", b"out\n", b"err\n"]
    assert run(link, "sh", "-c", "kill -TERM $$")[0] == b"%d" % (128 + signal.SIGTERM)
    got = run(link, "sh", "-c", 'read a; echo "$a $GIVEN"', stdin=b"fed\n", env="GIVEN=v=1\nbad name=x")
    assert got == [b"0", b"fed v=1\n", b""]
    assert run(link, "no-such-program-dsh") == [
        b"127",
        b"",
        b"no-such-program-dsh: No such file or directory\n",
    ]
    assert run(link, str(tmp_path))[0] == b"126"  # a directory: found, not runnable
    # its own session, INT and QUIT ignored, SIGPIPE at its default (not Python's)
    got = run(link, "sh", "-c", "grep -E '^SigIgn' /proc/$$/status; ps -o sid= -p $$; echo $$")
    lines = got[1].decode().split()
    ignored = int(lines[1], 16)
    assert lines[2] == lines[3]
    assert ignored & (1 << (signal.SIGINT - 1)) and ignored & (1 << (signal.SIGQUIT - 1))
    assert not ignored & (1 << (signal.SIGPIPE - 1))


def test_a_run_past_its_timeout_is_termed_then_killed_with_its_group(
    tmp_path: Path, links: list[Link]
) -> None:
    link = agent(links, tmp_path)
    pids = tmp_path / "pids"
    started = time.monotonic()
    got = run(link, "sh", "-c", f"sleep 60 & echo $! > {pids}; echo begun; wait", timeout=1)
    assert got == [b"", b"begun\n", b"", b"timed out"]
    assert 0.9 < time.monotonic() - started < 3
    assert not alive(int(pids.read_text()))
    # one that ends of its own when told (a trap), even well, timed out all the same (CHECK's 124)
    got = run(link, "sh", "-c", "trap 'echo bye; exit 0' TERM; sleep 60 & wait", timeout=1)
    assert got == [b"", b"bye\n", b"", b"timed out"]
    # one that ignores TERM is KILLed a second later
    started = time.monotonic()
    assert run(link, "sh", "-c", "trap '' TERM; sleep 60", timeout=1)[::3] == [b"", b"timed out"]
    assert time.monotonic() - started < 4


def test_a_run_never_holds_the_agent_and_what_it_leaves_holds_no_reply(
    tmp_path: Path, links: list[Link]
) -> None:
    link = agent(links, tmp_path)
    slow = link.send(wire.RUN, [20, b"", b"", "sleep", "3"])
    started = time.monotonic()
    assert done(link, "lstat", "nothing") == [b"none"]  # answered while the child runs
    assert time.monotonic() - started < 1
    assert link.collect(slow) == [(wire.DONE, [b"0", b"", b""])]
    # its child ends, something it left holds its stdout: drained a while, not waited for
    started = time.monotonic()
    assert run(link, "sh", "-c", "sleep 30 & echo left") == [b"0", b"left\n", b""]
    assert time.monotonic() - started < 1 + child.DRAIN + child.POLL + 0.5


def test_a_runs_output_is_bounded_and_its_stdin_can_be_large(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links, tmp_path)
    got = run(link, "sh", "-c", "head -c 2000000 /dev/zero; head -c 500000 /dev/zero >&2")
    assert (got[0], len(got[1]), len(got[2])) == (b"0", child.OUT_KEEP, child.ERR_KEEP)
    assert run(link, "wc", "-c", stdin=b"y" * 900_000) == [b"0", b"900000\n", b""]
    assert run(link, "true", stdin=b"not read" * 50_000) == [b"0", b"", b""]  # EPIPE is no error


def test_a_runs_stdin_and_environment_are_in_no_argv(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links, tmp_path)
    rid = link.send(
        wire.RUN, [10, b"hunter2-stdin\n", b"TOKEN=hunter2-env", "sh", "-c", "sleep 1; cat >/dev/null"]
    )
    time.sleep(0.3)
    for pid in [link.pid, *map(int, Path(f"/proc/{link.pid}/task/{link.pid}/children").read_text().split())]:
        assert b"hunter2" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert link.collect(rid) == [(wire.DONE, [b"0", b"", b""])]
    assert not any(b"hunter2" in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def test_a_stopped_run_and_the_agents_end_kill_its_child(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links, tmp_path)
    pids = tmp_path / "pids"
    rid = link.send(wire.RUN, [60, b"", b"", "sh", "-c", f"echo $$ > {pids}; exec sleep 60"])
    deadline = time.monotonic() + 5
    while not pids.exists() or not pids.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    pid = int(pids.read_text())
    link.send(wire.STOP, [], rid=rid)
    deadline = time.monotonic() + 5
    while alive(pid):
        assert time.monotonic() < deadline, "a stopped RUN's child lives on"
        time.sleep(0.02)
    pids.unlink()
    link.send(wire.RUN, [60, b"", b"", "sh", "-c", f"echo $$ > {pids}; exec sleep 60"])
    while not pids.exists() or not pids.read_text().strip():
        assert time.monotonic() < deadline + 5
        time.sleep(0.02)
    assert link.close() == b""
    links.remove(link)
    deadline = time.monotonic() + 5
    while alive(int(pids.read_text())):
        assert time.monotonic() < deadline, "a RUN's child outlived its agent"
        time.sleep(0.02)


def test_a_malformed_run_is_an_error(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links, tmp_path)
    assert link.collect(link.send(wire.RUN, ["soon", b"", b"", "true"])) == [
        (wire.ERROR, [b"malformed RUN: timeout is not a number"])
    ]
    assert link.collect(link.send(wire.RUN, [1, b"", b"", "sh", "-c", "a\0b"]))[0][0] == wire.ERROR
    assert link.collect(link.send(wire.RUN, [1, b"", b""])) == [
        (wire.ERROR, [b"malformed RUN: 3 fields, wants 4"])
    ]
    assert run(link, "true") == [b"0", b"", b""]


def test_runs_on_fds_over_1024_are_served(links: list[Link], tmp_path: Path) -> None:
    """An agent whose fds are numbered past select()'s 1024 (a raised limit, many in
    use): its loop polls them (select would end it with a ValueError)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.fail(f"the open-file hard limit ({hard}) is under 1300: raise it to run this test")
    link = Link(env=dict(os.environ), cwd=str(tmp_path), taken=1100)
    links.append(link)
    assert run(link, "sh", "-c", "echo high; exit 5") == [b"5", b"high\n", b""]

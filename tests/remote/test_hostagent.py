"""dsh's host agent (dsh/remote/hostagent), run on this machine as a child over pipes
(tests/helpers/hostagent.py): its frames, the spool files it writes, and its
interplay both ways with the spool wrapper (dsh/remote/spool.py) run by /bin/sh."""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsh.remote import askpass, hostagent, spool
from dsh.remote.base import Exec
from dsh.remote.hostagent import wire
from tests.helpers.hostagent import OLD_PYTHONS, SOURCE, Link, launch_fields, outcome

ALLOWED = {"os", "sys", "struct", "select", "errno", "stat", "time", "zlib", "hashlib", "shutil"}
ALLOWED |= {"signal", "_signal", "fcntl"}


def agent(links: list[Link], python: str = sys.executable, **env: str) -> Link:
    link = Link(env={**os.environ, **env} if env else None, python=python)
    links.append(link)
    return link


def launch(
    link: Link, root: Path, action: str, command: str, **kw: object
) -> tuple[bytes, bytes, list[str], int | str]:
    rid = link.send(wire.LAUNCH, launch_fields(root, action, command, **kw))  # type: ignore[arg-type]
    return outcome(link.collect(rid))


def request(link: Link, kind: int, *fields: str | int) -> tuple[bytes, bytes, list[str], int | str]:
    return outcome(link.collect(link.send(kind, list(fields))))


def spot(root: Path, action: str) -> list[str]:
    return [str(root), "s1", action, "h1"]


def wrapper(argv: list[str], timeout: float = 20) -> tuple[int, bytes, bytes, Exec]:
    """A wrapper exec run to its end: its status, the command's output and the outcome."""
    done = subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    return watched(argv, done.returncode, done.stdout, done.stderr)


def watched(argv: list[str], code: int, stdout: bytes, stderr: bytes) -> tuple[int, bytes, bytes, Exec]:
    seen = {"stdout": b"", "stderr": b""}

    def sink(stream: str, data: bytes) -> None:
        seen[stream] += data

    watch = spool.Watch(sink, argv)
    watch.sink("stdout", stdout)
    watch.sink("stderr", stderr)
    return code, seen["stdout"], seen["stderr"], watch.result(code, 0.0)


def wrapper_probe(root: Path, action: str) -> str | None:
    argv = spool.probe_argv(str(root), "s1", action, "h1")
    return spool.answer(argv, subprocess.run(argv, capture_output=True, timeout=10).stdout)


def wait_for(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    until = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < until, "not in time"
        time.sleep(0.02)


def content(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


def started(pid: int) -> str:
    """Field 22 of /proc/PID/stat, cut as the wrapper's `started` cuts it."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.split(") ", 1)[1].split()[19]


def kill_group(path: Path) -> None:
    """Ends what is left of a test's command (its group from .pid)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.killpg(int(path.read_text().split()[0]), signal.SIGKILL)


# The sources: what is sent to a host.


def test_every_module_is_python_36_stdlib_only_and_small() -> None:
    names = ["__init__", *hostagent.MODULES]
    assert sorted(p.stem for p in SOURCE.glob("*.py")) == sorted(names)
    for name in names:
        src = (SOURCE / f"{name}.py").read_text()
        tree = ast.parse(src, feature_version=(3, 6))
        assert ast.get_docstring(tree), f"{name}: a docstring saying what it owns"
        assert len(src.splitlines()) <= 400, name
        defined = names[: names.index(name)]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name in ALLOWED, f"{name} imports {alias.name}"
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # only modules defined before it (the loader's order)
                    assert node.level == 1 and node.module is None, name
                    assert {a.name for a in node.names} <= {*defined, "PROTOCOL"}, name
                else:
                    assert node.module != "__future__", name
                    assert (node.module or "").split(".")[0] in ALLOWED, f"{name} imports {node.module}"
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                every = [*args.args, *args.kwonlyargs, args.vararg, args.kwarg]
                assert node.returns is None and all(a is None or a.annotation is None for a in every), name
                assert not args.posonlyargs, name
            elif isinstance(node, ast.AnnAssign):
                raise AssertionError(f"{name}: an annotation (type comments only)")


# Launch, stream, status.


@pytest.mark.parametrize("python", OLD_PYTHONS or [sys.executable])
def test_older_pythons_a_host_may_have(tmp_path: Path, links: list[Link], python: str) -> None:
    """3.6 and 3.7 fork the command (no posix_spawn); 3.6 to 3.8 follow by /proc (no pidfd)."""
    link = agent(links, python)
    assert launch(link, tmp_path, "1.1.1", "echo out; echo err >&2; exit 3") == (b"out\n", b"err\n", [], 3)
    out = launch(link, tmp_path, "1.1.2", "grep SigIgn /proc/$$/status; kill -KILL $$")
    ignored = int(out[0].split()[1], 16)
    assert ignored & (1 << (signal.SIGINT - 1)) and not ignored & (1 << (signal.SIGPIPE - 1))
    assert out[3] == 128 + signal.SIGKILL
    assert (tmp_path / "s1" / "1.1.2@h1.run").read_text() == f"{link.keeper} {started(link.keeper)}\n"
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.3", "h1", 20, "echo one; sleep 0.5; echo two")
    launcher = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    wait_for(lambda: (tmp_path / "s1" / "1.1.3@h1.run").exists())
    assert request(link, wire.FOLLOW, *spot(tmp_path, "1.1.3")) == (b"one\ntwo\n", b"", [], 0)
    launcher.communicate(timeout=10)
    rid = link.send(wire.LAUNCH, launch_fields(tmp_path, "1.1.4", "sleep 0.5; echo late"))
    wait_for(lambda: (tmp_path / "s1" / "1.1.4@h1.pid").exists())
    assert wrapper_probe(tmp_path, "1.1.4") == "alive"
    assert outcome(link.collect(rid)) == (b"late\n", b"", [], 0)


def test_launch_streams_output_and_ends_with_the_status(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links)
    assert link.hello[0] == str(hostagent.PROTOCOL) and link.hello[1] == str(link.pid)
    assert link.hello[2] == started(link.pid)
    assert link.hello[3] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert link.hello[4] == ".".join(map(str, sys.version_info[:3]))
    assert set(link.hello[6].split(",")) == {"posix_spawn", "pidfd"}
    assert launch(link, tmp_path, "1.1.1", "echo out; echo err >&2", helper=askpass.HELPER) == (
        b"out\n",
        b"err\n",
        [],
        0,
    )
    assert launch(link, tmp_path, "1.1.2", "echo three; exit 3")[1:] == (b"", [], 3)
    assert launch(link, tmp_path, "1.1.3", "kill -TERM $$")[3] == 128 + signal.SIGTERM
    big = launch(link, tmp_path, "1.1.4", "head -c 300000 /dev/zero")
    assert big[0] == bytes(300000)


@pytest.mark.parametrize("spawn", ["posix_spawn", "fork"])
def test_spool_files_have_the_wrappers_bytes_and_modes(tmp_path: Path, links: list[Link], spawn: str) -> None:
    link = agent(links, **({"DSH_HOST_AGENT_NO_SPAWN": "1"} if spawn == "fork" else {}))
    assert ("posix_spawn" in link.hello[6]) == (spawn == "posix_spawn")
    (tmp_path / "s1").mkdir(mode=0o700)
    (tmp_path / "s1" / "1.1.1@h1.in").write_bytes(b"piped\n")
    cmd = 'cat; echo "$DSH_ASK $SUDO_ASKPASS $DISPLAY"; grep -E "^(SigIgn|PPid)" /proc/$$/status'
    out, err, said, status = launch(link, tmp_path, "1.1.1", cmd, stdin=True, helper=askpass.HELPER)
    assert (err, said, status) == (b"", [], 0)
    f = tmp_path / "s1" / "1.1.1@h1"
    helper = tmp_path / "askpass-1"
    lines = out.decode().splitlines()
    assert lines[0] == "piped"
    assert lines[1] == f"{f} {helper} {os.environ.get('DISPLAY') or ':0'}"
    proc = dict(line.split(":\t") for line in lines[2:])
    ignored = int(proc["SigIgn"], 16)
    assert proc["PPid"] == str(link.keeper)
    assert ignored & (1 << (signal.SIGINT - 1)) and ignored & (1 << (signal.SIGQUIT - 1))
    assert not ignored & (1 << (signal.SIGPIPE - 1)), "SIGPIPE at its default, not Python's"
    assert not ignored & (1 << (signal.SIGXFSZ - 1))
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert (f.parent / "1.1.1@h1.claim").read_text() == f"{boot} {link.pid} {started(link.pid)}\n"
    assert (f.parent / "1.1.1@h1.run").read_text() == f"{link.keeper} {started(link.keeper)}\n"
    pgid, start = (f.parent / "1.1.1@h1.pid").read_text().split()
    assert int(pgid) > 1 and start.isdigit()
    assert (f.parent / "1.1.1@h1.status").read_text() == "0\n"
    assert not (f.parent / "1.1.1@h1.in").exists(), "its input is removed when it ends"
    assert helper.read_text() == askpass.HELPER
    assert stat.S_IMODE(helper.stat().st_mode) == 0o700
    for ext in ("claim", "run", "pid", "out", "err", "status"):
        assert stat.S_IMODE((f.parent / f"1.1.1@h1.{ext}").stat().st_mode) == 0o600, ext
    # a directory the agent makes is private too; a relative root is under $HOME
    home = tmp_path / "home"
    home.mkdir()
    link2 = agent(links, HOME=str(home))
    assert launch(link2, Path("rel/spool"), "1.1.1", "true")[3] == 0
    assert stat.S_IMODE((home / "rel" / "spool" / "s1").stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "rel" / "spool").stat().st_mode) == 0o700
    assert (home / "rel/spool/s1/1.1.1@h1.status").read_text() == "0\n"


def test_a_claimed_action_is_never_started_again(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links)
    marker = tmp_path / "ran"
    assert launch(link, tmp_path, "1.1.1", f"echo x >>{marker}")[3] == 0
    again = launch(link, tmp_path, "1.1.1", f"echo x >>{marker}")
    assert again[2:] == (["claimed: 1.1.1 on h1 was started before"], 253)
    # and the wrapper's LAUNCH says the same of it
    code, _, _, ended = wrapper(
        spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, f"echo x >>{marker}")
    )
    assert code == spool.WrapperExit.CLAIMED and ended.outcome == "lost"
    assert marker.read_text() == "x\n"


def test_missing_input_is_said_and_nothing_claimed(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links)
    f = tmp_path / "s1" / "1.1.1@h1"
    assert launch(link, tmp_path, "1.1.1", "cat", stdin=True)[2:] == (
        [f"its input is missing from the spool: {f}.in"],
        252,
    )
    assert not (tmp_path / "s1" / "1.1.1@h1.claim").exists()


def test_a_spool_that_cannot_be_written_is_said_as_the_wrapper_says_it(
    tmp_path: Path, links: list[Link]
) -> None:
    root = tmp_path / "a-file"
    root.write_text("")
    argv = spool.launch_argv(str(root), "s1", "1.1.1", "h1", 10, "true")
    code, _, _, ended = wrapper(argv)
    assert code == spool.WrapperExit.SPOOL_FAILED
    said = launch(agent(links), root, "1.1.1", "true")[2:]
    assert said == ([ended.message.removeprefix("nothing started: ")], 252)
    assert said[0] == [f"cannot write the spool: {root}/s1/1.1.1@h1.claim: Not a directory"]


def test_the_backstop_times_a_command_out(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links)
    t0 = time.monotonic()
    out, _, said, status = launch(link, tmp_path, "1.1.1", "echo begun; sleep 30", backstop=1, grace=1)
    assert (out, said, status) == (b"begun\n", ["timed out"], 251)
    assert time.monotonic() - t0 < 5
    d = tmp_path / "s1"
    assert (d / "1.1.1@h1.killed").read_text() == "timeout\n"
    assert (d / "1.1.1@h1.status").read_text() == "timeout\n"
    # a command that ignores TERM is KILLed after the grace
    out, _, said, status = launch(
        link, tmp_path, "1.1.2", "trap '' TERM; echo up; sleep 30", backstop=1, grace=1
    )
    assert (said, status) == (["timed out"], 251)
    assert time.monotonic() - t0 < 10


def test_secrets_reach_the_command_alone(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links)
    secret = "hunter2-" + os.urandom(4).hex()
    rid = link.send(
        wire.LAUNCH,
        launch_fields(tmp_path, "1.1.1", 'echo "$DSH_T_PW"; sleep 1', secrets=f"DSH_T_PW={secret}\nOTHER=1"),
    )
    wait_for(lambda: content(tmp_path / "s1" / "1.1.1@h1.out") != b"")
    for pid in (link.pid, link.keeper):
        for name in ("environ", "cmdline"):
            assert secret.encode() not in Path(f"/proc/{pid}/{name}").read_bytes()
    out, _, _, status = outcome(link.collect(rid))
    assert (out, status) == (f"{secret}\n".encode(), 0)
    written = [p for p in (tmp_path / "s1").iterdir() if p.suffix != ".out"]  # the command printed it
    assert secret not in "".join(p.read_text() for p in written)


def test_asks_are_said_once(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links)
    cmd = 'printf "11 22 ask [sudo] password for x:\\n" >"$DSH_ASK.ask"; sleep 0.6; : >"$DSH_ASK.ask"'
    rid = link.send(wire.LAUNCH, launch_fields(tmp_path, "1.1.1", cmd))
    wait_for(
        lambda: (tmp_path / "s1" / "1.1.1@h1.ask").exists() and wrapper_probe(tmp_path, "1.1.1") != "alive"
    )
    assert wrapper_probe(tmp_path, "1.1.1") in ("alive asking", "status 0")
    assert outcome(link.collect(rid))[2:] == (["ask 11 22 ask [sudo] password for x:"], 0)


# The other verbs.


def test_kill_probe_remove_and_clean(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links)
    assert request(link, wire.PROBE, *spot(tmp_path, "1.1.1"))[3] == "none"
    # not yet claimed: a tombstone, and a later launch starts nothing
    assert request(link, wire.KILL, *spot(tmp_path, "1.1.1"), 20, "timeout")[3] == 0
    assert (tmp_path / "s1" / "1.1.1@h1.claim").read_text() == "timeout\n"
    assert request(link, wire.PROBE, *spot(tmp_path, "1.1.1"))[3] == "status timeout"
    assert launch(link, tmp_path, "1.1.1", "true")[3] == 253
    # running: cancelled
    rid = link.send(wire.LAUNCH, launch_fields(tmp_path, "1.1.2", "echo up; sleep 30"))
    wait_for(lambda: content(tmp_path / "s1" / "1.1.2@h1.out") == b"up\n")
    assert request(link, wire.PROBE, *spot(tmp_path, "1.1.2"))[3] == "alive"
    assert request(link, wire.KILL, *spot(tmp_path, "1.1.2"), 20, "cancelled")[3] == 0
    assert outcome(link.collect(rid))[2:] == (["cancelled"], 250)
    assert request(link, wire.PROBE, *spot(tmp_path, "1.1.2"))[3] == "status cancelled"
    # remove, clean
    old = tmp_path / "old-session"
    old.mkdir()
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert request(link, wire.CLEAN, str(tmp_path), 60)[3] == 0
    assert not old.exists() and (tmp_path / "s1").exists()
    assert request(link, wire.REMOVE, str(tmp_path), "s1")[3] == 0
    assert not (tmp_path / "s1").exists()
    assert request(link, wire.REMOVE, str(tmp_path), "s1")[3] == 0


def test_malformed_frames_get_errors_never_a_traceback(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links)
    assert request(link, 99)[3] == "unknown kind 99"
    assert request(link, wire.PROBE, "only", "three", "fields")[3] == "malformed PROBE: 3 fields, wants 4"
    fields = launch_fields(tmp_path, "1.1.1", "true")
    fields[5] = "soon"
    assert request(link, wire.LAUNCH, *fields)[3] == "malformed LAUNCH: backstop is not a number"
    assert request(link, wire.KILL, *spot(tmp_path, "1.1.1"), 20, "whenever")[3] == (
        "malformed KILL: why is neither timeout nor cancelled"
    )
    assert (
        request(link, wire.PROBE, str(tmp_path), "s\0", "1", "h")[3] == "malformed PROBE: a field holds a NUL"
    )
    link.send_raw(b"\x00\x00\x00\x03abc")  # a body too short for its header
    kind, rid, fields_ = link.next_frame(5)
    assert (kind, rid) == (wire.ERROR, 0) and b"abc" not in fields_[0]
    link.send_raw(b"\x00\x00\x00\x0b" + bytes([wire.PROBE]) + b"\x00\x00\x00\x09" + b"\x00\x00\x00\x09ab")
    kind, rid, fields_ = link.next_frame(5)
    assert (kind, rid) == (wire.ERROR, 9)
    assert request(link, wire.PROBE, *spot(tmp_path, "1.1.1"))[3] == "none"  # it goes on
    link.send_raw((wire.MAX_BODY + 1).to_bytes(4, "big"))  # over the bound: the link ends
    assert link.proc.wait(5) == 0


# Both ways with the wrapper.


def test_an_agent_launched_action_is_probed_followed_and_killed_by_the_wrapper(
    tmp_path: Path, links: list[Link]
) -> None:
    link = agent(links)
    rid = link.send(wire.LAUNCH, launch_fields(tmp_path, "1.1.1", "echo one; sleep 1; echo two; exit 4"))
    wait_for(lambda: content(tmp_path / "s1" / "1.1.1@h1.out") == b"one\n")
    assert wrapper_probe(tmp_path, "1.1.1") == "alive"
    code, out, _, ended = wrapper(spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1"))
    assert (code, out, ended.outcome) == (4, b"one\ntwo\n", "failed")
    assert outcome(link.collect(rid))[::3] == (b"one\ntwo\n", 4)
    assert wrapper_probe(tmp_path, "1.1.1") == "status 4"
    # killed by the wrapper's KILL: the agent's stream says cancelled
    rid = link.send(wire.LAUNCH, launch_fields(tmp_path, "1.1.2", "echo up; sleep 30"))
    wait_for(lambda: content(tmp_path / "s1" / "1.1.2@h1.out") == b"up\n")
    follower = subprocess.Popen(
        spool.follow_argv(str(tmp_path), "s1", "1.1.2", "h1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert wrapper(spool.kill_argv(str(tmp_path), "s1", "1.1.2", "h1", 2))[0] == 0
    assert outcome(link.collect(rid))[2:] == (["cancelled"], 250)
    out, err = follower.communicate(timeout=10)
    assert watched(follower.args, follower.returncode, out, err)[0::3] == (  # type: ignore[arg-type]
        250,
        Exec("cancelled", None, 0.0, ""),
    )


@pytest.mark.parametrize("pidfd", [True, False])
def test_a_wrapper_launched_action_is_probed_followed_and_killed_by_the_agent(
    tmp_path: Path, links: list[Link], pidfd: bool
) -> None:
    link = agent(links, **({} if pidfd else {"DSH_HOST_AGENT_NO_PIDFD": "1"}))
    assert ("pidfd" in link.hello[6]) == pidfd
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 20, "echo one; sleep 1; echo two; exit 5")
    launcher = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    wait_for(lambda: (tmp_path / "s1" / "1.1.1@h1.out").exists() and (tmp_path / "s1/1.1.1@h1.run").exists())
    assert request(link, wire.PROBE, *spot(tmp_path, "1.1.1"))[3] == "alive"
    out, err, said, status = request(link, wire.FOLLOW, *spot(tmp_path, "1.1.1"))
    assert (out, err, said, status) == (b"one\ntwo\n", b"", [], 5)
    launcher.communicate(timeout=10)
    assert launcher.returncode == 5
    assert request(link, wire.PROBE, *spot(tmp_path, "1.1.1"))[3] == "status 5"
    assert request(link, wire.FOLLOW, *spot(tmp_path, "1.1.2"))[2:] == (
        ["lost: 1.1.2 on h1 has no spool"],
        249,
    )
    # killed by the agent: the wrapper's LAUNCH says cancelled
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.3", "h1", 20, "echo up; sleep 30")
    launcher = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    wait_for(lambda: (tmp_path / "s1" / "1.1.3@h1.pid").exists())
    assert request(link, wire.KILL, *spot(tmp_path, "1.1.3"), 20, "cancelled")[3] == 0
    out_b, err_b = launcher.communicate(timeout=10)
    assert watched(argv, launcher.returncode, out_b, err_b)[3] == Exec("cancelled", None, 0.0, "")
    # its runner gone without a status: lost
    argv = spool.launch_argv(str(tmp_path), "s1", "1.1.4", "h1", 20, "sleep 30")
    launcher = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    f = tmp_path / "s1" / "1.1.4@h1"
    wait_for(lambda: Path(f"{f}.pid").exists() and Path(f"{f}.run").exists())
    rid = link.send(wire.FOLLOW, spot(tmp_path, "1.1.4"))
    time.sleep(0.3)
    runner = int(Path(f"{f}.run").read_text().split()[0])
    os.kill(launcher.pid, signal.SIGKILL)
    os.kill(runner, signal.SIGKILL)
    kill_group(Path(f"{f}.pid"))
    launcher.wait(5)
    assert outcome(link.collect(rid))[2:] == (["lost: its runner is gone and no status was written"], 249)


@pytest.mark.parametrize("how", ["stdin closed", "kill -9"])
def test_the_agents_end_leaves_the_command_to_its_keeper(tmp_path: Path, links: list[Link], how: str) -> None:
    link = agent(links)
    marker = tmp_path / "ran"
    rid = link.send(wire.LAUNCH, launch_fields(tmp_path, "1.1.1", f"echo x >>{marker}; sleep 1; echo done"))
    wait_for(marker.exists)
    keeper = link.keeper
    if how == "kill -9":
        os.kill(link.pid, signal.SIGKILL)
    else:
        assert link.proc.stdin is not None
        link.proc.stdin.close()
    link.proc.wait(5)
    assert not gone(keeper)
    assert wrapper_probe(tmp_path, "1.1.1") == "alive"
    code, out, _, ended = wrapper(spool.follow_argv(str(tmp_path), "s1", "1.1.1", "h1"))
    assert (code, out, ended.outcome) == (0, b"done\n", "ok")
    assert wrapper_probe(tmp_path, "1.1.1") == "status 0"
    wait_for(lambda: gone(keeper))  # its last command reaped, the keeper ends
    # never launched twice: neither the wrapper nor a new agent starts it again
    assert wrapper(spool.launch_argv(str(tmp_path), "s1", "1.1.1", "h1", 10, f"echo x >>{marker}"))[0] == 253
    assert launch(agent(links), tmp_path, "1.1.1", f"echo x >>{marker}")[3] == 253
    assert marker.read_text() == "x\n"
    assert rid == 1


def test_a_keeper_killed_leaves_its_actions_lost(tmp_path: Path, links: list[Link]) -> None:
    link = agent(links)
    rid = link.send(wire.LAUNCH, launch_fields(tmp_path, "1.1.1", "echo up; sleep 30"))
    f = tmp_path / "s1" / "1.1.1@h1"
    wait_for(lambda: content(Path(f"{f}.out")) == b"up\n")
    os.kill(link.keeper, signal.SIGKILL)
    try:
        assert outcome(link.collect(rid))[2:] == (["lost: its runner is gone and no status was written"], 249)
        assert wrapper_probe(tmp_path, "1.1.1") == "lost"
        assert launch(link, tmp_path, "1.1.2", "true")[2:] == (
            ["no keeper on h1 (the host agent's keeper is gone)"],
            252,
        )
    finally:
        kill_group(Path(f"{f}.pid"))


def test_a_backstop_longer_than_select_can_wait_keeps_the_keeper(tmp_path: Path, links: list[Link]) -> None:
    """Review 22 #8: a backstop of 1e10 s overflowed the keeper's select; it died,
    and with it every status of its agent's actions."""
    link = agent(links)
    assert launch(link, tmp_path, "1.1.1", "echo long", backstop=10**10)[3] == 0
    assert launch(link, tmp_path, "1.1.2", "echo after")[0] == b"after\n"


def test_a_command_too_large_for_the_keeper_starts_nothing_and_claims_nothing(
    tmp_path: Path, links: list[Link]
) -> None:
    """Review 22 #7: a LAUNCH just under the frame bound made a SPAWN order over it,
    and the agent died with a traceback, leaving its claim."""
    link = agent(links)
    assert launch(link, tmp_path, "1.0.1", "true")[3] == 0  # the helper is there now: its path is in orders
    empty = len(wire.encode(wire.LAUNCH, 1, launch_fields(tmp_path, "1.1.1", "", helper=""))) - 4
    big = "x" * (wire.MAX_BODY - empty)  # the LAUNCH just fits; the keeper's order (with paths) does not
    _, _, said, status = launch(link, tmp_path, "1.1.1", big, helper="")
    assert (status, said) == (252, ["cannot start it: the command is too large for dsh's host agent"])
    assert not (tmp_path / "s1" / "1.1.1@h1.claim").exists()
    assert launch(link, tmp_path, "1.1.2", "echo still")[0] == b"still\n"


@pytest.mark.parametrize("python", OLD_PYTHONS[:1] or [sys.executable])
def test_a_command_and_a_secret_that_are_not_ascii_run_in_the_c_locale(
    tmp_path: Path, links: list[Link], python: str
) -> None:
    """Review 22 #5: Python 3.6 in the C locale encodes a file system name as ASCII;
    a command or a secret with `Ü` in it then ended 127, with nothing said."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    link = Link(env={**env, "LC_ALL": "C"}, python=python)
    links.append(link)
    out, err, _, status = launch(link, tmp_path, "1.1.1", 'echo "Ü $S"', secrets="S=pässword")
    assert (status, out, err) == (0, "Ü pässword\n".encode(), b"")


@pytest.mark.parametrize("spawn", [True, False], ids=["posix_spawn", "fork"])
def test_the_keeper_makes_an_output_file_gone_since_the_launch_made_it(tmp_path: Path, spawn: bool) -> None:
    """The keeper opens .out and .err without O_CREAT (the agent made them); one removed
    in between is made again, as the wrapper's `>>` would, and the command runs."""
    from dsh.remote.hostagent import keeper

    f = str(tmp_path / "1.1.1@h1")
    Path(f + ".err").write_bytes(b"")  # .out is gone
    reports_r, reports_w = os.pipe()
    try:
        k = keeper.Keeper(None, reports_w, spawn)  # type: ignore[no-untyped-call]
        k.defaulted = keeper._defaulted()  # type: ignore[no-untyped-call]
        k._spawn(1, [f, "echo hi; echo err >&2", "30", "2", "", "", ""])  # type: ignore[no-untyped-call]
        deadline = time.monotonic() + 10
        while k.children:
            assert time.monotonic() < deadline, "the command never ended"
            time.sleep(0.02)
            k._reap()  # type: ignore[no-untyped-call]
        assert Path(f + ".status").read_text() == "0\n"
        assert (Path(f + ".out").read_bytes(), Path(f + ".err").read_bytes()) == (b"hi\n", b"err\n")
    finally:
        os.close(reports_r)
        os.close(reports_w)

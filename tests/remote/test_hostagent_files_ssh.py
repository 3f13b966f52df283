"""Copies, stdin files, checks and sudo's password tried through the host agent over
SSH (FS and RUN, issue 22): no SFTP session, no exec for them, the outcomes the
wrapper and SFTP give; a link that dies mid-copy is gone on from, and a host that
answers with lies gets a sentence, never a traceback."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsh.plan import GET, PUT
from dsh.remote import askpass, hostboot, hostfiles
from dsh.remote.base import Copied, CopyFacts, CopyJob, Spot
from dsh.remote.hostlink import HostLink
from dsh.remote.manifest import read_manifest
from dsh.remote.ssh import SshFleet
from dsh.remote.sshconfig import SshConfig
from tests.conftest import SshSetup
from tests.credentials import PASSWORD, sudo_ready
from tests.sshd import USER, processes_of, user_home

#: Agent-only: its fleets set their mode, so scripts/test's off pass skips it.
pytestmark = pytest.mark.agent


class Collect:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def __call__(self, stream: str, data: bytes) -> None:
        self.data[stream] += data


def fleet(ssh_setup: SshSetup, mode: str = "eager") -> SshFleet:
    return SshFleet(SshConfig.load([ssh_setup.config]), kill_grace=0.5, host_agent=mode)


def spot(action: str = "1.1.1") -> Spot:
    return Spot(f"test-agent-files.{os.getpid()}.{time.time_ns()}", action, "h1")


@pytest.fixture
def remote_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory the test user (the sshd's login) can write, removed after."""
    d = Path(f"/tmp/dsh-agent-files-{os.getpid()}-{tmp_path.name}")
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


async def link_of(remote: SshFleet) -> HostLink:
    link = await remote.link("h1", await remote.connection("h1"))
    assert link is not None, "no host agent on h1"
    return link


async def put(remote: SshFleet, src: Path, dest: str, **kw: object) -> Copied:
    m = read_manifest(str(src))
    job = CopyJob(CopyFacts(PUT, m.root, dest, m.sha256, size=m.size), m)
    return await remote("h1").copy(job, spot=spot(), timeout=60, output=Collect(), **kw)  # type: ignore[arg-type]


async def get(remote: SshFleet, src: str, dest: Path) -> Copied:
    job = CopyJob(CopyFacts(GET, str(dest), src))
    return await remote("h1").copy(job, spot=spot(), timeout=60, progress=lambda a, b: None, output=Collect())


def tree(root: Path) -> dict[str, tuple[int, bytes]]:
    found = {}
    for p in sorted(root.rglob("*")):
        data = os.readlink(p).encode() if p.is_symlink() else p.read_bytes() if p.is_file() else b""
        found[str(p.relative_to(root))] = (p.lstat().st_mode, data)
    return found


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_put_and_a_get_go_through_the_agent_as_over_sftp(
    ssh_setup: SshSetup, tmp_path: Path, remote_dir: Path
) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big").write_bytes(os.urandom(3 * hostfiles.PIECE + 123))  # pieces in flight
    (src / "sub" / "small").write_bytes(b"\x00small\n")
    (src / "sub" / "empty").write_bytes(b"")
    (src / "sub" / "small").chmod(0o640)
    (src / "link").symlink_to("sub/small")
    on, off = fleet(ssh_setup), fleet(ssh_setup, "off")
    try:
        link = await link_of(on)
        sent = link.sent
        through = await put(on, src, f"{remote_dir}/on/tree", progress=lambda a, b: None)
        over = await put(off, src, f"{remote_dir}/off/tree", progress=lambda a, b: None)
        assert through.ended.outcome == over.ended.outcome == "ok", (through, over)
        assert (through.facts.sha256, through.facts.size) == (over.facts.sha256, over.facts.size)
        assert tree(remote_dir / "on" / "tree") == tree(remote_dir / "off" / "tree") == tree(src)
        assert oct((remote_dir / "on").stat().st_mode) == oct((remote_dir / "off").stat().st_mode)
        again = await put(on, src, f"{remote_dir}/on/tree", progress=lambda a, b: None)  # sums: one RUN
        assert (again.ended.outcome, again.facts.unchanged) == ("ok", True)
        got = await get(on, f"{remote_dir}/on/tree", tmp_path / "got")
        assert got.ended.outcome == "ok", got
        assert tree(tmp_path / "got") == tree(src)
        assert got.facts.sha256 == through.facts.sha256
        assert on._sftp == {}, "an SFTP session was opened"
        assert link.sent > sent + 20 and link.alive
        assert off._sftp != {}  # the wrapper's way: SFTP, as before
    finally:
        await on.close()
        await off.close()


async def test_an_actions_input_is_placed_through_the_agent(ssh_setup: SshSetup) -> None:
    data = os.urandom(hostfiles.PIECE * 2 + 7)  # made, then written on in pieces
    on = fleet(ssh_setup)
    try:
        link = await link_of(on)
        sent = link.sent
        ended = await on("h1").run(
            "sha256sum", spot=spot(), timeout=20, output=(out := Collect()), stdin=data
        )
        assert ended.outcome == "ok", ended
        assert out.data["stdout"].split()[0].decode() == hashlib.sha256(data).hexdigest()
        assert on._sftp == {}
        assert link.sent >= sent + 4  # create, its writes, rename, LAUNCH
    finally:
        await on.close()


async def test_an_input_cut_by_its_timeout_through_the_agent_leaves_nothing(ssh_setup: SshSetup) -> None:
    on = fleet(ssh_setup)
    where = spot()
    try:
        link = await link_of(on)
        sent = link.sent
        ended = await on("h1")._place_input(where, os.urandom(48 << 20), 0.04, 0.05)
        assert ended is not None and ended.outcome == "timeout", ended
        assert ended.message.endswith("in time (0.05s)"), ended  # the time as the line gave it
        assert link.sent > sent + 2  # it was cut while it was written
        assert link.alive
        spool = user_home(USER) / ".local/state/dsh/spool" / where.session
        assert [p.name for p in spool.iterdir()] == []
        assert on._sftp == {}
    finally:
        await on.close()


async def test_checks_go_through_the_agent_with_the_wrappers_outcomes(ssh_setup: SshSetup) -> None:
    on, off = fleet(ssh_setup), fleet(ssh_setup, "off")
    try:
        link = await link_of(on)
        for command in ("echo hi; exit 3", "test -e /", "printf 'a\\000b'", "exit 124", "umask"):
            sent = link.sent
            assert await on("h1").check(command, timeout=5) == await off("h1").check(command, timeout=5)
            assert link.sent == sent + 1
        for side in (on, off):  # a probe past its timeout: the same outcome both ways
            started = time.monotonic()
            marker = f"sleep 30.{os.getpid() % 1000}"
            late = await side("h1").check(f"echo begun; {marker}", timeout=1)
            assert late.status is None and late.out == b"begun\n", late
            assert late.message == "the probe did not end within 1s"
            assert time.monotonic() - started < 4
            assert not processes_of(USER, marker)
    finally:
        await on.close()
        await off.close()


async def test_sudos_password_is_tried_through_the_agent(
    ssh_setup: SshSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sudo_ready(), "the test users' passwords and sudo rule are missing: run scripts/system-deps"
    on, off = fleet(ssh_setup), fleet(ssh_setup, "off")
    try:
        link = await link_of(on)
        sent = link.sent
        assert (await on("h1").verify_sudo(PASSWORD, timeout=10))[0] is True
        wrong = await on("h1").verify_sudo("not-it", timeout=10)
        assert wrong == await off("h1").verify_sudo("not-it", timeout=10)
        assert wrong[0] is False and "incorrect password" in wrong[1]
        assert link.sent == sent + 2
        # no sudo on the host: the wrapper's verdict ("no sudo on this host")
        monkeypatch.setattr(hostfiles, "VERIFY_ARGV", ("dsh-no-such-sudo", "-v"))
        assert await on("h1").verify_sudo(PASSWORD, timeout=10) == askpass.verdict(
            2, "no sudo on this host", 10
        )
    finally:
        await on.close()
        await off.close()


async def test_a_copy_whose_link_dies_midway_goes_on_and_ends_ok(
    ssh_setup: SshSetup, tmp_path: Path, remote_dir: Path
) -> None:
    src = tmp_path / "big"
    src.write_bytes(os.urandom(48 << 20))
    on = fleet(ssh_setup)
    try:
        first = await link_of(on)
        found = processes_of(USER, f"dsh-agent {first.tag}")  # the agent and its keeper
        (agent,) = [pid for pid in found if _parent(pid) not in found]
        killed: list[int] = []

        def progress(done: int, total: int) -> None:
            if done > (8 << 20) and not killed:
                os.kill(agent, 9)
                killed.append(done)

        copied = await put(on, src, f"{remote_dir}/big", progress=progress)
        assert killed, "the copy ended before its agent was killed"
        assert copied.ended.outcome == "ok", copied
        assert sha(remote_dir / "big") == sha(src)
        assert not first.alive
        assert (await link_of(on)) is not first  # a new connection, its own agent
        assert on._sftp == {}
    finally:
        await on.close()


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(") ")[2].split()[1])


#: An agent of a hostile host's making: HELLO, then answers of its own to FS and RUN
#: (ANSWERS: op -> fields; "run" for RUN; a RUN's stdout is its tag's start line and
#: RUN_OUT; a read answers READ's bytes, sized `n` as asked).
HOSTILE = r"""import os, struct
ANSWERS = %r
def frame(kind, rid, fields):
    body = bytes([kind]) + struct.pack("!I", rid) + b"".join(struct.pack("!I", len(f)) + f for f in fields)
    os.write(1, struct.pack("!I", len(body)) + body)
def read(n):
    b = b""
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            raise SystemExit(0)
        b += c
    return b
frame(64, 0, [b"1", b"1", b"1", b"boot", b"3.11.2", b"/", b""])
while True:
    body = read(struct.unpack("!I", read(4))[0])
    kind, rid = body[0], struct.unpack("!I", body[1:5])[0]
    fields, at = [], 5
    while at < len(body):
        n = struct.unpack("!I", body[at:at + 4])[0]
        fields.append(body[at + 4:at + 4 + n])
        at += 4 + n
    if kind == 10:
        op = fields[0].decode()
        got = ANSWERS.get(op, {"create": [b"1"], "stat": [b"none"], "lstat": [b"none"]}.get(op, []))
        if op == "read" and got == "READ":
            got = [b"A" * int(fields[3]), b"1:1"]
        elif op == "read" and got == "MORE":
            got = [b"A" * (int(fields[3]) + 1), b"1:1"]
        elif op == "read" and got == "SWAPPED":  # another file for each piece
            got = [b"A" * int(fields[3]), b"1:%%d" %% int(fields[2])]
        kind_out = 72 if op in ANSWERS.get("failed", ()) else 70
        frame(kind_out, rid, got)
    elif kind == 9:
        tag = fields[5].split(b"\n")[0][4:] if len(fields) > 5 else b""
        frame(70, rid, ANSWERS.get("run", [b"0", tag + b" start\n" + ANSWERS.get("run_out", b""), b""]))
    elif kind != 7:
        frame(71, rid, [b"no"])
"""


def hostile(monkeypatch: pytest.MonkeyPatch, answers: dict[str, object]) -> None:
    stage = (HOSTILE % (answers,)).encode()
    monkeypatch.setattr(
        hostboot, "stage2", lambda magic, z: (len(stage) + 1).to_bytes(4, "big") + b"s" + stage
    )


async def test_a_hosts_lies_through_its_agent_end_a_copy_with_a_sentence(
    ssh_setup: SshSetup, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, remote_dir: Path
) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"data\n")
    cases: list[tuple[dict[str, object], str, str]] = [
        (
            {"stat": [b"file", b"x", b"1"]},
            "put",
            "dsh's host agent broke the protocol: DONE: field 1 is not a number",
        ),
        ({"stat": [b"\x1b]0;owned\x07", b"E" * 99], "failed": ["stat"]}, "put", ": ?]0;owned?"),
        (
            {"stat": [b"file", b"420", b"10"], "run_out": b"none\n", "read": "READ"},
            "get",
            "it grew while it was read",
        ),
        (
            {"stat": [b"file", b"420", b"10"], "run_out": b"none\n", "read": "MORE"},
            "get",
            "broke the protocol",
        ),
        (
            {"stat": [b"file", b"420", b"%d" % (2 << 20)], "run_out": b"none\n", "read": "SWAPPED"},
            "get",
            "it was replaced while it was read",
        ),
        (
            {"stat": [b"dir", b"493", b"0"], "run_out": b"none\n", "listdir": [b"a"]},
            "get",
            "broke the protocol",
        ),
    ]
    for answers, how, said in cases:
        hostile(monkeypatch, answers)
        on = fleet(ssh_setup)
        try:
            link = await link_of(on)
            if how == "put":
                copied = await put(on, src, f"{remote_dir}/dest", progress=lambda a, b: None)
            else:
                copied = await get(on, f"{remote_dir}/whatever", tmp_path / "got")
            assert copied.ended.outcome == "failed", (answers, copied)
            assert said in copied.ended.message, (answers, copied)
            assert "\x1b" not in copied.ended.message
            if "broke the protocol" in said:
                assert not link.alive  # its word is not taken again: the wrapper and SFTP next
        finally:
            await on.close()
    assert not (tmp_path / "got").exists()


async def test_a_hosts_lies_through_its_agent_end_a_check_and_a_try_with_a_sentence(
    ssh_setup: SshSetup, monkeypatch: pytest.MonkeyPatch
) -> None:
    for status in ([b"x", b"", b""], [b"256", b"", b""], [b"0"], [b"", b"", b"", b"\x1b[2Jtimed"]):
        hostile(monkeypatch, {"run": status})
        said = "?[2Jtimed" if status[0] == b"" else "dsh's host agent broke the protocol: "
        for verb in ("check", "verify"):
            on = fleet(ssh_setup)
            try:
                await link_of(on)
                if verb == "check":
                    checked = await on("h1").check("true", timeout=5)
                    assert (checked.status, checked.out) == (None, b""), checked
                    assert said in checked.message and "\x1b" not in checked.message, checked
                else:
                    right, why = await on("h1").verify_sudo("pw", timeout=5)
                    assert right is None and said in why and "\x1b" not in why, why
            finally:
                await on.close()


async def test_a_run_cancelled_through_the_agent_kills_its_child(ssh_setup: SshSetup) -> None:
    marker = f"sleep 37.{os.getpid() % 1000}"
    on = fleet(ssh_setup)
    try:
        await link_of(on)
        task = asyncio.ensure_future(on("h1").check(marker, timeout=60))
        deadline = time.monotonic() + 10
        while not processes_of(USER, marker):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 10
        while processes_of(USER, marker):
            assert time.monotonic() < deadline, "a cancelled check's command lives on"
            await asyncio.sleep(0.05)
    finally:
        await on.close()

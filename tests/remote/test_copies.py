"""Copies (issue 19): put and get over SFTP on the session's connections; atomic,
idempotent, claimed at most once, journaled with their checksums."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pexpect
import pytest

from tests.conftest import SshSetup, dsh_path
from tests.credentials import PASSWORD, sudo_ready
from tests.helpers.sessions import owner_pid
from tests.helpers.wait import wait_for
from tests.sshd import USER, USER2, Sshd, user_home


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def config(ssh_setup: SshSetup) -> list[str]:
    return ["--ssh-config", str(ssh_setup.config)]


@pytest.fixture
def remote_dir(tmp_path: Path) -> Path:
    """A directory the test user (the sshd's login) can write, removed after."""
    d = Path(f"/tmp/dsh-copies-{os.getpid()}-{tmp_path.name}")
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def test_put_then_get_three_hosts(run_dsh, config: list[str], tmp_path: Path, remote_dir: Path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "f"
    src.write_bytes(os.urandom(300_000))
    done = run_dsh([*config, "-c", f"put {src} @h[1-3]:{remote_dir}/x.$host"])
    assert done.returncode == 0, done.stderr + done.stdout
    for host in ("h1", "h2", "h3"):
        assert _sha(remote_dir / f"x.{host}") == _sha(src)
        assert f"{host} | copied" in done.stdout, done.stdout
    got = tmp_path / "got"
    done = run_dsh([*config, "-c", f"get @h[1-3]:{remote_dir}/x.$host {got}/$host/f"])
    assert done.returncode == 0, done.stderr + done.stdout
    for host in ("h1", "h2", "h3"):
        assert _sha(got / host / "f") == _sha(src)


def _same_tree(a: Path, b: Path) -> None:
    diff = subprocess.run(["diff", "-r", "--no-dereference", str(a), str(b)], capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout + diff.stderr


def _tree(root: Path) -> None:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / "sub" / "secret").write_bytes(os.urandom(70_000))
    (root / "sub" / "secret").chmod(0o600)
    (root / "sub" / "deeper").chmod(0o750)
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    (root / "link").symlink_to("sub/secret")


def test_a_tree_put_recursively_compares_equal_with_modes(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    src = tmp_path / "tree"
    src.mkdir()
    _tree(src)
    done = run_dsh([*config, "-c", f"put {src} @h[1-2]:{remote_dir}/t.$host"])
    assert done.returncode == 0, done.stderr + done.stdout
    for host in ("h1", "h2"):
        dest = remote_dir / f"t.{host}"
        diff = subprocess.run(
            ["diff", "-r", "--no-dereference", str(src), str(dest)], capture_output=True, text=True
        )
        assert diff.returncode == 0, diff.stdout + diff.stderr
        for rel in ("a.txt", "run.sh", "sub", "sub/secret", "sub/deeper", "sub/deeper/empty"):
            assert (dest / rel).stat().st_mode == (src / rel).stat().st_mode, rel
        assert os.readlink(dest / "link") == "sub/secret"
        assert not [p for p in dest.rglob(".*dsh-*")], "a temporary file was left"
    got = tmp_path / "got"
    done = run_dsh([*config, "-c", f"get @h[1-2]:{remote_dir}/t.$host {got}/$host"])
    assert done.returncode == 0, done.stderr + done.stdout
    for host in ("h1", "h2"):
        diff = subprocess.run(
            ["diff", "-r", "--no-dereference", str(src), str(got / host)], capture_output=True, text=True
        )
        assert diff.returncode == 0, diff.stdout + diff.stderr
        assert (got / host / "sub" / "secret").stat().st_mode & 0o777 == 0o600


def test_a_second_identical_put_changes_nothing_and_says_unchanged(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    src = tmp_path / "f"
    src.write_bytes(os.urandom(100_000))
    line = f"put {src} @h[1-3]:{remote_dir}/x.$host"
    first = run_dsh([*config, "-c", line])
    assert first.returncode == 0, first.stderr + first.stdout
    before = {h: os.stat(remote_dir / f"x.{h}") for h in ("h1", "h2", "h3")}
    second = run_dsh([*config, "-c", line])
    assert second.returncode == 0, second.stderr + second.stdout
    for host, st in before.items():
        now = os.stat(remote_dir / f"x.{host}")
        assert (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), host
        assert f"{host} | unchanged" in second.stdout, second.stdout
    src.write_bytes(os.urandom(100_000))  # changed: copied again, atomically (a new inode)
    third = run_dsh([*config, "-c", line])
    assert third.returncode == 0, third.stderr + third.stdout
    assert "h1 | copied" in third.stdout
    assert os.stat(remote_dir / "x.h1").st_ino != before["h1"].st_ino
    assert _sha(remote_dir / "x.h1") == _sha(src)


class _Watch(threading.Thread):
    """Looks at the destinations every few ms: each must be absent or whole."""

    def __init__(self, paths: list[Path], size: int) -> None:
        super().__init__(daemon=True)
        self.paths, self.size = paths, size
        self.seen: list[str] = []
        self.looks = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for path in self.paths:
                with contextlib.suppress(FileNotFoundError):
                    size = path.stat().st_size
                    if size != self.size:
                        self.seen.append(f"{path} seen with {size} bytes")
            self.looks += 1
            time.sleep(0.005)


def _temp_over(d: Path, size: int) -> bool:
    for p in _temps(d):
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            if p.stat().st_size > size:
                return True
    return False


def _temps(d: Path) -> list[Path]:
    return [p for p in d.iterdir() if p.name.startswith(".") and ".dsh-" in p.name]


@pytest.mark.parametrize("changed", [False, True], ids=["finished", "src-changed"])
def test_a_put_killed_midway_is_finished_by_another_machine_or_refused_if_src_changed(  # type: ignore[no-untyped-def]
    run_dsh, env, config: list[str], tmp_path: Path, remote_dir: Path, changed: bool
) -> None:
    size = 400 << 20
    src = tmp_path / "big"
    with src.open("wb") as f:
        for _ in range(size >> 20):
            f.write(os.urandom(1 << 20))
    want = _sha(src)
    dests = [remote_dir / "x.h1", remote_dir / "x.h2"]
    watch = _Watch(dests, size)
    watch.start()
    env["DSH_LEASE_TTL"] = "1"
    script = tmp_path / "put.dsh"
    script.write_text(f"put {src} @h[1-2]:{remote_dir}/x.$host\n")
    r = run_dsh([*config, "run", "--detach", "--session", "cp1", str(script)])
    assert r.returncode == 0, r.stderr
    owner = owner_pid(run_dsh, "cp1")  # first: the kill follows the moment below at once
    wait_for(lambda: _temp_over(remote_dir, 40 << 20), timeout=60)
    os.kill(owner, signal.SIGKILL)
    assert not any(p.exists() for p in dests)  # mid-put: nothing renamed into place
    if changed:
        with src.open("ab") as f:
            f.write(b"one more line\n")
    env["DSH_MACHINE_ID"] = "other"
    r = run_dsh([*config, "attach", "cp1"], timeout=120)
    watch.stop.set()
    watch.join()
    assert watch.looks > 50 and watch.seen == [], watch.seen
    if changed:
        assert r.returncode == 1, r.stdout + r.stderr
        assert "SRC differs on this machine" in r.stdout + r.stderr, r.stdout + r.stderr
        assert not any(p.exists() for p in dests)
    else:
        assert r.returncode == 0, r.stdout + r.stderr
        for dest in dests:
            assert _sha(dest) == want
        assert _temps(remote_dir) == []
    log = run_dsh(["log", "cp1", "--json"])
    assert log.returncode == 0, log.stderr
    entries = [json.loads(line) for line in log.stdout.splitlines()]
    starts = [e for e in entries if e.get("kind") == "start"]
    assert len(starts) == 2 and all(e["copy"]["sha256"] == want and e["copy"]["size"] == size for e in starts)
    ends = [e for e in entries if e.get("kind") == "end"]
    assert len(ends) == 2, ends  # one end per host: taken up, not started again
    if not changed:
        assert all(e["copied"]["sha256"] == want and e["copied"]["size"] == size for e in ends), ends
        said = run_dsh(["log", "cp1"]).stdout
        assert said.count(f"copied {size} bytes, sha256 {want}") == 2, said


def test_put_sudo_into_a_root_owned_directory_asks_the_password_once(  # type: ignore[no-untyped-def]
    env, config: list[str], tmp_path: Path
) -> None:
    assert sudo_ready(), "the test users' sudo rule is missing: run scripts/system-deps as root"
    # root's, writable by the second test user's group only: the login user cannot write it
    target = Path(tempfile.mkdtemp(prefix="dsh-sudo-put-"))
    try:
        target.chmod(0o770)
        os.chown(target, 0, pwd.getpwnam(USER2).pw_gid)
        src = tmp_path / "conf"
        src.write_bytes(b"listen 80;\n" * 1000)
        line = f"put --sudo {USER2} --mode 0640 {src} @h[1-2]:{target}/conf.$host"
        child = pexpect.spawn(
            dsh_path(), [*config, "-c", line], env={**env, "TERM": "xterm"}, encoding="utf-8", timeout=60
        )
        child.expect(rf"\[sudo\] password for {USER} on h\[1-2\]: ")
        child.sendline(PASSWORD)
        child.expect(pexpect.EOF)
        child.close()
        out = child.before
        assert child.exitstatus == 0, out
        assert "password for" not in out and PASSWORD not in out  # asked once
        for host in ("h1", "h2"):
            dest = target / f"conf.{host}"
            st = dest.stat()
            assert (st.st_uid, st.st_mode & 0o777) == (pwd.getpwnam(USER2).pw_uid, 0o640)
            assert _sha(dest) == _sha(src)
        assert sorted(p.name for p in target.iterdir()) == ["conf.h1", "conf.h2"]  # no temporary file left
    finally:
        subprocess.run(["rm", "-rf", str(target)], check=False)


def test_outdir_keeps_every_hosts_output_of_each_action(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    out = tmp_path / "out"
    src = tmp_path / "f"
    src.write_text("x\n")
    text = f"@h[1-2] echo out $host; echo err >&2\nput {src} @h1:{remote_dir}/f\necho here"
    done = run_dsh([*config, "--outdir", str(out), "-c", text])
    assert done.returncode == 0, done.stderr + done.stdout
    assert "h1 | out h1" in done.stdout  # shown as well
    for host in ("h1", "h2"):
        assert (out / "1.1.1" / f"{host}.out").read_text() == f"out {host}\n"
        assert (out / "1.1.1" / f"{host}.err").read_text() == "err\n"
    assert (out / "2.1.1" / "h1.out").read_text().startswith(f"copied {src} -> h1:{remote_dir}/f")
    assert (out / "3.1.1" / "local.out").read_text() == "here\n"
    assert (out / "1.1.1").stat().st_mode & 0o777 == 0o700
    assert (out / "1.1.1" / "h1.out").stat().st_mode & 0o777 == 0o600
    again = run_dsh([*config, "--outdir", str(out), "-c", "@h1 echo second"])
    assert again.returncode == 0
    assert (out / "1.1.1" / "h1.out").read_text() == "second\n"  # a new run of action 1.1.1: begun anew


def test_what_cannot_be_copied_fails_the_host_with_a_sentence(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    missing = run_dsh([*config, "-c", f"put {tmp_path}/nothing @h1:{remote_dir}/x"])
    assert missing.returncode == 1, missing.stderr + missing.stdout
    assert "nothing: no such file or directory" in missing.stdout + missing.stderr
    gone = run_dsh([*config, "-c", f"get @h1:{remote_dir}/nothing {tmp_path}/got"])
    assert gone.returncode == 1
    assert f"{remote_dir}/nothing: no such file or directory on h1" in gone.stdout + gone.stderr
    (remote_dir / "file").write_text("a file\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_text("a\n")
    onto = run_dsh([*config, "-c", f"put {tree} @h1:{remote_dir}/file"])
    assert onto.returncode == 1
    assert f"{remote_dir}/file: exists and is not a directory" in onto.stdout + onto.stderr
    assert "Traceback" not in onto.stderr + missing.stderr + gone.stderr


def test_a_copy_shows_bytes_and_hosts_on_a_terminals_bar(  # type: ignore[no-untyped-def]
    env, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    src = tmp_path / "f"
    src.write_bytes(os.urandom(40 << 20))
    line = f"put {src} @h[1-2]:{remote_dir}/x.$host"
    child = pexpect.spawn(
        dsh_path(), [*config, "-c", line], env={**env, "TERM": "xterm"}, encoding="utf-8", timeout=60
    )
    child.expect(r"\] [0-9.]+/80\.0 MiB, [0-2]/2 hosts")  # both hosts' bytes, in all
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before


def test_aliases_of_one_machine_are_sent_the_file_once(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    src = tmp_path / "f"
    src.write_bytes(os.urandom(3 << 20))
    done = run_dsh([*config, "--session", "once", "-c", f"put {src} @h[1-3]:{remote_dir}/x.$host"])
    assert done.returncode == 0, done.stderr + done.stdout
    (blob,) = (user_home(USER) / ".local/state/dsh/spool").glob(f"once.*/blobs/{_sha(src)}")
    assert _sha(blob) == _sha(src)  # the file one alias was sent, kept for the others
    inodes = {os.stat(remote_dir / f"x.{h}").st_ino for h in ("h1", "h2", "h3")} | {blob.stat().st_ino}
    assert len(inodes) == 4  # each a file of its own (copied there, not linked)
    assert all(os.stat(remote_dir / f"x.{h}").st_nlink == 1 for h in ("h1", "h2", "h3"))
    for host in ("h1", "h2", "h3"):
        assert _sha(remote_dir / f"x.{host}") == _sha(src)


def test_a_get_never_writes_through_a_link_out_of_its_tree(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    (remote_dir / "t" / "a").mkdir(parents=True)
    (remote_dir / "t" / "a" / "authorized_keys").write_text("an attacker's key\n")
    victim = tmp_path / "victim"
    victim.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "a").symlink_to(victim)  # a link where the host has a directory
    done = run_dsh([*config, "-c", f"get @h1:{remote_dir}/t {dest}"])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "not written through" in done.stdout + done.stderr
    assert list(victim.iterdir()) == []


@pytest.mark.parametrize("sums", ["none", "broken-openssl"])
def test_a_host_with_no_sha256_tool_is_never_skipped_and_still_checked(  # type: ignore[no-untyped-def]
    run_dsh, tmp_path: Path, remote_dir: Path, sums: str
) -> None:
    tools = Path(tempfile.mkdtemp(prefix="dsh-no-sums-"))  # sh and cp; no working openssl
    tools.chmod(0o755)
    for name in ("sh", "cp", *(("sha256sum",) if sums != "none" else ())):
        (tools / name).symlink_to(shutil.which(name) or f"/bin/{name}")
    if sums != "none":  # an openssl that fails: the next tool answers
        (tools / "openssl").write_text("#!/bin/sh\nexit 1\n")
        (tools / "openssl").chmod(0o755)
    server = Sshd(config=[f"SetEnv PATH={tools}"]).start()
    try:
        known = tmp_path / "known_hosts"
        known.write_text(server.known_hosts_line())
        config = tmp_path / "ssh_config"
        config.write_text(server.host_block(["bare"], known))
        src = tmp_path / "f"
        src.write_bytes(os.urandom(200_000))
        line = f"put {src} @bare:{remote_dir}/x"
        for n in range(2):
            done = run_dsh(["--ssh-config", str(config), "-c", line])
            assert done.returncode == 0, done.stdout + done.stderr
            if sums == "none" or n == 0:  # never "unchanged" where nothing can say so
                assert "bare | copied" in done.stdout, done.stdout
            else:
                assert "bare | unchanged" in done.stdout, done.stdout
        assert _sha(remote_dir / "x") == _sha(src)  # checked by reading it back
    finally:
        server.cleanup()
        shutil.rmtree(tools, ignore_errors=True)

"""Copies (issue 19) under attack: the defects a review found, each shown against the
test sshd, and held fixed."""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from tests.conftest import SshSetup, dsh_path
from tests.credentials import PASSWORD, sudo_ready
from tests.helpers.hostile import hostile_host
from tests.sshd import USER, USER2


@pytest.fixture
def config(ssh_setup: SshSetup) -> list[str]:
    return ["--ssh-config", str(ssh_setup.config)]


@pytest.fixture
def remote_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory the sshd's login user can write (not sticky), removed after."""
    d = Path(f"/tmp/dsh-copies-attack-{os.getpid()}-{tmp_path.name}")
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def _as(user: str, *argv: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", *argv], check=True, timeout=30)


def test_a_get_does_not_make_setuid_or_setgid_files_here(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    # Whoever can write the host's file (or a hostile host) chose these bits; run as
    # root, the get made a setuid-root program here (sftp's get keeps only 0777).
    tool = remote_dir / "tool"
    _as(USER, "cp", "/bin/true", str(tool))
    _as(USER, "chmod", "6755", str(tool))
    got = tmp_path / "got"
    done = run_dsh([*config, "-c", f"get @h1:{tool} {got}/$host"])
    assert done.returncode == 0, done.stderr + done.stdout
    mode = (got / "h1").stat().st_mode
    assert mode & (stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX) == 0, oct(mode)


def test_a_nul_byte_in_a_bound_copy_path_fails_the_host_without_an_internal_error(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    (remote_dir / "f").write_text("x\n")
    for line in (
        f"get @h1:{remote_dir}/f {tmp_path}/$x",  # ValueError from os.unlink
        f"put {tmp_path}/$x @h1:{remote_dir}/g",  # ValueError from os.lstat (manifest)
    ):
        done = run_dsh([*config, "-c", f"x = command printf 'a\\000b'\n{line}"])
        assert done.returncode == 1, done.stderr + done.stdout
        assert "internal error" not in done.stderr, done.stderr


@pytest.mark.parametrize("direction", ["get", "put"])
def test_a_tree_deeper_than_pythons_recursion_limit_is_no_internal_error(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path, direction: str
) -> None:
    deep = "/".join(["a"] * 1100)
    if direction == "get":
        _as(USER, "mkdir", "-p", f"{remote_dir}/deep/{deep}")
        line = f"get @h1:{remote_dir}/deep {tmp_path}/got.$host"
    else:
        subprocess.run(["mkdir", "-p", f"{tmp_path}/deep/{deep}"], check=True)  # pathlib recurses
        line = f"put {tmp_path}/deep @h1:{remote_dir}/deep"
    try:
        done = run_dsh([*config, "-c", f"{line} | within 2m"], timeout=150)
    finally:  # too deep for shutil.rmtree (pytest's cleanup) too
        subprocess.run(["rm", "-rf", f"{tmp_path}/deep", f"{tmp_path}/got.h1"], check=False)
    assert done.returncode in (0, 1), done.stderr + done.stdout
    assert "internal error" not in done.stderr, done.stderr


def _spawn_sudo_put(env: dict[str, str], config: list[str], src: Path, dest: str) -> pexpect.spawn:
    line = f"put --sudo {USER2} --mode 0644 {src} @h1:{dest}"
    child = pexpect.spawn(
        dsh_path(), [*config, "-c", line], env={**env, "TERM": "xterm"}, encoding="utf-8", timeout=60
    )
    child.expect(rf"\[sudo\] password for {USER} on h1: ")
    return child


def _end(child: pexpect.spawn) -> tuple[int | None, str]:
    child.sendline(PASSWORD)
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, str(child.before)


def _sudo_user_dir(remote_dir: Path) -> Path:
    """A directory of the sudo user's that others can write (as a service's often is)."""
    d = remote_dir / "srv"
    d.mkdir()
    d.chmod(0o777)
    os.chown(d, pwd.getpwnam(USER2).pw_uid, -1)
    return d


def test_put_sudo_into_an_existing_directory_is_refused(  # type: ignore[no-untyped-def]
    env, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    assert sudo_ready(), "the test users' sudo rule is missing: run scripts/system-deps as root"
    d = _sudo_user_dir(remote_dir)
    (d / "conf.d").mkdir()
    (d / "conf.d").chmod(0o777)
    src = tmp_path / "conf"
    src.write_text("x\n")
    child = _spawn_sudo_put(env, config, src, f"{d}/conf.d")
    code, out = _end(child)
    # it said "copied ... ok", and left the file inside under its temporary name
    assert list((d / "conf.d").iterdir()) == [], out
    assert code == 1, out


def test_put_sudo_does_not_write_through_a_link_planted_at_its_temporary_name(  # type: ignore[no-untyped-def]
    env, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    assert sudo_ready(), "the test users' sudo rule is missing: run scripts/system-deps as root"
    d = _sudo_user_dir(remote_dir)
    victim = remote_dir / "victim"  # the sudo user's private file elsewhere
    victim.write_text("precious\n")
    victim.chmod(0o600)
    os.chown(victim, pwd.getpwnam(USER2).pw_uid, pwd.getpwnam(USER2).pw_gid)
    src = tmp_path / "conf"
    src.write_text("deployed\n")
    child = _spawn_sudo_put(env, config, src, f"{d}/conf")
    # While sudo waits for the password, every user sees its argv (ps): the temporary name.
    ps = subprocess.run(
        ["runuser", "-u", "nobody", "--", "ps", "-ww", "-eo", "args"], capture_output=True, text=True
    )
    lines = [x for x in ps.stdout.splitlines() if "dsh-install" in x and "sh -c" in x]
    assert lines, ps.stdout
    line = lines[0]
    tmp = line.split("dsh-install ", 1)[1].split()[0]
    _as("nobody", "ln", "-s", str(victim), tmp)
    _code, out = _end(child)
    assert victim.read_text() == "precious\n", out
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600, out
    assert not (d / "conf").is_symlink(), out


def test_outdir_does_not_write_through_a_link_another_user_planted(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path, remote_dir: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    out = remote_dir / "out"  # made first by another user, as in a shared /tmp
    _as(USER, "mkdir", str(out))
    _as(USER, "ln", "-s", str(elsewhere), str(out / "1.1.1"))
    done = run_dsh([*config, "--outdir", str(out), "-c", "@h1 echo from-h1"])
    assert list(elsewhere.iterdir()) == []
    assert "is not a private directory of this user's" in done.stderr, done.stderr
    assert "h1 | from-h1" in done.stdout  # shown all the same


def test_a_hostile_hosts_lies_end_a_get_with_a_sentence(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "evil"
    root.mkdir()
    (root / "endless").write_text("")  # said to hold 10 bytes, read without an end
    (root / "liar").write_bytes(b"four")  # said to hold 2**63 bytes
    (root / "t").mkdir()
    (root / "t" / "nullink").symlink_to("x")  # its target said to hold a NUL
    work = tmp_path / "work"
    work.mkdir()
    with hostile_host(work, root) as block:
        config = tmp_path / "ssh_config"
        config.write_text(block)
        args = ["--ssh-config", str(config), "-c"]
        # its lies are its SFTP server's: over SFTP (the host agent's are in
        # tests/remote/test_hostagent_files_ssh.py)
        off = {"DSH_HOST_AGENT": "off"}
        started = time.monotonic()
        endless = run_dsh([*args, f"get @evil:{root}/endless {tmp_path}/got | within 30s"], env_extra=off)
        assert endless.returncode == 1, endless.stdout + endless.stderr
        assert "it grew while it was read" in endless.stdout + endless.stderr
        assert time.monotonic() - started < 20  # not read until the timeout
        assert not [p for p in tmp_path.iterdir() if ".dsh-" in p.name]  # its temporary file removed
        liar = run_dsh([*args, f"get @evil:{root}/liar {tmp_path}/liar"], env_extra=off)
        assert liar.returncode == 0, liar.stdout + liar.stderr
        assert "(4 bytes," in liar.stdout  # what came, not what was said
        link = run_dsh([*args, f"get @evil:{root}/t {tmp_path}/t"], env_extra=off)
        assert link.returncode == 1, link.stdout + link.stderr
        assert "which no link here can" in link.stdout + link.stderr
    for done in (endless, liar, link):
        assert "internal error" not in done.stderr, done.stderr

"""The same input to every host (issue 20): `CMD | stdin FILE` and `| stdin -`, read
whole when the line starts, kept in each host's spool as ACTION@ALIAS.in; a
takeover runs nothing twice and gives the hosts not started the same bytes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SshSetup
from tests.helpers.sessions import owner_pid
from tests.helpers.wait import wait_for


@pytest.fixture
def config(ssh_setup: SshSetup) -> list[str]:
    return ["--ssh-config", str(ssh_setup.config)]


@pytest.fixture
def remote_dir(tmp_path: Path) -> Path:
    """A directory the test user (the sshd's login) can write, removed after."""
    d = Path(f"/tmp/dsh-stdin-{os.getpid()}-{tmp_path.name}")
    d.mkdir(mode=0o777)
    d.chmod(0o777)
    yield d
    subprocess.run(["rm", "-rf", str(d)], check=False)


def test_every_host_reads_the_files_bytes(run_dsh, config: list[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = os.urandom(200_000) + b"\x00 and a last line without newline"
    (tmp_path / "f").write_bytes(data)
    done = run_dsh([*config, "-c", "@h[1-3] wc -c | stdin ./f"])
    assert done.returncode == 0, done.stderr + done.stdout
    for host in ("h1", "h2", "h3"):
        assert f"{host} | {len(data)}" in done.stdout, done.stdout
    digest = hashlib.sha256(data).hexdigest()
    done = run_dsh([*config, "-c", "@h[1-2] sha256sum | stdin f | where out ~ " + digest])
    assert done.returncode == 0, done.stderr + done.stdout


def test_dshs_own_input_and_a_local_line(run_dsh, config: list[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    done = run_dsh([*config, "-c", "@h[1-2] tr a-z A-Z | stdin -\ncat | stdin -"], input="same for all\n")
    assert done.returncode == 0, done.stderr + done.stdout
    assert "h1 | SAME FOR ALL" in done.stdout and "h2 | SAME FOR ALL" in done.stdout, done.stdout
    assert done.stdout.count("same for all") == 1, done.stdout  # the local line: read once, given again


def test_bad_inputs_are_refused_before_anything_runs(run_dsh, config: list[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "big").write_bytes(b"x" * 2048)
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "dsh").mkdir()
    (tmp_path / "conf" / "dsh" / "config.toml").write_text("[limits]\nmax_stdin = 1024\n")
    cases = [
        ("@h1 touch ran | stdin ./missing", "cannot read ./missing: No such file or directory"),
        ("@h1 touch ran | stdin big", "big holds more than 1024 bytes, over the cap on a command's input"),
        ("@h1 touch ran | stdin conf", "conf is not a regular file"),
    ]
    for text, said in cases:
        done = run_dsh([*config, "-c", text], env_extra={"XDG_CONFIG_HOME": str(tmp_path / "conf")})
        assert done.returncode == 2, done.stderr
        assert said in done.stderr and "Traceback" not in done.stderr, done.stderr
    # at compile time, with a caret: the path cannot hold $host, nor a secret
    done = run_dsh([*config, "-c", "@h[1-2] cat | stdin in.$host"])
    assert done.returncode == 2 and "its path cannot hold $host" in done.stderr and "^" in done.stderr
    done = run_dsh([*config, "-c", "sleep 1s | stdin f"])
    assert done.returncode == 2 and "'stdin' gives a command its input" in done.stderr, done.stderr
    # a detached executor has no standard input of its own
    script = tmp_path / "s.dsh"
    script.write_text("cat | stdin -\n")
    done = run_dsh([*config, "run", "--session", "own", "--detach", str(script)])
    assert done.returncode == 2, done.stderr
    assert "reads dsh's own standard input, which these lines have not" in done.stderr, done.stderr
    assert "^" in done.stderr
    done = run_dsh([*config], input="cat | stdin -\n")  # lines piped in: that input is theirs
    assert done.returncode == 2 and "reads dsh's own standard input" in done.stderr, done.stderr


@pytest.mark.parametrize("changed", [False, True], ids=["same-input", "input-changed"])
def test_a_takeover_midline_runs_nothing_twice_and_gives_the_rest_the_same_input(  # type: ignore[no-untyped-def]
    run_dsh, env, config: list[str], tmp_path: Path, remote_dir: Path, changed: bool
) -> None:
    data = b"".join(b"line %d\n" % i for i in range(5000))
    src = tmp_path / "f"
    src.write_bytes(data)
    d = remote_dir
    env["DSH_LEASE_TTL"] = "1"
    script = tmp_path / "in.dsh"
    # one host at a time; h1 is still running when its owner dies
    script.write_text(
        f"@h[1-3] echo run >>{d}/runs.$host; cat >{d}/got.$host; [ $host != h1 ] || sleep 4 | stdin ./f "
        "| batch 1\n"
    )
    r = run_dsh([*config, "run", "--detach", "--session", "in1", str(script)])
    assert r.returncode == 0, r.stderr
    owner = owner_pid(run_dsh, "in1")
    wait_for(lambda: (d / "got.h1").exists() and (d / "got.h1").stat().st_size == len(data), timeout=30)
    os.kill(owner, signal.SIGKILL)
    assert not (d / "runs.h2").exists()
    if changed:
        src.write_bytes(data + b"one more\n")
    env["DSH_MACHINE_ID"] = "other"
    r = run_dsh([*config, "attach", "in1"], timeout=60)
    said = r.stdout + r.stderr
    assert (d / "runs.h1").read_text() == "run\n", said  # followed, not started again
    if changed:
        assert r.returncode == 1, said
        assert "not started: its input" in said and "differs on this machine" in said, said
        assert not (d / "runs.h2").exists() and not (d / "runs.h3").exists(), said
    else:
        assert r.returncode == 0, said
        for host in ("h2", "h3"):
            assert (d / f"runs.{host}").read_text() == "run\n", said
            assert (d / f"got.{host}").read_bytes() == data
    log = run_dsh(["log", "in1", "--json"])
    entries = [json.loads(line) for line in log.stdout.splitlines()]
    starts = [e for e in entries if e.get("kind") == "start"]
    assert [e["host"] for e in starts] == (["h1"] if changed else ["h1", "h2", "h3"]), starts
    digest = hashlib.sha256(data).hexdigest()
    assert all(e["stdin"] == {"path": str(src), "size": len(data), "sha256": digest} for e in starts), starts
    said = run_dsh(["log", "in1"]).stdout
    assert said.count(f"; stdin {src}, {len(data)} bytes, sha256 {digest}") == len(starts), said

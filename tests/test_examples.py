"""Every example compiles; those that need no hosts run with the status they promise."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import dsh_path

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.dsh"))
EXPECTED_STATUS = {"timeouts.dsh": 1}


def _needs_hosts(script: Path) -> bool:
    code = (line.split("#")[0] for line in script.read_text().splitlines())
    return any(word.startswith("@") for line in code for word in line.split())


LOCAL = [s for s in EXAMPLES if not _needs_hosts(s)]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3 and len(LOCAL) >= 2


def _given(script: Path, where: Path) -> list[str]:
    """The files an example names, written in `where` (its working directory), and
    the options it is run with: inventories.dsh's inventory and host file."""
    if script.name != "inventories.dsh":
        return []
    (where / "hosts.ini").write_text("[web]\nweb[01:04] ansible_user=deploy\n[db]\ndb[1:2]\n")
    (where / "hosts.txt").write_text("web01\ndb2  # the replica\n")
    return ["--inventory", "hosts.ini"]


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles(run_dsh, script: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*_given(script, tmp_path), "explain", str(script), "arg", "80"])
    assert r.returncode == 0, r.stderr
    assert "worst" in r.stdout


@pytest.mark.parametrize("script", LOCAL, ids=lambda p: p.name)
def test_local_example_runs(run_dsh, script: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([str(script), "world"])
    assert r.returncode == EXPECTED_STATUS.get(script.name, 0), r.stdout + r.stderr
    if script.name == "hello.dsh":
        assert "hello world from" in r.stdout
        assert "world $who " in r.stdout


def test_fleet_example_runs_over_ssh(run_dsh, ssh_setup) -> None:  # type: ignore[no-untyped-def]
    script = Path(__file__).parent.parent / "examples" / "fleet.dsh"
    r = run_dsh([*ssh_setup.args(), str(script)], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "web[01-40] (40)  ok" in r.stdout or "40 hosts: 40 ok" in r.stdout
    assert "@{notok} is empty: nothing to run" in r.stderr


def test_rolling_example_rolls_and_stops_after_max_fail(run_dsh, ssh_setup) -> None:  # type: ignore[no-untyped-def]
    script = Path(__file__).parent.parent / "examples" / "rolling.dsh"
    port = str(ssh_setup.server.port)  # each host's own sshd stands in for the web server
    r = run_dsh([*ssh_setup.args(), str(script), 'echo restarting "$0"', port], timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"all listening on port {port}" in r.stdout
    failing = 'test "$0" != web03 -a "$0" != web04'
    r = run_dsh([*ssh_setup.args(), "--json", str(script), failing, port], timeout=60)
    assert r.returncode == 1
    events = [json.loads(line) for line in r.stdout.splitlines()]
    first = [e for e in events if e["event"] == "result" and e["line"] == 11]
    outcomes = {e["host"]: e["outcome"] for e in first}
    assert [outcomes[f"web0{i}"] for i in range(1, 7)] == [
        "ok",
        "ok",
        "failed",
        "failed",
        "skipped",
        "skipped",
    ]
    said = [e["text"] for e in events if e["event"] == "output"]
    assert sorted(t for t in said if "failed here" in t) == [
        "web03: the restart failed here",
        "web04: the restart failed here",
    ]


def test_gate_example_waits_for_its_approval(run_dsh, env, ssh_setup) -> None:  # type: ignore[no-untyped-def]
    script = Path(__file__).parent.parent / "examples" / "gate.dsh"
    assert run_dsh(["--session", "deploy", "-c", "true"]).returncode == 0
    proc = subprocess.Popen(
        [dsh_path(), *ssh_setup.args(), "--session", "deploy", str(script), 'echo restarting "$0"'],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(
            '"kind": "await"' in line for line in run_dsh(["log", "--json", "deploy"]).stdout.splitlines()
        ):
            assert time.monotonic() < deadline and proc.poll() is None, "the gate never waited"
            time.sleep(0.1)
        assert run_dsh(["signal", "deploy", "approve", "alice"]).returncode == 0
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "approved by alice" in out
    assert "web10 | restarting web10" in out

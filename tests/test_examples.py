"""Every example compiles; those that need no hosts run with the status they promise."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.dsh"))
EXPECTED_STATUS = {"timeouts.dsh": 1}


def _needs_hosts(script: Path) -> bool:
    code = (line.split("#")[0] for line in script.read_text().splitlines())
    return any(word.startswith("@") for line in code for word in line.split())


LOCAL = [s for s in EXAMPLES if not _needs_hosts(s)]


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 3 and len(LOCAL) >= 2


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles(run_dsh, script: Path) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["explain", str(script), "arg"])
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

"""Crash at every step boundary of a reference script, resume from another machine.

DSH_FAULT_CRASH_AFTER=N makes dsh die (exit 137, as kill -9) right after its N-th
checkpoint transaction is durable. For N = 1, 2, … until a run no longer crashes,
the reference script runs on real SSH hosts, dies there, and `dsh attach` from
another machine id takes it over: every run must end with the same journal and
every remote action launched exactly once (its markers written once)."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from tests.conftest import SshSetup

SCRIPT = """\
@h[1-2] echo a$host >> {d}/M.$host
sleep 1s
v = @h[1-2] sh -c 'echo b$0 >> {d}/M.$0; echo b$0' $host
@h[1-2] echo c$host >> {d}/M.$host | retry 1
"""


def ends(run_dsh, name: str) -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    r = run_dsh(["log", "--json", name])
    assert r.returncode == 0, r.stderr
    entries = [json.loads(line) for line in r.stdout.splitlines()]
    return sorted((e["action"], e["host"], e["outcome"]) for e in entries if e["kind"] == "end")


def crash_everywhere(run_dsh, env, ssh_setup: SshSetup, tmp_path: Path, script_text: str, marks_want: str):  # type: ignore[no-untyped-def]
    """Run the script crashing after its 1st, 2nd, … checkpoint, each time taken over
    elsewhere; returns the clean run's ends and the resumed runs' ends."""
    env["DSH_LEASE_TTL"] = "0.5"
    reference = None
    resumed_journals: dict[int, list[tuple[str, str, str]]] = {}
    for n in range(1, 60):
        marks = Path(tempfile.mkdtemp(prefix=f"dsh-crash-{n}-"))
        marks.chmod(0o777)
        script = tmp_path / f"ref{n}.dsh"
        script.write_text(script_text.format(d=marks))
        name = f"crash{n}x{time.time_ns()}"
        crashed = run_dsh(
            [*ssh_setup.args(), "--session", name, str(script)],
            env_extra={"DSH_FAULT_CRASH_AFTER": str(n), "DSH_MACHINE_ID": "first"},
        )
        if crashed.returncode != 137:  # no boundary left to crash at: this run went through
            assert crashed.returncode == 0, crashed.stderr
            reference = ends(run_dsh, name)
            break
        resumed = run_dsh(
            [*ssh_setup.args(), "attach", name], env_extra={"DSH_MACHINE_ID": "second"}, timeout=60
        )
        assert resumed.returncode == 0, f"boundary {n}: {resumed.stdout}{resumed.stderr}"
        for host in ("h1", "h2"):
            assert (marks / f"M.{host}").read_text() == marks_want.format(h=host), f"boundary {n}"
        resumed_journals[n] = ends(run_dsh, name)
    assert reference is not None
    return reference, resumed_journals


def test_crash_at_every_step_boundary_then_resume_elsewhere(  # type: ignore[no-untyped-def]
    run_dsh, env, ssh_setup: SshSetup, tmp_path: Path
) -> None:
    reference, resumed_journals = crash_everywhere(
        run_dsh, env, ssh_setup, tmp_path, SCRIPT, "a{h}\nb{h}\nc{h}\n"
    )
    # Checkpoints are batched: a clean run of this script takes a handful of
    # transactions (5 here), every one of them a boundary crashed at above.
    assert len(resumed_journals) >= 4
    assert reference == sorted((f"{run}.1.1", h, "ok") for run in (1, 3, 4) for h in ("h1", "h2"))
    for n, got in resumed_journals.items():  # the same final journal, each action ended once
        assert got == reference, f"boundary {n}: {got}"


COMPOUND = """\
fn mark(tag) {{ @h[1-2] sh -c 'echo $1$0 >> {d}/M.$0' $host $tag }}
for t in a b {{ mark $t }}
if @h1 test -d {d} {{
  mark c
}} else {{
  mark x
}}
"""


def test_crash_inside_for_and_if_then_resume_elsewhere(  # type: ignore[no-untyped-def]
    run_dsh, env, ssh_setup: SshSetup, tmp_path: Path
) -> None:
    reference, resumed_journals = crash_everywhere(
        run_dsh, env, ssh_setup, tmp_path, COMPOUND, "a{h}\nb{h}\nc{h}\n"
    )
    assert len(resumed_journals) >= 4
    assert len(reference) == 7  # 2 hosts x 3 marks, and the condition on h1
    for n, got in resumed_journals.items():
        assert got == reference, f"boundary {n}: {got}"

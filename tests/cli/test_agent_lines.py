"""DSH_HOST_AGENT=auto (the default) with lines piped in: the agents boot while dsh
waits for the next line, and that line goes through them."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.conftest import SshSetup, dsh_path
from tests.sshd import USER, processes_of


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(") ")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def agents(server: int) -> set[int]:
    """The agents (and their keepers, forked by them) on the test host under sshd
    `server`: not another test run's."""
    found = set()
    for pid in processes_of(USER, "dsh-agent dsh-spool-"):
        here = pid
        while here > 1 and here != server:
            here = _parent(here)
        if here == server:
            found.add(pid)
    return found


def test_piped_lines_boot_agents_between_them_and_the_next_line_uses_them(  # type: ignore[no-untyped-def]
    env, ssh_setup: SshSetup
) -> None:
    server = ssh_setup.server.proc.pid if ssh_setup.server.proc else 0
    before = agents(server)
    proc = subprocess.Popen(
        [dsh_path(), *ssh_setup.args(), "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "DSH_HOST_AGENT": "auto"},
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write("@h[1-2] echo one\n")
        proc.stdin.flush()
        events = []
        while not any(e.get("event") == "done" for e in events):
            line = proc.stdout.readline()
            assert line, "dsh ended before its first line was done"
            events.append(json.loads(line))
        deadline = time.monotonic() + 10
        while len(agents(server) - before) < 4 and time.monotonic() < deadline:  # two agents, two keepers
            time.sleep(0.05)
        booted = agents(server) - before
        assert len(booted) == 4, "no agents booted while dsh waited for its next line"
        proc.stdin.write("@h[1-2] echo two\n")
        proc.stdin.close()
        out = proc.stdout.read()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    shown = [json.loads(line) for line in out.splitlines()]
    ends = [e for e in shown if e.get("event") == "done"]
    assert len(ends) == 1 and ends[0]["ok"], shown
    assert out.count("two") >= 2, out  # each host's output
    deadline = time.monotonic() + 10
    while agents(server) & booted and time.monotonic() < deadline:  # they die with dsh's connections
        time.sleep(0.05)
    assert not agents(server) & booted

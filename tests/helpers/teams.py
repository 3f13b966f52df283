"""People on one etcd with auth on, for the tests of teams and approvals: each
person an etcd user on a machine of their own (a machine id and a state
directory; the same OS user: the etcd user is who they are)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.conftest import dsh_path
from tests.etcd import ROOT_PASSWORD, Etcd


def person(
    env: dict[str, str], server: Etcd, tmp: Path, name: str, passwords: Mapping[str, str]
) -> dict[str, str]:
    """The environment of `name` (root logs in with etcd's root password)."""
    return {
        **env,
        "DSH_STORE": f"etcd://{name}@{server.endpoints}",
        "DSH_ETCD_PASSWORD": passwords.get(name, ROOT_PASSWORD),
        "DSH_MACHINE_ID": f"m-{name}",
        "XDG_STATE_HOME": str(tmp / f"state-{name}"),
        "DSH_LEASE_TTL": "2",
    }


def accounts(
    run_dsh: Callable[..., subprocess.CompletedProcess[str]],
    env: dict[str, str],
    server: Etcd,
    tmp: Path,
    passwords: Mapping[str, str],
) -> dict[str, str]:
    """etcd's auth turned on by `dsh admin init` and a person's account for each of
    `passwords`; etcd's root's environment."""
    root = person(env, server, tmp, "root", passwords)
    assert run_dsh(["admin", "init", "--yes"], env_extra=root).returncode == 0
    for name, password in passwords.items():
        made = run_dsh(["admin", "user", "add", name], env_extra={**root, "DSH_ADMIN_PASSWORD": password})
        assert made.returncode == 0, made.stderr
    return root


@pytest.fixture(scope="module")
def server() -> Iterator[Etcd]:
    """One etcd with auth on (root with ROOT_PASSWORD) for a test module."""
    etcd = Etcd(auth=True).start()
    yield etcd
    etcd.stop()


def asking(env: Mapping[str, str], text: str, session: str, team: str = "ops") -> subprocess.Popen[str]:
    """`dsh --team TEAM --session SESSION -c TEXT` running (an await approval in it)."""
    return subprocess.Popen(
        [dsh_path(), "--team", team, "--session", session, "-c", text],
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def until_asked(
    run_dsh: Callable[..., subprocess.CompletedProcess[str]],
    env: dict[str, str],
    session: str,
    team: str = "ops",
) -> None:
    """Until the session's journal has its ask (action 1.1.1), within 20 s."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if " ask 1.1.1: " in run_dsh(["--team", team, "log", session], env_extra=env).stdout:
            return
        time.sleep(0.2)
    raise AssertionError("the approval was never asked")

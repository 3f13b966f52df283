"""People on one etcd with auth on, for the tests of teams and approvals: each
person an etcd user on a machine of their own (a machine id and a state
directory; the same OS user: the etcd user is who they are)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

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


@pytest.fixture(scope="module")
def server() -> Iterator[Etcd]:
    """One etcd with auth on (root with ROOT_PASSWORD) for a test module."""
    etcd = Etcd(auth=True).start()
    yield etcd
    etcd.stop()

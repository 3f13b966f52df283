"""Machines in tests: dsh processes with a machine id and a state directory of their
own, sharing one store (an etcd, by URL and prefix)."""

from __future__ import annotations

from pathlib import Path


def machine(
    env: dict[str, str],
    tmp_path: Path,
    name: str,
    url: str,
    prefix: str,
    *,
    ttl: float | None = None,
    insecure: bool = False,
) -> dict[str, str]:
    """The environment of one machine: its id, its state dir, the shared etcd (and a
    lease TTL; `insecure`: an etcd off loopback without TLS or auth is accepted)."""
    made = {
        **env,
        "DSH_MACHINE_ID": name,
        "XDG_STATE_HOME": str(tmp_path / f"state-{name}"),
        "DSH_STORE": url,
        "DSH_ETCD_PREFIX": prefix,
    }
    if ttl is not None:
        made["DSH_LEASE_TTL"] = f"{ttl:g}"
    if insecure:
        made["DSH_INSECURE_STORE"] = "1"
    return made

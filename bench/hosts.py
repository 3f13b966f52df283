"""The benchmark's own hosts: one loopback OpenSSH sshd and N aliases of it.

`fleet()` starts an sshd (MaxStartups far above any fan-out, its own host key,
key logins for the non-root test user made by scripts/system-deps), writes a
private ssh config in which `h1`…`hN` all lead to it, a known_hosts file with
its key, raises the open-file limit, and gives an environment with no
ssh-agent, no DSH_* variables and private XDG dirs (the sessions dsh makes stay
out of the user's store).
"""

from __future__ import annotations

import compileall
import contextlib
import os
import resource
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = "scripts/bench installs them (or: .venv/bin/python -m pip install -e '.[bench]')"


@dataclass
class Fleet:
    port: int
    user: str
    key: str
    known_hosts: Path
    ssh_config: Path
    env: dict[str, str]
    work: Path
    log: Path

    def nodes(self, count: int) -> str:
        return f"h[1-{count}]"


def raise_nofile() -> None:
    """Raise the open-file soft limit to the hard one; the contenders inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return
    with contextlib.suppress(ValueError, OSError):  # if it cannot be raised, a contender fails loudly
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def tool(name: str, hint: str) -> str:
    path = os.path.join(os.path.dirname(sys.executable), name)
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"bench: {path} is missing: {hint}")
    return path


def clean_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID") and not k.startswith(("DSH_", "ETCD_"))
    }
    (home / "state").mkdir(parents=True, exist_ok=True)
    (home / "config").mkdir(parents=True, exist_ok=True)
    env.update(NO_COLOR="1", XDG_STATE_HOME=str(home / "state"), XDG_CONFIG_HOME=str(home / "config"))
    return env


def compiled() -> None:
    """dsh as installed for users: bytecode present (PYTHONDONTWRITEBYTECODE may be set)."""
    import dsh as package

    compileall.compile_dir(os.path.dirname(package.__file__), quiet=1)


#: What the sh wrapper runs on a host: a bare fleet's sessions have these and no python3.
BARE_TOOLS = ("sh", "setsid", "sleep", "cat", "mkdir", "rm", "mv", "chmod", "mkfifo", "find", "env", "true")


@contextlib.contextmanager
def fleet(*, python: bool = True) -> Iterator[Fleet]:
    """The sshd and its aliases; `python=False`: a host without python3 (its sessions'
    PATH holds the wrapper's tools alone), which dsh reaches through the wrapper."""
    from tests.sshd import USER, Sshd

    raise_nofile()
    work = Path(tempfile.mkdtemp(prefix="dsh-bench-sshd-"))
    work.chmod(0o755)  # the test user reads its files
    config: list[str] = []
    if not python:
        tools = work / "tools"
        tools.mkdir(mode=0o755)
        for name in BARE_TOOLS:
            found = shutil.which(name)
            if found is None:
                raise RuntimeError(f"bench: {name} is missing on this machine")
            (tools / name).symlink_to(found)
        config.append(f"SetEnv PATH={tools}")
    sshd = Sshd(work, config=config)
    try:
        sshd.start()
        known_hosts = work / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line())
        ssh_config = work / "ssh_config"
        ssh_config.write_text(sshd.host_block(["h*"], known_hosts))
        home = Path(tempfile.mkdtemp(prefix="dsh-bench-", dir=work))
        yield Fleet(
            sshd.port, USER, str(sshd.client_key), known_hosts, ssh_config, clean_env(home), work, sshd.log
        )
        lines = sshd.log.read_text(errors="replace").splitlines()
        # start() probes the port for the banner and hangs up: sshd logs that once.
        probe = next((i for i, line in enumerate(lines) if "kex_exchange_identification" in line), None)
        if probe is not None:
            del lines[probe]
        if lines:
            print(f"bench: sshd logged {len(lines)} line(s), e.g.: {lines[0][:200]}", file=sys.stderr)
    finally:
        sshd.cleanup()

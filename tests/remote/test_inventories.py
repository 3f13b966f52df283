"""Inventories (issue 20): ClusterShell's group configuration, Ansible inventories
(INI and YAML) whose ansible_* values win over the ssh config, host files, and
dsh's order among them; groups resolved when a line starts and kept for a resume."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SshSetup
from tests.helpers.sessions import owner_pid
from tests.helpers.wait import wait_for
from tests.sshd import USER


def _lines_by_host(out: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in out.splitlines():
        host, bar, rest = line.partition(" | ")
        if bar:
            found[host.strip()] = rest
    return found


@pytest.fixture
def config(ssh_setup: SshSetup) -> list[str]:
    return ["--ssh-config", str(ssh_setup.config)]


def _groups_d(env: dict[str, str]) -> Path:
    d = Path(env["XDG_CONFIG_HOME"]) / "clustershell" / "groups.d"
    d.mkdir(parents=True)
    return d


def test_a_clustershell_yaml_group_under_xdg_config_home(run_dsh, env, config: list[str]) -> None:  # type: ignore[no-untyped-def]
    # no groups.conf anywhere: groups.d/*.yaml is read all the same, as ClusterShell ships it
    (_groups_d(env) / "local.yaml").write_text("local:\n  web: 'h[1-2]'\n  db: '@web,h3'\n")
    done = run_dsh([*config, "-c", "@{web} echo on $host"])
    assert done.returncode == 0, done.stderr + done.stdout
    assert _lines_by_host(done.stdout) == {"h1": "on h1", "h2": "on h2"}, done.stdout
    done = run_dsh([*config, "-c", "@{local:db}!h1 echo on $host"])
    assert done.returncode == 0, done.stderr + done.stdout
    assert _lines_by_host(done.stdout) == {"h2": "on h2", "h3": "on h3"}, done.stdout


def test_a_hanging_upcall_times_out_with_a_sentence_and_leaves_nothing(  # type: ignore[no-untyped-def]
    run_dsh, env, config: list[str], tmp_path: Path
) -> None:
    cs = Path(env["XDG_CONFIG_HOME"]) / "clustershell"
    cs.mkdir(parents=True)
    marker = f"{time.time_ns() % 10**9}"
    (cs / "groups.conf").write_text(
        f"[Main]\ndefault: slow\n\n[slow]\nmap: echo $$ > {tmp_path}/pid; exec sleep 60.{marker}\n"
    )
    (Path(env["XDG_CONFIG_HOME"]) / "dsh").mkdir()
    (Path(env["XDG_CONFIG_HOME"]) / "dsh" / "config.toml").write_text('[inventory]\nupcall_timeout = "1s"\n')
    started = time.monotonic()
    done = run_dsh([*config, "-c", "@{web} touch ran"])
    took = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert "group source 'slow': its map upcall did not answer within 1" in done.stderr, done.stderr
    assert "^" in done.stderr and "Traceback" not in done.stderr
    assert took < 15, took
    alive = subprocess.run(["pgrep", "-f", f"sleep 60.{marker}"], capture_output=True, text=True)
    assert alive.stdout == "", alive.stdout  # the upcall's process group was killed


def _clashing_config(ssh_setup: SshSetup, tmp_path: Path) -> Path:
    """The test config plus a block for app* that says nothing right but its key."""
    sshd = ssh_setup.server
    text = ssh_setup.config.read_text() + (
        "Host app*\n  HostName 192.0.2.1\n  Port 1\n  User nobody\n"
        f"  IdentityFile {sshd.client_key}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {ssh_setup.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        "  ConnectTimeout 2\n"
    )
    path = tmp_path / "ssh_config"
    path.write_text(text)
    return path


INI = """\
# the hosts of an Ansible inventory, reached as it says
[app]
app[1:2] ansible_host={host} ansible_port={port} ansible_user={user}

[web]
h1

[stack:children]
app
web

[failed]
h2
"""

YAML = """\
all:
  children:
    app:
      hosts:
        app[1:2]:
          ansible_host: {host}
          ansible_port: {port}
          ansible_user: {user}
    web:
      hosts:
        h1:
    stack:
      children:
        app:
        web:
    failed:
      hosts:
        h2:
"""


@pytest.mark.parametrize("form", ["ini", "yaml"])
def test_an_ansible_inventory_reaches_its_hosts_over_a_clashing_ssh_config(  # type: ignore[no-untyped-def]
    run_dsh, ssh_setup: SshSetup, tmp_path: Path, form: str
) -> None:
    sshd = ssh_setup.server
    text = (INI if form == "ini" else YAML).format(host=sshd.address, port=sshd.port, user=USER)
    inventory = tmp_path / ("inv.ini" if form == "ini" else "inv.yml")
    inventory.write_text(text)
    args = ["--ssh-config", str(_clashing_config(ssh_setup, tmp_path)), "--inventory", str(inventory)]
    done = run_dsh([*args, "-c", "@{stack} echo $host is $(id -un)"], timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
    assert _lines_by_host(done.stdout) == {
        "app1": f"app1 is {USER}",
        "app2": f"app2 is {USER}",
        "h1": f"h1 is {USER}",
    }, done.stdout
    # a group named like a result set: a warning, and @{inventory:failed} reaches it
    assert "group 'failed' has the name of a result set" in done.stderr, done.stderr
    done = run_dsh([*args, "-c", "@{inventory:failed} echo $host"], timeout=60)
    assert done.returncode == 0 and _lines_by_host(done.stdout) == {"h2": "h2"}, done.stdout + done.stderr
    # without the inventory, the ssh config alone sends app1 nowhere
    done = run_dsh([args[0], args[1], "-c", "@app1 true"], timeout=60)
    assert done.returncode == 1 and "unreachable" in done.stdout + done.stderr, done.stdout + done.stderr


def test_a_host_file(run_dsh, config: list[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "hosts.txt").write_text("# our hosts\nh1\n\nh[2-3]   # two more\n")
    done = run_dsh([*config, "-c", "@{file:hosts.txt}!h2 echo $host"])
    assert done.returncode == 0, done.stderr + done.stdout
    assert _lines_by_host(done.stdout) == {"h1": "h1", "h3": "h3"}, done.stdout
    (tmp_path / "bad.txt").write_text("h1\nh2;rm -rf /\n")
    done = run_dsh([*config, "-c", "@{file:bad.txt} echo $host"])
    assert done.returncode == 2 and "bad.txt:2:" in done.stderr and "^" in done.stderr, done.stderr
    done = run_dsh([*config, "-c", "@{file:nope.txt} echo $host"])
    assert done.returncode == 2 and "host file nope.txt: cannot read it" in done.stderr, done.stderr


def test_the_order_config_then_inventory_then_clustershell(  # type: ignore[no-untyped-def]
    run_dsh, env, config: list[str], tmp_path: Path
) -> None:
    (_groups_d(env) / "local.yaml").write_text("local:\n  web: h3\n  cs: h3\n  both: h3\n")
    (Path(env["XDG_CONFIG_HOME"]) / "dsh").mkdir()
    (Path(env["XDG_CONFIG_HOME"]) / "dsh" / "config.toml").write_text('[groups]\nweb = "h1"\n')
    inventory = tmp_path / "inv.ini"
    inventory.write_text("[web]\nh2\n[both]\nh2\n")
    args = [*config, "--inventory", str(inventory)]
    cases = {
        "@{web}": "h1",  # the config's [groups] first
        "@{both}": "h2",  # then the inventory
        "@{cs}": "h3",  # then ClusterShell's default source
        "@{inventory:web}": "h2",
        "@{local:web}": "h3",
        "@{config:web}": "h1",
    }
    for target, host in cases.items():
        done = run_dsh([*args, "-c", f"{target} echo $host"])
        assert done.returncode == 0, target + done.stderr
        assert _lines_by_host(done.stdout) == {host: host}, (target, done.stdout)
    done = run_dsh([*args, "-c", "@{nosuch:web} true"])
    assert done.returncode == 2 and "no group source" in done.stderr, done.stderr


def _taken_over_midway(
    run_dsh, env, config: list[str], tmp_path: Path, name: str, line: str, after: str
) -> list[str]:  # type: ignore[no-untyped-def]
    """Run `line` detached (hosts.txt holds h1 and h2; RAN is a file each run appends
    its host to), kill its executor once the first host ran, write `after` into
    hosts.txt, and take the session over from another machine: what ran, in order."""
    hosts = tmp_path / "hosts.txt"
    hosts.write_text("h1\nh2\n")
    d = Path(f"/tmp/dsh-inv-{name}-{os.getpid()}-{tmp_path.name}")
    d.mkdir(mode=0o777)
    try:
        d.chmod(0o777)
        script = tmp_path / f"{name}.dsh"
        script.write_text(line.replace("HOSTS", str(hosts)).replace("RAN", f"{d}/ran"))
        env["DSH_LEASE_TTL"] = "1"
        r = run_dsh([*config, "run", "--detach", "--session", name, str(script)])
        assert r.returncode == 0, r.stderr
        owner = owner_pid(run_dsh, name)
        wait_for(lambda: (d / "ran").exists(), timeout=30)
        os.kill(owner, signal.SIGKILL)  # while h1 runs, h2 not started
        hosts.write_text(after)  # the group is another now
        env["DSH_MACHINE_ID"] = "other"
        r = run_dsh([*config, "attach", name], timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        return (d / "ran").read_text().split()
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=False)


def test_groups_are_resolved_once_and_kept_for_a_resume(  # type: ignore[no-untyped-def]
    run_dsh, env, config: list[str], tmp_path: Path
) -> None:
    # the group changes while the line runs: the line keeps the hosts it started with
    line = "@{file:HOSTS} echo $host >>RAN; [ $host = h1 ] && sleep 1; true | batch 1\n"
    assert _taken_over_midway(run_dsh, env, config, tmp_path, "g1", line, "h3\n") == ["h1", "h2"]


def test_a_for_over_a_group_goes_through_the_same_items_after_a_takeover(  # type: ignore[no-untyped-def]
    run_dsh, env, config: list[str], tmp_path: Path
) -> None:
    line = "for h in @{file:HOSTS} {\n  @$h echo $h >>RAN; [ $h != h1 ] || sleep 1\n}\n"
    assert _taken_over_midway(run_dsh, env, config, tmp_path, "f1", line, "h3\nh2\n") == ["h1", "h2"]

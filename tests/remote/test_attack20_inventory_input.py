"""Attack review of issue 20 (inventories and input): each test is one defect the
review found (each failed before its mend). Real dsh processes, the test
sshd, short bounds; a dsh that would hang or grow without end is stopped (a
timeout, an address-space limit) so that a failing test cannot harm the machine."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import SshSetup, dsh_path
from tests.helpers.wait import wait_for


@pytest.fixture
def config(ssh_setup: SshSetup) -> list[str]:
    return ["--ssh-config", str(ssh_setup.config)]


def _dsh_config(env: dict[str, str], text: str) -> None:
    d = Path(env["XDG_CONFIG_HOME"]) / "dsh"
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.toml").write_text(text)


def _limited(megabytes: int):  # type: ignore[no-untyped-def]
    def limit() -> None:
        size = megabytes << 20
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return limit


# -- 1. a YAML alias bomb in an inventory variable -------------------------------------


def test_a_yaml_alias_bomb_in_a_variable_is_refused_at_once(env, config: list[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # 9^12 list items, all shared references: PyYAML builds them in no time; the
    # message about the bad value makes repr() of the whole list (ansible_hosts.shown)
    lines = ["v0: &v0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"v{i}: &v{i} [{', '.join([f'*v{i - 1}'] * 9)}]" for i in range(1, 13)]
    lines += ["all:", "  hosts:", "    h1:", "      ansible_host: *v12", ""]
    inventory = tmp_path / "bomb.yml"
    inventory.write_text("\n".join(lines))
    started = time.monotonic()
    try:
        done = subprocess.run(
            [dsh_path(), *config, "--inventory", str(inventory), "-c", "@h1 true"],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
            preexec_fn=_limited(1024),  # it grows ~70 MB/s: stopped at 1 GiB
            cwd=tmp_path,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("dsh did not read a 300-byte inventory within 20 s (repr of an alias bomb)")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "ansible_host" in done.stderr and "is not a host name" in done.stderr, done.stderr[-2000:]
    assert time.monotonic() - started < 5


# -- 2. `| stdin -` that never ends --------------------------------------------------------


def test_own_stdin_that_never_ends_is_bounded_and_ctrl_c_ends_it(
    env, config: list[str], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    read, write = os.pipe()  # its write end stays open: dsh's standard input never ends
    try:
        proc = subprocess.Popen(
            [dsh_path(), *config, "-c", "@h1 wc -c | stdin -"],
            stdin=read,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        try:
            _out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("dsh did not end within 15 s of a SIGINT while it read `stdin -`")
        assert proc.returncode == 130, err
    finally:
        os.close(read)
        os.close(write)


# -- 3. limits.max_stdin larger than memory ---------------------------------------------------


@pytest.mark.parametrize("cap", [1 << 40, 1 << 63], ids=["1TiB", "2^63"])
def test_a_huge_max_stdin_is_not_an_internal_error(
    run_dsh, env, config: list[str], tmp_path: Path, cap: int
) -> None:  # type: ignore[no-untyped-def]
    _dsh_config(env, f"[limits]\nmax_stdin = {cap}\n")
    (tmp_path / "f").write_bytes(b"hello")
    done = run_dsh([*config, "-c", "@h1 wc -c | stdin f"])
    assert done.returncode in (0, 2), done.stderr  # it was 70: f.read(cap + 1) -> MemoryError / OverflowError
    assert "internal error" not in done.stderr, done.stderr


# -- 4. ansible_host / ansible_user reach ProxyCommand's shell ---------------------------------


def test_inventory_values_never_become_shell_text_in_a_proxycommand(  # type: ignore[no-untyped-def]
    run_dsh, ssh_setup: SshSetup, tmp_path: Path
) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        ssh_setup.config.read_text() + "Host pc*\n  ProxyCommand echo %r >/dev/null; nc %h %p\n"
    )
    host_mark, user_mark = tmp_path / "by_host", tmp_path / "BY_USER"
    (tmp_path / "inv.ini").write_text(
        "[web]\n"
        f"pc1 ansible_host='127.0.0.1$(>{host_mark})'\n"
        f"pc2 ansible_host=127.0.0.1 ansible_user='u$(touch${{IFS}}{user_mark})'\n"
    )
    done = run_dsh(["--ssh-config", str(ssh_config), "--inventory", "inv.ini", "-c", "@{web} true"])
    assert not host_mark.exists(), "ansible_host ran as shell text through ProxyCommand's %h"
    assert not user_mark.exists(), "ansible_user ran as shell text through ProxyCommand's %r"
    assert done.returncode == 2, done.stderr  # refused as the inventory is read, as ssh refuses such names


# -- 5. the completion cache's refresh holds up the executor's lines ------------------------------


def test_a_stale_completion_cache_does_not_delay_a_line(  # type: ignore[no-untyped-def]
    run_dsh, env, config: list[str], tmp_path: Path
) -> None:
    cs = Path(env["XDG_CONFIG_HOME"]) / "clustershell"
    cs.mkdir(parents=True)
    (cs / "local.cfg").write_text("web: h1\n")
    (cs / "groups.conf").write_text(
        "[Main]\ndefault: local\n\n"
        f"[local]\nmap: sed -n 's/^$GROUP: //p' {cs}/local.cfg\nlist: sed -n 's/:.*//p' {cs}/local.cfg\n\n"
        "[slow]\nmap: echo h2\nlist: exec sleep 30\n"
    )
    _dsh_config(env, '[inventory]\nupcall_timeout = "8s"\n')
    out = Path(f"/tmp/dsh-attack20-{os.getpid()}-{tmp_path.name}")
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    try:
        script = tmp_path / "s.dsh"
        script.write_text(f"@{{web}} date +%s.%N > {out}/at\n")
        started = time.time()
        done = run_dsh([*config, "run", "--detach", "--session", "cs-refresh", str(script)])
        assert done.returncode == 0, done.stderr
        wait_for(lambda: (out / "at").exists() and (out / "at").read_text().strip() != "", timeout=20)
        delay = float((out / "at").read_text()) - started
        # it was ~8 s: the refresh (slow's `list`, to its timeout) held the lock every lookup takes
        assert delay < 4, f"the line started {delay:.1f}s after it was submitted"
    finally:
        subprocess.run(["rm", "-rf", str(out)], check=False)


# -- 6. an input's temporary file is left in the host's spool ------------------------------


def _spool_listing(run_dsh, config: list[str], session: str) -> list[str]:  # type: ignore[no-untyped-def]
    ls = run_dsh([*config, "-c", f"@h1 ls -a ~/.local/state/dsh/spool/{session}.*/"])
    assert ls.returncode == 0, ls.stderr + ls.stdout
    return [line.split(" | ", 1)[1] for line in ls.stdout.splitlines() if line.startswith("h1 | ")]


def test_an_input_cut_by_its_timeout_leaves_no_partial_file(  # type: ignore[no-untyped-def]
    run_dsh, config: list[str], tmp_path: Path
) -> None:
    (tmp_path / "big").write_bytes(os.urandom(60 << 20))
    session = f"atk20-{os.getpid()}"
    # the first line opens the connection (and boots the agent, if on) and makes the session's
    # spool, so the 15 ms are spent writing the input, never on the way to it (through the agent,
    # 48 MiB once took under 100 ms: 60 MiB in 15 ms would be 4 GB/s)
    done = run_dsh([*config, "--session", session, "-c", "@h1 true\n@h1 wc -c | stdin big | within 15ms"])
    assert done.returncode == 1 and "was not written to the host in time (0.015s)" in done.stdout, done.stdout
    names = _spool_listing(run_dsh, config, session)
    assert any(n not in (".", "..") for n in names), names  # the first line's: this is the session's spool
    partial = [n for n in names if ".in." in n]
    assert partial == [], f"partial inputs left in the host's spool: {partial}"


# -- 7. a broken inventory stops `dsh kill` -----------------------------------------------------


def test_a_broken_inventory_does_not_stop_dsh_kill(run_dsh, env, config: list[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inventory = tmp_path / "inv.ini"
    inventory.write_text("[web]\nh1\n")
    _dsh_config(env, f'[inventory]\nfile = "{inventory}"\n')
    script = tmp_path / "long.dsh"
    script.write_text("@{web} command sleep 41.7\n")
    assert run_dsh([*config, "run", "--detach", "--session", "k20", str(script)]).returncode == 0
    try:
        inventory.write_text("[web\n")  # someone is editing it
        done = run_dsh([*config, "kill", "k20"])
        assert done.returncode == 0, done.stderr
    finally:
        inventory.write_text("[web]\nh1\n")
        run_dsh([*config, "kill", "k20"])


# -- 8. hosts/RUN over the store's value limit -------------------------------------------------


def test_a_line_whose_hosts_record_is_too_large_is_refused_before_it_runs(  # type: ignore[no-untyped-def]
    run_dsh, ssh_setup: SshSetup, tmp_path: Path
) -> None:
    # 10,000 hosts (the default step budget), names of 157 characters: hosts/RUN is
    # 1.59 MB, over the store's 1.5 MiB. The hosts are `down`-like (a closed port)
    closed = [line for line in ssh_setup.config.read_text().split("Host ") if line.startswith("down")]
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(ssh_setup.config.read_text() + "Host u*\n" + closed[0].split("\n", 1)[1])
    (tmp_path / "hosts.txt").write_text("".join(f"u{'x' * 150}{i:05d}\n" for i in range(10_000)))
    done = run_dsh(["--ssh-config", str(ssh_config), "-c", "@{file:hosts.txt} true"], timeout=120)
    assert "an earlier checkpoint could not be written" not in done.stderr, done.stderr[-500:]
    assert done.returncode == 2, done.stderr[-500:]  # refused with a sentence, before any host is tried


# -- 9. explain refuses `stdin -` --------------------------------------------------------------


def test_explain_explains_a_line_with_stdin_dash(run_dsh, config: list[str]) -> None:  # type: ignore[no-untyped-def]
    assert run_dsh([*config, "-c", "@h1 wc -c | stdin -"], input="x").returncode == 0
    done = run_dsh([*config, "explain", "@h1 wc -c | stdin -"])
    assert done.returncode == 0, done.stderr


# -- 10. a large inventory group costs minutes before the step budget says no ----------------


def test_an_inventory_group_over_the_step_budget_is_refused_quickly(
    run_dsh, config: list[str], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "inv.ini").write_text("[big]\ng0x[000000:019999]\ng1x[000000:019999]\n")
    started = time.monotonic()
    done = run_dsh([*config, "--inventory", "inv.ini", "explain", "@{big} true"], timeout=120)
    took = time.monotonic() - started
    assert done.returncode == 2 and "over the step budget" in done.stderr, done.stderr
    assert took < 5, f"{took:.1f}s to refuse 40,000 hosts (ClusterShell merged them first)"

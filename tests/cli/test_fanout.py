"""Fan-out over SSH to a real OpenSSH sshd on loopback (issue 4's acceptance)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import SshSetup, dsh_path
from tests.sshd import USER, Sshd, kill_user_processes, processes_of, user_home


def test_one_line_per_host_labelled(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "@h[1-3] echo $host"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert sorted(line for line in lines if " | " in line) == ["h1 | h1", "h2 | h2", "h3 | h3"]


def test_a_failing_exit_is_summarised_by_folded_hosts(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "@h[1-3] exit 3"])
    assert r.returncode == 1
    assert "h[1-3] (3)  failed (exit 3)" in r.stdout


def test_identical_outputs_fold_into_one_group(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "@h[1-6] hostname"])
    assert r.returncode == 0, r.stderr
    assert "h[1-6] (6)  ok" in r.stdout
    heads = [line for line in r.stdout.splitlines() if line.startswith("h[")]
    assert len(heads) == 1


def test_a_remote_timeout_kills_the_remote_command(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    marker = "sleep 31.5"
    started = time.monotonic()
    r = run_dsh([*ssh_setup.args(), "-c", f"@h2 {marker} | within 1s"])
    elapsed = time.monotonic() - started
    try:
        assert r.returncode == 1
        assert "h2 (1)  timeout" in r.stdout
        assert elapsed < 6, elapsed
        deadline = time.monotonic() + 3
        while processes_of(USER, marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes_of(USER, marker) == {}
    finally:
        kill_user_processes(USER, marker)


def test_a_remote_pipeline_and_the_remote_environment(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "@h1 printf 'a\\nb\\n' | grep -c b"])
    assert r.returncode == 0, r.stderr
    assert "h1 | 1" in r.stdout.splitlines()
    r = run_dsh([*ssh_setup.args(), "-c", "@h1 echo $HOME"])
    assert f"h1 | {user_home()}" in r.stdout.splitlines()


def test_failed_hosts_of_a_session_are_the_next_target(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    first = run_dsh(
        [*ssh_setup.args(), "--session", "s1", "-c", "@h[1-5] case $host in h2|h4) exit 7;; esac"]
    )
    assert first.returncode == 1
    second = run_dsh([*ssh_setup.args(), "--session", "s1", "--json", "-c", "@{failed} echo again"])
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stdout.splitlines()]
    assert sorted(e["host"] for e in events if e["event"] == "result") == ["h2", "h4"]


def test_unreachable_port_while_the_others_finish(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "--json", "-c", "@h1,down,h2 echo up"])
    assert r.returncode == 1
    results = {e["host"]: e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "result"}
    assert results["down"]["outcome"] == "unreachable"
    assert results["h1"]["outcome"] == results["h2"]["outcome"] == "ok"


def test_a_changed_host_key_is_refused_and_nothing_runs(run_dsh, ssh_setup: SshSetup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Sshd(client_key=ssh_setup.server.client_key) as other:
        known = tmp_path / "known_hosts"
        # `other` is known, but with the first server's key: as if its key changed.
        known.write_text(
            ssh_setup.server.known_hosts_line() + other.known_hosts_line(ssh_setup.server.host_key)
        )
        config = tmp_path / "ssh_config"
        config.write_text(ssh_setup.server.host_block(["h*"], known) + other.host_block(["moved"], known))
        mark = f"/tmp/dsh-mark-{os.getpid()}-{time.time_ns()}"
        for policy in ("strict", "accept-new", "off"):
            line = f"@h1,moved touch {mark}-$host"
            r = run_dsh(["--ssh-config", str(config), "--host-keys", policy, "--json", "-c", line])
            results = {e["host"]: e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "result"}
            assert results["moved"]["outcome"] == "refused", policy
            assert "HOST KEY CHANGED" in results["moved"]["message"]
            assert results["h1"]["outcome"] == "ok"
            assert r.returncode == 1
        assert Path(f"{mark}-h1").exists() and not Path(f"{mark}-moved").exists()
        Path(f"{mark}-h1").unlink()


def test_an_unknown_host_key_strict_refuses_accept_new_records(
    run_dsh, ssh_setup: SshSetup, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    with Sshd(client_key=ssh_setup.server.client_key) as other:
        known = tmp_path / "known_hosts"
        known.write_text("")
        config = tmp_path / "ssh_config"
        config.write_text(other.host_block(["new"], known))
        r = run_dsh(["--ssh-config", str(config), "--json", "-c", "@new true"])
        (result,) = [e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "result"]
        assert result["outcome"] == "refused" and "not in known_hosts" in result["message"]
        r = run_dsh(["--ssh-config", str(config), "--host-keys", "off", "-c", "@new true"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert known.read_text() == ""  # off trusts without recording
        r = run_dsh(["--ssh-config", str(config), "--host-keys", "accept-new", "-c", "@new true"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert known.read_text() == other.known_hosts_line()
        r = run_dsh(["--ssh-config", str(config), "-c", "@new true"])  # strict now knows it
        assert r.returncode == 0, r.stdout + r.stderr


def test_the_spool_holds_claim_output_and_status(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    name = f"spooled-{time.time_ns()}"
    r = run_dsh([*ssh_setup.args(), "--session", name, "-c", "@h1 echo x"])
    assert r.returncode == 0, r.stderr
    (d,) = (user_home() / ".local/state/dsh/spool").glob(f"{name}.*")
    assert (d / "1.1.1@h1.out").read_text() == "x\n"
    assert (d / "1.1.1@h1.status").read_text() == "0\n"
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert (d / "1.1.1@h1.claim").read_text().split()[0] == boot


def test_hostile_remote_output_is_shown_escaped(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", r"@h1 printf '\033]0;x\007\033[2J \377\n'"])
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert r"h1 | \x1b]0;x\x07\x1b[2J \xff" in r.stdout.splitlines()


def test_keys_from_an_ssh_agent(run_dsh, env, ssh_setup: SshSetup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server = ssh_setup.server
    config = tmp_path / "ssh_config"
    block = server.host_block(["viaagent"], ssh_setup.known_hosts)
    config.write_text("".join(line + "\n" for line in block.splitlines() if "Identit" not in line))
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        r = run_dsh(["--ssh-config", str(config), "--json", "-c", "@viaagent true"])
        (result,) = [e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "result"]
        assert result["outcome"] == "refused" and "authentication failed" in result["message"]
        subprocess.run(
            ["ssh-add", "-q", str(server.client_key)],
            env={**env, "SSH_AUTH_SOCK": str(sock)},
            check=True,
            timeout=10,
            capture_output=True,
        )
        env["SSH_AUTH_SOCK"] = str(sock)
        r = run_dsh(["--ssh-config", str(config), "-c", "@viaagent true"])
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        agent.kill()
        agent.wait(5)


def interrupt_fan_out(env: dict[str, str], ssh_setup: SshSetup, hosts: int, marker: str, times: int) -> None:
    """Run `@h[1-HOSTS] MARKER`, send SIGINT `times` times 50 ms apart once every host
    runs it: dsh must exit 130 with no traceback and no remote command left."""
    proc = subprocess.Popen(
        [dsh_path(), *ssh_setup.args(), "-c", f"@h[1-{hosts}] {marker}"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while len(processes_of(USER, marker)) < hosts and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(processes_of(USER, marker)) >= hosts
        for _ in range(times):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.05)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "destroyed" not in err
        assert processes_of(USER, marker) == {}
    finally:
        proc.kill()
        kill_user_processes(USER, marker)


def test_interrupt_kills_the_remote_commands(env, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    interrupt_fan_out(env, ssh_setup, 3, "sleep 33.75", 1)


def test_a_second_interrupt_does_not_cut_the_kills_short(env, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    interrupt_fan_out(env, ssh_setup, 8, "sleep 34.25", 2)


def test_a_dropped_connection_is_followed_again_and_never_run_twice(env, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    mark = f"/tmp/dsh-drop-{os.getpid()}-{time.time_ns()}"
    marker = "sleep 1.75"
    line = f"@h1 echo before; {marker}; echo x >> {mark}; echo after | retry 2"
    proc = subprocess.Popen(
        [dsh_path(), *ssh_setup.args(), "--json", "-c", line],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while not processes_of(USER, marker) and time.monotonic() < deadline:
            time.sleep(0.02)
        for pid, cmd in processes_of(USER, "sshd: ").items():  # the connection's own sshd process
            if cmd.startswith(f"sshd: {USER}"):
                os.kill(pid, signal.SIGKILL)
        out, _err = proc.communicate(timeout=20)
        events = [json.loads(line) for line in out.splitlines()]
        (result,) = [e for e in events if e["event"] == "result"]
        assert (result["outcome"], result["attempts"]) == ("ok", 1), result  # followed on a new connection
        assert [e["text"] for e in events if e["event"] == "output"] == ["before", "after"]  # each once
        assert proc.returncode == 0
        assert Path(mark).read_text() == "x\n"  # run once
    finally:
        proc.kill()
        Path(mark).unlink(missing_ok=True)


def test_one_hosts_config_error_is_that_hosts_outcome(run_dsh, ssh_setup: SshSetup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "ssh_config"
    config.write_text("Host h2\n  IdentityFile ${DSH_NO_SUCH_VAR}/key\n" + ssh_setup.config.read_text())
    r = run_dsh(["--ssh-config", str(config), "--json", "-c", "@h[1-3] echo ok"])
    results = {e["host"]: e for e in map(json.loads, r.stdout.splitlines()) if e["event"] == "result"}
    assert results["h2"]["outcome"] == "refused" and "ssh config" in results["h2"]["message"]
    assert results["h1"]["outcome"] == results["h3"]["outcome"] == "ok"
    assert r.returncode == 1


def test_a_bad_known_hosts_line_is_skipped_with_a_warning(
    run_dsh, ssh_setup: SshSetup, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    known = tmp_path / "known_hosts"
    known.write_text("garbage\n" + ssh_setup.known_hosts.read_text())
    config = tmp_path / "ssh_config"
    config.write_text(ssh_setup.server.host_block(["h*"], known))
    r = run_dsh(["--ssh-config", str(config), "-c", "@h1 echo ok"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{known}:1: known_hosts line skipped" in r.stderr

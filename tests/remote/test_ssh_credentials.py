"""SSH credentials (issue 18, item 3), against real OpenSSH sshds: an encrypted key's
passphrase asked once per session, password logins only where asked for (one prompt
for the hosts of one login user), agent forwarding, certificates; and, against an
in-process asyncssh server, keyboard-interactive questions other than a password
asked for each connection.

The prompts are counted with an askpass program (`--askpass`) that records each
prompt's text (never an answer), and seen at a real terminal (pexpect).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pexpect
import pytest

from dsh.cli.args import Settings, parser
from dsh.prompt import Prompt
from dsh.remote.base import Asks, RemoteUnreachable
from dsh.remote.ssh import SshFleet
from dsh.remote.sshconfig import SshConfig, SshConfigError
from tests.conftest import HOST_AGENT, SshSetup, dsh_path
from tests.credentials import PASSWORD, sudo_ready
from tests.sshd import USER, Sshd

PASSPHRASE = "dsh-test-passphrase-7"


def _keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    path.chmod(0o600)
    return path


class Askpass:
    """An askpass program: records each prompt's text, answers from `answers` in
    turn (the last one again once they run out)."""

    def __init__(self, where: Path, *answers: str) -> None:
        self.log = where / "asked"
        self.program = where / "askpass"
        (where / "answers").write_text("".join(f"{a}\n" for a in answers))
        self.program.write_text(
            "#!/bin/sh\n"
            f"printf '%s\\n' \"$1\" >>{self.log}\n"
            f"n=$(wc -l <{self.log})\n"
            f'line=$(sed -n "${{n}}p" {where / "answers"})\n'
            f'[ -n "$line" ] || line=$(tail -n 1 {where / "answers"})\n'
            "printf '%s\\n' \"$line\"\n"
        )
        self.program.chmod(0o700)

    def asked(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def args(self) -> list[str]:
        return ["--askpass", str(self.program)]


def _dsh(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """dsh with no controlling terminal (its own session), as cron or CI run it."""
    return subprocess.run(
        [dsh_path(), *args], capture_output=True, text=True, env=env, timeout=timeout, start_new_session=True
    )


def _spawn(env: dict[str, str], args: list[str]) -> pexpect.spawn:
    env = {**env, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1"}
    return pexpect.spawn(dsh_path(), args, env=env, dimensions=(24, 120), encoding="utf-8", timeout=40)


def _config(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "ssh_config"
    path.write_text(text)
    return ["--ssh-config", str(path)]


def _known(server: Sshd, where: Path) -> Path:
    known = where / "known_hosts"
    known.write_text(server.known_hosts_line())
    return known


# -- an encrypted key ------------------------------------------------------------


@pytest.fixture(scope="module")
def key_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An sshd that takes one key, encrypted with PASSPHRASE."""
    where = tmp_path_factory.mktemp("encrypted")
    where.chmod(0o755)
    server = Sshd(client_key=_keygen(where / "id_locked", PASSPHRASE)).start()
    yield server
    server.cleanup()


def test_a_passphrase_is_asked_once_for_three_hosts(
    env: dict[str, str], key_sshd: Sshd, tmp_path: Path
) -> None:
    config = _config(tmp_path, key_sshd.host_block(["h1", "h2", "h3"], _known(key_sshd, tmp_path)))
    askpass = Askpass(tmp_path, PASSPHRASE)
    done = _dsh(env, *config, *askpass.args(), "-c", "@h[1-3] id -un\n@h[1-3] echo again")
    assert done.returncode == 0, done.stdout + done.stderr
    for host in ("h1", "h2", "h3"):
        assert f"{host} | {USER}\n" in done.stdout and f"{host} | again\n" in done.stdout, done.stdout
    assert askpass.asked() == [f"Enter passphrase for key {key_sshd.client_key}: "]
    assert PASSPHRASE not in done.stdout + done.stderr


def test_at_a_terminal_the_passphrase_is_asked_once(
    env: dict[str, str], key_sshd: Sshd, tmp_path: Path
) -> None:
    config = _config(tmp_path, key_sshd.host_block(["h1", "h2", "h3"], _known(key_sshd, tmp_path)))
    child = _spawn(env, [*config, "-c", "@h[1-3] id -un"])
    child.expect(f"Enter passphrase for key {key_sshd.client_key}: ")
    child.sendline(PASSPHRASE)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "passphrase" not in child.before and PASSPHRASE not in child.before
    for host in ("h1", "h2", "h3"):
        assert f"{host} | {USER}\r\n" in child.before, child.before


def test_a_wrong_passphrase_is_asked_again_then_the_host_is_refused(
    env: dict[str, str], key_sshd: Sshd, tmp_path: Path
) -> None:
    config = _config(tmp_path, key_sshd.host_block(["h1", "h2"], _known(key_sshd, tmp_path)))
    askpass = Askpass(tmp_path, "not-it")
    started = time.monotonic()
    done = _dsh(env, *config, *askpass.args(), "-c", "@h[1-2] true")
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done.stdout + done.stderr
    assert askpass.asked() == [f"Enter passphrase for key {key_sshd.client_key}: "] * 3
    assert done.stderr.count("wrong passphrase") == 2, done.stderr
    assert "the passphrase was wrong 3 times" in done.stderr, done.stderr
    assert done.stdout.count("refused") == 2 and "authentication failed" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr and "not-it" not in done.stdout + done.stderr


def test_a_key_the_agent_holds_is_left_to_the_agent(
    env: dict[str, str], key_sshd: Sshd, tmp_path: Path
) -> None:
    """No IdentitiesOnly: the agent holds the encrypted file's key, so nothing is asked."""
    block = key_sshd.host_block(["h1"], _known(key_sshd, tmp_path)).replace("  IdentitiesOnly yes\n", "")
    config = _config(tmp_path, block)
    askpass = Askpass(tmp_path, PASSPHRASE)
    with Agent(tmp_path) as sock:
        helper = tmp_path / "add-askpass"
        helper.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
        helper.chmod(0o700)
        subprocess.run(
            ["ssh-add", "-q", str(key_sshd.client_key)],
            env={**env, "SSH_AUTH_SOCK": sock, "SSH_ASKPASS": str(helper), "SSH_ASKPASS_REQUIRE": "force"},
            check=True,
            timeout=10,
            capture_output=True,
            stdin=subprocess.DEVNULL,
        )
        done = _dsh({**env, "SSH_AUTH_SOCK": sock}, *config, *askpass.args(), "-c", "@h1 id -un")
    assert done.returncode == 0, done.stdout + done.stderr
    assert askpass.asked() == []


def test_a_detached_session_asks_the_client_that_attaches(
    env: dict[str, str], key_sshd: Sshd, tmp_path: Path
) -> None:
    """The passphrase is a prompt like sudo's: a detached session waits for input, and
    `dsh attach` asks; the journal keeps the question, never the answer."""
    config = _config(tmp_path, key_sshd.host_block(["h1"], _known(key_sshd, tmp_path)))
    script = tmp_path / "s.dsh"
    script.write_text("@h1 id -un | within 60s\n@h1 echo after $((40+2))\n")
    started = _dsh(env, *config, "run", "--detach", "--session", "locked", str(script))
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 20
    while "waiting for input" not in (listed := _dsh(env, "ls").stdout) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert f"waiting for input (Enter passphrase for key {key_sshd.client_key})" in listed, listed
    child = _spawn(env, [*config, "attach", "locked"])
    child.expect(f"Enter passphrase for key {key_sshd.client_key}: ")
    child.sendline(PASSPHRASE)
    child.expect("after 42")
    child.expect("dsh>")
    child.sendeof()
    child.expect(pexpect.EOF)
    log = _dsh(env, "log", "locked").stdout
    assert "prompt ssh-key-1 answered: Enter passphrase" in log, log
    assert PASSPHRASE not in log


# -- password logins ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pw_sshd() -> Iterator[Sshd]:
    """An sshd that takes passwords only (its client key is not authorized)."""
    assert sudo_ready(), "the test users' passwords are missing: run scripts/system-deps as root"
    server = Sshd(config=["PasswordAuthentication yes"], authorize=False).start()
    yield server
    server.cleanup()


def test_a_host_that_takes_only_passwords_logs_in_after_one_prompt(
    env: dict[str, str], pw_sshd: Sshd, tmp_path: Path
) -> None:
    config = _config(tmp_path, pw_sshd.host_block(["p1", "p2", "p3"], _known(pw_sshd, tmp_path)))
    askpass = Askpass(tmp_path, PASSWORD)
    done = _dsh(env, *config, "--ask-pass", *askpass.args(), "-c", "@p[1-3] id -un")
    assert done.returncode == 0, done.stdout + done.stderr
    for host in ("p1", "p2", "p3"):
        assert f"{host} | {USER}\n" in done.stdout, done.stdout
    (prompt,) = askpass.asked()  # one prompt for the three hosts of one login user
    assert prompt.startswith(f"{USER}@p") and prompt.endswith("'s password: "), prompt
    assert PASSWORD not in done.stdout + done.stderr


def test_password_authentication_yes_in_the_ssh_config_asks_for_that_host(
    env: dict[str, str], pw_sshd: Sshd, tmp_path: Path
) -> None:
    known = _known(pw_sshd, tmp_path)
    text = pw_sshd.host_block(["p1"], known, PasswordAuthentication="yes") + pw_sshd.host_block(["p2"], known)
    config = _config(tmp_path, text)
    askpass = Askpass(tmp_path, PASSWORD)
    done = _dsh(env, *config, *askpass.args(), "-c", "@p1 id -un")
    assert done.returncode == 0, done.stdout + done.stderr
    assert askpass.asked() == [f"{USER}@p1's password: "]
    done = _dsh(env, *config, *askpass.args(), "-c", "@p2 id -un")  # not asked for: refused
    assert done.returncode == 1 and "refused" in done.stdout, done.stdout + done.stderr
    assert len(askpass.asked()) == 1


def test_without_asking_for_passwords_the_host_is_refused_at_once(
    env: dict[str, str], pw_sshd: Sshd, tmp_path: Path
) -> None:
    config = _config(tmp_path, pw_sshd.host_block(["p1"], _known(pw_sshd, tmp_path)))
    askpass = Askpass(tmp_path, PASSWORD)
    started = time.monotonic()
    done = _dsh(env, *config, *askpass.args(), "-c", "@p1 true")
    assert time.monotonic() - started < 10
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refused" in done.stdout and "authentication failed" in done.stdout, done.stdout
    assert askpass.asked() == []


def test_a_wrong_password_is_asked_again(env: dict[str, str], pw_sshd: Sshd, tmp_path: Path) -> None:
    config = _config(tmp_path, pw_sshd.host_block(["p1", "p2"], _known(pw_sshd, tmp_path)))
    askpass = Askpass(tmp_path, "typo", PASSWORD)
    done = _dsh(env, *config, "--ask-pass", *askpass.args(), "-c", "@p[1-2] id -un")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "p1 | dshtest\n" in done.stdout and "p2 | dshtest\n" in done.stdout, done.stdout
    assert len(askpass.asked()) == 2, askpass.asked()  # the typo cost one prompt, for both hosts
    assert "typo" not in done.stdout + done.stderr


def test_at_a_terminal_a_password_is_asked_once(env: dict[str, str], pw_sshd: Sshd, tmp_path: Path) -> None:
    config = _config(tmp_path, pw_sshd.host_block(["p1", "p2"], _known(pw_sshd, tmp_path)))
    child = _spawn(env, [*config, "--ask-pass", "-c", "@p[1-2] id -un"])
    child.expect(rf"{USER}@p[12]'s password: ")
    child.sendline(PASSWORD)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "password" not in child.before and PASSWORD not in child.before
    assert f"p1 | {USER}\r\n" in child.before and f"p2 | {USER}\r\n" in child.before, child.before


def test_time_spent_answering_does_not_count_against_the_connect_timeout(
    env: dict[str, str], pw_sshd: Sshd, tmp_path: Path
) -> None:
    """ConnectTimeout 1, an answer after 2.5 s: the login waits for it."""
    config = _config(tmp_path, pw_sshd.host_block(["p1"], _known(pw_sshd, tmp_path), ConnectTimeout=1))
    askpass = Askpass(tmp_path, PASSWORD)
    slow = tmp_path / "slow-askpass"
    slow.write_text(f'#!/bin/sh\nsleep 2.5\nexec {askpass.program} "$1"\n')
    slow.chmod(0o700)
    done = _dsh(env, *config, "--ask-pass", "--askpass", str(slow), "-c", "@p1 id -un")
    assert done.returncode == 0, done.stdout + done.stderr
    assert askpass.asked() == [f"{USER}@p1's password: "]


# -- agent forwarding --------------------------------------------------------------


class Agent:
    """A real ssh-agent on a socket under `where` (killed by its pid at the end)."""

    def __init__(self, where: Path) -> None:
        self.sock = where / "agent.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(
            ["ssh-agent", "-D", "-a", str(self.sock)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # the socket's file is there from its bind(), before its listen(): a client between the
        # two is refused (CI saw ssh-add fail so), so wait for a connect to be taken
        deadline = time.monotonic() + 5
        while not self._listening():
            assert time.monotonic() < deadline, "ssh-agent did not listen within 5 s"
            time.sleep(0.02)
        return str(self.sock)

    def _listening(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.sock))
            except OSError:
                return False
        return True

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def agent_with_a_key(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """An agent holding a fresh key: (its socket, the key's comment)."""
    comment = f"forwarded-{os.getpid()}-{time.time_ns()}"
    key = _keygen(tmp_path / comment)
    with Agent(tmp_path) as sock:
        subprocess.run(
            ["ssh-add", "-q", str(key)],
            env={**env, "SSH_AUTH_SOCK": sock},
            check=True,
            timeout=10,
            capture_output=True,
        )
        yield sock, comment


def test_forward_agent_yes_lists_the_local_agents_key_on_the_host(
    env: dict[str, str], ssh_setup: SshSetup, tmp_path: Path, agent_with_a_key: tuple[str, str]
) -> None:
    sock, comment = agent_with_a_key
    server = ssh_setup.server
    known = ssh_setup.known_hosts
    text = server.host_block(["h1"], known, ForwardAgent="yes") + server.host_block(["h2"], known)
    config = _config(tmp_path, text)
    done = _dsh({**env, "SSH_AUTH_SOCK": sock}, *config, "-c", "@h1 ssh-add -l")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "h1 | 256 SHA256:" in done.stdout and f"{comment} (ED25519)" in done.stdout, done.stdout
    # Not forwarded where the config does not say so; -A forwards it to every host.
    done = _dsh({**env, "SSH_AUTH_SOCK": sock}, *config, "-c", "@h2 ssh-add -l")
    assert done.returncode == 1 and comment not in done.stdout, done.stdout + done.stderr
    done = _dsh({**env, "SSH_AUTH_SOCK": sock}, *config, "-A", "-c", "@h2 ssh-add -l")
    assert done.returncode == 0 and f"{comment} (ED25519)" in done.stdout, done.stdout + done.stderr


def test_forward_agent_with_no_agent_here_says_so_and_runs(
    env: dict[str, str], ssh_setup: SshSetup, tmp_path: Path
) -> None:
    server = ssh_setup.server
    config = _config(tmp_path, server.host_block(["h1", "h2"], ssh_setup.known_hosts, ForwardAgent="yes"))
    assert "SSH_AUTH_SOCK" not in env
    done = _dsh(env, *config, "-c", "@h[1-2] echo ran")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "h1 | ran" in done.stdout and "h2 | ran" in done.stdout
    assert done.stderr.count("ForwardAgent: no SSH_AUTH_SOCK here") == 1, done.stderr


def test_a_detached_session_forwards_the_agent_of_the_client_attached_now(
    env: dict[str, str], ssh_setup: SshSetup, tmp_path: Path, agent_with_a_key: tuple[str, str]
) -> None:
    """The executor was started where agent A runs; while no client is attached, its
    hosts get no agent (the journal says so); a client attached with agent B forwards
    B, not A."""
    sock_a, comment_a = agent_with_a_key
    other = tmp_path / "b"
    other.mkdir()
    comment_b = f"client-{os.getpid()}-{time.time_ns()}"
    key_b = _keygen(other / comment_b)
    server = ssh_setup.server
    config = _config(tmp_path, server.host_block(["h1"], ssh_setup.known_hosts, ForwardAgent="yes"))
    script = tmp_path / "s.dsh"
    script.write_text("@h1 ssh-add -l; true\nsleep 4s\n")
    done = _dsh({**env, "SSH_AUTH_SOCK": sock_a}, *config, "run", "--detach", "--session", "ag", str(script))
    assert done.returncode == 0, done.stderr
    with Agent(other) as sock_b:
        subprocess.run(
            ["ssh-add", "-q", str(key_b)], env={**env, "SSH_AUTH_SOCK": sock_b}, check=True, timeout=10
        )
        deadline = time.monotonic() + 20
        log = ""
        while "ssh agent: no attached client has an agent" not in log and time.monotonic() < deadline:
            log = _dsh(env, "log", "ag").stdout
            time.sleep(0.2)
        assert "note: ssh agent: no attached client has an agent" in log, log
        assert comment_a not in log  # the executor's own agent (A) was not forwarded
        attached = subprocess.run(
            [dsh_path(), *config, "attach", "ag"],
            input="@h1 ssh-add -l\n",
            capture_output=True,
            text=True,
            env={**env, "SSH_AUTH_SOCK": sock_b},
            timeout=60,
            start_new_session=True,
        )
    assert attached.returncode == 0, attached.stdout + attached.stderr
    assert f"{comment_b} (ED25519)" in attached.stdout and comment_a not in attached.stdout, attached.stdout


# -- certificates -----------------------------------------------------------------


def test_a_certificate_file_logs_in_where_only_the_certificate_is_trusted(
    env: dict[str, str], tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    where = tmp_path_factory.mktemp("ca")
    where.chmod(0o755)
    ca = _keygen(where / "ca")
    key = _keygen(where / "id_user")
    subprocess.run(
        ["ssh-keygen", "-q", "-s", str(ca), "-I", "dsh-test", "-n", USER, "-V", "+1h", f"{key}.pub"],
        check=True,
        timeout=30,
        capture_output=True,
    )
    cert = where / "elsewhere" / "user-cert.pub"
    cert.parent.mkdir()
    shutil.move(f"{key}-cert.pub", cert)  # not beside the key: only CertificateFile names it
    server = Sshd(client_key=key, config=[f"TrustedUserCAKeys {ca}.pub"], authorize=False).start()
    try:
        known = _known(server, tmp_path)
        text = server.host_block(["c1"], known, CertificateFile=cert) + server.host_block(["c2"], known)
        config = _config(tmp_path, text)
        done = _dsh(env, *config, "-c", "@c1 id -un")
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"c1 | {USER}\n" in done.stdout
        done = _dsh(env, *config, "-c", "@c2 id -un")  # the same key, without its certificate
        assert done.returncode == 1 and "refused" in done.stdout, done.stdout + done.stderr
        shutil.copy(cert, f"{key}-cert.pub")  # beside the key, as ssh finds it too
        done = _dsh(env, *config, "-c", "@c2 id -un")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        server.cleanup()


# -- keyboard-interactive questions other than a password ----------------------------


class _Recorder:
    """A Prompter answering a password and one-time codes, recording each prompt."""

    def __init__(self) -> None:
        self.prompts: list[Prompt] = []

    async def ask(self, prompt: Prompt) -> str | None:
        self.prompts.append(prompt)
        await asyncio.sleep(0.05)  # a person answering: the other connection waits meanwhile
        return "pw-42" if "password" in prompt.text.lower() else "123456"


class _TwoSteps(asyncssh.SSHServer):
    """A password, then a one-time code, by keyboard-interactive only."""

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return True

    def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> tuple[str, str, str, list[tuple[str, bool]]]:
        return "", "", "", [("Password: ", False)]

    def validate_kbdint_response(self, username: str, responses: list[str]) -> object:
        if responses == ["pw-42"]:
            return "", "Enter the code from your phone.", "", [("Verification code: ", True)]
        return responses == ["123456"]


def _in_process_config(tmp_path: Path, port: int, host_key: asyncssh.SSHKey) -> SshConfig:
    """`k1` and `k2`: the in-process server on `port`, with no key to offer."""
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_key.export_public_key().decode()}")
    text = (
        f"Host k1 k2\n  HostName 127.0.0.1\n  Port {port}\n  User {USER}\n  IdentityAgent none\n"
        f"  IdentitiesOnly yes\n  IdentityFile {tmp_path}/none\n  UserKnownHostsFile {known}\n"
        "  GlobalKnownHostsFile /dev/null\n"
    )
    return SshConfig.parse_text(text, home=tmp_path, local_user=USER)


async def test_only_passwords_are_reused_other_questions_are_asked_per_connection(tmp_path: Path) -> None:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(_TwoSteps, "127.0.0.1", 0, server_host_keys=[host_key])
    port = server.sockets[0].getsockname()[1]
    asks = Asks()
    asks.prompter = recorder = _Recorder()
    said: list[str] = []
    fleet = SshFleet(
        _in_process_config(tmp_path, port, host_key),
        asks=asks,
        ask_pass=True,
        warn=said.append,
        host_agent=HOST_AGENT,
    )
    try:
        await asyncio.gather(fleet.connection("k1"), fleet.connection("k2"))
        texts = sorted(p.text for p in recorder.prompts)
        assert texts == [
            f"({USER}@k1) Verification code: ",
            f"({USER}@k2) Verification code: ",
            f"{USER}@k1's password: " if recorder.prompts[0].hosts == ("k1",) else f"{USER}@k2's password: ",
        ], texts
        assert [p.secret for p in recorder.prompts if "code" in p.text] == [False, False]  # echoed, as asked
        assert len({p.id for p in recorder.prompts}) == 3
        assert f"ssh: {USER}@k1: Enter the code from your phone." in said
    finally:
        await fleet.close()
        server.close()
        await server.wait_closed()


class _Refuser:
    def __init__(self) -> None:
        self.prompts: list[Prompt] = []

    async def ask(self, prompt: Prompt) -> str | None:
        self.prompts.append(prompt)
        return None


class _PasswordsEveryWay(_TwoSteps):
    """Takes a password by keyboard-interactive and by the password method."""

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return password == "pw-42"


async def test_a_question_refused_ends_the_login_without_another(tmp_path: Path) -> None:
    """Refused over keyboard-interactive, the password is not asked again for the
    password method: the host is refused after one question."""
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.create_server(_PasswordsEveryWay, "127.0.0.1", 0, server_host_keys=[host_key])
    port = server.sockets[0].getsockname()[1]
    asks = Asks()
    asks.prompter = refuser = _Refuser()
    fleet = SshFleet(
        _in_process_config(tmp_path, port, host_key), asks=asks, ask_pass=True, host_agent=HOST_AGENT
    )
    try:
        with pytest.raises(RemoteUnreachable) as refused:
            await fleet.connection("k1")
        assert refused.value.outcome == "refused"
        assert [p.text for p in refuser.prompts] == [f"{USER}@k1's password: "]
    finally:
        await fleet.close()
        server.close()
        await server.wait_closed()


# -- the options ----------------------------------------------------------------------


def test_the_ssh_config_reads_forward_agent_and_password_authentication(tmp_path: Path) -> None:
    text = (
        "Host a\n  ForwardAgent yes\n  PasswordAuthentication yes\n  KbdInteractiveAuthentication no\n"
        "Host b\n  ForwardAgent ~/agent.sock\n"
        "Host *\n  ForwardAgent no\n  PasswordAuthentication no\n"
    )
    config = SshConfig.parse_text(text, home=tmp_path, local_user="me")
    a, b, c = (config.resolve(name) for name in "abc")
    assert (a.forward_agent, a.password_authentication, a.kbd_interactive_authentication) == (
        "yes",
        True,
        False,
    )
    assert (b.forward_agent, b.password_authentication) == (f"{tmp_path}/agent.sock", False)
    assert (c.forward_agent, c.password_authentication, c.kbd_interactive_authentication) == (
        "no",
        False,
        None,
    )
    with pytest.raises(SshConfigError, match="PasswordAuthentication takes yes or no"):
        SshConfig.parse_text("PasswordAuthentication maybe\n", home=tmp_path, local_user="me")


def test_ask_pass_and_forwarding_reach_a_detached_executor() -> None:
    settings = Settings(parser().parse_args(["--ask-pass", "-A", "-c", "true"]), {})
    assert (settings.ask_pass, settings.forward_agent) == (True, True)
    assert settings.passed == ["--ask-pass", "-A"]
    assert Settings(parser().parse_args(["-c", "true"]), {}).passed == []

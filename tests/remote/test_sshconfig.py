"""The ssh config reader: OpenSSH's rules, checked against the real `ssh -G` where it can say."""

from __future__ import annotations

import os
import pwd
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dsh.errors import UsageError
from dsh.remote import sshconfig
from dsh.remote.sshconfig import HostOptions, SshConfig, SshConfigError

HOME = Path("/home/me")


def parse(text: str, *, home: Path = HOME, environ: dict[str, str] | None = None) -> SshConfig:
    return SshConfig.parse_text(
        textwrap.dedent(text), "cfg", home=home, local_user="me", environ=environ or {}
    )


def resolve(text: str, alias: str, *, environ: dict[str, str] | None = None) -> HostOptions:
    return parse(text, environ=environ).resolve(alias)


# -- precedence and patterns ---------------------------------------------------------------


def test_defaults_without_any_config() -> None:
    opts = resolve("", "Web1")
    assert opts == HostOptions(
        alias="Web1",
        hostname="web1",
        port=22,
        user="me",
        identity_files=(),
        identities_only=False,
        identity_agent=None,
        proxy_jump=(),
        proxy_command=None,
        user_known_hosts=("/home/me/.ssh/known_hosts", "/home/me/.ssh/known_hosts2"),
        global_known_hosts=("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"),
        host_key_alias=None,
        connect_timeout=None,
        server_alive_interval=None,
        server_alive_count_max=None,
        strict_host_key_checking=None,
        certificate_files=(),
    )


def test_first_obtained_value_wins() -> None:
    text = """
        Port 1000
        Host web
          Port 2000
          User alice
          HostName web.example.com
        Host web
          User bob
          ConnectTimeout 5
        Host *
          User carol
          HostName other
          ConnectTimeout 9
    """
    opts = resolve(text, "web")
    assert (opts.port, opts.user, opts.hostname, opts.connect_timeout) == (
        1000,
        "alice",
        "web.example.com",
        5,
    )
    assert resolve(text, "db").user == "carol"


def test_identity_and_certificate_files_accumulate_in_order_without_duplicates() -> None:
    text = """
        Host web
          IdentityFile ~/.ssh/web
          CertificateFile ~/.ssh/web-cert.pub
        Host *
          IdentityFile ~/.ssh/all
          IdentityFile ~/.ssh/web
          CertificateFile ~/.ssh/web-cert.pub
    """
    opts = resolve(text, "web")
    assert opts.identity_files == ("/home/me/.ssh/web", "/home/me/.ssh/all")
    assert opts.certificate_files == ("/home/me/.ssh/web-cert.pub",)
    assert resolve(text, "db").identity_files == ("/home/me/.ssh/all", "/home/me/.ssh/web")


def test_wildcards_match_the_alias_as_typed_case_sensitively() -> None:
    text = """
        Host web-*
          User star
        Host db? 10.0.0.?
          User question
        Host Exact
          Port 2
    """
    config = parse(text)
    assert config.resolve("web-12").user == "star"
    assert config.resolve("Web-12").user == "me"
    assert config.resolve("db1").user == "question"
    assert config.resolve("db12").user == "me"
    assert config.resolve("10.0.0.7").user == "question"
    assert config.resolve("Exact").port == 2
    assert config.resolve("exact").port == 22


def test_a_negated_pattern_vetoes_the_block() -> None:
    text = """
        Host * !bastion !*.internal
          ProxyJump bastion
        Host !lonely
          User never
    """
    config = parse(text)
    assert config.resolve("web").proxy_jump == ("bastion",)
    assert config.resolve("bastion").proxy_jump == ()
    assert config.resolve("db.internal").proxy_jump == ()
    assert config.resolve("web").user == "me"  # a negated pattern alone matches nothing


# -- Match ---------------------------------------------------------------------------------


def test_match_host_sees_the_hostname_so_far_without_case() -> None:
    text = """
        Host web
          HostName %h.Example.COM
        Match host *.example.com
          User by-hostname
        Match host web
          Port 1
        Match originalhost WEB
          ConnectTimeout 3
    """
    opts = resolve(text, "web")
    assert (opts.hostname, opts.user, opts.port, opts.connect_timeout) == (
        "web.example.com",
        "by-hostname",
        22,
        3,
    )
    assert resolve(text, "other").user == "me"


def test_match_user_sees_the_user_so_far_else_the_local_user() -> None:
    text = """
        Match user me
          Port 1
        Host web
          User deploy
        Match user deploy
          ConnectTimeout 2
        Match localuser me !user root
          ServerAliveCountMax 7
        Match localuser someone-else
          ServerAliveInterval 1
    """
    opts = resolve(text, "web")
    assert (opts.port, opts.connect_timeout, opts.server_alive_count_max) == (1, 2, 7)
    assert opts.server_alive_interval is None
    assert resolve(text, "db").connect_timeout is None


def test_match_criteria_pattern_lists_and_negation() -> None:
    text = """
        Match host a,b,!c*,*.x
          User listed
        Match !originalhost a
          Port 7
        Match all
          ConnectTimeout 1
        Match host=q
          IdentitiesOnly yes
    """
    config = parse(text)
    assert config.resolve("b").user == "listed"
    assert config.resolve("c.x").user == "me"  # the negated pattern wins
    assert config.resolve("z.x").user == "listed"
    assert (config.resolve("a").port, config.resolve("b").port) == (22, 7)
    assert config.resolve("z").connect_timeout == 1
    assert config.resolve("q").identities_only


def test_a_condition_is_decided_once_where_it_stands(tmp_path: Path) -> None:
    # The included file sets the User that the Match tests; the Match stays
    # decided for the rest of its block, as in ssh.
    write(tmp_path / "sets-user.conf", "User bob\n")
    text = f"""
        Match !user bob
          Include {tmp_path}/sets-user.conf
          Port 5
        Match user bob
          ConnectTimeout 6
    """
    opts = resolve(text, "x")
    assert (opts.user, opts.port, opts.connect_timeout) == ("bob", 5, 6)


def test_unsupported_match_criteria_never_apply_and_warn_once() -> None:
    text = """
        Match exec "test -e /"
          User exec
        Match final
          Port 1
        Match host x tagged prod
          ConnectTimeout 1
        Match !canonical all
          IdentitiesOnly yes
        Host *
          User plain
    """
    config = parse(text)
    for alias in ("x", "y", "x"):
        opts = config.resolve(alias)
        assert (opts.user, opts.port, opts.connect_timeout, opts.identities_only) == (
            "plain",
            22,
            None,
            False,
        )
    assert config.warnings == [
        "cfg:2: Match exec is not supported by dsh; this block is ignored",
        "cfg:4: Match final is not supported by dsh; this block is ignored",
        "cfg:6: Match tagged is not supported by dsh; this block is ignored",
        "cfg:8: Match canonical is not supported by dsh; this block is ignored",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Match", "cfg:1: Match needs an argument"),
        ("Match host", "cfg:1: Match host needs an argument"),
        ("Match all host a", "cfg:1: Match all must stand alone"),
        ("Host", "cfg:1: Host needs an argument"),
        ('Host "a', "cfg:1: Host: unterminated quote"),
    ],
)
def test_bad_host_and_match_lines(line: str, message: str) -> None:
    with pytest.raises(SshConfigError, match=re.escape(message)):
        parse(line)


# -- Include -------------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_include_globs_in_lexical_order_relative_to_dot_ssh(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write(home / ".ssh/conf.d/20-b.conf", "Host web\n  User from-b\n  Port 20\n")
    write(home / ".ssh/conf.d/10-a.conf", "Host web\n  User from-a\n")
    write(home / ".ssh/conf.d/.hidden", "Port 99\n")
    write(home / "tilde.conf", "ConnectTimeout 4\n")
    text = """
        Include conf.d/*.conf ~/tilde.conf missing.conf nothing/*.conf
        Host *
          User last
    """
    config = parse(text, home=home)
    opts = config.resolve("web")
    assert (opts.user, opts.port, opts.connect_timeout) == ("from-a", 20, 4)
    assert config.resolve("db").user == "last"


def test_include_inside_a_block_applies_only_when_it_matches(tmp_path: Path) -> None:
    write(tmp_path / "inc/1.conf", "Port 11\nHost a\n  User ia\nHost *\n  HostKeyAlias hk\nHost zzz\n")
    write(tmp_path / "inc/2.conf", "ConnectTimeout 5\n")
    text = f"""
        Host b
          Include {tmp_path}/inc/*.conf
          ServerAliveInterval 7
        Host a
          HostName x
    """
    config = parse(text)
    b = config.resolve("b")
    # 2.conf's first lines are back under `Host b`, as is the line after the Include.
    assert (b.port, b.host_key_alias, b.connect_timeout, b.server_alive_interval, b.user) == (
        11,
        "hk",
        5,
        7,
        "me",
    )
    a = config.resolve("a")
    assert (a.port, a.user, a.host_key_alias, a.hostname) == (22, "me", None, "x")


def test_include_depth_is_limited(tmp_path: Path) -> None:
    loop = write(tmp_path / "loop.conf", f"Port 2\nInclude {tmp_path}/loop.conf\n")
    with pytest.raises(SshConfigError) as caught:
        SshConfig.load([loop], home=tmp_path, local_user="me")
    assert caught.value.message.startswith(f"{loop}:2: Include of {loop} nests more than 16 deep")
    # Sixteen levels below the top file are fine, as in ssh.
    for level in range(16):
        write(tmp_path / f"c{level}", f"Include {tmp_path}/c{level + 1}\n")
    write(tmp_path / "c16", "Port 7\n")
    assert SshConfig.load([tmp_path / "c0"], home=tmp_path, local_user="me").resolve("h").port == 7


def test_load_reads_the_user_file_before_the_system_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "etc"
    monkeypatch.setattr(sshconfig, "SYSTEM_CONFIG", system / "ssh_config")
    monkeypatch.setattr(sshconfig, "SYSTEM_DIR", system)
    home = tmp_path / "home"
    assert SshConfig.load(home=home, local_user="me").resolve("h").port == 22  # neither file exists
    write(system / "ssh_config", "Include ssh_config.d/*.conf\nHost *\n  Port 2\n  User sys\n")
    write(system / "ssh_config.d/x.conf", "ConnectTimeout 8\n")
    write(home / ".ssh/config", "Host h\n  User mine\n")
    opts = SshConfig.load(home=home, local_user="me").resolve("h")
    assert (opts.user, opts.port, opts.connect_timeout) == ("mine", 2, 8)


def test_explicit_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SshConfigError, match=re.escape(f"{tmp_path}/nope: cannot read ssh config")) as caught:
        SshConfig.load([tmp_path / "nope"], home=tmp_path, local_user="me")
    assert isinstance(caught.value, UsageError) and caught.value.exit_code == 2


# -- syntax, values, tokens ----------------------------------------------------------------


def test_line_syntax_equals_quotes_escapes_comments_and_keyword_case() -> None:
    text = r"""
        # a comment
        HOST=web
          hostname = "%h.Example.org"
          User 'the user'   # a comment after the value
          IdentityFile "~/.ssh/with space"
          IdentityFile ~/.ssh/not#a-comment
          HostKeyAlias a\ b\"c
          uSeRkNoWnHoStSfIlE=/a "/b c"
          SomeUnknownKeyword whatever "
    """
    opts = resolve(text, "web")
    assert opts.hostname == "web.example.org"
    assert opts.user == "the user"
    assert opts.identity_files == ("/home/me/.ssh/with space", "/home/me/.ssh/not#a-comment")
    assert opts.host_key_alias == 'a b"c'
    assert opts.user_known_hosts == ("/a", "/b c")


def test_tokens_tilde_and_environment() -> None:
    text = """
        Host web
          HostName %h.example.com
          User deploy
          Port 2200
          IdentityFile %d/id_%h_%p_%r_%u_%n_%%
          IdentityFile ~root/.ssh/id
          CertificateFile ~/c/%k
          UserKnownHostsFile ~/.ssh/kh_%l_%L_%i /kh/%C
          IdentityAgent ${XDG_RUNTIME_DIR}/agent.%h
          ProxyCommand ssh -W %h:%p gw-%r-%n %%
          HostKeyAlias Web-Key
    """
    opts = resolve(text, "web", environ={"XDG_RUNTIME_DIR": "/run/user/7"})
    assert opts.identity_files == (
        "/home/me/id_web.example.com_2200_deploy_me_web_%",
        f"{pwd.getpwnam('root').pw_dir}/.ssh/id",
    )
    assert opts.certificate_files == ("/home/me/c/web-key",)
    local = socket.gethostname()
    assert opts.user_known_hosts[0] == f"/home/me/.ssh/kh_{local}_{local.split('.')[0]}_{os.getuid()}"
    assert re.fullmatch(r"/kh/[0-9a-f]{40}", opts.user_known_hosts[1])
    assert opts.identity_agent == "/run/user/7/agent.web.example.com"
    assert opts.proxy_command == "ssh -W web.example.com:2200 gw-deploy-web %"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("IdentityFile ~/%x", "cfg:2: IdentityFile: %x is not a token of IdentityFile"),
        ("HostName %p.example", "cfg:2: HostName: %p is not a token of HostName"),
        ("ProxyCommand nc %d", "cfg:2: ProxyCommand: %d is not a token of ProxyCommand"),
        ("UserKnownHostsFile /a/%", "cfg:2: UserKnownHostsFile: a lone % ends the value"),
        ("IdentityFile ${UNSET_VAR}/id", "cfg:2: IdentityFile: environment variable UNSET_VAR is not set"),
        ("IdentityFile ~nosuchuser-dsh/id", "cfg:2: IdentityFile: no user 'nosuchuser-dsh'"),
    ],
)
def test_bad_tokens_are_reported_when_resolving(line: str, message: str) -> None:
    config = parse(f"Host web\n  {line}\n")
    assert config.resolve("db").hostname == "db"  # other hosts are unaffected
    with pytest.raises(SshConfigError, match=re.escape(message)):
        config.resolve("web")


def test_identity_agent_special_values_are_kept() -> None:
    text = """
        Host a
          IdentityAgent none
        Host b
          IdentityAgent SSH_AUTH_SOCK
        Host c
          IdentityAgent $MY_AGENT
    """
    config = parse(text)
    assert [config.resolve(h).identity_agent for h in "abcd"] == ["none", "SSH_AUTH_SOCK", "$MY_AGENT", None]


def test_proxy_jump_and_proxy_command_exclude_each_other_first_wins() -> None:
    text = """
        Host p1
          ProxyCommand nc %h %p
          ProxyJump ignored
        Host p2
          ProxyJump none
          ProxyCommand connect %h
        Host p3
          ProxyCommand none
          ProxyJump ignored
        Host p4
          ProxyJump ssh://u@j1:2022/,[::1]:22,j3 trailing words
          ProxyCommand ignored
        Host p5
          ProxyJump a
          ProxyJump b
        Host p6
          ProxyCommand = sh -c 'nc ${GW:-gw} %p'  # all of it, verbatim but for tokens
    """
    config = parse(text)
    hosts = ("p1", "p2", "p3", "p4", "p5", "p6")
    got = {h: (config.resolve(h).proxy_jump, config.resolve(h).proxy_command) for h in hosts}
    assert got == {
        "p1": ((), "nc p1 22"),
        "p2": ((), "connect p2"),
        "p3": ((), None),
        "p4": (("u@j1:2022", "[::1]:22", "j3"), None),
        "p5": (("a",), None),
        "p6": ((), "sh -c 'nc ${GW:-gw} 22'  # all of it, verbatim but for tokens"),
    }


def test_numbers_and_flags() -> None:
    text = """
        Host a
          Port ssh
          ConnectTimeout none
          ConnectTimeout 1m30s
          ServerAliveInterval 2M
          ServerAliveCountMax 010
          IdentitiesOnly YES
          StrictHostKeyChecking Off
        Host b
          Port 0022
          ServerAliveInterval 0
          StrictHostKeyChecking accept-new
    """
    config = parse(text)
    a, b = config.resolve("a"), config.resolve("b")
    assert (a.port, a.connect_timeout, a.server_alive_interval, a.server_alive_count_max) == (22, 90, 120, 10)
    assert (a.identities_only, a.strict_host_key_checking) == (True, "no")
    assert (b.port, b.server_alive_interval, b.strict_host_key_checking) == (22, 0, "accept-new")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Port 0", "cfg:3: Port '0' is not a port number"),
        ("Port 65536", "cfg:3: Port '65536' is not a port number"),
        ("Port 0x16", "cfg:3: Port '0x16' is not a port number"),
        ("Port 22 23", "cfg:3: Port takes one argument, not 2"),
        ("Port", "cfg:3: Port needs an argument"),
        ("ConnectTimeout 1.5", "cfg:3: ConnectTimeout '1.5' is not a time"),
        ("ServerAliveInterval -1", "cfg:3: ServerAliveInterval '-1' is not a time"),
        ("ServerAliveCountMax x", "cfg:3: ServerAliveCountMax 'x' is not a whole number"),
        ("IdentitiesOnly maybe", "cfg:3: IdentitiesOnly takes yes or no"),
        ("StrictHostKeyChecking maybe", "cfg:3: StrictHostKeyChecking takes yes, no, ask or accept-new"),
        ("ProxyJump a,,b", "cfg:3: ProxyJump: bad hop ''"),
        ("ProxyJump a:0", "cfg:3: ProxyJump: bad hop 'a:0'"),
        ('ProxyJump "a"', "cfg:3: ProxyJump: bad hop '\"a\"'"),
        ("IdentityAgent $HOME/agent", "cfg:3: IdentityAgent '$HOME/agent'"),
        ("IdentityAgent ${UNSET_VAR}", "cfg:3: IdentityAgent: environment variable UNSET_VAR is not set"),
        ("UserKnownHostsFile 'open", "cfg:3: UserKnownHostsFile: unterminated quote"),
    ],
)
def test_bad_values_name_file_and_line_even_in_blocks_that_do_not_match(line: str, message: str) -> None:
    with pytest.raises(SshConfigError, match=re.escape(message)):
        parse(f"# header\nHost nobody-uses-this\n  {line}\n")


def test_aliases_lists_plain_host_names_once_in_file_order(tmp_path: Path) -> None:
    write(tmp_path / "more.conf", "Host g web\n")
    text = f"""
        Host web db *.x !c
        Host db d?
        Match host e
        Host f
        Include {tmp_path}/more.conf
    """
    assert parse(text).aliases() == ["web", "db", "f", "g"]


def test_resolving_a_thousand_aliases_against_a_thousand_blocks_is_fast() -> None:
    text = "".join(
        f"Host h{i}\n  HostName 10.0.{i // 256}.{i % 256}\n  Port {2000 + i}\n  User u{i}\n"
        f"  IdentityFile ~/.ssh/id_h{i}\n"
        for i in range(1000)
    )
    text += "Host *\n  ServerAliveInterval 30\n  IdentityFile ~/.ssh/id_default\n"
    config = parse(text)
    start = time.perf_counter()
    resolved = [config.resolve(f"h{i}") for i in range(1000)]
    elapsed = time.perf_counter() - start
    last = resolved[-1]
    assert (last.hostname, last.port, last.user) == ("10.0.3.231", 2999, "u999")
    assert last.identity_files == ("/home/me/.ssh/id_h999", "/home/me/.ssh/id_default")
    assert last.server_alive_interval == 30
    assert elapsed < 0.5, f"{elapsed:.3f}s"


def test_importing_does_not_import_asyncssh() -> None:
    code = "import sys, dsh.remote.sshconfig; sys.exit('asyncssh' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# -- the real ssh as an oracle -------------------------------------------------------------

# `ssh -G` prints the options it resolved. Two things to know: ssh takes `~` and
# %d from the passwd entry, not from $HOME (so HOME is set to a decoy here, and
# load() gets the passwd home), and it prints IdentityFile and CertificateFile
# unexpanded; `ssh -v` with a ProxyCommand that exits at once logs them expanded
# ("identity file PATH type -1") before the connection fails.

SSH = "/usr/bin/ssh"
PW = pwd.getpwuid(os.getuid())
ORACLE_ENV = {"DSH_TEST_VAR": "envval"}

ORACLE_CONFIGS = {
    "wildcards": (
        """
        ServerAliveInterval 1m
        Host web-* !web-bad
          User deploy
          Port 2222
          IdentityFile ~/.ssh/web_%r
        Host web-1 web-2
          HostName %h.Internal
          User override
          IdentityFile ~/.ssh/web1
        Host *.example.com db?
          IdentityFile ~/.ssh/example_%h
          HostKeyAlias Example-Key
          ConnectTimeout 7
        Host *
          User fallback
          IdentityFile ~/.ssh/id_all
          IdentityFile ~/.ssh/web1
          UserKnownHostsFile ~/.ssh/kh_%h /tmp/kh-%p-%r
        """,
        {},
        ["web-1", "web-bad", "Web-1", "db1", "db12", "api.example.com", "other"],
    ),
    "match": (
        """
        Host jump-target
          HostName Target.Internal
          ProxyJump admin@bastion:2200,second
        Match host target.internal
          User matched
          HostKeyAlias TargetKey
        Match originalhost jump-*,!jump-x !user root
          Port 2022
        Match localuser {user} !host *.skip
          IdentityFile %d/.ssh/local_%u
        Match host=*.skip
          ProxyJump none
          IdentitiesOnly yes
        Match all
          ConnectTimeout 3
          ProxyJump fallback-jump
        """,
        {},
        ["jump-target", "JUMP-TARGET", "jump-x", "a.skip", "other"],
    ),
    "include": (
        """
        Include {tmp}/conf.d/*.conf
        Host inc-*
          Include {tmp}/host.d/*.conf
          ServerAliveInterval 9
        Match originalhost memo !user x
          Include {tmp}/memo.conf
          Port 5
        Host *
          HostKeyAlias fallback
        """,
        {
            "conf.d/10-first.conf": "Host inc-a\n  User first\nHost zzz\n  Port 1000\n",
            "conf.d/20-second.conf": "ConnectTimeout 20\n",
            "host.d/a.conf": "Port 3000\nHost inc-b\n  User second\n",
            "host.d/b.conf": "IdentityFile ~/.ssh/from_include\n",
            "memo.conf": "User x\nHost *\n  ServerAliveCountMax 4\n",
        },
        ["inc-a", "inc-b", "zzz", "memo", "other"],
    ),
    "syntax-and-tokens": (
        """
        HOST=quoted
          hostname = "%h.Example.ORG"
          User "the user"
          IdentityFile "~/.ssh/with space"
          IdentityFile ~/.ssh/id_%h_%p_%r_%u_%n_%%
          CertificateFile ~/.ssh/cert_%C
          UserKnownHostsFile /tmp/%C %d/%l/%L/%i ~/.ssh/kh_%k_%n
          HostKeyAlias Alias-KEY
          IdentityAgent ~/agent.%h.${{DSH_TEST_VAR}}
          GlobalKnownHostsFile /etc/x ~/y
        Host *
          IdentityFile ~/.ssh/dup
          IdentityFile ~/.ssh/dup
          ProxyCommand none
          ProxyJump ignored
          ConnectTimeout none
          ConnectTimeout 1m30s
          ServerAliveCountMax 010
        """,
        {},
        ["quoted", "Quoted", "other"],
    ),
    "proxies": (
        """
        Port 1111
        Host p1
          ProxyCommand nc %h %p
          ProxyJump never
        Host p2
          ProxyJump none
          ProxyCommand ssh -W %h:%p gw
        Host p3
          ProxyJump ssh://u@j1:2022,j2
        Host *
          Port 2222
          User u%%
        """,
        {},
        ["p1", "p2", "p3", "p4"],
    ),
}


def ssh_env(tmp_path: Path) -> dict[str, str]:
    decoy = tmp_path / "decoy-home"
    decoy.mkdir(exist_ok=True)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(decoy),
        "USER": PW.pw_name,
        "LOGNAME": PW.pw_name,
        **ORACLE_ENV,
    }


def ssh_dump(config: Path, alias: str, env: dict[str, str]) -> dict[str, str]:
    """`ssh -G`: one value per key (the keys compared here are single)."""
    done = subprocess.run(
        [SSH, "-G", "-F", str(config), alias], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 0, done.stderr
    pairs = (line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    return {key.lower(): value for key, value in pairs}


def ssh_key_files(config: Path, alias: str, env: dict[str, str]) -> tuple[list[str], list[str]]:
    """The identity and certificate files ssh would try, expanded, from `ssh -v`."""
    done = subprocess.run(
        [SSH, "-v", "-F", str(config), "-o", "ProxyCommand=true", "-o", "BatchMode=yes", alias, "true"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    tried = re.findall(r"^debug1: identity file (.*) type -?\d+$", done.stderr, re.MULTILINE)
    # After each identity ssh also tries its `-cert` companion: not a configured file.
    identities = [p for i, p in enumerate(tried) if not (i and p == f"{tried[i - 1]}-cert")]
    certificates = re.findall(r"^debug1: certificate file (.*) type -?\d+$", done.stderr, re.MULTILINE)
    assert "Executing proxy command" in done.stderr, done.stderr
    return identities, certificates


@pytest.mark.parametrize("name", sorted(ORACLE_CONFIGS))
def test_resolve_agrees_with_ssh_dash_G(name: str, tmp_path: Path) -> None:
    text, extra, aliases = ORACLE_CONFIGS[name]
    for rel, body in extra.items():
        write(tmp_path / rel, body)
    main = write(tmp_path / "config", text.format(tmp=tmp_path, user=PW.pw_name))
    env = ssh_env(tmp_path)
    config = SshConfig.load([main], home=Path(PW.pw_dir), local_user=PW.pw_name, environ=env)
    assert config.warnings == []
    for alias in aliases:
        ours = config.resolve(alias)
        dump = ssh_dump(main, alias, env)
        theirs = {
            "hostname": dump["hostname"],
            "port": int(dump["port"]),
            "user": dump["user"],
            # ssh prints all hops but the last as written, the last one parsed;
            # dsh drops the ssh:// of every hop.
            "proxyjump": tuple(hop.removeprefix("ssh://") for hop in dump["proxyjump"].split(","))
            if "proxyjump" in dump
            else (),
            "proxycommand set": "proxycommand" in dump,
            "userknownhostsfile": tuple(dump["userknownhostsfile"].split(" ")),
            "globalknownhostsfile": tuple(dump["globalknownhostsfile"].split(" ")),
            "hostkeyalias": dump.get("hostkeyalias"),
            "identityagent": dump.get("identityagent"),
            "identitiesonly": dump["identitiesonly"] == "yes",
            "connecttimeout": None if dump["connecttimeout"] == "none" else float(dump["connecttimeout"]),
            "serveraliveinterval": float(dump["serveraliveinterval"]),
            "serveralivecountmax": int(dump["serveralivecountmax"]),
        }
        mine = {
            "hostname": ours.hostname,
            "port": ours.port,
            "user": ours.user,
            "proxyjump": ours.proxy_jump,
            "proxycommand set": ours.proxy_command is not None,
            "userknownhostsfile": ours.user_known_hosts,
            "globalknownhostsfile": ours.global_known_hosts,
            "hostkeyalias": ours.host_key_alias,
            "identityagent": ours.identity_agent,
            "identitiesonly": ours.identities_only,
            "connecttimeout": ours.connect_timeout,
            "serveraliveinterval": ours.server_alive_interval or 0.0,  # ssh's default is 0: off
            "serveralivecountmax": 3 if ours.server_alive_count_max is None else ours.server_alive_count_max,
        }
        assert mine == theirs, alias
        identities, certificates = ssh_key_files(main, alias, env)
        if ours.identity_files:
            assert list(ours.identity_files) == identities, alias
        else:  # ssh then tries its default keys
            assert identities and all(p.startswith(f"{PW.pw_dir}/.ssh/id_") for p in identities), alias
        assert list(ours.certificate_files) == certificates, alias


def test_an_alias_is_resolved_once_and_again_after_an_override() -> None:
    config = parse("Host web*\n  User deploy\n  Port 2222\n")
    first = config.resolve("web1")
    assert config.resolve("web1") is first  # every action asks: worked out once
    config.override("web1", user="ops", where="inventory:1")
    again = config.resolve("web1")
    assert (again.user, again.port, first.user) == ("ops", 2222, "deploy")

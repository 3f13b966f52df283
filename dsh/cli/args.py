"""The command line's arguments: the parser, the settings every mode shares, and
the checks of what subcommands take (session names, flags, scripts)."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

from dsh import __version__
from dsh.errors import UsageError

#: The subcommands, in the order the usage lists them (`dsh.cli.table` maps each
#: to its handler; a test holds both, man/dsh.1 and the completions together).
SUBCOMMANDS = (
    "explain",
    "log",
    "attach",
    "ls",
    "run",
    "kill",
    "rm",
    "signal",
    "key",
    "serve",
    "admin",
    "approve",
)
SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_STORE_URL = re.compile(r"local|sqlite:///.+|etcds?://[^/\s]+(?:/\S*)?")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `dsh --help`)")


def parser(*, run: bool = False) -> argparse.ArgumentParser:
    """dsh's options; with `run`, also `run`'s own (`--detach`)."""
    parser = _Parser(
        prog="dsh",
        usage="dsh [OPTIONS] [-c TEXT [ARGS…] | SCRIPT [ARGS…] | run [--detach] SCRIPT [ARGS…] | "
        "attach [--take] SESSION | ls | log SESSION | kill SESSION | rm SESSION|--older-than D | "
        "signal SESSION NAME [VALUE] | key put|get KEY [VALUE] | serve [--listen ADDR:PORT] | "
        "explain TEXT|SCRIPT | admin init|show|user …]",
        description="An interactive distributed shell: lines of remote actions, awaits and "
        "timeouts, compiled into bounded plans.",
        epilog="Subcommands: run [--detach] SCRIPT [ARGS] — run a script, or start it in a process "
        "of its own and print the session's name; attach SESSION — what happened in it lately, "
        "then its live output and a prompt in it (taken over first if its owner died; followed "
        "through the store if it runs on another machine, --take asks that one to hand it over); "
        "ls [--json] — your sessions; "
        "log SESSION [-f] [--json] [--output ACTION HOST] — the journal, or one action's output; "
        "kill SESSION — stop its work and its commands; rm SESSION — remove it and its spools; "
        "rm --older-than D [--dry-run] — every finished session untouched for D; "
        "signal SESSION NAME [VALUE] — release an `await signal NAME` (kept until one takes it); "
        "key put KEY VALUE | key get KEY — the keys `await key` waits for; "
        "serve [--listen ADDR:PORT] [--public-url URL] [--cert F --key F] [--header-timeout D] "
        "[--body-timeout D] [--max-connections N] — take the POSTs that `await callback` waits for; "
        "explain TEXT|SCRIPT — show the compiled plan and its worst case; "
        "admin init [--yes] | show [--json] | user add NAME [--service|--serve] | user rm NAME "
        "[--purge] | user passwd NAME — etcd's users and roles for dsh (as etcd's root). "
        "Exit status: 0 all ok, 1 some outcome not ok, 2 usage or compile error, "
        "3 store unreachable or lease lost, 4 killed, 70 internal error, 130 interrupted, "
        "129/143 stopped by SIGHUP/SIGTERM. "
        "See dsh(1) and dsh(7).",
    )
    parser.add_argument("-c", dest="text", metavar="TEXT", help="run TEXT (further arguments are $1…)")
    parser.add_argument("--session", metavar="NAME", help="the session's name (default: $DSH_SESSION)")
    parser.add_argument(
        "--store", metavar="URL", help="local | sqlite:///PATH | etcd[s]://[USER@]HOST:PORT[,…][/PREFIX]"
    )
    parser.add_argument(
        "--insecure-store",
        action="store_true",
        help="accept an etcd off this machine without TLS or with its authentication off "
        "(its password, commands and bound values cross the network in clear; anyone who "
        "reaches it can run commands with your access); also DSH_INSECURE_STORE=1",
    )
    parser.add_argument(
        "--team",
        metavar="TEAM",
        help="work in team TEAM's sessions and keys (on etcd, as one of its members: dsh admin team add)",
    )
    parser.add_argument("--ssh-config", metavar="FILE", help="an ssh config file instead of ~/.ssh/config")
    parser.add_argument(
        "--host-keys",
        choices=("strict", "accept-new", "off"),
        help="host keys not in known_hosts: refuse (strict, the default), record (accept-new) or "
        "trust (off); a changed key is always refused",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="dsh's configuration (default: $DSH_CONFIG or $XDG_CONFIG_HOME/dsh/config.toml)",
    )
    parser.add_argument(
        "--askpass",
        metavar="PROG",
        help="a program that prints the answer to a prompt (a sudo password), given the "
        "prompt as its argument, for runs with no terminal (default: $DSH_ASKPASS)",
    )
    parser.add_argument(
        "--ask-pass",
        action="store_true",
        help="log in with a password (asked once per login user) where a host takes no key; "
        "without it, only hosts whose ssh config says PasswordAuthentication yes are asked",
    )
    parser.add_argument(
        "-A",
        dest="forward_agent",
        action="store_true",
        help="forward the ssh-agent ($SSH_AUTH_SOCK) to every host, as ForwardAgent yes",
    )
    parser.add_argument(
        "--inventory",
        metavar="FILE",
        help="an Ansible inventory (INI or YAML): its groups are @{NAME} and @{inventory:NAME}, "
        "its hosts reached as its ansible_host, ansible_port, ansible_user and key say",
    )
    parser.add_argument(
        "--outdir",
        metavar="DIR",
        help="also write each host's stdout and stderr of every action to DIR/ACTION/HOST.out and "
        "HOST.err (private files; ACTION as dsh log shows it)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per output line and result")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks of internal errors")
    parser.add_argument("--version", action="version", version=f"dsh {__version__}")
    if run:  # `dsh run [OPTIONS] [--detach] SCRIPT [ARGS]` takes the same options
        parser.add_argument("--detach", action="store_true")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


class Settings:
    """The options that apply to every mode, checked once."""

    def __init__(self, opts: argparse.Namespace, env: Mapping[str, str]) -> None:
        from dsh import config

        #: The parsed options (`run` parses its own over them).
        self.opts = opts
        self.env = env
        self.json: bool = opts.json
        self.verbose: bool = opts.verbose
        self.session = opts.session or env.get("DSH_SESSION") or None
        if self.session is not None and not SESSION_NAME.fullmatch(self.session):
            raise UsageError(
                f"{self.session!r} cannot name a session (letters, digits, '.', '_', '-'; at most 64)"
            )
        self.store = opts.store or env.get("DSH_STORE") or "local"
        if not _STORE_URL.fullmatch(self.store):
            raise UsageError(f"{self.store!r} is not a store URL (local, sqlite:///PATH, etcd://HOST:PORT)")
        #: The options an executor process started for this one is given.
        self.passed: list[str] = []
        for flag, value in (
            ("--store", opts.store),
            ("--team", opts.team),
            ("--ssh-config", opts.ssh_config),
            ("--config", opts.config),
            ("--host-keys", opts.host_keys),
            ("--askpass", opts.askpass),
            ("--outdir", opts.outdir),
            ("--inventory", opts.inventory),
        ):
            if value:
                absolute = flag in ("--ssh-config", "--config", "--outdir", "--inventory")
                self.passed += [flag, os.path.abspath(value) if absolute else value]
        self.passed += [
            flag
            for flag, on in (
                ("--ask-pass", opts.ask_pass),
                ("-A", opts.forward_agent),
                ("--insecure-store", opts.insecure_store),
            )
            if on
        ]
        #: An etcd off this machine without TLS or authentication is accepted.
        self.insecure_store: bool = opts.insecure_store
        #: The team whose sessions and keys the command works on (None: the person's own).
        self.team: str | None = opts.team
        if self.team is not None and not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", self.team):
            raise UsageError(
                f"--team {self.team!r}: not a team's name (lower-case letters, digits, '_', '.', '-')"
            )
        #: Password logins for every host (--ask-pass); the agent forwarded to every host (-A).
        self.ask_pass: bool = opts.ask_pass
        self.forward_agent: bool = opts.forward_agent
        #: A program that answers prompts (a sudo password) where no terminal can.
        self.askpass: str | None = opts.askpass or env.get("DSH_ASKPASS") or None
        #: Where every action's output is written too (absolute: the executor's cwd may differ).
        self.outdir: str | None = os.path.abspath(opts.outdir) if opts.outdir else None
        if self.outdir is not None and os.path.exists(self.outdir) and not os.path.isdir(self.outdir):
            raise UsageError(f"--outdir {opts.outdir}: not a directory")
        self.ssh_config = Path(opts.ssh_config) if opts.ssh_config else None
        if self.ssh_config is not None and not self.ssh_config.is_file():
            raise UsageError(f"{self.ssh_config}: no such ssh config file")
        path = Path(opts.config) if opts.config else config.default_path(env)
        self.config = config.load(path, required=bool(opts.config or env.get("DSH_CONFIG")))
        self.host_keys: str = opts.host_keys or self.config.ssh.host_keys
        #: The Ansible inventory read (--inventory, else the config's inventory.file).
        inventory = os.path.abspath(opts.inventory) if opts.inventory else self.config.inventory.file
        self.inventory: str | None = inventory
        no_color = bool(env.get("NO_COLOR"))
        self.color = not self.json and not no_color and sys.stdout.isatty()


def one_session(rest: list[str], usage: str) -> str:
    """The one session name a subcommand takes (`--json` aside)."""
    names = [a for a in rest if a != "--json"]
    if len(names) != 1 or names[0].startswith("-"):
        raise UsageError(f"{usage} needs one session name: dsh {usage} SESSION")
    return session_name(names[0])


def session_name(name: str) -> str:
    """`name`, when it can name a session."""
    if not SESSION_NAME.fullmatch(name):
        raise UsageError(f"{name!r} cannot name a session")
    return name


def flag(args: list[str], flag: str) -> bool:
    """Whether `flag` is among `args` (taken out of them)."""
    if flag in args:
        args.remove(flag)
        return True
    return False


def read_script(path: str) -> str:
    """A script's text (CRLF line ends read as LF)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file (and not a subcommand: {', '.join(SUBCOMMANDS)})") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory, not a script") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return text.replace("\r\n", "\n")  # scripts saved with CRLF line ends

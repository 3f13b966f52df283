"""The command line: parses arguments, picks the concrete classes, maps errors to exit codes.

    dsh [OPTIONS]                      the REPL (or lines from stdin when it is not a tty)
    dsh [OPTIONS] -c TEXT [ARGS…]      run TEXT
    dsh [OPTIONS] SCRIPT [ARGS…]       run a script (what follows SCRIPT is the script's)
    dsh [OPTIONS] explain TEXT|SCRIPT [ARGS…]

Subcommand names win over file names: `./explain` runs a file named explain.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dsh import __version__, state
from dsh.errors import DshError, LangError, UsageError

if TYPE_CHECKING:
    import subprocess

    from dsh.driver import Driver
    from dsh.remote.base import Gate, Hosts
    from dsh.render import Renderer
    from dsh.runtime.session import Session
    from dsh.store.base import Store

#: Design §6 exit codes, plus 70 for a bug in dsh itself, and 128+N when signal
#: N stopped dsh (driver.Interrupted): SIGINT 130, SIGHUP 129, SIGTERM 143.
EXIT_OK = 0
EXIT_NOT_OK = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_KILLED = 4
EXIT_INTERNAL = 70
EXIT_HANGUP = 128 + 1
EXIT_INTERRUPTED = 128 + 2
EXIT_TERMINATED = 128 + 15
SUBCOMMANDS = ("explain", "log", "attach", "ls", "run", "kill", "rm", "signal", "key", "serve")
#: `dsh log -f` polls the journal this often.
FOLLOW_POLL = 0.2
#: `dsh log --output` follows an action still running at most this long.
OUTPUT_TIMEOUT = 3600.0
#: How long `run --detach` waits for its executor to own the session.
DETACH_TIMEOUT = 15.0
#: Every store call from the CLI is bounded by this.
STORE_TIMEOUT = 10.0
_SESSION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_STORE_URL = re.compile(r"local|sqlite:///.+|etcds?://[^/\s]+(?:/\S*)?")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `dsh --help`)")


def _parser(*, run: bool = False) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="dsh",
        usage="dsh [OPTIONS] [-c TEXT [ARGS…] | SCRIPT [ARGS…] | run [--detach] SCRIPT [ARGS…] | "
        "attach [--take] SESSION | ls | log SESSION | kill SESSION | rm SESSION|--older-than D | "
        "signal SESSION NAME [VALUE] | key put|get KEY [VALUE] | serve [--listen ADDR:PORT] | "
        "explain TEXT|SCRIPT]",
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
        "explain TEXT|SCRIPT — show the compiled plan and its worst case. "
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

        self.env = env
        self.json: bool = opts.json
        self.verbose: bool = opts.verbose
        self.session = opts.session or env.get("DSH_SESSION") or None
        if self.session is not None and not _SESSION_NAME.fullmatch(self.session):
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
            ("--ssh-config", opts.ssh_config),
            ("--config", opts.config),
            ("--host-keys", opts.host_keys),
        ):
            if value:
                self.passed += [
                    flag,
                    os.path.abspath(value) if flag in ("--ssh-config", "--config") else value,
                ]
        self.ssh_config = Path(opts.ssh_config) if opts.ssh_config else None
        if self.ssh_config is not None and not self.ssh_config.is_file():
            raise UsageError(f"{self.ssh_config}: no such ssh config file")
        path = Path(opts.config) if opts.config else config.default_path(env)
        self.config = config.load(path, required=bool(opts.config or env.get("DSH_CONFIG")))
        self.host_keys: str = opts.host_keys or self.config.ssh.host_keys
        no_color = bool(env.get("NO_COLOR"))
        self.color = not self.json and not no_color and sys.stdout.isatty()


class _Errors:
    """Says errors: a sentence on stderr (a caret for source errors), a traceback
    only with -v, and with --json also an `error` event on stdout."""

    def __init__(self) -> None:
        self.verbose = False
        self.json = False
        #: Standard output failed: the error event is not written there.
        self.stdout_failed = False

    def __call__(self, exc: BaseException, *, internal: bool = False) -> int:
        code = exc.exit_code if isinstance(exc, DshError) else EXIT_INTERNAL
        if isinstance(exc, LangError):
            text = exc.render()
        elif isinstance(exc, DshError):
            text = f"dsh: {exc.message}"
        else:
            hint = "" if self.verbose else " (run with -v for the traceback)"
            text = f"dsh: internal error: {type(exc).__name__}: {exc}{hint}"
        if _stdout_fails():
            self.stdout_failed = True
        if self.verbose and (internal or not isinstance(exc, LangError)):
            traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        if self.json and not self.stdout_failed:
            import json

            event: dict[str, object] = {"event": "error", "message": str(exc), "exit": code}
            if isinstance(exc, LangError):
                event["location"] = exc.span.location()
            try:
                sys.stdout.write(json.dumps(event) + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):  # said on stderr already
                self.stdout_failed = True
                _quiet_stdout()
        return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not isinstance(sys.stdout, _Stdout):
        sys.stdout = _Stdout(sys.stdout)
    errors = _Errors()
    errors.json = "--json" in argv  # until the arguments are parsed
    try:
        opts = _parser().parse_args(argv)
        errors.verbose, errors.json = opts.verbose, opts.json
        return _dispatch(opts, os.environ, errors)
    except DshError as exc:
        return errors(exc)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write("dsh: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # our reader went away (`dsh … | head`): stop quietly
        _quiet_stdout()
        return EXIT_NOT_OK
    except OSError as exc:
        if not _stdout_fails():
            return errors(exc, internal=True)
        # A full disk, a quota, an I/O error under stdout: one sentence, and the
        # status of a closed pipe; nothing more is written to that stdout.
        errors.stdout_failed = True
        _quiet_stdout()
        sys.stderr.write(f"dsh: cannot write standard output: {exc.strerror or exc}\n")
        return EXIT_NOT_OK
    except Exception as exc:  # the last line of defence: a sentence, not a traceback
        return errors(exc, internal=True)
    finally:
        local = sys.modules.get("dsh.remote.local")
        if local is not None:  # whatever ended dsh, no command outlives it
            local.kill_all()


def entry() -> NoReturn:
    """The `dsh` command: `main`, then its output flushed and the process ended
    without tearing the interpreter down. By then `main` has released all it
    holds (sessions, stores, connections, commands); the teardown of some 250
    imported modules would cost 40-60 ms more on every command (a fifth of a
    start-up, `bench.run startup`)."""
    code = main()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # our reader went away, or stdout was closed
        pass
    except OSError:  # as the interpreter does when stdout cannot be flushed at exit
        code = code or 120
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)


class _Stdout:
    """sys.stdout (or its binary buffer), remembering that a write to it failed (a
    full disk, a quota, an I/O error), so that main can tell that failure from
    any other OSError."""

    def __init__(self, inner: Any, text: _Stdout | None = None) -> None:
        self._inner = inner
        self._text = text or self
        self.failed = False
        raw = getattr(inner, "buffer", None)
        self.buffer = _Stdout(raw, self) if text is None and raw is not None else None

    def _failed(self, exc: OSError) -> None:
        self._text.failed = not isinstance(exc, BrokenPipeError)

    def write(self, data: Any) -> int:
        try:
            return int(self._inner.write(data))
        except OSError as exc:
            self._failed(exc)
            raise

    def flush(self) -> None:
        try:
            self._inner.flush()
        except OSError as exc:
            self._failed(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _stdout_fails() -> bool:
    """Whether a write to standard output failed (or what is buffered cannot be flushed)."""
    if isinstance(sys.stdout, _Stdout) and sys.stdout.failed:
        return True
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        return True
    return False


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def _dispatch(opts: argparse.Namespace, env: Mapping[str, str], errors: _Errors) -> int:
    rest: list[str] = opts.rest
    if rest and rest[0] == "--":  # `dsh -- SCRIPT`, `dsh -c TEXT -- ARGS`
        rest = rest[1:]
    settings = Settings(opts, env)
    if opts.text is not None:
        return _run(settings, opts.text, "<-c>", tuple(rest) if rest else None)
    if rest and rest[0] == "explain":
        return _explain(settings, rest[1:])
    if rest and rest[0] == "log":
        return _log(settings, rest[1:])
    if rest and rest[0] == "attach":
        return _attach(settings, errors, rest[1:])
    if rest and rest[0] == "ls":
        return _ls(settings, rest[1:])
    if rest and rest[0] == "kill":
        return _kill(settings, rest[1:])
    if rest and rest[0] == "rm":
        return _rm(settings, rest[1:])
    if rest and rest[0] == "signal":
        return _signal(settings, rest[1:])
    if rest and rest[0] == "key":
        return _key(settings, rest[1:])
    if rest and rest[0] == "serve":
        return _serve(settings, rest[1:])
    if rest and rest[0] == "_executor":  # started by dsh itself (see dsh.daemon)
        return _executor(settings, rest[1:])
    if rest and rest[0] == "run":
        sub = _parser(run=True).parse_args(rest[1:])
        for key, value in vars(sub).items():  # options after `run` win over those before it
            if key not in ("rest", "detach") and value not in (None, False):
                setattr(opts, key, value)
        return _run_command(Settings(opts, env), opts, sub.rest, detach=sub.detach)
    if rest:
        path, args = rest[0], tuple(rest[1:])
        return _run(settings, _read_script(path), path, args)
    return _lines(settings, errors, interactive=sys.stdin.isatty())


def _read_script(path: str) -> str:
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


def _store(settings: Settings) -> Store:
    """The one place that picks the store: `local`, `sqlite:///PATH` or etcd."""
    from dsh.store import open_store

    return open_store(settings.store, settings.env, settings.config.etcd)


def _lease_ttl(settings: Settings) -> float:
    raw = settings.env.get("DSH_LEASE_TTL", "5")
    try:
        ttl = float(raw)
    except ValueError:
        ttl = 0.0
    if not 0.5 <= ttl <= 3600:
        raise UsageError(f"DSH_LEASE_TTL={raw!r}: give the lease TTL in seconds, from 0.5 to 3600")
    return ttl


def _session(settings: Settings, store: Store) -> Session:
    from dsh.runtime.session import Keys, Session, generated_name, machine_id, user_name

    ttl = _lease_ttl(settings)
    keys = Keys(user_name(), settings.session or generated_name())
    named = settings.session is not None
    crash = settings.env.get("DSH_FAULT_CRASH_AFTER", "")  # the crash tests' fault injection
    crash_after = int(crash) if crash.isdigit() else 0
    session = Session(
        store,
        keys,
        machine_id(settings.env),
        lease_ttl=ttl,
        timeout=STORE_TIMEOUT,
        crash_after=crash_after,
        reopen=lambda: _store(settings),
    )
    session.named = named
    return session


def _driver(
    settings: Settings,
    args: tuple[str, ...] | None,
    *,
    stateful: bool = True,
    reporter: Renderer | None = None,
    session: Session | None = None,
) -> Driver:
    """The one place that picks the renderer and the driver (imported late: start-up)."""
    from dsh.driver import Driver
    from dsh.remote.base import Gate, LazyHosts

    renderer = reporter or _renderer(settings)
    if session is None and stateful:
        session = _session(settings, _store(settings))
    if session is not None:  # it runs: the local spool goes in the private state directory
        state.private_dir(_state_dir(settings))
    spool_root = _state_dir(settings) / "spool" / _machine(settings)
    gate = Gate()  # shut when the session's lease is lost: no host is acted on any more
    hosts = LazyHosts(lambda: _fleet(settings, renderer.message, gate))
    log_dir = _state_dir(settings) / "log"
    return Driver(
        settings.config,
        renderer,
        renderer.message,
        spool_root,
        args,
        session,
        hosts,
        log_dir,
        gate,
        sweep_always=settings.env.get("DSH_TEST_SWEEP") == "1",  # the sweep's tests
    )


def _renderer(settings: Settings) -> Renderer:
    from dsh.render import JsonRenderer, TextRenderer

    return JsonRenderer() if settings.json else TextRenderer(color=settings.color)


def _state_dir(settings: Settings) -> Path:
    """Where the private state directory is (dsh.state makes it)."""
    return state.directory(settings.env)


def _machine(settings: Settings) -> str:
    from dsh.runtime.session import machine_id

    return machine_id(settings.env).replace("/", "_")


def _fleet(settings: Settings, warn: Callable[[str], None], gate: Gate) -> Hosts:
    """The one place that picks SSH for hosts (asyncssh is imported here, on first use)."""
    from dsh.remote.ssh import SshFleet
    from dsh.remote.sshconfig import SshConfig

    paths = [settings.ssh_config] if settings.ssh_config else None
    config = SshConfig.load(paths)
    for warning in config.warnings:
        warn(f"ssh config: {warning}")
    return SshFleet(
        config,
        host_keys=settings.host_keys,
        connect_timeout=settings.config.ssh.connect_timeout,
        spool_keep=settings.config.spool.keep,
        warn=warn,
        gate=gate,
    )


def _run(settings: Settings, text: str, name: str, args: tuple[str, ...] | None) -> int:
    from dsh.driver import run_text

    return run_text(_driver(settings, args), text, name)


def _reader(interactive: bool) -> Callable[[str], str | None]:
    """Lines from the terminal (with line editing) or from piped stdin."""
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (line editing for the plain prompt)

    def read(prompt: str) -> str | None:
        if interactive:
            try:
                return input(prompt)
            except EOFError:
                print()
                return None
        line = sys.stdin.readline()
        return None if line == "" else line.rstrip("\n").removesuffix("\r")

    return read


def _lines(settings: Settings, errors: _Errors, *, interactive: bool) -> int:
    """`dsh` alone: at a terminal, a client of the session's executor process (the
    REPL); with lines piped in, they run here, in this process."""
    if interactive:
        return _client(settings, errors, attach=False)
    from dsh.driver import run_lines

    driver = _driver(settings, None)
    return run_lines(driver, _reader(False), "<stdin>", interactive=False, report_error=errors)


def _run_command(settings: Settings, opts: argparse.Namespace, rest: list[str], *, detach: bool) -> int:
    """`dsh run [--detach] SCRIPT [ARGS]`: run a script; detached, in an executor
    process of its own (its own process session, output to a log file), printing
    the session's name once that process owns the session."""
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        raise UsageError("run needs a script: dsh run [--detach] SCRIPT [ARGS…]")
    path, args = rest[0], tuple(rest[1:])
    text = _read_script(path)
    if not detach:
        return _run(settings, text, path, args)
    _driver(settings, args or None, stateful=False).compile(text, path)  # errors now, not in a log
    from dsh.runtime.session import generated_name

    name = settings.session or generated_name()
    return _detach(settings, name, os.path.abspath(path), args)


def _log_path(settings: Settings, name: str) -> Path:
    return state.private_dir(_state_dir(settings), "log") / f"{name}.log"


def _spawn(settings: Settings, name: str, extra: list[str]) -> subprocess.Popen[bytes]:
    """Start the executor process of session `name` (design §4: with subprocess,
    in its own process session, its output to the session's log)."""
    import subprocess

    argv = [sys.executable, "-m", "dsh", "--session", name, *settings.passed, "_executor", *extra]
    with state.open_private(_log_path(settings, name)) as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, close_fds=True
        )


def _detach(settings: Settings, name: str, script: str, args: tuple[str, ...]) -> int:
    import asyncio
    import time

    from dsh.runtime.session import Keys, readable, user_name
    from dsh.session.records import Owner

    log = _log_path(settings, name)
    child = _spawn(settings, name, ["--", script, *args])
    store = _store(settings)
    keys = Keys(user_name(), name)

    async def owned() -> bool:
        try:
            deadline = time.monotonic() + DETACH_TIMEOUT
            while time.monotonic() < deadline and child.poll() is None:
                owner = readable(Owner, await store.get(keys.owner, timeout=STORE_TIMEOUT))
                if owner is not None and owner.pid == child.pid:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            await store.close()

    # A script so short that it finished before we looked has run all the same.
    if not asyncio.run(owned()) and child.poll() not in (EXIT_OK, EXIT_NOT_OK):
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        why = f": {' / '.join(tail)}" if tail else ""
        raise UsageError(f"the executor of session {name!r} did not start{why} (log: {log})")
    print(name)
    return EXIT_OK


def _executor(settings: Settings, rest: list[str]) -> int:
    """The executor process of a session (dsh.daemon): `_executor [--take]
    [--linger S] [--first-client S] [-- SCRIPT ARGS…]`, started by dsh."""
    import asyncio

    from dsh.daemon import Daemon
    from dsh.driver import guarded
    from dsh.render import TextRenderer

    take, linger, first_client, patience, standby_for = False, 0.0, 0.0, 1.0, 0
    script: list[str] = []
    while rest:
        arg = rest.pop(0)
        if arg == "--take":
            take = True
        elif arg == "--standby-for" and rest and rest[0].isdigit():
            standby_for = int(rest.pop(0))
        elif arg in ("--linger", "--first-client", "--patience") and rest:
            value = float(rest.pop(0))
            if arg == "--linger":
                linger = value
            elif arg == "--first-client":
                first_client = value
            else:
                patience = value
        elif arg == "--":
            script = rest
            break
        else:
            raise UsageError(f"_executor: unexpected {arg!r}")
    if settings.session is None:
        raise UsageError("_executor needs --session")
    session = _session(settings, _store(settings))
    daemon = Daemon(session, _state_dir(settings), TextRenderer())
    args = tuple(script[1:]) if script else None
    driver = _driver(settings, args, reporter=daemon.reporter, session=session)
    plan = driver.compile(_read_script(script[0]), script[0]) if script else None

    def wanted() -> bool:  # a standby executor waits only while its client runs
        return not standby_for or os.path.exists(f"/proc/{standby_for}")

    work = daemon.serve(
        driver,
        take=take,
        script=plan,
        linger=linger,
        first_client=first_client,
        patience=patience,
        wanted=wanted,
    )
    return asyncio.run(guarded(work))


def _client(settings: Settings, errors: _Errors, *, attach: bool, handover: bool = False) -> int:
    """The REPL and `dsh attach`: a client of the session's executor process,
    which is started (taking the session over if its owner died) when none runs
    on this machine. At a terminal lines are read by the prompt-toolkit REPL,
    with output printed above the prompt."""
    interactive = sys.stdin.isatty()
    if not interactive:
        return _client_in(settings, attach=attach, interactive=False, handover=handover)
    from prompt_toolkit.patch_stdout import patch_stdout

    with patch_stdout(raw=True):
        return _client_in(settings, attach=attach, interactive=True, handover=handover)


def _client_in(settings: Settings, *, attach: bool, interactive: bool, handover: bool) -> int:
    import json

    from dsh.client import Client, Detach, Link, completeness, output_tail, read_eval
    from dsh.render import timeline
    from dsh.runtime.session import Keys, generated_name, user_name
    from dsh.runtime.wire import Replay

    name = settings.session or generated_name()
    store = _store(settings)
    keys = Keys(user_name(), name)

    def spawn(take: bool, patience: float) -> subprocess.Popen[bytes]:
        taking = ["--take"] if take else []
        if take and patience:  # a standby: it waits for the owner to let go, while this client runs
            taking += ["--patience", f"{patience:g}", "--standby-for", str(os.getpid())]
        return _spawn(settings, name, ["--first-client", "5", *taking])

    link = Link(store, keys, _machine(settings), spawn, _log_path(settings, name), lambda: _store(settings))

    def show_entry(entry: dict[str, Any]) -> None:  # a session followed from another machine
        if settings.json:
            print(json.dumps({"event": "journal", **entry}), flush=True)
        else:
            sys.stdout.write(timeline([entry]) + output_tail(entry.pop("out", "")))
            sys.stdout.flush()

    renderer = _renderer(settings)
    client = Client(link, Replay(renderer, renderer.message), renderer.message, _show_error, show_entry)
    compiler = _driver(settings, None, stateful=False)
    try:
        if attach and client._run(store.get(keys.meta, timeout=STORE_TIMEOUT)) is None:
            raise UsageError(f"no session named {name!r} in {store.name}")
        if attach and not settings.json:
            sys.stdout.write(client.history(timeline))
            sys.stdout.flush()
        client.connect(take=attach, handover=handover)
        complete = completeness(lambda text, first: compiler.compile(text, "<stdin>", first))
        read = _reader(False)
        builtin = None
        if interactive:
            read, builtin = _repl(settings, client, compiler, name)
        try:
            status = read_eval(client, read, complete, "<stdin>", interactive=interactive, builtin=builtin)
        except Detach:
            stays = client.leave()
            going = "its work goes on; " if stays else ""
            renderer.message(f"detached from session {name}: {going}dsh attach {name} to come back")
            return EXIT_OK
        client.leave()
        return status
    finally:
        client.close()


def _repl(
    settings: Settings, client: Any, compiler: Driver, name: str
) -> tuple[Callable[[str], str | None], Callable[[str], str | None]]:
    """The prompt-toolkit REPL's reader and built-ins for a client (dsh.repl)."""
    import asyncio

    from dsh.client import Detach
    from dsh.explain import explain
    from dsh.repl.app import DetachKey, Repl, history_path
    from dsh.repl.completion import Sources
    from dsh.repl.shell import Builtins, Toolbar
    from dsh.runtime.session import list_sessions, user_name

    aliases: list[str] = []

    def hosts() -> list[str]:
        if not aliases:
            from dsh.remote.sshconfig import SshConfig

            paths = [settings.ssh_config] if settings.ssh_config else None
            aliases.extend(SshConfig.load(paths).aliases() or ["-"])
        return [a for a in aliases if a != "-"]

    def refresh() -> None:  # what the session has bound, for checks and completion
        compiler.executor.bindings = client.bindings()

    def sessions() -> list[dict[str, object]]:
        return list(asyncio.run(list_sessions(_store(settings), user_name(), timeout=STORE_TIMEOUT)))

    history = history_path(state.private_dir(_state_dir(settings)), settings.store)
    repl = Repl(
        history=history,
        sources=Sources(
            hosts=hosts,
            groups=lambda: settings.config.groups.keys(),
            bindings=lambda: compiler.executor.bindings.keys(),
            functions=lambda: compiler.functions.keys(),
        ),
        bound=lambda: set(compiler.executor.bindings),
        compile_=lambda text: compiler.compile(text, "<stdin>"),
        toolbar=Toolbar(name, settings.store, _machine(settings), client.progress),
        color=settings.color,
    )
    builtins = Builtins(
        say=lambda text: print(text, flush=True),
        explain=lambda text: explain(compiler.compile(text, "<explain>")),
        hosts=hosts,
        groups=lambda: dict(settings.config.groups),
        sessions=sessions,
        history=history,
    )

    def read(prompt: str) -> str | None:
        refresh()
        try:
            return repl.read(prompt)
        except DetachKey:
            raise Detach from None

    def builtin(text: str) -> str | None:
        try:
            return builtins(text)
        except DshError as exc:
            _show_error(exc.render() if isinstance(exc, LangError) else f"dsh: {exc.message}")
            return "done"

    return read, builtin


def _show_error(text: str) -> None:
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _one_session(rest: list[str], usage: str) -> str:
    names = [a for a in rest if a != "--json"]
    if len(names) != 1 or names[0].startswith("-"):
        raise UsageError(f"{usage} needs one session name: dsh {usage} SESSION")
    if not _SESSION_NAME.fullmatch(names[0]):
        raise UsageError(f"{names[0]!r} cannot name a session")
    return names[0]


def _attach(settings: Settings, errors: _Errors, rest: list[str]) -> int:
    """`dsh attach SESSION`: what happened in it lately, then its live progress and
    lines from the terminal or stdin run in it; taken over first if its owner died."""
    take = "--take" in rest
    settings.session = _one_session([a for a in rest if a != "--take"], "attach")
    return _client(settings, errors, attach=True, handover=take)


def _kill(settings: Settings, rest: list[str]) -> int:
    """`dsh kill SESSION`: stop its work, here or on whatever machine owns it, and
    end the commands it left running on its hosts."""
    import asyncio

    from dsh.driver import guarded

    settings.session = _one_session(rest, "kill")
    driver = _driver(settings, None)

    async def kill() -> int:
        try:
            return await driver.kill()
        finally:
            await driver.release()

    ended = asyncio.run(guarded(kill()))
    if ended:
        driver.say(f"ended {ended} action{'s' if ended != 1 else ''} left running")
    return EXIT_OK


_RM_USAGE = "dsh rm SESSION | dsh rm --older-than D [--dry-run]"


def _rm(settings: Settings, rest: list[str]) -> int:
    """`dsh rm SESSION`: remove a session that does not run, and its spools; `dsh rm
    --older-than D [--dry-run]`: every finished session untouched for D."""
    import asyncio

    from dsh.lang.durations import parse_duration

    args = [a for a in rest if a != "--json"]
    dry_run = _flag(args, "--dry-run")
    older_than: float | None = None
    at = next((i for i, a in enumerate(args) if a.split("=", 1)[0] == "--older-than"), None)
    if at is not None:
        if "=" in args[at]:
            raw = args.pop(at).split("=", 1)[1]
        elif at + 1 < len(args):
            raw = args.pop(at + 1)
            args.pop(at)
        else:
            raise UsageError(f"--older-than needs a duration, like 30d or 12h: {_RM_USAGE}")
        older_than = parse_duration(raw)
        if older_than is None:
            raise UsageError(f"--older-than takes a duration like 30d or 12h, not {raw!r}")
    unknown = [a for a in args if a.startswith("-")]
    if unknown:
        raise UsageError(f"rm: unknown option {unknown[0]!r}: {_RM_USAGE}")
    if older_than is not None:
        if args:
            raise UsageError(f"rm takes a session or --older-than D, not both: {_RM_USAGE}")
        return _rm_older(settings, older_than, dry_run)
    if dry_run:
        raise UsageError(f"--dry-run goes with --older-than D: {_RM_USAGE}")
    if len(args) != 1:
        raise UsageError(f"rm needs one session name, or --older-than D: {_RM_USAGE}")
    settings.session = _one_session(args, "rm")
    driver = _driver(settings, None)

    async def remove() -> list[str]:
        try:
            return await driver.remove()
        finally:
            await driver.release()

    failed = asyncio.run(remove())
    if failed:
        driver.say(f"removed; the spools on {', '.join(failed)} could not be reached and stay")
        return EXIT_NOT_OK
    return EXIT_OK


def _rm_older(settings: Settings, older_than: float, dry_run: bool) -> int:
    """`dsh rm --older-than D [--dry-run]`: remove (or, dry, list) every finished
    session of the user untouched for D, with its callbacks and its spools here
    and on its hosts; one in use meanwhile is left and named (status 1)."""
    import asyncio
    import json
    import time

    from dsh.housekeeping import Keep, Swept, expired, remove_expired
    from dsh.lang.durations import format_duration
    from dsh.runtime.session import Keys, Session, list_sessions, machine_id, user_name

    store = _store(settings)
    driver = _driver(settings, None, stateful=False)  # this machine's spool, and the hosts
    user, machine, ttl = user_name(), machine_id(settings.env), _lease_ttl(settings)
    keep = Keep(older_than, older_than)

    def make(name: str) -> Session:
        return Session(store, Keys(user, name), machine, lease_ttl=ttl, timeout=STORE_TIMEOUT)

    async def work() -> list[str] | Swept:
        try:
            now = time.time()
            entries = await list_sessions(store, user, timeout=STORE_TIMEOUT)
            if dry_run:
                return [str(e["name"]) for e in expired(entries, keep, now)]
            local, hosts = driver.executor.local, driver.executor.host_remote
            return await remove_expired(entries, keep, now, make, local, hosts)
        finally:
            try:
                await driver.release()
            finally:
                await store.close()

    done = asyncio.run(work())
    if isinstance(done, list):
        if settings.json:
            print(json.dumps({"would_remove": done}))
        elif done:
            print(f"would remove {_sessions(len(done))}: {', '.join(done)}")
        else:
            print(f"no finished session untouched for {format_duration(older_than)}")
        return EXIT_OK
    if settings.json:
        unreached = {name: list(hosts) for name, hosts in done.unreached}
        print(json.dumps({"removed": [*done.removed], "in_use": [*done.in_use], "unreached": unreached}))
    elif done.removed:
        print(f"removed {_sessions(len(done.removed))}: {', '.join(done.removed)}")
    elif done.error is None:
        print(f"no finished session untouched for {format_duration(older_than)}")
    if done.in_use:
        driver.say(f"left {_sessions(len(done.in_use))} in use meanwhile: {', '.join(done.in_use)}")
    for name, hosts in done.unreached:
        driver.say(f"{name}: the spools on {', '.join(hosts)} could not be reached and stay")
    if done.error is not None:
        raise done.error
    return EXIT_NOT_OK if done.in_use or done.unreached else EXIT_OK


def _sessions(count: int) -> str:
    return f"{count} session{'s' if count != 1 else ''}"


def _signal(settings: Settings, rest: list[str]) -> int:
    """`dsh signal SESSION NAME [VALUE]`: send a durable signal; the first `await
    signal NAME` of the session that looks takes it (now, or once it runs)."""
    import asyncio
    import time

    from dsh.bytestext import to_bytes
    from dsh.names import SIGNAL_NAME
    from dsh.runtime.session import Keys, user_name

    if len(rest) not in (2, 3):
        raise UsageError("signal needs a session and a name: dsh signal SESSION NAME [VALUE]")
    name, signal, value = rest[0], rest[1], rest[2] if len(rest) == 3 else ""
    if not _SESSION_NAME.fullmatch(name):
        raise UsageError(f"{name!r} cannot name a session")
    if not SIGNAL_NAME.fullmatch(signal):
        raise UsageError(f"{signal!r} cannot name a signal (letters, digits, '.', '_', '-')")
    store = _store(settings)
    keys = Keys(user_name(), name)

    async def send() -> None:
        try:
            if await store.get(keys.meta, timeout=STORE_TIMEOUT) is None:
                raise UsageError(f"no session named {name!r} in {store.name}")
            seq = b"%020d-%s" % (time.time_ns(), os.urandom(3).hex().encode())
            await store.put(keys.signals(signal) + seq, to_bytes(value), timeout=STORE_TIMEOUT)
        finally:
            await store.close()

    asyncio.run(send())
    return EXIT_OK


def _key(settings: Settings, rest: list[str]) -> int:
    """`dsh key put KEY VALUE` / `dsh key get KEY`: keys of the user's in the store,
    which `await key` waits for. `get` of a key not set is status 1."""
    import asyncio

    from dsh.bytestext import to_bytes
    from dsh.names import key_problem
    from dsh.runtime.session import Keys, user_name

    usage = "dsh key put KEY VALUE | dsh key get KEY"
    if not rest or rest[0] not in ("put", "get") or len(rest) != (3 if rest[0] == "put" else 2):
        raise UsageError(f"key takes: {usage}")
    key = rest[1]
    problem = key_problem(key)  # the rule of `await key` too
    if problem:
        raise UsageError(problem)
    store = _store(settings)
    where = Keys(user_name(), "-").user_key(key)

    async def act() -> int:
        try:
            if rest[0] == "put":
                await store.put(where, to_bytes(rest[2]), timeout=STORE_TIMEOUT)
                return EXIT_OK
            held = await store.get(where, timeout=STORE_TIMEOUT)
        finally:
            await store.close()
        if held is None:
            sys.stderr.write(f"dsh: key {key} is not set\n")
            return EXIT_NOT_OK
        sys.stdout.flush()
        sys.stdout.buffer.write(held.value + b"\n")  # the bytes as they were put
        sys.stdout.flush()
        return EXIT_OK

    return asyncio.run(act())


def _serve(settings: Settings, rest: list[str]) -> int:
    """`dsh serve [--listen ADDR:PORT] [--public-url URL] [--cert F --key F]
    [--header-timeout D] [--body-timeout D] [--max-connections N]`: take the POSTs
    of callbacks and write them into the store, until stopped."""
    import asyncio
    import signal

    from dsh import serve

    found = serve.options(list(rest))
    host, port = serve.parse_listen(found["listen"])
    tls = serve.tls_context(found["cert"], found["key"])
    store = _store(settings)
    server = serve.Server(
        store, host=host, port=port, public_url=found["public_url"], tls=tls, limits=found["limits"]
    )

    async def run() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(server.run())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            return EXIT_OK
        except OSError as exc:
            raise UsageError(f"dsh serve cannot listen on {host}:{port}: {exc.strerror}") from None
        finally:
            await store.close()
        return EXIT_OK

    return asyncio.run(run())


def _ls(settings: Settings, rest: list[str]) -> int:
    """`dsh ls [--all] [--json]`: the user's sessions, newest first; the ones dsh
    named for a single `dsh -c` or script only with --all, or while they run or
    are unfinished."""
    import asyncio
    import json
    import time

    from dsh.runtime.session import list_sessions, user_name

    as_json = settings.json or "--json" in rest
    every = "--all" in rest
    if [a for a in rest if a not in ("--json", "--all")]:
        raise UsageError("ls takes no arguments but --all and --json")
    store = _store(settings)

    async def read() -> list[dict[str, object]]:
        try:
            return await list_sessions(store, user_name(), timeout=STORE_TIMEOUT)
        finally:
            await store.close()

    sessions = [e for e in asyncio.run(read()) if every or e.get("named", True) or e["state"] != "idle"]
    if as_json:
        for entry in sessions:
            print(json.dumps(entry, ensure_ascii=False))
        return EXIT_OK
    now = time.time()
    for e in sessions:
        owner = f"{e['owner_machine']} pid {e['owner_pid']}" if e["state"] == "running" else "-"
        age = now - float(str(e["created"]))
        print(f"{e['name']:<32} {e['state']:<8} {owner:<28} {_age(age):>6}  {e['last_line'] or ''}")
    return EXIT_OK


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _explain(settings: Settings, rest: list[str]) -> int:
    from dsh.explain import explain

    if not rest:
        raise UsageError("explain needs a line or a script: dsh explain '@web[1-4] uptime'")
    what, args = rest[0], tuple(rest[1:])
    script_args: tuple[str, ...] | None = args or None
    try:
        is_file = Path(what).is_file()
    except OSError:  # e.g. a line too long to be a file name
        is_file = False
    if is_file:
        text, name, script_args = _read_script(what), what, args
    else:
        text, name = what, "<explain>"
    plan = _driver(settings, script_args, stateful=False).compile(text, name)
    if settings.json:
        from dsh.plan import dumps

        print(dumps(plan))
    else:
        print(explain(plan))
    return EXIT_OK


def _log(settings: Settings, rest: list[str]) -> int:
    """`dsh log SESSION [-f] [--json] [--output ACTION HOST]`: the journal of a
    session as a timeline (or JSON lines), followed with -f until its work is
    over; or the whole output of one action, fetched from its host's spool."""
    import asyncio
    import json

    from dsh.runtime.session import Keys, read_journal, user_name

    args = list(rest)
    as_json = settings.json or _flag(args, "--json")
    follow = _flag(args, "-f") or _flag(args, "--follow")
    output: tuple[str, str] | None = None
    if "--output" in args:
        at = args.index("--output")
        if len(args) < at + 3:
            raise UsageError("--output needs an action and a host: dsh log SESSION --output 3.1.1 web1")
        output = (args[at + 1], args[at + 2])
        del args[at : at + 3]
        from dsh import nodeset

        if not re.fullmatch(r"[0-9]+(\.[0-9]+)+", output[0]):
            raise UsageError(f"{output[0]!r} is not an action (like 3.1.1; dsh log SESSION shows them)")
        if output[1] != "-" and not nodeset.is_alias(output[1]):
            raise UsageError(f"{output[1]!r} cannot name a host (or `-` for this machine)")
    if len(args) != 1 or args[0].startswith("-"):
        raise UsageError("log needs one session name: dsh log SESSION [-f] [--json] [--output ACTION HOST]")
    name = args[0]
    if not _SESSION_NAME.fullmatch(name):
        raise UsageError(f"{name!r} cannot name a session")
    if output is not None:
        settings.session = name
        return _log_output(settings, *output)
    store = _store(settings)
    keys = Keys(user_name(), name)

    def show(entries: list[dict[str, object]]) -> None:
        if as_json:
            for entry in entries:
                print(json.dumps(entry, ensure_ascii=False), flush=True)
        else:
            from dsh.render import timeline

            print(timeline(entries), end="", flush=True)

    async def read() -> None:
        try:
            if await store.get(keys.meta, timeout=STORE_TIMEOUT) is None:
                raise UsageError(f"no session named {name!r} in {store.name}")
            seen = 0
            while True:
                entries = await read_journal(store, keys, timeout=STORE_TIMEOUT)
                show(entries[seen:])
                seen = len(entries)
                if not follow or await store.get(keys.owner, timeout=STORE_TIMEOUT) is None:
                    return  # with -f: until nobody runs the session's work
                await asyncio.sleep(FOLLOW_POLL)
        finally:
            await store.close()

    from dsh.driver import guarded

    asyncio.run(guarded(read()))
    return EXIT_OK


def _flag(args: list[str], flag: str) -> bool:
    if flag in args:
        args.remove(flag)
        return True
    return False


def _log_output(settings: Settings, action: str, host: str) -> int:
    """The stdout and stderr of one action (as the host's spool holds them), and its
    exit status as dsh's: 0 when it ended ok."""
    import asyncio

    from dsh.remote.base import Spot
    from dsh.runtime.executor import LOCAL_ALIAS

    driver = _driver(settings, None)
    session = driver.session
    assert session is not None

    def write(stream: str, data: bytes) -> None:
        target = sys.stdout if stream == "stdout" else sys.stderr
        target.flush()
        target.buffer.write(data)
        target.buffer.flush()

    async def fetch() -> int:
        try:
            meta = await session.store.get(session.keys.meta, timeout=STORE_TIMEOUT)
            if meta is None:
                raise UsageError(f"no session named {session.keys.name!r}")
            from dsh.session.codec import loads
            from dsh.session.records import Meta

            spool_name = f"{session.keys.name}.{loads(Meta, meta.value, key=meta.key).id}"
            local = host in ("-", LOCAL_ALIAS)
            make = driver.executor.host_remote
            remote = driver.executor.local if local or make is None else make(host)
            spot = Spot(spool_name, action, LOCAL_ALIAS if local else host)
            ended = await remote.follow(spot, timeout=OUTPUT_TIMEOUT, output=write)
            if ended.outcome != "ok":
                driver.say(
                    f"{action} on {host}: {ended.outcome}" + (f": {ended.message}" if ended.message else "")
                )
            return EXIT_OK if ended.outcome == "ok" else EXIT_NOT_OK
        finally:
            await driver.release()

    from dsh.driver import guarded

    return asyncio.run(guarded(fetch()))

"""Running text here: `dsh -c TEXT`, `dsh SCRIPT`, `dsh run [--detach] SCRIPT`
(detached: in an executor process of its own), and lines piped to `dsh`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable

from dsh.cli.args import Settings, parser, read_script
from dsh.cli.report import Errors
from dsh.cli.wiring import STORE_TIMEOUT, Wiring
from dsh.errors import UsageError
from dsh.exits import Exit

#: How long `run --detach` waits for its executor to own the session.
DETACH_TIMEOUT = 15.0


def text(wiring: Wiring, text: str, name: str, args: tuple[str, ...] | None) -> int:
    """Compile `text` whole, then run it in the session."""
    from dsh.inprocess import OwnStdin, run_text

    wiring.strict_inventory = True
    return run_text(wiring.driver(args, own_input=OwnStdin(sys.stdin.buffer)), text, name)


def script(wiring: Wiring, rest: list[str]) -> int:
    """`dsh SCRIPT [ARGS…]`."""
    path, args = rest[0], tuple(rest[1:])
    return text(wiring, read_script(path), path, args)


def command(wiring: Wiring, rest: list[str]) -> int:
    """`dsh run [OPTIONS] [--detach] SCRIPT [ARGS]`: run a script; detached, in an
    executor process of its own (its own process session, output to a log file),
    printing the session's name once that process owns the session. Options
    after `run` win over those before it."""
    opts, env = wiring.settings.opts, wiring.settings.env
    sub = parser(run=True).parse_args(rest)
    for key, value in vars(sub).items():
        if key not in ("rest", "detach") and value not in (None, False):
            setattr(opts, key, value)
    wiring = Wiring(Settings(opts, env))
    rest = sub.rest
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest:
        raise UsageError("run needs a script: dsh run [--detach] SCRIPT [ARGS…]")
    path, args = rest[0], tuple(rest[1:])
    source = read_script(path)
    if not sub.detach:
        return text(wiring, source, path, args)
    wiring.driver(args or None, stateful=False).compile(source, path)  # errors now, not in a log
    from dsh.session.keys import generated_name

    name = wiring.settings.session or generated_name()
    return _detach(wiring, name, os.path.abspath(path), args)


def _detach(wiring: Wiring, name: str, script: str, args: tuple[str, ...]) -> int:
    import asyncio
    import time

    from dsh.session.codec import readable
    from dsh.session.records import Owner

    log = wiring.log_path(name)
    child = wiring.spawn(name, ["--", script, *args])
    store = wiring.store()
    keys = wiring.keys(name)

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
    if not asyncio.run(owned()) and child.poll() not in (Exit.OK, Exit.NOT_OK):
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        why = f": {' / '.join(tail)}" if tail else ""
        raise UsageError(f"the executor of session {name!r} did not start{why} (log: {log})")
    print(name)
    return Exit.OK


def reader(interactive: bool) -> Callable[[str], str | None]:
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


def lines(wiring: Wiring, errors: Errors) -> int:
    """`dsh` with lines piped in: they run here, in this process, a statement at a
    time; the first error ends it."""
    from dsh.inprocess import run_lines

    wiring.strict_inventory = True
    driver = wiring.driver(None)
    return run_lines(driver, reader(False), "<stdin>", interactive=False, report_error=errors)

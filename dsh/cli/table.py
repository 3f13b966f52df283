"""The subcommand table (asyncssh's `_packet_handlers` habit: a name to its
handler) and the dispatch of a parsed command line: `-c TEXT`, a subcommand,
a script, or lines (the prompt at a terminal)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Mapping
from typing import cast

from dsh.cli import run
from dsh.cli.args import Settings
from dsh.cli.report import Errors
from dsh.cli.wiring import Wiring

#: A subcommand: the arguments after its name in, the exit status out.
Handler = Callable[[Wiring, list[str]], int]

#: Every subcommand, as the module of dsh.cli and the function that handle it
#: (imported when it is run: `dsh -c` pays for none of them); the ones whose name
#: starts with `_` are dsh's own (hidden: not in the usage, the manual page or the
#: completions).
COMMANDS: dict[str, tuple[str, str]] = {
    "explain": ("explain", "explain"),
    "log": ("log", "log"),
    "attach": ("attach", "attach"),
    "ls": ("sessions", "ls"),
    "run": ("run", "command"),
    "kill": ("sessions", "kill"),
    "rm": ("sessions", "rm"),
    "signal": ("sessions", "signal"),
    "key": ("key", "key"),
    "serve": ("serve", "serve"),
    "admin": ("admin", "admin"),
    "approve": ("approve", "approve"),
    "_executor": ("executor", "executor"),  # started by dsh itself (see dsh.daemon)
}


def handler(name: str) -> Handler:
    """The handler of subcommand `name` (a KeyError for one that is not)."""
    module, function = COMMANDS[name]
    return cast(Handler, getattr(importlib.import_module(f"dsh.cli.{module}"), function))


def dispatch(opts: argparse.Namespace, env: Mapping[str, str], errors: Errors) -> int:
    """Run what the parsed command line asks for; its exit status. Subcommand
    names win over file names: `./explain` runs a file named explain."""
    rest: list[str] = opts.rest
    if rest and rest[0] == "--":  # `dsh -- SCRIPT`, `dsh -c TEXT -- ARGS`
        rest = rest[1:]
    wiring = Wiring(Settings(opts, env))
    if opts.text is not None:
        return run.text(wiring, opts.text, "<-c>", tuple(rest) if rest else None)
    if rest and rest[0] in COMMANDS:
        return handler(rest[0])(wiring, rest[1:])
    if rest:
        return run.script(wiring, rest)
    if sys.stdin.isatty():  # the prompt: a client of the session's executor process
        from dsh.cli import attach

        return attach.client(wiring, attach=False)
    return run.lines(wiring, errors)

"""The command line: `main` parses the arguments, runs what they ask for (the
subcommand table, dsh.cli.table) and maps errors to exit statuses (dsh.exits).

    dsh [OPTIONS]                      the REPL (or lines from stdin when it is not a tty)
    dsh [OPTIONS] -c TEXT [ARGS…]      run TEXT
    dsh [OPTIONS] SCRIPT [ARGS…]       run a script (what follows SCRIPT is the script's)
    dsh [OPTIONS] explain TEXT|SCRIPT [ARGS…]

Subcommand names win over file names: `./explain` runs a file named explain.

The package: args.py (the parser, Settings), table.py (the subcommands and the
dispatch), wiring.py (the one place that picks concrete classes), report.py
(errors said and mapped to a status), and a module per subcommand or family.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from dsh.cli.args import parser
from dsh.cli.report import Errors, Stdout, quiet_stdout, stdout_fails
from dsh.cli.table import dispatch
from dsh.errors import DshError
from dsh.exits import Exit


def main(argv: Sequence[str] | None = None) -> int:
    """Run dsh with `argv` (the process's arguments by default); its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not isinstance(sys.stdout, Stdout):
        sys.stdout = Stdout(sys.stdout)
    errors = Errors()
    errors.json = "--json" in argv  # until the arguments are parsed
    try:
        opts = parser().parse_args(argv)
        errors.verbose, errors.json = opts.verbose, opts.json
        return dispatch(opts, os.environ, errors)
    except DshError as exc:
        return errors(exc)
    except KeyboardInterrupt:
        sys.stdout.flush()
        sys.stderr.write("dsh: interrupted\n")
        return Exit.INTERRUPTED
    except BrokenPipeError:  # our reader went away (`dsh … | head`): stop quietly
        quiet_stdout()
        return Exit.NOT_OK
    except OSError as exc:
        if not stdout_fails():
            return errors(exc, internal=True)
        # A full disk, a quota, an I/O error under stdout: one sentence, and the
        # status of a closed pipe; nothing more is written to that stdout.
        errors.stdout_failed = True
        quiet_stdout()
        sys.stderr.write(f"dsh: cannot write standard output: {exc.strerror or exc}\n")
        return Exit.NOT_OK
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
        code = code or Exit.UNFLUSHED
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    os._exit(code)

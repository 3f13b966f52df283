"""The prompt's and `dsh attach`'s reading loop: statements read, run in the session.

`read_eval` reads lines — from the prompt at a terminal, else from standard
input (dsh.repl.lines, on the client's event loop) — gathers them into whole
statements (dsh.repl.statements, the reader the in-process driver uses too),
offers each to the REPL's built-ins, and submits the others to the session
through its client (dsh.client), showing what each does.

Keys and signals, as a user meets them:

- Ctrl-C at the prompt drops the text typed; while a line runs it asks the
  executor to cancel the line (Client.submit);
- Ctrl-\\ at the prompt (a key of the REPL) or SIGQUIT while a line runs (the
  same key with the terminal in its usual mode), or the word `detach`, end the
  client with Detach and leave the work running;
- Ctrl-D at a terminal while the session works asks whether to detach or to
  cancel it; at the end of input the client waits for the session's work;
- SIGHUP (the terminal closed) ends the client at once, as its default does:
  the executor, in a process session of its own, goes on;
- the session ending (killed, its lease lost, its executor gone) or its owner
  going (a follower takes it over) ends the wait for a line (`Woken`), and the
  client acts on it before it reads again.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from dsh.errors import IncompleteInput, LangError, UsageError
from dsh.exits import Exit
from dsh.repl.lines import Detach, Dropped, StdinLines, Woken
from dsh.repl.statements import Statements, whole_when

if TYPE_CHECKING:
    from dsh.client import Client

#: What Ctrl-D asks at a terminal while the session's work runs.
DETACH_OR_CANCEL = "work is running in this session: [d]etach or [c]ancel it? "


def read_eval(
    client: Client,
    read: Callable[[str], Awaitable[str | None]] | None,
    complete: Callable[[str, int], bool],
    name: str,
    *,
    interactive: bool,
    builtin: Callable[[str], str | None] | None = None,
) -> int:
    """Read lines, submit each complete statement, show what it does.

    Interactive, `read(prompt)` reads a line (or a whole statement) at the
    prompt (an awaitable of it, or of None at Ctrl-D), run on the client's
    loop; errors and failures are shown and reading goes on.
    Otherwise lines come from standard input, read on the client's loop (`read`
    is not called: None will do), and the first line not ok ends the reading
    with its status.
    `complete(text, first_line)` says whether text is a whole statement. At the
    end of input, the client waits for the session's work to be over and
    returns its status (a line's, else whatever the session was running)."""
    statements = Statements(whole_when(complete))
    stdin = None if interactive else StdinLines()
    ran = False
    status: int = Exit.OK

    def next_line(prompt: str) -> str | None:
        if stdin is not None:
            return client.read_line(stdin.read())
        assert read is not None, "a prompt needs a reader"
        try:
            line: str | None = client.read_line(read(prompt))
            return line
        except Dropped:
            raise KeyboardInterrupt from None

    with client.on_signal(signal.SIGQUIT, Detach):
        while True:
            client.drain()
            try:
                line = next_line(statements.prompt)
            except Woken:
                continue  # the session ended, or its owner went: drain() acts on it
            except KeyboardInterrupt:
                if not interactive:
                    raise
                statements.drop()
                print()
                continue
            if line is None:
                if interactive and client.busy():  # Ctrl-D while the session works: which?
                    try:
                        answer = next_line(DETACH_OR_CANCEL)
                    except Woken:
                        continue
                    if answer is None or not answer.strip().lower().startswith("c"):
                        raise Detach
                    client.cancel_all()
                break
            if not statements.lines and line.strip() == "detach":
                raise Detach
            whole = statements.feed(line)
            if whole is None or whole.blank:
                continue
            done = builtin(whole.text) if builtin is not None else None
            if done == "exit":
                break
            if done is not None:
                continue
            got = client.submit(whole.text, name, whole.first_line)
            if got is None:
                continue
            ran, status = True, got
            if status and not interactive:
                return status
        rest = statements.rest()
        if rest is not None:
            got = client.submit(rest.text, name, rest.first_line)  # its error, shown
            return got if got is not None else Exit.USAGE
        idle = client.wait_idle()
        return status if ran else idle


def completeness(compile_: Callable[[str, int], object]) -> Callable[[str, int], bool]:
    """Whether text is a whole statement (else the reader continues it): what the
    local compile says, without its other errors (the executor reports them)."""

    def complete(text: str, first_line: int) -> bool:
        try:
            compile_(text, first_line)
        except IncompleteInput:
            return False
        except (LangError, UsageError):
            return True
        return True

    return complete

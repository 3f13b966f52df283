"""dsh's exit statuses (design §6): the one place they are defined.

man/dsh.1 lists every member under EXIT STATUS (tests/cli/test_docs.py checks
it); the command line, the driver, the executor process and the errors'
`exit_code` attributes use these names, never the numbers.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """The status dsh exits with."""

    #: Every final outcome was ok.
    OK = 0
    #: Some final outcome was not ok (or standard output could not be written).
    NOT_OK = 1
    #: A usage or configuration error, or a compile error.
    USAGE = 2
    #: The store was unreachable, or the session's lease was lost.
    STORE = 3
    #: `dsh kill` stopped the session's work.
    KILLED = 4
    #: A bug in dsh itself ("internal error").
    BUG = 70
    #: Standard output could not be flushed once all was done (as Python says it).
    UNFLUSHED = 120
    #: Stopped by a signal: 128 plus its number (`signalled`).
    HANGUP = 128 + 1
    INTERRUPTED = 128 + 2
    TERMINATED = 128 + 15


def signalled(signum: int) -> int:
    """The status of a dsh that signal `signum` stopped: 128 plus its number."""
    return 128 + signum

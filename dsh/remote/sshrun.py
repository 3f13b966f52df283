"""One short exec of the wrapper's shell over an SSH connection, its script on stdin.

`conn.run(shell, input=script)` writes the script after the channel opens; a login
shell that exits at once (a broken ~/.bashrc, `exit 1` in a forced command) may have
closed the channel by then, and asyncssh's write raises BrokenPipeError. That is not
a lost connection: the exit status the shell sent says what happened, and the
callers read it (`spool.unwrap`/`spool.answer` tell "the login shell exited N").

This is where dsh imports asyncssh (the other remote modules take it from here), so
that the filter below is in place when it does.
"""

from __future__ import annotations

import warnings

from cryptography.utils import CryptographyDeprecationWarning

from dsh.remote import spool

__all__ = ["asyncssh", "run_script"]

# asyncssh touches cryptography's deprecated DSA names when it is imported (and again when
# it meets a DSA key): cryptography >= 51 warns on each, about ten lines on every dsh that
# reaches a host. That is a library's deprecation, nothing a dsh user can act on, so
# exactly that category is silenced, and only where asyncssh's own modules raise it;
# every other warning still shows (tests/remote/test_ssh_warnings.py).
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning, module=r"asyncssh(\.|$)")


import asyncssh  # noqa: E402  (after the filter, which must be in place when it imports)


async def run_script(
    conn: asyncssh.SSHClientConnection, script: str | bytes, *, timeout: float | None = None
) -> asyncssh.SSHCompletedProcess:
    """The shell's ended process (bytes out for a bytes script, text for text); the
    script is written unless the channel has already closed. TimeoutError past
    `timeout` (asyncssh's, a subclass), asyncssh.Error/OSError if the connection fails."""
    process = await conn.create_process(
        spool.REMOTE_SHELL, encoding=None if isinstance(script, bytes) else "utf-8"
    )
    try:
        process.stdin.write(script)
        process.stdin.write_eof()
    except BrokenPipeError:  # the shell ended first: its exit status says so
        pass
    return await process.wait(timeout=timeout)

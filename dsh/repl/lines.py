"""Where a client's lines come from, read on its event loop (no thread).

A client of an executor process (dsh.client) runs one event loop, and reads
its input on it, so that what else the loop does while it waits — the
executor's live output shown, the session ending — goes on:

- `StdinLines` reads standard input when it is not a terminal (a pipe, a file,
  /dev/null) a line at a time: the loop waits for a pipe to be readable; a
  file, which never makes a read wait, is read at once.
- at a terminal the prompt reads (dsh.repl.app.Repl, prompt-toolkit's
  `prompt_async`), awaited on the client's loop.

Reading ends with None at the end of input, with `Detach` when the user
leaves the session running (Ctrl-\\ at the prompt, or `detach`), and with
`Woken` when the client's wait was ended by the session (it ended, or its
owner went).
"""

from __future__ import annotations

import asyncio
import codecs
import os
import sys

#: Bytes read from standard input at a time.
CHUNK = 65536


class Detach(Exception):
    """The user asked to leave the session running (Ctrl-\\ or `detach`)."""


class Woken(Exception):
    """A wait for a line ended because the session ended or its owner went: the
    client acts on it, then reads again."""


class Dropped(Exception):
    """Ctrl-C at the prompt: the text typed is dropped (a blocking reader raises
    KeyboardInterrupt instead, as prompt-toolkit's `prompt` does)."""


class StdinLines:
    """The lines of a standard input that is not a terminal, read on the running loop."""

    def __init__(self, fd: int = 0) -> None:
        self.fd = fd
        stdin = sys.stdin
        encoding = getattr(stdin, "encoding", None) or "utf-8"
        errors = getattr(stdin, "errors", None) or "strict"
        self._decoder = codecs.getincrementaldecoder(encoding)(errors)
        self._pending = ""
        self._ended = False
        #: Whether the loop can wait for the input to be readable (a pipe, a socket);
        #: a file or /dev/null cannot be waited for, and never makes a read wait.
        self._pollable = True

    async def read(self) -> str | None:
        """The next line, without its line end; None at the end of the input."""
        while "\n" not in self._pending and not self._ended:
            data = await self._chunk()
            if not data:
                self._ended = True
            self._pending += self._decoder.decode(data, final=not data)
        if not self._pending:
            return None
        line, _, self._pending = self._pending.partition("\n")
        return line.removesuffix("\r")

    async def _chunk(self) -> bytes:
        if self._pollable:
            loop = asyncio.get_running_loop()
            ready = loop.create_future()

            def readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            try:
                loop.add_reader(self.fd, readable)
            except OSError:  # epoll refuses a regular file (EPERM): it is read at once
                self._pollable = False
            else:
                try:
                    await ready  # input: as long as the user takes (the client ends it when it must)
                finally:
                    loop.remove_reader(self.fd)
        try:
            return os.read(self.fd, CHUNK)
        except OSError:  # the input went away (EIO): its end
            return b""

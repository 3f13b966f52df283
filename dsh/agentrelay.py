"""An executor's ssh-agent: the agent of the client attached now (issue 18).

A detached executor outlives the terminal it came from, and its hosts are
reached over connections that last for the session. ForwardAgent (and -A) must
forward the agent of whoever is attached now, not the one the executor was
started with. So the executor listens on a socket of its own (private, beside
its control socket) and sets SSH_AUTH_SOCK to it, for the SSH connections it
makes (authentication and forwarding) and its local commands; each connection
to it is relayed to the agent of the client attached most recently that told
one (`agent` on the protocol: its SSH_AUTH_SOCK). A path is used only if it is
a socket that this user owns. With no client attached that has an agent, a
connection is closed at once and the journal says so (once until a client
with an agent comes): the host runs without one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

#: Bytes read at a time while relaying.
_CHUNK = 65536
#: How long connecting to a client's agent may take.
_CONNECT = 5.0


def usable_agent(path: str | None) -> bool:
    """Whether `path` is an agent socket this user owns (another user could have made
    any other, to read what is signed through it)."""
    if not path:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISSOCK(st.st_mode) and st.st_uid == os.geteuid()


class AgentRelay:
    """The executor's agent socket, relayed to an attached client's agent."""

    def __init__(self, path: Path, note: Callable[[str], None]) -> None:
        self.path = path
        self.note = note
        #: Attached clients' agents, oldest first (by the client's key).
        self._agents: dict[object, str] = {}
        self._server: asyncio.AbstractServer | None = None
        self._said = False
        self._relays: set[asyncio.Task[None]] = set()

    async def start(self) -> str | None:
        """Listen (0600) and make this process's SSH_AUTH_SOCK the relay; None, or why
        it cannot (hosts then get the agent this process was started with, if any)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        mask = os.umask(0o077)
        try:
            self._server = await asyncio.start_unix_server(self._relay, path=str(self.path))
        except OSError as exc:
            return f"ssh agent relay: cannot listen on {self.path}: {exc.strerror or exc}"
        finally:
            os.umask(mask)
        os.environ["SSH_AUTH_SOCK"] = str(self.path)
        return None

    def attach(self, client: object, path: str | None) -> None:
        """A client told its agent (None, or one not its user's: none)."""
        self._agents.pop(client, None)
        if usable_agent(path):
            assert path is not None
            self._agents[client] = path
            self._said = False

    def detach(self, client: object) -> None:
        self._agents.pop(client, None)

    def current(self) -> str | None:
        """The agent of the client attached most recently that has one."""
        for path in reversed(list(self._agents.values())):
            if usable_agent(path):
                return path
        return None

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._relays.add(task)
        try:
            path = self.current()
            if path is None:
                if not self._said:
                    self._said = True
                    self.note(
                        "ssh agent: no attached client has an agent; the hosts asked for it "
                        "(ForwardAgent) get none until one attaches"
                    )
                return
            try:
                far_reader, far_writer = await asyncio.wait_for(asyncio.open_unix_connection(path), _CONNECT)
            except (OSError, TimeoutError):
                return
            try:
                await asyncio.gather(_pump(reader, far_writer), _pump(far_reader, writer))
            finally:
                far_writer.close()
        finally:
            writer.close()
            if task is not None:
                self._relays.discard(task)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, ConnectionError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

"""A host agent's link over SSH: the boot's exec (`sh -s`, kept open) on a
connection, its stdout and stderr to the link (dsh.remote.hostlink).

Apart from hostlink so that a local agent's link (dsh -c's) never imports asyncssh.
"""

from __future__ import annotations

import asyncio

from dsh.remote import hostboot, spool
from dsh.remote.hostlink import KEEP_ERR, HostLink
from dsh.remote.sshrun import asyncssh


class _Channel(asyncssh.SSHClientSession[bytes]):
    """The boot's hello, then frames, to its link."""

    def __init__(self, link: HostLink) -> None:
        self.link = link

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            if not self.link.hello0.done():  # the login shell's, before the boot said hello
                self.link.dropped += len(data)
                return
            self.link.stderr = (self.link.stderr + data)[-KEEP_ERR:]
            return
        self.link.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.lost(f"its channel closed ({exc})" if exc else "its channel closed")


async def start(conn: asyncssh.SSHClientConnection, *, timeout: float) -> HostLink:
    """Boot an agent on `conn` within `timeout` seconds; LinkLost (with why) when the
    host has none to run (no python3, too old) or it did not come up."""
    argv = hostboot.boot_argv()
    link = HostLink(spool.tag_of(argv))

    async def channel() -> None:
        try:
            chan, _ = await asyncio.wait_for(
                conn.create_session(lambda: _Channel(link), spool.REMOTE_SHELL, encoding=None), timeout
            )
        except asyncssh.Error as exc:
            raise OSError(str(exc)) from exc  # said as "cannot start it: …"
        link.attach(chan)
        chan.write(spool.as_stdin(argv).encode())

    await link.boot(channel, timeout)
    return link

"""Commands on this machine: /bin/sh in its own process group, killed as a whole."""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import time
from typing import Any

from dsh.plan import KILL_GRACE
from dsh.remote.base import Exec, OutputSink

#: How long to keep reading output after the command has exited.
DRAIN = 1.0
_CHUNK = 65536


#: Process groups started and not yet known to be gone: `kill_all` is the backstop
#: when dsh itself is torn down before a command's own cleanup could run.
_LIVE: set[int] = set()


def kill_all() -> None:
    """SIGKILL every process group this process started that may still be alive."""
    for pgid in list(_LIVE):
        _signal_group(pgid, signal.SIGKILL)
        _LIVE.discard(pgid)


class LocalShell:
    """Runs commands through /bin/sh on the machine that runs the session."""

    def __init__(self, name: str = "local", *, kill_grace: float = KILL_GRACE) -> None:
        self._name = name
        self.kill_grace = kill_grace

    @property
    def name(self) -> str:
        return self._name

    async def run(self, command: str, *, timeout: float, output: OutputSink) -> Exec:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(loop),
                "/bin/sh",
                "-c",
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            why = str(exc)
            if exc.errno == errno.E2BIG:
                why = "the command is too long for /bin/sh -c (is a bound value that large?)"
            return Exec("failed", 127, time.monotonic() - started, f"cannot start /bin/sh: {why}")
        pgid = transport.get_pid()
        _LIVE.add(pgid)
        assert protocol.stdout is not None and protocol.stderr is not None
        # The sink may fail (stdout closed under us): that ends the command too.
        failed: asyncio.Future[BaseException] = loop.create_future()
        pumps = [
            asyncio.ensure_future(_pump(protocol.stdout, "stdout", output, failed)),
            asyncio.ensure_future(_pump(protocol.stderr, "stderr", output, failed)),
        ]
        timed_out = False
        try:
            waits: list[asyncio.Future[Any]] = [protocol.exited, failed]
            done, _ = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                raise failed.result()
            if not done:
                timed_out = True
                await self._kill_group(pgid, protocol.exited)
        except BaseException:
            await asyncio.shield(self._kill_group(pgid, protocol.exited))
            for pump in pumps:
                pump.cancel()
            transport.close()
            raise
        # Background children die with the command: every action is bounded.
        await self._kill_group(pgid, protocol.exited)
        _LIVE.discard(pgid)
        _done, pending = await asyncio.wait(pumps, timeout=DRAIN)
        for pump in pending:
            pump.cancel()
        transport.close()
        seconds = time.monotonic() - started
        if timed_out:
            return Exec("timeout", None, seconds, f"no exit within {_secs(timeout)}")
        code = transport.get_returncode()
        assert code is not None
        if code < 0:
            sig = -code
            return Exec("failed", 128 + sig, seconds, f"killed by signal {_signame(sig)}")
        return Exec("ok" if code == 0 else "failed", code, seconds)

    async def _kill_group(self, pgid: int, exited: asyncio.Future[None]) -> None:
        """TERM the group, then KILL whatever is left after the grace period."""
        if _signal_group(pgid, signal.SIGTERM):
            deadline = time.monotonic() + self.kill_grace
            while time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                if exited.done() and not _group_alive(pgid):
                    break
            else:
                _signal_group(pgid, signal.SIGKILL)
        # The leader is ours: its exit is certain once the group was killed.
        await asyncio.wait_for(asyncio.shield(exited), self.kill_grace + 5)


class _Protocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Stream protocol that tells when the process exits, not when its pipes close.

    (Python 3.11's Process.wait() waits for both, so a background child that
    keeps stdout open would hold it.)
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=_CHUNK, loop=loop)
        self.exited: asyncio.Future[None] = loop.create_future()

    def process_exited(self) -> None:
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(None)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a process group has a member that is not a zombie."""
    if not _signal_group(pgid, 0):
        return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


async def _pump(
    stream: asyncio.StreamReader, name: str, output: OutputSink, failed: asyncio.Future[BaseException]
) -> None:
    while True:
        data = await stream.read(_CHUNK)
        if not data:
            return
        try:
            output(name, data)
        except Exception as exc:
            if not failed.done():
                failed.set_result(exc)
            return


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)

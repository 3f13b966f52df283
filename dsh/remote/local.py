"""Commands on this machine: /bin/sh in its own process group, killed as a whole."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from dsh.remote.base import Exec, OutputSink

#: How long a process group has to go after SIGTERM before SIGKILL.
KILL_GRACE = 2.0
#: How long to keep reading output after the command has exited.
DRAIN = 1.0
_CHUNK = 65536


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
        try:
            proc = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            return Exec("failed", 127, time.monotonic() - started, f"cannot start /bin/sh: {exc}")
        pgid = proc.pid
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.ensure_future(_pump(proc.stdout, "stdout", output)),
            asyncio.ensure_future(_pump(proc.stderr, "stderr", output)),
        ]
        timed_out = False
        try:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                timed_out = True
                await self._kill_group(pgid, proc)
        except asyncio.CancelledError:
            await asyncio.shield(self._kill_group(pgid, proc))
            for pump in pumps:
                pump.cancel()
            raise
        # Background children die with the command: every action is bounded.
        await self._kill_group(pgid, proc)
        done, pending = await asyncio.wait(pumps, timeout=DRAIN)
        for pump in pending:
            pump.cancel()
        seconds = time.monotonic() - started
        if timed_out:
            return Exec("timeout", None, seconds, f"no exit within {_secs(timeout)}")
        code = proc.returncode
        assert code is not None
        if code < 0:
            sig = -code
            return Exec("failed", 128 + sig, seconds, f"killed by signal {_signame(sig)}")
        return Exec("ok" if code == 0 else "failed", code, seconds)

    async def _kill_group(self, pgid: int, proc: asyncio.subprocess.Process) -> None:
        """TERM the group, then KILL whatever is left after the grace period."""
        if not _signal_group(pgid, signal.SIGTERM):
            if proc.returncode is None:
                await proc.wait()
            return
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline:
            if proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), 0.02)
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0.02)
            if not _group_alive(pgid):
                break
        else:
            _signal_group(pgid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()


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


async def _pump(stream: asyncio.StreamReader, name: str, output: OutputSink) -> None:
    while True:
        data = await stream.read(_CHUNK)
        if not data:
            return
        output(name, data)


def _secs(seconds: float) -> str:
    return f"{seconds:g}s"


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


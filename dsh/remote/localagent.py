"""Local actions through a host agent that is dsh's own child (issue 22, start-up).

The agent is the one SSH boots on hosts (dsh/remote/hostagent), run by this
interpreter over pipes (`HostLink.spawn`): it claims with O_EXCL and starts each
command from its keeper with setsid, no `sh` wrapper and no poll sleep, and the
keeper is the survivor: a process of its own session that outlives dsh (and
the agent), reaps every command it started and writes its status. So a kill -9
of dsh leaves every local action's real status in the spool, as the wrapper's
runner does, and the spool files are the wrapper's (its PROBE, FOLLOW and KILL
read them alike).

It boots at the session's first local launch, in dsh's environment and working
directory as they are then; a launch goes through it only while both are
unchanged (the wrapper, a new exec, gives a command dsh's environment and
directory as they are at its start). `DSH_HOST_AGENT=off` keeps the wrapper.
"""

from __future__ import annotations

import asyncio
import os
import time

from dsh.remote.hostlink import HostLink, LinkLost

#: A local agent that has not said hello within this long is given up (the wrapper then).
BOOT_TIMEOUT = 10.0
#: How long an agent told to end (EOF) may take to exit before it is killed.
CLOSE_TIMEOUT = 2.0
#: How many times an agent that died (killed) is booted again, in a session.
REBOOTS = 3


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # removed under dsh: no snapshot matches it
        return ""


class LocalAgent:
    """The local actions' host agent, booted on first use (None: off, or it did not
    come up: the wrapper then, for the rest of the session)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._link: asyncio.Future[HostLink | None] | None = None
        self._env: dict[str, str] = {}
        self._cwd = ""
        self._reboots = 0

    async def link(self, within: float) -> HostLink | None:
        """The agent for a launch now, booting it on first use; waited for at most
        `within` seconds (the boot goes on: a later launch may use it); None when a
        launch must go through the wrapper. One that came up and has died since
        (killed) is booted again, as at the first launch, at most REBOOTS times."""
        if self.mode == "off":
            return None
        deadline = time.monotonic() + within
        while True:
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                    link = await asyncio.shield(self.start())
            except TimeoutError:
                return None
            if link is None or link.alive or self._reboots >= REBOOTS:
                break
            self._reboots += 1
            self._link = None  # its keeper goes on with what it started
        if link is None or not link.alive:
            return None
        if os.environ != self._env or _cwd() != self._cwd:
            return None
        return link

    def start(self) -> asyncio.Future[HostLink | None]:
        """Its boot, begun now if it was not: dsh's environment and directory as they
        are now are the ones it runs commands in (off: none, ever)."""
        if self._link is None and self.mode == "off":
            self._link = asyncio.get_running_loop().create_future()
            self._link.set_result(None)
        if self._link is None:
            self._env, self._cwd = dict(os.environ), _cwd()
            self._link = asyncio.ensure_future(self._boot())
        return self._link

    async def _boot(self) -> HostLink | None:
        try:
            return await HostLink.spawn(timeout=BOOT_TIMEOUT)
        except LinkLost:
            return None
        except Exception:  # e.g. no sys.executable: the wrapper runs local actions, as before
            return None

    async def close(self) -> None:
        """Ends the agent (EOF on its stdin; waited for at most CLOSE_TIMEOUT): its
        keeper goes on with what it started."""
        if self._link is None:
            return
        booting, self._link = self._link, None
        if not booting.done():
            booting.cancel()  # HostLink.spawn kills what it started
            return
        link = None if booting.cancelled() or booting.exception() else booting.result()
        if link is not None:
            link.close()
            await link.wait_closed(CLOSE_TIMEOUT)

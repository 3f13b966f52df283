"""Commands on this machine, with a spool under its local spool root: through the
local host agent (dsh/remote/localagent.py) unless DSH_HOST_AGENT is off or dsh's
environment or directory changed since it booted, else as one LAUNCH exec of
`/bin/sh` (dsh/remote/spool.py). A timeout or a cancel runs KILL as a new exec."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dsh.plan import KILL_GRACE, STOP_CONFIRM, STOP_MARGIN
from dsh.remote import askpass, hostops, spool
from dsh.remote.base import (
    NOT_OWNER,
    Asks,
    Check,
    Copied,
    CopyJob,
    Exec,
    Gate,
    Identity,
    OutputSink,
    Progress,
    RemoteUnreachable,
    Spot,
)
from dsh.remote.hostlink import HostLink
from dsh.remote.localagent import LocalAgent

#: How long to keep reading output after the command has exited.
DRAIN = 1.0
#: How long the wrapper may take to notice its command ended (its slowest poll, and more).
SETTLE = 5.0
_CHUNK = 65536
#: The end of a stop: a launcher that is still there is SIGKILLed, and this long is left.
_LAST_RESORT = 0.5


#: Commands started and not yet known to be over, with their launcher's process
#: group: `kill_all` is the backstop when dsh is torn down before a command's own
#: cleanup could run.
_LIVE: dict[Path, int] = {}


def kill_all() -> None:
    """SIGKILL every command (and its launcher) this process started that may still run."""
    for spooled, launcher in list(_LIVE.items()):
        try:  # `PGID START`
            pgid = int(spooled.with_name(spooled.name + ".pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pgid = 0
        if pgid > 1:
            _signal_group(pgid, signal.SIGKILL)
        if launcher > 1:  # 0: launched by the local agent (never killpg(0): dsh's own group)
            _signal_group(launcher, signal.SIGKILL)
        _LIVE.pop(spooled, None)


#: Bytes of a probe's stdout kept (`await cmd … as NAME` binds them).
CHECK_BYTES = 64 * 1024


async def tcp_open(host: str, port: int, timeout: float) -> bool:
    """Whether host:port takes a TCP connection within `timeout` (from this machine)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


class LocalShell:
    """Runs commands through /bin/sh on the machine that runs the session."""

    def __init__(
        self,
        root: Path,
        name: str = "local",
        *,
        kill_grace: float = KILL_GRACE,
        gate: Gate | None = None,
        asks: Asks | None = None,
        host_agent: str = "off",
    ) -> None:
        self.root = root
        #: The local host agent (dsh/remote/localagent.py), unless DSH_HOST_AGENT is off.
        self.agent = LocalAgent(host_agent)
        self._name = name
        self.kill_grace = kill_grace
        self.gate = gate or Gate()
        #: Where a command's sudo asking for a password is passed on.
        self.asks = asks or Asks()
        #: Whether the sudo helper's text was sent already (dsh/remote/askpass.py).
        self._helped = False

    @property
    def name(self) -> str:
        return self._name

    async def run(
        self,
        command: str,
        *,
        spot: Spot,
        timeout: float,
        output: OutputSink,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        told: float | None = None,
    ) -> Exec:
        if not self.gate.open():
            return Exec("lost", None, 0.0, NOT_OWNER)
        if stdin is not None:
            try:
                await asyncio.to_thread(self._place_input, spot, stdin)
            except OSError as exc:
                why = f"cannot write its input to the spool: {exc.strerror or exc}"
                return Exec("failed", None, 0.0, why)
        backstop = timeout + self.kill_grace + SETTLE
        helper, self._helped = not self._helped, True  # its text rides on the first launch only
        secrets = spool.env_lines(env) if env else None
        job = hostops.Launch(
            str(self.root),
            spot.session,
            spot.action,
            spot.alias,
            backstop,
            command,
            self.kill_grace,
            secrets or "",
            helper,
            stdin is not None,
        )
        big = len(command.encode("utf-8", "surrogateescape")) + len(secrets or "") > hostops.MAX_COMMAND
        # the wrapper says what sh makes of a big one; a boot is waited for within half the time
        began, told = time.monotonic(), timeout if told is None else told  # what its messages say
        link = None if big else await self.agent.link(timeout / 2)
        timeout = max(timeout - (time.monotonic() - began), 0.001)
        if link is not None:
            return await self._through(link, job, spot, timeout, output, told)
        return await self._exec(job.argv(), spot, timeout, output, secrets, told=told)

    async def close(self) -> None:
        """The end of the session: the local agent ends (what it started goes on)."""
        await self.agent.close()

    async def _through(
        self, link: HostLink, job: hostops.Launch, spot: Spot, timeout: float, output: OutputSink, told: float
    ) -> Exec:
        """A LAUNCH through the local agent, with the wrapper's outcomes: past `timeout`
        it is killed by the wrapper's KILL; an agent that dies meanwhile leaves the
        command to its keeper, and the wrapper follows it from what was shown (or
        launches it, when the agent never said a word of it and the spool has never
        heard of it: its claim keeps it at most once)."""
        started = time.monotonic()
        deadline = started + timeout
        argv = job.argv()
        watch = spool.Watch(output, argv, asks=lambda ask: self.asks(self, spot, ask, deadline))
        spooled = self.root / spot.session / f"{spot.action}@{spot.alias}"
        _LIVE[spooled] = 0  # no launcher of its own: kill_all ends its group, from .pid
        try:
            got = await hostops.launch(link, job, watch, timeout)
            if isinstance(got, int):
                if watch.helper_missing:  # removed since: its text goes with the next launch
                    self._helped = False
                return watch.result(got, time.monotonic() - started)
            if isinstance(got, hostops.Late):
                until = time.monotonic() + self.kill_grace + STOP_CONFIRM - STOP_MARGIN
                killed = await self._stop(spot, "timeout", until)
                if killed:  # what it says as it ends (a trap's last words), within the same budget
                    await hostops.drain(got, watch, max(until - time.monotonic(), 0.001))
                else:
                    got.link.finish(got.rid)
                seconds = time.monotonic() - started
                if killed:
                    return Exec("timeout", None, seconds, f"no exit within {told:g}s")
                why = "and the kill could not be confirmed; the backstop ends it"
                return Exec("lost", None, seconds, f"no exit within {told:g}s, {why}")
            left = max(deadline - time.monotonic(), 0.001)
            if not got.heard and await self.probe(spot) == "none":
                return await self._exec(job.argv(), spot, left, output, job.secrets or None, told=told)
            follow = spool.follow_argv(str(self.root), spot.session, spot.action, spot.alias)
            rejoined = await self._exec(follow, spot, left, output, skip=got.watch.passed, told=told)
        except BaseException:  # cancelled, or dsh's output failed: the command is stopped too
            if self.gate.open():
                until = time.monotonic() + self.kill_grace + STOP_CONFIRM - STOP_MARGIN
                await asyncio.shield(self._stop(spot, "cancelled", until))
            raise
        finally:
            _LIVE.pop(spooled, None)
        if rejoined.outcome in ("lost", "unreachable", "refused"):  # it may have run: never "nothing ran"
            why = f"the local host agent ended ({got.why}), and {rejoined.message}"
            return Exec("lost", None, time.monotonic() - started, why)
        return Exec(rejoined.outcome, rejoined.exit_status, time.monotonic() - started, rejoined.message)

    async def _stop(self, spot: Spot, why: str, until: float) -> bool:
        """The wrapper's KILL of an action the local agent launched, by `until`: True
        when it exited 0 (the command is over)."""
        if not self.gate.open():
            return False
        argv = spool.kill_argv(str(self.root), spot.session, spot.action, spot.alias, self.kill_grace, why)
        return await self._quick(argv, max(until - time.monotonic(), 0.001))

    def _place_input(self, spot: Spot, data: bytes) -> None:
        """The action's input, as its spool's ACTION@ALIAS.in: written under a name of
        its own, made exclusively (nothing planted there is followed), then renamed."""
        directory = self.root / spot.session
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = directory / spool.input_name(spot.action, spot.alias)
        temp = final.with_name(f"{final.name}.{os.urandom(6).hex()}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            with open(fd, "wb") as f:
                f.write(data)
            os.replace(temp, final)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise

    async def identity(self) -> Identity | None:
        return None  # this machine: actions record the machine id instead

    async def copy(
        self, job: CopyJob, *, spot: Spot, timeout: float, progress: Progress, output: OutputSink
    ) -> Copied:
        why = "a copy goes to or from hosts (over SSH), not this machine"
        return Copied(Exec("refused", None, 0.0, why), job.facts)

    async def follow(
        self, spot: Spot, *, timeout: float, output: OutputSink, told: float | None = None
    ) -> Exec:
        argv = spool.follow_argv(str(self.root), spot.session, spot.action, spot.alias)
        return await self._exec(argv, spot, timeout, output, told=timeout if told is None else told)

    async def kill(self, spot: Spot) -> bool:
        if not self.gate.open():
            return False
        argv = spool.kill_argv(str(self.root), spot.session, spot.action, spot.alias, self.kill_grace)
        return await self._quick(argv)

    async def remove(self, session: str) -> bool:
        return await self._quick(spool.remove_argv(str(self.root), session))

    async def clean(self, keep: float) -> None:
        await self._quick(spool.clean_argv(str(self.root), keep))

    async def check(self, command: str, *, timeout: float) -> Check:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            return Check(None, b"", f"the probe did not end within {timeout:g}s")
        finally:
            if proc.returncode is None:  # timed out or cancelled: no probe outlives its wait
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        return Check(proc.returncode, out[:CHECK_BYTES])

    async def port_open(self, port: int, *, timeout: float) -> bool:
        return await tcp_open("127.0.0.1", port, timeout)

    async def answer(self, spot: Spot, ask: str, answer: str | None, why: str = "") -> bool:
        argv = spool.answer_argv(str(self.root), spot.session, spot.action, spot.alias, ask)
        code, _ = await _fed(argv, askpass.feed(answer, why), SETTLE + 5.0)
        return code == 0

    async def verify_sudo(self, answer: str, *, timeout: float) -> tuple[bool | None, str]:
        return askpass.verdict(*await _fed(spool.verify_argv(), answer, timeout), timeout)

    async def _quick(self, argv: list[str], seconds: float | None = None) -> bool:
        """A short wrapper exec (KILL, REMOVE), bounded (by `seconds`, else kill_grace
        and SETTLE); True when it exited 0."""
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        except OSError:
            return False
        try:
            return await asyncio.wait_for(proc.wait(), seconds or self.kill_grace + SETTLE) == 0
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return False

    async def probe(self, spot: Spot) -> str:
        argv = spool.probe_argv(str(self.root), spot.session, spot.action, spot.alias)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), SETTLE)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RemoteUnreachable("lost", "the local spool did not answer") from None
        answer = spool.answer(argv, out)
        if answer is None:
            raise RemoteUnreachable("lost", "the local spool did not answer")
        return answer

    async def _exec(
        self,
        argv: list[str],
        spot: Spot,
        timeout: float,
        output: OutputSink,
        stdin: str | None = None,
        skip: Mapping[str, int] | None = None,
        *,
        told: float,
    ) -> Exec:
        """One exec of the wrapper (LAUNCH or FOLLOW): stream it, bound it, kill on
        timeout or cancel, and read its outcome. `stdin`: the command's secrets, for
        LAUNCH to read (never in an argv); `skip`: a FOLLOW's output shown already;
        `told`: the timeout its message says (as the line gave it; `timeout` is what is left)."""
        started = time.monotonic()
        deadline = started + timeout
        loop = asyncio.get_running_loop()
        watch = spool.Watch(output, argv, skip=skip, asks=lambda ask: self.asks(self, spot, ask, deadline))
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _Protocol(loop),
                *argv,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            if stdin is not None:  # a few bytes: the pipe takes them without blocking
                pipe = transport.get_pipe_transport(0)
                assert isinstance(pipe, asyncio.WriteTransport)
                pipe.write(stdin.encode("utf-8", "surrogateescape"))
                pipe.close()
        except OSError as exc:
            why = str(exc)
            if exc.errno == errno.E2BIG:
                why = "the command is too long for /bin/sh -c (is a bound value that large?)"
            return Exec("failed", None, time.monotonic() - started, f"cannot start /bin/sh: {why}")
        spooled = self.root / spot.session / f"{spot.action}@{spot.alias}"
        _LIVE[spooled] = transport.get_pid()
        assert protocol.stdout is not None and protocol.stderr is not None
        # The sink may fail (stdout closed under us): that ends the command too.
        failed: asyncio.Future[BaseException] = loop.create_future()
        pumps = [
            asyncio.ensure_future(_pump(protocol.stdout, "stdout", watch.sink, failed)),
            asyncio.ensure_future(_pump(protocol.stderr, "stderr", watch.sink, failed)),
        ]
        timed_out = False
        try:
            waits: list[asyncio.Future[Any]] = [protocol.exited, failed]
            left = max(deadline - time.monotonic(), 0)
            done, _ = await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if failed.done():
                raise failed.result()
            if not done:
                timed_out = True
                await self._kill(spot, transport, protocol.exited, "timeout")
        except BaseException:
            if self.gate.open():
                await asyncio.shield(self._kill(spot, transport, protocol.exited, "cancelled"))
            # else: left to its spool (the runner is in a process session of its own),
            # for the next owner; not killed when dsh ends either
            for pump in pumps:
                pump.cancel()
            transport.close()
            _LIVE.pop(spooled, None)
            raise
        _LIVE.pop(spooled, None)
        _done, pending = await asyncio.wait(pumps, timeout=DRAIN)
        for pump in pending:
            pump.cancel()
        transport.close()
        seconds = time.monotonic() - started
        if timed_out:
            return Exec("timeout", None, seconds, f"no exit within {told:g}s")
        code = transport.get_returncode()
        assert code is not None
        if code < 0:  # the launcher itself was killed: the spool still has the command's end
            return Exec("lost", None, seconds, f"the wrapper was killed by {_signame(-code)}")
        if watch.helper_missing:  # removed since: its text goes with the next launch
            self._helped = False
        return watch.result(code, seconds)

    async def _kill(
        self, spot: Spot, transport: asyncio.SubprocessTransport, exited: asyncio.Future[None], why: str
    ) -> None:
        """KILL the command from a new exec; then the launcher ends as it sees the status;
        all of it within the stop budget (kill_grace + STOP_CONFIRM) that `dsh explain`
        counts: a launcher still there at its end is killed itself.
        With the gate shut, nothing is killed: the launcher is dropped, the command left."""
        if not self.gate.open():
            return
        until = time.monotonic() + self.kill_grace + STOP_CONFIRM - STOP_MARGIN - _LAST_RESORT
        await self._stop(spot, why, until)
        try:
            await asyncio.wait_for(asyncio.shield(exited), max(until - time.monotonic(), 0.001))
        except TimeoutError:
            _signal_group(transport.get_pid(), signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(exited), _LAST_RESORT)


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


async def _fed(argv: list[str], line: str, timeout: float) -> tuple[int | None, str]:
    """Run a wrapper exec with `line` on its stdin (a secret: never in an argv),
    bounded; its exit status (None: it did not end in time) and the last of its stderr."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate((line + "\n").encode()), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, ""
    return proc.returncode, err.decode("utf-8", "replace").strip()[-500:]


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


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


def _signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)

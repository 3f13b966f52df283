"""The Remote verbs over a host agent's link (dsh.remote.hostlink): what SshHost
asks the agent instead of an exec of the wrapper, with the same outcomes.

The agent keeps the wrapper's spool files and says the wrapper's sentences; its
ENDED is the status LAUNCH's exec would have ended with. So each reply goes
through the wrapper's own reading (`spool.Watch`): output, messages (a sudo
asking, the helper missing, why an action ended) and the mapping of a status to
an outcome are one code for both paths.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from dsh.remote import askpass, spool
from dsh.remote.base import Spot
from dsh.remote.hostlink import HostLink, LinkLost
from dsh.remote.hostwire import Kind, ProtocolError

#: The largest command (with its secrets) sent through the agent; a larger one goes
#: through the wrapper, whose sh says what the host makes of it (execve refuses any
#: one argument over 128 KiB on Linux anyway).
MAX_COMMAND = 128 * 1024


@dataclass(frozen=True)
class Launch:
    """One LAUNCH: the wrapper's arguments, as `spool.launch_argv` takes them."""

    root: str
    session: str
    action: str
    alias: str
    backstop: float
    command: str
    grace: float
    secrets: str = field(repr=False)  # env_lines, or "": never in a repr
    helper: bool
    stdin: bool

    def argv(self) -> list[str]:
        """The same LAUNCH as the wrapper's exec (`spool.launch_argv`)."""
        return spool.launch_argv(
            self.root,
            self.session,
            self.action,
            self.alias,
            self.backstop,
            self.command,
            self.grace,
            bool(self.secrets),
            self.helper,
            self.stdin,
        )


@dataclass
class Broken:
    """The link died while an action ran (or before it said anything): `watch` holds
    what was shown, `why` how it died; `heard`: the agent said something of it."""

    why: str
    watch: spool.Watch
    heard: bool = True


@dataclass(frozen=True)
class Late:
    """No end within the timeout: the request goes on (the caller kills the command,
    then `drain`s what it says as it ends)."""

    link: HostLink
    rid: int


async def drain(late: Late, watch: spool.Watch, seconds: float) -> None:
    """What a command killed for its timeout says as it ends (a trap's last words),
    for at most `seconds`; then the request is over."""
    try:
        await _stream(late.link, late.rid, watch, seconds)
    finally:
        late.link.finish(late.rid)


async def launch(link: HostLink, job: Launch, watch: spool.Watch, timeout: float) -> int | Broken | Late:
    """Run `job` through the agent, its output and messages into `watch`: the
    status its LAUNCH exec would have ended with, Late when it did not end within
    `timeout` (the caller kills it), or Broken."""
    watch.framed()
    helper = askpass.HELPER if job.helper else ""
    try:
        rid = link.request(
            Kind.LAUNCH,
            job.root,
            job.session,
            job.action,
            job.alias,
            job.command,
            spool.seconds(job.backstop),
            spool.seconds(job.grace),
            "in" if job.stdin else "",
            job.secrets,
            helper,
        )
    except LinkLost as exc:
        return Broken(exc.why, watch, heard=False)
    return await _stream(link, rid, watch, timeout)


async def follow(
    link: HostLink, root: str, spot: Spot, watch: spool.Watch, timeout: float
) -> int | Broken | Late:
    """FOLLOW an action (launched by anyone, the wrapper included) to its end, as
    `launch` streams one: its output from the start (`watch` skips what was shown)."""
    watch.framed()
    try:
        rid = link.request(Kind.FOLLOW, root, spot.session, spot.action, spot.alias)
    except LinkLost as exc:
        return Broken(exc.why, watch, heard=False)
    return await _stream(link, rid, watch, timeout)


async def probe(link: HostLink, root: str, spot: Spot) -> str:
    """PROBE's answer (`none`, `alive`, `alive asking`, `lost`, `status S`); LinkLost
    when the link dies or the agent refuses the request."""
    frame = await link.ask(
        Kind.PROBE, root, spot.session, spot.action, spot.alias, until=lambda f: f.kind == Kind.ANSWER
    )
    if frame.kind != Kind.ANSWER:
        raise LinkLost(f"it refused a probe: {frame.text(0)}")
    return frame.text(0)


async def reply(link: HostLink, root: str, spot: Spot, ask: str, line: str) -> int:
    """REPLY (the wrapper's ANSWER): `line` (askpass.feed's) to the helper of `ask`;
    0 when it was given, 3 when that ask no longer waits. LinkLost when the link dies
    or the agent refuses it."""
    frame = await link.ask(
        Kind.REPLY,
        root,
        spot.session,
        spot.action,
        spot.alias,
        ask,
        line,
        until=lambda f: f.kind == Kind.DONE,
    )
    if frame.kind != Kind.DONE:
        raise LinkLost(f"it refused an answer: {frame.text(0)}")
    try:
        return frame.number(0)
    except ProtocolError as exc:
        link.lost(f"it broke the protocol: {exc}")
        raise LinkLost(link.why) from None


async def warm(link: HostLink, root: str, session: str, alias: str, timeout: float) -> None:
    """One LAUNCH of `:` in the session's spool, as the agent boots while the session
    waits: an agent's first action costs it ~1 ms more than its next (the page faults
    in the agent and its keeper after the keeper's fork: ~80 and ~150, against ~5 from
    then on), which a first line through 200 fresh agents felt as a third more time.
    Its files (action `warm-HEX`, a name no statement has) go with the session's spool:
    removing them now would be a burst of deletes just before the next line, and on
    ext4 without a journal each create then searches past the inodes freed in the
    last minute. Within `timeout` (launch's bound); a warm-up that fails says nothing
    (the action that follows says what is wrong)."""
    job = Launch(root, session, f"warm-{os.urandom(4).hex()}", alias, timeout, ":", 1, "", False, False)
    ended = await launch(link, job, spool.Watch(_dropped, job.argv()), timeout)
    if isinstance(ended, Late):
        link.stop(ended.rid)


def _dropped(stream: str, data: bytes) -> None:
    """Output nobody reads (a warm-up's `:` has none)."""


async def _stream(link: HostLink, rid: int, watch: spool.Watch, timeout: float) -> int | Broken | Late:
    """Request `rid`'s output and messages into `watch` until its ENDED (the status),
    Late past `timeout` (the request goes on), or Broken."""
    deadline = time.monotonic() + timeout
    heard = False
    over = True
    try:
        while True:
            try:
                async with asyncio.timeout(max(deadline - time.monotonic(), 0)):  # never loses a cancel
                    frame = await link.reply(rid)
            except TimeoutError:
                over = False
                return Late(link, rid)
            heard = True
            if frame.kind == Kind.OUT:
                watch.command_output("stdout", frame.fields[0] if frame.fields else b"")
            elif frame.kind == Kind.ERR:
                watch.command_output("stderr", frame.fields[0] if frame.fields else b"")
            elif frame.kind == Kind.SAID:
                watch.said(frame.text(0))
            elif frame.kind == Kind.ENDED:
                try:
                    status = frame.number(0)
                    if not 0 <= status <= 255:
                        raise ProtocolError(f"ENDED: {status} is no exit status")
                except ProtocolError as exc:  # a hostile or broken agent: its word is not taken
                    link.lost(f"it broke the protocol: {exc}")
                    return Broken(link.why, watch)
                return status
            elif frame.kind == Kind.ERROR:
                return Broken(f"it refused the request: {frame.text(0)}", watch)
    except LinkLost as exc:
        return Broken(exc.why, watch, heard)
    finally:
        if over:
            link.finish(rid)

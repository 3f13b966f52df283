"""One-shot requests to a host agent (dsh.remote.hostlink), typed: FS, one file
operation (dsh/remote/hostagent/files.py), and RUN, a bounded child of the agent
with its output (hostagent/child.py); and the two verbs that are one RUN each: a
check (`await cmd`) and trying a sudo password, with the wrapper's outcomes.

Every wait is bounded, by asyncio.timeout (Python 3.11's wait_for drops a cancel
that comes as its reply does, and with it a copy's own deadline). FAILED (the
host refused an operation) is FsFailed, with the host's reason and errno's name;
ERROR (the agent refused the request) and a reply that breaks the protocol (a
DONE whose fields are not what the request gets) are ProtocolError, and the
latter ends the link: a host's lie is never taken for an answer. A link that
dies is LinkLost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dsh.remote import spool
from dsh.remote.base import Check
from dsh.remote.copying import Stat
from dsh.remote.hostlink import HostLink, LinkLost
from dsh.remote.hostwire import MAX_BODY, Frame, Kind, ProtocolError
from dsh.remote.manifest import DIR, FILE, LINK

#: The most bytes one FS read returns and one write carries (the agent's files.PIECE).
PIECE = 512 * 1024
#: The longest path sent (no system takes one this long; the frame must hold two).
MAX_PATH = 64 * 1024
#: How long one FS request may take (a few system calls on the host).
FS_BOUND = 30.0
#: What a RUN may take past its timeout: the agent's second from TERM to KILL, its
#: bounded reap (3 s) and drain (1 s), and the way back; within the wrapper's
#: CHECK's bound (its timeout and SETTLE, 5 s) but for the way back.
RUN_SLACK = 6.0
#: What the agent says of a RUN it ended for its timeout, or that it could not reap
#: after its KILL (child.py).
TIMED_OUT = "timed out"
NOT_ENDED = "it did not end after its KILL"
#: How sudo's password is tried (askpass.VERIFY's sudo: `-k`, what it remembers does
#: not count), in the C locale; the password on its stdin.
VERIFY_ARGV = ("sudo", "-k", "-S", "-p", "", "-v")
#: Kept of what sudo said (the end of its stderr, as the wrapper's exec keeps it).
SAID = 500
_KINDS = (FILE, DIR, LINK, "other")


class FsFailed(Exception):
    """The host refused an operation: `reason` as it says it, `code` errno's name."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Ran:
    """How a RUN ended: its status as sh says it, or None (then `why`: it timed out,
    could not start, or the agent did not answer), and what it wrote."""

    status: int | None
    stdout: bytes = b""
    stderr: bytes = b""
    why: str = ""


def shown(text: str) -> str:
    """A host's words for a message: printable, bounded."""
    return "".join(c if c.isprintable() else "?" for c in text[:300])


def broke(link: HostLink, what: str) -> ProtocolError:
    """The link is ended for a reply that breaks the protocol: the error to raise."""
    link.lost(f"it broke the protocol: {what}")
    return ProtocolError(f"dsh's host agent broke the protocol: {what}")


# -- FS ----------------------------------------------------------------------------------


def send_fs(link: HostLink, op: str, *args: bytes | str | int) -> int:
    """Send one FS request (paths as text, data as bytes of at most PIECE); its id, for
    `fs_reply`. FsFailed for a path too long to send; LinkLost."""
    for arg in args:
        if isinstance(arg, str) and len(arg.encode("utf-8", "surrogateescape")) > MAX_PATH:
            raise FsFailed("File name too long", "ENAMETOOLONG")
        assert not isinstance(arg, bytes) or len(arg) <= PIECE, "a piece over the bound"
    return link.request(Kind.FS, op, *args)


async def fs_reply(link: HostLink, rid: int, op: str) -> Frame:
    """The DONE of FS request `rid` (FsFailed, ProtocolError, LinkLost), within FS_BOUND."""
    try:
        async with asyncio.timeout(FS_BOUND):  # not wait_for: a cancel must never be lost
            frame = await link.reply(rid)
    except TimeoutError:
        link.lost(f"no answer to an FS {op} within {FS_BOUND:g}s")
        raise LinkLost(link.why) from None
    finally:
        link.finish(rid)
    if frame.kind == Kind.DONE:
        return frame
    if frame.kind == Kind.FAILED:
        raise FsFailed(shown(frame.text(0)) or "the host gave no reason", shown(frame.text(1))[:40])
    if frame.kind == Kind.ERROR:
        raise ProtocolError(f"dsh's host agent refused an FS {op}: {shown(frame.text(0))}")
    raise broke(link, f"{frame.kind.name} in answer to an FS {op}")


async def fs(link: HostLink, op: str, *args: bytes | str | int) -> Frame:
    """One FS request and its DONE."""
    return await fs_reply(link, send_fs(link, op, *args), op)


def stat_of(link: HostLink, frame: Frame) -> Stat | None:
    """A stat's or lstat's answer (None: no such file)."""
    if frame.fields == (b"none",):
        return None
    if len(frame.fields) != 3 or frame.text(0) not in _KINDS:
        raise broke(link, "a stat that names no kind")
    try:
        mode, size = frame.number(1), frame.number(2)
    except ProtocolError as exc:
        raise broke(link, str(exc)) from None
    if mode > 0o7777:
        raise broke(link, f"a stat's mode {mode} holds more than permission bits")
    return Stat(frame.text(0), mode, size)


def created(link: HostLink, frame: Frame) -> bool:
    """A create's answer: made (True), or the name exists (False)."""
    if frame.fields not in ((b"1",), (b"0",)):
        raise broke(link, "a create's answer is neither 1 nor 0")
    return frame.fields == (b"1",)


def data_of(link: HostLink, frame: Frame, asked: int) -> tuple[bytes, bytes]:
    """A read's bytes (no more than were asked for), and which file they are of (its
    device and inode: the pieces of one file are read through an open each)."""
    if len(frame.fields) != 2 or len(frame.fields[0]) > asked:
        raise broke(link, f"a read of {asked} bytes answered with other than that many at most")
    return frame.fields[0], frame.fields[1]


def names_of(link: HostLink, frame: Frame) -> tuple[list[str], bool]:
    """A listdir page: its names, and whether more follow."""
    if not frame.fields or frame.fields[-1] not in (b"0", b"1"):
        raise broke(link, "a listdir page that does not say whether more follow")
    more = frame.fields[-1] == b"1"
    if more and len(frame.fields) == 1:
        raise broke(link, "an empty listdir page with more to follow")
    return [f.decode("utf-8", "surrogateescape") for f in frame.fields[:-1]], more


def nothing(link: HostLink, frame: Frame) -> None:
    """The answer of an operation that returns nothing."""
    if frame.fields:
        raise broke(link, "an answer with fields where none are due")


def one_text(link: HostLink, frame: Frame) -> str:
    """A readlink's target."""
    if len(frame.fields) != 1:
        raise broke(link, "a readlink answered with other than one target")
    return frame.fields[0].decode("utf-8", "surrogateescape")


# -- RUN ---------------------------------------------------------------------------------


async def run(
    link: HostLink,
    argv: Sequence[str],
    *,
    timeout: float,
    stdin: bytes = b"",
    env: Mapping[str, str] | None = None,
) -> Ran:
    """`argv` run by the agent within `timeout` (whole seconds, rounded up), `stdin` fed
    to it, `env` added to its environment (neither is written anywhere on the host).
    ProtocolError, LinkLost; a cancel ends the child."""
    seconds = spool.seconds(timeout)
    lines = "\n".join(f"{name}={value}" for name, value in (env or {}).items())
    size = len(stdin) + len(lines) + sum(len(a.encode("utf-8", "surrogateescape")) + 4 for a in argv)
    if size > MAX_BODY - 1024:
        return Ran(None, why="the request is too large for dsh's host agent")
    rid = link.request(Kind.RUN, seconds, stdin, lines, *argv)
    try:
        async with asyncio.timeout(int(seconds) + RUN_SLACK):
            frame = await link.reply(rid)
    except TimeoutError:  # a wedged or silent agent: no later request waits on it
        link.stop(rid)
        link.lost(f"it did not answer a RUN within {int(seconds) + RUN_SLACK:g}s")
        raise LinkLost(link.why) from None
    except BaseException:  # cancelled (its child is killed), or the link died
        link.stop(rid)
        raise
    link.finish(rid)
    if frame.kind == Kind.ERROR:
        raise ProtocolError(f"dsh's host agent refused a RUN: {shown(frame.text(0))}")
    if frame.kind != Kind.DONE or len(frame.fields) not in (3, 4):
        raise broke(link, f"{frame.kind.name} with {len(frame.fields)} fields in answer to a RUN")
    out, err = frame.fields[1], frame.fields[2]
    if frame.fields[0] == b"":
        return Ran(None, out, err, shown(frame.text(3)) or "no status")
    try:
        status = frame.number(0)
    except ProtocolError as exc:
        raise broke(link, str(exc)) from None
    if status > 255:
        raise broke(link, f"RUN: {status} is no exit status")
    return Ran(status, out, err)


async def check(link: HostLink, command: str, timeout: float, keep: int, given: float | None = None) -> Check:
    """A probe (`await cmd`) as the wrapper's CHECK ends it: its status and stdout (`keep`
    bytes at most), or None past `timeout` (as 124, coreutils' timeout's status, says
    it there; said as `given`, the probe's whole timeout, when some went before).
    LinkLost: it may be run again."""
    given = timeout if given is None else given
    try:
        ran = await run(link, ["sh", "-c", command], timeout=timeout)
    except ProtocolError as exc:
        return Check(None, b"", str(exc))
    if ran.why in (TIMED_OUT, NOT_ENDED) or ran.status == spool.WrapperExit.CHECK_TIMED_OUT:
        return Check(None, ran.stdout[:keep], f"the probe did not end within {given:g}s")
    if ran.status is None:
        return Check(None, b"", f"the probe did not run: {ran.why}")
    return Check(ran.status, ran.stdout[:keep])


async def verify(link: HostLink, answer: str, timeout: float) -> tuple[int | None, str]:
    """A password tried with the host's sudo, as the wrapper's VERIFY exec ends
    (askpass.verdict reads both alike): 0 right, 1 wrong, 2 with "no sudo on this
    host", None when it did not end; and the end of what sudo said."""
    secret = (answer + "\n").encode("utf-8", "surrogateescape")
    try:
        ran = await run(link, VERIFY_ARGV, timeout=timeout, stdin=secret, env={"LC_ALL": "C"})
    except ProtocolError as exc:
        return None, str(exc)
    if ran.status == 127:  # not found on its PATH (sudo itself never ends so)
        return 2, "no sudo on this host"
    if ran.status is None:
        return None, "" if ran.why in (TIMED_OUT, NOT_ENDED) else ran.why
    return ran.status, ran.stderr.decode("utf-8", "replace").strip()[-SAID:]

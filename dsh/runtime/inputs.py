"""A line's standard inputs (`CMD | stdin FILE`, `| stdin -`): read whole when the
line starts, before any host starts, capped; the same bytes for every host, which
each host's spool keeps as `ACTION@ALIAS.in`, the command's standard input.

A resume reads the file again from the path recorded when the line started: the
hosts not started yet are given the same bytes (the same SHA-256) or nothing, and
then end `failed`, saying why; hosts started before are followed as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from collections.abc import Callable

from dsh.plan import OWN_STDIN
from dsh.record import record
from dsh.remote.base import InputFacts
from dsh.wholefile import NotRegular, OverCap, read_whole

#: The most bytes an input may hold, by default (config: limits.max_stdin).
MAX_INPUT = 64 << 20
#: How long dsh's own standard input may take to end (`| stdin -`).
OWN_INPUT_BOUND = 60.0

#: Reads dsh's own standard input whole, at most N+1 bytes (it is read once).
OwnInput = Callable[[int], bytes]


class InputError(Exception):
    """An input that cannot be given: one sentence."""


@record
class Input:
    """The input of a command stage: what it is (`facts`), and its bytes here (None:
    this owner has not the same bytes; `missing` says why)."""

    facts: InputFacts
    data: bytes | None
    missing: str = ""


async def read(path: str | None, *, cap: int, own: OwnInput | None) -> Input:
    """The input at `path` (None: dsh's own standard input), read whole now;
    InputError when it cannot be read or holds more than `cap` bytes."""
    if path is None:
        if own is None:
            raise InputError(
                "`stdin -` reads dsh's own standard input, which this session's executor has "
                "not (it runs detached, or reads its lines from there): give a file"
            )
        try:
            data = await asyncio.wait_for(_in_daemon_thread(own, cap), OWN_INPUT_BOUND)
        except TimeoutError:
            raise InputError(f"dsh's standard input did not end within {OWN_INPUT_BOUND:g}s") from None
        except OSError as exc:
            raise InputError(f"cannot read dsh's standard input: {exc.strerror or exc}") from None
        where = OWN_STDIN
    else:
        where = os.path.abspath(path)
        data = await asyncio.to_thread(_read_file, where, path, cap)
    if len(data) > cap:
        what = "dsh's standard input" if path is None else path
        raise InputError(
            f"{what} holds more than {cap} bytes, over the cap on a command's input (limits.max_stdin)"
        )
    digest = await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())
    return Input(InputFacts(where, len(data), digest), data)


async def again(facts: InputFacts, *, cap: int) -> Input:
    """A resumed line's input, read again from where it was read: the same bytes, or
    an Input without them that says why."""
    if facts.path == OWN_STDIN:
        return Input(facts, None, "its input was the standard input of the dsh that started the line")
    try:
        now = await read(facts.path, cap=cap, own=None)
    except InputError as exc:
        return Input(facts, None, f"its input {facts.path} cannot be read again here: {exc}")
    if now.facts.sha256 != facts.sha256:
        return Input(
            facts,
            None,
            f"its input {facts.path} differs on this machine (sha256 {now.facts.sha256[:12]}…, "
            f"{now.facts.size} bytes; the line started with {facts.sha256[:12]}…, {facts.size} bytes)",
        )
    return now


async def _in_daemon_thread(own: OwnInput, cap: int) -> bytes:
    """`own(cap)` in a daemon thread of its own: a read that never ends (a pipe whose
    writer stays) is given up at its bound, or at a cancel (Ctrl-C), and does not
    hold the process at its exit, as a thread of asyncio's executor would."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()

    def settle(data: bytes | None, error: BaseException | None) -> None:
        if done.done():
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert data is not None
            done.set_result(data)

    def work() -> None:
        try:
            data, error = own(cap), None
        except Exception as exc:  # OSError, ValueError (closed): said by the caller
            data, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, data, error)

    threading.Thread(target=work, name="dsh-stdin", daemon=True).start()
    return await done


def _read_file(where: str, written: str, cap: int) -> bytes:
    """The regular file's bytes, at most `cap`; InputError with a sentence."""
    try:
        return read_whole(where, cap)
    except OSError as exc:
        raise InputError(f"cannot read {written}: {exc.strerror or exc}") from None
    except NotRegular:
        why = "stdin reads a file whole before the line starts"
        raise InputError(f"{written} is not a regular file: {why}") from None
    except OverCap:
        raise InputError(
            f"{written} holds more than {cap} bytes, over the cap on a command's input (limits.max_stdin)"
        ) from None

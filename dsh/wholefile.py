"""Reading a file on this machine whole, with a cap: what dsh reads before it acts
(an inventory, a host file, a command's input). A FIFO or a device put where a
file was expected is refused, never waited on; more than the cap is never read."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

#: A file is read this many bytes at a time.
CHUNK = 1 << 20


class NotRegular(Exception):
    """The path names something other than a regular file (a directory, a FIFO…)."""


class OverCap(Exception):
    """The file holds more than the cap."""


def read_whole(path: str, cap: int) -> bytes:
    """The bytes of the regular file at `path`, at most `cap` of them; OSError when it
    cannot be opened or read, NotRegular, OverCap (its size checked before a byte is
    read, and what is read counted: a file may grow meanwhile)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO: no wait for a writer
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotRegular(path)
        if info.st_size > cap:
            raise OverCap(path)
    except BaseException:
        os.close(fd)
        raise
    with open(fd, "rb") as f:
        data = read_capped(f, cap)
    if len(data) > cap:
        raise OverCap(path)
    return data


def read_capped(stream: BinaryIO, cap: int) -> bytes:
    """At most cap + 1 bytes of `stream`, read a chunk at a time (a read of cap + 1 at
    once would allocate all of it first)."""
    chunks: list[bytes] = []
    got = 0
    while got <= cap:
        chunk = stream.read(min(CHUNK, cap + 1 - got))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)

"""A host's files through its host agent (dsh.remote.hostfiles' FS and RUN): the
copies' `copying.Files` without an SFTP session, with SftpFiles' meaning and
their shape of sentence (`PATH: REASON`; the reason is the host's strerror, where
OpenSSH's SFTP server has fixed words: "No such file or directory" for its "No
such file").

A file is sent and fetched in pieces (hostfiles.PIECE), with at most copying's
window of bytes in flight (CHUNK × WINDOW, as SftpFiles holds): the agent answers
requests in order, one at a time, so a write that makes a file anew is answered
before the next piece is sent. A link that dies is FilesLost (the copy goes on
over a new connection); a reply that breaks the protocol fails the copy with a
sentence.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import BinaryIO

from dsh.remote import hostfiles, spool
from dsh.remote.copying import CHUNK, WINDOW, CopyFailed, FilesLost, NotOwner, Stat, open_source
from dsh.remote.hostfiles import PIECE, FsFailed
from dsh.remote.hostlink import HostLink, LinkLost
from dsh.remote.hostwire import ProtocolError
from dsh.remote.manifest import MAX_ENTRIES

#: Pieces in flight at once, for one file.
DEPTH = max(1, CHUNK * WINDOW // PIECE)


@contextlib.contextmanager
def _said(path: str) -> Iterator[None]:
    """The agent's errors as a copy's: CopyFailed (the path and the host's reason, or
    what broke the protocol), or FilesLost (the link died)."""
    try:
        yield
    except FsFailed as exc:
        raise CopyFailed(f"{path}: {exc.reason}") from None
    except ProtocolError as exc:
        raise CopyFailed(f"{path}: {exc}") from None
    except LinkLost as exc:
        raise FilesLost(f"dsh's host agent: {exc.why}") from None


class AgentFiles:
    """copying.Files over one host agent's link."""

    def __init__(self, link: HostLink) -> None:
        self.link = link

    async def _stat(self, path: str, op: str) -> Stat | None:
        with _said(path):
            return hostfiles.stat_of(self.link, await hostfiles.fs(self.link, op, path))

    async def lstat(self, path: str) -> Stat | None:
        return await self._stat(path, "lstat")

    async def stat(self, path: str) -> Stat | None:
        return await self._stat(path, "stat")

    async def _nothing(self, path: str, op: str, *args: bytes | str | int) -> None:
        with _said(path):
            hostfiles.nothing(self.link, await hostfiles.fs(self.link, op, *args))

    async def mkdir(self, path: str, mode: int) -> None:
        await self._nothing(path, "mkdir", path, mode)

    async def create(self, path: str, data: bytes) -> bool:
        link = self.link
        sending: deque[tuple[int, int]] = deque()
        try:
            with _said(path):
                made = hostfiles.created(link, await hostfiles.fs(link, "create", path, data[:PIECE]))
                for at in range(PIECE, len(data), PIECE) if made else ():  # a large input: the rest
                    if len(sending) >= DEPTH:
                        await self._written(sending, lambda n: None)
                    piece = data[at : at + PIECE]
                    sending.append((hostfiles.send_fs(link, "write", path, at, "0", piece), len(piece)))
                while sending:
                    await self._written(sending, lambda n: None)
        finally:
            for rid, _ in sending:
                link.finish(rid)
        return made

    async def send(
        self,
        local: str,
        path: str,
        offset: int,
        progress: Callable[[int], None],
        alive: Callable[[], bool],
    ) -> None:
        src = open_source(local)
        link = self.link
        sending: deque[tuple[int, int]] = deque()  # (request id, bytes)
        try:
            with src, _said(path):
                src.seek(offset)
                at = offset
                # Written anew: whatever has the name goes first, and the file is made
                # exclusively (a link planted there is not followed); taken up (`offset`):
                # the copy's own temporary file, a regular file. Awaited before the rest.
                if not alive():
                    raise NotOwner()
                first = src.read(PIECE)
                rid = hostfiles.send_fs(link, "write", path, at, "0" if offset else "1", first)
                hostfiles.nothing(link, await hostfiles.fs_reply(link, rid, "write"))
                progress(len(first))
                at += len(first)
                while piece := src.read(PIECE):
                    if not alive():
                        raise NotOwner()
                    if len(sending) >= DEPTH:
                        await self._written(sending, progress)
                    sending.append((hostfiles.send_fs(link, "write", path, at, "0", piece), len(piece)))
                    at += len(piece)
                while sending:
                    await self._written(sending, progress)
                if offset:
                    hostfiles.nothing(link, await hostfiles.fs(link, "truncate", path, at))
        finally:
            for rid, _ in sending:
                link.finish(rid)

    async def _written(self, sending: deque[tuple[int, int]], progress: Callable[[int], None]) -> None:
        rid, size = sending[0]
        hostfiles.nothing(self.link, await hostfiles.fs_reply(self.link, rid, "write"))
        sending.popleft()
        progress(size)

    async def fetch(
        self,
        path: str,
        sink: BinaryIO,
        offset: int,
        progress: Callable[[int], None],
        alive: Callable[[], bool],
        size: int | None = None,
    ) -> None:
        link = self.link
        limit = None if size is None else size + 1  # one byte more: did it grow?
        asked: deque[tuple[int, int]] = deque()  # (request id, bytes asked)
        ask_at = at = offset
        file: bytes | None = None  # the file the first piece came from
        try:
            with _said(path):
                while True:
                    while len(asked) < DEPTH and (limit is None or ask_at < limit):
                        if not alive():
                            raise NotOwner()
                        want = PIECE if limit is None else min(PIECE, limit - ask_at)
                        asked.append((hostfiles.send_fs(link, "read", path, ask_at, want), want))
                        ask_at += want
                    if not asked:
                        break
                    rid, want = asked[0]
                    data, which = hostfiles.data_of(link, await hostfiles.fs_reply(link, rid, "read"), want)
                    asked.popleft()
                    if file is None:
                        file = which
                    elif which != file:  # renamed over, or a link swapped in, between two pieces
                        raise CopyFailed(f"{path}: it was replaced while it was read")
                    if size is not None and at + len(data) > size:
                        raise CopyFailed(f"{path}: it grew while it was read (over the {size} bytes it had)")
                    if data:
                        try:
                            sink.write(data)
                        except OSError as exc:  # this machine's disk, not the host
                            where = getattr(sink, "name", "here")
                            raise CopyFailed(f"{where}: {exc.strerror or exc}") from None
                        at += len(data)
                        progress(len(data))
                    if len(data) < want:  # its end (the pieces asked past it are dropped)
                        break
        finally:
            for rid, _ in asked:
                link.finish(rid)

    async def rename(self, old: str, new: str) -> None:
        await self._nothing(new, "rename", old, new)

    async def chmod(self, path: str, mode: int) -> None:
        await self._nothing(path, "chmod", path, mode)

    async def symlink(self, target: str, path: str) -> None:
        await self._nothing(path, "symlink", target, path)

    async def readlink(self, path: str) -> str:
        with _said(path):
            return hostfiles.one_text(self.link, await hostfiles.fs(self.link, "readlink", path))

    async def remove(self, path: str) -> None:
        await self._nothing(path, "remove", path)

    async def listdir(self, path: str) -> list[str]:
        names: list[str] = []
        with _said(path):
            while True:
                page, more = hostfiles.names_of(
                    self.link, await hostfiles.fs(self.link, "listdir", path, len(names))
                )
                names += page
                if not more:
                    return names
                if len(names) > MAX_ENTRIES:
                    raise CopyFailed(
                        f"{path}: over {MAX_ENTRIES} entries; copy it in parts, or as an archive"
                    )

    async def shell(self, script: str, args: Sequence[str], timeout: float) -> tuple[int | None, bytes]:
        argv = spool.script_argv(script, "dsh-copy", args)  # it says `$tag start` first, as there
        try:
            ran = await hostfiles.run(self.link, argv, timeout=timeout)
        except ProtocolError as exc:
            raise CopyFailed(str(exc)) from None
        except LinkLost as exc:
            raise FilesLost(f"dsh's host agent: {exc.why}") from None
        unwrapped = spool.unwrap(argv, ran.stdout)
        if ran.status is None or unwrapped is None:
            return None, b""
        return ran.status, unwrapped[0]

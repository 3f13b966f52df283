"""A host's files over SFTP (asyncssh), for copies: dsh/remote/copying.py's `Files`.

One SFTP session per connection, opened on a copy's first use and kept with
it. SFTP's errors become CopyFailed with the path and the server's reason; a
connection that breaks is SftpLost (the copy may go on over a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import BinaryIO, TypeVar, cast

from dsh.bytestext import to_bytes
from dsh.remote import spool
from dsh.remote.copying import CHUNK, WINDOW, CopyFailed, FilesLost, NotOwner, Stat, open_source
from dsh.remote.manifest import DIR, FILE, LINK
from dsh.remote.sshrun import asyncssh, run_script

T = TypeVar("T")
#: Requests in flight per file (asyncssh splits each chunk into the server's block size).
REQUESTS = 64


class SftpLost(FilesLost):
    """The connection (or its SFTP session) broke during a copy."""


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return LINK
    return "other"


@contextlib.contextmanager
def _said(path: str) -> Iterator[None]:
    """SFTP's errors as a copy's: CopyFailed (the path and the server's reason), or
    SftpLost (the connection or its SFTP session broke)."""
    try:
        yield
    except asyncssh.SFTPError as exc:
        raise CopyFailed(f"{path}: {exc.reason or type(exc).__name__}") from None
    except (asyncssh.Error, OSError) as exc:
        raise SftpLost(str(exc) or type(exc).__name__) from None


class SftpFiles:
    """copying.Files over one SFTP session; `conn` runs the checksum and owner scripts."""

    def __init__(self, sftp: asyncssh.SFTPClient, conn: asyncssh.SSHClientConnection) -> None:
        self.sftp = sftp
        self.conn = conn

    async def _do(self, path: str, op: Callable[[], Awaitable[T]]) -> T:
        with _said(path):
            return await op()

    async def _stat(self, path: str, follow: bool) -> Stat | None:
        with _said(path):
            try:
                attrs = await (self.sftp.stat(path) if follow else self.sftp.lstat(path))
            except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                return None
        mode = attrs.permissions or 0
        return Stat(_kind(mode), stat.S_IMODE(mode), attrs.size or 0)

    async def lstat(self, path: str) -> Stat | None:
        return await self._stat(path, False)

    async def stat(self, path: str) -> Stat | None:
        return await self._stat(path, True)

    async def mkdir(self, path: str, mode: int) -> None:
        await self._do(path, lambda: self.sftp.mkdir(path, asyncssh.SFTPAttrs(permissions=mode)))

    async def create(self, path: str, data: bytes) -> bool:
        try:
            f = await self._do(
                path, lambda: self.sftp.open(path, "xb", asyncssh.SFTPAttrs(permissions=0o600))
            )
        except CopyFailed:
            if await self.lstat(path) is not None:
                return False
            raise
        with _said(path):
            try:
                await f.write(data)
            finally:
                await f.close()
        return True

    async def send(
        self,
        local: str,
        path: str,
        offset: int,
        progress: Callable[[int], None],
        alive: Callable[[], bool],
    ) -> None:
        src = open_source(local)
        # Written anew: whatever has the name goes first, and the file is made exclusively
        # (O_EXCL: a link planted there, in a directory others can write, is not followed).
        # Taken up (`offset`): the copy's own temporary file, a regular file (lstat'ed).
        with src, _said(path):
            if not offset:
                with contextlib.suppress(asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                    await self.sftp.remove(path)
            attrs = asyncssh.SFTPAttrs(permissions=0o600)
            f = await self.sftp.open(path, "r+b" if offset else "xb", attrs, max_requests=REQUESTS)
            sending: set[asyncio.Future[None]] = set()

            async def write(chunk: bytes, at: int) -> None:
                await f.write(chunk, at)
                progress(len(chunk))

            try:
                src.seek(offset)
                at = offset
                while chunk := src.read(CHUNK):
                    if not alive():
                        raise NotOwner()
                    if len(sending) >= WINDOW:  # the next batch goes once one is done
                        done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                        for one in done:
                            one.result()
                    sending.add(asyncio.ensure_future(write(chunk, at)))
                    at += len(chunk)
                for failed in await asyncio.gather(*sending, return_exceptions=True):
                    if isinstance(failed, BaseException):
                        raise failed
                sending.clear()
                if offset:
                    await f.truncate(at)
            finally:
                for one in sending:
                    one.cancel()
                with contextlib.suppress(asyncssh.Error, OSError):
                    await f.close()

    async def fetch(
        self,
        path: str,
        sink: BinaryIO,
        offset: int,
        progress: Callable[[int], None],
        alive: Callable[[], bool],
        size: int | None = None,
    ) -> None:
        with _said(path):
            f = await self.sftp.open(path, "rb", max_requests=REQUESTS)
            try:
                at = offset
                while True:
                    if not alive():
                        raise NotOwner()
                    want = CHUNK if size is None else min(CHUNK, size - at + 1)  # one byte more: grown?
                    data = cast(bytes, await f.read(max(want, 1), at))
                    if not data:
                        break
                    if size is not None and at + len(data) > size:
                        raise CopyFailed(f"{path}: it grew while it was read (over the {size} bytes it had)")
                    try:
                        sink.write(data)
                    except OSError as exc:  # this machine's disk, not the connection
                        raise CopyFailed(f"{getattr(sink, 'name', 'here')}: {exc.strerror or exc}") from None
                    at += len(data)
                    progress(len(data))
            finally:
                with contextlib.suppress(asyncssh.Error, OSError):
                    await f.close()

    async def rename(self, old: str, new: str) -> None:
        await self._do(new, lambda: self.sftp.posix_rename(old, new))

    async def chmod(self, path: str, mode: int) -> None:
        await self._do(path, lambda: self.sftp.chmod(path, mode))

    async def symlink(self, target: str, path: str) -> None:
        await self._do(path, lambda: self.sftp.symlink(target, path))

    async def readlink(self, path: str) -> str:
        return str(await self._do(path, lambda: self.sftp.readlink(path)))

    async def remove(self, path: str) -> None:
        await self._do(path, lambda: self.sftp.remove(path))

    async def listdir(self, path: str) -> list[str]:
        names = await self._do(path, lambda: self.sftp.listdir(path))
        return [str(n) for n in names]

    async def shell(self, script: str, args: Sequence[str], timeout: float) -> tuple[int | None, bytes]:
        argv = spool.script_argv(script, "dsh-copy", args)
        try:
            done = await run_script(self.conn, to_bytes(spool.as_stdin(argv)), timeout=timeout)
        except TimeoutError:
            return None, b""
        except (asyncssh.Error, OSError) as exc:
            raise SftpLost(str(exc) or type(exc).__name__) from None
        out = done.stdout if isinstance(done.stdout, bytes) else b""
        unwrapped = spool.unwrap(argv, out)
        if unwrapped is None:
            return None, b""
        return done.exit_status, unwrapped[0]


async def open_sftp(conn: asyncssh.SSHClientConnection, timeout: float) -> asyncssh.SFTPClient:
    """An SFTP session on `conn`, within `timeout` (SftpLost when it cannot be had;
    CopyFailed when the host has no SFTP server)."""
    try:
        return await asyncio.wait_for(conn.start_sftp_client(path_errors="surrogateescape"), timeout)
    except asyncssh.ChannelOpenError as exc:
        raise CopyFailed(f"the host has no SFTP server: {exc.reason}") from None
    except TimeoutError:
        raise SftpLost(f"no SFTP session within {timeout:g}s") from None
    except (asyncssh.Error, OSError) as exc:
        raise SftpLost(str(exc) or type(exc).__name__) from None

"""A host's files over SFTP (asyncssh), for copies: dsh/remote/copying.py's `Files`.

One SFTP session per connection, opened on a copy's first use and kept with
it. SFTP's errors become CopyFailed with the path and the server's reason; a
connection that breaks is SftpLost (the copy may go on over a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import stat
from collections.abc import Callable, Sequence
from typing import BinaryIO, cast

import asyncssh

from dsh.remote import spool
from dsh.remote.copying import CHUNK, WINDOW, CopyFailed, NotOwner, Stat
from dsh.remote.manifest import DIR, FILE, LINK

#: Requests in flight per file (asyncssh splits each chunk into the server's block size).
REQUESTS = 64


class SftpLost(Exception):
    """The connection (or its SFTP session) broke during a copy."""


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return LINK
    return "other"


class SftpFiles:
    """copying.Files over one SFTP session; `conn` runs the checksum and owner scripts."""

    def __init__(self, sftp: asyncssh.SFTPClient, conn: asyncssh.SSHClientConnection) -> None:
        self.sftp = sftp
        self.conn = conn

    async def _do(self, path: str, op: Callable[[], object]) -> object:
        try:
            return await op()  # type: ignore[misc]
        except asyncssh.SFTPError as exc:
            raise CopyFailed(f"{path}: {exc.reason or type(exc).__name__}") from None
        except (asyncssh.Error, OSError) as exc:
            raise SftpLost(str(exc) or type(exc).__name__) from None

    async def _stat(self, path: str, follow: bool) -> Stat | None:
        try:
            attrs = await (self.sftp.stat(path) if follow else self.sftp.lstat(path))
        except (asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
            return None
        except asyncssh.SFTPError as exc:
            raise CopyFailed(f"{path}: {exc.reason or type(exc).__name__}") from None
        except (asyncssh.Error, OSError) as exc:
            raise SftpLost(str(exc) or type(exc).__name__) from None
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
            f = await self.sftp.open(path, "xb", asyncssh.SFTPAttrs(permissions=0o600))
        except asyncssh.SFTPError as exc:
            if await self.lstat(path) is not None:
                return False
            raise CopyFailed(f"{path}: {exc.reason or type(exc).__name__}") from None
        except (asyncssh.Error, OSError) as exc:
            raise SftpLost(str(exc) or type(exc).__name__) from None
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
        # Written anew: whatever has the name goes first, and the file is made exclusively
        # (O_EXCL: a link planted there, in a directory others can write, is not followed).
        # Taken up (`offset`): the copy's own temporary file, a regular file (lstat'ed).
        mode = "r+b" if offset else "xb"
        try:
            if not offset:
                with contextlib.suppress(asyncssh.SFTPNoSuchFile, asyncssh.SFTPNoSuchPath):
                    await self.sftp.remove(path)
            f = await self.sftp.open(path, mode, asyncssh.SFTPAttrs(permissions=0o600), max_requests=REQUESTS)
        except asyncssh.SFTPError as exc:
            raise CopyFailed(f"{path}: {exc.reason or type(exc).__name__}") from None
        except (asyncssh.Error, OSError) as exc:
            raise SftpLost(str(exc) or type(exc).__name__) from None
        sending: set[asyncio.Future[None]] = set()

        async def write(chunk: bytes, at: int) -> None:
            await f.write(chunk, at)
            progress(len(chunk))

        try:
            with open(local, "rb", buffering=0) as src:
                src.seek(offset)
                at = offset
                while True:
                    if not alive():
                        raise NotOwner()
                    chunk = src.read(CHUNK)
                    if not chunk:
                        break
                    if len(sending) >= WINDOW:  # the next batch goes once one is done
                        done, sending = await asyncio.wait(sending, return_when=asyncio.FIRST_COMPLETED)
                        for one in done:
                            one.result()
                    sending.add(asyncio.ensure_future(write(chunk, at)))
                    at += len(chunk)
                if sending:
                    for failed in await asyncio.gather(*sending, return_exceptions=True):
                        if isinstance(failed, BaseException):
                            raise failed
                    sending.clear()
            if offset:
                await f.truncate(at)
        except OSError as exc:
            if isinstance(exc, asyncssh.Error | ConnectionError):
                raise SftpLost(str(exc)) from None
            raise CopyFailed(f"{local}: {exc.strerror or exc}") from None
        except asyncssh.SFTPError as exc:
            raise CopyFailed(f"{path}: {exc.reason or type(exc).__name__}") from None
        except asyncssh.Error as exc:
            raise SftpLost(str(exc) or type(exc).__name__) from None
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
    ) -> None:
        try:
            f = await self.sftp.open(path, "rb", max_requests=REQUESTS)
        except asyncssh.SFTPError as exc:
            raise CopyFailed(f"{path}: {exc.reason or type(exc).__name__}") from None
        except (asyncssh.Error, OSError) as exc:
            raise SftpLost(str(exc) or type(exc).__name__) from None
        try:
            at = offset
            while True:
                if not alive():
                    raise NotOwner()
                data = cast(bytes, await f.read(CHUNK, at))
                if not data:
                    break
                sink.write(data)
                at += len(data)
                progress(len(data))
        except asyncssh.SFTPError as exc:
            raise CopyFailed(f"{path}: {exc.reason or type(exc).__name__}") from None
        except asyncssh.Error as exc:
            raise SftpLost(str(exc) or type(exc).__name__) from None
        finally:
            with contextlib.suppress(asyncssh.Error, OSError):
                await f.close()

    async def rename(self, old: str, new: str) -> None:
        await self._do(new, lambda: self.sftp.posix_rename(old, new))

    async def chmod(self, path: str, mode: int) -> None:
        await self._do(path, lambda: self.sftp.chmod(path, mode))

    async def symlink(self, target: str, path: str) -> None:
        await self._do(path, lambda: self.sftp.symlink(target, path))

    async def link(self, path: str, new: str) -> None:
        await self._do(new, lambda: self.sftp.link(path, new))

    async def readlink(self, path: str) -> str:
        return str(await self._do(path, lambda: self.sftp.readlink(path)))

    async def remove(self, path: str) -> None:
        await self._do(path, lambda: self.sftp.remove(path))

    async def listdir(self, path: str) -> list[str]:
        names = await self._do(path, lambda: self.sftp.listdir(path))
        return [str(n) for n in names]  # type: ignore[attr-defined]

    async def shell(self, script: str, args: Sequence[str], timeout: float) -> tuple[int | None, bytes]:
        argv = spool.script_argv(script, "dsh-copy", args)
        try:
            done = await self.conn.run(
                spool.REMOTE_SHELL, input=spool.as_stdin(argv).encode(), encoding=None, timeout=timeout
            )
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

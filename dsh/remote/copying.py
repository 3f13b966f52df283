"""Copies as actions: a file or a tree to a host (put) or from it (get).

A copy is claimed in the host's spool like a command (`ACTION@ALIAS.claim`,
created exclusively over SFTP: at most once), and ends with a status there
(`ACTION@ALIAS.status`, `0`), written last: a claim without a status is a
copy an owner began and did not finish, which the next owner finishes (the
claim is not made again: `CopyJob.resume`).

Every file is written beside its destination under a temporary name of its
own (`.NAME.dsh-ID`, ID from the spot: the same for the next owner, which
goes on from its length), and renamed into place only after its SHA-256 is
the source's: a destination is never seen half-written. A destination that
holds the source's bytes already is left alone (not even its mtime changes):
sizes first, then SHA-256 as the host computes it (`sha256sum`, `shasum` or
`openssl`; with none of them nothing is skipped, and a file sent is checked
by reading it back). A get writes on this machine the same way.

`put --sudo` sends the file to the spool (`ACTION@ALIAS.put`, private), then
installs it as root (or the user named) with one command through the spool
wrapper, so that sudo's password is asked as any command's is
(dsh/remote/askpass.py), and at most once (its own claim: `ACTION.i@ALIAS`).

The host's files are reached through `Files` (the host agent's: dsh/remote/
agentfiles.py, else SFTP: dsh/remote/sftp.py); this module holds no SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
from collections.abc import Callable, Sequence
from typing import BinaryIO, Protocol

from dsh.record import record
from dsh.remote.base import Copied, CopyFacts, CopyJob, Exec, OutputSink, Progress, Remote, Spot
from dsh.remote.manifest import DIR

#: Bytes of a file sent or fetched per request batch (the SFTP client splits them into
#: the server's block size), and the batches of a file sent at once: what one host's put
#: holds in memory (2 MiB: 50 distinct hosts at once hold ~100 MB).
CHUNK = 1 << 20
WINDOW = 2
#: A taken-up put goes on this far before where its temporary file stops: the batches
#: in flight when it stopped may have left holes there.
RESUME_BACK = WINDOW * CHUNK
#: Files whose destination is stat'ed at once.
PARALLEL = 32
#: An install through sudo, and the checks, have at least this long.
MIN_STEP = 1.0


@record
class Stat:
    """A path on a host: `kind` is manifest.FILE, DIR, LINK or "other"."""

    kind: str
    mode: int
    size: int


class CopyFailed(Exception):
    """A copy cannot go on, on this host (its outcome is failed, this its message)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FilesLost(Exception):
    """The way to a host's files broke during a copy (the connection, its SFTP session,
    the host agent's link): the copy may go on over a new connection."""


class NotOwner(Exception):
    """The session's lease is lost or in doubt: the copy stops where it is, for the
    next owner to finish."""


class Files(Protocol):
    """A host's files (the host agent's, or SFTP): paths are as written for the host
    (relative: under the login user's home). Errors are CopyFailed, with the path and
    the reason; FilesLost when the way to them broke."""

    async def lstat(self, path: str) -> Stat | None: ...

    async def stat(self, path: str) -> Stat | None: ...

    async def mkdir(self, path: str, mode: int) -> None: ...

    async def create(self, path: str, data: bytes) -> bool:
        """Create `path` exclusively (mode 0600) holding `data`; False if it exists."""
        ...

    async def send(
        self, local: str, path: str, offset: int, progress: Callable[[int], None], alive: Callable[[], bool]
    ) -> None:
        """Write file `local` to `path` (mode 0600) from `offset` on, cut to `local`'s size."""
        ...

    async def fetch(
        self,
        path: str,
        sink: BinaryIO,
        offset: int,
        progress: Callable[[int], None],
        alive: Callable[[], bool],
        size: int | None = None,
    ) -> None:
        """Read `path` from `offset` to its end into `sink` (already at `offset`); no
        more than `size` bytes in all (CopyFailed when it holds more: a host's stream
        of a file is read no further than its size)."""
        ...

    async def rename(self, old: str, new: str) -> None:
        """Rename, replacing `new` (POSIX rename)."""
        ...

    async def chmod(self, path: str, mode: int) -> None: ...

    async def symlink(self, target: str, path: str) -> None: ...

    async def readlink(self, path: str) -> str: ...

    async def remove(self, path: str) -> None: ...

    async def listdir(self, path: str) -> list[str]: ...

    async def shell(self, script: str, args: Sequence[str], timeout: float) -> tuple[int | None, bytes]:
        """Run a tagged script (spool.script_argv: it prints its start marker first)
        with `args`: its exit status (None: it did not run or end) and stdout."""
        ...


#: Prints one line per file argument: its SHA-256, or `-` when it cannot be read;
#: `none` alone when the host has no tool to compute one. OpenSSL first: it uses the
#: CPU's SHA instructions (here 100 MB in 0.09 s; coreutils' sha256sum 0.86 s).
SUMS = r"""printf '%s start\n' "$tag"
have=
for t in openssl sha256sum shasum; do command -v "$t" >/dev/null 2>&1 && have="$have $t"; done
[ -n "$have" ] || { echo none; exit 0; }
for f do
  l=-
  for t in $have; do  # the next tool where one fails (an old or broken openssl)
    case $t in
      openssl) o=$(openssl dgst -sha256 -r "$f" 2>/dev/null) ;;
      sha256sum) o=$(sha256sum -- "$f" 2>/dev/null) ;;
      *) o=$(shasum -a 256 -- "$f" 2>/dev/null) ;;
    esac || continue
    o=${o%% *}; o=${o#\\}
    case $o in *[!0-9a-f]*|'') continue ;; esac
    [ "${#o}" = 64 ] && { l=$o; break; }
  done
  printf '%s\n' "$l"
done
"""


class Blobs:
    """What a session's puts share on one machine: the first copy of a file (by its
    SHA-256) to a machine sends it; the others on that machine (other aliases of it,
    as their identity says: user@hostname:port and host key) wait for it, then copy it
    there from the session's spool (`SPOOL/blobs/SHA256`, a copy of the first copy's
    file, removed with the spool) and check its SHA-256 as if it had been sent. A machine that does not
    hold the blob after all (cloned host keys) is sent the file."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, str], asyncio.Future[str | None]] = {}

    def claim(self, machine: str, sha256: str) -> tuple[bool, asyncio.Future[str | None]]:
        """Whether this copy sends the file to `machine` (then it sets the future to the
        blob's path, or None), and the future the others wait on."""
        fut = self._made.get((machine, sha256))
        if fut is None:
            fut = self._made[(machine, sha256)] = asyncio.get_running_loop().create_future()
            return True, fut
        return False, fut


def temp_name(path: str, spot: Spot) -> str:
    """Where a file is written before it is renamed to `path`: beside it, hidden, the
    same for every owner of the action."""
    ident = hashlib.sha256(f"{spot.session}/{spot.action}@{spot.alias}".encode()).hexdigest()[:12]
    head, base = posixpath.split(path)
    return posixpath.join(head, f".{base[:80]}.dsh-{ident}")


def open_source(local: str) -> BinaryIO:
    """A put's file on this machine, opened for `Files.send` (unbuffered; the caller
    closes it); CopyFailed with its path and why when it cannot be."""
    try:
        return open(local, "rb", buffering=0)  # the caller closes it
    except OSError as exc:
        raise CopyFailed(f"{local}: {exc.strerror or exc}") from None


async def mkdirs(files: Files, path: str, mode: int) -> None:
    """`mkdir -p` on a host: the missing directories of `path`, each with `mode`."""
    missing: list[str] = []
    here = path
    while here not in ("", "/", "."):
        st = await files.stat(here)
        if st is not None:
            if st.kind != DIR:
                raise CopyFailed(f"{here}: exists and is not a directory")
            break
        missing.append(here)
        here = posixpath.dirname(here)
    for d in reversed(missing):
        with contextlib.suppress(CopyFailed):
            await files.mkdir(d, mode)
        st = await files.stat(d)
        if st is None or st.kind != DIR:
            raise CopyFailed(f"{d}: cannot make the directory")


def join(root: str, rel: str) -> str:
    return posixpath.join(root, rel) if rel else root


class Copier:
    """One copy on one host, from its claim to its status."""

    def __init__(
        self,
        files: Files,
        job: CopyJob,
        spot: Spot,
        *,
        root: str,
        deadline: float,
        progress: Progress,
        alive: Callable[[], bool],
        remote: Remote | None = None,
        output: OutputSink | None = None,
        clock: Callable[[], float] | None = None,
        blobs: Blobs | None = None,
        machine: str = "",
    ) -> None:
        self.files = files
        self.job = job
        self.spot = spot
        self.spool = f"{root}/{spot.session}"
        self.base = f"{self.spool}/{spot.action}@{spot.alias}"
        self.deadline = deadline
        self.alive = alive
        self.remote = remote
        self.output = output or (lambda stream, data: None)
        self.clock = clock or asyncio.get_running_loop().time
        #: The puts of this session, shared per machine (`machine`: who the host is).
        self.blobs = blobs
        self.machine = machine
        self.done = 0
        self.total = 0
        self._progress = progress
        #: Temporary files written and not yet renamed (removed when the copy ends early).
        self.temps: set[str] = set()
        self.local_temps: set[str] = set()
        #: Whether this copier holds the claim (made it, or took the copy up): only then
        #: may it clean up and write a status.
        self.claimed = job.resume

    def left(self) -> float:
        return max(self.deadline - self.clock(), MIN_STEP)

    def moved(self, n: int) -> None:
        self.done += n
        self._progress(self.done, self.total)

    async def run(self) -> Copied:
        """The copy, claimed (or taken up), its status written last. Raises CopyFailed
        and NotOwner; a timeout or a cancellation is the caller's (then `abandon`)."""
        if not self.job.resume:
            await self._claim()
        try:
            done = await self.copy()
        except TimeoutError:  # an OSError too: the copy's deadline, the caller's to say
            raise
        except OSError as exc:  # this machine's side (a get's destination, a put's source)
            where = f"{exc.filename}: " if exc.filename else ""
            raise CopyFailed(f"{where}{exc.strerror or exc}") from None
        await self.status("0")
        return Copied(Exec("ok", 0, 0.0), done)

    async def copy(self) -> CopyFacts:
        """The copy itself, between its claim and its status (Put's, Get's)."""
        raise NotImplementedError

    async def _claim(self) -> None:
        if not await self._create_claim():
            raise CopyFailed(f"claimed: {self.spot.action} on {self.spot.alias} was started before")
        self.claimed = True

    async def _create_claim(self) -> bool:
        try:
            return await self.files.create(self.base + ".claim", b"copy\n")
        except CopyFailed:
            await self.mkdirs(self.spool, 0o700)
            return await self.files.create(self.base + ".claim", b"copy\n")

    async def status(self, what: str) -> None:
        """The copy's end in its spool (through a temporary name: read whole or not at all)."""
        tmp = self.base + ".status.tmp"
        with contextlib.suppress(CopyFailed):
            await self.files.remove(tmp)
        await self.files.create(tmp, f"{what}\n".encode())
        await self.files.rename(tmp, self.base + ".status")

    async def abandon(self, why: str) -> None:
        """Ended early (timed out, cancelled, failed): remove what was written and not
        renamed, and say why in the spool; nothing when the claim is another's."""
        if not self.claimed:
            return
        for path in list(self.temps):
            with contextlib.suppress(CopyFailed):
                await self.files.remove(path)
        for path in list(self.local_temps):
            with contextlib.suppress(OSError):
                os.unlink(path)
        with contextlib.suppress(CopyFailed):
            await self.status(why)

    async def mkdirs(self, path: str, mode: int) -> None:
        """`mkdir -p`: the missing directories of `path`, each with `mode`."""
        await mkdirs(self.files, path, mode)

    async def sums(self, paths: Sequence[str]) -> dict[str, str] | None:
        """The host's SHA-256 of each path (one exec for all of them; a path it cannot
        read is missing); None when the host has no tool to compute one."""
        if not paths:
            return {}
        found: dict[str, str] = {}
        for start in range(0, len(paths), 200):
            part = list(paths[start : start + 200])
            named = [f"./{p}" if p.startswith("-") else p for p in part]  # never an option
            code, out = await self.files.shell(SUMS, named, self.left())
            lines = out.decode("utf-8", "replace").split("\n")
            if code != 0:
                raise CopyFailed(f"cannot compute SHA-256 sums on {self.spot.alias}")
            if lines and lines[0].strip() == "none":
                return None
            for path, line in zip(part, lines, strict=False):
                value = line.strip().lstrip("\\")
                if len(value) == 64:
                    found[path] = value.lower()
        return found

"""A get: a file or a tree from a host to this machine, written here as a put writes
there (dsh/remote/copying.py): beside its destination, checked against the host's
SHA-256, renamed into place; a file that holds those bytes already is left alone."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import Counter

from dsh.remote.base import CopyFacts, Spot
from dsh.remote.copying import CHUNK, Copier, CopyFailed, Stat, join, temp_name
from dsh.remote.manifest import DIR, FILE, LINK, MAX_ENTRIES, Entry, file_sha256, tree_digest


class Get(Copier):
    """A copy from the host to this machine."""

    async def copy(self) -> CopyFacts:
        facts = self.job.facts
        src, local = facts.remote, facts.local
        st = await self.files.stat(src)
        if st is None:
            raise CopyFailed(f"{src}: no such file or directory on {self.spot.alias}")
        if st.kind == FILE:
            found = [("", st)]
        elif st.kind == DIR:
            found = [("", st)]
            await self._walk(src, found)
        else:
            raise CopyFailed(f"{src}: not a file or a directory")
        self.total = sum(s.size for _, s in found if s.kind == FILE)
        sums = await self.sums([join(src, rel) for rel, s in found if s.kind == FILE])
        parent = os.path.dirname(local)
        if parent:
            await asyncio.to_thread(os.makedirs, parent, exist_ok=True)
        entries: list[Entry] = []
        changed = False
        real = await asyncio.to_thread(os.path.realpath, local)  # once: each entry is held to it
        # Directories made or found here as directories, never links (`_local_dir`): what is
        # in one whose parents are too is inside the tree without resolving its whole path
        # again (a realpath per entry made a tree 1,100 deep take 25 s: each walks every parent).
        checked = {""}
        for rel, s in found:
            here, there = os.path.join(local, rel) if rel else local, join(src, rel)
            if rel and os.path.dirname(rel) not in checked:
                _inside(local, real, rel)
            if s.kind == DIR:
                changed |= await asyncio.to_thread(_local_dir, here, s.mode)
                checked.add(rel)
                entries.append(Entry(rel, DIR, s.mode))
            elif s.kind == LINK:
                target = await self.files.readlink(there)
                changed |= await asyncio.to_thread(_local_link, here, target, self.spot)
                entries.append(Entry(rel, LINK, s.mode, target=target))
            elif s.kind == FILE:
                want = sums.get(there) if sums is not None else None
                digest, wrote = await self._fetch(there, here, s, want)
                changed |= wrote
                size = await asyncio.to_thread(os.path.getsize, here)  # what came, not what was said
                entries.append(Entry(rel, FILE, s.mode, size, digest))
        digest = entries[0].sha256 if entries[0].kind == FILE else tree_digest(entries)
        size = sum(e.size for e in entries)
        return CopyFacts(facts.direction, local, src, digest, not changed, size)

    async def _walk(self, root: str, found: list[tuple[str, Stat]]) -> None:
        """The tree under `root`, each directory before what it holds (a stack, not
        recursion: a host may claim any depth)."""
        stack = [""]
        while stack:
            rel = stack.pop()
            names = [n for n in await self.files.listdir(join(root, rel)) if n not in (".", "..")]
            counts = Counter(names)
            below: list[str] = []
            for name in sorted(names):
                if "/" in name or "\0" in name or not name or counts[name] > 1:  # a host's word only
                    where = join(root, rel)
                    raise CopyFailed(f"{where}: the host lists {name!r}, which names no entry of it")
                if len(found) >= MAX_ENTRIES:
                    raise CopyFailed(f"{root}: over {MAX_ENTRIES} entries; get it in parts, or as an archive")
                sub = f"{rel}/{name}" if rel else name
                st = await self.files.lstat(join(root, sub))
                if st is None or st.kind not in (FILE, DIR, LINK):
                    continue  # gone since, or a device or a pipe: not copied
                found.append((sub, st))
                if st.kind == DIR:
                    below.append(sub)
            stack.extend(reversed(below))

    async def _fetch(self, there: str, here: str, st: Stat, want: str | None) -> tuple[str, bool]:
        """One file from the host: its SHA-256, and whether it was written here."""
        same = want is not None and os.path.isfile(here) and os.path.getsize(here) == st.size
        if same and await asyncio.to_thread(file_sha256, here) == want:
            self.moved(st.size)
            return str(want), False
        tmp = temp_name(here, self.spot)
        self.local_temps.add(tmp)
        offset = 0
        if self.job.resume and not os.path.islink(tmp) and os.path.isfile(tmp):
            offset = max(0, (min(os.path.getsize(tmp), st.size) // CHUNK - 1) * CHUNK)
        start = self.done
        for attempt in (1, 2):
            self.done = start
            self.moved(offset)
            if not offset:  # made anew, exclusively: a link planted there is not followed
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
            flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (0 if offset else os.O_CREAT | os.O_EXCL)
            fd = os.open(tmp, flags, 0o600)
            with os.fdopen(fd, "wb") as sink:
                sink.seek(offset)
                await self.files.fetch(there, sink, offset, self.moved, self.alive, size=st.size)
                sink.truncate()
                os.fchmod(sink.fileno(), _local_mode(st.mode))  # the file's bits, no set-id
            digest = await asyncio.to_thread(file_sha256, tmp)
            if want is None or digest == want:
                break
            if attempt == 2 or offset == 0:
                raise CopyFailed(f"{there}: what came from the host is not what it holds (SHA-256 differs)")
            offset = 0
        os.replace(tmp, here)
        self.local_temps.discard(tmp)
        return digest, True


def _inside(root: str, real: str, rel: str) -> None:
    """Refuse to write `rel` under `root` (whose real path is `real`) through a link on
    the way (one the host had made as a link, then named as a directory): what a get
    writes stays in its tree."""
    parent = os.path.dirname(os.path.join(root, rel))
    expected = os.path.join(real, os.path.dirname(rel))
    if os.path.realpath(parent) != os.path.normpath(expected):
        raise CopyFailed(f"{os.path.join(root, rel)}: a link on the way leads out of {root}; not written")


def _umask() -> int:
    """This process's umask, read without changing it (Linux says it in /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _local_mode(mode: int) -> int:
    """What a get keeps of a host's permission bits here: read, write and execute less
    the umask, as sftp's get does; never set-user-id, set-group-id or sticky (a host's
    file must not become a set-id program of this machine's user)."""
    return mode & 0o777 & ~_umask()


def _local_dir(path: str, mode: int) -> bool:
    if os.path.islink(path):
        raise CopyFailed(f"{path}: a link, where the host has a directory; not written through")
    if os.path.isdir(path):
        return False
    os.makedirs(path, exist_ok=True)
    os.chmod(path, _local_mode(mode))
    return True


def _local_link(path: str, target: str, spot: Spot) -> bool:
    if "\0" in target or not target:
        raise CopyFailed(f"{path}: the host's link names {target!r}, which no link here can")
    if os.path.islink(path) and os.readlink(path) == target:
        return False
    tmp = temp_name(path, spot)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, path)
    return True

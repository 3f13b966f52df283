"""What a copy's source is: a file, or a directory tree, read once, with its checksums.

A put reads its SRC once per line (every host gets the same bytes), into a
`Manifest`: each entry's kind, permission bits, size and SHA-256 (a link's
target instead). A file's digest is its SHA-256, as `sha256sum` prints it; a
tree's is the SHA-256 of its entries' lines (`tree_digest`), so that two trees
with the same names, kinds, modes and contents have the same one. The intent
keeps the digest: a new owner reads SRC again and refuses to go on when it
differs.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable

from dsh.errors import DshError
from dsh.record import record

#: Bytes read at a time while hashing.
CHUNK = 1 << 20
#: Entries a tree may hold: more is refused, not walked for ever.
MAX_ENTRIES = 100_000
FILE, DIR, LINK = "file", "dir", "link"


class SourceError(DshError):
    """A copy's source cannot be read (missing, unreadable, not a file or a directory)."""


@record
class Entry:
    """One thing in a copy's source: `path` is relative to the source (the source
    itself: ""), `mode` its permission bits; a file's `size` and `sha256`; a link's
    `target` (copied as it is, never followed)."""

    path: str
    kind: str
    mode: int
    size: int = 0
    sha256: str = ""
    target: str = ""


@record
class Manifest:
    """A copy's source as read: `root` (absolute), its entries (each directory before
    what it holds; a file source is its one entry ""), its files' total size and its
    digest."""

    root: str
    entries: tuple[Entry, ...]
    size: int
    sha256: str

    @property
    def is_dir(self) -> bool:
        return self.entries[0].kind == DIR


def file_sha256(path: str) -> str:
    """The SHA-256 of a file's bytes, in hex (OSError as the system says it)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def tree_digest(entries: Iterable[Entry]) -> str:
    """The digest of a tree: the SHA-256 of one line per entry, in path order."""
    digest = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.path):
        line = f"{e.kind} {e.mode:o} {e.size} {e.sha256} {e.target!r} {e.path!r}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def read_manifest(path: str) -> Manifest:
    """Read a copy's source (blocking: run it in a thread). SourceError with a
    sentence when it cannot be read whole."""
    if "\0" in path:
        raise SourceError("a copy's path holds a NUL byte")
    root = os.path.abspath(path)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise SourceError(f"{path}: no such file or directory") from None
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):  # the source itself is what it names
        try:
            st = os.stat(root)
        except OSError as exc:
            raise SourceError(f"{path}: a link to nothing readable ({exc.strerror})") from None
    entries: list[Entry] = []
    if stat.S_ISREG(st.st_mode):
        entries.append(_file(root, "", st))
    elif stat.S_ISDIR(st.st_mode):
        entries.append(Entry("", DIR, stat.S_IMODE(st.st_mode)))
        _walk(root, entries)
    else:
        raise SourceError(f"{path}: not a file or a directory")
    size = sum(e.size for e in entries)
    digest = entries[0].sha256 if entries[0].kind == FILE else tree_digest(entries)
    return Manifest(root, tuple(entries), size, digest)


def _file(full: str, rel: str, st: os.stat_result) -> Entry:
    try:
        digest = file_sha256(full)
    except OSError as exc:
        raise SourceError(f"{full}: {exc.strerror}") from None
    return Entry(rel, FILE, stat.S_IMODE(st.st_mode), st.st_size, digest)


def _walk(root: str, entries: list[Entry]) -> None:
    """The tree under `root`, each directory before what it holds (a stack, not
    recursion: a tree may be deeper than Python's stack)."""
    stack = [""]
    while stack:
        rel = stack.pop()
        here = os.path.join(root, rel) if rel else root
        try:
            names = sorted(os.listdir(here))
        except OSError as exc:
            raise SourceError(f"{here}: {exc.strerror}") from None
        below: list[str] = []
        for name in names:
            if len(entries) >= MAX_ENTRIES:
                raise SourceError(f"{root}: over {MAX_ENTRIES} entries; copy it in parts, or as an archive")
            sub = f"{rel}/{name}" if rel else name
            full = os.path.join(root, sub)
            try:
                st = os.lstat(full)
            except OSError as exc:
                raise SourceError(f"{full}: {exc.strerror}") from None
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                entries.append(Entry(sub, LINK, mode, target=os.readlink(full)))
            elif stat.S_ISDIR(st.st_mode):
                entries.append(Entry(sub, DIR, mode))
                below.append(sub)
            elif stat.S_ISREG(st.st_mode):
                entries.append(_file(full, sub, st))
            else:
                raise SourceError(f"{full}: not a file, a directory or a link (no devices or pipes)")
        stack.extend(reversed(below))

"""The private state directory: where it is, and making things private in it.

`$XDG_STATE_HOME/dsh` (default `~/.local/state/dsh`) holds what is its user's
alone: the local store, the local spool, the executors' logs and sockets, the
prompt's history (typed lines, secrets among them). Whatever command makes it
or anything in it first, directories are 0700 and files 0600 from the moment
they exist, whatever the umask: every creator goes through this module. A
state directory that an older dsh left open to others is closed again (its
group and other bits taken off, silently) when dsh next uses it.

Also the one test of "a directory that is this user's alone" (`is_own_private`),
for places outside it (the sockets' fallback under TMPDIR).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from dsh.errors import UsageError

#: The mode of every directory dsh makes for itself.
DIR_MODE = 0o700
#: The mode of every file dsh makes in them.
FILE_MODE = 0o600


def directory(env: Mapping[str, str]) -> Path:
    """Where the state directory is (nothing is made)."""
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME", "~"), ".local", "state")
    return Path(base).expanduser() / "dsh"


def private_dir(root: Path, *parts: str) -> Path:
    """`root/parts…` as private directories: each one missing is made 0700 (so are
    missing parents of `root`, as the XDG spec asks); `root` and each part that
    exists already and is this user's loses its group and other bits. A
    directory that cannot be made is a UsageError (a sentence)."""
    paths = [root]
    for part in parts:
        paths.append(paths[-1] / part)
    for path in paths:
        try:
            make_dirs(path)
        except OSError as exc:
            raise UsageError(f"cannot make the directory {path}: {exc.strerror or exc}") from None
        if not path.is_dir():
            raise UsageError(f"{path} is not a directory: dsh keeps its state there")
        _close_dir(path)
    return paths[-1]


def make_dirs(path: Path) -> None:
    """Make `path` and its missing parents, each 0700 from the start (mkdir's
    mode under any umask is at most that); existing ones are left as they are."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return  # (not a directory: the caller's next use of it says so)
    except FileNotFoundError:
        if path.parent == path:
            raise
        make_dirs(path.parent)
        try:
            os.mkdir(path, DIR_MODE)
        except FileExistsError:  # made meanwhile by another dsh
            return


def open_private(path: Path) -> BinaryIO:
    """`path` opened for appending, made 0600 if it is new (and closed to others if
    it was not); its directory must exist (else a UsageError)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    _close_fd(fd)
    return os.fdopen(fd, "ab")


def private_file(path: Path) -> Path:
    """`path` made (empty, 0600) if it does not exist, else closed to others; its
    directory must exist."""
    open_private(path).close()
    return path


def create_private(path: Path) -> bool:
    """Make `path` an empty 0600 file if it does not exist (True), else leave it
    as it is (False): for a file whose later writer opens it by name."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def is_own_private(path: Path) -> bool:
    """Whether `path` itself (a symbolic link is not followed) is a directory of
    this user's with mode 0700 exactly: one nobody else can put anything in."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == DIR_MODE


def describe(path: Path) -> str:
    """What `path` is, for a sentence saying why it is not a private directory."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    kind = "a file"
    if stat.S_ISDIR(st.st_mode):
        kind = "a directory"
    elif stat.S_ISLNK(st.st_mode):
        kind = "a symbolic link"
    return f"{kind} of uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}"


def _close_dir(path: Path) -> None:
    """Take group and other bits off directory `path` if this user owns it; never
    fails (a symbolic link is followed: the user's own link to a directory elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        _close_fd(fd)
    finally:
        os.close(fd)


def _close_fd(fd: int) -> None:
    try:
        st = os.fstat(fd)
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o700)
    except OSError:
        pass

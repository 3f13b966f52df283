"""FS: one file operation for dsh's copies and stdin files, as SFTP's server does it
(paths relative to the agent's working directory, the login user's home, as
SFTP's are; every path and datum as bytes, as dsh sent them).

`do(op, args, umask)` runs one operation with plain system calls (synchronous,
nothing held open after it) and returns the fields of its DONE; an OSError is
the caller's FAILED (strerror, errno's name); a malformed request is a
ValueError. No reply carries more than a frame holds: a `read` returns at most
PIECE bytes, a `listdir` a page of names (its last field says whether more
follow).

- `lstat PATH`, `stat PATH`: `none` (no such file, as SFTP calls ENOENT, ENOTDIR
  and ELOOP), or KIND MODE SIZE (file, dir, link or other; the permission bits in
  decimal).
- `mkdir PATH MODE`: MODE less the login's umask, as SFTP's server makes it.
- `create PATH DATA`: made exclusively (never through a link), 0600, holding
  DATA: `1`; `0` when the name exists.
- `write PATH OFFSET NEW DATA`: NEW `1`: whatever has the name removed, then made
  exclusively (0600); `0`: an existing regular file (not through a link); DATA
  written at OFFSET.
- `truncate PATH SIZE`, `read PATH OFFSET SIZE` (a regular file; a link is
  followed for read, as SFTP's open does, not for truncate; a read answers its
  bytes and DEV:INO of the file they came from, so that dsh tells a file
  replaced between two pieces), `rename OLD NEW` (replacing NEW), `chmod PATH
  MODE` (through a link, as SFTP's), `symlink TARGET PATH`, `readlink PATH`,
  `remove PATH`, `listdir PATH START` (sorted names from index START).
"""

import errno
import os
import stat

#: The most bytes one `read` returns (dsh asks no more), and what dsh puts in one write.
PIECE = 512 * 1024
#: The bytes of names (with their fields' lengths) one `listdir` page holds at most.
PAGE = 512 * 1024

FILE = "file"
DIR = "dir"
LINK = "link"

#: What SFTP's server calls "no such file" (OpenSSH's errno_to_portable).
_NO_SUCH = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
_EXCL = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _number(data, name):
    if not data or not data.isdigit() or len(data) > 18:
        raise ValueError(name + " is not a number")
    return int(data)


def _kind(mode):
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISLNK(mode):
        return LINK
    return "other"


def _stat(path, follow):
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        if exc.errno in _NO_SUCH:
            return [b"none"]
        raise
    return [_kind(st.st_mode), stat.S_IMODE(st.st_mode), st.st_size]


def _regular(path, flags):
    """`path` opened with `flags` (never blocking on a FIFO), if it is a regular file."""
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_at(fd, data, at):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, at)
        view, at = view[n:], at + n


def _create(path, data):
    try:
        fd = os.open(path, _EXCL, 0o600)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            return [b"0"]
        raise
    try:
        _write_at(fd, data, 0)
    finally:
        os.close(fd)
    return [b"1"]


def _write(path, at, new, data):
    if new == b"1":
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        fd = os.open(path, _EXCL, 0o600)
    elif new == b"0":
        fd = _regular(path, os.O_WRONLY | os.O_NOFOLLOW)
    else:
        raise ValueError("NEW is neither 1 nor 0")
    try:
        _write_at(fd, data, at)
    finally:
        os.close(fd)
    return []


def _truncate(path, size):
    fd = _regular(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    return []


def _read(path, at, size):
    if size > PIECE:
        raise ValueError("a read of over %d bytes" % PIECE)
    fd = _regular(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        parts = []
        while size > 0:
            data = os.pread(fd, size, at)
            if not data:
                break
            parts.append(data)
            at, size = at + len(data), size - len(data)
    finally:
        os.close(fd)
    return [b"".join(parts), b"%d:%d" % (st.st_dev, st.st_ino)]


def _mkdir(path, mode, umask):
    old = os.umask(umask)  # the login's, as SFTP's server has it (the agent's is 077)
    try:
        os.mkdir(path, mode & 0o7777)
    finally:
        os.umask(old)
    return []


def _listdir(path, start):
    names = sorted(os.listdir(path))
    page = []
    held = 0
    for name in names[start:]:
        if held + 4 + len(name) > PAGE:
            break
        page.append(name)
        held += 4 + len(name)
    more = start + len(page) < len(names)
    return [*page, b"1" if more else b"0"]


def _rename(old, new):
    os.rename(old, new)
    return []


def _chmod(path, mode):
    os.chmod(path, mode & 0o7777)
    return []


def _symlink(target, path):
    os.symlink(target, path)
    return []


def _remove(path):
    os.unlink(path)
    return []


#: op: (the number of its arguments, what it does with them and the login's umask).
_OPS = {
    b"lstat": (1, lambda a, u: _stat(a[0], False)),
    b"stat": (1, lambda a, u: _stat(a[0], True)),
    b"mkdir": (2, lambda a, u: _mkdir(a[0], _number(a[1], "MODE"), u)),
    b"create": (2, lambda a, u: _create(a[0], a[1])),
    b"write": (4, lambda a, u: _write(a[0], _number(a[1], "OFFSET"), a[2], a[3])),
    b"truncate": (2, lambda a, u: _truncate(a[0], _number(a[1], "SIZE"))),
    b"read": (3, lambda a, u: _read(a[0], _number(a[1], "OFFSET"), _number(a[2], "SIZE"))),
    b"rename": (2, lambda a, u: _rename(a[0], a[1])),
    b"chmod": (2, lambda a, u: _chmod(a[0], _number(a[1], "MODE"))),
    b"symlink": (2, lambda a, u: _symlink(a[0], a[1])),
    b"readlink": (1, lambda a, u: [os.readlink(a[0])]),
    b"remove": (1, lambda a, u: _remove(a[0])),
    b"listdir": (2, lambda a, u: _listdir(a[0], _number(a[1], "START"))),
}


def do(op, args, umask):
    """The fields of one operation's DONE (OSError: FAILED; ValueError: malformed)."""
    got = _OPS.get(op)
    if got is None:
        raise ValueError("an unknown operation")
    count, run = got
    if len(args) != count:
        raise ValueError("%s takes %d arguments" % (op.decode("ascii"), count))
    return run(args, umask)


def failed(exc):
    """FAILED's fields for an OSError: its reason, and errno's name."""
    code = exc.errno or 0
    return [exc.strerror or os.strerror(code), errno.errorcode.get(code, "E%d" % code)]

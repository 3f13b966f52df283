"""An executor's Unix socket on this machine: where it goes, binding it private,
and dialling it only when it is this user's.

Its place is `STATE/run/MACHINE/NAME.PID.sock` (one per executor process),
in a private directory (dsh.state). When that path is too long for a Unix
socket (SOCKET_PATH_MAX), it is `$TMPDIR/dsh-UID/HASH.PID.sock`, in a
directory whose name anyone could have taken first: dsh makes it 0700
itself, or uses the one it finds only if it is a directory of the user's
with mode 0700 exactly (a symbolic link is not followed); otherwise the
socket goes in a private directory of its own (mkdtemp), removed when the
executor ends. The session's owner record carries the socket's path, so
clients find it wherever it is.

The socket is bound under umask 077 in that private directory, and its mode
is never changed by path afterwards (chmod follows a symbolic link). A client
dials a socket (`dial`, or `open_connection` on an event loop) only in a
directory that is its user's alone, and talks to it only if the process
listening runs as its user (SO_PEERCRED, where the system has it): anything
else is refused with a sentence (ForeignSocket).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dsh import state
from dsh.errors import DshError

#: A socket under the state directory whose path is longer goes under TMPDIR.
SOCKET_PATH_MAX = 100
#: The longest path a Unix socket can have (sun_path, less its final NUL).
SUN_PATH_MAX = 103 if sys.platform == "darwin" else 107
#: How long a client waits for an executor to accept it.
DIAL_TIMEOUT = 5.0


class ForeignSocket(DshError):
    """A session's socket is not this user's: its directory, or the process serving it."""


def socket_path(state_dir: Path, machine: str, name: str, pid: int) -> Path:
    """Where executor `pid` of session `name` on `machine` listens, if that path is
    short enough for a Unix socket (`listen` decides). Each executor has a socket
    of its own: several may start for one session at once (only one wins it),
    and none may remove or replace another's."""
    return state_dir / "run" / machine.replace("/", "_") / f"{name}.{pid}.sock"


@dataclass
class Listener:
    """A bound socket of an executor, and what to remove when it ends."""

    sock: socket.socket
    path: Path
    #: A directory of this executor's own (mkdtemp), removed with the socket.
    temporary: Path | None = None
    #: Why the socket is not where it would usually be, for the executor's log.
    note: str | None = None

    def close(self) -> None:
        """Close the socket and remove its file (and its own directory)."""
        self.sock.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self.temporary is not None:
            with contextlib.suppress(OSError):
                self.temporary.rmdir()


def listen(state_dir: Path, machine: str, name: str) -> Listener:
    """Bind the socket of session `name`'s executor (this process) in a private
    directory, after removing those its earlier executors left when they died."""
    pid = os.getpid()
    path = socket_path(state_dir, machine, name, pid)
    temporary: Path | None = None
    note: str | None = None
    try:
        if len(os.fsencode(path)) <= SOCKET_PATH_MAX:
            state.private_dir(state_dir, "run", machine.replace("/", "_"))
            stem = name
        else:
            stem = hashlib.sha256(str(path.with_name(name)).encode()).hexdigest()[:12]
            where, temporary, note = _fallback_dir()
            path = where / f"{stem}.{pid}.sock"
    except OSError as exc:
        raise DshError(f"cannot make a private directory for the session's socket: {exc}") from None
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.rmdir()
        raise DshError(
            f"the session's socket {path} would be longer than a Unix socket's path may be "
            f"({SUN_PATH_MAX} bytes): set TMPDIR to a shorter directory"
        )
    _remove_dead(path.parent, stem)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mask = os.umask(0o077)
    try:
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.rmdir()
        raise DshError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(mask)
    return Listener(sock, path, temporary, note)


def _remove_dead(where: Path, stem: str) -> None:
    """Remove the sockets `STEM.PID.sock` (and `.agt`) in `where` (a directory of ours alone)
    whose executor is no longer running (killed, or the machine restarted)."""
    try:
        names = os.listdir(where)
    except OSError:
        return
    for entry in names:  # STEM.PID.sock, and STEM.PID.agt (its agent relay: dsh/agentrelay.py)
        suffix = ".agt" if entry.endswith(".agt") else ".sock"
        rest = entry.removeprefix(f"{stem}.").removesuffix(suffix)
        if entry != f"{stem}.{rest}{suffix}" or not rest.isdigit():
            continue
        try:
            os.kill(int(rest), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                (where / entry).unlink()
        except OSError:
            pass  # it runs (as another user: not one of ours, left alone)


def _fallback_dir() -> tuple[Path, Path | None, str | None]:
    """`$TMPDIR/dsh-UID` if it is ours alone (made now, or found so); else a
    private directory of our own: (where, the one to remove at the end, why)."""
    shared = Path(tempfile.gettempdir()) / f"dsh-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(shared, state.DIR_MODE)  # no exist_ok: what is there may be anyone's
    if state.is_own_private(shared):
        return shared, None, None
    own = Path(tempfile.mkdtemp(prefix=f"dsh-{os.getuid()}-"))  # 0700, a name nobody had
    why = (
        f"{shared} is {state.describe(shared)}, not a private directory of yours: "
        f"this executor's socket is in {own} instead"
    )
    return own, own, why


def dial(path: str) -> socket.socket | None:
    """A connection to the executor at `path`, or None if nothing listens there
    (an executor that is gone); ForeignSocket if it is not this user's."""
    if not _own_directory(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(DIAL_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    _check_peer(sock, path)
    sock.settimeout(None)
    return sock


async def open_connection(
    path: str, *, limit: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """`dial`, on the running event loop: the executor's socket as asyncio streams
    (lines up to `limit` bytes), or None if nothing listens there; ForeignSocket if
    it is not this user's. The connect waits at most DIAL_TIMEOUT."""
    if not _own_directory(path):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, path), DIAL_TIMEOUT)
    except (OSError, TimeoutError):
        sock.close()
        return None
    _check_peer(sock, path)
    return await asyncio.open_unix_connection(sock=sock, limit=limit)


def _own_directory(path: str) -> bool:
    """Whether the directory of socket `path` is this user's alone (False: it is
    gone, with its executor, and nothing can be planted there later); ForeignSocket
    if it is not."""
    where = Path(path).parent
    if not os.path.lexists(where):
        return False
    if not state.is_own_private(where):
        raise ForeignSocket(
            f"refusing the executor socket {path}: its directory is {state.describe(where)}, "
            "not a private directory of yours"
        )
    return True


def _check_peer(sock: socket.socket, path: str) -> None:
    """ForeignSocket (and `sock` closed) if the process serving it is another user's."""
    uid = peer_uid(sock)
    if uid is not None and uid != os.getuid():
        sock.close()
        raise ForeignSocket(
            f"refusing the executor socket {path}: the process serving it runs as uid {uid}, "
            f"not as you (uid {os.getuid()})"
        )


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of a connected Unix socket, or
    None where the system does not say (SO_PEERCRED is Linux's)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("iII"))
    _pid, uid, _gid = struct.unpack("iII", raw)  # struct ucred
    return int(uid)

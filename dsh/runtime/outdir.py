"""`--outdir DIR`: every host's stdout and stderr of each action, written as it comes to
`DIR/ACTION/HOST.out` and `DIR/ACTION/HOST.err` (ACTION is its id, RUN.STAGE.ATTEMPT,
as `dsh log` shows it; HOST `local` for this machine), as well as shown.

The files are private (directories 0700, files 0600), hold what is shown (the
secrets bound masked), and are written by the process that runs the session (a
detached session's executor: whoever owns it writes them, on its machine). An
action's files are begun anew by the first process that writes them; an action
that had ended before a takeover is not written again.
"""

from __future__ import annotations

import os

from dsh.errors import DshError


class OutdirError(DshError):
    """The output directory cannot be written."""


def _own(root: str, folder: str) -> None:
    """Refuse an action's directory that is not this user's own private one (another
    user may have made it, or a link, first: action ids are easy to guess), or a DIR
    that is another user's link."""
    me = os.geteuid()
    st = os.lstat(root)
    if os.path.islink(root) and st.st_uid not in (me, 0):
        raise OSError(0, f"{root} is a link of another user's")
    st = os.lstat(folder)
    if not os.path.isdir(folder) or os.path.islink(folder) or st.st_uid != me or st.st_mode & 0o077:
        raise OSError(0, f"{folder} is not a private directory of this user's (made by another, or a link)")


class OutputFiles:
    """Writes actions' output under one directory (absolute)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._begun: set[str] = set()
        self._failed = False

    def write(self, action: str, host: str | None, stream: str, data: bytes) -> None:
        """Append `data` to the action's file for `host` and `stream` (begun anew by this
        process's first write to it). A directory that cannot be written is said once,
        through OutdirError, and then left alone."""
        if self._failed or not data:
            return
        folder = os.path.join(self.root, action)
        path = os.path.join(folder, f"{host or 'local'}.{'out' if stream == 'stdout' else 'err'}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            if path not in self._begun:
                os.makedirs(folder, mode=0o700, exist_ok=True)
                _own(self.root, folder)
                flags |= os.O_TRUNC
            fd = os.open(path, flags, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except OSError as exc:
            self._failed = True
            why = f"--outdir: cannot write {path}: {exc.strerror}; output is only shown from now on"
            raise OutdirError(why) from None
        self._begun.add(path)

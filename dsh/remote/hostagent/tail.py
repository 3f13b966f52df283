"""Streams: an action's .out and .err passed on as they grow, its sudo asks, and its
end, as the wrapper's stream loop (spool.py's _STREAM) has them.

A Stream is a generator the agent's loop resumes: it yields the seconds until its
next look (10 ms while bytes come, growing to 200 ms: the wrapper's schedule),
reads the files it holds open (offsets kept), says a new `.ask` line as `ask …`,
and returns the status the wrapper's LAUNCH or FOLLOW would have exited with,
after its sentences (`timed out`, `cancelled`, `lost: …`). An action the agent
launched ends when the keeper says so (`gone`): its output is read once more
then, with no tick's wait. For an action another process started, its runner
(or keeper) from `.run` is watched: through a pidfd when the system has them
(`fd`, which the loop selects on), else by reading /proc every tenth look, as
the wrapper does; gone without a status, the action is `lost`.
"""

import os

from . import spoolfs, wire

#: Queued output past which files wait to be read (back-pressure from the link).
ROOM = 1 << 20


class Stream:
    def __init__(self, rid, f, own, say, send, room, pidfd=True, files=None):
        self.rid = rid
        self.f = f
        self.d = f.rsplit("/", 1)[0]
        self.own = own
        self._say = say
        self._send = send
        self._room = room
        self._pidfd = pidfd and hasattr(os, "pidfd_open")
        #: Set by the loop: the keeper's word on an own action ("" status: unwritten;
        #: None status: the keeper itself is gone).
        self.gone = False
        self.gone_status = None
        #: A pidfd on the runner of another's action (selected on by the loop); `ready`
        #: is set when it is readable.
        self.fd = None
        self.ready = False
        self.runner = None  # (pid, start) from .run
        #: .out and .err, open for reading (-1: missing); None: opened as the stream starts
        #: (LAUNCH hands over those it made: no second open of either)
        self._files = files

    def waits(self):
        """The fds the loop selects on for it: (for reading, for writing)."""
        return ([self.fd] if self.fd is not None and not self.ready else []), []

    def woken(self, fd):
        self.ready = True

    def close(self):
        for fd in (self._files or []) + ([self.fd] if self.fd is not None else []):
            try:
                os.close(fd)
            except OSError:
                pass
        self._files = []
        self.fd = None

    def run(self):
        """The stream (a generator); its return value is the wrapper's exit status."""
        try:
            if self._files is None:
                self._files = []
                for ext in (".out", ".err"):
                    try:
                        self._files.append(os.open(self.f + ext, os.O_RDONLY | os.O_CLOEXEC))
                    except OSError:
                        self._files.append(-1)
            status = yield from self._loop()
        finally:
            self.close()
        return status

    def _loop(self):
        n = 0
        tick = 0
        asked = ""
        while True:
            # an own action's status is written by the keeper before it says GONE: no look
            # for it until then (one file fewer to open on each of the stream's looks)
            st = spoolfs.status_of(self.f) if self.gone or not self.own else None
            if st is None and self.own and self.gone and self.gone_status:
                st = self.gone_status  # written, and read back by nobody since? keep the keeper's
            got, more = self._pump()
            q = spoolfs.read_ok(self.f + ".ask") if spoolfs.nonempty(self.f + ".ask") else None
            if q is not None and q[0] and q[0] != asked:
                asked = q[0]
                self._say("ask " + asked)
            if st is not None:
                if more:
                    yield 0.01
                    continue
                return self._ended(st)
            n += 1
            if self.own and self.gone:
                if self.gone_status == "":
                    why = spoolfs.unwritable(self.d, self.f + ".status")
                    why = why or "cannot write the spool: " + self.f + ".status"
                    self._say("lost: the command's end could not be written: " + why)
                    return spoolfs.LOST
                # the keeper is gone without a word: as a runner gone
                yield 0.3
                if spoolfs.status_of(self.f) is not None:
                    continue
                return self._lost()
            look = self.ready or (self.fd is None and n % 10 == 0)
            if not self.own and look and not self._runner_lives():
                yield 0.3
                if spoolfs.status_of(self.f) is not None:
                    continue
                return self._lost()
            tick = 0 if got else tick + 1
            if more or tick < 20:
                yield 0.01
            elif tick < 60:
                yield 0.05
            else:
                yield 0.2

    def _pump(self):
        """Reads what the files hold now, while the link has room: (bytes read, more)."""
        total = 0
        for kind, fd in zip((wire.OUT, wire.ERR), self._files):
            if fd < 0:
                continue
            while True:
                if not self._room():
                    return total, True
                try:
                    data = os.read(fd, wire.CHUNK)
                except OSError:
                    break
                if not data:
                    break
                total += len(data)
                self._send(kind, self.rid, [data])
        return total, False

    def _runner_lives(self):
        """Whether the runner (or keeper) in .run is the same live process; with pidfds,
        one is opened the first time and the loop is woken when it ends."""
        self.ready = False
        if self.runner is None:
            got = spoolfs.shread(self.f + ".run", 2)
            self.runner = tuple(got[1]) if got is not None else ("", "")
        pid, start = self.runner
        if self.fd is not None:
            return False  # its pidfd said it ended
        if not pid or spoolfs.started(pid) != start or start == "":
            return False
        if self._pidfd:
            try:
                fd = os.pidfd_open(int(pid))
            except (OSError, ValueError, OverflowError):
                return True  # the poll goes on
            if spoolfs.started(pid) != start:  # opened on another process of that pid
                os.close(fd)
                return False
            self.fd = fd
        return True

    def _lost(self):
        why = spoolfs.unwritable(self.d, self.f + ".status")
        if why is not None:
            self._say("lost: its runner is gone and no status was written; " + why)
        else:
            self._say("lost: its runner is gone and no status was written")
        return spoolfs.LOST

    def _ended(self, st):
        if st == "timeout":
            self._say("timed out")
            return spoolfs.TIMED_OUT
        if st == "cancelled":
            self._say("cancelled")
            return spoolfs.CANCELLED
        if st.isdigit() and len(st) < 12:
            return int(st) & 255
        return 2  # sh's `exit` of something not a number

"""RUN: a bounded child of the agent (a check, a copy's script, `sudo -v`), its
output returned in one reply.

The child starts in a session (and process group) of its own, with the agent's
environment and the NAME=VALUE lines it was given, the login's umask, its signals at their defaults
but INT and QUIT ignored (as the keeper's commands have them), stdin a pipe fed
the bytes given and then closed (or /dev/null), stdout and stderr pipes. The
stdin bytes and the given values go nowhere else: no argv, file or message.

A Run is the loop's stream: `waits` names the fds to select on, `woken` takes
their readiness (reading the pipes, feeding stdin), and `run` is a generator the
loop resumes that returns the fields of its DONE: the status as sh says it (128+SIG
for a signal death; 127 when the program is not found and 126 when it cannot be
run, with sh's kind of sentence on its stderr), then stdout and stderr. Past its
timeout its group is TERMed, then KILLed a second later (CHECK's steps): a child
that was (however it ended), or that could not be started, has the status "" and
a reason as a fourth field. At most OUT_KEEP bytes of stdout and ERR_KEEP of
stderr are kept (the rest is read and dropped), so that the reply fits a frame.

It is reaped once its pipes end (then a short bounded wait for its exit), or
when its pidfd says it ended (Python >= 3.9); without pidfds, a child whose pipes
something it left holds open is looked for every POLL seconds. After its end its
pipes are drained for DRAIN seconds at most; nothing it left is killed.
"""

import _signal  # type: ignore[import-not-found]
import errno
import os
import time

from . import keeper, spoolfs

OUT_KEEP = 768 * 1024
ERR_KEEP = 192 * 1024
#: Seconds from TERM to KILL; then the most a KILLed child may take to be reaped.
KILL_AFTER = 1.0
REAP_BOUND = 3.0
#: Seconds its pipes are read after its end (something it left may hold them).
DRAIN = 1.0
POLL = 0.25
_NAME_START = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_NAME = _NAME_START + b"0123456789"
#: Children killed before they were reaped (tried again at each start).
_unreaped = []  # type: list[int]


def environment(lines):
    """The agent's environment (bytes, as the system gave it) and `lines`' variables."""
    env = dict(os.environb)
    for line in lines.split(b"\n"):
        name, sep, value = line.partition(b"=")
        if sep and name and name[:1] in _NAME_START and all(c in _NAME for c in name):
            env[name] = value
    return env


def reap_left():
    for pid in list(_unreaped):
        try:
            done = os.waitpid(pid, os.WNOHANG)[0]
        except OSError:
            done = pid
        if done:
            _unreaped.remove(pid)


class Run:
    def __init__(self, argv, stdin, env, timeout, pidfd=True, umask=0o022):
        self.parts = ([], [])  # type: tuple[list[bytes], list[bytes]]
        self.kept = [0, 0]
        self.fds = {}  # type: dict[int, int]  # a pipe's read end: 0 stdout, 1 stderr
        self.inp = None  # type: int | None
        self.pending = memoryview(stdin)
        self.pid = None  # type: int | None
        self.status = None  # type: int | None
        self.why = ""
        self.pidfd = None  # type: int | None
        self.ready = False
        self.deadline = time.monotonic() + timeout
        reap_left()
        try:
            pid = self._start(argv, bool(stdin), environment(env), umask)
        except OSError as exc:
            self.why = "cannot start it: " + os.strerror(exc.errno or 0)
            return
        if pidfd and hasattr(os, "pidfd_open"):
            try:
                self.pidfd = os.pidfd_open(pid)
            except OSError:
                pass
        self._feed()

    def _start(self, argv, piped, env, umask):
        made = []  # type: list[int]
        try:
            for _ in range(3 if piped else 2):
                made.extend(os.pipe())
            if not piped:
                made.extend([os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC), -1])
            pid = os.fork()
        except OSError:
            for fd in made:
                if fd >= 0:
                    os.close(fd)
            raise
        out_r, out_w, err_r, err_w, in_r, in_w = made
        if pid == 0:
            _exec(argv, env, (in_r, out_w, err_w), umask)
        self.pid = pid
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        for fd in (out_r, err_r) + ((in_w,) if piped else ()):
            os.set_blocking(fd, False)
        self.fds = {out_r: 0, err_r: 1}
        self.inp = in_w if piped else None
        return pid

    # For the loop.

    def waits(self):
        """The fds to select on: (for reading, for writing)."""
        reads = list(self.fds)
        if self.pidfd is not None and not self.ready:
            reads.append(self.pidfd)
        return reads, ([self.inp] if self.inp is not None else [])

    def woken(self, fd):
        if fd == self.pidfd:
            self.ready = True
        elif fd == self.inp:
            self._feed()
        elif fd in self.fds:
            self._take(fd)

    def _take(self, fd):
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            os.close(fd)
            del self.fds[fd]
            return
        which = self.fds[fd]
        room = (OUT_KEEP, ERR_KEEP)[which] - self.kept[which]
        if room > 0:
            self.parts[which].append(data[:room])
            self.kept[which] += min(room, len(data))

    def _feed(self):
        if self.inp is None:
            return
        done = not self.pending
        try:
            while self.pending:
                self.pending = self.pending[os.write(self.inp, self.pending[: 1 << 16]) :]
            done = True
        except BlockingIOError:
            pass
        except OSError:  # EPIPE: it does not read it
            done = True
        if done:
            os.close(self.inp)
            self.inp, self.pending = None, memoryview(b"")

    def _reap(self):
        if self.pid is None or self.status is not None:
            return
        try:
            pid, st = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.pid, self.why = None, "its end could not be read"
            return
        if pid:
            self.status = 128 + os.WTERMSIG(st) if os.WIFSIGNALED(st) else os.WEXITSTATUS(st)

    def run(self):
        """The child to its end (a generator: it yields the seconds until its next
        look); returns the fields of its DONE."""
        stage, at, ended, poll = 0, self.deadline, None, 0.001
        while self.pid is not None:
            self._reap()
            now = time.monotonic()
            if self.status is not None:
                ended = now if ended is None else ended
                if not self.fds or now >= ended + DRAIN:
                    break
                yield ended + DRAIN - now
                continue
            if now >= at:
                if stage == 2:
                    break
                spoolfs.signal_group(self.pid, _signal.SIGTERM if stage == 0 else _signal.SIGKILL)
                stage, at = stage + 1, now + (KILL_AFTER if stage == 0 else REAP_BOUND)
                continue
            wait = at - now
            if not self.fds:  # its pipes ended: so will it, at once
                wait, poll = min(wait, poll), min(poll * 2, 0.05)
            elif self.pidfd is None:
                wait = min(wait, POLL)
            yield wait
        out, err = b"".join(self.parts[0]), b"".join(self.parts[1])
        if self.status is None:
            return ["", out, err, self.why or "it did not end after its KILL"]
        if stage:  # TERMed for its timeout: timed out however it ended (CHECK's 124)
            return ["", out, err, "timed out"]
        return [str(self.status), out, err]

    def close(self):
        """Its fds closed; a child not reaped yet is KILLed (with its group)."""
        for fd in [*self.fds, self.inp, self.pidfd]:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fds, self.inp, self.pidfd = {}, None, None
        if self.pid is not None and self.status is None:
            self._reap()
        if self.pid is not None and self.status is None:
            spoolfs.signal_group(self.pid, _signal.SIGKILL)
            _unreaped.append(self.pid)
            self.pid = None
            reap_left()


def _exec(argv, env, fds, umask):
    """In the forked child: its session, signals, fds and the login's umask (the
    agent's is 077), then the program (never returns)."""
    try:
        os.setsid()
        os.umask(umask)
        for sig in keeper._defaulted():
            try:
                _signal.signal(sig, _signal.SIG_DFL)
            except (OSError, ValueError, RuntimeError):
                pass
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
        _signal.signal(_signal.SIGQUIT, _signal.SIG_IGN)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            code = exc.errno or 0
            said = b"%s: %s\n" % (argv[0], os.strerror(code).encode("ascii", "replace"))
            os.write(2, said)
            os._exit(127 if code in (errno.ENOENT, errno.ENOTDIR) else 126)
    finally:
        os._exit(127)

"""The keeper: the parent of every command the host agent starts (what the wrapper's
runner is to LAUNCH, shared by all actions of one agent).

The agent forks it once, at its start; it leaves the agent's session (setsid) and
the connection (stdin, stdout and stderr to /dev/null), ignores SIGINT and
SIGQUIT (which its commands inherit, as commands the wrapper starts in the
background do), and takes SPAWN orders on a pipe. Each command starts in a
session and process group of its own (`sh -c COMMAND`, stdin from its input file
or /dev/null, stdout and stderr appended to .out and .err) with the helper's
variables and its secrets in its environment alone; `.pid` holds its group and
start time. The keeper waits on SIGCHLD through a wakeup fd and `select` (no
timer process, no poll), enforces each backstop (TERM the group, `.killed` =
timeout, KILL after the grace), TERMs what a command left in its group, removes
its input and writes `.status` last (`N`, 128+SIG for a signal death, or the
reason in `.killed`), then tells the agent (GONE; an empty status: it could not
be written). When the agent is gone (EOF on the orders) it takes no more orders
and exits once its last command is reaped: nothing is killed.
"""

import _signal  # type: ignore[import-not-found]
import errno
import os
import select
import time

from . import spoolfs, wire

_INT = _signal.SIGINT
_QUIT = _signal.SIGQUIT
_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME = _NAME_START | frozenset("0123456789")


def _defaulted():
    """The signals a command starts with at their default (all but INT and QUIT)."""
    if hasattr(_signal, "valid_signals"):
        every = set(_signal.valid_signals())
    else:
        every = set(range(1, _signal.NSIG)) - {32, 33}
    return sorted(every - {_INT, _QUIT, _signal.SIGKILL, _signal.SIGSTOP})


def can_spawn():
    """Whether os.posix_spawn can start a session (Python >= 3.8)."""
    return hasattr(os, "posix_spawn") and hasattr(os, "POSIX_SPAWN_OPEN")


def start(orders, reports, others, spawn=True):
    """Forks the keeper (reading `orders`, writing `reports`, both pipe ends; closing
    the agent's fds `others` in it); its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for fd in others:
            os.close(fd)
        Keeper(orders, reports, spawn and can_spawn()).run()
    except BaseException:
        code = 70
    finally:
        os._exit(code)


def _b(text):
    """Text as the bytes it came as (a field's, a path's)."""
    return text.encode("utf-8", "surrogateescape")


def environment(base, f, helper, secrets):
    """A command's environment, as bytes: `base` (the keeper's own as the system gave
    it, os.environb), its secrets and the helper's variables as dsh sent them."""
    env = dict(base)
    for line in secrets.split("\n"):
        name, sep, value = line.partition("=")
        if sep and name and _NAME_START.issuperset(name[:1]) and _NAME.issuperset(name):
            env[_b(name)] = _b(value)
    env[b"DSH_ASK"] = _b(f)
    env[b"SUDO_ASKPASS"] = _b(helper)
    env[b"DISPLAY"] = env.get(b"DISPLAY") or b":0"
    return env


class Child:
    """A command the keeper started and has not reaped yet."""

    def __init__(self, sid, f, inp, pid, backstop, grace):
        self.sid = sid
        self.f = f
        self.inp = inp
        self.pid = pid
        self.grace = grace
        self.deadline = time.monotonic() + backstop
        self.stage = 0  # 0: running, 1: TERMed by the backstop, 2: KILLed


class Keeper:
    def __init__(self, orders, reports, spawn):
        self.orders = orders  # type: int | None
        self.reports = reports  # type: int | None
        self.spawn_ok = spawn
        self.children = {}  # type: dict[int, Child]
        self.reader = wire.Reader()
        #: Its environment, taken once (a copy per command is all a spawn costs of it).
        self.environ = dict(os.environb)

    def run(self):
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        if null > 2:
            os.close(null)
        _signal.signal(_INT, _signal.SIG_IGN)
        _signal.signal(_QUIT, _signal.SIG_IGN)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        _signal.set_wakeup_fd(wake_w)
        _signal.signal(_signal.SIGCHLD, _noted)
        self.defaulted = _defaulted()
        while self.orders is not None or self.children:
            waits = [wake_r] + ([self.orders] if self.orders is not None else [])
            ready, _, _ = select.select(waits, [], [], self._timeout())
            if wake_r in ready:
                _drain(wake_r)
            self._reap()
            if self.orders is not None and self.orders in ready:
                self._read_orders(self.orders)
            self._backstops()

    def _timeout(self):
        due = [c.deadline for c in self.children.values() if c.stage < 2]
        # a day at most: select cannot wait for as long as some backstops are
        return min(max(0.0, min(due) - time.monotonic()), 86400.0) if due else None

    def _read_orders(self, fd):
        try:
            data = os.read(fd, 1 << 20)
        except OSError:
            data = b""
        if not data:
            os.close(fd)
            self.orders = None  # the agent is gone: no more orders
            return
        try:
            bodies = self.reader.feed(data)
        except wire.WireError:
            bodies = []
        for body in bodies:
            try:
                kind, sid, fields = wire.decode(body)
            except wire.WireError:
                continue
            if kind == wire.SPAWN and len(fields) == 7:
                self._spawn(sid, [wire.text(x) for x in fields])

    def _spawn(self, sid, fields):
        f, command, backstop, grace, inp, helper, secrets = fields
        env = environment(self.environ, f, helper, secrets)
        try:
            pid = self._start(f, command, inp or "/dev/null", env)
        except OSError as exc:
            try:
                fd = os.open(f + ".err", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.write(fd, ("dsh: cannot start /bin/sh: %s\n" % os.strerror(exc.errno or 0)).encode())
                os.close(fd)
            except OSError:
                pass
            self._end(Child(sid, f, inp, 0, 0, 0), "127")
            return
        try:
            spoolfs.write_file(f + ".pid", "%d %s\n" % (pid, spoolfs.started(pid) or ""))
        except OSError:
            pass
        self.children[pid] = Child(sid, f, inp, pid, int(backstop), int(grace))

    def _start(self, f, command, inp, env):
        # bytes, as dsh sent them: a host whose file system encoding is ASCII (Python
        # 3.6 in the C locale) could not encode a command or a path that is not
        argv = [b"sh", b"-c", _b(command)]
        inp, f = _b(inp), _b(f)
        # the agent made both (spoolfs.prepare): no O_CREAT, which would take the spool
        # directory's lock even when the file is there (Linux 6.1 does), shared by a session's
        # actions; made again (as the wrapper's `>>` would) only when one went missing since
        out = os.O_WRONLY | os.O_APPEND
        if self.spawn_ok:
            try:
                return self._spawned(argv, env, inp, f, out)
            except FileNotFoundError:
                return self._spawned(argv, env, inp, f, out | os.O_CREAT)
            except NotImplementedError:
                self.spawn_ok = False
        # Where posix_spawn is missing (Python < 3.8): a fork of this single thread.
        files = [(inp, os.O_RDONLY, 0), (f + b".out", out, os.O_CREAT), (f + b".err", out, os.O_CREAT)]
        pid = os.fork()
        if pid:
            return pid
        try:
            os.setsid()
            _signal.set_wakeup_fd(-1)
            for sig in self.defaulted:
                try:
                    _signal.signal(sig, _signal.SIG_DFL)
                except (OSError, ValueError, RuntimeError):
                    pass
            for target, (path, flags, again) in enumerate(files):
                try:
                    fd = os.open(path, flags, 0o600)
                except FileNotFoundError:
                    if not again:
                        raise
                    fd = os.open(path, flags | again, 0o600)
                if fd != target:
                    os.dup2(fd, target)
                    os.close(fd)
            os.execve(b"/bin/sh", argv, env)
        finally:
            os._exit(127)

    def _spawned(self, argv, env, inp, f, out):
        """posix_spawn of `argv` in a session of its own, with its stdin and spool files."""
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, inp, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, f + b".out", out, 0o600),
            (os.POSIX_SPAWN_OPEN, 2, f + b".err", out, 0o600),
        ]
        return os.posix_spawn(
            b"/bin/sh",
            argv,
            env,
            file_actions=actions,
            setsid=True,
            setsigdef=self.defaulted,
            setsigmask=(),
        )

    def _reap(self):
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            rc = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            spoolfs.signal_group(child.pid, _signal.SIGTERM)  # what it left in its group
            got = spoolfs.read_ok(child.f + ".killed")
            self._end(child, got[0] if got is not None else str(rc))

    def _end(self, child, rc):
        """The input removed, the status written last, the agent told."""
        if child.inp and child.inp != "/dev/null":
            spoolfs.remove_files(child.inp)
        try:
            spoolfs.write_file(child.f + ".status", rc + "\n")
        except OSError:
            rc = ""
        self._report(child.sid, rc)

    def _backstops(self):
        now = time.monotonic()
        for child in list(self.children.values()):
            if child.stage >= 2 or now < child.deadline:
                continue
            if child.stage == 0:
                try:
                    spoolfs.write_file(child.f + ".killed", "timeout\n")
                except OSError:
                    pass
                spoolfs.signal_group(child.pid, _signal.SIGTERM)
                child.stage, child.deadline = 1, now + child.grace
            else:
                spoolfs.signal_group(child.pid, _signal.SIGKILL)
                child.stage = 2

    def _report(self, sid, rc):
        if self.reports is None:
            return
        data = wire.encode(wire.GONE, sid, [rc])
        try:
            while data:
                data = data[os.write(self.reports, data) :]
        except OSError:  # the agent is gone: the status is in the spool
            os.close(self.reports)
            self.reports = None


def _noted(signum, frame):
    """SIGCHLD's handler: the wakeup fd has the news."""


def _drain(fd):
    try:
        while os.read(fd, 4096):
            pass
    except OSError:
        pass

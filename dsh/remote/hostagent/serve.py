"""The host agent's loop: HELLO, then requests read from fd 0 and replies written to
fd 1, until fd 0 ends (or fd 1 breaks); nothing is killed when it does.

`main` forks the keeper (keeper.py) first. Requests are checked for their shape
(a malformed one gets ERROR, naming no field's content); LAUNCH claims and makes
the spool files here (spoolfs.prepare) and orders the keeper to spawn; LAUNCH and
FOLLOW stream (tail.py), KILL and PROBE wait on timers, RUN's child (child.py)
is read and fed here: all are generators this loop resumes when their time
comes, when the keeper says a command ended, when a pidfd says a runner did, or
when a pipe of theirs is ready (their `waits`). FS (files.py) is one system call
or a few, answered at once. RUN's and FS's fields stay bytes (data holds any
byte). Replies are queued and written without blocking.
"""

import _signal  # type: ignore[import-not-found]
import errno
import os
import select
import sys
import time

from . import PROTOCOL, answer, child, files, keeper, spoolfs, tail, wire

_REASONS = spoolfs.REASONS


class Task:
    def __init__(self, rid, gen, reply, stream=None):
        self.rid = rid
        self.gen = gen
        self.reply = reply  # the kind of the frame its result goes in
        self.stream = stream
        self.at = 0.0


class Agent:
    def __init__(self, tag, umask=0o022):
        self.tag = tag
        self.umask = umask  # the login's (FS's mkdir makes directories with it)
        self.queue = []
        self.queued = 0
        self.tasks = {}  # type: dict[int, Task]
        self.spawned = {}  # type: dict[int, Task]  # by the keeper's order id
        self.serial = 0
        self.reader = wire.Reader()
        self.reports_reader = wire.Reader()
        self.pidfd = hasattr(os, "pidfd_open") and not os.environ.get("DSH_HOST_AGENT_NO_PIDFD")
        spawn = not os.environ.get("DSH_HOST_AGENT_NO_SPAWN")
        orders_r, self.orders = os.pipe()
        reports, reports_w = os.pipe()
        self.reports = reports  # type: int | None
        self.keeper = keeper.start(orders_r, reports_w, [self.orders, reports], spawn)
        os.close(orders_r)
        os.close(reports_w)
        self.keeper_start = spoolfs.started(self.keeper) or ""
        self.me = spoolfs.started(os.getpid()) or ""
        self.caps = ",".join(
            name
            for name, has in (("posix_spawn", spawn and keeper.can_spawn()), ("pidfd", self.pidfd))
            if has
        )

    # The link.

    def send(self, kind, rid, fields=()):
        frame = wire.encode(kind, rid, fields)
        self.queue.append(frame)
        self.queued += len(frame)

    def room(self):
        return self.queued < tail.ROOM

    def flush(self):
        while self.queue:
            try:
                n = os.write(1, self.queue[0])
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise SystemExit(0) from None  # EPIPE: dsh is gone
            self.queued -= n
            if n < len(self.queue[0]):
                self.queue[0] = self.queue[0][n:]
                return
            self.queue.pop(0)

    # The loop.

    def serve(self):
        self.send(
            wire.HELLO,
            0,
            [
                str(PROTOCOL),
                str(os.getpid()),
                self.me,
                spoolfs.boot_id(),
                "%d.%d.%d" % tuple(sys.version_info[:3]),
                os.environ.get("HOME", ""),
                self.caps,
            ],
        )
        os.set_blocking(1, False)
        while True:
            now = time.monotonic()
            due = [t.at for t in self.tasks.values()]
            timeout = max(0.0, min(due) - now) if due else None
            reads = [0]
            if self.reports is not None:
                reads.append(self.reports)
            watched = {}  # type: dict[int, Task]  # a task's fds (its pidfd, a RUN's pipes)
            feeds = {}  # type: dict[int, Task]
            for t in self.tasks.values():
                if t.stream is not None:
                    fds, outs = t.stream.waits()
                    watched.update((fd, t) for fd in fds)
                    feeds.update((fd, t) for fd in outs)
            writes = ([1] if self.queue else []) + list(feeds)
            ready, writable = _ready(reads + list(watched), writes, timeout)
            if 1 in writable:
                self.flush()
            if 0 in ready:
                data = os.read(0, 1 << 16)
                if not data:
                    return  # dsh is gone: the keeper goes on alone
                try:
                    bodies = self.reader.feed(data)
                except wire.WireError:
                    return  # a frame over the bound ends the link
                for body in bodies:
                    self.request(body)
            if self.reports is not None and self.reports in ready:
                self.keeper_said(self.reports)
            for fd in ready + writable:
                woke = watched.get(fd) if fd in ready else feeds.get(fd)
                if woke is not None and woke.stream is not None:
                    woke.stream.woken(fd)
                    woke.at = 0.0
            self.step_due()
            if self.queue:
                self.flush()

    def step_due(self):
        now = time.monotonic()
        for rid, t in list(self.tasks.items()):
            if t.at > now or rid not in self.tasks or self.tasks[rid] is not t:
                continue
            try:
                delay = next(t.gen)
            except StopIteration as stop:
                self.finish(t)
                value = stop.value
                self.send(t.reply, rid, value if isinstance(value, list) else [str(value)])
                continue
            except Exception as exc:
                self.finish(t)
                why = type(exc).__name__
                if isinstance(exc, OSError) and exc.errno:
                    why += ": " + os.strerror(exc.errno)
                self.send(wire.ERROR, rid, ["the host agent failed: " + why])
                continue
            t.at = time.monotonic() + delay

    def finish(self, t):
        if t.rid in self.tasks and self.tasks[t.rid] is t:
            del self.tasks[t.rid]
        if t.stream is not None:
            t.stream.close()
        for sid, other in list(self.spawned.items()):
            if other is t:
                del self.spawned[sid]

    def keeper_said(self, fd):
        try:
            data = os.read(fd, 1 << 16)
        except OSError:
            data = b""
        if not data:  # the keeper is gone: its actions' streams see their runner gone
            os.close(fd)
            try:
                os.waitpid(self.keeper, os.WNOHANG)
            except OSError:
                pass
            self.reports = None
            for t in self.spawned.values():
                t.stream.gone, t.stream.gone_status, t.at = True, None, 0.0
            self.spawned = {}
            return
        for body in self.reports_reader.feed(data):
            kind, sid, fields = wire.decode(body)
            if kind == wire.GONE and sid in self.spawned and fields:
                t = self.spawned.pop(sid)
                t.stream.gone, t.stream.gone_status, t.at = True, wire.text(fields[0]), 0.0

    # Requests.

    def request(self, body):
        try:
            kind, rid, raw = wire.decode(body)
        except wire.WireError as exc:
            self.send(wire.ERROR, wire.rid_of(body), ["malformed frame: " + str(exc)])
            return
        name = wire.NAMES.get(kind)
        if name is None:
            self.send(wire.ERROR, rid, ["unknown kind %d" % kind])
            return
        if len(raw) < wire.FIELDS[kind] or (len(raw) != wire.FIELDS[kind] and kind not in wire.VARIADIC):
            self.send(
                wire.ERROR, rid, ["malformed %s: %d fields, wants %d" % (name, len(raw), wire.FIELDS[kind])]
            )
            return
        if kind == wire.STOP:
            t = self.tasks.get(rid)
            if t is not None and t.stream is not None:
                self.finish(t)
            return
        if rid in self.tasks:
            self.send(wire.ERROR, rid, ["request id %d is in use" % rid])
            return
        if kind not in wire.VARIADIC and any(b"\0" in x for x in raw):
            self.send(wire.ERROR, rid, ["malformed %s: a field holds a NUL" % name])
            return
        fields = raw if kind in wire.VARIADIC else [wire.text(x) for x in raw]  # RUN, FS: bytes
        try:
            getattr(self, "do_" + name.lower())(rid, fields)
        except ValueError as exc:
            self.send(wire.ERROR, rid, ["malformed %s: %s" % (name, exc)])

    def start(self, rid, gen, reply, stream=None):
        t = Task(rid, gen, reply, stream)
        self.tasks[rid] = t
        return t

    def ended(self, rid, said, status):
        for line in said:
            self.send(wire.SAID, rid, [line])
        self.send(wire.ENDED, rid, [str(status)])

    def stream(self, rid, f, own, files=None):
        def say(text):
            self.send(wire.SAID, rid, [text])

        s = tail.Stream(rid, f, own, say, self.send, self.room, self.pidfd, files)
        return self.start(rid, s.run(), wire.ENDED, s)

    def do_launch(self, rid, fields):
        root, session, action, alias, command, backstop, grace, stdin, secrets, helper = fields
        backstop, grace = _number(backstop, "backstop"), _number(grace, "grace")
        if stdin not in ("in", ""):
            raise ValueError("stdin is neither in nor empty")
        if self.reports is None:
            why = "no keeper on %s (the host agent's keeper is gone)" % alias
            self.ended(rid, [why], spoolfs.SPOOL_FAILED)
            return
        said, status, f, inp, h, files = spoolfs.prepare(
            root, session, action, alias, stdin == "in", helper, os.getpid(), self.me
        )
        if status is not None:
            self.ended(rid, said, status)
            return
        for line in said:
            self.send(wire.SAID, rid, [line])
        try:
            order = wire.encode(wire.SPAWN, self.serial + 1, [f, command, backstop, grace, inp, h, secrets])
        except wire.WireError:  # too large to hand to the keeper: nothing started, nothing claimed
            spoolfs.close_all(files)
            spoolfs.remove_files(f + ".claim", f + ".out", f + ".err")
            why = "cannot start it: the command is too large for dsh's host agent"
            self.ended(rid, [why], spoolfs.SPOOL_FAILED)
            return
        try:
            spoolfs.write_file(f + ".run", "%d %s\n" % (self.keeper, self.keeper_start))
        except OSError:
            pass
        self.serial += 1
        t = self.stream(rid, f, True, files)
        self.spawned[self.serial] = t
        try:
            _write_all(self.orders, order)
        except OSError:  # the keeper died just now: its reports' EOF ends the stream
            pass

    def do_follow(self, rid, fields):
        root, session, action, alias = fields
        _, _, f = spoolfs.spot(root, session, action, alias)
        if not os.path.exists(f + ".out"):
            self.ended(rid, ["lost: %s on %s has no spool" % (action, alias)], spoolfs.LOST)
            return
        self.stream(rid, f, False)

    def do_kill(self, rid, fields):
        root, session, action, alias, tenths, why = fields
        tenths = _number(tenths, "grace_tenths") if tenths else 20
        why = why or "cancelled"
        if why not in _REASONS:
            raise ValueError("why is neither timeout nor cancelled")
        gen = spoolfs.kill(root, session, action, alias, tenths, why, _signal.SIGTERM, _signal.SIGKILL)
        self.start(rid, gen, wire.DONE)

    def do_probe(self, rid, fields):
        self.start(rid, spoolfs.probe(*fields), wire.ANSWER)

    def do_reply(self, rid, fields):
        self.start(rid, answer.reply(*fields), wire.DONE)

    def do_remove(self, rid, fields):
        self.send(wire.DONE, rid, [str(spoolfs.remove(*fields))])

    def do_clean(self, rid, fields):
        root, minutes = fields
        self.send(wire.DONE, rid, [str(spoolfs.clean(root, _number(minutes, "minutes")))])

    def do_run(self, rid, fields):
        timeout, stdin, env, argv = fields[0], fields[1], fields[2], fields[3:]
        if any(b"\0" in x for x in [env, *argv]) or not argv[0]:
            raise ValueError("an empty program, or a NUL in its argv or environment")
        seconds = _number(wire.text(timeout), "timeout")
        run = child.Run(argv, stdin, env, seconds, self.pidfd, self.umask)
        self.start(rid, run.run(), wire.DONE, run)

    def do_fs(self, rid, fields):
        try:
            done = files.do(fields[0], fields[1:], self.umask)
        except OSError as exc:
            self.send(wire.FAILED, rid, files.failed(exc))
            return
        self.send(wire.DONE, rid, done)


_IN = select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL
_OUT = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL


def _ready(reads, writes, timeout):
    """select's answer (the fds ready to read, to write) through poll, which takes
    fds of 1024 and up (a RUN's pipes and pidfd, many streams in flight)."""
    poller = select.poll()
    want = {}  # type: dict[int, int]
    for fd in reads:
        want[fd] = want.get(fd, 0) | select.POLLIN
    for fd in writes:
        want[fd] = want.get(fd, 0) | select.POLLOUT
    for fd, events in want.items():
        poller.register(fd, events)
    ms = None if timeout is None else int(timeout * 1000) + 1
    got = poller.poll(ms)
    ready = [fd for fd, ev in got if ev & _IN and want[fd] & select.POLLIN]
    writable = [fd for fd, ev in got if ev & _OUT and want[fd] & select.POLLOUT]
    return ready, writable


def _number(data, name):
    try:
        return wire.number(data.encode("ascii"))
    except (ValueError, UnicodeError):
        raise ValueError(name + " is not a number") from None


def _write_all(fd, data):
    while data:
        data = data[os.write(fd, data) :]


def _locale_as_given(given):
    """LC_CTYPE as the login shell had it: Python >= 3.7 in a C locale sets
    LC_CTYPE=C.UTF-8 in its own environment (PEP 538), which the commands would
    inherit where the wrapper's do not. BOOT passes `set` and the value, or ``."""
    if len(given) != 2:
        return
    if given[0] == "set":
        os.environ["LC_CTYPE"] = given[1]
    else:
        os.environ.pop("LC_CTYPE", None)


def main(tag):
    """The agent's life: until dsh's end of the link closes."""
    umask = os.umask(0o077)
    _locale_as_given(sys.argv[3:5])
    try:
        agent = Agent(tag, umask)
        try:
            agent.serve()
        finally:  # RUN's children end with the agent (a launched command does not)
            for t in list(agent.tasks.values()):
                agent.finish(t)
    except KeyboardInterrupt:
        pass
    except SystemExit:
        pass
    os._exit(0)  # no flush of sys.stdout (fd 1 may be broken; nothing is left to say)

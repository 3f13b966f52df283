"""REPLY, the wrapper's ANSWER (dsh/remote/askpass.py): a line for the askpass
helper of one action, given through its FIFO while its ask still waits, with the
wrapper's checks, wait and exit statuses. A generator that yields the seconds it
waits (the agent's loop resumes it) and returns the status."""

import os
import stat

from . import spoolfs


def reply(root, session, action, alias, ask, line):
    """REPLY (a generator), the wrapper's ANSWER: `line` to the helper whose ask is
    `ask`, if it still waits (3 when it does not), through the FIFO held open until
    the ask changes or 5 s pass (then 0)."""
    _, _, f = spoolfs.spot(root, session, action, alias)
    got = spoolfs.read_ok(f + ".ask", 2)
    try:
        fifo = got is not None and got[0] == ask and stat.S_ISFIFO(os.stat(f + ".pw").st_mode)
    except OSError:
        fifo = False
    if not fifo:
        return 3
    try:
        fd = os.open(f + ".pw", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return 3
    try:
        data = line.encode("utf-8", "surrogateescape") + b"\n"
        if os.write(fd, data) != len(data):
            return 3
        for _ in range(100):
            got = spoolfs.read_ok(f + ".ask", 2)
            if got is None or got[0] != ask:
                break
            yield 0.05
        return 0
    except OSError:
        return 3
    finally:
        os.close(fd)

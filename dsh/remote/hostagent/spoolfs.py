"""The spool on a host as the wrapper keeps it (dsh/remote/spool.py, askpass.py):
paths, the claim, the files a launch makes, the askpass helper, KILL, PROBE,
REMOVE and CLEAN, with the wrapper's bytes, modes, waits and sentences.

Reads go as the wrapper's `read -r` does (the first line; a line without its
newline does not count where the wrapper tests read's status). START is field 22
of /proc/PID/stat cut after the first `) `, as the wrapper's `started` cuts it.
KILL and PROBE are generators that yield the seconds they wait (the agent's
loop resumes them) and return their answer.
"""

import errno
import os
import stat
import time

# The wrapper's own exit statuses (spool.WrapperExit).
CLAIMED = 253
SPOOL_FAILED = 252
TIMED_OUT = 251
CANCELLED = 250
LOST = 249

#: The askpass helper's name in the spool's root (askpass.HELPER_NAME).
HELPER_NAME = "askpass-1"
#: Why an action ended early, in .killed, .status and a tombstone claim.
REASONS = ("timeout", "cancelled")

_CREATE_FLAGS = os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
_CREATE = os.O_WRONLY | _CREATE_FLAGS


def home_root(root):
    """A root that is not absolute is under $HOME (as `case $r in /*)`)."""
    if root.startswith("/"):
        return root
    return os.environ.get("HOME", "") + "/" + root


def spot(root, session, action, alias):
    """(root, the session's directory, the action's path without extension)."""
    r = home_root(root)
    d = r + "/" + session
    return r, d, d + "/" + action + "@" + alias


def shread(path, count):
    """`read -r v1 … vCOUNT <path`: None when it cannot be opened, else (whether the
    read succeeded: a whole line, [COUNT values, the last holding the rest])."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = b""
        while b"\n" not in data and len(data) < 65536:
            try:
                more = os.read(fd, 4096)
            except OSError:
                break
            if not more:
                break
            data += more
    finally:
        os.close(fd)
    line, nl, _ = data.partition(b"\n")
    words = line.decode("utf-8", "surrogateescape").split(None, count - 1)
    if words:
        words[-1] = words[-1].rstrip()
    words += [""] * (count - len(words))
    return bool(nl), words


def read_ok(path, count=1):
    """The values of a `read` that succeeded, else None."""
    got = shread(path, count)
    if got is None or not got[0]:
        return None
    return got[1]


def status_of(f):
    """The action's status line (`N`, `timeout`, `cancelled`), None while it has none."""
    got = read_ok(f + ".status")
    return None if got is None else got[0]


def started(pid):
    """The start time of process `pid` as the wrapper's `started` reads it, or None."""
    pid = str(pid)
    if not pid.isdigit():
        return None
    got = read_ok("/proc/" + pid + "/stat")
    if got is None:
        return None
    line = got[0]
    if ") " in line:
        line = line.split(") ", 1)[1]
    words = line.split()
    return words[19] if len(words) > 19 else None


def proc_state(pid):
    """The state letter of process `pid` (after the last `) `), "" when unreadable."""
    got = shread("/proc/" + str(pid) + "/stat", 1) if str(pid).isdigit() else None
    if got is None:
        return ""
    rest = got[1][0].rsplit(") ", 1)[-1]
    return rest.split(" ", 1)[0]


_BOOT = []  # type: list[str]


def boot_id():
    """This boot's id (read once: it cannot change while the agent lives)."""
    if not _BOOT:
        got = read_ok("/proc/sys/kernel/random/boot_id")
        _BOOT.append(got[0] if got is not None else "unknown")
    return _BOOT[0]


def nonempty(path):
    """`[ -s path ]`."""
    try:
        return os.stat(path).st_size > 0
    except OSError:
        return False


def write_file(path, text, exclusive=False):
    """Writes `text` (0600 under umask 077); OSError when it could not."""
    flags = (_CREATE | os.O_EXCL | os.O_NOFOLLOW) if exclusive else _CREATE
    fd = os.open(path, flags, 0o600)
    try:
        data = text.encode("utf-8", "surrogateescape")
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def remove_files(*paths):
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def unwritable(d, name):
    """Why the session's directory `d` cannot be written now (a test write), or None:
    "the spool's disk is full (NAME: …)" or "cannot write the spool: NAME: REASON"."""
    test = d + "/.write-test." + str(os.getpid())
    failed = None
    try:
        os.makedirs(d, 0o700, exist_ok=True)
        write_file(test, "x")
    except OSError as exc:
        failed = exc
    remove_files(test)
    if failed is None:
        return None
    if failed.errno == errno.ENOSPC:
        return "the spool's disk is full (" + name + ": No space left on device)"
    if failed.errno:
        return "cannot write the spool: " + name + ": " + os.strerror(failed.errno)
    return "cannot write the spool: " + name


def _claim(path, text):
    """An O_EXCL create with its content; False when either failed."""
    try:
        write_file(path, text, exclusive=True)
    except OSError:
        return False
    return True


def prepare(root, session, action, alias, stdin, helper, pid, start):
    """LAUNCH up to the start of its command: the input's check, the claim (holding
    this boot, `pid` and `start`), .out and .err made empty, the helper written.
    Returns (said, status, f, inp, h, files): `status` None when the command may start
    (`said` may hold `helper missing`; `files`: .out and .err, open for reading, which
    the caller closes), else the wrapper's exit status with its sentence in `said`."""
    r, d, f = spot(root, session, action, alias)
    inp = ""
    if stdin:
        inp = f + ".in"
        if not (os.path.isfile(inp) and os.access(inp, os.R_OK)):
            return ["its input is missing from the spool: " + inp], SPOOL_FAILED, f, inp, "", []
    claim = f + ".claim"
    content = "%s %s %s\n" % (boot_id(), pid, start or "")
    ok = _claim(claim, content)
    if not ok and not os.path.lexists(claim):
        try:
            os.makedirs(d, 0o700, exist_ok=True)
        except OSError:
            pass
        else:
            ok = _claim(claim, content)
    if not ok:
        claimed = "claimed: " + action + " on " + alias + " was started before"
        if nonempty(claim):
            return [claimed], CLAIMED, f, inp, "", []
        why = unwritable(d, claim)
        if why is not None:
            if os.path.lexists(claim) and not nonempty(claim):
                remove_files(claim)
            return [why], SPOOL_FAILED, f, inp, "", []
        if os.path.lexists(claim):
            return [claimed], CLAIMED, f, inp, "", []
        return ["cannot write the spool: " + claim], SPOOL_FAILED, f, inp, "", []
    files = []  # type: list[int]
    try:
        for ext in (".out", ".err"):  # one open each: made empty here, read by the stream
            files.append(os.open(f + ext, os.O_RDWR | _CREATE_FLAGS, 0o600))
    except OSError:
        close_all(files)
        why = unwritable(d, f + ".out") or "cannot write the spool: " + f + ".out"
        remove_files(claim, f + ".out", f + ".err")
        return [why], SPOOL_FAILED, f, inp, "", []
    said = []
    h = r + "/" + HELPER_NAME
    if not os.access(h, os.X_OK):
        if helper:
            temp = h + "." + str(os.getpid())
            try:
                write_file(temp, helper)
                os.chmod(temp, 0o700)
                os.rename(temp, h)
            except OSError:
                pass
            remove_files(temp)
        else:
            said.append("helper missing")
        if not os.access(h, os.X_OK):
            h = ""
    return said, None, f, inp, h, files


def close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def signal_group(pgid, sig):
    """`kill -SIG -PGID`: True when it was sent (never to group 0 or 1)."""
    pgid = str(pgid)
    if not pgid.isdigit() or int(pgid) <= 1:
        return False
    try:
        os.killpg(int(pgid), sig)
    except OSError:
        return False
    return True


def group_alive(pgid):
    """Whether a member of process group `pgid` lives (zombies do not count)."""
    if not os.access("/proc/self/stat", os.R_OK):
        return signal_group(pgid, 0)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        got = shread("/proc/" + name + "/stat", 1)
        if got is None:
            continue
        fields = got[1][0].rsplit(") ", 1)[-1].split()
        if len(fields) > 2 and fields[2] == pgid and fields[0] != "Z":
            return True
    return False


def kill(root, session, action, alias, tenths, why, term, hard):
    """KILL (a generator): tombstone an action not yet claimed; else mark why, wait
    up to 2 s for its group, TERM it, wait while a member lives (`tenths` of a
    second at most), KILL it. Returns 0, as KILL exits."""
    _, d, f = spot(root, session, action, alias)
    claim = f + ".claim"
    if _claim(claim, why + "\n"):
        return 0
    if not os.path.lexists(claim):
        try:
            os.makedirs(d, 0o700, exist_ok=True)
        except OSError:
            pass
        else:
            if _claim(claim, why + "\n"):
                return 0
    if os.path.exists(f + ".status"):
        return 0
    try:
        write_file(f + ".killed", why + "\n")
    except OSError:
        pass
    i = 0
    while True:
        got = read_ok(f + ".pid", 2)
        p = got[0] if got is not None else ""
        if got is not None and signal_group(p, term):
            break
        if os.path.exists(f + ".status") or i >= 40:
            return 0
        yield 0.05
        i += 1
    i = 0
    while group_alive(p) and i < tenths:
        yield 0.1
        i += 1
    signal_group(p, hard)
    return 0


def probe(root, session, action, alias):
    """PROBE (a generator): `none`, `status S`, `alive`, `alive asking` or `lost`."""
    _, _, f = spot(root, session, action, alias)
    if not os.path.exists(f + ".claim"):
        return "none"
    st = status_of(f)
    if st is not None:
        return "status " + st
    got = shread(f + ".claim", 3)
    b0, p, s0 = got[1] if got is not None else ("", "", "")
    if b0 in REASONS:
        return "status " + b0
    got = shread(f + ".run", 2)
    if got is not None:
        p, s0 = got[1]
    if boot_id() == b0 and p:
        start = started(p)
        if start is not None and start == s0 and proc_state(p) != "Z":
            return "alive asking" if nonempty(f + ".ask") else "alive"
    yield 0.3  # it may have ended just now: its status comes last
    st = status_of(f)
    return "lost" if st is None else "status " + st


def remove(root, session):
    """REMOVE: the session's spool gone; 0, or 1 when some of it stayed."""
    path = home_root(root) + "/" + session
    if not session or not os.path.isdir(path):
        return 0
    if os.path.islink(path):
        try:
            os.unlink(path)
        except OSError:
            return 1
        return 0
    failed = []  # type: list[str]
    _rmtree(path, failed)
    return 1 if failed else 0


def clean(root, minutes):
    """CLEAN: the session directories untouched for more than `minutes` removed."""
    r = home_root(root)
    try:
        names = os.listdir(r)
    except OSError:
        return 0
    now = time.time()
    for name in names:
        path = r + "/" + name
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and now - st.st_mtime > minutes * 60:
            _rmtree(path, [])
    return 0


def _rmtree(path, failed):
    """`rm -rf`, noting in `failed` what could not be removed (no symlink followed)."""
    try:
        names = os.listdir(path)
    except OSError:
        names = []
    for name in names:
        child = path + "/" + name
        try:
            is_dir = stat.S_ISDIR(os.lstat(child).st_mode)
        except OSError:
            continue
        if is_dir:
            _rmtree(child, failed)
        else:
            try:
                os.unlink(child)
            except OSError:
                failed.append(child)
    try:
        os.rmdir(path)
    except OSError:
        failed.append(path)

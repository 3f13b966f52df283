"""The spool wrapper: how every command starts on a host, so that a later owner can
find out what became of it (design §4).

Three POSIX sh scripts, each run as one exec (`sh -c SCRIPT NAME ARGS…`), so
a host needs nothing but `sh`, `setsid`, `cat`, `sleep` and `kill`:

- LAUNCH claims the action atomically (`mkdir` of its spool directory, keyed
  by session, action and host alias), records the boot id, starts a detached
  runner (its own session) that starts the command in a process group of its
  own with stdin from /dev/null and stdout, stderr and then its exit status in
  spool files, and enforces the timeout itself as a backstop. The same exec
  then streams the two files back as they grow (one `cat` per poll, on file
  descriptors that keep their offsets) and exits with the command's status.
  A dropped connection loses nothing: the command goes on, its spool fills.
- KILL sends TERM to the command's process group from a new exec, then KILL.
- PROBE tells a new owner what became of an action: `status N`, `alive`
  (same boot, same pid and start time), `lost` (claimed, dead, no status) or
  `none` (never claimed).

Spool files, in ROOT/SESSION/ACTION@ALIAS/ (one directory per claim, so the
claim is a single `mkdir` once the session's directory exists): boot, pid
(the command's process group), start (its start time in clock ticks since
boot), out, err, status (`N` or `timeout`, written last, one line). A ROOT
that is not absolute is under the user's home (`~/.local/state/dsh/spool` on
a remote host).

`Watch` reads one LAUNCH exec for a Remote: it passes the output on and tells
the wrapper's own statuses from the command's.
"""

from __future__ import annotations

import shlex
import signal
from collections.abc import Sequence

from dsh.remote.base import Exec, OutputSink

#: Exit statuses of LAUNCH that are the wrapper's, not the command's; stderr
#: then starts with `dsh-spool: `.
CLAIMED = 253  # the action was claimed before: nothing was started
SPOOL_FAILED = 252  # the spool could not be written: nothing was started
BACKSTOP = 251  # the wrapper's own timeout killed the command

#: Seconds between TERM and KILL, here and in the backstop.
GRACE = 2

_READ_START = 'read -r _s < "/proc/$1/stat" && set -f && set -- ${_s#*) } && shift 19 && echo "$1"'

RUNNER = (
    r"""
d=$1 t=$2 c=$3
setsid sh -c "$c" </dev/null >"$d/out" 2>"$d/err" &
p=$!
printf '%s\n' "$p" >"$d/pid"
start() { """
    + _READ_START
    + r"""; }
start "$p" >"$d/start" 2>/dev/null
( sleep "$t"; : >"$d/timedout"; kill -TERM "-$p" 2>/dev/null; sleep """
    + str(GRACE)
    + r"""
  kill -KILL "-$p" 2>/dev/null ) &
wait "$p"; rc=$?
kill -TERM "-$p" 2>/dev/null
if [ -e "$d/timedout" ]; then rc=timeout; fi
printf '%s\n' "$rc" >"$d/status"
kill -KILL "-$$" 2>/dev/null
"""
)

LAUNCH = r"""
root=$1 session=$2 action=$3 alias=$4 t=$5 c=$6 runner=$7
case $root in /*) ;; *) root=$HOME/$root ;; esac
d="$root/$session/$action@$alias"
if ! mkdir "$d" 2>/dev/null; then
  [ -d "$d" ] && { echo "dsh-spool: claimed: $action on $alias was started before" >&2; exit 253; }
  mkdir -p "$root/$session" 2>/dev/null && mkdir "$d" 2>/dev/null ||
    { echo "dsh-spool: cannot make $d" >&2; exit 252; }
fi
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id || boot=unknown
printf '%s\n' "$boot" >"$d/boot" && : >"$d/out" && : >"$d/err" ||
  { echo "dsh-spool: cannot write $d" >&2; exit 252; }
setsid sh -c "$runner" dsh-run "$d" "$t" "$c" </dev/null >/dev/null 2>&1 &
exec 3<"$d/out" 4<"$d/err"
n=0
while :; do
  fin=0; read -r st 2>/dev/null <"$d/status" && fin=1
  [ -s "$d/out" ] && cat <&3
  [ -s "$d/err" ] && cat <&4 >&2
  [ "$fin" = 1 ] && break
  n=$((n + 1))
  if [ "$n" -lt 20 ]; then sleep 0.01; elif [ "$n" -lt 60 ]; then sleep 0.05; else sleep 0.2; fi
done
case $st in
  timeout) echo "dsh-spool: timed out after ${t}s (the wrapper's backstop)" >&2; exit 251 ;;
  *) exit "$st" ;;
esac
"""

#: A spool root that is not absolute is under the (remote) user's home.
_SPOOL_DIR = r"""r=$1; case $r in /*) ;; *) r=$HOME/$r ;; esac; d="$r/$2/$3@$4"
"""

KILL = (
    _SPOOL_DIR
    + r"""g=${5:-20}
read -r p 2>/dev/null <"$d/pid" || exit 0
kill -TERM "-$p" 2>/dev/null || exit 0
i=0
while kill -0 "-$p" 2>/dev/null && [ "$i" -lt "$g" ]; do sleep 0.1; i=$((i + 1)); done
kill -KILL "-$p" 2>/dev/null
exit 0
"""
)

PROBE = (
    _SPOOL_DIR
    + r"""
[ -d "$d" ] || { echo none; exit 0; }
if read -r st 2>/dev/null <"$d/status"; then echo "status $st"; exit 0; fi
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id || boot=unknown
read -r b0 2>/dev/null <"$d/boot" || b0=
read -r p 2>/dev/null <"$d/pid" || p=
read -r s0 2>/dev/null <"$d/start" || s0=
start() { """
    + _READ_START
    + r"""; }
if [ -n "$p" ] && [ "$boot" = "$b0" ] && [ "$(start "$p" 2>/dev/null)" = "$s0" ]; then
  echo alive
else
  echo lost
fi
"""
)


def _argv(script: str, name: str, args: Sequence[str]) -> list[str]:
    return ["sh", "-c", script, name, *args]


def launch_argv(root: str, session: str, action: str, alias: str, timeout: float, command: str) -> list[str]:
    """The argv of one LAUNCH exec: claim, start, stream; its status is the command's."""
    return _argv(LAUNCH, "dsh-spool", [root, session, action, alias, f"{timeout:g}", command, RUNNER])


def kill_argv(root: str, session: str, action: str, alias: str, grace: float = GRACE) -> list[str]:
    """The argv of one KILL exec: TERM the command's group, KILL it after `grace` seconds."""
    return _argv(KILL, "dsh-kill", [root, session, action, alias, str(max(1, round(grace * 10)))])


def probe_argv(root: str, session: str, action: str, alias: str) -> list[str]:
    return _argv(PROBE, "dsh-probe", [root, session, action, alias])


def as_command(argv: Sequence[str]) -> str:
    """One shell command line for an SSH exec (the remote login shell parses it)."""
    return " ".join(shlex.quote(a) for a in argv)


#: Where the spool is on a remote host (relative: under the login user's home).
REMOTE_ROOT = ".local/state/dsh/spool"
_PREFIX = b"dsh-spool: "
_HOLD = 4096


class Watch:
    """The output and outcome of one LAUNCH exec.

    The wrapper's refusals (claimed, spool failed) come before any output of
    the command, on stderr, prefixed `dsh-spool: `; such stderr is held back
    until the exit status tells whether it was the wrapper's, so the message
    becomes the outcome's and is not shown as the host's output.
    """

    def __init__(self, output: OutputSink) -> None:
        self.output = output
        self._held = bytearray()
        self._holding = True  # until stdout or stderr shows the command started
        self._tail = b""

    def sink(self, stream: str, data: bytes) -> None:
        if self._holding:
            if stream == "stderr" and len(self._held) + len(data) <= _HOLD:
                seen = bytes(self._held) + data
                if seen.startswith(_PREFIX) or _PREFIX.startswith(seen):
                    self._held += data
                    return
            self._release()
        if stream == "stderr":
            self._tail = (self._tail + data)[-256:]
        self.output(stream, data)

    def _release(self) -> None:
        self._holding = False
        if self._held:
            held, self._held = bytes(self._held), bytearray()
            self._tail = held[-256:]
            self.output("stderr", held)

    def result(self, status: int, seconds: float) -> Exec:
        """The outcome of an exec that exited with `status`."""
        if self._held.startswith(_PREFIX) and status in (CLAIMED, SPOOL_FAILED):
            why = self._held[len(_PREFIX) :].decode("utf-8", "replace").strip()
            self._held = bytearray()
            if status == CLAIMED:
                return Exec("lost", None, seconds, f"not started again: {why} (the spool holds its claim)")
            return Exec("failed", None, seconds, f"nothing started: {why}")
        self._release()
        if status == BACKSTOP and b"dsh-spool: timed out" in self._tail:
            return Exec("timeout", None, seconds, "the wrapper's own timeout (the backstop) ended it")
        if status == 0:
            return Exec("ok", 0, seconds)
        return Exec("failed", status, seconds, _signal_hint(status))


def _signal_hint(status: int) -> str:
    if 128 < status < 128 + 65:
        try:
            return f"killed by {signal.Signals(status - 128).name}, or exit {status}"
        except ValueError:
            pass
    return ""

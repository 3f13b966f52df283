"""The spool wrapper: how every command starts on a host, so that a later owner can
find out what became of it (design §4).

Three POSIX sh scripts, each run as one exec (`sh -c SCRIPT NAME ARGS…`), so
a host needs nothing but `sh`, `setsid`, `cat`, `sleep` and `kill`:

- LAUNCH claims the action atomically (an O_EXCL create of its claim file,
  keyed by session, action and host alias, holding the boot id) and starts
  the command with `setsid`, in a session and process group of its own,
  stdin from /dev/null, stdout and stderr to spool files. The same exec then
  polls: it streams the two files back as they grow (a `cat` per poll when
  there is output, on file descriptors that keep their offsets), reaps the
  command when it ends, writes its exit status to the spool and exits with
  it. The poll loop also enforces the timeout as a backstop (TERM, then
  KILL). A dropped connection loses nothing: LAUNCH ignores SIGPIPE and
  SIGHUP once the command runs and goes on polling, the command goes on, the
  spool fills.
- KILL sends TERM to the command's process group from a new exec, then KILL.
- PROBE tells a new owner what became of an action: `status N`, `alive`
  (same boot, same pid and start time), `lost` (claimed, dead, no status) or
  `none` (never claimed).

Spool files, all ROOT/SESSION/ACTION@ALIAS.EXT, so that the claim is one
open without a fork once the session's directory exists: claim (the boot
id), pid (the command's process group), start (its start time in clock
ticks since boot), out, err, timedout (the backstop fired), status (`N` or
`timeout`, written last, one line). A ROOT that is not absolute is under the
user's home (`~/.local/state/dsh/spool` on a remote host). On a host that
runs a `true`, this costs two processes besides the wrapper's own shell: the
command's (through `setsid`) and one `sleep` of the poll.

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

#: Claims with `set -C` (an O_EXCL open, no fork), starts the command with
#: `setsid` (its own session and process group), then polls: it streams the
#: spool files as they grow, reaps the command when its /proc stat says it is
#: a zombie (then TERMs what it left in the group and writes the status, last),
#: and keeps the backstop: past T hundredths of a second it TERMs the group,
#: and KILLs it G hundredths later. SIGPIPE and SIGHUP are ignored once the
#: command has started, so a dropped connection leaves it polling, enforcing
#: and writing the status.
LAUNCH = (
    r"""
root=$1 session=$2 action=$3 alias=$4 t=$5 c=$6 g=$7
case $root in /*) ;; *) root=$HOME/$root ;; esac
d="$root/$session" f="$root/$session/$action@$alias"
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id || boot=unknown
set -C
if ! { printf '%s\n' "$boot" >"$f.claim"; } 2>/dev/null; then
  [ -e "$f.claim" ] && { echo "dsh-spool: claimed: $action on $alias was started before" >&2; exit 253; }
  { mkdir -p "$d" && printf '%s\n' "$boot" >"$f.claim"; } 2>/dev/null ||
    { echo "dsh-spool: cannot write $f.claim" >&2; exit 252; }
fi
set +C
{ : >"$f.out" && : >"$f.err"; } 2>/dev/null || { echo "dsh-spool: cannot write $f.out" >&2; exit 252; }
setsid sh -c "$c" </dev/null >"$f.out" 2>"$f.err" &
p=$!
trap '' PIPE HUP
printf '%s\n' "$p" >"$f.pid"
start() { """
    + _READ_START
    + r"""; }
start "$p" >"$f.start" 2>/dev/null
exec 3<"$f.out" 4<"$f.err"
n=0 e=0 k=
while :; do
  fin=1
  if read -r s 2>/dev/null <"/proc/$p/stat"; then s=${s##*) }; [ "${s%% *}" = Z ] || fin=0; fi
  [ -s "$f.out" ] && cat <&3
  [ -s "$f.err" ] && cat <&4 >&2
  [ "$fin" = 1 ] && break
  if [ "$e" -ge "$t" ]; then
    if [ -z "$k" ]; then
      : >"$f.timedout"; kill -TERM "-$p" 2>/dev/null; k=$e
    elif [ "$e" -ge "$((k + g))" ]; then
      kill -KILL "-$p" 2>/dev/null
    fi
  fi
  n=$((n + 1))
  if [ "$n" -lt 20 ]; then sleep 0.01; e=$((e + 1))
  elif [ "$n" -lt 60 ]; then sleep 0.05; e=$((e + 5))
  else sleep 0.2; e=$((e + 20)); fi
done
wait "$p"; st=$?
kill -TERM "-$p" 2>/dev/null
[ -e "$f.timedout" ] && st=timeout
printf '%s\n' "$st" >"$f.status"
case $st in
  timeout) echo "dsh-spool: timed out (the wrapper's backstop)" >&2; exit 251 ;;
  *) exit "$st" ;;
esac
"""
)

#: A spool root that is not absolute is under the (remote) user's home.
_SPOOL_FILE = r"""r=$1; case $r in /*) ;; *) r=$HOME/$r ;; esac; f="$r/$2/$3@$4"
"""

#: TERM the command's group, KILL it G tenths of a second later. A command just
#: claimed may not have its pid yet: wait a little for it (or for its status).
KILL = (
    _SPOOL_FILE
    + r"""g=${5:-20}
i=0
while ! read -r p 2>/dev/null <"$f.pid"; do
  [ -e "$f.status" ] || [ ! -e "$f.claim" ] || [ "$i" -ge 20 ] && exit 0
  sleep 0.1; i=$((i + 1))
done
kill -TERM "-$p" 2>/dev/null || exit 0
i=0
while kill -0 "-$p" 2>/dev/null && [ "$i" -lt "$g" ]; do sleep 0.1; i=$((i + 1)); done
kill -KILL "-$p" 2>/dev/null
exit 0
"""
)

PROBE = (
    _SPOOL_FILE
    + r"""
[ -e "$f.claim" ] || { echo none; exit 0; }
if read -r st 2>/dev/null <"$f.status"; then echo "status $st"; exit 0; fi
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id || boot=unknown
read -r b0 2>/dev/null <"$f.claim" || b0=
read -r p 2>/dev/null <"$f.pid" || p=
read -r s0 2>/dev/null <"$f.start" || s0=
start() { """
    + _READ_START
    + r"""; }
if [ -n "$p" ] && [ "$boot" = "$b0" ] && [ "$(start "$p" 2>/dev/null)" = "$s0" ]; then
  read -r s 2>/dev/null <"/proc/$p/stat"; s=${s##*) }
  [ "${s%% *}" != Z ] && { echo alive; exit 0; }
  # Ended, not yet reaped: its wrapper writes the status at its next poll, if it lives.
  sleep 0.5
  if read -r st 2>/dev/null <"$f.status"; then echo "status $st"; else echo lost; fi
else
  echo lost
fi
"""
)


def _argv(script: str, name: str, args: Sequence[str]) -> list[str]:
    return ["sh", "-c", script, name, *args]


def launch_argv(
    root: str, session: str, action: str, alias: str, timeout: float, command: str, grace: float = GRACE
) -> list[str]:
    """The argv of one LAUNCH exec: claim, start, stream; its status is the command's.
    `timeout` and `grace` are the backstop's (sent in hundredths of a second)."""
    hundredths = [str(max(1, round(x * 100))) for x in (timeout, grace)]
    return _argv(LAUNCH, "dsh-spool", [root, session, action, alias, hundredths[0], command, hundredths[1]])


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

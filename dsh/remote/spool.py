"""The spool wrapper: how every command starts on a host, so that a later owner can
find out what became of it (design §4).

Three POSIX sh scripts, each run as one exec, so that a host needs nothing
but `sh`, `setsid`, `cat`, `sleep` and `kill` (locally `sh -c SCRIPT NAME
ARGS…`; over SSH `sh -s` with `set -- ARGS` and the script on its stdin, so
that the login shell, whatever it is, never parses them):

- LAUNCH claims the action atomically (an O_EXCL create of its claim file,
  keyed by session, action and host alias, holding the boot id and LAUNCH's
  own pid and start time) and starts the runner in the background (a
  subshell; stdin, stdout and stderr away from the connection). The runner
  starts the command in a session and process group of its own (`setsid`),
  stdin from /dev/null, stdout and stderr to spool files; waits for it with
  a `sleep` as the backstop's timer (TERM the group when it runs out, KILL
  after the grace); TERMs what the command left in its group; and writes
  the exit status last. LAUNCH meanwhile streams the two files back as they
  grow (a `cat` per poll when there is output, on file descriptors that keep
  their offsets) until the status appears, and exits with it. A dropped or
  stalled connection blocks or ends LAUNCH only (SIGPIPE reaches LAUNCH, not
  its process group): the runner, its timer and the spool go on.
- KILL, from a new exec, records why (timeout or cancelled), TERMs the
  command's group and KILLs it after the grace. An action not yet claimed it
  claims itself with a tombstone, so that a LAUNCH arriving later starts
  nothing.
- PROBE tells a new owner what became of an action: `status N|timeout|
  cancelled`, `alive` (its runner, or the LAUNCH starting it, is the same
  live process: same boot, pid and start time), `lost` (claimed, nobody
  alive to write a status, none written) or `none` (never claimed).

Spool files, all ROOT/SESSION/ACTION@ALIAS.EXT, so that the claim is one
open without a fork once the session's directory exists: claim, run (the
runner's pid and start time), pid (the command's process group and start
time), out, err, killed (why dsh or the watchdog ended it), status (`N`,
`timeout` or `cancelled`, written last, one line); all private to the user
(umask 077). A ROOT that is not absolute is under the user's home
(`~/.local/state/dsh/spool` on a remote host). For a `true` on a host the
wrapper costs four processes besides its own shell: the runner (a fork), the
command (`setsid sh`), the timer's `sleep` and a `sleep` of the poll.

`Watch` reads one LAUNCH exec for a Remote: it passes the output on and tells
the wrapper's own statuses from the command's.
"""

from __future__ import annotations

import math
import shlex
import signal
import zlib
from collections.abc import Sequence

from dsh.remote.base import Exec, OutputSink

#: Exit statuses of LAUNCH that are the wrapper's, not the command's; stderr
#: then starts with `dsh-spool: `.
CLAIMED = 253  # the action was claimed before: nothing was started
SPOOL_FAILED = 252  # the spool could not be written: nothing was started
TIMED_OUT = 251  # the backstop, or dsh's KILL for a timeout, ended the command
CANCELLED = 250  # dsh's KILL for a cancel ended the command
LOST = 249  # followed: its runner is gone and no status was written
ORPHANED = 248  # a reader whose parent went away ends (nobody reads this status)

#: Seconds between TERM and KILL, here and in the backstop.
GRACE = 2

#: Sets `started` to the start time (clock ticks since boot) of process $1,
#: with builtins only (a function has its own positional parameters).
_STARTED = r"""started() { started=; read -r _s 2>/dev/null <"/proc/$1/stat" || return 1
  set -f; set -- ${_s#*) }; shift 19; started=$1; set +f; }
"""

#: The runner: a function LAUNCH runs in the background (a subshell: a fork,
#: no exec), with stdin, stdout and stderr away from the connection, so that
#: nothing that happens to the connection reaches it. It starts the command
#: in a session and process group of its own (.pid: its pid and start time)
#: and waits for it with a `sleep` as the backstop's timer: with SIGCHLD
#: trapped, `wait` also returns when the timer ends (POSIX: a trapped signal
#: ends a wait), and a timer no longer alive means time is up: TERM the group,
#: then after the grace KILL it. Then it TERMs what the command left in its
#: group and writes the status last.
RUNNER = r"""run() {
f=$1 c=$2 t=$3 g=$4
setsid sh -c "$c" </dev/null >"$f.out" 2>"$f.err" &
p=$!
started "$p"; printf '%s %s\n' "$p" "$started" >"$f.pid"
sleep "$t" & w=$!
trap ': ' CHLD
k=0
while :; do
  wait "$p"; rc=$?
  kill -0 "$w" 2>/dev/null && break
  case $k in
    0) echo timeout >"$f.killed"; kill -TERM "-$p" 2>/dev/null; k=1; sleep "$g" & w=$! ;;
    1) kill -KILL "-$p" 2>/dev/null; k=2; sleep 3600 & w=$! ;;
    *) break ;;
  esac
done
trap - CHLD
kill "$w" 2>/dev/null
kill -TERM "-$p" 2>/dev/null
read -r why 2>/dev/null <"$f.killed" && rc=$why
printf '%s\n' "$rc" >"$f.status"
}
"""

#: Streams .out and .err from their start as they grow until the status appears,
#: then exits with it. Every few polls it checks that the runner lives (a runner
#: gone without a status means nobody will ever write one: exit 249, lost), and
#: that whoever reads it is still there: a reader whose parent went away (dsh
#: or the connection died: it was adopted) has nobody to stream to and ends;
#: the runner goes on, and a later FOLLOW or PROBE collects its end.
_STREAM = r"""exec 3<"$f.out" 4<"$f.err"
parent() { parent=; read -r _p 2>/dev/null <"/proc/$$/stat" || return 1
  set -f; set -- ${_p#*) }; parent=$2; set +f; }
parent; reader=$parent
n=0
while :; do
  fin=0; read -r st 2>/dev/null <"$f.status" && fin=1
  [ -s "$f.out" ] && cat <&3
  [ -s "$f.err" ] && cat <&4 >&2
  [ "$fin" = 1 ] && break
  n=$((n + 1))
  if [ $((n % 10)) = 0 ] && [ -n "$reader" ] && parent && [ "$parent" != "$reader" ]; then
    exit 248
  fi
  if [ -n "$watch" ] && [ $((n % 10)) = 0 ]; then
    read -r rp rs 2>/dev/null <"$f.run"
    if ! started "$rp" || [ "$started" != "$rs" ]; then
      sleep 0.3; read -r st 2>/dev/null <"$f.status" && continue
      echo "dsh-spool: lost: its runner is gone and no status was written" >&2; exit 249
    fi
  fi
  if [ "$n" -lt 20 ]; then sleep 0.01; elif [ "$n" -lt 60 ]; then sleep 0.05; else sleep 0.2; fi
done
case $st in
  timeout) echo "dsh-spool: timed out" >&2; exit 251 ;;
  cancelled) echo "dsh-spool: cancelled" >&2; exit 250 ;;
  *) exit "$st" ;;
esac
"""

#: Claims with `set -C` (an O_EXCL open: no fork once the session's directory
#: exists), recording the boot id and its own pid and start time in the claim;
#: starts the runner (.run: its pid and start time); then streams the spool files back as they grow until the
#: status appears, and exits with it. It may be blocked by a slow connection,
#: or die with it: the runner does not depend on it.
LAUNCH = (
    "umask 077\n"
    + _STARTED
    + RUNNER
    + r"""root=$1 session=$2 action=$3 alias=$4 t=$5 c=$6 g=$7 watch=1
case $root in /*) ;; *) root=$HOME/$root ;; esac
d="$root/$session" f="$root/$session/$action@$alias"
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id || boot=unknown
started $$
claim() { { printf '%s %s %s\n' "$boot" "$$" "$started" >"$f.claim"; } 2>/dev/null; }
set -C
ok=0
claim && ok=1
if [ "$ok" = 0 ] && [ ! -e "$f.claim" ]; then mkdir -p "$d" 2>/dev/null; claim && ok=1; fi
set +C
if [ "$ok" = 0 ]; then
  [ -e "$f.claim" ] && { echo "dsh-spool: claimed: $action on $alias was started before" >&2; exit 253; }
  echo "dsh-spool: cannot write $f.claim" >&2; exit 252
fi
{ : >"$f.out" && : >"$f.err"; } 2>/dev/null || { echo "dsh-spool: cannot write $f.out" >&2; exit 252; }
run "$f" "$c" "$t" "$g" </dev/null >/dev/null 2>&1 &
r=$!
started "$r"; printf '%s %s\n' "$r" "$started" >"$f.run"
"""
    + _STREAM
)

#: A spool root that is not absolute is under the (remote) user's home.
_SPOOL_FILE = r"""r=$1; case $r in /*) ;; *) r=$HOME/$r ;; esac; d="$r/$2" f="$r/$2/$3@$4"
"""

#: Ends an action for a REASON (timeout | cancelled). Not yet claimed: it claims
#: it itself, with a tombstone, so that a LAUNCH arriving later starts nothing.
#: Else it marks why, waits a little for the command's pid (just launched) and
#: its process group (made by setsid after the fork), TERMs the group and KILLs
#: it G tenths of a second later.
KILL = (
    "umask 077\n"
    + _SPOOL_FILE
    + r"""g=${5:-20} why=${6:-cancelled}
tomb() { { echo "$why" >"$f.claim"; } 2>/dev/null; }
set -C
if tomb || { [ ! -e "$f.claim" ] && mkdir -p "$d" 2>/dev/null && tomb; }; then exit 0; fi
set +C
[ -e "$f.status" ] && exit 0
echo "$why" >"$f.killed"
i=0
until read -r p _ 2>/dev/null <"$f.pid" && kill -TERM "-$p" 2>/dev/null; do
  [ -e "$f.status" ] || [ "$i" -ge 40 ] && exit 0
  sleep 0.05; i=$((i + 1))
done
i=0
# a member of the group alive? (zombies answer kill -0 too: where /proc is, they do not count)
alive() {
  [ -r /proc/self/stat ] || { kill -0 "-$p" 2>/dev/null; return; }
  for s in /proc/[0-9]*/stat; do
    read -r l 2>/dev/null <"$s" || continue
    set -- ${l##*) }
    [ "$3" = "$p" ] && [ "$1" != Z ] && return 0
  done
  return 1
}
while alive && [ "$i" -lt "$g" ]; do sleep 0.1; i=$((i + 1)); done
kill -KILL "-$p" 2>/dev/null
exit 0
"""
)

#: What became of an action: `none`, `status N|timeout|cancelled`, `alive` (its
#: runner, or the LAUNCH that is starting it, is the same live process: same
#: boot, pid and start time) or `lost` (claimed, nobody alive, no status).
PROBE = (
    _STARTED
    + _SPOOL_FILE
    + r"""[ -e "$f.claim" ] || { echo none; exit 0; }
if read -r st 2>/dev/null <"$f.status"; then echo "status $st"; exit 0; fi
read -r b0 p s0 2>/dev/null <"$f.claim"
case $b0 in timeout|cancelled) echo "status $b0"; exit 0 ;; esac
read -r p s0 2>/dev/null <"$f.run"
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id || boot=unknown
if [ "$boot" = "$b0" ] && [ -n "$p" ] && started "$p" && [ "$started" = "$s0" ]; then
  read -r s 2>/dev/null <"/proc/$p/stat"; s=${s##*) }
  [ "${s%% *}" != Z ] && { echo alive; exit 0; }
fi
sleep 0.3  # it may have ended just now: its status comes last
if read -r st 2>/dev/null <"$f.status"; then echo "status $st"; else echo lost; fi
"""
)


#: Streams an action launched before (by another owner) to its end: what a new
#: owner does with an action PROBE says is `alive` (or ended: it then streams
#: the whole output and exits with the status at once).
FOLLOW = (
    _STARTED
    + _SPOOL_FILE
    + r"""watch=1
[ -e "$f.out" ] || { echo "dsh-spool: lost: $3 on $4 has no spool" >&2; exit 249; }
"""
    + _STREAM
)


#: Removes a session's spool on a host (`dsh rm`).
REMOVE = r"""r=$1; case $r in /*) ;; *) r=$HOME/$r ;; esac
[ -n "$2" ] && [ -d "$r/$2" ] || exit 0
rm -rf -- "$r/$2"
"""


#: Removes the spools of sessions untouched for M minutes (the session's
#: directory gets a new entry with every action started there).
CLEAN = r"""r=$1; case $r in /*) ;; *) r=$HOME/$r ;; esac
[ -d "$r" ] || exit 0
find "$r" -mindepth 1 -maxdepth 1 -type d -mmin "+$2" -exec rm -rf {} + 2>/dev/null
exit 0
"""


def _argv(script: str, name: str, args: Sequence[str]) -> list[str]:
    return ["sh", "-c", script, name, *args]


def _seconds(x: float) -> str:
    """Whole seconds, rounded up: `sleep` may not take fractions everywhere."""
    return str(max(1, math.ceil(x)))


def launch_argv(
    root: str, session: str, action: str, alias: str, timeout: float, command: str, grace: float = GRACE
) -> list[str]:
    """The argv of one LAUNCH exec: claim, start, stream; its status is the command's.
    `timeout` and `grace` are the backstop's, in whole seconds (rounded up)."""
    args = [root, session, action, alias, _seconds(timeout), command, _seconds(grace)]
    return _argv(LAUNCH, "dsh-spool", args)


def kill_argv(
    root: str, session: str, action: str, alias: str, grace: float = GRACE, why: str = "cancelled"
) -> list[str]:
    """The argv of one KILL exec: TERM the command's group, KILL it after `grace`
    seconds; the status records `why` (timeout | cancelled)."""
    return _argv(KILL, "dsh-kill", [root, session, action, alias, str(max(1, round(grace * 10))), why])


def probe_argv(root: str, session: str, action: str, alias: str) -> list[str]:
    """The argv of one PROBE exec: prints `none`, `alive`, `lost` or `status S`."""
    return _argv(PROBE, "dsh-probe", [root, session, action, alias])


#: A probe (`await file`, `await cmd`) bounded on the host itself: over SSH without
#: a pty, a channel that closes does not end its command. The command runs in a
#: process group of its own; past T seconds the group is TERMed, then KILLed,
#: and the exit status is 124 (as coreutils' timeout says it).
CHECK = r"""t=$1 c=$2
setsid sh -c "$c" </dev/null & p=$!
watch() {
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  sleep "$t" & s=$!
  wait "$s" || exit 0
  kill -TERM "-$p" 2>/dev/null; sleep 1; kill -KILL "-$p" 2>/dev/null
}
watch </dev/null >/dev/null 2>&1 &
w=$!
wait "$p"; rc=$?
if kill "$w" 2>/dev/null; then exit "$rc"; fi
[ "$rc" -ge 128 ] && exit 124
exit "$rc"
"""
#: The exit status of a probe its host ended for running too long.
CHECK_TIMED_OUT = 124


def check_argv(command: str, timeout: float) -> list[str]:
    """The argv of one bounded probe (see CHECK)."""
    return _argv(CHECK, "dsh-check", [_seconds(timeout), command])


def remove_argv(root: str, session: str) -> list[str]:
    """The argv of one REMOVE exec: the session's spool on that host, gone."""
    return _argv(REMOVE, "dsh-rm", [root, session])


def clean_argv(root: str, keep: float) -> list[str]:
    """The argv of one CLEAN exec: spools untouched for `keep` seconds removed."""
    return _argv(CLEAN, "dsh-clean", [root, str(max(1, int(keep // 60)))])


def cleans(session: str) -> bool:
    """Whether this session's first command on each host also cleans that host's
    spool: one session in CLEAN_EVERY, so that a fan-out rarely pays for it."""
    return zlib.crc32(session.encode()) % CLEAN_EVERY == 0


def follow_argv(root: str, session: str, action: str, alias: str) -> list[str]:
    """The argv of one FOLLOW exec: the action's output from its start, then its status."""
    return _argv(FOLLOW, "dsh-follow", [root, session, action, alias])


def as_stdin(argv: Sequence[str]) -> str:
    """An argv made by this module as a script for `sh -s` on its stdin.

    The remote login shell then only runs `sh -s`, which every shell (fish and
    csh included) reads alike; the arguments are quoted for sh, not for it.
    """
    assert argv[:2] == ["sh", "-c"]
    args = " ".join(shlex.quote(a) for a in argv[4:])
    return f"set -- {args}\n{argv[2]}"


#: What an SSH exec runs: a POSIX shell reading its script from stdin.
REMOTE_SHELL = "sh -s"


#: One session in this many cleans the spools of the hosts it runs on.
CLEAN_EVERY = 16

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
        if self._held.startswith(_PREFIX) and status in (CLAIMED, SPOOL_FAILED, LOST):
            why = self._held[len(_PREFIX) :].decode("utf-8", "replace").strip()
            self._held = bytearray()
            if status == LOST:
                return Exec("lost", None, seconds, why.removeprefix("lost: "))
            if status == CLAIMED:
                return Exec("lost", None, seconds, f"not started again: {why} (the spool holds its claim)")
            return Exec("failed", None, seconds, f"nothing started: {why}")
        self._release()
        if status == TIMED_OUT and b"dsh-spool: timed out" in self._tail:
            return Exec("timeout", None, seconds, "the wrapper's backstop timeout ended it")
        if status == CANCELLED and b"dsh-spool: cancelled" in self._tail:
            return Exec("cancelled", None, seconds, "cancelled")
        if status == LOST and b"dsh-spool: lost" in self._tail:
            return Exec("lost", None, seconds, "launched before, and nobody is left to report its end")
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

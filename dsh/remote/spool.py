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
  starts the command in a session and process group of its own (`setsid`;
  where it is missing, python3's or perl's setsid; with none of them nothing
  is claimed or started), stdin from /dev/null (or, when LAUNCH is told
  `in`, from the action's ACTION@ALIAS.in, which dsh wrote before: `| stdin`),
  stdout and stderr to spool files; waits for it with a `sleep` as the backstop's timer (TERM the group
  when it runs out, KILL after the grace); TERMs what the command left in
  its group; and writes the exit status last. LAUNCH meanwhile streams the
  two files back as they grow (a `cat` per poll when there is output, on
  file descriptors that keep their offsets) until the status appears, and
  exits with it. A dropped or stalled connection blocks or ends LAUNCH only
  (SIGPIPE reaches LAUNCH, not its process group): the runner, its timer and
  the spool go on.
- KILL, from a new exec, records why (timeout or cancelled), TERMs the
  command's group and KILLs it after the grace. An action not yet claimed it
  claims itself with a tombstone, so that a LAUNCH arriving later starts
  nothing.
- PROBE tells a new owner what became of an action: `status N|timeout|
  cancelled`, `alive` (its runner, or the LAUNCH starting it, is the same
  live process: same boot, pid and start time), `lost` (claimed, nobody
  alive to write a status, none written) or `none` (never claimed).

What an exec writes back is framed by a tag of its own (`dsh-spool-` and 16
random hex digits, in the script's first line, so a login shell never sees
it): LAUNCH and FOLLOW first write `TAG start` on stdout and on stderr, and
whatever came before on either stream (a motd, rc-file noise of the login
shell) is not the command's: it is dropped and counted. An exec that ends
without that marker never ran the wrapper (the login shell exited first):
nothing was claimed or started. The wrapper's own messages (claimed before,
spool not writable, no setsid, timed out, cancelled, lost) are `TAG TEXT`
lines on stderr, taken out of the stream by `Watch`; PROBE answers `TAG
ANSWER`, and CHECK writes `TAG start` before the probe's output.

Spool files, all ROOT/SESSION/ACTION@ALIAS.EXT, so that the claim is one
open without a fork once the session's directory exists: claim, run (the
runner's pid and start time), pid (the command's process group and start
time), out, err, killed (why dsh or the watchdog ended it), status (`N`,
`timeout` or `cancelled`, written last, one line); all private to the user
(umask 077). These files are a durable format: the scripts read every spool
written by earlier versions. A ROOT that is not absolute is under the user's
home (`~/.local/state/dsh/spool` on a remote host). For a `true` on a host the
wrapper costs four processes besides its own shell: the runner (a fork), the
command (`setsid sh`), the timer's `sleep` and a `sleep` of the poll.

A spool that cannot be written is said as such: a claim that could not be
written is removed again (nothing started) and LAUNCH says why ("the spool's
disk is full (…)" or "cannot write the spool: …", from a test write in the
session's directory); a runner that cannot write the status exits UNWRITTEN, which
LAUNCH (its parent) reads with `wait`, and the action is `lost` for that
reason, not as if its runner had died.

`Watch` reads one LAUNCH or FOLLOW exec for a Remote: it passes the command's
output on and tells the wrapper's own statuses and messages from the
command's.
"""

from __future__ import annotations

import math
import re
import secrets
import shlex
import signal
import zlib
from collections.abc import Callable, Mapping, Sequence
from enum import IntEnum

from dsh.remote import askpass
from dsh.remote.base import Exec, OutputSink


class WrapperExit(IntEnum):
    """The wrapper's own exit statuses, not a command's. The scripts below are
    built with them (`@NAME@` in their text is the number: `_statuses`)."""

    #: LAUNCH: the action was claimed before: nothing was started.
    CLAIMED = 253
    #: LAUNCH: nothing was started: the spool could not be written, or no setsid.
    SPOOL_FAILED = 252
    #: The backstop, or dsh's KILL for a timeout, ended the command.
    TIMED_OUT = 251
    #: dsh's KILL for a cancel ended the command.
    CANCELLED = 250
    #: Its runner is gone (or could not write it) and no status was written.
    LOST = 249
    #: A reader whose parent went away ends (nobody reads this status).
    ORPHANED = 248
    #: CHECK: the host ended a probe that ran too long (as coreutils' timeout says it).
    CHECK_TIMED_OUT = 124
    #: The runner could not write the status; LAUNCH, its parent, reads it with `wait`.
    UNWRITTEN = 3


def _statuses(script: str) -> str:
    """`script` with each `@NAME@` replaced by the number of WrapperExit.NAME."""
    return re.sub(r"@([A-Z_]+)@", lambda m: str(int(WrapperExit[m.group(1)])), script)


#: Seconds between TERM and KILL, here and in the backstop.
GRACE = 2

#: The wrapper's own messages (LAUNCH's and FOLLOW's): `TAG TEXT` lines on stderr.
_SAY = r"""say() { printf '%s %s\n' "$tag" "$*" >&2; }
"""

#: LAUNCH and FOLLOW begin with it: what came before on either stream is not the command's.
_BEGIN = r"""printf '%s start\n' "$tag"; printf '%s start\n' "$tag" >&2
"""

#: Sets `started` to the start time (clock ticks since boot) of process $1,
#: with builtins only (a function has its own positional parameters).
_STARTED = r"""started() { started=; read -r _s 2>/dev/null <"/proc/$1/stat" || return 1
  set -f; set -- ${_s#*) }; shift 19; started=$1; set +f; }
"""

#: How this host starts a command in a session (and process group) of its own:
#: `ss` is setsid, else python3 or perl (whose setsid does the same), else empty.
_SESSION = r"""if command -v setsid >/dev/null 2>&1; then ss=setsid
elif command -v python3 >/dev/null 2>&1; then ss=python3
elif command -v perl >/dev/null 2>&1; then ss=perl
else ss=; fi
"""

#: Sets the positional parameters to the command prefix `ss` names (inside a
#: function, or where they were saved): `"$@" sh -c …` then starts a session.
_SESSION_ARGV = r"""case $ss in
  setsid) set -- setsid ;;
  python3) set -- python3 -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])' ;;
  perl) set -- perl -e 'use POSIX; POSIX::setsid(); exec { $ARGV[0] } @ARGV; exit 127' ;;
  *) set -- ;;
esac
"""

#: `unwritable FILE`: whether the spool's directory $d cannot be written now (a
#: test write, in English, only when a write failed: forks are fine here); `why`
#: then says so in one line: "the spool's disk is full (FILE: …)" or "cannot
#: write the spool: FILE: REASON".
_UNWRITABLE = r"""unwritable() {
  _f=$1
  why=$(LC_ALL=C; export LC_ALL; { mkdir -p "$d" && printf x | cat >"$d/.write-test.$$"; } 2>&1)
  _rc=$?
  rm -f "$d/.write-test.$$" 2>/dev/null
  [ "$_rc" = 0 ] && [ -z "$why" ] && return 1
  _ifs=$IFS; IFS='
'; set -f; set -- $why; set +f; IFS=$_ifs  # its last line
  why=; [ "$#" -gt 0 ] && eval "why=\${$#}"
  case $why in
    *"No space left"*) why="the spool's disk is full ($_f: No space left on device)" ;;
    *": "*) why="cannot write the spool: $_f: ${why##*: }" ;;
    *) why="cannot write the spool: $_f" ;;
  esac
  return 0
}
"""

#: The runner: a function LAUNCH runs in the background (a subshell: a fork,
#: no exec), with stdin, stdout and stderr away from the connection, so that
#: nothing that happens to the connection reaches it. It starts the command
#: in a session and process group of its own (.pid: its pid and start time)
#: and waits for it with a `sleep` as the backstop's timer: with SIGCHLD
#: trapped, `wait` also returns when the timer ends (POSIX: a trapped signal
#: ends a wait), and a timer no longer alive means time is up: TERM the group,
#: then after the grace KILL it. Then it TERMs what the command left in its
#: group, removes the command's input (ACTION@ALIAS.in: read by now, and it
#: may be large) and writes the status last; when it cannot, it exits UNWRITTEN (LAUNCH,
#: its parent, reads that with `wait`).
RUNNER = _statuses(
    r"""run() {
f=$1 c=$2 t=$3 g=$4
"""
    + _SESSION_ARGV
    + r"""%START%
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
[ "$inp" = /dev/null ] || rm -f "$inp"
printf '%s\n' "$rc" >"$f.status" || exit @UNWRITTEN@
}
"""
)

#: How the runner starts the command (RUNNER's `%START%`): with the helper's variables.
_START = (
    r"""DSH_ASK=$f SUDO_ASKPASS=$h DISPLAY=${DISPLAY:-:0} "$@" sh -c "$c" <"$inp" >"$f.out" 2>"$f.err" &"""
)

#: The same with the command's secrets, in its environment alone: a subshell's
#: exports, then exec (no other process's environment holds them).
_START_SECRETS = r"""(
  IFS='
'
  set -f
  for kv in $secrets; do export "$kv"; done
  secrets= DISPLAY=${DISPLAY:-:0}
  export DSH_ASK="$f" SUDO_ASKPASS="$h" DISPLAY
  exec "$@" sh -c "$c" <"$inp" >"$f.out" 2>"$f.err"
) &"""

#: Streams .out and .err from their start as they grow until the status appears,
#: then exits with it. Every few polls it checks that the runner lives (a runner
#: gone without a status means nobody will ever write one: exit LOST, with
#: why as far as it can tell: LAUNCH, the runner's parent, reads its exit status;
#: a spool that cannot be written is said), and that whoever reads it is still
#: there: a reader whose parent went away (dsh or the connection died: it was
#: adopted) has nobody to stream to and ends; the runner goes on, and a later
#: FOLLOW or PROBE collects its end. `rp rs`: the runner's pid and start time
#: (LAUNCH knows them; FOLLOW reads them from .run).
_STREAM = _statuses(
    r"""exec 3<"$f.out" 4<"$f.err"
parent() { parent=; read -r _p 2>/dev/null <"/proc/$$/stat" || return 1
  set -f; set -- ${_p#*) }; parent=$2; set +f; }
lost() {
  if [ -n "$runner" ] && ! kill -0 "$runner" 2>/dev/null; then
    wait "$runner"
    if [ "$?" = @UNWRITTEN@ ]; then
      unwritable "$f.status" || why="cannot write the spool: $f.status"
      say "lost: the command's end could not be written: $why"; exit @LOST@
    fi
  fi
  if unwritable "$f.status"; then say "lost: its runner is gone and no status was written; $why"; exit @LOST@; fi
  say "lost: its runner is gone and no status was written"; exit @LOST@
}
parent; reader=$parent
n=0 asked=
while :; do
  fin=0; read -r st 2>/dev/null <"$f.status" && fin=1
  [ -s "$f.out" ] && cat <&3
  [ -s "$f.err" ] && cat <&4 >&2
"""  # noqa: E501  (a line of the script, `exit @LOST@` spelt out)
    + askpass.STREAM_PART  # before the end: a sudo stopped at its second ask is said too
    + r"""  [ "$fin" = 1 ] && break
  n=$((n + 1))
  if [ $((n % 10)) = 0 ] && [ -n "$reader" ] && parent && [ "$parent" != "$reader" ]; then
    exit @ORPHANED@
  fi
  if [ -n "$watch" ] && [ $((n % 10)) = 0 ]; then
    [ -n "$rp" ] || read -r rp rs 2>/dev/null <"$f.run"
    if ! started "$rp" || [ "$started" != "$rs" ]; then
      sleep 0.3; read -r st 2>/dev/null <"$f.status" && continue
      lost
    fi
  fi
  if [ "$n" -lt 20 ]; then sleep 0.01; elif [ "$n" -lt 60 ]; then sleep 0.05; else sleep 0.2; fi
done
case $st in
  timeout) say "timed out"; exit @TIMED_OUT@ ;;
  cancelled) say "cancelled"; exit @CANCELLED@ ;;
  *) exit "$st" ;;
esac
"""
)


#: Says where it stands first (`TAG start`); makes sure this host can start a
#: session (setsid, python3 or perl), else claims nothing; claims with `set -C`
#: (an O_EXCL open: no fork once the session's directory exists), recording the
#: boot id and its own pid and start time in the claim; a claim it created but
#: could not write, or whose spool files it could not create, it removes again
#: (nothing started); starts the runner (.run: its pid and start time); then
#: streams the spool files back as they grow until the status appears, and
#: exits with it. It may be blocked by a slow connection, or die with it: the
#: runner does not depend on it.
def _launch(helper: bool, secrets: bool) -> str:
    """LAUNCH's text: with `helper`, the sudo helper's text, written if the host has
    it not (a host's first launch in a session: the text is ~900 bytes of every
    exec otherwise); with `secrets`, reading the command's secrets (`env_lines`)."""
    return _statuses(
        "umask 077\n"
        + (f"helper={shlex.quote(askpass.HELPER)}\n" if helper else "helper=\n")
        + _SAY
        + _BEGIN
        + _STARTED
        + _UNWRITABLE
        + RUNNER.replace("%START%", _START_SECRETS if secrets else _START)
        + r"""root=$1 session=$2 action=$3 alias=$4 t=$5 c=$6 g=$7 watch=1 runner= rp= rs= inp=/dev/null
"""
        + ("""[ -n "${secrets+x}" ] || secrets=$(cat)\n""" if secrets else "")
        + r"""case $root in /*) ;; *) root=$HOME/$root ;; esac
d="$root/$session" f="$root/$session/$action@$alias"
if [ "$8" = in ]; then
  inp=$f.in
  [ -f "$inp" ] && [ -r "$inp" ] || { say "its input is missing from the spool: $inp"; exit @SPOOL_FAILED@; }
fi
"""
        + _SESSION
        + r"""if [ -z "$ss" ]; then
  say "no setsid on $alias (nor python3 or perl to start a session with)"; exit @SPOOL_FAILED@
fi
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id || boot=unknown
started $$
claim() { { printf '%s %s %s\n' "$boot" "$$" "$started" >"$f.claim"; } 2>/dev/null; }
set -C
ok=0
claim && ok=1
if [ "$ok" = 0 ] && [ ! -e "$f.claim" ]; then mkdir -p "$d" 2>/dev/null; claim && ok=1; fi
set +C
if [ "$ok" = 0 ]; then
  [ -s "$f.claim" ] && { say "claimed: $action on $alias was started before"; exit @CLAIMED@; }
  if unwritable "$f.claim"; then  # an empty claim is one made here whose content could not be written
    [ -e "$f.claim" ] && [ ! -s "$f.claim" ] && rm -f "$f.claim"
    say "$why"; exit @SPOOL_FAILED@
  fi
  [ -e "$f.claim" ] && { say "claimed: $action on $alias was started before"; exit @CLAIMED@; }
  say "cannot write the spool: $f.claim"; exit @SPOOL_FAILED@
fi
if ! { : >"$f.out" && : >"$f.err"; } 2>/dev/null; then
  unwritable "$f.out" || why="cannot write the spool: $f.out"
  rm -f "$f.claim" "$f.out" "$f.err"
  say "$why"; exit @SPOOL_FAILED@
fi
"""
        + askpass.LAUNCH_PART
        + r"""run "$f" "$c" "$t" "$g" </dev/null >/dev/null 2>&1 &
runner=$!
started "$runner"; rp=$runner rs=$started
{ printf '%s %s\n' "$runner" "$started" >"$f.run"; } 2>/dev/null
"""
        + _STREAM
    )


#: LAUNCH's texts, by (helper, secrets).
_LAUNCHES = {(h, s): _launch(h, s) for h in (False, True) for s in (False, True)}
#: The whole of it (helper and secrets): what the module's text describes.
LAUNCH = _LAUNCHES[True, True]

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

#: What became of an action, as `TAG ANSWER`: `none`, `status N|timeout|cancelled`,
#: `alive` (its runner, or the LAUNCH that is starting it, is the same live
#: process: same boot, pid and start time; `alive asking` while a sudo in it waits
#: for a password: a new owner follows it and asks again) or `lost` (claimed,
#: nobody alive, no status).
PROBE = (
    _STARTED
    + _SPOOL_FILE
    + r"""answer() { printf '%s %s\n' "$tag" "$*"; exit 0; }
[ -e "$f.claim" ] || answer none
if read -r st 2>/dev/null <"$f.status"; then answer status "$st"; fi
read -r b0 p s0 2>/dev/null <"$f.claim"
case $b0 in timeout|cancelled) answer status "$b0" ;; esac
read -r p s0 2>/dev/null <"$f.run"
read -r boot 2>/dev/null </proc/sys/kernel/random/boot_id || boot=unknown
if [ "$boot" = "$b0" ] && [ -n "$p" ] && started "$p" && [ "$started" = "$s0" ]; then
  read -r s 2>/dev/null <"/proc/$p/stat"; s=${s##*) }
  if [ "${s%% *}" != Z ]; then [ -s "$f.ask" ] && answer alive asking; answer alive; fi
fi
sleep 0.3  # it may have ended just now: its status comes last
if read -r st 2>/dev/null <"$f.status"; then answer status "$st"; else answer lost; fi
"""
)


#: Streams an action launched before (by another owner) to its end: what a new
#: owner does with an action PROBE says is `alive` (or ended: it then streams
#: the whole output and exits with the status at once).
FOLLOW = _statuses(
    _SAY
    + _BEGIN
    + _STARTED
    + _UNWRITABLE
    + _SPOOL_FILE
    + r"""watch=1 runner= rp= rs=
[ -e "$f.out" ] || { say "lost: $3 on $4 has no spool"; exit @LOST@; }
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

#: The first line of every script: its exec's tag.
_TAG_LINE = "tag="


def new_tag() -> str:
    """A tag for one exec: nothing a login shell or a command prints is it."""
    return "dsh-spool-" + secrets.token_hex(8)


def _argv(script: str, name: str, args: Sequence[str]) -> list[str]:
    return ["sh", "-c", f"{_TAG_LINE}{new_tag()}\n{script}", name, *args]


def script_argv(script: str, name: str, args: Sequence[str]) -> list[str]:
    """The argv of another module's script, tagged as this module's are: a script that
    prints `"$tag" start` first has its stdout read with `unwrap`."""
    return _argv(script, name, args)


def tag_of(argv: Sequence[str]) -> str:
    """The tag of an argv made by this module."""
    first = argv[2].partition("\n")[0]
    assert first.startswith(_TAG_LINE), "not an argv of the spool module"
    return first[len(_TAG_LINE) :]


def seconds(x: float) -> str:
    """Whole seconds, rounded up: `sleep` may not take fractions everywhere."""
    return str(max(1, math.ceil(x)))


def launch_argv(
    root: str,
    session: str,
    action: str,
    alias: str,
    timeout: float,
    command: str,
    grace: float = GRACE,
    secrets: bool = False,
    helper: bool = True,
    stdin: bool = False,
) -> list[str]:
    """The argv of one LAUNCH exec: claim, start, stream; its status is the command's.
    With `stdin`, the command reads the spool's ACTION@ALIAS.in (`input_name`), which
    must be there (else nothing is claimed nor started); else /dev/null.
    `timeout` and `grace` are the backstop's, in whole seconds (rounded up). With
    `secrets`, LAUNCH reads the command's environment variables (`env_lines`) from
    its stdin, or from `secrets` set in its script over SSH (askpass.secret_script).
    Without `helper`, LAUNCH does not carry the sudo helper's text: the host has it
    (it says `helper missing` when it has not, and the command goes without)."""
    args = [root, session, action, alias, seconds(timeout), command, seconds(grace)]
    return _argv(_LAUNCHES[helper, secrets], "dsh-spool", [*args, "in"] if stdin else args)


def input_name(action: str, alias: str) -> str:
    """The name of an action's input file in its session's spool directory."""
    return f"{action}@{alias}.in"


def env_lines(env: Mapping[str, str]) -> str:
    """A command's secret environment as LAUNCH reads it: NAME=VALUE, a line each."""
    for name, value in env.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) or "\n" in value or "\0" in value:
            raise ValueError(f"{name}: not an environment variable a command can be given")
    return "\n".join(f"{name}={value}" for name, value in env.items())


def kill_argv(
    root: str, session: str, action: str, alias: str, grace: float = GRACE, why: str = "cancelled"
) -> list[str]:
    """The argv of one KILL exec: TERM the command's group, KILL it after `grace`
    seconds; the status records `why` (timeout | cancelled)."""
    return _argv(KILL, "dsh-kill", [root, session, action, alias, str(max(1, round(grace * 10))), why])


def probe_argv(root: str, session: str, action: str, alias: str) -> list[str]:
    """The argv of one PROBE exec: `answer(argv, stdout)` is `none`, `alive`,
    `lost` or `status S`."""
    return _argv(PROBE, "dsh-probe", [root, session, action, alias])


def answer(argv: Sequence[str], stdout: bytes | str) -> str | None:
    """What a PROBE exec answered (None: no answer, its wrapper never ran)."""
    data = stdout.encode("utf-8", "surrogateescape") if isinstance(stdout, str) else stdout
    tag = tag_of(argv).encode() + b" "
    at = data.rfind(tag)
    if at < 0:
        return None
    return data[at + len(tag) :].partition(b"\n")[0].decode("utf-8", "replace").strip()


#: A probe (`await file`, `await cmd`) bounded on the host itself: over SSH without
#: a pty, a channel that closes does not end its command. The command runs in a
#: process group of its own; past T seconds the group is TERMed, then KILLed,
#: and the exit status is CHECK_TIMED_OUT (124, as coreutils' timeout says
#: it): the watcher says so by its own status, also when the command ended of the
#: TERM while the watcher waited to KILL (a watcher killed before its trap was set
#: ends 143: not a timeout). Its stdout starts with `TAG start` (what came before
#: is the login shell's).
CHECK = _statuses(
    _BEGIN
    + _SESSION
    + r"""t=$1 c=$2
"""
    + _SESSION_ARGV
    + r""""$@" sh -c "$c" </dev/null & p=$!
stop() { kill "-$1" "-$p" 2>/dev/null || kill "-$1" "$p" 2>/dev/null; }
watch() {
  f=0
  trap 'kill "$s" 2>/dev/null; [ "$f" = 0 ] || stop KILL; exit "$f"' TERM
  sleep "$t" & s=$!
  wait "$s" || exit 0
  f=@CHECK_TIMED_OUT@
  stop TERM; sleep 1; stop KILL
  exit "$f"
}
watch </dev/null >/dev/null 2>&1 &
w=$!
wait "$p"; rc=$?
kill "$w" 2>/dev/null
wait "$w"
[ $? = @CHECK_TIMED_OUT@ ] && exit @CHECK_TIMED_OUT@
exit "$rc"
"""
)


def check_argv(command: str, timeout: float) -> list[str]:
    """The argv of one bounded probe (see CHECK; `unwrap` its stdout)."""
    return _argv(CHECK, "dsh-check", [seconds(timeout), command])


def unwrap(argv: Sequence[str], stdout: bytes) -> tuple[bytes, int] | None:
    """A CHECK's stdout after its start marker, and the bytes dropped before it
    (None: no marker, its wrapper never ran)."""
    start = tag_of(argv).encode() + b" start\n"
    at = stdout.find(start)
    if at < 0:
        return None
    return stdout[at + len(start) :], at


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


def answer_argv(root: str, session: str, action: str, alias: str, ask: str) -> list[str]:
    """The argv of one ANSWER exec (askpass.py): its stdin (or `secret` in its
    script over SSH) is the line for the helper `ask`; exit 0 when it was given."""
    return _argv(askpass.ANSWER, "dsh-answer", [root, session, action, alias, ask])


def verify_argv() -> list[str]:
    """The argv of one VERIFY exec (askpass.py): exit 0 when the password on its
    stdin (or `secret` over SSH) is the host's sudo's."""
    return _argv(askpass.VERIFY, "dsh-verify", [])


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
#: Bytes of a wrapper's message kept, and of what came before its start marker.
_KEEP = 4096
_STREAMS = ("stdout", "stderr")


class Watch:
    """The output and outcome of one LAUNCH or FOLLOW exec.

    Bytes before the wrapper's start marker on each stream (a login shell's
    motd or rc-file noise) are dropped and counted (`dropped`); the wrapper's
    own messages (`TAG TEXT` lines on stderr) become the outcome's message,
    never host output; the rest is the command's output, passed on. `skip`
    drops as many bytes of the command's output at the start of each stream
    (a FOLLOW after a dropped connection: what was shown already); `passed`
    counts them all, shown or skipped.
    """

    def __init__(
        self,
        output: OutputSink,
        argv: Sequence[str],
        *,
        skip: Mapping[str, int] | None = None,
        asks: Callable[[askpass.Ask], None] | None = None,
    ) -> None:
        self.output = output
        self._asks = asks
        tag = tag_of(argv).encode()
        self._start = tag + b" start\n"
        self._say = tag + b" "
        self.started = {name: False for name in _STREAMS}
        self.dropped = 0
        self._before = b""  # the tail of what came before the marker on stderr
        self._held = {name: b"" for name in _STREAMS}  # may be the start of a marker
        self._message: bytearray | None = None  # a message being read, until its newline
        self.messages: list[str] = []
        #: LAUNCH was sent without the sudo helper's text, and the host has none.
        self.helper_missing = False
        self._skip = {name: int((skip or {}).get(name, 0)) for name in _STREAMS}
        self.passed = dict(self._skip)

    def sink(self, stream: str, data: bytes) -> None:
        buf = self._held[stream] + data
        self._held[stream] = b""
        if not self.started[stream]:
            at = buf.find(self._start)
            if at < 0:
                keep = _partial(buf, self._start)
                self._drop(stream, buf[: len(buf) - keep])
                self._held[stream] = buf[len(buf) - keep :]
                return
            self._drop(stream, buf[:at])
            self.started[stream] = True
            buf = buf[at + len(self._start) :]
        if stream == "stdout":  # the wrapper writes nothing else there
            self._pass(stream, buf)
            return
        while buf:
            if self._message is not None:
                end = buf.find(b"\n")
                if end < 0:
                    self._message += buf[: max(0, _KEEP - len(self._message))]
                    return
                self._message += buf[: max(0, min(end, _KEEP - len(self._message)))]
                self._said(_printable(bytes(self._message)))
                self._message = None
                buf = buf[end + 1 :]
                continue
            at = buf.find(self._say)
            if at >= 0:
                self._pass(stream, buf[:at])
                self._message = bytearray()
                buf = buf[at + len(self._say) :]
                continue
            keep = _partial(buf, self._say)
            self._pass(stream, buf[: len(buf) - keep])
            self._held[stream] = buf[len(buf) - keep :]
            return

    def framed(self) -> None:
        """Output that comes in the host agent's frames: no start markers, no tagged
        messages (those come as `said`)."""
        self.started = {name: True for name in _STREAMS}

    def command_output(self, stream: str, data: bytes) -> None:
        """The command's bytes on `stream` (a framed exec's)."""
        self._pass(stream, data)

    def said(self, message: str) -> None:
        """A wrapper message as the host agent says it (its text after the tag)."""
        self._said(_printable(message.encode("utf-8", "surrogateescape")))

    def _said(self, message: str) -> None:
        """A wrapper message: a sudo asking (to `asks`), the sudo helper missing
        (`helper_missing`: send its text again), or else the outcome's why."""
        if message == askpass.MISSING:
            self.helper_missing = True
            return
        ask = askpass.parse(message)
        if ask is None:
            self.messages.append(message)
        elif self._asks is not None:
            self._asks(ask)

    def _drop(self, stream: str, data: bytes) -> None:
        self.dropped += len(data)
        if stream == "stderr" and data:
            self._before = (self._before + data)[-_KEEP:]

    def _pass(self, stream: str, data: bytes) -> None:
        skip = min(self._skip[stream], len(data))
        if skip:
            self._skip[stream] -= skip
            data = data[skip:]
        if data:
            self.passed[stream] += len(data)
            self.output(stream, data)

    def _flush(self) -> None:
        """What is still held back: output (after the marker) or dropped (before)."""
        for stream in _STREAMS:
            held, self._held[stream] = self._held[stream], b""
            if self.started[stream]:
                self._pass(stream, held)
            else:
                self._drop(stream, held)
        if self._message is not None:
            self._said(_printable(bytes(self._message)))
            self._message = None

    def result(self, status: int, seconds: float) -> Exec:
        """The outcome of an exec that exited with `status`."""
        self._flush()
        if not any(self.started.values()):
            said = _last_line(self._before)
            return Exec(
                "failed",
                None,
                seconds,
                f"nothing started: the login shell exited {status} before the wrapper ran"
                + (f" (it said: {said})" if said else ""),
            )
        why = self.messages[-1] if self.messages else ""
        if why:
            if status == WrapperExit.LOST:
                return Exec("lost", None, seconds, why.removeprefix("lost: "))
            if status == WrapperExit.CLAIMED:
                return Exec("lost", None, seconds, f"not started again: {why} (the spool holds its claim)")
            if status == WrapperExit.SPOOL_FAILED:
                return Exec("failed", None, seconds, f"nothing started: {why}")
            if status == WrapperExit.TIMED_OUT and why == "timed out":
                return Exec("timeout", None, seconds, "the wrapper's backstop timeout ended it")
            if status == WrapperExit.CANCELLED and why == "cancelled":
                return Exec("cancelled", None, seconds, "")
        if status == 0:
            return Exec("ok", 0, seconds)
        return Exec("failed", status, seconds, _signal_hint(status))


def noise_note(alias: str, dropped: int) -> str:
    """What dsh says of the bytes a host's login shell wrote before the wrapper began."""
    count = f"{dropped} byte{'s' if dropped != 1 else ''}"
    return f"{alias}: {count} before dsh's wrapper started (login shell output) were dropped"


def _partial(data: bytes, marker: bytes) -> int:
    """The length of the longest end of `data` that begins `marker` (held back:
    the rest of the marker may come with the next bytes)."""
    for size in range(min(len(data), len(marker) - 1), 0, -1):
        if data.endswith(marker[:size]):
            return size
    return 0


def _printable(data: bytes) -> str:
    """A host's bytes for a message of dsh's: one line, control characters as \\xNN."""
    text = data.decode("utf-8", "replace").strip()
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def _last_line(data: bytes) -> str:
    lines = [line for line in data.split(b"\n") if line.strip()]
    return _printable(lines[-1][-200:]) if lines else ""


def _signal_hint(status: int) -> str:
    if 128 < status < 128 + 65:
        try:
            return f"killed by {signal.Signals(status - 128).name}, or exit {status}"
        except ValueError:
            pass
    return ""

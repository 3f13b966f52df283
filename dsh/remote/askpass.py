"""How a command's `sudo` gets a password from dsh (issue 18): the spool's askpass
helper, and the two execs that answer it.

sudo with no terminal runs the program `SUDO_ASKPASS` names when `DISPLAY` is
set (or `-A` is given), and reads the password from its stdout. LAUNCH writes
that program (HELPER) once in the spool's root on a host and gives every
command `SUDO_ASKPASS` (it), `DSH_ASK` (the action's spool path) and, when
unset, `DISPLAY` — so a `sudo` anywhere in the command (after `xargs`, in a
script, in a pipeline) asks dsh. dsh learns that a host's sudo needs a
password only when it asks; it never reads the command's text for it.

The helper, run by sudo with the prompt as its argument:

- writes `ACTION@ALIAS.ask`: `ID SUDO ask PROMPT` (ID: its own pid, unique
  while it waits; SUDO: the pid of the sudo asking), which LAUNCH's (and
  FOLLOW's) stream loop passes to dsh as a wrapper message `ask …`;
- reads one line from the FIFO `ACTION@ALIAS.pw` (made by the first helper of
  the action, private to the user): `1PASSWORD` is an answer, printed for sudo;
  `0WHY` a refusal (WHY on stderr, then exit 1: sudo says that no password was
  provided);
- a sudo that asks again after an answer (the same SUDO: that answer was
  wrong) gets no second try: the helper writes `ID SUDO wrong PROMPT` and
  exits 1, so sudo stops at one wrong try and says so ("1 incorrect password
  attempt"), and dsh never gives that answer to another host.

ANSWER (an exec of its own) writes the line into the FIFO, holding it open
(read-write: never blocking, and keeping the bytes in the pipe) until the
helper has read it or a bound passes. VERIFY tries an answer with `sudo -k -S
-v` (no command: it only authenticates): dsh tries a new answer on one host
before it gives it to the others. Both take the answer from their stdin on
this machine, or from the script's text on `sh -s`'s stdin over SSH (see
`secret_script`): never from an argv, an environment, a file, the store or a
log. The answer lives in the memory of the `sh` that writes it and in the
kernel's pipe buffer; the spool holds only the prompt.
"""

from __future__ import annotations

import re
import shlex

from dsh.record import record

#: The helper's file name in the spool's root (versioned: a helper of another
#: protocol is never taken for this one).
HELPER_NAME = "askpass-1"

#: The helper: sudo runs it with the prompt as $1 (see the module's text).
HELPER = r"""#!/bin/sh
f=$DSH_ASK
[ -n "$f" ] || exit 1
umask 077
s=$PPID
if [ -r "$f.answered" ]; then
  while read -r a; do
    [ "$a" = "$s" ] && { printf '%s %s wrong %s\n' "$$" "$s" "$1" >"$f.ask"; exit 1; }
  done <"$f.answered"
fi
[ -p "$f.pw" ] || mkfifo -m 600 "$f.pw" 2>/dev/null || [ -p "$f.pw" ] || exit 1
printf '%s %s ask %s\n' "$$" "$s" "$1" >"$f.ask"
IFS= read -r pw <"$f.pw" || pw=
printf '%s\n' "$s" >>"$f.answered"
: >"$f.ask"
case $pw in
  1*) printf '%s\n' "${pw#1}" ;;
  0?*) printf 'dsh: %s\n' "${pw#0}" >&2; exit 1 ;;
  *) exit 1 ;;
esac
"""

#: LAUNCH's part (in its text before the runner starts): the helper written once
#: per spool root, that is once per host and user (a temporary name, then renamed:
#: never half-written; the forks of chmod and mv are paid once, not per session).
#: A LAUNCH sent without the helper's text (the host had it) that finds none says
#: `helper missing` (the remote sends the text again next time); the command
#: then goes without (SUDO_ASKPASS empty: sudo says it has no askpass program).
LAUNCH_PART = (
    r"""h="$root/"""
    + HELPER_NAME
    + r""""
if [ ! -x "$h" ]; then
  if [ -n "$helper" ]; then
    { printf '%s' "$helper" >"$h.$$" && chmod 700 "$h.$$" && mv -f "$h.$$" "$h"; } 2>/dev/null
    rm -f "$h.$$" 2>/dev/null
  else
    say "helper missing"
  fi
  [ -x "$h" ] || h=
fi
"""
)

#: The stream loop's part: a new ask said once (`ask ID SUDO ask|wrong PROMPT`).
STREAM_PART = r"""  if [ -s "$f.ask" ] && read -r q 2>/dev/null <"$f.ask" && [ -n "$q" ]; then
    [ "$q" != "$asked" ] && { asked=$q; say "ask $q"; }
  fi
"""

#: The answer, from the script's text over SSH, or else from stdin.
_SECRET = r"""[ -n "${secret+x}" ] || IFS= read -r secret || exit 1
"""

#: Feeds one line to the helper with pid $5, if it still waits (exit 3: it does not).
ANSWER = (
    _SECRET
    + r"""r=$1; case $r in /*) ;; *) r=$HOME/$r ;; esac; f="$r/$2/$3@$4" id=$5
read -r a _ 2>/dev/null <"$f.ask" && [ "$a" = "$id" ] && [ -p "$f.pw" ] || exit 3
exec 3<>"$f.pw"
printf '%s\n' "$secret" >&3
secret=
i=0
while [ "$i" -lt 100 ] && read -r a _ 2>/dev/null <"$f.ask" && [ "$a" = "$id" ]; do
  sleep 0.05; i=$((i + 1))
done
exit 0
"""
)

#: Tries a password with the host's sudo (`-k`: whatever it remembers does not
#: count); exit 0: it is right; sudo's own words on stderr otherwise.
VERIFY = (
    _SECRET
    + r"""LC_ALL=C; export LC_ALL
command -v sudo >/dev/null 2>&1 || { echo "no sudo on this host" >&2; exit 2; }
printf '%s\n' "$secret" | sudo -k -S -p '' -v
"""
)


def secret_script(script_for_sh_s: str, secret: str, name: str = "secret") -> str:
    """A script for `sh -s` (spool.as_stdin's) with the variable `name` set to `secret`
    in its text: the way an answer (or a command's secrets) reaches a host over SSH,
    on the channel as the script's stdin, never in an argv."""
    head, _, body = script_for_sh_s.partition("\n")
    return f"{head}\n{name}={shlex.quote(secret)}\n{body}"


@record
class Ask:
    """A sudo on a host asking for a password (or asking again: `wrong`, the answer
    it got was wrong and it is stopped there). `id` names this ask to ANSWER,
    `sudo` the asking sudo's pid, `prompt` what sudo said (host text)."""

    id: str
    sudo: str
    wrong: bool
    prompt: str


_ASK = re.compile(r"ask ([0-9]+) ([0-9]+) (ask|wrong) ?(.*)\Z", re.S)


#: What LAUNCH says when it was sent without the helper's text and the host has none.
MISSING = "helper missing"


def parse(message: str) -> Ask | None:
    """An ask from a wrapper message (`ask …`), None when it is not one."""
    m = _ASK.match(message)
    if m is None:
        return None
    return Ask(m.group(1), m.group(2), m.group(3) == "wrong", m.group(4)[:200])


def feed(answer: str | None, why: str = "") -> str:
    """The line the helper reads: `1` and the answer, or `0` and why it is refused
    (the helper says it on the command's stderr, before sudo's own words)."""
    if answer is None:
        return "0" + " ".join(why.split())[:300]
    return "1" + answer


def usable(answer: str) -> str | None:
    """Why `answer` cannot be given to sudo (None: it can)."""
    if "\n" in answer or "\r" in answer or "\0" in answer:
        return "a password cannot hold a line break or a NUL"
    return None


def verdict(status: int | None, said: str, timeout: float) -> tuple[bool | None, str]:
    """What a VERIFY exec's exit status says: True (right), False (wrong: sudo's words
    in `said`) or None (it cannot tell: no sudo, no answer within `timeout`)."""
    if status is None:
        return None, said or f"sudo did not answer within {timeout:g}s"
    return (status == 0 if status in (0, 1) else None), said

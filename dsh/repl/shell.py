"""The REPL's own words: `help`, `explain`, `hosts`, `sessions`, `history`, `exit`
(`detach` is the client's), and the toolbar under the prompt.

A built-in is a line that is exactly one of these words (with its
arguments); `command help` runs a command of that name instead.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

HELP = {
    "": """dsh runs lines of remote actions, awaits and timeouts, bounded and checkpointed.
  @web[1-4] uptime | within 10s        a command on hosts (no target: this machine)
  x = @db1 cat /etc/version            bind a result; ${x.out} in later lines
  @{failed} systemctl restart nginx    the hosts that failed on the line before
Topics: help targets | stages | events | copies | blocks | keys | builtins.  Language: man 7 dsh""",
    "targets": """Targets (ClusterShell node sets): @web[1-10]!web3  @{group}  @{failed}  @$hosts
  result sets of the line before: ok failed timeout unreachable refused cancelled skipped lost notok
  groups: @{NAME} (config [groups], then --inventory, then ClusterShell's default source)
  @{SOURCE:NAME} (config, inventory, or a ClusterShell source)   @{file:hosts.txt} (a host a line)""",
    "stages": """Stages after `|`: within D | retry N [backoff D] | stdin FILE|- | where OUTCOME
  | where out ~ RE | gather | batch N[%] [max-fail K] | sleep D | await …
  @web[1-20] deploy.sh | await port 80 within 30s | batch 2 max-fail 1""",
    "events": """await port [HOST:]PORT | http URL [status N] | file PATH | cmd 'WORDS' | key KEY [= V]
  | signal NAME   … [as NAME] [within D] [every D]
  await signal approve as who within 1h    (dsh signal SESSION approve alice)""",
    "copies": """put [--sudo [USER]] [--owner U[:G]] [--mode M] PATH @hosts:RPATH    get @hosts:RPATH PATH
  put app.tar @web[1-4]:/srv/app.tar | within 10m     get @web[1-4]:/var/log/app.log logs/$host.log
  atomic (renamed into place once its SHA-256 matches), skipped where unchanged, finished after a takeover""",
    "blocks": """if @db1 test -f /etc/maint { echo skip } else { @{web} deploy.sh }
  for h in @web[1-4] { restart $h }      fn restart(h) { @$h systemctl restart nginx }
  An unclosed { or a trailing | continues on the next line.""",
    "keys": """Enter runs a whole statement; Tab completes; Ctrl-R searches history;
  Ctrl-C cancels the running line (and kills its commands) or drops what is typed;
  Ctrl-\\ or `detach` leaves the session running; Ctrl-D on an empty line ends the client.""",
    "builtins": """help [TOPIC]  explain LINE  hosts [PATTERN]  sessions  history  detach  exit""",
}


@dataclass
class Toolbar:
    """The line under the prompt: session, store, owner, the last line's end."""

    session: str
    store: str
    machine: str
    #: What the session's executor runs now (hosts done of all, time), or how the last line ended.
    running: Callable[[], str] = lambda: ""

    def __call__(self) -> str:
        now = self.running()
        return f" session {self.session} · store {self.store} · on {self.machine}{f' · {now}' if now else ''}"


@dataclass
class Builtins:
    say: Callable[[str], None]
    explain: Callable[[str], str]
    hosts: Callable[[], Iterable[str]]
    groups: Callable[[], dict[str, str]]
    sessions: Callable[[], list[dict[str, object]]]
    history: Path

    def __call__(self, text: str) -> str | None:
        """Run `text` if it is a built-in: "exit", "done", or None (not one)."""
        word, _, rest = text.strip().partition(" ")
        rest = rest.strip()
        if word == "exit" and not rest:
            return "exit"
        if word == "help":
            topic = rest or ""
            self.say(HELP.get(topic, f"no help on {topic!r}; topics: {', '.join(t for t in HELP if t)}"))
            return "done"
        if word == "explain" and rest:
            self.say(self.explain(rest))
            return "done"
        if word == "hosts":
            pattern = rest or "*"
            names = sorted(h for h in self.hosts() if fnmatch.fnmatch(h, pattern))
            groups = {g: m for g, m in self.groups().items() if fnmatch.fnmatch(g, pattern)}
            lines = [*names, *(f"@{{{g}}} = {m}" for g, m in sorted(groups.items()))]
            self.say("\n".join(lines) if lines else f"no host or group matches {pattern!r}")
            return "done"
        if word == "sessions" and not rest:
            lines = [f"{e['name']:<32} {e['state']:<10} {e.get('last_line') or ''}" for e in self.sessions()]
            self.say("\n".join(lines) if lines else "no sessions")
            return "done"
        if word == "history" and not rest:
            self.say("\n".join(_history(self.history)[-50:]) or "no history yet")
            return "done"
        return None


def _history(path: Path) -> list[str]:
    """The entries of a prompt-toolkit history file, oldest first."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    entries: list[str] = []
    current: list[str] = []
    for line in lines:
        if line.startswith("+"):
            current.append(line[1:])
        elif current:
            entries.append("\n".join(current))
            current = []
    if current:
        entries.append("\n".join(current))
    return entries

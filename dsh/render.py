"""What the user sees: live output, folded summaries, JSON events (the only rich user).

Two renderers implement the executor's Reporter: `TextRenderer` for people
(colour only on a terminal without NO_COLOR; rich is imported only then) and
`JsonRenderer`, one JSON object per line of output, per host result and per
line. Output from hosts is shown with escape sequences and invalid UTF-8
neutralised; output of local commands passes through as a shell would show it.
"""

from __future__ import annotations

import json
import re
import sys
import time
import zlib
from collections.abc import Sequence
from typing import IO, Any, Protocol

from dsh import nodeset
from dsh import plan as p
from dsh.bytestext import from_bytes, loaded, stored, to_bytes
from dsh.lang.durations import format_duration
from dsh.remote.base import Exec
from dsh.runtime.ports import Reporter
from dsh.runtime.results import HostResult, LineResult


class Renderer(Reporter, Protocol):
    """A Reporter that also shows dsh's own messages."""

    def message(self, text: str) -> None: ...


_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: Lines of output shown per group in a folded summary.
SUMMARY_LINES = 10
#: Last lines of stderr shown under a group of hosts not ok in a folded summary.
SUMMARY_ERR_LINES = 3
#: Characters of one output line shown; the rest is counted, not shown.
LINE_MAX = 4000
#: Bytes of one line kept to show it: enough for LINE_MAX characters (UTF-8 takes
#: at most 4 bytes a character); the rest of the line is only counted.
LINE_BYTES = 4 * LINE_MAX
#: Lines shown live per host and statement; then a note says where the rest is.
HOST_LINES = 1000
#: Bytes of a line without its newline kept before it is given in pieces (--json).
PARTIAL_MAX = 64 * 1024
#: A line on more hosts than this shows a progress bar (at a terminal, in colour).
PROGRESS_HOSTS = 20
#: Host labels' colours (ANSI), one per host, the same for a host every time.
_PALETTE = ("36", "33", "35", "32", "34", "96", "93", "95", "92", "94")


def json_line(value: object, *, ascii_only: bool = False) -> str:
    """One JSON line of dsh's machine-readable output (`--json`, `dsh serve`'s
    answers), without its newline: the one place that output is encoded."""
    return json.dumps(value, ensure_ascii=ascii_only)


def neutralise(data: bytes) -> str:
    """Bytes from a host as text that cannot drive the terminal."""
    text = data.decode("utf-8", "backslashreplace")
    return _UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def cut(line: bytes, more: int = 0) -> str:
    """One line of a host's output as shown: neutralised, and cut after LINE_MAX
    characters with `… (N more bytes)`, N the bytes not shown (`more` of them were
    dropped before, unread)."""
    if len(line) > LINE_BYTES:
        line, more = line[:LINE_BYTES], more + len(line) - LINE_BYTES
    text = neutralise(line)
    if len(text) <= LINE_MAX and not more:
        return text
    used = _bytes_shown(line, LINE_MAX)
    return f"{neutralise(line[:used])} … ({len(line) - used + more} more bytes)"


def _bytes_shown(line: bytes, limit: int) -> int:
    """How many bytes of `line` its first `limit` neutralised characters show (a
    character, or a `\\xNN` escape, is never split)."""
    shown = used = 0
    for ch in line.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8: `\xNN`
            width, size = 4, 1
        elif _UNSAFE.match(ch):
            width, size = len(f"\\x{code:02x}"), len(ch.encode())
        else:
            width, size = 1, len(ch.encode())
        if shown + width > limit:
            break
        shown += width
        used += size
    return used


def _describe(result: HostResult | Exec) -> str:
    if result.outcome == p.Outcome.FAILED and result.exit_status is not None:
        text = f"failed (exit {result.exit_status})"
    else:
        text = result.outcome
    if result.message and result.outcome != p.Outcome.OK:
        text += f": {result.message}"
    return text


class _Lines:
    """Splits streamed bytes into lines per (host, stream), memory bounded.

    Each line comes with the number of its bytes dropped unread. With `keep`
    (text), a line keeps its first `keep` bytes and only counts the rest: it
    is given whole, once, when it ends. Without (JSON), a line without newline
    that grows past PARTIAL_MAX is given in pieces, nothing dropped.
    """

    def __init__(self, keep: int | None = None) -> None:
        self.keep = keep
        self.partial: dict[tuple[str | None, str], bytes] = {}
        self.dropped: dict[tuple[str | None, str], int] = {}

    def feed(self, host: str | None, stream: str, data: bytes) -> list[tuple[bytes, int]]:
        key = (host, stream)
        buf = self.partial.pop(key, b"") + data
        dropped = self.dropped.pop(key, 0)
        *ended, rest = buf.split(b"\n")
        lines = []
        for line in ended:
            lines.append(self._kept(line, dropped))
            dropped = 0
        if self.keep is None and len(rest) > PARTIAL_MAX:  # a flood with no newline: in pieces
            lines.append((rest, 0))
            rest = b""
        rest, dropped = self._kept(rest, dropped)
        if rest:
            self.partial[key] = rest
            self.dropped[key] = dropped
        return lines

    def _kept(self, line: bytes, dropped: int) -> tuple[bytes, int]:
        if self.keep is not None and len(line) > self.keep:
            return line[: self.keep], dropped + len(line) - self.keep
        return line, dropped

    def flush(self, host: str | None) -> list[tuple[str, bytes, int]]:
        left = [(k[1], v, self.dropped.pop(k, 0)) for k, v in self.partial.items() if k[0] == host]
        for stream, _, _ in left:
            del self.partial[(host, stream)]
        return left


class TextRenderer:
    def __init__(
        self, out: IO[str] | None = None, err: IO[str] | None = None, *, color: bool = False
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.color = color
        self.lines = _Lines(LINE_BYTES)
        self._console: Any = None
        #: Lines shown live per host, for the statement running.
        self.shown: dict[str, int] = {}
        #: A line on many hosts, at a terminal: hosts in all, hosts done, its start.
        self.bar: list[float] | None = None
        #: Hosts in the line running; a copy's bytes moved and in all, per host.
        self.hosts = 0
        self.copied: dict[str | None, tuple[int, int]] = {}
        self._drawn = 0.0

    # -- Reporter --------------------------------------------------------------

    def line_started(self, stmt: p.Statement, hosts: Sequence[str] | None) -> None:
        self.shown.clear()
        self.copied.clear()
        self.hosts = len(hosts or ())
        if self.color and hosts and len(hosts) > PROGRESS_HOSTS and self.err.isatty():
            self.bar = [len(hosts), 0, time.monotonic()]
            self._draw_bar()

    def output(self, stmt: p.Statement, host: str | None, stream: str, data: bytes, shown: bool) -> None:
        if not shown:
            return
        target = self.out if stream == "stdout" else self.err
        if host is None:
            target.flush()
            buffer = getattr(target, "buffer", None)
            if buffer is not None:
                buffer.write(data)
                buffer.flush()
            else:
                target.write(data.decode("utf-8", "replace"))
                target.flush()
            return
        for line, dropped in self.lines.feed(host, stream, data):
            self._host_line(target, host, line, dropped)

    def copying(self, stmt: p.Statement, host: str | None, done: int, total: int) -> None:
        """A copy's bytes join the bar (shown at a terminal whatever the number of hosts)."""
        self.copied[host] = (done, total)
        if not self.err.isatty():
            return
        if self.bar is None:
            self.bar = [max(self.hosts, 1), 0, time.monotonic()]
        now = time.monotonic()
        if now - self._drawn >= 0.1 or done >= total:
            self._drawn = now
            self._draw_bar()

    def retrying(self, stmt: p.Statement, host: str | None, failed: Exec, attempt: int, wait: float) -> None:
        self._flush_host(host)
        who = f"{host}: " if host else f"line {stmt.line}: "
        self.message(f"{who}attempt {attempt} {_describe(failed)}; again in {format_duration(wait)}")

    def host_done(self, stmt: p.Statement, result: HostResult) -> None:
        self._flush_host(result.host)
        if self.bar is not None:
            self.bar[1] += 1
            self._draw_bar()

    def _draw_bar(self) -> None:
        """`[#####.....] 12/40 hosts 3s` on the terminal's last line, redrawn in place."""
        assert self.bar is not None
        total, done, started = self.bar
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        text = f"[{bar}] {int(done)}/{int(total)} hosts {time.monotonic() - started:.0f}s"
        if self.copied:
            moved = sum(d for d, _ in self.copied.values()) / (1 << 20)
            whole = sum(t for _, t in self.copied.values()) / (1 << 20)
            filled = int(width * moved / whole) if whole else width
            bar = "#" * filled + "." * (width - filled)
            text = f"[{bar}] {moved:.1f}/{whole:.1f} MiB, {int(done)}/{int(total)} hosts"
            text += f" {time.monotonic() - started:.0f}s"
        self.err.write(f"\r\x1b[K{text}")
        self.err.flush()

    def _clear_bar(self) -> None:
        if self.bar is not None:
            self.err.write("\r\x1b[K")
            self.err.flush()

    def _flush_host(self, host: str | None) -> None:
        for stream, rest, dropped in self.lines.flush(host):
            if host is not None:
                self._host_line(self.out if stream == "stdout" else self.err, host, rest, dropped)

    def line_done(self, result: LineResult) -> None:
        self._clear_bar()
        self.bar = None
        if result.note:
            self.message(result.note)
        if result.on_hosts:
            self._summary(result)
        elif result.hosts and not result.ok and not result.consumed:
            self.message(f"line {result.statement.line}: {_describe(result.hosts[0])}")

    # -- the rest ----------------------------------------------------------------

    def message(self, text: str) -> None:
        self.out.flush()
        self._clear_bar()
        self.err.write(f"dsh: {text}\n")
        self.err.flush()
        if self.bar is not None:
            self._draw_bar()

    def _host_line(self, target: IO[str], host: str, line: bytes, dropped: int = 0) -> None:
        count = self.shown.get(host, 0) + 1
        self.shown[host] = count
        if count > HOST_LINES:
            if count == HOST_LINES + 1:
                self.message(
                    f"{host}: output capped after {HOST_LINES} lines; the whole of it stays in the "
                    f"host's spool: dsh log SESSION --output ACTION {host} (ACTION from dsh log SESSION)"
                )
            return
        text = cut(line, dropped)
        label = host
        if self.color:
            label = f"\x1b[{_PALETTE[zlib.crc32(host.encode()) % len(_PALETTE)]}m{host}\x1b[0m"
        self._clear_bar()
        target.write(f"{label} | {text}\n")
        target.flush()
        if self.bar is not None:
            self._draw_bar()

    def _summary(self, result: LineResult) -> None:
        """One group per outcome, output and (for hosts not ok) the last lines of
        stderr, which say why: identical ones fold under one node set."""
        groups: dict[tuple[str, bytes, tuple[bytes, ...]], list[HostResult]] = {}
        for h in result.hosts:
            why = () if h.ok else tuple(_lines(h.err)[-SUMMARY_ERR_LINES:])
            groups.setdefault((_describe(h), h.out, why), []).append(h)
        order = sorted(groups.items(), key=lambda kv: (kv[1][0].ok is False, kv[0][0]))
        for (described, out, why), members in order:
            hosts = nodeset.fold(m.host for m in members if m.host is not None)
            seconds = max(m.seconds for m in members)
            head = f"{hosts} ({len(members)})  {described}  {format_duration(seconds)}"
            self._write_head(head, members[0].ok)
            lines = _lines(out)
            for line in lines[:SUMMARY_LINES]:
                self.out.write(f"  {cut(line)}\n")
            if len(lines) > SUMMARY_LINES:
                self.out.write(f"  … {len(lines) - SUMMARY_LINES} more lines\n")
            if why:
                more = any(len(_lines(m.err)) > len(why) for m in members)
                self.out.write(f"  stderr{f' (last {len(why)} lines)' if more else ''}:\n")
                for line in why:
                    self.out.write(f"    {cut(line)}\n")
        self.out.write(_total(result) + "\n")
        self.out.flush()

    def _write_head(self, head: str, ok: bool) -> None:
        if not self.color:
            self.out.write(head + "\n")
            return
        if self._console is None:
            from rich.console import Console

            self._console = Console(
                file=self.out, highlight=False, soft_wrap=True, force_terminal=True, no_color=False
            )
        self._console.print(head, style="green" if ok else "bold red", markup=False)


def _lines(data: bytes) -> list[bytes]:
    """The lines of a host's output, without the last newline; none for blank output."""
    return data.rstrip(b"\n").split(b"\n") if data.strip() else []


def _total(result: LineResult) -> str:
    """`3 hosts: 2 ok, 1 failed in 1.2s` — outcomes in their usual order."""
    counts: dict[str, int] = {}
    for h in result.hosts:
        counts[h.outcome] = counts.get(h.outcome, 0) + 1
    parts = ", ".join(f"{counts[o]} {o}" for o in p.Outcome if o in counts)
    n = len(result.hosts)
    return f"{n} host{'s' if n != 1 else ''}: {parts} in {format_duration(result.seconds)}"


class JsonRenderer:
    """One JSON object per line of output, per host result, and per line."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self.out = out or sys.stdout
        self.lines = _Lines()

    def emit(self, event: dict[str, Any]) -> None:
        self.out.write(json.dumps(_tagged(event), ensure_ascii=False) + "\n")
        self.out.flush()

    def line_started(self, stmt: p.Statement, hosts: Sequence[str] | None) -> None:
        self.emit({"event": "line", "line": stmt.line, "source": stmt.source, "hosts": list(hosts or [])})

    def output(self, stmt: p.Statement, host: str | None, stream: str, data: bytes, shown: bool) -> None:
        if not shown:  # a bound stage's stdout is captured into its binding
            return
        for line, _ in self.lines.feed(host, stream, data):
            self._output(stmt, host, stream, line)

    def _output(self, stmt: p.Statement, host: str | None, stream: str, line: bytes) -> None:
        text = from_bytes(line)  # tagged by emit when it is not UTF-8
        self.emit({"event": "output", "line": stmt.line, "host": host, "stream": stream, "text": text})

    def copying(self, stmt: p.Statement, host: str | None, done: int, total: int) -> None:
        pass  # each host's copy says what it copied as it ends (its output)

    def retrying(self, stmt: p.Statement, host: str | None, failed: Exec, attempt: int, wait: float) -> None:
        for stream, rest, _ in self.lines.flush(host):
            self._output(stmt, host, stream, rest)
        self.emit(
            {
                "event": "retry",
                "line": stmt.line,
                "host": host,
                "attempt": attempt,
                "outcome": failed.outcome,
                "exit": failed.exit_status,
                "message": failed.message,
                "wait": wait,
            }
        )

    def host_done(self, stmt: p.Statement, result: HostResult) -> None:
        for stream, rest, _ in self.lines.flush(result.host):
            self._output(stmt, result.host, stream, rest)
        self.emit(
            {
                "event": "result",
                "line": stmt.line,
                "host": result.host,
                "outcome": result.outcome,
                "exit": result.exit_status,
                "seconds": round(result.seconds, 6),
                "attempts": result.attempts,
                "message": result.message,
            }
        )

    def line_done(self, result: LineResult) -> None:
        sets = result.result_sets() if result.on_hosts else {}
        self.emit(
            {
                "event": "done",
                "line": result.statement.line,
                "ok": result.ok,
                "seconds": round(result.seconds, 6),
                "sets": {k: nodeset.fold(v) for k, v in sets.items() if v},
                "note": result.note,
            }
        )

    def message(self, text: str) -> None:
        self.emit({"event": "error", "message": text})


def _tagged(value: Any) -> Any:
    """An event for JSON: every text that is not UTF-8 as {"b64": …} of its bytes."""
    if isinstance(value, str):
        return stored(value)
    if isinstance(value, dict):
        return {k: _tagged(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_tagged(v) for v in value]
    return value


def _by(entry: dict[str, Any]) -> str:
    """ " by PERSON@MACHINE" for an entry that says who (none for older ones)."""
    if not entry.get("by"):
        return ""
    return f" by {entry['by']}" + (f"@{entry['machine']}" if entry.get("machine") else "")


def timeline(entries: Sequence[dict[str, Any]]) -> str:
    """A session's journal as lines of `time  what`, for `dsh log`."""

    out = []
    for e in entries:
        t = float(e.get("t", 0))
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t * 1000) % 1000:03d}"
        where = f"on {e['host']}" if e.get("host") else "here"
        kind = e.get("kind")
        if kind == "line":
            what = f"line {e['line']} (run {e['run']}): {e['source']}" + (
                f"  ({_by(e)[1:]})" if _by(e) else ""
            )
        elif kind == "start":
            command = loaded(e.get("command"))
            what = f"  start {e['action']} {where}: {command} (timeout {format_duration(e['timeout'])})"
            given = e.get("stdin")
            if isinstance(given, dict):  # its input: where it was read, how big, its digest
                size, digest = given.get("size"), given.get("sha256")
                path = loaded(given.get("path"))
                path = path if path.isprintable() else repr(path)  # a name with a newline: one line still
                what += f"; stdin {path}, {size} bytes, sha256 {digest}"
        elif kind == "end":
            exit_status = f" (exit {e['exit']})" if e.get("exit") is not None else ""
            message = f": {e['message']}" if e.get("message") else ""
            what = f"  end   {e['action']} {where}: {e['outcome']}{exit_status}{message}, " + format_duration(
                e["seconds"]
            )
            copied = e.get("copied")
            if isinstance(copied, dict) and e["outcome"] == "ok":  # a copy: what it copied
                state = "unchanged" if copied.get("unchanged") else "copied"
                what += f"; {state} {copied.get('size')} bytes, sha256 {copied.get('sha256')}"
        elif kind == "sleep":
            what = f"  sleep {format_duration(e['seconds'])} {where}"
        elif kind == "bind":
            what = f"  bind  {e['name']}"
        elif kind == "await":
            until = time.strftime("%H:%M:%S", time.localtime(float(e["deadline"])))
            what = f"  await {e['action']} {where}: {loaded(e.get('what'))} (until {until})"
        elif kind == "signal":
            sent = f" from {e['by']}" if e.get("by") else ""
            what = f"  signal {e['name']}{sent} taken by {e['action']}" + (
                f": {loaded(e['value'])}" if e.get("value") else ""
            )
        elif kind == "callback":
            what = f"  callback {e['action']} {where}: {e['url']}"
        elif kind == "note":
            what = f"  note: {e['text']}"
        elif kind == "control":
            detail = f" {e['detail']}" if e.get("detail") else ""
            what = f"{e['what']}{detail}{_by(e)}"
        elif kind == "prompt":
            what = f"  prompt {e['id']} {e['state']}: {str(e['text']).strip()}"
        elif kind == "rejected":
            what = f"rejected a line: {e.get('error', '')}"
        elif kind == "done":
            what = f"done run {e['run']}: {'ok' if e['ok'] else 'not ok'} in {format_duration(e['seconds'])}"
        else:
            what = json.dumps(e)
        out.append(f"{stamp}  {neutralise(to_bytes(what))}\n")  # bytes not UTF-8 as \\xNN
    return "".join(out)

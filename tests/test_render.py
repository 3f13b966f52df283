"""Rendering: folded summaries, neutralised host output, JSON events."""

from __future__ import annotations

import io
import json

from dsh import plan as p
from dsh.render import JsonRenderer, TextRenderer, neutralise
from dsh.runtime.results import HostResult, LineResult

STMT = p.Run(1, "@web[1-5] uptime", p.Pipeline(None, ()), p.Bound(5, 5, 1.0))


def line(*hosts: HostResult) -> LineResult:
    return LineResult(STMT, hosts, 1.5, on_hosts=True)


def ok(host: str, out: bytes) -> HostResult:
    return HostResult(host, "ok", 0, 0.25, out=out)


def test_neutralise_escapes_and_invalid_utf8() -> None:
    shown = neutralise(b"\x1b[31mred\x07\xff\xfe ok\r\t\xe2\x80\xae")
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown
    assert "\u202e" not in shown
    assert shown.startswith("\\x1b[31mred\\x07\\xff\\xfe ok\\x0d\t")


def test_summary_folds_identical_outputs() -> None:
    out = io.StringIO()
    r = TextRenderer(out, io.StringIO())
    r.line_done(
        line(
            ok("web1", b"same\n"),
            ok("web2", b"same\n"),
            ok("web4", b"same\n"),
            ok("web3", b"other\n"),
            HostResult("web5", "failed", 3, 0.5, out=b"same\n"),
        )
    )
    text = out.getvalue()
    assert "web[1-2,4] (3)  ok" in text
    assert "web3 (1)  ok" in text
    assert "web5 (1)  failed (exit 3)" in text
    assert text.index("web[1-2,4]") < text.index("web5")
    assert "\x1b" not in text


def test_host_lines_are_labelled_and_neutralised() -> None:
    out = io.StringIO()
    r = TextRenderer(out, io.StringIO())
    r.output(STMT, "web1", "stdout", b"a\x1b]0;title\x07\nb", True)
    r.host_done(STMT, ok("web1", b""))
    assert out.getvalue() == "web1 | a\\x1b]0;title\\x07\nweb1 | b\n"


def test_colour_only_when_asked() -> None:
    out = io.StringIO()
    r = TextRenderer(out, io.StringIO(), color=True)
    r.line_done(line(ok("web1", b"")))
    assert "\x1b[" in out.getvalue()


def test_json_events() -> None:
    out = io.StringIO()
    r = JsonRenderer(out)
    r.output(STMT, "web1", "stdout", b"x\xff\n", True)
    r.host_done(STMT, ok("web1", b"x"))
    r.line_done(line(ok("web1", b"x"), HostResult("web2", "timeout", None, 1.0, message="no exit within 1s")))
    events = [json.loads(s) for s in out.getvalue().splitlines()]
    assert events[0] == {"event": "output", "line": 1, "host": "web1", "stream": "stdout", "text": "x\\xff"}
    assert events[1]["event"] == "result" and events[1]["outcome"] == "ok"
    assert events[2]["sets"] == {"ok": "web1", "timeout": "web2", "notok": "web2"}


def test_long_lines_and_floods_are_capped_with_a_note() -> None:
    from dsh.render import HOST_LINES, LINE_MAX

    out, err = io.StringIO(), io.StringIO()
    r = TextRenderer(out, err)
    r.line_started(STMT, ["h1"])
    r.output(STMT, "h1", "stdout", b"x" * (LINE_MAX + 50) + b"\n", True)
    assert out.getvalue() == f"h1 | {'x' * LINE_MAX} … (50 more bytes)\n"
    r.output(STMT, "h1", "stdout", b"line\n" * (HOST_LINES + 10), True)
    assert out.getvalue().count("\n") == HOST_LINES
    assert err.getvalue().count("output capped") == 1
    assert "dsh log SESSION --output ACTION h1" in err.getvalue()


def test_a_host_keeps_its_colour() -> None:
    out = io.StringIO()
    r = TextRenderer(out, io.StringIO(), color=True)
    for host in ("web1", "web2", "web1"):
        r.output(STMT, host, "stdout", b"hi\n", True)
    lines = out.getvalue().splitlines()
    assert lines[0] == lines[2] and lines[0] != lines[1]
    assert lines[0].startswith("\x1b[") and lines[0].endswith(" | hi")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_progress_bar_on_many_hosts_at_a_terminal_only() -> None:
    hosts = [f"web{i}" for i in range(1, 26)]
    out, err = io.StringIO(), _Terminal()
    r = TextRenderer(out, err, color=True)
    r.line_started(STMT, hosts)
    for host in hosts[:10]:
        r.output(STMT, host, "stdout", b"up\n", True)
        r.host_done(STMT, ok(host, b"up\n"))
    assert "10/25 hosts" in err.getvalue() and "\r\x1b[K" in err.getvalue()
    r.line_done(line(*(ok(h, b"up\n") for h in hosts)))
    assert err.getvalue().endswith("\r\x1b[K")  # cleared before the summary
    plain = io.StringIO()
    r = TextRenderer(io.StringIO(), plain, color=True)  # not a terminal: no bar
    r.line_started(STMT, hosts)
    r.host_done(STMT, ok("web1", b""))
    assert plain.getvalue() == ""

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
    # Not UTF-8: the bytes tagged (fault report #4), never a lossy escape.
    assert events[0] == {
        "event": "output",
        "line": 1,
        "host": "web1",
        "stream": "stdout",
        "text": {"b64": "eP8="},
    }
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


def test_F13_a_line_streamed_in_pieces_is_cut_once_with_the_bytes_dropped() -> None:
    out = io.StringIO()
    r = TextRenderer(out, io.StringIO())
    r.line_started(STMT, ["h1"])
    data = b"a" * 100000 + b"\n"
    for i in range(0, len(data), 32768):  # as a pipe gives it: no newline for 96 KiB
        r.output(STMT, "h1", "stdout", data[i : i + 32768], True)
    r.host_done(STMT, ok("h1", data))
    assert out.getvalue() == f"h1 | {'a' * 4000} … (96000 more bytes)\n"
    r = TextRenderer(out := io.StringIO(), io.StringIO())
    r.output(STMT, "h1", "stdout", b"b" * 70000, True)  # no newline at all: shown at the host's end
    r.host_done(STMT, ok("h1", b""))
    assert out.getvalue() == f"h1 | {'b' * 4000} … (66000 more bytes)\n"


def test_F13_the_note_counts_bytes_not_characters() -> None:
    from dsh.render import cut

    assert cut("é".encode() * 5000) == "é" * 4000 + " … (2000 more bytes)"  # 2 bytes a character
    assert cut(b"\xff" * 2000) == "\\xff" * 1000 + " … (1000 more bytes)"  # 4 characters a byte
    assert cut(b"x" * 3999 + b"\x1b") == "x" * 3999 + " … (1 more bytes)"  # an escape is not split


def test_F13_summary_lines_are_cut_like_live_lines() -> None:
    out = io.StringIO()
    TextRenderer(out, io.StringIO()).line_done(line(ok("web1", b"a" * 100000 + b"\nshort\n")))
    assert f"\n  {'a' * 4000} … (96000 more bytes)\n  short\n" in out.getvalue()
    assert max(len(x) for x in out.getvalue().splitlines()) < 4100


def test_F13_failed_groups_show_the_last_lines_of_stderr_folded() -> None:
    """Why they failed, under each group of hosts not ok; hosts whose last lines
    of stderr are the same fold together."""
    out = io.StringIO()
    TextRenderer(out, io.StringIO()).line_done(
        line(
            HostResult("web1", "failed", 2, 0.5, out=b"x\n", err=b"early\na\nb\nno such file\n"),
            HostResult("web2", "failed", 2, 0.5, out=b"x\n", err=b"a\nb\nno such file\n"),
            HostResult("web3", "failed", 2, 0.5, out=b"x\n", err=b"disk full\n"),
            ok("web4", b"x\n"),
        )
    )
    assert out.getvalue() == (
        "web4 (1)  ok  250ms\n  x\n"
        "web[1-2] (2)  failed (exit 2)  500ms\n  x\n"
        "  stderr (last 3 lines):\n    a\n    b\n    no such file\n"
        "web3 (1)  failed (exit 2)  500ms\n  x\n  stderr:\n    disk full\n"
        "4 hosts: 1 ok, 3 failed in 1.5s\n"
    )

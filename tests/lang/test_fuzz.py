"""Random text never makes the parser or compiler fail with anything but a LangError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsh.errors import LangError
from dsh.lang.compiler import Context, compile_source
from dsh.lang.source import Source

_PIECES = [
    "@",
    "h[1-3]",
    "@{failed}",
    "@{web}",
    "@$x",
    "$x",
    "${x.out}",
    "${y}",
    "|",
    "||",
    " | within 5s",
    " | retry 2",
    " backoff 1s",
    "sleep",
    "within",
    "retry",
    "await",
    "x = ",
    "=",
    "'",
    '"',
    "`",
    "$(",
    ")",
    "{",
    "}",
    "[",
    "]",
    "!",
    "&",
    ",",
    "#",
    "\\",
    "\n",
    " ",
    "\t",
    "echo",
    "true",
    "5s",
    "1h",
    "command",
    ";",
    "&&",
    "0",
    "9999999",
    "ms",
    "\x00",
    "é",
    "\r",
    "put ",
    "get ",
    ":",
    " --sudo",
    " --mode 0644",
    "~/",
    "$host",
]

text_strategy = st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from(_PIECES), max_size=30).map("".join),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text_strategy, st.booleans())
def test_only_positioned_language_errors(text: str, with_args: bool) -> None:
    source = Source("fuzz", text)
    ctx = Context(
        groups={"web": "web[1-4]"}, args=("a",) if with_args else None, sizes=lambda path: len(path)
    )
    try:
        compile_source(source, ctx)
    except LangError as err:
        assert 0 <= err.span.start <= err.span.end <= len(text)
        assert err.span.source is source
        rendered = err.render()
        assert rendered.startswith("fuzz:")
        assert "^" in rendered.splitlines()[-1]

"""The EBNF in man/dsh.7 is the parser's grammar, rule for rule."""

from __future__ import annotations

import re
from pathlib import Path

from dsh.lang import parser

MAN7 = Path(__file__).parent.parent.parent / "man" / "dsh.7"


def _rules(text: str) -> dict[str, str]:
    text = text.replace("\\-", "-")
    rules = {}
    for m in re.finditer(r"^\s*([a-z]+)\s+=\s+(.*?);", text, re.S | re.M):
        rules[m.group(1)] = " ".join(m.group(2).split())
    return rules


def test_every_parser_rule_is_in_the_man_page() -> None:
    assert parser.__doc__
    code = _rules(parser.__doc__)
    man = _rules(MAN7.read_text())
    assert set(code) >= {"script", "statement", "binding", "pipeline", "stage", "retry"}
    for name, body in code.items():
        assert man.get(name) == body, f"rule {name!r} differs between parser.py and man/dsh.7"


def test_every_keyword_and_await_kind_is_in_the_man_page() -> None:
    from dsh.lang.lexer import KEYWORDS
    from dsh.plan import AWAIT_KINDS

    text = MAN7.read_text().replace("\\-", "-")
    words = set(re.findall(r"[a-z][a-z-]*", text))
    for word in sorted({*KEYWORDS, *AWAIT_KINDS, "as", "every", "in", "max-fail", "notok", "command"}):
        assert word in words, f"{word!r} is not in man/dsh.7"
    assert "while" not in KEYWORDS  # no unbounded loop: `while` is only the shell's
    for section in ("EVENTS", "CONDITIONALS", "LOOPS", "FUNCTIONS", "ROLLING"):
        assert re.search(rf"^\.SH {section}", text, re.M), f"man/dsh.7 has no {section} section"

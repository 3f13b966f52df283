"""Tokens and the pieces of text they carry (literals and `$` references)."""

from __future__ import annotations

import enum

from dsh.lang.source import Span
from dsh.record import record

#: Where a `$` reference stands, which decides how a value is inserted there:
#: `shell` unquoted sh text; `dquote` inside double quotes, `${…}` or `$((…))`;
#: `heredoc` in the body of a here-document; `backquote` inside backquotes
#: (dsh inserts nothing there); `value` in a dsh value or target.
CONTEXTS = ("shell", "dquote", "heredoc", "backquote", "value")


class Kind(enum.Enum):
    KEYWORD = "keyword"
    WORD = "word"
    STRING = "string"
    TARGET = "target"
    COMMAND = "command"
    ASSIGN = "'='"
    COLON = "':'"  # between a copy's target and its remote path
    PIPE = "'|'"
    LBRACE = "'{'"
    RBRACE = "'}'"
    NEWLINE = "end of line"
    EOF = "end of input"


@record
class Lit:
    """Literal text of a command, a string or a target."""

    text: str


@record
class Ref:
    """A `$name`, `${name}` or `${name.field}` reference (or `{group}` in a target).

    `context` is one of CONTEXTS; `raw` is the text as written, kept for the
    names that dsh does not bind.
    """

    name: str
    field: str | None
    context: str
    raw: str
    span: Span


Part = Lit | Ref


@record
class Token:
    """A token; a COMMAND also carries its parts and the names it hands to sh
    with parameter operators (`${name:-…}`), which dsh must not shadow."""

    kind: Kind
    text: str
    span: Span
    parts: tuple[Part, ...] = ()
    shell_params: tuple[Ref, ...] = ()

    def describe(self) -> str:
        if self.kind in (Kind.NEWLINE, Kind.EOF):
            return str(self.kind.value)
        return repr(self.text)

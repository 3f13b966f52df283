"""The lexer: turns dsh text into tokens, reading command stages as raw sh text.

dsh is modal: at the start of a statement, or right after a stage `|`, a word
may be a keyword; anything else is sh text handed to a shell. The lexer knows
where it is and ends a command stage at a newline, at an unquoted `|` followed
by a stage keyword, at a `#` comment, or at the `}` that closes a dsh block.
Inside a command it records every `$name`, `${name}` and `${name.field}` it
sees outside single quotes, with its quoting context, so that the compiler can
expand the names dsh binds and leave the rest to the remote shell.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from dsh.errors import IncompleteInput, LangError
from dsh.lang.source import Source, Span

#: Words that are keywords at the start of a statement.
KEYWORDS = frozenset(
    {"await", "sleep", "within", "retry", "batch", "where", "gather", "if", "else", "for", "fn"}
)
#: Words after an unquoted `|` that end a command stage (a new dsh stage).
STAGE_KEYWORDS = frozenset({"await", "sleep", "within", "retry", "batch", "where", "gather"})

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD_END = " \t\n|{}#;"


class Kind(enum.Enum):
    KEYWORD = "keyword"
    WORD = "word"
    STRING = "string"
    TARGET = "target"
    COMMAND = "command"
    ASSIGN = "'='"
    PIPE = "'|'"
    LBRACE = "'{'"
    RBRACE = "'}'"
    NEWLINE = "end of line"
    EOF = "end of input"


@dataclass(frozen=True, slots=True)
class Lit:
    """Literal text of a command, a string or a target."""

    text: str


@dataclass(frozen=True, slots=True)
class Ref:
    """A `$name`, `${name}` or `${name.field}` reference.

    `quoted` is true inside double quotes; `braced` for the `${…}` form.
    `raw` is the text as written, kept for names dsh does not bind.
    """

    name: str
    field: str | None
    quoted: bool
    braced: bool
    raw: str
    span: Span


Part = Lit | Ref


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str
    span: Span
    parts: tuple[Part, ...] = ()

    def describe(self) -> str:
        if self.kind in (Kind.NEWLINE, Kind.EOF):
            return str(self.kind.value)
        return repr(self.text)


class _Mode(enum.Enum):
    HEAD = 1  # statement start or after a stage `|`: keyword, target, binding or command
    VALUE = 2  # right of `=`: like HEAD, plus strings and bare values
    AFTER_TARGET = 3  # after `@…`: a command, or the end of the stage
    ARGS = 4  # keyword arguments: words and strings up to `|`, newline or braces
    AFTER_STAGE = 5  # after command text: `|`, newline, `}` or the end


class Lexer:
    """Produces the tokens of one source; `tokens()` returns them all."""

    def __init__(self, source: Source) -> None:
        self.src = source
        self.text = source.text
        self.pos = 0
        self.block_depth = 0
        self.out: list[Token] = []

    # -- helpers -----------------------------------------------------------

    def _span(self, start: int, end: int | None = None) -> Span:
        return Span(self.src, start, self.pos if end is None else end)

    def _peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def _emit(self, kind: Kind, start: int, parts: tuple[Part, ...] = ()) -> None:
        self.out.append(Token(kind, self.text[start : self.pos], self._span(start), parts))

    def _check_continuation(self) -> None:
        """A backslash that ends the input (or its last line) asks for more."""
        after = self.text[self.pos + 1 :]
        if after == "" or (after[0] == "\n" and not after[1:].strip()):
            raise IncompleteInput("the line continues after '\\'", self._span(self.pos, self.pos + 1))

    def _skip_blanks(self) -> None:
        """Skip spaces, tabs, backslash-newlines and a `#` comment."""
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\r":
                self.pos += 1
            elif ch == "\\" and self._peek(1) in ("\n", ""):
                self._check_continuation()
                self.pos += 2
            elif ch == "#":
                while self.pos < len(self.text) and self.text[self.pos] != "\n":
                    self.pos += 1
            else:
                return

    def _ident_at(self, pos: int) -> str | None:
        m = _IDENT.match(self.text, pos)
        if not m:
            return None
        end = m.end()
        if end < len(self.text) and self.text[end] not in _WORD_END and self.text[end] != "=":
            return None
        return m.group()

    # -- driver ------------------------------------------------------------

    def tokens(self) -> list[Token]:
        mode = _Mode.HEAD
        while True:
            self._skip_blanks()
            start = self.pos
            if self.pos >= len(self.text):
                self._emit(Kind.EOF, start)
                return self.out
            ch = self.text[self.pos]
            if ch == "\n":
                self.pos += 1
                self._emit(Kind.NEWLINE, start)
                mode = _Mode.HEAD
                continue
            if ch == "|" and self._peek(1) != "|":
                self.pos += 1
                self._emit(Kind.PIPE, start)
                mode = _Mode.HEAD
                continue
            if ch == "{" and mode in (_Mode.ARGS, _Mode.AFTER_STAGE, _Mode.AFTER_TARGET):
                self.pos += 1
                self.block_depth += 1
                self._emit(Kind.LBRACE, start)
                mode = _Mode.HEAD
                continue
            if ch == "}" and self.block_depth > 0:
                self.pos += 1
                self.block_depth -= 1
                self._emit(Kind.RBRACE, start)
                mode = _Mode.HEAD
                continue
            mode = self._step(mode, start)

    def _step(self, mode: _Mode, start: int) -> _Mode:
        ch = self.text[self.pos]
        if mode in (_Mode.HEAD, _Mode.VALUE):
            if ch == "@":
                self._target()
                return _Mode.AFTER_TARGET
            if mode is _Mode.VALUE and ch in "'\"":
                self._string()
                return _Mode.AFTER_STAGE
            word = self._ident_at(self.pos)
            if mode is _Mode.HEAD and word is not None and self._binding_at(word):
                self.pos += len(word)
                self._emit(Kind.WORD, start)
                self._skip_blanks()
                eq = self.pos
                self.pos += 1
                self._emit(Kind.ASSIGN, eq)
                return _Mode.VALUE
            if word in KEYWORDS:
                self.pos += len(word)
                self._emit(Kind.KEYWORD, start)
                return _Mode.ARGS
            if mode is _Mode.VALUE and self._single_word_value():
                self._bare_word()
                return _Mode.AFTER_STAGE
            self._command()
            return _Mode.AFTER_STAGE
        if mode is _Mode.AFTER_TARGET:
            self._command()
            return _Mode.AFTER_STAGE
        if mode is _Mode.ARGS:
            if ch in "'\"":
                self._string()
            else:
                self._bare_word()
            return _Mode.ARGS
        raise LangError(f"unexpected {ch!r}", self._span(start, start + 1))

    def _binding_at(self, word: str) -> bool:
        """`name = …` is a binding; `NAME=value cmd` keeps its sh meaning."""
        i = self.pos + len(word)
        spaced_before = i < len(self.text) and self.text[i] in " \t"
        while i < len(self.text) and self.text[i] in " \t":
            i += 1
        if i >= len(self.text) or self.text[i] != "=" or self.text[i + 1 : i + 2] == "=":
            return False
        after = self.text[i + 1 : i + 2]
        if spaced_before or after in ("", " ", "\t", "\n"):
            return True
        # `x=5` alone is a binding; `FOO=bar make` is an sh environment prefix.
        j = i + 1
        saved, self.pos = self.pos, j
        try:
            return self._single_word_value()
        finally:
            self.pos = saved

    def _single_word_value(self) -> bool:
        """True when the rest of the statement is one plain word."""
        i = self.pos
        while i < len(self.text) and self.text[i] not in " \t\n|'\"#{}":
            i += 1
        if i == self.pos:
            return False
        while i < len(self.text) and self.text[i] in " \t":
            i += 1
        return i >= len(self.text) or self.text[i] in "\n#"

    # -- pieces ------------------------------------------------------------

    def _bare_word(self) -> None:
        start = self.pos
        parts: list[Part] = []
        lit_start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in " \t\n|'\"#{}":
            if self.text[self.pos] == "$":
                ref = self._ref(quoted=False)
                if ref is not None:
                    if lit_start < ref.span.start:
                        parts.append(Lit(self.text[lit_start : ref.span.start]))
                    parts.append(ref)
                    lit_start = self.pos
                    continue
            self.pos += 1
        if self.pos == start:
            what = "'}' without its '{'" if self.text[start] == "}" else repr(self.text[start])
            raise LangError(f"unexpected {what}", self._span(start, start + 1))
        if lit_start < self.pos:
            parts.append(Lit(self.text[lit_start : self.pos]))
        self._emit(Kind.WORD, start, tuple(parts))

    def _string(self) -> None:
        start = self.pos
        quote = self.text[self.pos]
        self.pos += 1
        parts: list[Part] = []
        buf: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise IncompleteInput(f"unclosed {quote} string", self._span(start, start + 1))
            ch = self.text[self.pos]
            if ch == quote:
                self.pos += 1
                break
            if quote == '"' and ch == "\\" and self._peek(1) in '"\\$`\n':
                buf.append(self._peek(1) if self._peek(1) != "\n" else "")
                self.pos += 2
                continue
            if quote == '"' and ch == "$":
                ref = self._ref(quoted=True)
                if ref is not None:
                    if buf:
                        parts.append(Lit("".join(buf)))
                        buf = []
                    parts.append(ref)
                    continue
            buf.append(ch)
            self.pos += 1
        if buf:
            parts.append(Lit("".join(buf)))
        self._emit(Kind.STRING, start, tuple(parts))

    def _target(self) -> None:
        """`@nodeset`, `@{group}`, `@$var`: up to whitespace, outside brackets."""
        start = self.pos
        self.pos += 1
        parts: list[Part] = []
        lit_start = self.pos
        brackets: list[int] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch in " \t\n" or (ch in "|#" and not brackets):
                break
            if ch == "[":
                brackets.append(self.pos)
            elif ch == "]":
                if not brackets:
                    raise LangError("unmatched ']' in node set", self._span(self.pos, self.pos + 1))
                brackets.pop()
            elif ch == "$" or (ch == "{" and not brackets):
                ref = self._ref(quoted=False) if ch == "$" else self._group_ref()
                if ref is None:
                    raise LangError(
                        "expected a name after '$' in a target"
                        if ch == "$"
                        else "expected a group name like @{web}",
                        self._span(self.pos, self.pos + 1),
                    )
                if lit_start < ref.span.start:
                    parts.append(Lit(self.text[lit_start : ref.span.start]))
                parts.append(ref)
                lit_start = self.pos
                continue
            self.pos += 1
        if brackets:
            raise LangError("unclosed '[' in node set", self._span(brackets[0], brackets[0] + 1))
        if lit_start < self.pos:
            parts.append(Lit(self.text[lit_start : self.pos]))
        if self.pos == start + 1:
            raise LangError("expected a node set after '@'", self._span(start, start + 1))
        self._emit(Kind.TARGET, start, tuple(parts))

    def _group_ref(self) -> Ref | None:
        """`{name}` inside a target: an inventory group or a result set."""
        m = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}").match(self.text, self.pos)
        if not m:
            return None
        start = self.pos
        self.pos = m.end()
        return Ref(m.group(1), None, False, True, m.group(), self._span(start))

    def _ref(self, quoted: bool) -> Ref | None:
        """A `$…` reference at pos, or None (pos unchanged) if `$` starts no name."""
        start = self.pos
        nxt = self._peek(1)
        if nxt == "{":
            m = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[0-9@])(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")
            match = m.match(self.text, start)
            if not match:
                return None
            self.pos = match.end()
            return Ref(match.group(1), match.group(2), quoted, True, match.group(), self._span(start))
        if nxt.isdigit() or nxt == "@":
            self.pos += 2
            return Ref(nxt, None, quoted, False, self.text[start : self.pos], self._span(start))
        m2 = _IDENT.match(self.text, start + 1)
        if not m2:
            return None
        self.pos = m2.end()
        return Ref(m2.group(), None, quoted, False, self.text[start : self.pos], self._span(start))

    # -- command text --------------------------------------------------------

    def _command(self) -> None:
        start = self.pos
        parts = _CommandScanner(self).scan()
        end = self.pos
        while end > start and self.text[end - 1] in " \t\r":
            end -= 1
        # Trailing blanks belong to no token: trim the last literal to match.
        if parts and isinstance(parts[-1], Lit):
            trimmed = parts[-1].text.rstrip(" \t\r")
            parts = parts[:-1] + ([Lit(trimmed)] if trimmed else [])
        self.out.append(Token(Kind.COMMAND, self.text[start:end], self._span(start, end), tuple(parts)))


class _CommandScanner:
    """Reads sh text for one command stage, honouring sh quoting and nesting."""

    def __init__(self, lexer: Lexer) -> None:
        self.lx = lexer
        self.text = lexer.text
        self.parts: list[Part] = []
        self.lit_start = lexer.pos

    def _flush(self, upto: int) -> None:
        if self.lit_start < upto:
            self.parts.append(Lit(self.text[self.lit_start : upto]))

    def _take_ref(self, quoted: bool) -> bool:
        at = self.lx.pos
        ref = self.lx._ref(quoted)
        if ref is None:
            return False
        self._flush(at)
        self.parts.append(ref)
        self.lit_start = self.lx.pos
        return True

    def scan(self) -> list[Part]:
        self._scan_until(closer=None)
        self._flush(self.lx.pos)
        return self.parts

    def _word_start(self) -> bool:
        pos = self.lx.pos
        return pos == 0 or self.text[pos - 1] in " \t\n;&|()"

    def _continues_line(self) -> bool:
        """A `|`, `||` or `&&` that ends a line continues the sh command on the next."""
        lx = self.lx
        op = self.text[lx.pos : lx.pos + 2]
        width = 2 if op in ("||", "&&") else 1
        if op[:1] == "&" and width == 1:
            return False
        i = lx.pos + width
        while i < len(self.text) and self.text[i] in " \t\r":
            i += 1
        if i < len(self.text) and self.text[i] != "\n":
            return False
        if not self.text[i:].strip():
            raise IncompleteInput(
                f"the command continues after {op[:width]!r}", lx._span(lx.pos, lx.pos + width)
            )
        lx.pos = i + 1
        return True

    def _stage_pipe(self) -> bool:
        i = self.lx.pos + 1
        while i < len(self.text) and self.text[i] in " \t":
            i += 1
        word = self.lx._ident_at(i)
        return word in STAGE_KEYWORDS

    def _scan_until(self, closer: str | None) -> None:
        """Scan to the end of the stage (closer None) or to the matching closer."""
        lx = self.lx
        text = self.text
        sh_braces = 0
        opened_at = lx.pos - 1
        while True:
            if lx.pos >= len(text):
                if closer is not None:
                    raise IncompleteInput(
                        f"missing {closer!r} to close this", lx._span(opened_at, opened_at + 1)
                    )
                return
            ch = text[lx.pos]
            if ch == "\\":
                lx._check_continuation()
                lx.pos += 2
                continue
            if ch == "'":
                self._single_quoted()
                continue
            if ch in '"`':
                self._enclosed(ch)
                continue
            if ch == "$":
                self._dollar(quoted=False)
                continue
            if closer is not None:
                if ch == closer:
                    lx.pos += 1
                    return
                if ch == "(" and closer == ")":
                    lx.pos += 1
                    self._scan_until(")")
                    continue
                lx.pos += 1
                continue
            # Top level of the stage: the ending rules.
            if ch == "\n":
                return
            if ch == "#" and self._word_start():
                return
            if ch in "|&" and self._continues_line():
                continue
            if ch == "|":
                if lx._peek(1) == "|":
                    lx.pos += 2
                    continue
                if self._stage_pipe():
                    return
                lx.pos += 1
                continue
            if ch == "(":
                lx.pos += 1
                self._scan_until(")")
                continue
            if ch == "{" and self._word_start() and lx._peek(1) in " \t\n":
                sh_braces += 1
            elif ch == "}" and self._word_start():
                if sh_braces:
                    sh_braces -= 1
                elif lx.block_depth:
                    return
            lx.pos += 1

    def _dollar(self, quoted: bool) -> None:
        """At a `$`: a dsh reference, a `$(…)` or `${…}` to skip whole, or a lone `$`."""
        lx = self.lx
        if self._take_ref(quoted):
            return
        nxt = lx._peek(1)
        if nxt and nxt in "({":
            lx.pos += 2
            self._scan_until(")" if nxt == "(" else "}")
        else:
            lx.pos += 1

    def _single_quoted(self) -> None:
        lx = self.lx
        start = lx.pos
        end = self.text.find("'", start + 1)
        if end < 0:
            lx.pos = len(self.text)
            raise IncompleteInput("unclosed ' string", lx._span(start, start + 1))
        lx.pos = end + 1

    def _enclosed(self, close: str) -> None:
        """Skip to the closing `"` (minding `$` and backquotes inside) or backquote."""
        lx = self.lx
        start = lx.pos
        lx.pos += 1
        while True:
            if lx.pos >= len(self.text):
                what = '" string' if close == '"' else "` command substitution"
                raise IncompleteInput(f"unclosed {what}", lx._span(start, start + 1))
            ch = self.text[lx.pos]
            if ch == close:
                lx.pos += 1
                return
            if ch == "\\":
                lx.pos = min(lx.pos + 2, len(self.text))
            elif close == '"' and ch == "`":
                self._enclosed("`")
            elif close == '"' and ch == "$":
                self._dollar(quoted=True)
            else:
                lx.pos += 1


def tokenize(source: Source) -> list[Token]:
    return Lexer(source).tokens()

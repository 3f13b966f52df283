"""The lexer: turns dsh text into tokens, reading command stages as raw sh text.

dsh is modal: at the start of a statement, or right after a stage `|`, a word
may be a keyword; anything else is sh text handed to a shell. The lexer knows
where it is and ends a command stage at a newline, at an unquoted `|` followed
by a stage keyword, at a `#` comment, or at the `}` that closes a dsh block.
In a copy (`put`, `get`) a `:` right after the target ends it: what follows
is the remote path, one word or string.
Inside a command it records every `$name`, `${name}` and `${name.field}` it
sees outside single quotes, with its quoting context, so that the compiler can
expand the names dsh binds and leave the rest to the remote shell.
"""

from __future__ import annotations

import enum
import re

from dsh.errors import IncompleteInput, LangError
from dsh.lang.shtext import COPY_KEYWORDS, STAGE_KEYWORDS, CommandScanner, escaped, ident_at, read_ref
from dsh.lang.source import SURROGATE, Source, Span
from dsh.lang.tokens import Kind, Lit, Part, Ref, Token

#: Words that are keywords at the start of a statement.
KEYWORDS = frozenset({*STAGE_KEYWORDS, "if", "else", "for", "fn"})
#: `{NAME}` or `{SOURCE:NAME}` in a target (the compiler checks the name's alphabet,
#: which for `{file:PATH}` is a path's).
_GROUP = re.compile(r"\{((?:[A-Za-z_][A-Za-z0-9_.-]*:)?[^\s{}|#]+)\}")
_VALUE_END = " \t\r\n|'\"#{}"
#: What Python makes of a byte that is not UTF-8 (surrogateescape), or a lone surrogate.
#: A run of a target's text in which no character ends it or needs a look.
_TARGET_PLAIN = re.compile(r"[^ \t\r\n|#\[\]${]+")
#: The same in a copy's target, which a `:` ends.
_COPY_TARGET_PLAIN = re.compile(r"[^ \t\r\n|#\[\]${:]+")

__all__ = ["KEYWORDS", "STAGE_KEYWORDS", "Kind", "Lexer", "Lit", "Part", "Ref", "Token", "tokenize"]


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
        #: In an `if` condition: a command there ends at a `{` word (the block's).
        self.cond = False
        #: In the arguments of a copy: its target ends at a `:`.
        self.copy = False
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

    def _word_at(self, pos: int) -> str | None:
        """An identifier that is a whole word, or one followed by `=` (a binding)."""
        word = ident_at(self.text, pos)
        if word is None:
            m = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?==)").match(self.text, pos)
            word = m.group() if m else None
        return word

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
                # A `|` that ends a line continues the pipeline on the next.
                while self.pos < len(self.text) and self.text[self.pos] in " \t\r\n":
                    self.pos += 1
                continue
            if ch == "{" and (mode in (_Mode.ARGS, _Mode.AFTER_STAGE) or (self.cond and mode is _Mode.HEAD)):
                self.pos += 1
                self.block_depth += 1
                self.cond = False
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
            self.copy = False
            if ch == "@":
                self._target()
                return _Mode.AFTER_TARGET
            if mode is _Mode.VALUE and ch in "'\"":
                self._string()
                return _Mode.AFTER_STAGE
            word = self._word_at(self.pos)
            if mode is _Mode.HEAD and word is not None and self._binding_at(word):
                self.pos += len(word)
                self._emit(Kind.WORD, start)
                self._skip_blanks()
                eq = self.pos
                self.pos += 1
                self._emit(Kind.ASSIGN, eq)
                return _Mode.VALUE
            if mode is _Mode.VALUE and word == "secret" and self._peek(len(word)) in (" ", "\t"):
                self.pos += len(word)  # `x = secret "PROMPT"`: its prompt is an argument
                self._emit(Kind.KEYWORD, start)
                return _Mode.ARGS
            copy_value = mode is _Mode.VALUE and word in COPY_KEYWORDS and self._single_word_value()
            if word in KEYWORDS and self._peek(len(word)) != "=" and not copy_value:  # `retry=3 env` is sh's
                assert word is not None
                self.pos += len(word)
                self._emit(Kind.KEYWORD, start)
                self.copy = word in COPY_KEYWORDS
                if word == "if":  # its condition is a stage, or a comparison
                    self.cond = True
                    return _Mode.HEAD
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
            elif ch == "@":  # `for h in @web[1-4] {`
                self._target(copy=self.copy)
                if self.copy and self._peek() == ":":  # `put f @h[1-3]:/tmp/f`
                    colon = self.pos
                    self.pos += 1
                    self._emit(Kind.COLON, colon)
                    if self._peek() in ("'", '"'):
                        self._string()
                    elif self._peek() not in ("", *_VALUE_END):
                        self._bare_word()
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
        while i < len(self.text) and self.text[i] not in _VALUE_END:
            i += 1
        if i == self.pos:
            return False
        while i < len(self.text) and self.text[i] in " \t\r":
            i += 1
        ends = "\n#}" if self.block_depth else "\n#"  # `{ x = 5 }`: the block's brace ends it
        return i >= len(self.text) or self.text[i] in ends

    # -- pieces ------------------------------------------------------------

    def _take_ref(self, parts: list[Part], lit_start: int) -> int | None:
        """A reference at pos appended to parts (with the literal before it); new lit_start."""
        ref = read_ref(self.src, self.pos, "value")
        if ref is None:
            return None
        if lit_start < self.pos:
            parts.append(Lit(self.text[lit_start : self.pos]))
        parts.append(ref)
        self.pos = ref.span.end
        return self.pos

    def _bare_word(self) -> None:
        start = lit_start = self.pos
        parts: list[Part] = []
        while self.pos < len(self.text) and self.text[self.pos] not in _VALUE_END:
            if self.text[self.pos] == "$" and (after := self._take_ref(parts, lit_start)) is not None:
                lit_start = after
                continue
            self.pos += 1
        if self.pos == start:
            what = "'}' without its '{'" if self.text[start] == "}" else repr(self.text[start])
            raise LangError(f"unexpected {what}", self._span(start, start + 1))
        if lit_start < self.pos:
            parts.append(Lit(self.text[lit_start : self.pos]))
        self._emit(Kind.WORD, start, tuple(parts))

    def _string(self) -> None:
        """A quoted dsh value: single quotes keep everything, double quotes expand `$`."""
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
            if quote == '"' and ch == "\\" and self._peek(1) in ('"', "\\", "$", "`", "\n"):
                buf.append(self._peek(1) if self._peek(1) != "\n" else "")
                self.pos += 2
                continue
            if quote == '"' and ch == "$":
                ref = read_ref(self.src, self.pos, "value")
                if ref is not None:
                    if buf:
                        parts.append(Lit("".join(buf)))
                        buf = []
                    parts.append(ref)
                    self.pos = ref.span.end
                    continue
            buf.append(ch)
            self.pos += 1
        if buf:
            parts.append(Lit("".join(buf)))
        self._emit(Kind.STRING, start, tuple(parts))

    def _target(self, copy: bool = False) -> None:
        """`@nodeset`, `@{group}`, `@$var`: up to whitespace, outside brackets (in a
        copy, also up to a `:`)."""
        start = self.pos
        self.pos += 1
        parts: list[Part] = []
        lit_start = self.pos
        brackets: list[int] = []
        while self.pos < len(self.text):
            plain = (_COPY_TARGET_PLAIN if copy else _TARGET_PLAIN).match(self.text, self.pos)
            if plain is not None:  # node names: nothing to look at
                self.pos = plain.end()
                continue
            ch = self.text[self.pos]
            if ch in " \t\r\n" or (ch in "|#" and not brackets) or (copy and ch == ":" and not brackets):
                break
            if ch == "[":
                brackets.append(self.pos)
            elif ch == "]":
                if not brackets:
                    raise LangError("unmatched ']' in node set", self._span(self.pos, self.pos + 1))
                brackets.pop()
            elif ch == "$" or (ch == "{" and not brackets):
                ref = read_ref(self.src, self.pos, "value") if ch == "$" else self._group_ref()
                if ref is None:
                    raise LangError(
                        "expected a name after '$' in a target"
                        if ch == "$"
                        else "expected a group name like @{web}",
                        self._span(self.pos, self.pos + 1),
                    )
                if lit_start < self.pos:
                    parts.append(Lit(self.text[lit_start : self.pos]))
                parts.append(ref)
                self.pos = lit_start = ref.span.end
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
        """`{name}` or `{source:name}` inside a target: an inventory's group or a result
        set (its Ref's name is the text between the braces)."""
        m = _GROUP.match(self.text, self.pos)
        if not m:
            return None
        return Ref(m.group(1), None, "value", m.group(), self._span(self.pos, m.end()))

    def _command(self) -> None:
        start = self.pos
        scanner = CommandScanner(self.src, start, self.block_depth, cond=self.cond)
        self.pos = scanner.scan()
        end = self.pos
        while end > start and self.text[end - 1] in " \t\r" and not escaped(self.text, end - 1):
            end -= 1
        # Trailing blanks belong to no token: trim the last literal to match.
        parts = scanner.parts
        if parts and isinstance(parts[-1], Lit):
            keep = len(parts[-1].text) - (self.pos - end)
            parts = parts[:-1] + ([Lit(parts[-1].text[:keep])] if keep > 0 else [])
        self.out.append(
            Token(
                Kind.COMMAND,
                self.text[start:end],
                self._span(start, end),
                tuple(parts),
                tuple(scanner.shell_params),
            )
        )


def tokenize(source: Source) -> list[Token]:
    nul = source.text.find("\x00")
    if nul >= 0:
        raise LangError("a NUL byte cannot appear in dsh text", Span(source, nul, nul + 1))
    bad = SURROGATE.search(source.text)
    if bad is not None:  # a byte that is not UTF-8, kept by Python as a lone surrogate
        code = ord(bad.group())
        byte = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else "a lone surrogate"
        offset = len(source.text[: bad.start()].encode("utf-8", "surrogateescape"))
        raise LangError(f"not UTF-8 text ({byte}, at byte {offset})", Span(source, bad.start(), bad.end()))
    return Lexer(source).tokens()

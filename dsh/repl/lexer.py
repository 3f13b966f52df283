"""The dsh language for Pygments: `pygmentize -l dsh`, and the REPL's colours.

Keywords count where the language makes them keywords: at the start of a
statement and right after a stage `|`; after a target the first word is a
command; after `put` or `get` a `:` ends the target (`@h[1-3]:/tmp/f`).
`$` names dsh binds are `Name.Variable`; the others, which go to the remote
shell, `Name.Variable.Global` (the REPL tells the lexer which are bound;
`pygmentize` treats every name as bound).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import ClassVar

from pygments.lexer import Lexer
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Text,
    Whitespace,
    _TokenType,
)

KEYWORDS = frozenset(
    {
        *("await", "sleep", "within", "retry", "stdin", "batch", "where", "gather"),
        *("if", "else", "for", "fn", "put", "get"),
    }
)
#: The keywords of copies, whose target ends at a `:` (`put f @h[1-3]:/tmp/f`).
COPY_KEYWORDS = frozenset({"put", "get"})
#: Words that mean something after a keyword (`await port 80 as x within 5s`).
ARG_WORDS = frozenset(
    {"as", "within", "every", "in", "backoff", "max-fail", "status", "notok", "--sudo", "--owner", "--mode"}
)
_DURATION_UNITS = ("ms", "s", "m", "h", "d")


class DshLexer(Lexer):
    """A hand-written lexer: dsh is modal (keyword or shell text by position), which
    regular-expression states would only approximate."""

    name = "dsh"
    aliases: ClassVar[list[str]] = ["dsh"]
    filenames: ClassVar[list[str]] = ["*.dsh"]
    mimetypes: ClassVar[list[str]] = ["text/x-dsh"]

    def __init__(self, bound: Callable[[], set[str]] | None = None, **options: object) -> None:
        super().__init__(**options)
        self.bound = bound

    def get_tokens_unprocessed(self, text: str) -> Iterator[tuple[int, _TokenType, str]]:
        bound = self.bound() if self.bound is not None else None
        pos = 0
        head = True  # at a statement's start or after a stage `|`
        args = False  # after a keyword: its words
        copy = False  # after `put` or `get`: a target ends at a `:`
        quote = ""
        while pos < len(text):
            ch = text[pos]
            if quote:  # inside a string of the shell text
                end = pos
                while end < len(text) and text[end] != quote and not (quote == '"' and text[end] == "$"):
                    end += 2 if text[end] == "\\" and quote == '"' else 1
                if end > pos:
                    yield pos, String, text[pos:end]
                    pos = end
                    continue
                if end < len(text) and text[end] == "$":
                    pos = yield from self._dollar(text, pos, bound)
                    continue
                yield pos, String, ch
                quote = ""
                pos += 1
                continue
            if ch == "\n":
                yield pos, Whitespace, ch
                head, args, copy = True, False, False
                pos += 1
            elif ch in " \t\r":
                end = pos
                while end < len(text) and text[end] in " \t\r":
                    end += 1
                yield pos, Whitespace, text[pos:end]
                pos = end
            elif ch == "#" and (pos == 0 or text[pos - 1] in " \t\n"):
                end = text.find("\n", pos)
                end = len(text) if end < 0 else end
                yield pos, Comment.Single, text[pos:end]
                pos = end
            elif ch == "|" and text[pos : pos + 2] != "||":
                yield pos, Operator, ch
                head, args, copy = True, False, False
                pos += 1
            elif ch in "{}":
                yield pos, Punctuation, ch
                head, args, copy = True, False, False
                pos += 1
            elif ch in "'\"":
                yield pos, String, ch
                quote = ch
                pos += 1
            elif ch == "$":
                pos = yield from self._dollar(text, pos, bound)
            elif ch == "@" and (head or args or pos == 0 or text[pos - 1] in " \t"):
                end = pos + 1
                depth = 0
                while end < len(text) and (depth or text[end] not in (" \t\n|:" if copy else " \t\n|")):
                    depth += text[end] in "[{"
                    depth -= text[end] in "]}"
                    end += 1
                yield pos, Name.Namespace, text[pos:end]
                pos = end
                head = False
                if copy and text[pos : pos + 1] == ":":
                    yield pos, Punctuation, ":"
                    pos += 1
            else:
                end = pos
                while end < len(text) and text[end] not in " \t\r\n|{}'\"$#":
                    end += 1
                end = max(end, pos + 1)
                word = text[pos:end]
                before = text[:pos].rstrip(" \t")
                after_assign = before.endswith("=") and not before.endswith(("==", "!="))
                value = after_assign and word in COPY_KEYWORDS and not text[end:].split("\n", 1)[0].strip()
                if head and not value and (word in KEYWORDS or (word == "secret" and after_assign)):
                    yield pos, Keyword, word
                    head, args, copy = False, True, word in COPY_KEYWORDS
                elif head and text[end:].lstrip(" ").startswith("="):  # `name = …`
                    yield pos, Name.Variable, word
                    head = False
                elif args and word in ARG_WORDS:
                    yield pos, Keyword.Pseudo, word
                elif args and _is_duration(word):
                    yield pos, Number, word
                elif word == "=":
                    yield pos, Operator, word
                    head = True
                else:
                    yield pos, Text, word
                    head = False
                pos = end

    def _dollar(
        self, text: str, pos: int, bound: set[str] | None
    ) -> Generator[tuple[int, _TokenType, str], None, int]:
        """`$name`, `${name}`, `${name.field}`, `$1`: returns the position after it."""
        end = pos + 1
        if text[end : end + 1] == "{":
            close = text.find("}", end)
            end = len(text) if close < 0 else close + 1
            name = text[pos + 2 : end - 1].split(".")[0]
        else:
            while end < len(text) and (text[end].isalnum() or text[end] == "_"):
                end += 1
            name = text[pos + 1 : end]
        if end == pos + 1:
            yield pos, Text, "$"
            return end
        known = bound is None or name in bound or name.isdigit() or name in ("host", "@")
        yield pos, Name.Variable if known else Name.Variable.Global, text[pos:end]
        return end


def _is_duration(word: str) -> bool:
    for unit in _DURATION_UNITS:
        number = word.removesuffix(unit)
        if number != word and number.replace(".", "", 1).isdigit():
            return True
    return False

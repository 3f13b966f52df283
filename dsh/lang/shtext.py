"""sh text inside dsh: where a command stage ends, and the `$` references in it.

dsh never parses sh; it follows just enough of it — quotes, backslashes,
`$(…)`, `$((…))`, `${…}`, backquotes, here-documents, `case … esac`, comments
and brace groups — to know where a stage ends and in which quoting context
each `$name` stands, so that a value dsh inserts there is always data.
"""

from __future__ import annotations

import re

from dsh.errors import IncompleteInput, LangError
from dsh.lang.source import Source, Span
from dsh.lang.tokens import Lit, Part, Ref
from dsh.names import digits

#: The keywords of copies: they start a line, and after a `|` they are refused.
COPY_KEYWORDS = frozenset({"put", "get"})
#: Words after an unquoted `|` that end a command stage (a new dsh stage).
STAGE_KEYWORDS = frozenset(
    {"await", "sleep", "within", "retry", "stdin", "batch", "where", "gather", "callback", *COPY_KEYWORDS}
)
#: Characters that end a word for keyword and binding recognition.
WORD_END = " \t\r\n|{}#;"
#: How deeply `$(`, `(`, `${`, quotes may nest before dsh refuses the text.
MAX_NESTING = 64

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BRACED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*|[0-9@])(?:\.([A-Za-z_][A-Za-z0-9_]*))?\}")
_PARAM_OP = re.compile(r"\$\{#?([A-Za-z_][A-Za-z0-9_]*|[0-9@])[:\-=?+#%/\[]")
_HEREDOC_WORD = re.compile(r"(?:[^\s;&|<>()'\"\\]|\\.|'[^']*'|\"[^\"]*\")+")
_CASE = re.compile(r"(?:case|esac)(?=[\s;&|()]|$)")
_BLANK_LINE_THEN = re.compile(r"[ \t\r]*(?:\n[ \t\r]*)?")


def ident_at(text: str, pos: int) -> str | None:
    """The identifier at `pos` if a whole word (`within` in `within 5s`, not `within.sh`)."""
    m = _IDENT.match(text, pos)
    if not m:
        return None
    end = m.end()
    if end < len(text) and text[end] not in WORD_END:
        return None
    return m.group()


def read_ref(source: Source, pos: int, context: str) -> Ref | None:
    """The `$name`, `${name}`, `${name.field}`, `$1` or `$@` at `pos`, or None."""
    text = source.text
    nxt = text[pos + 1 : pos + 2]
    if nxt == "{":
        m = _BRACED.match(text, pos)
        if not m:
            return None
        return Ref(m.group(1), m.group(2), context, m.group(), Span(source, pos, m.end()))
    if digits(nxt) or nxt == "@":
        return Ref(nxt, None, context, text[pos : pos + 2], Span(source, pos, pos + 2))
    m2 = _IDENT.match(text, pos + 1)
    if not m2:
        return None
    return Ref(m2.group(), None, context, text[pos : m2.end()], Span(source, pos, m2.end()))


def escaped(text: str, pos: int) -> bool:
    """Whether the character at `pos` is escaped by an odd run of backslashes."""
    count = 0
    while pos - count - 1 >= 0 and text[pos - count - 1] == "\\":
        count += 1
    return count % 2 == 1


_ENDS = ("", " ", "\t", "\n")


class CommandScanner:
    """Scans one command stage from `start`; `scan()` returns where it ends."""

    def __init__(self, source: Source, start: int, block_depth: int, *, cond: bool = False) -> None:
        self.src = source
        self.cond = cond
        self.text = source.text
        self.pos = start
        self.block_depth = block_depth
        self.parts: list[Part] = []
        self.shell_params: list[Ref] = []
        self.lit_start = start
        self.depth = 0
        self.heredocs: list[tuple[str, bool, bool, Span]] = []  # delimiter, strip tabs, expand, where

    def scan(self) -> int:
        self._scan(closer=None)
        self._flush(self.pos)
        return self.pos

    # -- helpers ---------------------------------------------------------------

    def _span(self, start: int, end: int | None = None) -> Span:
        return Span(self.src, start, self.pos if end is None else end)

    def _peek(self, offset: int = 0) -> str:
        return self.text[self.pos + offset : self.pos + offset + 1]

    def _flush(self, upto: int) -> None:
        if self.lit_start < upto:
            self.parts.append(Lit(self.text[self.lit_start : upto]))

    def _nest(self, opened: int) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise LangError(f"nested more than {MAX_NESTING} deep", self._span(opened, opened + 1))

    def _word_start(self) -> bool:
        pos = self.pos
        if pos == 0:
            return True
        return self.text[pos - 1] in " \t\n;&|(" and not escaped(self.text, pos - 1)

    def _backslash(self) -> None:
        """Skip `\\x`; a backslash that ends the input asks for more."""
        after = self.text[self.pos + 1 :]
        if after == "" or (after[0] == "\n" and not after[1:].strip()):
            raise IncompleteInput("the line continues after '\\'", self._span(self.pos, self.pos + 1))
        self.pos += 2

    # -- the stage -------------------------------------------------------------

    def _scan(self, closer: str | None) -> None:
        """To the end of the stage (closer None), or past the `)` that closes `$(`/`(`."""
        text = self.text
        opened = self.pos - 1
        sh_braces = 0
        case_depth = 0
        while True:
            if self.pos >= len(text):
                if self.heredocs:
                    raise IncompleteInput(
                        f"the here-document ends before its delimiter {self.heredocs[0][0]!r}",
                        self.heredocs[0][3],
                    )
                if closer is not None:
                    raise IncompleteInput("missing ')' to close this", self._span(opened, opened + 1))
                return
            ch = text[self.pos]
            if ch == "\\":
                self._backslash()
            elif ch == "'":
                self._single_quoted()
            elif ch in '"`':
                self._nest(self.pos)
                self._double_quoted() if ch == '"' else self._backquoted()
                self.depth -= 1
            elif ch == "$":
                self._dollar("shell")
            elif ch == "\n":
                if self.heredocs:
                    self._heredoc_bodies()
                    if closer is None:
                        return
                elif closer is None:
                    return
                else:
                    self.pos += 1
            elif ch == "#" and self._word_start():
                if closer is None:
                    return
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif ch == "<" and text.startswith("<<", self.pos) and not text.startswith("<<<", self.pos):
                self._heredoc_operator()
            elif closer is None and ch in "|&" and self._continues_line():
                pass
            elif closer is None and ch == "|":
                if self._peek(1) == "|":
                    self.pos += 2
                elif self._stage_pipe():
                    return
                else:
                    self.pos += 1
            elif ch == "(":
                self._nest(self.pos)
                self.pos += 1
                self._scan(")")
                self.depth -= 1
            elif ch == ")" and closer == ")" and case_depth == 0:
                self.pos += 1
                return
            elif self._word_start() and (m := _CASE.match(text, self.pos)):
                case_depth = case_depth + 1 if m.group() == "case" else max(case_depth - 1, 0)
                self.pos = m.end()
            elif (
                self.cond
                and closer is None
                and ch == "{"
                and self._word_start()
                and self._peek(1) in ("", " ", "\t", "\n")
            ):
                return  # the block of an `if`: the condition ends here
            elif closer is None and ch == "{" and self._word_start() and self._peek(1) in (" ", "\t", "\n"):
                sh_braces += 1
                self.pos += 1
            elif closer is None and ch == "}" and self._word_start():
                if sh_braces:
                    sh_braces -= 1
                elif self.block_depth:
                    return
                self.pos += 1
            else:
                self.pos += 1

    def _continues_line(self) -> bool:
        """A `|`, `||` or `&&` that ends a line continues the command on the next,
        unless that line starts with a stage keyword (then `|` is a stage pipe)."""
        op = self.text[self.pos : self.pos + 2]
        width = 2 if op in ("||", "&&") else 1
        if op[:1] == "&" and width == 1:
            return False
        i = self.pos + width
        while i < len(self.text) and self.text[i] in " \t\r":
            i += 1
        if i < len(self.text) and self.text[i] != "\n":
            return False
        if not self.text[i:].strip():
            raise IncompleteInput(
                f"the command continues after {op[:width]!r}", self._span(self.pos, self.pos + width)
            )
        if width == 1 and self._stage_pipe():
            return False
        self.pos = i + 1
        return True

    def _stage_pipe(self) -> bool:
        """Whether the `|` at pos is followed (maybe on the next line) by a stage keyword."""
        m = _BLANK_LINE_THEN.match(self.text, self.pos + 1)
        return ident_at(self.text, m.end() if m else self.pos + 1) in STAGE_KEYWORDS

    # -- quotes and substitutions ---------------------------------------------------

    def _take_ref(self, context: str) -> bool:
        ref = read_ref(self.src, self.pos, context)
        if ref is None:
            return False
        self._flush(self.pos)
        self.parts.append(ref)
        self.pos = ref.span.end
        self.lit_start = self.pos
        return True

    def _dollar(self, context: str) -> None:
        """At a `$`: a reference, `$(…)`, `$((…))`, `${…}`, or a lone `$`."""
        if self._take_ref(context):
            return
        nxt = self._peek(1)
        start = self.pos
        if nxt == "(":
            self._nest(start)
            if self._peek(2) == "(":
                self.pos += 3
                self._arithmetic()
            else:
                self.pos += 2
                self._scan(")")
            self.depth -= 1
        elif nxt == "{":
            self._nest(start)
            self._parameter(context)
            self.depth -= 1
        else:
            self.pos += 1

    def _parameter(self, context: str) -> None:
        """`${name:-word}` and its kin: the shell's. Its word is quoted as where the
        `${` stands: unquoted, single quotes work there; in double quotes they don't."""
        start = self.pos
        m = _PARAM_OP.match(self.text, start)
        if m:
            name = m.group(1)
            self.shell_params.append(Ref(name, None, context, m.group(), self._span(start, m.end())))
        self.pos += 2
        while True:
            if self.pos >= len(self.text):
                raise IncompleteInput("missing '}' to close this", self._span(start, start + 2))
            ch = self.text[self.pos]
            if ch == "}":
                self.pos += 1
                return
            if ch == "\\":
                self._backslash()
            elif ch == "'" and context == "shell":
                self._single_quoted()
            elif ch == '"':
                self._double_quoted()
            elif ch == "`":
                self._backquoted()
            elif ch == "$":
                self._dollar(context)
            else:
                self.pos += 1

    def _arithmetic(self) -> None:
        """After `$((`: to the matching `))`. Values there are escaped as in double quotes."""
        start = self.pos - 3
        depth = 0
        while True:
            if self.pos >= len(self.text):
                raise IncompleteInput("missing '))' to close this", self._span(start, start + 3))
            ch = self.text[self.pos]
            if ch == "$":
                self._dollar("dquote")
            elif ch == "\\":
                self._backslash()
            elif ch == "(":
                depth += 1
                self.pos += 1
            elif ch == ")" and depth:
                depth -= 1
                self.pos += 1
            elif ch == ")":
                self.pos += 1
                if self._peek() == ")":
                    self.pos += 1
                else:  # `$((cmd) )`: a subshell inside a command substitution after all
                    self._scan(")")
                return
            else:
                self.pos += 1

    def _single_quoted(self) -> None:
        start = self.pos
        end = self.text.find("'", start + 1)
        if end < 0:
            self.pos = len(self.text)
            raise IncompleteInput("unclosed ' string", self._span(start, start + 1))
        self.pos = end + 1

    def _double_quoted(self) -> None:
        start = self.pos
        self.pos += 1
        while True:
            if self.pos >= len(self.text):
                raise IncompleteInput('unclosed " string', self._span(start, start + 1))
            ch = self.text[self.pos]
            if ch == '"':
                self.pos += 1
                return
            if ch == "\\":
                self._backslash()
            elif ch == "`":
                self._backquoted()
            elif ch == "$":
                self._dollar("dquote")
            else:
                self.pos += 1

    def _backquoted(self) -> None:
        """Backquotes: references are recorded (so the compiler can refuse bound ones)."""
        start = self.pos
        self.pos += 1
        while True:
            if self.pos >= len(self.text):
                raise IncompleteInput("unclosed ` command substitution", self._span(start, start + 1))
            ch = self.text[self.pos]
            if ch == "`":
                self.pos += 1
                return
            if ch == "\\":
                self._backslash()
            elif not (ch == "$" and self._take_ref("backquote")):
                self.pos += 1

    # -- here-documents --------------------------------------------------------------

    def _heredoc_operator(self) -> None:
        """`<<WORD`, `<<-WORD`, `<<'WORD'`: the body follows the end of this line."""
        start = self.pos
        self.pos += 2
        strip = self._peek() == "-"
        if strip:
            self.pos += 1
        while self._peek() in (" ", "\t"):
            self.pos += 1
        m = _HEREDOC_WORD.match(self.text, self.pos)
        if not m:
            raise LangError("a here-document needs a delimiter word after '<<'", self._span(start, self.pos))
        word = m.group()
        self.pos = m.end()
        expand = not any(q in word for q in "'\"\\")
        delimiter = re.sub(
            r"\\(.)|'([^']*)'|\"([^\"]*)\"", lambda g: "".join(x or "" for x in g.groups()), word
        )
        self.heredocs.append((delimiter, strip, expand, self._span(start)))

    def _heredoc_bodies(self) -> None:
        """At the newline that ends the operator's line: every pending body, in order.

        Leaves pos at the end of the last delimiter line (its newline or the end).
        """
        pending, self.heredocs = self.heredocs, []
        for delimiter, strip, expand, where in pending:
            self.pos += 1  # the newline before the body
            while True:
                if self.pos >= len(self.text):
                    raise IncompleteInput(f"the here-document ends before its delimiter {delimiter!r}", where)
                end = self.text.find("\n", self.pos)
                end = len(self.text) if end < 0 else end
                line = self.text[self.pos : end]
                if (line.lstrip("\t") if strip else line) == delimiter:
                    self.pos = end
                    break
                while expand and self.pos < end:
                    ch = self.text[self.pos]
                    if ch == "\\":
                        self.pos += 2
                    elif ch == "$":
                        self._dollar("heredoc")
                    elif ch == "`":
                        self._backquoted()
                    else:
                        self.pos += 1
                    if self.pos > end:  # a substitution ran over lines
                        newline = self.text.find("\n", self.pos)
                        end = len(self.text) if newline < 0 else newline
                self.pos = end + 1

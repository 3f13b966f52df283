"""The parser: tokens to a syntax tree, with positioned errors.

Grammar (EBNF, kept in step with man/dsh.7):

    script    = { NEWLINE } [ statement { NEWLINE { NEWLINE } statement } ] { NEWLINE } EOF ;
    statement = binding | pipeline | if | for | fn ;
    block     = "{" { NEWLINE } [ statement { NEWLINE { NEWLINE } statement } ] { NEWLINE } "}" ;
    if        = "if" ( pipeline | compare ) block [ { NEWLINE } "else" block ] ;
    compare   = LEFT ( "==" | "!=" ) OPERAND ;
    for       = "for" NAME "in" ( WORD | STRING | TARGET ) { WORD | STRING | TARGET } block ;
    fn        = "fn" NAME "(" [ NAME { "," NAME } ] ")" block ;
    binding   = NAME "=" ( value | TARGET | pipeline | "secret" value ) ;
    value     = WORD | STRING ;
    pipeline  = head { "|" stage } ;
    head      = TARGET COMMAND | COMMAND | sleep | "callback" | copy ;
    copy      = "put" { option } PATH TARGET ":" RPATH | "get" TARGET ":" RPATH PATH ;
    option    = "--sudo" [ USER ] | "--owner" OWNER | "--mode" MODE ;
    stage     = COMMAND | sleep | await | within | retry | stdin | where | gather | batch ;
    sleep     = "sleep" DURATION ;
    await     = "await" KIND { ARG } [ "as" NAME ] [ "within" DURATION ] [ "every" DURATION ] ;
    KIND      = "port" | "http" | "file" | "cmd" | "key" | "signal" | "callback" ;
    where     = "where" ( OUTCOME | "notok" | ( "out" | "err" ) "~" REGEX ) ;
    gather    = "gather" ;
    batch     = "batch" COUNT [ "%" ] [ "max-fail" INT ] ;
    within    = "within" DURATION ;
    retry     = "retry" INT [ "backoff" DURATION ] ;
    stdin     = "stdin" ( PATH | "-" ) ;
"""

from __future__ import annotations

import re

from dsh.errors import IncompleteInput, LangError
from dsh.lang import ast
from dsh.lang.copies import read_copy
from dsh.lang.lexer import Kind, Lit, Ref, Token, tokenize
from dsh.lang.shtext import COPY_KEYWORDS
from dsh.lang.source import Source, Span
from dsh.lang.stages import StageParser

#: How deeply blocks may nest (the bodies of if, else, for and fn), counting those
#: of the functions a block calls: every level costs the parser, the compiler, the
#: plan's codec and the executor frames of Python's stack, whose limit (1000) this
#: stays well below.
MAX_BLOCK_DEPTH = 64

_COMPARE = re.compile(r"\s*(\S+)\s+(==|!=)\s+(\S+)\s*")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_FN_HEAD = re.compile(rf"({_NAME})\(\s*((?:{_NAME}\s*,\s*)*{_NAME})?\s*\)")
_OPERAND_REF = re.compile(rf"\$(?:({_NAME}|[1-9])|\{{({_NAME}|[1-9])(?:\.([A-Za-z_]+))?\}})")


class Parser(StageParser):
    """Statements and blocks, over the stages StageParser reads."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.toks = tokenize(source)
        self.i = 0
        self.depth = 0  # blocks open

    # -- grammar -------------------------------------------------------------

    def script(self) -> ast.Script:
        statements: list[ast.Statement] = []
        while True:
            while self._at(Kind.NEWLINE):
                self._next()
            if self._at(Kind.EOF):
                break
            statements.append(self.statement())
            if not (self._at(Kind.NEWLINE) or self._at(Kind.EOF)):
                raise self._fail(f"unexpected {self.tok.describe()}; a statement ends at the end of its line")
        return ast.Script(tuple(statements), self.source.span(0, len(self.source.text)))

    def statement(self) -> ast.Statement:
        if self._at(Kind.KEYWORD, "if"):
            return self._if()
        if self._at(Kind.KEYWORD, "for"):
            return self._for()
        if self._at(Kind.KEYWORD, "fn"):
            return self._fn()
        if self._at(Kind.KEYWORD, "else"):
            raise self._fail("'else' without an 'if': it follows the '}' that closes the if's block")
        if self._at(Kind.WORD) and self.toks[self.i + 1].kind is Kind.ASSIGN:
            name = self._next()
            self._next()
            value = self._binding_value(name)
            return ast.Binding(name.text, name.span, value, name.span.to(value.span))
        return self.pipeline()

    def _binding_value(self, name: Token) -> ast.Value | ast.Target | ast.Pipeline | ast.Secret:
        tok = self.tok
        if tok.kind in (Kind.NEWLINE, Kind.EOF):
            raise LangError(f"nothing after '=' for {name.text!r}", self.toks[self.i - 1].span)
        if tok.kind is Kind.KEYWORD and tok.text == "secret":
            kw = self._next()
            prompt = self.tok
            if prompt.kind not in (Kind.WORD, Kind.STRING):
                raise self._fail('`secret` takes the prompt to show, as in: x = secret "db password"')
            self._next()
            if not (self._at(Kind.NEWLINE) or self._at(Kind.EOF) or self._at(Kind.RBRACE)):
                raise self._fail("`secret` takes one prompt (quote it if it has spaces)")
            return ast.Secret(ast.Value(prompt.parts, prompt.span), kw.span.to(prompt.span))
        if tok.kind in (Kind.WORD, Kind.STRING):
            self._next()
            value = ast.Value(tok.parts, tok.span)
            if self._at(Kind.PIPE):
                raise self._fail("a value cannot be piped into a stage")
            return value
        if tok.kind is Kind.TARGET and self.toks[self.i + 1].kind in (Kind.NEWLINE, Kind.EOF):
            self._next()
            return ast.Target(tok.parts, tok.span)
        return self.pipeline()

    def pipeline(self) -> ast.Pipeline:
        start = self.tok
        target: ast.Target | None = None
        if self._at(Kind.TARGET):
            tok = self._next()
            target = ast.Target(tok.parts, tok.span)
            if not self._at(Kind.COMMAND):
                raise LangError(f"nothing to run on {tok.text}: a target needs a command", tok.span)
        stages: list[ast.Stage]
        if self.tok.kind is Kind.KEYWORD and self.tok.text in COPY_KEYWORDS:  # its target is the line's
            copy, target, self.i = read_copy(self.toks, self.i)
            stages = [copy]
        else:
            stages = [self.head()]
        while self._at(Kind.PIPE):
            pipe = self._next()
            if self._at(Kind.EOF) or self._at(Kind.NEWLINE):
                raise self._fail("a stage is missing after '|'", pipe if self._at(Kind.NEWLINE) else None)
            self.stage(stages)
        return ast.Pipeline(target, tuple(stages), start.span.to(self.toks[self.i - 1].span))

    # -- blocks ------------------------------------------------------------------

    def _block(self, what: str) -> tuple[tuple[ast.Statement, ...], Span]:
        if not self._at(Kind.LBRACE):
            raise self._fail(f"expected '{{' to open the block of '{what}'")
        opening = self._next()
        if self.depth >= MAX_BLOCK_DEPTH:
            raise LangError(f"blocks nested too deeply (limit {MAX_BLOCK_DEPTH})", opening.span)
        self.depth += 1
        statements: list[ast.Statement] = []
        while True:
            while self._at(Kind.NEWLINE):
                self._next()
            if self._at(Kind.RBRACE):
                self.depth -= 1
                return tuple(statements), self._next().span
            if self._at(Kind.EOF):
                raise IncompleteInput(f"the block of '{what}' is not closed with '}}'", opening.span)
            statements.append(self.statement())
            if not (self._at(Kind.NEWLINE) or self._at(Kind.RBRACE) or self._at(Kind.EOF)):
                raise self._fail(f"unexpected {self.tok.describe()}; a statement ends at the end of its line")

    def _if(self) -> ast.If:
        kw = self._next()
        tok = self.tok
        cond: ast.Pipeline | ast.Compare
        m = _COMPARE.fullmatch(tok.text) if tok.kind is Kind.COMMAND else None
        if m is not None and not tok.text.lstrip().startswith(("$", '"', "'")):
            raise self._bare_left(tok, m)
        if m is not None:
            self._next()
            cond = ast.Compare(
                self._operand(m.group(1), tok), m.group(2), self._operand(m.group(3), tok), tok.span
            )
        elif tok.kind in (Kind.LBRACE, Kind.NEWLINE, Kind.EOF):
            raise self._fail("'if' needs a condition: a stage (`if @db1 test -f /x {`) or `$x == value`")
        else:
            cond = self.pipeline()
        then, end = self._block("if")
        orelse: tuple[ast.Statement, ...] = ()
        ahead = self.i
        while self.toks[ahead].kind is Kind.NEWLINE:
            ahead += 1
        if self.toks[ahead].kind is Kind.KEYWORD and self.toks[ahead].text == "else":
            self.i = ahead
            self._next()
            orelse, end = self._block("else")
        return ast.If(cond, then, orelse, kw.span.to(end))

    def _bare_left(self, tok: Token, m: re.Match[str]) -> LangError:
        """`if deploy == $env {`: a bare word before `==` would run a command named
        deploy; the grammar takes a `$` name or a quoted word there."""
        word = m.group(1)
        binding = f"${word} (a binding) or " if re.fullmatch(_NAME, word) else ""
        start = tok.span.start + m.start(1)
        return LangError(
            f"a comparison compares values: write {binding}'{word}' (a word) on the left; "
            f"`command {tok.text.strip()}` runs the command {word}",
            Span(tok.span.source, start, start + len(word)),
        )

    def _operand(self, text: str, tok: Token) -> ast.Value:
        """One side of a comparison: `$name`, `${name.field}`, or a word (quotes taken off)."""
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
        inner = text[1:-1] if quoted else text
        m = _OPERAND_REF.fullmatch(inner) if not text.startswith("'") else None
        if m is not None:
            name = m.group(1) or m.group(2)
            return ast.Value((Ref(name, m.group(3), "value", inner, tok.span),), tok.span)
        return ast.Value((Lit(inner),), tok.span)

    def _for(self) -> ast.For:
        kw = self._next()
        name = self.tok
        if name.kind is not Kind.WORD or not name.text.isidentifier():
            raise self._fail("'for' needs a name, as in `for h in @web[1-4] { … }`")
        self._next()
        if not self._at(Kind.WORD, "in"):
            raise self._fail(f"expected 'in' after 'for {name.text}'")
        self._next()
        items: list[ast.Value | ast.Target] = []
        while self.tok.kind in (Kind.WORD, Kind.STRING, Kind.TARGET):
            tok = self._next()
            items.append(
                ast.Target(tok.parts, tok.span) if tok.kind is Kind.TARGET else ast.Value(tok.parts, tok.span)
            )
        if not items:
            raise self._fail("'for' needs what to go through: words, a node set or a binding")
        body, end = self._block("for")
        return ast.For(name.text, name.span, tuple(items), body, kw.span.to(end))

    def _fn(self) -> ast.FnDef:
        kw = self._next()
        words: list[Token] = []
        while self._at(Kind.WORD):
            words.append(self._next())
        head = "".join(w.text for w in words)
        m = _FN_HEAD.fullmatch(head)
        if m is None:
            where = words[0] if words else None
            raise self._fail("'fn' needs a name and parameters, as in `fn restart(h) { … }`", where)
        params = tuple(p.strip() for p in (m.group(2) or "").split(",") if p.strip())
        if len(set(params)) != len(params):
            raise LangError("a parameter is named twice", words[0].span.to(words[-1].span))
        body, end = self._block("fn")
        return ast.FnDef(m.group(1), params, body, kw.span.to(end))


def parse(source: Source) -> ast.Script:
    """Parse a whole source; raises LangError (IncompleteInput when it ends early)."""
    return Parser(source).script()

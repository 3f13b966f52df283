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
    stage     = COMMAND | sleep | await | within | retry | where | gather | batch ;
    sleep     = "sleep" DURATION ;
    await     = "await" KIND { ARG } [ "as" NAME ] [ "within" DURATION ] [ "every" DURATION ] ;
    KIND      = "port" | "http" | "file" | "cmd" | "key" | "signal" | "callback" ;
    where     = "where" ( OUTCOME | "notok" | ( "out" | "err" ) "~" REGEX ) ;
    gather    = "gather" ;
    batch     = "batch" COUNT [ "%" ] [ "max-fail" INT ] ;
    within    = "within" DURATION ;
    retry     = "retry" INT [ "backoff" DURATION ] ;
"""

from __future__ import annotations

import dataclasses
import re

from dsh.errors import IncompleteInput, LangError
from dsh.lang import ast
from dsh.lang.copies import read_copy
from dsh.lang.durations import MIN_DURATION, parse_duration
from dsh.lang.lexer import Kind, Lit, Ref, Token, tokenize
from dsh.lang.shtext import COPY_KEYWORDS
from dsh.lang.source import Source, Span
from dsh.names import digits
from dsh.plan import AWAIT_KINDS, NEW_CALLBACK, OUTCOMES

#: Words that end the arguments of an await and start its options.
_AWAIT_OPTIONS = ("as", "within", "every")
#: How deeply blocks may nest (the bodies of if, else, for and fn), counting those
#: of the functions a block calls: every level costs the parser, the compiler, the
#: plan's codec and the executor frames of Python's stack, whose limit (1000) this
#: stays well below.
MAX_BLOCK_DEPTH = 64

_COMPARE = re.compile(r"\s*(\S+)\s+(==|!=)\s+(\S+)\s*")
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_FN_HEAD = re.compile(rf"({_NAME})\(\s*((?:{_NAME}\s*,\s*)*{_NAME})?\s*\)")
_OPERAND_REF = re.compile(rf"\$(?:({_NAME}|[1-9])|\{{({_NAME}|[1-9])(?:\.([A-Za-z_]+))?\}})")


class Parser:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.toks = tokenize(source)
        self.i = 0
        self.depth = 0  # blocks open

    # -- token access --------------------------------------------------------

    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def _next(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind is not Kind.EOF:
            self.i += 1
        return tok

    def _at(self, kind: Kind, text: str | None = None) -> bool:
        return self.tok.kind is kind and (text is None or self.tok.text == text)

    def _fail(self, message: str, tok: Token | None = None) -> LangError:
        tok = tok or self.tok
        if tok.kind is Kind.EOF:
            return IncompleteInput(message, tok.span)
        return LangError(message, tok.span)

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

    def head(self) -> ast.Stage:
        tok = self.tok
        if tok.kind is Kind.COMMAND:
            self._next()
            return ast.CommandStage(tok.text, tok.parts, tok.span, tok.shell_params)
        if tok.kind is Kind.KEYWORD:
            if tok.text == "sleep":
                return self._sleep()
            if tok.text == "await":
                return self._await()
            if tok.text == "callback":  # `cb = callback`: make one, bind its URL
                kw = self._next()
                self._end_of_args(kw)
                return ast.AwaitStage(NEW_CALLBACK, kw.span, (), None, None, None, kw.span)
            if tok.text in ("if", "else", "for", "fn"):
                raise self._fail(f"'{tok.text}' starts a statement; it cannot be a stage")
            raise self._fail(f"'{tok.text}' must follow a stage, as in `CMD | {tok.text} …`")
        raise self._fail(f"expected a command, found {tok.describe()}")

    def stage(self, stages: list[ast.Stage]) -> None:
        tok = self.tok
        if tok.kind is Kind.COMMAND:
            self._next()
            stages.append(ast.CommandStage(tok.text, tok.parts, tok.span, tok.shell_params))
            return
        if tok.kind is not Kind.KEYWORD:
            raise self._fail(f"expected a stage, found {tok.describe()}")
        if tok.text in COPY_KEYWORDS:
            raise self._fail(
                f"a copy starts its line: '{tok.text}' cannot follow a '|' "
                f"(`command {tok.text}` runs a command named {tok.text})"
            )
        if tok.text == "sleep":
            stages.append(self._sleep())
            return
        if tok.text == "await":
            stages.append(self._await())
            return
        if tok.text == "where":
            stages.append(self._where())
            return
        if tok.text == "gather":
            kw = self._next()
            self._end_of_args(kw)
            stages.append(ast.GatherStage(kw.span))
            return
        if tok.text == "batch":
            stages.append(self._batch())
            return
        if tok.text == "within" and isinstance(stages[-1], ast.AwaitStage):
            last_await = stages[-1]
            if last_await.within is not None:
                raise self._fail("this await already has a 'within'")
            stages[-1] = dataclasses.replace(last_await, within=self._within())
            return
        if tok.text in ("within", "retry"):
            last = stages[-1]
            if isinstance(last, ast.WhereStage | ast.GatherStage | ast.BatchStage):
                raise self._fail(f"'{tok.text}' applies to a command or copy; the stage before it is not one")
            if isinstance(last, ast.AwaitStage):
                raise self._fail("'retry' applies to a command or copy; an await waits until its 'within'")
            if not isinstance(last, ast.CommandStage | ast.CopyStage):
                raise self._fail(f"'{tok.text}' applies to a command or copy; the stage before it is a sleep")
            if tok.text == "within":
                if last.within is not None:
                    raise self._fail("this stage already has a 'within'")
                stages[-1] = dataclasses.replace(last, within=self._within())
            else:
                if last.retry is not None:
                    raise self._fail("this stage already has a 'retry'")
                stages[-1] = dataclasses.replace(last, retry=self._retry())
            return
        raise self._fail(f"'{tok.text}' cannot start a stage")

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

    # -- keyword stages --------------------------------------------------------

    def _duration(self, keyword: Token) -> tuple[float, Span]:
        tok = self.tok
        if tok.kind is not Kind.WORD:
            raise self._fail(f"'{keyword.text}' needs a duration, like 30s, 5m, 1h")
        self._next()
        seconds = parse_duration(tok.text)
        if seconds is None:
            hint = " (a number needs a unit: ms, s, m, h, d)" if digits(tok.text.replace(".", "")) else ""
            if hint and keyword.text == "sleep":
                hint += f"; for the sh command write `command sleep {tok.text}`"
            raise LangError(f"{tok.text!r} is not a duration{hint}", tok.span)
        if seconds < MIN_DURATION:  # also 0s: a bound under a millisecond is no bound at all
            raise LangError(f"{tok.text} is shorter than 1ms: a duration must be at least 1ms", tok.span)
        if not seconds < 1e12:  # also inf: no cap in the configuration comes near
            raise LangError(f"{tok.text} is too long to be a duration", tok.span)
        return seconds, tok.span

    def _sleep(self) -> ast.SleepStage:
        kw = self._next()
        seconds, span = self._duration(kw)
        self._end_of_args(kw)
        return ast.SleepStage(seconds, kw.span.to(span))

    def _await(self) -> ast.AwaitStage:
        kw = self._next()
        kinds = ", ".join(AWAIT_KINDS)
        if not self._at(Kind.WORD):
            raise self._fail(f"'await' needs what to wait for: {kinds}")
        kind = self._next()
        if kind.text not in AWAIT_KINDS:
            raise LangError(f"cannot await {kind.text!r}; an await waits for one of: {kinds}", kind.span)
        args: list[ast.Value] = []
        bind: str | None = None
        within: ast.Within | None = None
        every: float | None = None
        end = kind.span
        while self._at(Kind.WORD) or self._at(Kind.STRING):
            tok = self.tok
            option = tok.text if tok.kind is Kind.WORD and tok.text in _AWAIT_OPTIONS else None
            if option is None:
                if bind is not None or within is not None or every is not None:
                    what = f"unexpected {tok.describe()}"
                    raise self._fail(f"{what}: what to wait for comes before as/within/every")
                self._next()
                args.append(ast.Value(tok.parts, tok.span))
                end = tok.span
                continue
            self._next()
            if option == "as":
                name = self.tok
                if bind is not None:
                    raise self._fail("this await already has an 'as'", tok)
                if name.kind is not Kind.WORD or not name.text.isidentifier():
                    raise self._fail("'as' needs a name to bind, like `as who`")
                self._next()
                bind, end = name.text, name.span
            elif option == "within":
                if within is not None:
                    raise self._fail("this await already has a 'within'", tok)
                seconds, end = self._duration(tok)
                within = ast.Within(seconds, tok.span.to(end))
            else:
                if every is not None:
                    raise self._fail("this await already has an 'every'", tok)
                every, end = self._duration(tok)
        self._end_of_args(kw)
        return ast.AwaitStage(kind.text, kind.span, tuple(args), bind, within, every, kw.span.to(end))

    def _where(self) -> ast.WhereStage:
        kw = self._next()
        outcomes = ", ".join((*OUTCOMES, "notok"))
        tok = self.tok
        if tok.kind is not Kind.WORD:
            raise self._fail(f"'where' needs an outcome ({outcomes}) or `out ~ REGEX`")
        self._next()
        if tok.text in ("out", "err"):
            tilde = self.tok
            if not (tilde.kind is Kind.WORD and tilde.text == "~"):
                raise self._fail(f"expected '~' and a regular expression after 'where {tok.text}'")
            self._next()
            pattern = self.tok
            if pattern.kind not in (Kind.WORD, Kind.STRING):
                raise self._fail("'~' needs a regular expression, like `where out ~ 'active'`")
            self._next()
            regex = literal_text(pattern.parts)
            if regex is None:
                raise LangError("a 'where' pattern cannot hold dsh names ($…)", pattern.span)
            self._end_of_args(kw)
            return ast.WhereStage(None, tok.text, regex, kw.span.to(pattern.span))
        if tok.text not in (*OUTCOMES, "notok"):
            raise LangError(f"{tok.text!r} is not an outcome; 'where' takes one of: {outcomes}", tok.span)
        self._end_of_args(kw)
        return ast.WhereStage(tok.text, None, None, kw.span.to(tok.span))

    def _batch(self) -> ast.BatchStage:
        kw = self._next()
        tok = self.tok
        text = tok.text if tok.kind is Kind.WORD else ""
        number = text.removesuffix("%")
        if not digits(number) or int(number) == 0 or (text.endswith("%") and int(number) > 100):
            raise self._fail("'batch' needs how many hosts at a time, like `batch 2` or `batch 25%`")
        self._next()
        end = tok.span
        max_fail = 0
        if self._at(Kind.WORD, "max-fail"):
            mf = self._next()
            count = self.tok
            if count.kind is not Kind.WORD or not digits(count.text):
                raise self._fail("'max-fail' needs a whole number of hosts, like `max-fail 1`", mf)
            self._next()
            max_fail, end = int(count.text), count.span
        self._end_of_args(kw)
        return ast.BatchStage(int(number), text.endswith("%"), max_fail, kw.span.to(end))

    def _within(self) -> ast.Within:
        kw = self._next()
        seconds, span = self._duration(kw)
        self._end_of_args(kw)
        return ast.Within(seconds, kw.span.to(span))

    def _retry(self) -> ast.Retry:
        kw = self._next()
        tok = self.tok
        if tok.kind is not Kind.WORD or not digits(tok.text):
            raise self._fail("'retry' needs a whole number of extra attempts, like `retry 2`")
        self._next()
        count = int(tok.text)
        end = tok.span
        backoff: float | None = None
        if self._at(Kind.WORD, "backoff"):
            bk = self._next()
            backoff, end = self._duration(bk)
        self._end_of_args(kw)
        return ast.Retry(count, backoff, kw.span.to(end))

    def _end_of_args(self, keyword: Token) -> None:
        if self.tok.kind in (Kind.WORD, Kind.STRING):
            raise self._fail(f"unexpected {self.tok.describe()} after '{keyword.text}'")


def parse(source: Source) -> ast.Script:
    """Parse a whole source; raises LangError (IncompleteInput when it ends early)."""
    return Parser(source).script()


def literal_text(parts: tuple[object, ...]) -> str | None:
    """The text of parts that hold no references, else None."""
    if all(isinstance(p, Lit) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, Lit))
    return None

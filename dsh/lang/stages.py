"""The stages of a pipeline, as the parser reads them: a line's head, each stage
after a `|` (sleep, await, where, gather, batch) and the modifiers of the stage
before (within, retry, stdin); and the token cursor the parser reads with."""

from __future__ import annotations

import dataclasses

from dsh.errors import IncompleteInput, LangError
from dsh.lang import ast
from dsh.lang.durations import MIN_DURATION, parse_duration
from dsh.lang.lexer import Kind, Lit, Token
from dsh.lang.shtext import COPY_KEYWORDS
from dsh.lang.source import Span
from dsh.names import digits
from dsh.plan import AWAIT_KINDS, NEW_CALLBACK, OUTCOMES

#: Words that end the arguments of an await and start its options.
_AWAIT_OPTIONS = ("as", "within", "every")
#: What only `await approval` takes: who may approve, and how many must.
_APPROVAL_OPTIONS = ("from", "quorum")


class StageParser:
    """Reads stages from `toks` at `i` (dsh.lang.parser.Parser reads the rest)."""

    toks: list[Token]
    i: int

    # -- token access ----------------------------------------------------------

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
        if tok.text == "stdin":
            last = stages[-1]
            if not isinstance(last, ast.CommandStage):
                raise self._fail("'stdin' gives a command its input; the stage before it is not a command")
            if last.stdin is not None:
                raise self._fail("this command already has a 'stdin'")
            stages[-1] = dataclasses.replace(last, stdin=self._stdin())
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
        # `from` and `quorum` are words only after `await approval`: elsewhere, arguments
        options = (*_AWAIT_OPTIONS, *_APPROVAL_OPTIONS) if kind.text == "approval" else _AWAIT_OPTIONS
        given: dict[str, ast.Value] = {}
        while self._at(Kind.WORD) or self._at(Kind.STRING):
            tok = self.tok
            option = tok.text if tok.kind is Kind.WORD and tok.text in options else None
            if option in _APPROVAL_OPTIONS:
                self._next()
                if option in given:
                    raise self._fail(f"this await already has a '{option}'", tok)
                value = self.tok
                if value.kind not in (Kind.WORD, Kind.STRING):
                    example = "from team:ops,bob" if option == "from" else "quorum 2"
                    raise self._fail(f"'{option}' needs a value, like `{example}`")
                self._next()
                given[option] = ast.Value(value.parts, value.span)
                end = value.span
                continue
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
        if kind.text == "approval":
            if args:
                raise LangError(
                    "`await approval` takes from/quorum, not arguments: "
                    "await approval [from team:ops,bob] [quorum 2] within 1h",
                    args[0].span,
                )
            none = ast.Value((), kind.span)
            args = [given.get("from", none), given.get("quorum", none)]
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

    def _stdin(self) -> ast.Stdin:
        kw = self._next()
        tok = self.tok
        if tok.kind not in (Kind.WORD, Kind.STRING):
            raise self._fail("'stdin' needs a file to read, like `stdin ./input`, or `-` for dsh's own input")
        self._next()
        self._end_of_args(kw)
        return ast.Stdin(tok.parts, tok.span, kw.span.to(tok.span))

    def _end_of_args(self, keyword: Token) -> None:
        if self.tok.kind in (Kind.WORD, Kind.STRING):
            raise self._fail(f"unexpected {self.tok.describe()} after '{keyword.text}'")


def literal_text(parts: tuple[object, ...]) -> str | None:
    """The text of parts that hold no references, else None."""
    if all(isinstance(p, Lit) for p in parts):
        return "".join(p.text for p in parts if isinstance(p, Lit))
    return None

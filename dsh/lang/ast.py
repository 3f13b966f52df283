"""The syntax tree: frozen nodes, each with the span of the text it came from."""

from __future__ import annotations

from dataclasses import dataclass

from dsh.lang.source import Span
from dsh.lang.tokens import Part, Ref


@dataclass(frozen=True, slots=True)
class Target:
    """`@nodeset`, `@{group}`, `@{failed}`, `@$var`, or a mix in ClusterShell syntax."""

    parts: tuple[Part, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Value:
    """A literal value: a bare word or a quoted string (double quotes expand)."""

    parts: tuple[Part, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Within:
    seconds: float
    span: Span


@dataclass(frozen=True, slots=True)
class Retry:
    count: int
    backoff: float | None
    span: Span


@dataclass(frozen=True, slots=True)
class CommandStage:
    """Raw sh text, with the `$` references found in it."""

    text: str
    parts: tuple[Part, ...]
    span: Span
    shell_params: tuple[Ref, ...] = ()
    within: Within | None = None
    retry: Retry | None = None


@dataclass(frozen=True, slots=True)
class SleepStage:
    seconds: float
    span: Span


@dataclass(frozen=True, slots=True)
class AwaitStage:
    """`await KIND ARGS [as NAME] [within D] [every D]`."""

    kind: str
    kind_span: Span
    args: tuple[Value, ...]
    bind: str | None
    within: Within | None
    every: float | None
    span: Span


@dataclass(frozen=True, slots=True)
class WhereStage:
    """`where OUTCOME` (or `notok`), or `where out|err ~ REGEX`."""

    outcome: str | None
    stream: str | None
    regex: str | None
    span: Span


@dataclass(frozen=True, slots=True)
class GatherStage:
    span: Span


@dataclass(frozen=True, slots=True)
class BatchStage:
    """`batch N[%] [max-fail K]`: governs the whole pipeline, wherever it is written."""

    size: int
    percent: bool
    max_fail: int
    span: Span


Stage = CommandStage | SleepStage | AwaitStage | WhereStage | GatherStage | BatchStage


@dataclass(frozen=True, slots=True)
class Pipeline:
    target: Target | None
    stages: tuple[Stage, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class Binding:
    name: str
    name_span: Span
    value: Value | Target | Pipeline
    span: Span


@dataclass(frozen=True, slots=True)
class Compare:
    """`if $x == VALUE` / `!=`: a comparison on bindings (as text)."""

    left: Value
    op: str
    right: Value
    span: Span


@dataclass(frozen=True, slots=True)
class If:
    cond: Pipeline | Compare
    then: tuple[Statement, ...]
    orelse: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class For:
    """`for NAME in ITEMS { … }`: ITEMS are words, node sets or bindings."""

    name: str
    name_span: Span
    items: tuple[Value | Target, ...]
    body: tuple[Statement, ...]
    span: Span


@dataclass(frozen=True, slots=True)
class FnDef:
    name: str
    params: tuple[str, ...]
    body: tuple[Statement, ...]
    span: Span


Statement = Pipeline | Binding | If | For | FnDef


@dataclass(frozen=True, slots=True)
class Script:
    statements: tuple[Statement, ...]
    span: Span

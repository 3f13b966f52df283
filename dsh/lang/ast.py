"""The syntax tree: frozen nodes, each with the span of the text it came from."""

from __future__ import annotations

from dsh.lang.source import Span
from dsh.lang.tokens import Part, Ref
from dsh.record import record


@record
class Target:
    """`@nodeset`, `@{group}`, `@{failed}`, `@$var`, or a mix in ClusterShell syntax."""

    parts: tuple[Part, ...]
    span: Span


@record
class Value:
    """A literal value: a bare word or a quoted string (double quotes expand)."""

    parts: tuple[Part, ...]
    span: Span


@record
class Within:
    seconds: float
    span: Span


@record
class Stdin:
    """`| stdin FILE` (or `-`): the path as written, a word or a string (`path`, its
    span; `span`, the modifier's)."""

    parts: tuple[Part, ...]
    path: Span
    span: Span


@record
class Retry:
    count: int
    backoff: float | None
    span: Span


@record
class CommandStage:
    """Raw sh text, with the `$` references found in it."""

    text: str
    parts: tuple[Part, ...]
    span: Span
    shell_params: tuple[Ref, ...] = ()
    within: Within | None = None
    retry: Retry | None = None
    stdin: Stdin | None = None


@record
class SleepStage:
    seconds: float
    span: Span


@record
class AwaitStage:
    """`await KIND ARGS [as NAME] [within D] [every D]`."""

    kind: str
    kind_span: Span
    args: tuple[Value, ...]
    bind: str | None
    within: Within | None
    every: float | None
    span: Span


@record
class WhereStage:
    """`where OUTCOME` (or `notok`), or `where out|err ~ REGEX`."""

    outcome: str | None
    stream: str | None
    regex: str | None
    span: Span


@record
class GatherStage:
    span: Span


@record
class BatchStage:
    """`batch N[%] [max-fail K]`: governs the whole pipeline, wherever it is written."""

    size: int
    percent: bool
    max_fail: int
    span: Span


@record
class CopyStage:
    """`put [--sudo [USER]] [--owner U[:G]] [--mode M] PATH TARGET:RPATH` or
    `get TARGET:RPATH PATH`: `local` is PATH, `remote` RPATH; its target is the
    line's (the pipeline's). Only ever the head of a pipeline."""

    direction: str
    local: Value
    remote: Value
    span: Span
    sudo: str | None = None
    owner: str | None = None
    mode: int | None = None
    within: Within | None = None
    retry: Retry | None = None


Stage = CommandStage | CopyStage | SleepStage | AwaitStage | WhereStage | GatherStage | BatchStage


@record
class Pipeline:
    target: Target | None
    stages: tuple[Stage, ...]
    span: Span


@record
class Secret:
    """`secret "PROMPT"`: a value asked when the binding runs, never stored."""

    prompt: Value
    span: Span


@record
class Binding:
    name: str
    name_span: Span
    value: Value | Target | Pipeline | Secret
    span: Span


@record
class Compare:
    """`if $x == VALUE` / `!=`: a comparison on bindings (as text)."""

    left: Value
    op: str
    right: Value
    span: Span


@record
class If:
    cond: Pipeline | Compare
    then: tuple[Statement, ...]
    orelse: tuple[Statement, ...]
    span: Span


@record
class For:
    """`for NAME in ITEMS { … }`: ITEMS are words, node sets or bindings."""

    name: str
    name_span: Span
    items: tuple[Value | Target, ...]
    body: tuple[Statement, ...]
    span: Span


@record
class FnDef:
    name: str
    params: tuple[str, ...]
    body: tuple[Statement, ...]
    span: Span


Statement = Pipeline | Binding | If | For | FnDef


@record
class Script:
    statements: tuple[Statement, ...]
    span: Span

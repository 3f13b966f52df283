"""`dsh explain`: a compiled plan told in words, with its worst case."""

from __future__ import annotations

from dsh import plan as p
from dsh.lang.durations import format_duration as fd


def _text(text: p.Text) -> str:
    """A compiled path as dsh would write it: its names as `$name`, `${name.field}`."""
    return "".join(
        part.text
        if isinstance(part, p.Lit)
        else f"${{{part.name}.{part.field}}}"
        if part.field
        else f"${part.name}"
        for part in text.parts
    )


def _size(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f}".removesuffix(".0") + f" {unit}"
    return f"{size} bytes"


def _copy(stage: p.Copy, hosts: str) -> str:
    """`put ./f to h[1-3]:/tmp/x.$host`, `get h[1-3]:/var/log/x to got/$host/x`, and how."""
    path = _text(stage.remote)
    first = stage.remote.parts[0] if stage.remote.parts else None
    relative = isinstance(first, p.Lit) and not first.text.startswith("/")
    remote = f"{hosts}:{'~/' if relative else ''}{path}"  # a relative RPATH is under the home
    line = (
        f"put {_text(stage.local)} to {remote}"
        if stage.direction == p.PUT
        else f"get {remote} to {_text(stage.local)}"
    )
    if stage.sudo is not None:
        line += f" as {stage.sudo} (through sudo)"
    if stage.owner is not None:
        line += f", owner {stage.owner}"
    if stage.mode is not None:
        line += f", mode {stage.mode:04o}"
    line += f" within {fd(stage.timeout)}"
    if stage.size is not None:
        line += f" (SRC {_size(stage.size)} when compiled)"
    return line


def _stage(index: int, stage: p.Stage, hosts: str = "") -> str:
    if isinstance(stage, p.Sleep):
        return f"  stage {index}  sleep {fd(stage.seconds)}"
    if isinstance(stage, p.Where):
        if stage.regex is not None:
            return f"  stage {index}  where {stage.stream} ~ {stage.regex!r}: the others end here"
        return f"  stage {index}  where {stage.outcome}: only those go on (a failure let through is consumed)"
    if isinstance(stage, p.Gather):
        return f"  stage {index}  gather: every host waits for the others"
    if isinstance(stage, p.Await):
        binds = f", binds {stage.bind}" if stage.bind else ""
        if stage.kind == "approval":
            said = ["".join(part.text for part in a.parts if isinstance(part, p.Lit)) for a in stage.args]
            who, count = (said[0] or "the team's members", said[1]) if len(said) == 2 else ("?", "?")
            return (
                f"  stage {index}  `{stage.written}`: waits for {count} approval(s) from {who} "
                f"(not the requester's), within {fd(stage.timeout)}, looks every {fd(stage.every)}{binds}"
            )
        every = f"looks every {fd(stage.every)}"
        return f"  stage {index}  `{stage.written}`: within {fd(stage.timeout)}, {every}{binds}"
    if isinstance(stage, p.Copy):
        line = f"  stage {index}  {_copy(stage, hosts)}"
    else:
        line = f"  stage {index}  command `{stage.written}`: timeout {fd(stage.timeout)}"
    if stage.retries:
        waits = [stage.backoff * 2**k for k in range(stage.retries)]
        shown = ", ".join(fd(w) for w in waits[:5]) + (", …" if len(waits) > 5 else "")
        line += f", at most {stage.attempts} attempts (retry {stage.retries}, waits {shown})"
    else:
        line += ", 1 attempt"
    if isinstance(stage, p.Command) and stage.stdin is not None:
        given = "dsh's own standard input" if _text(stage.stdin) == p.OWN_STDIN else _text(stage.stdin)
        line += f"; stdin: {given}, read whole when the line starts, the same for every host"
    return line


def _formula(pipe: p.Pipeline, waves: int) -> str:
    terms: list[str] = []
    for stage in pipe.stages:
        if isinstance(stage, p.Where | p.Gather):
            continue
        if isinstance(stage, p.Sleep | p.Await):
            terms.append(fd(stage.worst_seconds()))
            continue
        each = f"({fd(stage.timeout)} + {fd(p.STOP_SECONDS)})"
        terms.append(f"{stage.attempts}*{each}" if stage.attempts > 1 else each[1:-1])
        waits = [stage.backoff * 2**k for k in range(stage.retries)]
        if len(waits) <= 5:
            terms.extend(fd(w) for w in waits)
        else:
            terms.append(f"{fd(sum(waits))} of backoff")
    text = " + ".join(terms) or "0s"
    if waves > 1:
        of = "batches" if pipe.batch else "waves of the fan-out"
        text = f"({text}) * {waves} {of}"
    return text


def _pipeline(pipe: p.Pipeline, bound: p.Bound, fanout: int) -> list[str]:
    lines = []
    if pipe.target is None:
        lines.append("  on       this machine")
    elif pipe.target.size is None:
        lines.append(f"  on       {pipe.target.written}: hosts known at run time, fan-out {fanout}")
    else:
        n = pipe.target.size
        lines.append(f"  on       {pipe.target.written}: {n} host{'s' if n != 1 else ''}, fan-out {fanout}")
    if pipe.batch is not None:
        size = f"{pipe.batch.size}%" if pipe.batch.percent else str(pipe.batch.size)
        lines.append(
            f"  batch    {size} hosts at a time through every stage; the rest skipped once more "
            f"than {pipe.batch.max_fail} are not ok"
        )
    nodes = pipe.target.written.removeprefix("@") if pipe.target is not None else ""
    lines += [_stage(i, s, nodes) for i, s in enumerate(pipe.stages, 1)]
    per_host = pipe.steps_per_host()
    hosts = bound.hosts
    waves = 1 if hosts is None else pipe.waves(hosts, fanout)
    formula = _formula(pipe, waves)
    if bound.steps is None:
        lines.append(
            f"  worst    {per_host} step{'s' if per_host != 1 else ''} per host (hosts known at run "
            f"time), {fd(bound.seconds)} = {formula}"
        )
    else:
        each = f" ({per_host} per host)" if pipe.target is not None else ""
        steps = f"{bound.steps} step{'s' if bound.steps != 1 else ''}"
        lines.append(f"  worst    {steps}{each}, {fd(bound.seconds)} = {formula}")
    return lines


def _flatten(statements: tuple[p.Statement, ...]) -> list[p.Statement]:
    """Every statement, those inside `if` and `for` too."""
    out: list[p.Statement] = []
    for stmt in statements:
        out.append(stmt)
        if isinstance(stmt, p.If):
            cond = [stmt.cond] if isinstance(stmt.cond, p.Run) else []
            out += _flatten((*cond, *stmt.then, *stmt.orelse))
        elif isinstance(stmt, p.For):
            out += _flatten(stmt.body)
    return out


def _stages(plan: p.Plan) -> list[p.Stage]:
    pipes = [
        s.pipeline if isinstance(s, p.Run) else s.value
        for s in _flatten(plan.statements)
        if isinstance(s, p.Run) or (isinstance(s, p.Bind) and isinstance(s.value, p.Pipeline))
    ]
    return [stage for pipe in pipes if isinstance(pipe, p.Pipeline) for stage in pipe.stages]


def _worst(bound: p.Bound) -> str:
    steps = (
        "steps known at run time"
        if bound.steps is None
        else f"{bound.steps} step{'s' if bound.steps != 1 else ''}"
    )
    return f"{steps}, {fd(bound.seconds)}"


def _statement(stmt: p.Statement, fanout: int, indent: str) -> list[str]:
    out = [f"{indent}line {stmt.line}: {stmt.source}"]
    pad = indent + "  "
    if isinstance(stmt, p.If):
        if isinstance(stmt.cond, p.Compare):
            out.append(f"{pad}if       a comparison of texts ({stmt.cond.op})")
        else:
            out.append(
                f"{pad}if       every host of this is ok (a failure is consumed; unreachable fails the line):"
            )
            out += _statement(stmt.cond, fanout, pad + "  ")
        out.append(f"{pad}then")
        for inner in stmt.then:
            out += _statement(inner, fanout, pad + "  ")
        if stmt.orelse:
            out.append(f"{pad}else")
            for inner in stmt.orelse:
                out += _statement(inner, fanout, pad + "  ")
        out.append(f"{pad}worst    {_worst(stmt.bound)} (the longer branch)")
        return out
    if isinstance(stmt, p.For):
        count = (
            "items known at run time (checked against the budget when it starts)"
            if stmt.count is None
            else f"{stmt.count} items"
        )
        out.append(f"{pad}for      {stmt.name} in {count}, one after another:")
        for inner in stmt.body:
            out += _statement(inner, fanout, pad + "  ")
        each = "" if stmt.count is not None else " per item"
        out.append(f"{pad}worst    {_worst(stmt.bound)}{each}")
        return out
    if isinstance(stmt, p.Run):
        out += [pad[2:] + line for line in _pipeline(stmt.pipeline, stmt.bound, fanout)]
    elif isinstance(stmt.value, p.Pipeline):
        out.append(f"{pad}binds    {stmt.name}: the result of the stage (out, err, rc, outcome, hosts)")
        out += [pad[2:] + line for line in _pipeline(stmt.value, stmt.bound, fanout)]
    elif isinstance(stmt.value, p.HostSet):
        size = stmt.value.size
        count = "hosts known at run time" if size is None else f"{size} host{'s' if size != 1 else ''}"
        out.append(f"{pad}binds    {stmt.name}: the node set {stmt.value.written} ({count})")
    else:
        out.append(f"{pad}binds    {stmt.name}: a value")
    if stmt.unbound:
        where = (
            "kept as written in the value"
            if isinstance(stmt, p.Bind) and isinstance(stmt.value, p.Text)
            else "left to the shell that runs the command"
        )
        out.append(f"{pad}unbound  {' '.join(stmt.unbound)} ({where})")
    return out


def explain(plan: p.Plan) -> str:
    out: list[str] = []
    for stmt in plan.statements:
        out += _statement(stmt, plan.fanout, "")
    if any(isinstance(s, p.Command) for s in _stages(plan)):
        out.append(
            f"note: an attempt's timeout counts from its start (connecting included); a command "
            f"that outlives it is stopped within {fd(p.STOP_SECONDS)} (TERM, KILL after "
            f"{fd(p.KILL_GRACE)}, confirmed), counted above"
        )
    if any(isinstance(s, p.Copy) for s in _stages(plan)):
        out.append(
            f"note: a copy's timeout counts as a command's (its stop too); without `| within` it is "
            f"the default timeout plus 1s per {_size(p.COPY_RATE)} of a put's SRC as it was when "
            "compiled (a get's size is not known then: give a large one a `| within`)"
        )
    total = plan.bound
    steps = "known at run time" if total.steps is None else str(total.steps)
    out.append(
        f"total: {len(plan.statements)} statement{'s' if len(plan.statements) != 1 else ''}, "
        f"steps {steps} (budget {plan.step_budget} per line), worst case {fd(total.seconds)}"
    )
    return "\n".join(out)

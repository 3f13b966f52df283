"""The compiler: a syntax tree to a bounded plan, or a positioned refusal.

It decides which `$` names dsh expands (the ones it binds) and how each value
is quoted, checks every target, fills in default timeouts, and computes the
worst case of every statement: steps and duration. A line over the step
budget, or with a wait over the configured cap, is refused where it is written.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from dsh import nodeset
from dsh import plan as p
from dsh.errors import LangError
from dsh.inventory.base import CONFIG, FILE, GroupLookup, InventoryError
from dsh.lang import ast
from dsh.lang.copies import path_parts
from dsh.lang.durations import format_duration
from dsh.lang.parser import MAX_BLOCK_DEPTH, parse
from dsh.lang.source import Source, Span
from dsh.lang.stages import literal_text
from dsh.lang.tokens import Lit, Part, Ref
from dsh.names import SIGNAL_NAME, digits, key_problem
from dsh.plan import HOSTS, RESULT, VALUE
from dsh.record import record


@record
class Limits:
    """Defaults and caps from the configuration; every one has a documented default."""

    default_timeout: float = 600.0
    default_backoff: float = 1.0
    max_wait: float = 7 * 86400.0
    max_line: float = 30 * 86400.0
    step_budget: int = 10_000
    fanout: int = 256
    max_retries: int = 100
    #: The most bytes one binding may hold (a value, or every host's output of a
    #: result): more is refused at bind time, never cut. At most MAX_BINDING.
    max_binding: int = p.MAX_BINDING
    #: The most bytes a command's input (`| stdin`) may hold: it is read whole.
    max_stdin: int = 64 << 20


def _no_size(path: str) -> int | None:
    return None


@dataclass(frozen=True, slots=True)
class Context:
    """What a compile may assume about the world: limits, groups, earlier bindings
    (and which of them hold secrets), and the size of a local file or tree, which
    the caller looks up for it (`sizes`: the compiler does no I/O; None when not
    known)."""

    limits: Limits = field(default_factory=Limits)
    groups: Mapping[str, str] = field(default_factory=dict)  # the config's [groups]: name -> node set
    #: Every other inventory's groups (--inventory, ClusterShell's, host files); None:
    #: there is none (dsh.inventory.base.TrustingLookup takes every group on trust).
    inventory: GroupLookup | None = None
    bindings: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] | None = None
    functions: Mapping[str, ast.FnDef] = field(default_factory=dict)
    sizes: Callable[[str], int | None] = _no_size
    secrets: frozenset[str] = frozenset()
    #: Whether the lines run where dsh's own standard input can be read (`stdin -`):
    #: not in an executor of its own (the prompt, attach, run --detach), nor where
    #: the lines themselves come from it.
    own_stdin: bool = True


#: A group's name in `@{NAME}` / `@{SOURCE:NAME}` (ClusterShell's and Ansible's names).
_GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
#: How often an await looks, unless it says (`every D`): the store is cheap to ask.
_EVERY = {"key": 0.25, "signal": 0.25, "callback": 0.25, "approval": 1.0}
#: `NAME = callback` only writes the callback into the store: this bounds it.
_NEW_CALLBACK_TIMEOUT = 30.0
#: How deeply calls may nest (a function calling one that calls another…): each
#: level costs the compiler frames of Python's stack, as a block does.
MAX_CALL_DEPTH = 64


class _Compiler:
    def __init__(self, source: Source, ctx: Context) -> None:
        self.source = source
        self.ctx = ctx
        self.limits = ctx.limits
        self.bindings: dict[str, str] = dict(ctx.bindings)
        self.unbound: list[str] = []
        #: Functions known: those of earlier lines (ctx.functions, which a successful
        #: compile extends) and this text's.
        self.functions: dict[str, ast.FnDef] = dict(ctx.functions)
        #: Inside a function's body: its parameters' names as bound.
        self.renames: dict[str, str] = {}
        #: Blocks open around the statement compiled (those of the functions called
        #: too: the plan nests them all), and calls expanded around it.
        self.depth = 0
        self.calls = 0
        #: The values of bindings known now (literal text, the script's arguments),
        #: which a target `@$name` is checked against at compile time; and the
        #: names bound in the block compiled (see _scope).
        self.known: dict[str, str] = {}
        self.assigned: set[str] = set()
        #: The names that may hold a secret here (bound from one, or from a value made
        #: of one): a copy's path cannot use them.
        self.secrets: set[str] = set(ctx.secrets)

    def script(self, tree: ast.Script) -> p.Plan:
        defined = [s for s in tree.statements if isinstance(s, ast.FnDef)]
        for fn in defined:
            self.functions[fn.name] = fn
        _check_calls(self.functions, defined)
        statements = self.block(tree.statements, top=True)
        steps, seconds = _sequence(statements)
        return p.Plan(
            self.source.name,
            statements,
            p.Bound(None, steps, seconds),
            self.limits.step_budget,
            self.limits.fanout,
            p.version_of(statements),
        )

    # -- statements --------------------------------------------------------------

    def block(self, nodes: tuple[ast.Statement, ...], *, top: bool = False) -> tuple[p.Statement, ...]:
        """Statements compiled in order; a function call becomes its body."""
        out: list[p.Statement] = []
        for node in nodes:
            if isinstance(node, ast.FnDef):
                if not top:
                    raise LangError("functions are defined at the top level, not in a block", node.span)
                continue
            called = self._called(node)
            if called is not None:
                out += self.call(called, node)
            else:
                out.append(self.statement(node))
            if len(out) > self.limits.step_budget:
                raise LangError(
                    f"this expands to more than {self.limits.step_budget} statements "
                    "(config: limits.step_budget)",
                    node.span,
                )
        return tuple(out)

    def statement(self, node: ast.Statement) -> p.Statement:
        self.unbound = []
        line = node.span.line
        text = node.span.text
        if isinstance(node, ast.If):
            return self.if_(node)
        if isinstance(node, ast.For):
            return self.for_(node)
        assert not isinstance(node, ast.FnDef)
        if isinstance(node, ast.Pipeline):
            pipe, bound = self.pipeline(node)
            return p.Run(line, text, pipe, bound, tuple(dict.fromkeys(self.unbound)))
        value: p.Text | p.HostSet | p.Pipeline | p.Secret
        if isinstance(node.value, ast.Secret):
            value = p.Secret(self.text(node.value.prompt.parts, quoting="raw", host_flow=False))
            bound = p.Bound(None, 0, 0.0)
            kind = VALUE
        elif isinstance(node.value, ast.Value):
            value = self.text(node.value.parts, quoting="raw", host_flow=False)
            bound = p.Bound(None, 0, 0.0)
            kind = VALUE
        elif isinstance(node.value, ast.Target):
            value = self.target(node.value)
            bound = p.Bound(value.size, 0, 0.0)
            kind = HOSTS
        else:
            value, bound = self.pipeline(node.value)
            kind = RESULT
        name = self.renames.get(node.name, node.name)
        self._bind(
            name, kind, value if isinstance(value, p.Text) else None, secret=isinstance(value, p.Secret)
        )
        return p.Bind(line, text, name, value, bound, tuple(dict.fromkeys(self.unbound)))

    def if_(self, node: ast.If) -> p.If:
        cond: p.Run | p.Compare
        if isinstance(node.cond, ast.Compare):
            for side in (node.cond.left, node.cond.right):
                ref = side.parts[0] if isinstance(side.parts[0], Ref) else None
                if ref is not None and not self._bound(self.renames.get(ref.name, ref.name), False):
                    raise LangError(f"{ref.raw} is not bound here, so it cannot be compared", node.cond.span)
            left = self.text(node.cond.left.parts, quoting="raw", host_flow=False)
            right = self.text(node.cond.right.parts, quoting="raw", host_flow=False)
            cond = p.Compare(left, node.cond.op, right)
            cond_steps: int | None = 0
            cond_seconds = 0.0
        else:
            called = self._called(node.cond)
            if called is not None:
                raise LangError(
                    f"{called.name} is a function: an if condition is one stage; run "
                    f"`command {called.name}` for the shell's, or test what the function leaves",
                    node.cond.span,
                )
            run = self.statement(node.cond)
            assert isinstance(run, p.Run)
            cond, cond_steps, cond_seconds = run, run.bound.steps, run.bound.seconds
        with self._nested(node.span):
            with self._scope(fresh=False):  # one branch runs, or none: neither's values hold after
                then = self.block(node.then)
            with self._scope(fresh=False):
                orelse = self.block(node.orelse)
        then_steps, then_seconds = _sequence(then)
        else_steps, else_seconds = _sequence(orelse)
        parts = (cond_steps, then_steps, else_steps)
        steps = None if None in parts else (cond_steps or 0) + max(then_steps or 0, else_steps or 0)
        bound = p.Bound(None, steps, cond_seconds + max(then_seconds, else_seconds))
        self._check_bound(bound, node.span, "this if")
        return p.If(node.span.line, _head(node.span.text), cond, then, orelse, bound)

    def for_(self, node: ast.For) -> p.For:
        items: list[p.Text | p.HostSet] = []
        count: int | None = 0
        for item in node.items:
            if isinstance(item, ast.Target):
                hosts = self.target(item)
                items.append(hosts)
                count = None if count is None or hosts.size is None else count + hosts.size
            else:
                text = self.text(item.parts, quoting="raw", host_flow=False)
                items.append(text)
                literal = all(isinstance(part, p.Lit) for part in text.parts)
                count = None if count is None or not literal else count + 1
        name = self.renames.get(node.name, node.name)
        self._bind(name, VALUE, None)
        with self._nested(node.span), self._scope(fresh=True):  # a body may run again, or not at all
            body = self.block(node.body)
        body_steps, body_seconds = _sequence(body)
        per = body_steps if body_steps is not None else None
        steps = None if count is None or per is None else count * per
        seconds = body_seconds * (count if count is not None else 1)
        if count is not None and steps is not None and steps > self.limits.step_budget:
            raise LangError(
                f"this for goes through {count} items, so it may take {steps} steps, over the "
                f"step budget of {self.limits.step_budget} (config: limits.step_budget)",
                node.span,
            )
        bound = p.Bound(None, steps, seconds)
        self._check_bound(bound, node.span, "this for")
        return p.For(node.span.line, _head(node.span.text), name, tuple(items), body, bound, count)

    def _bind(self, name: str, kind: str, value: p.Text | None, *, secret: bool = False) -> None:
        """`name` is bound here: its kind, and its text when known now (a value of
        literal text and the script's arguments); whether it may hold a secret."""
        self.bindings[name] = kind
        self.assigned.add(name)
        if secret or (
            value is not None and any(isinstance(v, p.Var) and v.name in self.secrets for v in value.parts)
        ):
            self.secrets.add(name)
        else:
            self.secrets.discard(name)
        text = _known_text(value, self.ctx.args) if value is not None else None
        if text is None:
            self.known.pop(name, None)
        else:
            self.known[name] = text

    @contextlib.contextmanager
    def _scope(self, *, fresh: bool) -> Iterator[None]:
        """A block that may not run (a branch), or run again (a loop's body, which
        starts `fresh`, knowing no value): after it, a value bound inside is no
        longer known, nor the old value of a name it binds."""
        before, outer, secrets = self.known, self.assigned, set(self.secrets)
        self.known, self.assigned = ({} if fresh else dict(before)), set()
        try:
            yield
        finally:
            inner = self.assigned
            self.known = {k: v for k, v in before.items() if k not in inner}
            self.assigned = outer | inner
            self.secrets |= secrets  # a secret before, or made in the block: maybe one after

    @contextlib.contextmanager
    def _nested(self, span: Span) -> Iterator[None]:
        """Compile the blocks of a compound statement one level deeper. The parser
        bounds how deeply a text nests its blocks; this bounds it with the blocks of
        the functions called, which the plan holds as one tree."""
        if self.depth >= MAX_BLOCK_DEPTH:
            raise LangError(
                f"blocks nested too deeply (limit {MAX_BLOCK_DEPTH}, counting those of the functions called)",
                span,
            )
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def _check_bound(self, bound: p.Bound, span: Span, what: str) -> None:
        if bound.steps is not None and bound.steps > self.limits.step_budget:
            raise LangError(
                f"{what} may take {bound.steps} steps, over the step budget of "
                f"{self.limits.step_budget} (config: limits.step_budget)",
                span,
            )
        if bound.seconds > self.limits.max_line:
            raise LangError(
                f"{what} may last {format_duration(bound.seconds)}, over the cap of "
                f"{format_duration(self.limits.max_line)} (config: limits.max_line)",
                span,
            )

    # -- functions -----------------------------------------------------------------

    def _called(self, node: ast.Statement) -> ast.FnDef | None:
        """The function a statement calls: a line with no target whose one command
        starts with a function's name (`command NAME` runs the command instead)."""
        if not isinstance(node, ast.Pipeline) or node.target is not None or len(node.stages) != 1:
            return None
        stage = node.stages[0]
        if not isinstance(stage, ast.CommandStage) or stage.within or stage.retry or stage.stdin:
            return None
        first = stage.text.split(None, 1)[0] if stage.text.strip() else ""
        return self.functions.get(first)

    def call(self, fn: ast.FnDef, node: ast.Statement) -> list[p.Statement]:
        """A call, expanded: its arguments bound to the function's parameters (named
        `FN-PARAM`, so they cannot meet the caller's names), then its body."""
        assert isinstance(node, ast.Pipeline)
        stage = node.stages[0]
        assert isinstance(stage, ast.CommandStage)
        words = _words(stage.parts)[1:]
        if len(words) != len(fn.params):
            taken = ", ".join(fn.params) or "none"
            raise LangError(
                f"{fn.name} takes {len(fn.params)} argument{'s' if len(fn.params) != 1 else ''} "
                f"({taken}); this call gives {len(words)}",
                node.span,
            )
        out: list[p.Statement] = []
        renames = {param: f"{fn.name}-{param}" for param in fn.params}
        for param, word in zip(fn.params, words, strict=True):
            self.unbound = []
            value = self.text(word, quoting="raw", host_flow=False)
            self._bind(renames[param], VALUE, value)
            out.append(p.Bind(node.span.line, node.span.text, renames[param], value, p.Bound(None, 0, 0.0)))
        if self.calls >= MAX_CALL_DEPTH:
            raise LangError(f"calls nested too deeply (limit {MAX_CALL_DEPTH})", node.span)
        saved, self.renames = self.renames, renames
        self.calls += 1
        try:
            out += self.block(fn.body)
        finally:
            self.renames = saved
            self.calls -= 1
        return out

    def pipeline(self, node: ast.Pipeline) -> tuple[p.Pipeline, p.Bound]:
        target = self.target(node.target) if node.target else None
        batches = [s for s in node.stages if isinstance(s, ast.BatchStage)]
        if len(batches) > 1:
            raise LangError("a line rolls in one way: it has a 'batch' already", batches[1].span)
        if batches and target is None:
            raise LangError("'batch' rolls the hosts of a target; this line has none", batches[0].span)
        batch = p.Batch(batches[0].size, batches[0].percent, batches[0].max_fail) if batches else None
        stages = tuple(
            self.copy(s, target)
            if isinstance(s, ast.CopyStage) and target
            else self.stage(s, target is not None)
            for s in node.stages
            if not isinstance(s, ast.BatchStage)
        )
        if not stages or all(isinstance(s, p.Where | p.Gather) for s in stages):
            raise LangError("this line has nothing to run", node.span)
        pipe = p.Pipeline(target, stages, batch)
        hosts = 1 if target is None else target.size
        per_host = pipe.steps_per_host()
        steps = None if hosts is None else hosts * per_host
        waves = 1 if hosts is None else pipe.waves(hosts, self.limits.fanout)
        seconds = pipe.seconds_per_host() * waves
        if steps is not None and steps > self.limits.step_budget:
            raise LangError(
                f"this line may take {steps} steps, over the step budget of "
                f"{self.limits.step_budget} (config: limits.step_budget)",
                node.span,
            )
        if seconds > self.limits.max_line:
            raise LangError(
                f"this line may last {format_duration(seconds)}, over the cap of "
                f"{format_duration(self.limits.max_line)} (config: limits.max_line)",
                node.span,
            )
        return pipe, p.Bound(hosts, steps, seconds)

    def stage(self, node: ast.Stage, host_flow: bool) -> p.Stage:
        if isinstance(node, ast.SleepStage):
            self._cap(node.seconds, node.span)
            return p.Sleep(node.seconds)
        if isinstance(node, ast.AwaitStage):
            return self.await_(node, host_flow)
        if isinstance(node, ast.WhereStage):
            if node.regex is not None:
                try:
                    re.compile(node.regex)
                except re.error as exc:
                    raise LangError(f"bad regular expression: {exc}", node.span) from None
            return p.Where(node.outcome, node.stream, node.regex)
        if isinstance(node, ast.GatherStage):
            return p.Gather()
        assert not isinstance(node, ast.BatchStage | ast.CopyStage)  # taken out by pipeline()
        timeout, retries, backoff = self._attempts(node)
        for param in node.shell_params:
            if self._bound(param.name, host_flow):
                raise LangError(
                    f"{param.raw}…}} would read the shell's {param.name!r}, not the one dsh binds; "
                    f"dsh expands only ${param.name}, ${{{param.name}}} and ${{{param.name}.field}}",
                    param.span,
                )
        text = self.text(node.parts, quoting="shell", host_flow=host_flow)
        stdin = self._stdin(node.stdin) if node.stdin is not None else None
        return p.Command(text, node.text, timeout, retries, backoff, stdin)

    def _stdin(self, node: ast.Stdin) -> p.Text:
        """`| stdin PATH`: a path on this machine, the same for every host (no `$host`),
        or `-`; bindings expand, never a secret (the path is journaled)."""
        if node.parts == (Lit(p.OWN_STDIN),) and node.path.text == p.OWN_STDIN:
            if not self.ctx.own_stdin:
                raise LangError(
                    "`stdin -` reads dsh's own standard input, which these lines have not (they run "
                    "in a session's executor, or come from that input themselves): give a file",
                    node.span,
                )
            return p.Text((p.Lit(p.OWN_STDIN),))
        parts = path_parts(ast.Value(node.parts, node.path), remote=False, what="stdin's path")
        for part in parts:
            if not isinstance(part, Ref):
                continue
            name = self.renames.get(part.name, part.name)
            if name == "host" and "host" not in self.bindings:
                raise LangError(
                    "stdin gives every host the same input: its path cannot hold $host", part.span
                )
            if name in self.secrets:
                why = "stdin's path cannot use it (a path is journaled)"
                raise LangError(f"{part.raw} is a secret: {why}", part.span)
            if not self._bound(name, False):
                raise LangError(
                    f"{part.raw} is not bound by dsh: stdin's path is not read by a shell "
                    "(use a binding, or a path relative to the working directory)",
                    part.span,
                )
        if parts == (Lit(p.OWN_STDIN),):  # a quoted '-': the file of that name
            parts = (Lit(f"./{p.OWN_STDIN}"),)
        return self.text(parts, quoting="raw", host_flow=False)

    def _attempts(self, node: ast.CommandStage | ast.CopyStage) -> tuple[float, int, float]:
        """An action's timeout (its `within`, else the default), retries and backoff."""
        timeout = self.limits.default_timeout
        if node.within is not None:
            timeout = node.within.seconds
            self._cap(timeout, node.within.span)
        retries, backoff = 0, self.limits.default_backoff
        if node.retry is not None:
            retries = node.retry.count
            if retries > self.limits.max_retries:
                raise LangError(
                    f"retry {retries} is over the cap of {self.limits.max_retries} "
                    "(config: limits.max_retries)",
                    node.retry.span,
                )
            if node.retry.backoff is not None:
                backoff = node.retry.backoff
                self._cap(backoff, node.retry.span)
        return timeout, retries, backoff

    def copy(self, node: ast.CopyStage, target: p.HostSet) -> p.Copy:
        """A copy: its paths checked; its default timeout grows with the size of a
        put's SRC, as it is now (`ctx.sizes`) when its path is known now."""
        timeout, retries, backoff = self._attempts(node)
        local = self._copy_path(node.local, remote=False)
        remote = self._copy_path(node.remote, remote=True)
        per_host = "host" not in self.bindings and any(
            isinstance(part, p.Var) and part.name == "host" for part in local.parts
        )
        if node.direction == p.GET and target.size != 1 and not per_host:
            hosts = "may be more than one host" if target.size is None else f"is {target.size} hosts"
            raise LangError(
                f"{target.written} {hosts}, and each would write this one local path: "
                "put $host in it, as in got/$host/f",
                node.local.span,
            )
        size = None
        if node.direction == p.PUT:
            path = _known_text(local, self.ctx.args)
            found = self.ctx.sizes(path) if path is not None else None
            size = found if found is not None and found >= 0 else None
        if node.within is None and size is not None:
            timeout = float(self.limits.default_timeout + size // p.COPY_RATE)
            self._cap(timeout, node.span)
        return p.Copy(
            node.direction,
            local,
            remote,
            node.span.text,
            timeout,
            retries,
            backoff,
            size,
            node.sudo,
            node.owner,
            node.mode,
        )

    def _copy_path(self, node: ast.Value, *, remote: bool) -> p.Text:
        """A copy's path as a dsh value: only the names dsh binds (`$host` too), never
        a secret (a path is journaled, and SFTP takes no environment)."""
        parts = path_parts(node, remote=remote, what="a copy's path")
        for part in parts:
            if not isinstance(part, Ref):
                continue
            name = self.renames.get(part.name, part.name)
            if name in self.secrets:
                raise LangError(
                    f"{part.raw} is a secret: a copy's path cannot use it (a path is journaled, "
                    "and a copy takes no environment)",
                    part.span,
                )
            if not self._bound(name, True):
                where = "relative to the home directory" if remote else "relative to the working directory"
                raise LangError(
                    f"{part.raw} is not bound by dsh: a copy's path is not read by a shell "
                    f"(use a binding, or a path {where})",
                    part.span,
                )
        return self.text(parts, quoting="raw", host_flow=True)

    def await_(self, node: ast.AwaitStage, host_flow: bool) -> p.Await:
        if node.kind == p.NEW_CALLBACK:
            return p.Await(node.kind, (), node.span.text, _NEW_CALLBACK_TIMEOUT, 1.0)
        timeout = self.limits.default_timeout
        if node.within is not None:
            timeout = node.within.seconds
            self._cap(timeout, node.within.span)
        every = node.every if node.every is not None else _EVERY.get(node.kind, 1.0)
        every = min(every, timeout)
        args = self._await_args(node, host_flow)
        if node.bind is not None:
            if node.kind in ("port", "file"):
                raise LangError(f"`await {node.kind}` brings no value to bind with 'as'", node.span)
            if host_flow and node.kind in ("http", "cmd", "callback"):
                raise LangError(
                    f"in a host flow each host would bind its own `await {node.kind}` value; "
                    "await it in a line of its own to bind it",
                    node.span,
                )
            self._bind(node.bind, VALUE, None)
        return p.Await(node.kind, args, node.span.text, timeout, every, node.bind)

    def _approval_args(self, node: ast.AwaitStage, host_flow: bool) -> tuple[p.Text, ...]:
        """`await approval [from PRINCIPALS] [quorum N] within D`: who may approve (people
        and `team:NAME`s, a comma list) and how many must; both written out, no `$`."""
        principals, quorum = node.args
        if host_flow:
            raise LangError(
                "`await approval` waits for people once: await it in a line of its own", node.span
            )
        if node.within is None:
            raise LangError(
                "`await approval` needs its bound: within D (how long people may take)", node.span
            )
        who = literal_text(principals.parts) if principals.parts else ""
        if who is None:
            raise LangError("approvers are written out, not taken from a binding", principals.span)
        for name in filter(None, who.split(",")) if who else ():
            if name.startswith("@"):
                raise LangError(
                    f"approvers are people, not hosts: write {name[1:]}, not {name}", principals.span
                )
            bare = name.removeprefix("team:")
            if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", bare):
                raise LangError(f"{name!r} is not a person's name or team:NAME", principals.span)
        if who and not all(who.split(",")):
            raise LangError(
                "a comma list of approvers has no empty names: from team:ops,bob", principals.span
            )
        count = literal_text(quorum.parts) if quorum.parts else "1"
        if count is None or not digits(count) or not 1 <= int(count) <= 100:
            raise LangError("'quorum' takes a number from 1 to 100, like `quorum 2`", quorum.span)
        return (p.Text((p.Lit(who),)), p.Text((p.Lit(str(int(count))),)))

    def _await_args(self, node: ast.AwaitStage, host_flow: bool) -> tuple[p.Text, ...]:
        """Check what an await waits for; its texts (a cmd's refs are quoted for sh)."""
        kind, args = node.kind, node.args
        literal = [literal_text(a.parts) for a in args]
        where = node.args[0].span if node.args else node.kind_span

        def need(count: str, form: str) -> LangError:
            return LangError(f"`await {kind}` takes {count}: await {kind} {form}", where)

        if kind == "cmd":
            if not args:
                raise need("a command", "'test -f /run/app.ready'")
            joined = [self.text(a.parts, quoting="raw", host_flow=host_flow) for a in args]
            parts: list[p.Lit | p.Var] = []
            for i, text in enumerate(joined):
                if i:
                    parts.append(p.Lit(" "))
                parts += [p.Var(v.name, v.field, "shell") if isinstance(v, p.Var) else v for v in text.parts]
            return (p.Text(tuple(parts)),)
        if kind == "http":
            status = literal[1:] if len(args) == 3 else []
            if len(args) not in (1, 3) or (status and status[0] != "status"):
                raise need("a URL and maybe a status", "https://web1/health [status 200]")
            if status and not digits(status[1] or ""):
                raise LangError("'status' needs a number, like `status 200`", args[2].span)
            url = literal[0]
            if url is not None and not url.startswith(("http://", "https://")):
                raise LangError(f"{url!r} is not an http:// or https:// URL", args[0].span)
            texts = [self.text(args[0].parts, quoting="raw", host_flow=host_flow)]
            if status:
                texts.append(p.Text((p.Lit(str(status[1])),)))
            return tuple(texts)
        if kind == "approval":
            return self._approval_args(node, host_flow)
        if kind == "callback":
            if len(args) > 1:
                raise need("a callback made before, or nothing", "$cb (after `cb = callback`)")
            return tuple(self.text(a.parts, quoting="raw", host_flow=host_flow) for a in args)
        if kind == "key":
            if len(args) not in (1, 3) or (len(args) == 3 and literal[1] != "="):
                raise need("a key and maybe a value", "/deploy/go [= yes]")
            problem = key_problem(literal[0]) if literal[0] is not None else None
            if problem:  # the rule of `dsh key put`: a key it refuses could never be set
                raise LangError(problem, args[0].span)
            return tuple(self.text(a.parts, quoting="raw", host_flow=host_flow) for a in (args[0], *args[2:]))
        if len(args) != 1:
            forms = {"port": "[HOST:]PORT", "file": "PATH", "signal": "NAME"}
            raise need("one argument", forms[kind])
        if kind == "signal" and (literal[0] is None or not SIGNAL_NAME.fullmatch(literal[0])):
            raise LangError("a signal's name is a plain word, like `approve`", args[0].span)
        if kind == "port" and literal[0] is not None:
            host, _, port = literal[0].rpartition(":")
            if not digits(port) or not 0 < int(port) < 65536 or (":" in literal[0] and not host):
                raise LangError(f"{literal[0]!r} is not a port, nor HOST:PORT", args[0].span)
        return (self.text(args[0].parts, quoting="raw", host_flow=host_flow),)

    def _bound(self, name: str, host_flow: bool) -> bool:
        if name == "@" or digits(name):
            return self.ctx.args is not None and name != "0"
        return name in self.bindings or (name == "host" and host_flow)

    def _cap(self, seconds: float, span: Span) -> None:
        if seconds > self.limits.max_wait:
            raise LangError(
                f"{format_duration(seconds)} is over the cap on any single wait, "
                f"{format_duration(self.limits.max_wait)} (config: limits.max_wait)",
                span,
            )

    # -- targets ---------------------------------------------------------------------

    def target(self, node: ast.Target) -> p.HostSet:
        pattern: list[str] = []
        stub: dict[str, dict[str, str]] = {}
        refs: list[p.GroupRef] = []
        for part in node.parts:
            if isinstance(part, Lit):
                problem = nodeset.check_literal(part.text)
                if problem:
                    raise LangError(f"bad node set: {problem}", node.span)
                pattern.append(part.text)
                continue
            if part.raw.startswith("{"):
                got = self._group(part)
                if isinstance(got, p.GroupRef):  # an inventory's: `@grp:gN`, resolved at line start
                    found = self._found(got, part.span)
                    name = f"g{len(refs)}"
                    refs.append(got)
                    pattern.append(f"@{nodeset.GROUPS}:{name}")
                    stub.setdefault(nodeset.GROUPS, {})[name] = found if found is not None else "stub"
                    continue
                source, name = got
                pattern.append(f"@{source}:{name}")
                members = self.ctx.groups[name] if source == nodeset.INVENTORY else "stub"
                stub.setdefault(source, {})[name] = members
                continue
            source = self._target_ref(part)
            name = self.renames.get(part.name, part.name) if source == nodeset.VARIABLES else part.name
            if source == nodeset.VARIABLES and name in self.known:  # else checked at run time
                problem = nodeset.members_problem(nodeset.label(name), self.known[name])
                if problem:
                    raise LangError(problem, part.span)
            pattern.append(f"@{source}:{name}")
            # Inventory groups are known now; result sets and bindings at run time.
            members = self.ctx.groups[part.name] if source == nodeset.INVENTORY else "stub"
            stub.setdefault(source, {})[name] = members
        text = "".join(pattern)
        try:
            hosts = nodeset.expand(text, stub, limit=self.limits.step_budget)
        except nodeset.HostSetTooLarge as exc:
            holds = f"{exc.size}" if exc.exact else f"up to {exc.size}"
            raise LangError(
                f"this node set holds {holds} hosts, over the step budget of {exc.limit} "
                "(config: limits.step_budget)",
                node.span,
            ) from exc
        except nodeset.HostSetError as exc:
            raise LangError(f"bad node set: {exc}", node.span) from exc
        unknown = {s for s, members in stub.items() for m in members.values() if m == "stub"}
        size = None if unknown else len(hosts)
        if size == 0:
            raise LangError("this node set is empty", node.span)
        return p.HostSet(node.span.text, text, size, tuple(refs))

    def _group(self, ref: Ref) -> tuple[str, str] | p.GroupRef:
        """`@{NAME}` or `@{SOURCE:NAME}`: a result set (`res`, NAME), a group of the
        config's [groups] (`inv`, NAME: known now), or another inventory's group."""
        source, colon, name = ref.name.partition(":")
        if not colon:
            source, name = "", ref.name
        if source != FILE and not _GROUP_NAME.fullmatch(name):
            raise LangError(
                f"{name!r} cannot name a group: a group's name is letters, digits, '_', '.', '+' and '-'"
                + ("" if colon else " (@{SOURCE:NAME} names one of a source, @{file:PATH} a host file)"),
                ref.span,
            )
        if not source:
            if name in p.RESULT_SETS:
                return nodeset.RESULTS, name
            if name in self.ctx.groups:
                return nodeset.INVENTORY, name
            return p.GroupRef(None, name)
        if source == CONFIG:
            if name not in self.ctx.groups:
                known = ", ".join(sorted(self.ctx.groups)) or "none configured"
                said = f"the config's [groups] has no group {name!r} (its groups: {known})"
                raise LangError(said, ref.span)
            return nodeset.INVENTORY, name
        return p.GroupRef(source, name)

    def _found(self, ref: p.GroupRef, span: Span) -> str | None:
        """An inventory's group as the lookup finds it now: its hosts when known, None
        when they are known only when the line starts; LangError when it has none."""
        lookup = self.ctx.inventory
        try:
            found = lookup.find(ref.source, ref.name) if lookup is not None else None
        except InventoryError as exc:
            raise LangError(str(exc), span) from None
        if found is None:
            known = ", ".join(sorted(self.ctx.groups)) or "none"
            where = (
                f"no group {ref.name!r} in the config's [groups] ({known}), --inventory, nor "
                "ClusterShell's default group source"
                if ref.source is None
                else f"group source {ref.source!r} has no group {ref.name!r}"
            )
            raise LangError(f"unknown group {ref}: {where}; result sets: {', '.join(p.RESULT_SETS)}", span)
        return found.members

    def _target_ref(self, ref: Ref) -> str:
        kind = self.bindings.get(self.renames.get(ref.name, ref.name))
        if kind is None or ref.field is not None:
            raise LangError(f"{ref.raw} is not a binding that holds hosts", ref.span)
        if kind == RESULT:
            raise LangError(
                f"{ref.raw} holds the result of a stage; use ${{{ref.name}.hosts}} in a "
                "command, or bind a node set with `name = @hosts`",
                ref.span,
            )
        return nodeset.VARIABLES

    # -- text and `$` --------------------------------------------------------------

    def text(self, parts: tuple[Part, ...], quoting: str, host_flow: bool) -> p.Text:
        out: list[p.Lit | p.Var] = []
        for part in parts:
            item: p.Lit | p.Var
            if isinstance(part, Lit):
                item = p.Lit(part.text)
            else:
                mode = part.context if quoting == "shell" else quoting
                item = self._ref(part, mode, host_flow)
            if isinstance(item, p.Lit) and out and isinstance(out[-1], p.Lit):
                out[-1] = p.Lit(out[-1].text + item.text)
            else:
                out.append(item)
        return p.Text(tuple(out))

    def _ref(self, ref: Ref, quoting: str, host_flow: bool) -> p.Lit | p.Var:
        name = self.renames.get(ref.name, ref.name)
        if quoting == "backquote":
            if self._bound(name, host_flow):
                raise LangError(
                    f"dsh cannot insert {ref.raw} safely inside backquotes; write $(…) instead",
                    ref.span,
                )
            self.unbound.append(ref.raw)
            return p.Lit(ref.raw)
        if name == "@" or digits(name):
            if self.ctx.args is None or name == "0":
                self.unbound.append(ref.raw)
                return p.Lit(ref.raw)
            if name != "@" and int(name) > len(self.ctx.args):
                count = len(self.ctx.args)
                raise LangError(
                    f"${name} is not set: the script was given {count} argument{'' if count == 1 else 's'}",
                    ref.span,
                )
            return p.Var(name, None, quoting)
        if name == "host" and host_flow and "host" not in self.bindings:
            if ref.field is not None:
                raise LangError("$host has no fields", ref.span)
            return p.Var(name, None, quoting)
        kind = self.bindings.get(name)
        if kind is None:
            if ref.field is not None:
                raise LangError(f"{name!r} is not bound, so {ref.raw} has no value", ref.span)
            self.unbound.append(ref.raw)
            return p.Lit(ref.raw)
        if ref.field is not None and kind != RESULT:
            raise LangError(
                f"{name!r} holds a {'node set' if kind == HOSTS else 'value'}, which has no "
                f"field {ref.field!r}",
                ref.span,
            )
        if ref.field is not None and ref.field not in p.RESULT_FIELDS:
            raise LangError(
                f"a result has no field {ref.field!r} (fields: {', '.join(p.RESULT_FIELDS)})",
                ref.span,
            )
        return p.Var(name, ref.field, quoting)


def _known_text(text: p.Text, args: tuple[str, ...] | None) -> str | None:
    """A value's text when the compiler knows it: literal text and the script's
    arguments; None when it holds a binding's value."""
    out: list[str] = []
    for part in text.parts:
        if isinstance(part, p.Lit):
            out.append(part.text)
        elif args is not None and part.name == "@":
            out.append(" ".join(args))
        elif args is not None and digits(part.name) and 0 < int(part.name) <= len(args):
            out.append(args[int(part.name) - 1])
        else:
            return None
    return "".join(out)


def _sequence(statements: tuple[p.Statement, ...]) -> tuple[int | None, float]:
    """The worst case of statements run one after another: steps (None when some are
    known only at run time) and seconds."""
    known = all(s.bound.steps is not None for s in statements)
    steps = sum(s.bound.steps or 0 for s in statements) if known else None
    return steps, sum(s.bound.seconds for s in statements)


def _head(text: str) -> str:
    """The first line of a compound statement's text (what the journal shows)."""
    first = text.split("\n", 1)[0]
    return first if first == text else first + " …"


def _words(parts: tuple[Part, ...]) -> list[tuple[Part, ...]]:
    """A command's words, as sh would split them: at unquoted blanks, quotes taken off."""
    words: list[list[Part]] = []
    current: list[Part] = []
    started = False
    quote = ""
    for part in parts:
        if not isinstance(part, Lit):
            current.append(part)
            started = True
            continue
        buf: list[str] = []
        for ch in part.text:
            if quote:
                if ch == quote:
                    quote = ""
                else:
                    buf.append(ch)
            elif ch in "'\"":
                quote, started = ch, True
            elif ch in " \t\n":
                if buf:
                    current.append(Lit("".join(buf)))
                    buf = []
                if started:
                    words.append(current)
                current, started = [], False
            else:
                buf.append(ch)
                started = True
        if buf:
            current.append(Lit("".join(buf)))
    if started:
        words.append(current)
    return [tuple(w) for w in words]


def _check_calls(functions: Mapping[str, ast.FnDef], defined: list[ast.FnDef]) -> None:
    """Refuse functions that call each other in a cycle (the plan must stay a finite
    tree), or in a chain deeper than MAX_CALL_DEPTH. Each function is gone through
    once: how deep the calls below it go is kept."""

    def calls(statements: tuple[ast.Statement, ...]) -> list[tuple[str, Span]]:
        found: list[tuple[str, Span]] = []
        for node in statements:
            if isinstance(node, ast.If):
                found += calls(node.then) + calls(node.orelse)
            elif isinstance(node, ast.For):
                found += calls(node.body)
            elif isinstance(node, ast.Pipeline) and node.target is None and len(node.stages) == 1:
                stage = node.stages[0]
                if isinstance(stage, ast.CommandStage) and stage.text.strip():
                    first = stage.text.split(None, 1)[0]
                    if first in functions:
                        found.append((first, node.span))
        return found

    below: dict[str, int] = {}  # a function's calls: how many levels deep they go

    def visit(name: str, path: list[str], span: Span) -> int:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise LangError(
                f"functions may not call themselves, directly or not: {' → '.join(cycle)}",
                functions[cycle[0]].span,
            )
        if len(path) + 1 + below.get(name, 0) > MAX_CALL_DEPTH:  # a call of path[0] goes this deep
            raise LangError(
                f"calls nested too deeply (limit {MAX_CALL_DEPTH}): {(path or [name])[0]} → … → {name}", span
            )
        if name not in below:
            deepest = 0
            for callee, where in calls(functions[name].body):
                deepest = max(deepest, 1 + visit(callee, [*path, name], where))
            below[name] = deepest
        return below[name]

    for fn in defined:
        visit(fn.name, [], fn.span)


def compile_source(
    source: Source, ctx: Context | None = None, functions: dict[str, ast.FnDef] | None = None
) -> p.Plan:
    """Parse and compile; raises LangError with the span of the first problem. The
    functions known after it (earlier ones and the text's) go to `functions`."""
    tree = parse(source)
    compiler = _Compiler(source, ctx or Context())
    plan = compiler.script(tree)
    if functions is not None:
        functions.update(compiler.functions)
    return plan


def binding_kinds(plan: p.Plan) -> dict[str, str]:
    """The kinds of the names a plan binds, for compiling the lines after it."""
    kinds: dict[str, str] = {}
    for stmt in plan.statements:
        if isinstance(stmt, p.Bind):
            value = stmt.value
            kinds[stmt.name] = (
                VALUE if isinstance(value, p.Text) else HOSTS if isinstance(value, p.HostSet) else RESULT
            )
    return kinds

"""The plan's codec: a plan, or one statement, as JSON and back, with its version
(`version_of`: the lowest that holds it); a newer or corrupt one is refused by
name (PlanError)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from dsh.errors import PlanError
from dsh.plan.nodes import (
    PLAN_VERSION,
    Await,
    Batch,
    Bind,
    Bound,
    Command,
    Compare,
    Copy,
    For,
    Gather,
    GroupRef,
    HostSet,
    If,
    Lit,
    Pipeline,
    Plan,
    Run,
    Secret,
    Sleep,
    Statement,
    Text,
    Var,
    Where,
)

# -- serialisation ------------------------------------------------------------------

_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Lit,
        Var,
        Text,
        GroupRef,
        HostSet,
        Command,
        Copy,
        Sleep,
        Await,
        Where,
        Gather,
        Batch,
        Pipeline,
        Bound,
        Run,
        Secret,
        Bind,
        Compare,
        If,
        For,
        Plan,
    )
}


#: Each node class's field names, found once (encoding runs for every statement).
_FIELDS: dict[type, tuple[str, ...] | None] = {}
_UNSEEN = ("",)
#: Fields added to a node after version 1, written only when they are not their
#: default: a plan without them keeps the bytes it had before they existed.
_LATER: dict[type, dict[str, Any]] = {HostSet: {"groups": ()}, Command: {"stdin": None}}


def _encode(value: Any) -> Any:
    cls = type(value)
    names = _FIELDS.get(cls, _UNSEEN)
    if names is _UNSEEN:
        is_node = dataclasses.is_dataclass(value) and not isinstance(value, type)
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(value)) if is_node else None
    if names is not None:
        out: dict[str, Any] = {"@": cls.__name__}
        later = _LATER.get(cls)
        for name in names:
            held = getattr(value, name)
            if later is not None and name in later and held == later[name]:
                continue
            out[name] = _encode(held)
        return out
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    if isinstance(value, dict):
        name = value.get("@")
        cls = _TYPES.get(name) if isinstance(name, str) else None
        if cls is None:
            raise PlanError(f"the plan holds an unknown node {name!r}")
        fields = {k: _decode(v) for k, v in value.items() if k != "@"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise PlanError(f"the plan's {name} node is malformed: {exc}") from exc
    return value


def dumps(plan: Plan) -> str:
    return json.dumps(_encode(plan), separators=(",", ":"))


def _check_version(version: object, what: str) -> None:
    if not isinstance(version, int):
        raise PlanError(f"the stored {what} has no plan version")
    if version > PLAN_VERSION:
        raise PlanError(
            f"the stored {what} has plan version {version}, newer than this dsh understands "
            f"({PLAN_VERSION}); upgrade dsh to run it"
        )


def version_of(node: Statement | tuple[Statement, ...]) -> int:
    """The lowest plan version that holds `node`: 5 with an `await approval`, 4 with
    an inventory's group or a command's stdin in it, 3 with a copy, 2 with a secret,
    else 1."""
    stack: list[Any] = [node]
    version = 1
    while stack:
        item = stack.pop()
        if isinstance(item, Secret):
            version = max(version, 2)
        elif isinstance(item, HostSet):
            if item.groups:
                version = 4
        elif isinstance(item, Pipeline):
            if any(isinstance(stage, Await) and stage.kind == "approval" for stage in item.stages):
                return 5
            if any(isinstance(stage, Command) and stage.stdin is not None for stage in item.stages):
                version = 4
            if any(isinstance(stage, Copy) for stage in item.stages):
                version = 3
            if item.target is not None:
                stack.append(item.target)
        elif isinstance(item, tuple):
            stack.extend(item)
        elif isinstance(item, Run):
            stack.append(item.pipeline)
        elif isinstance(item, For):
            stack.extend((*item.items, *item.body))
        elif isinstance(item, Bind | If):
            stack.extend((item.value,) if isinstance(item, Bind) else _inner(item))
    return version


def _inner(stmt: If | For) -> tuple[Statement, ...]:
    if isinstance(stmt, If):
        return (*((stmt.cond,) if isinstance(stmt.cond, Run) else ()), *stmt.then, *stmt.orelse)
    return stmt.body


def dump_statement(stmt: Statement) -> dict[str, Any]:
    """One compiled statement as JSON data, with its plan version (for the store)."""
    return {"version": version_of(stmt), "statement": _encode(stmt)}


def load_statement(data: dict[str, Any]) -> Statement:
    """The inverse of dump_statement; PlanError for corrupt or newer data."""
    _check_version(data.get("version") if isinstance(data, dict) else None, "statement")
    try:
        stmt = _decode(data.get("statement"))
    except RecursionError:  # deeper than any compile makes (lang's MAX_BLOCK_DEPTH)
        raise PlanError("the stored statement is nested too deeply to be dsh's") from None
    if not isinstance(stmt, Run | Bind | If | For):
        raise PlanError("the stored data is not a dsh statement")
    return stmt


def loads(data: str | bytes) -> Plan:
    """Read a plan back; PlanError for corrupt data or a newer plan version."""
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PlanError(f"the stored plan is corrupt ({exc})") from exc
    except RecursionError:
        raise PlanError("the stored plan is nested too deeply to be dsh's") from None
    if not isinstance(raw, dict) or raw.get("@") != "Plan":
        raise PlanError("the stored data is not a dsh plan")
    _check_version(raw.get("version"), "plan")
    try:
        plan = _decode(raw)
    except RecursionError:  # deeper than any compile makes (lang's MAX_BLOCK_DEPTH)
        raise PlanError("the stored plan is nested too deeply to be dsh's") from None
    if not isinstance(plan, Plan):
        raise PlanError("the stored data is not a dsh plan")
    return plan

"""Values bound at run time, and inserting them into text as data, never code."""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence

from dsh import nodeset
from dsh import plan as p
from dsh.errors import DshError
from dsh.exits import Exit
from dsh.record import record
from dsh.runtime.results import HostResult


@record
class StrValue:
    text: str


@record
class HostsValue:
    hosts: tuple[str, ...]


@record
class ResultValue:
    results: tuple[HostResult, ...]


@record
class SecretValue:
    """A value asked with `secret`, or made from one: held in memory only. `text` is
    None until it is asked (a new owner asks again: the store keeps only `prompt`).
    A command reads it from its environment (`secret_env`), never from its text."""

    text: str | None
    prompt: str


Value = StrValue | HostsValue | ResultValue | SecretValue


class BindingError(DshError):
    """A binding cannot give the value asked of it."""


class BindRefused(DshError):
    """A value over the binding cap (`limits.max_binding`), or more than the store
    takes in one value: the statement fails and nothing is bound, so that a run
    and its resume see the same value (none), never a cut one."""

    exit_code = Exit.NOT_OK


def value_bytes(value: Value) -> int | None:
    """How many bytes a value holds (its text, or every host's stdout and stderr);
    None when a host's output was already cut in memory (more than KEEP_BYTES)."""
    if isinstance(value, StrValue):
        return len(value.text.encode("utf-8", "surrogateescape"))
    if isinstance(value, SecretValue):
        return len((value.text or "").encode("utf-8", "surrogateescape"))
    if isinstance(value, HostsValue):
        return sum(len(h) + 1 for h in value.hosts)
    if any(r.truncated for r in value.results):
        return None
    return sum(len(r.out) + len(r.err) for r in value.results)


def _text_of(data: bytes) -> str:
    # surrogateescape: bytes that are not UTF-8 go back out to a command unchanged.
    return data.decode("utf-8", "surrogateescape").rstrip("\n")


def _result_field(name: str, value: ResultValue, fld: str | None, host: str | None) -> str:
    fld = "out" if fld in (None, "url") else fld  # url: a callback's (its out)
    if fld == "hosts":
        return nodeset.fold(r.host for r in value.results if r.host is not None)
    mine = [r for r in value.results if host is not None and r.host == host]
    results = mine[:1] or list(value.results)
    if fld == "outcome":
        picked = {r.outcome for r in results}
    elif fld == "rc":
        picked = {"" if r.exit_status is None else str(r.exit_status) for r in results}
    else:
        picked = {_text_of(r.out if fld == "out" else r.err) for r in results}
    if len(picked) != 1:
        raise BindingError(
            f"${{{name}.{fld}}} differs between the {len(results)} hosts of {name!r}; "
            f"use it in a flow over those hosts, or ${{{name}.hosts}}"
        )
    return picked.pop()


def value_text(name: str, value: Value, fld: str | None = None, host: str | None = None) -> str:
    """The text of a binding (or of one of its fields) as a string."""
    if isinstance(value, StrValue):
        return value.text
    if isinstance(value, SecretValue):
        if value.text is None:
            raise BindingError(f"${name} is a secret not asked yet")
        return value.text
    if isinstance(value, HostsValue):
        return nodeset.fold(value.hosts)
    return _result_field(name, value, fld, host)


def secret_env(name: str) -> str:
    """The environment variable a command reads secret `name` from."""
    return "DSH_S_" + "".join(c if c.isalnum() else "_" for c in name)


def quote(text: str, quoting: str) -> str:
    """`text` as data where it stands: `shell` (unquoted), `dquote`, `heredoc`, or `raw`."""
    if quoting == "raw":
        return text
    if "\x00" in text:
        raise BindingError("a value that holds a NUL byte cannot be passed to a command")
    if quoting == "shell":
        return shlex.quote(text)
    special = '\\"$`' if quoting == "dquote" else "\\$`"
    return "".join("\\" + c if c in special else c for c in text)


def render(
    text: p.Text,
    bindings: Mapping[str, Value],
    args: Sequence[str],
    host: str | None,
    env: dict[str, str] | None = None,
    values: bool = False,
) -> str:
    """Fill a compiled text with bound values, each quoted for where it stands. A
    secret in a command's text (`env` given) becomes a reference to an environment
    variable, whose value goes into `env`; in a dsh value or a comparison
    (`values`) it is itself; anywhere else (an await, a loop's items, a prompt)
    it is refused."""
    out: list[str] = []
    for part in text.parts:
        if isinstance(part, p.Lit):
            out.append(part.text)
            continue
        name = part.name
        if name == "@":
            if part.quoting == "shell":
                out.append(" ".join(shlex.quote(a) for a in args))
            elif part.quoting == "dquote":  # "$@": one word per argument, as in sh
                # With none, the shell's own "$@" (sh -c has no arguments) gives no word.
                out.append('" "'.join(quote(a, "dquote") for a in args) if args else "$@")
            else:
                out.append(quote(" ".join(args), part.quoting))
            continue
        if name.isdigit():
            index = int(name)
            out.append(quote(args[index - 1] if index <= len(args) else "", part.quoting))
            continue
        if name == "host" and name not in bindings:
            out.append(quote(host or "", part.quoting))
            continue
        if name not in bindings:
            raise BindingError(f"${name} is not bound")
        value = bindings[name]
        if isinstance(value, SecretValue) and not (values and part.quoting == "raw" and part.field is None):
            if env is None or part.quoting == "raw" or part.field is not None:
                raise BindingError(
                    f"${name} is a secret: only a command's text can use it "
                    "(the command reads it from its environment), or a value bound from it"
                )
            var = secret_env(name)
            env[var] = value_text(name, value)
            out.append(f'"${var}"' if part.quoting == "shell" else f"${var}")
            continue
        out.append(quote(value_text(name, value, part.field, host), part.quoting))
    return "".join(out)


def names_in(node: object) -> set[str]:
    """The bound names a compiled node's texts use (every `Var` in it)."""
    found: set[str] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, p.Var):
            found.add(item.name)
        elif isinstance(item, tuple | list):
            stack.extend(item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
    return found


def is_secret_in(text: p.Text, bindings: Mapping[str, Value]) -> bool:
    """Whether `text` uses a secret (what is made from one is secret too)."""
    return any(
        isinstance(part, p.Var) and isinstance(bindings.get(part.name), SecretValue) for part in text.parts
    )

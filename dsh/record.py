"""`@record`: a frozen, slotted dataclass made with one `exec` instead of six.

`dataclass(frozen=True, slots=True)` compiles `__init__`, `__repr__`, `__eq__`,
`__hash__`, `__setattr__` and `__delattr__` with one `exec` each and then
makes the class a second time for its slots: about a millisecond a class on
this project's machines, and dsh defines dozens before it runs a line
(`bench.run startup`). `record` writes the same methods as one source text,
compiled once, and makes the class once. The result is still a dataclass to
`dataclasses.fields`, `dataclasses.replace` and `dataclasses.is_dataclass`,
and to type checkers (`dataclass_transform`).

A record's fields are its annotations, in order, each with an optional plain
default (an immutable value: nothing is copied). What `dataclass` offers
beyond that (`field()`, `ClassVar`, `InitVar`, `__post_init__`, bases with
fields of their own) is refused when the class is defined, so that nothing
relies on it silently: use `dataclass` there.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T")

_NOT_SUPPORTED = ("ClassVar", "InitVar", "dataclasses.", "Final")


@dataclass_transform(frozen_default=True)
def record(cls: type[T]) -> type[T]:
    annotations: dict[str, Any] = inspect.get_annotations(cls)  # this class's own, as written
    names = tuple(annotations)
    for base in cls.__mro__[1:-1]:
        if getattr(base, "__dataclass_fields__", None) or getattr(base, "__slots__", ()):
            raise TypeError(f"record {cls.__name__}: a base with fields or slots ({base.__name__})")
    if "__post_init__" in cls.__dict__:
        raise TypeError(f"record {cls.__name__}: __post_init__ is not supported (use dataclass)")
    own = [m for m in (*_MADE, "__slots__", "__match_args__") if m in cls.__dict__]
    if own:  # dataclass would keep some of these; a record would silently replace them
        raise TypeError(f"record {cls.__name__}: defines {own[0]}, which a record makes (use dataclass)")
    defaults: dict[str, Any] = {}
    for name in names:
        kind = str(annotations[name])
        if any(word in kind for word in _NOT_SUPPORTED):
            raise TypeError(f"record {cls.__name__}.{name}: {kind} is not supported (use dataclass)")
        if name in cls.__dict__:
            default = cls.__dict__[name]
            if isinstance(default, dataclasses.Field | list | dict | set):
                raise TypeError(f"record {cls.__name__}.{name}: only plain immutable defaults")
            defaults[name] = default
        elif defaults:
            raise TypeError(f"record {cls.__name__}.{name}: a field without a default follows one with")
    body = {k: v for k, v in cls.__dict__.items() if k not in names and k not in ("__dict__", "__weakref__")}
    body.update(_methods(cls.__name__, names, defaults))
    body["__slots__"] = names
    body["__match_args__"] = names
    fields = {}
    for name in names:
        f = dataclasses.field(default=defaults.get(name, dataclasses.MISSING))
        f.name, f.type = name, annotations[name]
        f._field_type = dataclasses._FIELD  # type: ignore[attr-defined]  # what fields() selects
        fields[name] = f
    body["__dataclass_fields__"] = fields
    meta: Any = type(cls)
    made: type[T] = meta(cls.__name__, cls.__bases__, body)
    made.__qualname__ = cls.__qualname__
    made.__init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return made


def _methods(name: str, names: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    """`__init__` is made for the class (it runs for every node made): the code of
    one compiled once per number of fields, with the class's field names put in
    (compiling one per class costs a tenth of a millisecond, and dsh makes dozens of
    classes before it runs a line). The rest are shared functions that read the
    class's `__slots__`."""
    template = _TEMPLATES.get(len(names))
    if template is None:
        template = _TEMPLATES[len(names)] = _template(len(names))
    named = dict(zip(_placeholders(len(names)), names, strict=True))
    code = template.replace(
        co_varnames=("self", *names),
        co_consts=tuple(named.get(c, c) if type(c) is str else c for c in template.co_consts),
        co_name="__init__",
        co_qualname=f"{name}.__init__",
        co_filename=f"<record {name}>",
    )
    given = tuple(defaults[n] for n in names if n in defaults)  # the last fields (checked)
    init = types.FunctionType(code, _INIT_GLOBALS, "__init__", given or None)
    return {"__init__": init, **_SHARED}


def _placeholders(count: int) -> list[str]:
    return [f"_record_field_{i}" for i in range(count)]


def _template(count: int) -> types.CodeType:
    """`def __init__(self, f0, f1, …)` setting each field, for `count` fields."""
    params = "".join(f", {p}" for p in _placeholders(count))
    sets = "".join(f"\n    _set(self, {p!r}, {p})" for p in _placeholders(count)) or "\n    pass"
    namespace: dict[str, Any] = {}
    exec(compile(f"def __init__(self{params}):{sets}", "<record>", "exec"), namespace)
    code: types.CodeType = namespace["__init__"].__code__
    return code


_TEMPLATES: dict[int, types.CodeType] = {}
_INIT_GLOBALS: dict[str, Any] = {"_set": object.__setattr__}


def _values(self: Any) -> tuple[Any, ...]:
    return tuple([getattr(self, n) for n in self.__slots__])


def _repr(self: Any) -> str:
    shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
    return f"{type(self).__qualname__}({shown})"


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is self.__class__:
        return _values(self) == _values(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(_values(self))


def _setattr(self: Any, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _setstate(self: Any, state: tuple[Any, ...]) -> None:
    for n, v in zip(self.__slots__, state, strict=True):
        object.__setattr__(self, n, v)


#: What a record makes: a class may not define these itself.
_MADE = (
    "__init__",
    "__repr__",
    "__eq__",
    "__hash__",
    "__setattr__",
    "__delattr__",
    "__getstate__",
    "__setstate__",
)

_SHARED: dict[str, Any] = {
    "__repr__": _repr,
    "__eq__": _eq,
    "__hash__": _hash,
    "__setattr__": _setattr,
    "__delattr__": _delattr,
    "__getstate__": _values,
    "__setstate__": _setstate,
}

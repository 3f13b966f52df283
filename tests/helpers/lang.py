"""Compiling dsh text in tests: a plan, or the error it is refused with."""

from __future__ import annotations

import pytest

from dsh import plan as p
from dsh.errors import LangError
from dsh.lang.compiler import Context, compile_source
from dsh.lang.source import Source


def compile_text(text: str, **ctx: object) -> p.Plan:
    return compile_source(Source("t.dsh", text), Context(**ctx))  # type: ignore[arg-type]


def error(text: str, **ctx: object) -> LangError:
    with pytest.raises(LangError) as info:
        compile_text(text, **ctx)
    return info.value

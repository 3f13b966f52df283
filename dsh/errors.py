"""The one exception root of dsh and its families; facts live in attributes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dsh.lang.source import Span


class DshError(Exception):
    """Every error dsh reports to a user. `exit_code` follows design §6."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(DshError):
    """Bad command-line usage or configuration."""

    exit_code = 2


class LangError(DshError):
    """A source error: it carries the span of the text that caused it."""

    exit_code = 2

    def __init__(self, message: str, span: Span) -> None:
        super().__init__(message)
        self.span = span

    def render(self) -> str:
        """`file:line:col: message`, then the source line and a caret."""
        return self.span.render(self.message)


class IncompleteInput(LangError):
    """The input ends where more is needed (open quote, `{`, trailing `|`).

    A REPL reads another line; a script reports it like any LangError.
    """


class PlanError(DshError):
    """A serialised plan that cannot be loaded (corrupt, or a newer version)."""

    exit_code = 2


class StoreError(DshError):
    """The store could not be reached or refused an operation."""

    exit_code = 3


class RemoteError(DshError):
    """A remote host could not be used; `host` names it."""

    def __init__(self, message: str, host: str | None = None) -> None:
        super().__init__(message)
        self.host = host


class StepTimeout(DshError, TimeoutError):
    """A step ran past its deadline."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds

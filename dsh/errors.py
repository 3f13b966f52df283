"""The one exception root of dsh and its families; facts live in attributes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsh.exits import Exit

if TYPE_CHECKING:
    from dsh.lang.source import Span


class DshError(Exception):
    """Every error dsh reports to a user. `exit_code` follows design §6 (dsh.exits)."""

    exit_code: int = Exit.NOT_OK

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(DshError):
    """Bad command-line usage or configuration."""

    exit_code = Exit.USAGE


class LangError(DshError):
    """A source error: it carries the span of the text that caused it."""

    exit_code = Exit.USAGE

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

    exit_code = Exit.USAGE


class StoreError(DshError):
    """The store could not be reached or refused an operation."""

    exit_code = Exit.STORE


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

"""How the command line says an error: a sentence on stderr and the exit status it
maps to; and standard output watched, so that a failed write to it is told
from any other OSError."""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

from dsh.errors import DshError, LangError
from dsh.exits import Exit


class Errors:
    """Says errors: a sentence on stderr (a caret for source errors), a traceback
    only with -v, and with --json also an `error` event on stdout."""

    def __init__(self) -> None:
        self.verbose = False
        self.json = False
        #: Standard output failed: the error event is not written there.
        self.stdout_failed = False

    def __call__(self, exc: BaseException, *, internal: bool = False) -> int:
        """Say `exc`; the status dsh exits with for it."""
        code = exc.exit_code if isinstance(exc, DshError) else Exit.BUG
        if isinstance(exc, LangError):
            text = exc.render()
        elif isinstance(exc, DshError):
            text = f"dsh: {exc.message}"
        else:
            hint = "" if self.verbose else " (run with -v for the traceback)"
            text = f"dsh: internal error: {type(exc).__name__}: {exc}{hint}"
        if stdout_fails():
            self.stdout_failed = True
        if self.verbose and (internal or not isinstance(exc, LangError)):
            traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        if self.json and not self.stdout_failed:
            from dsh.render import json_line

            event: dict[str, object] = {"event": "error", "message": str(exc), "exit": int(code)}
            if isinstance(exc, LangError):
                event["location"] = exc.span.location()
            try:
                sys.stdout.write(json_line(event, ascii_only=True) + "\n")
                sys.stdout.flush()
            except (OSError, ValueError):  # said on stderr already
                self.stdout_failed = True
                quiet_stdout()
        return code


def show_error(text: str) -> None:
    """An error's sentence on stderr, after what stdout holds."""
    sys.stdout.flush()
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class Stdout:
    """sys.stdout (or its binary buffer), remembering that a write to it failed (a
    full disk, a quota, an I/O error), so that main can tell that failure from
    any other OSError."""

    def __init__(self, inner: Any, text: Stdout | None = None) -> None:
        self._inner = inner
        self._text = text or self
        self.failed = False
        raw = getattr(inner, "buffer", None)
        self.buffer = Stdout(raw, self) if text is None and raw is not None else None

    def _failed(self, exc: OSError) -> None:
        self._text.failed = not isinstance(exc, BrokenPipeError)

    def write(self, data: Any) -> int:
        try:
            return int(self._inner.write(data))
        except OSError as exc:
            self._failed(exc)
            raise

    def flush(self) -> None:
        try:
            self._inner.flush()
        except OSError as exc:
            self._failed(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def stdout_fails() -> bool:
    """Whether a write to standard output failed (or what is buffered cannot be flushed)."""
    if isinstance(sys.stdout, Stdout) and sys.stdout.failed:
        return True
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        return True
    return False


def quiet_stdout() -> None:
    """Standard output to /dev/null from now on: nothing more is written where it failed."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass

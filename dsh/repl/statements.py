"""Lines in, whole statements out: the one statement reader of dsh.

A statement may span lines (an unclosed `{`, a trailing `|`, an open quote).
`Statements` gathers the lines read one by one until they make a whole
statement, and numbers them, so that an error points at the line it is on.
Whether text is whole is the compiler's to say: `compile_(text, first_line)`
raises IncompleteInput while more lines are needed (`whole_when` makes one of a
yes/no check). Both readers of lines use it: the client of an executor process
(the prompt, `dsh attach`: dsh.client.read_eval) and the driver that runs piped
lines in-process (dsh.driver.run_lines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from dsh.errors import IncompleteInput

T = TypeVar("T")

PROMPT = "dsh> "
CONTINUATION = "... "


@dataclass(frozen=True)
class Whole(Generic[T]):
    """A whole statement: its lines, the number of the first, and what compiling
    it gave (None for what `rest` returns, which did not compile)."""

    lines: tuple[str, ...]
    first_line: int
    value: T | None = None

    @property
    def text(self) -> str:
        """The statement's text, each line with its newline."""
        return "\n".join(self.lines) + "\n"

    @property
    def blank(self) -> bool:
        """Nothing but blank lines and comments."""
        return all(not line.strip() or line.lstrip().startswith("#") for line in self.lines)


class _More(Exception):
    """A yes/no check said the text is not whole yet."""


class Statements(Generic[T]):
    """Gathers lines into whole statements, numbering them from 1."""

    def __init__(self, compile_: Callable[[str, int], T]) -> None:
        self.compile = compile_
        self.lines: list[str] = []
        #: The number of the next statement's first line.
        self.first_line = 1

    @property
    def prompt(self) -> str:
        """The prompt for the next line: the continuation prompt inside a statement."""
        return CONTINUATION if self.lines else PROMPT

    def feed(self, line: str) -> Whole[T] | None:
        """Take one line (without its newline): the whole statement it ends, or None
        while more lines are needed. An error of the compile other than
        IncompleteInput is raised once the statement's lines are taken: the next
        statement starts after them."""
        self.lines.append(line)
        text = "\n".join(self.lines) + "\n"
        first = self.first_line
        taken = tuple(self.lines)
        try:
            value = self.compile(text, first)
        except (IncompleteInput, _More):
            return None
        except Exception:
            self._take()
            raise
        self._take()
        return Whole(taken, first, value)

    def drop(self) -> None:
        """Forget the lines of the statement begun (Ctrl-C): the next starts afresh,
        with the same line number."""
        self.lines = []

    def rest(self) -> Whole[T] | None:
        """At the end of input: the statement left unfinished, unless it is blank."""
        if not any(line.strip() for line in self.lines):
            return None
        left = Whole[T](tuple(self.lines), self.first_line)
        self._take()
        return left

    def _take(self) -> None:
        self.first_line += len(self.lines)
        self.lines = []


def whole_when(check: Callable[[str, int], bool]) -> Callable[[str, int], None]:
    """A compile for Statements from a yes/no check of whether text is whole."""

    def compile_(text: str, first_line: int) -> None:
        if not check(text, first_line):
            raise _More

    return compile_

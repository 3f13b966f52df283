"""Source text and spans: where every token and node came from."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from dsh.record import record

#: Columns of a source line shown under an error: a longer line is cut around the caret.
SHOWN_COLUMNS = 120
#: A lone surrogate: a byte that was not UTF-8 (surrogateescape).
SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True, slots=True)
class Source:
    """A named piece of dsh text (a script file, `-c` text or a REPL line)."""

    name: str
    text: str
    first_line: int = 1
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = [0]
        newline = self.text.find("\n")
        while newline >= 0:
            starts.append(newline + 1)
            newline = self.text.find("\n", newline + 1)
        object.__setattr__(self, "_starts", tuple(starts))

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        offset = max(0, min(offset, len(self.text)))
        lo, hi = 0, len(self._starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo + self.first_line, offset - self._starts[lo] + 1

    def line_text(self, line: int) -> str:
        index = line - self.first_line
        start = self._starts[index]
        end = self.text.find("\n", start)
        return self.text[start:] if end < 0 else self.text[start:end]

    def span(self, start: int, end: int) -> Span:
        return Span(self, start, end)

    def line_span(self, line: int) -> Span:
        """The span of a whole line (without its newline); of the whole text for a
        line it does not have."""
        if not 0 <= line - self.first_line < len(self._starts):
            return Span(self, 0, len(self.text))
        start = self._starts[line - self.first_line]
        return Span(self, start, start + len(self.line_text(line)))


@record
class Span:
    """Characters [start, end) of a source."""

    source: Source
    start: int
    end: int

    @property
    def text(self) -> str:
        return self.source.text[self.start : self.end]

    @property
    def line(self) -> int:
        return self.source.position(self.start)[0]

    @property
    def column(self) -> int:
        return self.source.position(self.start)[1]

    def to(self, other: Span) -> Span:
        """The span from the start of this one to the end of `other`."""
        return Span(self.source, self.start, max(self.end, other.end))

    def location(self) -> str:
        line, col = self.source.position(self.start)
        return f"{self.source.name}:{line}:{col}"

    def render(self, message: str) -> str:
        """`name:line:col: message`, the source line, and a caret under the span."""
        line, col = self.source.position(self.start)
        text = self.source.line_text(line)
        end_line, end_col = self.source.position(max(self.start, self.end - 1))
        width = end_col - col + 1 if end_line == line and self.end > self.start else 1
        width = max(1, min(width, len(text) - col + 1 if len(text) >= col else 1))
        shown = SURROGATE.sub("\ufffd", text.expandtabs(1))  # a byte that is not UTF-8: one column
        at = col - 1
        if len(shown) > SHOWN_COLUMNS:  # a window of the line around the caret
            first = max(0, min(at - SHOWN_COLUMNS // 3, len(shown) - SHOWN_COLUMNS))
            last = first + SHOWN_COLUMNS
            before, after = ("…" if first else ""), ("…" if last < len(shown) else "")
            shown = before + shown[first:last] + after
            width = max(1, min(width, last - at))
            at += len(before) - first
        caret = " " * at + "^" + "~" * (width - 1)
        return f"{self.source.name}:{line}:{col}: {message}\n  {shown}\n  {caret}"

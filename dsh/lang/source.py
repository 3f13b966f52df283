"""Source text and spans: where every token and node came from."""

from __future__ import annotations

from dataclasses import dataclass, field

from dsh.record import record


@dataclass(frozen=True, slots=True)
class Source:
    """A named piece of dsh text (a script file, `-c` text or a REPL line)."""

    name: str
    text: str
    first_line: int = 1
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = [0]
        for i, ch in enumerate(self.text):
            if ch == "\n":
                starts.append(i + 1)
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
        shown = text.expandtabs(1)
        caret = " " * (col - 1) + "^" + "~" * (width - 1)
        return f"{self.source.name}:{line}:{col}: {message}\n  {shown}\n  {caret}"

"""Durations as written in dsh (`500ms`, `30s`, `1h30m`, `1d`) and shown back."""

from __future__ import annotations

import re

#: The shortest duration dsh takes: a timeout or a wait under a millisecond is no
#: bound at all (and `dsh explain` would show it as 0ms).
MIN_DURATION = 0.001

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")


def parse_duration(text: str) -> float | None:
    """Seconds for a duration literal, or None when `text` is not one."""
    if not _WHOLE.fullmatch(text):
        return None
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """A short human form: `850ms`, `17s`, `2m30s`, `1h`, `1d2h`."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.3g}s" if seconds != int(seconds) else f"{int(seconds)}s"
    whole = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            parts.append(f"{whole // size}{unit}")
            whole %= size
    return "".join(parts)

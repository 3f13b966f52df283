"""Text that may hold bytes which are not UTF-8: one way to keep it, store it, show it.

Arguments, bound values, signals, keys and command output are bytes; dsh holds
them as `str` with surrogate escapes (each byte that is not UTF-8 becomes a
lone surrogate), so they go back out to a command unchanged. That `str` must
never be encoded strictly, nor written into JSON as it is (a lone surrogate in
JSON is lossy and unreadable to most readers). So:

- `to_bytes` / `from_bytes`: the bytes themselves, both ways, losslessly;
- `stored` / `loaded`: a JSON field (store records, journal entries, `--json`):
  the text itself when it is UTF-8, else `{"b64": …}` of its bytes;
- `shown`: for a terminal or a log: each byte that is not UTF-8 as `\\xNN`.
"""

from __future__ import annotations

import base64


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def stored(text: str) -> str | dict[str, str]:
    """`text` for a JSON field: itself when it is UTF-8, else its bytes tagged."""
    if is_utf8(text):
        return text
    return {"b64": base64.b64encode(to_bytes(text)).decode()}


def loaded(value: object) -> str:
    """What `stored` wrote, as the same text again; any other value as its str."""
    if isinstance(value, dict) and isinstance(value.get("b64"), str):
        try:
            return from_bytes(base64.b64decode(value["b64"], validate=True))
        except ValueError:
            return str(value)
    return value if isinstance(value, str) else "" if value is None else str(value)


def shown(text: str) -> str:
    """`text` safe to print: bytes that are not UTF-8 as `\\xNN`, the rest as it is."""
    if is_utf8(text):
        return text
    return to_bytes(text).decode("utf-8", "backslashreplace")

"""The names users give what dsh keeps for them, one rule each: the signals of a
session and the user's keys, checked alike by the command line (`dsh signal`,
`dsh key`) and the language (`await signal`, `await key`); and what counts as a
number where users write one (`digits`)."""

from __future__ import annotations

import re

#: A signal's name (`dsh signal SESSION NAME`, `await signal NAME`).
SIGNAL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: The longest key, in characters.
MAX_KEY = 256
_KEY = re.compile(rf"[^\s\x00-\x1f\x7f]{{1,{MAX_KEY}}}")


def key_problem(key: str) -> str | None:
    """Why `key` cannot be one of the user's keys (`dsh key`, `await key`), or None."""
    if _KEY.fullmatch(key):
        return None
    return f"{key!r} cannot be a key (1 to {MAX_KEY} characters, no blanks or control characters)"


def digits(text: str) -> bool:
    """Whether `text` is ASCII digits only: what sh and dsh take for a number or a
    positional parameter (`str.isdigit` takes `¹` too, which int() refuses)."""
    return text.isascii() and text.isdigit()

"""Reading the lock's requirements files (requirements/*.txt) in tests."""

from __future__ import annotations

import re
from pathlib import Path

from packaging.markers import Marker

_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;([^\\]*))?")


def norm(name: str) -> str:
    """A package name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, tuple[str, bool]]:
    """Each pinned package: (its version, whether its marker holds on this machine)."""
    found: dict[str, tuple[str, bool]] = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            found[norm(m[1])] = (m[2], not m[3] or Marker(m[3].strip()).evaluate())
    return found


def hashed(path: Path) -> dict[str, int]:
    """How many hashes each pin of PATH carries."""
    counts: dict[str, int] = {}
    name = ""
    for line in path.read_text().splitlines():
        m = _PIN.match(line)
        if m:
            name = norm(m[1])
            counts[name] = 0
        if name:
            counts[name] += line.count("--hash=sha256:")
    return counts

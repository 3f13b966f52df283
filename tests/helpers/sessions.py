"""A session as `dsh ls --json` shows it, for tests that act on its executor."""

from __future__ import annotations

import json
from typing import Any


def owner_pid(run_dsh: Any, name: str) -> int:
    """The pid of the executor process that owns session `name` now."""
    ls = run_dsh(["ls", "--json"])
    (entry,) = [e for e in map(json.loads, ls.stdout.splitlines()) if e["name"] == name]
    return int(entry["owner_pid"])

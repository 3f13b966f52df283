"""Host files (`@{file:PATH}`): one host, or node set, per line, as pdsh's `-w ^FILE`
and parallel-ssh's `-h FILE` read them; blank lines and text after `#` ignored."""

from __future__ import annotations

import os
from pathlib import Path

from dsh import nodeset
from dsh.inventory.base import InventoryError
from dsh.wholefile import NotRegular, OverCap, read_whole

#: A host file is read whole: one larger than this is refused.
MAX_BYTES = 16 << 20


def read(path: str, cwd: Path | None = None) -> str:
    """The hosts of the file at `path` (relative: under `cwd`, else the working
    directory) as node-set text; InventoryError with a sentence for a file that
    cannot be read, or a line that is not a host."""
    where = Path(os.path.expanduser(path)) if path.startswith("~") else Path(path)
    if cwd is not None and not where.is_absolute():
        where = cwd / where
    try:
        data = read_whole(str(where), MAX_BYTES)
    except OSError as exc:
        raise InventoryError(f"host file {path}: cannot read it: {exc.strerror or exc}") from None
    except NotRegular:
        raise InventoryError(f"host file {path}: not a regular file") from None
    except OverCap:
        raise InventoryError(
            f"host file {path}: over {MAX_BYTES >> 20} MiB; dsh reads a host file whole"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"host file {path}: not UTF-8 text (at byte {exc.start})") from None
    pieces: list[str] = []
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        problem = nodeset.check_literal(entry) or (
            "set operations are not read in a host file"
            if any(op in entry for op in "!&^")
            else None
            if all(term for _op, term in nodeset.terms(entry))
            else "an empty name"
        )
        if problem is not None:
            shown = repr(entry) if len(entry) <= 80 else repr(entry[:77]) + "…"
            raise InventoryError(f"{path}:{number}: {shown} is not a host nor a node set: {problem}")
        pieces.append(entry)
    return ",".join(pieces)

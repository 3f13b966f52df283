"""What happened in a session lately, as `dsh attach` shows it before its live
progress: the last journal entries, with the tail of the output of the actions
among them (the rest: `dsh log SESSION`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dsh.bytestext import loaded, to_bytes
from dsh.session.catalogue import read_journal
from dsh.session.codec import load_action
from dsh.session.keys import Keys
from dsh.session.records import ActDone
from dsh.store.base import Store

#: Journal entries shown when attaching.
HISTORY = 20
#: Lines of output tail shown per action in that history.
TAIL_LINES = 3


async def recent(
    store: Store, keys: Keys, timeline: Callable[[list[dict[str, Any]]], str], *, timeout: float
) -> str:
    """The session's last HISTORY journal entries, drawn by `timeline`, each action's
    end with its output's tail; each store call bounded by `timeout`."""
    entries = await read_journal(store, keys, timeout=timeout)
    if not entries:
        return ""
    shown = entries[-HISTORY:]
    lines = []
    if len(entries) > len(shown):
        lines.append(f"… {len(entries) - len(shown)} earlier entries: dsh log {keys.name}\n")
    for entry in shown:
        lines.append(timeline([entry]))
        if entry.get("kind") == "end":
            held = await store.get(keys.action(entry["action"], entry.get("host")), timeout=timeout)
            record = load_action(held.value, key=held.key) if held is not None else None
            lines.append(output_tail(record.out if isinstance(record, ActDone) else ""))
    return "".join(lines)


def output_tail(out: object) -> str:
    """The last TAIL_LINES of an action's output (as a record keeps it: dsh.bytestext),
    indented under its journal entry, neutralised like a host's live output."""
    from dsh.render import neutralise

    data = to_bytes(loaded(out))
    tail = data.rstrip(b"\n").split(b"\n")[-TAIL_LINES:] if data.strip() else []
    return "".join(f"{'':25}| {neutralise(line)}\n" for line in tail)

"""The listing of a user's sessions (`dsh ls`, completion) and a session's journal
as its entries' objects (`dsh log`, the timeline): what is read about
sessions without owning them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from dsh.session.codec import as_dict, readable
from dsh.session.history import journal
from dsh.session.keys import Keys, Tree
from dsh.session.records import DoneEntry, Journaled, Meta, Owner, PromptEntry, RunHead
from dsh.store.base import KV, Store


async def list_sessions(store: Store, tree: Tree, *, timeout: float) -> list[dict[str, Any]]:
    """Every session of `user`: name, state (running: an owner holds its lease;
    unfinished: a run started and not done, nobody owns it; idle), owner, the
    last line run, when it was made, and when it was last touched (its last
    journal entry, else its creation; seconds since the epoch). Newest first."""
    prefix = tree.sessions
    kvs, _ = await store.range(prefix, timeout=timeout)
    return sorted(_summaries(prefix, kvs), key=lambda e: -float(e["created"]))


async def session_summary(store: Store, keys: Keys, *, timeout: float) -> dict[str, Any] | None:
    """One session's entry of `list_sessions`, read as if nobody owned it (its state
    is then unfinished or idle): what a removal checks once it holds the session.
    None if the session has no keys."""
    kvs, _ = await store.range(keys.root, timeout=timeout)
    found = _summaries(keys.tree.sessions, [kv for kv in kvs if kv.key != keys.owner])
    return found[0] if found else None


def _summaries(prefix: bytes, kvs: Sequence[KV]) -> list[dict[str, Any]]:
    """The sessions whose keys (under `prefix`, the user's sessions) are `kvs`."""
    found: dict[str, dict[str, Any]] = {}
    for kv in kvs:
        name, _, rest = kv.key[len(prefix) :].decode(errors="replace").partition("/")
        entry = found.setdefault(
            name,
            {"name": name, "state": "idle", "owner_machine": None, "owner_pid": None, "created": 0.0},
        )
        entry.setdefault("last_line", None)
        entry.setdefault("_run", 0)
        entry.setdefault("_done", 0)
        # A record that cannot be read (damaged, or written by someone else) counts as
        # empty: the listing goes on without its fields.
        if rest == "meta":
            meta = readable(Meta, kv)
            entry["created"] = meta.created if meta is not None else 0.0
            entry["named"] = meta.named if meta is not None else True
        elif rest == "owner":
            owner = readable(Owner, kv)
            entry.update(
                state="running",
                owner_machine=owner.machine if owner is not None else None,
                owner_pid=owner.pid if owner is not None else None,
            )
        elif rest.startswith("run/"):
            head = readable(RunHead, kv)
            entry["_run"] = head.run if head is not None else 0
            entry["last_line"] = head.source if head is not None else None
        elif rest.startswith("j/"):
            journaled = readable(Journaled, kv)
            if journaled is not None:
                if isinstance(journaled.entry, PromptEntry):
                    entry.setdefault("_prompts", []).append(journaled)
                if isinstance(journaled.entry, DoneEntry):
                    entry["_done"] = max(entry["_done"], journaled.entry.run)
                entry["_touched"] = max(entry.get("_touched", 0.0), journaled.t)
    out = []
    for entry in found.values():
        if entry["state"] != "running" and entry.pop("_run") > entry.pop("_done"):
            entry["state"] = "unfinished"
        entry.pop("_run", None)
        entry.pop("_done", None)
        entry["touched"] = max(float(entry["created"]), entry.pop("_touched", 0.0))
        waiting = pending_prompts(entry.pop("_prompts", []))
        if entry["state"] == "running" and waiting:
            entry["state"] = "waiting"  # for input: `dsh attach` asks
            entry["asking"] = waiting[-1].text
        out.append(entry)
    return out


def pending_prompts(journaled: Iterable[Journaled]) -> list[PromptEntry]:
    """The questions among `journaled` (in journal order) still waiting for an answer:
    the last word on each is `pending`, and its bound has not run out."""
    last: dict[str, tuple[PromptEntry, float]] = {}
    for one in journaled:
        if isinstance(one.entry, PromptEntry):
            last[one.entry.id] = (one.entry, one.t)
    now = time.time()
    return [asked for asked, t in last.values() if asked.state == "pending" and t + asked.bound > now]


async def waiting_for(store: Store, keys: Keys, *, timeout: float) -> list[PromptEntry]:
    """The questions a session waits on an answer to, as its journal says."""
    return pending_prompts(await journal(store, keys, timeout=timeout))


async def read_journal(store: Store, keys: Keys, *, timeout: float) -> list[dict[str, Any]]:
    """The session's journal as its entries' JSON objects (`dsh log`, the timeline)."""
    return [as_dict(e) for e in await journal(store, keys, timeout=timeout)]

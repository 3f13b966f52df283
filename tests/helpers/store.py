"""The test's embedded store, acted on as another process would."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from dsh.store.sqlite import SqliteStore

T = TypeVar("T")


def with_store(env: dict[str, str], work: Callable[[SqliteStore], Awaitable[T]]) -> T:
    """Run `work` on the test's local store (as another process would)."""

    async def run() -> T:
        store = SqliteStore(Path(env["XDG_STATE_HOME"]) / "dsh" / "store.db")
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())

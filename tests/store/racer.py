"""A second process for the conformance suite: `python -m tests.store.racer URL KEY ME`.

Waits for a line on stdin (so that racers start together), then tries to
create KEY with a compare-and-set and prints `won` or `lost`.
"""

from __future__ import annotations

import asyncio
import sys

from dsh.store import open_store
from dsh.store.base import Compare, Put


async def race(spec: str, key: bytes, me: bytes) -> str:
    store = open_store(spec, {})
    try:
        await store.get(b"warm-up", timeout=10)  # open before the start signal
        print("ready", flush=True)
        sys.stdin.readline()
        result = await store.txn([Compare(key, "version", "==", 0)], [Put(key, me)], timeout=10)
        return "won" if result.succeeded else "lost"
    finally:
        await store.close()


if __name__ == "__main__":
    print(asyncio.run(race(sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode())), flush=True)

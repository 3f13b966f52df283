"""A client submitting lines, in a process of its own:
`python -m tests.helpers.submitter URL USER SESSION ME COUNT`.

Opens the store, prints `ready`, waits for a line on stdin (so that submitters
start together), then submits COUNT lines (`ME-0`, `ME-1`, …) to the session's
inbox through dsh.session.control and prints the number each got, one a line.
"""

from __future__ import annotations

import asyncio
import sys

from dsh.session import control
from dsh.session.keys import Keys, user_tree
from dsh.session.records import Submission
from dsh.store import open_store


async def submit(spec: str, keys: Keys, me: str, count: int) -> list[int]:
    store = open_store(spec, {})
    try:
        await store.get(b"warm-up", timeout=10)  # open before the start signal
        print("ready", flush=True)
        sys.stdin.readline()
        return [
            await control.submit(store, keys, Submission(f"{me}-{i}", "true", "<t>", 1, me), timeout=10)
            for i in range(count)
        ]
    finally:
        await store.close()


if __name__ == "__main__":
    url, user, name, me, count = sys.argv[1:6]
    for seq in asyncio.run(submit(url, Keys(user_tree(user), name), me, int(count))):
        print(seq, flush=True)

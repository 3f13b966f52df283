"""`dsh key put KEY VALUE` and `dsh key get KEY`: the user's keys in the store,
which `await key` waits for."""

from __future__ import annotations

import sys

from dsh.cli.wiring import STORE_TIMEOUT, Wiring
from dsh.errors import UsageError
from dsh.exits import Exit


def key(wiring: Wiring, rest: list[str]) -> int:
    """`dsh key put KEY VALUE` / `dsh key get KEY`: keys of the user's in the store,
    which `await key` waits for. `get` of a key not set is status 1."""
    import asyncio

    from dsh.names import key_problem
    from dsh.session import admin

    usage = "dsh key put KEY VALUE | dsh key get KEY"
    if not rest or rest[0] not in ("put", "get") or len(rest) != (3 if rest[0] == "put" else 2):
        raise UsageError(f"key takes: {usage}")
    key = rest[1]
    problem = key_problem(key)  # the rule of `await key` too
    if problem:
        raise UsageError(problem)
    store, tree = wiring.store(), wiring.tree()

    async def act() -> int:
        try:
            if rest[0] == "put":
                await admin.put_key(store, tree, key, rest[2], timeout=STORE_TIMEOUT)
                return Exit.OK
            held = await admin.get_key(store, tree, key, timeout=STORE_TIMEOUT)
        finally:
            await store.close()
        if held is None:
            sys.stderr.write(f"dsh: key {key} is not set\n")
            return Exit.NOT_OK
        sys.stdout.flush()
        sys.stdout.buffer.write(held + b"\n")  # the bytes as they were put
        sys.stdout.flush()
        return Exit.OK

    return asyncio.run(act())

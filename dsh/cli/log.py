"""`dsh log`: a session's journal as a timeline or JSON lines (followed with -f),
or the whole output of one action, fetched from its host's spool."""

from __future__ import annotations

import re
import sys

from dsh.cli.args import flag, session_name
from dsh.cli.wiring import STORE_TIMEOUT, Wiring
from dsh.errors import UsageError
from dsh.exits import Exit

#: `dsh log -f` polls the journal this often.
FOLLOW_POLL = 0.2
#: `dsh log --output` follows an action still running at most this long.
OUTPUT_TIMEOUT = 3600.0


def log(wiring: Wiring, rest: list[str]) -> int:
    """`dsh log SESSION [-f] [--json] [--output ACTION HOST]`: the journal of a
    session as a timeline (or JSON lines), followed with -f until its work is
    over; or the whole output of one action, fetched from its host's spool."""
    import asyncio

    from dsh.render import json_line
    from dsh.session.catalogue import read_journal

    settings = wiring.settings
    args = list(rest)
    as_json = settings.json or flag(args, "--json")
    follow = flag(args, "-f") or flag(args, "--follow")
    output: tuple[str, str] | None = None
    if "--output" in args:
        at = args.index("--output")
        if len(args) < at + 3:
            raise UsageError("--output needs an action and a host: dsh log SESSION --output 3.1.1 web1")
        output = (args[at + 1], args[at + 2])
        del args[at : at + 3]
        from dsh import nodeset

        if not re.fullmatch(r"[0-9]+(\.[0-9]+)+", output[0]):
            raise UsageError(f"{output[0]!r} is not an action (like 3.1.1; dsh log SESSION shows them)")
        if output[1] != "-" and not nodeset.is_alias(output[1]):
            raise UsageError(f"{output[1]!r} cannot name a host (or `-` for this machine)")
    if len(args) != 1 or args[0].startswith("-"):
        raise UsageError("log needs one session name: dsh log SESSION [-f] [--json] [--output ACTION HOST]")
    name = session_name(args[0])
    if output is not None:
        settings.session = name
        return _output(wiring, *output)
    store = wiring.store()
    keys = wiring.keys(name)

    def show(entries: list[dict[str, object]]) -> None:
        if as_json:
            for entry in entries:
                print(json_line(entry), flush=True)
        else:
            from dsh.render import timeline

            print(timeline(entries), end="", flush=True)

    async def read() -> None:
        try:
            if await store.get(keys.meta, timeout=STORE_TIMEOUT) is None:
                raise UsageError(f"no session named {name!r} in {store.name}")
            seen = 0
            while True:
                entries = await read_journal(store, keys, timeout=STORE_TIMEOUT)
                show(entries[seen:])
                seen = len(entries)
                if not follow or await store.get(keys.owner, timeout=STORE_TIMEOUT) is None:
                    return  # with -f: until nobody runs the session's work
                await asyncio.sleep(FOLLOW_POLL)
        finally:
            await store.close()

    from dsh.guard import guarded

    asyncio.run(guarded(read()))
    return Exit.OK


def _output(wiring: Wiring, action: str, host: str) -> int:
    """The stdout and stderr of one action (as the host's spool holds them), and its
    exit status as dsh's: 0 when it ended ok."""
    import asyncio

    from dsh.remote.base import Spot
    from dsh.runtime.steps import LOCAL_ALIAS

    driver = wiring.driver(None)
    session = driver.session
    assert session is not None

    def write(stream: str, data: bytes) -> None:
        target = sys.stdout if stream == "stdout" else sys.stderr
        target.flush()
        target.buffer.write(data)
        target.buffer.flush()

    async def fetch() -> int:
        try:
            meta = await session.store.get(session.keys.meta, timeout=STORE_TIMEOUT)
            if meta is None:
                raise UsageError(f"no session named {session.keys.name!r}")
            from dsh.session.codec import loads
            from dsh.session.records import Meta

            spool_name = f"{session.keys.name}.{loads(Meta, meta.value, key=meta.key).id}"
            local = host in ("-", LOCAL_ALIAS)
            make = driver.executor.host_remote
            remote = driver.executor.local if local or make is None else make(host)
            spot = Spot(spool_name, action, LOCAL_ALIAS if local else host)
            ended = await remote.follow(spot, timeout=OUTPUT_TIMEOUT, output=write)
            if ended.outcome != "ok":
                driver.say(
                    f"{action} on {host}: {ended.outcome}" + (f": {ended.message}" if ended.message else "")
                )
            return Exit.OK if ended.outcome == "ok" else Exit.NOT_OK
        finally:
            await driver.release()

    from dsh.guard import guarded

    return asyncio.run(guarded(fetch()))

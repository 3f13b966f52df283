"""The subcommands on the user's sessions as a whole: `ls`, `kill`, `rm` (one, or
every finished one untouched for long) and `signal`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dsh.cli.args import flag, one_session, session_name
from dsh.cli.wiring import STORE_TIMEOUT, Wiring
from dsh.errors import StoreError, UsageError
from dsh.exits import Exit

if TYPE_CHECKING:
    from dsh.housekeeping import Swept
    from dsh.session.lease import Session
    from dsh.store.base import Store

_RM_USAGE = "dsh rm SESSION | dsh rm --older-than D [--dry-run]"


def ls(wiring: Wiring, rest: list[str]) -> int:
    """`dsh ls [--all] [--json]`: the user's sessions, newest first; the ones dsh
    named for a single `dsh -c` or script only with --all, or while they run or
    are unfinished."""
    import asyncio
    import time

    from dsh.bytestext import to_bytes
    from dsh.render import json_line, neutralise
    from dsh.session.approvals import qualified, waiting_for
    from dsh.session.catalogue import list_sessions
    from dsh.session.keys import team_tree

    as_json = wiring.settings.json or "--json" in rest
    every = "--all" in rest
    if [a for a in rest if a not in ("--json", "--all")]:
        raise UsageError("ls takes no arguments but --all and --json")
    store = wiring.store()
    tree = wiring.tree()

    async def read() -> tuple[list[dict[str, object]], list[dict[str, object]]]:
        try:
            teams = [wiring.settings.team] if wiring.settings.team else await _teams(wiring, store)
            found = [
                {**e, "tree": f"{tree.kind}/{tree.name}"}
                for e in await list_sessions(store, tree, timeout=STORE_TIMEOUT)
            ]
            asks: list[dict[str, object]] = []
            for team in teams:
                if team != wiring.settings.team:
                    listed = await list_sessions(store, team_tree(team), timeout=STORE_TIMEOUT)
                    found += [{**e, "tree": f"t/{team}"} for e in listed]
                asks += await waiting_for(store, team, wiring.person(), timeout=STORE_TIMEOUT)
            return found, asks
        finally:
            await store.close()

    listed, asks = asyncio.run(read())
    sessions = [e for e in listed if every or e.get("named", True) or e["state"] != "idle"]
    if as_json:
        for entry in sessions:
            print(json_line(entry))
        for ask in asks:
            print(json_line({"approval": ask}))
        return Exit.OK
    now = time.time()
    for e in sessions:
        if e["tree"] != f"{tree.kind}/{tree.name}":  # another tree: a team's the person is in
            e = {**e, "name": f"team:{str(e['tree'])[2:]}/{e['name']}"}
        owned = e["state"] in ("running", "waiting")
        owner = f"{e['owner_machine']} pid {e['owner_pid']}" if owned else "-"
        age = now - float(str(e["created"]))
        last = e["last_line"] or ""
        if e["state"] == "waiting":  # for input: `dsh attach` asks
            last = f"waiting for input ({str(e['asking']).strip().rstrip(':')}): dsh attach {e['name']}"
        line = f"{e['name']:<32} {e['state']:<8} {owner:<28} {_age(age):>6}  {last}"
        print(neutralise(to_bytes(line)))  # what others wrote cannot drive this terminal
    if asks:
        print("waiting for your approval:")
    for ask in asks:
        until = time.strftime("%H:%M", time.localtime(float(str(ask["deadline"]))))
        voted = "; you approved" if ask["you_voted"] else ""
        named = qualified(str(ask["tree"]), str(ask["session"]))
        line = (
            f"  {named}  {ask['requester']}'s {ask['action']}: "
            f"{ask['approved']} of {ask['quorum']}{voted}, until {until}  "
            f"(dsh --team {ask['team']} approve {named})"
        )
        print(neutralise(to_bytes(line)))
    return Exit.OK


async def _teams(wiring: Wiring, store: Store) -> list[str]:
    """The teams the person is in (their etcd roles say), on an etcd with a user."""
    user = wiring.etcd_user()
    if user is None:  # not etcd (gRPC is not even loaded), or no user: their own tree only
        return []
    from dsh.session.access import Roles
    from dsh.store.etcd import EtcdStore
    from dsh.store.etcdauth import EtcdAuth

    if not isinstance(store, EtcdStore):
        return []
    try:
        roles = await EtcdAuth(store).user_roles(user, timeout=STORE_TIMEOUT)
    except StoreError:  # authentication off (no roles), or refused: only their own tree
        return []
    return Roles(store.raw_key(b"")).teams_of(roles or ())


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def kill(wiring: Wiring, rest: list[str]) -> int:
    """`dsh kill SESSION`: stop its work, here or on whatever machine owns it, and
    end the commands it left running on its hosts."""
    import asyncio

    from dsh.guard import guarded

    wiring.settings.session = one_session(rest, "kill")
    driver = wiring.driver(None)

    async def stop() -> int:
        try:
            return await driver.kill()
        finally:
            await driver.release()

    ended = asyncio.run(guarded(stop()))
    if ended:
        driver.say(f"ended {ended} action{'s' if ended != 1 else ''} left running")
    return Exit.OK


def rm(wiring: Wiring, rest: list[str]) -> int:
    """`dsh rm SESSION`: remove a session that does not run, and its spools; `dsh rm
    --older-than D [--dry-run]`: every finished session untouched for D."""
    import asyncio

    from dsh.lang.durations import parse_duration

    args = [a for a in rest if a != "--json"]
    dry_run = flag(args, "--dry-run")
    older_than: float | None = None
    at = next((i for i, a in enumerate(args) if a.split("=", 1)[0] == "--older-than"), None)
    if at is not None:
        if "=" in args[at]:
            raw = args.pop(at).split("=", 1)[1]
        elif at + 1 < len(args):
            raw = args.pop(at + 1)
            args.pop(at)
        else:
            raise UsageError(f"--older-than needs a duration, like 30d or 12h: {_RM_USAGE}")
        older_than = parse_duration(raw)
        if older_than is None:
            raise UsageError(f"--older-than takes a duration like 30d or 12h, not {raw!r}")
    unknown = [a for a in args if a.startswith("-")]
    if unknown:
        raise UsageError(f"rm: unknown option {unknown[0]!r}: {_RM_USAGE}")
    if older_than is not None:
        if args:
            raise UsageError(f"rm takes a session or --older-than D, not both: {_RM_USAGE}")
        return _rm_older(wiring, older_than, dry_run)
    if dry_run:
        raise UsageError(f"--dry-run goes with --older-than D: {_RM_USAGE}")
    if len(args) != 1:
        raise UsageError(f"rm needs one session name, or --older-than D: {_RM_USAGE}")
    wiring.settings.session = one_session(args, "rm")
    driver = wiring.driver(None)

    async def remove() -> list[str]:
        try:
            return await driver.remove()
        finally:
            await driver.release()

    failed = asyncio.run(remove())
    if failed:
        driver.say(f"removed; the spools on {', '.join(failed)} could not be reached and stay")
        return Exit.NOT_OK
    return Exit.OK


def _rm_older(wiring: Wiring, older_than: float, dry_run: bool) -> int:
    """`dsh rm --older-than D [--dry-run]`: remove (or, dry, list) every finished
    session of the user untouched for D, with its callbacks and its spools here
    and on its hosts; one in use meanwhile is left and named (status 1)."""
    import asyncio
    import time

    from dsh.housekeeping import Keep, expired, remove_expired
    from dsh.lang.durations import format_duration
    from dsh.render import json_line
    from dsh.session.catalogue import list_sessions
    from dsh.session.keys import machine_id
    from dsh.session.lease import Session

    settings = wiring.settings
    store = wiring.store()
    driver = wiring.driver(None, stateful=False)  # this machine's spool, and the hosts
    tree, machine, ttl = wiring.tree(), machine_id(settings.env), wiring.lease_ttl()
    keep = Keep(older_than, older_than)

    def make(name: str) -> Session:
        return Session(store, wiring.keys(name), machine, lease_ttl=ttl, timeout=STORE_TIMEOUT)

    async def work() -> list[str] | Swept:
        try:
            now = time.time()
            entries = await list_sessions(store, tree, timeout=STORE_TIMEOUT)
            if dry_run:
                return [str(e["name"]) for e in expired(entries, keep, now)]
            local, hosts = driver.executor.local, driver.executor.host_remote
            return await remove_expired(entries, keep, now, make, local, hosts)
        finally:
            try:
                await driver.release()
            finally:
                await store.close()

    done = asyncio.run(work())
    if isinstance(done, list):
        if settings.json:
            print(json_line({"would_remove": done}, ascii_only=True))
        elif done:
            print(f"would remove {_sessions(len(done))}: {', '.join(done)}")
        else:
            print(f"no finished session untouched for {format_duration(older_than)}")
        return Exit.OK
    if settings.json:
        unreached = {name: list(hosts) for name, hosts in done.unreached}
        print(
            json_line(
                {"removed": [*done.removed], "in_use": [*done.in_use], "unreached": unreached},
                ascii_only=True,
            )
        )
    elif done.removed:
        print(f"removed {_sessions(len(done.removed))}: {', '.join(done.removed)}")
    elif done.error is None:
        print(f"no finished session untouched for {format_duration(older_than)}")
    if done.in_use:
        driver.say(f"left {_sessions(len(done.in_use))} in use meanwhile: {', '.join(done.in_use)}")
    for name, hosts in done.unreached:
        driver.say(f"{name}: the spools on {', '.join(hosts)} could not be reached and stay")
    if done.error is not None:
        raise done.error
    return Exit.NOT_OK if done.in_use or done.unreached else Exit.OK


def _sessions(count: int) -> str:
    return f"{count} session{'s' if count != 1 else ''}"


def signal(wiring: Wiring, rest: list[str]) -> int:
    """`dsh signal SESSION NAME [VALUE]`: send a durable signal; the first `await
    signal NAME` of the session that looks takes it (now, or once it runs)."""
    import asyncio

    from dsh.names import SIGNAL_NAME
    from dsh.session import admin

    if len(rest) not in (2, 3):
        raise UsageError("signal needs a session and a name: dsh signal SESSION NAME [VALUE]")
    name, signal, value = session_name(rest[0]), rest[1], rest[2] if len(rest) == 3 else ""
    if not SIGNAL_NAME.fullmatch(signal):
        raise UsageError(f"{signal!r} cannot name a signal (letters, digits, '.', '_', '-')")
    store = wiring.store()
    keys = wiring.keys(name)

    async def send() -> None:
        try:
            await admin.send_signal(store, keys, signal, value, timeout=STORE_TIMEOUT)
        finally:
            await store.close()

    asyncio.run(send())
    return Exit.OK

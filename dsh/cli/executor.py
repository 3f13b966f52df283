"""The hidden `_executor` subcommand: the executor process of a session
(dsh.daemon), which dsh itself starts (`Wiring.spawn`)."""

from __future__ import annotations

import contextlib
import os

from dsh.cli.args import read_script
from dsh.cli.wiring import Wiring
from dsh.errors import UsageError


def executor(wiring: Wiring, rest: list[str]) -> int:
    """`_executor [--take] [--patience S] [--standby-for PID] [--linger S]
    [--first-client S] [-- SCRIPT ARGS…]`, with --session; started by dsh."""
    import asyncio

    from dsh.daemon import Daemon
    from dsh.guard import guarded
    from dsh.render import TextRenderer

    take, linger, first_client, patience, standby_for = False, 0.0, 0.0, 1.0, 0
    script: list[str] = []
    while rest:
        arg = rest.pop(0)
        if arg == "--take":
            take = True
        elif arg == "--standby-for" and rest and rest[0].isdigit():
            standby_for = int(rest.pop(0))
        elif arg in ("--linger", "--first-client", "--patience") and rest:
            value = float(rest.pop(0))
            if arg == "--linger":
                linger = value
            elif arg == "--first-client":
                first_client = value
            else:
                patience = value
        elif arg == "--":
            script = rest
            break
        else:
            raise UsageError(f"_executor: unexpected {arg!r}")
    if wiring.settings.session is None:
        raise UsageError("_executor needs --session")
    slow = wiring.settings.env.get("DSH_FAULT_SLOW_START", "")  # the prompt tests' fault injection
    if slow.isdigit():
        import time

        time.sleep(min(int(slow), 30))
    wiring.strict_inventory = True  # it runs lines
    session = wiring.session(wiring.store())
    daemon = Daemon(session, wiring.state_dir, TextRenderer())
    args = tuple(script[1:]) if script else None
    # Questions (a sudo password) go to the attached clients, unless a program answers them.
    prompter = wiring.prompter(daemon.reporter.message, terminal=False) or daemon.questions
    driver = wiring.driver(args, reporter=daemon.reporter, session=session, prompter=prompter)
    plan = driver.compile(read_script(script[0]), script[0]) if script else None

    def wanted() -> bool:  # a standby executor waits only while its client runs
        return not standby_for or os.path.exists(f"/proc/{standby_for}")

    work = daemon.serve(
        driver,
        take=take,
        script=plan,
        linger=linger,
        first_client=first_client,
        patience=patience,
        wanted=wanted,
    )
    names = wiring.group_names()

    async def refresh() -> None:  # completion's ClusterShell names (a client starts no thread)
        if names.stale():
            with contextlib.suppress(Exception):  # completion goes without them
                await asyncio.to_thread(names.refresh)

    async def main() -> int:
        refreshing = asyncio.ensure_future(refresh())
        try:
            return await work
        finally:
            refreshing.cancel()
            with contextlib.suppress(BaseException):
                await refreshing

    return asyncio.run(guarded(main()))

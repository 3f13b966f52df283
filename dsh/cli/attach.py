"""The prompt and `dsh attach`: clients of a session's executor process (dsh.client),
with the prompt-toolkit REPL (dsh.repl) wired in at a terminal."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from dsh import state
from dsh.cli.args import one_session
from dsh.cli.report import show_error
from dsh.cli.wiring import STORE_TIMEOUT, Wiring
from dsh.errors import DshError, LangError, UsageError
from dsh.exits import Exit

if TYPE_CHECKING:
    import subprocess

    from dsh.driver import Driver


def attach(wiring: Wiring, rest: list[str]) -> int:
    """`dsh attach [--take] SESSION`: what happened in it lately, then its live
    progress and lines from the terminal or stdin run in it; taken over first if
    its owner died (`--take`: asked of the machine that runs it)."""
    take = "--take" in rest
    wiring.settings.session = one_session([a for a in rest if a != "--take"], "attach")
    return client(wiring, attach=True, handover=take)


def client(wiring: Wiring, *, attach: bool, handover: bool = False) -> int:
    """The REPL and `dsh attach`: a client of the session's executor process,
    which is started (taking the session over if its owner died) when none runs
    on this machine. At a terminal lines are read by the prompt-toolkit REPL,
    with output printed above the prompt."""
    interactive = sys.stdin.isatty()
    if not interactive:
        return _client_in(wiring, attach=attach, interactive=False, handover=handover)
    from prompt_toolkit.patch_stdout import patch_stdout

    with patch_stdout(raw=True):
        return _client_in(wiring, attach=attach, interactive=True, handover=handover)


def _client_in(wiring: Wiring, *, attach: bool, interactive: bool, handover: bool) -> int:
    from dsh.client import Client, Detach, Link
    from dsh.readeval import completeness, read_eval
    from dsh.recent import output_tail, recent
    from dsh.render import json_line, timeline
    from dsh.runtime.wire import Replay
    from dsh.session.catalogue import waiting_for
    from dsh.session.keys import generated_name

    settings = wiring.settings
    name = settings.session or generated_name()
    store = wiring.store()
    keys = wiring.keys(name)

    def spawn(take: bool, patience: float) -> subprocess.Popen[bytes]:
        taking = ["--take"] if take else []
        if take and patience:  # a standby: it waits for the owner to let go, while this client runs
            taking += ["--patience", f"{patience:g}", "--standby-for", str(os.getpid())]
        return wiring.spawn(name, ["--first-client", "5", *taking])

    link = Link(store, keys, wiring.machine, spawn, wiring.log_path(name))

    def show_entry(entry: dict[str, Any]) -> None:  # a session followed from another machine
        if settings.json:
            print(json_line({"event": "journal", **entry}, ascii_only=True), flush=True)
        else:
            sys.stdout.write(timeline([entry]) + output_tail(entry.pop("out", "")))
            sys.stdout.flush()
        if entry.get("kind") == "prompt" and entry.get("state") == "pending":
            elsewhere()

    def elsewhere() -> None:
        show_error(
            f"dsh: session {name} waits for input on the machine that runs it; answer there "
            f"(dsh attach {name} on that machine): an answer never crosses the store"
        )

    renderer = wiring.renderer()
    client = Client(link, Replay(renderer, renderer.message), renderer.message, show_error, show_entry)
    compiler = wiring.driver(None, stateful=False)
    compiler.trust_groups = True  # its checks never wait on a group source: the executor looks
    try:
        if attach and client._run(store.get(keys.meta, timeout=STORE_TIMEOUT)) is None:
            raise UsageError(f"no session named {name!r} in {store.name}")
        if attach and not settings.json:
            sys.stdout.write(client.run(recent(store, keys, timeline, timeout=STORE_TIMEOUT)))
            sys.stdout.flush()
        client.answering.asker = wiring.prompter(renderer.message)  # before: the greeting may ask

        async def asked_before() -> None:  # followed from another machine: asked before this client came
            if client.follower is not None and await waiting_for(store, keys, timeout=STORE_TIMEOUT):
                elsewhere()

        if interactive and not attach:  # the prompt is drawn while the executor starts
            client.connect_soon(take=False, handover=handover, then=asked_before)
        else:
            client.connect(take=attach, handover=handover)
            client.run(asked_before())
        complete = completeness(lambda text, first: compiler.compile(text, "<stdin>", first))
        read = None  # not at a terminal, read_eval reads stdin on the client's loop
        builtin = None
        if interactive:
            read, builtin = _repl(wiring, client, compiler, name)
        try:
            status = read_eval(client, read, complete, "<stdin>", interactive=interactive, builtin=builtin)
        except Detach:
            stays = client.leave()
            going = "its work goes on; " if stays else ""
            renderer.message(f"detached from session {name}: {going}dsh attach {name} to come back")
            return Exit.OK
        client.leave()
        return status
    finally:
        client.close()


def _repl(
    wiring: Wiring, client: Any, compiler: Driver, name: str
) -> tuple[Callable[[str], Awaitable[str | None]], Callable[[str], str | None]]:
    """The prompt-toolkit REPL's reader and built-ins for a client (dsh.repl)."""

    from dsh.explain import explain
    from dsh.repl.app import Repl, history_path
    from dsh.repl.completion import Sources
    from dsh.repl.shell import Builtins, Toolbar
    from dsh.session.catalogue import list_sessions

    settings = wiring.settings
    aliases: list[str] = []

    def hosts() -> list[str]:
        if not aliases:
            from dsh.remote.sshconfig import SshConfig

            paths = [settings.ssh_config] if settings.ssh_config else None
            aliases.extend(SshConfig.load(paths).aliases() or ["-"])
        return [a for a in aliases if a != "-"]

    def refresh() -> None:  # what the session has bound, for checks and completion
        compiler.executor.know(client.bindings())

    def sessions() -> list[dict[str, object]]:
        return list(client.run(list_sessions(client.link.store, wiring.tree(), timeout=STORE_TIMEOUT)))

    listed = wiring.inventory(lambda text: None).listed()
    clustershell = wiring.group_names()  # read only: the session's executor keeps it fresh

    def groups() -> list[str]:  # never waits on a group source: its names come from a cache
        return sorted({*listed, *clustershell.names()})

    history = history_path(state.private_dir(wiring.state_dir), settings.store)
    repl = Repl(
        history=history,
        sources=Sources(
            hosts=hosts,
            groups=groups,
            bindings=lambda: compiler.executor.bindings.keys(),
            functions=lambda: compiler.functions.keys(),
        ),
        bound=lambda: set(compiler.executor.bindings),
        compile_=lambda text: compiler.compile(text, "<stdin>"),
        toolbar=Toolbar(name, settings.store, wiring.machine, client.progress),
        color=settings.color,
    )
    builtins = Builtins(
        say=lambda text: print(text, flush=True),
        explain=lambda text: explain(compiler.compile(text, "<explain>")),
        hosts=hosts,
        groups=lambda: dict(listed),
        sessions=sessions,
        history=history,
    )

    def read(prompt: str) -> Awaitable[str | None]:
        refresh()
        return reading(prompt)  # read_eval runs it on the client's loop

    prompting: dict[str, Any] = {"task": None, "aside": False}  # the prompt now, and why it ended

    async def reading(prompt: str) -> str | None:
        """A line from the prompt; a question of the executor's puts it aside (what was
        typed is kept) and has the terminal alone until it is answered."""
        typed = ""
        while True:
            await client.answering.idle.wait()
            task: asyncio.Future[str | None] = asyncio.ensure_future(repl.read_async(prompt, typed))
            prompting["task"] = task
            try:
                return await task
            except asyncio.CancelledError:
                if not prompting["aside"] or not task.cancelled():
                    raise
                prompting["aside"] = False
                typed = repl.session.default_buffer.text
            finally:
                prompting["task"] = None

    async def put_aside() -> None:
        task = prompting["task"]
        if task is not None and not task.done():
            prompting["aside"] = True
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)

    client.answering.before = put_aside

    def builtin(text: str) -> str | None:
        try:
            return builtins(text)
        except DshError as exc:
            show_error(exc.render() if isinstance(exc, LangError) else f"dsh: {exc.message}")
            return "done"

    return read, builtin

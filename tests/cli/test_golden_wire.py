"""Golden client↔executor messages (issue 17): what a real `dsh attach` and a real
executor say to each other over the executor's socket, byte for byte but for what
varies between runs (times, durations, pids, ids). A recording proxy sits between
them: the owner record's socket is pointed at it, it forwards both ways and keeps
each line. A change of this protocol shows as a diff of tests/golden/wire.txt; it
must be deliberate. Regenerate with:

    DSH_GOLDEN_WRITE=1 .venv/bin/python -m pytest tests/cli/test_golden_wire.py
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import tempfile
import threading
from pathlib import Path

from dsh.session.catalogue import read_journal
from dsh.session.keys import Keys, user_name, user_tree
from dsh.store.sqlite import SqliteStore
from tests.helpers.golden import normalised
from tests.helpers.wait import wait_for

GOLDEN = Path(__file__).parent.parent / "golden" / "wire.txt"
_SOCKET_PATH = re.compile(rb'"socket": ?"[^"]*"')


class Proxy:
    """A Unix socket that forwards to `target` and records every line, by direction."""

    def __init__(self, target: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dsh-wire-"))  # 0700: a client checks it
        self.path = str(self.dir / "proxy.sock")
        self.target = target
        self.lines: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        #: The client hung up: what came before is the conversation.
        self.client_gone = threading.Event()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(4)
        self.server.settimeout(30)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with self.server:
            client, _ = self.server.accept()
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(self.target)
        threading.Thread(target=self._pump, args=(client, upstream, "client>"), daemon=True).start()
        self._pump(upstream, client, "<executor")

    def _pump(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        pending = b""
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                if direction == "client>":
                    self.client_gone.set()
                with contextlib_suppress():
                    sink.shutdown(socket.SHUT_WR)
                return
            pending += data
            *whole, pending = pending.split(b"\n")
            with self.lock:
                if not self.client_gone.is_set():
                    self.lines += [(direction, line) for line in whole]
            with contextlib_suppress():
                sink.sendall(data)


class contextlib_suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: object, tb: object) -> bool:
        return isinstance(exc, OSError)


def _store(env: dict[str, str]) -> SqliteStore:
    return SqliteStore(Path(env["XDG_STATE_HOME"]) / "dsh" / "store.db")


def owner(env: dict[str, str], name: str) -> tuple[dict[str, object], int] | None:
    async def read() -> tuple[dict[str, object], int] | None:
        store = _store(env)
        try:
            held = await store.get(Keys(user_tree(user_name()), name).owner, timeout=10)
        finally:
            await store.close()
        return (json.loads(held.value), held.lease) if held is not None else None

    return asyncio.run(read())


def journal_kinds(env: dict[str, str], name: str) -> list[str]:
    async def read() -> list[str]:
        store = _store(env)
        try:
            return [
                str(e.get("kind"))
                for e in await read_journal(store, Keys(user_tree(user_name()), name), timeout=10)
            ]
        finally:
            await store.close()

    return asyncio.run(read())


def point_owner_at(env: dict[str, str], name: str, path: str) -> None:
    """The owner record's socket becomes `path` (on the owner's own lease)."""

    async def swap() -> None:
        store = _store(env)
        try:
            key = Keys(user_tree(user_name()), name).owner
            held = await store.get(key, timeout=10)
            assert held is not None
            value = _SOCKET_PATH.sub(f'"socket": "{path}"'.encode(), held.value)
            await store.put(key, value, lease=held.lease, timeout=10)
        finally:
            await store.close()

    asyncio.run(swap())


def test_the_client_executor_messages_are_the_golden_ones(run_dsh, env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "first.dsh"
    script.write_text("echo first\nsleep 2s\n")  # the client comes during the sleep
    env = {**env, "DSH_MACHINE_ID": "golden"}
    r = run_dsh(["run", "--detach", "--session", "w1", str(script)], env_extra=env)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: owner(env, "w1") is not None and "sleep" in journal_kinds(env, "w1"))
    held = owner(env, "w1")
    assert held is not None
    proxy = Proxy(str(held[0]["socket"]))
    point_owner_at(env, "w1", proxy.path)
    lines = "echo hi\nx = 5\necho $x | cat\nfalse\n"
    r = run_dsh(["attach", "w1"], input=lines, env_extra=env, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr  # the last line failed
    assert proxy.client_gone.wait(10)
    with proxy.lock:  # each direction in its order (the two interleave as they may)
        made = "".join(
            f"{direction} {normalised(line).decode('utf-8', 'backslashreplace')}\n"
            for wanted in ("<executor", "client>")
            for direction, line in proxy.lines
            if direction == wanted
        )
    made = re.sub(r'"(session|id|running)":"[^"]*"', r'"\1":"ID"', made)
    if os.environ.get("DSH_GOLDEN_WRITE") == "1":
        GOLDEN.write_text(made)
    assert made == GOLDEN.read_text()

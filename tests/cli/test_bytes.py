"""Bytes are bytes (fault report #4): values, arguments, signals, keys and output that
are not UTF-8 pass through remote execution, the journal, `dsh log`, `attach` and
`--json`; stored and `--json` they are tagged ({"b64": …}), shown they are `\\xNN`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from dsh.store.sqlite import SqliteStore
from tests.conftest import SshSetup, dsh_path

FF = os.fsdecode(b"a\xffb")  # an argument as the shell gives it: bytes that are not UTF-8


def run(env: dict[str, str], args: list[str], timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [dsh_path(), *args], env=env, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def raw_store(env: dict[str, str]) -> bytes:
    """Every key and value of the session's store, as bytes (for what is written there)."""

    async def read() -> bytes:
        store = SqliteStore(Path(env["XDG_STATE_HOME"]) / "dsh" / "store.db")
        try:
            kvs, _ = await store.range(b"/", timeout=10)
        finally:
            await store.close()
        return b"\n".join(kv.key + b" " + kv.value for kv in kvs)

    return asyncio.run(read())


def test_F4_an_argument_that_is_not_utf8_reaches_a_remote_command(env, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run(env, [*ssh_setup.args(), "-c", '@h1 printf %s "$1" | od -An -tx1', FF])
    assert r.returncode == 0, r.stderr
    assert b"61 ff 62" in r.stdout


def test_F4_a_binding_that_is_not_utf8_keeps_the_session_usable(env) -> None:  # type: ignore[no-untyped-def]
    assert run(env, ["--session", "u9", "-c", "v = printf '\\377'"]).returncode == 0
    r = run(env, ["--session", "u9", "-c", 'printf %s "$v" | od -An -tx1'])
    assert r.returncode == 0 and r.stdout.split() == [b"ff"], r.stderr
    log = run(env, ["log", "u9"])
    assert log.returncode == 0, log.stderr
    assert b'printf %s "\\xff"' in log.stdout  # shown as \xNN
    attach = run(env, ["attach", "u9"])
    assert attach.returncode == 0 and b"\\xff" in attach.stdout, attach.stderr
    stored = raw_store(env)
    assert b"\\udc" not in stored and b'"b64"' in stored  # tagged, never a lone surrogate
    as_json = run(env, ["log", "--json", "u9"])
    entries = [json.loads(line) for line in as_json.stdout.splitlines()]
    commands = [e["command"] for e in entries if e.get("kind") == "start"]
    assert {"b64": "cHJpbnRmICVzICL/IiB8IG9kIC1BbiAtdHgx"} in commands


def test_F4_a_signal_and_a_key_carry_their_bytes(env) -> None:  # type: ignore[no-untyped-def]
    assert run(env, ["--session", "sig", "-c", "echo made"]).returncode == 0
    assert run(env, ["signal", "sig", "go", FF]).returncode == 0
    r = run(
        env, ["--session", "sig", "-c", 'await signal go as who within 5s\nprintf %s "$who" | od -An -tx1']
    )
    assert r.returncode == 0 and r.stdout.split()[-3:] == [b"61", b"ff", b"62"], r.stderr
    assert run(env, ["key", "put", "k1", FF]).returncode == 0
    got = run(env, ["key", "get", "k1"])
    assert (got.returncode, got.stdout) == (0, b"a\xffb\n")
    assert run(env, ["key", "put", FF, "v"]).returncode == 0  # a key's name may be any bytes too
    assert run(env, ["key", "get", FF]).stdout == b"v\n"


def test_F4_json_output_tags_bytes_that_are_not_utf8(env) -> None:  # type: ignore[no-untyped-def]
    r = run(env, ["--json", "-c", "printf 'a\\377b\\n'"])
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    texts = [e["text"] for e in events if e["event"] == "output"]
    assert texts == [{"b64": "Yf9i"}]

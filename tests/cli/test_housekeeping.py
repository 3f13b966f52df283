"""Issue item 11, housekeeping: finished sessions no longer stay in the store for
ever. `dsh rm --older-than D [--dry-run]` removes the user's finished sessions
untouched for D (with their callbacks and spools), and the [store] settings
`keep` and `keep_unnamed` have a session's end sweep the old ones. Each test
runs against the local store and a real etcd; sessions are aged by moving
their meta and journal times back through the store, as another process would.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dsh.housekeeping import Keep, remove_expired
from dsh.remote.local import LocalShell
from dsh.session.catalogue import list_sessions
from dsh.session.keys import Keys, user_name, user_tree
from dsh.session.lease import Session
from dsh.store import open_store
from dsh.store.base import Store
from tests.conftest import dsh_path, start_dsh
from tests.etcd import Etcd

T = TypeVar("T")
DAY = 86400.0
#: A callback needs no `dsh serve` when its base URL is given.
CALLBACK_URL = "http://127.0.0.1:9"


@pytest.fixture(scope="module")
def etcd() -> Iterator[Etcd]:
    server = Etcd().start()
    yield server
    server.stop()


@pytest.fixture(params=["local", "etcd"])
def store_env(request: pytest.FixtureRequest, env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The test's environment, on the local store or (its own prefix) on etcd."""
    env.update(DSH_LEASE_TTL="1", DSH_CALLBACK_URL=CALLBACK_URL)
    if request.param == "etcd":
        server: Etcd = request.getfixturevalue("etcd")
        env.update(DSH_STORE=server.url, DSH_ETCD_PREFIX=f"hk-{tmp_path.name}")
    return env


def dsh(env: dict[str, str], args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dsh_path(), *args], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def on_store(env: dict[str, str], work: Callable[[Store], Awaitable[T]]) -> T:
    """Run `work` on the test's store (as another process would)."""

    async def run() -> T:
        store = open_store(env.get("DSH_STORE", "local"), env)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def age(env: dict[str, str], name: str, days: float) -> None:
    """Move the session's creation and journal times `days` back."""

    async def move(store: Store) -> None:
        keys = Keys(user_tree(user_name()), name)
        kvs, _ = await store.range(keys.root, timeout=10)
        for kv in kvs:
            rest = kv.key[len(keys.root) :]
            field = "created" if rest == b"meta" else "t" if rest.startswith(b"j/") else None
            if field is not None:
                record = json.loads(kv.value)
                record[field] -= days * DAY
                await store.put(kv.key, json.dumps(record).encode(), timeout=10)

    on_store(env, move)


def sessions(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    r = dsh(env, ["ls", "--all", "--json"])
    assert r.returncode == 0, r.stderr
    return {e["name"]: e for e in map(json.loads, r.stdout.splitlines())}


def unnamed(env: dict[str, str]) -> list[str]:
    return sorted(name for name, e in sessions(env).items() if not e["named"])


def callbacks(env: dict[str, str]) -> set[bytes]:
    """The keys of every callback in the store (and of their events)."""
    kvs, _ = on_store(env, lambda store: store.range(b"/dsh/v1/cb/", timeout=10))
    return {kv.key for kv in kvs}


def local_spools(env: dict[str, str], name: str) -> list[Path]:
    return list((Path(env["XDG_STATE_HOME"]) / "dsh" / "spool").glob(f"*/{name}.*"))


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def sleeping(env: dict[str, str], name: str) -> subprocess.Popen[str]:
    """A live run of session `name`, in a `sleep` of dsh's own (no process to leave)."""
    proc = start_dsh(env, ["--session", name, "-c", "echo started\nsleep 60s"])

    def asleep() -> bool:
        entries = on_store(
            env, lambda store: store.range(Keys(user_tree(user_name()), name).journal, timeout=10)
        )[0]
        return any(json.loads(kv.value)["kind"] == "sleep" for kv in entries)

    wait_for(asleep)
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=20)
    finally:
        proc.kill()


def unfinished(env: dict[str, str], name: str) -> None:
    """A session whose owner died in the middle of a statement (kill -9)."""
    proc = sleeping(env, name)
    proc.kill()
    proc.communicate(timeout=20)
    wait_for(lambda: sessions(env)[name]["state"] == "unfinished")


def test_I11_rm_older_than_removes_only_old_finished_sessions_with_their_callbacks_and_spools(
    store_env: dict[str, str],
) -> None:
    env = store_env
    r = dsh(env, ["--session", "old", "-c", "cb = callback\necho ${cb.url}"])
    assert r.returncode == 0 and r.stdout.startswith(f"{CALLBACK_URL}/cb/"), r.stderr
    assert dsh(env, ["--session", "fresh", "-c", "echo fresh"]).returncode == 0
    assert dsh(env, ["-c", "echo once"]).returncode == 0
    (once,) = unnamed(env)
    unfinished(env, "stuck")
    busy = sleeping(env, "busy")
    try:
        for name in ("old", once, "stuck", "busy"):
            age(env, name, 40)
        before = sessions(env)
        states = {name: e["state"] for name, e in before.items()}
        assert states == {
            "old": "idle",
            "fresh": "idle",
            once: "idle",
            "stuck": "unfinished",
            "busy": "running",
        }
        assert before["old"]["touched"] < time.time() - 39 * DAY < before["fresh"]["touched"]
        assert callbacks(env) and local_spools(env, "old") and local_spools(env, once)
        spools = local_spools(env, "old") + local_spools(env, once)

        dry = dsh(env, ["rm", "--older-than", "30d", "--dry-run"])
        assert (dry.returncode, dry.stdout, dry.stderr) == (0, f"would remove 2 sessions: old, {once}\n", "")
        assert set(sessions(env)) == set(before) and callbacks(env)

        r = dsh(env, ["rm", "--older-than", "30d"])
        assert (r.returncode, r.stdout, r.stderr) == (0, f"removed 2 sessions: old, {once}\n", "")
        assert set(sessions(env)) == {"fresh", "stuck", "busy"}
        assert callbacks(env) == set()  # the callbacks went with their session
        assert [p for p in spools if p.exists()] == []
        r = dsh(env, ["rm", "--older-than", "30d"])
        assert (r.returncode, r.stdout) == (0, "no finished session untouched for 30d\n")
    finally:
        stop(busy)


def test_I11_a_session_used_after_it_was_listed_is_left_and_named(store_env: dict[str, str]) -> None:
    env = store_env
    for name in ("touched", "taken", "gone"):
        assert dsh(env, ["--session", name, "-c", f"echo {name}"]).returncode == 0
        age(env, name, 40)
    entries = on_store(env, lambda store: list_sessions(store, user_tree(user_name()), timeout=10))
    # Between the listing and the removals: one is used, one is owned by a live run.
    assert dsh(env, ["--session", "touched", "-c", "echo again"]).returncode == 0
    busy = sleeping(env, "taken")
    try:
        spool_root = Path(env["XDG_STATE_HOME"]) / "dsh" / "spool" / "sweeper"

        async def sweep(store: Store) -> Any:
            def make(name: str) -> Session:
                return Session(
                    store, Keys(user_tree(user_name()), name), "sweeper", lease_ttl=1.0, timeout=10
                )

            return await remove_expired(
                entries, Keep(30 * DAY, 30 * DAY), time.time(), make, LocalShell(spool_root)
            )

        swept = on_store(env, sweep)
    finally:
        stop(busy)
    assert (swept.removed, sorted(swept.in_use), swept.error) == (("gone",), ["taken", "touched"], None)
    assert {"touched", "taken"} <= set(sessions(env)) and "gone" not in sessions(env)


def test_I11_the_sweep_removes_old_sessions_after_a_later_run(store_env: dict[str, str]) -> None:
    env = store_env
    r = dsh(env, ["-c", "cb = callback\necho ${cb.url}"])
    assert r.returncode == 0, r.stderr
    (once,) = unnamed(env)
    assert dsh(env, ["--session", "named", "-c", "echo named"]).returncode == 0
    age(env, once, 2)
    age(env, "named", 2)
    spools = local_spools(env, once)
    assert spools and callbacks(env)
    sweeping = {**env, "DSH_TEST_SWEEP": "1"}  # every session sweeps, not one in 16

    r = dsh(sweeping, ["-c", "echo later"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "later\n", "")
    left = sessions(env)
    assert once not in left and "named" in left  # keep_unnamed is 1d; keep is unset: kept
    assert len(unnamed(env)) == 1  # the later run's own
    assert callbacks(env) == set() and [p for p in spools if p.exists()] == []

    config = Path(env["XDG_CONFIG_HOME"]) / "dsh" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[store]\nkeep = "1d"\n')
    r = dsh(sweeping, ["--session", "next", "-c", "echo next"])
    assert (r.returncode, r.stderr) == (0, "")
    assert "named" not in sessions(env) and "next" in sessions(env)


def test_I11_rm_takes_a_session_or_older_than_not_both(env: dict[str, str]) -> None:
    cases = {
        ("rm", "s1", "--older-than", "30d"): "not both",
        ("rm", "--dry-run", "s1"): "--dry-run goes with --older-than",
        ("rm", "--older-than", "soon"): "a duration like 30d",
        ("rm", "--older-than"): "needs a duration",
        ("rm",): "needs one session name, or --older-than D",
        ("rm", "--all"): "unknown option '--all'",
    }
    for args, said in cases.items():
        r = dsh(env, list(args))
        assert r.returncode == 2 and said in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
    r = dsh(env, ["rm", "--older-than=1d", "--dry-run"])
    assert (r.returncode, r.stdout) == (0, "no finished session untouched for 1d\n")


def test_I11_store_settings_are_checked(env: dict[str, str]) -> None:
    config = Path(env["XDG_CONFIG_HOME"]) / "dsh" / "config.toml"
    config.parent.mkdir(parents=True)
    cases = {
        '[store]\nkeep = "soon"\n': 'store.keep must be a duration of at least a minute, like "30d"',
        '[store]\nkeep_unnamed = "10s"\n': "store.keep_unnamed must be a duration of at least a minute",
        "[store]\nkeep = 30\n": "store.keep must be a duration",
        '[store]\nforever = "1d"\n': "unknown setting store.forever (known: keep, keep_unnamed)",
        'store = "1d"\n': "[store] must be a table",
    }
    for text, said in cases.items():
        config.write_text(text)
        r = dsh(env, ["-c", "true"])
        assert r.returncode == 2 and said in r.stderr, (text, r.stderr)
    config.write_text('[store]\nkeep = "90d"\nkeep_unnamed = "2h"\n')
    assert dsh(env, ["-c", "true"]).returncode == 0

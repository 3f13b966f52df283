"""Stores written by earlier dsh releases still open with today's (issue 17): the
sessions of tests/fixtures/stores/*.db (see make.py there) are listed, their
journals read, their bindings and functions used, and the one left unfinished
by a crash is resumed."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from dsh.session.keys import user_name
from dsh.session.records import FORMAT

FIXTURES = Path(__file__).parent.parent / "fixtures" / "stores"
#: Written by: dsh at 4027279 (schema 1, leases on the wall clock), and dsh as the
#: hardening issue left it (schema 2), the commit issue 17 starts from.
STORES = ("4027279", "hardening")


@pytest.fixture(params=STORES)
def old_store(request: pytest.FixtureRequest, env: dict[str, str]) -> dict[str, str]:
    """The test's environment with a copy of a fixture store as its embedded store."""
    target = Path(env["XDG_STATE_HOME"]) / "dsh" / "store.db"
    target.parent.mkdir(parents=True, mode=0o700)
    shutil.copyfile(FIXTURES / f"{request.param}.db", target)
    target.chmod(0o600)
    me = user_name()
    if me != "root":  # the fixtures were written by root: their keys name that user
        with sqlite3.connect(target, isolation_level=None) as db:
            for table in ("kv", "history"):
                db.execute(
                    f"UPDATE {table} SET key = CAST(replace(CAST(key AS TEXT), ?, ?) AS BLOB)",
                    ("/dsh/v1/u/root/", f"/dsh/v1/u/{me}/"),
                )
    return {**env, "DSH_MACHINE_ID": "fixture"}


def test_an_old_store_lists_its_sessions_and_reads_their_journals(run_dsh, old_store) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["ls", "--all", "--json"], env_extra=old_store)
    assert r.returncode == 0, r.stderr
    names = {e["name"]: e for e in map(json.loads, r.stdout.splitlines())}
    assert set(names) == {"done1", "left1", "left2"}
    assert names["left1"]["state"] == names["left2"]["state"] == "unfinished"  # their owners' leases are over
    log = run_dsh(["log", "done1"], env_extra=old_store)
    assert log.returncode == 0, log.stderr
    for seen in ("bind  x", "signal go taken by", "await", "sleep", "done run"):
        assert seen in log.stdout, (seen, log.stdout)


def test_an_old_store_keeps_its_bindings_functions_and_keys(run_dsh, old_store) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(
        ["--session", "done1", "-c", 'echo "$x ${v.out} $hosts $got $who"\ngreet again'], env_extra=old_store
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "5 hello web[1-3] from-a-key alice\nhi again\n"
    key = run_dsh(["key", "get", "k1"], env_extra=old_store)
    assert (key.returncode, key.stdout) == (0, "from-a-key\n")


def test_an_old_store_resumes_the_run_a_crash_left(run_dsh, old_store) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["attach", "left1"], env_extra=old_store, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "after 7" in r.stdout  # the durable sleep is over; the rest ran, with the binding made before
    again = run_dsh(["ls", "--json"], env_extra=old_store)
    states = {e["name"]: e["state"] for e in map(json.loads, again.stdout.splitlines())}
    assert states["left1"] == "idle"


def test_a_record_of_a_newer_format_is_refused_with_a_sentence(run_dsh, env) -> None:  # type: ignore[no-untyped-def]
    assert run_dsh(["--session", "new1", "-c", "echo made"]).returncode == 0
    store = Path(env["XDG_STATE_HOME"]) / "dsh" / "store.db"
    key = f"/dsh/v1/u/{user_name()}/s/new1/meta".encode()
    with sqlite3.connect(store, isolation_level=None) as db:
        (raw,) = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        newer = bytes(raw).replace(b'"v": %d' % FORMAT, b'"v": 99')
        db.execute("UPDATE kv SET value = ? WHERE key = ?", (newer, key))
    r = run_dsh(["--session", "new1", "-c", "echo again"])
    assert r.returncode == 3, r.stderr
    assert f"new1/meta: written by a newer dsh (format 99 > {FORMAT}); upgrade dsh to read it" in r.stderr
    assert "Traceback" not in r.stderr and "again" not in r.stdout

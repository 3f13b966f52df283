"""Stored records as golden text: each key and value of a store, with what varies from
one run to the next (times, durations, pids, random ids) replaced by placeholders,
the rest byte for byte as the writers wrote it."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

_NUMBER = re.compile(rb'"(t|at|since|created|deadline|seconds|renewed|bound)": ?-?[0-9][0-9.e+-]*')
_PID = re.compile(rb'"pid": ?[0-9]+')
_ID = re.compile(rb'"(id|plan_id)": ?"[0-9a-f]+"')
_SOCKET = re.compile(rb'"socket": ?"[^"]*"')
#: A prompt names the login user (whoever runs the tests).
_WHO = re.compile(rb'password for [^ "\\]+')
#: The fixture's work directory (a copy's local path is absolute).
_WORK = re.compile(rb"/tmp/dsh-fixture-[A-Za-z0-9_]+")


def normalised(value: bytes) -> bytes:
    value = _NUMBER.sub(rb'"\1":NUMBER', value)
    value = _PID.sub(b'"pid":PID', value)
    value = _ID.sub(rb'"\1":"ID"', value)
    value = _WHO.sub(b"password for USER", value)
    value = _WORK.sub(b"WORK", value)
    return _SOCKET.sub(b'"socket":"SOCKET"', value)


def records(store: Path) -> str:
    """Every key of the store and its value, normalised, one per line, in key order
    (the user's name in keys as USER)."""
    from dsh.session.keys import user_name

    mine = f"/dsh/v1/u/{user_name()}/".encode()
    with sqlite3.connect(store) as db:
        rows = db.execute("SELECT key, value FROM kv ORDER BY key").fetchall()
    return "".join(
        f"{bytes(key).replace(mine, b'/dsh/v1/u/USER/').decode('utf-8', 'backslashreplace')}\t"
        f"{normalised(bytes(value)).decode('utf-8', 'backslashreplace')}\n"
        for key, value in rows
    )

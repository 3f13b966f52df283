"""A full disk under the spool or the store is said as such (fault report #12).

A 400 KiB tmpfs, mounted here (root only) and unmounted whatever happens, is
the state directory; a command that writes 1 MB fills it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import tmpfs

pytestmark = pytest.mark.skipif(bool(tmpfs.missing()), reason=tmpfs.missing() or "-")

FLOOD = "head -c 1000000 /dev/zero | tr '\\0' a; echo; echo done-first\necho second"


def test_F12_a_full_spool_disk_is_said_not_a_runner_gone(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The store elsewhere, the spool (under XDG_STATE_HOME) on the full disk."""
    with tmpfs.Tmpfs(tmp_path / "full") as full:
        store = f"sqlite://{tmp_path / 'store.db'}"
        first = run_dsh(
            ["--store", store, "--session", "f3", "-c", FLOOD], env_extra={"XDG_STATE_HOME": str(full)}
        )
        assert first.returncode == 1
        log = run_dsh(["--store", store, "log", "f3"], env_extra={"XDG_STATE_HOME": str(full)}).stdout
        assert "lost: the command's end could not be written: the spool's disk is full (" in log
        assert "1.1.1@local.status: No space left on device)" in log
        assert "runner is gone" not in log
        again = run_dsh(
            ["--store", store, "--session", "f3", "-c", "echo third"], env_extra={"XDG_STATE_HOME": str(full)}
        )
        assert again.returncode == 1 and "third" not in again.stdout
        assert "failed: nothing started: the spool's disk is full (" in again.stderr
        assert "2.1.1@local.claim: No space left on device)" in again.stderr


def test_F12_a_full_store_disk_is_said_with_enospc(run_dsh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with tmpfs.Tmpfs(tmp_path / "full") as full:
        r = run_dsh(["--session", "f4", "-c", FLOOD], env_extra={"XDG_STATE_HOME": str(full)})
        assert r.returncode == 3, r.stderr
        assert "the store's disk is full: no space left on the device of " in r.stderr
        assert "(ENOSPC; SQLite said: " in r.stderr
        assert "internal error" not in r.stderr

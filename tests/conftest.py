"""Shared fixtures: the installed `dsh` command, a clean environment, temp XDG dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def dsh_path() -> str:
    found = shutil.which("dsh", path=str(BIN)) or shutil.which("dsh")
    assert found, "the dsh command is not installed (pip install -e '.[test]')"
    return found


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment with private XDG dirs, no colour, and the venv first on PATH."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("DSH_")}
    e.update(
        {
            "NO_COLOR": "1",
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "PATH": f"{BIN}{os.pathsep}{e.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return e


@pytest.fixture
def run_dsh(env: dict[str, str], tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run the dsh command; returns the CompletedProcess (text mode)."""

    def run(
        args: Sequence[str], *, input: str | None = None, timeout: float = 30, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [dsh_path(), *args],
            input=input if input is not None else "",
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            cwd=cwd or tmp_path,
        )

    return run

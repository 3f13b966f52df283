"""The README's first command, on a fresh copy of the project, installs dsh and runs it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.lock import norm, pins

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    section = ROOT.joinpath("README.md").read_text().split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, re.S)]


def test_readme_gives_two_commands_and_ci_runs_the_second() -> None:
    setup, test = readme_commands()
    assert (setup, test) == ("./scripts/setup", "./scripts/test")
    ci = ROOT.joinpath(".ci", "run").read_text()
    assert ci.rstrip().splitlines()[-1] == f"exec {test}"


def test_setup_on_a_fresh_copy(tmp_path: Path, env: dict[str, str]) -> None:
    copy = tmp_path / "dsh"
    shutil.copytree(
        ROOT,
        copy,
        ignore=shutil.ignore_patterns(
            ".venv", ".venv-drift", ".tools", ".git", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis"
        ),
    )
    setup, _test = readme_commands()
    # A fresh machine: the test run's own virtualenv is not on PATH.
    venv_bin = str(Path(sys.executable).parent)
    env = {**env, "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)}
    env.pop("VIRTUAL_ENV", None)
    r = subprocess.run(setup, shell=True, cwd=copy, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "hello from dsh" in r.stdout
    hello = subprocess.run(
        [str(copy / ".venv" / "bin" / "dsh"), "-c", "echo hello"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (hello.returncode, hello.stdout) == (0, "hello\n")
    # What it installed is the lock's, to the version.
    locked = pins(ROOT / "requirements" / "runtime.txt")
    freeze = subprocess.run(
        [str(copy / ".venv" / "bin" / "python"), "-m", "pip", "freeze", "--all", "--exclude-editable"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    installed = dict(line.split("==", 1) for line in freeze.stdout.split())
    assert {norm(k): v for k, v in installed.items()} == {
        k: v for k, (v, applies) in locked.items() if applies
    }

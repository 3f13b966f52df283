"""Other OS users on this machine (dshtest, dshtest2: scripts/system-deps makes
them), for the tests that need two people with two logins (issue 21).

The venv's interpreter is not theirs to run (it lives under /root, 0700, and the
checkout may be anywhere), so `OtherPython` builds one they can: a venv of
Debian's /usr/bin/python3 (the same 3.11 ABI as the venv's wheels) whose one .pth
adds a hard-linked copy of the venv's site-packages and a copy of dsh's source,
in a directory everyone may read. It fails with a sentence, never skips, when
that cannot be done.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
ROOT = Path(__file__).resolve().parents[2]


class OtherPython:
    """An interpreter with dsh and its libraries, that any OS user can run."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dsh-otherpy-"))
        self.dir.chmod(0o755)
        self.python = str(self.dir / "venv" / "bin" / "python3")

    def build(self) -> OtherPython:
        found = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
        if found.returncode != 0 or found.stdout.strip() != mine:
            raise RuntimeError(f"{SYSTEM_PYTHON} is not Python {mine}: another OS user cannot run dsh here")
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(self.dir / "venv")], check=True)
        site = self.dir / "site"
        main_site = Path(sysconfig.get_paths()["purelib"])
        try:  # hard links: the venv's files are 0644 already, and nothing is copied
            subprocess.run(["cp", "-al", f"{main_site}/.", str(site)], check=True, capture_output=True)
        except subprocess.CalledProcessError:
            shutil.copytree(main_site, site, symlinks=True, dirs_exist_ok=True)
        for editable in site.glob("__editable__*"):  # it names the checkout, which may be private
            editable.unlink()
        source = self.dir / "src"
        shutil.copytree(ROOT / "dsh", source / "dsh", ignore=shutil.ignore_patterns("__pycache__"))
        (venv_site,) = (self.dir / "venv" / "lib").glob("python3*/site-packages")
        (venv_site / "dsh-tests.pth").write_text(f"import site; site.addsitedir({str(site)!r})\n{source}\n")
        for folder, dirs, files in os.walk(self.dir):
            for name in dirs:
                os.chmod(os.path.join(folder, name), 0o755)
            for name in files:
                path = os.path.join(folder, name)
                if not os.path.islink(path) and os.stat(path).st_mode & 0o004 == 0:
                    raise RuntimeError(f"{path} is not readable by other users")
        return self

    def cleanup(self) -> None:
        subprocess.run(["pkill", "-KILL", "-f", f"^{self.python} "], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class OsUser:
    """One OS user running dsh: a home for its XDG dirs (private, theirs) and `run`."""

    def __init__(self, name: str, python: OtherPython, env: Mapping[str, str]) -> None:
        entry = pwd.getpwnam(name)
        self.name, self.uid, self.gid = name, entry.pw_uid, entry.pw_gid
        self.python = python
        self.dir = Path(tempfile.mkdtemp(prefix=f"dsh-{name}-"))
        self.dir.chmod(0o700)
        os.chown(self.dir, self.uid, self.gid)
        self.env = {
            "HOME": entry.pw_dir,
            "USER": name,
            "LOGNAME": name,
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "NO_COLOR": "1",
            "PYTHONUNBUFFERED": "1",
            "XDG_STATE_HOME": str(self.dir / "state"),
            "XDG_CONFIG_HOME": str(self.dir / "config"),
            **env,
        }

    def file(self, name: str, text: str, mode: int = 0o644) -> Path:
        """A file of theirs in their directory."""
        path = self.dir / name
        path.write_text(text)
        path.chmod(mode)
        os.chown(path, self.uid, self.gid)
        return path

    def run(
        self,
        args: Sequence[str],
        *,
        input: str = "",
        timeout: float = 30,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`dsh ARGS` as this OS user, from their directory, with only their environment."""
        pairs = [f"{k}={v}" for k, v in {**self.env, **(env or {})}.items()]
        return subprocess.run(
            ["runuser", "-u", self.name, "--", "env", "-i", *pairs, self.python.python, "-m", "dsh", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
        )

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def other_python() -> Iterator[OtherPython]:
    """dsh's interpreter for other OS users (a fixture: import it into a test module)."""
    python = OtherPython()
    try:
        yield python.build()
    finally:
        python.cleanup()

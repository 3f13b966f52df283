"""A small tmpfs that fills up: a disk that is full for real (root only).

`Tmpfs(path, size)` mounts a tmpfs of `size` at `path` (made if need be) and
unmounts it when the `with` block ends, whatever happened in it; `fill()`
writes until it has no space left, for a test that needs it full before it
starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType


def missing() -> str:
    """Why a tmpfs cannot be mounted here ("" when it can)."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount and umount are missing"
    return ""


class Tmpfs:
    def __init__(self, path: Path, size: str = "400k") -> None:
        self.path = path
        self.size = size

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.path)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        return self.path

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Lazily: a process still holding a file in it must not keep the test's mount.
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)

    def fill(self) -> None:
        """Write one file until the tmpfs has no space left."""
        with contextlib.suppress(OSError), (self.path / "filler").open("wb") as fh:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()

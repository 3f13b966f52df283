"""How big a local file or tree is now: what a copy's default timeout grows with.

The compiler does no I/O; the driver hands it `local_size` to ask (a put's SRC,
when its path is known at compile time). A file is its size; a directory, the
total size of the regular files under it (symbolic links are not followed),
counted in a walk of at most MAX_ENTRIES entries. Missing, unreadable, or too
many entries: None (not known, and the default timeout stays the default).
"""

from __future__ import annotations

import os
import stat

#: The most directory entries one size looks at before it gives up (None).
MAX_ENTRIES = 100_000


def local_size(path: str, max_entries: int = MAX_ENTRIES) -> int | None:
    """The size in bytes of the file or tree at `path` (relative: to the working
    directory of this process), or None when it cannot be known."""
    try:
        top = os.stat(os.path.abspath(path))
    except (OSError, ValueError):  # missing, unreadable, a NUL, a name too long
        return None
    if not stat.S_ISDIR(top.st_mode):
        return top.st_size if stat.S_ISREG(top.st_mode) else None
    total = 0
    seen = 0
    stack = [os.path.abspath(path)]
    try:
        while stack:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    seen += 1
                    if seen > max_entries:
                        return None
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
    except (OSError, ValueError):
        return None
    return total

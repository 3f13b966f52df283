"""Who runs this process on this machine: its OS user's name (the owner of its
state directory, sockets and local spools)."""

from __future__ import annotations

import os


def os_user() -> str:
    """The OS user's name (`uidN` for a uid with no name)."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid{os.getuid()}"

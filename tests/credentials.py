"""The test users' passwords (scripts/system-deps sets them, with a sudoers rule that
asks for them every time and allows only `id` and `true` as root, and `sh` as the second
test user to the first)."""

from __future__ import annotations

from pathlib import Path

from tests.sshd import USER

PASSWORD = "dsh-test-pw-1"
PASSWORD2 = "dsh-test-pw-2"
SUDOERS = Path("/etc/sudoers.d/dsh-tests")


def sudo_ready() -> bool:
    """Whether scripts/system-deps has set the passwords and the rule up (v2)."""
    try:
        return SUDOERS.read_text().startswith(f"# dsh tests v2: {USER} ")
    except OSError:
        return False

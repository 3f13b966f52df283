"""No library noise reaches users: asyncssh's deprecation warnings are filtered, and only those."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import SshSetup


def test_a_remote_line_prints_nothing_on_stderr(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "@h1 true"])
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert "h1" in r.stdout


def test_a_remote_line_with_warnings_turned_into_errors_still_runs(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    # PYTHONWARNINGS=error would make an unfiltered deprecation raise while asyncssh imports.
    r = run_dsh([*ssh_setup.args(), "-c", "@h1 echo fine"], env_extra={"PYTHONWARNINGS": "error"})
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert "fine" in r.stdout


def _warnings_after_import(body: str) -> str:
    """Import the adapter in a fresh interpreter, then run BODY; return what it printed on stderr."""
    code = "import warnings\nimport dsh.remote.ssh\n" + textwrap.dedent(body)
    r = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    return r.stderr


def test_the_filter_is_only_that_category_from_asyncssh() -> None:
    err = _warnings_after_import(
        """
        from cryptography.utils import CryptographyDeprecationWarning as C
        warnings.warn_explicit(C("silenced"), C, "misc.py", 1, module="asyncssh.crypto.misc")
        warnings.warn_explicit(C("from elsewhere"), C, "x.py", 1, module="dsh.remote.x")
        warnings.warn_explicit(C("not asyncssh"), C, "y.py", 1, module="asyncsshx")
        warnings.warn_explicit(UserWarning("another kind"), UserWarning, "z.py", 1, module="asyncssh.misc")
        """
    )
    assert "silenced" not in err
    assert "from elsewhere" in err and "not asyncssh" in err and "another kind" in err


def test_a_timeout_is_said_as_the_line_gave_it(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    """The time spent connecting (and booting the agent, with eager) comes off the action's
    budget, never off what its message says (it said `no exit within 0.998698s`)."""
    r = run_dsh([*ssh_setup.args(), "-c", "@h1 command sleep 7.37 | within 2s"])
    assert r.returncode == 1, r.stdout + r.stderr
    assert "no exit within 2s" in r.stdout, r.stdout

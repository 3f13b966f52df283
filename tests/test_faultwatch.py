"""The guard of tests/conftest.py: a Python process that prints an internal error or a
traceback is seen (and the test that started it fails), unless -v asked for it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import FAULTS


def _faults_of(code: str, *args: str) -> list[str]:
    before = set(FAULTS.iterdir())
    subprocess.run([sys.executable, "-c", code, *args], capture_output=True, timeout=60)
    found = sorted(set(FAULTS.iterdir()) - before)
    texts = [path.read_text() for path in found]
    for path in found:  # seen: this test expected them
        path.unlink()
    return texts


def test_a_traceback_and_an_internal_error_are_seen() -> None:
    assert any("ZeroDivisionError" in t for t in _faults_of("1 / 0"))
    assert any(
        "internal error" in t for t in _faults_of("import sys; sys.stderr.write('dsh: internal error: X\\n')")
    )


def test_one_asked_for_with_v_is_not() -> None:
    assert _faults_of("1 / 0", "-v") == []
    assert _faults_of("import sys; sys.stderr.write('a sentence\\n')") == []

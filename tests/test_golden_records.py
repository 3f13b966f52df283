"""Golden records (issue 17): what today's writers put in the store, byte for byte but
for what varies between runs (tests/helpers/golden.py). A change to a stored format
shows here as a diff of tests/golden/records.txt; it must be deliberate (and, once
records carry a version, come with a new version). Regenerate with:

    DSH_GOLDEN_WRITE=1 .venv/bin/python -m pytest tests/test_golden_records.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers.golden import records

ROOT = Path(__file__).parent.parent
GOLDEN = ROOT / "tests" / "golden" / "records.txt"


def test_the_stored_records_are_the_golden_ones(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fixtures" / "stores" / "make.py"), str(ROOT), str(store)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    made = records(store)
    if os.environ.get("DSH_GOLDEN_WRITE") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(made)
    assert made == GOLDEN.read_text()

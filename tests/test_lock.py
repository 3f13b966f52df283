"""The lock (requirements/*.txt, from uv.lock) agrees with pyproject.toml's ranges and pins by hash."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.helpers.lock import hashed, norm, pins

ROOT = Path(__file__).parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCKS = {name: ROOT / "requirements" / f"{name}.txt" for name in ("runtime", "test", "bench")}


def wanted(lock: str) -> list[Requirement]:
    reqs = [*PROJECT["project"]["dependencies"], *PROJECT["dependency-groups"]["install"]]
    if lock != "runtime":
        reqs += PROJECT["project"]["optional-dependencies"][lock]
    return [Requirement(r) for r in reqs]


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_dependency_is_pinned_within_its_range(lock: str) -> None:
    pinned = pins(LOCKS[lock])
    for req in wanted(lock):
        assert norm(req.name) in pinned, f"{req.name} is not in {LOCKS[lock].name}"
        version, _applies = pinned[norm(req.name)]
        assert req.specifier.contains(version, prereleases=True), f"{lock}: {req.name}=={version} not {req}"


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_pin_has_a_hash(lock: str) -> None:
    counts = hashed(LOCKS[lock])
    assert counts and all(counts.values()), [name for name, n in counts.items() if not n]


def test_the_locks_come_from_one_resolution() -> None:
    test = pins(LOCKS["test"])
    for lock in ("runtime", "bench"):
        for name, (version, _applies) in pins(LOCKS[lock]).items():
            assert test[name][0] == version, f"{lock} pins {name}=={version}, test {test[name][0]}"

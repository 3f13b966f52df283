"""Fixtures of the remote layer's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.hostagent import Link


@pytest.fixture
def links() -> Iterator[list[Link]]:
    """Agents started over pipes (tests.helpers.hostagent.Link) by a test: each is
    closed after it, and must have said nothing on stderr (a traceback?)."""
    made: list[Link] = []
    yield made
    for link in made:
        assert link.close() == b"", "the agent printed on stderr (a traceback?)"

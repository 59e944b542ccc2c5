"""Fixtures shared by unit tests that open real Nodes on a data dir."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from peer.node import Node


@pytest.fixture
def opened() -> Iterator[list[Node]]:
    """Nodes a test opens (it appends them); their event logs are closed afterwards."""
    nodes: list[Node] = []
    yield nodes
    for n in nodes:
        n.log.close()

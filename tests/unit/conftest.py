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


@pytest.fixture
def no_jobless_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobless events (peer/log/jobless.py) leave memory as soon as their origin's head
    covers them, not a block of seqs later: for tests of what happens once they left."""
    import importlib  # (`peer.log.fold` the attribute is the function `fold`)

    monkeypatch.setattr(importlib.import_module("peer.log.fold"), "JOBLESS_WINDOW", 0)

"""Fixtures shared by unit tests: real Nodes on a data dir, an in-memory SQLite database."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from peer.config import PeerConfig
from peer.node import Node
from tests.unit.api_client import api_client


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    """An in-memory SQLite database in autocommit mode (as the peer opens its log)."""
    c = sqlite3.connect(":memory:", isolation_level=None)
    yield c
    c.close()


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


@pytest.fixture
async def served_node(tmp_path: Path) -> AsyncIterator[tuple[TestClient[Any, Any], Node]]:
    """A loopback peer's app (not started) with a client sending its token, and the peer."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    try:
        async with api_client(node) as c:
            yield c, node
    finally:
        node.log.close()


@pytest.fixture
def shm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tmpfs that tasks' scratch may use (peer.jobs.scratch.TMPFS): a directory of the
    test's (executor workers' targets are told where it is)."""
    from peer.jobs import scratch

    d = tmp_path / "shm"
    d.mkdir()
    monkeypatch.setattr(scratch, "TMPFS", str(d))
    return d

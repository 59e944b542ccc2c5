"""Rows of the data dir's events.sqlite damaged or edited while the peer runs, met by what it
serves from the file (snapshot streams, events read back from disk for catch-up and
anti-entropy): read by the same checks as at start, a bad row is left out (logged) or the
serve fails with an error naming the file, never a traceback; nothing stored is deleted."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.errors import StoreError
from peer.log.events import MAX_CLOCK
from peer.node import Node

OTHER = "othr0000000000000000"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path / "a", slots=1, mdns=False))
    try:
        yield n
    finally:
        n.log.close()


def _edit(n: Node, *stmts: str) -> None:
    """Write into the peer's file behind its back, on a connection of our own."""
    db = sqlite3.connect(n.log.path)
    try:
        for sql in stmts:
            db.execute(sql)
        db.commit()
    finally:
        db.close()


def _served_floors(n: Node) -> dict[str, int]:
    """The floors a snapshot stream (v2) announces in its signed trailer."""
    body = b"".join(n.catchup.snapshot_stream())
    floors: dict[str, int] = json.loads(body.rsplit(b"\n", 1)[-1])["floors"]
    return floors


def test_a_snapshot_serve_leaves_out_an_own_compaction_floor_past_max_own_seq(
        node: Node, caplog: pytest.LogCaptureFixture) -> None:
    """As the start does (peer.log.sqlite.seq_rows): served, it told every taker that our
    seqs up to 2^63-1 were dropped, and our later events were held as dropped there."""
    _edit(node, f"INSERT INTO compact_floors VALUES ('{node.peer_id}', {MAX_CLOCK})",
          f"INSERT INTO compact_floors VALUES ('{OTHER}', 5)")
    with caplog.at_level(logging.WARNING):
        assert _served_floors(node) == {OTHER: 5}
    assert (f"{node.log.path}: the compact_floors row of this peer ({node.peer_id[:16]}) "
            f"holds {MAX_CLOCK}") in caplog.text


def test_a_compaction_floors_table_of_other_columns_fails_a_serve_naming_the_file(
        node: Node) -> None:
    """The serve's read raised sqlite3.OperationalError (the start's read named the file)."""
    _edit(node, "DROP TABLE compact_floors", "CREATE TABLE compact_floors (a, b)")
    with pytest.raises(StoreError, match=re.escape(
            f"cannot use the event log {node.log.path} (its table compact_floors): no such "
            "column")):
        _served_floors(node)

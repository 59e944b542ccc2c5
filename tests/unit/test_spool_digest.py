"""A taken version 3 snapshot's spool waits in snapshots/ for `Compactor.ingest`; its bytes
were hashed into the signed trailer as they arrived, but the re-read checked each frame's
shape only: a bit flipped on disk since (a CID's character) became another well-formed row,
taken as checked (review r1 L2, /tmp/s47r/spool_flip.py). The digest is kept with the
pending row now, and the spool is checked whole against it before its first row is taken
after an open (a slice per `ingest` call)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from peer.log import compact as compact_mod
from peer.node import Node
from tests.unit.test_compaction import _open, _pair, _run_history, _take_v3


def _taken_spool(tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
                 ) -> tuple[Node, Node, str]:
    """b took a's version 3 snapshot; its cache and provider rows wait in the spool."""
    a, b = _pair(tmp_path, opened)
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    monkeypatch.setattr(b.catchup, "_ensure_ingest", lambda: None)  # (taken by the test)
    assert _take_v3(a, b, tmp_path) is None
    (path, at, _), = b.index.snapshots_pending()
    assert at > 0 and b.index.spool_sum(path) is not None
    return a, b, path


def _flip_a_cid(path: str) -> None:
    """One bit of a CID text in the spool: 'b' -> 'c', the frame still well formed."""
    raw = Path(path).read_bytes()
    m = re.search(rb"bafk[a-z2-7]{20}", raw)
    assert m is not None
    i = m.start() + 10 + next(k for k, ch in enumerate(raw[m.start() + 10:m.end()])
                              if ch in b"abdefghijklmnopqrstuvwxyz234567")
    Path(path).write_bytes(raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:])


def test_a_spool_changed_on_disk_after_it_was_taken_gives_no_row(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, path = _taken_spool(tmp_path, opened, monkeypatch)
    b.log.close()  # (as after a restart: the spool is read back from disk)
    opened.remove(b)
    _flip_a_cid(path)
    b2 = _open(tmp_path / "b", opened)
    assert not b2.compactor.ingest()
    assert list(b2.index.providers()) == [] and list(b2.index.entries()) == []
    assert b2.keyring.refused.by_origin[a.peer_id]["snapshot_malformed"] == 1
    assert not b2.index.snapshots_pending() and not Path(path).exists()
    assert b2.index.spool_sum(path) is None


def test_an_intact_spool_is_checked_a_slice_per_call_then_taken(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, path = _taken_spool(tmp_path, opened, monkeypatch)
    monkeypatch.setattr(compact_mod, "INGEST_CHECK_BYTES", 64)
    size = Path(path).stat().st_size
    calls = 0
    while True:  # (bounded: a slice of 64 bytes per call, asserted)
        more = b.compactor.ingest()
        calls += 1
        if b.compactor.rows_taken:
            break
        assert more and calls <= size // 64
    assert calls == size // 64 + 1  # the last slice is hashed by the call that takes rows
    while more:
        more = b.compactor.ingest()
    assert sorted(b.index.providers()) == sorted(a.index.providers())
    assert {e.key for e in b.index.entries()} == {e.key for e in a.index.entries()}
    assert not b.index.snapshots_pending() and b.index.spool_sum(path) is None


@pytest.mark.parametrize("sql", ["DELETE FROM snapshot_sums",
                                 "UPDATE snapshot_sums SET sha = 'not a digest'"])
def test_a_pending_row_without_a_digest_is_taken_as_before(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch, sql: str) -> None:
    """An earlier release's row (no digest kept) is taken as it is, as is one whose digest
    does not read back (logged)."""
    a, b, path = _taken_spool(tmp_path, opened, monkeypatch)
    b.log.db.execute(sql)
    assert b.index.spool_sum(path) is None
    while b.compactor.ingest():
        pass
    assert sorted(b.index.providers()) == sorted(a.index.providers())


def test_a_pending_row_that_does_not_read_back_takes_its_digest_with_it(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """The reread of session 47's merge: `snapshots_pending` deletes a row that does not
    read back (here its offset is negative), and the digest kept for it (`snapshot_sums`)
    was left for ever, nothing else deleting it."""
    _, b, _ = _taken_spool(tmp_path, opened, monkeypatch)
    b.log.db.execute("UPDATE snapshot_pending SET at = -1")
    assert b.index.snapshots_pending() == []
    assert b.log.db.execute("SELECT count(*) FROM snapshot_sums").fetchone() == (0,)

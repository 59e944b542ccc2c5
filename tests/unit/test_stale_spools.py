"""A snapshot download cut by a kill -9 (peer.catchup's spool under the data dir's tmp/) is
removed by the start sweep (peer.jobs.janitor.sweep_stale); the rest of tmp/ is left."""

from __future__ import annotations

from pathlib import Path

from peer.ipfs.embedded import EmbeddedStore
from peer.jobs.janitor import sweep_stale


def test_the_start_sweep_removes_cut_snapshot_downloads_only(tmp_path: Path) -> None:
    data = tmp_path / "peer"
    s = EmbeddedStore(data / "store")
    (data / "tmp").mkdir()
    for name in ("snapshot-41-0.rows", "snapshot-rows-41-1.frames"):
        (data / "tmp" / name).write_bytes(b"partial")
    (data / "tmp" / "numba-x").write_bytes(b"a worker's temp file")  # TMPDIR of the peer
    assert sweep_stale(data, s) == {"snapshot spools": 2}
    assert [p.name for p in (data / "tmp").iterdir()] == ["numba-x"]

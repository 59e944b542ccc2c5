"""gc over a pinned DAG one of whose linking blocks cannot be read (review r1 H1,
/tmp/s47r/gc_corrupt_root.py): it used to free every intact block below the damaged one
(12 leaves of a 3 MiB upload for one flipped bit of its root). Now it collects nothing, as
Kubo's stops with ErrCannotFetchAllLinks, and says which pin and which block file; a
corrupt block file is moved aside (store/corrupt/), not deleted, so that it can be looked
at or put back; once the block is back, gc collects what is really unreachable."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer.cids import Cid, parse_cid
from peer.ipfs import EmbeddedStore, blocks
from peer.ipfs.store import GcHeldBack
from peer.jobs.janitor import Janitor, JanitorConfig
from peer.log import MeshState

CHUNK = 256 * 1024  # the importer's chunk: a file of 3 chunks is a dag-pb root over 3 leaves


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def _pinned_upload(store: EmbeddedStore) -> tuple[Cid, list[Path], bytes]:
    """A pinned two-level DAG (a root over three leaves), its leaves' files and its root's
    bytes; and one unpinned block beside it, which a gc may free."""
    data = b"".join(bytes([i]) * CHUNK for i in range(3))
    cid = parse_cid(store.add_bytes(data))
    store.pin(str(cid))
    leaves = [store.blocks.path(parse_cid(c).key) for c, _ in store.dag(str(cid))
              if c != str(cid)]
    assert len(leaves) == 3 and all(p.exists() for p in leaves)
    return cid, leaves, store.blocks.get(cid)


def _corrupt_files(store: EmbeddedStore) -> list[Path]:
    d = store.blocks.corrupt_dir
    return sorted(d.iterdir()) if d.exists() else []


@pytest.mark.parametrize("damage", ["flip", "remove"])
def test_gc_frees_nothing_below_a_pinned_root_it_cannot_read(
        store: EmbeddedStore, damage: str) -> None:
    cid, leaves, root_bytes = _pinned_upload(store)
    loose = store.add_bytes(b"loose, unpinned")
    root = store.blocks.path(cid.key)
    if damage == "flip":
        b = bytearray(root_bytes)
        b[10] ^= 1
        root.write_bytes(bytes(b))
    else:
        root.unlink()
    with pytest.raises(GcHeldBack) as e:
        store.gc()
    assert len(e.value.held) == 1
    assert f"pin {cid}" in e.value.held[0] and str(root) in e.value.held[0]
    assert ("is corrupt" if damage == "flip" else "is missing") in e.value.held[0]
    assert "collected nothing" in e.value.message and str(cid) in e.value.message
    assert all(p.exists() for p in leaves) and store.has(loose)  # nothing freed
    assert store.pins() == [str(cid)]
    if damage == "flip":  # moved aside, as it was, not deleted
        aside = _corrupt_files(store)
        assert [p.name.partition(".")[0] for p in aside] == [cid.key]
        assert aside[0].read_bytes() == bytes(b)
        assert not root.exists()
    with pytest.raises(GcHeldBack):  # (each gc, until the block is back)
        store.gc()
    store.put_block(str(cid), root_bytes)  # restored: gc frees only what is unreachable
    stats = store.gc()
    assert stats.blocks == 1 and not store.has(loose)
    assert all(p.exists() for p in leaves) and root.exists()
    assert b"".join(store.cat(str(cid))) == b"".join(bytes([i]) * CHUNK for i in range(3))


def test_a_live_jobs_root_not_here_does_not_hold_gc_back(store: EmbeddedStore) -> None:
    """A root (a live job's input) whose blocks are not fetched yet is no damage: gc goes on;
    a corrupt one holds it back, as a pin's."""
    cid, _, root_bytes = _pinned_upload(store)
    store.unpin(str(cid))
    root = store.blocks.path(cid.key)
    root.unlink()
    stats = store.gc(roots=[str(cid)])
    assert stats.blocks == 3  # the leaves: nothing links them that is here
    store.put_block(str(cid), root_bytes)
    b = bytearray(root_bytes)
    b[10] ^= 1
    root.write_bytes(bytes(b))
    with pytest.raises(GcHeldBack, match=f"root {cid}"):
        store.gc(roots=[str(cid)])


def test_the_corrupt_dir_keeps_the_newest_within_its_bounds(
        store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocks, "CORRUPT_MAX_FILES", 2)
    cids = [parse_cid(store.add_bytes(f"block {i}".encode() * 10)) for i in range(4)]
    for c in cids:
        path = store.blocks.path(c.key)
        path.write_bytes(b"not it")
        with pytest.raises(Exception, match="corrupt"):
            store.blocks.get(c)
    kept = [p.name.partition(".")[0] for p in _corrupt_files(store)]
    assert sorted(kept) == sorted(c.key for c in cids[2:])
    assert store.blocks.corrupt == 4


async def test_a_storage_cycle_held_back_says_so(store: EmbeddedStore) -> None:
    """The cycle (`POST /api/gc`, the periodic one) reports the pin and block in
    `held_back`, frees nothing, and the janitor keeps it for /api/health until a gc runs."""
    cid, leaves, root_bytes = _pinned_upload(store)
    root = store.blocks.path(cid.key)
    root.unlink()
    janitor = Janitor(JanitorConfig(gc_interval_s=0, gc_grace_s=0), "p", MeshState(), store,
                      lambda *a: None)  # type: ignore[arg-type,return-value]
    report = await janitor.cycle()
    assert report.gc.blocks == 0 and len(report.held_back) == 1
    assert f"pin {cid}" in report.held_back[0] and str(root) in report.held_back[0]
    assert report.to_json()["held_back"] == list(report.held_back)
    assert janitor.held_back == report.held_back and all(p.exists() for p in leaves)
    with pytest.raises(GcHeldBack):
        await janitor.collect()
    store.put_block(str(cid), root_bytes)
    assert (await janitor.cycle()).held_back == () and janitor.held_back == ()

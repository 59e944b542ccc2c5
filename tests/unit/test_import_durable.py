"""A CAR import's blocks (EmbeddedStore.import_car, what a fetch of another peer's DAG does)
are written as one batch (peer.ipfs.blocks.BlockBatch): temp files beside their places, one
syncfs for their data, the renames, one syncfs for the renames; no fsync per block and no
staging directory. A block is visible to a reader only once its data is durable; an import
that fails (bad data, a sync that fails) leaves nothing that reads as durable and no temp
file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import peer.ipfs.blocks as blocks
from peer.cids import parse_cid
from peer.errors import IntegrityError, StoreError
from peer.ipfs import EmbeddedStore, inline

N_FILES = 5


@pytest.fixture(autouse=True)
def _syncfs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    if blocks._syncfs_fn is None:
        pytest.skip("no syncfs here")
    monkeypatch.setattr(blocks, "dirty_bytes", lambda: 0)  # nothing else waits for write-back


def _car(tmp_path: Path) -> tuple[list[str], bytes]:
    """N_FILES one-block files' CIDs and a CAR of them all."""
    src = EmbeddedStore(tmp_path / "src")
    cids = []
    for i in range(N_FILES):
        f = tmp_path / f"f{i}"
        f.write_bytes(f"file {i} of a chunk's input\n".encode() * 100)
        cids.append(src.add_path(f))
    return cids, b"".join(src.export_cars(cids))


def _syncs(monkeypatch: pytest.MonkeyPatch, seen: Callable[[], object],
           fail: Callable[[int], bool] = lambda n: False) -> list[object]:
    """The store's syncs from now on, in order: ("syncfs", what `seen()` returned just
    before it), "file" or "dir" (the `n`th syncfs, from 1, fails if `fail(n)`)."""
    calls: list[object] = []
    made: list[Path] = []  # every syncfs
    real_syncfs, real_file, real_dir = blocks.syncfs, blocks._fsync_file, blocks.fsync_dir

    def syncfs(d: Path) -> None:
        calls.append(("syncfs", seen()))
        made.append(d)
        if fail(len(made)):
            raise OSError(5, "Input/output error")
        real_syncfs(d)

    monkeypatch.setattr(blocks, "syncfs", syncfs)
    monkeypatch.setattr(blocks, "_fsync_file", lambda p: (calls.append("file"), real_file(p)))
    monkeypatch.setattr(blocks, "fsync_dir", lambda d: (calls.append("dir"), real_dir(d)))
    return calls


def _temp_files(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names
            if name.endswith(".tmp")]


def test_an_import_shows_its_blocks_only_once_their_data_is_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two syncfs calls for the whole CAR, none per block: at the first (their data) no block
    is in place for a reader (another process's store on the root), at the second (their
    renames) every one is; no staging directory is made."""
    cids, data = _car(tmp_path)
    store = EmbeddedStore(tmp_path / "store")
    reader = EmbeddedStore(tmp_path / "store")
    calls = _syncs(monkeypatch, lambda: [reader.has(c) for c in cids])
    assert store.import_car([data]) == cids
    assert calls == [("syncfs", [False] * N_FILES), ("syncfs", [True] * N_FILES)]
    assert all(store.blocks.has_durable_file(parse_cid(c)) for c in cids)
    assert not (tmp_path / "store" / "staging").exists()


def test_an_import_of_bad_data_stores_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    """A CAR whose last block does not match its CID: IntegrityError, none of its blocks
    stored, no temp file, no staging directory."""
    cids, data = _car(tmp_path)
    store = EmbeddedStore(tmp_path / "store")
    bad = data[:-1] + bytes([data[-1] ^ 1])
    with pytest.raises(IntegrityError):
        store.import_car([bad])
    assert not any(store.has(c) for c in cids)
    assert _temp_files(tmp_path / "store") == []
    assert not (tmp_path / "store" / "staging").exists()


def test_an_import_whose_data_sync_fails_stores_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first syncfs fails: StoreError naming the store's blocks, no block in place, no
    temp file; the same import again stores them, durable."""
    cids, data = _car(tmp_path)
    store = EmbeddedStore(tmp_path / "store")
    calls = _syncs(monkeypatch, lambda: None, fail=lambda n: n == 1)
    with pytest.raises(StoreError, match=f"cannot store blocks in {store.blocks.dir}: "
                                         "Input/output error"):
        store.import_car([data])
    assert calls == [("syncfs", None)]
    assert not any(store.has(c) for c in cids)
    assert _temp_files(tmp_path / "store") == []
    store.import_car([data])
    assert all(store.blocks.has_durable_file(parse_cid(c)) for c in cids)


def test_an_import_whose_rename_sync_fails_leaves_its_blocks_not_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second syncfs (the renames) fails: StoreError; the blocks in place are marked not
    known durable (another process's store writes them again) and this store trusts no
    block it finds; the same import again writes and syncs them."""
    cids, data = _car(tmp_path)
    store = EmbeddedStore(tmp_path / "store")
    calls = _syncs(monkeypatch, lambda: None, fail=lambda n: n == 2)
    with pytest.raises(StoreError, match="Input/output error"):
        store.import_car([data])
    assert len(calls) == 2 and not store.blocks.trusted
    other = EmbeddedStore(tmp_path / "store")
    assert not any(other.blocks.has_durable_file(parse_cid(c)) for c in cids)
    calls.clear()
    store.import_car([data])
    assert calls == [("syncfs", None), ("syncfs", None)]
    assert all(store.blocks.has_durable_file(parse_cid(c)) for c in cids)


def test_an_import_writes_again_an_inline_block_it_finds(tmp_path: Path) -> None:
    """A block the store holds only unsynced (an inline output, in the inline pack) is
    written by the import as a durable file, as an add's batch does (it was taken as stored)."""
    cids, data = _car(tmp_path)
    store = EmbeddedStore(tmp_path / "store")
    f = tmp_path / "f0"
    cid, made = inline.import_bytes(f.read_bytes())
    assert cid == cids[0]
    store.keep_inline(inline.checked(made, cid), [cid])
    assert store.has(cid) and not store.blocks.has_durable_file(parse_cid(cid))
    store.import_car([data])
    assert store.blocks.has_durable_file(parse_cid(cid))

"""Which present blocks a write takes as durable (peer.ipfs.blocks: the module's docstring):
an inline output's (written unsynced, its file marked), one put in place by a write whose
sync failed, and the blocks of an earlier run or of a process that died before its sync."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

import peer.ipfs.blocks as blocks
from peer.errors import StoreError
from peer.ipfs import EmbeddedStore, inline
from peer.ipfs.cids import parse_cid


@pytest.fixture(autouse=True)
def _syncfs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    if blocks._syncfs_fn is None:
        pytest.skip("no syncfs here")
    monkeypatch.setattr(blocks, "dirty_bytes", lambda: 0)  # nothing else waits for write-back


def _count(monkeypatch: pytest.MonkeyPatch,
           fail: Callable[[int], bool] = lambda n: False) -> list[str]:
    """The store's syncs and fsyncs from now on, in order (the `n`th syncfs, from 1, fails
    if `fail(n)`)."""
    calls: list[str] = []
    made: list[Path] = []  # every syncfs
    real_syncfs, real_file, real_dir = blocks.syncfs, blocks._fsync_file, blocks.fsync_dir

    def syncfs(d: Path) -> None:
        calls.append("syncfs")
        made.append(d)
        if fail(len(made)):
            raise OSError(5, "Input/output error")
        real_syncfs(d)

    monkeypatch.setattr(blocks, "syncfs", syncfs)
    monkeypatch.setattr(blocks, "_fsync_file", lambda p: (calls.append("file"), real_file(p)))
    monkeypatch.setattr(blocks, "fsync_dir", lambda d: (calls.append("dir"), real_dir(d)))
    return calls


def _file(tmp_path: Path, name: str, text: str) -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def _path(store: EmbeddedStore, cid: str) -> Path:
    return store.blocks.path(parse_cid(cid).key)


def test_a_batch_writes_again_an_inline_block_it_finds_and_syncs_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(a) The peer writes an inline output unsynced; a worker process (its own store on
    the same root) whose output holds the same block makes it durable before reporting it."""
    f = _file(tmp_path, "f", "an inline output, then a worker's\n")
    peer, worker = EmbeddedStore(tmp_path / "store"), EmbeddedStore(tmp_path / "store")
    cid, made = inline.import_bytes(f.read_bytes())
    peer.keep_inline(inline.checked(made, cid), [cid])
    where = _path(peer, cid)
    assert where.exists()
    calls = _count(monkeypatch)
    with worker.adding() as add:
        assert add(f) == cid
    assert calls == ["syncfs", "syncfs"]  # written again: its data, then its rename
    assert worker.blocks.durable(where) and peer.blocks.durable(where)  # no longer marked
    assert b"".join(worker.cat(cid)) == f.read_bytes()
    calls.clear()
    with worker.adding() as add:  # FILTER_LONGER's chunks: every block known durable
        add(f)
    with peer.adding() as add:  # ... whichever process made it so
        add(f)
    assert calls == []


def test_without_a_syncfs_worth_it_the_block_written_again_is_fsynced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _file(tmp_path, "f", "inline, then fsynced by a batch\n")
    store = EmbeddedStore(tmp_path / "store")
    cid, made = inline.import_bytes(f.read_bytes())
    store.keep_inline(inline.checked(made, cid), [])
    monkeypatch.setattr(blocks, "dirty_bytes", lambda: blocks.SYNCFS_DIRTY_MAX_BYTES + (1 << 20))
    calls = _count(monkeypatch)
    with store.adding() as add:
        add(f)
    assert calls[0] == "file" and set(calls[1:]) == {"dir"}  # its file, then directories
    assert store.blocks.durable(_path(store, cid))


def test_an_add_writes_again_an_inline_block_it_finds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """add_path, add_bytes and put_block (one fsync per block) follow the same rule."""
    data = b"inline first, added after\n"
    store = EmbeddedStore(tmp_path / "store")
    cid, made = inline.import_bytes(data)
    store.keep_inline(inline.checked(made, cid), [])
    calls = _count(monkeypatch)
    assert store.add_bytes(data) == cid
    assert "file" in calls and store.blocks.durable(_path(store, cid))
    calls.clear()
    store.add_bytes(data)
    assert calls == []


def test_blocks_a_failed_sync_put_in_place_are_written_again_by_the_next_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(c) The renames' syncfs fails: the blocks are in place, not known durable, in this
    process and in any other."""
    files = [_file(tmp_path, f"f{i}", f"content {i}\n") for i in range(3)]
    store = EmbeddedStore(tmp_path / "store")
    other = EmbeddedStore(tmp_path / "store")
    calls = _count(monkeypatch, fail=lambda n: n == 2)
    with pytest.raises(StoreError), store.adding() as add:
        cids = [add(f) for f in files]
    paths = [_path(store, c) for c in cids]
    assert all(p.exists() for p in paths)  # renamed before the sync that failed
    calls.clear()
    with other.adding() as add:  # the old code reported them durable without a sync
        assert [add(f) for f in files] == cids
    assert calls == ["syncfs", "syncfs"]
    assert all(other.blocks.durable(p) for p in paths)  # no longer marked
    calls.clear()
    with store.adding() as add:  # made durable by the other process: known (not marked)
        add(files[0])
    assert calls == ["syncfs", "syncfs"]  # ... but this one trusts only its own since


def test_after_a_failed_sync_a_present_block_counts_once_this_process_made_it_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(c) A failed sync may have lost pages of any file while a later sync succeeds (Linux
    marks them clean): a block found present counts only once written again here."""
    kept = _file(tmp_path, "kept", "durable before the failure\n")
    store = EmbeddedStore(tmp_path / "store")
    cid = store.add_path(kept)
    calls = _count(monkeypatch, fail=lambda n: n == 1)
    with pytest.raises(StoreError), store.adding() as add:
        add(_file(tmp_path, "new", "its data's syncfs fails\n"))
    calls.clear()
    with store.adding() as add:
        assert add(kept) == cid
    assert calls == ["syncfs", "syncfs"]
    calls.clear()
    with store.adding() as add:  # made durable by this process since: known
        add(kept)
    assert calls == []


def test_a_store_opened_syncs_its_file_system_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Restart (b): a block renamed in by a process that died before its sync (or by an
    earlier run) is made durable by the sync of the store's open, not by each batch."""
    f = _file(tmp_path, "f", "renamed in, never synced\n")
    cid = EmbeddedStore(tmp_path / "first").add_path(f)
    data = _path(EmbeddedStore(tmp_path / "first"), cid).read_bytes()
    where = tmp_path / "store" / "blocks" / parse_cid(cid).key[-2:] / parse_cid(cid).key
    where.parent.mkdir(parents=True)
    where.write_bytes(data)  # the dead process's rename
    calls = _count(monkeypatch)
    store = EmbeddedStore(tmp_path / "store")
    assert calls == ["syncfs"]
    with store.adding() as add:
        assert add(f) == cid
    assert calls == ["syncfs"]  # nothing more


def test_a_store_whose_sync_at_open_fails_trusts_no_block_it_finds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _file(tmp_path, "f", "there before the open\n")
    EmbeddedStore(tmp_path / "store").add_path(f)
    calls = _count(monkeypatch, fail=lambda n: n == 1)
    store = EmbeddedStore(tmp_path / "store")  # not fatal
    with store.adding() as add:
        add(f)
    assert calls == ["syncfs", "syncfs", "syncfs"]  # the open's, then the batch's two


def test_keeping_an_inline_block_again_repairs_a_torn_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The restore at start writes again the inline blocks a crash may have torn: present
    but not whole (unsynced, so marked), they are written again; whole ones are kept."""
    store = EmbeddedStore(tmp_path / "store")
    cid, made = inline.import_bytes(b"an inline output torn by a crash\n" * 4)
    got = inline.checked(made, cid)
    store.keep_inline(got, [cid])
    where = _path(store, cid)
    inode = where.stat().st_ino
    store.keep_inline(got, [cid])  # whole: kept
    assert where.stat().st_ino == inode
    os.chmod(where, 0o644)
    where.write_bytes(b"")  # what a crash may leave of an unsynced write
    os.chmod(where, 0o444)
    store.keep_inline(got, [cid])
    assert b"".join(store.cat(cid)) == b"an inline output torn by a crash\n" * 4
    assert stat.S_IMODE(where.stat().st_mode) & 0o222 == 0  # still not known durable


def test_an_inline_write_never_replaces_a_block_put_in_place_meanwhile(tmp_path: Path) -> None:
    final, tmp = tmp_path / "block", tmp_path / ".block.tmp"
    final.write_bytes(b"durable copy")
    tmp.write_bytes(b"unsynced copy")
    assert blocks._place_new(tmp, final) is False
    assert final.read_bytes() == b"durable copy" and not tmp.exists()
    tmp.write_bytes(b"unsynced copy")
    final.unlink()
    assert blocks._place_new(tmp, final) is True
    assert final.read_bytes() == b"unsynced copy" and not tmp.exists()


def test_vouched_blocks_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddedStore(tmp_path / "store")
    store.blocks.vouch(["a"])
    assert store.blocks._vouched == set()  # trusted: nothing to remember
    store.blocks.distrust()
    monkeypatch.setattr(blocks, "VOUCHED_MAX", 3)
    store.blocks.vouch(["a", "b"])
    store.blocks.vouch(["c", "d"])
    assert store.blocks._vouched == {"c", "d"}


def test_marking_a_block_takes_only_its_write_bits(tmp_path: Path) -> None:
    """A marked block is never more readable than the umask made it (a data dir is 0700,
    its files may be 0600)."""
    f = tmp_path / "block"
    f.write_bytes(b"x")
    os.chmod(f, 0o600)
    blocks._mark(f)
    assert stat.S_IMODE(f.stat().st_mode) == 0o400


def test_a_failed_sync_of_the_inline_writes_withdraws_the_trust_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _file(tmp_path, "f", "added before the inline writes' sync failed\n")
    store = EmbeddedStore(tmp_path / "store")
    store.add_path(f)
    calls = _count(monkeypatch, fail=lambda n: n == 1)
    with pytest.raises(OSError):
        store.sync_inline()
    with store.adding() as add:
        add(f)
    assert calls == ["syncfs", "syncfs", "syncfs"]  # the failed one, then the batch's two


def test_every_syncfs_of_a_process_uses_the_descriptor_opened_at_the_store_s_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """syncfs(2) reports the write-back errors since its descriptor was opened: one opened
    for each call would miss an error of the background write-back of a batch's files
    written before the call. So the descriptor is opened once, at the store's open (its
    first sync), before any block is written, and kept for every later sync there."""
    fds: list[int] = []
    real = blocks._syncfs_fn
    assert real is not None
    monkeypatch.setattr(blocks, "_fs_fds", {})
    monkeypatch.setattr(blocks, "_syncfs_fn", lambda fd: (fds.append(fd), real(fd))[1])
    store = EmbeddedStore(tmp_path / "store")
    opened = list(fds)
    with store.adding() as add:  # a batch: its data and its renames, one syncfs each
        cid = add(_file(tmp_path, "a.txt", "a block written after the open"))
    store.sync_inline()
    assert opened and len(fds) > len(opened) + 1, "the open, the batch and sync_inline synced"
    assert set(fds) == {opened[0]}
    assert Path(os.readlink(f"/proc/self/fd/{opened[0]}")) == store.blocks.dir  # still open
    assert os.fstat(opened[0]).st_dev == _path(store, cid).stat().st_dev


def test_a_batch_fails_if_another_sync_of_the_process_was_told_of_an_error_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel reports a write-back error once per descriptor, to the first syncfs to
    come: if another thread's syncfs got it while this batch was being written, the pages
    lost may be this batch's, so its own syncfs succeeding proves nothing."""
    store = EmbeddedStore(tmp_path / "store")
    real = blocks._syncfs_fn
    assert real is not None
    with pytest.raises(StoreError), store.adding() as add:
        cid = add(_file(tmp_path, "a.txt", "written while another sync fails"))
        monkeypatch.setattr(blocks, "_syncfs_fn", lambda fd: -1)  # another thread's syncfs
        with pytest.raises(OSError):
            blocks.syncfs(store.blocks.dir)
        monkeypatch.setattr(blocks, "_syncfs_fn", real)
    assert not store.has(cid)  # not announced: not in place
    assert not [p for p in store.blocks.dir.rglob("*.tmp")]
    with store.adding() as add:  # a batch begun after the failure commits
        cid = add(_file(tmp_path, "b.txt", "written after it"))
    assert store.has(cid)

"""Which present blocks a write takes as durable (peer.ipfs.blocks: the module's docstring):
an inline output's (kept unsynced in the inline pack, or an earlier release's marked file),
one put in place by a write whose sync failed, and the blocks of an earlier run or of a
process that died before its sync."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import peer.ipfs.blocks as blocks
from peer.cids import Cid, parse_cid
from peer.errors import IntegrityError, StoreError
from peer.ipfs import EmbeddedStore, inline
from peer.ipfs.car import MAX_BLOCK_BYTES
from peer.ipfs.store import GcHeldBack


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
    """(a) The peer keeps an inline output unsynced (in the inline pack); a worker process
    (its own store on the same root) whose output holds the same block makes it durable, as
    a file, before reporting it."""
    f = _file(tmp_path, "f", "an inline output, then a worker's\n")
    peer, worker = EmbeddedStore(tmp_path / "store"), EmbeddedStore(tmp_path / "store")
    cid, made = inline.import_bytes(f.read_bytes())
    peer.keep_inline(inline.checked(made, cid), [cid])
    where = _path(peer, cid)
    assert worker.has(cid) and not where.exists()  # a row of the pack, not a file
    calls = _count(monkeypatch)
    with worker.adding() as add:
        assert add(f) == cid
    assert calls == ["syncfs", "syncfs"]  # written again: its data, then its rename
    assert worker.blocks.durable(where) and peer.blocks.durable(where)
    assert b"".join(worker.cat(cid)) == f.read_bytes()
    calls.clear()
    with worker.adding() as add:  # FILTER_LONGER's chunks: every block known durable
        add(f)
    with peer.adding() as add:  # ... whichever process made it so
        add(f)
    assert calls == []


def test_an_earlier_releases_unsynced_inline_file_is_written_again_by_a_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data dir of an earlier release holds inline blocks as marked files (no write bit):
    not known durable, so a batch that finds one writes it again."""
    f = _file(tmp_path, "f", "an earlier release's inline output\n")
    store = EmbeddedStore(tmp_path / "store")
    cid, made = inline.import_bytes(f.read_bytes())
    where = _path(store, cid)
    where.parent.mkdir(parents=True)
    where.write_bytes(made[cid])
    os.chmod(where, 0o444)  # how that release marked it
    assert store.blocks.durable(where) is False
    calls = _count(monkeypatch)
    with store.adding() as add:
        assert add(f) == cid
    assert calls == ["syncfs", "syncfs"]
    assert store.blocks.durable(where)


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


def test_an_earlier_releases_torn_inline_file_is_removed_and_the_pack_serves_the_block(
        tmp_path: Path) -> None:
    """A crash tore an earlier release's unsynced inline block file; the restore at start
    keeps the block (from the log) in the pack: a read removes the torn file and serves the
    pack's copy, verified."""
    store = EmbeddedStore(tmp_path / "store")
    data = b"an inline output torn by a crash\n" * 4
    cid, made = inline.import_bytes(data)
    where = _path(store, cid)
    where.parent.mkdir(parents=True)
    where.write_bytes(b"")  # what a crash may leave of an unsynced write
    os.chmod(where, 0o444)
    store.keep_inline(inline.checked(made, cid), [cid])
    assert b"".join(store.cat(cid)) == data
    assert not where.exists() and store.blocks.corrupt == 1
    assert b"".join(store.cat(cid)) == data and store.blocks.corrupt == 1


# -- block files that are no block's (review r1 M1) -------------------------------------------
def _in_thread(fn: Callable[[], object]) -> object:
    """`fn()`'s result or exception, run in a thread joined with a timeout: a read that
    blocks for ever (a FIFO's open with no writer) fails the test instead of hanging it."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as e:  # (the caller looks at it)
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "the read did not return (blocked on the block file)"
    return out[0]


def _damaged(store: EmbeddedStore, how: str, n: int = 0) -> tuple[Cid, bytes, Path]:
    data = f"block {n}, whose file is replaced\n".encode() * 100
    c = parse_cid(store.add_bytes(data))
    final = store.blocks.path(c.key)
    final.unlink()
    if how == "fifo":
        os.mkfifo(final)
    elif how == "dir":
        final.mkdir()
    elif how == "symlink":
        other = final.with_name(f"elsewhere{n}")
        other.write_bytes(data)
        final.symlink_to(other)
    else:  # grown: its bytes, then a sparse tail past any block's bound
        with open(final, "wb") as f:
            f.write(data)
            f.truncate(MAX_BLOCK_BYTES + 4096)
    return c, data, final


@pytest.mark.parametrize("how", ["fifo", "dir", "symlink", "grown"])
def test_a_block_file_that_is_no_blocks_is_corrupt_moved_aside_and_repaired(
        tmp_path: Path, how: str) -> None:
    """A FIFO at a block file's place blocked the read's open for ever (gc held the store's
    lock meanwhile: every add waited); a directory was a 502 with a traceback naming no
    file; a grown file was read whole before its hash check. Each is now a corrupt block:
    counted, moved aside to store/corrupt/, and repaired from a peer, or IntegrityError."""
    store = EmbeddedStore(tmp_path / "store")
    c, _, final = _damaged(store, how)
    got = _in_thread(lambda: store.blocks.get(c))
    assert isinstance(got, IntegrityError), got
    assert store.blocks.corrupt == 1 and not os.path.lexists(final)
    assert [p.name.partition(".")[0] for p in store.blocks.corrupt_dir.iterdir()] == [c.key]
    c2, data2, final2 = _damaged(store, how, 1)  # (a second one: `repair` fetches it again)
    store.blocks.repair = lambda want: data2 if want == c2 else None
    assert _in_thread(lambda: store.blocks.get(c2)) == data2
    assert final2.is_file() and not final2.is_symlink() and final2.read_bytes() == data2


def test_gc_over_a_pinned_root_that_is_a_fifo_returns(tmp_path: Path) -> None:
    """gc reads a pinned DAG's linking blocks under the store's exclusive lock: a FIFO there
    hung it (and every add after it); now it is held back, naming the file."""
    store = EmbeddedStore(tmp_path / "store")
    data = b"".join(bytes([i]) * (256 * 1024) for i in range(2))
    root = parse_cid(store.add_bytes(data))
    store.pin(str(root))
    final = store.blocks.path(root.key)
    final.unlink()
    os.mkfifo(final)
    got = _in_thread(store.gc)
    assert isinstance(got, GcHeldBack) and str(final) in got.message, got
    aside = list(store.blocks.corrupt_dir.iterdir())
    assert len(aside) == 1 and stat.S_ISFIFO(aside[0].lstat().st_mode)

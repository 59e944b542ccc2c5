"""The start sweeps never delete through a symlink (peer.dataentry.remove, check_entry): a
data dir whose work/ is a symlink refuses the start naming it (the janitor's sweep and the
executor's each followed it and deleted what it points to), a block shard that is a symlink is
left alone by the store's sweep and gc, and an entry removed that is a symlink goes itself;
what a link points to, a canary dir outside the data dir, stays untouched."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.cids import parse_cid, sha256_cid
from peer.dataentry import remove
from peer.errors import DataError, IntegrityError, StoreError
from peer.ipfs.blocks import BlockStore, Staging
from peer.ipfs.embedded import EmbeddedStore
from peer.jobs.executor import Executor, ExecutorConfig
from peer.jobs.janitor import sweep_stale


@pytest.fixture
def canary(tmp_path: Path) -> Path:
    """A directory outside the data dir holding what must never be deleted."""
    d = tmp_path / "canary"
    (d / "banzai-exec-1-abc").mkdir(parents=True)
    (d / "banzai-exec-1-abc" / "kept").write_bytes(b"another program's\n")
    (d / "kept").write_bytes(b"another program's\n")
    return d


def _untouched(canary: Path) -> bool:
    return ((canary / "kept").read_bytes() == b"another program's\n"
            and (canary / "banzai-exec-1-abc" / "kept").read_bytes() == b"another program's\n")


def test_a_work_dir_that_is_a_symlink_refuses_the_start_sweep(
        tmp_path: Path, canary: Path) -> None:
    data = tmp_path / "peer"
    store = EmbeddedStore(data / "store")
    (data / "work").symlink_to(canary)
    with pytest.raises(DataError, match=f"{data / 'work'} .*is a symlink, not a directory"):
        sweep_stale(data, store)
    assert _untouched(canary)


def test_remove_takes_a_link_a_file_or_a_tree_and_never_what_a_link_points_to(
        tmp_path: Path, canary: Path) -> None:
    (tmp_path / "link").symlink_to(canary)
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "link").symlink_to(canary)
    (tmp_path / "file").write_bytes(b"x")
    for name in ("link", "tree", "file", "absent"):
        remove(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary"]
    assert _untouched(canary)


async def test_an_executor_refuses_a_work_dir_that_is_a_symlink(
        tmp_path: Path, canary: Path) -> None:
    (tmp_path / "work").symlink_to(canary)
    (canary / "banzai-exec-99999999-zz").mkdir()  # a "gone" executor's, in the canary
    ex = Executor(ExecutorConfig(slots=1, work_dir=str(tmp_path / "work")))
    with pytest.raises(DataError, match="is a symlink, not a directory"):
        await ex.start()
    assert _untouched(canary) and (canary / "banzai-exec-99999999-zz").is_dir()


def test_a_block_shard_that_is_a_symlink_is_neither_swept_nor_collected(
        tmp_path: Path, canary: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The store's start sweep of temp files and its gc walked a shard that is a symlink
    and deleted its target's files named as temp files or blocks of that shard."""
    store = EmbeddedStore(tmp_path / "store")
    store.add_bytes(b"a block of the store's own\n")
    blocks = tmp_path / "store" / "blocks"
    name = next(f"{i:02x}" for i in range(256) if not (blocks / f"{i:02x}").exists())
    shard = blocks / name
    shard.symlink_to(canary)
    theirs = ["left.tmp", "12" * 16 + name]  # (a temp file's name, a block's)
    for f in theirs:
        (canary / f).write_bytes(b"another program's\n")
    with caplog.at_level(logging.WARNING):
        store.sweep()
        store.gc(set(), 0.0)
    assert all((canary / f).exists() for f in theirs) and _untouched(canary)
    assert f"{shard} is a symlink, not a shard directory: left alone" in caplog.text


def test_the_staging_sweep_removes_a_link_itself_and_counts_only_what_went(
        tmp_path: Path, canary: Path) -> None:
    """A stale entry of store/staging that is a symlink was rmtree'd through `stat()`
    following it: rmtree refused the link, which stayed for good and was counted as removed
    at each start; one to nothing was never removed."""
    staging = tmp_path / "store" / "staging"
    staging.mkdir(parents=True)
    (staging / "1-aa").symlink_to(canary)
    (staging / "2-bb").symlink_to(tmp_path / "nothing")
    (staging / "3-cc").mkdir()
    old = time.time() - 7200
    for p in (canary, *staging.iterdir()):
        os.utime(p, (old, old), follow_symlinks=False)
    assert Staging.sweep(tmp_path / "store", 3600) == 3
    assert list(staging.iterdir()) == [] and _untouched(canary)
    assert Staging.sweep(tmp_path / "store", 3600) == 0


def _linked_shard(tmp_path: Path, canary: Path) -> tuple[BlockStore, bytes, Path]:
    """A block store whose shard of a block's bytes is a symlink to the canary."""
    blocks = BlockStore(tmp_path / "store")
    data = b"a block written through a linked shard\n"
    final = blocks.path(sha256_cid(data, "raw", 1).key)
    final.parent.symlink_to(canary)
    return blocks, data, final


@pytest.mark.parametrize("how", ["put", "batch", "adopt"])
def test_no_block_is_written_into_a_shard_that_is_a_symlink(
        tmp_path: Path, canary: Path, how: str) -> None:
    """gc and the sweeps leave a linked shard alone: a block written through it went outside
    the data dir, for good. Each way in refuses with a StoreError naming the shard."""
    blocks, data, final = _linked_shard(tmp_path, canary)
    c = sha256_cid(data, "raw", 1)
    with pytest.raises(StoreError, match=f"{final.parent} .*is a symlink, not a directory"):
        if how == "put":
            blocks.put(c, data)
            blocks.sync()
        elif how == "batch":
            batch = blocks.batch()
            batch.put_trusted(c, data)
            batch.commit()
        else:
            staged = tmp_path / "staged"
            staged.write_bytes(data)
            blocks.adopt(c, staged)
    assert sorted(p.name for p in canary.iterdir()) == ["banzai-exec-1-abc", "kept"]
    assert _untouched(canary) and not blocks.has(c)


def test_a_block_found_through_a_linked_shard_is_not_taken_as_stored(
        tmp_path: Path, canary: Path) -> None:
    """A put found the block in the link's target and took it as stored (touching it):
    never collected nor counted by gc, the store's copy was outside it."""
    blocks, data, final = _linked_shard(tmp_path, canary)
    (canary / final.name).write_bytes(data)
    os.utime(canary / final.name, (1, 1))
    with pytest.raises(StoreError, match="is a symlink, not a directory"):
        blocks.put(sha256_cid(data, "raw", 1), data)
    assert (canary / final.name).stat().st_mtime == 1  # (not touched)


def test_a_corrupt_block_read_through_a_linked_shard_is_not_removed_there(
        tmp_path: Path, canary: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A read that found a copy not matching its CID unlinked it by path, through a shard
    that is a symlink: a file of the link's target (named as that block) was deleted. It is
    left there now, the shard named; the read goes on (NotFound here: nothing to repair)."""
    blocks, data, final = _linked_shard(tmp_path, canary)
    theirs = canary / final.name
    theirs.write_bytes(b"another program's file, named as a block\n")
    with caplog.at_level(logging.ERROR), pytest.raises(IntegrityError):
        blocks.get(sha256_cid(data, "raw", 1))
    assert theirs.read_bytes() == b"another program's file, named as a block\n"
    assert f"{final.parent} (a shard directory of the store's blocks) is a symlink" in (
        caplog.text) and "left there" in caplog.text
    assert _untouched(canary) and blocks.corrupt == 1


def _race(monkeypatch: pytest.MonkeyPatch, shard: Path, moved: Path, canary: Path,
          when: str) -> list[Path]:
    """The race: `shard`, checked a real directory by the store's listing of its shards,
    moved to `moved` and a symlink to the canary put in its place, right after its check
    ("check") or once its entries were listed (when the listing is asked for the next
    shard: "listed"). Returns the shards swapped."""
    listing = BlockStore._shard_dirs
    swapped: list[Path] = []

    def swap() -> None:
        swapped.append(shard)
        shard.rename(moved)
        shard.symlink_to(canary)

    def racing(self: BlockStore) -> Iterator[Path]:
        for d in listing(self):
            if d == shard and when == "check":
                swap()
            yield d
            if d == shard and when == "listed":
                swap()
    monkeypatch.setattr(BlockStore, "_shard_dirs", racing)
    return swapped


@pytest.mark.parametrize(("how", "when"), [("sweep", "check"), ("gc", "check"),
                                           ("gc", "listed")])
def test_a_shard_made_a_symlink_after_its_check_is_not_walked_by_the_sweep_or_gc(
        tmp_path: Path, canary: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, how: str, when: str) -> None:
    """The sweep of temp files and gc checked that a shard is a real directory, then listed
    it and removed its stale temp files and unreachable blocks by their paths: a symlink
    put at the shard's path in between was followed, deleting its target's files named as
    the shard's (gc: a block's name listed in the real shard, removed through the link).
    Now each shard is opened once without following a symlink and its files are listed,
    looked at and removed through that descriptor."""
    store = EmbeddedStore(tmp_path / "store")
    key = parse_cid(store.add_bytes(b"a block of the store's own, not pinned\n")).key
    shard = tmp_path / "store" / "blocks" / key[-2:]
    theirs = ["left.tmp", key]  # (a stale temp file's name, the block's)
    old = time.time() - 7200
    for f in theirs:
        (canary / f).write_bytes(b"another program's\n")
        os.utime(canary / f, (old, old))
    swapped = _race(monkeypatch, shard, tmp_path / "moved", canary, when)
    with caplog.at_level(logging.WARNING):
        if how == "sweep":
            store.sweep()
        else:
            store.gc(set(), 0.0)
    assert swapped == [shard]
    assert all((canary / f).read_bytes() == b"another program's\n" for f in theirs)
    assert _untouched(canary)
    if when == "check":
        assert f"{shard} is a symlink, not a shard directory: left alone" in caplog.text
    else:  # (the block went from the shard it was listed in)
        assert not (tmp_path / "moved" / key).exists()


def test_an_unpin_through_a_pins_dir_made_a_symlink_is_refused_not_followed(
        tmp_path: Path, canary: Path) -> None:
    """An unpin removed pins/<cid> by its path, checked a real directory only when the store
    opened: a symlink put there since was followed (its target's file of that name deleted).
    Now the unpin is refused naming pins/."""
    store = EmbeddedStore(tmp_path / "store")
    cid = store.add_bytes(b"a pinned block\n")
    store.pin(cid)
    pins = tmp_path / "store" / "pins"
    pins.rename(tmp_path / "moved")
    pins.symlink_to(canary)
    (canary / cid).write_bytes(b"another program's\n")
    with pytest.raises(DataError, match=f"{pins} .*is a symlink, not a directory"):
        store.unpin(cid)
    assert (canary / cid).read_bytes() == b"another program's\n" and _untouched(canary)


@pytest.mark.parametrize("how", ["pin", "pin_many"])
def test_a_pin_through_a_pins_dir_made_a_symlink_is_refused_not_followed(
        tmp_path: Path, canary: Path, how: str) -> None:
    """A pin made pins/<cid> by its path, checked a directory only when the store opened: a
    symlink put there since was followed (the pin file made in its target, the pin lost
    with the link). Now the pin is refused naming pins/, nothing made in the target."""
    store = EmbeddedStore(tmp_path / "store")
    cid = store.add_bytes(b"a block to pin\n")
    pins = tmp_path / "store" / "pins"
    pins.rename(tmp_path / "moved")
    pins.symlink_to(canary)
    with pytest.raises(DataError, match=f"{pins} .*is a symlink, not a directory"):
        if how == "pin":
            store.pin(cid)
        else:
            store.pin_many([cid])
    assert sorted(p.name for p in canary.iterdir()) == ["banzai-exec-1-abc", "kept"]
    assert _untouched(canary)

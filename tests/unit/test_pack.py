"""The inline pack (peer.ipfs.pack): inline outputs' blocks and pins as rows of one SQLite
file, read after the block files and memory, swept by gc, and every row treated as hostile."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from peer.errors import IntegrityError, NotFound, StoreError
from peer.ipfs import EmbeddedStore, inline
from peer.ipfs.cids import Cid, parse_cid
from peer.ipfs.pack import PACK_FILE, InlinePack


def _output(text: str) -> tuple[str, dict[Cid, bytes]]:
    cid, made = inline.import_bytes(text.encode())
    return cid, inline.checked(made, cid)


def _files(root: Path) -> list[Path]:
    return [p for d in ("blocks", "pins") for p in (root / d).glob("**/*") if p.is_file()]


def test_an_inline_output_is_rows_of_the_pack_not_files(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output("a small result\n")
    store.keep_inline(blocks, [cid])
    assert _files(tmp_path / "s") == [] and (tmp_path / "s" / PACK_FILE).exists()
    assert store.has(cid) and store.pins() == [cid]
    assert b"".join(store.cat(cid)) == b"a small result\n"
    assert store.blocks.size(parse_cid(cid)) == len(blocks[parse_cid(cid)])
    assert store.block_file(cid) is None  # no file of the store's to hand out: read it
    again = EmbeddedStore(tmp_path / "s")  # another process, or the next start
    assert again.pins() == [cid] and b"".join(again.cat(cid)) == b"a small result\n"


def test_no_pack_is_made_until_an_inline_write(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    store.add_bytes(b"a durable add\n")
    with pytest.raises(NotFound):
        store.get_block(_output("absent\n")[0])
    assert store.pins() == [] and not store.inline_lost
    assert not (tmp_path / "s" / PACK_FILE).exists()


def test_keeping_again_keeps_one_row_and_a_durable_file_gets_none(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output("kept twice\n")
    store.keep_inline(blocks, [cid])
    store.keep_inline(blocks, [cid])
    durable, dblocks = _output("added durably first\n")
    assert store.add_bytes(b"added durably first\n") == durable
    store.keep_inline(dblocks, [durable])
    db = sqlite3.connect(tmp_path / "s" / PACK_FILE)
    keys = [r[0] for r in db.execute("SELECT key FROM blocks")]
    assert keys == [parse_cid(cid).key]
    assert sorted(r[0] for r in db.execute("SELECT cid FROM pins")) == sorted([cid, durable])
    assert store.pins() == sorted([cid, durable])


def test_unpin_removes_the_pin_wherever_it_is(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output("pinned in the pack and as a file\n")
    store.keep_inline(blocks, [cid])
    store.pin(cid)  # a user's pin too: a file
    store.unpin(cid)
    assert store.pins() == []
    with pytest.raises(NotFound):
        store.unpin(cid)
    other, oblocks = _output("only in the pack\n")
    store.keep_inline(oblocks, [other])
    store.unpin(other)
    assert store.pins() == [] and store.has(other)  # unpinned, not deleted: gc does that


def test_gc_sweeps_the_packs_unpinned_rows_after_the_grace(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    kept, kblocks = _output("pinned\n")
    dropped, dblocks = _output("unpinned\n")
    store.keep_inline(kblocks, [kept])
    store.keep_inline(dblocks, [])
    assert store.gc(grace_s=3600).blocks == 0  # written just now
    used = store.used_bytes()
    stats = store.gc()
    dropped_key = parse_cid(dropped).key
    assert stats.blocks == 1 and stats.bytes == len(dblocks[parse_cid(dropped)])
    assert [parse_cid(c).key for c in stats.removed] == [dropped_key]
    assert store.has(kept) and not store.has(dropped)
    assert store.used_bytes() == used - stats.bytes
    store.unpin(kept)
    assert store.gc().blocks == 1 and not store.has(kept)


def test_gc_keeps_a_pack_block_under_a_pinned_file_dag(tmp_path: Path) -> None:
    """A directory added durably (a file) linking a block kept only in the pack."""
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output("under a durable directory\n")
    store.keep_inline(blocks, [])
    d = store.make_dir({"x": cid})
    store.pin(d)
    assert store.gc().blocks == 0 and store.has(cid)


def test_a_corrupt_row_is_removed_and_repaired_or_refused(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output("a row a disk fault changed\n")
    store.keep_inline(blocks, [cid])
    db = sqlite3.connect(tmp_path / "s" / PACK_FILE)
    db.execute("UPDATE blocks SET data = x'00'")
    db.commit()
    with pytest.raises(IntegrityError):
        store.get_block(cid)
    assert store.blocks.corrupt == 1 and not store.has(cid)  # removed, not served
    store.keep_inline(blocks, [cid])
    db.execute("UPDATE blocks SET data = x'00'")
    db.commit()
    store.blocks.repair = lambda c: blocks[c]  # a live peer provides it
    assert store.get_block(cid) == blocks[parse_cid(cid)]
    assert store.blocks.corrupt == 2 and store.blocks.durable(store.blocks.path(
        parse_cid(cid).key))  # the repaired copy is a durable file


def test_hostile_rows_are_ignored(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output("a sound row\n")
    store.keep_inline(blocks, [cid])
    db = sqlite3.connect(tmp_path / "s" / PACK_FILE)
    db.execute("INSERT INTO pins VALUES ('not a cid'), (7)")
    db.execute("INSERT INTO blocks VALUES ('zz-not-hex', x'01', 0.0), ('ab', 7, 'x')")
    db.commit()
    assert store.pins() == [cid]
    stats = store.gc()  # the odd rows are unreachable: dropped, no error
    assert stats.blocks == 1 and store.has(cid)  # ('ab' counted; the other is not a key)
    assert [r[0] for r in db.execute("SELECT key FROM blocks")] == [parse_cid(cid).key]


@pytest.mark.parametrize("damage", ["garbage", "newer schema", "other table"])
def test_an_unsound_pack_is_moved_aside_and_every_event_restored(
        tmp_path: Path, damage: str) -> None:
    root = tmp_path / "s"
    root.mkdir()
    path = root / PACK_FILE
    if damage == "garbage":
        path.write_bytes(b"not a database, " * 512)
    else:
        db = sqlite3.connect(path)
        if damage == "newer schema":
            db.execute("PRAGMA user_version=2")
        else:
            db.execute("CREATE TABLE blocks (k, v)")
        db.commit()
        db.close()
    store = EmbeddedStore(root)
    assert store.inline_lost  # InlineOutputs then restores every event held
    assert len(list(root.glob(f"{PACK_FILE}.bad-*"))) >= 1  # kept, for a post-mortem
    cid, blocks = _output("kept in the new pack\n")
    store.keep_inline(blocks, [cid])
    assert EmbeddedStore(root).pins() == [cid] and not EmbeddedStore(root).inline_lost


def test_a_write_error_names_the_pack_and_keeps_nothing_half_done(tmp_path: Path) -> None:
    pack = InlinePack(tmp_path)
    pack.keep({"aa": b"1"}, ["p"])
    pack.close()
    ro = InlinePack(tmp_path)
    ro._writer().execute("PRAGMA query_only=1")  # every write fails (as on a read-only disk)
    with pytest.raises(StoreError, match="cannot keep inline blocks: the inline pack"):
        ro.keep({"bb": b"2"}, ["q"])
    assert ro.get("aa") == b"1" and ro.get("bb") is None and ro.pins() == ["p"]


def test_entries_pages_through_every_row(tmp_path: Path) -> None:
    pack = InlinePack(tmp_path)
    pack.keep({f"{i:06x}": b"x" * (i % 7) for i in range(2500)}, [])
    got = list(pack.entries())
    assert [k for k, _, _ in got] == [f"{i:06x}" for i in range(2500)]
    assert sum(n for _, _, n in got) == sum(i % 7 for i in range(2500))
    assert all(at > 0 for _, at, _ in got)

"""The inline pack (peer.ipfs.pack): inline outputs' blocks and pins as rows of one SQLite
file, read after the block files and memory, swept by gc, and every row treated as hostile."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from peer.cids import Cid, parse_cid
from peer.errors import DataError, IntegrityError, NotFound, StoreError
from peer.ipfs import EmbeddedStore, inline
from peer.ipfs.pack import PACK_FILE, InlinePack
from peer.node import Node


def _output(text: str) -> tuple[str, dict[Cid, bytes]]:
    cid, made = inline.import_bytes(text.encode())
    return cid, inline.checked(made, cid)


def _files(root: Path) -> list[Path]:
    return [p for d in ("blocks", "pins") for p in (root / d).glob("**/*") if p.is_file()]


def _kept(tmp_path: Path, text: str,
          ) -> tuple[EmbeddedStore, str, dict[Cid, bytes], sqlite3.Connection]:
    """A store that kept and pinned one inline output, and a connection to its pack."""
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output(text)
    store.keep_inline(blocks, [cid])
    return store, cid, blocks, sqlite3.connect(tmp_path / "s" / PACK_FILE)


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
    assert store.pins() == [] and not store.inline_lost()
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
    stats = store.gc()
    dropped_key = parse_cid(dropped).key
    assert stats.blocks == 1 and stats.bytes == len(dblocks[parse_cid(dropped)])
    assert [parse_cid(c).key for c in stats.removed] == [dropped_key]
    assert store.has(kept) and not store.has(dropped)
    assert store.used_bytes() == store.blocks.pack.file_bytes() > 0  # its file and WAL
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
    store, cid, blocks, db = _kept(tmp_path, "a row a disk fault changed\n")
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


BAD_BLOCK_ROWS = {  # a block row's (key, at) that does not read back
    "key_not_utf8": "CAST(x'ff41' AS TEXT), 0.0", "key_integer": "7, 0.0",
    "key_blob": "x'0155', 0.0", "key_not_hex": "'zz-not-hex', 0.0",
    "key_one_byte": "'ab', 0.0", "key_upper_case": "'AB12', 0.0",
    "at_text": "'aa12', 'x'", "at_not_utf8": "'aa12', CAST(x'ff41' AS TEXT)",
    "at_negative": "'aa12', -1.0", "at_infinite": "'aa12', 9e999"}


@pytest.mark.parametrize("row", BAD_BLOCK_ROWS.values(), ids=BAD_BLOCK_ROWS.keys())
def test_a_block_row_that_does_not_read_back_is_kept_and_gc_goes_on(
        tmp_path: Path, row: str, caplog: pytest.LogCaptureFixture) -> None:
    """What a row holds is not known unless its key is a block's: it is never freed unread
    (fuzz F17: a key not UTF-8 failed every gc; a key of another type, or not hex, was
    deleted; a time not a number was the oldest, past any grace)."""
    store, pinned, _, db = _kept(tmp_path, "pinned\n")
    dropped, dblocks = _output("unpinned\n")
    store.keep_inline(dblocks, [])
    db.execute(f"INSERT INTO blocks VALUES ({row.split(', ')[0]}, x'01', {row.split(', ')[1]})")
    db.commit()
    assert store.gc().blocks == 1 and not store.has(dropped) and store.has(pinned)
    assert store.gc().blocks == 0
    assert db.execute("SELECT count(*) FROM blocks WHERE data = x'01'").fetchone()[0] == 1
    left = [r.getMessage() for r in caplog.records if "do not read back" in r.getMessage()]
    assert len(left) == 1 and str(tmp_path / "s" / PACK_FILE) in left[0]  # logged once
    assert "1 block row(s)" in left[0] and "left out of gc (kept)" in left[0]


def test_block_rows_of_keys_of_no_text_page_through_and_are_kept(tmp_path: Path) -> None:
    store, cid, _, db = _kept(tmp_path, "a sound row\n")
    db.executemany("INSERT INTO blocks (key, data, at) VALUES (?, x'00', 0.0)",
                   [(bytes([i % 256, i // 256]),) for i in range(1100)])  # keys of no text:
    db.commit()  # they sort after every text key (a scan paged by key did not end)
    assert store.gc().blocks == 0 and store.has(cid)
    assert db.execute("SELECT count(*) FROM blocks").fetchone()[0] == 1101


BAD_PINS = {  # a pin row's column and value that does not read back
    "cid_integer": "cid = 7", "cid_blob": "cid = x'0155'",
    "cid_not_utf8": "cid = CAST(x'ff41' AS TEXT)", "cid_not_a_cid": "cid = 'not a cid'",
    "at_not_utf8": "at = CAST(x'ff41' AS TEXT)", "at_text": "at = 'x'", "at_blob": "at = x'01'",
    "at_negative": "at = -1.0", "at_infinite": "at = 9e999"}


@pytest.mark.parametrize("damage", BAD_PINS.values(), ids=BAD_PINS.keys())
def test_a_pin_row_that_does_not_read_back_holds_gc_and_retention_back(
        tmp_path: Path, damage: str) -> None:
    """Fuzz F20: a pin row whose CID was not text was skipped, and gc freed what it pinned;
    one not UTF-8 failed gc with the reader's decode error. F5: a time not UTF-8 failed
    every read of the pins so; a time not a number read as 0.0, the oldest (retention
    unpins the oldest first)."""
    store, _, blocks, db = _kept(tmp_path, "pinned by a row a disk fault changed\n")
    db.execute(f"UPDATE pins SET {damage}")
    db.commit()
    for call in (store.gc, store.output_pins, store.pins):
        with pytest.raises(DataError, match=f"{tmp_path / 's' / PACK_FILE}: the inline pack's "
                           "pins table holds 1 row.* collects no garbage"):
            call()
    assert db.execute("SELECT count(*) FROM blocks").fetchone()[0] == len(blocks)
    db.execute("DELETE FROM pins")  # removed (or mended): gc goes on
    db.commit()
    assert store.gc().blocks == len(blocks)


def test_a_pin_time_ahead_of_the_clock_is_set_to_now_and_ages_from_then(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A pin's time in the future (a clock that ran ahead as it was pinned, a damaged row)
    never aged: retention never unpinned it, under any bound (an output pin no job names is
    young while pinned under an hour ago). Its time is set to now as it is read (one write,
    logged): it ages from then, as a pin made now; the others are left as they are."""
    store, cid, _, db = _kept(tmp_path, "pinned by a clock that ran ahead\n")
    other, blocks = _output("pinned on time\n")
    store.keep_inline(blocks, [other])
    db.execute("UPDATE pins SET at = 1e12 WHERE cid = ?", (cid,))  # (the year 33658)
    db.commit()
    (on_time,) = db.execute("SELECT at FROM pins WHERE cid = ?", (other,)).fetchone()
    before = time.time()
    with caplog.at_level(logging.WARNING):
        pins = store.output_pins()
        assert store.output_pins() == pins  # (set once: then read as written)
    after = time.time()
    assert before <= pins[cid] <= after and pins[other] == on_time
    assert db.execute("SELECT at FROM pins WHERE cid = ?", (cid,)).fetchone() == (pins[cid],)
    warned = [r.getMessage() for r in caplog.records if "ahead of the clock" in r.getMessage()]
    assert len(warned) == 1 and "1 pins row(s)" in warned[0]


def test_a_block_time_ahead_of_the_clock_is_set_to_now(tmp_path: Path) -> None:
    """A block row's time in the future kept it from gc for good (its grace never ended)."""
    pack = InlinePack(tmp_path)
    pack.keep({"aa00": b"1", "bb00": b"2"}, [])
    db = sqlite3.connect(tmp_path / PACK_FILE)
    db.execute("UPDATE blocks SET at = 1e12 WHERE key = 'aa00'")
    db.commit()
    before = time.time()
    times = {k: at for _, k, at, _ in pack.entries()}
    assert before <= times["aa00"] <= time.time()
    assert db.execute("SELECT at FROM blocks WHERE key = 'aa00'").fetchone() == (times["aa00"],)


HUGE = "replace(hex(zeroblob(2000000)), '0', 'b')"  # a text of 4 million characters


@pytest.mark.parametrize("column", ["cid", "at"])
def test_a_huge_pin_cid_or_time_is_not_read_whole(tmp_path: Path, column: str) -> None:
    """A pin's CID (or time) was read whole before its check: a text of any size in that
    column was read into the peer's memory (twice: its bytes, then the text). It is read
    cut short, a row that does not read back."""
    store, _, _, db = _kept(tmp_path, "pinned by a row grown huge\n")
    db.execute(f"UPDATE pins SET {column} = {HUGE}")
    db.commit()
    with _peak_below(1 << 20), pytest.raises(DataError, match="pins table holds 1 row"):
        store.blocks.pack.pinned()


def test_a_huge_block_key_or_time_is_not_read_whole(tmp_path: Path) -> None:
    pack = InlinePack(tmp_path)
    pack.keep({"aa00": b"1", "bb00": b"2", "cc00": b"3"}, [])
    db = sqlite3.connect(tmp_path / PACK_FILE)
    db.execute(f"UPDATE blocks SET key = {HUGE} WHERE key = 'aa00'")
    db.execute(f"UPDATE blocks SET at = CAST({HUGE} AS BLOB) WHERE key = 'bb00'")
    db.commit()
    with _peak_below(1 << 20):
        assert [k for _, k, _, _ in pack.entries()] == ["cc00"]  # (the others: kept)


@contextlib.contextmanager
def _peak_below(most_bytes: int) -> Any:
    """The body allocates at most `most_bytes` of Python memory at its peak (tracemalloc)."""
    tracemalloc.start()
    try:
        yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < most_bytes


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
    worker = EmbeddedStore(root)  # a worker process: it reads, and never moves the file
    assert not worker.has(_output("x\n")[0]) and path.exists()
    assert not list(root.glob(f"{PACK_FILE}.bad-*"))
    store = EmbeddedStore(root)
    assert store.inline_lost()  # the peer's start: InlineOutputs restores every event held
    assert len(list(root.glob(f"{PACK_FILE}.bad-*"))) >= 1  # kept, for a post-mortem
    cid, blocks = _output("kept in the new pack\n")
    store.keep_inline(blocks, [cid])
    assert EmbeddedStore(root).pins() == [cid]
    assert EmbeddedStore(root).inline_lost()  # a crash before the restore ended: again
    store.inline_restored()
    assert not EmbeddedStore(root).inline_lost()


def test_a_write_error_names_the_pack_and_keeps_nothing_half_done(tmp_path: Path) -> None:
    p, q = _output("p\n")[0], _output("q\n")[0]
    pack = InlinePack(tmp_path)
    pack.keep({"aa": b"1"}, [p])
    pack.close()
    ro = InlinePack(tmp_path)
    ro._writer().execute("PRAGMA query_only=1")  # every write fails (as on a read-only disk)
    with pytest.raises(StoreError, match="cannot keep inline blocks: the inline pack"):
        ro.keep({"bb": b"2"}, [q])
    assert ro.get("aa") == b"1" and ro.get("bb") is None and list(ro.pinned()) == [p]


def test_entries_pages_through_every_row(tmp_path: Path) -> None:
    pack = InlinePack(tmp_path)
    pack.keep({f"{i:06x}": b"x" * (i % 7) for i in range(2500)}, [])
    got = list(pack.entries())
    assert [k for _, k, _, _ in got] == [f"{i:06x}" for i in range(2500)]
    assert sum(n for _, _, _, n in got) == sum(i % 7 for i in range(2500))
    assert all(at > 0 for _, _, at, _ in got)


def _tear(path: Path, table: str) -> None:
    """What a disk fault may leave: the root page of `table` overwritten."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(b"\xee" * size)


@pytest.mark.parametrize("table", ["pins", "blocks"])
def test_a_torn_table_fails_gc_and_the_start_replaces_the_pack(
        tmp_path: Path, table: str) -> None:
    """A read that fails is never "nothing pinned": gc deleted every pinned inline block."""
    root = tmp_path / "s"
    store = EmbeddedStore(root)
    cid, blocks = _output("pinned, in a torn table\n")
    store.keep_inline(blocks, [cid])
    store.close()
    _tear(root / PACK_FILE, table)
    with pytest.raises(StoreError):
        EmbeddedStore(root).gc()
    db = sqlite3.connect(root / PACK_FILE)
    with contextlib.suppress(sqlite3.DatabaseError):  # (the table may be the torn one)
        assert db.execute("SELECT count(*) FROM blocks").fetchone()[0] == 1  # not deleted
    db.close()
    assert EmbeddedStore(root).inline_lost()  # quick_check: moved aside, restore everything


def test_gc_deletes_nothing_from_the_pack_when_a_read_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output("pinned, its pins read fails\n")
    store.keep_inline(blocks, [cid])
    real = store.blocks.pack._read

    def flaky(sql: str, args: tuple[object, ...]) -> list[tuple[object, ...]]:
        if "FROM pins" in sql:
            raise StoreError("cannot read: the inline pack: database is locked")
        return real(sql, args)

    monkeypatch.setattr(store.blocks.pack, "_read", flaky)
    with pytest.raises(StoreError):
        store.gc()
    monkeypatch.undo()
    assert store.has(cid) and store.pins() == [cid]


def test_a_read_whose_open_failed_does_not_open_again_until_reopen_s(tmp_path: Path) -> None:
    """A read on the event loop (the scheduler's `has`) must not wait on every call."""
    pack = InlinePack(tmp_path)
    pack.keep({"aa": b"1"}, [])
    pack.close()
    other = sqlite3.connect(tmp_path / PACK_FILE, isolation_level=None)  # another process
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO pins VALUES ('x', 0.0)")
    other.execute("COMMIT")  # exclusive mode: it keeps its lock
    now = [100.0]
    reader = InlinePack(tmp_path, clock=lambda: now[0])
    opens: list[int] = []
    real = reader._reader

    def counted() -> sqlite3.Connection | None:
        if reader._r is None and (reader._failed is None or now[0] - reader._failed[0] >= 5):
            opens.append(1)
        return real()

    reader._reader = counted  # type: ignore[method-assign]
    assert [reader.has("aa"), reader.has("aa"), reader.size("aa")] == [False, False, None]
    with pytest.raises(StoreError, match="cannot be read"):
        reader.get("aa")  # (gc's reads raise)
    assert len(opens) == 1
    other.close()
    now[0] += 5.0
    assert reader.has("aa") and reader.get("aa") == b"1" and len(opens) == 2


def test_unpin_of_a_file_pin_works_while_the_pack_cannot_be_opened(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = EmbeddedStore(root)
    user = store.add_bytes(b"a user's upload\n")
    store.pin(user, explicit=True)
    (root / PACK_FILE).mkdir()  # an unopenable pack
    store.unpin(user)
    assert store.explicit_pins() == [] and user not in {p.name for p in (root / "pins").iterdir()}
    with pytest.raises(StoreError):  # not a file pin: the pack may hold it, it cannot tell
        store.unpin(user)


def test_close_releases_the_connections_and_a_later_use_opens_them_again(
        tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output("closed, then read\n")
    store.keep_inline(blocks, [cid])
    assert store.has(cid) and store.blocks.pack._w is not None
    store.close()
    assert store.blocks.pack._w is None and store.blocks.pack._r is None
    assert store.has(cid)


def test_the_pack_shrinks_after_gc(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = EmbeddedStore(root)
    for i in range(6):  # 6 passes of 300 outputs of about 900 bytes
        store.keep_inline({c: b for k in range(300) for c, b in _output(
            f"row {i} {k} " + "y" * 900 + "\n")[1].items()}, [])
    store.close()
    big = (root / PACK_FILE).stat().st_size
    store.gc()
    store.close()
    assert (root / PACK_FILE).stat().st_size < big / 2  # incremental_vacuum stepped whole


def test_each_pin_has_its_own_time_and_output_pins_give_it(tmp_path: Path) -> None:
    """The time is the pin's, not its block row's: a row kept earlier (an unpinned copy
    written when this peer needed it), or a root stored as a durable file, has none."""
    store = EmbeddedStore(tmp_path / "s")
    cid, blocks = _output("a small result\n")
    store.keep_inline(blocks, [])  # kept, unpinned (restaged)
    db = sqlite3.connect(tmp_path / "s" / PACK_FILE)
    db.execute("UPDATE blocks SET at = 1.0")  # ... a month ago
    db.commit()
    store.keep_inline(blocks, [cid])  # pinned now
    durable = store.add_bytes(b"a durable file first\n")
    store.keep_inline(_output("a durable file first\n")[1], [durable])  # no row: a file
    got = store.output_pins()
    assert sorted(got) == sorted([cid, durable]) and min(got.values()) > 1e9
    store.pin(store.add_bytes(b"a pin of a file: not one of these"))
    assert sorted(store.output_pins()) == sorted([cid, durable])


async def test_a_storage_cycle_over_a_damaged_pin_answers_503_naming_the_pack(
        served_node: tuple[Any, Node]) -> None:
    """Fuzz F5 (a pin's time not UTF-8) over the API: the request is sound, the peer's
    stored data needs mending (a 500 with the decoder's message before)."""
    c, node = served_node
    cid, blocks = _output("pinned\n")
    store = node.store
    assert isinstance(store, EmbeddedStore)
    store.keep_inline(blocks, [cid])
    db = sqlite3.connect(store.blocks.pack.path)
    db.execute("UPDATE pins SET at = CAST(x'ff41' AS TEXT)")
    db.commit()
    db.close()
    r = await c.post("/api/gc")
    body = await r.json()
    assert r.status == 503 and body["error"] == "DataError", body
    assert body["message"].startswith(f"{store.blocks.pack.path}: the inline pack's pins table")
    assert store.has(cid)

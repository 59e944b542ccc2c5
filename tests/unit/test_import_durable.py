"""A CAR import (EmbeddedStore.import_car, what a fetch of another peer's DAG does) keeps a
block it finds present only if known durable (peer.ipfs.blocks: the module's docstring), as
the store's other writes do: one held only in the inline pack (an inline output, unsynced) or
a file marked by a failed sync is written again, durable. It took either as stored. (The
fetcher's and replicator's "is this DAG complete here" still count any present block, so such
a DAG is not fetched at all: the store's pin makes it durable, tests/unit/test_pin_durable.)"""

from __future__ import annotations

from pathlib import Path

from peer.cids import parse_cid
from peer.ipfs import EmbeddedStore, dag, inline

N_FILES = 3


def _car(tmp_path: Path) -> tuple[list[str], bytes]:
    """N_FILES one-block files' CIDs and a CAR of them all."""
    src = EmbeddedStore(tmp_path / "src")
    cids = []
    for i in range(N_FILES):
        f = tmp_path / f"f{i}"
        f.write_bytes(f"file {i} of a chunk's input\n".encode() * 100)
        cids.append(src.add_path(f))
    return cids, b"".join(src.export_cars(cids))


def test_an_import_writes_again_an_inline_block_it_finds(tmp_path: Path) -> None:
    cids, data = _car(tmp_path)
    store = EmbeddedStore(tmp_path / "store")
    cid, made = inline.import_bytes((tmp_path / "f0").read_bytes())
    assert cid == cids[0]
    store.keep_inline(inline.checked(made, cid), [cid])
    assert store.has(cid) and not store.blocks.has_durable_file(parse_cid(cid))
    assert store.import_car([data]) == cids
    assert all(store.blocks.has_durable_file(parse_cid(c)) for c in cids)
    assert b"".join(store.cat(cid)) == (tmp_path / "f0").read_bytes()


def test_an_import_writes_again_a_block_a_failed_sync_left_marked(tmp_path: Path) -> None:
    """A block put in place by a write whose sync then failed is marked; a later process's
    import of it must make it durable, not take the marked file as stored."""
    cids, data = _car(tmp_path)
    first = EmbeddedStore(tmp_path / "store")
    first.import_car([data])
    c = parse_cid(cids[1])
    first.blocks.distrust([first.blocks.path(c.key)])  # (as a failed sync does)
    store = EmbeddedStore(tmp_path / "store")  # the next process, trusting the store
    assert store.has(cids[1]) and not store.blocks.has_durable_file(c)
    store.import_car([data])
    assert EmbeddedStore(tmp_path / "store").blocks.has_durable_file(c)
    assert b"".join(store.cat(cids[1])) == (tmp_path / "f1").read_bytes()


def test_a_car_carrying_a_block_twice_imports_where_no_file_is_known_durable(
        tmp_path: Path) -> None:
    """After a failed sync no block of this process counts as durable, so every block of a
    CAR is staged: one carried twice was staged twice and its second move found no file
    (a FileNotFoundError out of the import)."""
    cids, _ = _car(tmp_path)
    src = EmbeddedStore(tmp_path / "src")
    c = parse_cid(cids[0])
    data = src.blocks.get(c)
    car = b"".join(dag.car_pieces([c], [(c, data), (c, data)], dups=True))
    store = EmbeddedStore(tmp_path / "store")
    assert store.import_car([car]) == [cids[0]]
    store.blocks.distrust()  # (as a failed sync does: nothing here is known durable now)
    assert store.import_car([car]) == [cids[0]]
    assert b"".join(store.cat(cids[0])) == (tmp_path / "f0").read_bytes()

"""CARv1 export/import: header bytes, round trips, tampering, truncation and size bounds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.cids import DAG_PB, sha256_cid
from peer.errors import BadDag, IntegrityError, NotFound, StoreError, TooLarge
from peer.ipfs import EmbeddedStore, car, dagpb, hamt, parse_cid
from peer.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData, varint
from peer.ipfs.store import CarOptions

HELLO_V0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def _dir(store: EmbeddedStore, tmp_path: Path, version: int = 1) -> str:
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True, exist_ok=True)
    (src / "hello.txt").write_bytes(b"hello\n")
    (src / "d" / "big.bin").write_bytes(bytes(range(256)) * 1100)  # two chunks
    return store.add_path(src, cid_version=version)


def test_header_bytes() -> None:
    c = parse_cid(HELLO_V1)
    header = car.encode_header([c])
    assert header.startswith(b"\xa2\x65roots\x81\xd8\x2a\x58\x25\x00")
    assert header.endswith(b"\x67version\x01")
    assert car.decode_header(header) == [c]
    c0 = parse_cid(HELLO_V0)
    assert car.decode_header(car.encode_header([c0, c])) == [c0, c]


@pytest.mark.parametrize(
    "bad",
    [b"", b"\xa1\x67version\x02", b"\xa2\x65roots\x80\x67version\x02", b"\x80", b"\xa2\x65roots"],
)
def test_bad_headers(bad: bytes) -> None:
    with pytest.raises(StoreError):
        car.decode_header(bad)


@pytest.mark.parametrize("version", [0, 1])
def test_round_trip_into_fresh_store(store: EmbeddedStore, tmp_path: Path, version: int) -> None:
    root = _dir(store, tmp_path, version)
    data = b"".join(store.export_car(root))
    other = EmbeddedStore(tmp_path / "other")
    # feed in awkward chunk sizes
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert other.import_car(chunks, pin=True) == [root]
    assert other.pins() == [root]
    assert list(other.walk(root)) == list(store.walk(root))
    assert b"".join(other.export_car(root)) == data


def test_export_order_is_depth_first_without_duplicates(store: EmbeddedStore) -> None:
    root = store.make_dir({"a": store.add_bytes(b"same"), "b": store.add_bytes(b"same")})
    roots, blocks = car.read_car(store.export_car(root))
    cids = [str(c) for c, _ in blocks]
    assert roots == [parse_cid(root)]
    assert cids == [root, store.resolve(root, "a")]


def test_tampered_car_stores_and_pins_nothing(store: EmbeddedStore, tmp_path: Path) -> None:
    src = EmbeddedStore(tmp_path / "src-store")
    root = _dir(src, tmp_path)
    data = bytearray(b"".join(src.export_car(root)))
    data[-1] ^= 0xFF
    with pytest.raises(IntegrityError):
        store.import_car([bytes(data)], pin=True)
    assert store.pins() == []
    assert not store.has(root)
    assert list((store.root / "blocks").rglob("*")) == [
        p for p in (store.root / "blocks").rglob("*") if p.is_dir()
    ]


def test_truncated_car(store: EmbeddedStore, tmp_path: Path) -> None:
    src = EmbeddedStore(tmp_path / "src-store")
    data = b"".join(src.export_car(_dir(src, tmp_path)))
    with pytest.raises(StoreError, match="truncated"):
        store.import_car([data[:-3]])
    with pytest.raises(StoreError):
        store.import_car([b""])


def test_size_bounds(store: EmbeddedStore) -> None:
    with pytest.raises(TooLarge):
        store.import_car([varint(car.MAX_HEADER_BYTES + 1)])
    header = car.frame(car.encode_header([parse_cid(HELLO_V1)]))
    with pytest.raises(TooLarge):
        store.import_car([header, varint(car.MAX_BLOCK_BYTES + 1)])
    with pytest.raises(TooLarge):
        store.import_car([header, b"\x00" * 100], max_bytes=50)


def test_import_partial_dag_with_pin_fails(store: EmbeddedStore) -> None:
    root = parse_cid(store.make_dir({"a": store.add_bytes(b"x")}))
    block = store.get_block(str(root))
    partial = car.frame(car.encode_header([root])) + car.block_section(root, block)
    fresh_root = store.root.parent / "fresh"
    fresh = EmbeddedStore(fresh_root)
    assert fresh.import_car([partial]) == [str(root)]  # partial CARs are fine unpinned
    with pytest.raises(NotFound):
        fresh.import_car([partial], pin=True)
    assert fresh.pins() == []


def test_export_missing(store: EmbeddedStore) -> None:
    with pytest.raises(NotFound):
        store.export_car(HELLO_V1)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.dictionaries(
        st.text("abcé", min_size=1, max_size=4), st.binary(max_size=3000), max_size=4
    ),
    version=st.sampled_from([0, 1]),
)
def test_car_round_trip_property(tmp_path: Path, files: dict[str, bytes], version: int) -> None:
    import secrets

    base = tmp_path / secrets.token_hex(4)
    a, b = EmbeddedStore(base / "a"), EmbeddedStore(base / "b")
    root = a.make_dir({name: a.add_bytes(data, version) for name, data in files.items()}, version)
    assert b.import_car(a.export_car(root)) == [root]
    assert {e.path: b"".join(b.cat(e.cid)) for e in b.walk(root)} == files


def _blocks(pieces: Iterator[bytes]) -> tuple[list[str], list[str]]:
    roots, blocks = car.read_car(pieces, None)
    return [str(r) for r in roots], [str(c) for c, _ in blocks]


def test_export_car_of_a_path_sends_the_path_then_what_the_scope_selects(
        store: EmbeddedStore, tmp_path: Path) -> None:
    root = _dir(store, tmp_path)
    trail = store.resolve_path(root, "d/big.bin")
    assert trail == [root, store.resolve(root, "d"), store.resolve(root, "d/big.bin")]
    big = trail[-1]
    leaves = [c for c, _ in store.dag(big)][1:]
    assert len(leaves) == 2
    roots, cids = _blocks(store.export_car(root, "d/big.bin"))
    assert roots == [root] and cids == [*trail, *leaves]
    _, cids = _blocks(store.export_car(root, "d/big.bin", CarOptions(scope="block")))
    assert cids == trail
    second = CarOptions(scope="entity", entity_bytes=(262144, None))  # only the second chunk
    assert _blocks(store.export_car(root, "d/big.bin", second))[1] == [*trail, leaves[1]]
    last_byte = CarOptions(scope="entity", entity_bytes=(-1, None))
    assert _blocks(store.export_car(root, "d/big.bin", last_byte))[1] == [*trail, leaves[1]]
    _, cids = _blocks(store.export_car(root, "d", CarOptions(scope="entity")))
    assert cids == trail[:2]  # a directory entity is its own block only
    assert _blocks(store.export_car(root))[1] == [c for c, _ in store.dag(root)]


def test_export_car_fails_before_the_first_byte_when_the_target_is_missing(
        store: EmbeddedStore, tmp_path: Path) -> None:
    root = _dir(store, tmp_path)
    with pytest.raises(NotFound):
        store.export_car(root, "d/nope.bin")
    big = store.resolve(root, "d/big.bin")
    store.blocks.path(parse_cid(big).key).unlink()
    with pytest.raises(NotFound):
        store.export_car(root, "d/big.bin")


def test_dups_repeats_blocks_only_when_asked(store: EmbeddedStore) -> None:
    same = store.add_bytes(bytes(262144 * 2))  # two identical zero chunks: one leaf block
    _, once = _blocks(store.export_car(same))
    _, twice = _blocks(store.export_car(same, options=CarOptions(dups=True)))
    assert len(once) == 2 and len(twice) == 3 and twice[1] == twice[2]


def test_entity_bytes_of_a_chain_deeper_than_the_bound_is_refused() -> None:
    """A 1,200-level chain once hit RecursionError (502): a clear TooLarge instead."""
    from peer.cids import DAG_PB, RAW, sha256_cid
    from peer.errors import TooLarge
    from peer.ipfs import dag, dagpb
    from peer.ipfs.unixfs import MAX_DEPTH

    blocks = {}
    c = sha256_cid(b"x", RAW, 1)
    blocks[c.key] = b"x"
    for _ in range(1200):
        fs = dagpb.UnixFSData(dagpb.DataType.FILE, None, 1, (1,))
        block = dagpb.encode_node(dagpb.PBNode((dagpb.PBLink(c.binary, "", 1),),
                                               dagpb.encode_unixfs(fs)))
        c = sha256_cid(block, DAG_PB, 1)
        blocks[c.key] = block
    with pytest.raises(TooLarge, match=f"more than {MAX_DEPTH} levels deep"):
        list(dag.file_blocks(lambda k: blocks[k.key], c, blocks[c.key], 0, 1))


# --- HAMT-sharded directories ---------------------------------------------------------------------


def _hamt(store: EmbeddedStore, count: int = 300) -> tuple[str, dict[str, str]]:
    """A HAMT (as Kubo shards with a 1-byte threshold) of `count` small files, stored."""
    files = {f"f{i}": store.add_bytes(str(i).encode()) for i in range(count)}
    links = [hamt.Link(n, parse_cid(c), store.dag_size(c)) for n, c in files.items()]
    built = hamt.build(links, 1)
    for c, block in built.blocks:
        store.put_block(str(c), block)
    return str(built.root), files


def _car_cids(store: EmbeddedStore, root: str, path: str = "",
              options: CarOptions | None = None) -> list[str]:
    _, blocks = car.read_car([b"".join(store.export_car(root, path, options))])
    return [str(c) for c, _ in blocks]


def _shards_to(store: EmbeddedStore, root: str, name: str) -> list[str]:
    node = dagpb.decode_node(store.get_block(root))
    fs = dagpb.decode_unixfs(node.data or b"")
    found, trail = hamt.lookup(lambda c: store.get_block(str(c)), parse_cid(root), node, fs, name)
    assert found is not None
    return [str(c) for c in trail]


def test_car_of_a_path_through_a_hamt_holds_the_shards_on_the_way(store: EmbeddedStore) -> None:
    root, files = _hamt(store)
    names = [n for n in files if _shards_to(store, root, n)]  # names below a sub-shard
    assert names
    name = names[0]
    trail = [root, *_shards_to(store, root, name), files[name]]
    assert _car_cids(store, root, name) == trail
    assert _car_cids(store, root, name, CarOptions(scope="block")) == trail
    assert store.resolve_path(root, name) == [root, files[name]]  # segments, not shards


def test_car_entity_of_a_hamt_is_every_shard_and_no_entry(store: EmbeddedStore) -> None:
    root, files = _hamt(store)
    got = _car_cids(store, root, "", CarOptions(scope="entity"))
    shards = [str(c) for c, _ in hamt.shard_blocks(lambda c: store.get_block(str(c)),
                                                    parse_cid(root), store.get_block(root))]
    assert got == shards and got[0] == root and len(got) > 1
    assert not set(got) & set(files.values())
    everything = _car_cids(store, root)
    assert set(everything) == set(shards) | set(files.values())


def test_hamt_moves_between_stores_as_a_car(store: EmbeddedStore, tmp_path: Path) -> None:
    """What fetch does between peers: export, import elsewhere, read the same entries."""
    root, files = _hamt(store)
    other = EmbeddedStore(tmp_path / "other")
    assert other.import_car(store.export_cars([root]), pin=True) == [root]
    assert {e.path: e.cid for e in other.walk(root)} == files
    assert b"".join(other.cat(other.resolve(root, "f42"))) == b"42"


def test_malformed_hamt_in_a_car_stores_nothing(store: EmbeddedStore, tmp_path: Path) -> None:
    leaf = store.add_bytes(b"x")
    fs = UnixFSData(DataType.HAMT_SHARD, b"\x01\x00", hash_type=0x22, fanout=256)  # bucket 8
    bad = dagpb.encode_node(PBNode((PBLink(parse_cid(leaf).binary, "09x", 1),),
                                   dagpb.encode_unixfs(fs)))
    bad_cid = sha256_cid(bad, DAG_PB, 1)
    data = car.frame(car.encode_header([bad_cid])) + car.block_section(bad_cid, bad)
    other = EmbeddedStore(tmp_path / "other")
    with pytest.raises(BadDag, match=str(bad_cid)):
        other.import_car([data])
    assert not other.has(str(bad_cid))
    with pytest.raises(BadDag, match="bucket 9"):
        other.put_block(str(bad_cid), bad)
    assert not other.has(str(bad_cid))

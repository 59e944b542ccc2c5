"""HAMT-sharded directories: Kubo vectors, build-then-read properties, malformed shards."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.cids import DAG_PB, Cid, sha256_cid
from peer.errors import BadDag, NotFound, StoreError
from peer.ipfs import dagpb, hamt
from peer.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData
from peer.ipfs.hamt import Link
from peer.ipfs.unixfs import Importer, Node, Reader

# `ipfs add -r` (Kubo 0.39) of files f0..f299 holding str(i), with
# Import.UnixFSHAMTDirectorySizeThreshold = "1B" (so a small directory is sharded) and, for the
# last one, Import.UnixFSHAMTDirectoryMaxFanout = 16.
KUBO_300_V1 = "bafybeicehtyiu43swtswhvpr4vf4ahz3danmqyxuqbnlpopq6gkba3hu6a"
KUBO_300_V0 = "QmYkw85QEbMM1rcsYnWri3JdZGDGYRTnbhfAU2yvzpV6YU"
KUBO_300_V1_FANOUT_16 = "bafybeigrtvsw7p4xy23n2mjabb7tp5vnzumxxzfduzz7upn4sz276uq37y"
KUBO_ONE_ENTRY_V1 = "bafybeihcyg73ipcpm2db5pstwef6ds3csfj33jrogbaeljw3h5ju7pt5cu"  # a -> "x"


class MemBlocks:
    """In-memory block sink and getter."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}

    def put_trusted(self, c: Cid, data: bytes) -> None:
        self.blocks[c.key] = data

    def get(self, c: Cid) -> bytes:
        try:
            return self.blocks[c.key]
        except KeyError:
            raise NotFound(f"{c} absent") from None

    def put(self, data: bytes) -> Cid:
        c = sha256_cid(data, DAG_PB, 1)
        self.blocks[c.key] = data
        return c


def _files(mem: MemBlocks, contents: dict[str, bytes], version: int) -> list[Link]:
    out = []
    for name, data in contents.items():
        node = Importer(mem, version).file(io.BytesIO(data))
        out.append(Link(name, node.cid, node.tsize))
    return out


def _build(mem: MemBlocks, links: list[Link], version: int = 1,
           fanout: int = hamt.FANOUT) -> hamt.Built:
    built = hamt.build(links, version, fanout)
    for c, block in built.blocks:
        mem.put_trusted(c, block)
    return built


def _root(mem: MemBlocks, c: Cid) -> tuple[PBNode, UnixFSData]:
    node = dagpb.decode_node(mem.get(c))
    assert node.data is not None
    return node, dagpb.decode_unixfs(node.data)


@pytest.mark.parametrize(
    ("count", "version", "fanout", "expected"),
    [
        (300, 1, 256, KUBO_300_V1),
        (300, 0, 256, KUBO_300_V0),
        (300, 1, 16, KUBO_300_V1_FANOUT_16),
    ],
)
def test_kubo_vectors(count: int, version: int, fanout: int, expected: str) -> None:
    mem = MemBlocks()
    links = _files(mem, {f"f{i}": str(i).encode() for i in range(count)}, version)
    assert str(_build(mem, links, version, fanout).root) == expected


def test_kubo_one_entry_vector_and_exact_bytes() -> None:
    mem = MemBlocks()
    links = _files(mem, {"a": b"x"}, 1)
    built = _build(mem, links)
    assert str(built.root) == KUBO_ONE_ENTRY_V1
    node, fs = _root(mem, built.root)
    bucket = hamt.name_hash("a") >> 56
    assert [link.name for link in node.links] == [f"{bucket:02X}a"]
    assert (fs.type, fs.hash_type, fs.fanout) == (DataType.HAMT_SHARD, 0x22, 256)
    assert fs.data == (1 << bucket).to_bytes(32, "big").lstrip(b"\x00")
    assert built.tsize == len(mem.get(built.root)) + links[0].tsize


def test_read_back_kubo_vector_through_reader() -> None:
    mem = MemBlocks()
    contents = {f"f{i}": str(i).encode() for i in range(300)}
    links = _files(mem, contents, 1)
    built = _build(mem, links)
    reader = Reader(mem.get)
    info = reader.info(built.root)
    assert info.kind == "dir"
    assert [e.name for e in info.links] == sorted(contents)  # listed in name order
    assert {e.name: e.cid for e in info.links} == {lk.name: lk.cid for lk in links}
    assert info.size == built.tsize
    for name, data in random.Random(3).sample(sorted(contents.items()), 20):
        child = reader.child(built.root, name)
        assert b"".join(reader.read(child, 0, 1 << 30)) == data
    with pytest.raises(NotFound):
        reader.child(built.root, "f300")
    with pytest.raises(StoreError, match="directory"):
        list(reader.read(built.root, 0, 10))


def _fake(name: str) -> Link:
    return Link(name, sha256_cid(name.encode(), "raw", 1), len(name))


names = st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=120, unique=True)


@settings(max_examples=60, deadline=None)
@given(names=names, fanout=st.sampled_from([8, 16, 256]), data=st.data())
def test_build_then_read_finds_every_name(names: list[str], fanout: int,
                                          data: st.DataObject) -> None:
    mem = MemBlocks()
    links = [_fake(n) for n in names]
    built = _build(mem, links, 1, fanout)
    # The shape depends only on the set of entries.
    shuffled = data.draw(st.permutations(links))
    assert hamt.build(shuffled, 1, fanout).root == built.root
    node, fs = _root(mem, built.root)
    listed = list(hamt.entries(mem.get, built.root, node, fs))
    assert sorted(listed, key=lambda e: e.name) == sorted(links, key=lambda e: e.name)
    # Depth first in bucket order is ascending hash order.
    hashes = [hamt.name_hash(e.name) for e in listed]
    assert hashes == sorted(hashes)
    for link in links:
        found, trail = hamt.lookup(mem.get, built.root, node, fs, link.name)
        assert found == link.cid
        assert len(trail) < 64 // (fanout.bit_length() - 1)
    absent = data.draw(st.text(min_size=1, max_size=12).filter(lambda n: n not in names))
    assert hamt.lookup(mem.get, built.root, node, fs, absent)[0] is None


@settings(max_examples=30, deadline=None)
@given(names=names)
def test_levels_split_only_shared_buckets(names: list[str]) -> None:
    """A sub-shard exists exactly where two or more names share a bucket path; its level is
    the length of that shared path (fanout 8: 3 bits per level)."""
    mem = MemBlocks()
    built = _build(mem, [_fake(n) for n in names], 1, 8)
    blocks = list(hamt.shard_blocks(mem.get, built.root, mem.get(built.root)))
    assert blocks[0][0] == built.root
    assert {c.key for c, _ in blocks} == {c.key for c, _ in built.blocks}

    def prefixes(depth: int) -> dict[int, int]:
        out: dict[int, int] = {}
        for n in names:
            p = hamt.name_hash(n) >> (64 - 3 * depth)
            out[p] = out.get(p, 0) + 1
        return out

    # shard nodes at depth d >= 1 == bucket paths of length d shared by >= 2 names
    expected = 1 + sum(
        sum(1 for count in prefixes(d).values() if count >= 2) for d in range(1, 22))
    assert len(blocks) == expected


def test_two_names_sharing_every_hash_bit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hamt, "name_hash", lambda name: 42)
    with pytest.raises(StoreError, match="share all 64 hash bits"):
        hamt.build([_fake("a"), _fake("b")], 1)


def test_duplicate_names_refused() -> None:
    with pytest.raises(StoreError, match="two entries"):
        hamt.build([_fake("a"), _fake("a")], 1)


def test_importer_shards_from_the_threshold_on() -> None:
    mem = MemBlocks()
    leaf = Importer(mem, 1).file(io.BytesIO(b"x"))
    cid_len = len(leaf.cid.binary)
    # names of 100 bytes: estimate = count * (100 + cid_len)
    under = 262144 // (100 + cid_len)
    for count, kind in ((under, DataType.DIRECTORY), (under + 1, DataType.HAMT_SHARD)):
        children = {f"{i:0100d}": Node(leaf.cid, leaf.tsize, 1) for i in range(count)}
        root = Importer(mem, 1).directory(children)
        assert _root(mem, root.cid)[1].type == kind


# --- malformed shards ----------------------------------------------------------------------------


def _shard(links: list[PBLink], bitfield: bytes | None, fanout: int | None = 256,
           hash_type: int | None = 0x22) -> bytes:
    fs = UnixFSData(DataType.HAMT_SHARD, bitfield, hash_type=hash_type, fanout=fanout)
    return dagpb.encode_node(PBNode(tuple(links), dagpb.encode_unixfs(fs)))


def _value(mem: MemBlocks, bucket: int, name: str) -> PBLink:
    return PBLink(_fake(name).cid.binary, f"{bucket:02X}{name}", 1)


BIT_3 = (1 << 3).to_bytes(1, "big")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda m: _shard([_value(m, 3, "a")], BIT_3, fanout=255), "fanout 255"),
        (lambda m: _shard([_value(m, 3, "a")], BIT_3, fanout=0), "fanout 0"),
        (lambda m: _shard([_value(m, 3, "a")], BIT_3, fanout=2048), "fanout 2048"),
        (lambda m: _shard([_value(m, 3, "a")], BIT_3, fanout=None), "fanout None"),
        (lambda m: _shard([_value(m, 3, "a")], BIT_3, hash_type=0x12), "hash type 18"),
        (lambda m: _shard([_value(m, 3, "a")], b"\x01" + bytes(32)), "past its fanout"),
        (lambda m: _shard([_value(m, 3, "a")], b"\x09"), "marks 2 buckets but it has 1"),
        (lambda m: _shard([_value(m, 3, "a")], None), "marks 0 buckets"),
        (lambda m: _shard([_value(m, 4, "a")], BIT_3), "points to bucket 4"),
        (lambda m: _shard([PBLink(_fake("a").cid.binary, "a", 1)], BIT_3), "bucket number"),
        (lambda m: _shard([PBLink(m.put(_shard([_value(m, 1, "b")], b"\x02", fanout=16)).binary,
                                  "03", 1)], BIT_3), "fanout 16 under a shard of fanout 256"),
    ],
)
def test_malformed_shards_name_the_cid(make: object, message: str) -> None:
    mem = MemBlocks()
    block = make(mem)  # type: ignore[operator]
    c = mem.put(block)
    reader = Reader(mem.get)
    with pytest.raises(BadDag, match=message) as info:
        reader.info(c)
    stored = [str(sha256_cid(b, DAG_PB, 1)) for b in mem.blocks.values()]
    assert any(s in info.value.message for s in stored)  # names the faulty shard's CID
    if "under a shard" not in message:  # a sub-shard's fault shows only when read
        with pytest.raises(BadDag):
            hamt.check_block(c, block)


def test_too_deep_chain_is_refused() -> None:
    mem = MemBlocks()
    # 9 levels of single sub-shards in bucket 0, then two entries: deeper than 64 bits allow.
    child = mem.put(_shard([_value(mem, 0, "a"), _value(mem, 1, "b")], b"\x03"))
    for _ in range(9):
        child = mem.put(_shard([PBLink(child.binary, "00", 1)], b"\x01"))
    with pytest.raises(BadDag, match="deeper than its 64-bit hash allows"):
        Reader(mem.get).info(child)


def test_check_block_passes_other_blocks() -> None:
    mem = MemBlocks()
    links = _files(mem, {"a": b"x"}, 0)
    for key, data in mem.blocks.items():
        del key
        hamt.check_block(sha256_cid(data, DAG_PB, 0), data)
    hamt.check_block(sha256_cid(b"\xff\xff", DAG_PB, 1), b"\xff\xff")  # not dag-pb at all
    assert links

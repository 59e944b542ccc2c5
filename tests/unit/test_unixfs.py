"""dag-pb / UnixFS encoding, CID parsing and the balanced layout against known Kubo vectors."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.cids import DAG_PB, RAW, Cid, cid_from_bytes, sha256_cid, split_cid, verify
from peer.errors import BadCID, IntegrityError, StoreError
from peer.ipfs import dagpb, parse_cid
from peer.ipfs.unixfs import CHUNK_BYTES, MAX_LINKS, Importer, Reader

HELLO_V0 = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"
HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
EMPTY_FILE_V0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
EMPTY_FILE_V1 = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
EMPTY_DIR_V0 = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


class MemSink:
    """In-memory block sink/getter."""

    def __init__(self) -> None:
        self.blocks: dict[str, bytes] = {}

    def put_trusted(self, c: Cid, data: bytes) -> None:
        self.blocks[c.key] = data

    def get(self, c: Cid) -> bytes:
        return self.blocks[c.key]


def _import(data: bytes, version: int) -> tuple[str, MemSink]:
    sink = MemSink()
    node = Importer(sink, version).file(io.BytesIO(data))
    return str(node.cid), sink


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (300, b"\xac\x02"),
        (262144, b"\x80\x80\x10"),
        (2**63, b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"),
    ],
)
def test_varint_table(n: int, expected: bytes) -> None:
    assert dagpb.varint(n) == expected
    assert dagpb.read_varint(expected, 0) == (n, len(expected))


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(n: int) -> None:
    enc = dagpb.varint(n)
    assert dagpb.read_varint(enc + b"xx", 0) == (n, len(enc))


def test_read_varint_truncated() -> None:
    with pytest.raises(StoreError):
        dagpb.read_varint(b"\x80\x80", 0)


@pytest.mark.parametrize(
    ("data", "version", "expected"),
    [
        (b"hello\n", 0, HELLO_V0),
        (b"hello\n", 1, HELLO_V1),
        (b"", 0, EMPTY_FILE_V0),
        (b"", 1, EMPTY_FILE_V1),
    ],
)
def test_known_file_vectors(data: bytes, version: int, expected: str) -> None:
    assert _import(data, version)[0] == expected


@pytest.mark.parametrize(("version", "expected"), [(0, EMPTY_DIR_V0), (1, EMPTY_DIR_V1)])
def test_empty_directory_vector(version: int, expected: str) -> None:
    assert str(Importer(MemSink(), version).directory({}).cid) == expected


def test_empty_dir_and_file_exact_bytes() -> None:
    assert dagpb.dir_node([]) == b"\x0a\x02\x08\x01"
    assert dagpb.leaf_v0(b"") == b"\x0a\x04\x08\x02\x18\x00"
    assert dagpb.leaf_v0(b"hi") == b"\x0a\x08\x08\x02\x12\x02hi\x18\x02"


def test_links_are_written_before_data() -> None:
    c = sha256_cid(b"x", RAW, 1)
    block = dagpb.file_node([(c.binary, 1, 1), (c.binary, 1, 1)])
    assert block[0] == 0x12  # field 2 (Links) first
    node = dagpb.decode_node(block)
    assert [link.name for link in node.links] == ["", ""]  # Name present, empty
    assert block.count(b"\x12\x00") >= 2
    fs = dagpb.decode_unixfs(node.data or b"")
    assert fs == dagpb.UnixFSData(dagpb.DataType.FILE, None, 2, (1, 1))


def test_dir_links_sorted_by_name_bytes() -> None:
    c = sha256_cid(b"x", RAW, 1).binary
    block = dagpb.dir_node([("b", c, 1), ("Z", c, 1), ("é", c, 1), ("a", c, 1)])
    names = [link.name for link in dagpb.decode_node(block).links]
    assert names == ["Z", "a", "b", "é"]


@given(
    st.lists(
        st.tuples(st.binary(min_size=34, max_size=40), st.text(max_size=8), st.integers(0, 2**40)),
        max_size=5,
    ),
    st.one_of(st.none(), st.binary(max_size=50)),
)
def test_pbnode_round_trip(links: list[tuple[bytes, str, int]], data: bytes | None) -> None:
    node = dagpb.PBNode(tuple(dagpb.PBLink(h, n, t) for h, n, t in links), data)
    assert dagpb.decode_node(dagpb.encode_node(node)) == node


@given(st.binary(max_size=3 * 1024))
def test_unixfs_data_round_trip(data: bytes) -> None:
    fs = dagpb.UnixFSData(dagpb.DataType.FILE, data or None, len(data), (1, 2, 3))
    assert dagpb.decode_unixfs(dagpb.encode_unixfs(fs)) == fs


def test_decode_rejects_garbage() -> None:
    with pytest.raises(StoreError):
        dagpb.decode_node(b"\x0a\x05ab")  # length past end
    with pytest.raises(StoreError):
        dagpb.decode_node(b"\x0d\x00\x00\x00\x00")  # fixed32 wire type
    with pytest.raises(StoreError):
        dagpb.decode_unixfs(b"\x08\x09")  # unknown Type


def _shape(data: bytes, version: int) -> tuple[str, MemSink]:
    return _import(data, version)


def test_single_chunk_v1_is_raw_and_two_chunks_make_a_node() -> None:
    one, sink = _shape(b"a" * CHUNK_BYTES, 1)
    assert one.startswith("bafkrei") and len(sink.blocks) == 1
    two, sink = _shape(b"a" * (CHUNK_BYTES + 1), 1)
    assert two.startswith("bafybei")
    root = parse_cid(two)
    node = dagpb.decode_node(sink.get(root))
    fs = dagpb.decode_unixfs(node.data or b"")
    assert fs.blocksizes == (CHUNK_BYTES, 1) and fs.filesize == CHUNK_BYTES + 1
    assert [link.tsize for link in node.links] == [CHUNK_BYTES, 1]


def test_balanced_layout_depth_two() -> None:
    # 512 one-byte chunks need two levels (174 + 174 + 164): a tiny chunk size keeps it fast.
    import peer.ipfs.unixfs as ufs

    old = ufs.CHUNK_BYTES
    ufs.CHUNK_BYTES = 1
    try:
        root, sink = _import(bytes(range(256)) * 2, 1)
    finally:
        ufs.CHUNK_BYTES = old
    top = dagpb.decode_node(sink.get(parse_cid(root)))
    assert dagpb.decode_unixfs(top.data or b"").blocksizes == (174, 174, 164)
    first = dagpb.decode_node(sink.get(cid_from_bytes(top.links[0].hash)))
    assert len(first.links) == MAX_LINKS
    reader = Reader(sink.get)
    assert b"".join(reader.read(parse_cid(root), 0, 1 << 40)) == bytes(range(256)) * 2
    assert b"".join(reader.read(parse_cid(root), 170, 180)) == (bytes(range(256)) * 2)[170:180]


@given(st.binary(max_size=2000), st.integers(0, 2100), st.integers(0, 2100))
def test_read_ranges_small_chunks(data: bytes, start: int, length: int) -> None:
    import peer.ipfs.unixfs as ufs

    old = ufs.CHUNK_BYTES
    ufs.CHUNK_BYTES = 7
    try:
        for version in (0, 1):
            root, sink = _import(data, version)
            got = b"".join(Reader(sink.get).read(parse_cid(root), start, start + length))
            assert got == data[start : start + length]
    finally:
        ufs.CHUNK_BYTES = old


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Qm",
        "hello",
        "bafy",
        "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6a!",
        " " + HELLO_V0,
        "/ipfs/" + HELLO_V0,
        "é",
        "z" * 600,
    ],
)
def test_parse_cid_rejects(bad: str) -> None:
    with pytest.raises(BadCID) as info:
        parse_cid(bad)
    assert "invalid CID" in info.value.message


def test_parse_cid_normalizes() -> None:
    c = parse_cid(HELLO_V1)
    assert (c.version, c.codec, str(c)) == (1, RAW, HELLO_V1)
    c0 = parse_cid(HELLO_V0)
    assert (c0.version, c0.codec, str(c0)) == (0, DAG_PB, HELLO_V0)
    assert split_cid(c.binary + b"tail") == (c, len(c.binary))
    assert split_cid(c0.binary + b"tail") == (c0, 34)


def test_verify() -> None:
    c = sha256_cid(b"abc", RAW, 1)
    verify(c, b"abc")
    with pytest.raises(IntegrityError):
        verify(c, b"abd")


# -- bounds: sizes that lie, chains too deep (issue 11 item 6) ----------------------------------
def _put(sink: MemSink, block: bytes) -> Cid:
    c = sha256_cid(block, DAG_PB, 0)
    sink.put_trusted(c, block)
    return c


def _lying_node(children: list[tuple[Cid, int]], filesize: int | None = None) -> bytes:
    sizes = tuple(n for _, n in children)
    fs = dagpb.UnixFSData(dagpb.DataType.FILE, None,
                          sum(sizes) if filesize is None else filesize, sizes)
    links = tuple(dagpb.PBLink(c.binary, "", n) for c, n in children)
    return dagpb.encode_node(dagpb.PBNode(links, dagpb.encode_unixfs(fs)))


def test_filesize_not_the_sum_of_blocksizes_is_corrupt() -> None:
    sink = MemSink()
    leaf = _put(sink, dagpb.leaf_v0(b"hello"))
    root = _put(sink, _lying_node([(leaf, 5)], filesize=240 * 10**12))  # a 240 TB claim
    reader = Reader(sink.get)
    for call in (lambda: reader.info(root), lambda: list(reader.read(root, 0, 10))):
        with pytest.raises(IntegrityError, match=f"corrupt UnixFS file {root}: it declares "
                           "240000000000000 bytes but its data and blocksizes hold 5"):
            call()


def test_a_leaf_smaller_than_declared_is_corrupt() -> None:
    sink = MemSink()
    leaf = _put(sink, dagpb.leaf_v0(b"hello"))
    raw = sha256_cid(b"abc", RAW, 1)
    sink.put_trusted(raw, b"abc")
    good = _put(sink, _lying_node([(leaf, 5), (raw, 3)]))
    assert b"".join(Reader(sink.get).read(good, 0, 100)) == b"helloabc"
    for lie in ([(leaf, 5), (raw, 2**40)], [(leaf, 2**40), (raw, 3)]):
        root = _put(sink, _lying_node(lie))
        reader = Reader(sink.get)
        assert reader.info(root).size == sum(n for _, n in lie)  # consistent at the root
        with pytest.raises(IntegrityError, match=f"corrupt UnixFS file {root}: {root} "
                           r"declares 1099511627776 bytes for its link to .*, which holds"):
            list(reader.read(root, 0, 2**41))


def test_a_chain_deeper_than_the_bound_is_refused_naming_the_root() -> None:
    from peer.errors import TooLarge
    from peer.ipfs.unixfs import MAX_DEPTH

    sink = MemSink()
    c = _put(sink, dagpb.leaf_v0(b"x"))
    chain = [c]
    for _ in range(1200):
        c = _put(sink, _lying_node([(c, 1)]))
        chain.append(c)
    ok = chain[MAX_DEPTH - 1]  # MAX_DEPTH levels, the leaf included
    assert b"".join(Reader(sink.get).read(ok, 0, 10)) == b"x"
    for root in (chain[MAX_DEPTH], chain[-1]):
        with pytest.raises(TooLarge, match=f"the file DAG {root} is more than {MAX_DEPTH} "
                           "levels deep"):
            list(Reader(sink.get).read(root, 0, 10))


def _decoded(decode: object, block: bytes) -> object:
    try:
        return decode(block)  # type: ignore[operator]
    except StoreError as exc:
        return ("refused", exc.message)


_PB_LINKS = st.lists(st.builds(dagpb.PBLink, st.binary(max_size=40),
                               st.none() | st.text(max_size=10),
                               st.none() | st.integers(0, 2**64 - 1)), max_size=4)


@given(links=_PB_LINKS, data=st.none() | st.binary(max_size=20), edit=st.data())
def test_inline_dagpb_decoder_is_the_general_one(links: list[dagpb.PBLink], data: bytes | None,
                                                edit: st.DataObject) -> None:
    """decode_node's inline path accepts and refuses exactly what the general parser does,
    on valid nodes, a byte changed anywhere, and any prefix."""
    block = bytearray(dagpb.encode_node(dagpb.PBNode(tuple(links), data)))
    blocks = [bytes(block)]
    if block:
        block[edit.draw(st.integers(0, len(block) - 1))] = edit.draw(st.integers(0, 255))
        blocks += [bytes(block), bytes(block[:edit.draw(st.integers(0, len(block)))])]
    for b in blocks:
        assert _decoded(dagpb.decode_node, b) == _decoded(dagpb._decode_node_slow, b)


def test_a_name_that_is_not_utf8_is_named_from_the_root_added(tmp_path: Path) -> None:
    """The refusal names the entry below what is added, not the directory it is in on the
    server (an upload's temporary directory was named in the API's answer)."""
    root = tmp_path / "root"
    os.makedirs(os.fsencode(root / "d") + b"/\xff/in")
    (root / "d" / "ok").write_bytes(b"x")
    with pytest.raises(StoreError) as info:
        Importer(MemSink(), 1).path(root)
    assert info.value.message == "cannot add a file name that is not UTF-8: d/\\xff"

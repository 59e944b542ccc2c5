"""DAG-CBOR/DAG-JSON reading (peer/ipfs/ipld.py): decoding, links, paths inside a block, and
pathing and CARs through such blocks on the gateway."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from peer.cids import parse_cid, sha256_cid
from peer.errors import BadDag, NotFound
from peer.ipfs import EmbeddedStore, car, gateway, ipld

HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


def _text(s: str) -> bytes:
    return bytes([0x60 | len(s)]) + s.encode()


def _cbor_doc(link: str) -> bytes:
    """{"b": h'01', "f": 1.5, "n": -3, "t": true, "x": null, "foo": {"link": CID}}"""
    cid_bytes = b"\x00" + parse_cid(link).binary
    return (b"\xa6" + _text("b") + b"\x41\x01" + _text("f") + b"\xfb" + struct.pack(">d", 1.5)
            + _text("n") + b"\x22" + _text("t") + b"\xf5" + _text("x") + b"\xf6"
            + _text("foo") + b"\xa1" + _text("link") + b"\xd8\x2a\x58" + bytes([len(cid_bytes)])
            + cid_bytes)


def test_decode_dag_cbor_and_follow_paths() -> None:
    data = _cbor_doc(HELLO_V1)
    c = sha256_cid(data, "dag-cbor", 1)
    value = ipld.decode(c, data)
    assert value == {"b": b"\x01", "f": 1.5, "n": -3, "t": True, "x": None,
                     "foo": {"link": parse_cid(HELLO_V1)}}
    assert ipld.links(c, data) == [parse_cid(HELLO_V1)]
    assert ipld.follow(c, data, ["foo", "link", "more"]) == (parse_cid(HELLO_V1), 2)
    assert ipld.follow(c, data, ["foo"]) == (None, 1)  # ends inside the block
    with pytest.raises(NotFound):
        ipld.follow(c, data, ["nope"])


def test_decode_dag_json_links_and_bytes() -> None:
    data = b'{"a": [{"/": "%s"}, {"/": {"bytes": "AQI"}}], "s": "x"}' % HELLO_V1.encode()
    c = sha256_cid(data, "dag-json", 1)
    assert ipld.decode(c, data) == {"a": [parse_cid(HELLO_V1), b"\x01\x02"], "s": "x"}
    assert ipld.follow(c, data, ["a", "0"]) == (parse_cid(HELLO_V1), 2)


@pytest.mark.parametrize("data", [b"\xa1", b"\x9f\xff", b"\xa1\x01\x01", b"\xc1\x00", b"\x01\x02"])
def test_malformed_dag_cbor_is_bad_dag(data: bytes) -> None:
    with pytest.raises(BadDag):
        ipld.decode(sha256_cid(data, "dag-cbor", 1), data)


async def test_gateway_paths_and_cars_through_dag_cbor(aiohttp_client: Any,
                                                      tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "store")
    assert store.add_bytes(b"hello\n") == HELLO_V1
    data = _cbor_doc(HELLO_V1)
    doc = str(sha256_cid(data, "dag-cbor", 1))
    store.put_block(doc, data)
    app = web.Application()
    gateway.add_routes(app, store)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    r = await client.get(f"/ipfs/{doc}/foo/link")
    assert r.status == 200 and await r.read() == b"hello\n"
    assert r.headers["X-Ipfs-Roots"] == f"{doc},{doc},{HELLO_V1}"
    assert (await client.get(f"/ipfs/{doc}/foo")).status == 501  # a path remainder
    assert (await client.get(f"/ipfs/{doc}/nope")).status == 404
    for query, blocks in (("/foo/link?format=car", [doc, HELLO_V1]),
                          ("?format=car&dag-scope=entity", [doc]),
                          ("?format=car", [doc, HELLO_V1])):
        r = await client.get(f"/ipfs/{doc}{query}")
        _, got = car.read_car([await r.read()])
        assert [str(c) for c, _ in got] == blocks, query


# --- strict DAG-CBOR (cbor2 plus the rules it does not enforce) and encoding ----------------

STRICT_CASES = {  # non-canonical or non-DAG-CBOR bytes -> a word the refusal must name
    "a2616201616102": "out of order",  # {"b": 1, "a": 2}
    "a161611802": "shortest",  # 2 written in two bytes
    "a178016101": "shortest",  # a one-byte key with a 1-byte length head
    "a16161f93e00": "16-bit float",
    "a16161fa3fc00000": "32-bit float",
    "a16161fb7ff8000000000000": "NaN",
    "a16161fb7ff0000000000000": "Infinity",
    "9fff": "indefinite",
    "d9d9f701": "tag 55799",
    "c249010000000000000000": "tag 2",
    "a16161f7": "not DAG-CBOR",  # undefined
    "a16161f0": "not DAG-CBOR",  # simple value 16
    "a1016161": "text strings",  # an integer map key
    "a2616101616102": "Duplicate",
    "a1616101ff": "after the value",
    "d82a4401020304": "0x00",  # a link without the multibase prefix
}


@pytest.mark.parametrize(("hexdata", "word"), sorted(STRICT_CASES.items()))
def test_strict_dag_cbor_names_the_rule(hexdata: str, word: str) -> None:
    data = bytes.fromhex(hexdata)
    with pytest.raises(BadDag, match=word):
        ipld.check_cbor(data)


def test_put_block_refuses_non_canonical_dag_cbor(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "store")
    data = bytes.fromhex("a2616201616102")
    cid = str(sha256_cid(data, "dag-cbor", 1))
    with pytest.raises(BadDag, match="out of order"):
        store.put_block(cid, data)
    assert not store.has(cid)


# Kubo 0.39's `ipfs dag put` of this DAG-JSON gives these CIDs (checked against the real Kubo in
# tests/integration/test_kubo_parity.py)
DOC = (b'{"b":1,"a":[1.5,{"/":"%s"}],"bytes":{"/":{"bytes":"AQI"}},"aa":null,"f":1.0,'
       b'"big":1e300,"neg":-3}' % HELLO_V1.encode())
DOC_CBOR_CID = "bafyreihq5y53fj67tn7bex23dquwcseaf2y2rfmyntvgsoxjmy5t7c6ye4"
DOC_JSON_CID = "baguqeeram3szp4y6ibjxqplqfcqd3sgiamw2d7zyjgmnqlacboh2kue6k27a"


def test_encodings_match_kubo() -> None:
    value = ipld.decode_json(DOC)
    cbor = ipld.encode_cbor(value)
    assert str(sha256_cid(cbor, "dag-cbor", 1)) == DOC_CBOR_CID
    assert ipld.check_cbor(cbor) == value  # canonical by construction
    text = ipld.encode_json(value)
    assert text == (b'{"a":[1.5,{"/":"%s"}],"aa":null,"b":1,"big":1e+300,'
                    b'"bytes":{"/":{"bytes":"AQI"}},"f":1,"neg":-3}' % HELLO_V1.encode())
    assert str(sha256_cid(text, "dag-json", 1)) == DOC_JSON_CID


@pytest.mark.parametrize(("value", "text"), [
    (123456789.0, "123456789"), (0.000001, "0.000001"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"),
    (1e21, "1e+21"), (1e20, "100000000000000000000"), (100.0, "100"), (-0.0, "-0"),
    (0.1, "0.1"), (1234567.125, "1234567.125"), (-2.5e300, "-2.5e+300"),
])
def test_floats_as_go_writes_them(value: float, text: str) -> None:
    assert ipld.encode_json(value).decode() == text


def test_strings_as_go_writes_them() -> None:
    s = 'a\nb\tc\bd\fe\rf"g\\h\u2028i\x1fj/<>&\x7fé'
    assert ipld.encode_json(s).decode() == \
        '"a\\nb\\tc\\u0008d\\u000ce\\rf\\"g\\\\h\\u2028i\\u001fj/<>&\x7fé"'


@pytest.mark.parametrize("doc", [b'{"a":NaN}', b'{"a":1,"a":2}', b'{"a":18446744073709551615}',
                                 b'{"/":"not a cid"}', b"[1,", b'{"/":{"bytes":"!!"}}'])
def test_bad_dag_json_is_bad_dag(doc: bytes) -> None:
    with pytest.raises(BadDag):
        ipld.decode_json(doc)


async def test_dag_put_and_conversion(aiohttp_client: Any, tmp_path: Path) -> None:
    """dag/put stores Kubo's CIDs, refuses non-canonical DAG-CBOR (400, counted, nothing
    stored); the gateway converts only when told to."""
    from collections import Counter

    from aiohttp import FormData

    from peer.ipfs import rpc

    store = EmbeddedStore(tmp_path / "store")
    refused: Counter[str] = Counter()
    app = web.Application()
    rpc.add_routes(app, store, refused=refused)
    gateway.add_routes(app, store, codec_conversion=True)
    strict = web.Application()
    gateway.add_routes(strict, store)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    strict_client: TestClient[Any, Any] = await aiohttp_client(strict)

    async def put(data: bytes, query: str = "") -> Any:
        form = FormData()
        form.add_field("file", data, filename="node")
        return await client.post(f"/api/v0/dag/put{query}", data=form)

    for query, cid in (("", DOC_CBOR_CID), ("?store-codec=dag-json", DOC_JSON_CID)):
        r = await put(DOC, query)
        assert r.status == 200, await r.text()
        assert await r.json(content_type=None) == {"Cid": {"/": cid}}
        assert store.has(cid)
    r = await put(ipld.encode_cbor(ipld.decode_json(DOC)), "?input-codec=dag-cbor")
    assert (await r.json(content_type=None))["Cid"]["/"] == DOC_CBOR_CID

    bad = bytes.fromhex("a2616201616102")
    r = await put(bad, "?input-codec=dag-cbor")
    assert r.status == 400
    assert "out of order" in (await r.json())["Message"]
    assert not store.has(str(sha256_cid(ipld.encode_cbor({"a": 2, "b": 1}), "dag-cbor", 1)))
    assert refused == Counter({"dag/put.dag-cbor": 1})
    r = await put(DOC, "?store-codec=raw")
    assert r.status == 501

    r = await client.get(f"/ipfs/{DOC_CBOR_CID}?format=dag-json")
    assert r.status == 200 and r.headers["Content-Type"] == "application/vnd.ipld.dag-json"
    assert await r.read() == ipld.encode_json(ipld.decode_json(DOC))
    r = await client.get(f"/ipfs/{DOC_JSON_CID}",
                         headers={"Accept": "application/vnd.ipld.dag-cbor"})
    assert r.status == 200
    assert ipld.check_cbor(await r.read()) == ipld.decode_json(store.get_block(DOC_JSON_CID))
    r = await strict_client.get(f"/ipfs/{DOC_CBOR_CID}?format=dag-json")
    assert r.status == 406 and "gateway-codec-conversion" in await r.text()


def test_an_integer_too_wide_is_named_by_its_size() -> None:
    """str() of an integer past Python's 4,300 digits raises ValueError: the refusal of one
    names its width instead of failing to say what it refuses."""
    with pytest.raises(BadDag, match="an integer of 20001 bits does not fit in 64 bits"):
        ipld.encode_cbor([2**20000])
    with pytest.raises(BadDag, match="integer 18446744073709551616 does not fit in 64 bits"):
        ipld.encode_cbor(2**64)

"""DAG-CBOR/DAG-JSON reading (peer/ipfs/ipld.py): decoding, links, paths inside a block, and
pathing and CARs through such blocks on the gateway."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from peer.errors import BadDag, NotFound
from peer.ipfs import EmbeddedStore, car, gateway, ipld
from peer.ipfs.cids import parse_cid, sha256_cid

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

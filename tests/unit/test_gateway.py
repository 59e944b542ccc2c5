"""Gateway over a real EmbeddedStore through aiohttp's test client (loopback only)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from peer.errors import ArgError
from peer.ipfs import EmbeddedStore, car, dagpb, hamt, parse_cid
from peer.ipfs.cids import DAG_PB, sha256_cid
from peer.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData
from peer.ipfs.gateway import (
    CACHE_IMMUTABLE,
    add_routes,
    etag_matches,
    parse_range,
    sniff_type,
)

Client = TestClient[Any, Any]
MakeClient = Callable[[web.Application], Awaitable[Client]]
HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
BIG = bytes(range(256)) * 2000  # 512000 bytes: two chunks


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    s = EmbeddedStore(tmp_path / "store")
    src = tmp_path / "src"
    (src / "site").mkdir(parents=True)
    (src / "data").mkdir()
    (src / "hello.txt").write_bytes(b"hello\n")
    (src / "data" / "a.json").write_bytes(b'{"a": 1}')
    (src / "data" / "x.npy").write_bytes(b"\x93NUMPY" + bytes(20))
    (src / "data" / "s.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    (src / "data" / "big.bin").write_bytes(BIG)
    (src / "data" / "<b>&.txt").write_bytes(b"esc")
    (src / "site" / "index.html").write_bytes(b"<html>hi</html>")
    s.root_cid = s.add_path(src)  # type: ignore[attr-defined]
    return s


@pytest.fixture
async def client(aiohttp_client: MakeClient, store: EmbeddedStore) -> Client:
    app = web.Application()
    add_routes(app, store)
    return await aiohttp_client(app)


def _root(store: EmbeddedStore) -> str:
    return str(store.root_cid)  # type: ignore[attr-defined]


async def test_file_with_headers(client: Client, store: EmbeddedStore) -> None:
    root = _root(store)
    r = await client.get(f"/ipfs/{root}/hello.txt")
    assert r.status == 200
    assert await r.read() == b"hello\n"
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert r.headers["ETag"] == f'"{HELLO_V1}"'
    assert r.headers["Cache-Control"] == CACHE_IMMUTABLE
    assert r.headers["X-Ipfs-Path"] == f"/ipfs/{root}/hello.txt"
    assert r.headers["X-Ipfs-Roots"] == f"{root},{HELLO_V1}"
    assert r.headers["Content-Length"] == "6"


async def test_bare_file_cid_is_sniffed(client: Client) -> None:
    r = await client.get(f"/ipfs/{HELLO_V1}")
    assert r.status == 200 and await r.read() == b"hello\n"
    assert r.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("a.json", "application/json"),
        ("x.npy", "application/octet-stream"),
        ("s.wav", "audio/wav"),
        ("big.bin", "application/octet-stream"),
    ],
)
async def test_content_types(client: Client, store: EmbeddedStore, name: str, ctype: str) -> None:
    r = await client.get(f"/ipfs/{_root(store)}/data/{name}")
    assert r.status == 200
    assert r.headers["Content-Type"] == ctype


async def test_head_has_headers_but_no_body(client: Client, store: EmbeddedStore) -> None:
    r = await client.head(f"/ipfs/{_root(store)}/data/big.bin")
    assert r.status == 200
    assert r.headers["Content-Length"] == str(len(BIG))
    assert await r.read() == b""


async def test_range_requests(client: Client, store: EmbeddedStore) -> None:
    url = f"/ipfs/{_root(store)}/data/big.bin"
    r = await client.get(url, headers={"Range": "bytes=262140-262150"})
    assert r.status == 206
    assert await r.read() == BIG[262140:262151]
    assert r.headers["Content-Range"] == f"bytes 262140-262150/{len(BIG)}"
    r = await client.get(url, headers={"Range": "bytes=-5"})
    assert r.status == 206 and await r.read() == BIG[-5:]
    r = await client.get(url, headers={"Range": "bytes=511990-"})
    assert await r.read() == BIG[511990:]
    r = await client.get(url, headers={"Range": f"bytes={len(BIG)}-"})
    assert r.status == 416
    assert r.headers["Content-Range"] == f"bytes */{len(BIG)}"
    r = await client.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert r.status == 200 and len(await r.read()) == len(BIG)


async def test_if_none_match(client: Client) -> None:
    r = await client.get(f"/ipfs/{HELLO_V1}", headers={"If-None-Match": f'W/"x", "{HELLO_V1}"'})
    assert r.status == 304
    assert r.headers["ETag"] == f'"{HELLO_V1}"'
    assert await r.read() == b""


async def test_directory_listing_html_and_json(client: Client, store: EmbeddedStore) -> None:
    root = _root(store)
    r = await client.get(f"/ipfs/{root}/data", allow_redirects=False)
    assert r.status == 301 and r.headers["Location"] == f"/ipfs/{root}/data/"
    r = await client.get(f"/ipfs/{root}/data/", headers={"Accept": "text/html"})
    page = await r.text()
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "&lt;b&gt;&amp;.txt" in page and "<b>&" not in page
    r = await client.get(f"/ipfs/{root}/data", headers={"Accept": "application/json"})
    body = json.loads(await r.read())
    assert r.headers["Content-Type"] == "application/json"
    names = [link["Name"] for link in body["Links"]]
    assert names == ["<b>&.txt", "a.json", "big.bin", "s.wav", "x.npy"]
    assert body["Links"][2] == {
        "Name": "big.bin",
        "Hash": store.resolve(root, "data/big.bin"),
        "Size": len(BIG),
        "Type": "file",
    }
    r = await client.get(f"/ipfs/{root}?format=dag-json")
    types = {link["Name"]: link["Type"] for link in json.loads(await r.read())["Links"]}
    assert types["data"] == "dir"


async def test_index_html(client: Client, store: EmbeddedStore) -> None:
    r = await client.get(f"/ipfs/{_root(store)}/site/")
    assert r.status == 200 and await r.read() == b"<html>hi</html>"
    assert r.headers["Content-Type"].startswith("text/html")


async def test_raw_block(client: Client, store: EmbeddedStore) -> None:
    root = _root(store)
    r = await client.get(f"/ipfs/{root}?format=raw")
    assert r.status == 200
    assert await r.read() == store.get_block(root)
    assert r.headers["Content-Type"] == "application/vnd.ipld.raw"
    assert r.headers["ETag"] == f'"{root}.raw"'
    r = await client.get(f"/ipfs/{root}", headers={"Accept": "application/vnd.ipld.raw"})
    assert r.headers["Content-Type"] == "application/vnd.ipld.raw"
    r = await client.get(f"/ipfs/{root}/hello.txt?format=raw")
    assert r.status == 400


async def test_car(client: Client, store: EmbeddedStore, tmp_path: Path) -> None:
    root = _root(store)
    r = await client.get(f"/ipfs/{root}?format=car")
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("application/vnd.ipld.car; version=1")
    assert r.headers["ETag"] == f'"{root}.car"'
    data = await r.read()
    assert data == b"".join(store.export_car(root))
    fresh = EmbeddedStore(tmp_path / "fresh")
    assert fresh.import_car([data]) == [root]
    r = await client.get(
        f"/ipfs/{root}/data/a.json", headers={"Accept": "application/vnd.ipld.car"}
    )
    roots, blocks = car.read_car([await r.read()])
    assert [str(c) for c in roots] == [root]
    assert [str(c) for c, _ in blocks][:2] == [root, store.resolve(root, "data")]


async def test_content_disposition(client: Client, store: EmbeddedStore) -> None:
    r = await client.get(f"/ipfs/{HELLO_V1}?filename=grüße.txt&download=true")
    disposition = r.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="gr??e.txt"')
    assert "filename*=UTF-8''gr%C3%BC%C3%9Fe.txt" in disposition
    assert r.headers["Content-Type"].startswith("text/plain")
    r = await client.get(f"/ipfs/{HELLO_V1}?filename=a.txt")
    assert r.headers["Content-Disposition"].startswith('inline; filename="a.txt"')


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("/ipfs/not-a-cid", 400),
        ("/ipfs/bafy", 400),
        ("/ipfs/{root}/missing.txt", 404),
        ("/ipfs/{root}/hello.txt/below", 404),
        ("/ipfs/{root}/data/..%2Fhello.txt", 400),
        ("/ipfs/{root}?format=xml", 400),
        ("/ipfs/bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm", 404),
    ],
)
async def test_errors(client: Client, store: EmbeddedStore, url: str, status: int) -> None:
    r = await client.get(url.format(root=_root(store)))
    assert r.status == status
    body = json.loads(await r.read())
    assert body["error"] and body["message"]


async def _raw_status(client: Client, path: str) -> int:
    """Send a request line verbatim (HTTP clients normalise dot segments away)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status_line = await reader.readline()
    await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


@pytest.mark.parametrize(
    "tail", ["data/../hello.txt", "data/%2e%2e/hello.txt", "./hello.txt", "data/%2E./hello.txt"]
)
async def test_dot_segments_in_raw_path(client: Client, store: EmbeddedStore, tail: str) -> None:
    assert await _raw_status(client, f"/ipfs/{_root(store)}/{tail}") == 400
    assert await _raw_status(client, f"/ipfs/{_root(store)}/hello.txt") == 200


@pytest.mark.parametrize(
    ("header", "size", "span"),
    [
        ("bytes=0-0", 10, (0, 1)),
        ("bytes=2-", 10, (2, 10)),
        ("bytes=-3", 10, (7, 10)),
        ("bytes=5-100", 10, (5, 10)),
        ("bytes=-100", 10, (0, 10)),
        ("items=0-1", 10, None),
        ("bytes=1-2,4-5", 10, None),
        ("bytes=0-" + "9" * 4300, 10, (0, 10)),  # a huge last position is clamped
        ("bytes=-" + "9" * 4300, 10, (0, 10)),
        ("bytes=" + "0" * 4300 + "5-", 10, (5, 10)),  # leading zeros are not magnitude
    ],
)
def test_parse_range(header: str, size: int, span: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == span


@pytest.mark.parametrize(
    ("header", "size"), [("bytes=10-", 10), ("bytes=-0", 10), ("bytes=5-2", 10),
                         ("bytes=" + "9" * 4300 + "-", 10), ("bytes=5-" + "0" * 4300, 10)]
)
def test_parse_range_unsatisfiable(header: str, size: int) -> None:
    with pytest.raises(ArgError):
        parse_range(header, size)


def test_sniff_and_etags() -> None:
    assert sniff_type("", b"\x89PNG\r\n\x1a\nxxxx") == "image/png"
    assert sniff_type("", b"\x00\x01\x02") == "application/octet-stream"
    assert sniff_type("", b"<!DOCTYPE html><p>") == "text/html; charset=utf-8"
    assert sniff_type("song.WAV", b"") == "audio/wav"
    assert (
        etag_matches("*", '"x"') and etag_matches('W/"x"', '"x"') and not etag_matches('"y"', '"x"')
    )


async def test_corrupt_block_is_a_502_not_a_500(client: Client, store: EmbeddedStore) -> None:
    root = _root(store)
    cid = store.resolve(root, "data")
    block_file = store.blocks.path(parse_cid(cid).key)
    block_file.write_bytes(b"\x0a\x05ab")  # truncated dag-pb under a valid name
    r = await client.get(f"/ipfs/{root}/data/a.json")
    assert r.status == 502
    assert json.loads(await r.read())["error"] == "IntegrityError"  # verified on read
    r = await client.get(f"/ipfs/{cid}/", headers={"Accept": "application/json"})
    assert r.status == 404  # the corrupt block was removed: this gateway cannot fetch


async def test_empty_file_and_unsatisfiable_range(client: Client, store: EmbeddedStore) -> None:
    empty = store.add_bytes(b"")
    r = await client.get(f"/ipfs/{empty}")
    assert r.status == 200 and await r.read() == b""
    r = await client.get(f"/ipfs/{empty}", headers={"Range": "bytes=0-"})
    assert r.status == 416


async def test_range_of_4300_digits_is_416_not_502(client: Client, store: EmbeddedStore) -> None:
    url = f"/ipfs/{_root(store)}/hello.txt"
    r = await client.get(url, headers={"Range": "bytes=" + "9" * 4300 + "-"})
    assert r.status == 416 and r.headers["Content-Range"] == "bytes */6"
    r = await client.get(url, headers={"Range": "bytes=1-" + "9" * 4300})
    assert r.status == 206 and await r.read() == b"ello\n"


@pytest.mark.parametrize("tail", ["/hello.txt", "/site/index.html", "/data/", "/missing",
                                  "?format=raw", "?format=car", "/data/a.json?download=true"])
async def test_every_response_is_sandboxed_and_nosniff(client: Client, store: EmbeddedStore,
                                                       tail: str) -> None:
    r = await client.get(f"/ipfs/{_root(store)}{tail}")
    assert r.status in (200, 404), r.status
    assert r.headers["Content-Security-Policy"] == "sandbox"
    assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_filename_never_makes_content_html(client: Client, store: EmbeddedStore) -> None:
    """?filename=x.html once turned any content into an inline page in the UI's origin."""
    for name in ("x.html", "x.svg", "x.htm"):
        r = await client.get(f"/ipfs/{HELLO_V1}?filename={name}")
        assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert r.headers["Content-Disposition"].startswith(f'attachment; filename="{name}"')
    r = await client.get(f"/ipfs/{_root(store)}/site/index.html?filename=page.txt")
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"  # its own name types it
    assert r.headers["Content-Disposition"].startswith('attachment; filename="page.txt"')
    assert r.headers["Content-Security-Policy"] == "sandbox"


def _hamt(store: EmbeddedStore, count: int = 300) -> tuple[str, dict[str, str]]:
    """A HAMT-sharded directory of `count` small files (as Kubo with a 1-byte threshold)."""
    files = {f"f{i}": store.add_bytes(str(i).encode()) for i in range(count)}
    built = hamt.build([hamt.Link(n, parse_cid(c), store.dag_size(c)) for n, c in files.items()],
                       1)
    for c, block in built.blocks:
        store.put_block(str(c), block)
    return str(built.root), files


async def test_hamt_directory_paths_listing_and_car(client: Client, store: EmbeddedStore) -> None:
    root, files = _hamt(store)
    r = await client.get(f"/ipfs/{root}/f123")
    assert r.status == 200 and await r.read() == b"123"
    assert r.headers["X-Ipfs-Roots"] == f"{root},{files['f123']}"
    r = await client.get(f"/ipfs/{root}/f300")
    assert r.status == 404
    r = await client.get(f"/ipfs/{root}/", headers={"Accept": "application/json"})
    names = [link["Name"] for link in json.loads(await r.read())["Links"]]
    assert names == sorted(files)
    r = await client.get(f"/ipfs/{root}/", headers={"Accept": "text/html"})
    assert r.status == 200 and "f299" in await r.text()
    r = await client.get(f"/ipfs/{root}?format=car&dag-scope=entity")
    _, read = car.read_car([await r.read()])
    blocks = list(read)
    assert blocks[0][0] == parse_cid(root) and len(blocks) > 1
    assert not {str(c) for c, _ in blocks} & set(files.values())


async def test_malformed_hamt_is_a_422_naming_the_shard(client: Client,
                                                        store: EmbeddedStore) -> None:
    leaf = parse_cid(store.add_bytes(b"x"))
    fs = UnixFSData(DataType.HAMT_SHARD, b"\x08", hash_type=0x22, fanout=255)
    bad = dagpb.encode_node(PBNode((PBLink(leaf.binary, "03x", 1),), dagpb.encode_unixfs(fs)))
    bad_cid = sha256_cid(bad, DAG_PB, 1)
    store.blocks.put_trusted(bad_cid, bad)  # as if written before this check existed
    for url in (f"/ipfs/{bad_cid}/", f"/ipfs/{bad_cid}/x"):
        r = await client.get(url, headers={"Accept": "application/json"})
        body = json.loads(await r.read())
        assert (r.status, body["error"]) == (422, "BadDag"), url
        assert str(bad_cid) in body["message"] and "fanout 255" in body["message"]

"""Gateway over a real EmbeddedStore through aiohttp's test client (loopback only)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientPayloadError, web
from aiohttp.test_utils import TestClient

from peer.cids import DAG_PB, sha256_cid
from peer.errors import ArgError, Unsupported
from peer.ipfs import EmbeddedStore, car, dagpb, hamt, parse_cid
from peer.ipfs.dagpb import DataType, PBLink, PBNode, UnixFSData
from peer.ipfs.gateway import (
    CACHE_IMMUTABLE,
    add_routes,
    etag_matches,
    human_bytes,
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
    # a path: the target's block (the trustless and path gateway specs), with Range
    r = await client.get(f"/ipfs/{root}/hello.txt?format=raw")
    assert r.status == 200 and await r.read() == b"hello\n"
    assert r.headers["X-Ipfs-Roots"] == f"{root},{HELLO_V1}"
    assert r.headers["ETag"] == f'"{HELLO_V1}.raw"'
    assert r.headers["Content-Disposition"].startswith("attachment;")
    r = await client.get(f"/ipfs/{root}/data?format=raw", headers={"Range": "bytes=2-5"})
    block = store.get_block(store.resolve(root, "data"))
    assert r.status == 206 and await r.read() == block[2:6]
    assert r.headers["Content-Range"] == f"bytes 2-5/{len(block)}"
    r = await client.get(f"/ipfs/{root}/missing?format=raw")
    assert r.status == 404


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
    assert disposition.startswith('attachment; filename="gr__e.txt"')  # as boxo
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


async def test_entity_bytes_of_5000_digits_is_400_not_502(client: Client,
                                                          store: EmbeddedStore) -> None:
    url = f"/ipfs/{_root(store)}/hello.txt?format=car&dag-scope=entity&entity-bytes="
    for spec in ("9" * 5000 + ":*", "0:" + "9" * 5000, "-" + "9" * 5000 + ":-1", "0:" + "9" * 20):
        r = await client.get(url + spec)
        assert r.status == 400 and (await r.json())["field"] == "entity-bytes", spec[:30]
    r = await client.get(url + "0" * 5000 + "1:" + "9" * 19)  # leading zeros are not digits
    assert r.status == 200


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
    assert sorted(names) == sorted(files)  # in the HAMT's bucket order, as boxo lists it
    assert names == [link.name for link in store.dir_links(root)]
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


async def test_car_headers_and_dups_query(client: Client, store: EmbeddedStore) -> None:
    root = _root(store)
    r = await client.get(f"/ipfs/{root}?format=car&car-dups=y",
                         headers={"Accept": "application/vnd.ipld.car; dups=n"})
    assert r.headers["Accept-Ranges"] == "none"  # streamed: no byte ranges of a CAR
    assert r.headers["Content-Type"].endswith("dups=y")  # the query wins over Accept


async def test_cors_headers(client: Client) -> None:
    r = await client.options(f"/ipfs/{HELLO_V1}")
    for h in ("Content-Type", "Range", "User-Agent", "X-Requested-With"):
        assert h in r.headers["Access-Control-Allow-Headers"]
    for h in ("Content-Range", "X-Ipfs-Roots", "X-Chunked-Output", "X-Stream-Output"):
        assert h in r.headers["Access-Control-Expose-Headers"]


async def test_only_if_cached(aiohttp_client: MakeClient, store: EmbeddedStore) -> None:
    fetched: list[str] = []

    async def fetch(cid: str) -> bool:
        fetched.append(cid)
        return False

    app = web.Application()
    add_routes(app, store, fetch)
    client = await aiohttp_client(app)
    missing = "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
    cached = {"Cache-Control": "only-if-cached"}
    r = await client.get(f"/ipfs/{missing}", headers=cached)
    assert r.status == 412 and fetched == []  # never fetched from the mesh
    r = await client.head(f"/ipfs/{HELLO_V1}", headers=cached)
    assert r.status == 200
    r = await client.get(f"/ipfs/{missing}")
    assert r.status == 404 and fetched == [missing]


async def test_index_html_takes_the_directory_etag(client: Client, store: EmbeddedStore) -> None:
    site = store.resolve(_root(store), "site")
    r = await client.get(f"/ipfs/{_root(store)}/site/")
    assert r.headers["ETag"] == f'"{site}"'
    r = await client.get(f"/ipfs/{_root(store)}/site/", headers={"If-None-Match": f'"{site}"'})
    assert r.status == 304


@pytest.mark.parametrize(("query", "accept", "status"), [
    ("?format=dag-json", "", 406),
    ("?format=dag-cbor", "", 406),
    ("", "application/vnd.ipld.dag-json", 406),
    ("?format=json", "application/vnd.ipld.raw", 200),  # the query wins; the file as it is
])
async def test_codec_mismatch_is_406(client: Client, query: str, accept: str,
                                     status: int) -> None:
    r = await client.get(f"/ipfs/{HELLO_V1}{query}", headers={"Accept": accept} if accept else {})
    assert r.status == status
    if status == 406:
        assert json.loads(await r.read())["error"] == "NotAcceptable"


def test_json_is_sniffed() -> None:
    assert sniff_type("", b'{"a": [1, 2]}\n') == "application/json"
    assert sniff_type("", b"[1, 2]") == "application/json"
    assert sniff_type("", b"[INFO] started") == "text/plain; charset=utf-8"
    assert sniff_type("", b'{"cut": "' + b"x" * 600) == "application/json"


async def test_tar(client: Client, store: EmbeddedStore, tmp_path: Path) -> None:
    import io
    import tarfile

    data = store.resolve(_root(store), "data")
    r = await client.get(f"/ipfs/{_root(store)}/data?format=tar")
    assert r.status == 200 and r.headers["Content-Type"] == "application/x-tar"
    assert r.headers["ETag"] == f'W/"{data}.x-tar"'
    with tarfile.open(fileobj=io.BytesIO(await r.read())) as tar:
        names = tar.getnames()
        big = tar.extractfile(f"{data}/big.bin")
        assert big is not None and big.read() == BIG
    assert names[0] == data and f"{data}/<b>&.txt" in names
    r = await client.get(f"/ipfs/{HELLO_V1}", headers={"Accept": "application/x-tar"})
    with tarfile.open(fileobj=io.BytesIO(await r.read())) as tar:
        member = tar.extractfile(HELLO_V1)
        assert member is not None and member.read() == b"hello\n"


async def test_symlink_is_served_as_its_target_path(
    client: Client, store: EmbeddedStore, tmp_path: Path
) -> None:
    link = dagpb.encode_node(PBNode((), dagpb.encode_unixfs(
        UnixFSData(DataType.SYMLINK, data=b"hello.txt"))))
    link_cid = sha256_cid(link, DAG_PB, 1)
    store.put_block(str(link_cid), link)
    root = store.make_dir({"hello.txt": HELLO_V1, "ln": str(link_cid)})
    r = await client.get(f"/ipfs/{root}/ln")
    assert r.status == 200 and await r.read() == b"hello.txt"
    r = await client.get(f"/ipfs/{root}/", headers={"Accept": "text/html"})
    assert ">ln<" in await r.text()
    with pytest.raises(Unsupported, match="symlink"):
        store.materialize(root, tmp_path / "out")


async def test_listing_breadcrumbs_and_links(client: Client, store: EmbeddedStore) -> None:
    root = _root(store)
    r = await client.get(f"/ipfs/{root}/data/", headers={"Accept": "text/html"})
    page = await r.text()
    assert f'/ipfs/<a href="/ipfs/{root}">{root}</a>/<a href="/ipfs/{root}/data">data</a>' in page
    assert f'<a href="/ipfs/{root}/data/..">..</a>' in page
    big = store.resolve(root, "data/big.bin")
    assert f'<a href="/ipfs/{root}/data/big.bin">big.bin</a>' in page
    assert f'href="/ipfs/{big}?filename=big.bin"' in page
    assert f'href="/ipfs/{root}/data/%3Cb%3E%26.txt"' in page  # names percent-encoded
    r = await client.get(f"/ipfs/{root}/", headers={"Accept": "text/html"})
    assert ">..</a>" not in await r.text()  # no backlink above the root


async def test_identity_blocks_are_never_in_a_car(client: Client) -> None:
    identity = "bafkqaf3imvwgy3zaneqgc3janfxgy2lomvscay3jmqfa"
    r = await client.get(f"/ipfs/{identity}",
                         headers={"Accept": "application/vnd.ipld.car; dups=y"})
    roots, blocks = car.read_car([await r.read()])
    assert r.status == 200 and [str(c) for c in roots] == [identity] and list(blocks) == []


@pytest.mark.parametrize(("codec", "data", "mime", "kind"), [
    ("json", b'{"test": "plain json"}\n', "application/json", "inline"),
    ("cbor", b"\xa1dtestjplain json", "application/cbor", "attachment"),
])
async def test_plain_codecs_are_served_as_they_are(
    client: Client, store: EmbeddedStore, codec: str, data: bytes, mime: str, kind: str
) -> None:
    c = str(sha256_cid(data, codec, 1))
    store.put_block(c, data)
    for query, headers in (("", {}), (f"?format={codec}", {}), ("", {"Accept": mime})):
        r = await client.get(f"/ipfs/{c}{query}", headers=headers)
        assert r.status == 200 and await r.read() == data
        assert r.headers["Content-Type"] == mime
        assert r.headers["Content-Disposition"].startswith(f'{kind}; filename="{c}.{codec}"')
    r = await client.get(f"/ipfs/{c}", headers={"Range": "bytes=1-4"})
    assert r.status == 206 and await r.read() == data[1:5]
    r = await client.get(f"/ipfs/{c}?format=dag-json")
    assert r.status == 406


@pytest.mark.parametrize(("codec", "data", "twin"), [
    ("dag-json", b'{"a":{"/":"bafkqaaa"}}', "json"),
    ("dag-cbor", b"\xa1aa\x01", "cbor"),
])
async def test_dag_codec_blocks_as_stored_html_for_browsers(
    client: Client, store: EmbeddedStore, codec: str, data: bytes, twin: str
) -> None:
    c = str(sha256_cid(data, codec, 1))
    store.put_block(c, data)
    r = await client.get(f"/ipfs/{c}", headers={"Accept": f"application/vnd.ipld.{codec}"})
    assert r.status == 200 and await r.read() == data
    assert r.headers["Content-Type"] == f"application/vnd.ipld.{codec}"
    assert r.headers["ETag"] == f'"{c}.{codec}"'
    r = await client.get(f"/ipfs/{c}?format={twin}")
    assert await r.read() == data and r.headers["Content-Type"] == f"application/{twin}"
    r = await client.get(f"/ipfs/{c}/", headers={"Accept": "text/html,*/*"})
    page = await r.text()
    assert r.headers["Content-Type"].startswith("text/html") and page.endswith("</html>")
    assert "DagIndex-" in r.headers["ETag"] and "Content-Disposition" not in r.headers
    other = "dag-cbor" if codec == "dag-json" else "dag-json"
    r = await client.get(f"/ipfs/{c}?format={other}")
    assert r.status == 406


def _dir_block(store: EmbeddedStore, links: dict[str, str]) -> str:
    """A basic UnixFS directory of `links` (name -> CID) stored as it is, names unchecked."""
    pb = tuple(PBLink(parse_cid(c).binary, name, 1) for name, c in links.items())
    block = dagpb.encode_node(PBNode(pb, dagpb.DIRECTORY_DATA))
    c = str(sha256_cid(block, DAG_PB, 1))
    store.put_block(c, block)
    return c


async def test_tar_writes_relative_names_inside_its_root_and_refuses_escapes(
        client: Client, store: EmbeddedStore) -> None:
    """As boxo's TarWriter (the conformance fixtures inside-root.car / outside-root.car): an
    entry `../file` of root/foobar/directory is written as root/foobar/file; a name that leaves
    the root is refused, before the first byte when it is an entry of the root itself."""
    import io
    import tarfile

    inside = _dir_block(store, {"foobar": _dir_block(store, {
        "directory": _dir_block(store, {"../file": HELLO_V1}), "/abs": HELLO_V1})})
    r = await client.get(f"/ipfs/{inside}?format=tar")
    assert r.status == 200
    with tarfile.open(fileobj=io.BytesIO(await r.read())) as tar:
        assert tar.getnames() == [inside, f"{inside}/foobar", f"{inside}/foobar/directory",
                                  f"{inside}/foobar/file", f"{inside}/foobar/abs"]  # link order
        member = tar.extractfile(f"{inside}/foobar/file")
        assert member is not None and member.read() == b"hello\n"
    outside = _dir_block(store, {"../foo": HELLO_V1, "bar": HELLO_V1})
    r = await client.get(f"/ipfs/{outside}?format=tar")
    assert r.status == 406 and "outside the root" in (await r.json())["message"]
    for name in ("..", "../../x", "a/../../../x", "x\x00y"):
        deep = _dir_block(store, {"a": _dir_block(store, {name: HELLO_V1})})
        r = await client.get(f"/ipfs/{deep}?format=tar")
        assert r.status == 200  # the root's header is out: the TAR is cut short
        with pytest.raises(ClientPayloadError):
            await r.read()
    r = await client.get(f"/ipfs/{inside}/foobar/directory/", headers={"Accept": "text/html"})
    assert r.status == 200 and f'href="/ipfs/{inside}/foobar/directory/..%2Ffile"' in await r.text()


async def test_listing_shows_link_sizes_and_reads_no_entry(
        client: Client, store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTML listing of a HAMT shows each link's Tsize as boxo does (go-humanize) and reads
    only the shard blocks, never the entries' own blocks."""
    files = {f"f{i:04d}.txt": store.add_bytes(f"{i}\n".encode() * (i + 1)) for i in range(40)}
    big = store.add_bytes(BIG)
    root = store.make_dir({**files, "big.bin": big, "a b&c.txt": HELLO_V1}
                          | {f"{'n' * 200}{i}": HELLO_V1 for i in range(1200)})
    assert dagpb.decode_unixfs(dagpb.decode_node(store.get_block(root)).data or b"").type == (
        DataType.HAMT_SHARD)
    entries = {parse_cid(c) for c in [*files.values(), big, HELLO_V1]}
    reads: list[Any] = []
    real_get = store._reader.get
    monkeypatch.setattr(store._reader, "get", lambda c: reads.append(c) or real_get(c))
    r = await client.get(f"/ipfs/{root}/", headers={"Accept": "text/html"})
    page = await r.text()
    assert r.status == 200 and page.endswith("</table></body></html>")
    assert reads and not entries & set(reads)
    assert page.count("<tr><td>") == 1242
    assert f'<a href="/ipfs/{root}/f0007.txt">f0007.txt</a></td><td title=' in page
    assert ">512 kB</td>" in page and ">16 B</td>" in page  # f0007.txt: 8 times "7\n"
    assert f'href="/ipfs/{root}/a%20b%26c.txt">a b&amp;c.txt</a>' in page
    assert f'href="/ipfs/{HELLO_V1}?filename=a%2520b%2526c.txt"' in page


@pytest.mark.parametrize(("n", "shown"), [
    (0, "0 B"), (9, "9 B"), (10, "10 B"), (999, "999 B"), (1000, "1.0 kB"), (1049, "1.0 kB"),
    (1050, "1.1 kB"), (9999, "10 kB"), (82854982, "83 MB"), (512000, "512 kB"),
    (10**18 * 20, "20 EB"),
])
def test_human_bytes_is_go_humanize(n: int, shown: str) -> None:
    assert human_bytes(n) == shown

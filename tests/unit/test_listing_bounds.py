"""A directory listed by the peer (the store's links, the gateway's HTML and JSON listings, a
TAR) reads a HAMT as it goes: what comes first never waits for, nor holds, every shard."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request

from peer.cids import Cid, sha256_cid
from peer.errors import NotFound, StoreError
from peer.ipfs import EmbeddedStore, dagpb, hamt, parse_cid
from peer.ipfs.gateway import Gateway, Target
from peer.ipfs.tarstream import tar_stream

N = 3000  # entries: ~12 a bucket of 256, so nearly every bucket is a sub-shard


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def _hamt(store: EmbeddedStore, n: int = N) -> tuple[str, set[Cid]]:
    """A HAMT directory of `n` entries (one file under `n` names) and its shard blocks."""
    leaf = parse_cid(store.add_bytes(b"hello\n"))
    built = hamt.build([hamt.Link(f"item{i:05d}.wav", leaf, 6) for i in range(n)], 1)
    for c, block in built.blocks:
        store.put_block(str(c), block)
    return str(built.root), {c for c, _ in built.blocks}


def _counted(store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> list[Cid]:
    reads: list[Cid] = []
    real = store._reader.get

    def get(c: Cid) -> bytes:
        reads.append(c)
        return real(c)

    monkeypatch.setattr(store._reader, "get", get)
    return reads


def test_dir_links_reads_a_hamt_as_it_is_listed(store: EmbeddedStore,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    root, shards = _hamt(store)
    reads = _counted(store, monkeypatch)
    links = store.dir_links(root)
    first = next(links)
    assert len(reads) <= 3 and set(reads) <= shards  # the root, the first bucket's sub-shard
    rest = list(links)
    assert {lk.name for lk in [first, *rest]} == {f"item{i:05d}.wav" for i in range(N)}
    assert set(reads) == shards and len(reads) == len(shards)  # each shard once, no entry


def test_ls_reads_each_entry_once_never_below_it(store: EmbeddedStore,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry that is itself a HAMT is not listed to give its kind and size."""
    sub, shards = _hamt(store)
    parent = store.make_dir({"big": sub, "a.txt": store.add_bytes(b"a")})
    reads = _counted(store, monkeypatch)
    listed = store.ls(parent)
    assert [(e.path, e.kind) for e in listed] == [("a.txt", "file"), ("big", "dir")]
    assert set(reads) & shards == {parse_cid(sub)}


def _plan_listing(store: EmbeddedStore, root: str, accept: str) -> tuple[int, bytes]:
    request = make_mocked_request("GET", f"/ipfs/{root}/", headers={"Accept": accept})
    plan = Gateway(store).plan(request, Target(root, ""))
    assert plan.stream is not None
    return plan.status, b"".join(plan.stream)


@pytest.mark.parametrize("accept", ["text/html"])
def test_gateway_listing_starts_before_the_hamt_is_read(
        store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch, accept: str) -> None:
    """The HTML listing's plan (what runs before the status is sent) reads the directory and
    its first rows' shards, not all of them; the rest is read as it is streamed. (The JSON
    listing reads every entry's block for its row: it checks they are all held first, below,
    nothing held at once.)"""
    root, shards = _hamt(store)
    reads = _counted(store, monkeypatch)
    request = make_mocked_request("GET", f"/ipfs/{root}/", headers={"Accept": accept})
    plan = Gateway(store).plan(request, Target(root, ""))
    before = set(reads) & shards
    assert plan.status == 200 and plan.stream is not None
    assert 1 <= len(before) < len(shards) // 2
    body = b"".join(plan.stream)
    assert set(reads) & shards == shards
    if accept == "text/html":
        assert body.count(b"<tr><td>") == N and body.endswith(b"</table></body></html>")
    else:
        listing = json.loads(body)
        assert listing["Hash"] == root and len(listing["Links"]) == N
        assert listing["Links"][0] == {"Name": listing["Links"][0]["Name"],
                                       "Hash": str(parse_cid(store.add_bytes(b"hello\n"))),
                                       "Size": 6, "Type": "file"}


def test_json_listing_is_the_same_bytes_for_a_small_directory(store: EmbeddedStore) -> None:
    """Streamed, the JSON listing of a basic directory is what json.dumps made of it whole."""
    a, b = store.add_bytes(b"a"), store.add_bytes(b"bb")
    d = store.make_dir({"x é.txt": a, "y": b})
    status, body = _plan_listing(store, d, "application/json")
    links = [{"Name": "x é.txt", "Hash": a, "Size": 1, "Type": "file"},
             {"Name": "y", "Hash": b, "Size": 2, "Type": "file"}]
    assert status == 200
    assert body == json.dumps({"Hash": d, "Links": links}, ensure_ascii=False).encode()
    status, body = _plan_listing(store, store.make_dir({}), "application/json")
    assert json.loads(body)["Links"] == []


def test_json_listing_still_refuses_an_unsafe_name(store: EmbeddedStore) -> None:
    leaf = parse_cid(store.add_bytes(b"x"))
    block = dagpb.encode_node(dagpb.PBNode((dagpb.PBLink(leaf.binary, "../x", 1),),
                                           dagpb.DIRECTORY_DATA))
    d = str(sha256_cid(block, "dag-pb", 1))
    store.put_block(d, block)
    request = make_mocked_request("GET", f"/ipfs/{d}/", headers={"Accept": "application/json"})
    with pytest.raises(StoreError, match="unsafe"):
        Gateway(store).plan(request, Target(d, ""))


def test_tar_writes_a_hamt_as_it_reads_it(store: EmbeddedStore,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    root, shards = _hamt(store)
    reads = _counted(store, monkeypatch)
    stream = tar_stream(store, root, "out")
    header = next(stream)
    assert tarfile.TarInfo.frombuf(header[:512], "utf-8", "surrogateescape").name == "out"
    assert len(set(reads) & shards) < len(shards) // 2
    data = header + b"".join(stream)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert len(names) == N + 1 and set(names) == {"out"} | {
        f"out/item{i:05d}.wav" for i in range(N)}


def test_json_listing_of_a_partly_held_directory_is_not_found_before_its_status(
        store: EmbeddedStore) -> None:
    """A directory whose 551st entry's block is not held here (a partial DAG: a peer that ran
    chunks of a large input holds the directory and its chunks' items) was a 200 and a body
    cut after the 512th row, and no fetch from the mesh was ever tried, so every request was
    cut alike (review rr of session 50, RR-1). Now the plan raises NotFound (the gateway then
    fetches the DAG from the mesh and plans again), and once the block is held the listing
    is whole."""
    leaf = parse_cid(store.add_bytes(b"x"))
    absent = b"not held here"
    gone = sha256_cid(absent, "raw", 1)
    links = [dagpb.PBLink((gone if i == 550 else leaf).binary, f"f{i:04d}", 1) for i in range(600)]
    block = dagpb.encode_node(dagpb.PBNode(tuple(links), dagpb.DIRECTORY_DATA))
    d = str(sha256_cid(block, "dag-pb", 1))
    store.put_block(d, block)
    request = make_mocked_request("GET", f"/ipfs/{d}/", headers={"Accept": "application/json"})
    with pytest.raises(NotFound, match=str(gone)):
        Gateway(store).plan(request, Target(d, ""))
    store.put_block(str(gone), absent)
    status, body = _plan_listing(store, d, "application/json")
    assert status == 200 and len(json.loads(body)["Links"]) == 600

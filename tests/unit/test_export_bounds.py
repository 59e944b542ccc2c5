"""Exports that expand (a TAR, a CAR with dups=y) are bounded, and run in a pool of their own
(session 48, review r1 F2): the reviewer's DAG bomb through the real gateway over a real
EmbeddedStore (aiohttp's test client, loopback only)."""

from __future__ import annotations

import io
import tarfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientPayloadError, web
from aiohttp.test_utils import TestClient

from peer.cids import sha256_cid
from peer.errors import TooLarge
from peer.ipfs import EmbeddedStore, car, dag, dagpb
from peer.ipfs.gateway import EXPANDING_EXPORTS, EXPORTS, Gateway, add_routes
from peer.ipfs.store import DirLink, Entry
from peer.ipfs.tarstream import tar_stream

Client = TestClient[Any, Any]
MakeClient = Callable[[web.Application], Awaitable[Client]]
ALLOWANCE = 1 << 20  # the tests' REPEAT_ALLOWANCE
READ_AT_MOST = 8 << 20  # what a test reads of an export before calling it endless


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def bomb(store: EmbeddedStore, width: int = 1000, levels: int = 6) -> str:
    """The reviewer's DAG (review r1 F2, bomb.py): `levels` UnixFS directories of `width`
    entries all naming the same child, over one 100-byte raw leaf: levels + 1 blocks,
    width**levels paths."""
    leaf = b"x" * 100
    c = sha256_cid(leaf, "raw", 1)
    store.put_block(str(c), leaf)
    size = len(leaf)
    for _ in range(levels):
        node = dagpb.dir_node([(f"e{i:04d}", c.binary, size) for i in range(width)])
        c = sha256_cid(node, "dag-pb", 1)
        store.put_block(str(c), node)
        size = len(node) + width * size
    return str(c)


async def _read_until_cut(resp: Any) -> tuple[bytes, bool]:
    """The body, at most READ_AT_MOST bytes (the test fails past it: an export without end),
    and whether the transfer was cut (incomplete)."""
    got = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(1 << 16):
            got += chunk
            assert len(got) <= READ_AT_MOST, "the export did not end within its bound"
    except ClientPayloadError:
        return bytes(got), True
    return bytes(got), False


async def test_tar_of_the_dag_bomb_ends_with_its_error(
        aiohttp_client: MakeClient, store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The TAR of 7 blocks and 10**18 paths ends once it has written ALLOWANCE bytes again
    (plus its distinct content), its last line naming why, the transfer cut (a 200 already
    sent cannot become an error status); on 45818f71 it never ended."""
    monkeypatch.setattr(dag, "REPEAT_ALLOWANCE", ALLOWANCE)
    root = bomb(store)
    app = web.Application()
    add_routes(app, store)
    client = await aiohttp_client(app)
    r = await client.get(f"/ipfs/{root}?format=tar")  # no token: content reads are open
    assert r.status == 200
    body, cut = await _read_until_cut(r)
    assert cut
    tail = body[body.rindex(b"\n\n[Gateway Error: "):]
    assert b"a TAR would write more than 1048576 bytes" in tail
    assert b"?format=car (no duplicates)" in tail
    archive = body[:-len(tail)]
    assert ALLOWANCE < len(archive) <= 2 * ALLOWANCE  # distinct: 7 entries, a few KB
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r|") as tar:  # what came is a TAR
        names = [m.name for m in tar]
    assert names[:3] == [root, f"{root}/e0000", f"{root}/e0000/e0000"]
    assert len(names) > 500
    # the deduplicated CAR of the same DAG: whole, 7 blocks once
    r = await client.get(f"/ipfs/{root}?format=car")
    blocks = list(car.read_car([await r.read()])[1])
    assert r.status == 200 and len(blocks) == 7


async def test_car_with_dups_of_the_dag_bomb_ends_with_its_error(
        aiohttp_client: MakeClient, store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """?format=car&car-dups=y of the same DAG ends past the bound too (each block written again
    counts at least 512 bytes); on 45818f71 it never ended."""
    monkeypatch.setattr(dag, "REPEAT_ALLOWANCE", ALLOWANCE)
    root = bomb(store)
    app = web.Application()
    add_routes(app, store)
    client = await aiohttp_client(app)
    r = await client.get(f"/ipfs/{root}?format=car&car-dups=y")
    assert r.status == 200 and r.headers["Content-Type"].endswith("dups=y")
    body, cut = await _read_until_cut(r)
    assert cut
    assert b"[Gateway Error: a CAR with dups=y would write more than 1048576 bytes" in body
    assert len(body) <= 2 * ALLOWANCE + (1 << 18)  # (a piece of the CAR: 256 KiB)


def test_tar_writes_honest_repeats_within_the_bound(store: EmbeddedStore) -> None:
    """Entries sharing a CID (the same file under several names, empty files) are written
    each time while the repeats stay within the bound; the entry past it is not written."""
    data = store.add_bytes(b"y" * 3000)
    root = store.make_dir({f"copy{i}": data for i in range(4)}
                          | {"sub": store.make_dir({"again": data})})
    with tarfile.open(fileobj=io.BytesIO(b"".join(tar_stream(store, root, "r"))), mode="r:") as t:
        files = {m.name: t.extractfile(m).read() for m in t if m.isfile()}  # type: ignore[union-attr]
    assert sorted(files) == ["r/copy0", "r/copy1", "r/copy2", "r/copy3", "r/sub/again"]
    assert set(files.values()) == {b"y" * 3000}
    # each copy is 512 + 3072 bytes: the third written again passes 2 * 3584 + the distinct
    # entries (3584 bytes for the file, 512 each for r and r/sub, 4608)
    pieces: list[bytes] = []
    with pytest.raises(TooLarge, match="'r/copy3'"):
        pieces.extend(tar_stream(store, root, "r", repeat_allowance=7 * 512))
    assert b"copy2" in b"".join(pieces) and b"copy3" not in b"".join(pieces)


def test_expansion_counts_each_repeat_at_least_a_header() -> None:
    e = dag.Expansion("a CAR with dups=y", allowance=1000)
    e.once(100)
    e.again(40, "block x")  # counts 512
    e.again(550, "block y")  # 1062 <= 1000 + 100
    assert e.written_again == 1062
    with pytest.raises(TooLarge, match="at block z"):
        e.again(1, "block z")  # counts 512 too
    assert e.written_again == 1062


class _Threads:
    """An EmbeddedStore whose `stat` and `cat` note the thread they run in (a TarSource)."""

    def __init__(self, store: EmbeddedStore) -> None:
        self.store = store
        self.threads: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def stat(self, cid: str) -> Entry:
        self.threads.add(threading.current_thread().name)
        return self.store.stat(cid)

    def dir_links(self, cid: str) -> Iterator[DirLink]:
        self.threads.add(threading.current_thread().name)
        return self.store.dir_links(cid)

    def cat(self, cid: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        return self.store.cat(cid, offset, length)


async def test_exports_run_in_their_own_pool_and_expanding_ones_take_turns(
        aiohttp_client: MakeClient, store: EmbeddedStore) -> None:
    """A TAR is read in the export pool's threads only (stat and dir_links: never the default
    pool's, which every other store call uses); EXPANDING_EXPORTS TARs at once hold every
    turn, one more is answered 503 with Retry-After and a message naming the bound, while a
    CAR without duplicates (the mesh's fetches) is still served."""
    root = bomb(store, width=200, levels=4)  # 1.6e9 paths: endless at the default allowance
    threads = _Threads(store)
    app = web.Application()
    add_routes(app, threads)  # type: ignore[arg-type]
    client = await aiohttp_client(app)
    held = [await client.get(f"/ipfs/{root}?format=tar") for _ in range(EXPANDING_EXPORTS)]
    assert [r.status for r in held] == [200] * EXPANDING_EXPORTS
    assert app[EXPORTS].running == EXPANDING_EXPORTS  # (each held: its client reads nothing)
    r = await client.get(f"/ipfs/{root}?format=tar")
    assert r.status == 503 and r.headers["Retry-After"] == "5"
    body = await r.json()
    assert "TAR or dups=y CAR exports are running on this peer" in body["message"]
    assert body["field"] == "format"
    r = await client.get(f"/ipfs/{root}?format=car&car-dups=y")
    assert r.status == 503
    r = await client.get(f"/ipfs/{root}?format=car")
    assert r.status == 200 and len(list(car.read_car([await r.read()])[1])) == 5
    r = await client.head(f"/ipfs/{root}?format=tar")  # HEAD reads nothing: no turn
    assert r.status == 200
    for h in held:
        h.close()
    assert threads.threads and all(n.startswith("banzai-export") for n in threads.threads)


def test_gateway_made_alone_has_its_own_pool(store: EmbeddedStore) -> None:
    gw = Gateway(store)
    assert gw.exports.slots == EXPANDING_EXPORTS and gw.exports.running == 0

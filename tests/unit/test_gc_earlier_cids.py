"""A data dir an earlier release wrote (a95f359: it took a CID whose digest is shorter than
its hash function's, which `parse_cid` refuses since c3c9d56) keeps everything a pin reaches
through gc: a node's other links when one of them has such a digest (review e, E3 first
case), a pin made under such a CID, a file or an inline pack row (E3 second case), and a
running job's root of that form. Reads stay strict. The data is written as that release wrote
it: blocks put as they are (`put_trusted`, a pack row), a pin an empty file named by the CID."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from peer.cids import RAW, Cid, parse_cid, sha256_cid
from peer.errors import BadCID
from peer.ipfs import EmbeddedStore, dagpb, ipld, rpc

NODE_CODECS = ("dag-pb", ipld.DAG_CBOR, ipld.DAG_JSON)


@pytest.fixture
def store(tmp_path: Path) -> EmbeddedStore:
    return EmbeddedStore(tmp_path / "store")


def _short(data: bytes, codec: str = RAW) -> Cid:
    """`data`'s CID under a sha2-256 digest cut to 20 bytes (a95f359 took it)."""
    return Cid(1, codec, bytes([0x12, 20]) + hashlib.sha256(data).digest()[:20])


def _put(store: EmbeddedStore, blocks: dict[Cid, bytes]) -> None:
    """Store blocks as an earlier release did, without today's CID check."""
    store.blocks.begin()
    for c, data in blocks.items():
        store.blocks.put_trusted(c, data)
    store.blocks.sync()


def _pin_file(store: EmbeddedStore, c: Cid) -> None:
    (store.root / "pins" / str(c)).touch()  # (a pin as every release writes it)


def _node(codec: str, links: dict[str, Cid]) -> bytes:
    if codec == "dag-pb":
        return dagpb.encode_node(dagpb.PBNode(
            tuple(dagpb.PBLink(c.binary, name, 1) for name, c in links.items()), None))
    if codec == ipld.DAG_CBOR:
        return ipld.encode_cbor(dict(links))
    return ipld.encode_json(dict(links))


@pytest.mark.parametrize("codec", NODE_CODECS)
def test_gc_keeps_every_block_a_pin_reaches_past_a_link_of_a_truncated_digest(
        store: EmbeddedStore, codec: str) -> None:
    """E3, /tmp/reve/gc_siblings.py: a pinned node links a block under a truncated digest
    first, then a valid one; gc keeps both (head removed both: the node's links did not
    parse, so none was marked). A node under a truncated digest it links to (read as that
    release verified it) keeps what it links to too. Reads of the short CIDs stay refused."""
    a, b, c = b"sibling A, valid", b"block B", b"below a short node"
    ca, cb, cc = sha256_cid(a, RAW, 1), _short(b), sha256_cid(c, RAW, 1)
    short_node = _node(codec, {"c": cc})
    cs = _short(short_node, codec)
    node = _node(codec, {"b": cb, "s": cs, "a": ca})
    cn = sha256_cid(node, codec, 1)
    loose = sha256_cid(b"loose", RAW, 1)
    _put(store, {ca: a, cb: b, cc: c, cn: node, cs: short_node, loose: b"loose"})
    _pin_file(store, cn)
    stats = store.gc()
    assert stats.removed == (str(loose),)
    assert all(store.blocks.has(x) for x in (ca, cb, cc, cn, cs))
    assert store.get_block(str(ca)) == a and store.pins() == [str(cn)]
    for short in (cb, cs):
        with pytest.raises(BadCID, match="its digest is 20 bytes, not the 32"):
            store.get_block(str(short))


def test_a_pin_an_earlier_release_made_under_a_truncated_digest_stays_a_gc_root(
        store: EmbeddedStore, caplog: pytest.LogCaptureFixture) -> None:
    """E3, /tmp/reve/gc_pinned_root.py: a block pinned under a truncated digest, as a pin file
    and as an inline pack row, is kept by gc (head: dropped as a pin, the block removed; the
    pack's row made `pinned` a DataError, so gc failed). Not listed (every read refuses the
    CID: the API and retention would fail on it), logged once by name where it is."""
    filed, packed = b"pinned block with a truncated CID", b"an inline output, truncated"
    cf, cp = _short(filed), _short(packed)
    _put(store, {cf: filed})
    _pin_file(store, cf)
    (store.root / "pins-explicit" / str(cf)).touch()  # (a user's pin)
    store.blocks.pack.keep({cp.key: packed}, [str(cp)])
    kept = store.add_bytes(b"pinned today", 1)
    store.pin(kept)
    with caplog.at_level(logging.WARNING, logger="banzai.store"):
        assert store.gc().removed == ()
        assert store.gc().removed == ()
    assert store.blocks.has(cf) and store.blocks.has(cp)
    assert store.pins() == [kept] and store.explicit_pins() == []
    warned = [r.getMessage() for r in caplog.records if "earlier release" in r.getMessage()]
    assert len(warned) == 2, warned  # (once each, over two gcs)
    for c in (cf, cp):
        assert sum(str(c) in w for w in warned) == 1
    assert str(store.root / "pins" / str(cf)) in "".join(warned)
    assert f"a row of the pins table of {store.blocks.pack.path}" in "".join(warned)
    with pytest.raises(BadCID):
        store.get_block(str(cf))


def test_gc_keeps_a_running_jobs_root_of_a_truncated_digest(store: EmbeddedStore) -> None:
    """A root gc is passed (a running job's input, named by a job an earlier release
    stored) keeps its block even under a truncated digest (head dropped the root)."""
    data = b"a job's input"
    c = _short(data)
    _put(store, {c: data})
    assert store.gc(roots=[str(c)]).removed == ()
    assert store.blocks.has(c)
    assert store.gc().removed == (str(c),)  # (no longer a root: collected)


@pytest.mark.parametrize("short", [True, False])
def test_gc_goes_on_past_a_pinned_or_rooted_block_that_is_no_dag_pb(
        store: EmbeddedStore, short: bool) -> None:
    """Review r R3: a dag-pb block whose bytes do not decode (hash-valid: an earlier release
    stored it under a truncated digest, which it never decoded; or a running job's root under
    a full one) is kept as a leaf, and gc goes on: the pinned node's other links are kept and
    an unreachable block is collected (gc raised StoreError at each run before)."""
    bad = b"\xff\xff\xff not dag-pb"
    bc = _short(bad, "dag-pb") if short else sha256_cid(bad, "dag-pb", 1)
    keep, loose = b"a sibling leaf", b"unrelated, unpinned"
    kc, lc = sha256_cid(keep, RAW, 1), sha256_cid(loose, RAW, 1)
    node = _node("dag-pb", {"a": bc, "b": kc})
    nc = sha256_cid(node, "dag-pb", 1)
    _put(store, {bc: bad, kc: keep, lc: loose, nc: node})
    _pin_file(store, nc)
    assert store.gc(roots=[] if short else [str(bc)]).removed == (str(lc),)
    assert all(store.blocks.has(c) for c in (bc, kc, nc))


async def test_pin_rm_takes_a_pin_an_earlier_release_made_under_a_truncated_digest(
        store: EmbeddedStore, aiohttp_client: Any) -> None:
    """(Review c, session 42, C4.) Such a pin (a file, a user's explicit mark, an inline pack
    row) could not be removed but by deleting its file or row: `pin rm` parsed strictly.
    It takes exactly such a CID leniently, saying why in its answer (`Notes`), and gc then
    collects its block. Any other CID it refuses as before, naming what is wrong: one of a
    truncated digest that is not pinned, a text that is no CID (nothing unpinned then)."""
    filed, packed = b"pinned under a truncated CID", b"an inline output, truncated"
    cf, cp = _short(filed), _short(packed)
    _put(store, {cf: filed})
    _pin_file(store, cf)
    (store.root / "pins-explicit" / str(cf)).touch()
    store.blocks.pack.keep({cp.key: packed}, [str(cp)])
    kept = store.add_bytes(b"pinned today", 1)
    store.pin(kept)
    assert store.earlier_pins() == {str(c): "its digest is 20 bytes, not the 32 of its hash "
                                    "function" for c in (cf, cp)}
    removed: list[list[str]] = []
    app = web.Application()
    rpc.add_routes(app, store, on_removed=removed.append)
    client = await aiohttp_client(app)
    for bad, what in [("bafkreare2e", "'bafkreare2e': its digest is 2 bytes, not the 32"),
                      ("hello", "invalid CID 'hello'")]:
        r = await client.post("/api/v0/pin/rm", params=[("arg", str(cf)), ("arg", bad)])
        assert r.status == 400 and what in (await r.json())["Message"], await r.text()
    assert set(store.earlier_pins()) == {str(cf), str(cp)} and not removed
    r = await client.post("/api/v0/pin/rm", params=[("arg", f"/ipfs/{cf}"), ("arg", kept)])
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["Pins"] == [str(cf), kept] and list(body["Notes"]) == [str(cf)]
    assert "pinned by an earlier release under a CID refused now (its digest is 20 bytes, " \
        "not the 32 of its hash function)" in body["Notes"][str(cf)]
    r = await client.post("/api/v0/pin/rm", params={"arg": str(cp)})
    assert r.status == 200 and (await r.json())["Pins"] == [str(cp)]
    assert removed == [[str(cf), kept], [str(cp)]]
    assert store.earlier_pins() == {} and store.pins() == []
    assert not (store.root / "pins-explicit" / str(cf)).exists()
    assert sorted(store.gc().removed) == sorted(str(Cid(1, RAW, c.multihash))
                                                for c in (cf, cp, parse_cid(kept)))
    r = await client.post("/api/v0/pin/rm", params={"arg": str(cf)})  # (no pin of it now)
    assert r.status == 400 and "its digest is 20 bytes" in (await r.json())["Message"]

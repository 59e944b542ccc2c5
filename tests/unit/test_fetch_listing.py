"""A DAG's listing fetched alone (peer/ipfs/fetch.py, `Fetcher.ensure_listing`): from a real
peer's gateway on loopback, into a real store, its directories' blocks (a HAMT's shards
included) and its multi-block files' root blocks, never a file's bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from peer.errors import NotFound
from peer.ipfs import EmbeddedStore, hamt, parse_cid
from peer.ipfs.fetch import Fetcher
from peer.ipfs.gateway import add_routes

BIG = bytes(range(256)) * 2000  # 512000 bytes: a root block and two leaves


def _tree(store: EmbeddedStore, tmp: Path) -> tuple[str, str, str]:
    """A directory holding a plain subtree (a WAV, a two-leaf file) and a HAMT of 300 small
    files: its CID, the WAV's and the big file's."""
    src = tmp / "src"
    (src / "spk" / "wav").mkdir(parents=True)
    (src / "spk" / "wav" / "a.wav").write_bytes(b"RIFF" + bytes(1000))
    (src / "spk" / "big.bin").write_bytes(BIG)
    plain = store.add_path(src)
    files = {f"f{i}": store.add_bytes(str(i).encode()) for i in range(300)}
    built = hamt.build([hamt.Link(n, parse_cid(c), store.dag_size(c))
                        for n, c in files.items()], 1)
    for c, block in built.blocks:
        store.put_block(str(c), block)
    root = store.make_dir({"plain": plain, "many": str(built.root)})
    return (root, store.resolve(root, "plain/spk/wav/a.wav"),
            store.resolve(root, "plain/spk/big.bin"))


async def test_the_listing_comes_without_the_files(aiohttp_server: Any, tmp_path: Path) -> None:
    there = EmbeddedStore(tmp_path / "there")
    root, wav, big = _tree(there, tmp_path)
    app = web.Application()
    add_routes(app, there)
    server = await aiohttp_server(app)
    here = EmbeddedStore(tmp_path / "here")
    fetcher = Fetcher(here, lambda: {"there": f"http://127.0.0.1:{server.port}"},
                      lambda _cid: {"there"}, "me")
    try:
        assert not fetcher.has_listing(root)
        await fetcher.ensure_listing([root])
        assert fetcher.has_listing(root) and not fetcher.is_complete(root)
        assert here.file_cids(root) == there.file_cids(root)  # 302 files, through the HAMT
        assert len(here.file_cids(root)) == 302
        assert not here.has(wav)  # a raw leaf: not one byte of it
        assert here.has(big)  # its root block (is it a directory?), not its leaves
        assert [c for c, _ in there.dag(big) if not here.has(c)] == [
            c for c, _ in there.dag(big)][1:]
        assert fetcher.fetched_bytes < 40_000  # the leaves alone are 512,000
        await fetcher.ensure_listing([root])  # here already: nothing asked
    finally:
        await fetcher.close()


async def test_a_listing_no_peer_serves_is_not_found(tmp_path: Path) -> None:
    there = EmbeddedStore(tmp_path / "there")
    root, _, _ = _tree(there, tmp_path)
    fetcher = Fetcher(EmbeddedStore(tmp_path / "here"), dict, lambda _cid: (), "me")
    try:
        with pytest.raises(NotFound, match=f"the listing of {root}"):
            await fetcher.ensure_listing([root])
    finally:
        await fetcher.close()

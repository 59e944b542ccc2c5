"""What the Kubo RPC (peer/ipfs/rpc.py) provides (`on_added`: a PROVIDE event of the peer's):
the roots it pinned, never one it left unpinned (the collector may remove that any time,
and the mesh would look for it here)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web

from peer.ipfs import EmbeddedStore, rpc


@pytest.fixture
async def api(aiohttp_client: Any, tmp_path: Path) -> Any:
    """A client of the RPC over a fresh store; what it provided is `api.provided`, a CAR of
    one file `api.car` (root `api.root`)."""
    src = EmbeddedStore(tmp_path / "src")
    f = tmp_path / "file"
    f.write_bytes(b"provide me\n" * 1000)
    store = EmbeddedStore(tmp_path / "store")
    provided: list[list[str]] = []
    app = web.Application()
    rpc.add_routes(app, store, on_added=provided.append)
    client = await aiohttp_client(app)
    client.provided, client.store = provided, store
    client.root = src.add_path(f)
    client.car = b"".join(src.export_car(client.root))
    return client


def _form(data: bytes, name: str) -> FormData:
    form = FormData()
    form.add_field("file", io.BytesIO(data), filename=name)
    return form


@pytest.mark.parametrize(("query", "pinned"), [("", True), ("?pin-roots=true", True),
                                               ("?pin-roots=false", False)])
async def test_dag_import_provides_only_the_roots_it_pins(api: Any, query: str,
                                                          pinned: bool) -> None:
    """(Review: `dag import --pin-roots=false` provided every root.)"""
    r = await api.post(f"/api/v0/dag/import{query}", data=_form(api.car, "f.car"))
    assert r.status == 200, await r.text()
    assert (api.root in api.store.pins()) is pinned
    assert api.provided == ([[api.root]] if pinned else [])


@pytest.mark.parametrize(("query", "pinned"), [("", True), ("?pin=false", False)])
async def test_add_provides_only_the_roots_it_pins(api: Any, query: str, pinned: bool) -> None:
    r = await api.post(f"/api/v0/add{query}", data=_form(b"added\n", "a.txt"))
    assert r.status == 200, await r.text()
    root = (await r.json())["Hash"]
    assert (root in api.store.pins()) is pinned
    assert api.provided == ([[root]] if pinned else [])

"""The Kubo RPC's pin commands wait for the pins being written in the background (a peer's
inline outputs, pinned by a writer thread shortly after each output is done)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from peer.ipfs import rpc
from peer.ipfs.embedded import EmbeddedStore


async def test_pin_commands_read_the_pins_once_the_background_writes_landed(
        aiohttp_client: Any, tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "store")
    cid = store.add_bytes(b"an inline output")  # written, its pin still on its way
    settled: list[str] = []

    async def settle() -> None:  # as the writer's pass landing: the pin is there after it
        settled.append("settled")
        store.pin(cid)

    app = web.Application()
    rpc.add_routes(app, store, settle=settle)
    client = await aiohttp_client(app)
    r = await client.post("/api/v0/pin/ls", params={"type": "recursive"})
    assert r.status == 200 and cid in (await r.json())["Keys"]
    r = await client.post("/api/v0/pin/rm", params={"arg": cid})
    assert r.status == 200 and (await r.json())["Pins"] == [cid]
    assert settled == ["settled", "settled"]
    settled.clear()
    r = await client.post("/api/v0/pin/add", params={"arg": cid})
    assert r.status == 200 and settled == ["settled"]

"""peer/ipfs/fetch.py's connections: many DAGs fetched at once from one peer open at most
MAX_CONNECTIONS_PER_PEER connections to it (the rest wait), far under the 128 a peer admits
from one address (peer/http/limits.py). A loopback server that holds every request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from peer.errors import BanzaiError, NotFound, TooLarge
from peer.ipfs.fetch import MAX_CONNECTIONS_PER_PEER, Fetcher

PATIENCE_S = 10.0  # bound on any wait (never reached when it works)
SETTLE_S = 0.3  # after the cap is reached: time for connections beyond it to show up


class _Incomplete:
    """A store in which every DAG is missing."""

    def is_complete(self, cid: str) -> bool:
        return False


async def test_fetches_from_one_peer_share_a_bounded_pool(aiohttp_server: Any) -> None:
    held: set[int] = set()  # connections with a request being held
    most, served = 0, 0
    release = asyncio.Event()

    async def car(request: web.Request) -> web.Response:
        nonlocal most, served
        served += 1
        key = id(request.transport)
        held.add(key)
        most = max(most, len(held))
        await release.wait()
        held.discard(key)
        return web.Response(status=404)

    async def batch(request: web.Request) -> web.Response:
        return web.Response(status=404)  # one CAR of all: refused, so one request per DAG

    app = web.Application()
    app.router.add_get("/ipfs/{cid}", car)
    app.router.add_post("/api/car", batch)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    fetcher = Fetcher(_Incomplete(), lambda: {"other": base},  # type: ignore[arg-type]
                      lambda _cid: {"other"}, "me")
    cids = [f"bafy{i:04d}" for i in range(40)]
    fetching = asyncio.create_task(fetcher.ensure(cids))
    try:
        async with asyncio.timeout(PATIENCE_S):
            while len(held) < MAX_CONNECTIONS_PER_PEER:
                await asyncio.sleep(0.01)
        await asyncio.sleep(SETTLE_S)
        assert most == MAX_CONNECTIONS_PER_PEER == 16
        release.set()
        with pytest.raises(NotFound):  # every request answered 404: all 40 were served
            async with asyncio.timeout(PATIENCE_S):
                await fetching
        async with asyncio.timeout(PATIENCE_S):  # (ensure raised at the first NotFound;
            while served < len(cids):  # the other fetches go on, the waiting ones served)
                await asyncio.sleep(0.01)
    finally:
        release.set()
        fetching.cancel()
        with pytest.raises((asyncio.CancelledError, NotFound)):
            await fetching
        await fetcher.close()


async def test_a_fetch_bound_by_its_caller_over_it_is_too_large(aiohttp_server: Any) -> None:
    """(Review r1, session 38.) `ensure(max_bytes=...)` (a JOB_ENDED's listing) bounds each
    CAR to what its caller reads; a peer sending more is TooLarge (the caller's answer for
    good), not the NotFound that is tried again."""
    async def car(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)  # (no CAR: refused as such within the bound)

    app = web.Application()
    app.router.add_get("/ipfs/{cid}", car)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    class NoCar(_Incomplete):
        def import_car(self, chunks: Any, max_bytes: int) -> None:
            raise BanzaiError("not a CAR")

    fetcher = Fetcher(NoCar(), lambda: {"other": base},  # type: ignore[arg-type]
                      lambda _cid: {"other"}, "me")
    try:
        async with asyncio.timeout(PATIENCE_S):
            with pytest.raises(TooLarge, match="bafy0001: a CAR of more than 4096 bytes"):
                await fetcher.ensure(["bafy0001"], max_bytes=4096)
            with pytest.raises(NotFound):
                await fetcher.ensure(["bafy0001"], max_bytes=8192)
    finally:
        await fetcher.close()

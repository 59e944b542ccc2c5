"""peer/ipfs/fetch.py's connections: many DAGs fetched at once from one peer open at most
MAX_CONNECTIONS_PER_PEER connections to it (the rest wait), far under the 128 a peer admits
from one address (peer/http/limits.py). A loopback server that holds every request."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
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


async def test_too_large_only_when_every_peer_tried_sent_more() -> None:
    """(Review r0, session 39.) One peer sending more than the caller's bound while the
    holder was briefly unreachable made the fetch TooLarge (a listing refused for good):
    it is NotFound (tried again) unless every peer tried sent more."""
    fetcher = Fetcher(_Incomplete(), lambda: {"a": "http://a", "b": "http://b"},  # type: ignore[arg-type]
                      lambda _cid: {"a", "b"}, "me")
    down = True

    async def car(url: str, body: Any = None, max_bytes: int | None = None) -> None:
        if url.startswith("http://a") or not down:  # (no request is made)
            raise TooLarge(f"{url}: more than {max_bytes} bytes")
        raise aiohttp.ClientConnectionError("connection refused")

    fetcher._import = car  # type: ignore[method-assign]
    try:
        with pytest.raises(NotFound, match="bafy0001"):
            await fetcher.ensure(["bafy0001"], max_bytes=4096)
        down = False
        with pytest.raises(TooLarge, match="bafy0001: a CAR of more than 4096 bytes"):
            await fetcher.ensure(["bafy0001"], max_bytes=4096)
    finally:
        await fetcher.close()


async def test_the_caller_s_bound_reaches_the_first_sources_and_is_not_shared() -> None:
    """(Review r0, session 39.) The first sources (Kubo) were asked without the caller's
    bound, and a fetch of a CID under way was shared whatever its bound: each bound
    reaches them now, and a fetch is shared only within the same bound."""
    asked: list[int | None] = []
    release = asyncio.Event()

    async def kubo(cid: str, hints: Any, max_bytes: int | None) -> bool:
        asked.append(max_bytes)
        await release.wait()
        return False

    fetcher = Fetcher(_Incomplete(), dict, lambda _cid: (), "me")  # type: ignore[arg-type]
    fetcher.first.append(kubo)
    ones: list[Any] = []
    one = fetcher._one
    fetcher._one = lambda *a: ones.append(a) or one(*a)  # type: ignore[method-assign]
    fetches = [asyncio.create_task(fetcher.ensure(["bafy0001"], max_bytes=b))
               for b in (4096, None, 4096)]
    try:
        async with asyncio.timeout(PATIENCE_S):
            while (len(asked) < 2 or len(ones) < 3) and not any(f.done() for f in fetches):
                await asyncio.sleep(0.01)
        await asyncio.sleep(0)  # (the third's `_one`, made before this wakes, runs first)
        release.set()
        got = await asyncio.gather(*fetches, return_exceptions=True)
        assert [type(e) for e in got] == [NotFound] * 3, got
        assert sorted(asked, key=str) == [4096, None]  # (the third shared the first's)
    finally:
        release.set()
        await fetcher.close()

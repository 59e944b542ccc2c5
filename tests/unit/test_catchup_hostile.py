"""Catch-up against a hostile member (review r2 of session 48, H1): a second member's digests
read bounded, as sent and off the loop. HTTP on loopback only (aiohttp test servers)."""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from peer import catchup as catchup_mod
from peer.node import Node
from tests.unit.test_compaction import _open

GOOD = {"heads": {}, "floors": {}, "jobs": {}}  # the answer of the member asked after


@contextlib.asynccontextmanager
async def _members(routes: dict[str, Callable[[web.Request], Awaitable[web.StreamResponse]]],
                   ) -> AsyncIterator[dict[str, str]]:
    """One loopback server answering `/NAME/api/snapshot` for each route: NAME -> URL."""
    app = web.Application()
    for name, handler in routes.items():
        app.router.add_get(f"/{name}/api/snapshot", handler)
    async with TestServer(app, host="127.0.0.1") as server:
        base = str(server.make_url("")).rstrip("/")
        yield {name: f"{base}/{name}" for name in routes}


async def _good(request: web.Request) -> web.Response:
    return web.json_response(GOOD)


# -- H1: a second member's digests ------------------------------------------------------------


async def test_a_second_members_gzip_answer_is_passed_unread_for_the_next(
        tmp_path: Path, opened: list[Node], caplog: pytest.LogCaptureFixture) -> None:
    """16 KB of gzip on the wire were 16 MiB of JSON in memory (4 MB: 4 GiB), parsed on the
    loop, and taken as the member's digests. An answer in a Content-Encoding is refused at
    its headers, whatever the session does with one (aiohttp's default decompresses)."""
    b = _open(tmp_path / "b", opened)
    bomb = gzip.compress(b'{"pad":"' + b"a" * (16 << 20) + b'"}', 9)
    assert len(bomb) < 64 << 10

    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip",
                                                "Content-Type": "application/json"})

    with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
        async with _members({"bomb": gzipped, "good": _good}) as urls, \
                aiohttp.ClientSession() as http:
            assert await b.catchup._second(http, urls, "signer") == GOOD
    assert "no snapshot digests from bomb" in caplog.text
    assert "Content-Encoding 'gzip'" in caplog.text


@pytest.mark.parametrize("sent", ["streamed", "with_length"])
async def test_a_second_members_answer_over_the_bound_is_cut_and_the_next_asked(
        tmp_path: Path, opened: list[Node], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch, sent: str) -> None:
    """`max_digests_bytes` bounds the answer as it is read (64 MiB of a valid JSON object
    was read whole and taken): past it, the rest is not read (the server could write no
    more than the socket buffers hold), the member is logged and the next one asked; the
    answer taken is parsed in a worker thread, not on the loop."""
    b = _open(tmp_path / "b", opened)
    monkeypatch.setattr(b.catchup, "cfg", dataclasses.replace(
        b.catchup.cfg, max_digests_bytes=64 << 10))
    piece, pieces = b"a" * (64 << 10), 1024  # 64 MiB in all
    written = [0]

    async def big(request: web.Request) -> web.StreamResponse:
        if sent == "with_length":
            return web.json_response({"pad": "a" * (1 << 20)})
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        try:
            await resp.write(b'{"pad":"')
            for _ in range(pieces):
                await resp.write(piece)
                written[0] += 1
            await resp.write(b'"}')
        except ConnectionError:
            pass  # (the peer stopped reading and closed)
        return resp

    threads: list[str] = []
    loads = catchup_mod.loads_within

    def parse(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return loads(*args, **kwargs)

    monkeypatch.setattr(catchup_mod, "loads_within", parse)
    with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
        async with _members({"big": big, "good": _good}) as urls, \
                b.catchup._session(10.0) as http:
            assert await b.catchup._second(http, urls, "signer") == GOOD
    assert "no snapshot digests from big" in caplog.text
    assert f"an answer longer than {64 << 10} bytes" in caplog.text
    assert written[0] < pieces // 2  # (not read whole: at most the bound and the buffers)
    assert threads and threading.main_thread().name not in threads

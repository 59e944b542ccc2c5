"""Catch-up against a hostile member (review r2 of session 48, H1 and M1): a second member's
digests read bounded, as sent and off the loop; a floor counts only for an origin we know; a
member whose snapshot failed waits (per member, on the peer's clock) while others are asked;
a download slower than a floor rate is cut. HTTP on loopback only (aiohttp test servers)."""

from __future__ import annotations

import asyncio
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
from peer.log import EventType
from peer.log.snapframe import CONTENT_TYPE as SNAPSHOT_TYPE_V3
from peer.log.snapframe import FEATURE as SNAPSHOT_FEATURE
from peer.node import Node
from tests.unit.test_compaction import _floor_known_to, _open, _pair, _run_history

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


# -- M1: which floors start a catch-up, and a member that failed --------------------------------


@pytest.fixture
def attempts(tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
             ) -> tuple[Node, list[float], list[str], dict[str, str | None]]:
    """A fresh peer whose catch-ups are recorded, not made (each gives the outcome set for
    its member in the dict: None not asked, "" taken, else why not; "raise" raises its
    head of its own origin first, as a taken snapshot covering the floor would), on a fake
    clock: (node, clock, members asked, outcomes)."""
    b = _open(tmp_path / "b", opened)
    clock = [1000.0]
    asked: list[str] = []
    outcome: dict[str, str | None] = {}

    async def catch_up(peer_id: str) -> str | None:
        asked.append(peer_id)
        why = outcome.get(peer_id, "refused")
        if why == "raise":
            for _ in range(10):
                b.emit(EventType.MEMBER, b.capabilities())
            b.flush()
            return ""
        return why

    monkeypatch.setattr(b.catchup, "clock", lambda: clock[0])
    monkeypatch.setattr(b.catchup, "_catch_up", catch_up)
    return b, clock, asked, outcome


async def _heard(b: Node, peer_id: str, info: dict[str, Any]) -> None:
    """`b` hears `peer_id`'s heartbeat `info`, and a catch-up it starts ends."""
    b.catchup._loop = asyncio.get_running_loop()
    b.catchup.behind(peer_id, info)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_floor_counts_only_for_an_origin_the_peer_knows(
        attempts: tuple[Node, list[float], list[str], dict[str, str | None]]) -> None:
    """`{"x": 2**60}` (an origin nobody has) made every peer ask its announcer for a
    snapshot: a floor now counts for an origin whose MEMBER event or events we hold."""
    b, _, asked, _ = attempts
    await _heard(b, "liar", {"cfloor": {"x": 2**60, "y": "2", "z": None}})
    assert asked == []
    known = _floor_known_to(b)
    await _heard(b, "honest", known)
    assert asked == ["honest"]


async def test_a_member_whose_snapshot_failed_waits_while_others_are_asked(
        attempts: tuple[Node, list[float], list[str], dict[str, str | None]]) -> None:
    """A member whose snapshot failed (or was refused, or cut) was asked first again at
    every retry_s: it now waits retry_s x 2^(failures - 1), at most max_backoff_s, on the
    peer's clock, and the next member heard is asked at once; a taken snapshot forgets."""
    b, clock, asked, outcome = attempts
    info = _floor_known_to(b)
    retry = b.catchup.cfg.retry_s
    await _heard(b, "x", info)
    assert asked == ["x"]
    clock[0] += 1
    await _heard(b, "x", info)  # (waits until 1000 + retry_s)
    await _heard(b, "y", info)  # (asked at once: not retry_s after x)
    assert asked == ["x", "y"]
    clock[0] = 1000 + retry + 1
    await _heard(b, "x", info)  # free again: fails a second time, waits 2 x retry_s
    assert asked == ["x", "y", "x"]
    clock[0] += retry + 1
    await _heard(b, "x", info)
    assert asked == ["x", "y", "x"]
    clock[0] += retry
    outcome["x"] = "raise"
    await _heard(b, "x", info)
    assert asked == ["x", "y", "x", "x"] and "x" not in b.catchup._backoff
    assert b.catchup._backoff["y"][1] == 1


async def test_a_member_whose_snapshot_leaves_us_below_its_floors_waits(
        attempts: tuple[Node, list[float], list[str], dict[str, str | None]]) -> None:
    """A snapshot taken that leaves our heads below the floors its signer announced (a
    member announcing floors above what it serves) counts as a failure; one not asked
    (not live to gossip yet) does not."""
    b, clock, asked, outcome = attempts
    info = _floor_known_to(b)
    outcome.update({"lied": "", "early": None})
    await _heard(b, "early", info)
    assert "early" not in b.catchup._backoff
    clock[0] += b.catchup.cfg.retry_s
    await _heard(b, "lied", info)
    assert asked == ["early", "lied"] and b.catchup._backoff["lied"][1] == 1


def test_the_members_waiting_are_bounded(
        attempts: tuple[Node, list[float], list[str], dict[str, str | None]]) -> None:
    b, clock, _, _ = attempts
    for i in range(catchup_mod.MAX_BACKOFF_PEERS + 50):
        clock[0] += 1
        b.catchup._judge(f"m{i}", "refused")
    waiting = b.catchup._backoff
    assert len(waiting) == catchup_mod.MAX_BACKOFF_PEERS
    assert "m0" not in waiting and f"m{catchup_mod.MAX_BACKOFF_PEERS + 49}" in waiting
    b.catchup._judge("m60", "refused")
    assert waiting["m60"][1] == 2
    assert b.catchup.cfg.max_backoff_s >= b.catchup.cfg.retry_s


# -- M1: a download slower than the floor rate -------------------------------------------------


async def _catch_up_at(a: Node, b: Node, monkeypatch: pytest.MonkeyPatch, step_s: float,
                       piece: int = 512) -> str | None:
    """`b` catches up from `a`'s v3 snapshot (its jobs part) served in pieces of `piece`
    bytes, `b`'s clock moving `step_s` after each: what `_catch_up` gives."""
    _run_history(a, jobs=3, per_job=2)
    a.catchup.compact()
    body = b"".join(a.catchup.snapshot_stream(v=3, part="jobs"))
    assert len(body) > 8 * piece
    clock = [50.0]
    monkeypatch.setattr(b.catchup, "clock", lambda: clock[0])

    async def snapshot(request: web.Request) -> web.StreamResponse:
        if request.query.get("digest"):
            return web.Response(status=404)
        resp = web.StreamResponse(headers={"Content-Type": SNAPSHOT_TYPE_V3})
        await resp.prepare(request)
        try:
            for i in range(0, len(body), piece):
                await resp.write(body[i:i + piece])
                clock[0] += step_s
        except ConnectionError:
            pass
        return resp

    async with _members({"a": snapshot}) as urls:
        monkeypatch.setattr(b, "peer_urls", lambda: {a.peer_id: urls["a"]})
        monkeypatch.setattr(b, "live_peers", lambda: {
            a.peer_id: {"http": urls["a"], "features": [SNAPSHOT_FEATURE]}})
        return await b.catchup._catch_up(a.peer_id)
    raise AssertionError("no server")


async def test_a_snapshot_slower_than_the_floor_rate_is_cut(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """512 bytes every 10 s (of the peer's clock): held the catch-up for `timeout_s`
    (120 s), then was taken. Below `min_rate_bytes_s` past `rate_grace_s` it is cut:
    nothing taken, a why that names it (the member then waits: `_judge`)."""
    a, b = _pair(tmp_path, opened)
    heads = dict(b.heads())
    why = await _catch_up_at(a, b, monkeypatch, step_s=10.0)
    assert why is not None and "slower than" in why and "min_rate_bytes_s" in why
    assert dict(b.heads()) == heads


async def test_a_snapshot_at_the_floor_rate_or_faster_is_taken(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _pair(tmp_path, opened)
    assert await _catch_up_at(a, b, monkeypatch, step_s=0.01) == ""
    assert dict(b.heads()) == dict(a.heads())


@pytest.mark.parametrize("silent", ["headers", "body"])
async def test_a_snapshot_that_sends_nothing_is_cut_at_the_grace(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        silent: str) -> None:
    """No headers (aiohttp's `sock_read`), or headers then nothing (the deadline on the
    next piece, by the rate): cut once `rate_grace_s` passed, not after `timeout_s`."""
    b = _open(tmp_path / "b", opened)
    monkeypatch.setattr(b.catchup, "cfg", dataclasses.replace(
        b.catchup.cfg, rate_grace_s=0.05))
    done = asyncio.Event()
    if silent == "body":  # (aiohttp's `sock_read` off: the deadline alone cuts it)
        session = b.catchup._session
        monkeypatch.setattr(b.catchup, "_session", lambda timeout_s, stall_s=None: session(
            timeout_s))

    async def mute(request: web.Request) -> web.StreamResponse:
        if request.query.get("digest"):
            return web.Response(status=404)
        resp = web.StreamResponse(headers={"Content-Type": SNAPSHOT_TYPE_V3})
        if silent == "body":
            await resp.prepare(request)
        await done.wait()
        return resp

    async with _members({"a": mute}) as urls:
        monkeypatch.setattr(b, "peer_urls", lambda: {"a": urls["a"]})
        try:
            why = await b.catchup._catch_up("a")
        finally:
            done.set()
    assert why is not None
    if silent == "headers":
        assert "no byte for 0.05 s (catch-up rate_grace_s)" in why
    else:
        assert "slower than" in why and "0 bytes" in why


def test_the_new_catch_up_settings_must_be_positive(tmp_path: Path) -> None:
    from peer.errors import ConfigError

    for field in ("max_digests_bytes", "min_rate_bytes_s", "rate_grace_s", "max_backoff_s"):
        with pytest.raises(ConfigError) as e:
            catchup_mod.CatchUpConfig(tmp_path, **{field: 0})
        assert e.value.field == field

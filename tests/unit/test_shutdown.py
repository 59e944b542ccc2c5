"""banzai-peer's shutdown order (peer/main.py's `shut_down`) over a real socket on loopback:
the peer's app (make_app over an unstarted Node, gossip faked) served as peer.main serves it,
the event log's fsync held by the test (no sleeps: it releases it)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from peer import main
from peer.config import PeerConfig
from peer.http.app import GATE, make_app
from peer.http.limits import serve
from peer.http.tokens import load_or_create_token
from peer.node import Node
from tests.helpers import RecordingGossip
from tests.unit.test_compaction import history
from tests.unit.test_durable import _HeldFsyncs

PATIENCE_S = 10.0  # bound on any wait (never reached when it works)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    n.listeners.clear()  # no scheduler reactions: this is about the log
    n.gossip = RecordingGossip()  # type: ignore[assignment]
    n.gossip.acknowledge = lambda origins: None  # type: ignore[attr-defined]
    yield n
    n.log.close()


async def test_an_acknowledgement_whose_fsync_outlasts_the_http_shutdown_is_answered(
        node: Node) -> None:
    """(Review: the HTTP runner was cleaned up, its handlers cancelled after 1 s, before the
    node closed.) A DELETE whose JOB_DELETED's fsync is still under way when the peer
    shuts down gets its answer once that fsync ends (the node's close waits for it), however
    long past the runner's HTTP_SHUTDOWN_S that is."""
    node.merge(history(jobs=1, per_job=1))  # job000: finished (fsynced here: no loop yet)
    node._loop = asyncio.get_running_loop()  # (what its start sets: fsyncs in a thread)
    app = make_app(node)
    runner, site = await serve(app, app[GATE], "127.0.0.1", 0, access_log=None,
                               shutdown_timeout=main.HTTP_SHUTDOWN_S)
    closing = asyncio.Event()
    close = node.close

    async def spied_close() -> None:
        closing.set()
        await close()

    node.close = spied_close  # type: ignore[method-assign]
    disk = _HeldFsyncs(node, held=1)
    token = load_or_create_token(node.cfg.data_dir)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as client:
        request = asyncio.create_task(
            client.delete(f"http://127.0.0.1:{site.port}/api/jobs/job000"))
        await disk.under_way(0)  # the acknowledgement's fsync
        stopping = asyncio.create_task(main.shut_down(runner, node))
        try:
            # (before: only once the runner had cancelled the DELETE, HTTP_SHUTDOWN_S on)
            await asyncio.wait_for(closing.wait(), PATIENCE_S)
        finally:
            disk.release(0)  # the fsync ends, after the HTTP shutdown's time (test's order)
        async with asyncio.timeout(PATIENCE_S):
            response = await request
            assert response.status == 200, await response.text()
            await stopping
    assert "job000" in node.state.deleted and node.durability()["unwritten_events"] == 0

"""The nesting bound of JSON that enters a peer (64 levels: peer.jsontext.MAX_DEPTH) and lone
surrogates: at every entry point (an HTTP body, a submitted pipeline, a received event, a
row read back from the data dir, a snapshot's row) a value one level over the bound is
refused naming its place, and a value at the bound is taken and round-trips through the
log, the content hash and the wire at a stack with little room left, where an earlier
release's deeper value raised RecursionError (a poisoned log: every reply carrying it failed).

Only names the previous release has are imported: each test fails there for what it checks.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient, TestServer

from peer.config import PeerConfig
from peer.http.app import make_app
from peer.http.tokens import load_or_create_token
from peer.node import Node

MAX = 64  # the bound (peer.jsontext.MAX_DEPTH), written out: the previous release has none
ROOM = 100  # frames left below the recursion limit where a value within the bound encodes
_T = TypeVar("_T")


def nested(levels: int, leaf: Any = 0) -> Any:
    """`levels` lists around `leaf`: a value that nests `levels` levels."""
    v = leaf
    for _ in range(levels):
        v = [v]
    return v


def depth(v: Any) -> int:
    """The reference: how deeply `v` nests as JSON, recursively (short values only)."""
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list | tuple):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


def with_room(room: int, fn: Callable[[], _T]) -> _T:
    """`fn()` called with only about `room` frames left below the recursion limit: as a
    reply, a snapshot or a hash encodes what a peer holds, deep in some call stack."""
    used, f = 0, sys._getframe()
    while f is not None:
        used, f = used + 1, f.f_back

    def down(n: int) -> _T:
        return fn() if n <= 0 else down(n - 1)

    return down(sys.getrecursionlimit() - used - room)


def test_with_room_leaves_about_that_room() -> None:
    """The helper itself: an encode of a value within the room works, one far deeper not."""
    with_room(ROOM, lambda: json.dumps(nested(MAX + 3)))
    with pytest.raises(RecursionError):
        with_room(ROOM, lambda: json.dumps(nested(3 * ROOM)))


# -- HTTP bodies -------------------------------------------------------------------------

@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, Node]]:
    """A loopback peer's app (not started) and the peer, every request with its token."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    token = load_or_create_token(node.cfg.data_dir)
    try:
        async with TestClient(TestServer(make_app(node)),
                              headers={"Authorization": f"Bearer {token}"}) as c:
            yield c, node
    finally:
        node.log.close()


@pytest.mark.parametrize(("extra", "status", "message"), [
    (nested(MAX - 1), 404, "none of these CIDs"),  # taken: none is held here
    (nested(MAX), 400, "the body is nested too deeply: deeper than 64 levels (at x[0]"),
    ("\ud800", 400, "the body: x holds a lone surrogate"),
    ("\U0001f600", 404, "none of these CIDs"),  # a pair (escaped) is text
])
async def test_an_http_body_is_taken_up_to_the_bound_and_without_lone_surrogates(
        served: tuple[Any, Node], extra: Any, status: int, message: str) -> None:
    client, _ = served
    body = json.dumps({"cids": ["QmbWqxBEKC3P8tqsKc98xmWNzrzDtRLMiMPL8wBuTGsMnR"],
                       "x": extra})
    r = await client.post("/api/car", data=body, headers={"Content-Type": "application/json"})
    err = await r.json()
    assert r.status == status and message in err["message"], err
    if status == 400:
        assert err["error"] == "ArgError" and err["field"] == "body"

"""A test client of a peer's app (not started), every request with the peer's token."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from peer.http.app import make_app
from peer.http.tokens import load_or_create_token
from peer.node import Node


@contextlib.asynccontextmanager
async def api_client(node: Node) -> AsyncIterator[TestClient[Any, Any]]:
    token = load_or_create_token(node.cfg.data_dir)
    async with TestClient(TestServer(make_app(node)),
                          headers={"Authorization": f"Bearer {token}"}) as c:
        yield c

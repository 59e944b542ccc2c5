"""Review finding 8 where a user meets it: a CID with a truncated digest (`bafkreare2e`: raw,
sha2-256, 2 bytes, which more than one block verifies against) named to the API is a 400
naming the CID and what is wrong, never a 500, whether read from the gateway, named as a
submission's existing data or asked of the CAR export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.node import Node
from tests.unit.api_client import api_client

SHORT = "bafkreare2e"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    n.listeners.clear()  # (no scheduler reactions: this is about reading the request)
    yield n
    n.log.close()


async def test_a_truncated_digest_cid_is_a_400_naming_it_everywhere(node: Node) -> None:
    async with api_client(node) as client:
        r = await client.get(f"/ipfs/{SHORT}")
        assert r.status == 400, await r.text()
        assert "its digest is 2 bytes, not the 32" in await r.text()
        r = await client.post("/api/jobs", json=[{"cid": SHORT}, {"call": "ECHO", "args": ["x"]}])
        assert r.status == 400, await r.text()
        body = await r.json()
        assert body["field"] == "tasks[0].cid" and SHORT in body["message"], body
        assert "its digest is 2 bytes" in body["message"]
        r = await client.post("/api/car", json={"cids": [SHORT]})
        assert r.status == 400, await r.text()
        assert "its digest is 2 bytes" in (await r.json())["message"]
    assert not node.state.jobs  # (nothing submitted)

"""What a member's events and heartbeats put in front of a person, checked at the door and
when served (review r1 of session 49, helper g: F3, F2's server side, F5, F7). Real Nodes
(not started) through their app (aiohttp's test client, loopback only), the real wire
checks; no sleeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peer.log import EventType
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_compaction import _open

OTHER = "a5b44bb0377bec946ae7"  # another peer's id, as the review's hostile member sent it


# -- F3: a MEMBER payload's keys ---------------------------------------------------------------
async def test_a_member_payloads_id_and_other_keys_do_not_change_its_entry(
        tmp_path: Path, opened: list[Node]) -> None:
    """On 6c66b4c1 /api/peers spread the MEMBER payload after `id`: a payload `id` of
    another peer replaced the member's own (it posed as that peer), and any key it sent was
    served. Now the entry holds the member's real id and the typed fields only."""
    n = _open(tmp_path / "a", opened)
    n.emit(EventType.MEMBER, {**n.capabilities(), "id": OTHER, "self": False,
                              "state": "alive", "extra": "<script>", "name": "victim-A"})
    async with api_client(n) as c:
        r = await c.get("/api/peers")
        peers: list[dict[str, Any]] = (await r.json())["peers"]
    assert r.status == 200
    assert [(p["id"], p["self"], p["name"]) for p in peers] == [(n.peer_id, True, "victim-A")]
    assert "extra" not in peers[0] and peers[0]["state"] == "alive"
    assert {"http", "calls", "slots", "cores", "mem_mb", "gpu", "key", "features", "kinds",
            "labels"} <= set(peers[0])


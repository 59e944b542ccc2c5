"""Three live peers (one mesh secret) against what other members may send: a newer peer's
event types (a mixed-version mesh, signed by the newer peer) and 10,000 random and mutated
frames sent as a member sends them: over CURVE, events and heartbeats signed (the fuzzer,
tests/fuzz_frames.py, sent through tests/gossip_client.py). The peers stay up,
converge to one state and still run pipelines. Longer runs: scripts/fuzz_mesh.py."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from peer.log import Event, EventType
from peer.mesh.wire import Kind, dumps
from tests.conftest import PeerProc, start_peer, stop_peers
from tests.fuzz_frames import batches
from tests.gossip_client import GossipClient
from tests.helpers import (
    JsonApi,
    event_heads,
    get_json,
    lanes_held_alike,
    lanes_members,
    wait_mesh,
)

pytestmark = pytest.mark.integration

API = JsonApi(job_timeout_s=60)
PIPE = [{"call": "T_WRITE", "args": [6]}, {"call": "T_UPPER"}, {"call": "T_CONCAT"}]
FRAMES = 10_000
PER_EXAMPLE = 50
NEWER = 200  # an event type number no peer of this version knows


@dataclass
class Mesh:
    peers: list[PeerProc]
    name: str
    secret: bytes

    def health(self) -> list[dict[str, Any]]:
        return [get_json(p.url + "/api/health") for p in self.peers]

    def gossip_addrs(self) -> list[str]:
        return [str(h["gossip_address"]) for h in self.health()]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    d = tmp_path_factory.mktemp("door")
    secret = d / "secret"
    secret.write_text(secrets.token_hex(32))
    name = f"test-{uuid.uuid4().hex[:12]}"
    with ThreadPoolExecutor(3) as ex:
        peers = list(ex.map(lambda i: start_peer(
            d / f"p{i}", "--secret-file", str(secret), "--slots", "1", "--lease-s", "5",
            mesh=name, timeout_s=180), range(3)))
    try:
        wait_mesh(peers, 3)
        yield Mesh(peers, name, secret.read_bytes().strip())
    finally:
        stop_peers(peers)


def held(h: dict[str, Any]) -> int:
    """Events folded by this peer process: in memory, or out of it (a PROVIDE leaves memory as
    it is recorded: peer/log/jobless.py; compaction)."""
    return int(h["log"]["events"]) + int(h["log"]["compaction"]["evicted"])


def mesh_events(h: dict[str, Any]) -> int:
    """Events in memory of the mesh streams, which every peer holds: with lanes on, less
    those of the lanes, which a lanes job's members alone hold."""
    return int(h["log"]["events"]) - int(h["log"].get("lanes", {}).get("lane_events", 0))


def until_converged(m: Mesh, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Poll until the three peers hold the same events with the same contents: the heads
    digest, the content digest (two contents for one (origin, seq) settle on the smaller
    content hash everywhere) and the event count, of the mesh streams (a lanes job's lanes,
    held by its members only, are in none of them); and, of each lanes job, its members the
    same lanes with the same heads in their logs, the other peers none (`lanes_held_alike`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        hs = m.health()
        logs = [(h["log"]["heads_digest"], h["log"]["content_digest"], mesh_events(h))
                for h in hs]
        dbs = [p.data_dir / "events.sqlite" for p in m.peers]
        heads = [event_heads(db) for db in dbs]
        if len(set(logs)) == 1 and lanes_held_alike(heads, [h["peer"] for h in hs],
                                                    lanes_members(dbs[0])):
            return hs
        assert time.monotonic() < deadline, f"the peers never converged: {logs}, {heads}"
        time.sleep(0.2)


def run_pipeline(m: Mesh, on: int = 0) -> None:
    job = API.submit(m.peers[on].url, PIPE)
    for p in m.peers:  # every peer sees it finish, with the same outputs
        view = API.wait(p.url, job)
        assert view["state"] == "done", view
    assert len({str(API.wait(p.url, job)["outputs"]) for p in m.peers}) == 1


def test_a_newer_peers_event_types_are_kept_forwarded_and_not_folded(mesh: Mesh) -> None:
    """One member emits a type the others do not know, first in its log (the bug: every
    reply met it first and dropped the whole frame, so an older peer never caught up)."""
    before = mesh.health()
    now = int(time.time() * 1000) << 16
    with GossipClient(mesh.name, mesh.secret, identity=True) as c:  # the newer peer
        evs = [Event.from_json({
            "origin": c.sender, "seq": q, "hlc": now + q,
            "type": NEWER if q % 3 == 1 else int(EventType.PROVIDE),
            "payload": {"what": "a newer peer's fact", "n": q} if q % 3 == 1
            else {"cids": [f"bafk-newer-{q}"]}}) for q in range(1, 601)]
        a = mesh.gossip_addrs()[0]
        for i in range(0, len(evs), 100):  # to one peer only: the others get them by gossip
            c.send_events(a, evs[i:i + 100])  # signed by the newer peer, as it would
        hs = until_converged(mesh)
    for h, b in zip(hs, before, strict=True):
        assert h["log"]["unknown"]["events"] == 200 and h["log"]["unknown"]["dropped"] == 0
        assert held(h) == held(b) + 600
        assert h["jobs"] == b["jobs"]  # nothing of them folded into jobs
        assert h["log"]["refused"]["total"] == b["log"]["refused"]["total"]
    run_pipeline(mesh, on=2)


@pytest.mark.timeout(300)  # ~30 s on an idle 2-core machine; the bound is for a loaded one
def test_fuzzed_frames_leave_the_mesh_up_converged_and_working(mesh: Mesh) -> None:
    running = API.submit(mesh.peers[1].url, [{"call": "T_WRITE", "args": [6]},
                                             {"call": "T_SLOW_ITEMS", "args": [0.3]},
                                             {"call": "T_CONCAT"}])
    addrs = mesh.gossip_addrs()
    before = mesh.health()
    with GossipClient(mesh.name, mesh.secret, identity=True) as client:  # a member

        @settings(max_examples=FRAMES // PER_EXAMPLE + 50, deadline=None, database=None,
                  phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(batches(client, len(addrs), PER_EXAMPLE))
        def fuzz(batch: list[tuple[int, bytes]]) -> None:
            for i, frame in batch:
                client.send_raw(addrs[i], frame)

        fuzz()
        for a in addrs:  # an unsigned heartbeat to each peer, whatever the draws sent it
            client.send_raw(a, client.frame(Kind.HEARTBEAT, dumps({"info": {}})))
        sent = client.sent
        assert sent >= FRAMES, sent
        for p in mesh.peers:
            assert p.proc.poll() is None, p.output[-3000:]
        hs = until_converged(mesh)
    if "lanes" in hs[0]["log"]:  # (its lanes check compared a lanes job: not vacuous)
        assert lanes_members(mesh.peers[0].data_dir / "events.sqlite")
    frames_in = sum(h["gossip"]["frames_in"] - b["gossip"]["frames_in"]
                    for h, b in zip(hs, before, strict=True))
    assert frames_in >= sent  # every fuzzed frame was taken in (and more: the peers' own)
    for h in hs:  # the door, the signature and the frame checks turned things away,
        g = h["gossip"]  # nothing failed
        assert h["log"]["refused"]["total"] > 0 and g["dropped_bad_mac"] > 0, h
        assert g["events_refused"] > 0 and g["dropped_unsigned"] > 0, h
        assert g["merge_errors"] == 0, h
        assert len(h["log"]["refused"]["by_origin"]) <= 65  # bounded, whatever origins came
    # The fuzzer sent different contents for one (origin, seq) to different peers: every
    # peer met them, and all settled on the same ones (until_converged).
    assert all(h["security"]["conflicts"] for h in hs), [h["security"]["conflicts"] for h in hs]
    stored = held(hs[0]) - held(before[0])
    assert stored > 100, stored  # fuzzed events passed the door, were folded and replicated
    for p in mesh.peers:
        at = p.output.find("Traceback")
        assert at < 0, p.output[max(0, at - 1500):at + 3500]  # the traceback itself
    view = API.wait(mesh.peers[0].url, running, timeout_s=90)
    assert view["state"] == "done", view
    run_pipeline(mesh, on=0)

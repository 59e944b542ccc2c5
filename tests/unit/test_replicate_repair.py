"""Replication repair (peer/ipfs/replicate.py, issue 11 item 5): outputs held by fewer than r
live peers are replicated again at start and when a holder departs."""

from __future__ import annotations

import asyncio
from typing import Any

from peer.ipfs.replicate import Replicator, repair_peers
from peer.log import Event, EventType
from tests.helpers import ReplicaFakes


class Fakes(ReplicaFakes):
    """`ReplicaFakes`, and who provides each CID (this peer once it emitted it) and the live
    peers."""

    def __init__(self) -> None:
        super().__init__()
        self.providers: dict[str, set[str]] = {}
        self.peers: dict[str, dict[str, Any]] = {}

    def emit(self, typ: EventType, payload: dict[str, Any]) -> Event:
        for c in payload.get("cids", ()):
            self.providers.setdefault(c, set()).add("me")
        return super().emit(typ, payload)

    def replicator(self, outputs: list[tuple[str, str, str]], **kw: Any) -> Replicator:
        return Replicator("me", 2, lambda: self.peers, lambda c: self.providers.get(c, set()),
                          self, self, self.emit, batch_window_s=0.0,
                          outputs=lambda: outputs, **kw)


async def until(cond: Any) -> None:
    for _ in range(2000):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("never happened")


def test_repair_peers_are_the_first_live_non_holders() -> None:
    alive = ["a", "b", "c", "d"]
    assert repair_peers("bafyx", {"a", "b"}, alive, 2) == []
    one = repair_peers("bafyx", {"a", "dead"}, alive, 2)
    assert len(one) == 1 and one[0] in {"b", "c", "d"}
    assert repair_peers("bafyx", {"a", "dead"}, list(reversed(alive)), 2) == one
    assert len(repair_peers("bafyx", {"dead"}, alive, 3)) == 3


async def test_a_rescan_replicates_what_fewer_than_r_live_peers_hold() -> None:
    f = Fakes()
    f.peers = {"p1": {}}  # p2 and p3 are gone
    outs = [("bafy1", "p2", "j"), ("bafy2", "p1", "j"), ("bafy3", "p3", "j")]
    f.providers = {"bafy1": {"p2"}, "bafy2": {"p1", "p3"}, "bafy3": {"p3", "p1"}}
    r = f.replicator(outs)
    # two live peers (me, p1): every output needs both; p1 holds bafy2 and bafy3
    assert r.rescan() == 3
    await until(lambda: len(f.pinned) == 3)
    assert sorted(f.pinned) == ["bafy1", "bafy2", "bafy3"]
    assert [t for t, _ in f.emitted] == [EventType.PROVIDE]
    assert r.rescan() == 0  # held by me now: nothing more
    await r.close()


async def test_the_watch_rescans_at_start_and_when_a_holder_departs() -> None:
    f = Fakes()
    f.peers = {"p1": {}, "p2": {}}
    f.providers = {"bafyA": {"p1", "p2"}}
    r = f.replicator([("bafyA", "p1", "j")], settle_s=0.0, watch_s=0.01)
    r.start()
    await until(lambda: r.rescans >= 1)
    assert f.pinned == []  # two live holders: enough
    del f.peers["p2"]  # a holder is declared dead
    await until(lambda: f.pinned == ["bafyA"])
    assert r.rescans == 2
    await r.close()


def a_task_done(seq: int, job: str, cid: str) -> Event:
    """Peer p1's TASK_DONE of `job`, a fresh output `cid`."""
    return Event("p1", seq, 0, EventType.TASK_DONE,
                 {"job": job, "task": "T", "output": cid, "key": None, "cached": False,
                  "warning": None})


async def test_a_fresh_output_is_replicated_once_its_job_ends() -> None:
    """While its job runs (job_live), a fresh output waits; the event that ends the job
    wakes the replicator; a job that outlives defer_max_s does not hold it longer."""
    f = Fakes()
    f.peers = {"p1": {}}
    live = {"j1"}
    r = f.replicator([], job_live=lambda j: j in live, defer_max_s=600.0)
    r.on_event(a_task_done(1, "j1", "bafyA"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert f.fetched == [] and r.deferred == 1  # its job still runs
    live.clear()  # the job's last task is done: that event wakes the replicator
    r.on_event(a_task_done(2, "j2", "bafyB"))
    await until(lambda: sorted(f.pinned) == ["bafyA", "bafyB"])
    await r.close()

    g = Fakes()
    g.peers = {"p1": {}}
    r = g.replicator([], job_live=lambda j: True, defer_max_s=0.01)
    r.on_event(a_task_done(1, "j1", "bafyC"))
    await until(lambda: g.pinned == ["bafyC"])  # the job never ends: replicated anyway
    await r.close()

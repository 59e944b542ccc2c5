"""A SWIM report has a byte bound, and piggybacked updates fill a frame by bytes, not count
(review r2 of session 48, M3): large reports, relayed on honest peers' probes and acks, made
those frames larger than `max_frame_bytes`, so they were not sent and honest members
suspected each other. Pure Swim and clusters on the in-memory network, fake clock; every
loop bounded."""

from __future__ import annotations

import random
from typing import Any

import pytest

from peer.log.clock import FakeClock
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.mesh.swim import FRAME_SLACK, MAX_REPORT_BYTES, State, Swim, SwimConfig
from peer.mesh.wire import MAX_RUNNING, check_info, dumps

from .test_swim import CFG, Listener, Net, alive

STEP_S = 0.05


def settle(c: Cluster, seconds: float) -> None:
    for _ in range(round(seconds / STEP_S)):
        c.step(STEP_S)


def report(mid: str, ctr: int, size: int) -> dict[str, Any]:
    return {"t": "r", "i": mid, "n": 1, "c": ctr, "d": dumps({"x": "a" * size}).decode()}


def test_piggyback_fills_a_byte_budget_and_drops_what_no_frame_can_carry() -> None:
    """With frames of 8 KiB, reports of ~3 KB go 2 to a frame (before: all 5, a frame of
    15 KB that was not sent); the least sent first, so each goes in turn; one larger than any
    frame leaves the queue, counted."""
    s = Swim(CFG, "me", 5, Net(), Listener(), random.Random(1), max_frame_bytes=8192)
    clock = FakeClock()
    s.bind("127.0.0.1:1", clock())
    s.apply_updates([alive(f"m{i}", 10 + i) for i in range(5)], clock())
    s.drop_queue()
    s.apply_updates([report(f"m{i}", 1, 3000) for i in range(5)], clock())
    s.apply_updates([report("m0", 2, 9000)], clock())  # (replaces m0's: a newer report)
    seen: list[str] = []
    for _ in range(2):
        ups = s.piggyback()
        assert len(ups) == 2 and len(dumps(ups)) <= 8192 - FRAME_SLACK
        seen += [u["i"] for u in ups]
    assert sorted(seen) == ["m1", "m2", "m3", "m4"]
    assert s.stats.unsendable == 1
    # what the frame's own body takes is left out of the room
    assert len(s.piggyback(used=8192 - FRAME_SLACK - 100)) == 0


def test_a_report_over_the_bound_is_refused_and_counted() -> None:
    """A report longer than MAX_REPORT_BYTES is not taken (nor relayed): counted as a
    dropped update and a large report; one at the bound is taken."""
    listener = Listener()
    s = Swim(CFG, "me", 5, Net(), listener, random.Random(1))
    clock = FakeClock()
    s.bind("127.0.0.1:1", clock())
    s.apply_updates([alive("m1", 11)], clock())
    s.drop_queue()
    big = report("m1", 1, MAX_REPORT_BYTES)
    s.apply_updates([big], clock())
    assert listener.reports == [] and s.stats.large_reports == 1
    assert s.stats.dropped_updates == 1 and s.queued == 0
    fits = report("m1", 2, MAX_REPORT_BYTES - 20)
    assert len(fits["d"]) <= MAX_REPORT_BYTES
    s.apply_updates([fits], clock())
    assert listener.reports == ["m1"]
    # bytes, not characters: 2 bytes each in UTF-8
    s.apply_updates([{**report("m1", 3, 0), "d": "é" * (MAX_REPORT_BYTES // 2 + 1)}], clock())
    assert listener.reports == ["m1"] and s.stats.large_reports == 2


def test_large_reports_of_a_members_identities_do_not_silence_honest_probes() -> None:
    """The reviewer's run, smaller: 6 signed peers with frames of 64 KiB, 2 of them a
    member's identities announcing a fresh report of 40 KB every 50 ms (under the report
    bound). Honest peers' probes and acks still go (they carry what fits): no honest member
    is ever suspected by another (before: frames of two such reports were not sent, and
    honest members suspected each other)."""
    cfg = GossipConfig.local(swim=SwimConfig.local(), max_frame_bytes=64 << 10,
                             max_queue_bytes=64 << 20)
    c = Cluster(6, cfg, seed=2, signed=True)
    settle(c, 2.0)
    honest, bad = c.peers[:4], c.peers[4:]
    ids = {p.gossip.peer_id for p in honest}
    suspected: set[tuple[str, str]] = set()
    for k in range(100):  # 5 s of sim time
        for b in bad:
            b.gossip._local_info = (lambda kk: lambda: {"free_slots": 1, "x": "a" * 40_000,
                                                        "k": kk})(k)
        c.step(STEP_S)
        for p in honest:
            for m in p.gossip.swim.members.values() if p.gossip.swim else ():
                if m.id in ids and m.state != State.ALIVE:
                    suspected.add((p.gossip.peer_id, m.id))
    assert suspected == set()
    assert all("send_large" not in p.gossip._warn._repeats.last_line for p in honest)
    # and the large reports did reach them
    assert all(len(p.gossip.view._infos.get(b.gossip.peer_id, {}).get("x", "")) == 40_000
               for p in honest for b in bad)


def test_a_report_over_the_bound_leaves_its_compaction_floors_out() -> None:
    """Our own report over MAX_REPORT_BYTES (compaction floors of many origins) goes without
    its floors, which peers of this release would refuse it for; the rest of it (runs that
    renew our leases) still reaches them."""
    c = Cluster(3, GossipConfig.local(), seed=4, signed=True)
    floors = {f"{i:020x}": 10_000_000 + i for i in range(3000)}
    p = c.peers[2]
    p.gossip._local_info = lambda: {"free_slots": 1, "running": [["j", "t", 0, 1]],
                                    "cfloor": floors}
    settle(c, 1.0)
    for q in c.peers[:2]:
        info = q.gossip.view._infos.get(p.gossip.peer_id)
        assert info is not None and info["running"] == [["j", "t", 0, 1]]
        assert "cfloor" not in info
        assert q.gossip.stats.swim_large_reports == 0


def test_a_running_list_over_its_bound_is_a_malformed_info() -> None:
    check_info({"running": [["j", "t", i, 1] for i in range(MAX_RUNNING)]})
    with pytest.raises(ValueError, match=r"info\.running holds"):
        check_info({"running": [["j", "t", i, 1] for i in range(MAX_RUNNING + 1)]})


def test_a_join_sync_takes_what_fits_its_frame() -> None:
    """A join sync of members whose reports sum past the frame bound carries every alive
    and the reports that fit, within the frame (before: all of them, a frame that was not
    sent, so the joiner got nothing); the ones left out are counted."""
    s = Swim(CFG, "me", 5, Net(), Listener(), random.Random(1), max_frame_bytes=8192)
    clock = FakeClock()
    s.bind("127.0.0.1:1", clock())
    s.apply_updates([alive(f"m{i}", 10 + i) for i in range(5)], clock())
    s.apply_updates([report(f"m{i}", 1, 3000) for i in range(5)], clock())
    body = s.sync_body(reply=True)
    assert len(dumps(body)) <= 8192 - FRAME_SLACK
    ups = body["m"]
    assert {u["i"] for u in ups if u["t"] == "a"} == {"me", *(f"m{i}" for i in range(5))}
    assert 1 <= sum(u["t"] == "r" for u in ups) < 5
    assert s.stats.sync_left_out == 5 - sum(u["t"] == "r" for u in ups)

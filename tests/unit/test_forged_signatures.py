"""A frame of forged signatures costs a bounded number of Ed25519 verifications: after
MAX_BAD_SIGNATURES failed in one frame, its other SWIM updates and event batches are refused
unchecked (counted), and the next frame is checked anew."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from peer.log import Event, EventType
from peer.log import signing as signing_module
from peer.log.signing import Identity, MemberKeys, peer_id_for, sign_events
from peer.mesh import view as view_module
from peer.mesh.sim import Cluster
from peer.mesh.wire import Kind, encode_event

from .mesh_helpers import frame_to, inject
from .test_swim import settle

FORGED = "00" * 64


class Counting:
    """Wraps a module's `verify`, counting the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
        self.calls = 0
        real = module.verify

        def verify(key: bytes, sig: bytes, msg: bytes) -> bool:
            self.calls += 1
            return bool(real(key, sig, msg))

        monkeypatch.setattr(module, "verify", verify)


def test_a_frame_of_forged_swim_updates_costs_two_verifications(
        monkeypatch: pytest.MonkeyPatch) -> None:
    c = Cluster(2, signed=True, seed=41)
    settle(c, 0.5)
    me, other = c.peers
    oid = other.gossip.peer_id
    s = me.gossip.swim
    assert s is not None and s.members[oid].report is not None
    inc, ctr = s.members[oid].report_ver
    forged = [{"t": "r", "i": oid, "n": inc, "c": ctr + 1 + k, "d": "{}", "g": FORGED}
              for k in range(50)]
    counted = Counting(monkeypatch, view_module)
    inject(c, 0, frame_to(c, Kind.UPDATES, {"m": forged}))
    assert counted.calls == 2  # was 50: one per forged update
    assert s.members[oid].report_ver == (inc, ctr)
    assert me.gossip.stats.swim_unverified == 48
    inject(c, 0, frame_to(c, Kind.UPDATES, {"m": forged[:1]}))  # the next frame: checked
    assert counted.calls == 3
    settle(c, 0.5)  # and the member's own updates still come through
    assert s.members[oid].state.value == "alive"


def _batch(me: Identity, seq: int) -> dict[str, Any]:
    pid = peer_id_for(me.key)
    ev = Event(pid, seq, seq, EventType.CACHE_PUT, {"cache": {f"k{seq}": seq}})
    [b] = sign_events(me, pid, [ev], None)
    return b.to_json()


def test_a_frame_of_forged_event_batches_costs_two_verifications(
        monkeypatch: pytest.MonkeyPatch) -> None:
    me = Identity.generate()
    pid = peer_id_for(me.key)
    keys = MemberKeys()
    good = _batch(me, 1)
    assert keys.accept([], [good]) == [] and not keys.refused.total  # verified: remembered
    forged = [{**_batch(me, 10 + k), "h": os.urandom(32).hex()} for k in range(50)]
    counted = Counting(monkeypatch, signing_module)
    keys.accept([], [*forged, good, _batch(me, 2)])
    assert counted.calls == 2  # was 51: one per distinct batch
    assert keys.refused.by_origin[pid] == {"bad_signature": 2, "unverified": 49}
    # a batch verified before still vouches for its events; the next frame is checked anew
    keys.accept([], [_batch(me, 2)])
    assert counted.calls == 3 and keys.refused.by_origin[pid]["unverified"] == 49


def test_an_honest_frame_after_a_forged_one_is_accepted_whole() -> None:
    me = Identity.generate()
    pid = peer_id_for(me.key)
    keys = MemberKeys()
    keys.accept([], [{**_batch(me, 10 + k), "h": os.urandom(32).hex()} for k in range(5)])
    evs = [Event(pid, seq, seq, EventType.CACHE_PUT, {"cache": {f"k{seq}": seq}})
           for seq in (1, 2, 3)]
    batches = [b.to_json() for b in sign_events(me, pid, evs, None)]
    raw = [json.loads(encode_event(e)) for e in evs]
    assert [e.seq for e in keys.accept(raw, batches)] == [1, 2, 3]

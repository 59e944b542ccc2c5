"""A frame of forged signatures costs a bounded number of Ed25519 verifications: after
MAX_BAD_SIGNATURES failed in one frame, its other SWIM updates and event batches are refused
unchecked (counted), and the next frame is checked anew."""

from __future__ import annotations

import json
import os
import random
from typing import Any

import pytest

from peer.log import Event, EventType
from peer.log import signing as signing_module
from peer.log.signing import Identity, MemberKeys, MeshAuth, peer_id_for, sign_events
from peer.mesh import view as view_module
from peer.mesh.sim import Cluster
from peer.mesh.swim import MAX_FRAME_UPDATES, Sig, State, Swim
from peer.mesh.view import AuthSigner
from peer.mesh.wire import Kind, encode_event

from .mesh_helpers import frame_to, inject
from .test_swim import CFG, Listener, Net, settle

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
              for k in range(MAX_FRAME_UPDATES)]  # (the most a frame is read for)
    counted = Counting(monkeypatch, view_module)
    inject(c, 0, frame_to(c, Kind.UPDATES, {"m": forged}))
    assert counted.calls == 2  # was 48: one per forged update
    assert s.members[oid].report_ver == (inc, ctr)
    assert me.gossip.stats.swim_unverified == MAX_FRAME_UPDATES - 2
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


MESH = "m"
LEGACY = "0123456789abcdef"  # 16 hex digits: a 0.1.0 id, bound to the first key heard


def signer_for(ident: Identity, pid: str) -> AuthSigner:
    ring = MemberKeys()
    ring.keys[pid] = ident.key
    return AuthSigner(MeshAuth(ident, ring, 1), MESH)


def upd(s: AuthSigner, t: str, pid: str, inc: int, **kw: str | int) -> dict[str, object]:
    if t == "a":
        addr = str(kw["addr"])
        body: dict[str, object] = {"t": "a", "i": pid, "a": addr, "n": inc}
        body.update(s.sign(Sig.ALIVE, pid, addr, inc, 0, b""))
    elif t == "r":
        body = {"t": "r", "i": pid, "n": inc, "c": kw["c"], "d": "{}"}
        body.update(s.sign(Sig.REPORT, pid, "", inc, int(kw["c"]), b"{}"))
    else:  # suspect of kw["of"], claimed by pid
        body = {"t": "s", "i": kw["of"], "n": inc, "f": pid}
        body.update(s.sign(Sig.SUSPECT, pid, "", inc, 0, str(kw["of"]).encode()))
    return body


def signed_swim() -> Swim:
    """A member's Swim (a self-certifying id of its own) that checks updates' signatures,
    bound to an address."""
    me = Identity.generate()
    mid = peer_id_for(me.key)
    ring = MemberKeys()
    ring.keys[mid] = me.key
    swim = Swim(CFG, mid, 1 << 16, Net(), Listener(), random.Random(1),
                AuthSigner(MeshAuth(me, ring, 1), MESH))
    swim.bind("127.0.0.1:1", 0.0)
    return swim


def test_an_honest_frame_with_legacy_updates_of_another_key_keeps_its_other_updates() -> None:
    """A 0.1.0 id (16 digits) is bound to the first admitted key each peer heard, so two
    honest peers may hold different keys for it: its updates failing here are no proof of a
    forgery and do not use up the frame's budget (helper-144's finding)."""
    old_key, new_key = Identity.generate(), Identity.generate()
    swim = signed_swim()
    legacy_old, legacy_new = signer_for(old_key, LEGACY), signer_for(new_key, LEGACY)
    x_id = Identity.generate()
    x = peer_id_for(x_id.key)
    # we heard the legacy member under its old key first (e.g. from its batches on disk)
    swim.apply_updates([upd(legacy_old, "a", LEGACY, 1 << 16, addr="127.0.0.1:2"),
                        upd(signer_for(x_id, x), "a", x, 1 << 16, addr="127.0.0.1:3")], 0.0)
    assert swim.members[LEGACY].state is State.ALIVE and swim.members[x].state is State.ALIVE
    # a newcomer's alive, relayed by an honest peer that bound the legacy member's new key,
    # in the same frame as two of the legacy member's updates it verified there
    n_id = Identity.generate()
    n = peer_id_for(n_id.key)
    newcomer = upd(signer_for(n_id, n), "a", n, 1 << 16, addr="127.0.0.1:4")
    frame = [upd(legacy_new, "r", LEGACY, 1 << 16, c=1),
             upd(legacy_new, "s", LEGACY, 1 << 16, of=x),
             newcomer]
    swim.apply_updates(frame, 1.0)
    assert swim.stats.unverified == 0 and n in swim.members

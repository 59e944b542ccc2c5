"""Identities, content hashes, signed batches, admission, signed membership messages and
revocation (peer.log.signing), and signed gossip on the in-memory mesh."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import BanzaiError, DataError, SignedTextTooLong
from peer.log import Event, EventType
from peer.log.lanes import lane
from peer.log.signing import (
    CANONICAL,
    MAX_BATCH,
    MAX_SIGNED_TEXT_BYTES,
    Batch,
    Counters,
    Identity,
    MemberKeys,
    admit_tag,
    decode_events,
    event_hash,
    held_hash,
    membership_message,
    peer_id_for,
    self_certifying,
    sign_events,
)
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.mesh.wire import Kind, encode_event, pack_frames

from .mesh_helpers import SECRET, frame_to, inject

ME = Identity.generate()
ID = peer_id_for(ME.key)
CLAIM = {"job": "j0123456789ab", "task": "t", "split": ["s", 1], "chunk": 0, "attempt": 0}


def ev(seq: int, payload: dict[str, Any] | None = None, origin: str = ID, hlc: int = 0,
       typ: EventType = EventType.CACHE_PUT) -> Event:
    return Event(origin, seq, hlc or seq, typ, payload or {"cache": {f"k{seq}": seq}})


def wire(events: list[Event]) -> tuple[list[Any], list[Any]]:
    """The events and batches of one frame body, as a receiver parses them."""
    frames, _ = pack_frames(events, 1 << 20, 512)
    assert len(frames) == 1
    return ([json.loads(e) for e in frames[0].events],
            [json.loads(b) for b in frames[0].batches])


# -- pure parts ----------------------------------------------------------------------------


def test_the_content_hash_covers_every_field_and_ignores_key_order() -> None:
    base = ev(3, {"cache": {"a": 1, "b": [1, 2]}})
    assert event_hash(base) == event_hash(ev(3, {"cache": {"b": [1, 2], "a": 1}}))
    for other in (ev(4, {"cache": {"a": 1, "b": [1, 2]}}),  # seq
                  ev(3, {"cache": {"a": 1, "b": [1, 2]}}, hlc=99),  # hlc
                  ev(3, {"cache": {"a": 1, "b": [1, 3]}}),  # payload
                  ev(3, {"cache": {"a": 1, "b": [1, 2]}}, origin="x"),  # origin
                  ev(3, {"cids": ["a"]}, typ=EventType.PROVIDE)):  # type
        assert event_hash(other) != event_hash(base)
    assert len(event_hash(base)) == 32


def test_sign_events_makes_one_batch_per_run_of_one_origin() -> None:
    evs = [ev(s) for s in (1, 2, 3, 5, 6)] + [ev(1, origin="other")]
    batches = sign_events(ME, ID, evs, None, max_batch=2)
    runs = sorted((b.origin, b.first, b.count) for b in batches)
    assert runs == [(ID, 1, 2), (ID, 3, 1), (ID, 5, 2), ("other", 1, 1)]
    for e in evs:
        assert e.att is not None and e.att.covers(e.seq)
        assert held_hash(e) == event_hash(e)
    assert {b.signer for b in batches} == {ID}


def test_a_batch_verifies_and_any_subset_of_it_can_be_relayed() -> None:
    evs = [ev(s) for s in range(1, 17)]
    sign_events(ME, ID, evs, None)
    k = MemberKeys()
    raw, batches = wire(evs[5:9])  # a relayer forwards four of the sixteen
    assert len(batches) == 1 and len(bytes.fromhex(batches[0]["h"])) == 16 * 32
    got = k.accept(raw, batches)
    assert [e.id for e in got] == [e.id for e in evs[5:9]]
    assert all(isinstance(e.att, Batch) for e in got)
    assert k.keys[ID] == ME.key and not k.refused.total


def test_events_decoded_beforehand_are_accepted_as_if_decoded_in_accept() -> None:
    """A snapshot's events are decoded in a worker thread (`decode_events`) and handed to
    `accept`: the same events kept, the same refusals counted, the same ones reported
    invalid."""
    evs = [ev(s) for s in range(1, 6)]
    sign_events(ME, ID, evs, None)
    raw, batches = wire(evs)
    del raw[1]["seq"]  # invalid: reported, left out
    raw[3]["payload"]["cache"] = {"k4": 5}  # another content: refused (bad_hash)

    def run(decoded: Any) -> tuple[list[Any], dict[str, int], list[tuple[Any, str]]]:
        k, bad = MemberKeys(), []
        got = k.accept(raw, batches, lambda o, why: bad.append((o, why)), decoded)
        return [(e.id, e.payload, held_hash(e)) for e in got], k.refused.by_origin[ID], bad

    assert run(decode_events(raw)) == run(None)
    assert len(run(None)[0]) == 3 and run(None)[1] == {"bad_hash": 1} and len(run(None)[2]) == 1
    assert decode_events({"not": "a list"}) is None


def _tampered(mutate: Any) -> dict[str, int]:
    evs = [ev(s) for s in range(1, 5)]
    sign_events(ME, ID, evs, None)
    raw, batches = wire(evs)
    mutate(raw, batches)
    k = MemberKeys()
    got = k.accept(raw, batches)
    assert len(got) < 4
    return k.refused.by_origin[ID]


def test_a_tampered_payload_is_refused() -> None:
    def mutate(raw: list[Any], _b: list[Any]) -> None:
        raw[1]["payload"]["cache"]["k2"] = 666
    assert _tampered(mutate) == {"bad_hash": 1}


def test_a_tampered_seq_is_refused() -> None:
    def mutate(raw: list[Any], _b: list[Any]) -> None:
        raw[1]["seq"] = 3
    assert _tampered(mutate) == {"bad_hash": 1}


def test_a_seq_outside_its_batch_is_refused() -> None:
    def mutate(raw: list[Any], _b: list[Any]) -> None:
        raw[3]["seq"] = 9
    assert _tampered(mutate) == {"bad_batch_ref": 1}


def test_a_tampered_hash_list_fails_the_signature() -> None:
    def mutate(_r: list[Any], b: list[Any]) -> None:
        h = bytearray(bytes.fromhex(b[0]["h"]))
        h[40] ^= 1
        b[0]["h"] = h.hex()
    assert _tampered(mutate) == {"bad_signature": 4}


def test_an_event_without_its_batch_is_refused_as_unsigned() -> None:
    def mutate(raw: list[Any], b: list[Any]) -> None:
        b.clear()
        for d in raw:
            d.pop("b")
    assert _tampered(mutate) == {"unsigned": 4}


def test_a_wrong_key_cannot_speak_for_a_bound_or_self_certifying_id() -> None:
    mallory = Identity.generate()
    forged = [ev(1)]  # under ID, signed by mallory
    sign_events(mallory, ID, forged, None)
    k = MemberKeys()
    assert k.accept(*wire(forged)) == []  # ID certifies ME's key only, even heard first
    assert k.refused.by_origin[ID] == {"key_conflict": 1}
    legacy = "0123456789abcdef"  # an id of 0.1.0: the first admitted key heard is bound
    assert not self_certifying(legacy) and self_certifying(ID)
    assert k.bind(legacy, ME.key, None) is None
    assert k.bind(legacy, mallory.key, None) == "key_conflict"
    assert k.keys[legacy] == ME.key
    assert k.key_conflicts.by_origin == {ID: {"other_key": 1}, legacy: {"other_key": 1}}


def test_admission_needs_a_tag_made_with_the_mesh_secret() -> None:
    k = MemberKeys([SECRET])
    assert k.bind(ID, ME.key, None) == "not_admitted"
    assert k.bind(ID, ME.key, admit_tag(b"x" * 32, ID, ME.key)) == "not_admitted"
    assert k.bind(ID, ME.key, admit_tag(SECRET, peer_id_for(b"y" * 32), ME.key)) == "not_admitted"
    assert k.bind(ID, ME.key, admit_tag(SECRET, ID, ME.key)) is None
    rotating = MemberKeys([b"n" * 32, SECRET])  # during a rotation both secrets admit
    assert rotating.bind(ID, ME.key, admit_tag(SECRET, ID, ME.key)) is None


def test_legacy_events_are_accepted_only_when_attested_for_an_unsigned_origin() -> None:
    old = "0123456789abcdef"  # a 0.1.0 peer that never signed anything
    evs = [ev(1, origin=old), ev(2, origin=old)]
    sign_events(ME, ID, evs, None)  # attested by ID, an admitted member
    raw, batches = wire(evs)
    assert raw[0]["bs"] == ID and batches[0]["s"] == ID
    assert [e.id for e in MemberKeys().accept(raw, batches)] == [(old, 1), (old, 2)]
    k = MemberKeys()
    k.keys[old] = Identity.generate().key  # the origin signs for itself now
    assert k.accept(raw, batches) == []
    assert k.refused.by_origin[old] == {"attested_signed_origin": 2}


def test_no_member_attests_events_of_a_self_certifying_origin_even_before_its_key_is_heard(
        ) -> None:
    """Only an id of 0.1.0 may be attested: a member that attested events of an upgraded
    origin not heard yet (its key not bound) forged them on the peers that took them, and the
    conflict rule could keep the forgery for good (the smaller content hash wins)."""
    other = Identity.generate()
    origin = peer_id_for(other.key)  # a member of this release this peer has not heard yet
    forged = [ev(1, origin=origin)]
    sign_events(ME, ID, forged, None)  # attested by ID, an admitted member
    k = MemberKeys()
    assert origin not in k.keys
    assert k.accept(*wire(forged)) == []
    assert k.refused.by_origin[origin] == {"attested_signed_origin": 1}
    real = [ev(1, origin=origin)]
    sign_events(other, origin, real, None)  # its own signature still counts
    assert [e.id for e in k.accept(*wire(real))] == [(origin, 1)]


def test_no_member_attests_events_of_an_origin_that_is_no_peers_id() -> None:
    """Attestation is for a 0.1.0 id (16 hex digits) alone: a member that attested events
    of any other origin (no key bound, not self-certifying) spoke for a peer it made up,
    events nobody answers for (docs/architecture.md, Events of 0.1.0)."""
    for origin in ("P/j0", "0123456789abcdeF", "0123456789abcde", "not-a-peer"):
        made_up = [ev(1, origin=origin)]
        sign_events(ME, ID, made_up, None)  # attested by ID, an admitted member
        k = MemberKeys()
        assert k.accept(*wire(made_up)) == []
        assert k.refused.by_origin[origin] == {"attested_other_origin": 1}


JOB = "j0123456789ab"


def test_a_lane_is_signed_by_its_peer_only() -> None:
    """A lane "<P>/<job>" (peer.log.lanes) passes only with P's own signature: an admitted
    member Q that attests P's lane is refused as `lane_signer` (checked before the
    attestation rules: the reason is the specific one); P's own passes."""
    q = Identity.generate()
    q_id = peer_id_for(q.key)
    mine = lane(ID, JOB)
    forged = [ev(1, origin=mine, typ=EventType.CLAIM, payload=CLAIM)]
    sign_events(q, q_id, forged, None)  # Q attests P's lane
    k = MemberKeys()
    assert k.accept(*wire(forged)) == []
    assert k.refused.by_origin[mine] == {"lane_signer": 1}
    assert q_id not in k.keys  # refused before Q's key was bound by it
    own = [ev(1, origin=mine, typ=EventType.CLAIM, payload=CLAIM)]
    batches = sign_events(ME, ID, own, None)
    assert batches[0].signer == ID and k.check_batch(batches[0]) is None
    assert [e.id for e in k.accept(*wire(own))] == [(mine, 1)]
    # a key bound to the lane's name itself (it signs as "itself") speaks for no lane
    named = [ev(2, origin=mine, typ=EventType.CLAIM, payload=CLAIM)]
    sign_events(q, mine, named, None)
    assert k.accept(*wire(named)) == [] and mine not in k.keys
    assert k.refused.by_origin[mine] == {"lane_signer": 2}
    # an 0.1.0 id's lane: its peer still signs it alone
    old = "0123456789abcdef"
    attested = [ev(1, origin=lane(old, JOB), typ=EventType.CLAIM, payload=CLAIM)]
    sign_events(ME, ID, attested, None)
    assert k.accept(*wire(attested)) == []
    assert k.refused.by_origin[lane(old, JOB)] == {"lane_signer": 1}
    # and a revoked peer signs no lane of its own past its REVOKE's `after` (its own events
    # up to there stay good, its lanes' as its stream's: test_revoked_peers_lanes_...)
    (b,) = sign_events(ME, ID, [ev(6, origin=mine, typ=EventType.CLAIM, payload=CLAIM)], None)
    assert MemberKeys(revoked=lambda p: 5 if p == ID else None).check_batch(b) == "revoked"


def _counting(monkeypatch: Any, name: str) -> list[int]:
    """Count the calls of Batch.<name> (the per-candidate work of matching an event)."""
    calls = [0]
    orig = getattr(Batch, name)

    def counted(self: Batch, seq: int) -> Any:
        calls[0] += 1
        return orig(self, seq)
    monkeypatch.setattr(Batch, name, counted)
    return calls


def test_a_frame_repeating_one_batch_is_checked_once_and_matched_in_linear_work(
        monkeypatch: Any) -> None:
    """A relayer repeats one verified batch n times next to n copies of its event: each
    candidate was matched against each event (n^2 hash lookups) and a refused batch was
    verified (and counted) n times."""
    import peer.log.signing as signing
    verified = [0]
    orig_verify = signing.verify

    def counted_verify(key: bytes, sig: bytes, msg: bytes) -> bool:
        verified[0] += 1
        return orig_verify(key, sig, msg)
    monkeypatch.setattr(signing, "verify", counted_verify)
    lookups = _counting(monkeypatch, "hash_at")
    e = ev(1)
    sign_events(ME, ID, [e], None)
    raw, batches = wire([e])
    n = 500
    k = MemberKeys()
    got = k.accept(raw * n, batches * n)
    assert len(got) == n and not k.refused.total
    assert verified[0] == 1 and lookups[0] <= 2 * n  # not n^2
    bad = [{**batches[0], "g": "00" * 64}]
    verified[0] = 0
    assert MemberKeys().accept(raw * n, bad * n) == []
    assert verified[0] == 1


def test_events_of_many_batches_from_one_seq_are_matched_in_linear_work(
        monkeypatch: Any) -> None:
    """An origin signs n contents from one seq (equivocation): each event is checked against
    its own batch, found by its hash, not by trying each of the n."""
    n = 300
    evs = [ev(1, {"cache": {"k": i}}) for i in range(n)]
    for e in evs:
        sign_events(ME, ID, [e], None)
    raw = [json.loads(x) for x in map(encode_event, evs)]
    batches = [e.att.to_json() for e in evs if e.att is not None]
    lookups = _counting(monkeypatch, "hash_at")
    k = MemberKeys()
    got = k.accept(raw, batches)
    assert [e.payload for e in got] == [e.payload for e in evs] and not k.refused.total
    assert all(e.att == f.att for e, f in zip(got, evs, strict=True))  # its own batch
    assert lookups[0] <= 3 * n  # one per hash held, one per event checked; not n^2


def test_membership_messages_are_refused_when_replayed_or_not_newer() -> None:
    k = MemberKeys()

    def msg(inc: int, ctr: int, body: bytes = b"{}", reply_to: str = "127.0.0.1:1",
            key: Identity = ME) -> str | None:
        m = membership_message(Kind.HEARTBEAT, "mesh", ID, reply_to, inc, ctr, body)
        return k.check_message(ID, key.key, None, inc, ctr, key.sign(m), m)

    assert msg(1, 1) is None
    assert msg(1, 1) == "replayed"  # the same message again
    assert msg(1, 2) is None
    assert msg(0, 99) == "replayed"  # an older incarnation (a dead run of the peer)
    assert msg(2, 1) is None  # the peer restarted: a new incarnation starts again at 1
    assert msg(1, 3) == "replayed"
    m = membership_message(Kind.HEARTBEAT, "mesh", ID, "127.0.0.1:1", 2, 2, b"{}")
    forged_reply_to = membership_message(Kind.HEARTBEAT, "mesh", ID, "10.0.0.66:1", 2, 2, b"{}")
    assert k.check_message(ID, ME.key, None, 2, 2, ME.sign(m), forged_reply_to) == "bad_signature"
    assert msg(2, 3, key=Identity.generate()) == "key_conflict"


def test_revoked_members_events_past_the_revocation_and_messages_are_refused() -> None:
    revoked: dict[str, int] = {}
    k = MemberKeys(revoked=revoked.get)
    evs = [ev(s) for s in range(1, 5)]
    sign_events(ME, ID, evs, None)
    revoked[ID] = 2
    got = k.accept(*wire(evs))
    assert [e.seq for e in got] == [1, 2]  # held by the revoker: kept everywhere
    assert k.refused.by_origin[ID] == {"revoked": 2}
    later = [ev(s) for s in range(5, 7)]
    sign_events(ME, ID, later, None)
    assert k.accept(*wire(later)) == []
    assert k.refused.by_origin[ID] == {"revoked": 4}
    m = membership_message(Kind.HEARTBEAT, "mesh", ID, "", 1, 1, b"{}")
    assert k.check_message(ID, ME.key, None, 1, 1, ME.sign(m), m) == "revoked"


def test_revoked_peers_lanes_are_its_own_streams_good_up_to_after() -> None:
    """A revoked peer's lanes (peer.log.lanes) are its own streams, as its mesh stream: their
    events up to the REVOKE's `after` stay good (members that held them and members that
    catch up agree), past it they are refused, and another's attestation of them neither."""
    revoked: dict[str, int] = {}
    k = MemberKeys(revoked=revoked.get)
    mine = lane(ID, JOB)
    evs = [ev(s, origin=mine, typ=EventType.CLAIM, payload=CLAIM) for s in range(1, 5)]
    sign_events(ME, ID, evs, None)
    revoked[ID] = 2
    got = k.accept(*wire(evs))
    assert [e.id for e in got] == [(mine, 1), (mine, 2)]
    assert k.refused.by_origin[mine] == {"revoked": 2}
    q = Identity.generate()  # a revoked member attests no other's lane
    q_lane = lane(peer_id_for(q.key), JOB)
    (b,) = sign_events(ME, ID, [ev(1, origin=q_lane, typ=EventType.CLAIM, payload=CLAIM)],
                       None)
    assert k.check_batch(b) == "revoked"


def test_a_revoked_peers_lane_named_by_its_revoke_is_good_up_to_its_own_bound() -> None:
    """A REVOKE's `lanes_after` (LANES_FEATURE) bounds each lane it names on its own: a
    lane's seqs run far below its peer's mesh seq, so `after` would let a holder of the
    revoked key add lane events up to it. A lane it does not name: `after`, as before."""
    revoked: dict[str, int] = {}
    lanes: dict[tuple[str, str], int] = {}
    k = MemberKeys(revoked=revoked.get,
                   revoked_lane=lambda p, j: None if p not in revoked
                   else lanes.get((p, j), revoked[p]))
    named, other = lane(ID, JOB), lane(ID, "j0000000000a1")
    evs = {o: [ev(s, origin=o, typ=EventType.CLAIM, payload=CLAIM) for s in range(1, 7)]
           for o in (named, other)}
    for run in evs.values():
        sign_events(ME, ID, run, None)
    revoked[ID] = 5  # its mesh stream's head
    lanes[(ID, JOB)] = 2  # the revoker's head of its lane of JOB
    assert k.accepted_upto(ID) == 5
    assert (k.accepted_upto(named), k.accepted_upto(other)) == (2, 5)
    assert [e.seq for e in k.accept(*wire(evs[named]))] == [1, 2]  # at or below: kept
    assert k.refused.by_origin[named] == {"revoked": 4}
    assert [e.seq for e in k.accept(*wire(evs[other]))] == [1, 2, 3, 4, 5]
    (b,) = sign_events(ME, ID, [ev(3, origin=named, typ=EventType.CLAIM, payload=CLAIM)], None)
    assert k.check_batch(b) == "revoked"  # a batch from above the bound
    assert MemberKeys(revoked=revoked.get).accepted_upto(named) == 5  # no lane bounds: `after`
    assert MemberKeys().accepted_upto(named) is None


def test_refusal_counters_are_bounded_by_origin() -> None:
    c = Counters(max_origins=3)
    for i in range(10):
        c.add(f"o{i}", "bad_hash")
    assert len(c.by_origin) == 4 and c.by_origin[Counters.OTHER] == {"bad_hash": 7}
    assert c.total == {"bad_hash": 10}


def test_the_identity_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    a = Identity.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path).key == a.key
    assert len(peer_id_for(a.key)) == 20


@pytest.mark.parametrize("raw", [b"", b"\x01" * 31, b"\x01" * 40])
def test_an_identity_file_that_is_not_a_key_is_an_error_naming_it(tmp_path: Path,
                                                                   raw: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(raw)  # (empty: what a crash in its creation could leave, before)
    path.chmod(0o600)
    with pytest.raises(DataError, match=re.escape(f"{path}: ") + r".*bytes, not an Ed25519"):
        Identity.load(path)
    assert path.read_bytes() == raw  # never replaced: the peer's id is bound to its key


def test_an_identity_file_others_may_read_is_made_private(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "identity.key"
    a = Identity.load(path)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        assert Identity.load(path).key == a.key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"{path} is readable by other users (mode 644)" in caplog.text
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]  # no temporary left


def test_an_identity_is_made_where_hard_links_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vfat, some FUSE mounts: no os.link; the key is then made in place, exclusively."""

    def refuse(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refuse)
    path = tmp_path / "identity.key"
    a = Identity.load(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and Identity.load(path).key == a.key
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=20)


@given(_JSON)
def test_the_canonical_encoder_is_json_dumps_byte_for_byte(value: object) -> None:
    """Event hashes must not change across releases: one encoder reused is dumps' output."""
    assert CANONICAL.encode(value) == json.dumps(value, separators=(",", ":"), sort_keys=True)


def test_batches_are_split_at_max_batch() -> None:
    evs = [ev(s) for s in range(1, MAX_BATCH + 2)]
    assert [b.count for b in sign_events(ME, ID, evs, None)] == [MAX_BATCH, 1]


# -- signed gossip on the in-memory mesh ---------------------------------------------------


def test_signed_events_replicate_and_heartbeats_bind_keys() -> None:
    c = Cluster(3, GossipConfig.local(secret=SECRET), signed=True)
    for p in c.peers:
        p.gossip.broadcast([p.sink.emit() for _ in range(3)])
    assert c.run_until_converged(100) is not None
    c.step()
    for p in c.peers:
        assert len(p.sink.ids()) == 9
        assert p.gossip.stats.events_refused == 0 and p.gossip.stats.dropped_bad_signature == 0
        assert set(p.gossip.live_peers()) == {q.gossip.peer_id for q in c.peers} - {
            p.gossip.peer_id}


def test_an_event_under_another_members_id_is_rejected_by_every_peer() -> None:
    c = Cluster(3, GossipConfig.local(secret=SECRET), signed=True)
    c.step()
    victim, mallory = c.peers[0], c.peers[2]
    assert mallory.gossip.auth is not None
    forged = Event(victim.gossip.peer_id, 1, 10**6, EventType.JOB_CANCELLED,
                   {"job": "j", "reason": "forged"})
    sign_events(mallory.gossip.auth.identity, victim.gossip.peer_id, [forged],
                mallory.gossip.auth.admit)
    mallory.gossip.broadcast([forged])
    c.net.pump()
    for _ in range(20):
        c.step()
    for p in c.peers[:2]:
        assert ("j" not in p.sink.state.cancelled), p.gossip.peer_id
        assert p.gossip.stats.events_refused >= 1
    # the victim's own events still flow (mallory never held the forged one as the victim's)
    victim.gossip.broadcast([victim.sink.emit()])
    assert c.run_until_converged(50) is not None


def test_forged_and_replayed_heartbeats_are_dropped() -> None:
    c = Cluster(2, GossipConfig.local(swim=None), signed=True)  # heartbeats: legacy peers
    c.step()
    a, b = c.peers
    raw: list[bytes] = []
    t = c.net._nodes[b.addr]
    handler = t.handler
    assert handler is not None

    def record(frame: bytes) -> None:
        raw.append(frame)
        handler(frame)
    t.handler = record
    c.step()
    hb = next(f for f in raw if f[3] == Kind.HEARTBEAT)
    inject(c, 1, hb)  # a's last heartbeat, replayed
    assert b.gossip.stats.dropped_replayed == 1
    # a heartbeat under a's id with the attacker's reply-to and no valid signature
    inject(c, 1, frame_to(c, Kind.HEARTBEAT, {"info": {"free_slots": 9}},
                          sender=a.gossip.peer_id, reply_to="127.0.0.1:66"))
    assert b.gossip.stats.dropped_unsigned == 1
    body = json.loads(hb[hb.index(b'{"info"'):])
    body["info"]["free_slots"] = 9
    body["auth"]["ctr"] += 100
    inject(c, 1, frame_to(c, Kind.HEARTBEAT, body, sender=a.gossip.peer_id,
                          reply_to=a.addr))
    assert b.gossip.stats.dropped_bad_signature == 1
    assert b.gossip.live_peers()[a.gossip.peer_id]["gossip"] == a.addr
    assert b.gossip.live_peers()[a.gossip.peer_id]["free_slots"] == 1


def test_frames_carry_each_batch_once_and_again_in_the_next_frame() -> None:
    evs = [ev(s) for s in range(1, 11)]
    sign_events(ME, ID, evs, None, max_batch=6)  # two batches: seqs 1-6 and 7-10
    frames, too_large = pack_frames(evs, 1 << 20, 4)  # frames of 4 events
    assert not too_large
    firsts = [[json.loads(b)["f"] for b in f.batches] for f in frames]
    assert firsts == [[1], [1, 7], [7]]
    k = MemberKeys()
    got = [e for f in frames for e in k.accept([json.loads(x) for x in f.events],
                                               [json.loads(x) for x in f.batches])]
    assert [e.seq for e in got] == list(range(1, 11))


def test_verify_makes_a_key_object_once_per_key_and_still_checks_each_signature() -> None:
    from peer.log.signing import public_key, verify

    me, other = Identity.generate(), Identity.generate()
    public_key.cache_clear()
    sig = me.sign(b"msg")
    assert verify(me.key, sig, b"msg")
    assert not verify(me.key, sig, b"other msg")
    assert not verify(other.key, sig, b"msg")
    assert not verify(b"short", sig, b"msg")  # a malformed key is refused, not cached
    info = public_key.cache_info()
    assert (info.misses, info.hits, info.currsize) == (3, 1, 2)


def test_a_signed_text_past_its_length_prefix_is_bad_input_naming_the_bound() -> None:
    """It raised struct.error (no ValueError: code dropping malformed input let it through)."""
    key = Identity.generate().key
    longest = "é" * (MAX_SIGNED_TEXT_BYTES // 2) + "a"  # (its UTF-8 bytes are counted)
    assert len(longest.encode()) == MAX_SIGNED_TEXT_BYTES
    admit_tag(b"s", longest, key)
    membership_message(1, "m", longest, longest, 1, 1, b"")
    for make in (lambda t: admit_tag(b"s", t, key),
                 lambda t: membership_message(1, "m", "a", t, 1, 1, b"")):
        with pytest.raises(SignedTextTooLong, match=f"at most {MAX_SIGNED_TEXT_BYTES} may be "
                           "signed") as err:
            make(longest + "a")
        assert isinstance(err.value, ValueError) and isinstance(err.value, BanzaiError)


def test_a_swim_update_of_a_member_id_past_the_bound_is_dropped_and_the_frame_goes_on() -> None:
    """A frame (up to max_frame_bytes, 16 MiB) may carry such an id: struct.error left the
    frame's updates unapplied and was logged as a merge error, with its traceback."""
    from .test_forged_signatures import signed_swim, signer_for, upd

    swim = signed_swim()
    x_id = Identity.generate()
    x = peer_id_for(x_id.key)
    honest = upd(signer_for(x_id, x), "a", x, 1 << 16, addr="127.0.0.1:3")
    long_id = "a" * (MAX_SIGNED_TEXT_BYTES + 1)
    forged = {**honest, "i": long_id}
    swim.apply_updates([forged, honest], 0.0)
    assert swim.stats.dropped_updates == 1 and x in swim.members and long_id not in swim.members


def test_a_validly_signed_swim_update_of_a_member_id_past_the_frame_bound_is_dropped() -> None:
    """A member id is at most MAX_MEMBER_ID_BYTES (a frame header's bound) wherever it is
    sent: an admitted signer's update naming itself by a longer id was taken as a member."""
    from peer.mesh.wire import MAX_MEMBER_ID_BYTES

    from .test_forged_signatures import signed_swim, signer_for, upd

    swim = signed_swim()
    ids = {n: "b" * n for n in (MAX_MEMBER_ID_BYTES, MAX_MEMBER_ID_BYTES + 1)}
    for n, long_id in ids.items():
        swim.apply_updates([upd(signer_for(Identity.generate(), long_id), "a", long_id,
                                1 << 16, addr=f"127.0.0.1:{n}")], 0.0)
    assert ids[MAX_MEMBER_ID_BYTES] in swim.members  # (the bound itself is taken)
    assert ids[MAX_MEMBER_ID_BYTES + 1] not in swim.members
    assert swim.stats.dropped_updates == 1

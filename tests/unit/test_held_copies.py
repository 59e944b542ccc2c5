"""Received copies of events held already (session 51, issue 12): `MemberKeys.accept` leaves
out, undecoded and unhashed, an event whose verified batch vouches for a content hash the sink
would drop unchanged (`holds`: `Node.drops_copy`, the very content held in memory, or an id
that left memory for good); a rival content for a held id is decoded and returned as ever,
for the conflict rule. On the in-memory mesh a frame re-sending held events is counted as
received and merges none of them."""

from __future__ import annotations

import json
from typing import Any

from peer.log import Event, EventType
from peer.log.signing import Identity, MemberKeys, held_hash, peer_id_for, sign_events
from peer.mesh.gossip import GossipConfig
from peer.mesh.sim import Cluster
from peer.mesh.wire import Kind, encode_event, pack_frames
from peer.node import Node

from .mesh_helpers import SECRET, frame_to, inject

ME = Identity.generate()
ID = peer_id_for(ME.key)


def ev(seq: int, value: int = 0) -> Event:
    return Event(ID, seq, seq, EventType.CACHE_PUT, {"cache": {f"k{seq}": value or seq}})


def wire(events: list[Event]) -> tuple[list[Any], list[Any]]:
    frames, _ = pack_frames(events, 1 << 20, 512)
    assert len(frames) == 1
    return ([json.loads(e) for e in frames[0].events],
            [json.loads(b) for b in frames[0].batches])


def holding(events: list[Event]) -> Any:
    """A sink's `drops_copy` over `events` held in memory (nothing compacted)."""
    held = {e.id: held_hash(e) for e in events}
    return lambda origin, seq, h: held.get((origin, seq)) == h


def test_copies_of_held_events_are_left_out_undecoded() -> None:
    evs = [ev(s) for s in range(1, 17)]
    sign_events(ME, ID, evs, None)
    raw, batches = wire(evs)
    raw[2]["payload"] = "not a payload"  # a held one's copy: not even decoded
    k = MemberKeys()
    got = k.accept(raw, batches, holds=holding(evs[:12]))
    assert [e.seq for e in got] == list(range(13, 17))
    assert k.duplicates == 12 and not k.refused.total
    k2 = MemberKeys()  # without `holds`: every event decoded and checked, as before
    assert len(k2.accept(raw, batches, lambda _o, _w: None)) == 15 and k2.duplicates == 0


def test_a_rival_content_for_a_held_id_is_decoded_and_returned() -> None:
    mine = [ev(1), ev(2)]
    sign_events(ME, ID, mine, None)
    rival = [ev(1, value=99)]  # the same origin signed another content at seq 1
    sign_events(ME, ID, rival, None)
    raw, batches = wire(rival)
    k = MemberKeys()
    got = k.accept(raw, batches, holds=holding(mine))
    assert [(e.seq, e.payload) for e in got] == [(1, {"cache": {"k1": 99}})]
    assert k.duplicates == 0 and held_hash(got[0]) != held_hash(mine[0])


def test_a_tampered_copy_of_an_event_not_held_is_still_refused() -> None:
    evs = [ev(s) for s in range(1, 4)]
    sign_events(ME, ID, evs, None)
    raw, batches = wire(evs)
    raw[2]["payload"]["cache"]["k3"] = 666
    k = MemberKeys()
    got = k.accept(raw, batches, holds=holding(evs[:1]))
    assert [e.seq for e in got] == [2]
    assert k.duplicates == 1 and k.refused.by_origin[ID] == {"bad_hash": 1}


def test_a_frame_of_held_events_is_counted_and_merges_nothing() -> None:
    c = Cluster(2, GossipConfig.local(secret=SECRET), signed=True)
    a, b = c.peers
    made = [a.sink.emit() for _ in range(5)]
    a.gossip.broadcast(made)
    assert c.run_until_converged(100) is not None
    assert all(b.sink.state.events.get(e.id) is not None for e in made)
    merged: list[int] = []
    inner = b.sink.merge
    b.sink.merge = lambda events: merged.append(len(events)) or inner(events)  # type: ignore
    before_in, before_new = b.gossip.stats.events_in, b.gossip.stats.events_new
    frames, _ = pack_frames(made, 1 << 20, 512)
    body = {"events": [json.loads(t) for t in frames[0].events],
            "batches": [json.loads(t) for t in frames[0].batches], "ttl": 0}
    inject(c, 1, frame_to(c, Kind.EVENTS, body, sender=a.gossip.peer_id, secret=SECRET))
    assert b.gossip.stats.events_in - before_in == 5
    assert b.gossip.stats.events_new == before_new and merged == []
    assert [json.loads(encode_event(e)) for e in made] == body["events"]


def test_what_a_node_drops_unchanged(served_node: tuple[Any, Node]) -> None:
    """Node.drops_copy answers as Node.merge treats a copy: the same signed content held in
    memory, or an id below a head that left memory (compacted), is dropped; another content
    held, an id not held, or a gone job's straggler kept aside (its rival is compared) is not."""
    _, node = served_node
    evs = [ev(s) for s in (1, 2)]
    sign_events(ME, ID, evs, None)
    assert node.merge(evs) == evs
    h1 = held_hash(evs[0])
    assert node.drops_copy(ID, 1, h1)
    assert not node.drops_copy(ID, 1, held_hash(evs[1]))  # a rival content for seq 1
    assert not node.drops_copy(ID, 3, h1)  # not held
    del node.state.events[(ID, 2)]  # left memory below the head: merge drops any content
    assert node.drops_copy(ID, 2, h1)
    assert node.merge([evs[1]]) == []
    node.state._gone_recent[(ID, 2)] = evs[1]  # kept aside: merge compares a copy's content
    assert not node.drops_copy(ID, 2, held_hash(evs[1]))

"""Deterministic gossip simulation: fake clock, in-memory sinks, a cluster on a MemoryNetwork.

Used by the unit tests and by benchmark scripts (`simulate`). Single-threaded, no
sockets, no sleeps: time moves only when `FakeClock.advance` is called.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from peer.log import LANES_FEATURE, Event, EventType, MeshState
from peer.log.clock import HLC, FakeClock
from peer.log.contents import wins
from peer.log.door import Door, DoorConfig
from peer.log.lanes import member_jobs, shared_jobs
from peer.log.signing import (
    Identity,
    MemberKeys,
    MeshAuth,
    admit_tag,
    held_hash,
    peer_id_for,
    sign_events,
)
from peer.mesh.antientropy import FIXNONCE_FEATURE
from peer.mesh.gossip import Gossip, GossipConfig
from peer.mesh.swim import IncarnationStore
from peer.mesh.transport import MemoryNetwork


class MemorySink:
    """An EventSink and ContentSink over peer.log.MeshState, serving its heads and events as a
    node does; two contents for one (origin, seq) settle by the conflict rule. With `lanes`
    (LANES_FEATURE) also a LaneSink, and received events pass the door (peer.log.door) with
    its `member_of` read from the state: a lane event of a job we are no member of is
    refused (counted in `door.refused`); without, every event is folded as it comes."""

    def __init__(self, peer_id: str = "", auth: MeshAuth | None = None, *,
                 lanes: bool = False) -> None:
        self.peer_id = peer_id
        self.auth = auth  # set: local events are signed (one batch each)
        self.state = MeshState(lanes_on=lanes)
        self._hlc = 0
        self.refusals: list[tuple[Any, str]] = []
        self.replaced = 0  # contents replaced by the conflict rule
        # Compaction floors, as a node's (origin -> highest seq dropped, the last raised
        # last; told to an asker behind them), and the members' floors heard above our heads
        # (a node's catch-up would ask those members for a snapshot)
        self.floors: dict[str, int] = {}
        self.behind_on: list[tuple[str, dict[str, int]]] = []
        # (the door's checks read no store: it only admits here)
        self.door = Door(DoorConfig(), HLC(), cast(Any, None), member_of=self._member_of
                         ) if lanes else None

    def _member_of(self, job: str) -> bool:
        return self.peer_id in self.state.members_of.get(job, ())

    # -- LaneSink (lanes on) --
    def lane_jobs(self) -> list[str]:
        return member_jobs(self.state.members_of, self.state.ended, self.peer_id)

    def shared(self, jobs: Iterable[str], peer: str) -> list[str]:
        return shared_jobs(self.state.members_of, jobs, self.peer_id, peer)

    def job_members(self, job: str) -> Collection[str]:
        return self.state.members_of.get(job, ())

    def lane_heads(self, jobs: Collection[str]) -> Mapping[str, int]:
        return self.state.lane_heads(jobs)

    def lane_events_after(self, vv: Mapping[str, int], limit: int,
                          jobs: Collection[str]) -> list[Event]:
        return self.state.events_after(vv, limit, jobs)

    def lane_content_sum(self, jobs: Collection[str]) -> str | None:
        return self.state.content_sum(jobs)

    def lane_content_digests(self, jobs: Collection[str]) -> Mapping[str, str]:
        return self.state.content_digests(jobs)

    def lane_block_digests(self, origin: str, jobs: Collection[str]) -> Mapping[int, str]:
        return self.state.block_digests(origin, jobs)

    def lane_block_sizes(self, origin: str, jobs: Collection[str]) -> Mapping[int, int]:
        return self.state.block_sizes(origin, jobs)

    def lane_events_in(self, origin: str, blocks: Iterable[int],
                       jobs: Collection[str]) -> list[Event]:
        return self.state.events_in(origin, blocks, jobs)

    def refused(self, origin: Any, reason: str) -> None:
        self.refusals.append((origin, reason))

    def heads(self) -> Mapping[str, int]:
        return self.state.mesh_heads  # (a node's: lanes are not the mesh's)

    def events_after(self, vv: Mapping[str, int], limit: int) -> list[Event]:
        return self.state.events_after(vv, limit)  # within our heads first, as a node serves

    # -- FloorSink --
    def floors_above(self, vv: Mapping[str, int], limit: int) -> Mapping[str, int]:
        above = [(o, q) for o, q in reversed(self.floors.items()) if o in vv and vv[o] < q]
        return dict(above[:limit])

    def floors_heard(self, peer_id: str, floors: Mapping[str, int]) -> None:
        heads = self.state.heads
        if any(heads.get(o, 0) < q and o in heads for o, q in floors.items()):
            self.behind_on.append((peer_id, dict(floors)))

    def content_sum(self) -> str | None:
        return self.state.content_sum()

    def content_digests(self) -> Mapping[str, str]:
        return self.state.content_digests()

    def block_digests(self, origin: str) -> Mapping[int, str]:
        return self.state.block_digests(origin)

    def block_sizes(self, origin: str) -> Mapping[int, int]:
        return self.state.block_sizes(origin)

    def events_in(self, origin: str, blocks: Iterable[int]) -> list[Event]:
        return self.state.events_in(origin, blocks)

    def contents(self) -> dict[tuple[str, int], bytes]:
        """(origin, seq) -> the content hash held."""
        return {i: held_hash(e) for i, e in self.state.events.items()}

    def drops_copy(self, origin: str, seq: int, h: bytes) -> bool:
        """As a node's (`MeshState.drops_copy`), for this sink's `merge`."""
        return self.state.drops_copy(origin, seq, h)

    def merge(self, events: Sequence[Event]) -> list[Event]:
        new = []
        if self.door is not None:
            events = self.door.admit(events)
        for e in events:
            held = self.state.events.get(e.id)
            if held is None:
                if self.state.apply(e):
                    new.append(e)
            elif held_hash(held) != held_hash(e) and wins(e, held):
                if not self.state.replace(e):
                    self.state.refold()
                self.replaced += 1
        for e in new:
            self._hlc = max(self._hlc, e.hlc)
        return new

    def emit(self, payload: dict[str, Any] | None = None,
             typ: EventType = EventType.CACHE_PUT) -> Event:
        """Append a local event (default: a CACHE_PUT with a unique key)."""
        seq = self.state.heads.get(self.peer_id, 0) + 1
        self._hlc += 1
        ev = Event(self.peer_id, seq, self._hlc, typ,
                   payload if payload is not None else {"cache": {f"{self.peer_id}/{seq}": seq}})
        if self.auth is not None:
            sign_events(self.auth.identity, self.peer_id, [ev], self.auth.admit)
        self.merge([ev])
        return ev

    def ids(self) -> frozenset[tuple[str, int]]:
        return frozenset(self.state.events)


@dataclass
class RecordingMembers:
    """A MemberSink that remembers every member's last heartbeat or report, until gossip
    forgets the member."""

    heard_from: dict[str, dict[str, Any]] = field(default_factory=dict)
    count: int = 0

    def heard(self, peer_id: str, info: Mapping[str, Any]) -> None:
        self.heard_from[peer_id] = dict(info)
        self.count += 1

    def forgot(self, peer_id: str) -> None:
        """Gossip holds nothing of `peer_id` any more (as `Node.forgot`)."""
        self.heard_from.pop(peer_id, None)


@dataclass
class SimPeer:
    gossip: Gossip
    sink: MemorySink
    members: RecordingMembers

    @property
    def addr(self) -> str:
        return self.gossip.address


class Cluster:
    """n peers on one MemoryNetwork sharing a FakeClock; each knows every address. With
    `signed`, each peer has an identity (its id is the one its key certifies), signs its
    events and heartbeats and checks everyone else's (admitted by `cfg.secret` if set). With
    `lanes`, each peer announces LANES_FEATURE and holds lanes (MemorySink's `lanes`); peer
    ids are then 16 hex digits (a lane's peer is one)."""

    def __init__(self, n: int, cfg: GossipConfig | None = None, *, net: MemoryNetwork | None = None,
                 seed: int = 0, connect: bool = True, signed: bool = False,
                 lanes: bool = False) -> None:
        self.signed = signed
        self.lanes = lanes
        self.cfg = cfg or GossipConfig.local()
        self.net = net or MemoryNetwork(seed=seed)
        self.clock = FakeClock()
        self.rng = random.Random(seed)
        self.peers: list[SimPeer] = []
        for i in range(n):
            self.add(f"{i + 1:016x}" if lanes else f"p{i:04d}")
        if connect:
            for p in self.peers:
                for q in self.peers:
                    p.gossip.add_peer(q.addr)

    def add(self, peer_id: str, cfg: GossipConfig | None = None, *,
            incarnations: IncarnationStore | None = None, identity: Identity | None = None,
            incarnation: int = 1, addr: str | None = None,
            lanes: bool | None = None) -> SimPeer:
        """A new peer (signed: with `identity`, or a new one; `incarnation`: its start counter,
        as a node keeps it), at `addr` or the network's next address; holding lanes as the
        cluster's peers unless `lanes` says otherwise."""
        cfg = cfg or self.cfg
        lanes = self.lanes if lanes is None else lanes
        auth = None
        if self.signed:
            me = identity or Identity.generate()
            peer_id = peer_id_for(me.key)
            secrets = () if cfg.secret is None else (cfg.secret,)
            auth = MeshAuth(me, MemberKeys(secrets), incarnation=incarnation,
                            admit=admit_tag(cfg.secret, peer_id, me.key) if cfg.secret else None)
            auth.keyring.keys[peer_id] = me.key
        sink, members = MemorySink(peer_id, auth, lanes=lanes), RecordingMembers()
        # (this release's features, or the previous release's)
        feats = ([FIXNONCE_FEATURE] if cfg.anti_entropy_nonces else []) + (
            [LANES_FEATURE] if lanes else [])
        info = {"free_slots": 1, "features": feats}
        g = Gossip(cfg, self.net.transport(addr), sink, members, peer_id,
                   clock=self.clock, rng=random.Random(self.rng.random()),
                   local_info=lambda: dict(info), auth=auth, incarnations=incarnations,
                   lanes=sink if lanes else None)
        g.bind()
        p = SimPeer(g, sink, members)
        self.peers.append(p)
        return p

    def restart(self, p: SimPeer, incarnations: IncarnationStore | None = None) -> SimPeer:
        """`p` stops without a word (kill -9) and starts again at its address, with its
        identity (signed) and its start counter one more, as a node on the same data dir
        (`incarnations`: that data dir's mark); it joins every other peer."""
        addr, auth = p.addr, p.gossip.auth
        t = self.net._nodes.get(addr)
        if t is not None:
            t.close_now()
        self.peers.remove(p)
        q = self.add(p.gossip.peer_id, p.gossip.cfg, incarnations=incarnations,
                     identity=None if auth is None else auth.identity,
                     incarnation=1 if auth is None else auth.incarnation + 1, addr=addr)
        for o in self.peers:
            if o is not q:
                q.gossip.add_peer(o.addr)
        return q

    def step(self, dt: float | None = None) -> None:
        """Advance time by dt (default: one heartbeat), tick everyone, deliver everything."""
        self.clock.advance(self.cfg.heartbeat_s if dt is None else dt)
        for p in self.peers:
            p.gossip.tick()
        self.net.pump()

    def converged(self) -> bool:
        first = self.peers[0].sink.ids()
        return all(p.sink.ids() == first for p in self.peers[1:])

    def run_until_converged(self, max_steps: int, dt: float | None = None) -> int | None:
        """Steps taken until all sinks hold the same events, or None."""
        for i in range(max_steps + 1):
            if self.converged():
                return i
            self.step(dt)
        return None


def _seed_membership(c: Cluster) -> None:
    """Make every peer believe every other is alive, without N² heartbeats."""
    now = c.clock()
    for p in c.peers:
        g = p.gossip
        g._next_hb = float("inf")  # heartbeats are measured separately
        for q in c.peers:
            if q is not p:
                g.membership.heard(q.gossip.peer_id, q.addr, {"free_slots": 1}, now)


def simulate(n_peers: int, loss: float, fanout: int, seed: int = 0, max_rounds: int = 100,
             *, events: int | None = None, push: bool = True) -> tuple[int | None, float]:
    """(anti-entropy rounds until every peer holds every event, or None;
    idle bytes sent per peer per second with the lan() timings).

    `events` (default one per peer) are emitted round-robin by the peers and, with
    `push`, broadcast (fanout `fanout`, hop budget push_hops); then rounds of
    anti-entropy run, every peer starting one exchange per round, each frame lost
    with probability `loss`. Round 0 means the push alone delivered everything.
    Idle traffic is measured on the mesh afterwards, without loss, from real
    frames: one heartbeat round and one anti-entropy round of a sample of peers,
    scaled to lan()'s intervals (heartbeats go to every peer, so this grows with n).
    """
    never = 1e9
    cfg = GossipConfig.local(fanout=fanout, heartbeat_s=never, suspect_after_s=2 * never,
                             dead_after_s=3 * never, jitter=0.0)
    net = MemoryNetwork(loss=loss, seed=seed)
    c = Cluster(n_peers, cfg, net=net, seed=seed)
    _seed_membership(c)
    for k in range(n_peers if events is None else events):
        p = c.peers[k % n_peers]
        ev = p.sink.emit()
        if push:
            p.gossip.broadcast([ev])
    net.pump()
    rounds: int | None = None
    for r in range(max_rounds + 1):
        if c.converged():
            rounds = r
            break
        c.clock.advance(cfg.anti_entropy_s)
        for i in c.rng.sample(range(n_peers), n_peers):
            c.peers[i].gossip.anti_entropy()
        net.pump()
    return rounds, _idle_bytes(c)


def _idle_bytes(c: Cluster, sample: int = 10) -> float:
    lan = GossipConfig.lan()
    c.net.loss = 0.0
    peers = c.peers[:sample]
    b0 = c.net.bytes_sent
    for p in peers:
        p.gossip.heartbeat()
    c.net.pump()
    hb = (c.net.bytes_sent - b0) / len(peers)
    b0 = c.net.bytes_sent
    for p in peers:
        p.gossip.anti_entropy()
    c.net.pump()
    ae = (c.net.bytes_sent - b0) / len(peers)
    return hb / lan.heartbeat_s + ae / lan.anti_entropy_s


def swim_cluster(n_peers: int, cfg: GossipConfig, *, loss: float = 0.0, seed: int = 0,
                 signed: bool = False) -> Cluster:
    """n SWIM peers that already know each other alive, as after a finished join (seeded
    directly: a simulated join of 1,000 peers would be N^2 syncs of N members)."""
    c = Cluster(n_peers, cfg, net=MemoryNetwork(loss=loss, seed=seed), seed=seed,
                connect=False, signed=signed)
    seed_swim(c)
    return c


def seed_swim(c: Cluster) -> None:
    """Make the SWIM peers of `c` know each other alive, with their reports, at once."""
    now = c.clock()
    for p in c.peers:
        p.gossip.heartbeat()  # makes its first report
        if p.gossip.swim is not None:
            p.gossip.swim.tick(now)
    c.net.pump()
    ups = [u for p in c.peers if p.gossip.swim
           for u in (p.gossip.swim.alive_update, p.gossip.swim.report_update) if u]
    for p in c.peers:
        s = p.gossip.swim
        if s is not None:
            s.apply_updates([u for u in ups if u["i"] != p.gossip.peer_id], now, relay=False,
                            sync=True)
            s.drop_queue()

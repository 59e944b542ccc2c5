"""Membership: who is in the mesh, where they listen, and whether they are alive, judged only
on the local monotonic clock. Owned by the event loop; every method is non-blocking."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from peer.mesh.addr import canonical_addr

log = logging.getLogger("banzai.gossip")

Clock = Callable[[], float]
MAX_PEER_SAMPLE = 32  # addresses carried per digest
MAX_LEARNED = 4096  # bound on addresses learned from the wire
FORGET_AFTER_DEAD = 10  # a dead peer's record is dropped after this many dead_after_s


class Liveness(StrEnum):
    """A peer's state; the values appear in `live_peers()` and the HTTP API."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"


def liveness(quiet_s: float, suspect_after_s: float, dead_after_s: float) -> Liveness:
    """The state of a peer last heard `quiet_s` seconds ago (on our own clock)."""
    if quiet_s <= suspect_after_s:
        return Liveness.ALIVE
    return Liveness.SUSPECT if quiet_s <= dead_after_s else Liveness.DEAD


class MemberSink(Protocol):
    """Where gossip reports heartbeats. Must not block."""

    def heard(self, peer_id: str, info: Mapping[str, Any]) -> None:
        """A heartbeat from `peer_id`: liveness plus its load (`info` includes "gossip")."""
        ...


class Paths(Protocol):
    """The part of a Transport membership drives: which addresses to keep a path to."""

    def connect(self, addr: str) -> None: ...

    def disconnect(self, addr: str) -> None: ...


@dataclass
class PeerRecord:
    """What we know of one peer: its address, last heartbeat info and liveness."""

    peer_id: str
    addr: str
    info: dict[str, Any]
    last_heard: float
    status: Liveness = Liveness.ALIVE


class Membership:
    """Peers heard from (by id) and addresses to contact: static ones (`add_static`, kept
    until `remove`) and ones learned from the wire (forgotten when stale)."""

    def __init__(self, members: MemberSink, paths: Paths, clock: Clock, rng: random.Random, *,
                 suspect_after_s: float, dead_after_s: float) -> None:
        self.self_addr = ""  # our own address, never contacted (set by Gossip.bind)
        self.suspect_after_s = suspect_after_s
        self.dead_after_s = dead_after_s
        self._members = members
        self._paths = paths
        self._clock = clock
        self._rng = rng
        self._static: set[str] = set()
        self._learned: dict[str, float] = {}  # address -> when last vouched for
        self._peers: dict[str, PeerRecord] = {}
        self._at: dict[str, str] = {}  # address -> the peer last heard there
        self._live_cache: frozenset[str] | None = None  # reset when a status or address changes
        # told each peer forgotten (long dead): what the layers above keep of it may go
        self.forgotten: Callable[[str], None] = lambda _p: None

    # -- addresses ---------------------------------------------------------------------
    @property
    def static_addrs(self) -> frozenset[str]:
        return frozenset(self._static)

    @property
    def learned_addrs(self) -> frozenset[str]:
        return frozenset(self._learned)

    def add_static(self, addr: str) -> None:
        """Contact `addr` (in its one spelling) until `remove`; ValueError if it is no
        HOST:PORT."""
        addr = canonical_addr(addr)
        if addr != self.self_addr:
            self._static.add(addr)
            self._paths.connect(addr)

    def remove(self, addr: str) -> None:
        """Stop contacting `addr` (unless a live peer is heard there again)."""
        addr = canonical_addr(addr)
        self._static.discard(addr)
        self._learned.pop(addr, None)
        if not any(p.addr == addr and p.status != Liveness.DEAD for p in self._peers.values()):
            self._paths.disconnect(addr)

    def learn_addrs(self, addrs: Iterable[Any]) -> None:
        """Addresses vouched for by a peer (a digest's sample); ValueError on a bad one."""
        for addr in list(addrs)[:MAX_PEER_SAMPLE]:
            if isinstance(addr, str):
                addr = canonical_addr(addr)
                if addr != self.self_addr and addr not in self._static:
                    self._note_addr(addr)

    def live_addrs(self) -> frozenset[str]:
        """Addresses of the peers not dead."""
        if self._live_cache is None:
            self._live_cache = frozenset(p.addr for p in self._peers.values()
                                         if p.status != Liveness.DEAD and p.addr)
        return self._live_cache

    def heartbeat_targets(self) -> list[str]:
        """Every address we know: static, learned and live, sorted."""
        return sorted(self._static | self._learned.keys() | self.live_addrs())

    def sample(self, exclude: str) -> list[str]:
        """Up to MAX_PEER_SAMPLE random live addresses other than `exclude` (for a digest)."""
        live = sorted(self.live_addrs() - {exclude})
        return self._rng.sample(live, min(len(live), MAX_PEER_SAMPLE))

    def pick_partner(self) -> str | None:
        """A random live peer's address, else a random known address, else None."""
        live = sorted(self.live_addrs())
        if live:
            return self._rng.choice(live)
        known = sorted(self._static | self._learned.keys())
        return self._rng.choice(known) if known else None

    # -- hearing from peers ------------------------------------------------------------
    def touch(self, peer_id: str, reply_to: str, *, refresh: bool = True) -> None:
        """Any valid frame from `peer_id` (not dead) proves it alive (unless not `refresh`:
        with signed membership only a checked heartbeat does); note its address."""
        p = self._peers.get(peer_id)
        if refresh and p is not None and p.status != Liveness.DEAD:
            p.last_heard = self._clock()
        if reply_to and reply_to not in self._static:
            self._note_addr(reply_to)

    def heard(self, peer_id: str, addr: str, info: dict[str, Any], now: float) -> None:
        """A heartbeat from `peer_id` at `addr`: it is alive; report it to the member sink."""
        p = self._peers.get(peer_id)
        if p is None or p.status == Liveness.DEAD:
            log.info("gossip: peer %s up at %s", peer_id[:16], addr)
        if p is None:
            p = self._peers[peer_id] = PeerRecord(peer_id, addr, info, now)
            self._live_cache = None
        elif p.status != Liveness.ALIVE or p.addr != addr:
            self._live_cache = None
        if self._at.get(p.addr) == peer_id:
            del self._at[p.addr]
        p.addr, p.info, p.last_heard, p.status = addr, info, now, Liveness.ALIVE
        self._at[addr] = peer_id
        self._members.heard(peer_id, {**info, "gossip": addr})

    def peer_at(self, addr: str) -> PeerRecord | None:
        """The peer last heard at `addr` (by its heartbeat), if it is not dead."""
        pid = self._at.get(addr)
        p = None if pid is None else self._peers.get(pid)
        return p if p is not None and p.status != Liveness.DEAD and p.addr == addr else None

    # -- liveness ----------------------------------------------------------------------
    def live_peers(self) -> dict[str, dict[str, Any]]:
        """peer_id -> last heartbeat info plus "gossip" address and "status" (alive/suspect)."""
        self.update(self._clock())
        return {p.peer_id: {**p.info, "gossip": p.addr, "status": p.status.value}
                for p in self._peers.values() if p.status != Liveness.DEAD}

    def status(self, peer_id: str) -> Liveness | None:
        """alive, suspect, dead, or None if never heard (or long dead)."""
        self.update(self._clock())
        return self.judged(peer_id)

    def judged(self, peer_id: str) -> Liveness | None:
        """`status` as last judged (no re-judging: one lookup)."""
        p = self._peers.get(peer_id)
        return p.status if p else None

    def update(self, now: float) -> None:
        """Re-judge every peer at `now`; forget long-dead peers and stale learned addresses."""
        forget_after = FORGET_AFTER_DEAD * self.dead_after_s
        for pid in [p.peer_id for p in self._peers.values() if now - p.last_heard > forget_after]:
            p = self._peers.pop(pid)
            if self._at.get(p.addr) == pid:
                del self._at[p.addr]
            self.forgotten(pid)
        for p in self._peers.values():
            quiet = now - p.last_heard
            st = liveness(quiet, self.suspect_after_s, self.dead_after_s)
            if st != p.status:
                log.info("gossip: peer %s %s -> %s (quiet %.1fs)", p.peer_id[:16], p.status,
                         st, quiet)
                p.status = st
                self._live_cache = None
        self._forget_stale(now)

    def _note_addr(self, addr: str) -> None:
        if addr in self._learned or len(self._learned) < MAX_LEARNED:
            self._learned[addr] = self._clock()

    def _forget_stale(self, now: float) -> None:
        """Drop learned addresses that no live peer holds and nobody vouched for lately."""
        live = self.live_addrs()
        stale = [a for a, t in self._learned.items()
                 if a not in live and now - t > self.dead_after_s]
        for a in stale:
            del self._learned[a]
            if a not in self._static:
                self._paths.disconnect(a)


__all__ = ["MAX_LEARNED", "MAX_PEER_SAMPLE", "Liveness", "MemberSink", "Membership", "Paths",
           "PeerRecord", "liveness"]

"""Content digests of the log and the rule for two contents of one (origin, seq). Pure; a
ContentSums is owned by the MeshState it summarises (the event loop).

Heads (version vectors) say which (origin, seq)s a peer holds, not what they hold: two peers
given different contents for one (origin, seq) by an equivocating member have equal heads
and different logs. So each origin also has a content digest: the content hashes of its held
events (`held_hash`, known and unknown types alike) in seq order, hashed per block of
BLOCK_SEQS seqs, the blocks' hashes hashed per origin, the origins' hashed into one sum. Kept
lazily: recording, replacing or forgetting an event marks its block dirty, and digests are
recomputed when read, so an in-sync read costs nothing more than a cached value. Anti-entropy
compares them (peer/mesh/antientropy.py) and exchanges the blocks that differ; the conflict
rule (`wins`) then settles each (origin, seq) on every peer to the same content."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from peer.log.events import Event
from peer.log.lanes import lane_of
from peer.log.signing import held_hash

BLOCK_SEQS = 256  # seqs per block: the unit anti-entropy compares and exchanges
HEX_CHARS = 32  # digests travel as 128-bit hex (as the heads sum does)
CONTENTS_DOMAIN = b"banzai-contents-v1\n"
_INDEX = struct.Struct("!Q")


def block_of(seq: int) -> int:
    """The block that holds `seq` (seqs start at 1)."""
    return (seq - 1) // BLOCK_SEQS


def block_seqs(block: int) -> range:
    """The seqs of `block`."""
    return range(block * BLOCK_SEQS + 1, (block + 1) * BLOCK_SEQS + 1)


def wins(challenger: Event, held: Event) -> bool:
    """The rule for two contents of one (origin, seq), the same on every peer: the smaller
    content hash is kept."""
    return held_hash(challenger) < held_hash(held)


def block_digest(log: Mapping[int, Event], block: int) -> str:
    """The digest of the events of `log` (seq -> event, one origin) in `block`; "" if none."""
    return _block(log, block)[0]


def _block(log: Mapping[int, Event], block: int) -> tuple[str, int]:
    """The digest of the events of `log` in `block` ("" if none) and how many it covers."""
    hashes = [held_hash(e) for q in block_seqs(block) if (e := log.get(q)) is not None]
    if not hashes:
        return "", 0
    return (hashlib.sha256(CONTENTS_DOMAIN + b"".join(hashes)).hexdigest()[:HEX_CHARS],
            len(hashes))


@dataclass
class ContentSums:
    """Per origin, the digests of its blocks and of the whole; recomputed where dirty."""

    blocks: dict[str, dict[int, str]] = field(default_factory=dict)  # non-empty blocks only
    # and how many events each covers (anti-entropy exchanges a differing block only while
    # both sides' counts agree: a count that differs is an eviction out of phase)
    sizes: dict[str, dict[int, int]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)  # fresh origin digests
    dirty: dict[str, set[int]] = field(default_factory=dict)
    lanes: dict[str, str] = field(default_factory=dict)  # lane origin -> its job (peer.log.lanes)
    _total: str | None = None  # (of the mesh origins)

    def touch(self, origin: str, seq: int) -> None:
        """The event held at (origin, seq) changed (recorded, replaced or forgotten)."""
        d = self.dirty.get(origin)
        if d is None:
            d = self.dirty[origin] = set()
            self.origins.pop(origin, None)
            self._total = None
            if (lane := lane_of(origin)) is not None:
                self.lanes[origin] = lane[1]
        d.add(block_of(seq))

    def forget(self, origin: str) -> None:
        """`origin` is no longer held at all (a lane forgotten: MeshState.forget_lanes)."""
        for table in (self.blocks, self.sizes, self.origins, self.dirty, self.lanes):
            table.pop(origin, None)
        self._total = None

    def refresh(self, by_origin: Mapping[str, Mapping[int, Event]]) -> None:
        """Recompute what is dirty, from the held events (origin -> seq -> event)."""
        for origin, dirty in self.dirty.items():
            log = by_origin.get(origin, {})
            blocks = self.blocks.setdefault(origin, {})
            sizes = self.sizes.setdefault(origin, {})
            for b in dirty:
                d, n = _block(log, b)
                if d:
                    blocks[b], sizes[b] = d, n
                else:
                    blocks.pop(b, None)
                    sizes.pop(b, None)
            if blocks:
                h = hashlib.sha256(CONTENTS_DOMAIN + _name(origin))
                for b in sorted(blocks):
                    h.update(_INDEX.pack(b) + bytes.fromhex(blocks[b]))
                self.origins[origin] = h.hexdigest()[:HEX_CHARS]
            else:
                del self.blocks[origin], self.sizes[origin]
                self.origins.pop(origin, None)
        self.dirty.clear()

    def total(self, by_origin: Mapping[str, Mapping[int, Event]],
              scope: Collection[str] | None = None) -> str:
        """One digest of the mesh origins' (no `scope`: every origin but the lanes; cached
        unless one changed), or of the lanes of the jobs in `scope`."""
        if scope is not None:
            return _sum_of(self.digests(by_origin, scope).items())
        if self._total is None or self.dirty:
            self.refresh(by_origin)
            self._total = _sum_of(self.digests(by_origin).items())
        return self._total

    def digests(self, by_origin: Mapping[str, Mapping[int, Event]],
                scope: Collection[str] | None = None) -> dict[str, str]:
        """Origin -> its digest, of the mesh origins (no `scope`) or of the lanes of the jobs
        in `scope` (as `total`'s)."""
        self.refresh(by_origin)
        lanes = self.lanes
        if scope is not None:
            return {o: d for o, d in self.origins.items() if lanes.get(o) in scope}
        if not lanes:
            return dict(self.origins)
        return {o: d for o, d in self.origins.items() if o not in lanes}


def _name(origin: str) -> bytes:
    b = origin.encode()
    return struct.pack("!H", len(b)) + b


def _sum_of(items: Iterable[tuple[str, str]]) -> str:
    h = hashlib.sha256(CONTENTS_DOMAIN)
    for origin, d in sorted(items):
        h.update(_name(origin) + d.encode())
    return h.hexdigest()[:HEX_CHARS]


__all__ = ["BLOCK_SEQS", "HEX_CHARS", "ContentSums", "block_digest", "block_of", "block_seqs",
           "wins"]

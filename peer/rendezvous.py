"""Rendezvous (highest-random-weight) hashing: every peer computes the same order of peers
for a unit of work without talking to the others. Pure; used by claims and replication."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def rendezvous(unit: str, peers: Iterable[str]) -> list[str]:
    """Peers ordered by rendezvous hash of `unit`: every peer computes the same order."""
    return sorted(peers, key=lambda p: weight(unit, p))


def weight(unit: str, peer: str) -> bytes:
    """`peer`'s rendezvous hash of `unit` (the lowest comes first)."""
    return hashlib.sha256(f"{unit}|{peer}".encode()).digest()

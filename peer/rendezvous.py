"""Rendezvous (highest-random-weight) hashing: every peer computes the same order of peers
for a unit of work without talking to the others. Pure; used by claims and replication."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def rendezvous(unit: str, peers: Iterable[str]) -> list[str]:
    """Peers ordered by rendezvous hash of `unit`: every peer computes the same order."""
    return sorted(peers, key=lambda p: hashlib.sha256(f"{unit}|{p}".encode()).digest())

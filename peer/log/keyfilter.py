"""A set of texts that may answer "surely not in it" (a Bloom filter over `hash`): the job
index's memory of which CIDs its provider rows may name. Pure; its owner's thread only."""

from __future__ import annotations

from collections.abc import Iterable

MIN_BITS = 1 << 16
BITS_PER_KEY = 16  # two bits a key of 16: about 1.4 % of the absent keys answer "maybe"
MASK64 = (1 << 64) - 1


class KeyFilter:
    """Texts added (`add`) are always `maybe` in it; a text not added is `maybe` for about
    1.4 % of the texts while it holds at most `capacity` (`full` past it: its owner makes a
    new one of every text, for the rate to stay so). Nothing is taken out: a text once added
    stays a `maybe`, which costs its owner a look, never a wrong answer. Python's string
    hash (salted per process) chooses the bits: a text crafted to collide costs a look."""

    __slots__ = ("_bits", "_mask", "capacity", "count")

    def __init__(self, expected: int = 0) -> None:
        bits = MIN_BITS
        while bits < expected * BITS_PER_KEY:
            bits <<= 1
        self._bits = bytearray(bits >> 3)
        self._mask = bits - 1
        self.capacity = bits // BITS_PER_KEY
        # texts added that set a bit (a text added again, or one whose both bits were set
        # already, is not counted: provider sets rewritten would fill it otherwise)
        self.count = 0

    @property
    def full(self) -> bool:
        """Holding over twice `capacity` (past it, more absent texts answer `maybe`)."""
        return self.count > 2 * self.capacity

    def add(self, key: str) -> None:
        h = hash(key) & MASK64
        bits, mask = self._bits, self._mask
        i, j = h & mask, (h >> 32) & mask
        bi, bj = 1 << (i & 7), 1 << (j & 7)
        if bits[i >> 3] & bi and bits[j >> 3] & bj:
            return
        bits[i >> 3] |= bi
        bits[j >> 3] |= bj
        self.count += 1

    def add_all(self, keys: Iterable[str]) -> None:
        for k in keys:
            self.add(k)

    def maybe(self, key: str) -> bool:
        """False only if `key` was surely never added."""
        h = hash(key) & MASK64
        bits, mask = self._bits, self._mask
        i, j = h & mask, (h >> 32) & mask
        return bool(bits[i >> 3] & (1 << (i & 7)) and bits[j >> 3] & (1 << (j & 7)))

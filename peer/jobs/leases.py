"""The other peers' claims a scheduler watches, and when each holder was last heard of; which
leases lapsed is found in time proportional to what changed (a heap of when each lapses),
not by reading every watched claim at every tick (a silent member's 6,000 claims: 2.4 % of
an idle peer's CPU); and the claims a peer may hold are found in time proportional to its
own claims (`of`: its heartbeat renews them), not to every watched one."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Any

from peer.jobs import claims
from peer.jobs.claims import AttemptKey
from peer.log import TaskKey


class Leases(dict[AttemptKey, float]):
    """Attempt -> when its holder was last heard of (or its claim first seen), as a dict;
    `lapsed(now)` says which tasks have a watched claim whose lease lapsed, `of(peer)` which
    watched attempts `peer` claimed.

    `of` is right whatever claim wins (a later one may, on any split): an attempt that
    starts being watched notes every peer that claimed it so far (`claimers`: the state's
    claims of it, on every split), and the owner notes each claim of a watched attempt folded
    after that (`claimed_by`, whether or not the claim is watched for itself): the holder,
    whoever it is, is among the peers noted. What is noted goes with the attempt."""

    def __init__(self, lease_s: float,
                 claimers: Callable[[AttemptKey], Iterable[str]] = lambda ak: ()) -> None:
        super().__init__()
        self.lease_s = lease_s
        self.claimers = claimers
        self._due: list[tuple[float, AttemptKey]] = []  # (lapses after, attempt): a heap
        self._queued: dict[AttemptKey, float] = {}  # attempt -> its earliest entry there
        self._lapsed: dict[TaskKey, set[AttemptKey]] = {}
        self._by: dict[AttemptKey, set[str]] = {}  # watched attempt -> the peers it noted
        self._of: dict[str, set[AttemptKey]] = {}  # peer -> watched attempts it claimed

    def claimed_by(self, ak: AttemptKey, peer: str) -> None:
        """Note that `peer` claimed `ak` (nothing if `ak` is not watched)."""
        noted = self._by.get(ak)
        if noted is not None and peer not in noted:
            noted.add(peer)
            self._of.setdefault(peer, set()).add(ak)

    def of(self, peer: str) -> list[AttemptKey]:
        """The watched attempts that `peer` claimed (every one it may hold, and those it
        claimed and lost)."""
        return list(self._of.get(peer, ()))

    def lapsed(self, now: float) -> set[TaskKey]:
        """The tasks with a watched claim whose lease lapsed by `now` (until it is renewed,
        or no longer watched)."""
        due, renewed = self._due, []
        while due and due[0][0] < now:
            at, ak = heapq.heappop(due)
            if self._queued.get(ak) != at:
                continue  # (an earlier entry of it came first)
            del self._queued[ak]
            seen = self.get(ak)
            if seen is None:
                continue
            if claims.lease_lapsed(seen, now, self.lease_s):
                self._lapsed.setdefault((ak.job, ak.task), set()).add(ak)
            else:  # renewed since it was queued
                renewed.append((ak, seen))
        for ak, seen in renewed:
            self._queue(ak, seen)
        return set(self._lapsed)

    def _queue(self, ak: AttemptKey, seen: float) -> None:
        at = seen + self.lease_s
        if at < self._queued.get(ak, float("inf")):
            self._queued[ak] = at
            heapq.heappush(self._due, (at, ak))

    def _unlapse(self, ak: AttemptKey) -> None:
        key = (ak.job, ak.task)
        held = self._lapsed.get(key)
        if held is not None:
            held.discard(ak)
            if not held:
                del self._lapsed[key]

    def _forget(self, ak: AttemptKey) -> None:
        """`ak` is no longer watched."""
        self._unlapse(ak)
        for peer in self._by.pop(ak, ()):
            held = self._of[peer]
            held.discard(ak)
            if not held:
                del self._of[peer]

    def __setitem__(self, ak: AttemptKey, seen: float) -> None:
        fresh = ak not in self
        dict.__setitem__(self, ak, seen)
        self._unlapse(ak)
        self._queue(ak, seen)
        if fresh:
            self._by[ak] = set()
            for peer in self.claimers(ak):
                self.claimed_by(ak, peer)

    def __delitem__(self, ak: AttemptKey) -> None:
        dict.__delitem__(self, ak)
        self._forget(ak)

    def pop(self, ak: AttemptKey, *default: Any) -> Any:
        if ak in self:
            self._forget(ak)
        return dict.pop(self, ak, *default)

    def setdefault(self, ak: AttemptKey, default: float = 0.0) -> float:
        if ak not in self:
            self[ak] = default
        return dict.__getitem__(self, ak)

    def popitem(self) -> tuple[AttemptKey, float]:
        ak, seen = dict.popitem(self)
        self._forget(ak)
        return ak, seen

    def clear(self) -> None:
        dict.clear(self)
        self._due.clear()
        self._queued.clear()
        self._lapsed.clear()
        self._by.clear()
        self._of.clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for ak, seen in dict(*args, **kwargs).items():
            self[ak] = seen

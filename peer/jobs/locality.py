"""Data locality: whether the DAGs a task step needs are complete here, and fetching them in the
background (at once on the preferred peer, elsewhere after a grace period). A failed fetch is
retried with exponential backoff; its reason is kept for the job view and logged once per
change of state (waiting, complete again). A waiting task is due for another look when its
grace or backoff is over (`due`), its fetch ends (`fetched`) or what it waits for comes
(`wanting`), not at every tick. Loop-owned.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Coroutine, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from peer.jobs.ports import Clock, Data, PeerInfos
from peer.log import TaskKey

log = logging.getLogger("banzai.scheduler")

Spawn = Callable[[Coroutine[Any, Any, Any]], None]


@dataclass
class Stalled:
    """Fetches for one task that failed: how many, the last reason, when to try again."""

    failures: int
    reason: str
    retry_at_s: float
    epoch: Hashable  # what was being fetched: a new epoch starts the count afresh


@dataclass
class Waiting:
    """A task waiting for data here: since when, the DAGs it waits for, and when time alone
    may end its wait (its grace period or backoff over; inf: only a fetch's end, the data
    coming, an event of the task or a change of the live peers can)."""

    since_s: float
    cids: frozenset[str] = frozenset()
    due_s: float = math.inf


class Locality:
    """Tracks the tasks waiting for data and the fetches under way; `fetched(key)` is called
    when a fetch for `key` ends (complete or not), and for the other tasks waiting for any of
    its DAGs, to evaluate them again."""

    def __init__(self, me: str, data: Data, peers: PeerInfos, clock: Clock, grace_s: float,
                 spawn: Spawn, fetched: Callable[[TaskKey], None],
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0) -> None:
        self.me = me
        self.data = data
        self.peers = peers
        self.clock = clock
        self.grace_s = grace_s
        self.spawn = spawn
        self.fetched = fetched
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.waiting: dict[TaskKey, Waiting] = {}  # tasks waiting for data
        self.stalled: dict[TaskKey, Stalled] = {}  # tasks whose fetches failed
        self._fetching: set[TaskKey] = set()

    def have(self, key: TaskKey, cids: list[str], preferred: str | None,
             epoch: Hashable = None) -> bool:
        """True if every DAG is complete here. Otherwise start fetching them: at once if
        this peer is the `preferred` one to act, else after a grace period in which the
        preferred peer (which holds the data) normally acts first; after a failed fetch,
        not before its backoff ends."""
        cids = [c for c in cids if c]
        if all(self.data.is_complete(c) for c in cids):
            self.waiting.pop(key, None)
            if (st := self.stalled.pop(key, None)) is not None:
                log.info("%s/%s: the data it waited for is complete (after %d failed "
                         "fetches)", key[0], key[1], st.failures)
            return True
        now = self.clock()
        w = self.wait(key, cids)
        st = self.stalled.get(key)
        if st is not None and st.epoch != epoch:
            st = None
            del self.stalled[key]
        if st is not None and now < st.retry_at_s:
            w.due_s = st.retry_at_s
            return False
        if key in self._fetching:  # looked at again when it ends (`fetched`)
            return False
        alive = preferred is not None and (preferred in self.peers())
        if preferred == self.me or not alive or now - w.since_s > self.grace_s:
            self._fetching.add(key)
            log.debug("%s/%s: fetching %d DAGs (preferred peer %s)", key[0], key[1], len(cids),
                      preferred)
            self.spawn(self._fetch(key, cids, epoch))
        else:  # the preferred peer's grace period (unless it leaves: the live peers change)
            w.due_s = w.since_s + self.grace_s
        return False

    @property
    def fetching(self) -> frozenset[TaskKey]:
        """The tasks with a fetch of their data under way here."""
        return frozenset(self._fetching)

    def wait(self, key: TaskKey, cids: list[str]) -> Waiting:
        """Note that `key` waits for `cids` (since now, if it did not wait already), and
        for nothing on time: `have` sets when its grace or backoff ends."""
        w = self.waiting.get(key)
        if w is None:
            w = self.waiting[key] = Waiting(self.clock())
        w.cids, w.due_s = frozenset(cids), math.inf
        return w

    def due(self, now: float) -> list[TaskKey]:
        """The waiting tasks whose grace period or backoff is over by `now`: each is due
        once (`have` sets its next time if it still waits on time). A wait that time does
        not end (a fetch under way, a task whose split came meanwhile) is not looked at
        again at each tick: only when a fetch ends, the data comes or the task changes."""
        out = [k for k, w in self.waiting.items() if w.due_s <= now]
        for k in out:
            self.waiting[k].due_s = math.inf
        return out

    def wanting(self, cids: Iterable[str]) -> list[TaskKey]:
        """The waiting tasks that wait for any of `cids` (just fetched or provided here)."""
        got = set(cids)
        return [k for k, w in self.waiting.items() if not w.cids.isdisjoint(got)]

    def failures(self, key: TaskKey) -> int:
        """Failed fetches for `key` in a row (0: none, or the data came)."""
        st = self.stalled.get(key)
        return st.failures if st is not None else 0

    def reason(self, key: TaskKey) -> str | None:
        """Why `key` waits, for the job view (None: it does not wait on a failed fetch)."""
        st = self.stalled.get(key)
        if st is None:
            return None
        return (f"waiting for data ({st.failures} failed fetch(es), next in "
                f"{max(0.0, st.retry_at_s - self.clock()):.0f} s): {st.reason}")

    def forget(self, key: TaskKey) -> None:
        """Drop what is known of `key`'s waits (its data changed: a recompute)."""
        self.waiting.pop(key, None)
        self.stalled.pop(key, None)

    async def _fetch(self, key: TaskKey, cids: list[str], epoch: Hashable) -> None:
        t0 = self.clock()
        try:
            await self.data.ensure(cids)
            log.debug("%s/%s: %d DAGs complete after %.3f s", key[0], key[1], len(cids),
                      self.clock() - t0)
        except Exception as e:  # BanzaiError (no provider), OSError...: waited on, retried
            self._failed(key, f"{type(e).__name__}: {e}" if not str(e) else str(e), epoch)
        finally:
            self._fetching.discard(key)
            self.fetched(key)
            for other in self.wanting(cids):  # tasks waiting for the same data
                if other != key:
                    self.fetched(other)

    def _failed(self, key: TaskKey, reason: str, epoch: Hashable) -> None:
        st = self.stalled.get(key)
        if st is None or st.epoch != epoch:
            st = self.stalled[key] = Stalled(0, reason, 0.0, epoch)
        st.failures += 1
        st.retry_at_s = self.clock() + min(self.backoff_s * 2 ** (st.failures - 1),
                                           self.max_backoff_s)
        if st.failures == 1:  # a change of state (now waiting): one line
            log.warning("%s/%s: waiting for data: %s (retrying with backoff)", key[0], key[1],
                        reason)
        st.reason = reason

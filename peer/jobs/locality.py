"""Data locality: whether the DAGs a task step needs are complete here, and fetching them in the
background (at once on the preferred peer, elsewhere after a grace period). A failed fetch is
retried with exponential backoff; its reason is kept for the job view and logged once per
change of state (waiting, complete again). Loop-owned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Hashable
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


class Locality:
    """Tracks the tasks waiting for data and the fetches under way; `fetched(key)` is called
    when a fetch for `key` ends (complete or not), to evaluate the task again."""

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
        self.waiting: dict[TaskKey, float] = {}  # tasks waiting for data: since when
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
        since = self.waiting.setdefault(key, now)
        st = self.stalled.get(key)
        if st is not None and st.epoch != epoch:
            st = None
            del self.stalled[key]
        if st is not None and now < st.retry_at_s:
            return False
        alive = preferred is not None and (preferred in self.peers())
        if (preferred == self.me or not alive
                or now - since > self.grace_s) and key not in self._fetching:
            self._fetching.add(key)
            log.debug("%s/%s: fetching %d DAGs (preferred peer %s)", key[0], key[1], len(cids),
                      preferred)
            self.spawn(self._fetch(key, cids, epoch))
        return False

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

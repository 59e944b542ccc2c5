"""Data locality: whether the DAGs a task step needs are complete here, and fetching them in the
background (at once on the preferred peer, elsewhere after a grace period). Loop-owned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from peer.errors import BanzaiError
from peer.jobs.ports import Clock, Data, PeerInfos
from peer.log import TaskKey

log = logging.getLogger("banzai.scheduler")

Spawn = Callable[[Coroutine[Any, Any, Any]], None]


class Locality:
    """Tracks the tasks waiting for data and the fetches under way; `fetched(key)` is called
    when a fetch for `key` ends (complete or not), to evaluate the task again."""

    def __init__(self, me: str, data: Data, peers: PeerInfos, clock: Clock, grace_s: float,
                 spawn: Spawn, fetched: Callable[[TaskKey], None]) -> None:
        self.me = me
        self.data = data
        self.peers = peers
        self.clock = clock
        self.grace_s = grace_s
        self.spawn = spawn
        self.fetched = fetched
        self.waiting: dict[TaskKey, float] = {}  # tasks waiting for data: since when
        self._fetching: set[TaskKey] = set()

    def have(self, key: TaskKey, cids: list[str], preferred: str | None) -> bool:
        """True if every DAG is complete here. Otherwise start fetching them: at once if
        this peer is the `preferred` one to act, else after a grace period in which the
        preferred peer (which holds the data) normally acts first."""
        cids = [c for c in cids if c]
        if all(self.data.is_complete(c) for c in cids):
            self.waiting.pop(key, None)
            return True
        since = self.waiting.setdefault(key, self.clock())
        alive = preferred is not None and (preferred in self.peers())
        if (preferred == self.me or not alive
                or self.clock() - since > self.grace_s) and key not in self._fetching:
            self._fetching.add(key)
            log.debug("%s/%s: fetching %d DAGs (preferred peer %s)", key[0], key[1], len(cids),
                      preferred)
            self.spawn(self._fetch(key, cids))
        return False

    async def _fetch(self, key: TaskKey, cids: list[str]) -> None:
        t0 = self.clock()
        try:
            await self.data.ensure(cids)
            log.debug("%s/%s: %d DAGs complete after %.3f s", key[0], key[1], len(cids),
                      self.clock() - t0)
        except BanzaiError as e:
            log.warning("%s/%s: %s (will retry)", key[0], key[1], e)
        finally:
            self._fetching.discard(key)
            self.fetched(key)

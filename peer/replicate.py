"""Replication: every output is pinned where it was produced and on r-1 other live peers.

On a TASK_DONE that is not cached, each peer ranks the live peers other than the producer
(itself included) by rendezvous hash of the output CID; if it is among the first r-1 it
fetches the DAG (from providers, Kubo first with `--store kubo`), pins it and announces it
with PROVIDE, so losing the producer loses no result. Peers with the same membership view
choose the same replicas; a differing view (a peer joining or suspected) can add a replica,
never remove one. An output already announced by r peers is not replicated again.
Loop-owned; one listener (`on_event`) on the node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from peer.errors import BanzaiError
from peer.scheduler import rendezvous
from peer.state import Event, EventType

log = logging.getLogger("banzai.replicate")


class Pinner(Protocol):
    def pin(self, cid: str) -> None: ...


class Data(Protocol):
    async def ensure(self, cids: Sequence[str], hints: Sequence[str] = ()) -> None: ...


Emit = Callable[[EventType, dict[str, Any]], Event]


def replica_peers(cid: str, producer: str, alive: Iterable[str], replicas: int) -> list[str]:
    """The r-1 peers (other than `producer`) that should also pin `cid`, best first."""
    others = sorted(set(alive) - {producer})
    return rendezvous(cid, others)[:max(replicas - 1, 0)]


class Replicator:
    """Pins the outputs this peer is a replica of; `on_event` is the node listener."""

    def __init__(self, self_id: str, replicas: int, peers: Callable[[], Mapping[str, Any]],
                 providers: Callable[[str], Iterable[str]], data: Data, store: Pinner,
                 emit: Emit, *, attempts: int = 3, backoff_s: float = 2.0,
                 concurrency: int = 2) -> None:
        self.self_id = self_id
        self.replicas = replicas
        self.peers = peers  # live peers other than this one
        self.providers = providers
        self.data = data
        self.store = store
        self.emit = emit
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.replicated: set[str] = set()
        self._sem = asyncio.Semaphore(concurrency)
        self._pending: dict[str, asyncio.Task[None]] = {}

    def on_event(self, ev: Event) -> None:
        """Listener: start replicating a fresh output if this peer is one of its replicas."""
        if ev.type != EventType.TASK_DONE or ev.payload.get("cached") or self.replicas < 2:
            return
        cid = str(ev.payload["output"])
        if ev.origin == self.self_id or cid in self.replicated or cid in self._pending:
            return
        alive = [*self.peers(), self.self_id]
        if self.self_id not in replica_peers(cid, ev.origin, alive, self.replicas):
            return
        t = asyncio.create_task(self._replicate(cid, ev.origin), name=f"replicate {cid}")
        self._pending[cid] = t
        t.add_done_callback(lambda _: self._pending.pop(cid, None))

    async def _replicate(self, cid: str, producer: str) -> None:
        await asyncio.sleep(0)  # events merged in the same batch (PROVIDEs) are folded first
        have = set(self.providers(cid))
        if self.self_id in have or len(have) >= self.replicas:
            return
        async with self._sem:
            for attempt in range(1, self.attempts + 1):
                try:
                    await self.data.ensure([cid])
                    await asyncio.to_thread(self.store.pin, cid)
                except BanzaiError as e:
                    log.warning("replica of %s from %s, attempt %d: %s", cid, producer[:8],
                                attempt, e)
                    await asyncio.sleep(self.backoff_s * attempt)
                    continue
                self.replicated.add(cid)
                self.emit(EventType.PROVIDE, {"cids": [cid]})
                log.info("replicated %s (produced by %s)", cid, producer[:8])
                return

    async def close(self) -> None:
        tasks = list(self._pending.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

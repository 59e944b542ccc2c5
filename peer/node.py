"""Wires the components of one peer and starts and stops them in order.

`Node.emit` is the one way local changes enter the state: the event is written to
SQLite, folded, then announced to listeners (scheduler, SSE, gossip). Loop-owned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.executor import Executor, ExecutorConfig
from peer.scheduler import Scheduler, SchedulerConfig
from peer.state import HLC, Event, EventLog, EventType, MeshState
from peer.store import EmbeddedStore
from tasks import registry
from tasks.registry import TaskDef

log = logging.getLogger("banzai.node")

Listener = Callable[[Event], None]


class Node:
    """One peer: state, store, executor, scheduler; the API and mesh attach to it."""

    def __init__(self, cfg: PeerConfig) -> None:
        self.cfg = cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.catalog: dict[str, TaskDef] = registry.load(cfg.task_modules)
        self.log = EventLog(cfg.data_dir / "events.sqlite")
        self.peer_id = self.log.get_meta("peer_id") or secrets.token_hex(8)
        self.log.set_meta("peer_id", self.peer_id)
        self.name = cfg.peer_name or f"{socket.gethostname()}-{self.peer_id[:4]}"
        self.hlc = HLC()
        self.state = MeshState()
        for ev in self.log.load():
            self.state.apply(ev)
            self.hlc.observe(ev.hlc)
        self.store = EmbeddedStore(cfg.data_dir / "store")
        self.executor = Executor(ExecutorConfig(
            slots=cfg.slots, default_timeout_s=cfg.task_timeout_s,
            memory_limit_mb=cfg.worker_memory_mb,
            preload=("peer.runner", *cfg.task_modules)))
        self.scheduler = Scheduler(
            SchedulerConfig(store_root=str(cfg.data_dir / "store"),
                            task_modules=cfg.task_modules, max_attempts=cfg.max_attempts,
                            lease_s=cfg.lease_s, task_timeout_s=cfg.task_timeout_s),
            self.peer_id, self.state, self.emit, self.store, self.executor, self.catalog)
        self.listeners: list[Listener] = [self.scheduler.poke]
        self.http_url = ""

    def emit(self, typ: EventType, payload: dict[str, Any]) -> Event:
        """Append a local event durably, fold it and tell the listeners."""
        ev = Event(self.peer_id, self.state.heads.get(self.peer_id, 0) + 1, self.hlc.now(),
                   typ, payload)
        self.log.append([ev])
        self.state.apply(ev)
        for fn in list(self.listeners):
            fn(ev)
        return ev

    def merge(self, events: list[Event]) -> list[Event]:
        """Fold remote events; returns the new ones (persisted first). Never blocks."""
        new = [e for e in events if e.id not in self.state.events]
        self.log.append(new)
        for ev in new:
            self.hlc.observe(ev.hlc)
            self.state.apply(ev)
            for fn in list(self.listeners):
                fn(ev)
        return new

    def capabilities(self) -> dict[str, Any]:
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        return {"name": self.name, "http": self.http_url, "calls": sorted(self.catalog),
                "slots": self.cfg.slots, "cores": os.cpu_count() or 1, "mem_mb": mem_mb,
                "gpu": Path("/dev/nvidia0").exists()}

    async def start(self) -> None:
        await self.executor.start()
        caps = self.capabilities()
        mine = self.state.members.get(self.peer_id)
        if mine is None or mine.payload != caps:
            self.emit(EventType.MEMBER, caps)
        await self.scheduler.start()

    async def close(self) -> None:
        await self.scheduler.close()
        await self.executor.close()
        self.log.close()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.close())

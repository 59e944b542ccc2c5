"""Wires the components of one peer and starts and stops them in order.

`Node.emit` is the one way local changes enter the state: the event is folded and
announced to listeners (scheduler, SSE) at once; it is written to SQLite and pushed to
peers at the end of the loop turn, with every other event of that turn (one transaction,
one frame). Nothing leaves the process before it is on disk: `flush` runs first wherever
our heads or events are read for others (heartbeats, anti-entropy, acknowledged
submissions). A crash loses at most the events of the current loop turn, which no other
peer has seen. Loop-owned.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from peer.config import PeerConfig, parse_hostport
from peer.errors import ConfigError
from peer.ipfs.fetch import Fetcher
from peer.ipfs.kubo import KuboMirror, KuboStore
from peer.ipfs.replicate import Replicator, mirrored
from peer.ipfs.store import StoreConfig, open_store
from peer.jobs.executor import Executor, ExecutorConfig
from peer.jobs.scheduler import Scheduler, SchedulerConfig
from peer.log import HLC, Event, EventLog, EventType, MeshState
from peer.mesh.discovery import Discovery, DiscoveryConfig, build_txt, mesh_hash
from peer.mesh.gossip import Gossip, GossipConfig, zmq_transport
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
        store_cfg = StoreConfig(str(cfg.data_dir / "store"), cfg.store, cfg.ipfs_api)
        self.store = open_store(store_cfg)
        self.executor = Executor(ExecutorConfig(
            slots=cfg.slots, default_timeout_s=cfg.task_timeout_s,
            memory_limit_mb=cfg.worker_memory_mb,
            preload=("peer.jobs.runner", *sorted({d.module for d in self.catalog.values()}),
                     *(("tasks.warmup",) if cfg.warm_workers else ()))))  # warmup: last
        self.mesh_id = mesh_hash(cfg.mesh_name)
        self.heard_at: dict[str, float] = {}  # peer id -> local monotonic time last heard
        self.infos: dict[str, Mapping[str, Any]] = {}  # peer id -> last heartbeat info
        self.fetcher = Fetcher(self.store, self.peer_urls, self._providers, self.peer_id)
        self.scheduler = Scheduler(
            SchedulerConfig(store=store_cfg,
                            task_modules=cfg.task_modules, max_attempts=cfg.max_attempts,
                            fetch_allow=cfg.fetch_allow,
                            lease_s=cfg.lease_s, task_timeout_s=cfg.task_timeout_s),
            self.peer_id, self.state, self.emit, self.store, self.executor, self.catalog,
            self.fetcher, peers=self.live_peers)
        self.listeners: list[Listener] = [self.scheduler.poke]
        self._unflushed: list[Event] = []  # emitted, folded, not yet in SQLite nor pushed
        self._log_closed = False
        self.replicator = Replicator(self.peer_id, cfg.replicas, self.live_peers,
                                     self._providers, self.fetcher, self.store, self.emit,
                                     outputs=self._outputs)
        self.listeners.append(self.replicator.on_event)
        self.kubo: KuboMirror | None = None  # --store kubo: write-through mirror into Kubo
        if isinstance(self.store, KuboStore):
            kubo = self.kubo = KuboMirror(self.store, self.peer_id, self.live_peers,
                                          self._providers)
            self.fetcher.first.append(kubo.fetch)
            self.listeners.append(lambda ev: kubo.mirror(mirrored(ev, self.peer_id)))
        self.http_url = ""
        self.gossip: Gossip | None = None
        self.discovery: Discovery | None = None
        self.closed = False

    def emit(self, typ: EventType, payload: dict[str, Any]) -> Event:
        """Fold a local event and tell the listeners now; persist and push it at the end
        of this loop turn (at once when no loop runs)."""
        ev = Event(self.peer_id, self.state.heads.get(self.peer_id, 0) + 1, self.hlc.now(),
                   typ, payload)
        self.state.apply(ev)
        self._unflushed.append(ev)
        if len(self._unflushed) == 1:  # the first of this turn: flush at its end
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop: nothing batches, write through
                self.flush()
        for fn in list(self.listeners):
            fn(ev)
        return ev

    def flush(self) -> None:
        """Persist the local events emitted since the last flush (one transaction), then
        push them to peers (one frame each, split only by the frame size bound)."""
        if not self._unflushed or self._log_closed:
            return  # after close nothing more is written (the scheduler is stopped first)
        events, self._unflushed = self._unflushed, []
        self.log.append(events)
        if self.gossip is not None:
            self.gossip.broadcast(events)

    def merge(self, events: Sequence[Event]) -> list[Event]:
        """Fold remote events; returns the new ones (persisted first). Never blocks."""
        new = [e for e in events if e.id not in self.state.events]
        self.log.append(new)
        for ev in new:
            self.hlc.observe(ev.hlc)
            self.state.apply(ev)
            for fn in list(self.listeners):
                fn(ev)
        if self.gossip is not None and any(e.type == EventType.JOB_SUBMITTED for e in new):
            self.gossip.heartbeat()  # carries our heads: acknowledges the submission now
        return new

    def acks(self, seq: int) -> int:
        """How many live peers hold our event `seq` (from the heads in their heartbeats)."""
        return sum(1 for i in self.live_peers().values()
                   if int(i.get("heads", {}).get(self.peer_id, 0)) >= seq)

    async def submitted(self, ev: Event) -> int:
        """Wait (bounded) until `submit_acks` live peers hold `ev`; returns the count seen."""
        self.flush()
        want = min(self.cfg.submit_acks, len(self.live_peers()))
        deadline = time.monotonic() + self.cfg.ack_timeout_s
        while (n := self.acks(ev.seq)) < want and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
        return n

    # -- EventSink and MemberSink for gossip -----------------------------------------------
    def heads(self) -> Mapping[str, int]:
        self.flush()
        return self.state.heads

    def events_after(self, vv: Mapping[str, int], limit: int) -> list[Event]:
        self.flush()
        return self.state.events_after(vv, limit)

    def heard(self, peer_id: str, info: Mapping[str, Any]) -> None:
        """A heartbeat: note liveness and load; renews the leases of that peer's claims."""
        self.heard_at[peer_id] = time.monotonic()
        self.infos[peer_id] = info
        running = info.get("running")
        self.scheduler.heard(peer_id, running if isinstance(running, list) else None)

    def live_peers(self) -> dict[str, Mapping[str, Any]]:
        """Other peers the gossip layer currently holds alive, with their heartbeat info."""
        if self.gossip is None:
            return {}
        return {p: self.infos.get(p, i) for p, i in self.gossip.live_peers().items()
                if p != self.peer_id and i.get("status", "alive") == "alive"}

    def peer_urls(self) -> dict[str, str]:
        return {p: str(i["http"]) for p, i in self.live_peers().items() if i.get("http")}

    def _outputs(self) -> list[tuple[str, str]]:
        """(output CID, producer) of every task output computed in the mesh."""
        return [(e.payload["output"], e.origin) for e in self.state.task_done.values()
                if not e.payload.get("cached")]

    def _providers(self, cid: str) -> set[str]:
        return self.state.providers.get(cid, set())

    @property
    def workers(self) -> dict[str, int]:
        """Worker slots and how many are ready (fewer while they start or warm up)."""
        return {"slots": self.executor.slots, "ready": self.executor.ready_workers}

    def local_info(self) -> dict[str, Any]:
        """What our heartbeats carry: load and running chunks."""
        self.flush()  # the heads below must be on disk
        return {"name": self.name, "http": self.http_url, "calls": sorted(self.catalog),
                "slots": self.cfg.slots, "free_slots": self.scheduler.free_slots,
                "running": [list(k) for k in self.scheduler.running],
                "heads": dict(self.state.heads), **(self.kubo.info() if self.kubo else {})}

    def capabilities(self) -> dict[str, Any]:
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        return {"name": self.name, "http": self.http_url, "calls": sorted(self.catalog),
                "slots": self.cfg.slots, "cores": os.cpu_count() or 1, "mem_mb": mem_mb,
                "gpu": Path("/dev/nvidia0").exists()}

    async def start(self) -> None:
        if self.kubo is not None:
            await self.kubo.start()  # ConfigError naming --ipfs-api if Kubo is unusable
        # Warm workers: the forkserver warms up while the peer starts (runs queue meanwhile).
        await self.executor.start(wait=not self.cfg.warm_workers)
        await self._start_mesh()
        caps = self.capabilities()
        mine = self.state.members.get(self.peer_id)
        if mine is None or mine.payload != caps:
            self.emit(EventType.MEMBER, caps)
        await self.scheduler.start()
        self.replicator.start()

    async def _start_mesh(self) -> None:
        cfg = self.cfg
        host, _ = parse_hostport(cfg.gossip, "gossip")
        wildcard = host in ("0.0.0.0", "::", "*")
        advertise = (cfg.mdns_interfaces[0] if cfg.mdns_interfaces
                     else socket.gethostbyname(socket.gethostname())) if wildcard else None
        try:
            gcfg = GossipConfig.lan(bind=cfg.gossip, advertise_host=advertise,
                                    mesh_id=self.mesh_id, secret=cfg.secret)
        except ValueError as e:
            raise ConfigError(f"gossip: {e}", field="gossip") from None
        self.gossip = Gossip(gcfg, zmq_transport(gcfg), self, self, self.peer_id,
                             local_info=self.local_info)
        await self.gossip.start()
        for addr in cfg.join:
            self.gossip.add_peer(addr)
        if not cfg.mdns:
            return
        # A peer whose gossip listens on one address announces itself only there.
        ifaces = cfg.mdns_interfaces or (() if wildcard else (host,))
        caps = self.capabilities()
        port = parse_hostport(self.http_url.removeprefix("http://"), "http")[1] \
            if self.http_url else 0
        txt = build_txt(gossip=self.gossip.address, http_port=port, calls=caps["calls"],
                        cores=caps["cores"], free_slots=self.scheduler.free_slots,
                        mem_mb=caps["mem_mb"], gpu=caps["gpu"])
        gossip = self.gossip
        self.discovery = Discovery(DiscoveryConfig(interfaces=tuple(ifaces)), self.peer_id,
                                   txt, on_add=lambda addr, _txt: gossip.add_peer(addr),
                                   on_remove=gossip.remove_peer, mesh_id=self.mesh_id)
        await self.discovery.start()

    async def close(self) -> None:
        """Stop everything in reverse order of start; idempotent."""
        if self.closed:
            return
        self.closed = True
        if self.discovery is not None:
            await self.discovery.close()
        await self.scheduler.close()
        if self.gossip is not None:
            await self.gossip.close()
        await self.replicator.close()
        if self.kubo is not None:
            await self.kubo.close()
        await self.fetcher.close()
        await self.executor.close()
        self.flush()
        self._log_closed = True
        self.log.close()

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.close())

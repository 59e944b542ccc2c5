"""The Prometheus `/metrics` of one peer: a registry of its own (never the process-global one)
whose gauges are read from the peer when scraped, and counters fed by its event listener.
Loop-owned: the listener and the scrape run on the event loop."""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from peer import gcpace
from peer.log import ChunkDone, ChunkFailed, Claim, Event, FailureKind, MeshState
from peer.log.lanes import peer_of

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Task (chunk) run durations, seconds: from an ECHO's few ms to a LEARN's minutes.
DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                      60.0, 300.0, 1800.0)
# Gossip counters exported, by metric name -> the GossipStats field.
_GOSSIP = {"frames_received": "frames_in", "frames_sent": "frames_out",
           "gossip_bytes_received": "bytes_in", "gossip_bytes_sent": "bytes_out",
           "events_received": "events_in", "events_new": "events_new",
           "events_sent": "events_out", "swim_unanswered": "swim_unanswered"}


class StatsView(Protocol):
    def as_dict(self) -> Mapping[str, int]: ...


class GossipView(Protocol):
    @property
    def stats(self) -> StatsView: ...
    def live_peers(self) -> Mapping[str, Mapping[str, Any]]: ...  # peer id -> info, "status"
    def left_peers(self) -> frozenset[str]: ...


class MetricsHost(Protocol):
    """What the metrics read of the peer (peer.node.Node), at scrape time."""

    @property
    def peer_id(self) -> str: ...
    @property
    def state(self) -> MeshState: ...
    @property
    def gossip(self) -> GossipView | None: ...
    def log_health(self) -> Mapping[str, Any]: ...  # events, refused, quarantined, unknown
    def durability(self) -> Mapping[str, Any]: ...  # unwritten events, corrupt blocks
    def load(self) -> Mapping[str, int]: ...  # runs, queues, slots, bytes, malloc trims
    def events_made(self) -> int: ...  # our stream's seq and our lanes'


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"banzai_{name}", doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"banzai_{name}", doc, value=value)


def member_state(pid: str, host: MetricsHost, live: Mapping[str, Mapping[str, Any]],
                 left: frozenset[str]) -> str:
    """One member's state as shown to operators: self, alive, suspect, left, dead, revoked."""
    if pid == host.peer_id:
        return "self"
    if pid in host.state.revoked:
        return "revoked"
    if pid in live:
        return str(live[pid].get("status", "alive"))
    return "left" if pid in left else "dead"


def member_states(host: MetricsHost) -> dict[str, int]:
    """Members known to the log, by state (member_state); dead = not heard, not left."""
    live = host.gossip.live_peers() if host.gossip is not None else {}
    left = host.gossip.left_peers() if host.gossip is not None else frozenset()
    out = {"self": 0, "alive": 0, "suspect": 0, "left": 0, "dead": 0, "revoked": 0}
    for pid in {*host.state.members, *live}:
        state = member_state(pid, host, live, left)
        out[state] = out.get(state, 0) + 1
    return out


class _Sampled(Collector):
    """Gauges and counters read from the peer when scraped (no cost between scrapes)."""

    def __init__(self, host: MetricsHost) -> None:
        self.host = host

    def collect(self) -> Iterator[Metric]:
        h = self.host
        members = GaugeMetricFamily("banzai_members", "Members of the mesh by state",
                                    labels=["state"])
        for state, n in sorted(member_states(h).items()):
            members.add_metric([state], n)
        yield members
        # each read once a scrape (a load reads the log file's size and free pages)
        stats = h.gossip.stats.as_dict() if h.gossip is not None else {}
        load = h.load()
        yield from self._log(h, h.log_health(), load, stats)
        for name, key in _GOSSIP.items():
            yield _counter(name, f"Gossip {key} (GossipStats)", stats.get(key, 0))
        dropped = CounterMetricFamily("banzai_frames_dropped", "Gossip frames refused, by reason",
                                      labels=["reason"])
        for key, n in sorted(stats.items()):
            if key.startswith("dropped_"):
                dropped.add_metric([key.removeprefix("dropped_")], n)
        yield dropped
        yield _gauge("runs_active", "Chunks this peer claimed: running, queued or fetching",
                     load.get("runs", 0))
        yield _gauge("executor_queued", "Runs waiting for a free worker", load.get("queued", 0))
        yield _gauge("tasks_starved", "Tasks with a claimable chunk but no free slot here",
                     load.get("starved", 0))
        yield _gauge("slots", "Worker slots", load.get("slots", 0))
        yield _gauge("slots_usable", "Worker slots that can run (fewer while workers given "
                     "up hold slots; 0: no run can start here, also while worker starts fail)",
                     load.get("usable_slots", 0))
        yield _gauge("workers_ready", "Workers ready (fewer while they start)",
                     load.get("ready", 0))
        yield _gauge("workers_given_up", "Workers given up (they outlived their SIGKILL: a "
                     "hung file system or device) that have not exited", load.get("given_up", 0))
        yield _gauge("worker_starts_failed", "Worker starts that failed in a row (0 once one "
                     "is ready; from 3 with none ready, no run can start here)",
                     load.get("failed_starts", 0))
        yield _counter("fetched_bytes", "Bytes of DAGs fetched from other peers",
                       load.get("fetched_bytes", 0))
        yield _counter("malloc_trims", "Trims of the C allocator's free memory (glibc "
                       "malloc_trim, after storage cycles)", load.get("malloc_trims", 0))
        yield _counter("malloc_trim_freed_bytes", "Resident bytes the trims gave back (RSS "
                       "before - after)", load.get("malloc_trim_freed_bytes", 0))
        yield _counter("malloc_trim_seconds", "Time spent in the trims",
                       load.get("malloc_trim_us", 0) / 1e6)
        yield _gauge("malloc_trim_rss_after_bytes", "Resident bytes of the peer right after "
                     "its last trim (0 before the first)",
                     load.get("malloc_trim_rss_after_bytes", 0))
        if (gcs := gcpace.stats()) is not None:  # (a peer's process: peer.main applied it)
            count = CounterMetricFamily("banzai_gc_collections", "Collections of Python's "
                                        "cyclic garbage collector, by generation (0 young, "
                                        "2 old)", labels=["generation"])
            took = CounterMetricFamily("banzai_gc_seconds", "Time those collections took",
                                       labels=["generation"])
            for gen in range(3):
                count.add_metric([str(gen)], gcs.collections[gen])
                took.add_metric([str(gen)], gcs.seconds[gen])
            yield count
            yield took
            yield _gauge("gc_young_allocs", "Net allocations between young collections "
                         "(--gc-young-allocs; Python's own: 700)", gc.get_threshold()[0])

    def _log(self, h: MetricsHost, health: Mapping[str, Any], load: Mapping[str, int],
             stats: Mapping[str, int]) -> Iterator[Metric]:
        yield _gauge("log_events", "Events held in the log (folded or kept)",
                     health.get("events", 0))
        yield _gauge("log_bytes", "Bytes of the SQLite log (database and WAL)",
                     load.get("log_bytes", 0))
        yield _gauge("log_free_bytes", "Bytes of free pages in the SQLite log, given back to the "
                     "disk a few MB after each compaction pass", load.get("log_free_bytes", 0))
        yield _counter("log_vacuumed_pages", "SQLite log pages given back to the disk since "
                       "start (incremental vacuum)", load.get("log_vacuumed_pages", 0))
        check = health.get("check", {})
        yield _gauge("log_check_problems", "Problems the last integrity check of the SQLite log "
                     "found (PRAGMA quick_check; 0 if sound or not yet checked)",
                     len(check.get("problems", ())))
        durability = h.durability()
        yield _gauge("log_unwritten_events", "Local events not yet written to the log",
                     durability.get("unwritten_events", 0))
        yield _gauge("log_unsynced_received_events",
                     "Received events whose fsync failed, rewritten until one succeeds",
                     durability.get("unsynced_received", 0))
        held = GaugeMetricFamily("banzai_memory_entries",
                                 "Entries of the fold's tables in memory, by table",
                                 labels=["table"])
        for table, n in sorted(h.state.sizes().items()):
            held.add_metric([table], n)
        yield held
        yield _counter("events_emitted", "Events this peer made (its own seq)", h.events_made())
        dropped = CounterMetricFamily("banzai_events_dropped",
                                      "Events refused at the door or let go, by reason",
                                      labels=["reason"])
        refused: Mapping[str, Any] = health.get("refused", {})
        by_reason = {f"door_{r}": int(n) for r, n in refused.get("by_reason", {}).items()}
        unknown = health.get("unknown", {})
        by_reason["unknown_type_cap"] = int(unknown.get("dropped", 0))
        by_reason["malformed_or_unsigned"] = int(stats.get("events_refused", 0))
        for reason, n in sorted(by_reason.items()):
            dropped.add_metric([reason], n)
        yield dropped
        yield _gauge("log_quarantined", "Rows the quarantine holds",
                     int(health.get("quarantined", 0)))
        quarantine: Mapping[str, Any] = health.get("quarantine", {})
        yield _gauge("log_quarantine_bytes", "Bytes the quarantine holds (payloads, reasons)",
                     int(quarantine.get("bytes", 0)))
        yield _counter("log_quarantine_dropped", "Quarantined rows let go, the oldest first, "
                       "to stay within the quarantine's bounds", int(quarantine.get("dropped", 0)))
        yield _gauge("log_unknown_events", "Events of newer types held, not folded",
                     unknown.get("events", 0))
        compaction: Mapping[str, Any] = health.get("compaction", {})
        yield _gauge("compaction_unindexed_events", "Events that left memory whose cache "
                     "entries wait for the job index", compaction.get("unindexed", 0))
        yield _counter("compaction_index_failures", "Compaction passes that could not write "
                       "the job index", compaction.get("index_failures", 0))


class Metrics:
    """One peer's registry: `on_event` is its listener (the node's listeners call it with
    every folded event), `render` the text exposition."""

    def __init__(self, host: MetricsHost) -> None:
        self.host = host
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Sampled(host))
        self.claims = Counter("banzai_claims", "Claims folded, by whose",
                              ["by"], registry=self.registry)
        self.outcomes = Counter("banzai_chunks", "Chunk outcomes folded, by whose and outcome",
                                ["by", "outcome"], registry=self.registry)
        self.leases_lost = Counter("banzai_leases_lost", "Claims failed because their lease "
                                   "lapsed (CHUNK_FAILED kind lease)", registry=self.registry)
        self.durations = Histogram("banzai_task_duration_seconds",
                                   "Run time of the chunks this peer ran", registry=self.registry,
                                   buckets=DURATION_BUCKETS_S)
        # the labelled series, each made at its first use (as `labels` makes it: a series
        # never counted is not exposed); `labels` costs a lock and a tuple per call, and
        # every peer counts every claim and outcome of the mesh
        self._series: dict[tuple[int | str, ...], Any] = {}  # (id of the metric, *labels) -> series

    def _count(self, metric: Counter, *labels: str) -> None:
        key: tuple[int | str, ...] = (id(metric), *labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = metric.labels(*labels)
        series.inc()

    def on_event(self, ev: Event) -> None:
        """Listener: count claims, outcomes, lapsed leases; time our own runs (ours: of our
        stream or of one of our lanes)."""
        b = ev.body
        t = type(b)
        if t is not Claim and t is not ChunkDone and t is not ChunkFailed:
            return
        by = "self" if peer_of(ev.origin) == self.host.peer_id else "others"
        if isinstance(b, Claim):
            self._count(self.claims, by)
        elif isinstance(b, ChunkDone):
            self._count(self.outcomes, by, "done")
            if by == "self" and b.s is not None:
                self.durations.observe(b.s)
        elif isinstance(b, ChunkFailed):
            self._count(self.outcomes, by, "failed")
            if b.kind == FailureKind.LEASE:
                self.leases_lost.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

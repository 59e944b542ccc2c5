"""/metrics (peer/http/metrics.py): a per-peer registry whose samples follow the peer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from peer.http.metrics import Metrics
from peer.log import Event, EventType, MeshState
from peer.log.lanes import lane

BASE = {"job": "j", "task": "t", "split": ["a", 1], "chunk": 0, "attempt": 0}


@dataclass
class Stats:
    d: dict[str, int] = field(default_factory=lambda: {
        "events_in": 5, "events_out": 7, "bytes_in": 100, "bytes_out": 200,
        "dropped_bad_mac": 2, "events_refused": 1})

    def as_dict(self) -> Mapping[str, int]:
        return self.d


@dataclass
class Gossip:
    stats: Stats = field(default_factory=Stats)
    live: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "b": {"status": "alive"}, "c": {"status": "suspect"}})

    def live_peers(self) -> Mapping[str, Mapping[str, Any]]:
        return self.live

    def left_peers(self) -> frozenset[str]:
        return frozenset({"e"})


@dataclass
class Host:
    peer_id: str = "a"
    state: MeshState = field(default_factory=MeshState)
    gossip: Gossip | None = field(default_factory=Gossip)

    def log_health(self) -> Mapping[str, Any]:
        return {"events": len(self.state.events), "quarantined": 3,
                "refused": {"by_reason": {"clock": 4}}, "unknown": {"events": 1, "dropped": 6},
                "compaction": {"unindexed": 8, "index_failures": 9},
                "check": {"checks": 1, "ok": False, "problems": ["Page 41: bad", "Page 42"]}}

    def durability(self) -> Mapping[str, Any]:
        return {"unwritten_events": 2}

    def events_made(self) -> int:
        return self.state.heads.get(self.peer_id, 0)

    def load(self) -> Mapping[str, int]:
        return {"runs": 1, "queued": 2, "starved": 3, "slots": 4, "ready": 4,
                "fetched_bytes": 12345, "log_bytes": 4096, "log_free_bytes": 1024,
                "log_vacuumed_pages": 5, "malloc_trims": 3,
                "malloc_trim_freed_bytes": 2**20, "malloc_trim_us": 1500,
                "malloc_trim_rss_after_bytes": 80 * 2**20}


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def member(origin: str, seq: int) -> Event:
    return Event(origin, seq, 1, EventType.MEMBER, {
        "name": origin, "http": "", "calls": [], "slots": 1, "cores": 1, "mem_mb": 1})


def test_samples_follow_the_peer_at_scrape_time() -> None:
    h = Host()
    for i, o in enumerate(["a", "b", "c", "d", "e"]):
        h.state.apply(member(o, 1 + i))
    m = Metrics(h)
    s = samples(m)
    for state, n in {"self": 1, "alive": 1, "suspect": 1, "left": 1, "dead": 1,
                     "revoked": 0}.items():
        assert s[("banzai_members", (("state", state),))] == n
    assert s[("banzai_log_events", ())] == 5
    assert s[("banzai_log_bytes", ())] == 4096
    assert s[("banzai_log_free_bytes", ())] == 1024
    assert s[("banzai_log_vacuumed_pages_total", ())] == 5
    assert s[("banzai_log_check_problems", ())] == 2
    assert s[("banzai_events_received_total", ())] == 5
    assert s[("banzai_events_sent_total", ())] == 7
    assert s[("banzai_events_dropped_total", (("reason", "door_clock"),))] == 4
    assert s[("banzai_events_dropped_total", (("reason", "unknown_type_cap"),))] == 6
    assert s[("banzai_frames_dropped_total", (("reason", "bad_mac"),))] == 2
    assert s[("banzai_executor_queued", ())] == 2
    assert s[("banzai_tasks_starved", ())] == 3
    assert s[("banzai_fetched_bytes_total", ())] == 12345
    assert s[("banzai_compaction_unindexed_events", ())] == 8
    assert s[("banzai_compaction_index_failures_total", ())] == 9
    assert s[("banzai_malloc_trims_total", ())] == 3
    assert s[("banzai_malloc_trim_freed_bytes_total", ())] == 2**20
    assert s[("banzai_malloc_trim_seconds_total", ())] == 0.0015
    assert s[("banzai_malloc_trim_rss_after_bytes", ())] == 80 * 2**20
    h.state.apply(Event("b", 9, 2, EventType.MEMBER, {
        "name": "b", "http": "", "calls": [], "slots": 1, "cores": 1, "mem_mb": 1}))
    assert samples(m)[("banzai_log_events", ())] == 6


def test_the_fold_tables_in_memory_are_shown_by_table() -> None:
    h = Host()
    m = Metrics(h)

    def held(table: str) -> float:
        return samples(m)[("banzai_memory_entries", (("table", table),))]
    assert held("dropped") == held("events") == held("providers") == 0
    h.state.apply(Event("b", 1, 2, EventType.PROVIDE, {"cids": ["c1", "c2", "c3"]}))
    assert held("providers") == 3
    h.state.apply(Event("b", 2, 3, EventType.UNPROVIDE, {"cids": ["c1", "c2"]}))
    assert held("dropped") == 2 and held("events") == 2 and held("providers") == 1
    h.state.forget_drops({"b": 2})  # (as when the UNPROVIDE left the log)
    assert held("dropped") == 0


def test_claims_and_runs_in_our_lanes_are_ours() -> None:
    """With lanes, our claims and outcomes of a lanes job are in our lane ("<peer>/<job>"):
    counted as ours and timed (they were counted as others' and never timed)."""
    me, other, job = "ab" * 8, "cd" * 8, "j" + "0" * 12
    m = Metrics(Host(peer_id=me))
    m.on_event(Event(lane(me, job), 1, 1, EventType.CLAIM, BASE))
    m.on_event(Event(lane(me, job), 2, 2, EventType.CHUNK_DONE, {**BASE, "output": "x", "s": 0.3}))
    m.on_event(Event(lane(other, job), 1, 1, EventType.CLAIM, BASE))
    s = samples(m)
    assert s[("banzai_claims_total", (("by", "self"),))] == 1
    assert s[("banzai_claims_total", (("by", "others"),))] == 1
    assert s[("banzai_chunks_total", (("by", "self"), ("outcome", "done")))] == 1
    assert s[("banzai_task_duration_seconds_count", ())] == 1


def test_listener_counts_claims_outcomes_leases_and_times_own_runs() -> None:
    h = Host()
    m = Metrics(h)
    m.on_event(Event("a", 1, 1, EventType.CLAIM, BASE))
    m.on_event(Event("b", 1, 1, EventType.CLAIM, {**BASE, "chunk": 1}))
    m.on_event(Event("a", 2, 2, EventType.CHUNK_DONE, {**BASE, "output": "x", "s": 0.3}))
    m.on_event(Event("b", 2, 2, EventType.CHUNK_DONE, {**BASE, "output": "x", "s": 9.0}))
    m.on_event(Event("b", 3, 3, EventType.CHUNK_FAILED, {**BASE, "kind": "lease",
                                                         "error": "gone"}))
    m.on_event(member("a", 3))
    s = samples(m)
    assert s[("banzai_claims_total", (("by", "self"),))] == 1
    assert s[("banzai_claims_total", (("by", "others"),))] == 1
    assert s[("banzai_chunks_total", (("by", "others"), ("outcome", "done")))] == 1
    assert s[("banzai_chunks_total", (("by", "others"), ("outcome", "failed")))] == 1
    assert s[("banzai_leases_lost_total", ())] == 1
    assert s[("banzai_task_duration_seconds_count", ())] == 1  # only our own run
    assert s[("banzai_task_duration_seconds_sum", ())] == 0.3
    assert s[("banzai_task_duration_seconds_bucket", (("le", "0.5"),))] == 1
    assert s[("banzai_task_duration_seconds_bucket", (("le", "0.25"),))] == 0


def test_two_peers_in_one_process_keep_their_own_counts() -> None:
    one, two = Metrics(Host()), Metrics(Host(gossip=None))
    one.on_event(Event("a", 1, 1, EventType.CLAIM, BASE))
    assert samples(one)[("banzai_claims_total", (("by", "self"),))] == 1
    assert ("banzai_claims_total", (("by", "self"),)) not in samples(two)
    assert samples(two)[("banzai_events_received_total", ())] == 0
    assert REGISTRY.get_sample_value("banzai_claims_total", {"by": "self"}) is None


def test_each_series_is_looked_up_once_and_exposed_only_once_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    m = Metrics(Host())
    looked: list[tuple[str, ...]] = []
    for metric in (m.claims, m.outcomes):
        real = metric.labels

        def labels(*values: str, _real: Any = real) -> Any:
            looked.append(values)
            return _real(*values)

        monkeypatch.setattr(metric, "labels", labels)
    for i in range(5):
        m.on_event(Event("b", 2 * i + 1, 1, EventType.CLAIM, {**BASE, "chunk": i}))
        m.on_event(Event("b", 2 * i + 2, 2, EventType.CHUNK_DONE,
                         {**BASE, "chunk": i, "output": "x", "s": 0.1}))
    assert sorted(looked) == [("others",), ("others", "done")]
    s = samples(m)
    assert s[("banzai_claims_total", (("by", "others"),))] == 5
    assert s[("banzai_chunks_total", (("by", "others"), ("outcome", "done")))] == 5
    assert ("banzai_claims_total", (("by", "self"),)) not in s  # never counted: not shown
    assert ("banzai_chunks_total", (("by", "others"), ("outcome", "failed"))) not in s


def test_a_scrape_reads_the_peers_load_and_log_health_once() -> None:
    """The load reads the log file's size and free pages (a stat and a query): once a scrape."""
    h = Host()
    calls: list[str] = []
    for name in ("load", "log_health"):
        real = getattr(h, name)

        def counted(_real: Any = real, _name: str = name) -> Any:
            calls.append(_name)
            return _real()

        setattr(h, name, counted)
    Metrics(h).render()
    assert sorted(calls) == ["load", "log_health"]

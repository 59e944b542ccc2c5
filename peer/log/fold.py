"""Replicated mesh state: the event log folded into jobs, tasks, claims, results and cache.

Algorithm. Every change is an immutable Event(origin, seq, hlc, type, payload)
appended to its origin's log; (origin, seq) identifies it; the fold reads only its
typed, validated body (peer.log.events). MeshState.apply is a
fold that is commutative and idempotent: conflicting facts are settled by the
smallest (hlc, origin), monotone facts (progress) by max, sets by union. So any
two peers that hold the same set of events hold the same state whatever the
order of arrival or duplication (a state-based CRDT), which gossip relies on.
Local observations (liveness, lease renewals heard) are not events and live in
the scheduler. Not thread-safe: owned by the event loop.
"""


from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from peer.log.events import (
    CachePut,
    ChunkDone,
    ChunkFailed,
    ChunkKey,
    Claim,
    Event,
    JobCancelled,
    JobSubmitted,
    Member,
    Progress,
    Provide,
    Renew,
    TaskDone,
    TaskKey,
    TaskSplit,
    TaskSplitRef,
)


@dataclass
class ChunkState:
    claims: dict[int, list[Event]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[int, Event] = field(default_factory=dict)
    done: Event | None = None
    progress: dict[int, float] = field(default_factory=dict)

    def winner(self, attempt: int, split: tuple[str, int] | None) -> Event | None:
        """The valid claim of `attempt` (on the winning split) with the smallest order."""
        cs = [c for c in self.claims.get(attempt, ()) if split is None
              or c.body_as(Claim).split == split]
        return min(cs, key=lambda e: e.order) if cs else None

    @property
    def attempt(self) -> int:
        """The current attempt: one past the last failed one."""
        return max(self.failures, default=-1) + 1


@dataclass
class MeshState:
    """The fold of all events seen (see the module docstring for the conflict rules)."""

    events: dict[tuple[str, int], Event] = field(default_factory=dict)
    jobs: dict[str, Event] = field(default_factory=dict)
    cancelled: dict[str, Event] = field(default_factory=dict)
    splits: dict[TaskKey, Event] = field(default_factory=dict)
    chunks: dict[ChunkKey, ChunkState] = field(default_factory=lambda: defaultdict(ChunkState))
    task_done: dict[TaskKey, Event] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # item key -> {"n": name, "c": cid}
    _cache_src: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    # Task key -> whole output CID. Apart from the item cache: a per-item task fed one file
    # has the same key as that file's item, and the two values must not shadow each other.
    outputs: dict[str, str] = field(default_factory=dict)
    _outputs_src: dict[str, tuple[int, str, int]] = field(default_factory=dict)
    providers: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    members: dict[str, Event] = field(default_factory=dict)
    by_origin: dict[str, dict[int, Event]] = field(default_factory=lambda: defaultdict(dict))
    heads: dict[str, int] = field(default_factory=dict)  # origin -> highest contiguous seq

    def apply(self, ev: Event) -> bool:
        """Fold one event in; False if it was already known (idempotent)."""
        if ev.id in self.events:
            return False
        self.events[ev.id] = ev
        log = self.by_origin[ev.origin]
        log[ev.seq] = ev
        head = self.heads.get(ev.origin, 0)
        while head + 1 in log:
            head += 1
        self.heads[ev.origin] = head
        b = ev.body
        _APPLY[type(b)](self, ev, b)
        return True

    def events_after(self, vv: dict[str, int] | Any, limit: int) -> list[Event]:
        """Events with seq above `vv[origin]` (a version vector), oldest first, at most limit."""
        out: list[Event] = []
        for origin, log in self.by_origin.items():
            have = vv.get(origin, 0)
            out.extend(e for q, e in log.items() if q > have)
        out.sort(key=lambda e: e.order)
        return out[:limit]

    # -- helpers used by the appliers -------------------------------------------------
    def _first(self, table: dict[Any, Event], key: Any, ev: Event) -> None:
        cur = table.get(key)
        if cur is None or ev.order < cur.order:
            table[key] = ev

    @staticmethod
    def _merge_first(table: dict[str, Any], srcs: dict[str, tuple[int, str, int]],
                     entries: Mapping[str, Any], ev: Event) -> None:
        # Values for one key should be equal (content-addressed); if a buggy or
        # non-deterministic task disagrees, the earliest event wins everywhere.
        for k, v in entries.items():
            src = srcs.get(k)
            if src is None or ev.order < src:
                table[k] = v
                srcs[k] = ev.order

    def chunk(self, job: str, task: str, chunk: int) -> ChunkState:
        """Chunk `chunk` of the winning split of a task (events about chunks of a losing
        split, made by a peer that split concurrently, are kept apart and never count)."""
        sid = self.split_id(job, task)
        if sid is None:
            return ChunkState()
        return self.chunks[ChunkKey(job, task, sid[0], sid[1], chunk)]

    def split_id(self, job: str, task: str) -> tuple[str, int] | None:
        s = self.splits.get((job, task))
        return s.id if s else None


def _job(s: MeshState, ev: Event, b: JobSubmitted) -> None:
    s._first(s.jobs, b.job, ev)


def _cancel(s: MeshState, ev: Event, b: JobCancelled) -> None:
    s._first(s.cancelled, b.job, ev)


def _split(s: MeshState, ev: Event, b: TaskSplit | TaskSplitRef) -> None:
    s._first(s.splits, (b.job, b.task), ev)


def _claim(s: MeshState, ev: Event, b: Claim) -> None:
    s.chunks[b.key].claims[b.attempt].append(ev)


def _renew(s: MeshState, ev: Event, b: Renew) -> None:
    pass  # liveness only: the scheduler notes when it heard it


def _progress(s: MeshState, ev: Event, b: Progress) -> None:
    c = s.chunks[b.key]
    c.progress[b.attempt] = max(c.progress.get(b.attempt, 0.0), b.progress)


def _chunk_done(s: MeshState, ev: Event, b: ChunkDone) -> None:
    c = s.chunks[b.key]
    # The latest attempt's wins (a chunk reopened because its results were lost is done
    # again by a later attempt), then the earliest.
    if c.done is None or (-b.attempt, ev.order) < (-c.done.body_as(ChunkDone).attempt,
                                                   c.done.order):
        c.done = ev
    _merge_items(s, ev, b.cache)
    if b.output:
        s.providers[b.output].add(ev.origin)


def _chunk_failed(s: MeshState, ev: Event, b: ChunkFailed) -> None:
    c = s.chunks[b.key]
    cur = c.failures.get(b.attempt)
    if cur is None or ev.order < cur.order:
        c.failures[b.attempt] = ev


def _task_done(s: MeshState, ev: Event, b: TaskDone) -> None:
    s._first(s.task_done, (b.job, b.task), ev)
    if not b.cached:
        s.providers[b.output].add(ev.origin)
    if b.key:
        s._merge_first(s.outputs, s._outputs_src, {b.key: b.output}, ev)


def _cache_put(s: MeshState, ev: Event, b: CachePut) -> None:
    _merge_items(s, ev, b.cache)


def _merge_items(s: MeshState, ev: Event, cache: Mapping[str, Any]) -> None:
    s._merge_first(s.cache, s._cache_src, cache, ev)
    for v in cache.values():
        if isinstance(v, dict) and v.get("c"):
            s.providers[v["c"]].add(ev.origin)  # the peer that made an item holds it


def _provide(s: MeshState, ev: Event, b: Provide) -> None:
    for cid in b.cids:
        s.providers[cid].add(ev.origin)


def _member(s: MeshState, ev: Event, b: Member) -> None:
    cur = s.members.get(ev.origin)
    if cur is None or ev.order > cur.order:  # the newest self-description wins
        s.members[ev.origin] = ev


# Keyed by the body's class: each applier gets the body type it declares.
_APPLY: dict[type, Callable[[MeshState, Event, Any], None]] = {
    JobSubmitted: _job,
    JobCancelled: _cancel,
    TaskSplit: _split,
    TaskSplitRef: _split,
    Claim: _claim,
    Renew: _renew,
    Progress: _progress,
    ChunkDone: _chunk_done,
    ChunkFailed: _chunk_failed,
    TaskDone: _task_done,
    CachePut: _cache_put,
    Provide: _provide,
    Member: _member,
}


def fold(events: Iterable[Event]) -> MeshState:
    s = MeshState()
    for e in events:
        s.apply(e)
    return s


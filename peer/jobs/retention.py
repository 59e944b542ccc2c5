"""Retention (issue 11): which pinned outputs to unpin, which job records to delete and what gc
must keep, as pure functions of the mesh state, the store's pins and a wall-clock time.

The rule. Kept, whatever the bounds: explicit pins (add, pin add, dag import), pins that are no
task's output (a data dir of an older release did not mark its explicit pins; the inline pack's
pins are outputs by how they were made, whatever the mesh still records: one nothing names ages
from when it was pinned, and is kept for UNNAMED_MIN_AGE_S whatever the bounds), and
everything a live job made or still needs. Of the rest (outputs of finished and deleted jobs),
outputs of jobs finished more than `keep_outputs_s` ago are unpinned; then, while the store
holds more than `store_max_bytes`, outputs go oldest job first (however recent); before
them, copies of other peers' failed runs' records a read fetched here (`plan_evictions`:
kept while their job is when no budget is set). Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from peer.errors import ConfigError
from peer.jobs.claims import TaskSkips, task_failed, task_status
from peer.log import (
    ChunkDone,
    ChunkFailed,
    ChunkState,
    Event,
    JobSubmitted,
    MeshState,
    Partial,
    hlc_ms,
)
from peer.log.lanes import peer_of
from peer.log.snapstream import check_facts


@dataclass(frozen=True)
class RetentionConfig:
    """The bounds; None means unbounded (keep forever), today's behaviour."""

    keep_outputs_s: float | None = None
    store_max_bytes: int | None = None
    keep_jobs_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("keep_outputs_s", "store_max_bytes", "keep_jobs_s"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ConfigError(f"{name}: must be >= 0, got {v}", field=name)


@dataclass(frozen=True)
class JobFacts:
    """One job as retention sees it."""

    job: str
    finished_s: float | None  # wall-clock seconds (its events' HLC) when it ended; None: live
    outputs: frozenset[str]  # what its computed tasks produced (retention may unpin these)
    needs: frozenset[str]  # every CID it made or reads: sources, inputs, chunk outputs, items
    # its chunks' run logs kept while the record is: the done runs', and the failed runs'
    # made by the peer that reads the facts (`me`; every one where it is not given)
    logs: frozenset[str]
    # the failed runs' records another peer made (`me` given): a copy here is one a read
    # fetched, a cache. Kept as `logs` are while no store budget is set; under one, counted
    # against it and the first to go (`plan_evictions`; review r1 of session 52, finding 2)
    fetched: frozenset[str] = frozenset()


@dataclass(frozen=True)
class StoreFacts:
    """The store as retention sees it."""

    # pinned CID -> its DAG bytes (0 for each while there is no store budget, which alone
    # reads them: a DAG walk per pin, most of a cycle's reads at 100,000 pins)
    pins: Mapping[str, int]
    explicit: frozenset[str]  # the pins a user made
    used_bytes: int  # every stored block (0 without a store budget)
    # Pins made for task outputs as such (the inline pack's: Store.output_pins) -> when
    # pinned (wall seconds): outputs whatever the mesh still records of them.
    outputs: Mapping[str, float] = field(default_factory=dict)


# -- the decisions ---------------------------------------------------------------------------

# An output pin that no job record or cache entry names (Store.output_pins) is not unpinned,
# under any bound, until this long after it was pinned: its job may not be folded here yet
# (catch-up after a restart, a partition) and would then name it.
UNNAMED_MIN_AGE_S = 3600.0


def plan_unpins(jobs: Sequence[JobFacts], store: StoreFacts, known_outputs: Iterable[str],
                now_s: float, cfg: RetentionConfig) -> list[str]:
    """The pins to remove, in order (see the module docstring). `known_outputs`: every CID
    the mesh recorded as a task's output (the cache's, deleted jobs' included); the store's
    output pins (`StoreFacts.outputs`) are outputs too, recorded or not: one that nothing
    records any more ages from when it was pinned (and is not unpinned before
    UNNAMED_MIN_AGE_S)."""
    outputs = set(known_outputs)
    needed: set[str] = set()
    ended: dict[str, float] = {}  # output -> when the newest finished job using it ended
    for j in jobs:
        if j.finished_s is None:
            needed |= j.needs
            continue
        outputs |= j.outputs
        for c in j.outputs | j.needs:
            ended[c] = max(ended.get(c, j.finished_s), j.finished_s)
    young: set[str] = set()  # output pins nothing names, pinned under UNNAMED_MIN_AGE_S ago
    for c, pinned_s in store.outputs.items():  # (e.g. a replica's copy of a deleted job's
        if c not in outputs and c not in ended:  # inline output whose cache entry went first)
            ended[c] = pinned_s
            if now_s - pinned_s < UNNAMED_MIN_AGE_S:  # (or for a job not folded here yet)
                young.add(c)
        outputs.add(c)
    candidates = sorted((ended.get(c, 0.0), c) for c in store.pins
                        if c in outputs and c not in store.explicit and c not in needed
                        and c not in young)
    unpin: list[str] = []
    if cfg.keep_outputs_s is not None:
        horizon = now_s - cfg.keep_outputs_s
        unpin = [c for t, c in candidates if t < horizon]
    if cfg.store_max_bytes is not None:
        used = store.used_bytes - sum(store.pins[c] for c in unpin)
        gone = set(unpin)
        for _, c in candidates:
            if used <= cfg.store_max_bytes:
                break
            if c not in gone:
                unpin.append(c)
                used -= store.pins[c]
    return unpin


def plan_evictions(jobs: Sequence[JobFacts], sizes: Mapping[str, int], used_bytes: int,
                   cfg: RetentionConfig) -> list[str]:
    """Under a store budget (`store_max_bytes`), the copies of other peers' failed runs'
    records (`JobFacts.fetched`) gc no longer keeps while the store (`used_bytes`) exceeds
    it: oldest job first (live jobs last), as outputs are unpinned, and before any output
    (a copy is a cache: its maker holds the record as a root, and a read fetches it again).
    `sizes`: those held here (DAG bytes); one not in it is not held, or not measured yet
    (kept). None without a budget: each is kept while its job is (as before RR-5: a copy
    may be the only one left once its maker is gone). A record this peer made too (`logs`
    of any job) is never one."""
    if cfg.store_max_bytes is None or used_bytes <= cfg.store_max_bytes:
        return []
    own: set[str] = set()
    ended: dict[str, float] = {}  # copy -> when the newest job naming it ended (inf: live)
    for j in jobs:
        own |= j.logs
        end = float("inf") if j.finished_s is None else j.finished_s
        for c in j.fetched:
            if c in sizes:
                ended[c] = max(ended.get(c, end), end)
    out: list[str] = []
    for _, c in sorted((t, c) for c, t in ended.items() if c not in own):
        if used_bytes <= cfg.store_max_bytes:
            break
        out.append(c)
        used_bytes -= sizes[c]
    return out


def plan_job_deletions(jobs: Sequence[JobFacts], now_s: float, keep_jobs_s: float | None,
                       ) -> list[str]:
    """Finished jobs that ended more than `keep_jobs_s` ago, oldest first."""
    if keep_jobs_s is None:
        return []
    horizon = now_s - keep_jobs_s
    old = [(j.finished_s, j.job) for j in jobs if j.finished_s is not None
           and j.finished_s < horizon]
    return [job for _, job in sorted(old)]


# -- facts from the mesh state ---------------------------------------------------------------

# A split's kept listing (its CID) -> the cached results it lists, or None if it is not read
# here: the results a split keeps are in its event (`kept`) or, when large, in a stored file.
Listed = Callable[[str], Mapping[str, Any] | None]


def _unread(cid: str) -> None:
    return None


def job_facts(state: MeshState, max_attempts: int, listed: Listed = _unread,
              me: str | None = None) -> list[JobFacts]:
    """Every job of the state, live or finished (see `finished_at`); `me`: the peer whose
    gc they are for (another peer's failed run's record fetched here by a read is a cache:
    `JobFacts.fetched`, not `logs`; review rr of session 51, RR-5)."""
    return [_facts(state, job, ev, max_attempts, listed, me)
            for job, ev in state.jobs.items()]


def kept_listings(state: MeshState, job: str) -> list[str]:
    """The kept listings of the splits of `job`'s tasks not done yet (the files their
    assemblies will read the results the splits left out from; a done task's output
    holds those results already)."""
    ev = state.jobs.get(job)
    if ev is None:
        return []
    out = []
    for t in ev.body_as(JobSubmitted).workflow["tasks"]:
        split = state.splits.get((job, t["name"]))
        if (split is not None and split.payload.get("kept_listing")
                and (job, t["name"]) not in state.task_done):
            out.append(str(split.payload["kept_listing"]))
    return out


def archived_facts(job: str, facts: Mapping[str, Any], outputs_too: bool = True,
                   me: str | None = None) -> JobFacts:
    """A compacted job's facts as its record keeps them (finished; outputs, unless not
    `outputs_too`, and logs: those `_made_elsewhere` for `me` left out); ValueError if they
    are not what `record_facts` writes (read back from disk)."""
    check_facts(facts)  # (a snapshot's rows were checked so as they came)
    outputs = frozenset(facts.get("outputs", ()) if outputs_too else ())
    logs = frozenset(facts.get("logs", ()))
    elsewhere = _made_elsewhere(facts.get("failed_by"), me)
    return JobFacts(job, float(facts.get("finished_s", 0.0)), outputs, outputs,
                    logs - elsewhere, frozenset(elsewhere & logs))


def archived_logs(job: str, facts: Mapping[str, Any], me: str | None = None) -> JobFacts:
    """`archived_facts` without the outputs (empty): what a cycle needs of a compacted job
    when no output bound is set (its end, for `plan_job_deletions`, and its run logs, gc
    roots), so that the outputs of every job ever compacted are not held in memory at once
    (review r2 of session 49 H2); ValueError as `archived_facts`."""
    return archived_facts(job, facts, outputs_too=False, me=me)


def _made_elsewhere(failed_by: Any, me: str | None) -> set[str]:
    """Of a compacted job's facts' `failed_by` (`record_facts`), the failed runs' records
    made by a peer other than `me` only: `JobFacts.fetched` here (RR-5: a copy a read
    fetched is a cache, kept unless a store budget evicts it). None where `me` is not
    given, or `failed_by` is absent (an earlier release's facts: every record a root, as
    there) or is not what `record_facts` writes (a member's snapshot row may hold anything:
    read as absent, the reading that keeps more)."""
    if me is None or type(failed_by) is not dict:
        return set()
    out: set[str] = set()
    for peer, cids in failed_by.items():
        if type(peer) is not str or type(cids) is not list or any(
                type(c) is not str for c in cids):
            return set()
        if peer != me:
            out.update(cids)
    return out.difference(failed_by.get(me, ()))


def record_facts(record: Mapping[str, Any], finished_s: float,
                 failed: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """What a finished job's record keeps for retention (`archived_facts` reads it back):
    when it ended, what its computed tasks produced and its chunks' run logs, read off the
    record (`peer.http.views.job_record`) as `job_facts` finds them in the state; and
    (`failed`: `failed_by` of the state, if any) its failed runs' records by the peer that
    made each, so that each peer keeps its own whoever wrote the facts (a snapshot carries
    them: review r2 of session 51, M1). `logs` still lists every record: an earlier
    release keeps each as a root."""
    tasks = record["tasks"]
    out = {"finished_s": finished_s,
           "outputs": sorted({t["output"] for t in tasks if t["state"] == "done"
                              and not t["cid"]}),
           "logs": sorted({c for t in tasks for c in t["logs"]})}
    if failed:
        out["failed_by"] = {p: list(cids) for p, cids in sorted(failed.items())}
    return out


def failed_by(state: MeshState, job: str) -> dict[str, list[str]]:
    """`job`'s failed runs' records (its CHUNK_FAILEDs' `log`) by the peer that made each
    (the failure's origin's: a lane's peer), each sorted, less those a done run's record
    is too (a root on every peer): the same on every peer that folded the same events,
    whichever of them writes the job's facts (the narrowing of session 51, helper g, wrote
    what the writer made: review r2 M1)."""
    ev = state.jobs.get(job)
    if ev is None:
        return {}
    return _run_records(state, job, ev.body_as(JobSubmitted).workflow["tasks"])[1]


def _run_records(state: MeshState, job: str, tasks: Iterable[Mapping[str, Any]],
                 ) -> tuple[set[str], dict[str, list[str]]]:
    """`job`'s chunks' run records, in one walk of its chunks: (every one, `failed_by`)."""
    done: set[str] = set()
    made: dict[str, set[str]] = {}
    for t in tasks:
        for c in _chunks(state, job, t["name"]):
            if c.done is not None and (log := c.done.body_as(ChunkDone).log):
                done.add(log)
            for f in c.failures.values():
                if (log := f.body_as(ChunkFailed).log):
                    made.setdefault(peer_of(f.origin), set()).add(log)
    every = done.union(*made.values())
    return every, {p: sorted(cids - done) for p, cids in made.items() if cids - done}


def _facts(state: MeshState, job: str, ev: Event, max_attempts: int,
           listed: Listed = _unread, me: str | None = None) -> JobFacts:
    """`job_facts` of one job: its chunks walked once for its run records (a second walk
    for `failed_by`, per janitor cycle, was review r1 of session 52, finding 6)."""
    tasks: list[Mapping[str, Any]] = list(ev.body_as(JobSubmitted).workflow["tasks"])
    outputs: set[str] = set()
    needs: set[str] = {str(t["cid"]) for t in tasks if t.get("cid")}
    logs, failed = _run_records(state, job, tasks)  # (failed runs' records: session 51)
    for t in tasks:
        done = state.task_done.get((job, t["name"]))
        if done is not None:
            needs.add(done.payload["output"])
            if not t.get("cid"):
                outputs.add(done.payload["output"])
        for d in _chunks_done(state, job, t["name"]):
            b = d.body_as(ChunkDone)
            needs.update(c for c in [b.output, *_items(b.cache)] if c)
            if b.log:
                logs.add(b.log)
        split = state.splits.get((job, t["name"]))
        if split is not None:
            for ref in ("input", "listing", "kept_listing"):  # (listings: a large split)
                if split.payload.get(ref):
                    needs.add(str(split.payload[ref]))
            # the cached results the split left out, which its assembly reads (inline, or
            # listed in a stored file once that is read here)
            kept = split.payload.get("kept")
            if kept is None and split.payload.get("kept_listing"):
                kept = listed(str(split.payload["kept_listing"]))
            needs.update(_items(kept if isinstance(kept, Mapping) else {}))
        partial = state.partials.get((job, t["name"]))
        if partial is not None:  # the directory the job view shows while the task runs
            needs.add(partial.body_as(Partial).output)
    elsewhere = _made_elsewhere(failed, me)
    return JobFacts(job, finished_at(state, job, tasks, max_attempts), frozenset(outputs),
                    frozenset(needs), frozenset(logs - elsewhere), frozenset(elsewhere))


def _chunks_done(state: MeshState, job: str, task: str) -> Iterator[Event]:
    for c in _chunks(state, job, task):
        if c.done is not None:
            yield c.done
            if c.latest is not None and c.latest is not c.done:  # (what `finished` may
                yield c.latest  # fall back to)


def _items(cache: Mapping[str, Any]) -> Iterator[str]:
    for v in cache.values():
        if isinstance(v, dict) and isinstance(v.get("c"), str):
            yield v["c"]


def finished_at(state: MeshState, job: str, tasks: Sequence[Mapping[str, Any]],
                max_attempts: int, skips: TaskSkips | None = None) -> float | None:
    """When a job ended, in wall-clock seconds (None while live): cancelled, or no task can
    move on (each is done, failed, or waits on a dependency that failed). `skips`: the
    failures each task's count leaves out (a scheduler's view: `claims.TaskSkips`)."""
    cancel = state.cancelled.get(job)
    if cancel is not None:
        return hlc_ms(cancel.hlc) / 1000
    for t in tasks:  # a task that waits for nothing and is not over: live (no full pass)
        if (not t.get("depends") and (job, t["name"]) not in state.task_done
                and not task_failed(state, job, t["name"], max_attempts,
                                    None if skips is None else skips(t["name"]))):
            return None
    status = {str(t["name"]): task_status(state, job, t["name"], max_attempts,
                                       None if skips is None else skips(t["name"]))
              for t in tasks}
    blocked: set[str] = {n for n, s in status.items() if s == "failed"}
    grew = True
    while grew:  # what depends on a failed task, transitively
        grew = False
        for t in tasks:
            if t["name"] not in blocked and any(d in blocked for d in t.get("depends", ())):
                blocked.add(str(t["name"]))
                grew = True
    if any(s != "done" and n not in blocked for n, s in status.items()):
        return None
    end = 0
    for t in tasks:
        done = state.task_done.get((job, t["name"]))
        if done is not None:
            end = max(end, done.hlc)
        for c in _chunks(state, job, t["name"]):
            if c.failures:
                end = max(end, max(f.hlc for f in c.failures.values()))
    return hlc_ms(end or state.jobs[job].hlc) / 1000


def ended_hlc(end_s: float) -> int:
    """A finished job's end (`finished_at`'s wall-clock seconds) as an hlc."""
    return int(end_s * 1000) << 16


def _chunks(state: MeshState, job: str, task: str) -> Iterable[ChunkState]:
    """The chunks of the task's winning split that events are about (none before it is
    split; the others have no outcome), unordered."""
    return state.split_chunks(job, task).values()


def gc_roots(state: MeshState, jobs: Sequence[JobFacts], evicted: Iterable[str] = (),
             ) -> set[str]:
    """What gc keeps besides pins: what live jobs made or need, every kept job's run logs
    (copies of other peers' failed runs' records too, less `evicted`: `plan_evictions`),
    and item results recorded since the oldest live job began (a running chunk's items
    that no event ties to a job yet)."""
    roots: set[str] = set().union(*(j.fetched for j in jobs))
    roots.difference_update(evicted)
    live = [j for j in jobs if j.finished_s is None]
    for j in jobs:
        roots |= j.logs
        if j.finished_s is None:
            roots |= j.needs
    # (a job live when `jobs` were read may have left the state since: cancelled and deleted,
    # or ended and compacted, while the cycle awaited; it runs no chunk any more)
    began = [ev.hlc for j in live if (ev := state.jobs.get(j.job)) is not None]
    if began:
        roots.update(state.cache_since(min(began)))
    return roots

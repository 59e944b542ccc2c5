"""The storage lifecycle of one peer: periodic and on-demand cycles that delete old job records,
unpin outputs past the retention bounds (peer.jobs.retention), collect garbage and tell the mesh
which CIDs this peer no longer holds (UNPROVIDE); and the sweep, at start, of what a kill -9
left. Loop-owned: decisions are made on the loop, store work runs in threads, one cycle at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peer.dataentry import TMP_DIR, check_entry, remove
from peer.errors import BanzaiError, Conflict, NotFound
from peer.ipfs.store import GcHeldBack, GcStats, Store
from peer.jobs.ports import Emit
from peer.jobs.retention import (
    JobFacts,
    RetentionConfig,
    StoreFacts,
    finished_at,
    gc_roots,
    job_facts,
    kept_listings,
    plan_evictions,
    plan_job_deletions,
    plan_unpins,
)
from peer.jsontext import MAX_DEPTH, loads_within
from peer.log import Event, EventType, JobSubmitted, MeshState

log = logging.getLogger("banzai.janitor")

MAX_UNPROVIDE_CIDS = 10_000  # per UNPROVIDE event
# What a kill -9 leaves in a peer's data dir: HTTP and Kubo RPC uploads, the executor's run
# directories (under work/), snapshot downloads (peer.catchup's spools under tmp/); the store
# sweeps its own. A directory that holds them (work/, tmp/) must be one of its own: the sweep
# never deletes through a symlink.
WORK_DIR = "work"  # the executor's (peer.node)
STALE = (("upload-*", "upload dirs"), ("kubo-add-*", "upload dirs"),
         ("kubo-dag-import-*", "upload dirs"), (f"{WORK_DIR}/*", "work dirs"),
         (f"{TMP_DIR}/snapshot-*", "snapshot spools"))


@dataclass(frozen=True)
class JanitorConfig:
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    max_attempts: int = 3
    gc_interval_s: float = 600.0  # 0: only on demand
    gc_grace_s: float = 300.0  # blocks written this recently are never collected


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did."""

    deleted_jobs: tuple[str, ...] = ()
    unpinned: tuple[str, ...] = ()
    gc: GcStats = field(default_factory=GcStats)
    unprovided: int = 0
    # What held the cycle back, nothing collected: live jobs' kept listings not read, or
    # the blocks a pin reaches that cannot be read (GcHeldBack: the pin, the block, its file)
    held_back: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"deleted_jobs": list(self.deleted_jobs), "unpinned": list(self.unpinned),
                "blocks": self.gc.blocks, "bytes": self.gc.bytes, "unprovided": self.unprovided,
                "held_back": list(self.held_back)}


Hook = Callable[[Sequence[str]], Awaitable[None]]


class Janitor:
    """Runs lifecycle cycles for one peer; `start` begins the periodic ones."""

    def __init__(self, cfg: JanitorConfig, peer_id: str, state: MeshState, store: Store,
                 emit: Emit, wall: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.peer_id = peer_id
        self.state = state
        self.store = store
        self.emit = emit
        self.wall = wall
        self.on_unpinned: list[Hook] = []  # e.g. unpin in Kubo too
        self.after_gc: list[Callable[[], Awaitable[None]]] = []  # e.g. Kubo's repo gc
        self.forget: list[Callable[[], None]] = []  # after blocks went: drop memos of them
        # The facts of compacted jobs (their records are in the job index, not the state): a
        # blocking read of every record, run in a thread (`_jobs`; on the loop it stalled
        # it 2.6 s at a month of records, review r2 of session 49 H2).
        self.archived: Callable[[], list[JobFacts]] = list
        # What the job index lists beyond memory (blocking reads, run in a thread): the CIDs
        # it lists us as a provider of, and its output cache entries' CIDs.
        self.archived_cids: Callable[[], Iterable[str]] = tuple
        self.archived_outputs: Callable[[], Iterable[str]] = tuple
        # Brings DAGs here from the peers that provide them (the fetcher's `ensure`): a live
        # job's kept listing, read before deciding what it still needs.
        self.fetch: Callable[[Sequence[str]], Awaitable[None]] | None = None
        self._listed: dict[str, Mapping[str, Any]] = {}  # live jobs' kept listings, read
        self.last: CycleReport | None = None
        # What held the last gc back (a cycle's or `collect`'s; empty once one collects):
        # /api/health's `storage`
        self.held_back: tuple[str, ...] = ()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    def bounds(self) -> dict[str, Any]:
        """The retention bounds set (None: unset, kept for ever) and `unbounded`: what this
        peer keeps for ever as configured ("job records" without --keep-jobs-days, "outputs"
        without --keep-outputs-days nor --store-max-gb): /api/health's `storage.bounds`."""
        ret = self.cfg.retention
        day = 86400.0
        out: dict[str, Any] = {
            "keep_jobs_days": None if ret.keep_jobs_s is None else ret.keep_jobs_s / day,
            "keep_outputs_days": (None if ret.keep_outputs_s is None
                                  else ret.keep_outputs_s / day),
            "store_max_gb": None if ret.store_max_bytes is None else ret.store_max_bytes / 1e9}
        out["unbounded"] = ([] if ret.keep_jobs_s is not None else ["job records"]) + (
            [] if ret.keep_outputs_s is not None or ret.store_max_bytes is not None
            else ["outputs"])
        return out

    async def start(self) -> None:
        unbounded = self.bounds()["unbounded"]
        if unbounded:  # (once, at start: review r2 of session 49 M1)
            log.warning(
                "storage: no bound on %s: this peer keeps them for ever (each job of 50 tasks "
                "adds ~70 KB of log and inline pack and 50 pins, ~3 GB a month at one job a "
                "minute); set --keep-jobs-days and --keep-outputs-days or --store-max-gb "
                "(README, \"Running a peer\")", " and ".join(unbounded))
        if self.cfg.gc_interval_s > 0:
            self._task = asyncio.create_task(self._loop(), name="janitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.gc_interval_s)
            try:
                await self.cycle()
            except BanzaiError as e:  # the store could not be read (e.g. its inline pack)
                log.error("storage lifecycle cycle failed: %s", e)
            except Exception:  # a failed cycle must not end the periodic ones
                log.exception("storage lifecycle cycle failed")

    async def _jobs(self) -> list[JobFacts]:
        """Every job: those of the state, read on the loop, then the compacted ones, read in
        a thread (`archived`): a job compacted meanwhile left the state after its record
        was written, so the read that follows finds it (the reverse order could miss it,
        and gc would free its run logs)."""
        live = job_facts(self.state, self.cfg.max_attempts, self._listed.get, self.peer_id)
        return live + await asyncio.to_thread(self.archived)

    def _refreshed(self, jobs: list[JobFacts]) -> list[JobFacts]:
        """`jobs` with the state's jobs read again: a job submitted, or a cached output a
        live job took, while the cycle awaited (its store reads, its listings' fetches) is
        kept by what follows. (A new job's kept listing not read yet is not among its needs:
        a split that large comes later in a job's life than one cycle.) A job deleted
        meanwhile is dropped; one compacted meanwhile keeps its facts (its record is in the
        job index now, read at the next cycle)."""
        fresh = job_facts(self.state, self.cfg.max_attempts, self._listed.get, self.peer_id)
        ids = {j.job for j in fresh}
        return fresh + [j for j in jobs if j.job not in ids and j.job not in self.state.deleted]

    async def _needs_read(self, jobs: list[JobFacts]) -> list[JobFacts] | str:
        """`jobs` with what live jobs need read in full: a split whose kept results are too
        many for its event lists them in a stored file, which is read here (fetched first if
        this peer lacks it). While one cannot be read, its CID: then nothing may be unpinned
        or collected, since those results would be lost to the task that reads them (until
        it is read, or its task is done or its job cancelled; the log and the cycle's report
        name it)."""
        want = {c for j in jobs if j.finished_s is None
                for c in kept_listings(self.state, j.job)}
        for c in self._listed.keys() - want:
            del self._listed[c]
        missing = sorted(want - self._listed.keys())
        if not missing:
            return jobs
        if self.fetch is not None:
            try:
                await self.fetch(missing)
            except BanzaiError as e:
                log.warning("storage: fetching kept listings failed: %s", e)
        for c in missing:
            try:
                self._listed[c] = await asyncio.to_thread(self._read_listing, c)
            except BanzaiError as e:
                log.warning("storage: %s: nothing is unpinned or collected until it is "
                            "read (or its task is done, or its job cancelled)", e.message)
                return c
        return await self._jobs()

    def _read_listing(self, cid: str) -> Mapping[str, Any]:
        """A kept listing's results (BanzaiError naming the listing if it is not here or
        not a JSON object)."""
        try:
            got = loads_within(b"".join(self.store.cat(cid)), MAX_DEPTH)
        except NotFound:
            raise BanzaiError(f"a live job's kept listing {cid} is not here") from None
        except (OSError, ValueError) as e:  # (JSON and UTF-8 errors are ValueErrors)
            raise BanzaiError(f"a live job's kept listing {cid} is unreadable: {e}") from None
        if not isinstance(got, dict):
            raise BanzaiError(f"a live job's kept listing {cid} is not a JSON object")
        return got

    # -- job records -------------------------------------------------------------------------
    def delete_job(self, job: str, reason: str = "deleted by a user") -> Event:
        """Delete a finished job's record on every peer: its JOB_DELETED; NotFound, or
        Conflict while it is live."""
        ev = self.state.jobs.get(job)
        if ev is None:
            if job in self.state.compacted and job not in self.state.deleted:  # finished
                return self.emit(EventType.JOB_DELETED, {"job": job, "reason": reason})
            raise NotFound(f"no job {job!r}", field="job")
        tasks = ev.body_as(JobSubmitted).workflow["tasks"]
        if finished_at(self.state, job, tasks, self.cfg.max_attempts) is None:
            raise Conflict(f"job {job} has not finished: cancel it first", field="job")
        return self.emit(EventType.JOB_DELETED, {"job": job, "reason": reason})

    # -- one cycle ---------------------------------------------------------------------------
    async def cycle(self) -> CycleReport:
        """Delete old job records, unpin outputs past the bounds, collect garbage and
        announce what is gone; one at a time."""
        async with self._lock:
            report = await self._cycle()
        self.last = report
        self.held_back = report.held_back
        if report.deleted_jobs or report.unpinned or report.gc.blocks:
            log.info("storage: deleted %d job record(s), unpinned %d output(s), freed %d "
                     "block(s), %d bytes", len(report.deleted_jobs), len(report.unpinned),
                     report.gc.blocks, report.gc.bytes)
        return report

    async def collect(self) -> GcStats:
        """Garbage collection alone (`repo gc`): keeps pins, what live jobs use and blocks in
        the grace period; announces what is gone."""
        async with self._lock:
            jobs = await self._needs_read(await self._jobs())
            if isinstance(jobs, str):
                raise Conflict(f"a live job's kept listing {jobs} is not readable here, and "
                               "gc would free the cached results it lists: try again once it "
                               "is fetched, or cancel its job", field="gc")
            try:
                stats = await self._gc(jobs)
            except GcHeldBack as e:
                self.held_back = e.held
                raise
            self.held_back = ()
            if stats.blocks:
                await self._unprovide()
        return stats

    async def _cycle(self) -> CycleReport:
        ret = self.cfg.retention
        now = self.wall()
        jobs = await self._jobs()
        deleted = plan_job_deletions(jobs, now, ret.keep_jobs_s)
        for job in deleted:
            self.emit(EventType.JOB_DELETED, {"job": job, "reason": "older than --keep-jobs-days"})
        read = await self._needs_read(await self._jobs() if deleted else jobs)
        if isinstance(read, str):
            return CycleReport(tuple(deleted), held_back=(read,))
        jobs = read
        unpinned: list[str] = []
        freed: list[GcStats] = []
        held: tuple[str, ...] = ()
        try:
            await self._collect_and_unpin(jobs, now, unpinned, freed)
        except GcHeldBack as e:  # (logged by the store, naming each block)
            held = e.held  # (what a gc before it freed is reported still: session 48)
        stats = GcStats(sum(s.blocks for s in freed), sum(s.bytes for s in freed),
                        tuple(r for s in freed for r in s.removed))
        unprovided = await self._unprovide() if stats.blocks else 0
        return CycleReport(tuple(deleted), tuple(unpinned), stats, unprovided, held)

    async def _collect_and_unpin(self, jobs: list[JobFacts], now: float,
                                 unpinned: list[str], freed: list[GcStats]) -> None:
        """Unpin what retention says (appended to `unpinned`) and collect garbage (what each
        gc freed appended to `freed`). GcHeldBack if a gc was held back (then nothing more
        is unpinned or freed; a store budget's first gc, before the unpins, may have freed
        some: in `freed`, reported and unprovided all the same)."""
        ret = self.cfg.retention
        collected = False
        evicted: list[str] = []
        if ret.keep_outputs_s is not None or ret.store_max_bytes is not None:
            if ret.store_max_bytes is not None:  # measure the store without its garbage
                freed.append(await self._gc(jobs))
                collected = True
            facts = await asyncio.to_thread(self._store_facts, ret.store_max_bytes is not None)
            over = ret.store_max_bytes is not None and facts.used_bytes > ret.store_max_bytes
            sizes = await asyncio.to_thread(self._copies_sizes, jobs) if over else {}
            known = set(self.state.outputs.values())  # in memory, and pinned ones of the index
            known.update(await asyncio.to_thread(
                lambda: [c for c in self.archived_outputs() if c in facts.pins]))
            jobs = self._refreshed(jobs)  # (the awaits above let events fold)
            # other peers' failed runs' records fetched here go first, then outputs
            evicted = plan_evictions(jobs, sizes, facts.used_bytes, ret)
            if evicted:
                facts = replace(facts, used_bytes=facts.used_bytes - sum(
                    sizes[c] for c in evicted))
                log.info("storage: over --store-max-gb: %d copy(ies) of other peers' failed "
                         "runs' records fetched here by reads are no longer kept",
                         len(evicted))
            unpinned.extend(plan_unpins(jobs, facts, known, now, ret))
            if unpinned:
                await asyncio.to_thread(self._unpin, unpinned)
                for hook in self.on_unpinned:
                    await hook(unpinned)
        if unpinned or evicted or not collected:
            freed.append(await self._gc(self._refreshed(jobs), evicted))

    def _copies_sizes(self, jobs: Sequence[JobFacts]) -> dict[str, int]:
        """The DAG bytes of each copy of another peer's failed run's record held here
        (`JobFacts.fetched`; one not held is left out): `plan_evictions`'."""
        out: dict[str, int] = {}
        for cid in {c for j in jobs for c in j.fetched}:
            with contextlib.suppress(NotFound):
                out[cid] = self.store.dag_size(cid)
        return out

    def _store_facts(self, measure: bool) -> StoreFacts:
        """The pins, and with `measure` (a store budget) their DAG sizes and the store's
        bytes; without it retention reads neither."""
        sizes: dict[str, int] = dict.fromkeys(self.store.pins(), 0)
        if measure:
            for cid in sizes:
                with contextlib.suppress(NotFound):  # (unpinned, or a block gone: 0)
                    sizes[cid] = self.store.dag_size(cid)
        return StoreFacts(sizes, frozenset(self.store.explicit_pins()),
                          self.store.used_bytes() if measure else 0,
                          dict(self.store.output_pins()))

    def _unpin(self, cids: Sequence[str]) -> None:
        for cid in cids:
            with contextlib.suppress(NotFound):  # unpinned meanwhile (pin rm)
                self.store.unpin(cid)

    async def _gc(self, jobs: list[JobFacts], evicted: Sequence[str] = ()) -> GcStats:
        roots = gc_roots(self.state, jobs, evicted)
        stats = await asyncio.to_thread(self.store.gc, roots, self.cfg.gc_grace_s)
        if stats.blocks:
            for fn in self.forget:
                fn()
        for hook in self.after_gc:
            await hook()
        return stats

    async def _unprovide(self) -> int:
        """Tell the mesh which CIDs this peer provided and no longer holds (after a gc), so
        that a rerun recomputes what no peer holds instead of waiting for it."""
        mine = [c for c, holders in self.state.providers.items() if self.peer_id in holders]
        gone = await asyncio.to_thread(lambda: [c for c in mine if not self.store.has(c)])
        indexed = await asyncio.to_thread(  # the index's, read in batches
            lambda: {c for c in self.archived_cids() if not self.store.has(c)})
        # A set in memory is the fold's: the index's row of it may be older (one not in
        # memory is the index's, just read: not asked again, one query each, on the loop).
        gone += sorted(c for c in indexed.difference(gone)
                       if (held := dict.get(self.state.providers, c)) is None
                       or self.peer_id in held)
        for i in range(0, len(gone), MAX_UNPROVIDE_CIDS):
            self.emit(EventType.UNPROVIDE, {"cids": gone[i:i + MAX_UNPROVIDE_CIDS]})
        return len(gone)


def sweep_stale(data_dir: Path, store: Store) -> dict[str, int]:
    """Remove what a kill -9 left (uploads, run directories, the store's staging directories and
    temp files) and log what was removed; call at start, before anything writes. Blocking.
    DataError if the data dir's tmp/ or work/ is not a directory of its own (a symlink is
    not followed: what it points to is not swept); an entry that is a symlink is removed
    itself, never what it points to."""
    check_entry(data_dir / TMP_DIR, "directory", "the peer's temp dir, swept at start", real=True)
    check_entry(data_dir / WORK_DIR, "directory", "the run directories' dir, swept at start",
                real=True)
    removed: dict[str, int] = {}
    names: list[str] = []
    for pattern, kind in STALE:
        for path in sorted(data_dir.glob(pattern)):
            remove(path)
            removed[kind] = removed.get(kind, 0) + 1
            names.append(str(path.relative_to(data_dir)))
    for kind, n in store.sweep().items():
        if n:
            removed[f"store {kind.replace('_', ' ')}"] = n
    if removed:
        shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
        log.info("swept what an earlier run left (killed?): %s%s",
                 ", ".join(f"{n} {kind}" for kind, n in removed.items()),
                 f" ({shown})" if names else "")
    return removed

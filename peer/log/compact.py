"""Compaction of finished jobs (issue 11 item 3): when a finished job's events may leave the
log (every live member holds them, or the job ended past the horizon), the `Compactor` that
turns finished jobs into job index records and drops their events, and signed snapshots of
the compacted state, checked by the receiver. Loop-owned (the Compactor works on the state,
the log and the index of the loop); the rest is pure."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Protocol, cast

from peer.dataentry import open_dir, open_file, unlink_in
from peer.errors import DataError
from peer.jsontext import pieces
from peer.log.clock import hlc_ms
from peer.log.endrules import least, merge_earliest, output_flaw, output_order
from peer.log.events import (
    CachePut,
    ChunkDone,
    Event,
    JobDeleted,
    JobEnded,
    JobSubmitted,
    Output,
    Partial,
    Provide,
    Revoke,
    TaskDone,
    Unprovide,
    facts,
)
from peer.log.fold import (
    READ_MAX,
    GoneLanes,
    MeshState,
    Tiered,
    end_rank,
    provided,
    rank_among,
    refusal_of,
)
from peer.log.gonewait import WaitJournal
from peer.log.jobindex import (
    ITEM,
    OUTPUT,
    SPOOL_DIR_WHAT,
    CacheEntry,
    JobIndex,
    JobRecord,
    SliceRow,
)
from peer.log.jobless import PROVIDING, Jobless, Records, ipns_only, jobless
from peer.log.lanes import is_lane, lane_of
from peer.log.signing import Counters, Identity, MemberKeys, _str_bytes, verify
from peer.log.snapframe import iter_frames
from peer.log.snapstream import StreamError
from peer.log.tombs import TOMB_FEATURE, TOMB_GRACE_S, TOMB_SCAN_JOBS, holds_back

log = logging.getLogger("banzai.log")

SNAPSHOT_DOMAIN = b"banzai-snapshot-v1\n"
BACKFILL_PER_PASS = 20  # records of an earlier release given their thin row per pass
INGEST_ROWS = 4096  # cache and provider rows of a taken snapshot per slice (`ingest`)
INGEST_TRIES = 8  # pending snapshot spools an `ingest` tries (those it cannot read: passed)
# Bytes of a pending spool hashed per `ingest` call while it is checked against its digest
# (once per spool after each open, before its first row is taken: `_spool_checked`)
INGEST_CHECK_BYTES = 8 << 20
# Compaction floors a heartbeat and a SWIM report carry at most (`Compactor.announced`, the
# last raised): ~33 bytes each, ~17 KB of the report's 64 KiB (peer.mesh.swim.MAX_REPORT_BYTES)
MAX_ANNOUNCED_FLOORS = 512
# Deleted jobs' events dropped from the log per pass, about (whole jobs): the first pass
# after an upgrade from a release that kept them all must not hold the loop for long.
DELETED_DROP_MAX = 10_000
# Events that left memory outside a pass whose cache entries and providers a pass writes to the
# job index, at most (`Compactor.unindexed`: the rest at the next passes, and no drop before).
UNINDEXED_PER_PASS = 10_000
# The kinds of event whose cache entries or provided (or unprovided) CIDs the job index keeps
# (`_entries`).
_INDEXED = (TaskDone, ChunkDone, CachePut, Provide, Partial, Unprovide, JobEnded)


@dataclass(frozen=True)
class CompactConfig:
    """When the events of a finished job may be dropped; ValueError on a bad value."""

    horizon_s: float = 7 * 86_400.0  # past this since the job ended, dropped even if a
    # live member still lacks them (it then needs a snapshot)
    recent_tasks: int = 1000  # finished jobs stay in memory, newest first, while their
    # tasks add up to at most this (the recent history); older ones are compacted
    interval_s: float = 5.0  # how often the node runs a pass
    provider_sets_max: int = 4096  # provider sets changed in memory (by PROVIDE or UNPROVIDE
    # events, which belong to no job) kept there; past this many, the oldest half go to the
    # job index (read back on demand); the peer setting compact_provider_sets_max
    read_back_entries: int = READ_MAX  # entries read back from the job index that each of
    # the state's cache tables keeps (peer.log.fold.Tiered: a miss reads the index again);
    # the peer setting compact_read_back_entries
    reap_rows: int = 1024  # output cache entries of the job index examined per pass (in key
    # order, resuming where the last pass stopped), and as many item entries: those whose
    # CID no peer provides are deleted (`Compactor._reap`); 0: none is

    def __post_init__(self) -> None:
        if not self.horizon_s > 0:
            raise ValueError("horizon_s must be > 0")
        if self.recent_tasks < 0:
            raise ValueError("recent_tasks must be >= 0")
        if not self.interval_s > 0:
            raise ValueError("interval_s must be > 0")
        if self.provider_sets_max < 0:
            raise ValueError("provider_sets_max must be >= 0")
        if self.read_back_entries < 1:
            raise ValueError("read_back_entries must be >= 1")
        if self.reap_rows < 0:
            raise ValueError("reap_rows must be >= 0")


def marks(events: Iterable[Event]) -> dict[str, int]:
    """Origin -> the highest seq among `events` (what a holder's version vector must cover)."""
    out: dict[str, int] = {}
    for e in events:
        if e.seq > out.get(e.origin, 0):
            out[e.origin] = e.seq
    return out


def covered(m: Mapping[str, int], vv: Mapping[str, int]) -> bool:
    """Every event summarised by `m` is within the version vector `vv`."""
    return all(vv.get(o, 0) >= q for o, q in m.items())


def _jobs_about(ev: Event) -> set[str]:
    """The jobs `ev`'s parts are about, its JOB_DELETED parts left out (a deletion is its
    tombstone's, not an event of the job that deletion drops)."""
    return {j for p in ev.singles if not isinstance(p.body, JobDeleted)
            and isinstance(j := getattr(p.body, "job", None), str)}


def droppable(m: Mapping[str, int], ended_hlc: int, live_vvs: Sequence[Mapping[str, int]],
              now_hlc: int, cfg: CompactConfig) -> bool:
    """May a finished job (its events summarised by `m`, ended at `ended_hlc`) leave the
    log? Yes past the horizon; before it, only once every live member's version vector
    (from its heartbeats; ours among them) covers its events, and at least one does."""
    if past_horizon(ended_hlc, now_hlc, cfg):
        return True
    return bool(live_vvs) and all(covered(m, vv) for vv in live_vvs)


def past_horizon(ended_hlc: int, now_hlc: int, cfg: CompactConfig) -> bool:
    """Is `now_hlc` `cfg.horizon_s` or more past `ended_hlc`?"""
    return hlc_ms(now_hlc) - hlc_ms(ended_hlc) >= cfg.horizon_s * 1000


def lanes_part(m: Mapping[str, int], job: str) -> tuple[dict[str, int], dict[str, int]]:
    """`m` (a compacted job's marks) split in two: its mesh origins' and `job`'s lanes' (what
    every live peer's vector covers, and what only the job's members' pair vectors do)."""
    mesh: dict[str, int] = {}
    lanes: dict[str, int] = {}
    for o, q in m.items():
        lane = lane_of(o) if "/" in o else None
        (lanes if lane is not None and lane[1] == job else mesh)[o] = q
    return mesh, lanes


def ended_record(submitted: Event, ended: Event, body: JobEnded | None = None,
                 unlisted: str | None = None) -> Finished:
    """A lanes job's compact record as a peer that holds none of its lanes makes it (design
    docs/design/partial-replication.md, section 3): from its JOB_SUBMITTED and its JOB_ENDED
    alone, in the form of `Finished` (the list entry and record of peer.http.views, each
    task's state, progress and output from the summary; no run logs). The columns two peers
    compare (`job_digest3`: the submission's order, the end, the state and the computed
    tasks' outputs, as `record_facts` lists them) equal a member's when the JOB_ENDED says
    what the member's record does (its emission's rule; its `digest` is not checked here).
    `body`: the JOB_ENDED's as folded, with its listing's outputs (`MeshState.end_body`).
    `unlisted`: the CID of its listing, never folded by the horizon (`Compactor._end_of`):
    the record has no outputs and says so (`outputs_unlisted`); a task neither failed nor
    cancelled of a job ended `done` is shown done, with no output."""
    b = ended.body_as(JobEnded) if body is None else body
    return record_of_end(submitted.body_as(JobSubmitted).workflow, submitted.origin,
                         submitted.hlc, b, unlisted)


def record_of_end(wf: Mapping[str, Any], submitted_by: str, submitted_hlc: int, b: JobEnded,
                  unlisted: str | None = None) -> Finished:
    """`ended_record` of a job whose JOB_SUBMITTED is no longer held: its workflow, its
    origin and hlc (what its compacted record keeps: `Compactor._late`)."""
    tasks = []
    for t in wf["tasks"]:
        out = b.outputs.get(t["name"])
        state = "done" if out is not None else "failed" if t["name"] in b.failed else (
            "cancelled" if b.state == "cancelled" else
            "done" if unlisted is not None and b.state == "done" else "pending")
        tasks.append({"name": t["name"], "state": state,
                      "progress": 1.0 if out is not None else 0.0,
                      "output": None if out is None else out.cid, "cid": t.get("cid"),
                      "error": b.failed.get(t["name"])})
    submitted_ms, end_ms = hlc_ms(submitted_hlc), hlc_ms(b.end)
    record: dict[str, Any] = {
        "id": b.job, "name": wf.get("name", b.job), "state": b.state,
        "submitted_by": submitted_by, "submitted_ms": submitted_ms, "finished_ms": end_ms,
        "duration_s": (end_ms - submitted_ms) / 1000,
        "progress": round(sum(t["progress"] for t in tasks) / max(len(tasks), 1), 4),
        "outputs": {t["name"]: t["output"] for t in tasks if t["output"]}}
    if unlisted is not None:
        record["outputs_unlisted"] = unlisted
    summary = {**record, "tasks": [{k: t[k] for k in ("name", "state", "progress")}
                                   for t in tasks]}
    record.update(tasks=tasks, workflow=wf)
    facts = {"finished_s": end_ms / 1000, "logs": [],
             "outputs": sorted({t["output"] for t in tasks if t["output"] and not t["cid"]})}
    return Finished(b.state, b.end, b.n_tasks, summary, record, facts)


# -- the compactor -----------------------------------------------------------------------


@dataclass(frozen=True)
class Finished:
    """A finished job's compact record: its state, end, list entry and full view."""

    state: str  # done, failed, cancelled
    ended_hlc: int
    n_tasks: int
    summary: Mapping[str, Any]
    record: Mapping[str, Any]
    facts: Mapping[str, Any] | None = None  # what retention needs (see JobRecord)


class EventStore(Protocol):
    """What the compactor needs of the SQLite log (peer.log.sqlite.EventLog)."""

    def delete(self, ids: Iterable[tuple[str, int]],
               floors: Mapping[str, int] | None = None,
               also: Callable[[], None] | None = None) -> int: ...
    def set_floor(self, origin: str, seq: int) -> None: ...
    def prune_batches(self) -> None: ...
    def lowest(self, origin: str, types: Iterable[int]) -> int | None: ...


@dataclass
class PassStats:
    compacted: int = 0  # jobs turned into records by this pass
    evicted: int = 0  # events that left memory
    dropped: int = 0  # events that left the log
    reaped: int = 0  # output cache entries deleted (their CID has no provider: `_reap`)
    reaped_items: int = 0  # item cache entries deleted (the same rule)
    forgotten: int = 0  # deleted jobs whose tombstone and JOB_DELETED rows left (`_forget`)
    jobs: list[str] = field(default_factory=list)


class Compactor:
    """Turns finished jobs beyond the recent history into job index records (their events
    leave memory, the SQLite log still serves them) and drops their events from the log once
    `droppable`. `finished(job)` is the job's record if it is finished, else None; `vvs()` the
    version vectors of every live member, ours first; `now_hlc()` the clock.

    Deleted jobs (JOB_DELETED) take the same path whether or not they were compacted first:
    their events leave memory (`MeshState.gone`: at the next pass for those held before the
    JOB_DELETED, at once for later ones), the cache entries and providers those events made
    go to the job index (read on demand, as a compacted job's), and the events leave the log
    once `droppable` (the JOB_DELETED's hlc standing for the job's end; every origin's store
    and compaction floors rise over them, as `_drop` does for compacted jobs, so a peer that
    lacks them takes a snapshot). The JOB_DELETEDs themselves stay in the log: they are the
    tombstones a restart folds again (then they leave memory at once).

    PROVIDEs, UNPROVIDEs and CACHE_PUTs (events of no job: one per upload, replication, gc
    or flush of a running chunk's items) leave memory as they are recorded, then the log, by
    the rule of peer.log.jobless (`evicted`, `_drop`); before, they stayed for good.

    A mesh with peers of the previous release, which keep a job deleted before compaction
    (or a jobless event) in memory and in their log: for each origin whose heads are
    equal, the blocks of 256 seqs that hold such events have different content digests on
    the two sides. Anti-entropy then exchanges those blocks at each round (at most
    FIX_BLOCKS blocks or about FIX_EVENTS events each way, peer/mesh/antientropy.py);
    nothing is applied on either side (we hold them below our heads, `MeshState.holds`; they
    hold them already), nothing is stored again, and no round triggers another (a reply asks
    again only when it brought something new): a bounded cost per round, until the old peer
    is upgraded, as between two peers with different `recent_tasks` today. No event is lost:
    the old peer serves them to whoever lacks them, and we drop them from our log only once
    every live member (the old one too) holds them or past the horizon, then announce our
    floors (snapshots)."""

    def __init__(self, cfg: CompactConfig, state: MeshState, store: EventStore,
                 index: JobIndex, finished: Callable[[str], Finished | None],
                 vvs: Callable[[], Sequence[Mapping[str, int]]],
                 now_hlc: Callable[[], int],
                 ended: Callable[[str], tuple[int, int] | None] | None = None,
                 members: Callable[[], Mapping[str, bool]] | None = None,
                 heard: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
                 unwritten: Callable[[], bool] = lambda: False, me: str = "",
                 pair_vvs: Callable[[], Mapping[str, Mapping[str, int]]] | None = None,
                 ) -> None:
        self.cfg = cfg
        self.state = state
        self.store = store
        self.index = index
        self.finished = finished
        # (ended hlc, tasks) of a finished job, None while live: what `_scan` needs, without
        # the job's whole record (`finished` builds its view: tens of milliseconds per 1,000
        # tasks, on every peer, at each pass that finds the job touched). Default: from
        # `finished`.
        self.ended_of = ended if ended is not None else self._ended_of
        self.vvs = vvs
        self.now_hlc = now_hlc
        # The tombstone bound (`_forget`; none without these): every member the fold knows
        # and did not revoke, every live peer and us -> does it announce TOMB_FEATURE; and
        # live peer -> the version vector it last sent (ours too).
        self.members = members
        self.heard = heard
        # True while events of ours wait to be written to the log (its write failed): one
        # of them that left memory (about a deleted job) must not be "dropped" before it is
        # there, or its row would stay once written, in no job's list (no drop meanwhile).
        self.unwritten = unwritten
        # Lanes (LANES_FEATURE; none while `state.lanes_on` is off): our peer id, and peer ->
        # the lanes' version vector it last sent in a pair round (peer.mesh.antientropy's
        # `pair_seen`; None: not known, a member's lanes leave the log past the horizon only,
        # or at once if we are the job's one live member).
        self.me = me
        self.pair_vvs = pair_vvs
        # Compacted lanes job we are a member of -> its members, until its lanes leave the
        # log (`_drop`; after a restart read from its record: `_members`)
        self.lane_members: dict[str, frozenset[str]] = {}
        self.tombs_held: str | None = None  # why the oldest tombstone past the grace stays
        self._unreadable: set[str] = set()  # pending spools an `ingest` could not read (logged)
        # Pending spools checked against their digests since the open (`_spool_checked`), and
        # those being checked: (the digest, the hash so far, bytes hashed)
        self._checked_spools: set[str] = set()
        self._checking: dict[str, tuple[bytes, Any, int]] = {}
        self.rows_taken = 0  # cache and provider rows `ingest` took from pending spools
        self._tomb_after: tuple[int, str] = (0, "")  # where `_forget` resumes its scan
        # `_busy`'s last scan: (the state's `entered` count then, the jobs asked about, job
        # -> ids of the events in memory about it): reused while no event entered memory
        # (those that left since are looked up; an event held past a gap can wait for long)
        self._busy_memo: tuple[int, frozenset[str], dict[str, set[tuple[str, int]]]] | None \
            = None
        # Deleted job -> ids of the events about it (not its JOB_DELETEDs) that left memory
        # and are still in the log, whichever job's drop takes them (with `_pins`: id -> those
        # jobs): its tombstone waits for them (a restart would fold them without it).
        self.pinned: dict[str, set[tuple[str, int]]] = {}
        self._pins: dict[tuple[str, int], tuple[str, ...]] = {}
        # Compacted job -> ids of its events that left memory other than by its own
        # compaction (a straggler, arrived after it; a replay's, whose record lists most of
        # them already) and that its record may not list: added to the record's ids at the
        # next pass (`_note_stragglers`), so that its deletion hands them to `leaving` (and
        # `_drop` drops them once droppable, as the record's own). Without this, a straggler
        # stayed in the log for good, and past a later deletion's grace the tombstone would go while
        # it was still there: a restart folded it into a job nobody has.
        self.stragglers: dict[str, set[tuple[str, int]]] = {}
        # Compacted job -> the JOB_ENDEDs of it that left memory other than by its own
        # compaction (a straggler, a replay's): `_late` makes its record again of one that
        # ranks before the JOB_ENDED it was made of (review r1 of session 46, F9)
        self.late_ends: dict[str, dict[tuple[str, int], Event]] = {}
        self._compacting: set[str] = set()  # the jobs `_compact` is compacting now
        # Deleted jobs whose record is still to be removed (`deleted`: its write failed; a
        # snapshot's record of a job deleted here): retried at each pass. A record beside
        # its tombstone would be served in our snapshots, and bring the job back to a peer
        # that took one after it forgot the job (the tombstone here holds back meanwhile).
        self._delete_due: set[str] = set()
        self.dirty: set[str] = set(state.jobs)  # jobs touched since the last pass
        self.ended: dict[str, tuple[int, int]] = {}  # finished, in memory: (ended hlc, tasks)
        # Lanes jobs we are a member of whose JOB_ENDED is held and our fold not finished ->
        # that JOB_ENDED's end (`_end_of`); those past the horizon, their record the
        # JOB_ENDED's (`overdue`)
        self.unfolded: dict[str, int] = {}
        self.overdue: set[str] = set()
        # Lanes jobs whose record is to be made of a JOB_ENDED whose outputs are in a listing
        # not folded yet -> its CID (`_end_of`): fetched, read and folded by the node
        # (peer.jobs.ending.EndListings), then scanned again (`note`); past the horizon
        # from its end, made without them (`bare`: review r1 of session 45, M4)
        self.unlisted: dict[str, str] = {}
        self.bare: dict[str, str] = {}  # job -> the listing CID its record goes without
        # Origin -> highest seq dropped, the last raised last (`_raise_floors`; at a start,
        # the highest seqs last: the most active origins' were raised most recently)
        self.floors: dict[str, int] = dict(sorted(index.floors().items(), key=lambda f: f[1]))
        self.beyond = False  # an event was held past a gap since the last pass
        self.sweep = False  # a JOB_DELETED of a job not compacted since the last pass
        self.filled = state.gaps_filled  # the state's count of gaps filled (a replay's too:
        # `settle` sweeps), at the last pass
        # Deleted job -> ids of its events that left memory and are still in the log, until
        # they are droppable (rebuilt at start from what the replay evicts: `evicted`).
        self.leaving: dict[str, set[tuple[str, int]]] = {}
        # Deleted job of `leaving` -> (its tombstone's hlc, the marks of its ids): what `_drop`
        # asks of each waiting job, read once (from the job index for the tombstone) and kept
        # up to date by `evicted` (an id added) and `note` (a JOB_DELETED: read again).
        self.waiting: dict[str, tuple[int, dict[str, int]]] = {}
        # PROVIDEs, UNPROVIDEs and CACHE_PUTs (of no job): to leave memory, then the log.
        self.jobless = Jobless()
        # IPNS_RECORDs out of memory: an old one leaves the log once a newer record of its
        # name is held, any a week past its end (peer.log.jobless.Records; `records.rank`
        # and `records.ended` set by the node)
        self.records = Records()
        # Events that left memory outside a pass that indexed what they made (a late event
        # of a compacted or deleted job, evicted as it is recorded; the replay; a snapshot's
        # sweep): their cache entries and providers go to the job index at the next pass,
        # before any of them may be dropped (`_index_evicted`: UNINDEXED_PER_PASS a pass).
        # Only events that make such entries are queued.
        self.unindexed: list[Event] = []
        # JOB_DELETEDs that left memory (all do, once their head covers them; the replay's
        # too) since the last `_bury`: (job, their order), written to the job index's
        # `deleted_ids` with the tombstones (every row of a job is found when it is forgotten).
        self.tomb_ids: list[tuple[str, tuple[int, str, int]]] = []
        self.index_failures = 0  # passes whose write of `unindexed` failed, ever
        self._failing = 0  # ... in a row, now
        self._indexing = False  # a pass is evicting what it indexed just before
        # the last output cache key `_reap` examined ("": start over; bytes: a key that is
        # not UTF-8) and the last item cache key
        self._reap_after: str | bytes = ""
        self._reap_items_after: str | bytes = ""
        self.total = PassStats()
        self.refuse: Callable[[str, str], None] = lambda signer, why: None  # counts refusals
        # origin -> the highest seq of it that the origin's own signed word, as this peer
        # heard it, vouches for (its heartbeat's heads, its report's floor of itself: set by
        # peer.catchup); with the events held, what a snapshot's heads and floors are
        # clipped to (`proof`)
        self.vouched: Callable[[], Mapping[str, int]] = dict
        # the last snapshot taken: origin -> (the seq its heads or floors claimed, the proof
        # it was clipped to), for the origins it could not prove (`_took`)
        self.unproven: dict[str, tuple[int, int]] = {}
        # told the lane origins `_drop` forgot (MeshState.forget_lanes): Node lets go of what
        # it keeps of its own
        self.forgot: Callable[[Sequence[str]], None] = lambda origins: None
        state.on_evict = self.evicted
        # gone lanes jobs whose facts a JOB_MEMBERS grew since the last pass wrote them
        # (`members_grown`; written by `_bury`, review r2 of session 47 finding 3)
        self.grown: dict[str, GoneLanes] = {}
        state.on_members = self.members_grown
        # what changed of gone jobs' waits (`WaitJournal`; the replay's, if Node kept one):
        # written with `grown` (review r3 of session 48, F1)
        if state.wait_journal is None:
            state.wait_journal = WaitJournal()
        self.waits = state.wait_journal

    def members_grown(self, job: str, facts: GoneLanes) -> None:
        """A vouched member's JOB_MEMBERS grew gone `job`'s facts (`MeshState.on_members`):
        the next pass writes them to the job index (`_bury`), before it drops any row."""
        self.grown[job] = facts

    def note(self, ev: Event) -> None:
        """A listener (of single events, a TURN's parts one by one): the job `ev` is about
        may have finished (or it is deleted: its events leave memory at the next pass)."""
        if ev.seq > self.state.heads.get(ev.origin, 0):
            self.beyond = True  # held past a gap: see step
        job = getattr(ev.body, "job", None)
        if isinstance(job, str):
            self.dirty.add(job)
            if isinstance(ev.body, JobDeleted):
                self.waiting.pop(job, None)  # (an earlier one moves the tombstone)
                if job in self.state.compacted:
                    self._delete_due.add(job)
                    self._delete_records(raises=False)
                self.sweep = True  # its events held in memory leave at the next pass

    def evicted(self, ev: Event) -> None:
        """`ev` left memory (`MeshState.on_evict`): if every job it is about is deleted, it
        leaves the log once droppable (a JOB_DELETED never: it is the tombstone)."""
        if not self._indexing:  # (outside a pass: a straggler, a jobless event)
            self.total.evicted += 1
            if any(isinstance(p.body, _INDEXED) for p in ev.singles):
                self.unindexed.append(ev)
        waits = self.jobless if jobless(ev) else self.records if ipns_only(ev) else None
        if waits is not None:  # (of no job: they wait to leave the log by their own rule)
            waits.left(ev)
            return
        if self.state.compacted:
            self._straggler(ev)
        deleted = self.state.deleted
        if not deleted:
            return
        self._pin(ev, deleted)
        first = None
        for p in ev.singles:
            if isinstance(p.body, JobDeleted):  # the tombstone's row: `_bury` notes its id
                self.tomb_ids.append((p.body.job, ev.order))
                return
            job = getattr(p.body, "job", None)
            if job is None:
                continue
            if job not in deleted:
                return
            first = first or job
        if first is not None:
            self.leaving.setdefault(first, set()).add(ev.id)
            facts = self.waiting.get(first)
            if facts is not None and ev.seq > facts[1].get(ev.origin, 0):
                facts[1][ev.origin] = ev.seq

    def _straggler(self, ev: Event) -> None:
        """`ev` left memory: note it under each compacted job it is about whose record the
        compaction now running does not make (`stragglers`)."""
        compacted, now = self.state.compacted, self._compacting
        for j in _jobs_about(ev):
            if j not in now and j in compacted:
                self.stragglers.setdefault(j, set()).add(ev.id)
        for p in ev.singles:  # a JOB_ENDED may rank before the one its record was made of
            if isinstance(b := p.body, JobEnded) and b.job not in now and b.job in compacted:
                self.late_ends.setdefault(b.job, {})[p.id] = p

    def _note_stragglers(self) -> None:
        """The stragglers noted since the last pass join their jobs' records (ids already
        listed are not added again: a replay notes every event of a compacted job still in
        the log). Raises (kept) if the index cannot be written."""
        if self.stragglers:
            self.index.add_ids(self.stragglers)
            self.stragglers = {}

    def _late(self) -> None:
        """The records of the compacted jobs of `late_ends` made again (`_late_end`). Raises
        (the job's stay queued) if the index cannot be written."""
        while self.late_ends:
            job, evs = next(iter(self.late_ends.items()))
            self._late_end(job, list(evs.values()))
            del self.late_ends[job]

    def _late_end(self, job: str, evs: Sequence[Event]) -> None:
        """Compacted `job`'s record made of its JOB_ENDED (a non-member's, or a member's
        whose fold did not finish by the horizon: `_by_ended`) is made again as a peer that
        held `evs` too before it compacted the job makes it (`_record_of`): of the least by
        `end_rank` of the one it was made of and those of `evs` that its JOB_SUBMITTED and
        members admit (`refusal_of`, as they are in the record), each task's output the
        earliest by order of that end's and of every admitted end's inline outputs (the
        record's facts keep those, `end.merged`: `MeshState.end_outputs`; review r3 of
        session 46, R3-B: the end's own outputs were taken, so two peers that got the same
        ends in two orders around their compaction named two CIDs). Whichever came first,
        the same record; bounded: each record made ranks lower, or names earlier outputs.
        A listed end that wins makes a record without outputs (`outputs_unlisted`: its
        listing is not fetched once the job left memory). A record of session 46 (facts
        without `end.merged`) is made again of a better-ranked end's own outputs (as then);
        other records (a member's own fold, an earlier release's, one whose facts do not
        read as ours) are left as they are."""
        if not self.state.lanes_on or job in self.state.deleted:
            return
        # Its facts first, its whole record only if an end changes it: a replay queues every
        # JOB_ENDED of a compacted job still in the log.
        facts = self.index.facts_of(job)
        end = None if facts is None else _end_of_facts(facts)
        if end is None:
            return
        homes, best, kept = end
        vouched = _vouched_of(kept, homes)
        ranks = {ev.id: rank_among(ev, homes) for ev in evs}
        moving = [e for e in evs if ranks[e.id] < best
                  or (e.origin in vouched and _lowers(kept, e.body_as(JobEnded).outputs))]
        held = self.index.full(job) if moving else None
        of = None if held is None else _admits(held)
        if held is None or of is None:
            return
        members, tasks, wf = of
        outs = _outs_of(kept, held.record.get("outputs"))
        lanes: dict[str, bool] = {}
        if outs is not None and any(output_flaw(job, t, o, members, held.order, tasks, lanes)
                                    for m in outs for t, o in m.items()):
            outs = None  # (written by a snapshot's signer: as a record of session 46)
        admitted = sorted((e for e in moving if refusal_of(
            e, e.body_as(JobEnded), members, held.order, tasks) is None),
            key=lambda e: ranks[e.id])
        if not admitted:
            return
        won = next((e for e in admitted if ranks[e.id] < best), None)
        merging = [e for e in admitted if e.origin in vouched]  # (their outputs: R3-D)
        if won is None and not merging:
            return
        made = _late_body(held, wf, won, merging, outs, vouched)
        if made is None:
            return
        b, merged = made
        if won is not None:
            best = ranks[won.id]
        f = record_of_end(wf, held.order[1], held.order[0], b, b.listing)
        named = {"members": sorted(members)}
        facts = {**(f.facts or {}), "end": {
            "rank": list(best), "homes": sorted(homes), "vouched": sorted(vouched),
            **({} if merged is None else _outputs_facts(*merged, f.record["outputs"]))}}
        self.index.put([JobRecord(job, held.order, f.ended_hlc, f.state,
                                  {**f.summary, **named}, {**f.record, **named}, (), facts)],
                       (), ())
        if won is not None:
            log.info("job %s: its record is made again of the JOB_ENDED %s/%d (%s), which "
                     "ranks before the one it was made of", job, won.origin[:16], won.seq,
                     b.state)
        else:
            log.info("job %s: its record is made again with the earlier outputs of %d "
                     "JOB_ENDED(s) that came after it", job, len(merging))

    def _pin(self, ev: Event, deleted: Mapping[str, Any]) -> None:
        """`ev` left memory: note it under each deleted job it is about (`pinned`)."""
        pins = tuple(sorted(j for j in _jobs_about(ev) if j in deleted))
        if pins:
            self._pins[ev.id] = pins
            for j in pins:
                self.pinned.setdefault(j, set()).add(ev.id)

    def _unpin(self, ids: Iterable[tuple[str, int]]) -> None:
        """These events left the log."""
        for i in ids:
            for j in self._pins.pop(i, ()):
                held = self.pinned.get(j)
                if held is not None:
                    held.discard(i)
                    if not held:
                        del self.pinned[j]

    def step(self) -> PassStats:
        """One pass: compact what left the recent history, then drop what may be dropped."""
        out = PassStats()
        self._index_evicted()
        self._note_stragglers()
        self._late()
        self._delete_records()
        self._due()
        self._scan()
        old = self._beyond_recent()
        compacted = bool(old) and self._compact(old, out)  # (sweeping the deleted jobs' too)
        filled = self.state.gaps_filled != self.filled  # held past a gap, contiguous now
        if not compacted and (self.sweep or (
                (self.beyond or filled) and (self.state.compacted or self.state.deleted))):
            self._sweep(out)  # a deleted job's events, or one of a compacted or deleted
        self.beyond = self.sweep = False  # job held past a gap, stay in memory until swept
        self.filled = self.state.gaps_filled
        self._bury()
        self._spill_providers()
        self._reap(out)
        if not self.unindexed and not self.unwritten():  # (a backlog left: indexed at the
            # next passes, dropped after)
            self._drop(out)
            self._forget(out)
        self.index.backfill(BACKFILL_PER_PASS)
        self.total.compacted += out.compacted
        self.total.evicted += out.evicted
        self.total.dropped += out.dropped
        self.total.reaped += out.reaped
        self.total.reaped_items += out.reaped_items
        self.total.forgotten += out.forgotten
        return out

    def _ended_of(self, job: str) -> tuple[int, int] | None:
        f = self.finished(job)
        return None if f is None else (f.ended_hlc, f.n_tasks)

    def _scan(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for job in dirty:
            if job not in self.state.jobs:
                self._left(job)
                continue
            end = self._end_of(job)
            if end is None:
                self.ended.pop(job, None)
            else:
                self.ended[job] = end

    def _left(self, job: str) -> None:
        """`job` left memory: what the scan kept of it goes."""
        self.ended.pop(job, None)
        self.unfolded.pop(job, None)
        self.overdue.discard(job)
        self.unlisted.pop(job, None)
        self.bare.pop(job, None)

    def _end_of(self, job: str) -> tuple[int, int] | None:
        """`ended_of` of a job replicated in full; a lanes job ends here once its JOB_ENDED
        is held (a member's lanes then leave the log once covered: `_drop`), a non-member's
        as its JOB_ENDED says (`ended_record`), and so does a member's whose own fold has not
        finished by the horizon past that end (its last lane events left the other members'
        logs while it was away: they never come; until then `unfolded` has it). A JOB_ENDED
        whose outputs are in a `listing` makes a record only once that is folded
        (`MeshState.fold_listing`; until then `unlisted` names it, and the record would show
        every task pending and no output): meanwhile the job stays in memory, ended (its
        list entry from the JOB_ENDED: peer.http.views), until the horizon past its end:
        then its record is made without the outputs (`bare`; one refused for good, or never
        served, kept every ended job in memory for ever on every peer that makes its record
        of the JOB_ENDED: review r1 of session 45, M4)."""
        st = self.state
        self.unfolded.pop(job, None)
        self.overdue.discard(job)
        self.unlisted.pop(job, None)
        self.bare.pop(job, None)
        if job not in st.members_of:
            return self.ended_of(job)
        ev = st.ended.get(job)
        if ev is None:
            return None
        b = ev.body_as(JobEnded)
        if st.member_of(job, self.me):
            end = self.ended_of(job)
            if end is not None:
                return end
            if not past_horizon(b.end, self.now_hlc(), self.cfg):
                self.unfolded[job] = b.end  # (scanned again at the horizon: `_due`)
                return None
        if (listing := st.unlisted(job)) is not None:
            if not past_horizon(b.end, self.now_hlc(), self.cfg):
                self.unlisted[job] = listing  # (scanned again at the horizon: `_due`)
                return None
            self.bare[job] = listing
        if st.member_of(job, self.me):
            self.overdue.add(job)
        return b.end, b.n_tasks

    def _due(self) -> None:
        """The jobs of `unfolded` and `unlisted` past the horizon are scanned again
        (`_end_of`)."""
        if self.unfolded or self.unlisted:
            now = self.now_hlc()
            due = [j for j, end in self.unfolded.items() if past_horizon(end, now, self.cfg)]
            for job in due:
                del self.unfolded[job]
            ended = self.state.ended
            due += [j for j in self.unlisted if (ev := ended.get(j)) is not None
                    and past_horizon(ev.body_as(JobEnded).end, now, self.cfg)]
            self.dirty.update(due)

    def _record_of(self, job: str) -> Finished | None:
        """The record of a lanes job made of its JOB_ENDED (`ended_record`; `_by_ended`),
        None if none is held. Its facts keep what a JOB_ENDED that comes after is ranked
        and merged against (`_late_end`): that end's `end_rank` and the homes, each task's
        earliest inline output of the job's JOB_ENDEDs folded (`merged`: `end_outputs`,
        what `end_body` shows of any end that wins) and those of its folded listing's that
        the record shows instead (`listed`), as `_outputs_facts` writes them."""
        st = self.state
        ended = st.ended.get(job)
        if ended is None:
            return None
        body = st.end_body(ended)
        f = ended_record(st.jobs[job], ended, body, self.bare.get(job))
        merged = st.end_outputs.get(job, {})
        listed = {t: o for t, o in body.outputs.items()
                  if (m := merged.get(t)) is None or o[2:] < m[2:]}
        end: dict[str, Any] = {
            "rank": list(end_rank(st, ended)),
            "homes": sorted(st.jobs[job].body_as(JobSubmitted).members or ()),
            "vouched": sorted(st.vouched(job)),
            **_outputs_facts(merged, listed, f.record["outputs"])}
        return replace(f, facts={**(f.facts or {}), "end": end})

    def _by_ended(self, job: str) -> bool:
        """Is `job`'s record its JOB_ENDED's: a lanes job we are no member of, or one whose
        fold here did not finish by the horizon (`_end_of`)?"""
        st = self.state
        return job in self.overdue or (job in st.members_of and not st.member_of(job, self.me))

    def _beyond_recent(self) -> list[str]:
        """Finished jobs past the recent history (newest first, within recent_tasks). An
        ended lanes job we are no member of counts as a member's does (its JOB_ENDED's end
        and tasks): every peer keeps the same jobs in memory, so the mesh origins' contents
        held agree and anti-entropy's rounds find no block differing (compacting it at
        once, as before, made a member and a non-member differ for as long as the member
        kept the job: each round then sent that stream's blocks both ways, its big
        JOB_SUBMITTEDs and JOB_ENDEDs, dropped as held; issue 12, falsifier 3)."""
        tasks = 0
        out: list[str] = []
        ends = {j: (e, self.state.jobs[j].order) for j, (e, _) in self.ended.items()}
        for job in sorted(self.ended, key=ends.__getitem__, reverse=True):  # ties: submission
            n = self.ended[job][1]
            tasks += n
            if tasks > self.cfg.recent_tasks:
                out.append(job)
        return out

    def _compact(self, jobs: list[str], out: PassStats) -> bool:
        """Compact the jobs of `jobs` still finished; False if none was."""
        records: list[JobRecord] = []
        done: list[str] = []
        vouched: list[tuple[str, Sequence[str], Sequence[str]]] = []
        st = self.state
        for job in jobs:
            by_ended = self._by_ended(job)
            f = self._record_of(job) if by_ended else self.finished(job)
            if f is None:  # not finished after all (a reopened chunk; its JOB_ENDED gone)
                self.ended.pop(job, None)
                continue
            done.append(job)
            ev = st.jobs[job]
            summary, record, facts = f.summary, f.record, f.facts
            members = st.members_of.get(job)
            if members is not None:  # a lanes job: its record names its members (where a
                # non-member asks for its view), and a member's lanes leave the log later
                named = {"members": sorted(members)}
                summary, record = {**summary, **named}, {**record, **named}
                vouched.append((job, (), sorted(st.vouched(job))))  # (`vouched_of`)
                if st.member_of(job, self.me):
                    self.lane_members[job] = frozenset(members)
            records.append(JobRecord(job, ev.order, f.ended_hlc, f.state, summary, record,
                                     (), facts))
        if not done:
            return False
        leaving = self.state.compactable(done)
        ids = _assign(leaving, done)
        records = [JobRecord(r.job, r.order, r.ended_hlc, r.state, r.summary, r.record,
                             tuple(ids.get(r.job, ())), r.facts) for r in records]
        entries, cids = _entries(self.state, leaving)
        self.index.put(records, entries, _pairs(self.state, cids), cids,  # raises: nothing
                       vouched=vouched)
        self._compacting = set(done)  # changed in memory
        try:
            out.evicted += len(self._compact_state(done))
        finally:
            self._compacting = set()
        _spill(self.state, entries, cids)
        for job in done:
            self._left(job)
        out.compacted += len(done)
        out.jobs += done
        return True

    def _bury(self) -> None:
        """The tombstones in memory go to the job index (read on demand after): what memory
        keeps of deleted jobs stays bounded (a restart folds their JOB_DELETEDs again, read
        back as known: they do not come back into memory)."""
        tombs = dict(dict.items(self.state.deleted))
        ids = self.tomb_ids
        if tombs or ids:
            # (a deleted lanes job's facts beside its tombstone: a replay reads them, R3-A)
            # (`tomb_lanes`, not `gone_lanes`: a look-up there could push facts out of its
            # bound, each miss caching NO_LANES: review r2 of session 47, finding 2)
            facts = self.state.tomb_lanes
            lanes = [(j, sorted(f.members), f.sub) for j in tombs
                     if (f := facts.get(j)) is not None and f.sub is not None]
            self._write_grown([(j, facts[j]) for j, _, _ in lanes])
            self.index.put_deleted(tombs.items(), ids, lanes)  # raises: they stay in memory
            self.state.spill_deleted()
            del ids[:]
        self._write_grown([])

    def _write_grown(self, more: Sequence[tuple[str, GoneLanes]]) -> None:
        """Write the vouched members of gone lanes jobs (`more`: deleted ones whose tombstone
        is about to be written) and the facts a JOB_MEMBERS grew since the last pass
        (`grown`) to the job index, with the compacted records they regrew, in one transaction
        (a crash between two left a record naming the old members for good: review r3 of
        session 48, F2; raises: they stay in memory), and what changed of their waits
        (`waits`: review r3 of session 48, F1)."""
        rows = [*more, *self.grown.items()]
        waits = dict(self.waits.jobs)
        if rows or waits:
            self.index.put(self._regrown(), (), (), vouched=[
                (j, f.members, f.vouched) for j, f in rows], waits=waits)
            self.grown.clear()
            self.waits.clear(waits)

    def _regrown(self) -> list[JobRecord]:
        """The records of the compacted jobs in `grown` whose members the facts outgrew,
        naming them all: as a peer that folded the JOB_MEMBERS before it compacted the job
        names them (its view, `lanes_of`, and what `_late_end` admits a late end by)."""
        out = []
        for job, f in self.grown.items():
            held = None if job in self.state.deleted else self.index.full(job)
            named = None if held is None else held.summary.get("members")
            if held is None or type(named) is not list or f.members <= set(named):
                continue
            m = {"members": sorted({*f.members, *named})}
            out.append(JobRecord(job, held.order, held.ended_hlc, held.state,
                                 {**held.summary, **m}, {**held.record, **m}, (), held.facts))
        return out

    def settle(self) -> int:
        """After a replay: what it folded of compacted or deleted jobs leaves memory (their
        cache entries to the job index); returns the number of events that left."""
        out = PassStats()
        self.sweep = True  # (if this fails, the next pass does it)
        self.index_evicted()  # (before the loop runs: the whole replay's)
        self._note_stragglers()
        self._sweep(out)
        self._bury()
        self.sweep = False
        # (a crash between logging a JOB_DELETED and removing its job's record left both)
        self._delete_due.update(self.index.deleted_records())
        self._delete_records()
        return out.evicted

    def _sweep(self, out: PassStats) -> None:
        """The events of compacted or deleted jobs still in memory leave it; the cache
        entries and providers they made go to the job index first (as `_compact` does)."""
        leaving = self.state.compactable(())
        if not leaving:
            return
        entries, cids = _entries(self.state, leaving)
        if entries or cids:  # (raises: nothing changed in memory)
            self.index.put((), entries, _pairs(self.state, cids), cids)
        out.evicted += len(self._compact_state(()))
        _spill(self.state, entries, cids)

    def _compact_state(self, jobs: Sequence[str]) -> list[Event]:
        """`state.compact(jobs)`, whose leaving events' entries the caller indexed."""
        self._indexing = True
        try:
            return self.state.compact(jobs)
        finally:
            self._indexing = False

    def index_evicted(self) -> None:
        """Everything `unindexed` goes to the job index now (before a refold, which rebuilds
        the cache and provider tables from memory and the index); raises as a pass would."""
        while self.unindexed:  # (each round takes some or raises)
            self._index_evicted()

    def _index_evicted(self) -> None:
        """The cache entries and providers made by the first UNINDEXED_PER_PASS events of
        `unindexed` go to the job index (then memory lets them go), as a pass does for the
        events it evicts: the same entries whatever order a deleted job's events and its
        JOB_DELETED came in, and none left in memory for ever. Raises (they stay queued) if
        the index cannot be written: the pass stops before any drop; the failure is counted
        (`index_failures`, /api/health, /metrics) and logged when a run of them starts."""
        evs = self.unindexed[:UNINDEXED_PER_PASS]
        if not evs:
            return
        entries, cids = _entries(self.state, evs)
        if entries or cids:
            try:
                self.index.put((), entries, _pairs(self.state, cids), cids)
            except Exception as e:
                self.index_failures += 1
                self._failing += 1
                if self._failing == 1:
                    log.warning("the job index cannot be written (%s): %d events that left "
                                "memory wait for it; compaction stops until it can", e,
                                len(self.unindexed))
                raise
        if self._failing:
            log.warning("the job index is written again after %d failed passes",
                        self._failing)
            self._failing = 0
        del self.unindexed[:len(evs)]
        _spill(self.state, entries, cids)

    def _spill_providers(self) -> None:
        """Provider sets changed in memory past `provider_sets_max`: the oldest (first made or
        read back) go to the job index as they are, down to half of it. Compaction spills the
        sets of its jobs' CIDs; the sets that only PROVIDE and UNPROVIDE events (of no job)
        changed would stay in memory for good."""
        table = self.state.providers
        cap = self.cfg.provider_sets_max
        if not isinstance(table, Tiered) or table.lookup is None or table.live_count() <= cap:
            return  # (without a lookup, a set spilled could not be read back)
        cids = table.live()[:table.live_count() - cap // 2]
        self.index.put((), (), _pairs(self.state, cids), cids)  # raises: nothing changed
        self.state.spill((), (), cids)

    def _reap(self, out: PassStats) -> None:
        """The next `reap_rows` output cache entries of the job index (`MeshState.outputs`
        spilled there), and the next `reap_rows` item cache entries (`MeshState.cache`),
        whose CID has no provider in the fold (its set in memory if there is one, else the
        index's rows) are deleted, with the index's provider rows of such a CID, in one
        transaction; memory lets them go. Such an entry can give no cache hit
        (`Planner.cached_output` and `item_cached` ask for a provider, or the CID in the
        local store, which this rule does not read: the same decision on every peer that
        folded the same events). An entry the fold wrote since (live in memory) waits for
        its spill. A later provider of the CID finds no entry: the task (or item) is
        computed again, and its TASK_DONE (CHUNK_DONE) makes the entry again. An assembly
        never reads the item entries of a split of this release: the split keeps the
        results of the items it leaves out; while the fold holds an unfinished split of an
        older peer, which does not, no item entry is deleted (`_older_splits`;
        docs/architecture.md, "Cache entries that can no longer give a hit"). So are the
        item entries of the slice with no result older than the horizon (`_stale`)."""
        n = self.cfg.reap_rows
        if n <= 0:
            return
        st = self.state
        rows, self._reap_after = self.index.output_slice(self._reap_after, n)
        items: list[SliceRow] = []
        if not self._older_splits():
            items, self._reap_items_after = self.index.item_slice(self._reap_items_after, n)
        empty: set[str] = set()  # CIDs whose empty set the fold holds in memory
        dead: list[tuple[str, str]] = []
        dead_items = self._stale(items, st.cache)
        if self.index.providers_sound():  # (else a damaged row may be a CID's only provider)
            dead = self._unprovided(rows, st.outputs, empty)
            dead_items = self._unprovided(items, st.cache, empty) + dead_items
        if not dead and not dead_items:
            return
        self.index.reap(dead, sorted(empty), dead_items)  # raises: nothing changed
        st.spill([k for k, _ in dead], [k for k, _ in dead_items], sorted(empty))
        out.reaped += len(dead)
        out.reaped_items += len(dead_items)

    def _older_splits(self) -> bool:
        """True while the fold holds a split without `kept` (of a peer of the previous
        release, or of this data dir before the upgrade) of a task not done in a job not
        cancelled: its assembly reads the cache entries of the items it left out, so none
        is deleted meanwhile (such a split leaves memory with its job)."""
        st = self.state
        return any("kept" not in ev.payload and "kept_listing" not in ev.payload
                   and key not in st.task_done
                   and key[0] not in st.cancelled for key, ev in st.splits.items())

    def _stale(self, rows: Sequence[SliceRow], table: Any) -> list[tuple[str, str]]:
        """The item entries of `rows` with no result (no CID: an item its task left out, or
        a malformed value) won by an event older than the horizon, not live in `table`.
        Nothing else would ever delete them (about 80 bytes each, one per item a filter
        drops); a later hit on one computes the item again (`item_cached`), which makes it
        again. Unlike the rule for CIDs, this one reads the clock: two peers may delete one
        a pass apart (as their scans are apart)."""
        live = table.is_live if isinstance(table, Tiered) else lambda k: False
        cutoff = (hlc_ms(self.now_hlc()) - int(self.cfg.horizon_s * 1000)) << 16
        return [(r.key, r.value) for r in rows
                if r.cid is None and r.hlc < cutoff and not live(r.key)]

    def _unprovided(self, rows: Sequence[SliceRow], table: Any,
                    empty: set[str]) -> list[tuple[str, str]]:
        """The entries of `rows` (a slice of the index) whose CID has no provider in the
        fold, not live in `table` (the state's); adds to `empty` the CIDs of those whose
        empty set the fold holds in memory while the index has rows of it."""
        providers = self.state.providers
        live = table.is_live if isinstance(table, Tiered) else lambda k: False
        dead: list[tuple[str, str]] = []
        for k, v, cid, rows_held, _ in rows:
            if cid is None or live(k):
                continue
            held = dict.get(providers, cid)
            if held or (held is None and rows_held):
                continue
            dead.append((k, v))
            if held is not None and rows_held:
                empty.add(cid)
        return dead

    def _drop(self, out: PassStats) -> None:
        """Drop the events of compacted jobs, and those of deleted jobs and the jobless
        events (peer.log.jobless) that left memory, that every live member holds (or past the
        horizon); each origin's floor rises to the highest seq dropped."""
        vvs = list(self.vvs())
        now = self.now_hlc()
        jobs: list[str] = []
        gone: list[tuple[str, int]] = []
        for job, ended, m in self.index.pending():
            mesh, lanes = lanes_part(m, job)
            if droppable(mesh, ended, vvs, now, self.cfg) and (
                    not lanes or self._lanes_droppable(job, lanes, ended, now)):
                try:
                    gone += self.index.ids([job])
                except DataError:  # (its ids do not read back, logged once: its events stay
                    continue  # and its row keeps them listed)
                jobs.append(job)
        left: list[str] = []  # deleted jobs whose events go now
        for job, ids in self.leaving.items():
            if len(gone) >= DELETED_DROP_MAX:  # (the rest at the next passes)
                break
            facts = self.waiting.get(job)
            if facts is None:
                tomb = self.state.deleted.get(job)  # (a query: the index holds tombstones)
                facts = (now, marks_of(ids)) if tomb is None else (tomb[0], marks_of(ids))
                if tomb is not None:
                    self.waiting[job] = facts
            if droppable(facts[1], facts[0], vvs, now, self.cfg):
                gone += ids
                left.append(job)
        free, unprovided = self.jobless.droppable(
            vvs, now, self.cfg.horizon_s, DELETED_DROP_MAX - len(gone),
            lambda origin: self.store.lowest(origin, PROVIDING),
            bool(self.jobless.waiting) and bool(self.index.snapshots_pending()))
        gone += free
        superseded = self.records.droppable(vvs, now, self.cfg.horizon_s,
                                            DELETED_DROP_MAX - len(gone))
        gone += superseded
        if not gone:
            return
        gone = list(dict.fromkeys(gone))  # (an event about several jobs: in each one's list)
        # One transaction: the rows, the log's floors (the heads count them held after a
        # restart) and the job index's compaction floors (a peer behind them takes a snapshot).
        # None of a lane: its head is forgotten with it (`forget_lanes`), nobody takes a
        # snapshot for it, and a restart must not bring it back as a head.
        floors = {o: q for o, q in marks_of(gone).items() if not is_lane(o)}
        n = self.store.delete(gone, floors, lambda: self.index.note_dropped(jobs, floors))
        self.state.left_log(gone)  # (a straggler kept aside: no rival of it written back)
        for job in left:  # (after the delete: if it raised, they are dropped later)
            del self.leaving[job]
            self.waiting.pop(job, None)
            self.forgot(self.state.forget_lanes(job))  # (a deleted lanes job's: review r1
            # of session 45, L5: its lane tables stayed until a restart)
        self.jobless.dropped(free)
        self.records.dropped(superseded)
        for job in jobs:  # (a lanes job of ours: lane state bounded by the jobs not dropped)
            self.forgot(self.state.forget_lanes(job))
            self.lane_members.pop(job, None)
        self._unpin(gone)
        self.state.forget_drops(unprovided)
        self._raise_floors(floors)
        self.store.prune_batches()
        out.dropped += n  # (rows: a TURN of two jobs may have left with the other's record)

    def _lanes_droppable(self, job: str, lanes: Mapping[str, int], ended: int,
                         now: int) -> bool:
        """May a compacted lanes job's lanes (their marks `lanes`) leave the log? Past the
        horizon, yes; before, once every live member's pair vector covers them (ours: the
        lane heads we hold; a member whose vector is not known holds them back)."""
        if past_horizon(ended, now, self.cfg):
            return True
        members = self._members(job)
        if members is None:
            return False
        live = members if self.heard is None else members & (set(self.heard()) | {self.me})
        pairs = {} if self.pair_vvs is None else self.pair_vvs()
        for peer in live:
            vv = self.state.lane_heads([job]) if peer == self.me else pairs.get(peer)
            if vv is None or not covered(lanes, vv):
                return False
        return True

    def _members(self, job: str) -> frozenset[str] | None:
        """A compacted lanes job's members (`lane_members`, else its record's "members",
        read once); None if its record does not name them (logged by the index if it does
        not read back)."""
        got = self.lane_members.get(job)
        if got is None:
            try:
                record = self.index.record(job)
            except DataError:
                return None
            named = None if record is None else record.get("members")
            if not (isinstance(named, list) and all(type(p) is str for p in named)):
                return None
            got = self.lane_members[job] = frozenset(named)
        return got

    def _raise_floors(self, floors: Mapping[str, int]) -> None:
        """Events up to these seqs left the log: the compaction floors and the fold's
        evicted marks rise over them."""
        for origin, seq in floors.items():
            if seq > self.floors.get(origin, 0):
                self.floors.pop(origin, None)  # (the last raised last: `announced`)
                self.floors[origin] = seq
            self.state.evicted[origin] = max(self.state.evicted.get(origin, 0), seq)

    def announced(self, limit: int = MAX_ANNOUNCED_FLOORS) -> dict[str, int]:
        """The floors a heartbeat and a SWIM report carry ("cfloor"): the `limit` raised last
        (session 48 helper g's left: all of them grew ~33 bytes per origin ever compacted,
        and past ~1,900 the report went without any). A peer behind on one raised earlier
        learns it from a DIGEST_REPLY ("cf", `floors_above`); a peer of the previous release
        reads these only, which hold the floors a peer away for a while is behind on."""
        floors = self.floors
        if len(floors) <= limit:
            return dict(floors)
        return dict(itertools.islice(reversed(floors.items()), limit))

    def floors_above(self, vv: Mapping[str, int], limit: int) -> dict[str, int]:
        """Our floors above `vv` of origins `vv` names, at most `limit`, the last raised
        first: what a DIGEST_REPLY tells its asker (review rr of session 48, S7)."""
        out: dict[str, int] = {}
        for origin, seq in reversed(self.floors.items()):
            if len(out) >= limit:
                break
            if origin in vv and vv[origin] < seq:
                out[origin] = seq
        return out

    def _forget(self, out: PassStats) -> None:
        """Tombstones past TOMB_GRACE_S leave the job index and every JOB_DELETED row of
        their job leaves the log, in one transaction with the floors (as `_drop`), once
        (docs/architecture.md, Compaction, item 9): (a) the first JOB_DELETED is older than
        the grace; (b) every member announces TOMB_FEATURE (`members`); (c) every member is
        live, the vector it sent last covers those rows, and our heads cover that vector
        (`holds_back`);
        (d) no other event of the job is in the log (`pinned`) nor in memory (`_busy`).
        Oldest first, DELETED_DROP_MAX rows a pass at most; the scan stops at the first
        tombstone held back by a member (`tombs_held` names it: /api/health)."""
        if self.members is None or self.heard is None:
            return
        now = self.now_hlc()
        members = self.members()
        lacking = sorted(m for m, ok in members.items() if not ok)
        if lacking:  # (named only while a tombstone past the grace waits on it)
            past = self.index.old_deleted(now - (int(TOMB_GRACE_S * 1000) << 16), (0, ""), 1)
            self.tombs_held = f"{lacking[0]} (no {TOMB_FEATURE})" if past else None
            return
        jobs, rows = self._forgettable(now, members, dict(self.heard()))
        if not jobs:
            return
        heads = self.state.heads
        floors = {o: q for o, q in marks_of(rows).items() if q <= heads.get(o, 0)}
        n = self.store.delete(rows, floors, lambda: self.index.note_forgotten(jobs, floors))
        self.state.left_log(rows)
        self.index.forgot(jobs)
        for job in jobs:
            self.waiting.pop(job, None)
            self.leaving.pop(job, None)
            self.state.drop_wait(job)  # (review r3 of session 48, F3)
        self._raise_floors(floors)
        self.store.prune_batches()
        out.dropped += n
        out.forgotten += len(jobs)

    def _forgettable(self, now: int, members: Mapping[str, bool],
                     heard: Mapping[str, Mapping[str, int]],
                     ) -> tuple[list[str], list[tuple[str, int]]]:
        """The deleted jobs whose tombstone may go now (clauses (a), (c), (d)), oldest first,
        and the ids of their JOB_DELETED rows (DELETED_DROP_MAX at most, about)."""
        cutoff = now - (int(TOMB_GRACE_S * 1000) << 16)
        found = self.index.old_deleted(cutoff, self._tomb_after, TOMB_SCAN_JOBS)
        self.tombs_held = None
        busy: set[str] | None = None
        revoked: dict[str, int] | None = None
        seen: set[str] = set()
        jobs: list[str] = []
        rows: list[tuple[str, int]] = []
        for _, job in found:
            if job in seen or job in self.pinned or dict.__contains__(self.state.deleted, job):
                continue  # (d), or its tombstone is in memory: not written yet
            if job in self.index:  # a record beside its tombstone (a snapshot's, or a crash
                seen.add(job)  # before `deleted`): forgetting would bring the job back
                continue
            seen.add(job)
            got = self.index.tomb_rows(job)
            if got is None:
                continue
            tomb, ids = got
            if revoked is None:
                revoked = {p: ev.body_as(Revoke).after for p, ev in self.state.revoked.items()}
            why = holds_back(tomb[0], ids, now, members, heard,  # (each origin's head: its
                             self.state.heads, revoked)  # rows' and the vectors' origins)
            if why is not None:
                self.tombs_held = why
                break
            if busy is None:  # (one scan of memory a pass, once a tombstone may go)
                busy = self._busy({j for _, j in found})
            if job in busy:
                continue
            if rows and len(rows) + len(ids) > DELETED_DROP_MAX:
                break
            jobs.append(job)
            rows += ids
        # (a full slice of tombstones all held by (d): the next pass looks past them)
        full = len(found) == TOMB_SCAN_JOBS and not jobs and self.tombs_held is None
        self._tomb_after = found[-1] if full else (0, "")
        return jobs, rows

    def _busy(self, jobs: set[str]) -> set[str]:
        """The jobs of `jobs` that an event in memory is about (one held past a gap, a TURN
        also about a job not yet compacted). One scan of memory (about 58 ms with 100,000
        events), redone only once an event entered memory since the last one (`entered`)."""
        st = self.state
        memo = self._busy_memo
        if memo is not None and memo[0] == st.entered and jobs <= memo[1]:
            held = st.events
            return {j for j, ids in memo[2].items()
                    if j in jobs and any(i in held for i in ids)}
        found: dict[str, set[tuple[str, int]]] = {}
        for ev in st.events.values():
            for p in ev.singles:
                j = getattr(p.body, "job", None)
                if j is not None and j in jobs:
                    found.setdefault(j, set()).add(ev.id)
        self._busy_memo = (st.entered, frozenset(jobs), found)
        return set(found)

    def record_stream(self, db: sqlite3.Connection | None = None,
                      floors: Mapping[str, int] | None = None) -> dict[str, Any]:
        """What a snapshot carries: every record of the job index, the cache entries and
        providers it keeps, and the compaction floors (JSON); the jobs and cache entries as
        iterators that read the index as they are consumed (peer.jsontext.pieces encodes
        them: never all in memory); each call reads anew. With `db` (a read transaction of
        the index's file, in any thread) and the `floors` of that moment: as of it."""
        return {
            "jobs": ([r.job, *r.order, r.ended_hlc, r.state, r.summary, r.record, r.facts]
                     for r in self.index.rows(db)),
            "cache": ([e.kind, e.key, e.value, *e.order] for e in self.index.entries(db)),
            "providers": sorted([c, o] for c, o in self.index.providers(db)),
            "floors": dict(sorted((self.floors if floors is None else floors).items()))}

    def take(self, records: Mapping[str, Any], heads: Mapping[str, int],
             signer: str = "") -> int:
        """Apply a checked snapshot of `signer` (its events merged already): its records join
        the index and the state, and every seq up to its heads counts as held (the events it
        stands for left the log), as far as each origin proves them (`_took`). ValueError
        (nothing changed) if the records are malformed. Returns the number of job records
        taken."""
        try:
            jobs = [JobRecord(str(j), (int(h), str(o), int(q)), int(end), str(st), dict(sm),
                              dict(rec), (), dict(f or {}))
                    for j, h, o, q, end, st, sm, rec, f in records["jobs"]]
            entries = [CacheEntry(int(kind), str(k), v, (int(h), str(o), int(q)))
                       for kind, k, v, h, o, q in records["cache"]]
            providers = [(str(c), str(o)) for c, o in records["providers"]]
            floors = {str(o): int(q) for o, q in dict(records["floors"]).items()}
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed snapshot records: {e!s:.60}") from None
        unprovided = self.state.unprovided(providers)
        providers = [r for r in providers if r not in unprovided]
        self.index.put(jobs, entries, providers)
        names = [r.job for r in jobs]
        self.state.compact(names)
        _spill(self.state, entries, ())
        self.state.take_providers(providers)
        self._took(heads, floors, signer)
        for name in names:
            self._left(name)
        self._took_records(names)
        return len(jobs)

    def take_rows(self, batches: Iterable[tuple[str, list[tuple[Any, ...]]]],
                  heads: Mapping[str, int], floors: Mapping[str, int],
                  pending: tuple[str, int, str] | None = None, owed: str | None = None,
                  sha: bytes | None = None, signer: str = "") -> int:
        """`take` for a checked snapshot stream (peer.log.snapstream) of `signer`: its
        checked rows, as they are read, join the index in one transaction (StreamError or
        ValueError from the rows: nothing changed), then the state. `pending`: (path,
        offset, signer) of a spooled version 3 snapshot whose cache and provider rows are
        taken later (`ingest`; `sha`: the digest of the spool's bytes its trailer was
        checked against, kept with it); `owed`: its signer, when they are fetched later
        (`?part=rows`). Returns the number of job rows."""
        jobs: list[str] = []
        spill = _Spill(self.state)
        self.index.put_batches(spill.noted(batches, jobs), pending, owed, sha)
        self.state.compact(jobs)
        spill.done()
        self._took(heads, floors, signer)
        for name in jobs:
            self._left(name)
        self._took_records(jobs)
        return len(jobs)

    def _took_records(self, jobs: Iterable[str]) -> None:
        """A snapshot's records of jobs deleted here (its signer had not folded the deletion)
        go at once, as when the deletion comes after the compaction (`deleted`)."""
        taken = set(jobs)  # (tombstones in the index, and those in memory not yet written)
        self._delete_due.update(self.index.deleted_records())
        self._delete_due.update(j for j in dict.keys(self.state.deleted) if j in taken)
        self._delete_records(raises=False)

    def ingest(self, rows: int = INGEST_ROWS) -> bool:
        """Take about `rows` more cache and provider rows of a taken version 3 snapshot
        (peer.log.snapframe; `index.pending`), a frame at a time, each checked as it is read,
        in one transaction with how far the spool was read. True while rows are left. A
        malformed frame ends that snapshot's rows there (what was taken stays: each row was
        checked) and is counted under its signer (`refuse`), as is a spool gone or not a
        regular file, or in a snapshots/ that is not a directory of its own (never read
        through a symlink, `_open_spool`; what is there is left alone). A spool
        that cannot be read now (EACCES, EIO) keeps its rows pending, logged once, and the
        next is read (those known unreadable last, at most INGEST_TRIES per call): False if
        none could be. `rows_taken` counts the rows taken. Before its first row is taken
        after an open, a spool is checked whole against the digest kept with it (INGEST_
        CHECK_BYTES per call, `_spool_checked`): one changed on disk since (a flipped bit
        would make another well-formed row) is refused as a malformed frame is, nothing of
        it taken (review r1 L2)."""
        pending = self.index.snapshots_pending()
        pending.sort(key=lambda p: p[0] in self._unreadable)  # (stable: in order otherwise)
        for i, (path, at, signer) in enumerate(pending[:INGEST_TRIES]):
            left = self._ingest_spool(path, at, signer, rows)
            if left is not None:
                return left or (i + 1 < len(pending) and pending[i + 1][0] not in self._unreadable)
        return False

    def _ingest_spool(self, path: str, at: int, signer: str, rows: int) -> bool | None:
        """`ingest` of the pending spool `path` from `at`: whether rows of it are left; None
        if it cannot be read now (kept pending, logged once)."""
        batches: list[tuple[str, list[tuple[Any, ...]]]] = []
        end: int | None = at
        wrong = False
        try:
            with _open_spool(Path(path)) as f:
                if not self._spool_checked(path, f):
                    return True  # (hashed a slice: its rows at a later call)
                f.seek(at)
                n = 0
                for after, tag, got in iter_frames(f, at):
                    end = after
                    if tag == "t":
                        raise StreamError("a job frame after the cache and provider rows")
                    batches.append((tag, got))
                    n += len(got)
                    if n >= rows:
                        break
                else:
                    end = None
        except (FileNotFoundError, NotADirectoryError, DataError, StreamError) as e:
            log.warning("the rest of the snapshot of %s is left out: %s", signer[:16], e)
            self.refuse(signer, "snapshot_malformed" if isinstance(e, StreamError)
                        else "snapshot_lost")
            batches, end, wrong = [], None, isinstance(e, DataError)
        except OSError as e:  # (not known to be lost: read at a later pass)
            if path not in self._unreadable:
                self._unreadable.add(path)
                log.warning("the rest of the snapshot of %s waits: its spool %s cannot be "
                            "read (%s)", signer[:16], path, e)
            return None
        spill = _Spill(self.state)
        self.index.put_rows(list(spill.noted(batches, [])), path, end)
        spill.done()
        self.rows_taken += sum(len(got) for _, got in batches)
        self._unreadable.discard(path)  # (read now: logged again if it fails again)
        if end is None:
            self._checked_spools.discard(path)
            if not wrong:
                _remove_spool(Path(path))
        return end is not None

    def _spool_checked(self, path: str, f: BinaryIO) -> bool:
        """Whether the pending spool `path` (open as `f`) was checked whole, since the open,
        against the digest its rows were taken under (`index.spool_sum`: none is kept for an
        earlier release's, taken as it is); hashes INGEST_CHECK_BYTES more of it per call,
        False until the end. StreamError if it does not match."""
        if path in self._checked_spools:
            return True
        got = self._checking.pop(path, None)
        if got is None:
            want = self.index.spool_sum(path)
            if want is None:
                self._checked_spools.add(path)
                return True
            got = (want, hashlib.sha256(), 0)
        want, sha, done = got
        f.seek(done)
        chunk = f.read(INGEST_CHECK_BYTES)
        sha.update(chunk)
        if len(chunk) == INGEST_CHECK_BYTES:
            self._checking[path] = (want, sha, done + len(chunk))
            return False
        if sha.digest() != want:
            raise StreamError(f"its spool {path} does not match the digest it was taken "
                              "under (changed on disk since)")
        self._checked_spools.add(path)
        return True

    def proof(self, origin: str, vouched: Mapping[str, int] | None = None) -> int:
        """The highest seq of `origin` this peer can check was reached: its head here, the
        highest of its events held past a gap (each signed by its origin), or what its own
        signed word vouches for (`vouched`, read now unless given)."""
        held = self.state.beyond.get(origin)
        return max(self.state.heads.get(origin, 0), max(held) if held else 0,
                   (self.vouched() if vouched is None else vouched).get(origin, 0))

    def _took(self, heads: Mapping[str, int], floors: Mapping[str, int],
              signer: str = "") -> None:
        """A snapshot of `signer` was taken: every seq up to its heads counts as held, and
        its floors are ours; not a lane's (peer.log.lanes: a snapshot is of the mesh streams,
        and a lane seq counted as held without its events would never be fetched). Neither
        goes past what each origin proves (`proof`; the signer is trusted for its own
        origin only): a head or floor above it is the signer's word alone (review r1 of
        session 50, R1-8: one member's made-up head of another origin, ours too, made this
        peer refuse that origin's next events for good): a head is clipped to the proof,
        a floor left out (we announce no floor we cannot check), logged, counted once per
        snapshot (`snapshot_heads_unproven` under its signer) and kept in
        `unproven` for catch-up (an honest snapshot of origins whose last events left every
        log clips them too: they wait for the origin's next event or signed report)."""
        self.unproven = {}
        most: dict[str, int] = {}
        vouched: Mapping[str, int] | None = None

        def clip(origin: str, seq: int) -> int:
            nonlocal vouched
            if origin == signer or (seq <= self.state.heads.get(origin, 0)):
                return seq
            if origin not in most:
                if vouched is None:
                    vouched = self.vouched()
                most[origin] = self.proof(origin, vouched)
            if seq > most[origin]:
                claimed = self.unproven.get(origin, (0, 0))[0]
                self.unproven[origin] = (max(seq, claimed), most[origin])
                return most[origin]
            return seq

        for origin, seq in heads.items():
            if not is_lane(origin) and (seq := clip(origin, seq)) > self.state.heads.get(
                    origin, 0):
                self.state.raise_floor(origin, seq)
                self.store.set_floor(origin, seq)
        floors = {o: q for o, q in floors.items() if not is_lane(o) and clip(o, q) == q}
        self._raise_floors(floors)
        self.index.dropped((), floors)
        if self.unproven:
            if signer:
                self.refuse(signer, "snapshot_heads_unproven")
            log.warning("the snapshot of %s put %d origins' heads or floors above what "
                        "they prove (their signed events held, their own signed word): "
                        "clipped, e.g. %s", signer[:16] or "?", len(self.unproven),
                        ", ".join(f"{o[:24]} {c} -> {p}" for o, (c, p) in itertools.islice(
                            self.unproven.items(), 3)))

    def _delete_records(self, raises: bool = True) -> None:
        """`deleted` for each job of `_delete_due` (those that fail stay, retried at the next
        pass; raises the first failure unless `raises` is False: it is logged; a record
        whose ids do not read back holds its own deletion back only)."""
        for job in sorted(self._delete_due):
            try:
                self.deleted(job)
            except DataError:  # its record's ids do not read back (JobIndex._ids, logged
                continue  # once): its deletion waits, its events stay; the others go on
            except Exception as e:
                if raises:
                    raise
                log.warning("the record of the deleted job %s could not be removed (%s): "
                            "retried at the next compaction pass", job[:64], e)
                return
            self._delete_due.discard(job)

    def deleted(self, job: str) -> None:
        """A JOB_DELETED of a compacted job: its record goes, and its events still in the log
        (the record's, and its stragglers noted since the last pass) join the deleted jobs'
        `leaving` (pinned to it: its tombstone stays while they are in the log). `_drop`
        drops them as any deleted job's once `droppable`, with the floors and their
        transaction, and not while our own writes have failed."""
        ids = self.index.delete([job])
        ids += sorted(self.stragglers.pop(job, set()) - set(ids))
        self.state.compacted.discard(job)  # (as after a restart: the job index answers)
        if ids:
            self.leaving.setdefault(job, set()).update(ids)
            self.waiting.pop(job, None)  # (its marks: read again)
            for i in ids:
                pins = self._pins.get(i, ())
                if job not in pins:
                    self._pins[i] = tuple(sorted((*pins, job)))
            self.pinned.setdefault(job, set()).update(ids)


class _Spill:
    """Memory entries that rows taken from a snapshot stand for: they leave memory once the
    rows are in the index (the state reads them on demand). A provider row of an origin
    whose UNPROVIDE of the CID was folded here is left out (`MeshState.unprovided`)."""

    def __init__(self, state: MeshState) -> None:
        self.state = state
        self.keys: dict[int, list[str]] = {OUTPUT: [], ITEM: []}
        self.providers: list[tuple[str, str]] = []  # rows of CIDs with a set in memory

    def noted(self, batches: Iterable[tuple[str, list[tuple[Any, ...]]]], jobs: list[str],
              ) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
        st = self.state
        mem = {OUTPUT: st.outputs, ITEM: st.cache}
        for tag, rows in batches:
            if tag in ("j", "t"):
                jobs.extend(r[0] for r in rows)
            elif tag == "c":
                if st.outputs or st.cache:  # a fresh peer's are empty: no row-by-row pass
                    for r in rows:
                        if dict.__contains__(mem[r[0]], r[1]):
                            self.keys[r[0]].append(r[1])
            else:
                if st.providers:
                    self.providers += [(r[0], r[1]) for r in rows
                                       if dict.__contains__(st.providers, r[0])]
                if unprovided := st.unprovided((r[0], r[1]) for r in rows):
                    rows = [r for r in rows if (r[0], r[1]) not in unprovided]
            yield tag, rows

    def done(self) -> None:
        self.state.spill(self.keys[OUTPUT], self.keys[ITEM], ())
        self.state.take_providers(self.providers)


def _spill(state: MeshState, entries: Sequence[CacheEntry], cids: Iterable[str]) -> None:
    """Entries now in the job index leave memory (the state reads them on demand)."""
    state.spill([e.key for e in entries if e.kind == OUTPUT],
                [e.key for e in entries if e.kind == ITEM], cids)


def marks_of(ids: Iterable[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o, q in ids:
        if q > out.get(o, 0):
            out[o] = q
    return out


_Rank = tuple[Any, ...]  # fold.end_rank's, as a record's facts keep it


_Outputs = dict[str, Output]  # task -> output (its key left out), as a record's facts keep it


def _end_of_facts(facts: Mapping[str, Any]) -> tuple[set[str], _Rank, Mapping[str, Any]] | None:
    """(homes, the `end_rank` of the JOB_ENDED it was made of, its `end` (its outputs:
    `_outs_of`)) of a compacted record's facts made of a JOB_ENDED (`Compactor._record_of`);
    None if it is not one, or does not read so (an earlier release's, a member's own
    fold's, a snapshot's)."""
    end: Any = facts.get("end")
    try:
        rank = tuple(end["rank"])
        homes = set(end["homes"])
    except (KeyError, TypeError):
        return None
    kinds = (bool, int, bool, int, str, int)
    if not (len(rank) == len(kinds) and all(type(v) is k for v, k in zip(rank, kinds,
                                                                         strict=True))
            and all(type(v) is str for v in homes)):
        return None
    return homes, rank, end


def _vouched_of(end: Mapping[str, Any], homes: set[str]) -> set[str]:
    """The vouched members a record's facts keep (`end.vouched`: whose JOB_ENDEDs' outputs
    are merged, as `fold._end_outputs` merges them: review r3 of session 46, R3-D); the
    homes if it keeps none or they do not read so (a record made before they were kept)."""
    got = end.get("vouched")
    if type(got) is list and all(type(v) is str for v in got):
        return set(got) | homes
    return homes


def _outputs_facts(merged: Mapping[str, Output], listed: Mapping[str, Output],
                   shown: Mapping[str, str]) -> dict[str, Any]:
    """What a record's facts' `end` keeps of `merged` and `listed` (task -> output): each
    output as [hlc, lane, seq] (`lanes` lists the lanes once), and its CID after them unless
    it is the one the record shows for the task (`shown`: its `outputs`), as most are: a
    few tens of bytes a task (`_outs_of` reads it back)."""
    lanes: dict[str, int] = {}

    def entries(outputs: Mapping[str, Output]) -> dict[str, list[Any]]:
        return {t: [o.hlc, lanes.setdefault(o.origin, len(lanes)), o.seq,
                    *(() if shown.get(t) == o.cid else (o.cid,))]
                for t, o in sorted(outputs.items())}

    out: dict[str, Any] = {"merged": entries(merged)}
    if listed:
        out["listed"] = entries(listed)
    out["lanes"] = list(lanes)
    return out


def _outs_of(end: Mapping[str, Any], shown: Any) -> tuple[_Outputs, _Outputs] | None:
    """(merged, listed) as `_outputs_facts` wrote them in `end`, an entry without its CID
    the record's (`shown`: its `outputs`); None if they are not there (a record of session
    46) or do not read so."""
    lanes, out = end.get("lanes"), []
    if not (type(lanes) is list and all(type(o) is str for o in lanes)
            and isinstance(shown, dict)):
        return None
    for v in (end.get("merged"), end.get("listed", {})):
        if not isinstance(v, dict):
            return None
        got = {t: _output_of(e, lanes, shown.get(t)) for t, e in v.items()}
        if not all(type(t) is str and o is not None for t, o in got.items()):
            return None
        out.append(cast(_Outputs, got))
    return out[0], out[1]


def _output_of(e: Any, lanes: Sequence[str], cid: Any) -> Output | None:
    """An entry of `_outputs_facts` read back (`cid`: the record's, if it names none);
    None if it does not read so."""
    if not (type(e) is list and len(e) in (3, 4) and all(type(v) is int for v in e[:3])
            and 0 <= e[1] < len(lanes)):
        return None
    cid = e[3] if len(e) == 4 else cid
    return Output(None, cid, e[0], lanes[e[1]], e[2]) if type(cid) is str else None


def _lowers(end: Mapping[str, Any], outputs: Mapping[str, Output]) -> bool:
    """Would `outputs` (a JOB_ENDED's) change the merged outputs a record's facts keep
    (`end`, as `_outputs_facts` writes them; read for `outputs`' tasks only: a replay asks
    it of every JOB_ENDED of a compacted job still in the log)? True if they do not read
    so (the record is read then, `_outs_of` decides), False if none are kept (a record of
    session 46)."""
    merged: Any = end.get("merged")
    lanes: Any = end.get("lanes")
    if merged is None and lanes is None:
        return False
    try:
        for t, o in outputs.items():
            e = merged.get(t)
            if e is None or output_order(o) < (e[0], lanes[e[1]], e[2]):  # (`earlier`)
                return True
    except (AttributeError, TypeError, IndexError, KeyError):
        return True
    return False


def _late_body(held: JobRecord, wf: Mapping[str, Any], won: Event | None,
               admitted: Sequence[Event], outs: tuple[_Outputs, _Outputs] | None,
               vouched: AbstractSet[str],
               ) -> tuple[JobEnded, tuple[_Outputs, _Outputs] | None] | None:
    """(the body `Compactor._late_end` makes compacted record `held` again of, the merged
    and listed outputs its facts keep then (None: a record of session 46's, none)),
    `admitted` the JOB_ENDEDs that came after whose outputs it merges (a vouched
    member's: `_vouched_of`, each output made in a `vouched` member's lane only), `won` the
    least-ranked of the ends that came after if it ranks before the one `held` was made
    of, `outs` what `held`'s facts keep (`_outs_of`); None if `held` stays as it is."""
    if outs is None:  # (a record of session 46: no orders to merge by)
        return None if won is None else (won.body_as(JobEnded), None)
    merged, listed = dict(outs[0]), outs[1]
    for e in admitted:  # (fold._end_outputs's rule: endrules)
        merge_earliest(merged, e.body_as(JobEnded).outputs, keyless=True, vouched=vouched)
    if won is None:  # the same end, with earlier outputs
        own = _body_of(held, wf)
        if own is None:
            return None
        b = replace(own, outputs={t: least(listed.get(t), merged.get(t)) or o
                                  for t, o in own.outputs.items()})
    else:
        w = won.body_as(JobEnded)
        b = replace(w, outputs={t: least(o, merged.get(t)) or o for t, o in w.outputs.items()})
        listed = {}
    return b, (merged, listed)


def _body_of(r: JobRecord, wf: Mapping[str, Any]) -> JobEnded | None:
    """The JOB_ENDED compacted record `r` was made of as `record_of_end` read it: its
    state, end, failed tasks' errors, listing if it went without (`outputs_unlisted`) and
    outputs (their CIDs; orders unknown, 0); `record_of_end` of it is `r`'s record again.
    None if `r` does not read so."""
    rec = r.record
    try:
        shown = {t["name"]: t for t in rec["tasks"]}
        outputs = {n: Output(None, t["output"], 0, "", 0) for n, t in shown.items()
                   if t["output"] is not None}
        failed = {n: t["error"] for n, t in shown.items() if t["error"] is not None}
    except (KeyError, TypeError):
        return None
    unlisted = rec.get("outputs_unlisted")
    if not (all(type(v) is str for v in (*outputs, *failed, *failed.values()))
            and all(type(o.cid) is str for o in outputs.values())
            and (unlisted is None or type(unlisted) is str)):
        return None
    return JobEnded(r.job, r.state, len(wf["tasks"]), r.ended_hlc, outputs, {}, failed, "",
                    unlisted)


def _admits(r: JobRecord) -> tuple[set[str], set[str], Mapping[str, Any]] | None:
    """(members, task names, workflow) of a compacted lanes job's record: what
    `refusal_of` reads of the job; None if it does not read so."""
    wf: Any = r.record.get("workflow")
    members: Any = r.record.get("members")
    try:
        tasks = {t["name"] for t in wf["tasks"]}
    except (KeyError, TypeError):
        return None
    if not (isinstance(members, list) and isinstance(wf, dict)
            and all(type(v) is str for v in (*members, *tasks))):
        return None
    return set(members), tasks, wf


def _assign(events: Sequence[Event], jobs: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
    """Each leaving event under every job of this pass it is about (a TURN may be about
    several): a later deletion of any of them hands it to `leaving`, pinned to that job, whose
    tombstone then stays while it is in the log (as a straggler joins every compacted job's
    record it is about, and a replay's does)."""
    mine = set(jobs)
    out: dict[str, list[tuple[str, int]]] = {}
    for ev in events:
        for job in _jobs_about(ev):
            if job in mine:
                out.setdefault(job, []).append(ev.id)
    return out


def _entries(state: MeshState, events: Sequence[Event]) -> tuple[list[CacheEntry], list[str]]:
    """The cache entries (as won, with their order) that the leaving events made and the
    CIDs they provided or unprovided: what a restart must still know once they are dropped
    (the index's rows of those CIDs are replaced by the sets the fold holds)."""
    entries: dict[tuple[int, str], CacheEntry] = {}
    cids: set[str] = set()
    for ev in events:
        for p in facts(ev):  # (a CHUNK_DONE's implied TASK_DONE too)
            b = p.body
            keys: list[str | None] = []
            if isinstance(b, TaskDone):
                keys = [b.key]
            elif isinstance(b, JobEnded) and state.lanes_on:  # (else held, not folded): its
                b = state.end_body(p)  # outputs and producers (its listing's), a
                keys = [o.key for o in b.outputs.values()]  # non-member's of no TASK_DONE
                cids.update(b.producers)  # here
            for k in keys:
                if k and k in state.outputs:
                    entries[(OUTPUT, k)] = CacheEntry(OUTPUT, k, state.outputs[k],
                                                      state._outputs_src[k])
            if isinstance(b, ChunkDone | CachePut):
                for k in b.cache:
                    if k in state.cache:
                        entries[(ITEM, k)] = CacheEntry(ITEM, k, state.cache[k],
                                                        state._cache_src[k])
            cids.update(b.cids if isinstance(b, Unprovide) else provided(b))
    return list(entries.values()), sorted(cids)


def _pairs(state: MeshState, cids: Iterable[str]) -> list[tuple[str, str]]:
    """(cid, origin) of each CID's providers as the fold holds them now (the set in memory,
    else the job index's): what replaces the index's rows of these CIDs."""
    return [(c, o) for c in cids for o in state.providers.get(c, ())]


# -- snapshots ---------------------------------------------------------------------------


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


@dataclass(frozen=True)
class Snapshot:
    """The compacted state (`records`: JSON, e.g. finished jobs' compact records) as of the
    version vector `heads`, signed by the member `signer` (key `key`, admission tag `admit`).
    A receiver takes it instead of the events it covers, then the events after `heads`."""

    signer: str
    key: bytes
    admit: bytes | None
    heads: Mapping[str, int]
    records: Mapping[str, Any]
    sig: bytes = b""

    def content_digest(self) -> bytes:
        """sha256 of (heads, records): what a second member's digest is compared with (their
        canonical JSON, encoded a record at a time: `pieces`)."""
        h = hashlib.sha256()
        for piece in pieces([dict(self.heads), self.records], 3, sort_keys=True):
            h.update(piece)
        return h.digest()

    def signed_digest(self) -> bytes:
        return hashlib.sha256(SNAPSHOT_DOMAIN + _str_bytes(self.signer) + self.key
                              + self.content_digest()).digest()

    def to_json(self) -> dict[str, Any]:
        return {"signer": self.signer, "key": self.key.hex(),
                "admit": None if self.admit is None else self.admit.hex(),
                "heads": dict(self.heads), "records": self.records, "sig": self.sig.hex()}

    @staticmethod
    def from_json(d: Any) -> Snapshot:
        """A snapshot from its JSON form; ValueError if it is malformed."""
        try:
            heads = d["heads"]
            if not (isinstance(heads, dict) and all(
                    isinstance(o, str) and type(q) is int and q >= 0 for o, q in heads.items())):
                raise ValueError("heads")
            if not isinstance(d["signer"], str) or not isinstance(d["records"], dict):
                raise ValueError("signer or records")
            admit = None if d.get("admit") is None else bytes.fromhex(d["admit"])
            return Snapshot(d["signer"], bytes.fromhex(d["key"]), admit, heads, d["records"],
                            bytes.fromhex(d["sig"]))
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed snapshot: {e!s:.60}") from None

    @staticmethod
    def make(me: Identity, signer: str, admit: bytes | None, heads: Mapping[str, int],
             records: Mapping[str, Any]) -> Snapshot:
        s = Snapshot(signer, me.key, admit, dict(heads), records)
        return Snapshot(signer, me.key, admit, s.heads, records, me.sign(s.signed_digest()))


class Signed(Protocol):
    """What `check_snapshot` reads of a snapshot (a `Snapshot`, or a stream's trailer)."""

    @property
    def signer(self) -> str: ...
    @property
    def key(self) -> bytes: ...
    @property
    def admit(self) -> bytes | None: ...
    @property
    def sig(self) -> bytes: ...
    def signed_digest(self) -> bytes: ...
    def content_digest(self) -> bytes: ...


def _open_spool(path: Path) -> BinaryIO:
    """The pending spool `path` open to read, by a descriptor of its snapshots/ opened
    without following a symlink (`open_dir`) and never through one itself (`open_file`):
    DataError naming snapshots/ if it is a symlink (a spool is kept only in one of its own:
    what a link there points to is not a checked snapshot's), or naming the spool if it is
    not a regular file; FileNotFoundError if it is gone, OSError if it cannot be read."""
    spools = open_dir(path.parent, SPOOL_DIR_WHAT)
    try:
        return open_file(path, "a taken snapshot's spooled rows", spools)
    finally:
        os.close(spools)


def _remove_spool(path: Path) -> None:
    """A pending spool whose rows are all taken, removed; never through a snapshots/ that is
    a symlink (the start's sweep leaves it alone too: its files are not the peer's to
    delete), which is logged, the file left."""
    try:
        unlink_in(path.parent, path.name, SPOOL_DIR_WHAT)
    except FileNotFoundError:
        pass
    except (OSError, DataError) as e:
        log.warning("the taken snapshot spool %s is left: %s", path, e)


def check_snapshot(s: Signed, keyring: MemberKeys, members: Iterable[str],
                   second_digest: bytes | None = None,
                   refused: Counters | None = None) -> str | None:
    """None if `s` may stand for the events it covers, else why not (counted in `refused`
    by signer): the signer must be a member (MEMBER event held), admitted and bound to its key
    (`MemberKeys.bind`), not revoked; the signature must hold; and when a second member's
    digest of the same heads is at hand, it must equal the snapshot's."""
    why = _why(s, keyring, set(members), second_digest)
    if why is not None and refused is not None:
        refused.add(s.signer, f"snapshot_{why}")
    return why


def _why(s: Signed, keyring: MemberKeys, members: set[str],
         second_digest: bytes | None) -> str | None:
    if s.signer not in members:
        return "not_member"
    if keyring.is_revoked(s.signer):
        return "revoked"
    why = keyring.bind(s.signer, s.key, s.admit)
    if why is not None:
        return why
    if not verify(s.key, s.sig, s.signed_digest()):
        return "bad_signature"
    if second_digest is not None and second_digest != s.content_digest():
        return "digest_mismatch"
    return None


__all__ = ["CompactConfig", "Compactor", "EventStore", "Finished", "PassStats", "Signed",
           "Snapshot", "check_snapshot", "covered", "droppable", "ended_record", "lanes_part",
           "marks", "marks_of"]

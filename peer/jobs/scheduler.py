"""The scheduler loop: which ready task this peer plans, claims and assembles, composing the
planner, the claim rules, data locality and this peer's runs. Loop-owned and never blocking;
`step` is one evaluation round (the loop calls it on every wake-up and tick; tests call it).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Collection, Coroutine, Iterable, Iterator, Mapping, Sequence
from functools import partial
from itertools import islice
from typing import Any, TypeVar

from peer.errors import BanzaiError, NotFound, StoreError
from peer.ipfs.inline import InlineBlocks
from peer.ipfs.store import Listings
from peer.jobs import claims, kinds, members, placement
from peer.jobs.claims import AttemptKey, Standing, TaskSkips, task_failed
from peer.jobs.ending import Merits, better_end, framed, job_ended
from peer.jobs.leases import Leases
from peer.jobs.live import LOG_MAX_BYTES, LiveRecords
from peer.jobs.locality import Locality
from peer.jobs.planner import Assembly, Planner, mesh_slots, producer, ready, value_chunks
from peer.jobs.ports import (
    CatchUp,
    Clock,
    Data,
    Emit,
    Offload,
    PeerInfos,
    Runner,
    SchedulerConfig,
)
from peer.jobs.runs import Run, Runs
from peer.jobs.spec import TaskSpec, Workflow, workflow_from_json
from peer.log import (
    ARG_SPLITS,
    ARGSPLITS_FEATURE,
    CLAIMED_FEATURE,
    DONE_FEATURE,
    IMPLICIT_SPLITS,
    SPLITS_FEATURE,
    ChunkState,
    Event,
    EventType,
    JobEnded,
    JobSubmitted,
    Member,
    MeshState,
    TaskKey,
)
from peer.log.events import cut_text
from peer.log.fold import SplitKey, end_flaw, n_chunks
from peer.log.lanes import lane_of, peer_of
from peer.rendezvous import rendezvous
from tasks.registry import TaskDef

__all__ = ["Scheduler", "SchedulerConfig"]

log = logging.getLogger("banzai.scheduler")
_CLOSE_TIMEOUT_S = 10.0  # close() fails loudly rather than wait forever
# The most lanes jobs a heartbeat names as worked on without a run (`working`)
MAX_WORKING = 16
# The task statuses `_better_ends` reads in a tick before it leaves the other ended jobs to
# look at for the next (a restart looks at each one in memory: ~1 µs a status, 4-5 ms)
_REEND_TASKS = 4000
IDLE_TICK_S = 2.0  # the loop's tick when nothing waits on time (events wake it at once)
# An assembly that meets a store's error or a missing block (maybe passing: a full disk, a
# block collected under it) is tried again after fetch_backoff_s, doubled each time up to
# fetch_max_backoff_s; its ASSEMBLY_TRIES-th failed try fails the task for good, naming the
# cause (with the defaults ~1.5 min after the first: before, it was tried at every look
# without end, and never if no event came)
ASSEMBLY_TRIES = 8
FILL_PER_ROUND = 32  # starved tasks a round looks at, at most, for its free slots
FILL_SCAN = 32  # starved tasks scanned for one this peer comes first for (`_next_starved`)
OPEN_HINTS = 4096  # running lanes jobs whose open task `_open_task` remembers (then anew)
FIRST_MEMO = 4096  # tasks whose first peer `_next_starved` remembers (then it starts afresh)
_RANKED_SETS = 4  # sets of peers `_implicit_rank` remembers ranks for (one a split kind live)
UNTOUCHED_PER_WALK = 1024  # chunks no event is about that one look at a task looks at, at most
_SPLITS = (EventType.TASK_SPLIT, EventType.TASK_SPLIT_REF)
# What a live peer announces if it runs the tasks of a job whose workflow says `splits` (a
# peer without reads that key as a newer peer's and runs none of the job: `_runners`)
_RUNS_SPLITS = {IMPLICIT_SPLITS: (SPLITS_FEATURE,),
                ARG_SPLITS: (SPLITS_FEATURE, ARGSPLITS_FEATURE)}
_OUTCOMES = (EventType.CHUNK_DONE, EventType.CHUNK_FAILED)
# Why a task waits here while claims are held (`hold_claims`)
HELD_BACK = ("not claimed here while this peer's event log cannot be written (/api/health "
             "says why): other peers may take it meanwhile")
# ... and while a restarted peer waits to catch up (`recover`, `restart_hold_s`)
SETTLING = ("not claimed here yet: this peer restarted and waits (at most restart_hold_s) to "
            "hold what the other members did meanwhile")


K = TypeVar("K", bound=tuple[Any, ...])


def _prune(table: dict[K, Any], stale: Callable[[K], bool]) -> None:
    for k in [k for k in table if stale(k)]:
        del table[k]


class Scheduler:
    """Plans, claims and runs ready chunks on this peer; call `poke` after state changes."""

    def __init__(self, cfg: SchedulerConfig, peer_id: str, state: MeshState, emit: Emit,
                 store: Listings, runner: Runner, catalog: Mapping[str, TaskDef], data: Data,
                 peers: PeerInfos = dict, clock: Clock = time.monotonic,
                 offload: Offload = asyncio.to_thread,
                 parse: Callable[[Any], Workflow] = workflow_from_json,
                 catch_up: CatchUp = lambda _job, _peer, fallback: None) -> None:
        self.cfg = cfg
        self.peer_id = peer_id
        self.state = state
        self.emit = emit
        self.store = store
        self.runner = runner
        self.catalog = catalog
        self.data = data
        self.peers = peers  # live peers other than this one -> their heartbeat info
        self.clock = clock
        self.offload = offload
        self.catch_up = catch_up  # asks a member for a lanes job's lanes (`_join`)
        # what the API shows of local runs; a run's log within --task-log-max-bytes
        self.live = LiveRecords(int(cfg.kind_settings.get("log_max_bytes", LOG_MAX_BYTES)))
        self.planner = Planner(state, store, data, cfg.min_chunk_items, cfg.max_chunk_items,
                               parse, self._peers, cfg.max_input_entries)
        self.locality = Locality(peer_id, data, peers, clock, cfg.lease_s, self._background,
                                 self._mark, cfg.fetch_backoff_s, cfg.fetch_max_backoff_s)
        self._runs = Runs(cfg, state, emit, store, runner, data, self.live, clock, offload,
                          self._ended, self._recorded, self._peers, self._implies_done,
                          lambda job, task: self._done_here((job, task)))
        self._dirty: set[TaskKey] = set()
        self._ready_since: dict[AttemptKey, float] = {}  # claimable since (for the stagger)
        self._turn_at = math.inf  # the earliest clock time a staggered peer's turn comes
        self._claim_seen = Leases(cfg.lease_s, self._claimed_by)  # others' claims: holder
        # last heard (and by peer, `Leases.of`: what a heartbeat reads)
        self._mine: dict[AttemptKey, tuple[str, int]] = {}  # our claims (-> split) to check
        # tasks whose assembly failed here, to be tried again: (tries, first failure, not
        # again before; None once `_waiting` made it due)
        self._assembly_failed: dict[TaskKey, tuple[int, float, float | None]] = {}
        self._lost: dict[TaskKey, str] = {}  # assemblies that lack a deleted cache entry
        self._lonely: set[TaskKey] = set()  # tasks whose input is elsewhere, no peer live
        self._cannot: set[TaskKey] = set()  # ready tasks whose call this peer does not run
        self._unplaced: dict[TaskKey, str] = {}  # tasks no live peer meets the requires of
        self._partial_due: dict[TaskKey, float] = {}  # our split tasks: next PARTIAL not before
        self._partial_sent: dict[TaskKey, int] = {}  # items in the last PARTIAL we emitted
        self._partial_sig: dict[TaskKey, tuple[int, int]] = {}  # what the last look saw
        self._partial_fetching: set[TaskKey] = set()
        self._results_seen: dict[TaskKey, int] = {}  # done chunks when we last fetched results
        # a reduce's prefetch (`_prefetch_reduce`) per task: its split, the chunk table's
        # `done_added` mark, the done chunks' results still missing at its last look
        self._prefetched: dict[TaskKey, tuple[SplitKey, tuple[int, int], list[str]]] = {}
        self._bg: set[asyncio.Task[Any]] = set()
        self._last_tick = 0.0
        self._gone = 0  # jobs compacted or deleted when the tables here were last swept
        self._ended_seen: tuple[int, int, int] | None = None  # see `_prune_ended`
        # Tasks with a claimable chunk but no free slot, oldest first; a freed slot takes
        # them one at a time until it is full (`_fill_slots`; not all: with thousands
        # queued that would be quadratic).
        self._starved: dict[TaskKey, None] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stepping = False
        self._to_pin: list[str] = []  # task outputs to pin (by _pin_all, in a thread)
        self._pinning = False
        self._live: Mapping[str, Mapping[str, Any]] | None = None  # peers() of this step
        # `_runners` of this step's live peers, by the features a job's runners announce
        self._runners_memo: tuple[object, dict[tuple[str, ...], Mapping[str, Mapping[str, Any]]]] \
            = (None, {})
        # The starved task being looked at, when this peer comes first for it among every
        # live peer (`_next_starved`): its claim does not wait for the stagger.
        self._first_for: TaskKey | None = None
        self._full_peers: set[str] | None = None  # of this step (see _full)
        # The peer that the claim order puts first for a task (_first_peer)
        self._firsts: dict[TaskKey, str] = {}
        self._firsts_peers: frozenset[str] = frozenset()  # the live peers they are of
        self._short_here: dict[TaskKey, bool] = {}  # of this step (see _short_at_holders)
        # per task: its split, the chunk table's `done_added` mark, and per peer the done
        # chunk's CHUNK_DONE it made last (`_last_done_by`)
        self._last_done: dict[TaskKey, tuple[SplitKey, tuple[int, int], dict[str, Event]]] = {}
        self._looked: dict[TaskKey, None] = {}  # implicitly split tasks whose turn came here
        self._deferred: dict[TaskKey, float] = {}  # and when it comes, for those waiting
        # of _implicit_rank, by the peers it ranks (those of an "args" job and of an implicit
        # one differ while a live peer runs only the latter: both kinds' tasks hit it)
        # (one entry per set: each key holding its own set took ~5x the memory, review i I1)
        self._ranks: dict[frozenset[str], dict[TaskKey, list[str]]] = {}
        # Tasks of jobs submitted here that `takes_first` counted in (-> when), until claimed
        self._promised: dict[TaskKey, float] = {}
        # Tasks waiting here for a slot that this peer comes first for, which another peer
        # claimed (`_note_task`), until that claim's outcome: see `backlog`
        self._taken: dict[TaskKey, None] = {}
        # While the node's event log cannot take our events, no new claim (`hold_claims`);
        # the tasks a claim was held back of (`waiting` says why), looked at again after
        self.claims_held = False
        self._held_back: dict[TaskKey, None] = {}
        # A restart on a log that holds work (`recover`): no new claim either until then
        # (clock time), or per part until a live member's vector of it is covered here
        # (`heads_seen`, kept by peer while settling): each lanes job we are a member of
        # (`_settle_jobs`) by a pair round's vector of its lanes, the rest (`_settle_mesh`:
        # jobs replicated in full, lanes jobs of others) by a digest's of the mesh streams
        self._settle_until = -math.inf
        self._settle_mesh = False
        self._settle_seen: dict[str, dict[str, int]] = {}
        # (the peers whose events the replayed log held: only their digests' vectors end the
        # mesh part; a peer new to us, its log empty, holds nothing the mesh did, review r2
        # of session 52, finding 4)
        self._settle_known: frozenset[str] = frozenset()
        self._settle_jobs: dict[str, dict[str, dict[str, int]]] = {}
        self._settled_jobs: set[str] = set()  # (those of `_settle_jobs` ended: not the mesh's)
        self._waits_peers: frozenset[str] = frozenset()  # the live peers of the last tick
        # Lanes jobs (`_lanes_tick`): the running ones held here, kept from the noted events
        # (`_note_lanes`); those an event was noted of since `_end_jobs` last looked at them;
        # the live peers of the last tick; since when this home saw one finished (its
        # JOB_ENDED waits end_grace_s); when this home last looked at spreading one (or
        # first saw it running: its first look is spread_s after), and since
        # when no member of one kept it going here (`members.kept_until`)
        self._lanes_live: set[str] = set()
        self._lanes_moved: set[str] = set()
        self._lanes_peers: frozenset[str] = frozenset()
        self._ending: dict[str, float] = {}
        # Lanes job -> the index of a task of it that waits for nothing and was last seen
        # open (`_open_task`: an O(1) look while one stays open, not a walk of every task
        # per tick; issue 12, session 50 helper e). Only a hint: emptied past OPEN_HINTS
        self._open_at: dict[str, int] = {}
        # Lanes jobs whose JOB_ENDED this home emitted in this run that the fold refused for
        # good (`fold.end_flaw`: a bug, or a clock set back past an output's): not emitted
        # again until a restart (each would be refused alike, one every end_grace_s); kept
        # while the job is ended here (`_better_ends` reads it), until it leaves memory
        self._end_refused: set[str] = set()
        # Ended lanes jobs we are a member of (`_better_ends`, design section 3, session 46
        # helper b): those an event was noted of since the last look (our fold of them may
        # now make an end that ranks before their winning one: `ending.better_end`), and
        # those whose fold here does -> since when (emitted by their home once it did for
        # end_grace_s; looked at again when the live peers change: a takeover)
        self._reend: set[str] = set()
        self._better: dict[str, float] = {}
        self._merits = Merits(cfg.max_attempts)  # (their task statuses: a look reads those
        # an event was noted of since the last; review r2 of session 46, L2)
        self._spread_at: dict[str, float] = {}
        self._orphaned: dict[str, float] = {}
        # Orphan takeover judges a member by whether it keeps the job going (review r1 M3,
        # session 46; `members.kept_until`): of lanes jobs we are no member of that no named
        # member keeps going, member -> its last sign of doing so (a run of the job in its
        # heartbeat, `heard`; an added one's first look here); when to look at such a job
        # again (its members' window runs out); live peers that can claim nothing
        # (`members.cannot_claim`: no usable slot, or claims held back) -> since when
        self._kept_seen: dict[str, dict[str, float]] = {}
        self._judge_at: dict[str, float] = {}
        self._stuck: dict[str, float] = {}
        # Lanes jobs a JOB_MEMBERS added us to whose lanes are not held yet as of the add
        # (`_join`): until when we wait for them, the heads to reach, and the add's HLC
        self._joining: dict[str, tuple[float, dict[str, int], int]] = {}
        self._worked_to = ""  # (the last job `working` named: the next read goes on after it)
        # The running lanes jobs (of `_lanes_live`) an add made us a member of, noted in this
        # run or found at `recover`: a later JOB_MEMBERS naming us again (a second home's, a
        # hostile member's) makes us wait for nothing (`_members_grew`)
        self._added: set[str] = set()
        # Tasks of lanes jobs left alone here while a vouched member that can run them is
        # live (`_for_vouched`): looked at again when the live peers change (session 49)
        self._vouched_wait: dict[TaskKey, None] = {}
        # Split -> the mark of its done chunks walked for an unvouched lane's (`ChunkTable.
        # done_added`): each evaluation walks the chunks done since, not every one
        self._unvouched_mark: dict[SplitKey, tuple[int, int]] = {}

    # -- what the node and the API read -----------------------------------------------------
    @property
    def runs(self) -> dict[AttemptKey, Run]:
        """This peer's claimed chunks (running, queued or fetching input)."""
        return self._runs.active

    @property
    def executions(self) -> int:
        """Chunks handed to the executor (tests count them)."""
        return self._runs.executions

    @property
    def free_slots(self) -> int:
        return self._runs.free_slots

    @property
    def outcomes_pending(self) -> bool:
        """True while a local run has ended and its outcome is about to be emitted (its
        record being saved): Node holds its flush for it, so that a claim of the freed slot
        goes out in one TURN with that outcome."""
        return self._runs.outcomes_pending

    @property
    def backlog(self) -> bool:
        """True while runs of ours are queued behind the slots (`queue_ahead`): more
        outcomes come in turn, each with the claim of the next. Node holds its flush for
        them (at most HOLD_MAX_S), so that a backlog goes out in few TURNs. Not while
        another peer takes tasks of our backlog (`_taken`): it has run out of its own, and a
        claim of ours held meanwhile is one it cannot see before it takes the same task (at
        a job's end, ~1 % of the tasks of a job of 1,000 on three peers were claimed twice).
        Held again once no such task is running elsewhere (its outcome came)."""
        return self._runs.queued and not self._taken

    @property
    def starved(self) -> int:
        """Tasks with a claimable chunk waiting for a free slot here (/metrics)."""
        return len(self._starved)

    @property
    def logs(self) -> dict[TaskKey, Sequence[str]]:
        return self.live.logs

    @property
    def metrics(self) -> dict[TaskKey, Sequence[list[Any]]]:
        return self.live.metrics

    def workflow(self, job: str) -> Workflow:
        return self.planner.workflow(job)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self.recover()
        self._loop_task = asyncio.create_task(self._loop(), name="scheduler")

    def recover(self) -> None:
        """Fail the claims this peer held before a restart (their runs died with it: they
        are retried) and mark every active task for evaluation (but those of lanes jobs an
        add made it a member of that it ran none of: it joins them again, `_wait_to_join`).
        The ended lanes jobs in memory we are a member of are looked at once by
        `_better_ends` (a better end whose grace a restart cut short is not lost: its
        grace is in memory only); a job whose winning end fails no task costs no walk."""
        for payload in claims.restart_failures(self.state, self.peer_id):
            self.emit(EventType.CHUNK_FAILED, payload)
        self._dirty.update(self.planner.active_tasks())
        st = self.state
        self._lanes_live = {j for j in st.members_of if _running(st, j)}
        if st.lanes_on and self._lanes_live:  # done by an unvouched lane only: looked at
            self._dirty.update(k for k, d in st.task_done.items()  # (`_evaluate` redoes
                               if k[0] in self._lanes_live  # it if it is this peer's to)
                               and st.unvouched_lane(k[0], d) is not None)
        self._lanes_moved = set(self._lanes_live)
        self._reend = {j for j in st.ended if self.peer_id in st.members_of.get(j, ())}
        self._wait_to_join(self._lanes_live)
        if self.cfg.restart_hold_s > 0 and (self._dirty or self._lanes_live):
            self._settle_until = self.clock() + self.cfg.restart_hold_s
            self._settle_mesh = True
            self._settle_known = frozenset(peer_of(o) for o in st.heads) - {self.peer_id}
            self._settle_jobs = {j: {} for j in self._lanes_live
                                 if self.peer_id in st.members_of[j]}

    @property
    def settling(self) -> bool:
        """True while a restarted peer waits to catch up before it claims (`recover`)."""
        return self._settle_until > -math.inf

    def _no_claims(self, job: str) -> bool:
        """No new claim, split nor add in `job` now: `hold_claims`, or `job` still settling
        (a lanes job of ours until a member's vector of its lanes is covered, any other
        until a member's vector of the mesh streams is: `_look_settled`)."""
        if self.claims_held:
            return True
        if not self.settling:
            return False
        return job in self._settle_jobs or (self._settle_mesh and job not in self._settled_jobs)

    def heads_seen(self, peer: str, vv: Mapping[str, int], mesh: bool = False) -> None:
        """A live member's vector of the lanes we share (a pair round's: the lanes of the
        jobs both are members of), or of the mesh streams (`mesh`: a digest's): while
        `settling`, once our heads cover such a vector we hold what that member held of
        them, and claim in the jobs it is of (`_look_settled`): a pair round's, per job
        (its lanes' part of the vector), the jobs of that member only. A digest's counts
        only from a peer whose events the replayed log held (`recover`): not from a peer
        new to us, whose log may be empty. (A known peer restarted at the same moment as
        this one may still end it with a vector as stale as ours: the limit of this rule.)"""
        if not self.settling or not vv:
            return
        if mesh:
            if self._settle_mesh and peer in self._settle_known:
                self._settle_seen[peer] = dict(vv)
                self._wake.set()
            return
        parts: dict[str, dict[str, int]] = {}
        for o, q in vv.items():
            if (got := lane_of(o)) is not None and got[1] in self._settle_jobs:
                parts.setdefault(got[1], {})[o] = q
        for job, part in parts.items():
            self._settle_jobs[job][peer] = part
        if parts:
            self._wake.set()

    def _look_settled(self, now: float) -> None:
        """End `settling` of each part once its time is up or a vector of it `heads_seen`
        is covered here (the tasks held back meanwhile in the parts ended are looked at
        again)."""
        heads, up = self.state.heads, now >= self._settle_until

        def by(vvs: Mapping[str, Mapping[str, int]], what: str) -> str | None:
            """Why `vvs`' part ends now (None: it does not)."""
            if up:
                return f"restart_hold_s ({self.cfg.restart_hold_s:g} s) passed"
            p = next((p for p, vv in vvs.items()
                      if all(heads.get(o, 0) >= q for o, q in vv.items())), None)
            return None if p is None else f"we hold what {p[:16]} held of {what}"

        ended: list[str] = []
        if self._settle_mesh and (why := by(self._settle_seen, "the mesh streams")):
            self._settle_mesh = False
            self._settle_seen.clear()
            ended.append(f"the jobs of the mesh streams ({why})")
        for job, vvs in list(self._settle_jobs.items()):
            if why := by(vvs, "its lanes"):
                del self._settle_jobs[job]
                self._settled_jobs.add(job)
                ended.append(f"{job} ({why})")
        if not ended:
            return
        log.info("restarted: claims begin in %s%s", "; ".join(ended[:4]),
                 f" (and {len(ended) - 4} more)" if len(ended) > 4 else "")
        if not self._settle_mesh and not self._settle_jobs:
            self._settle_until = -math.inf
            self._settled_jobs.clear()
        self._release_held()

    def _release_held(self) -> None:
        """The tasks held back whose job may claim again are looked at again."""
        if self.claims_held:
            return
        free = [k for k in self._held_back if not self._no_claims(k[0])]
        for k in free:
            del self._held_back[k]
        self._dirty.update(free)
        if free:
            self._wake.set()

    async def close(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.wait([self._loop_task], timeout=_CLOSE_TIMEOUT_S)
            if not self._loop_task.done():
                raise RuntimeError(f"the scheduler loop did not stop within {_CLOSE_TIMEOUT_S:g} s"
                                   " of being cancelled")
            await asyncio.gather(self._loop_task, return_exceptions=True)  # done: its outcome
        await self._runs.close()

    def poke(self, ev: Event | None = None) -> None:
        """Note a state change (a new event) and wake the loop."""
        if ev is not None:
            self._note(ev)
        self._wake.set()

    def hold_claims(self, held: bool) -> None:
        """While `held` (this peer's event log cannot take its events), claim no new chunk,
        split no task and add no member (spread, takeover): each would stay in memory,
        unseen by the other peers, who would do it too (review r1 M3, r2 M3). What is ours
        goes on: runs already claimed, and the chunks our own JOB_SUBMITTED claims
        (`_implied_here`); their outcomes wait in memory with our other events. Released,
        the tasks held back are looked at again at once."""
        self.claims_held = held
        if not held:
            self._release_held()

    def heard(self, peer: str, running: Iterable[Sequence[Any]] | None = None) -> None:
        """A sign of life from `peer`: renew the leases of its claims that it reports
        running (`running`: the attempt keys of its heartbeat; None: a peer that does not
        report them, every claim of it is renewed). Reads the watched claims `peer` made
        only (`Leases.of`)."""
        now = self.clock()
        try:
            reported = None if running is None else {AttemptKey(*k) for k in running}
        except (TypeError, ValueError):  # a malformed list: renew as for a peer without one
            reported = None
        for ak in self._claim_seen.of(peer):
            if reported is not None and ak not in reported:
                continue
            c = self.state.chunk(ak.job, ak.task, ak.chunk)
            w = c.winner(ak.attempt, self.state.split_id(ak.job, ak.task))
            if w is not None and peer_of(w.origin) == peer:
                self._claim_seen[ak] = now
        if reported and self._kept_seen:  # (a member's run of a job we judge: it keeps it)
            for ak in reported:
                seen = self._kept_seen.get(ak.job)
                if seen is not None and peer in self.state.members_of.get(ak.job, ()):
                    seen[peer] = now

    def gone(self, peer: str) -> None:
        """`peer` announced that it leaves the mesh: its claims lapse now, not after their
        lease (the failures do not count against max_attempts)."""
        for ak in self._claim_seen.of(peer):
            c = self.state.chunk(ak.job, ak.task, ak.chunk)
            w = c.winner(ak.attempt, self.state.split_id(ak.job, ak.task))
            if w is not None and peer_of(w.origin) == peer:
                self._claim_seen[ak] = -math.inf
                self._dirty.add((ak.job, ak.task))
        self._wake.set()

    @property
    def running(self) -> list[AttemptKey]:
        """The attempts this peer has a run behind (what its heartbeats report)."""
        return [*self._runs.active, *self._runs.finishing]

    @property
    def working(self) -> list[str]:
        """The lanes jobs we are a member of that we work on without a run (what our
        heartbeats report, at most MAX_WORKING): a fetch under way of a task's data (a
        split's input, an assembly's results) or a wait for the lanes to join
        (`_joining`). A non-member judging the job reads it as a run of it (`_signs_seen`:
        review r2 of session 46, L3). Of more, the MAX_WORKING in id order after the last
        one a heartbeat named (`next_working`), round. A read, no step: what /api/peers
        shows of us."""
        return self._working()[0]

    def next_working(self) -> list[str]:
        """`working`, for a heartbeat: the next read names the next MAX_WORKING (review r2
        of session 47, finding 6: the same 16 were named for ever), so each is named at least
        every ceil(n / MAX_WORKING) heartbeats, within the lease a non-member waits for a
        sign while they are fewer than MAX_WORKING x (lease_s / the heartbeat's interval).
        Only heartbeats step it (the reread of session 47: /api/peers' reads skipped a
        slice for the mesh at each poll)."""
        named, step = self._working()
        if step:
            self._worked_to = named[-1]
        return named

    def _working(self) -> tuple[list[str], bool]:
        st = self.state
        jobs = sorted({*self._joining, *(k[0] for k in self.locality.fetching
                                         if k[0] in st.members_of)})
        if len(jobs) <= MAX_WORKING:
            return jobs, False
        i = bisect.bisect_right(jobs, self._worked_to)
        return [*jobs[i:], *jobs[:i]][:MAX_WORKING], True

    def waiting(self) -> dict[TaskKey, str]:
        """Why tasks wait on this peer (a failed fetch of their data), for the job view."""
        out: dict[TaskKey, str] = {
            k: "waiting for a live peer to fetch the input from" for k in self._lonely
            if k not in self.state.task_done}
        for key in self.locality.stalled:
            if (r := self.locality.reason(key)) is not None:
                out[key] = r
        for key in list(self._cannot):
            if key in self.state.task_done or key[0] not in self.state.jobs:
                self._cannot.discard(key)
                continue
            spec = self.workflow(key[0]).task(key[1])
            call = spec.call or ""
            if spec.newer:
                out[key] = ("waiting for a peer of a newer version: this one does not know "
                            + ", ".join(spec.newer))
            elif not any(call in info.get("calls", ()) for info in self.peers().values()):
                out[key] = kinds.unavailable(call)
        for tables in (self._unplaced, self._lost):
            out.update((k, r) for k, r in tables.items() if k not in self.state.task_done)
        why = HELD_BACK if self.claims_held else SETTLING
        out.update((k, why) for k in self._held_back if k not in self.state.task_done)
        return out

    # -- the loop ----------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            # Not asyncio.wait_for: on 3.11 it swallows a cancel() that lands just after the
            # event was set, and then close() waits forever for this loop to end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sleep_s()):
                    await self._wake.wait()
            self._wake.clear()
            self.step()

    def timed(self) -> bool:
        """Does a tick have work here (something waits on time: staggered claims, others'
        leases, our claims to check, data, starved tasks, lanes jobs without a live
        member or whose lanes we wait for, ended ones to look at again: `_better_ends`)?
        If not, only events (which wake the loop) can change anything, and an idle peer
        ticks every IDLE_TICK_S."""
        return bool(self._dirty or self._mine or self._starved or self._ready_since
                    or self._claim_seen or self._unplaced or self._partial_due
                    or self.locality.waiting or self.locality.stalled or self._orphaned
                    or self._ending or self._joining or self._reend or self.settling
                    or any(at is not None for _, _, at in self._assembly_failed.values()))

    def sleep_s(self) -> float:
        """How long the loop may wait for an event before its next round: a tick while
        something waits on time (`timed`), else IDLE_TICK_S; less when a staggered turn
        (split or claim) comes sooner."""
        tick = self.cfg.tick_s if self.timed() else max(self.cfg.tick_s, IDLE_TICK_S)
        return max(0.0, min(tick, self._turn_at - self.clock()))

    def step(self) -> None:
        """One evaluation round: the tasks marked by events, every tick those whose
        progress depends on time (staggered claims, others' leases that lapsed, waits for
        data whose grace or backoff is over), and the staggered ones as soon as a turn comes
        (not at the next tick)."""
        now = self.clock()
        self._stepping = True  # the live peers are read once per round, not per task
        try:
            if self.settling:
                self._look_settled(now)
            if now - self._last_tick >= self.cfg.tick_s / 2:
                self._last_tick = now
                self._dirty.update(self._waiting())
                self._check_claims()
                self._sweep_gone()
                for job in list(self._joining):
                    self._look_joining(job, now)
                self._lanes_tick(now)
            if now >= self._turn_at:  # each not yet due sets its turn again when evaluated
                self._turn_at = math.inf
                self._dirty.update(self._turns())
                self._dirty.update(self._deferred_due(now))
            dirty, self._dirty = self._dirty, set()
            order = sorted(dirty)
            if self._promised:  # the tasks of our small jobs first: `takes_first` promised
                order.sort(key=lambda k: k not in self._promised)  # them the slots (stable)
            for key in order:
                self._evaluate_safely(key)
            self._fill_slots()
        finally:
            self._stepping, self._live, self._full_peers = False, None, None
            self._short_here.clear()
        if self._starved and self.free_slots > 0:
            self._wake.set()  # slots still free: the next starved tasks in the next round

    def _evaluate_safely(self, key: TaskKey) -> None:
        try:
            self._evaluate(*key)
        except BanzaiError as e:  # (a store's or a missing block's: retried when assembling)
            self._fail_task(key, str(e), final=not isinstance(e, (StoreError, NotFound)),
                            missing=isinstance(e, NotFound))
        except Exception as e:  # a bug must not stop the scheduler
            log.exception("scheduler error on %s", key)
            self._fail_task(key, f"internal error: {e}")

    def _fill_slots(self) -> None:
        """Free slots take starved tasks, oldest first, one at a time, until the slots are
        full (at most FILL_PER_ROUND a round): each leaves the queue once looked at (it is
        claimed, held by another peer, or waits for its turn in `_ready_since`), and comes
        back only if it is still open when the slots are full again."""
        budget = FILL_PER_ROUND
        while self._starved and self._runs.room > 0 and budget > 0:
            key, mine = self._next_starved()
            if self.free_slots <= 0 and not (mine and self._may_queue(key)):
                break  # queued behind the slots: only this peer's own short tasks (or alone)
            del self._starved[key]
            budget -= 1
            self._first_for = key if mine else None
            try:
                self._evaluate_safely(key)
            finally:
                self._first_for = None

    def _next_starved(self) -> tuple[TaskKey, bool]:
        """The starved task a free slot looks at next, and whether this peer comes first for
        it: of the FILL_SCAN oldest, the first that the claim order puts this peer first for
        (`_first_peer`); else the newest (a peer that ran out of its own takes from the far
        end of the queue, where the peers that come first for those tasks look last). Peers
        whose slots free at about the same time, each seeing the others full, then look at
        different tasks instead of all claiming the oldest (a duplicate claim: every loser's
        run is wasted). Only the order of looking changes: who may claim is still
        `claims.candidates`'."""
        peers = [*self._peers(), self.peer_id]
        if len(peers) == 1:
            return next(iter(self._starved)), True
        me = self.peer_id
        firsts = self._firsts_of(peers)  # (the memo read here: a round scans it up to
        for key in itertools.islice(self._starved, FILL_SCAN):  # FILL_SCAN times a task)
            first = firsts.get(key)
            if (first if first is not None else self._first_peer(key, peers)) == me:
                return key, True
        return next(reversed(self._starved)), False

    def _firsts_of(self, peers: list[str]) -> dict[TaskKey, str]:
        """The memo of `_first_peer` for `peers` (emptied if they are other peers than its,
        or if it is full)."""
        live = frozenset(peers)
        if live != self._firsts_peers or len(self._firsts) >= FIRST_MEMO:
            self._firsts, self._firsts_peers = {}, live
        return self._firsts

    def _first_peer(self, key: TaskKey, peers: list[str]) -> str:
        """The peer of `peers` (every live peer, this one included, full or not) that the
        claim order (`claims.candidates`, nobody holding an input) puts first for task
        `key`: of the peers that may claim it (those that run its call and meet its
        `requires`), the one that split it, or would have split it when its split is
        implicit (`_implicit_rank`: its submitter when the job says `local`), else the
        first by rendezvous hash. A peer that cannot claim the task is never first: a task that
        only one labelled peer meets is that peer's own, whose runs it queues behind its
        slot. Remembered per set of peers: a freed slot scans up to FILL_SCAN starved
        tasks (at 3 peers about 4 % of the peers' CPU in a job of 1,000 short tasks when
        each was hashed at every scan)."""
        first = self._firsts_of(peers).get(key)
        if first is None:
            try:
                first = self._claim_first(key, peers)
            except Exception:  # a bug must not stop the scheduler (`_fill_slots` is not
                log.exception("ranking %s", key)  # guarded as an evaluation is)
                first = rendezvous(f"{key[0]}/{key[1]}", peers)[0]
            self._firsts[key] = first
        return first

    def _claim_first(self, key: TaskKey, peers: list[str]) -> str:
        """`_first_peer`, computed."""
        job, task = key
        unit = f"{job}/{task}"
        if job not in self.state.jobs:
            return rendezvous(unit, peers)[0]
        peers = claims.members_only(self.state, job, peers) or peers  # (a lanes job's)
        spec = self.workflow(job).task(task)
        call, info = spec.call or "", self._runners(job)
        able = [p for p in peers if (p == self.peer_id or call in info.get(p, {}).get("calls", ()))
                and self._meets(p, spec.requires)]
        if not able:
            return rendezvous(unit, peers)[0]
        split = self.state.splits.get(key)
        if self._members_first(job, split):
            return rendezvous(unit, able)[0]
        if split is not None and self.state.implicit(split):
            return next((p for p in self._implicit_rank(job, task, call) if p in able), able[0])
        if split is not None and (by := peer_of(split.origin)) in able:
            return by  # ranked first after the input's holders (per chunk: not here)
        return rendezvous(unit, able)[0]

    def _meets(self, peer: str, requires: Mapping[str, Any]) -> bool:
        """True if `peer`'s MEMBER event meets `requires`, or has not been folded here yet
        (ranked as if it did, as before its labels were read: a live peer's MEMBER may come
        after its first heartbeat, and the rankings are made again when it comes)."""
        if not requires:
            return True
        m = self.state.members.get(peer)
        return m is None or placement.unmet(requires, m.payload) is None

    def _may_queue(self, key: TaskKey) -> bool:
        """True if a run of task `key` may wait behind a slot (`queue_ahead`): this peer is
        alone and has a core to spare (`queue_alone`: no other peer could take it meanwhile,
        and its worker starts it as the one before ends, without the claim's round trip: a
        per-item task's next chunk), or the call ran here lately within queue_ahead_max_s
        (a peer that frees meanwhile waits that long at most for work queued here), or within
        queue_ahead_item_max_s per item of a per-item chunk whose items are here (a peer
        without them would fetch each first), and a run in the slots is of such a call too
        (`Runs.frees_soon`: not behind a long run, which would hold the task as long); and,
        once the task is split, its input is here (`_input_here`)."""
        if self.cfg.queue_ahead <= 0 or key[0] not in self.state.jobs:
            return False
        split = self.state.splits.get(key)
        if split is not None and not self._input_here(
                split, self.state.providers.get(split.payload["input"] or "", set())):
            return False
        return (self.cfg.queue_alone and not self._peers()) or (self._runs.short(
            self.workflow(key[0]).task(key[1]).call or "",
            items_here=split is not None and bool(split.payload["input"]))
            and self._runs.frees_soon)

    def _input_here(self, split: Event, holders: set[str]) -> bool:
        """True if the split's input is here (or it has none, or no other peer is live):
        only then may one of its chunks wait behind a busy slot (`queue_ahead`) on a peer
        with live peers. A peer that must fetch a chunk's
        input first takes longer over it than the run of a short call does: queued here, the
        chunk would be held back while a holder of the input frees and could run it at once
        (seen on two pinned peers: the other peer's two chunks of FILTER_LONGER, one queued
        behind the other, ended the stage 0.05-0.2 s after the holder had run out of work)."""
        inp = split.payload["input"]
        return (not inp or self.peer_id in holders or not self._peers()
                or (self.store.has(inp) and self.data.is_complete(inp)))

    def _peers(self) -> Mapping[str, Mapping[str, Any]]:
        """The live peers: read once per evaluation round (a round is synchronous, so the
        membership cannot change within it; with thousands of tasks marked by the events of
        a turn, reading it per task cost more than evaluating them)."""
        if not self._stepping:
            return self.peers()
        if self._live is None:
            self._live = self.peers()
        return self._live

    def _runners(self, job: str) -> Mapping[str, Mapping[str, Any]]:
        """The live peers (`_peers`) that run `job`'s tasks: of a job whose workflow says
        `splits`, those that announce folding it (_RUNS_SPLITS). A peer of an earlier release
        that came back after the job was submitted runs none of it: nobody waits a turn to
        split or claim its tasks for it (review r, session 40, finding 6)."""
        live = self._peers()
        wf = self.workflow(job) if job in self.state.jobs else None
        needs = _RUNS_SPLITS.get(wf.splits or "", ()) if wf is not None else ()
        if not needs:
            return live
        if self._runners_memo[0] is not live:  # (once per round and `needs`: asked per chunk)
            self._runners_memo = (live, {})
        got = self._runners_memo[1].get(needs)
        if got is None:
            got = self._runners_memo[1][needs] = {
                p: i for p, i in live.items()
                if all(f in (i.get("features") or ()) for f in needs)}
        return got

    def _note(self, ev: Event) -> None:
        p = ev.payload
        if "job" in p and (p["job"] in self._lanes_live or p["job"] in self.state.members_of):
            self._note_lanes(p["job"], p.get("task"))
        if ev.type == EventType.PROVIDE:
            self._provided(ev)
        elif ev.type == EventType.MEMBER:  # its labels may change who comes first
            self._firsts, self._ranks = {}, {}
        elif ev.type == EventType.JOB_MEMBERS and p["job"] in self.state.members_of:
            self._members_grew(ev, p["job"])
        elif ev.type == EventType.JOB_SUBMITTED:
            self._dirty.update((p["job"], t["name"]) for t in p["workflow"]["tasks"])
            self._wait_to_join((p["job"],))
        elif ev.type == EventType.JOB_CANCELLED:
            self._runs.cancel_job(p["job"])
        elif ev.type == EventType.TASK_DONE:
            self._dirty.update((p["job"], t) for t in self.planner.dependents(p["job"], p["task"]))
            if not self._done_here(key := (p["job"], p["task"])):  # (an unvouched lane's
                self._dirty.add(key)  # that this peer runs again: `_unsettled`)
        elif "job" in p and "task" in p:
            self._note_task(ev, p)
        if self._joining and p.get("job") in self._joining:  # (one of the lane events we
            self._look_joining(p["job"], self.clock())  # wait for? after it is noted)

    def _members_grew(self, ev: Event, job: str) -> None:
        """A JOB_MEMBERS of lanes job `job` was folded: its home and rankings may change; if
        it made us a member (`members.joins`, and no earlier add did: `_added`), we run the
        job once we hold the lanes as of the add (`_join`); a member that did not add them
        starts a pair round of the job with each other peer added (its lane events sent
        while the add travelled went to the members it knew, and are not in the add's
        `heads`: design 5.3). An add naming a member again makes it wait for nothing: its
        `heads` are any member's word (the door lets a member add anyone), and a wait for
        seqs that never come would stop it claiming the job for lease_s at each add."""
        self._firsts, self._ranks = {}, {}
        add, me = ev.payload["add"], self.peer_id
        if (me in add and job in self._lanes_live and job not in self._added
                and members.joins(self.state, me, job)):
            self._join(job, ev, members.join_heads(me, job, ev.payload.get("heads")))
        elif peer_of(ev.origin) != me and self.state.member_of(job, me):
            for peer in add:
                if peer != me:
                    self.catch_up(job, peer, fallback=False)

    def _wait_to_join(self, jobs: Iterable[str]) -> None:
        """Of lanes jobs `jobs`, those running here that an add made us a member of
        (`members.joins`) and no add noted here did yet (`_added`) we join as of the
        earliest such add held (`members.first_adds`; `_join`: we wait for its lanes, or
        hold them already): at `recover` (a joiner restarted while it waited waits again:
        the wait is in memory only; one restarted after the lanes came, before it claimed
        anything, takes the tasks as `_joined` does, not in `recover`'s name order), and
        at a JOB_SUBMITTED (one folded after the JOB_MEMBERS that added us, events out of
        order: then `_members_grew` found no job running, and the job would run here at
        once, in the JOB_SUBMITTED's name order)."""
        st, me = self.state, self.peer_id
        new = {j for j in jobs if j in self._lanes_live and j not in self._added
               and members.joins(st, me, j)}
        self._added |= new
        for job, (add, heads) in members.first_adds(st, me, new).items():
            self._join(job, add, heads)

    def _join(self, job: str, add: Event, heads: Mapping[str, int]) -> None:
        """JOB_MEMBERS `add` added us to lanes job `job` (design 5.3): its tasks are
        taken as `_joined` says once we hold its lanes as far as its adder did (`heads`,
        its heads then: `members.join_heads`, `members.caught_up`; at once if they are held),
        asked of the adder at once (`catch_up`: a pair round, not the next period's), or once
        lease_s passed without them (then from what is held, as an orphan takeover runs a
        job: `_look_joining`). Until then we claim nothing of it (a peer without its
        members' claims would run again what they ran or run). The other members start a
        pair round of the job with us too (`_members_grew`). Once per job and run
        (`_added`): the wait is bounded by lease_s from the first add. An add that names no
        heads (an orphan takeover's, an adder's of an earlier release) has its tasks looked
        at at once, as before session 42: a split or an assembly needs no free slot."""
        self._added.add(job)
        if not heads:  # no member's claims to wait for or to race (an orphan takeover's):
            self._dirty.update((job, t.name) for t in self.workflow(job).tasks)  # at once,
            # a split or an assembly too, which needs no free slot (review h, H4)
        elif not members.caught_up(self.state, heads, add.hlc):
            self._joining[job] = (self.clock() + self.cfg.lease_s, dict(heads), add.hlc)
            self.catch_up(job, peer_of(add.origin), fallback=True)
        else:
            self._joined(job)

    def _look_joining(self, job: str, now: float) -> None:
        """End `job`'s wait to join (`_join`) once its lanes are held as far as its adder
        held them (`members.caught_up`), or its time is up, or the job left memory."""
        until, heads, since = self._joining[job]
        if job not in self.state.jobs:
            del self._joining[job]
        elif members.caught_up(self.state, heads, since):
            self._joined(job)
        elif now >= until:
            log.warning("%s: its members' lanes did not come within %.0f s of our add: "
                        "running it from what is held", job, self.cfg.lease_s)
            self._joined(job)

    def _joined(self, job: str) -> None:
        """We run lanes job `job` now: its tasks are looked at as a freed slot takes starved
        ones (`_fill_slots`: first those this peer comes first for), not each at once in
        name order: the members whose slots free meanwhile take theirs at once
        (`_first_for`), and a joiner that looked at them in its own order would claim some
        of those too (each seeing the other busy: a chunk run twice)."""
        self._joining.pop(job, None)
        keys = dict.fromkeys((job, t.name) for t in self.workflow(job).tasks)
        self._dirty.difference_update(keys)  # (marked by the lane events that came)
        self._starved.update(keys)

    def _note_lanes(self, job: str, task: object) -> None:
        """`_note` of an event of lanes job `job` (folded; about `task`, None if about no
        task): it is running here (`_lanes_live`) and moved (`_lanes_moved`: `_end_jobs`
        looks at it), or not (ended: `_better_ends` looks at it, reading again the
        statuses of `task`, or of every task, `Merits.changed`)."""
        self._merits.changed(job, task if isinstance(task, str) else None)
        if _running(self.state, job):
            self._lanes_live.add(job)
            self._lanes_moved.add(job)
        else:
            self._lanes_live.discard(job)
            self._lanes_moved.discard(job)
            self._open_at.pop(job, None)
            self._added.discard(job)
            self._ending.pop(job, None)
            st = self.state
            if job not in st.ended:
                self._end_refused.discard(job)
            elif self.peer_id in st.members_of.get(job, ()):  # (our fold of it may have
                self._reend.add(job)  # moved past its end: `_better_ends`)

    def _note_task(self, ev: Event, p: Mapping[str, Any]) -> None:
        """`_note` of an event about a task or one of its chunks."""
        if ev.type == EventType.CLAIM and (by := peer_of(ev.origin)) != self.peer_id:
            ak = AttemptKey(p["job"], p["task"], p["chunk"], p["attempt"])
            self._note_taken((ak.job, ak.task))
            self._claim_seen.claimed_by(ak, by)  # (if watched: it may be the winner)
            if self._settled(ak):  # its outcome came first (or it lost): not watched
                return
            self._claim_seen[ak] = self.clock()
            if self._unconcerned(ak):  # its lease is watched: looked at if it lapses;
                self._deferred.pop((ak.job, ak.task), None)  # its turn here is moot
                return  # (as `_implicit_turn` finds once the chunk is claimed)
        elif ev.type in _OUTCOMES:  # that attempt's lease no longer matters (else, once
            ak = AttemptKey(p["job"], p["task"], p["chunk"], p["attempt"])  # lapsed,
            if ak in self._claim_seen and self._settled(ak):  # every tick would look at
                self._claim_seen.pop(ak)  # it); not another split's outcome (the holder's
                # still holds). (An attempt not watched, as the claim of a TURN that brings
                # its outcome too: not looked up.)
            self._taken.pop((ak.job, ak.task), None)  # (its taker's next claim says again)
        if not self._done_here(key := (p["job"], p["task"])):  # (else `_evaluate` stops
            self._dirty.add(key)  # at once: a CHUNK_DONE that implied its TASK_DONE)
        if ev.type in _SPLITS:  # split: its planning stagger (chunk -1) is over
            self._ready_since.pop(AttemptKey(p["job"], p["task"], -1, -1), None)
            self.locality.forget((p["job"], p["task"]))  # (its planning's wait is over)
            self._firsts.pop((p["job"], p["task"]), None)  # its splitter comes first

    def _note_taken(self, key: TaskKey) -> None:
        """Another peer claimed task `key`: if it is one of the next of our backlog (of the
        FILL_SCAN oldest starved here, where `_next_starved` looks for ours, and this peer
        comes first for it), that peer has run out of its own tasks and takes the ones we
        are about to take, so our claims are not held back from it now (`backlog`). (Not
        for any task of our backlog: a slow peer is taken from for the last third of a job
        of 1,000 on three peers, and without holds then the mesh made 0.22 events per task
        instead of 0.18, where the claims made twice were of the last few of its tasks.)"""
        if (key in self._starved and key not in self._taken
                and key in islice(self._starved, FILL_SCAN)
                and self._first_peer(key, [*self._peers(), self.peer_id]) == self.peer_id):
            self._taken[key] = None

    def _provided(self, ev: Event) -> None:
        """Our PROVIDE: DAGs complete here now (replicated, say): the tasks waiting for them
        go on at once (not when their grace period ends)."""
        if ev.origin == self.peer_id:
            self._dirty.update(self.locality.wanting(ev.payload["cids"]))

    def _settled(self, ak: AttemptKey) -> bool:
        """True if attempt `ak` of the winning split's chunk has ended as the state folds it
        (a later attempt began, or the chunk is done): its claim's lease no longer matters.
        (`_note` runs after the event is folded.)"""
        c = self.state.chunk(ak.job, ak.task, ak.chunk)
        return ak.attempt < c.attempt or claims.chunk_done(c) is not None

    def _unconcerned(self, ak: AttemptKey) -> bool:
        """True if another peer's claim of `ak` changes nothing this peer does before its
        lease lapses: the one whole chunk of a task with an implicit split (no input, no
        items, no reduce) that this peer neither runs, nor claimed, nor waits for its turn
        to claim. (Before, every peer looked at each such task as the claim came: about one
        evaluation per task and peer, for nothing.) A look at it that comes later anyway
        (a free slot) finds it claimed, as before."""
        split = self.state.splits.get((ak.job, ak.task))
        return (split is not None and ak.chunk == 0 and self.state.implicit(split)
                and ak not in self._ready_since and ak not in self._mine
                and not self._runs.running(ak))

    def _waiting(self) -> set[TaskKey]:
        """Tasks whose progress depends on time: staggered claims, others' leases that
        lapsed (one that holds changes nothing: before, each task another peer held was
        looked at every tick), waits for data whose grace period or backoff is over
        (`Locality.due`), and every wait for data when the live peers changed (a preferred
        peer left, a lonely task has peers again). A task waiting for data is not looked at
        every tick (each look walks its chunks): it is when what it waits for may have
        changed (its fetch ended, the data came, an event about it was folded)."""
        self._prune_ended()
        keys = set(self._unplaced) | set(self._partial_due) | self._turns()
        now = self.clock()
        cannot = self._cannot  # (their leases are the claimers' to fail: `_evaluate` stops)
        keys |= {k for k in self._claim_seen.lapsed(now) if k not in cannot}
        keys.update(self.locality.due(now))
        keys.update(self._assembly_due(now))
        live = frozenset(self._peers())
        if live != self._waits_peers:
            self._waits_peers = live
            keys.update(self.locality.waiting)
            keys.update(self._vouched_wait)  # (left alone for a vouched member: may be gone)
            self._vouched_wait = {}
        return keys

    def _prune_ended(self) -> None:
        """The tables keyed by tasks leave the tasks done and the jobs cancelled: read once
        an event entered memory since the last time (a task ends by an event), not at every
        tick (an idle peer watching thousands of claims read them all, 4 times a second)."""
        st = self.state
        seen = (st.entered, len(st.task_done), len(st.cancelled))
        if seen == self._ended_seen:
            return
        self._ended_seen = seen

        def stale(k: tuple[Any, ...]) -> bool:
            return k[0] in st.cancelled or self._done_here((k[0], k[1]))

        for table in self._task_tables():
            _prune(table, stale)

    def _task_tables(self) -> tuple[dict[Any, Any], ...]:
        """The tables keyed by tasks (or their chunks) that a task leaves once it is done
        or its job cancelled; a job that leaves memory leaves them too (`_sweep_gone`), with
        the few kept of ended tasks. One list, so that a table added here is never left out
        of either sweep (`_results_seen` was of the sweep of ended tasks only: a deleted
        job's, or a compacted one's with a failed task, stayed for good)."""
        return (self._ready_since, self._claim_seen, self.locality.waiting,
                self.locality.stalled, self._unplaced, self._partial_due, self._partial_sent,
                self._partial_sig, self._results_seen, self._prefetched, self._looked,
                self._deferred, self._last_done, self._taken, self._held_back,
                self._vouched_wait, self._unvouched_mark, self._assembly_failed)

    def _sweep_gone(self) -> None:
        """Jobs that left memory (compacted or deleted) leave every table here keyed by
        their tasks, the planner's and the live records too: what stays is bounded by the
        jobs in memory (live ones and the recent history; issue 11)."""
        st = self.state
        gone = st.compacted.added + st.deletions  # (their lens stay level once full)
        if gone == self._gone:
            return
        self._gone = gone

        def left(k: tuple[Any, ...]) -> bool:
            return k[0] in st.compacted or k[0] in st.deleted

        for table in (*self._task_tables(), self._lost, self._starved, self.live.logs,
                      self.live.metrics):
            _prune(table, left)
        for keys in (self._lonely, self._cannot, self._partial_fetching):
            keys.difference_update([k for k in keys if left(k)])
        for job in [j for j in {*self._end_refused, *self._reend, *self._better}
                    if j in st.compacted or j in st.deleted]:  # (`_better_ends`' tables)
            self._end_refused.discard(job)
            self._reend.discard(job)
            self._better.pop(job, None)
        self._merits.sweep(lambda job: job in st.compacted or job in st.deleted)
        self.planner.sweep(lambda job: job in st.compacted or job in st.deleted)

    def _turns(self) -> set[TaskKey]:
        """The tasks waiting for their staggered turn to split or claim; a claim's turn with
        no free slot to run it goes to the starved queue instead (looked at when one frees)."""
        keys: set[TaskKey] = set()
        full = self.free_slots <= 0
        for k in self._ready_since:
            if full and k.chunk >= 0:
                self._starved[(k.job, k.task)] = None
            else:
                keys.add((k.job, k.task))
        return keys

    def _deferred_due(self, now: float) -> list[TaskKey]:
        """The tasks with an implicit split whose turn to look at their chunk has come
        (`_implicit_turn`); the turn of the others is set again."""
        out = []
        for key, due in self._deferred.items():
            if due <= now:
                out.append(key)
            else:
                self._turn_at = min(self._turn_at, due)
        return out

    def _lanes_tick(self, now: float) -> None:
        """Once a tick, of the running lanes jobs (`_lanes_live`; none with lanes off): end
        those this peer is the home of (`_end_jobs`), spread them, take orphans over
        (`_lanes_round`). A change of the live peers may change a job's home or orphan it:
        then every one is looked at again."""
        if (not self._lanes_live and not self._spread_at and not self._orphaned
                and not self._reend and not self._better):
            return
        peers = self._peers()
        live = frozenset([*peers, self.peer_id])
        if live != self._lanes_peers:
            self._lanes_peers = live
            self._lanes_moved |= self._lanes_live
            self._reend.update(self._better)
        stuck = {p for p, i in peers.items() if members.cannot_claim(i)}
        if stuck != self._stuck.keys():  # (a named member that can claim nothing keeps a
            self._stuck = {p: self._stuck.get(p, now) for p in stuck}  # job a window only)
            self._lanes_moved |= self._lanes_live
        if self._kept_seen:  # (an added member busy on a job, or waiting for its slot)
            self._signs_seen(peers, now)
        moved = set(self._lanes_moved)
        self._end_jobs(now)
        self._better_ends(now)
        self._lanes_round(moved, now)

    def _holding(self, job: str) -> frozenset[str]:
        """The live peers that run lanes job `job` (`_runners`), this one included: its
        members among them hold it (its home, who ends and spreads it, is the first of them:
        `members.home`); a member of an earlier release that runs none of it holds nothing
        (were it the only live member, the job would stall while it lives)."""
        return frozenset([*self._runners(job), self.peer_id])

    def _end_jobs(self, now: float) -> None:
        """Emit the JOB_ENDED of each lanes job that ended whose home this peer is
        (`members.home`), in our mesh stream (it is no lane part), once: not while the state
        holds a JOB_ENDED of the job (ours, folded at once, or another member's: the fold's
        `end_rank` picks one), so not again after a restart either. Looked at only once an
        event of the job (or of the live peers) was noted since the last look
        (`_lanes_moved`), and emitted only once the job stayed finished here for
        end_grace_s (the other members' last lane events reach the home by then: a push, a
        pair round), made again from the fold then."""
        st = self.state
        me = self.peer_id
        for job in list(self._lanes_moved):
            self._lanes_moved.discard(job)
            if (job not in self._lanes_live or self._open_task(job)
                    or me not in st.members_of.get(job, ())
                    or members.home(job, st, self._holding(job)) != me
                    or any(e.origin == me for e in st.unended.get(job, {}).values())
                    or job in self._end_refused):
                self._ending.pop(job, None)
                continue
            try:
                payload = (None if self._unsettled_tasks(job)
                           else job_ended(st, job, self.cfg.max_attempts))
                if payload is None:
                    self._ending.pop(job, None)
                elif now - self._ending.setdefault(job, now) < self.cfg.end_grace_s:
                    self._lanes_moved.add(job)  # (looked at again next tick)
                else:  # (outputs over a quarter of max_split_bytes: listed)
                    del self._ending[job]
                    self._emit_end(job, payload)
            except Exception:  # a bug must not stop the scheduler (retried next tick)
                self._lanes_moved.add(job)
                log.exception("ending job %s", job)

    def _open_task(self, job: str) -> bool:
        """Does running job `job` (not cancelled) hold a task that waits for nothing and is
        neither done nor failed? Then it did not end (`finished_at`'s first test: `job_ended`
        is None whatever else holds), and `_end_jobs` looks no further: on db663953 each
        tick's look at a running job walked all its tasks twice (`_unsettled_tasks`, then
        `finished_at`'s statuses up to the first open one): 378 µs a look at 1,000 tasks, half
        done, in process (4.6 now), 7 % of the home's py-spy samples in the 3-peer dag. The
        task found open is looked at first the next time, and the walk goes on from it
        (tasks end about in order)."""
        st = self.state
        sub = st.jobs.get(job)
        if sub is None or job in st.cancelled:
            self._open_at.pop(job, None)
            return False
        try:
            tasks = self.workflow(job).tasks
        except Exception:  # (not ours to judge: the full look, guarded, says why)
            return False
        n = len(tasks)
        start = self._open_at.get(job, 0) % max(n, 1)
        for i in itertools.chain(range(start, n), range(start)):
            t = tasks[i]
            if (not t.depends and (job, t.name) not in st.task_done
                    and not self._failed_here(job, t.name, t)):  # (review rr of s50, RR-2)
                if len(self._open_at) >= OPEN_HINTS and job not in self._open_at:
                    self._open_at.clear()
                self._open_at[job] = i
                return True
        self._open_at.pop(job, None)
        return False

    def _emit_end(self, job: str, payload: dict[str, Any]) -> Event:
        """Emit `job`'s JOB_ENDED of `payload` (its outputs listed when over a quarter of
        max_split_bytes); one the fold refuses for good (`end_flaw`) is noted in
        `_end_refused` (not emitted again until a restart) and logged."""
        ev = self.emit(EventType.JOB_ENDED, framed(
            payload, self.cfg.max_split_bytes // 4, self.planner.stored))
        if (flaw := end_flaw(ev, ev.body_as(JobEnded))) is not None:
            self._end_refused.add(job)
            log.error("%s: our JOB_ENDED %s is refused for good: %s (not emitted again "
                      "until a restart)", job, ev.id, flaw)
        return ev

    def _better_ends(self, now: float) -> None:
        """Emit another JOB_ENDED of each ended lanes job whose fold here now makes an end
        that ranks strictly before its winning one (`ending.better_end`; design section 3,
        session 46 helper b: members cut apart each ended the job from their side, and the
        merged fold fails fewer tasks than any side's end), if this peer is its home
        (`members.home`, as `_end_jobs`), once its fold did so for end_grace_s (the lane
        events of the heal keep coming meanwhile: the end is made from the fold then).
        Looked at only once an event of the job was noted since the last look (`_reend`:
        a TASK_DONE, another end folded), or the live peers changed for one whose fold
        here did (`_better`: a home taking over from one gone before it emitted), so no
        tick walks the ended jobs. Two homes at once (each sees the other gone) emit two
        ends that tie by merit: the earlier wins, and neither is emitted again (a tie is
        no better). Not while our own JOB_ENDED of the job is held unfolded or was refused
        for good (`_end_refused`)."""
        st, me = self.state, self.peer_id
        look, self._reend = self._reend, set()
        budget = self._merits.walked + _REEND_TASKS
        for job in look:
            if self._merits.walked >= budget:  # (a restart's first looks: spread over ticks)
                self._reend.add(job)
                continue
            try:
                if job in self._end_refused or any(
                        e.origin == me for e in st.unended.get(job, {}).values()
                        ) or not self._merits.better(st, job, me):
                    self._better.pop(job, None)
                    continue
                since = self._better.setdefault(job, now)
                if members.home(job, st, self._holding(job)) != me:
                    continue  # (kept in `_better`: looked at again if the live peers change)
                if now - since < self.cfg.end_grace_s:
                    self._reend.add(job)  # (looked at again next tick)
                    continue
                del self._better[job]
                payload = better_end(st, job, me, self.cfg.max_attempts)  # (the one walk)
                if payload is None:  # (`Merits` says as `better_end`: a bug, or a change
                    self._merits.changed(job, None)  # of the fold no event noted: read all
                    log.error("%s: a better end was seen, and none was made", job)  # again)
                    continue
                won = st.ended[job]
                ev = self._emit_end(job, payload)
                log.info("%s: our fold of it makes an end before its JOB_ENDED %s (%d failed "
                         "tasks, not %d): ended again, %s", job, won.id,
                         len(payload["failed"]), len(won.payload["failed"]), ev.id)
            except Exception:  # a bug must not stop the scheduler (retried next tick)
                self._reend.add(job)
                log.exception("ending job %s again", job)

    def _fail_task(self, key: TaskKey, error: str, final: bool = False,
                   missing: bool = False) -> None:
        """Fail a task for good (a non-retryable error in its first unfinished chunk), once:
        a task failed already is left (an error that every evaluation meets, e.g. a
        workflow this release's spec refuses, failed the next attempt at each one, and
        each CHUNK_FAILED made the task dirty again: without end, review r1 of session 49).
        Every chunk done, the error came from assembling the output: `final` (an error that
        every look meets again, e.g. a listing past the planner's bound) fails the task at
        its last chunk (`claims.assembly_failure`), else (a store's, a missing block's) it is
        tried again after a backoff, and fails so at its ASSEMBLY_TRIES-th try
        (`_assembly_retry`); a missing block's (`missing`) also drops the "complete here"
        note of what the assembly reads, so that the next try walks and fetches it."""
        job, task = key
        if self._done_here(key) or (
                key in self.state.splits and self._failed_here(job, task)):
            return
        if key not in self.state.splits:  # failed while planning: record a one-chunk split
            self.emit(EventType.TASK_SPLIT, {"job": job, "task": task, "input": None,
                                             "chunks": [[]], "kept": {}})
        payload = claims.task_failure(self.state, job, task, cut_text(error))
        if payload is None and not final:  # every chunk done: the error came from assembling
            last = self._assembly_retry(key, error)  # the output; maybe passing: again later
            if missing:
                self._unmark_read(key)
            if last is None:
                return
            error, final = last, True
        if payload is None and final:  # every chunk done: the task ends, failed (RR-4)
            log.warning("%s/%s: assembling the output failed: %s", job, task, error)
            payload = claims.assembly_failure(self.state, job, task,
                                              cut_text(f"assembling the output: {error}"))
        if payload is None:  # (no split)
            return
        self.emit(EventType.CHUNK_FAILED, payload)

    def _unmark_read(self, key: TaskKey) -> None:
        """Task `key`'s assembly met a missing block: forget that the DAGs it reads (the
        chunks' outputs and item results, the input) are complete here, so that the next try
        walks them and fetches what is missing. (A block gone otherwise than by this peer's
        janitor, e.g. Kubo's own gc or a distrusted block, left the memo saying complete:
        every try met the same NotFound and the task failed without a fetch; review r2 of
        session 52, finding 2.)"""
        split = self.state.splits.get(key)
        chunks = self.planner.chunks(split) if split is not None else None
        if split is None or chunks is None or any(
                claims.chunk_done(self.state.chunk(*key, i)) is None for i in range(len(chunks))):
            return
        for c in (*self.planner.chunk_outputs(*key, len(chunks)), split.payload.get("input")):
            if c:
                self.data.unmark(c)

    def _assembly_retry(self, key: TaskKey, error: str) -> str | None:
        """Task `key`'s assembly failed here with `error`, a store's or a missing block's
        (maybe passing): None while it is to be tried again, after fetch_backoff_s doubled
        at each try up to fetch_max_backoff_s (`_assembly_due`; the scheduler's clock), else,
        at its ASSEMBLY_TRIES-th try, the error the task fails with for good (the cause, the
        tries and how long they took)."""
        now = self.clock()
        tries, first, _ = self._assembly_failed.get(key, (0, now, None))
        tries += 1
        if tries >= ASSEMBLY_TRIES:
            self._assembly_failed.pop(key, None)
            return f"{error} (tried {tries} times over {now - first:.0f} s)"
        if tries == 1:  # (logged once; the last try's is the task's failure)
            log.warning("%s/%s: assembling the output failed, to be tried again: %s", *key,
                        error)
        wait = min(self.cfg.fetch_backoff_s * 2 ** (tries - 1), self.cfg.fetch_max_backoff_s)
        self._assembly_failed[key] = (tries, first, now + wait)
        return None

    def _assembly_due(self, now: float) -> list[TaskKey]:
        """The failed assemblies whose backoff is over (`_assembly_retry`): looked at once
        more each (then not again by time: a try that fetches first, say, is looked at as
        its data comes)."""
        due = [k for k, (_, _, at) in self._assembly_failed.items()
               if at is not None and at <= now]
        for k in due:
            tries, first, _ = self._assembly_failed[k]
            self._assembly_failed[k] = (tries, first, None)
        return due

    def _assembly_waits(self, key: TaskKey) -> bool:
        """Is task `key`'s assembly in its backoff after a failure (not tried before then,
        whatever event makes the task looked at)?"""
        retry = self._assembly_failed.get(key)
        return retry is not None and retry[2] is not None and self.clock() < retry[2]

    # -- evaluation of one task ----------------------------------------------------------
    def _evaluate(self, job: str, task: str) -> None:
        st = self.state
        if job not in st.jobs or job in st.cancelled or self._done_here((job, task)):
            return
        if (not st.member_of(job, self.peer_id) or job in self._joining
                or job in st.ended):  # a lanes job whose lanes are not here (yet: no claim
            return  # of it either, it would run them again), or that ended (its JOB_ENDED
            # held, lanes on only) with our fold behind: every run of it would be wasted
        if (job, task) in self._cannot:  # for good (this peer's catalog and kinds are fixed):
            return  # what follows would find that again (and walk its failed chunks first)
        wf = self.workflow(job)
        spec = wf.task(task)
        if (not ready(st, job, spec) or self._for_vouched(job, task, spec)
                or self._failed_here(job, task, spec)):
            return
        if self._unrunnable(wf, spec, (job, task)):
            return
        if spec.cid is not None:
            self._done(job, task, spec.cid, None, cached=True)
            return
        tdef = self._runnable(spec)
        if tdef is None:
            self._cannot.add((job, task))  # `waiting` says why if no live peer can either
            return  # this peer cannot run that call: peers that can will
        if (split := self._split(job, task, tdef, spec)) is None:
            return
        chunks = self.planner.chunks(split)
        if chunks is None:  # a split by reference: its listing first (at once: it is small)
            self.locality.have((job, task), self.planner.listings(split), self.peer_id)
            return
        n = len(chunks)
        if self._reopen_unvouched(job, task, spec, split):
            return  # (looked at again as the CHUNK_FAILEDs are folded)
        if self._all_done(job, task, split, n):
            self._assemble(job, task, tdef, spec, split, chunks)
            return
        self._consider_chunks(job, task, split, chunks, tdef, spec)
        self._ahead(job, task, tdef, spec, split, chunks)

    # -- a task done by an unvouched lane only (session 49) ------------------------------
    def _vouched_runner(self, job: str, spec: TaskSpec) -> str | None:
        """A vouched member of lanes job `job` (`MeshState.is_vouched`) live here that can run
        task `spec`: this peer if it is one and runs the call, else a live peer that runs the
        job (`_runners`), announces the call, meets its `requires` and can claim (not
        `_stuck`). None if none."""
        st, me = self.state, self.peer_id
        if (st.is_vouched(job, me) and self._runnable(spec) is not None
                and self._meets(me, spec.requires)):
            return me
        call = spec.call
        if not call:
            return None
        for p, info in self._runners(job).items():
            if (p != me and p not in self._stuck and st.is_vouched(job, p)
                    and call in info.get("calls", ()) and self._meets(p, spec.requires)):
                return p
        return None

    def _unsettled(self, key: TaskKey) -> str | None:
        """The vouched member that runs task `key` again (`_vouched_runner`) if its winning
        TASK_DONE is an unvouched lane's (a self-added member's: the fold ranks a vouched
        lane's first, so no vouched member's is folded) and one is live here; else None.
        Such a done counts only where no vouched member can make the task's output: its
        output may be made up (session 48 helper a's left (a))."""
        st = self.state
        done = st.task_done.get(key)
        if done is None or st.unvouched_lane(key[0], done) is None:
            return None
        return self._vouched_runner(key[0], self.workflow(key[0]).task(key[1]))

    def _done_here(self, key: TaskKey) -> bool:
        """Is task `key` done as this peer judges it: a TASK_DONE of it is folded, and this
        peer is not the vouched member that runs it again (`_unsettled`)."""
        return key in self.state.task_done and self._unsettled(key) != self.peer_id

    def _unsettled_tasks(self, job: str) -> bool:
        """Is a task of lanes job `job` done by an unvouched lane only while a vouched member
        that can run it is live (`_unsettled`), or failed only by counting an unvouched
        lane's failures while one is (`_unvouched_failures`)? Its home does not end it
        meanwhile."""
        st = self.state
        return st.lanes_on and any(
            ((job, t.name) in st.task_done and self._unsettled((job, t.name)) is not None)
            or self._failed_unvouched(job, t) for t in self.workflow(job).tasks)

    def _unvouched_failures(self, job: str, spec: TaskSpec) -> Callable[[Event], bool] | None:
        """The failures this peer leaves out of a chunk's count (`claims.chunk_exhausted`'s
        `skip`) for task `spec` of lanes job `job`: an unvouched lane's (a self-added
        member's: it may fail an attempt no one claimed, of a kind not retried) while the
        job has such a member and a vouched member that can run the task is live here
        (`_vouched_runner`); None (every failure counts) otherwise, so an orphan takeover
        still fails a task that fails (session 50, helper f; helper b's left (4))."""
        st = self.state
        if not st.lanes_unvouched(job) or self._vouched_runner(job, spec) is None:
            return None
        return lambda f: st.unvouched_lane(job, f) is not None

    def _failed_here(self, job: str, task: str, spec: TaskSpec | None = None) -> bool:
        """Is task `task` of `job` (`spec`: its spec, read if needed) failed as this peer
        judges it: failed in the fold, and still once an unvouched lane's failures are left
        out where they are (`_unvouched_failures`; leaving some out fails no task the fold
        does not, so the common case costs the fold's check alone)? A workflow this release
        refuses counts every failure (`_fail_task` fails such a task once)."""
        return (task_failed(self.state, job, task, self.cfg.max_attempts)
                and self._failed_skipping(job, task, spec))

    def _failed_skipping(self, job: str, task: str, spec: TaskSpec | None = None) -> bool:
        """Task `task` of `job`, failed in the fold: is it failed still once an unvouched
        lane's failures are left out where they are (`_failed_here`'s second half)?"""
        st, n = self.state, self.cfg.max_attempts
        if not st.lanes_unvouched(job):
            return True
        try:
            spec = spec if spec is not None else self.workflow(job).task(task)
        except BanzaiError:
            return True
        skip = self._unvouched_failures(job, spec)
        return skip is None or task_failed(st, job, task, n, skip)

    def _skips(self, job: str) -> TaskSkips | None:
        """Task -> the failures this peer leaves out of its chunks' counts
        (`_unvouched_failures`, asked once a task), for `members.running` and
        `members.open_chunks`: scale-out and takeover judge by the view `_consider_chunk`
        and `_failed_here` do (review rr of session 50, RR-2: a chunk a vouched member runs
        again was counted settled and the job over). None (every failure counts) while the
        job has no member not vouched for."""
        st = self.state
        if not st.lanes_unvouched(job):
            return None
        try:
            wf = self.workflow(job)
        except BanzaiError:
            return None
        memo: dict[str, Callable[[Event], bool] | None] = {}

        def skips(task: str) -> Callable[[Event], bool] | None:
            if task not in memo:
                memo[task] = self._unvouched_failures(job, wf.task(task))
            return memo[task]
        return skips

    def _failed_unvouched(self, job: str, spec: TaskSpec) -> bool:
        """Is task `spec` failed in the fold (every failure counted) but not as this peer
        judges it (`_failed_here`)?"""
        return (task_failed(self.state, job, spec.name, self.cfg.max_attempts)
                and not self._failed_skipping(job, spec.name, spec))

    def _for_vouched(self, job: str, task: str, spec: TaskSpec) -> bool:
        """Is ready task `spec` of lanes job `job` left to a vouched member here: one of its
        dependencies is done by an unvouched lane only while a vouched member that can run
        it is live (`_unsettled`: its output may be made up, the vouched run comes), or this
        peer is a member not vouched for (it added itself: orphan takeover) and a vouched
        member that can run the task is live (its outcome would be run again). Such a task
        is looked at again when the live peers change (`_vouched_wait`)."""
        st = self.state
        if not st.lanes_on or job not in st.members_of:
            return False
        if (any(self._unsettled((job, d)) is not None for d in spec.depends)
                or (not st.is_vouched(job, self.peer_id)
                    and self._vouched_runner(job, spec) is not None)):
            self._vouched_wait[(job, task)] = None
            return True
        return False

    def _reopen_unvouched(self, job: str, task: str, spec: TaskSpec, split: Event) -> bool:
        """Of task `job`/`task` that this peer runs (it is not done here, or done by an
        unvouched lane only, `_unsettled`), if this peer is a vouched member that meets its
        `requires` and the job has a member not vouched for: reopen each chunk of the
        winning split finished by an unvouched lane's CHUNK_DONE (a CHUNK_FAILED marked
        `reopen`, not counted: the attempt failed nothing), at or after every CHUNK_DONE's
        attempt of it (`done`, `latest`), so its next attempt is claimed and run (by a
        vouched member: one not vouched for leaves it, `_for_vouched`) before the task's
        output is assembled from it. True if any was."""
        st, me = self.state, self.peer_id
        if (not st.lanes_on or not st.is_vouched(job, me) or not st.some_unvouched(job)
                or not self._meets(me, spec.requires)):
            return False
        table, sk = st.chunks, (job, task, *split.id)
        mark, added = table.done_added(sk, self._unvouched_mark.get(sk, (0, 0)))
        self._unvouched_mark[sk] = mark  # (a reopen below changes the shape: all walked again)
        some = False
        for i, d in list(table.done(sk).items() if added is None else added):
            if st.unvouched_lane(job, d) is None:
                continue
            c = st.chunk(job, task, i)
            attempt = max(int(d.payload["attempt"]), c.attempt,
                          int(c.latest.payload["attempt"]) if c.latest is not None else 0)
            log.warning("%s/%s: chunk %d was done by a member not vouched for (%s) only: "
                        "running it again", job, task, i, d.origin)
            self.emit(EventType.CHUNK_FAILED, {
                **claims.reopen_failure(job, task, split.id, i, attempt, 0), "counts": False,
                "error": "done by a member not vouched for only: run again"})
            some = True
        return some

    def _unrunnable(self, wf: Workflow, spec: TaskSpec, key: TaskKey) -> bool:
        """True if this peer runs no part of ready task `key`: it has a newer peer's keys
        (newer peers will); BanzaiError, which fails it (`_evaluate_safely`), if it is a
        stored source whose CID this version refuses, or reads the output such a source
        was recorded done with by an earlier release (`Workflow.flaw`)."""
        if spec.newer:
            self._cannot.add(key)
            return True
        if (flaw := wf.flaw(spec.name)) is not None:
            raise BanzaiError(flaw)
        return False

    def _split(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec) -> Event | None:
        """The task's winning split once its chunks may be considered (None: not yet). An
        implicit split (peer.log.fold: no peer splits the task) skips `_plan` but keeps what
        it did besides splitting: the cache lookup (`_cached`); placement is the claims'.
        Else a peer's split, ours made now if it is our turn: folded at once, its chunks are
        considered in this round, so the split and our claim are parts of one TURN (one
        loop turn, signature, frame)."""
        split = self.state.splits.get((job, task))
        if split is not None and self.state.implicit(split):
            if tdef.per_item:  # (`parse` refuses such a task: no split could be made)
                raise BanzaiError(f"{task}: a per-item task needs an input")
            return split if self._implicit_turn(job, task, tdef, spec) else None
        if split is None or self._unvouched_split(job, split):
            self._plan(job, task, tdef, spec)
            split = self.state.splits.get((job, task))
            if split is not None and self._unvouched_split(job, split):
                return None  # (a vouched member's split comes: ours at our turn, or one's
        return split  # before it, which the fold ranks first)

    def _unvouched_split(self, job: str, split: Event) -> bool:
        """Is `split`, a task's winning split, an unvouched lane's (a self-added member's:
        the fold ranks a vouched lane's first, so none is folded) while this peer, a vouched
        member that runs the task (`_evaluate` got here), may split it? It then splits the
        task as if no split were made (`_plan`: in its turn), rather than run and assemble
        the chunks that split declares (session 50, helper f; helper b's left (3))."""
        st = self.state
        return (st.lanes_on and st.is_vouched(job, self.peer_id)
                and st.unvouched_lane(job, split) is not None)

    def _ahead(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec, split: Event,
               chunks: list[Any]) -> None:
        """What the splitter of a running per-item task does ahead of its assembly (and a
        peer running a group of a task with a reduce: it may end the last group, and if it
        holds the task's input, which the assembling step lists, claim that step at once;
        without the input it cannot before the splitter does, so it fetches nothing; the
        likely assembler of a task split by its values: `_prefetch_values`)."""
        if spec.split_args and tdef.split_arg is not None:
            self._prefetch_values(job, task, split, len(chunks))
        elif peer_of(split.origin) != self.peer_id:
            inp = split.payload["input"]
            if (tdef.reduce is not None and self._may_end_last(job, task, split, len(chunks))
                    and self.store.has(inp) and self.data.is_complete(inp)):  # (root first:
                # is_complete walks the DAG up to its first missing block)
                self._prefetch_reduce(job, task, split, chunks, with_input=False)
        elif tdef.per_item and tdef.reduce is None and self.cfg.partial_outputs:
            self._partial(job, task, tdef, spec, split, chunks)
        elif tdef.reduce is not None:
            self._prefetch_reduce(job, task, split, chunks)

    def _prefetch_values(self, job: str, task: str, split: Event, n: int) -> None:
        """The peer that ran chunk 0 of a task split by its values (of `n` chunks; it
        assembles it first, `_assemble`), or while it runs, the splitter: fetches the done
        chunks' outputs made elsewhere in the background as they come, while its own chunks
        run, so that the assembly finds them here (on two pinned peers the seed's
        FETCH_FESTVOX waited 0.24-0.32 s for them after its last chunk). Once per chunk
        done (`_results_seen`): a fetch that failed (an output whose holder left) is not
        started again at each step its end wakes, only when another chunk is done (the
        assembly's own fetch backs off and reopens the chunk: `_recompute`)."""
        tk, sk = (job, task), (job, task, *split.id)
        done = self.state.chunks.done(sk)
        if peer_of(done[0].origin if 0 in done else split.origin) != self.peer_id:
            return
        epoch = self.state.chunks.done_epoch(sk)  # (a chunk done, or reopened)
        if self._results_seen.get(tk) == epoch or tk in self._partial_fetching:
            return
        self._results_seen[tk] = epoch
        outs: dict[str, int | None] = {str(d.payload["output"]): i for i, d in done.items()
                                       if i < n and d.payload.get("output")}  # (none past
        self._fetch_results(tk, Assembly({}, outs, None))  # the split's last)

    def _may_end_last(self, job: str, task: str, split: Event, n: int) -> bool:
        """True if this peer runs a group of a task with a reduce (of `n` chunks) and every
        group is claimed or done: it may end the last one (and then assemble). Read from
        the chunk table's index: a chunk no event is about is open, and of the others only
        those not done may be (those with no CHUNK_DONE, or a failure reopening it)."""
        if not any(ak.job == job and ak.task == task for ak in self.runs):
            return False
        sk = (job, task, *split.id)
        table = self.state.chunks
        if table.first_untouched(sk) < n - 1:
            return False
        done = table.done(sk)
        skip = self._unvouched_failures(job, self.workflow(job).task(task))
        return all(claims.standing(self.state.chunk(job, task, i), split.id,
                                   self.cfg.max_attempts, skip)[0] is not Standing.OPEN
                   for i in table.open_or_failed(sk) if i < n - 1 and i not in done)

    def _consider_chunks(self, job: str, task: str, split: Event, chunks: list[Any],
                         tdef: TaskDef, spec: TaskSpec) -> None:
        """The chunks of the split in order; a reduce's (the last) once the others are done.
        Those that a look may act on only (what the look costs follows them, not the chunks
        the split declares: a member may declare a million): every chunk events are about
        but a CHUNK_DONE settled, and the chunks no event is about from the first, until one
        finds that no more can be claimed here now (no free slot, this peer cannot claim the
        task's chunks, its input is elsewhere with no peer live: each later one would find
        the same) or UNTOUCHED_PER_WALK of them were looked at (each waits for this peer's
        turn). A chunk skipped was one such a look left as it was."""
        n = len(chunks)
        last = n - 1 if tdef.reduce is not None else n  # (the assembling step: after the rest)
        sk = (job, task, *split.id)
        table = self.state.chunks
        held = table.of_split(sk)
        settled_not = sorted(i for i in table.open_or_failed(sk) if i < last)  # (a copy:
        # each look below may fold a claim of ours into the table)
        budget, i = UNTOUCHED_PER_WALK, table.first_untouched(sk)
        for j in (*settled_not, last):
            while budget > 0 and i < j:  # the chunks no event is about, before chunk j
                if i not in held:
                    budget -= 1
                    if not self._consider_chunk(job, task, i, split, chunks[i], tdef, spec):
                        budget = 0
                i += 1
            if j < last and not self._consider_chunk(job, task, j, split, chunks[j], tdef,
                                                     spec):
                budget = 0
            i = max(i, j + 1)
        if 0 <= last < n and self._all_done(job, task, split, last):
            self._consider_chunk(job, task, last, split, chunks[last], tdef, spec, chunks)

    def _all_done(self, job: str, task: str, split: Event, n: int) -> bool:
        """True if chunks 0 to n-1 of the split are done (`_n_done`)."""
        return self._n_done((job, task, *split.id), n) == n

    def _n_done(self, sk: SplitKey, n: int) -> int:
        """How many of chunks 0 to n-1 of split `sk` are done (`claims.chunk_done`), read
        from the chunk table's index: what it costs follows the chunks past n-1 that events
        are about (the assembling step of a reduce, a member's events past the split's last),
        not the chunks the split declares."""
        table = self.state.chunks
        done, top = table.done(sk), table.top(sk)
        if top - n < UNTOUCHED_PER_WALK:
            return len(done) - sum(1 for i in range(n, top + 1) if i in done)
        return sum(1 for i in done if i < n)

    def _plan(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec) -> None:
        """Input, cache lookup and split of a ready task: done by a peer holding the input,
        its producer at once, other live holders (of the call) after split_wait_s per rank
        (others wait for its TASK_SPLIT or TASK_DONE, or take over after a grace period)."""
        outs = [self.state.task_done[(job, d)].payload["output"] for d in spec.depends]
        needs_data = len(outs) > 1 or (tdef.per_item and bool(outs))
        unit, turn = f"{job}/{task}", AttemptKey(job, task, -1, -1)
        calls = claims.members_only(self.state, job, (
            p for p, i in self._runners(job).items() if tdef.name in i.get("calls", ())))
        if needs_data:
            able = {*calls, self.peer_id}
            first = producer(self.state, able, job, spec)
            if not self.locality.have((job, task), outs, first):
                return
            # Every live peer that holds the input could split it at once (the loser's runs
            # of its split's chunks are killed): the producer splits, the others wait.
            holders = {p for p in able
                       if all(p in self.state.providers.get(o, ()) for o in outs)}
            holders.add(self.peer_id)  # (its PROVIDE may not be out yet)
            ranked = rendezvous(unit, holders - {first})
            if first in holders:
                ranked.insert(0, first)
            if not self._my_turn(turn, ranked, self.cfg.split_wait_s):
                return
        elif not self._my_turn(turn, self._home_first(job, rendezvous(unit, [
                *calls, self.peer_id])), self._split_wait_s(job)):
            # Every peer could split it: stagger them so that one usually does. By
            # split_wait_s and more per task of the job, not stagger_s: the first splits as
            # soon as it sees the job, and a job of thousands of tasks takes each peer longer
            # than stagger_s to fold (and its splits longer to reach the others), which used
            # to split a quarter of them twice (every duplicate split a wasted event, its
            # claims' runs killed).
            return
        if self._no_claims(job):  # (a split or a cached TASK_DONE would wait unseen in memory,
            self._held_back[(job, task)] = None  # while others split it too: review r2 M3)
            return
        input_cid = self.planner.input(job, spec)
        key = self.planner.key(job, task, tdef, spec, input_cid)
        cached = self.planner.cached_output(key) if spec.cache else None
        if cached is not None:
            self._done(job, task, cached, key, cached=True)
            return
        slots = self._placed_slots(job, tdef.name, spec.requires)
        self.emit(*self.planner.framed(self.planner.split(job, task, tdef, spec, input_cid,
                                                          slots), self.cfg.max_split_bytes))

    def _implicit_turn(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec) -> bool:
        """What `_plan` did for a task without input besides splitting it, for a task with an
        implicit split (no peer splits it); True once its chunk may be claimed here. Until
        the chunk is first claimed, the live peers that run its call take their turn in its
        rendezvous order as they took their turn to split it (`_implicit_rank`: the first at
        once, the others after `_split_wait_s` per rank): the others leave it a while to its
        first peer, which claims it or queues it (without that wait every peer looked at
        every chunk of a job as it came, and a third of the tasks of a job of 1,000 on three
        peers were claimed twice, from stale free-slot counts). Whoever's turn comes looks the
        task up in the cache and finishes it from there (TASK_DONE `cached`, no claim). A task
        our JOB_SUBMITTED claimed is not looked up again: `claims_first` did as we submitted
        it."""
        key = (job, task)
        c = self.state.chunk(job, task, 0)
        if key in self._looked or c.claims or c.failures or c.done is not None:
            self._deferred.pop(key, None)
            return True  # its turn came here, or it was claimed: as a split task's chunk
        now = self.clock()
        due = self._deferred.get(key)
        if due is None:
            rank = self._implicit_rank(job, task, tdef.name).index(self.peer_id)
            due = self._deferred[key] = now + rank * self._split_wait_s(job)
        if now < due:  # (not a `_ready_since` turn: those are looked at every tick, and
            self._turn_at = min(self._turn_at, due)  # hundreds wait here for seconds)
            return False
        del self._deferred[key]
        if spec.cache:  # looked up once, as `_plan` did (a miss may ask the job index)
            ck = self.planner.key(job, task, tdef, spec, None)
            cached = self.planner.cached_output(ck)
            if cached is not None:
                self._done(job, task, cached, ck, cached=True)
                return False
        self._looked[key] = None
        return True

    def _implicit_rank(self, job: str, task: str, call: str) -> list[str]:
        """The live peers (this one included) that may claim a task with an implicit split,
        in the order they would have split it (`_plan`): those that run its call and its job
        (`_runners`) and meet its `requires` (their MEMBER events), by rendezvous hash of
        the task; the job's submitter first when its JOB_SUBMITTED says `local`
        (`takes_first`: a small job runs where it was submitted, every peer ranking it alike
        from that event alone; first even while not live here: it sent the job just now,
        and if it is gone the others take the task after one wait per rank). Nobody waits
        for a peer that cannot claim the task (a task only a labelled peer meets: that
        peer's at once). Of a lanes job, its members only: each first for its share at
        once (`_members_first`: as `_first_peer` ranks them), or, of a `local` one, its home
        first (`_home_first`). Remembered per task and set of the live peers that run the call
        and the job (read at every look at its chunk: see `_first_peer`; jobs of both split
        kinds rank different sets while a peer of an earlier release is live), made again
        when a MEMBER event comes (its labels)."""
        peers = frozenset((*(p for p, i in self._runners(job).items()
                             if call in i.get("calls", ())), self.peer_id))
        ranks = self._ranks.get(peers)
        if ranks is None or len(ranks) >= FIRST_MEMO:
            if len(self._ranks) >= _RANKED_SETS:
                self._ranks = {}
            ranks = self._ranks[peers] = {}
        ranked = ranks.get((job, task))
        if ranked is None:
            requires = self.workflow(job).task(task).requires if job in self.state.jobs else {}
            ranked = rendezvous(f"{job}/{task}", [
                p for p in claims.members_only(self.state, job, peers)
                if p == self.peer_id or self._meets(p, requires)])
            submitted = self.state.jobs.get(job)
            if submitted is not None and submitted.body_as(JobSubmitted).local:
                if submitted.origin in ranked:
                    ranked.remove(submitted.origin)
                ranked.insert(0, submitted.origin)
            if not self._members_first(job):  # (its members take their shares at once)
                ranked = self._home_first(job, ranked)
            ranks[(job, task)] = ranked
        return ranked

    def _home_first(self, job: str, ranked: list[str]) -> list[str]:
        """`ranked` (live peers) with the home of lanes job `job` among them first
        (`members.home`: the first live member; its tasks without input are its to split,
        and so to assemble); as it is for any other job."""
        home = members.home(job, self.state, ranked)
        return ranked if home is None else [home, *(p for p in ranked if p != home)]

    def _runnable(self, spec: TaskSpec) -> TaskDef | None:
        """The task's definition if this peer runs its call (and its kind here: a container's
        image, a shell's command), else None."""
        tdef = self.catalog.get(spec.call or "")
        if tdef is None or not kinds.runnable(spec.call, spec.params, self.cfg.kind_settings):
            return None
        return tdef

    def takes_first(self, job: str, wf: Workflow) -> bool:
        """Whether this peer, submitting `wf` as `job` with implicit splits, comes first for
        its tasks without input (its JOB_SUBMITTED's `local`): it can run each one here
        (`_runnable`, as `_evaluate` decides) and meets its `requires`, and its free slots,
        less those promised to such tasks of its earlier jobs that it has not claimed yet,
        hold them all. It holds the job first, so
        it claims and starts them before the job has reached another peer: no gossip hop
        each way (as Ray runs a task on the node that submitted it while that node has
        room). A larger job, or one that comes while the slots are taken, is spread by
        rendezvous hash, every peer taking its share at once. Decided here, once, as the
        job is submitted: every peer reads the same answer in the event."""
        roots = [t for t in wf.tasks if not t.depends and t.cid is None and not t.split_args]
        me = self.state.members.get(self.peer_id)
        if not roots or me is None:
            return False
        for t in roots:
            if t.newer or self._runnable(t) is None or (
                    t.requires and placement.unmet(t.requires, me.payload) is not None):
                return False
        now = self.clock()
        self._promised = {k: at for k, at in self._promised.items() if self._unclaimed(k, at, now)}
        if len(roots) > self.free_slots - len(self._promised):
            return False
        self._promised.update(((job, t.name), now) for t in roots)
        return True

    def _unclaimed(self, key: TaskKey, at: float, now: float) -> bool:
        """True while a task of a job of ours (`_promised` at `at`) is open and either our
        JOB_SUBMITTED's claim of it stands with no run yet (`_implied_here`: the others wait
        for that claim's lease), or nobody claimed it and its promise is younger than a split
        wait: by then the others take it anyway (this peer is wedged, or it failed for good,
        or no peer can run it)."""
        if (key[0] not in self.state.jobs or key[0] in self.state.cancelled
                or key in self.state.task_done):
            return False
        c = self.state.chunk(*key, 0)
        if c.failures or c.done is not None:
            return False
        if c.claims:
            return self._implied_here(*key, c) is not None
        return now - at <= self._split_wait_s(key[0])

    def _implied_here(self, job: str, task: str, c: ChunkState) -> Event | None:
        """The claim of attempt 0 of chunk `c` (the one chunk of an implicit split) that our
        JOB_SUBMITTED of `job` implies (CLAIMED_FEATURE: its id is the job's), while it is
        the attempt's winning claim and no run of ours has been behind it: its run starts
        here as after a CLAIM of ours (`_consider_chunk`). None otherwise (a restart fails
        it: `recover`)."""
        sub = self.state.jobs.get(job)
        if sub is None or sub.origin != self.peer_id or c.failures:
            return None
        w = c.winner(0, sub.id)
        if w is None or w.id != sub.id:
            return None
        ak = AttemptKey(job, task, 0, 0)
        return None if ak in self._mine or self._runs.running(ak) else w

    # -- lanes jobs: scale-out and orphan takeover (peer.jobs.members) -----------------------
    def _lanes_round(self, moved: set[str], now: float) -> None:
        """Of each running lanes job: its home spreads it to more peers when its open work is
        more than spread_s per slot of its live members (`_spread`, looked at once per
        spread_s a job, first spread_s after it was first seen running here: a job its
        members finish within spread_s stays on them, whatever its backlog at the start
        seemed from one run's duration); a non-member that runs one of its calls adds
        itself when no member has kept it going for lease_s (`_kept`: a live named member
        that can claim keeps it for good, another live member a lease past its last run
        seen; review r1 M3, session 46), after its rank × split wait (`_take_over`), looked
        at only once the job `moved` (an event of it, a change of the live peers or of those
        that can claim nothing), while it is orphaned here, or when its members' window runs
        out (`_judge_at`; none while a named member keeps it: its members only grow, so that
        stays so until the peers change). Live members and peers added: those that run the
        job (`_holding`, `_capable`)."""
        st = self.state
        for table in (self._spread_at, self._orphaned, self._kept_seen, self._judge_at):
            for gone in [j for j in table if j not in self._lanes_live]:
                del table[gone]
        for job in list(self._lanes_live):
            if not _running(st, job):  # (compacted or deleted: no event says so here)
                self._lanes_live.discard(job)
                self._added.discard(job)
                continue
            held = st.members_of[job]
            try:
                live = self._holding(job)
                if self.peer_id in held:
                    self._orphaned.pop(job, None)  # (added meanwhile: by us or its home)
                    self._kept_seen.pop(job, None)
                    self._judge_at.pop(job, None)
                    if now - self._spread_at.setdefault(job, now) >= self.cfg.spread_s:
                        self._spread_at[job] = now
                        if members.home(job, st, live) == self.peer_id:
                            self._spread(job)
                elif (job not in moved and job not in self._orphaned
                      and self._judge_at.get(job, math.inf) > now):
                    continue
                elif self._kept(job, live, now):
                    self._orphaned.pop(job, None)
                else:
                    self._take_over(job, now)
            except Exception:  # a bug (or a peer's odd heartbeat) must not stop the round
                log.exception("looking at lanes job %s's members", job)

    def _kept(self, job: str, live: Collection[str], now: float) -> bool:
        """Does a live member keep lanes job `job` (we are no member) going now
        (`members.kept_until`; review r1 M3, session 46)? While a named member that can claim
        is live, yes, and nothing is noted; else its members' signs are (`_kept_seen`: an
        added member not judged yet gets `lease_s` from now to show a run of the job in its
        heartbeat) and the job is looked at again when the last of them runs out
        (`_judge_at`), as no event need come then."""
        seen = self._kept_seen.get(job, {})
        until = members.kept_until(job, self.state, live, self._stuck, seen, now,
                                   self.cfg.lease_s)
        if until == math.inf:
            self._kept_seen.pop(job, None)
            self._judge_at.pop(job, None)
            return True
        seen = self._kept_seen.setdefault(job, seen)
        first = members.named(self.state, job)
        for p in self.state.members_of[job]:
            if p not in first and p in live:  # (once: coming back live gives no new window)
                seen.setdefault(p, now)
        if until > now:
            self._judge_at[job] = until
            return True
        self._judge_at.pop(job, None)
        return False

    def _signs_seen(self, peers: Mapping[str, Mapping[str, Any]], now: float) -> None:
        """Of the jobs we judge (`_kept_seen`), a live member's signs that it keeps them
        besides a run of the job in its heartbeat (`heard`): its runs fill its slots
        (`members.busy`: it waits for a slot, to run any job it is a member of), or its
        heartbeat's `working` names the job (a fetch under way for its split or assembly, a
        wait for its lanes: `working`). Without them an added member that did any of these
        for 2 leases was joined by a non-member, which ran the job beside it (review r2 of
        session 46, L3)."""
        members_of = self.state.members_of
        for p, info in peers.items():
            working = info.get("working")
            jobs: Iterable[str] = (self._kept_seen if members.busy(info) else
                                   working if isinstance(working, list) else ())
            for job in jobs:
                seen = self._kept_seen.get(job) if isinstance(job, str) else None
                if seen is not None and p in members_of.get(job, ()):
                    seen[p] = now

    def _spread(self, job: str) -> None:
        """Scale-out (design 5.3): JOB_MEMBERS `add` of the next live peers that run the job's
        calls, when its ready, unclaimed chunks hold more work than spread_s per slot of the
        live members, or are any while no live member has a usable slot
        (`members.spread_to`). Not while claims are held (`hold_claims`: the add would wait
        unseen, review r2 M3). The job's over and its chunks' standing as this peer judges
        them (`_skips`); and a home that is a vouched member counts no slot of a member not
        vouched for (a self-added one runs nothing a live vouched member can: `_for_vouched`;
        review rr of session 50, RR-2)."""
        skips = self._skips(job)
        if self._no_claims(job) or not members.running(self.state, job, self.cfg.max_attempts,
                                                   skips):
            return
        capable = self._capable(job)
        if capable.keys() <= self.state.members_of[job]:  # no one to add: its work not counted
            return
        if skips is not None and self.state.is_vouched(job, self.peer_id):
            capable = {p: n for p, n in capable.items() if self.state.is_vouched(job, p)
                       or p not in self.state.members_of[job]}  # (RR-2: see `_spread`)
        wf = self.workflow(job)
        opened = members.open_chunks(self.state, job, (t.name for t in wf.tasks),
                                     self.cfg.max_attempts, skips)
        work_s = sum(n * self._last_run_s(job, task, wf.task(task).call or "")
                     for task, n in opened.items())
        add = members.spread_to(job, self.state, capable, sum(opened.values()), work_s,
                                self.cfg.spread_s)
        if add:
            log.info("%s: %.1f s of open work: adding %d member(s)", job, work_s, len(add))
            # (`heads`: the lanes the peers added wait for before they run any of it, `_join`)
            self.emit(EventType.JOB_MEMBERS, {"job": job, "add": add,
                                              "heads": self.state.lane_heads([job])})

    def _last_run_s(self, job: str, task: str, call: str) -> float:
        """A chunk's work, estimated: the last run of its call here (`Runs.last_s`), else
        the latest CHUNK_DONE of the task's winning split (its worker's `s`); 0 if none ran."""
        if (here := self._runs.last_s.get(call)) is not None:
            return here
        done = max(self._last_done_by(job, task).values(), key=lambda d: d.order, default=None)
        s = done.payload.get("s") if done is not None else None
        return float(s) if isinstance(s, (int, float)) else 0.0

    def _take_over(self, job: str, now: float) -> None:
        """Orphan takeover (design 5.4): no member of the job keeps it going here (since
        `_orphaned`); once lease_s and this peer's rank × (split wait + a tick: each peer
        sees its turn up to a tick late, and the one before must be heard first) have
        passed (`members.takeover_at`), JOB_MEMBERS `add: [self]`, and the job runs here
        from its JOB_SUBMITTED (`_note`). Not by a peer that runs none of its calls (nor
        waits for it: `timed`), nor while it has no usable slot (it waits, looking each tick,
        for a given-up worker to exit: looked at again only once the job or the live peers
        moved, a job orphaned while its one other peer was at 0 slots stalled for good; a
        turn it passed so comes again a round of every rank later, not the moment a slot is
        back: the next ranks' adds are heard by then, where it added itself beside one on
        its way, review r1 L2); ranked among every live peer that runs one, those at 0 slots
        too: a rank that moved as given-up workers exit (or a heartbeat at 0 lags) let two
        peers see their turn at once and both add themselves (review i, session 42, R2)."""
        callers = self._callers(job)
        if self.peer_id not in callers:
            return
        since = self._orphaned.setdefault(job, now)
        wait_s = self._split_wait_s(job) + self.cfg.tick_s
        at = members.takeover_at(job, self.state, self.peer_id, callers, since,
                                 self.cfg.lease_s, wait_s)
        if (at is None or now < at or self._no_claims(job)  # (the add would wait unseen: the
                or not members.running(self.state, job, self.cfg.max_attempts,  # next rank
                                       self._skips(job))):  # takes it over; review r2 M3)
            return
        if callers[self.peer_id] <= 0:  # (its turn, passed: the same rank a round later)
            self._orphaned[job] = since + len(callers) * wait_s
            return
        del self._orphaned[job]
        log.warning("%s: no member kept it going for over %.0f s: taking the job over", job,
                    now - since)
        self.emit(EventType.JOB_MEMBERS, {"job": job, "add": [self.peer_id]})

    def _capable(self, job: str) -> dict[str, int]:
        """The live peers that may run at least one of `job`'s tasks (`_callers`) and their
        slots, but one whose slots are 0 (its given-up workers hold every slot: it can run
        nothing; review h, H3)."""
        return {p: n for p, n in self._callers(job).items() if n > 0}

    def _callers(self, job: str) -> dict[str, int]:
        """The live peers (this one included) that run at least one of `job`'s tasks (they
        run the job, `_runners`: a peer of an earlier release may run none of it; its call,
        and its `requires` met: `_meets`), and their slots, 0 or more; a peer that announces
        none counts one."""
        tasks = self.workflow(job).tasks
        slots = {p: int(1 if i.get("slots") is None else i["slots"])
                 for p, i in self._runners(job).items()
                 if any(t.call and t.call in i.get("calls", ()) and self._meets(p, t.requires)
                        for t in tasks)}
        if any(self._runnable(t) is not None and self._meets(self.peer_id, t.requires)
               for t in tasks):
            slots[self.peer_id] = self.runner.slots
        return slots

    def _split_wait_s(self, job: str) -> float:
        """The wait per rank before a peer splits (or looks at) a task without input of `job`
        that its first peer has not: split_wait_s and more per task of the job."""
        return self.cfg.split_wait_s + min(
            self.cfg.split_wait_per_task_s * len(self.workflow(job).tasks),
            self.cfg.split_wait_job_max_s)

    def _assemble(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec,
                  split: Event, chunks: list[Any]) -> None:
        # Assembling reads the chunks' outputs and, per item, the input's listing: the peer
        # that split the task holds the input, so it goes first; a whole task's one chunk
        # is assembled by the peer that ran it. Results that no live peer can provide are
        # recomputed: their chunks are reopened.
        # A task with a reduce is made of its last chunk's output, as a whole task is.
        if self._assembly_waits((job, task)):  # (failed here: tried again after its backoff)
            return
        whole = not tdef.per_item or tdef.reduce is not None
        last = len(chunks) - 1 if tdef.reduce is not None else 0
        first = peer_of(split.origin)
        if whole and (done := claims.chunk_done(self.state.chunk(job, task, last))):
            first = peer_of(done.origin)
        a = self._gathered(job, task, tdef, spec, split, chunks, first, whole)
        if a is None:
            return
        key = self.planner.key(job, task, tdef, spec, split.payload["input"])
        self._done(job, task, self.planner.output(a), key if spec.cache else None, cached=False,
                   warning=a.warning)

    def _gathered(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec, split: Event,
                  chunks: list[Any], first: str, whole: bool) -> Assembly | None:
        """The assembly of done `chunks` once everything it reads is here (None: fetching);
        `whole`: made of the last chunk's output (of a task split by its values: of every
        chunk's, merged), else of the chunks' item results."""
        tk = (job, task)
        n = len(chunks)
        # (every chunk is done: what they are changes as the chunk table's done_epoch does,
        # or a member's event past the split's last changes that)
        epoch = self.state.chunks.done_epoch((job, task, *split.id))
        if whole and spec.split_args and tdef.split_arg is not None:
            if chunks != value_chunks(tdef, spec.params):  # (a forged split, or a splitter
                # whose call splits otherwise: its merge would be recorded as every value's)
                raise BanzaiError(f"{task}: its split does not name each value of "
                                  f"{tdef.split_arg} once, in order")
            outs = self.planner.chunk_outputs(job, task, n)
            if not self.locality.have(tk, list(outs), first, epoch):
                self._recompute(job, task, split, outs)
                return None
            return self.planner.values_assembly(job, task, n)
        # One wait for everything the assembly reads (so that its failures add up): the
        # chunks' outputs, the input's listing and, once that is here, every item result.
        a = None
        if whole:
            a = self.planner.assembly(job, task, tdef, spec, split, chunks)
            need: dict[str, int | None] = dict(a.made_by)
        else:
            need = {**self.planner.chunk_outputs(job, task, n), split.payload["input"]: None}
            if self.data.is_complete(split.payload["input"]):
                a = self.planner.items_assembly(job, task, tdef, spec, split, chunks)
                if self._lost_items(tk, a):
                    return None
                need.update(a.made_by)
        if not self.locality.have(tk, list(need), first, epoch):
            self._recompute(job, task, split, need)
            return None
        if a is None:  # the input's listing just came: the item results next
            a = self.planner.items_assembly(job, task, tdef, spec, split, chunks)
            if self._lost_items(tk, a) or not self.locality.have(tk, list(a.made_by), first,
                                                                 epoch):
                return None
        return a

    def _lost_items(self, tk: TaskKey, a: Assembly) -> bool:
        """True if an older peer's split left out items whose cache entries compaction
        deleted here (`Assembly.lost`): an output without them would be wrong, so this peer
        does not assemble it; a peer that holds them does (the splitter goes first; a peer
        of the previous release deletes none). Said once in the log, and in `waiting`."""
        if not a.lost:
            self._lost.pop(tk, None)
            return False
        if tk not in self._lost:
            log.warning("%s/%s: not assembled here: the cache entries of %d item(s) its "
                        "split left out were deleted (first: %s)", *tk, len(a.lost), a.lost[0])
        self._lost[tk] = (f"waiting for a peer that holds the cached results of "
                          f"{len(a.lost)} item(s) (deleted here)")
        return True

    def _partial(self, job: str, task: str, tdef: TaskDef, spec: TaskSpec, split: Event,
                 chunks: list[Any]) -> None:
        """Progressive answers: the splitter of a per-item task publishes its output so far
        (PARTIAL) when it holds more results than it last published, at most once per
        progress_interval_s; results made elsewhere are fetched in the background. The
        final output is assembled as without it (a PARTIAL of every item has its CID)."""
        tk = (job, task)
        now = self.clock()
        if not self.data.is_complete(split.payload["input"]):
            return
        done = self._n_done((job, task, *split.id), len(chunks))
        if self._results_seen.get(tk) != done and tk not in self._partial_fetching:
            # A chunk done elsewhere: its results are fetched now, not at the PARTIALs'
            # pace, so that the final assembly (after the last chunk) rarely waits for them
            self._results_seen[tk] = done
            a = self.planner.assembly(job, task, tdef, spec, split, chunks, partial=True)
            self._fetch_results(tk, a)
        if now < self._partial_due.get(tk, 0.0):
            return
        # Looked at again only when results may have come: a chunk done, an item result
        # recorded (CACHE_PUT) or a fetch of results ended (it forgets the signature).
        sig = (done, len(self.state.cache))
        if self._partial_sig.get(tk) == sig:
            return
        self._partial_sig[tk] = sig
        a = self.planner.assembly(job, task, tdef, spec, split, chunks, partial=True)
        here = {p: c for p, c in a.entries.items() if self.data.is_complete(c)}
        self._fetch_results(tk, a)
        items = sum(1 for p in here if p in a.results)
        if items <= self._partial_sent.get(tk, 0):
            return
        self._partial_due[tk] = now + self.cfg.progress_interval_s
        self._partial_sent[tk] = items
        output = self.store.make_dir(here)
        self.data.mark(output)
        self.emit(EventType.PARTIAL, {"job": job, "task": task, "output": output,
                                      "items": items, "of": a.of})

    def _prefetch_reduce(self, job: str, task: str, split: Event, chunks: list[Any],
                         with_input: bool = True) -> None:
        """The splitter of a task with a reduce (which gathers the reduce's input first):
        the outputs of chunks done elsewhere, and the task's input, are fetched as the chunks
        end, so that the assembling step does not wait for them after the last one. Once
        every group is claimed, a peer running one fetches the others' outputs too (not the
        input): if it ends the last group, it holds them all and claims the reduce at once."""
        tk, sk = (job, task), (job, task, *split.id)
        n = len(chunks) - 1
        seen = self._n_done(sk, n)
        if self._results_seen.get(tk) == seen or tk in self._partial_fetching:
            return
        self._results_seen[tk] = seen
        # What the last look found missing, and the chunks done since (O(them), not every
        # done chunk's outputs again at each chunk done: ChunkTable.done_added)
        memo = self._prefetched.get(tk)
        mark, need = (memo[1], memo[2]) if memo is not None and memo[0] == sk else ((0, 0), [])
        mark, added = self.state.chunks.done_added(sk, mark)
        if added is None:
            need, added = [], iter(self.state.chunks.done(sk).items())
        new: list[Any] = []
        for i, d in added:  # as Planner.chunk_outputs: whole outputs and item results
            if i < n:
                new.append(d.payload.get("output"))
                new += [v["c"] for v in (d.payload.get("cache") or {}).values() if v]
        need = [c for c in (*need, *new) if c and not self.data.is_complete(c)]
        self._prefetched[tk] = (sk, mark, need)
        inp = split.payload["input"]
        missing = [inp, *need] if with_input and inp and not self.data.is_complete(inp) else need
        if missing:
            self._partial_fetching.add(tk)
            self._background(self._fetch_partial(tk, missing))

    def _fetch_results(self, tk: TaskKey, a: Assembly) -> None:
        """Fetch, in the background, the results of `a` made elsewhere (one fetch at once)."""
        missing = [c for c in a.made_by if not self.data.is_complete(c)]
        if missing and tk not in self._partial_fetching:
            self._partial_fetching.add(tk)
            self._background(self._fetch_partial(tk, missing))

    async def _fetch_partial(self, key: TaskKey, cids: list[str]) -> None:
        try:
            await self.data.ensure(cids)
        except Exception as e:  # best effort: the final assembly fetches (and waits) itself
            log.debug("%s/%s: results for a partial output not fetched: %s", *key, e)
        finally:
            self._partial_fetching.discard(key)
            self._partial_sig.pop(key, None)
            self._mark(key)
            self._dirty.update(self.locality.wanting(cids))  # (the assembly's wait, say)

    def _recompute(self, job: str, task: str, split: Event, made_by: Mapping[str, int | None],
                   ) -> None:
        """After fetch_attempts failed fetches of a task's results, reopen the chunks that
        made those no live peer could provide (they run again); a result not made by this
        split (cached) or an input cannot be recomputed here: the task waits (visibly)."""
        tk = (job, task)
        if self.locality.failures(tk) < self.cfg.fetch_attempts:
            return
        missing = [c for c in made_by if c and not self.data.is_complete(c)]
        chunks: dict[int, int] = {}
        for c in missing:
            i = made_by[c]
            if i is not None:
                chunks[i] = chunks.get(i, 0) + 1
        if not chunks:
            return
        for i, count in sorted(chunks.items()):
            ch = self.state.chunk(job, task, i)
            done = claims.chunk_done(ch)
            if done is None:
                continue
            attempt = max(int(done.payload["attempt"]), ch.attempt)
            log.warning("%s/%s: %d result(s) of chunk %d are in no live peer's store: "
                        "recomputing them", job, task, count, i)
            self.emit(EventType.CHUNK_FAILED, claims.reopen_failure(
                job, task, split.id, i, attempt, count))
        self.locality.forget(tk)

    def _done(self, job: str, task: str, output: str, key: str | None, cached: bool,
              warning: str | None = None) -> None:
        self._finished_here(job, task, output)
        payload = {"job": job, "task": task, "output": output, "key": key, "cached": cached}
        if warning:
            payload["warning"] = warning
        self.emit(EventType.TASK_DONE, payload)

    def _finished_here(self, job: str, task: str, output: str) -> None:
        """A task's completion emitted here (a TASK_DONE, or a CHUNK_DONE implying it)."""
        inline = self._runs.inline
        if (inline is None or not inline.holds(output)) and self.data.is_complete(output):
            self._pin_soon(output)  # (an inline output is pinned as it is written)
        self.planner.forget(job, task)

    def _implies_done(self) -> bool:
        """Does every member fold the TASK_DONE a CHUNK_DONE's `done` implies (DONE_FEATURE)?
        Then our run of an implicit split's one chunk says its task is done in its
        CHUNK_DONE, and no TASK_DONE follows. Every member (`every_member`), not only the
        live ones: a peer of the previous release away for a while (restarting, cut off)
        would come back to tasks it cannot see done, and might run them again or, if it
        cannot run their call, wait for them for good."""
        return self.every_member(DONE_FEATURE)

    def every_member(self, feature: str) -> bool:
        """Does every member the fold knows and did not revoke announce `feature` (its latest
        MEMBER event's `features`), and every live peer's heartbeat (one whose MEMBER event
        has not come yet)? An old member gone for good holds this back until it is revoked."""
        st = self.state
        return (all(feature in (i.get("features") or ()) for i in self._peers().values())
                and all(feature in ev.body_as(Member).features
                        for pid, ev in st.members.items() if pid not in st.revoked))

    def claims_first(self, job: str, wf: Workflow) -> bool:
        """Whether our JOB_SUBMITTED of `wf` as `job`, which says `local` (`takes_first`),
        says `claimed` too (CLAIMED_FEATURE: it is our claim of its tasks without input, and
        no CLAIM follows): while every member folds the claims it implies (`every_member`:
        a peer of the previous release that comes back mid-task would see the task unclaimed,
        run it too, and hold its own claim as the winner for good), and while no such task's
        output is in the cache (the one lookup of a claimed task: `_implicit_turn` makes none;
        a hit ends the task with no run, and a claim would stand open for nothing)."""
        if not self.every_member(CLAIMED_FEATURE):
            return False
        for t in wf.tasks:
            if t.depends or t.cid is not None or not t.cache:
                continue
            tdef = self._runnable(t)
            if tdef is None or self.planner.cached_output(
                    self.planner.key(job, t.name, tdef, t, None)) is not None:
                return False
        return True

    # -- claims ------------------------------------------------------------------------
    def _consider_chunk(self, job: str, task: str, i: int, split: Event, items: list[Any],
                        tdef: TaskDef, spec: TaskSpec, reduces: list[Any] | None = None,
                        ) -> bool:
        """Watch, or claim and run, chunk `i`; `reduces`: the split's chunks, when chunk `i`
        is the assembling step of a task with a reduce (its input: the others' results).
        False if no chunk of the task can be claimed here now (`_consider_chunks` stops
        looking at those no event is about)."""
        c = self.state.chunk(job, task, i)
        where, holder = claims.standing(c, split.id, self.cfg.max_attempts,
                                        self._unvouched_failures(job, spec) if c.failures
                                        else None)
        if where is Standing.SETTLED:
            return True
        ak = AttemptKey(job, task, i, c.attempt)
        run = self.runs.get(ak)
        if run is not None and not run.lost and claims.duplicate(run.split, split.id, holder,
                                                                 self.peer_id):
            self._runs.lose(run)  # another split or an earlier claim won: stop the duplicate
        implied = holder is not None and self._implied_here(job, task, c) is holder
        if holder is not None and not implied:
            self._ready_since.pop(ak, None)
            self._watch_lease(ak, holder)
            return True
        if self._runs.running(ak):
            # Ours, or a lost one still ending (its run key is this attempt's: it would end
            # a new run's bookkeeping with its own): claimed again once it has ended.
            return True
        able = self._may_claim((job, task), spec.requires, implied)
        if able is None:
            return False  # this peer does not meet the task's requires (peers that do claim
            # it), or its claims are held
        holders = self.state.providers.get(split.payload["input"] or "", set())
        if self.free_slots <= 0 and not (self._first_for == (job, task)
                                         and self._runs.room > 0
                                         and self._input_here(split, holders)):
            if implied:  # its promised slot was taken after all: the others take the task
                self.emit(EventType.CHUNK_FAILED, claims.released_failure(ak, split.id))
                return False
            self._starved[(job, task)] = None  # looked at again when a slot frees
            return False
        src = split.payload["input"]
        if src and not self._peers() and not self.data.is_complete(src):
            # Its input is elsewhere and no peer is live (e.g. just restarted): a claim
            # would only fail its fetch and burn an attempt. Wait (visibly) for peers.
            self.locality.wait((job, task), [src])  # looked at again when peers come
            self._lonely.add((job, task))
            self._waits_peers = frozenset()  # (seen now: any peer that comes wakes it)
            return False
        self._lonely.discard((job, task))
        reduce_input = None
        if reduces is not None:  # its input first: the others' results, gathered here
            a = self._gathered(job, task, tdef, spec, split, reduces[:-1],
                              peer_of(split.origin), False)
            if a is None:
                return True
            reduce_input = self.planner.output(a)
        # (our JOB_SUBMITTED is the claim, CLAIMED_FEATURE: its run starts, no CLAIM sent)
        mine = holder if implied else self._claim_in_turn(ak, c, split, tdef, able, holders,
                                                          reduces is not None)
        if mine is not None and peer_of(mine.origin) == self.peer_id:
            self._mine[ak] = split.id
            self._runs.start(ak, split, items, tdef, spec,
                             rerun=claims.reopened(c) or not spec.cache,
                             reduce_input=reduce_input)
        return True

    def _may_claim(self, key: TaskKey, requires: Mapping[str, Any], implied: bool,
                   ) -> Mapping[str, Mapping[str, Any]] | None:
        """`_claimers` of task `key`; None while claims are held (`hold_claims`: the task
        is noted held back), but for a chunk our own JOB_SUBMITTED claims (`implied`)."""
        if self._no_claims(key[0]) and not implied:
            self._held_back[key] = None
            return None
        return self._claimers(key, requires)

    def _claim_in_turn(self, ak: AttemptKey, c: ChunkState, split: Event, tdef: TaskDef,
                       able: Mapping[str, Mapping[str, Any]], holders: set[str],
                       reduce: bool) -> Event | None:
        """Claim attempt `ak` once this peer's turn among the claimers `able` has come;
        the attempt's winning claim then (ours, unless an earlier one is folded), else None."""
        ranked = claims.candidates(ak.unit, tdef.name, split, self.peer_id, able, holders,
                                   self._full() if holders and tdef.groups else (),
                                   self._splitter(split, tdef.name))
        # A starved task this peer comes first for among every live peer (full or not:
        # `_next_starved`) is claimed at once: the others look at it last, if at all. The
        # stagger is for a task that several free peers see at once (its input's holders
        # first, then its splitter).
        first = self._first_for == (ak.job, ak.task) and (not holders
                                                          or self.peer_id in holders)
        # Without the input, a chunk of a call its holders run short is left to them a while
        # longer (`local_wait_s`): their run of it ends before our fetch of its items would.
        later = (self.cfg.local_wait_s if holders and self.peer_id not in holders
                 and not reduce
                 and self._short_at_holders(ak.job, ak.task, split, holders, tdef.per_item)
                 and not self._input_here(split, holders) else 0.0)
        if not self._my_turn(ak, ranked, 0.0 if first else None, later):
            return None
        self.emit(EventType.CLAIM, claims.claim(ak, split.id))
        # (folded at once, into the chunk's state: `c` may be NO_CHUNK, which it left as is)
        return self.state.chunk(ak.job, ak.task, ak.chunk).winner(ak.attempt, split.id)

    def _splitter(self, split: Event, call: str) -> str:
        """The peer that split the task (ranked first of the claimers after the input's
        holders); of an implicit split, which no peer made, the one that would have split it
        (`_implicit_rank`), so that every peer ranks it first."""
        job, task = split.payload["job"], split.payload["task"]
        if self._members_first(job, split):
            return self._first_peer((job, task), [*self._peers(), self.peer_id])
        if not self.state.implicit(split):
            return peer_of(split.origin)
        return self._implicit_rank(job, task, call)[0]

    def _members_first(self, job: str, split: Event | None = None) -> bool:
        """Is `job` a lanes job whose tasks come first to its members by rendezvous hash of
        the task (`_claim_first`, `_splitter`), not to the peer that split them? Its home
        splits every task (`_home_first`): first for all of them, it would leave every
        other member taking from the same end of its queue (`_next_starved`), all at once
        when their slots free together (a chunk run twice: review r1 risk 3, after a
        scale-out's add). Not a `local` job: its submitter takes it (`takes_first`). Nor a
        task whose `split` has an input: a holder of the input split it (`_plan`, its
        producer first), not the home, and it comes first for the chunks as with lanes off;
        a member without the input would fetch each chunk's items first and queue none
        behind its slot (`_input_here`), while the holder, not first, claimed one chunk at
        a time (bench_mesh's per-file map on 3 peers: 1,735 items/s against 2,296 off)."""
        if split is not None and split.payload["input"]:
            return False
        sub = self.state.jobs.get(job) if job in self.state.members_of else None
        return sub is not None and not sub.body_as(JobSubmitted).local

    def _short_at_holders(self, job: str, task: str, split: Event, holders: set[str],
                          per_item: bool) -> bool:
        """True if the last chunk of the split that a live holder of its input ran took at
        most queue_ahead_max_s (its CHUNK_DONE's `s`, the worker's time), or of a per-item
        task at most queue_ahead_item_max_s per item of the chunk (the holder's own bound,
        `Runs.short`): a peer that would fetch the items first is slower at them than the
        holder (the holder's first chunk may run longer, warming up: the last is the one
        that counts). Read once per round."""
        key = (job, task)
        if self._stepping and key in self._short_here:
            return self._short_here[key]
        live = self._peers()
        last: Event | None = None
        for p, d in self._last_done_by(job, task).items():
            if p in holders and p in live and (last is None or d.order > last.order):
                last = d
        s = last.payload.get("s") if last is not None else None
        n = claims.chunk_size(split, last.payload["chunk"]) if last is not None and per_item else 0
        short = s is not None and (s <= self.cfg.queue_ahead_max_s
                                   or (n > 0 and s / n <= self.cfg.queue_ahead_item_max_s))
        if self._stepping:
            self._short_here[key] = short
        return short

    def _last_done_by(self, job: str, task: str) -> Mapping[str, Event]:
        """Peer -> the CHUNK_DONE with the highest order among the done chunks of the task's
        winning split that it made (those past the split's last do not count): kept up as
        chunks are done (`ChunkTable.done_added`), so that a look costs the chunks done
        since the last; read again when one was reopened or dropped."""
        split = self.state.splits.get((job, task))
        if split is None:
            return {}
        sk, n = (job, task, *split.id), n_chunks(split)
        memo = self._last_done.get((job, task))
        mark, by = (memo[1], memo[2]) if memo is not None and memo[0] == sk else ((0, 0), {})
        mark, added = self.state.chunks.done_added(sk, mark)
        if added is None:
            by, added = {}, iter(self.state.chunks.done(sk).items())
        for i, d in added:
            if i < n and ((cur := by.get(p := peer_of(d.origin))) is None
                          or d.order > cur.order):
                by[p] = d
        self._last_done[(job, task)] = (sk, mark, by)
        return by

    def _full(self) -> set[str]:
        """The live peers whose claims fill their slots (`claims.full_peers`), read once per
        evaluation round. Used for the groups of a task of `groups` only (LEARN's speakers):
        they are few and each runs far longer than an event takes to arrive, so a holder
        the log shows full is still busy. A per-item chunk may take milliseconds: a holder
        seen full may already be free and claiming that chunk itself (a duplicate run), so
        the others keep waiting their stagger for it."""
        if self._stepping and self._full_peers is not None:
            return self._full_peers
        full = claims.full_peers(self.state, self._claim_seen, self.peer_id, self._peers())
        if self._stepping:
            self._full_peers = full
        return full

    def _placed_slots(self, job: str, call: str, requires: Mapping[str, Any]) -> int:
        """Slots of the live peers (this one included) that run `job` (`_runners`: a peer of
        an earlier release may run none of it), run `call` and meet `requires`: what a task's
        chunks are sized for. Of a lanes job, non-members too: the chunks its members do not
        claim at once are the open work that spreads it to them (`_spread`; review i, I0:
        sized for its members only, every chunk was claimed at once and it never spread)."""
        live = self._runners(job)
        if not requires:
            return mesh_slots(call, self.runner.slots, live)
        members = {p: e.payload for p, e in self.state.members.items()}
        meets = placement.unmet(requires, members.get(self.peer_id)) is None
        suited = {p: live[p] for p in placement.suited(requires, live, members)}
        return mesh_slots(call, self.runner.slots if meets else 0, suited)

    def _placed(self, key: TaskKey, requires: Mapping[str, Any],
                ) -> Mapping[str, Mapping[str, Any]] | None:
        """The live peers that may claim chunks of a task stating `requires` (all of them
        when it states none); None if this peer does not meet them (then, when no live peer
        does, the task waits with that reason in the job view)."""
        live = self._peers()
        if not requires:
            return live
        members = {p: e.payload for p, e in self.state.members.items()}
        ok = placement.suited(requires, live, members)
        if placement.unmet(requires, members.get(self.peer_id)) is None:
            self._unplaced.pop(key, None)
            return {p: live[p] for p in ok}
        if ok:
            self._unplaced.pop(key, None)
        else:
            names = {p: str(m.get("name", "")) for p, m in members.items()}
            self._unplaced[key] = placement.no_peer_reason(
                requires, [self.peer_id, *live], members, names)
        return None

    def _claimers(self, key: TaskKey, requires: Mapping[str, Any],
                  ) -> Mapping[str, Mapping[str, Any]] | None:
        """The live peers that may claim a chunk of task `key` (`_placed`; None if this peer
        does not meet `requires`): those that run its job (`_runners`: nobody waits a stagger
        for a peer of an earlier release that runs none of it) and, of a lanes job, are its
        members."""
        able = self._placed(key, requires)
        if able is None:
            return None
        runners = self._runners(key[0])
        return {p: able[p] for p in claims.members_only(self.state, key[0], able)
                if p in runners}

    def _my_turn(self, ak: AttemptKey, ranked: list[str], step_s: float | None = None,
                 later_s: float = 0.0) -> bool:
        """True once this peer of rank r in `ranked` has waited r × `step_s` (stagger_s
        unless given), and `later_s` more, for `ak`."""
        now = self.clock()
        since = self._ready_since.setdefault(ak, now)
        due = later_s + claims.turn_at(ranked, self.peer_id, since,
                                       self.cfg.stagger_s if step_s is None else step_s)
        if now < due:
            self._turn_at = min(self._turn_at, due)  # the loop steps then (see sleep_s)
            return False
        self._ready_since.pop(ak, None)
        return True

    def _claimed_by(self, ak: AttemptKey) -> Iterator[str]:
        """The peers whose claims of `ak` the state holds, on every split of its task
        (`Leases`: whichever split wins, the holder is among them)."""
        for c in self.state.chunks.of_every_split(ak.job, ak.task, ak.chunk):
            for claim in c.claims.get(ak.attempt, ()):
                yield peer_of(claim.origin)

    def _watch_lease(self, ak: AttemptKey, holder: Event) -> None:
        """Watch a claim held by another peer; fail it when its lease lapses."""
        if peer_of(holder.origin) == self.peer_id:
            self._claim_seen.pop(ak, None)
            return
        now = self.clock()
        seen = self._claim_seen.setdefault(ak, now)
        if claims.lease_lapsed(seen, now, self.cfg.lease_s):
            self._claim_seen.pop(ak, None)
            left = peer_of(holder.origin) not in self._peers()
            self.emit(EventType.CHUNK_FAILED,
                      claims.lease_failure(ak, holder, self.cfg.lease_s, left=left))

    def _check_claims(self) -> None:
        """Fail our own claims that no run of ours is behind (a run that ended without
        recording an outcome, whatever the reason): the chunk is retried."""
        st = self.state
        for ak, split in list(self._mine.items()):
            c = st.chunk(ak.job, ak.task, ak.chunk)
            w = c.winner(ak.attempt, split)
            if (st.split_id(ak.job, ak.task) != split or ak.job in st.cancelled
                    or (ak.job, ak.task) in st.task_done or claims.chunk_done(c) is not None
                    or ak.attempt in c.failures or w is None
                    or peer_of(w.origin) != self.peer_id):
                del self._mine[ak]  # settled, superseded or lost: nothing to check
            elif not self._runs.running(ak):
                del self._mine[ak]
                log.warning("%s: no run behind our claim: failing it", ak.unit)
                self.emit(EventType.CHUNK_FAILED, claims.orphan_failure(ak, split))

    # -- wake-ups ----------------------------------------------------------------------
    def _mark(self, key: TaskKey) -> None:
        """Evaluate `key` again soon (a fetch of what it waits for ended)."""
        self._dirty.add(key)
        self._wake.set()

    def _ended(self, ak: AttemptKey) -> None:
        """A local run ended: its task moves on, and its slot may serve a starved task."""
        self._dirty.add((ak.job, ak.task))
        self._wake.set()

    def _recorded(self, ak: AttemptKey, done: str | None) -> None:
        """Our run's CHUNK_DONE was just emitted (`done`: its output, if it said its task is
        done): evaluate now, in the same loop turn, so that the outcome, the task's
        completion and the next claim of the freed slot are parts of one TURN event (one
        signature, one write, one frame) instead of two."""
        if done is not None:
            self._finished_here(ak.job, ak.task, done)
        self._dirty.add((ak.job, ak.task))
        if self._loop_task is not None and not self._loop_task.done() and not self._stepping:
            self.step()
        else:
            self._wake.set()

    def keep_inline(self, inline: InlineBlocks) -> None:
        """Small outputs of our runs ride in their CHUNK_DONE, kept by `inline`."""
        self._runs.inline = inline

    def _pin_soon(self, cid: str) -> None:
        """Pin a task output in a thread: the outputs finished while a pin is under way wait
        for it and are pinned together (one directory fsync for the lot, not two fsyncs
        each). Nothing waits for a pin: it keeps the output from gc, the event is not it."""
        self._to_pin.append(cid)
        if not self._pinning:
            self._pinning = True
            self._background(self._pin_all())

    async def _pin_all(self) -> None:
        try:
            while self._to_pin:
                batch, self._to_pin = self._to_pin, []
                try:
                    await self.offload(partial(self.store.pin_many, batch))
                except Exception:  # e.g. one output gc'd meanwhile: the others one by one
                    for cid in batch:
                        try:
                            await self.offload(partial(self.store.pin, cid))
                        except Exception as e:
                            log.warning("pinning the task output %s failed: %s", cid, e)
        finally:
            self._pinning = False

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)


def _running(state: MeshState, job: str) -> bool:
    """Is lanes job `job` held, with members, neither cancelled nor ended here?"""
    return (job in state.members_of and job in state.jobs and job not in state.cancelled
            and job not in state.ended)

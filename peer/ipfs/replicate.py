"""Replication: every output is pinned where it was produced and on r-1 other live peers.

On a TASK_DONE that is not cached, each peer ranks the live peers other than the producer
(itself included) by rendezvous hash of the output CID; if it is among the first r-1 it
fetches the DAG (from providers, Kubo first with `--store kubo`), pins it (which makes its
blocks durable here: one present only in the inline pack, or in a file a failed sync marked,
is written again) and announces it with PROVIDE, so losing the producer loses no result.
Outputs arriving within `batch_window_s` of each other are fetched together (one CAR per
provider), pinned in one thread hop and announced in one PROVIDE. Peers with the same
membership view choose the same replicas; a differing view (a peer joining or suspected)
can add a replica, never remove one. An output already announced by r live peers is not
replicated again.
Repair (`rescan`): at start, once the membership has had `settle_s` to form, and whenever a
live peer is no longer live, every output held by fewer than r live peers is replicated by
the first live non-holders in rendezvous order (so a replica lost later is rebuilt).
An inline output (peer.ipfs.inline) is written when folded by the peers this rule names
(`held`: never fetched here); they announce nothing, so a repair may count them out and
copy it once more (never fewer copies than r), and a fetch finds them among the live peers
asked after its providers. The other peers keep it in memory only.
A lanes job's outputs (docs/design/partial-replication.md) rank its members first: they
alone fold its TASK_DONEs (and CHUNK_DONEs' inline blocks) as they come, and a producer is a
peer, not its lane. A non-member the rule still names (fewer live members than r) replicates
when its fold takes the job's JOB_ENDED for the job's end (`ended`: when it comes, or once
what it waited for comes) and when that one's `listing` folds; a rescan counts the outputs
JOB_ENDEDs carry.
With `--store kubo`, `mirrored` picks what a peer copies into its Kubo node as well.
Replication is background work: a fresh output of a job still running (`job_live`: the
node's says so when its chunks can fill every core it may use) is replicated once that job
ends, at most `defer_max_s` later, so that on a one-core peer the copy (which costs the
replica and the producer CPU) does not slow the job's next tasks. Repairs are not deferred.
Loop-owned; one listener (`on_event`) on the node, one on its fold (`ended`); `start` runs
the repair watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

from peer.errors import BanzaiError
from peer.ipfs.fetch import RecentSet
from peer.ipfs.store import Pinner
from peer.log import Event, EventType, JobEnded, JobSubmitted, MeshState, Provide, TaskDone
from peer.log.lanes import peer_of
from peer.rendezvous import rendezvous, weight

log = logging.getLogger("banzai.replicate")
DEFER_MAX_S = 30.0  # longest a fresh output waits for its job to end before it is replicated


class Data(Protocol):
    async def ensure(self, cids: Sequence[str], hints: Sequence[str] = ()) -> None: ...
    def is_complete(self, cid: str) -> bool: ...


Emit = Callable[[EventType, dict[str, Any]], Event]


def mirrored(ev: Event, self_id: str) -> list[str]:
    """The CIDs of an event that this peer keeps in its Kubo node too (KuboMirror.mirror):
    outputs it computed (TASK_DONE not cached, of its stream or its lane of a lanes job) and
    whatever it provides."""
    if peer_of(ev.origin) != self_id:
        return []
    b = ev.body
    if isinstance(b, TaskDone) and not b.cached:
        return [b.output]
    if isinstance(b, Provide):
        return list(b.cids)
    return []


def made_outputs(state: MeshState, ev: Event) -> list[tuple[str, str]]:
    """(CID, producer) of the outputs JOB_ENDED `ev` names as folded (`end_body`) that its job
    made, not a task's given `cid` (data the mesh did not make, which a TASK_DONE marks
    `cached`; review r2 F2); none unless the fold took `ev` for its job's end (one held
    back, refused, e.g. from a non-member, or that another one beat: review r2 F1)."""
    job = ev.body_as(JobEnded).job
    won, sub = state.ended.get(job), state.jobs.get(job)
    if won is None or won.id != ev.id or sub is None:
        return []
    given = {t["name"] for t in sub.body_as(JobSubmitted).workflow["tasks"] if t.get("cid")}
    return [(o.cid, peer_of(o.origin)) for task, o in state.end_body(ev).outputs.items()
            if task not in given]


def ranked(cid: str, peers: Iterable[str], first: Collection[str] = ()) -> list[str]:
    """`peers` by rendezvous hash of `cid`, those of `first` (a lanes job's members) before
    the others."""
    ps = sorted(set(peers))
    return rendezvous(cid, [p for p in ps if p in first]) + rendezvous(
        cid, [p for p in ps if p not in first])


def replica_peers(cid: str, producer: str, alive: Iterable[str], replicas: int,
                  first: Collection[str] = ()) -> list[str]:
    """The r-1 peers (other than `producer`) that should also pin `cid`, best first (`first`
    ranked before the others: `ranked`)."""
    return ranked(cid, set(alive) - {producer}, first)[:max(replicas - 1, 0)]


def is_replica(cid: str, producer: str, me: str, alive: Iterable[str], replicas: int,
               first: Collection[str] = ()) -> bool:
    """Is `me` among `replica_peers` of `cid` (with `me` alive)? Without ranking them all:
    fewer than r-1 of the other live peers but the producer rank before it (what every
    receiver asks of each inline output it folds: issue 12)."""
    if me == producer or replicas < 2:
        return False
    mine, lead, before = weight(cid, me), me in first, 0
    for p in set(alive):
        if p in (producer, me):
            continue
        group = p in first  # of another group than ours it ranks before us if of `first`
        if (group if group != lead else weight(cid, p) < mine):
            before += 1
            if before >= replicas - 1:
                return False
    return True


def repair_peers(cid: str, holders: Iterable[str], alive: Iterable[str], replicas: int,
                 first: Collection[str] = ()) -> list[str]:
    """The live peers that should pin `cid` so that r live peers hold it again: the first
    non-holders in rendezvous order, `first` before the others (none if enough live peers
    hold it)."""
    live = set(alive)
    have = live & set(holders)
    return ranked(cid, live - have, first)[:max(replicas - len(have), 0)]


class Replicator:
    """Pins the outputs this peer is a replica of; `on_event` is the node listener."""

    def __init__(self, self_id: str, replicas: int, peers: Callable[[], Mapping[str, Any]],
                 providers: Callable[[str], Iterable[str]], data: Data, store: Pinner,
                 emit: Emit, *, attempts: int = 3, backoff_s: float = 2.0,
                 batch_window_s: float = 0.05,
                 outputs: Callable[[], Iterable[tuple[str, str, str]]] = tuple,
                 members: Callable[[str], Collection[str]] = lambda job: (),
                 end_outputs: Callable[[Event], Iterable[tuple[str, str]]] = lambda ev: (),
                 settle_s: float = 5.0, watch_s: float = 1.0,
                 held: Callable[[str], bool] | None = None,
                 job_live: Callable[[str], bool] | None = None,
                 defer_max_s: float = DEFER_MAX_S) -> None:
        self.self_id = self_id
        self.replicas = replicas
        self.peers = peers  # live peers other than this one
        self.providers = providers
        self.data = data
        self.store = store
        self.emit = emit
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.batch_window_s = batch_window_s
        self.outputs = outputs  # (cid, producer, job) of every output computed in the mesh
        self.members = members  # a lanes job's members (ranked first); none: a full job's
        # (cid, producer) of the outputs a JOB_ENDED names that its job made, as folded;
        # none unless the fold took it for its job's end
        self.end_outputs = end_outputs
        self.settle_s = settle_s
        self.watch_s = watch_s
        self.held = held  # an inline output written here when folded: never fetched
        self.job_live = job_live  # a job still runs (its outputs' replication waits)
        self.defer_max_s = defer_max_s
        self.deferred = 0  # batches that waited for their jobs to end
        self._jobs: dict[str, str] = {}  # queued fresh output -> the job that made it
        self._wake = asyncio.Event()  # set by every event: a job may have ended
        self.rescans = 0
        self._watch: asyncio.Task[None] | None = None
        self.replicated = RecentSet()  # replicated here (a memo: _wanted decides)
        self._queue: dict[str, tuple[str, int]] = {}  # cid -> (producer, attempt) to fetch
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False  # (`close`d: nothing is queued after)
        self._retries: dict[str, asyncio.TimerHandle] = {}  # cid -> its next attempt

    def on_event(self, ev: Event) -> None:
        """Listener: queue a fresh output if this peer is one of its replicas."""
        self._wake.set()
        b = ev.body
        if self.replicas >= 2 and isinstance(b, TaskDone) and not b.cached:
            self._consider(b.output, peer_of(ev.origin), b.job)

    def ended(self, ev: Event) -> None:
        """The fold took JOB_ENDED `ev` for its job's end, or folded its `listing`
        (`MeshState.on_end`; synchronous, within the fold): of a lanes job we are no member
        of (no TASK_DONE of it comes here), queue the outputs it names that this peer is a
        replica of (`end_outputs`: one the fold holds back or refuses, e.g. from a
        non-member, names outputs nobody made; review r2 F1). Told when the fold takes it,
        be it when it comes or once what it waited for comes, and once its listing folds
        (review r2 F3, F4). Before `start` (a node's replay, or one driven without a loop)
        nothing: the rescan after it counts those."""
        if self._watch is None:
            return
        job = ev.body_as(JobEnded).job
        members = self.members(job)
        if members and self.self_id not in members:
            for cid, producer in self.end_outputs(ev):
                self._consider(cid, producer, job)

    def _consider(self, cid: str, producer: str, job: str) -> None:
        if producer == self.self_id or cid in self.replicated or cid in self._queue or (
                cid in self._retries):
            return
        if self.held is not None and self.held(cid):
            return
        alive = [*self.peers(), self.self_id]
        if self.self_id in replica_peers(cid, producer, alive, self.replicas,
                                         self.members(job)):
            self._jobs[cid] = job
            self._enqueue(cid, producer, 1)

    def start(self) -> None:
        """Rescan once the membership had time to form, then whenever a peer departs."""
        if self.replicas >= 2:
            self._watch = asyncio.create_task(self._watch_members(), name="replicate-watch")

    async def _watch_members(self) -> None:
        await asyncio.sleep(self.settle_s)
        seen = set(self.peers())
        self.rescan()
        while True:
            await asyncio.sleep(self.watch_s)
            now = set(self.peers())
            if gone := seen - now:
                log.info("%d peer(s) left (%s): rescanning replicas", len(gone),
                         ", ".join(sorted(p[:8] for p in gone)))
                self.rescan()
            seen = now

    def rescan(self) -> int:
        """Queue every output held by fewer than r live peers that this peer should now
        hold; returns how many were queued."""
        self.rescans += 1
        alive = [*self.peers(), self.self_id]
        n = 0
        for cid, producer, job in self.outputs():
            if cid in self._queue or cid in self._retries or (
                    self.held is not None and self.held(cid)):
                continue
            holders = set(self.providers(cid))
            if self.self_id in holders:
                continue
            if self.self_id in repair_peers(cid, holders, alive, self.replicas,
                                            self.members(job)):
                self._enqueue(cid, producer, 1)
                n += 1
        if n:
            log.info("rescan: %d output(s) to replicate here", n)
        return n

    def _enqueue(self, cid: str, producer: str, attempt: int) -> None:
        if self._closed:
            return
        self._queue[cid] = (producer, attempt)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="replicate")

    async def _drain(self) -> None:
        await asyncio.sleep(self.batch_window_s)  # gather a burst; its PROVIDEs fold first
        while self._queue:
            await self._after_jobs()
            batch, self._queue = self._queue, {}
            for c in batch:
                self._jobs.pop(c, None)
            await self._replicate(batch)

    async def _after_jobs(self) -> None:
        """Wait until no queued output's job is live (woken by every event), defer_max_s at
        most."""
        def live() -> bool:
            jobs = {self._jobs[c] for c in self._queue if c in self._jobs}
            return self.job_live is not None and any(self.job_live(j) for j in jobs)

        if not live():
            return
        self.deferred += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.defer_max_s
        while live() and (left := deadline - loop.time()) > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left)

    async def _replicate(self, batch: dict[str, tuple[str, int]]) -> None:
        todo = [c for c in batch if self._wanted(c)]
        if not todo:
            return
        error: BanzaiError | None = None
        try:
            await self.data.ensure(todo)
        except BanzaiError as e:
            error = e
        have = await asyncio.to_thread(self._pin_complete, todo)
        if have:
            self.replicated.update(have)
            self.emit(EventType.PROVIDE, {"cids": have})
            log.info("replicated %d output(s), e.g. %s (produced by %s)", len(have), have[0],
                     batch[have[0]][0][:8])
        loop = asyncio.get_running_loop()
        for c in todo:
            producer, attempt = batch[c]
            if c in have:
                continue
            log.warning("replica of %s from %s, attempt %d: %s", c, producer[:8], attempt,
                        error or "still incomplete after fetching")
            if attempt < self.attempts:  # retried later, without holding up other outputs
                self._retries[c] = loop.call_later(self.backoff_s * attempt, self._retry, c,
                                                   producer, attempt + 1)

    def _retry(self, cid: str, producer: str, attempt: int) -> None:
        self._retries.pop(cid, None)
        if self._wanted(cid):
            self._enqueue(cid, producer, attempt)

    def _wanted(self, cid: str) -> bool:
        have = set(self.providers(cid))
        live = {*self.peers(), self.self_id}
        return self.self_id not in have and len(have & live) < self.replicas

    def _pin_complete(self, cids: list[str]) -> list[str]:
        """Pin those of `cids` whose DAG is complete here; returns them (thread). The store's
        pin makes each DAG durable first (a block only in the inline pack, or in a file a
        failed sync marked, is written again), so what is then provided survives a crash.
        A batch the store cannot pin whole is pinned one DAG at a time: one that fails (a
        block gone since, a write that failed) is left out, logged, and retried."""
        done = [c for c in cids if self.data.is_complete(c)]
        if len(done) > 1:
            try:
                self.store.pin_many(done)  # one fsync of the pin directory for the batch
                return done
            except (BanzaiError, OSError):
                pass  # (each told below)
        pinned = []
        for c in done:
            try:
                self.store.pin_many([c])
            except (BanzaiError, OSError) as e:
                log.warning("replica of %s not pinned: %s", c, e)
            else:
                pinned.append(c)
        return pinned

    async def close(self) -> None:
        self._closed = True  # (an end folded after this starts no drain: review r2 L4)
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        for h in self._retries.values():
            h.cancel()
        if self._drainer is not None:
            self._drainer.cancel()
            await asyncio.gather(self._drainer, return_exceptions=True)

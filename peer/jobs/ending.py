"""A lanes job's end as its home emits it (JOB_ENDED, docs/design/partial-replication.md,
section 3): what every peer folds of the job instead of its lanes' task events. A pure
function of the mesh state (a member's: it folds the job's lanes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple, Protocol

from peer.errors import (
    BanzaiError,
    DataError,
    IntegrityError,
    InvalidEvent,
    NotFound,
    StorageFull,
    TooLarge,
)
from peer.ipfs.kubo import KuboError
from peer.jobs.claims import chunk_done, chunk_exhausted, job_state, task_status
from peer.jobs.retention import ended_hlc, finished_at
from peer.jsontext import loads
from peer.log import Event, JobSubmitted, MeshState, TaskDone
from peer.log.events import MAX_LABEL_CHARS, MAX_MEMBERS, JobEnded
from peer.log.fold import end_flaw, end_inputs, end_merit, end_rank
from peer.log.ids import is_peer_id
from peer.log.snapframe import job_digest3, outputs_sha

log = logging.getLogger(__name__)

# The most bytes of a JOB_ENDED's listing read (`EndListings`): a 100,000-task job's
# outputs, each with its cache key and a few producers, take about 40 MB of JSON
MAX_LISTING_BYTES = 64 << 20
# A listing no peer served, or whose reading failed, is tried again after RETRY_S, then
# twice as long after each further failure, up to MAX_RETRY_S (`EndListings`): one that no
# peer ever serves costs a fetch every ~5 minutes, whatever the compaction interval (it was
# every 64 steps; session 41). Not longer: nothing cuts a wait short when the listing's
# provider comes back (review r R4: an hour's cap left a job's record unfolded that long)
RETRY_S = 5.0
MAX_RETRY_S = 320.0
# A listing whose fetches found it too large this many times for one JOB_ENDED (every peer
# tried sent more than the bound: `Fetcher.ensure`'s TooLarge) is refused for that JOB_ENDED
# (`EndListings`): one such fetch proves nothing (a peer's bytes, unverified), but a listing
# that no peer ever serves within the bound cost each peer up to ~68 MiB from each peer
# serving it at every try, for as long as the job was held (review e, session 41, E9).
# With the back-off, the tries are 0, 5, 15 and 35 s after the first. The refusal holds
# MAX_RETRY_S, then one more fetch is made (refused again at once if it is too large): at
# most one fetch per MAX_RETRY_S, and a listing an honest provider serves again is read
# within MAX_RETRY_S of its coming back, not at the next restart (review h, session 42, H5)
MAX_TOO_LARGE_FETCHES = 4
# The most bytes of JSON of the listings read but not admitted yet whose bodies `EndListings`
# keeps, all together (a body takes about three times its JSON's bytes as objects: a 30 MB
# listing of 100,000 outputs, 84 MiB); the others are read again when asked again
MAX_KEPT_BYTES = 32 << 20
# The store's errors reading a listing that say nothing of the listing (`EndListings` backs
# them off, does not refuse it): a block corrupt on this disk that no live peer repaired
# (`IntegrityError`; also a UnixFS file whose nodes lie about their sizes, the listing's
# doing but bounded by the back-off), a data dir file damaged, a full disk, Kubo unreachable.
# (A malformed DAG or a directory, a StoreError or BadDag, is the listing's: refused.)
STORE_CONDITIONS = (IntegrityError, DataError, StorageFull, KuboError)
# How long a listing waits, not folded nor refused, before /api/health counts it
# (`EndListings.waiting_long`): its JOB_MEMBERS or JOB_SUBMITTED should come within seconds,
# a peer serve it within a few tries
LONG_WAIT_S = 600.0


def job_ended(state: MeshState, job: str, max_attempts: int) -> dict[str, Any] | None:
    """The JOB_ENDED payload of `job` once it ended (`finished_at`; None while it is live):
    its state and end as its record will say (`peer.http.views.job_record`; the end as
    the compactor's `ended_hlc`), each done task's output with its cache key and the order
    (hlc, origin, seq) of the TASK_DONE, or implied one, that made it (so that every
    peer's cache keeps the same first entry), the peers holding each output's CID (the
    providers this fold holds: of no other CID), each failed task's error, and the
    digest a compacted member's thin row has (`snapframe.job_digest3`)."""
    sub = state.jobs[job]
    tasks = sub.body_as(JobSubmitted).workflow["tasks"]
    end_s = finished_at(state, job, tasks, max_attempts)
    if end_s is None:
        return None
    end = ended_hlc(end_s)
    statuses: list[str] = []
    outputs: dict[str, list[Any]] = {}
    producers: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    made: set[str] = set()  # (the outputs a record's facts list: not a given `cid`'s)
    for t in tasks:
        name = str(t["name"])
        status = task_status(state, job, name, max_attempts)
        statuses.append(status)
        done = state.task_done.get((job, name))
        if done is not None:
            b = done.body_as(TaskDone)
            outputs[name] = [b.key, b.output, done.hlc, done.origin, done.seq]
            if not t.get("cid"):
                made.add(b.output)
            holders = sorted(p for p in state.providers.get(b.output, ()) if is_peer_id(p))
            if holders:
                producers[b.output] = holders[:MAX_MEMBERS]
        elif status == "failed":
            failed[name] = _error(state, job, name, max_attempts)
    st = job_state(statuses, job in state.cancelled)
    return {"job": job, "state": st, "n_tasks": len(tasks), "end": end, "outputs": outputs,
            "producers": producers, "failed": failed,
            "digest": job_digest3(job, sub.hlc, sub.origin, sub.seq, end, st,
                                  outputs_sha(made))}


def better_end(state: MeshState, job: str, me: str, max_attempts: int,
               ) -> dict[str, Any] | None:
    """The JOB_ENDED payload member `me`'s fold makes of ended lanes job `job` now
    (`job_ended`) if it ranks strictly before the job's winning end (`fold.end_merit`:
    fewer failed tasks, or as few and `done` where the winner is not); else None: no
    JOB_ENDED of the job is folded here, the job left memory (compacted or deleted: a
    thin row, no fold to make an end of), `me` holds no lane of it, or its end would tie
    or rank after. Why (design section 3, session 46 helper b; review r1 M5's crossing
    case): members cut apart each end the job from their side's fold; after the heal a
    member's merged fold may fail fewer tasks than every side's end did (each side did
    what the other failed), and only a new end tells the peers that hold no lane. Each
    end this returns, once folded, lowers the winner's merit here, which has at most
    2 × (tasks + 1) × 2 values: a member that emits what this returns emits a bounded
    number of ends (one per crossing, as a rule), and one that ties is never returned
    (no loop). Costs no walk of the tasks when the winner already ranks first by merit
    (a submission member's `done` with no failed task: the common end)."""
    won = state.ended.get(job)
    if won is None or job not in state.jobs or me not in state.members_of.get(job, ()):
        return None
    best = end_rank(state, won)[:3]
    if best == (False, 0, False):
        return None  # (nothing ranks before it)
    payload = job_ended(state, job, max_attempts)
    if payload is None or end_merit(state, job, me, len(payload["failed"]),
                                    payload["state"]) >= best:
        return None
    return payload


@dataclass
class _Tally:
    """A member's task statuses of one ended lanes job (`Merits`), as of its JOB_SUBMITTED
    `sub` and whether it was cancelled; `dirty`: the tasks an event was noted of since;
    `after`: each task's dependents (the reverse of its depends); `ended`: `finished()`'s
    answer while no status changed since (None: to be found again)."""

    sub: tuple[str, int]
    cancelled: bool
    statuses: dict[str, str]
    counts: Counter[str]
    after: dict[str, list[str]]
    dirty: set[str] = field(default_factory=set)
    ended: bool | None = None

    def finished(self) -> tuple[bool, int]:
        """`retention.finished_at` is not None, from the statuses: cancelled, or each task
        done, failed or waiting on a failed task (transitively); and the tasks read to
        find it (a walk from the failed tasks to their dependents, each once: linear
        whatever the tasks' order; none while no status changed since the last answer)."""
        if self.ended is not None:
            return self.ended, 0
        done, failed = self.counts["done"], self.counts["failed"]
        if self.cancelled or done + failed == len(self.statuses):
            self.ended = True
            return True, 0
        if not failed:
            self.ended = False
            return False, 0  # (a task neither done nor failed, and none fails to block it)
        blocked = [n for n, st in self.statuses.items() if st == "failed"]
        seen = set(blocked)
        over = done + len(blocked)  # (the tasks done, failed or blocked)
        while blocked:
            for m in self.after.get(blocked.pop(), ()):
                if m not in seen:
                    seen.add(m)
                    blocked.append(m)
                    over += self.statuses[m] != "done"
        self.ended = over == len(self.statuses)
        return self.ended, len(seen)

    def state(self) -> str:
        """`claims.job_state` of the statuses (what `job_ended` says)."""
        return job_state([st for st, n in self.counts.items() if n], self.cancelled)


class Merits:
    """Whether a member's fold makes a better end of ended lanes jobs (`better_end`'s
    question, the same answer) at the cost of what changed since the last look (review r2
    of session 46, L2: each look walked every task, ~2-5 µs each, at each event of the job
    noted): each job's task statuses are kept from its first look, and a look reads again
    those of the tasks an event was noted of since (`changed`); an event of the job
    about no task (its cancel, an add, another end: they may change every status, the
    implied claims a member folds) reads them all again at the next look. The payload is
    `better_end`'s to make, once, when the end goes out. Single-threaded (the scheduler's);
    bounded by the ended jobs in memory looked at (`sweep` those that leave it)."""

    def __init__(self, max_attempts: int) -> None:
        self.max_attempts = max_attempts
        self._tallies: dict[str, _Tally] = {}
        self._held: object = None  # (the fold's events table the tallies were read from)
        self.walked = 0  # task statuses read (the work: tests count it)

    def changed(self, job: str, task: str | None) -> None:
        """An event of `job` about `task` (None: about no task) was folded."""
        t = self._tallies.get(job)
        if t is not None and task is not None:
            t.dirty.add(task)
        elif t is not None:
            del self._tallies[job]

    def sweep(self, left: Callable[[str], bool]) -> None:
        """Forget the jobs that `left` memory (compacted or deleted)."""
        for job in [j for j in self._tallies if left(j)]:
            del self._tallies[job]

    def better(self, state: MeshState, job: str, me: str) -> bool:
        """Does `better_end(state, job, me, max_attempts)` return an end? No task is read
        when the winning end ranks first by merit (the common end) or `me` holds no lane.
        After a refold (a conflict: the fold made anew, its tables new objects), none kept
        is trusted: the listeners are told of the winners only, not of the tasks a loser's
        undoing changed (review r2 of session 47, finding 7)."""
        if state.events is not self._held:
            self._tallies.clear()
            self._held = state.events
        won = state.ended.get(job)
        if won is None or job not in state.jobs or me not in state.members_of.get(job, ()):
            self._tallies.pop(job, None)
            return False
        best = end_rank(state, won)[:3]
        if best == (False, 0, False):
            self._tallies.pop(job, None)
            return False  # (nothing ranks before it)
        t = self._tally(state, job)
        if end_merit(state, job, me, t.counts["failed"], t.state()) >= best:
            return False  # (no better by the counts: whether it ended needs no walk)
        ended, read = t.finished()
        self.walked += read
        return ended

    def _tally(self, state: MeshState, job: str) -> _Tally:
        sub = state.jobs[job]
        t = self._tallies.get(job)
        if t is None or t.sub != sub.id or t.cancelled != (job in state.cancelled):
            tasks = sub.body_as(JobSubmitted).workflow["tasks"]
            statuses = {str(x["name"]): task_status(state, job, x["name"], self.max_attempts)
                        for x in tasks}
            self.walked += len(statuses)
            depends = {str(x["name"]): x.get("depends", ()) for x in tasks}
            after: dict[str, list[str]] = {}
            for name, deps in depends.items():
                for d in deps:
                    after.setdefault(str(d), []).append(name)
            t = self._tallies[job] = _Tally(
                sub.id, job in state.cancelled, statuses, Counter(statuses.values()), after)
            return t
        for task in t.dirty:
            if (was := t.statuses.get(task)) is None:
                continue  # (no task of the job: the fold took nothing of it)
            now = t.statuses[task] = task_status(state, job, task, self.max_attempts)
            t.counts[was] -= 1
            t.counts[now] += 1
            self.walked += 1
            if now != was:
                t.ended = None  # (`finished()` to be found again)
        t.dirty.clear()
        return t


def framed(payload: dict[str, Any], max_bytes: int, stored: Callable[[bytes], str],
           ) -> dict[str, Any]:
    """A JOB_ENDED payload as it is emitted: itself, or when its outputs and producers
    exceed `max_bytes` of JSON, with them in the JSON object {"outputs", "producers"}
    stored as a file (`stored`: its CID) that `listing` names, as a large split's chunks
    are (`Planner.framed`)."""
    listed = {"outputs": payload["outputs"], "producers": payload["producers"]}
    raw = json.dumps(listed, separators=(",", ":")).encode()
    if len(raw) <= max_bytes:
        return payload
    return {**payload, "outputs": {}, "producers": {}, "listing": stored(raw)}


def _error(state: MeshState, job: str, task: str, max_attempts: int) -> str:
    """A failed task's short error: its first failed chunk's last failure's."""
    chunks = state.split_chunks(job, task)
    for i in sorted(chunks):
        c = chunks[i]
        if chunk_done(c) is None and chunk_exhausted(c.failures, max_attempts):
            return str(c.failures[max(c.failures)].payload.get("error", ""))[:MAX_LABEL_CHARS]
    return ""


class Readable(Protocol):
    """What `read_listing` needs of the store."""

    def cat(self, cid: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]: ...


def read_listing(store: Readable, ev: Event, max_bytes: int) -> tuple[JobEnded, int]:
    """JOB_ENDED `ev`'s body with what its listing holds (its bytes are any content a
    member named), and the listing's size in bytes, run in a worker thread: json's parse
    shares the GIL (`sharing`), and the body is checked here (`listing_body`, `end_flaw`),
    so the event loop waits for neither. TooLarge naming the CID if they exceed
    `max_bytes`, BanzaiError if they are not UTF-8 JSON within the bounds, not a listing
    (`listing_body`) or name what no event folded later can admit (`end_flaw`): refusals for
    good; NotFound if it is not here; one of STORE_CONDITIONS if this store cannot read it
    (not the listing's doing)."""
    cid = str(ev.payload["listing"])
    raw = b"".join(store.cat(cid, 0, max_bytes + 1))
    if len(raw) > max_bytes:
        raise TooLarge(f"the listing {cid} holds more than {max_bytes} bytes")
    listed = loads(raw, f"the listing {cid}", error=BanzaiError, sharing=True)
    body = listing_body(ev, listed)
    if (flaw := end_flaw(ev, body)) is not None:
        raise BanzaiError(flaw)
    return body, len(raw)


def listing_body(ev: Event, listed: Any) -> JobEnded:
    """JOB_ENDED `ev`'s body with the outputs and producers of its listing (`listed`: the
    JSON read from its CID, hostile input): BanzaiError naming what is wrong unless it is a
    JSON object of just `outputs` and `producers` within the event's bounds. What it may
    name (`end_refusal`) is `MeshState.fold_listing`'s to check."""
    if not isinstance(listed, dict) or set(listed) != {"outputs", "producers"}:
        raise BanzaiError("not a JSON object of `outputs` and `producers`")
    inline = {k: v for k, v in ev.payload.items() if k != "listing"}
    try:
        body = JobEnded.from_payload({**inline, **listed})
    except InvalidEvent as e:
        raise BanzaiError(e.message) from None
    return replace(body, listing=str(ev.payload["listing"]))


class Refusal(NamedTuple):
    """Why `EndListings` refuses a listing for a JOB_ENDED, and until when."""

    event: tuple[str, int]  # the JOB_ENDED's id
    why: str
    until_s: float  # (its clock) math.inf: for good; else a fetch's refusal, MAX_RETRY_S long


@dataclass
class Unadmitted:
    """A listing `EndListings` read that `end_refusal` does not admit yet."""

    event: tuple[str, int]  # its JOB_ENDED's id
    body: JobEnded | None  # None if not kept (MAX_KEPT_BYTES): read again when asked again
    size: int  # its bytes of JSON
    inputs: Any  # `end_inputs` of its job when last asked


class EndListings:
    """The listings of JOB_ENDEDs whose outputs were too many for the event (`framed`) that
    this peer makes a job's record of (`wanted`: the compactor's `unlisted`, job -> CID):
    each fetched here (`fetch`: the fetcher's `ensure`, at most about `max_bytes`), read
    and checked (`read_listing`, in a thread) and folded (`MeshState.fold_listing`), then
    its JOB_ENDED noted again (`rescan`: the compactor's `note`, whose next pass makes the
    record as of an inline one). One not fetched (no peer served it, or a fetch found it
    too large: the bytes a peer sent, unverified, prove nothing) or that failed otherwise
    (e.g. an OSError reading it, or this store's error: a corrupt block not repaired, a full
    disk; logged once) is tried again after RETRY_S, 2 × RETRY_S ... up to MAX_RETRY_S
    (`clock`), and counted by `waiting_long` meanwhile; once its fetches found it too large
    MAX_TOO_LARGE_FETCHES times for the same JOB_ENDED, it is refused (as below) for
    MAX_RETRY_S, then fetched once more (refused again if too large, logged once). One
    read but not admitted yet (`end_refusal`: e.g. an output of a member whose JOB_MEMBERS
    is not here yet) is kept read (its body while the bodies kept hold at most
    MAX_KEPT_BYTES of JSON) and asked again once what `end_refusal` reads of its job grew
    (`end_inputs`), folded at the first step that admits it. One refused (too large as
    stored here, not JSON, not a listing, or naming what no later event can admit:
    `end_flaw`; hostile input) is logged once, naming the job and the CID, and not read
    again for that JOB_ENDED (another one naming it is checked anew: the verdict depends on
    the event too; a restart reads it once more): the job stays as before (in memory,
    ended, no record) until the horizon past its end, when the compactor makes its record
    without the outputs (`Compactor.bare`). `waiting_long` counts those neither folded nor
    refused for LONG_WAIT_S or more (not admitted yet, not served, or failing)."""

    def __init__(self, state: MeshState, store: Readable,
                 wanted: Callable[[], Mapping[str, str]], rescan: Callable[[Event], None],
                 fetch: Callable[..., Awaitable[None]] | None = None,
                 max_bytes: int = MAX_LISTING_BYTES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self.store = store
        self.wanted = wanted
        self.rescan = rescan
        self.fetch = fetch
        self.max_bytes = max_bytes
        self.clock = clock
        # Each of these while a job wants the listing, by (job, listing CID):
        self.refused: dict[tuple[str, str], Refusal] = {}  # for that JOB_ENDED
        self.since: dict[tuple[str, str], float] = {}  # -> (the clock) when first tried
        self.read: dict[tuple[str, str], Unadmitted] = {}  # read, not admitted yet
        self.waits: dict[tuple[str, str], tuple[float, float]] = {}  # failed: (the clock
        # of its next try, the wait before it)
        self.failed: dict[tuple[str, str], str] = {}  # -> the error logged (not NotFound)
        self.too_large: dict[tuple[str, str], tuple[tuple[str, int], int]] = {}  # -> (the
        # JOB_ENDED's id, how many of its fetches found the listing too large)

    async def run(self, interval_s: float) -> None:
        """`step` every `interval_s` (a failed step must not end the next ones)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.step()
            except Exception:
                log.exception("folding JOB_ENDED listings failed")

    async def step(self) -> None:
        """Fetch, read and fold the listing of each job `wanted` (not refused before, not
        waiting out a back-off; one read before once what admits it may have grown). An
        error with one listing (its job's) backs it off and leaves the others be."""
        wanted = set(self.wanted().items())
        for table in (self.refused, self.since, self.read, self.waits, self.failed,
                      self.too_large):
            for k in [k for k in table if k not in wanted]:
                del table[k]
        now = self.clock()
        for job, cid in sorted(wanted):
            if now < self.waits.get((job, cid), (now, 0.0))[0]:
                continue
            try:
                await self._step_one(job, cid)
            except Exception as e:  # (a bug, or e.g. an OSError or MemoryError reading it)
                why = f"{type(e).__name__}: {e}"
                wait_s = self._back_off(job, cid)
                if self.failed.get((job, cid)) != why:
                    log.warning("job %s: the listing %s of its JOB_ENDED failed: %s (tried "
                                "again in %.0f s)", job, cid, why, wait_s)
                self.failed[(job, cid)] = why

    def waiting_long(self) -> int:
        """How many listings wait, neither folded nor refused, since LONG_WAIT_S or more:
        read but not admitted yet, not served by any peer, or failing."""
        now = self.clock()
        return sum(now - t >= LONG_WAIT_S for t in self.since.values())

    async def _step_one(self, job: str, cid: str) -> None:
        """`step` of listing `cid` of `job`."""
        ev = self.state.ended.get(job)
        if ev is None or self.state.unlisted(job) != cid:
            return
        if (refused := self.refused.get((job, cid))) is not None:
            if refused.event == ev.id and self.clock() < refused.until_s:
                return
            del self.refused[(job, cid)]  # (another JOB_ENDED's: this one is checked anew;
            # or its fetches' refusal ended: one more fetch)
        self.since.setdefault((job, cid), self.clock())
        got = self.read.get((job, cid))
        if got is not None and got.event != ev.id:
            got = None  # (another JOB_ENDED's)
        if got is not None and got.inputs == end_inputs(self.state, job):
            return  # (nothing `end_refusal` reads grew: refused as before)
        if got is not None and got.body is not None:
            body, size = got.body, got.size
        else:  # (read again if its body was not kept: MAX_KEPT_BYTES)
            if (read := await self._read(job, cid, ev)) is None:
                return
            body, size = read
        if self.state.ended.get(job) is not ev:  # (another won meanwhile)
            return
        why = self.state.fold_listing(ev, body)
        if why is None:
            self.read.pop((job, cid), None)
            self.since.pop((job, cid), None)
            self.rescan(ev)
            return
        kept = sum(r.size for k, r in self.read.items()
                   if k != (job, cid) and r.body is not None)
        self.read[(job, cid)] = Unadmitted(
            ev.id, body if kept + size <= MAX_KEPT_BYTES else None, size,
            end_inputs(self.state, job))
        if got is None:
            log.info("job %s: the listing %s of its JOB_ENDED is not admitted yet: %s "
                     "(kept read, folded once the events that admit it are)", job, cid, why)

    async def _read(self, job: str, cid: str, ev: Event) -> tuple[JobEnded, int] | None:
        """`ev`'s body with listing `cid` and its size, fetched here (at most about
        `max_bytes`) and read (`read_listing`); None if it is not here (tried again after a
        back-off: also if a fetch found it too large, a peer's unverified bytes, fewer than
        MAX_TOO_LARGE_FETCHES times for `ev`) or refused (for `ev`: for good, or MAX_RETRY_S
        from a fetch that found it too large as often as that; logged once;
        STORE_CONDITIONS are raised, for `step` to back it off: the same listing may read
        well once the store can)."""
        try:
            if self.fetch is not None:
                try:  # (its CAR: the listing's blocks, each with a few dozen bytes of framing)
                    await self.fetch([cid], max_bytes=self.max_bytes + (self.max_bytes >> 4))
                except TooLarge as e:  # (not proof: `read_listing`'s of stored bytes is)
                    if (n := self._too_large(job, cid, ev)) < MAX_TOO_LARGE_FETCHES:
                        raise NotFound(e.message) from None
                    self._refuse(job, cid, ev, f"{n} fetches found it too large "
                                 f"({e.message})", MAX_RETRY_S, n > MAX_TOO_LARGE_FETCHES)
                    return None
            return await asyncio.to_thread(read_listing, self.store, ev, self.max_bytes)
        except NotFound as e:
            log.info("job %s: the listing %s of its JOB_ENDED is not here yet: %s (tried "
                     "again in %.0f s)", job, cid, e.message, self._back_off(job, cid))
        except STORE_CONDITIONS:  # (this store's, not the listing's: `step` backs it off)
            raise
        except BanzaiError as e:
            self._refuse(job, cid, ev, e.message)
        return None

    def _refuse(self, job: str, cid: str, ev: Event, why: str, for_s: float = math.inf,
                again: bool = False) -> None:
        """Refuse listing `cid` of `job` for JOB_ENDED `ev`, for good or `for_s` (a fetch's
        verdict: then backed off at MAX_RETRY_S), logged unless `again` (refused so before)."""
        self.refused[(job, cid)] = Refusal(ev.id, why, self.clock() + for_s)
        self.since.pop((job, cid), None)
        if for_s < math.inf:
            self.waits[(job, cid)] = (self.clock() + for_s, MAX_RETRY_S)
        if not again:
            log.warning("job %s: the listing %s of its JOB_ENDED is refused: %s (the job "
                        "stays in memory, ended, until the horizon, then recorded without "
                        "its outputs%s)", job, cid, why,
                        f"; fetched again every {for_s:.0f} s" if for_s < math.inf else "")

    def _too_large(self, job: str, cid: str, ev: Event) -> int:
        """Count a fetch of listing `cid` of `job` that found it too large for JOB_ENDED
        `ev`; how many did so far (refused from MAX_TOO_LARGE_FETCHES on)."""
        held = self.too_large.get((job, cid))
        n = held[1] + 1 if held is not None and held[0] == ev.id else 1
        self.too_large[(job, cid)] = (ev.id, n)
        return n

    def _back_off(self, job: str, cid: str) -> float:
        """Skip listing `cid` of `job` until its next try: RETRY_S from now, twice its last
        wait after a further failure, at most MAX_RETRY_S; that wait."""
        last_s = self.waits.get((job, cid), (0.0, 0.0))[1]
        wait_s = min(max(2 * last_s, RETRY_S), MAX_RETRY_S)
        self.waits[(job, cid)] = (self.clock() + wait_s, wait_s)
        return wait_s

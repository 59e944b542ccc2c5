"""A lanes job's end as its home emits it (JOB_ENDED, docs/design/partial-replication.md,
section 3): what every peer folds of the job instead of its lanes' task events. A pure
function of the mesh state (a member's: it folds the job's lanes).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from peer.errors import BanzaiError, NotFound
from peer.jobs.claims import chunk_done, chunk_exhausted, job_state, task_status
from peer.jobs.retention import ended_hlc, finished_at
from peer.jsontext import loads
from peer.log import Event, JobSubmitted, MeshState, TaskDone
from peer.log.events import MAX_LABEL_CHARS, MAX_MEMBERS
from peer.log.ids import is_peer_id
from peer.log.snapframe import job_digest3, outputs_sha

log = logging.getLogger(__name__)

# The most bytes of a JOB_ENDED's listing read (`EndListings`): a 100,000-task job's
# outputs, each with its cache key and a few producers, take about 40 MB of JSON
MAX_LISTING_BYTES = 64 << 20


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


def read_listing(store: Readable, cid: str, max_bytes: int) -> Any:
    """The JSON a JOB_ENDED's listing `cid` holds (its bytes are any content a member
    named): BanzaiError naming it if they exceed `max_bytes` or are not JSON within the
    nesting bound; NotFound if it is not here."""
    raw = b"".join(store.cat(cid, 0, max_bytes + 1))
    if len(raw) > max_bytes:
        raise BanzaiError(f"the listing {cid} holds more than {max_bytes} bytes")
    return loads(raw, f"the listing {cid}", error=BanzaiError)


class EndListings:
    """The listings of JOB_ENDEDs whose outputs were too many for the event (`framed`) that
    this peer makes a job's record of (`wanted`: the compactor's `unlisted`, job -> CID):
    each fetched here (`fetch`: the fetcher's `ensure`), read (`read_listing`, in a
    thread) and folded (`MeshState.fold_listing`), then its JOB_ENDED noted again
    (`rescan`: the compactor's `note`, whose next pass makes the record as of an inline
    one). One not fetched (no peer served it) is tried again at the next step. One refused
    (too large, not JSON, naming what the job did not make: hostile input) is logged once,
    naming the job and the CID, and not read again: the job stays as before (in memory,
    ended, no record)."""

    def __init__(self, state: MeshState, store: Readable,
                 wanted: Callable[[], Mapping[str, str]], rescan: Callable[[Event], None],
                 fetch: Callable[[Sequence[str]], Awaitable[None]] | None = None,
                 max_bytes: int = MAX_LISTING_BYTES) -> None:
        self.state = state
        self.store = store
        self.wanted = wanted
        self.rescan = rescan
        self.fetch = fetch
        self.max_bytes = max_bytes
        self.refused: dict[str, str] = {}  # listing CID -> why (while a job wants it)

    async def run(self, interval_s: float) -> None:
        """`step` every `interval_s` (a failed step must not end the next ones)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.step()
            except Exception:
                log.exception("folding JOB_ENDED listings failed")

    async def step(self) -> None:
        """Fetch, read and fold the listing of each job `wanted` (not refused before)."""
        wanted = dict(self.wanted())
        self.refused = {c: w for c, w in self.refused.items() if c in wanted.values()}
        for job, cid in sorted(wanted.items()):
            ev = self.state.ended.get(job)
            if cid in self.refused or ev is None or self.state.unlisted(job) != cid:
                continue
            try:
                if self.fetch is not None:
                    await self.fetch([cid])
                listed = await asyncio.to_thread(read_listing, self.store, cid, self.max_bytes)
            except NotFound as e:
                log.info("job %s: the listing %s of its JOB_ENDED is not here yet: %s", job,
                         cid, e.message)
                continue
            except BanzaiError as e:
                why: str | None = e.message
            else:
                if self.state.ended.get(job) is not ev:  # (another won while we read)
                    continue
                why = self.state.fold_listing(ev, listed)
            if why is None:
                self.rescan(ev)
            else:
                self.refused[cid] = why
                log.warning("job %s: the listing %s of its JOB_ENDED is refused: %s (the job "
                            "stays in memory, ended, no record made of it)", job, cid, why)

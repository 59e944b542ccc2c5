"""A lanes job's end as its home emits it (JOB_ENDED, docs/design/partial-replication.md,
section 3): what every peer folds of the job instead of its lanes' task events. A pure
function of the mesh state (a member's: it folds the job's lanes).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from peer.jobs.claims import chunk_done, chunk_exhausted, job_state, task_status
from peer.jobs.retention import ended_hlc, finished_at
from peer.log import JobSubmitted, MeshState, TaskDone
from peer.log.events import MAX_LABEL_CHARS, MAX_MEMBERS
from peer.log.ids import is_peer_id
from peer.log.snapframe import job_digest3, outputs_sha


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

"""The compact record of a finished job as peers of the previous release make it (the code
of peer/http/views.py and peer/jobs/retention.py before the record was made in one pass,
kept verbatim): the oracle the equivalence tests hold `Node._finished` and `job_view` to.
Snapshots are signed over canonical records and peers of the previous release compare them:
what this makes, the current code must make byte for byte. Test code only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from peer.jobs.claims import chunk_exhausted, n_chunks, task_failed, task_status
from peer.log import (
    ChunkDone,
    ChunkFailed,
    ChunkKey,
    ChunkState,
    Event,
    JobSubmitted,
    MeshState,
    Partial,
    TaskDone,
    TaskSplit,
    TaskSplitRef,
    hlc_ms,
)


def finished(state: MeshState, job: str, max_attempts: int,
             ) -> tuple[str, float, dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """(state, end s, list entry, record, facts) of a finished job, as `Node._finished` made
    them; None while the job is live."""
    tasks = state.jobs[job].body_as(JobSubmitted).workflow["tasks"]
    end_s = finished_at(state, job, tasks, max_attempts)
    if end_s is None:
        return None
    view = job_view(state, job, max_attempts)
    outputs, logs = _facts(state, job)
    return (view["state"], end_s, summary(view), compact_view(view),
            {"finished_s": end_s, "outputs": sorted(outputs), "logs": sorted(logs)})


def _facts(state: MeshState, job: str) -> tuple[set[str], set[str]]:
    """The outputs and logs of peer.jobs.retention's `_facts` (its `needs` is not recorded)."""
    outputs: set[str] = set()
    logs: set[str] = set()
    for t in state.jobs[job].body_as(JobSubmitted).workflow["tasks"]:
        done = state.task_done.get((job, t["name"]))
        if done is not None and not t.get("cid"):
            outputs.add(done.payload["output"])
        for i in range(_n_chunks(state, job, t["name"])):
            d = state.chunk(job, t["name"], i).done
            if d is not None and d.body_as(ChunkDone).log:
                logs.add(str(d.body_as(ChunkDone).log))
    return outputs, logs


def _ms(ev: Event | None) -> int | None:
    return hlc_ms(ev.hlc) if ev is not None else None


def _chunk_view(c: ChunkState, split: tuple[str, int] | None, n_items: int,
                max_attempts: int, task_done: bool, cancel: Event | None = None,
                ) -> dict[str, Any]:
    """One chunk; `cancel`: its job's JOB_CANCELLED, if cancelled."""
    attempt = c.attempt
    last_fail_ev = c.failures[max(c.failures)] if c.failures else None
    last_fail = last_fail_ev.body_as(ChunkFailed) if last_fail_ev else None
    done = c.done.body_as(ChunkDone) if c.done else None
    claim = c.winner(attempt, split)
    ran: Event | None
    end: Event | None
    if c.done is not None:
        state, progress, ran, end = "done", 1.0, c.done, c.done
    elif task_done:  # the task finished from the cache, or another peer assembled it
        state, progress, ran, end = "skipped", 1.0, claim, None
    elif chunk_exhausted(c.failures, max_attempts):
        assert last_fail is not None
        failed = last_fail.attempt
        state, progress = "failed", c.progress.get(failed, 0.0)
        ran, end = c.winner(failed, split), last_fail_ev
    elif claim is not None and cancel is not None:
        # Its holder kills the run when it hears of the cancel and records that (not heard
        # here yet), or died holding the claim (nobody fails a cancelled job's leases).
        state, progress, ran, end = "cancelled", c.progress.get(attempt, 0.0), claim, cancel
    elif claim is not None:
        state, progress, ran, end = "running", c.progress.get(attempt, 0.0), claim, None
    else:
        state, progress, ran, end = "pending", 0.0, None, None
    first_claim = min((cl for cls in c.claims.values() for cl in cls),
                      key=lambda e: e.order, default=None)
    return {"state": state, "progress": progress,
            "attempt": done.attempt if done else attempt,
            "attempts": len(c.failures) + (1 if state in ("done", "running", "cancelled")
                                           else 0),
            "peer": ran.origin if ran is not None else None, "items": n_items,
            "error": last_fail.error if last_fail else None,
            "started_ms": _ms(first_claim), "finished_ms": _ms(end),
            "log": done.log if done else None}


def _touched(state: MeshState, job: str, task: str) -> bool:
    """Is there an event about the one chunk of the task's implicit split (a claim, an
    outcome)? Until then it was not split into work, as a task taken from the cache never is."""
    c = state.chunks.get(ChunkKey(job, task, *state.jobs[job].id, 0))
    return c is not None and bool(c.claims or c.failures or c.done or c.progress)


def task_view(state: MeshState, job: str, t: dict[str, Any], max_attempts: int,
              ) -> dict[str, Any]:
    name = t["name"]
    status = task_status(state, job, name, max_attempts)
    split = state.splits.get((job, name))
    if split is not None and state.implicit(split) and not _touched(state, job, name):
        split = None  # an implicit split no peer acted on: shown as none (a cached task's)
    done_ev = state.task_done.get((job, name))
    done = done_ev.body_as(TaskDone) if done_ev else None
    chunks = []
    if split is not None:
        b = split.body
        sizes = (b.sizes if isinstance(b, TaskSplitRef)
                 else [len(c) for c in split.body_as(TaskSplit).chunks])
        for i, n_items in enumerate(sizes):
            chunks.append(_chunk_view(state.chunk(job, name, i), split.id, n_items,
                                      max_attempts, done is not None, state.cancelled.get(job)))
    if status == "done":
        progress = 1.0
    elif chunks:
        progress = sum(c["progress"] for c in chunks) / len(chunks)
    else:
        progress = 0.0
    starts = [c["started_ms"] for c in chunks if c["started_ms"]]
    started = min(starts) if starts else _ms(split)
    finished = _ms(done_ev)
    if status == "failed":
        finished = max((c["finished_ms"] or 0 for c in chunks), default=0) or None
    errors = [c["error"] for c in chunks if c["error"] and c["state"] == "failed"]
    part_ev = state.partials.get((job, name)) if done is None else None
    part = part_ev.body_as(Partial) if part_ev is not None else None
    return {"name": name, "call": t.get("call"), "params": t.get("params", {}),
            "depends": t.get("depends", []), "cid": t.get("cid"), "state": status,
            "progress": round(progress, 4),
            "attempts": max((c["attempts"] for c in chunks), default=0),
            "peers": sorted({c["peer"] for c in chunks if c["peer"]}),
            "output": done.output if done else None,
            # progressive answers: the results so far of a running per-item task
            "partial": {"output": part.output, "items": part.items, "of": part.of}
            if part is not None else None,
            "cached": done.cached if done else False,
            "warning": done.warning if done else None,
            "error": errors[0] if errors else None,
            "started_ms": started, "finished_ms": finished,
            "duration_s": (finished - started) / 1000 if finished and started else None,
            "chunks": chunks}


def job_state(task_states: list[str], cancelled: bool) -> str:
    if task_states and all(s == "done" for s in task_states):
        return "done"
    if "failed" in task_states:
        return "failed"
    if cancelled:
        return "cancelled"
    if any(s in ("running", "done") for s in task_states):
        return "running"
    return "pending"


def job_view(state: MeshState, job: str, max_attempts: int, detail: bool = True,
             ) -> dict[str, Any]:
    ev = state.jobs[job]
    wf = ev.body_as(JobSubmitted).workflow
    tasks = [task_view(state, job, t, max_attempts) for t in wf["tasks"]]
    st = job_state([t["state"] for t in tasks], job in state.cancelled)
    finished = max((t["finished_ms"] or 0 for t in tasks), default=0) if st == "done" else None
    if st in ("cancelled", "failed"):
        finished = _ms(state.cancelled.get(job)) or max(
            (c["finished_ms"] or 0 for t in tasks for c in t["chunks"]), default=None)
    submitted = _ms(ev) or 0
    out: dict[str, Any] = {
        "id": job, "name": wf.get("name", job), "state": st, "submitted_by": ev.origin,
        "submitted_ms": submitted, "finished_ms": finished,
        "duration_s": (finished - submitted) / 1000 if finished else None,
        "progress": round(sum(t["progress"] for t in tasks) / max(len(tasks), 1), 4),
        "outputs": {t["name"]: t["output"] for t in tasks if t["output"]},
    }
    out["tasks"] = tasks
    out["workflow"] = wf
    return out if detail else summary(out)


def compact_view(view: dict[str, Any]) -> dict[str, Any]:
    """A finished job's record (the job index keeps it): its full view without each task's
    chunk details, which a task keeps as `logs`, the CIDs of its chunks' run logs."""
    # (`chunks_total` and `chunks_from`: keys of the view that the previous release's lacked,
    # as every chunk was listed; not in a record)
    tasks = [{**{k: v for k, v in t.items() if k not in ("chunks", "chunks_total",
                                                         "chunks_from")}, "chunks": [],
              "logs": [c["log"] for c in t["chunks"] if c.get("log")]} for t in view["tasks"]]
    return {**view, "tasks": tasks}


def summary(view: dict[str, Any]) -> dict[str, Any]:
    """The list entry of a job's full view (the job list's form)."""
    out = {k: v for k, v in view.items() if k not in ("tasks", "workflow")}
    out["tasks"] = [{"name": t["name"], "state": t["state"], "progress": t["progress"]}
                    for t in view["tasks"]]
    return out


def finished_at(state: MeshState, job: str, tasks: Sequence[Mapping[str, Any]],
                max_attempts: int) -> float | None:
    """When a job ended, in wall-clock seconds (None while live): cancelled, or no task can
    move on (each is done, failed, or waits on a dependency that failed)."""
    cancel = state.cancelled.get(job)
    if cancel is not None:
        return hlc_ms(cancel.hlc) / 1000
    for t in tasks:  # a task that waits for nothing and is not over: live (no full pass)
        if (not t.get("depends") and (job, t["name"]) not in state.task_done
                and not task_failed(state, job, t["name"], max_attempts)):
            return None
    status = {str(t["name"]): task_status(state, job, t["name"], max_attempts) for t in tasks}
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
        for i in range(_n_chunks(state, job, t["name"])):
            end = max([end, *(f.hlc for f in state.chunk(job, t["name"], i).failures.values())])
    return hlc_ms(end or state.jobs[job].hlc) / 1000


def _n_chunks(state: MeshState, job: str, task: str) -> int:
    split = state.splits.get((job, task))
    return 0 if split is None else n_chunks(split)



"""JSON views of the mesh state for the API, CLI and web UI (pure functions)."""

from __future__ import annotations

import heapq
import json
import reprlib
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any, NamedTuple, TypeVar

from peer.cids import reads_as_cid
from peer.errors import ArgError
from peer.jobs.claims import chunk_exhausted, job_state, task_status
from peer.jobs.members import ordered
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
from peer.log.events import cut_text
from peer.log.ids import is_peer_id
from peer.log.lanes import peer_of


def _ms(ev: Event | None) -> int | None:
    return hlc_ms(ev.hlc) if ev is not None else None


_ORDER = attrgetter("order")


class _Chunk(NamedTuple):
    """A chunk as its view shows it, in the view's key order (`._asdict()` is the view)."""

    state: str
    progress: float
    attempt: int
    attempts: int
    peer: str | None
    items: int
    error: str | None
    started_ms: int | None
    finished_ms: int | None
    log: str | None


def _left_out(state: MeshState, job: str) -> Callable[[Event], bool] | None:
    """The failures a view leaves out of a chunk's count (`claims.chunk_exhausted`'s `skip`):
    while lanes job `job` has a member no vouched member vouched for (a self-added one) and
    no JOB_ENDED is folded, that member's lane's, as a scheduler does while a vouched
    member that can run the task is live (`Scheduler._unvouched_failures`: it runs the
    chunk again meanwhile; session 50 helper f's left). A view cannot tell whether one is
    live: where none is (an orphan taker's failures count), the task shows failed once the
    job's JOB_ENDED says so. None (every failure counts) otherwise."""
    if job in state.ended or not state.lanes_unvouched(job):
        return None
    return lambda f: state.unvouched_lane(job, f) is not None


def unvouched_logs(state: MeshState, job: str, c: ChunkState) -> set[str]:
    """The CIDs of chunk `c`'s run records that only a self-added (unvouched) member's
    failures name (`MeshState.unvouched_lane`): b's rules leave those failures out of the
    chunk's count, and the task log does not fetch their records (RR-3; a compacted job's
    record lists them as `unvouched_logs`: review r2 of session 51, M2). A record that a
    counted failure or the done run names too is not one of them."""
    theirs: set[str] = set()
    ours: set[str] = set()
    for f in c.failures.values():
        b = f.body_as(ChunkFailed)
        if b.log:
            (theirs if state.unvouched_lane(job, f) is not None else ours).add(b.log)
    if theirs and c.done is not None and (done := c.done.body_as(ChunkDone).log):
        ours.add(done)
    return theirs - ours


def _chunk(c: ChunkState, split: tuple[str, int] | None, n_items: int, max_attempts: int,
           task_done: bool, cancel: Event | None = None,
           skip: Callable[[Event], bool] | None = None) -> _Chunk:
    """One chunk; `cancel`: its job's JOB_CANCELLED, if cancelled; `skip`: the failures its
    count leaves out (`_left_out`). Who won a claim is looked for only where the chunk's
    state asks (a done chunk's runner is its CHUNK_DONE's origin's peer: a lanes job's come
    in lanes)."""
    failures = c.failures
    last_fail_ev: Event | None = None
    last_fail: ChunkFailed | None = None
    attempt = 0  # (ChunkState.attempt: one past the last failed one)
    if failures:
        attempt = max(failures)
        last_fail_ev = failures[attempt]
        last_fail = last_fail_ev.body_as(ChunkFailed)
        attempt += 1
    ran: Event | None
    end: Event | None
    if c.done is not None:
        state, progress, ran, end = "done", 1.0, c.done, c.done
    elif task_done:  # the task finished from the cache, or another peer assembled it
        state, progress, ran, end = "skipped", 1.0, c.winner(attempt, split), None
    elif chunk_exhausted(failures, max_attempts, skip):
        if skip is not None:  # (the failure shown is one counted: not a self-added lane's
            # error and record, as the highest attempt may be: session 51, helper g, RR-8)
            last_fail_ev = failures[max(a for a, f in failures.items() if not skip(f))]
            last_fail = last_fail_ev.body_as(ChunkFailed)
        assert last_fail is not None
        failed = last_fail.attempt
        state, progress = "failed", c.progress.get(failed, 0.0)
        ran, end = c.winner(failed, split), last_fail_ev
    else:
        claim = c.winner(attempt, split)
        if claim is not None and cancel is not None:
            # Its holder kills the run when it hears of the cancel and records that (not
            # heard here yet), or died holding the claim (nobody fails a cancelled job's
            # leases).
            state, progress, ran, end = ("cancelled", c.progress.get(attempt, 0.0), claim,
                                         cancel)
        elif claim is not None:
            state, progress, ran, end = "running", c.progress.get(attempt, 0.0), claim, None
        else:
            state, progress, ran, end = "pending", 0.0, None, None
    first_claim = min(chain.from_iterable(c.claims.values()), key=_ORDER, default=None)
    done = c.done.body_as(ChunkDone) if c.done is not None else None
    return _Chunk(state, progress, done.attempt if done else attempt,
                  len(failures) + (1 if state in ("done", "running", "cancelled") else 0),
                  peer_of(ran.origin) if ran is not None else None, n_items,
                  last_fail.error if last_fail else None,
                  _ms(first_claim), _ms(end),
                  done.log if done else last_fail.log if last_fail and state == "failed"
                  else None)


def _touched(state: MeshState, job: str, task: str) -> bool:
    """Is there an event about the one chunk of the task's implicit split (a claim, an
    outcome)? Until then it was not split into work, as a task taken from the cache never is."""
    c = state.chunks.get(ChunkKey(job, task, *state.jobs[job].id, 0))
    return c is not None and bool(c.claims or c.failures or c.done or c.progress)


# Chunks a job's full view (`GET /api/jobs/<job>`) lists per task, at most: the first ones by
# index, from `chunks_from` on; `chunks_total` says how many the split has. A member may
# declare a million chunks in one split: the view is made of what it shows.
MAX_VIEW_CHUNKS = 1000


def _untouched(n_items: int, task_done: bool) -> _Chunk:
    """The view of a chunk that no event is about (`_chunk` of NO_CHUNK)."""
    return _Chunk("skipped" if task_done else "pending", 1.0 if task_done else 0.0, 0, 0,
                  None, n_items, None, None, None, None)


class _Made(NamedTuple):
    """A task's view and what its job's view reads of its chunks."""

    view: dict[str, Any]
    finished: list[int]  # finished_ms (0 for none) of its chunks that events are about
    untouched: bool  # it has a chunk that no event is about (its finished_ms: none)


def _task(state: MeshState, job: str, t: dict[str, Any], max_attempts: int, detail: bool,
          chunks_from: int = 0, record: bool = False) -> _Made:
    """One task's view, with the views of at most MAX_VIEW_CHUNKS of its chunks from
    `chunks_from` on (`detail`), or as a job's record keeps it (`chunks` empty, `logs` the
    CIDs of its chunks' run logs: no chunk view is listed). Only the chunks that events are
    about are looked at (`MeshState.split_chunks`): every other one is pending (skipped once
    the task is done), with no peer, attempt, time, log nor error, so the aggregates are
    theirs (in chunk order, as when every chunk was looked at) and the others' count."""
    name = t["name"]
    skip = None if record else _left_out(state, job)  # (a record: the fold's every failure)
    status = task_status(state, job, name, max_attempts, skip)
    split = state.splits.get((job, name))
    if split is not None and state.implicit(split) and not _touched(state, job, name):
        split = None  # an implicit split no peer acted on: shown as none (a cached task's)
    done_ev = state.task_done.get((job, name))
    done = done_ev.body_as(TaskDone) if done_ev else None
    task_done = done is not None
    chunks: list[_Chunk] = []  # of the chunks that events are about, in chunk order
    shown: list[_Chunk] = []
    logs: list[str] = []  # (a record's: every run record of its chunks, in chunk order)
    unvouched: list[str] = []  # (of those, a self-added member's failures': not fetched)
    n = 0
    if split is not None:
        b = split.body
        sizes = b.sizes if isinstance(b, TaskSplitRef) else None
        items = None if sizes is not None else split.body_as(TaskSplit).chunks
        n = len(sizes) if sizes is not None else len(items or ())

        def n_items(i: int) -> int:
            return sizes[i] if sizes is not None else len(items[i]) if items else 0

        sid, cancel = split.id, state.cancelled.get(job)
        states = state.split_chunks(job, name)
        views = {i: _chunk(states[i], sid, n_items(i), max_attempts, task_done, cancel, skip)
                 for i in sorted(states)}
        chunks = list(views.values())
        if not detail:
            logs = [x for i in sorted(states) for x in states[i].logs()]
            unvouched = sorted({x for c in states.values()
                                for x in unvouched_logs(state, job, c)})
        if detail:
            shown = [views[i] if i in views else _untouched(n_items(i), task_done)
                     for i in range(min(chunks_from, n), min(chunks_from + MAX_VIEW_CHUNKS, n))]
    untouched = n - len(chunks)
    if status == "done":
        progress = 1.0
    elif n:  # (a chunk no event is about adds 0.0: the task is not done)
        progress = sum(c.progress for c in chunks) / n
    else:
        progress = 0.0
    starts = [c.started_ms for c in chunks if c.started_ms]
    started = min(starts) if starts else _ms(split)
    finished = _ms(done_ev)
    if status == "failed":
        finished = max((c.finished_ms or 0 for c in chunks), default=0) or None
    errors = [c.error for c in chunks if c.error and c.state == "failed"]
    part_ev = state.partials.get((job, name)) if done is None else None
    part = part_ev.body_as(Partial) if part_ev is not None else None
    out = {"name": name, "call": t.get("call"), "params": t.get("params", {}),
           "depends": t.get("depends", []), "cid": t.get("cid"), "state": status,
           "progress": round(progress, 4),
           "attempts": max((c.attempts for c in chunks), default=0),
           "peers": sorted({c.peer for c in chunks if c.peer}),
           "output": done.output if done else None,
           # progressive answers: the results so far of a running per-item task
           "partial": {"output": part.output, "items": part.items, "of": part.of}
           if part is not None else None,
           "cached": done.cached if done else False,
           "warning": done.warning if done else None,
           "error": errors[0] if errors else None,
           "started_ms": started, "finished_ms": finished,
           "duration_s": (finished - started) / 1000 if finished and started else None}
    if detail:
        out["chunks"] = [c._asdict() for c in shown]
        out["chunks_total"] = n  # (`chunks` lists at most MAX_VIEW_CHUNKS of them)
        out["chunks_from"] = min(chunks_from, n)
    else:
        out["chunks"] = []  # (failed attempts' records too: ChunkState.logs, session 51)
        out["logs"] = logs
        if unvouched:  # (absent, as in a record of an earlier release: none is)
            out["unvouched_logs"] = unvouched
    return _Made(out, [c.finished_ms or 0 for c in chunks], untouched > 0)


def job_view(state: MeshState, job: str, max_attempts: int, detail: bool = True,
             chunks_from: int = 0) -> dict[str, Any]:
    """A job's full view (`detail`: each task's chunks from `chunks_from` on, at most
    MAX_VIEW_CHUNKS), else its list entry (`summary`)."""
    view = _job(state, job, max_attempts, detail, chunks_from)
    return view if detail else summary(view)


def _cid_or_none(v: Any) -> Any:
    """`v` if it parses as a CID (as the door checks what comes in: peer.log.door
    `cid_problem`), else None: what an earlier release stored unchecked is not served as one."""
    return v if not isinstance(v, str) or reads_as_cid(v) else None


def shown_view(view: Mapping[str, Any]) -> dict[str, Any]:
    """`view` (a job's full view or record, made here) as served: each task's `error`,
    `warning` and `waiting` and each chunk's `error` cut to MAX_SHOWN_CHARS (peer.log
    `cut_text`: a member's CHUNK_FAILED, or one an earlier release stored, may hold 1 MiB,
    and a view lists up to MAX_VIEW_CHUNKS chunks: review r1 of session 49, F5); each task's
    `output`, `partial` output and logs, each chunk's `log` and the job's `outputs` that are
    no CID left out (F7: the UI links them under the gateway). A copy (`view` is left as it
    is). Only for what is served: records and their shas, stored and compared, keep all."""

    def cut(d: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        return {k: cut_text(v) if k in keys and isinstance(v, str) else v
                for k, v in d.items()}

    tasks = view.get("tasks")
    if not isinstance(tasks, list):
        return dict(view)
    out = []
    for t in tasks:
        t = cut(t, ("error", "warning", "waiting"))
        if "output" in t:
            t["output"] = _cid_or_none(t["output"])
        if isinstance(t.get("partial"), dict):
            t["partial"] = {**t["partial"], "output": _cid_or_none(t["partial"].get("output"))}
            if t["partial"]["output"] is None:
                t["partial"] = None
        if isinstance(t.get("logs"), list):
            t["logs"] = [x for x in t["logs"] if _cid_or_none(x) is not None]
        if isinstance(t.get("chunks"), list):
            t["chunks"] = [{**cut(c, ("error",)), **({"log": _cid_or_none(c["log"])}
                                                     if "log" in c else {})}
                           if isinstance(c, dict) else c for c in t["chunks"]]
        out.append(t)
    shown = {**view, "tasks": out}
    if isinstance(view.get("outputs"), dict):
        shown["outputs"] = {k: v for k, v in view["outputs"].items()
                            if _cid_or_none(v) is not None}
    return shown


def job_record(state: MeshState, job: str, max_attempts: int) -> dict[str, Any]:
    """A finished job's record (the job index keeps it): its full view without each task's
    chunk views (`chunks` empty), which a task keeps as `logs`, the CIDs of its chunks' run
    logs. Made without the chunk views (not the view then cut)."""
    return _job(state, job, max_attempts, False, record=True)


def _job(state: MeshState, job: str, max_attempts: int, detail: bool, chunks_from: int = 0,
         record: bool = False) -> dict[str, Any]:
    ev = state.jobs[job]
    wf = ev.body_as(JobSubmitted).workflow
    made = [_task(state, job, t, max_attempts, detail, chunks_from, record)
            for t in wf["tasks"]]
    tasks = [m.view for m in made]
    st = job_state([t["state"] for t in tasks], job in state.cancelled)
    finished = max((t["finished_ms"] or 0 for t in tasks), default=0) if st == "done" else None
    if st in ("cancelled", "failed"):  # (a chunk no event is about finished at 0)
        finished = _ms(state.cancelled.get(job)) or max(
            chain.from_iterable(chain(m.finished, (0,) if m.untouched else ()) for m in made),
            default=None)
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
    return out


def summary(view: dict[str, Any]) -> dict[str, Any]:
    """The list entry of a job's full view or record (the job list's form)."""
    out = {k: v for k, v in view.items() if k not in ("tasks", "workflow")}
    out["tasks"] = [{"name": t["name"], "state": t["state"], "progress": t["progress"]}
                    for t in view["tasks"]]
    return out


# -- a lanes job whose lanes this peer does not hold (docs/design/partial-replication.md,
# section 3, "The UI and the API on a non-member"): its tables here hold none of its task
# events, so its list entry is made from its JOB_SUBMITTED and JOB_ENDED, its view is a
# member's answer.


def held_elsewhere(state: MeshState, job: str, me: str) -> bool:
    """Is `job` (of the state) a lanes job that `me` is not a member of? Never while lanes
    are off (`MeshState.lanes_on`: no job has members then)."""
    return state.lanes_on and job in state.jobs and not state.member_of(job, me)


def elsewhere_entry(state: MeshState, job: str) -> dict[str, Any]:
    """The list entry of a job `held_elsewhere`, in a compacted job's thin form (`tasks`
    empty, `n_tasks`, `partial`): from its JOB_SUBMITTED, `running` (`cancelled` once
    cancelled), and from its JOB_ENDED, once folded, its state, end, outputs and task count;
    `members` says where its view is."""
    ev = state.jobs[job]
    wf = ev.body_as(JobSubmitted).workflow
    end_ev = state.ended.get(job)
    end = state.end_body(end_ev) if end_ev is not None else None  # (its listing's outputs)
    submitted = _ms(ev) or 0
    if end is None:
        st = "cancelled" if job in state.cancelled else "running"
        n, outputs, finished, progress = len(wf["tasks"]), {}, None, 0.0
    else:
        st, n, finished = end.state, end.n_tasks, hlc_ms(end.end)
        outputs = {t: o.cid for t, o in end.outputs.items()}
        progress = 1.0 if st == "done" else round(min(len(outputs) / max(n, 1), 1.0), 4)
    return {"id": job, "name": wf.get("name", job), "state": st, "submitted_by": ev.origin,
            "submitted_ms": submitted, "finished_ms": finished,
            "duration_s": (finished - submitted) / 1000 if finished else None,
            "progress": progress, "outputs": outputs, "tasks": [], "partial": True,
            "n_tasks": n, "members": ordered(state, job)}


VIEW_STATES = ("pending", "running", "done", "failed", "cancelled")
CHUNK_STATES = ("pending", "running", "done", "failed", "cancelled", "skipped")
MAX_SERVED_PEERS = 4096  # runners a member's view may name per task
MAX_SERVED_COUNT = (1 << 53) - 1  # attempts, items, chunk counts, times in ms: exact in JSON


def member_view(value: Any, submitted: Event) -> dict[str, Any]:
    """A member's answer for the view of the job `submitted` (its JOB_SUBMITTED, held here),
    checked as hostile input (session 49, review r1 F9: only the header and the task names
    were): a JSON object whose id, submitter, submission time, name, workflow and each task's
    name, call, params, depends and cid are the job's, as its JOB_SUBMITTED says; with known
    states, progress in 0..1, outputs (the job's `outputs`, each task's `output`, `partial`
    output and its chunks' `log`) that parse as CIDs, runners (`peers`, a chunk's `peer`)
    that are peer ids, counts and times that are integers or null, texts that are strings
    or null, and at most MAX_VIEW_CHUNKS chunks per task. ValueError naming what is not so
    and where. What it cannot check (which peer ran what, how far) is the member's word:
    the answer says who gave it (`served_by`) and that it is `unverified`. (Pure: a worker
    thread may run it.)"""
    if not isinstance(value, dict):
        raise ValueError("the answer is not a JSON object")
    b = submitted.body_as(JobSubmitted)
    names = b.tasks
    wf = b.workflow
    want = {"id": b.job, "submitted_by": submitted.origin, "submitted_ms": _ms(submitted),
            "name": wf.get("name", b.job)}
    for key, v in want.items():
        if value.get(key) != v or type(value.get(key)) is not type(v):
            raise ValueError(f"its {key} is {_shown(value.get(key))}, not {v!r} (another job)")
    if "workflow" in value and value["workflow"] != wf:
        raise ValueError("its workflow is not the job's (as its JOB_SUBMITTED says)")
    if value.get("state") not in VIEW_STATES:
        raise ValueError(f"its state is {_shown(value.get('state'))}, not one of "
                         + ", ".join(VIEW_STATES))
    _fraction(value.get("progress"), "its progress")
    tasks = value.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise ValueError("its tasks are not a list of objects")
    got = [t.get("name") for t in tasks]
    if got != list(names):
        raise ValueError(f"its tasks are {_shown(got)}, not the job's {_shown(list(names))}")
    _count_or_none(value.get("finished_ms"), "its finished_ms")
    _number_or_none(value.get("duration_s"), "its duration_s")
    _member_outputs(value, names)
    for t, spec in zip(tasks, wf["tasks"], strict=True):
        _member_task(t, spec)
    return value


def _member_outputs(value: dict[str, Any], names: Sequence[str]) -> None:
    """The job's `outputs` and `published` of a member's view (`member_view`)."""
    outputs = value.get("outputs", {})
    if not isinstance(outputs, dict) or not set(outputs) <= set(names):
        raise ValueError(f"its outputs are {_shown(outputs)}, not task name -> CID")
    for name, cid in outputs.items():
        _cid(cid, f"its outputs[{name!r}]")
    published = value.get("published", [])
    if not isinstance(published, list) or not all(
            isinstance(p, dict) and all(isinstance(p.get(k), str) for k in ("name", "value"))
            and p.get("task") in names for p in published):
        raise ValueError("its published is not a list of {name, value, task} of the job")


def _member_task(t: dict[str, Any], spec: dict[str, Any]) -> None:
    """One task of a member's view (`member_view`), `spec` its task in the workflow."""
    where = f"its task {t['name']!r}"
    for key, default in (("call", None), ("params", {}), ("depends", []), ("cid", None)):
        if key not in t and key != "depends":
            continue  # (an older member's view may lack it; the UI takes none)
        v, w = t.get(key), spec.get(key, default)
        if v != w or type(v) is not type(w):
            raise ValueError(f"{where}'s {key} is {_shown(v)}, not the workflow's {_shown(w)}")
    if t.get("state") not in VIEW_STATES:
        raise ValueError(f"{where}'s state is {_shown(t.get('state'))}, not one of "
                         + ", ".join(VIEW_STATES))
    _fraction(t.get("progress"), f"{where}'s progress")
    _count_or_none(t.get("attempts", 0), f"{where}'s attempts")
    _peers(t.get("peers", []), f"{where}'s peers")
    if t.get("output") is not None:
        _cid(t["output"], f"{where}'s output")
    _member_partial(t.get("partial"), where)
    if not isinstance(t.get("cached", False), bool):
        raise ValueError(f"{where}'s cached is {_shown(t.get('cached'))}, not true or false")
    for key in ("warning", "error", "waiting"):
        _text_or_none(t.get(key), f"{where}'s {key}")
    for key in ("started_ms", "finished_ms", "chunks_total", "chunks_from"):
        _count_or_none(t.get(key), f"{where}'s {key}")
    _number_or_none(t.get("duration_s"), f"{where}'s duration_s")
    _member_chunks(t, where)


def _member_partial(part: Any, where: str) -> None:
    if part is not None:
        if not isinstance(part, dict):
            raise ValueError(f"{where}'s partial is {_shown(part)}, not an object or null")
        _cid(part.get("output"), f"{where}'s partial output")
        for k in ("items", "of"):
            _count_or_none(part.get(k), f"{where}'s partial {k}", null=False)


def _member_chunks(t: dict[str, Any], where: str) -> None:
    """A task's `logs` (a record's) and `chunks` (a view's) of a member's view."""
    logs = t.get("logs", [])
    if not isinstance(logs, list):
        raise ValueError(f"{where}'s logs are {_shown(logs)}, not a list")
    for log in logs:
        _cid(log, f"{where}'s logs")
    chunks = t.get("chunks", [])
    if not isinstance(chunks, list) or len(chunks) > MAX_VIEW_CHUNKS:
        raise ValueError(f"{where}'s chunks are not a list of at most {MAX_VIEW_CHUNKS}")
    for i, c in enumerate(chunks):
        _member_chunk(c, f"{where}'s chunk {i}")


def _member_chunk(c: Any, where: str) -> None:
    if not isinstance(c, dict):
        raise ValueError(f"{where} is {_shown(c)}, not an object")
    if c.get("state") not in CHUNK_STATES:
        raise ValueError(f"{where}'s state is {_shown(c.get('state'))}, not one of "
                         + ", ".join(CHUNK_STATES))
    _fraction(c.get("progress"), f"{where}'s progress")
    for key in ("attempt", "attempts", "items"):
        _count_or_none(c.get(key, 0), f"{where}'s {key}", null=False)
    for key in ("started_ms", "finished_ms"):
        _count_or_none(c.get(key), f"{where}'s {key}")
    if c.get("peer") is not None:
        _peers([c["peer"]], f"{where}'s peer")
    _text_or_none(c.get("error"), f"{where}'s error")
    if c.get("log") is not None:
        _cid(c["log"], f"{where}'s log")


def _fraction(p: Any, what: str) -> None:
    if not (isinstance(p, int | float) and not isinstance(p, bool) and 0 <= p <= 1):
        raise ValueError(f"{what} is {_shown(p)}, not a number in 0..1")


def _count_or_none(v: Any, what: str, null: bool = True) -> None:
    if v is None and null:
        return
    if type(v) is not int or not 0 <= v <= MAX_SERVED_COUNT:
        raise ValueError(f"{what} is {_shown(v)}, not an integer 0..{MAX_SERVED_COUNT}"
                         + (" or null" if null else ""))


def _number_or_none(v: Any, what: str) -> None:
    if v is not None and (not isinstance(v, int | float) or isinstance(v, bool)
                          or not -MAX_SERVED_COUNT <= v <= MAX_SERVED_COUNT):
        raise ValueError(f"{what} is {_shown(v)}, not a number or null")


def _text_or_none(v: Any, what: str) -> None:
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{what} is {_shown(v)}, not a text or null")


def _peers(v: Any, what: str) -> None:
    if (not isinstance(v, list) or len(v) > MAX_SERVED_PEERS
            or not all(is_peer_id(p) for p in v)):
        raise ValueError(f"{what} is {_shown(v)}, not a list of peer ids")


def _cid(v: Any, what: str) -> None:
    if not reads_as_cid(v):
        raise ValueError(f"{what} is {_shown(v)}, not a CID")


def served_by(body: bytes, member: str) -> bytes:
    """A member's view as a non-member passes it on: `body`, the member's answer (a JSON
    object in UTF-8 that `member_view` passed), with `"served_by": member, "unverified":
    true` spliced in as its last keys (ones of those names the member sent are overridden:
    the last one wins), not parsed nor dumped again (a view may be tens of megabytes).
    `unverified`: its header, names, workflow and the types are checked against the job's
    JOB_SUBMITTED (`member_view`), its states, runners and outputs are the member's word."""
    end = len(body.rstrip(b" \t\n\r")) - 1  # (its closing brace: JSON's white space after)
    tail = b',"served_by":' + json.dumps(member).encode() + b',"unverified":true}'
    return b"".join((memoryview(body)[:end], tail))


def _shown(v: Any) -> str:
    """A bounded repr of what a member sent (it may be megabytes)."""
    return reprlib.repr(v)


def published_names(view: dict[str, Any], held: Mapping[str, str]) -> list[dict[str, str]]:
    """The IPNS names among `held` (name -> its record's value) that name an output of the job
    `view` (`/ipfs/OUTPUT`, or a path below it): [{name, value, task}] in task order. A name
    republished to another job's output moves there."""
    by_output = {f"/ipfs/{t['output']}": t["name"] for t in view["tasks"] if t.get("output")}
    found = []
    for name, value in held.items():
        root = "/".join(value.split("/", 3)[:3])  # /ipfs/CID of /ipfs/CID/path
        if root in by_output:
            found.append({"name": name, "value": value, "task": by_output[root]})
    order = {task: i for i, task in enumerate(by_output.values())}
    return sorted(found, key=lambda p: (order[p["task"]], p["name"]))


MAX_PAGE_JOBS = 1000  # the largest `?limit=` of the job list


Order = tuple[int, str, int]
T = TypeVar("T")
# (limit, before) -> (order, summary) of compacted jobs older than `before`, newest first
Archived = Callable[[int | None, Order | None], list[tuple[Order, dict[str, Any]]]]


def page_jobs(state: MeshState, limit: int | None, cursor: str | None,
              archived: Archived | None = None) -> tuple[list[str | dict[str, Any]], str | None]:
    """Jobs newest first (by the submission's (hlc, origin, seq)): at most `limit` (without
    one, MAX_PAGE_JOBS: the list has a ceiling, session 48 review r1 F3) older than `cursor`,
    and the cursor of the next page (None on the last). A job of the state is its id; a
    compacted one (`archived`, from the job index) its summary. ArgError for a bad limit or
    cursor."""
    limit = page_limit(limit)
    after = parse_cursor(cursor)
    live = live_page(state, limit, after)
    return merge_page(live, [] if archived is None else archived(limit + 1, after), limit)


def page_limit(limit: int | None) -> int:
    """The page size asked for (MAX_PAGE_JOBS without one); ArgError out of 1..MAX_PAGE_JOBS."""
    if limit is None:
        return MAX_PAGE_JOBS
    if not 1 <= limit <= MAX_PAGE_JOBS:
        raise ArgError(f"limit must be 1..{MAX_PAGE_JOBS}", field="limit")
    return limit


def live_page(state: MeshState, limit: int, after: Order | None) -> list[tuple[Order, str]]:
    """(order, id) of the newest `limit` + 1 jobs of the state older than `after`: read from
    the state's ordered table (JobTable), not a walk of every job (~2 us each on the loop,
    per page: 0.2 s at 100,000 jobs; session 50, helper c)."""
    return state.jobs.newest(limit + 1, after)


def merge_page(live: Sequence[tuple[Order, T]], archived: Sequence[tuple[Order, dict[str, Any]]],
               limit: int) -> tuple[list[T | dict[str, Any]], str | None]:
    """One page of `limit` of `live` entries and `archived` summaries (each newest first, at
    most `limit` + 1), and the cursor of the next page (None on the last). A job in both (it
    was compacted between the two reads) is listed once, by its summary."""
    summarized = {s.get("id") for _, s in archived}
    entries: list[tuple[Order, T | dict[str, Any]]] = [
        (o, e) for o, e in live
        if (e if isinstance(e, str) else e.get("id") if isinstance(e, dict) else None)
        not in summarized]
    entries += archived
    page = heapq.nlargest(limit + 1, entries, key=lambda oe: oe[0])
    if len(page) <= limit:
        return [e for _, e in page], None
    last = page[limit - 1][0]
    return [e for _, e in page[:limit]], f"{last[0]}.{last[2]}.{last[1]}"


def parse_cursor(cursor: str | None) -> Order | None:
    """The order a `next` cursor stands for (None for none); ArgError if it is none given."""
    if cursor is None:
        return None
    try:
        hlc, seq, origin = cursor.split(".", 2)
        if not origin:
            raise ValueError(cursor)
        return (int(hlc), origin, int(seq))
    except ValueError:
        raise ArgError("cursor is not one this peer gave", field="cursor") from None

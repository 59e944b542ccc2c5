"""The aiohttp app every peer serves: REST under /api, server-sent events, the /ipfs/
gateway and the static web UI. Handlers never block the loop (store work in threads)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import re
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from peer import jsontext
from peer.cids import parse_cid, reads_as_cid
from peer.dataentry import remove_tree
from peer.errors import (
    ArgError,
    BadCID,
    BadDag,
    BanzaiError,
    Conflict,
    LogUnwritable,
    NotFound,
    SpecError,
    StorageFull,
    StoreUnwritable,
    TooLarge,
    Unavailable,
    Unsupported,
    disk_failing,
    disk_full,
)
from peer.errors_http import HttpError, Surface, http_error, unexpected
from peer.http.auth import Auth, Policy
from peer.http.host import Host
from peer.http.limits import Gate, HttpLimits, open_files_limit
from peer.http.metrics import CONTENT_TYPE as METRICS_TYPE
from peer.http.metrics import Metrics, member_state
from peer.http.openapi import OPENAPI
from peer.http.records import MISS_TTL_S, RecordCache, Tail, list_bytes
from peer.http.tokens import load_or_create_token, mesh_credential
from peer.http.uiheaders import ui_headers_hook
from peer.http.views import (
    elsewhere_entry,
    held_elsewhere,
    job_view,
    live_page,
    member_view,
    merge_page,
    page_limit,
    parse_cursor,
    published_names,
    served_by,
    shown_view,
    unvouched_logs,
)
from peer.ipfs import gateway, rpc
from peer.ipfs.subdomain import SubdomainConfig
from peer.jobs.live import (
    LINE_OVERHEAD,
    METRICS_MAX_POINTS,
    Kept,
    PointsCut,
    points_cut,
    record_points,
)
from peer.jobs.members import ordered
from peer.jobs.placement import json_type
from peer.jobs.spec import parse, resolve_images, with_splits
from peer.log import Event, EventType, JobSubmitted, MeshState, TaskDone
from peer.log.events import MAX_CHUNKS, Member, cut_text
from peer.log.snapframe import CONTENT_TYPE as SNAPSHOT_TYPE_V3

log = logging.getLogger("banzai.api")
NODE: web.AppKey[Host] = web.AppKey("node")
# bad IPFS input refused (dag/put, routing/put), by command: /api/health's ipfs.refused
IPFS_REFUSED: web.AppKey[Counter[str]] = web.AppKey("ipfs_refused")
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
GATE: web.AppKey[Gate] = web.AppKey("gate")  # its connections and event streams (limits.py)
# GET /api/snapshot's turns (`_Turn`): at most http_max_snapshot_serves at once
SNAPSHOTS: web.AppKey[asyncio.Semaphore] = web.AppKey("snapshots")
RECORDS: web.AppKey[RecordCache] = web.AppKey("records")  # run records' lists, parsed
# Retry-After of a submission refused, nothing kept, while the log cannot store it
REFUSED_RETRY_AFTER_S = 5
# A job's body parsed on the loop up to this size, in a worker thread above it: a one-task
# job's (35 bytes) parses in ~90 us, one of 1 KiB (~20 ECHO tasks) in ~0.6 ms, one of MBs
# would hold the loop (session 51, on the 2-core Xeon)
INLINE_PARSE_BYTES = 1024
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


def _answer(err: HttpError) -> web.Response:
    return web.json_response(err.json(), status=err.status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes JSON with a message (and the field at fault), its status from
    peer/errors_http.py; never a traceback or a 500 page."""
    try:
        return await handler(request)
    except BanzaiError as e:
        return _answer(http_error(e, Surface.API))
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[NODE].cfg.max_body_bytes
        too_large = TooLarge(f"request body too large (limit {limit} bytes)", field="body")
        return _answer(http_error(too_large, Surface.API))
    except web.RequestPayloadError as e:  # a body that does not decode (Content-Encoding)
        return _answer(HttpError(400, "BadRequestBody",
                                 f"the request body could not be read: {e}", "body"))
    except web.HTTPException as e:  # aiohttp's own: no such route (404), wrong method (405)
        if e.status < 400:
            raise
        return _answer(HttpError(e.status, type(e).__name__, e.reason))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as e:
        if isinstance(e, ConnectionError) and request.transport is None:  # the client left
            log.debug("%s %s: the client went away: %r", request.method, request.path, e)
            return _answer(unexpected(Surface.API))  # (never sent: aiohttp drops it)
        if disk_full(e):  # e.g. an upload spooled to a full disk
            log.warning("%s %s: the disk is full: %s", request.method, request.path, e)
            full = StorageFull("the peer's disk is full: free space and retry")
            return _answer(http_error(full, Surface.API))
        if disk_failing(e):  # (read-only, failing: what failed is named where it is known)
            log.warning("%s %s: the disk failed: %s", request.method, request.path, e)
            kept = "" if request.method in ("GET", "HEAD") else ": nothing was kept"
            failing = StoreUnwritable(f"the peer's disk failed ({e}){kept}; retry once it "
                                      "works")
            return _answer(http_error(failing, Surface.API))
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _answer(unexpected(Surface.API))


class ClientBytes(logging.Filter):
    """On aiohttp's server logger: a request line, header or body that does not parse or
    decode is the client's fault, answered 400 already; aiohttp logs it at ERROR with a
    traceback (`handle_error`, and the drain of a body whose Content-Encoding fails), which
    anyone reaching the port could repeat to flood the log. Such records become one DEBUG
    line; every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, web.RequestPayloadError | HttpProcessingError):
            return True
        log.debug("a client's malformed request: %s", str(exc).replace("\n", " ")[:200])
        return False


def quiet_client_errors() -> None:
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientBytes) for f in server.filters):
        server.addFilter(ClientBytes())


def _node(request: web.Request) -> Host:
    return request.app[NODE]


async def _job(node: Host, job_id: str) -> dict[str, Any] | None:
    """None for a job of the state; a compacted job's record (from the job index, or
    fetched from a member when we took only its thin row: Unavailable if none gave it);
    else NotFound."""
    if job_id in node.state.jobs:
        return None
    record = node.catchup.job_record(job_id)
    if record is None:
        record = await node.catchup.fetch_record(job_id)
    if record is None and job_id in node.state.compacted and job_id not in node.state.deleted:
        raise Unavailable(f"job {job_id!r} has ended and its record is not held here (only "
                          "its list entry): no live member gave it; try again later",
                          field="job")  # (the list shows it: it is no 404)
    if record is None:
        raise NotFound(f"no job {job_id!r}", field="job")
    return record


async def health(request: web.Request) -> web.Response:
    """The peer's health and identity: 200, or 503 with the same body while it cannot store
    events or run any work (`ok` false, `reason` naming why), for checks that read the status
    only."""
    node = _node(request)
    workers = dict(node.workers)
    durability = dict(node.durability())
    reason = _unhealthy(workers, durability)
    return web.json_response(status=200 if reason is None else 503, data={
        "ok": reason is None, "reason": reason,
        "peer": node.peer_id, "name": node.name, "jobs": len(node.state.jobs),
        "version": OPENAPI["info"]["version"], "workers": workers,
        "gossip": node.gossip.stats.as_dict() if node.gossip else None,
        "gossip_address": node.gossip.address if node.gossip else None,
        "durability": durability,
        "log": node.log_health(),
        "inline": node.inline_health(),
        "storage": {"held_back": list(node.janitor.held_back),  # (gc collects nothing)
                    "bounds": node.janitor.bounds()},  # (retention set, what is kept for ever)
        "shell": node.shell_confinement(),
        "security": node.security(),
        "ipfs": {"refused": dict(request.app[IPFS_REFUSED].items()),
                 "ipns_not_kept": node.ipns.refused,  # gossiped records that do not read
                 "ipns_older": node.ipns.older,  # and those older than the one held
                 # record files (names) held, their cap, removed to make room, and new
                 # names refused at the cap (peer.ipfs.ipns.IpnsNames._make_room)
                 "ipns_names": node.ipns.names.count, "ipns_names_max": node.ipns.names.max_names,
                 "ipns_names_removed": node.ipns.names.evicted,
                 "ipns_names_refused": node.ipns.names.full},
        "http": request.app[GATE].stats(),
        "mdns": None if node.discovery is None else node.discovery.health()})


def _unhealthy(workers: Mapping[str, int], durability: Mapping[str, Any]) -> str | None:
    """Why the peer is not healthy, from /api/health's `workers` and `durability`; None if it
    is: its event log cannot be written or synced (a full, read-only or failing disk: the
    API refuses changes meanwhile, 507 or 503), or no worker slot can run (workers given up,
    alive, hold every slot: Executor.slots)."""
    if (error := durability["log_error"]) is not None:  # (what failed and where)
        if durability["write_error"] is None:
            waits = (f"{_wait(durability['unsynced_received'], 'written to it')} for an "
                     "fsync that succeeds")
        elif durability["unwritten_events"]:
            waits = f"{_wait(durability['unwritten_events'], 'of this peer')} in memory"
        else:
            waits = "received events are not stored (peers send them again)"
        return (f"events cannot be stored: {error}; {waits}, and this peer claims no new "
                "work until a retry succeeds")
    if workers["usable"] > 0:
        return None
    slots = workers["slots"]
    if workers.get("failed_starts", 0) and workers["given_up"] < slots:
        return (f"no usable worker slots: {workers['failed_starts']} worker starts in a row "
                "failed and no worker is ready (the log says why); runs fail here at once "
                "until a worker starts, tried again at most every 30 s")
    return (f"no usable worker slots: {workers['given_up']} workers given up (they outlived "
            f"their SIGKILL) hold all {slots} slot{'' if slots == 1 else 's'}; no run can "
            "start here until one of them exits")


def _wait(n: int, which: str) -> str:
    return f"1 event {which} waits" if n == 1 else f"{n} events {which} wait"


async def list_tasks(request: web.Request) -> web.Response:
    node = _node(request)
    return web.json_response({"tasks": [d.to_json() for _, d in sorted(node.catalog.items())]})


async def submit(request: web.Request) -> web.Response:
    node = _node(request)
    body = await request.read()
    read = functools.partial(parse, body, node.catalog, content_type=request.content_type,
                             max_bytes=node.cfg.max_body_bytes,
                             max_tasks=node.cfg.max_tasks_per_job,
                             max_workflow_bytes=node.cfg.max_workflow_bytes)
    # A small body is parsed on the loop: a worker thread's hop (~45 us of CPU, and the GIL
    # handed over and back) is half a one-task job's parse again (session 51, issue 12)
    wf = read() if len(body) <= INLINE_PARSE_BYTES else await asyncio.to_thread(read)
    if any(t.call == "container" for t in wf.tasks):  # tags -> the digest peers hold
        wf = resolve_images(wf, {p: m.payload.get("images") or {}
                                 for p, m in node.state.members.items()})
    if request.query.get("cache", "").lower() in ("false", "0", "no"):
        wf = wf.without_cache()
    # Its tasks without input have implicit splits only while every live peer folds them,
    # and splits by values (tasks of several values of a `split_arg`) while all fold those
    wf = with_splits(wf, node.catalog, node.implicit_splits(), node.arg_splits())
    if (refused := node.refusal()) is not None:  # the log is known to fail: nothing made
        answer = _answer(http_error(refused, Surface.API))
        answer.headers["Retry-After"] = str(REFUSED_RETRY_AFTER_S)
        return answer
    job = node.new_job_id()  # (bound to us while every member takes bound ids)
    members = node.lanes_members(job, wf)  # a lanes job's (its workflow then says so)
    if members is not None:
        wf = dataclasses.replace(wf, lanes=True)
    payload: dict[str, Any] = {"job": job, "workflow": wf.to_json()}
    if members is not None:
        payload["members"] = members
    if node.local_first(job, wf):  # a small job: this peer runs it first (LOCAL_FEATURE)
        payload["local"] = True
        if node.claims_first(job, wf):  # and it is its claim of them (CLAIMED_FEATURE)
            payload["claimed"] = True
    ev = node.emit(EventType.JOB_SUBMITTED, payload)
    try:
        replicas = await node.submitted(ev)
    except (StorageFull, LogUnwritable) as e:  # not acknowledged (507, 503); name the job,
        # so that it is not resent: it is written, and runs, once the log takes writes again
        # (the one submission that met the outage first: the next are refused, `refusal`)
        raise type(e)(f"job {job} is not on disk: {e.message}", field="job") from e
    return web.json_response({"job": job, "url": f"/api/jobs/{job}", "replicas": 1 + replicas},
                             status=201)


LIST_READS = 3  # reads of a job list page whose live job left the state meanwhile


async def list_jobs(request: web.Request) -> web.Response:
    """One page of the jobs, newest first: `?limit=N` of them (MAX_PAGE_JOBS without it: the
    list has a ceiling), older than `?cursor=`, and `next`, the `cursor` of the following
    page (null on the last). The live jobs' ids are read first (the loop's state), then
    the compacted ones' summaries from the job index in a worker thread, on a connection of
    its own (session 48, review r1 F3: the whole index was read on the loop); a job
    compacted meanwhile is listed once. Entries are made only for the live jobs the page
    keeps (session 49, review rr S6: `limit` + 1 were made, ~40 us each, for a page of 6);
    if one of them left the state during the read (compacted or deleted), the page is read
    again (LIST_READS times at most, then it is left out)."""
    node = _node(request)
    raw = request.query.get("limit")
    try:
        asked = None if raw is None else int(raw)
    except ValueError:
        raise ArgError("limit must be an integer", field="limit") from None
    limit = page_limit(asked)
    after = parse_cursor(request.query.get("cursor"))
    for _ in range(LIST_READS):
        live = live_page(node.state, limit, after)
        archived = await asyncio.to_thread(node.catchup.index.page_apart, limit + 1, after)
        page, nxt = merge_page(live, archived, limit)
        if all(not isinstance(j, str) or j in node.state.jobs for j in page):
            break
    jobs = [j if not isinstance(j, str) else _entry(node, j) for j in page
            if not isinstance(j, str) or j in node.state.jobs]
    return web.json_response({"jobs": jobs, "next": nxt})


def _count(request: web.Request, name: str) -> int:
    """The query's `name`, a count (0 when absent); ArgError naming it if it is not one."""
    raw = request.query.get(name)
    if raw is None:
        return 0
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if not 0 <= n <= MAX_CHUNKS:
        raise ArgError(f"{name} must be an integer 0..{MAX_CHUNKS}", field=name)
    return n


async def get_job(request: web.Request) -> web.Response:
    node = _node(request)
    job = request.match_info["job"]
    if held_elsewhere(node.state, job, node.peer_id):  # a lanes job: its view is a member's
        submitted = node.state.jobs[job]
        member, body = await node.catchup.fetch_view(
            job, ordered(node.state, job), _count(request, "chunks_from"),
            lambda v: member_view(v, submitted))
        # (the web UI polls it: no task event of it comes here)
        return web.Response(body=served_by(body, member), content_type="application/json")
    record = await _job(node, job)
    if record is not None:  # finished and compacted: its record as it ended
        return web.json_response(shown_view(record))
    return web.json_response(await _view(node, job, _count(request, "chunks_from")))


async def _view(node: Host, job: str, chunks_from: int) -> dict[str, Any]:
    """The full view of `job` (of the state), made here."""
    view = job_view(node.state, job, node.cfg.max_attempts, chunks_from=chunks_from)
    waiting = node.scheduler.waiting()  # why tasks wait here (no live provider of data)
    for t in view["tasks"]:
        t["waiting"] = waiting.get((job, t["name"]))
    held = await asyncio.to_thread(node.ipns.names.held_if_read)  # IPNS names naming its
    if held is not None:  # outputs (none if the records do not read: logged, left out)
        view["published"] = published_names(view, {n: r.value for n, r in held.items()})
    return shown_view(view)


async def _served_view(node: Host, job: str, chunks_from: int) -> dict[str, Any]:
    """GET /api/snapshot?v=3&view=JOB, a peer that holds none of a lanes job's lanes asking
    a member (`CatchUp.fetch_view`): its view made here, or its record if compacted here;
    never asked on (NotFound: the asker tries its next member)."""
    if job in node.state.jobs and not held_elsewhere(node.state, job, node.peer_id):
        return await _view(node, job, chunks_from)
    record = node.catchup.job_record(job)
    if record is None:
        raise NotFound(f"no view of job {job!r} here: this peer holds none of its task "
                       "events", field="view")
    return record


def _entry(node: Host, job: str) -> dict[str, Any]:
    """The list entry of `job` (of the state)."""
    if held_elsewhere(node.state, job, node.peer_id):
        return elsewhere_entry(node.state, job)
    return job_view(node.state, job, node.cfg.max_attempts, detail=False)


async def cancel_job(request: web.Request) -> web.Response:
    node = _node(request)
    job = request.match_info["job"]
    record = await _job(node, job)
    view = record or _entry(node, job)
    if view["state"] in ("done", "failed"):
        raise Conflict(f"job {job} is already {view['state']}", field="job")
    if record is None and job not in node.state.cancelled:
        ev = node.emit(EventType.JOB_CANCELLED, {"job": job, "reason": "cancelled by a user"})
        await node.durable(ev)  # acknowledged once on disk (507 if the disk is full)
    return web.json_response({"job": job, "state": "cancelled"})


async def delete_job(request: web.Request) -> web.Response:
    node = _node(request)
    job = request.match_info["job"]
    ev = node.janitor.delete_job(job)  # NotFound; Conflict while it runs
    await node.durable(ev)  # acknowledged once on disk (507 if the disk is full)
    return web.json_response({"job": job, "deleted": True})


async def gc(request: web.Request) -> web.Response:
    """One storage cycle now (retention, gc); what it freed."""
    report = await _node(request).janitor.cycle()
    return web.json_response(report.to_json())


async def _task_record(request: web.Request, kind: str, need: int | None = None,
                       ) -> tuple[int, list[Any]]:
    """A task's `kind` list, or (`need`) at least its last `need` items: (how many items
    before those were left out, the items)."""
    node = _node(request)
    job, task = request.match_info["job"], request.match_info["task"]
    if held_elsewhere(node.state, job, node.peer_id):  # (not asked of a member yet)
        raise Unavailable(f"job {job}'s task events are held by its members only ("
                          f"{', '.join(ordered(node.state, job))}), none here: its tasks' "
                          f"{kind} are read on a member", field="job")
    record = await _job(node, job)
    if record is not None:
        return await _archived_lists(node, record, task, kind, request.app[RECORDS], need)
    names = node.state.jobs[job].body_as(JobSubmitted).tasks
    if task not in names:
        raise NotFound(f"job {job} has no task {task!r} (tasks: {', '.join(names)})",
                       field="task")
    after: list[Any] = []
    done = node.state.task_done.get((job, task))
    warning = done.body_as(TaskDone).warning if done is not None else None
    if kind == "log" and warning:
        after.append(f"[banzai] warning: {warning}")
    live = (node.scheduler.logs if kind == "log" else node.scheduler.metrics).get((job, task))
    if live and (job, task) not in node.state.task_done:
        after.extend(points_cut(live) if isinstance(live, Kept) and kind == "metrics" else live)
    left, out = await _record_parts(node, record_cids(node.state, job, task), kind,
                                    request.app[RECORDS], _less(need, len(after)))
    return left, [*out, *after]


def _less(need: int | None, n: int) -> int | None:
    """What is still needed of what comes before `n` items, if `need` are."""
    return None if need is None else max(need - n, 0)


def record_cids(st: MeshState, job: str, task: str) -> list[tuple[str, bool]]:
    """The CIDs of a live task's run records in its log's order (each chunk's failed runs',
    then its done run's: `ChunkState.logs`), each with whether it may be fetched from the
    mesh: not a self-added (unvouched) member's failure's, which b's rules leave out of the
    chunk's count (RR-3: that member chose what every peer fetched)."""
    chunks = st.split_chunks(job, task)  # (the others have no log)
    out: list[tuple[str, bool]] = []
    for i in sorted(chunks):
        c = chunks[i]
        theirs = unvouched_logs(st, job, c)
        out.extend((cid, cid not in theirs) for cid in c.logs())
    return out


async def _archived_lists(node: Host, record: dict[str, Any], task: str, kind: str,
                          cache: RecordCache | None = None, need: int | None = None,
                          ) -> tuple[int, list[Any]]:
    """A compacted job's task log or metrics (at least its last `need` items, as
    `_record_parts`), from the run logs its record names: each
    fetched from the mesh if not held here, but those its `unvouched_logs` lists (a
    self-added member's failures', as `record_cids` leaves out of a live job's fetches: the
    record listed every one alike, and each was fetched; review r2 of session 51, M2). A
    record without that key (an earlier release's, or one with none) fetches each, as it
    did; one whose key is no list of texts (no release writes that) fetches none."""
    tasks = {t["name"]: t for t in record.get("tasks", [])}
    t = tasks.get(task)
    if t is None:
        raise NotFound(f"job {record['id']} has no task {task!r} (tasks: "
                       f"{', '.join(tasks)})", field="task")
    logs = t.get("logs")
    theirs = t.get("unvouched_logs", [])
    unfetched = (set(theirs) if type(theirs) is list and all(type(c) is str for c in theirs)
                 else None)  # (None: none is fetched)
    cids = [(c, unfetched is not None and not (type(c) is str and c in unfetched))
            for c in logs] if type(logs) is list else []
    after = [f"[banzai] warning: {t['warning']}"] if kind == "log" and t.get("warning") else []
    left, out = await _record_parts(node, cids, kind, RecordCache() if cache is None else cache,
                                    _less(need, len(after)))
    return left, [*out, *after]


# What a run record may hold beyond its log (--task-log-max-bytes): 20,000 metric points
# (~1 MB of JSON; their names cut to 256 characters) and the JSON's quotes and escapes
RECORD_SLACK_BYTES = 8 << 20
RECORD_SLACK_VALUES = 4 * METRICS_MAX_POINTS + 1024  # (a point: a list and its 3 values)
_ESCAPE = re.compile(rb"\\.", re.DOTALL)  # (a backslash and the byte it escapes)
_QUOTED = re.compile(rb'"[^"]*"')  # (a string, once its escapes are gone)


def json_values_at_most(data: bytes) -> int:
    """At most how many JSON values `data` holds: its commas, `[` and `{` outside strings,
    plus one. Linear in `data` whatever it holds: escapes are removed first, so a string is
    then `"[^"]*"`, which no input makes the regex scan again (review r2 of session 51, H1:
    one regex for strings with escapes took time quadratic in a string never closed, with
    the GIL held)."""
    bare = _QUOTED.sub(b'""', _ESCAPE.sub(b"", data))
    return bare.count(b",") + bare.count(b"[") + bare.count(b"{") + 1


def record_max_bytes(log_max_bytes: int) -> int:
    """The most bytes of a run record this peer fetches and parses for the task log: twice
    its own runs' log bound (JSON's escapes) and the metrics' slack (24+ MiB at 10 MiB: was
    256 MiB fetched, and any size held here parsed whole; session 51, helper g, RR-1)."""
    return 2 * log_max_bytes + RECORD_SLACK_BYTES


def record_max_values(log_max_bytes: int) -> int:
    """The most JSON values a run record may hold: a run's log holds at most one line per
    LINE_OVERHEAD of its budget, its metrics METRICS_MAX_POINTS points. Parsing costs ~60
    bytes a value: 2 million short lines in 12 MB took 143 MB (RR-1)."""
    return log_max_bytes // LINE_OVERHEAD + RECORD_SLACK_VALUES


class _NoRecord(Exception):
    """A CID the task log names is no run record this peer reads; `why` completes "the run
    record <cid> ...". Never leaves `_held_list`."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


MAX_RECORD_FETCHES = 8  # run records missing here fetched per read of a task's log, together


async def _record_parts(node: Host, cids: Sequence[tuple[Any, bool]], kind: str,
                        cache: RecordCache, need: int | None = None,
                        ) -> tuple[int, list[Any]]:
    """The `kind` lists of the run records `cids` names, in order (`_held_list` each), or
    (`need`) at least their last `need` items: (how many were left out before those, the
    items). A record whose log the cache keeps as a `Tail` (too large for its budget) is
    read again only if a read needs more of it than its tail. Those
    held here read first; then at most MAX_RECORD_FETCHES of the missing ones fetched from
    the mesh at once, each neither missed lately (`RecordCache.missed`) nor a self-added
    member's (the bool: False; a member b's rules do not count chooses no fetch); each other
    a line saying why it is not shown. Before, a read fetched every missing record in turn,
    each asking every live peer, again at each read: K failures naming CIDs nobody holds cost
    K x peers requests and up to K timeouts (session 51, helper g, RR-3)."""
    parts: list[list[Any] | Tail | None] = [
        await _held_list(node, cid, kind, cache, fetch=False) for cid, _ in cids]
    missing = [i for i, p in enumerate(parts) if p is None]
    fetch = [i for i in missing if cids[i][1] and not cache.missed(cids[i][0])]
    fetch = fetch[:MAX_RECORD_FETCHES]
    for i, got in zip(fetch, await asyncio.gather(*(
            _held_list(node, cids[i][0], kind, cache) for i in fetch)), strict=True):
        parts[i] = got
    shown: list[list[Any]] = []
    for (cid, fetchable), part in zip(cids, parts, strict=True):
        if part is None:
            part = _unshown(cid, _not_fetched(cid, fetchable, cache), kind)
        shown.append(part if isinstance(part, list) else [])
    spent = len(fetch)
    left = 0
    for i in reversed(range(len(parts))):  # (from the last: what the read needs of each)
        part = parts[i]
        if need is not None and need <= 0:
            left += part.total if isinstance(part, Tail) else len(shown[i])
            shown[i] = []
        elif isinstance(part, Tail):
            if need is not None and need <= len(part.lines):
                left += part.total - len(part.lines)
                shown[i] = part.lines
            else:  # (more than its tail: read whole again, fetched again if it is no
                # longer held here, e.g. another peer's failed run's record, collected here
                # since: a cache, RR-5; as a missing record is: review r1 of session 52, 1)
                cid, fetchable = cids[i]
                may = fetchable and not cache.missed(cid) and spent < MAX_RECORD_FETCHES
                spent += may
                got = await _held_list(node, cid, kind, cache, fetch=may, whole=True)
                shown[i] = got if isinstance(got, list) else _unshown(
                    cid, _not_fetched(cid, fetchable, cache), kind)
        need = _less(need, len(shown[i]))
    return left, [x for part in shown for x in part]


def _not_fetched(cid: str, fetchable: bool, cache: RecordCache) -> str:
    """Why a run record not held here was not fetched by a read (completes "the run record
    <cid> ...")."""
    return ("is a self-added member's, not held here: it is not fetched" if not fetchable
            else f"was served by no live peer less than {MISS_TTL_S:.0f} s ago"
            if cache.missed(cid) else
            f"is not held here and was not fetched (at most {MAX_RECORD_FETCHES} "
            "records are fetched per read: read again)")


def _unshown(cid: str, why: str, kind: str) -> list[str]:
    """What stands for a run record's list not shown: a log line saying why (no metrics)."""
    return [f"[banzai] the run record {cid} {why}: its lines are not shown"
            ] if kind == "log" else []


async def _held_list(node: Host, cid: Any, kind: str, cache: RecordCache, fetch: bool = True,
                     whole: bool = False) -> list[Any] | Tail | None:
    """`_record_list`, fetched from the mesh if it is not held here (a run on another peer
    whose record was not carried inline: a failed run's never is; not `fetch`: None); if no
    live peer holds it either (its peer is gone, or it was collected: remembered,
    `RecordCache.miss`), a line saying so stands for a log's lines (none for metrics) and
    the rest is served: what is held of a task's log is what a user debugging it needs most
    (session 51). So too for a CID that is no run record this peer reads (a member names
    it: not JSON, a directory, larger than `record_max_bytes`): was a 422 or 501 for the
    whole log (session 51, helper g, RR-2). A record that is no CID is left out. A log the
    cache keeps as a `Tail` is that, unless `whole`."""
    if not isinstance(cid, str) or not reads_as_cid(cid):
        return []
    bound = record_max_bytes(node.cfg.task_log_max_bytes)
    why = cache.refused(cid, kind)
    if why is not None:
        return _unshown(cid, why, kind)
    try:
        try:
            return await _record_list(node, cid, kind, cache, whole)
        except NotFound:
            if not fetch:
                return None
        # (a member names the CID: what it may make this peer fetch is bounded)
        try:
            await node.fetcher.ensure([cid], max_bytes=bound)
        except (NotFound, TooLarge) as e:  # (TooLarge here: bytes counted before they are
            cache.miss(cid)  # verified, a liar's answer may be; asked again after the miss's
            if isinstance(e, NotFound):  # MISS_TTL_S, not refused for good: review r2, L1)
                raise
            return _unshown(cid, f"was sent larger than a run record may be ({bound} bytes) "
                            "by every live peer asked", kind)
        return await _record_list(node, cid, kind, cache, whole)
    except TooLarge:  # (its own size, read here: remembered, either list)
        why = f"is larger than a run record may be ({bound} bytes)"
        cache.refuse(cid, "", why)
    except NotFound:
        why = "is held neither here nor by a live peer"
    except _NoRecord as e:
        why = e.why
        cache.refuse(cid, "", why)
    except (BadDag, BadCID, Unsupported, ArgError) as e:
        said = e.message.removeprefix(f"the run record {cid}").lstrip(": ")
        why = f"is no run record ({cut_text(said, 200)})"
        cache.refuse(cid, kind, why)  # (BadDag: this list; a record may hold the other)
    return _unshown(cid, why, kind)


async def _record_list(node: Host, cid: str, kind: str, cache: RecordCache,
                       whole: bool = False) -> list[Any] | Tail:
    """The `kind` list of the run record at `cid`: parsed lately (RECORDS, by CID), or read
    and parsed in a worker thread. A record holds up to --task-log-max-bytes of log (~34 ms
    to parse 5 MB here), which was parsed on the loop per chunk per request, the log panel's
    every 0.7 s while a task runs (session 50, helper c). A log too large for the cache is
    kept as its `Tail`, returned unless `whole` (session 52)."""
    got = cache.get(cid, kind)
    if got is not None and not (whole and isinstance(got, Tail)):
        return got
    value, size = await asyncio.to_thread(_read_record, node, cid, kind, cache.max_bytes)
    cache.put(cid, kind, value, size)
    return value


def _read_record(node: Host, cid: str, kind: str, budget: int) -> tuple[list[Any], int]:
    """The record's list, read only if it is a file within `record_max_bytes` (its size
    from its root block: TooLarge before a byte of it is read) of at most
    `record_max_values` JSON values (counted before it is parsed: _NoRecord), and its size
    for the cache: the record's, or the list's (`list_bytes`) where the record is over
    the cache's `budget` (a large record's metrics are small: session 52)."""
    log_max = node.cfg.task_log_max_bytes
    entry = node.store.stat(cid)
    if entry.kind != "file":
        raise _NoRecord("is a directory, no run record")
    if entry.size > record_max_bytes(log_max):
        raise TooLarge(f"the run record {cid}: {entry.size} bytes", field=kind)
    data = b"".join(node.store.cat(cid))
    if len(data) > record_max_bytes(log_max):  # (a file's size as its root block says it)
        raise TooLarge(f"the run record {cid}: {len(data)} bytes", field=kind)
    values = data.count(b",") + data.count(b"[") + data.count(b"{") + 1  # (at most that)
    if values > record_max_values(log_max):  # (a string's commas and brackets are no values)
        values = json_values_at_most(data)
    if values > record_max_values(log_max):
        raise _NoRecord(f"holds more JSON values ({values}) than a run record may "
                        f"({record_max_values(log_max)})")
    value = _run_record(data, cid, kind)
    return value, len(data) if len(data) <= budget else list_bytes(value)


def _run_record(data: bytes, cid: str, kind: str) -> list[Any]:
    """The `kind` list ("log" or "metrics") of a run's record stored at `cid`. The CID
    comes from a member's event, so the bytes are read as any input: BadDag naming the CID
    if they are not such a record (before: a 500, or a RecursionError for deep JSON)."""
    record = jsontext.loads(data, f"the run record {cid}", error=BadDag, field=kind)
    value = record.get(kind) if isinstance(record, dict) else None
    if not isinstance(value, list):
        raise BadDag(f"the run record {cid} has no {kind} list", field=kind)
    return record_points(record, value) if kind == "metrics" else value


MAX_TAIL_LINES = 1_000_000  # the largest `?tail=` of a task's log


async def task_log(request: web.Request) -> web.StreamResponse:
    """A task's log lines (`total`: how many it has), or its last `?tail=N` only (the web
    UI's log panel, refetched as the task runs, shows the newest: session 49, helper c)."""
    raw = request.query.get("tail")
    try:
        tail = None if raw is None else int(raw)
    except ValueError:
        tail = 0
    if tail is not None and not 1 <= tail <= MAX_TAIL_LINES:
        raise ArgError(f"tail must be an integer 1..{MAX_TAIL_LINES}", field="tail")
    left, lines = await _task_record(request, "log", tail)
    shown = lines if tail is None else lines[-tail:]
    if request.query.get("format") == "text":
        return web.Response(text="".join(f"{ln}\n" for ln in shown))
    return web.json_response({"lines": shown, "total": left + len(lines)})


async def task_metrics(request: web.Request) -> web.Response:
    """A task's metric points, and `cut`: where a run's points were cut (its first and last
    METRICS_MAX_POINTS / 2 kept), each at the index of the first point after it, as the
    log's marker line stands where its lines were cut (session 51)."""
    points: list[Any] = []
    cut: list[dict[str, Any]] = []
    for x in (await _task_record(request, "metrics"))[1]:
        if isinstance(x, PointsCut):
            cut.append({"at": len(points), "points": x.points, "note": x.note})
        else:
            points.append(x)
    return web.json_response({"metrics": points, "cut": cut})


async def add(request: web.Request) -> web.Response:
    """Upload a file (raw body) or files (multipart, names may hold '/'); returns the CID."""
    node = _node(request)
    version = request.query.get("cid-version", "1")
    if version not in ("0", "1"):
        raise BanzaiError(f"cid-version must be 0 or 1, got {version!r}", field="cid-version")
    with _upload_writes(node.cfg.data_dir):  # (the store's own errors name what failed)
        tmp = Path(tempfile.mkdtemp(prefix="upload-", dir=node.cfg.data_dir))
        try:
            root = await _receive(request, tmp, node.cfg.max_upload_bytes)
            cid = await asyncio.to_thread(node.store.add_path, root,
                                          cid_version=int(version), pin=True)
        finally:  # (a deep tree of names must not recurse, nor block the loop)
            await asyncio.to_thread(remove_tree, tmp, ignore_errors=True)
    node.fetcher.mark(cid)  # just stored whole: no later completeness walk
    await node.durable(node.emit(EventType.PROVIDE, {"cids": [cid]}))  # blocks, event on disk
    return web.json_response({"cid": cid, "name": root.name}, status=201)


@contextlib.contextmanager
def _upload_writes(data_dir: Path) -> Iterator[None]:
    """Around writing an upload into `data_dir`: a failed write is StorageFull (a full
    disk) or StoreUnwritable (a read-only or failing one: 503, not a 500), naming it."""
    try:
        yield
    except OSError as e:
        if disk_full(e):
            raise StorageFull(f"cannot write the upload to {data_dir}: the disk is full"
                              ) from e
        if disk_failing(e):
            raise StoreUnwritable(f"cannot write the upload to {data_dir}: "
                                  f"{e.strerror or e}: nothing was kept; resend once the "
                                  "peer's disk takes writes again") from e
        raise


MAX_CAR_ROOTS = 1024


async def cars(request: web.Request) -> web.StreamResponse:
    """POST {"cids": [...]}: one CAR with the DAGs of those CIDs that this peer holds (each
    block once), so a peer fetching a chunk's many small items makes one request, not one
    per item. Never fetches from other peers; the caller verifies every block on import."""
    node = _node(request)
    body = jsontext.loads(await request.read(), "the body", field="body")
    cids = body.get("cids") if isinstance(body, dict) else None
    if not isinstance(cids, list) or not cids:
        raise ArgError('the body must be {"cids": [CID, ...]} with at least one CID',
                       field="cids")
    if len(cids) > MAX_CAR_ROOTS:
        raise TooLarge(f"{len(cids)} CIDs: at most {MAX_CAR_ROOTS} per request", field="cids")
    for i, c in enumerate(cids):
        if not isinstance(c, str):  # before parse_cid: its cache cannot hash a list
            raise ArgError(f"cids[{i}]: a CID must be a string, got {json_type(c)}",
                           field=f"cids[{i}]")
        try:
            parse_cid(c)
        except BadCID as e:
            raise ArgError(f"cids[{i}]: {e}", field=f"cids[{i}]") from None
    held = await asyncio.to_thread(lambda: [c for c in dict.fromkeys(cids) if node.store.has(c)])
    if not held:
        raise NotFound("none of these CIDs is held by this peer", field="cids")
    resp = web.StreamResponse(headers={"Content-Type": gateway.CAR_CONTENT_TYPE})
    exports = request.app.get(gateway.EXPORTS)  # (the gateway's export pool: not the default)
    await gateway.write_stream(request, resp, node.store.export_cars(held),
                               pool=None if exports is None else exports.pool)
    return resp


def _query_text(request: web.Request, key: str) -> str | None:
    """The query's `key` (the last one given), bytes that are not UTF-8 kept as lone
    surrogates for the caller to refuse (aiohttp reads them as U+FFFD: a name no one sent)."""
    return dict(urllib.parse.parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True,
                                       errors="surrogateescape")).get(key)


async def _receive(request: web.Request, tmp: Path, limit: int) -> Path:
    total = 0
    if not request.content_type.startswith("multipart/"):
        name = rpc.safe_rel(_query_text(request, "name") or "upload")
        with rpc.open_upload(tmp / name, name) as f:
            async for chunk in request.content.iter_chunked(1 << 20):
                total += len(chunk)
                if total > limit:
                    raise TooLarge(f"upload larger than {limit} bytes", field="body")
                f.write(chunk)
        return tmp / name
    tops: set[str] = set()
    with rpc.multipart_framing():
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or not part.filename:
                raise BanzaiError("every multipart part needs a filename", field="body")
            rel = rpc.part_rel(part.filename)  # clients (aiohttp, Kubo's) %-escape
            tops.add(rel.split("/")[0])
            with rpc.open_upload(tmp / rel, rel) as f:
                while chunk := await part.read_chunk(1 << 20):
                    total += len(chunk)
                    if total > limit:
                        raise TooLarge(f"upload larger than {limit} bytes", field="body")
                    f.write(chunk)
    if not tops:
        raise BanzaiError("empty upload: no file parts", field="body")
    return tmp / tops.pop() if len(tops) == 1 else tmp


SUMMARY_KEYS = ("job", "task", "chunk", "attempt", "progress", "output", "error", "kind",
                "cached", "name")


def _event_summary(ev: Event) -> dict[str, Any]:
    """What an event stream sends of `ev`: its type, origin, hlc and the SUMMARY_KEYS of its
    payload that are scalars (numbers within MAX_SUMMARY_NUM), a text cut to MAX_SHOWN_CHARS
    (head, tail, a marker). A member's valid event may hold 1 MiB of `error`, and one of a type
    this version does not know any value under these keys: each went whole to every open
    stream (session 50, helper c). The web UI reads `type`, `job` and
    `task` of each event (then refetches the view it shows)."""
    p = ev.payload
    out: dict[str, Any] = {"type": ev.type.name.lower(), "origin": ev.origin, "hlc": ev.hlc}
    for k in SUMMARY_KEYS:
        v = p.get(k, _ABSENT)
        if isinstance(v, str):
            out[k] = cut_text(v)
        elif v is None or isinstance(v, bool) or (
                isinstance(v, int | float) and -MAX_SUMMARY_NUM <= v <= MAX_SUMMARY_NUM):
            out[k] = v
    return out


_ABSENT = object()
MAX_SUMMARY_NUM = 1 << 63  # (an int of a payload has any number of digits; NaN: not JSON)


def _sse(ev: Event) -> str:
    return f"event: {ev.type.name.lower()}\ndata: {json.dumps(_event_summary(ev))}\n\n"


SSE_BATCH_CHARS = 64 * 1024  # an event stream's write: aiohttp's high-water mark


def _batch(ev: Event | None, queue: asyncio.Queue[Event | None]) -> tuple[str, bool]:
    """`ev` and the events queued after it (a TURN's parts come together) as one text, for
    one write, one chunk and one send, not one each; and whether the client is gone (a
    None). Bounded by SSE_BATCH_CHARS (past one event), so that the write after it waits for
    a slow client to drain, and what a stream holds stays bounded however much is queued."""
    parts: list[str] = []
    size = 0
    while ev is not None:
        parts.append(_sse(ev))
        size += len(parts[-1])
        if size >= SSE_BATCH_CHARS or queue.empty():
            return "".join(parts), False
        ev = queue.get_nowait()
    return "".join(parts), True


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `data:` line of JSON per state change, comments as heartbeat;
    at most `http_max_event_streams` at once (503 past it)."""
    queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=10_000)

    def gone() -> None:  # the client left: end now, not at the next heartbeat's failed write
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(None)

    with request.app[GATE].event_stream(request, on_lost=gone):
        return await _stream_events(request, queue)


async def _stream_events(request: web.Request, queue: asyncio.Queue[Event | None],
                         ) -> web.StreamResponse:
    node = _node(request)

    def listener(ev: Event) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(ev)

    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache"})
    await resp.prepare(request)
    node.listeners.append(listener)
    try:
        await resp.write(b": connected\n\n")
        while True:
            try:  # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
                async with asyncio.timeout(15):
                    ev = await queue.get()
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            text, ended = _batch(ev, queue)
            if text:
                await resp.write(text.encode())
            if ended:
                break
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        node.listeners.remove(listener)
    return resp


async def peers(request: web.Request) -> web.Response:
    node = _node(request)
    out = []
    now = time.monotonic()
    live = node.gossip.live_peers() if node.gossip else {}
    left = node.gossip.left_peers() if node.gossip else frozenset()
    # (counted once: each member's count was a walk of every CID's providers, members x
    # CIDs on the loop per request, the mesh page's every 5 s per open tab; session 49)
    provides = Counter(p for s in node.state.providers.values() for p in s)
    for pid, ev in sorted(node.state.members.items()):
        me = pid == node.peer_id
        info = node.local_info(step=False) if me else node.infos.get(pid, {})
        status = "alive" if me else member_state(pid, node, live, left)
        heard = node.heard_at.get(pid)
        out.append({**_member_fields(ev.body_as(Member)), "id": pid, "self": me,
                    "state": status,
                    "free_slots": info.get("free_slots"),
                    "running": info.get("running", []),
                    "provides": provides[pid],
                    "last_heard_s": 0.0 if me else (round(now - heard, 3) if heard else None)})
    return web.json_response({"peers": out})


def _member_fields(m: Member) -> dict[str, Any]:
    """What /api/peers shows of a member's MEMBER event: the fields its typed body holds
    (checked at the door), never the payload's other keys. The payload was spread as it
    came, before the peer's own `id`: a key `id` made a member pose as another peer
    (review r1 of session 49, F3)."""
    return {"name": m.name, "http": m.http, "calls": list(m.calls), "slots": m.slots,
            "cores": m.cores, "mem_mb": m.mem_mb, "gpu": m.gpu, "key": m.key,
            "features": list(m.features), "kinds": list(m.kinds), "labels": dict(m.labels)}


async def revoke(request: web.Request) -> web.Response:
    node = _node(request)
    body = jsontext.loads(await request.read(), "the body", field="body")
    peer = body.get("peer") if isinstance(body, dict) else None
    reason = body.get("reason", "revoked by a user") if isinstance(body, dict) else ""
    if not isinstance(peer, str) or not peer or not isinstance(reason, str):
        raise SpecError('expected {"peer": id, "reason": text}', field="peer")
    ev = node.revoke(peer, reason[:1000])
    return web.json_response({"peer": peer, "revoked": True, "event": list(ev.id)})


async def snapshot(request: web.Request) -> web.StreamResponse:
    """This peer's signed snapshot and the events its log holds, for a peer behind the
    compaction horizon (`?digest=1`: only the digest a second member's check compares)."""
    node = _node(request)
    v = {"2": 2, "3": 3}.get(request.query.get("v", ""), 1)  # 2: peer.log.snapstream, 3:
    # peer.log.snapframe; older peers ask v1 (and an older peer ignores v)
    if v == 3 and "view" in request.query:  # a lanes job's view (a lanes-off peer holds
        if not node.state.lanes_on:  # no view of one: not a whole snapshot instead)
            raise NotFound("this peer runs without lanes: no lanes job's view here",
                           field="view")
        return web.json_response(await _served_view(node, request.query["view"],
                                                    _count(request, "chunks_from")))
    if v == 3 and "record" in request.query:  # a compacted job's full texts
        texts = node.catchup.record_texts(request.query["record"])
        if texts is None:
            raise NotFound("no full record of that job here", field="record")
        return web.json_response(texts)
    digest = bool(request.query.get("digest"))
    part = request.query.get("part") if v > 1 and not digest else None
    if part not in (None, "jobs", "rows"):
        raise SpecError("part: jobs or rows", field="part")
    turn = await _Turn.take(request)
    if digest:
        try:  # (the index read off the loop)
            return web.json_response(await turn.run(node.catchup.digest_reader(
                per_job=v > 1, v=v)))
        finally:
            turn.end()
    try:
        lines = node.catchup.snapshot_stream(v, part)
    except BaseException:
        turn.end()
        raise
    return await _stream(request, turn, lines, {
        1: "application/json", 2: "application/x-ndjson", 3: SNAPSHOT_TYPE_V3}[v])


class _Turn:
    """One of the app's `http_max_snapshot_serves` snapshot serves: each step of one runs
    in a thread of the default pool (the first spools every event of the log: seconds on a
    big log), which store calls wait for, so a flood of snapshot requests must not hold
    every thread. The turn is given back at `end`, or, if a step is still running in its
    thread then (the handler cancelled: the app stops), when that step ends."""

    def __init__(self, turns: asyncio.Semaphore) -> None:
        self._turns = turns
        self._step: asyncio.Future[Any] | None = None

    @classmethod
    async def take(cls, request: web.Request) -> _Turn:
        """A turn, waited for at most `http_snapshot_wait_s`; else Unavailable (503)."""
        turns, limits = request.app[SNAPSHOTS], request.app[GATE].limits
        try:
            async with asyncio.timeout(limits.snapshot_wait_s):
                await turns.acquire()
        except TimeoutError:
            raise Unavailable(
                f"this peer serves at most {limits.max_snapshot_serves} snapshots at once "
                f"(http_max_snapshot_serves); none ended within {limits.snapshot_wait_s:g} s "
                "(http_snapshot_wait_s): retry later or ask another peer") from None
        return cls(turns)

    async def run(self, step: Callable[..., T], *args: Any) -> T:
        """`step(*args)` in a thread of the default pool."""
        self._step = asyncio.get_running_loop().run_in_executor(None, step, *args)
        return await asyncio.shield(self._step)  # (a cancel leaves the step's future be)

    def end(self, then: Callable[[], None] = lambda: None) -> None:
        """Give the turn back and call `then` (on the loop), now or once the step still
        running in its thread has ended."""
        step = self._step
        if step is None or step.done():
            self._ended(then)
        else:
            step.add_done_callback(lambda f: self._ended(then, f))

    def _ended(self, then: Callable[[], None], step: asyncio.Future[Any] | None = None,
               ) -> None:
        self._turns.release()
        if step is not None and not step.cancelled():
            step.exception()  # retrieved, also when the handler that waited for it is gone
        then()


async def _stream(request: web.Request, turn: _Turn, lines: Generator[bytes, None, None],
                  content_type: str) -> web.StreamResponse:
    """A snapshot's pieces sent as they come, every step off the loop under `turn` (ended
    here, and `lines` closed, once no step runs): the first spools the events (a failure is
    an error status; version 1's reads and signs the job records first)."""
    try:
        chunk = await turn.run(next, lines, b"")
        resp = web.StreamResponse(headers={"Content-Type": content_type})
        await resp.prepare(request)
        try:
            while chunk:
                await resp.write(chunk)
                chunk = await turn.run(next, lines, b"")  # SQLite reads off the loop
        except (asyncio.CancelledError, ConnectionError):
            raise
        except Exception as e:  # (the status is sent: no error answer can follow)
            log.warning("GET /api/snapshot: the stream ends early (the connection is closed: "
                        "its receiver sees it truncated): %s", e)
            if request.transport is not None:
                request.transport.abort()  # (close() would let aiohttp end it as complete)
            return resp
        await resp.write_eof()
        return resp
    finally:
        turn.end(lines.close)  # (its read transaction and spool files)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of this peer's registry (peer.http.metrics)."""
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": METRICS_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(OPENAPI)


def _webui_dir() -> Path:
    return Path(str(resources.files("webui")))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(_webui_dir() / "index.html")


def make_app(node: Host) -> web.Application:
    cfg = node.cfg
    quiet_client_errors()
    policy = Policy.for_bind(cfg.http_addr[0], cfg.allow_hosts, cfg.public_gateway,
                             cfg.subdomain_hosts)
    gate = Gate(HttpLimits.from_settings(cfg), open_files_limit())  # its middleware first
    auth = Auth(load_or_create_token(cfg.data_dir), policy,
                [c for s in node.mesh_secrets.secrets if (c := mesh_credential(s))],
                secure_cookie=cfg.tls_cert is not None,
                login_timeout_s=cfg.http_header_timeout_s, abandon_body=gate.abandon_body)
    app = web.Application(middlewares=[gate.middleware, auth.middleware, errors],
                          client_max_size=cfg.max_body_bytes)
    app[NODE] = node
    app[GATE] = gate
    app[IPFS_REFUSED] = Counter()
    app[RECORDS] = RecordCache()
    app[METRICS] = registry = Metrics(node)
    app[SNAPSHOTS] = asyncio.Semaphore(gate.limits.max_snapshot_serves)
    node.listeners.append(registry.on_event)
    auth.add_routes(app)
    r = app.router
    r.add_get("/api/health", health)
    r.add_get("/api/tasks", list_tasks)
    r.add_get("/api/jobs", list_jobs)
    r.add_get("/api/snapshot", snapshot)
    r.add_post("/api/jobs", submit)
    r.add_get("/api/jobs/{job}", get_job)
    r.add_delete("/api/jobs/{job}", delete_job)
    r.add_post("/api/gc", gc)
    r.add_post("/api/jobs/{job}/cancel", cancel_job)
    r.add_get("/api/jobs/{job}/tasks/{task}/log", task_log)
    r.add_get("/api/jobs/{job}/tasks/{task}/metrics", task_metrics)
    r.add_post("/api/add", add)
    r.add_post("/api/car", cars)
    r.add_get("/api/events", events)
    r.add_get("/api/peers", peers)
    r.add_post("/api/mesh/revoke", revoke)
    r.add_get("/api/openapi.json", openapi)
    r.add_get("/metrics", metrics)
    rpc_options = rpc.node_options(node)  # its IPNS records are the gateway's /ipns/ names too
    gateway.add_routes(app, node.store, fetch=node.fetcher.try_ensure, names=rpc_options["names"],
                       codec_conversion=node.cfg.gateway_codec_conversion,
                       subdomains=SubdomainConfig(policy.subdomain_hosts, policy.content_open))
    rpc.add_routes(app, node.store, refused=app[IPFS_REFUSED], **rpc_options)
    r.add_get("/", index)
    r.add_static("/ui/", _webui_dir(), show_index=False)
    app.on_response_prepare.append(ui_headers_hook(_webui_dir()))  # (review r1 F6)
    return app

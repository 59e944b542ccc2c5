"""Who holds and runs a lanes job (docs/design/partial-replication.md, sections 5.1, 5.3 and
5.4): whether a job is big enough to be one, its members in order, its home (who splits its
tasks without input, assembles and ends it), when it spreads to more peers (scale-out), what
a peer it adds waits for before it runs any of the job (the members' lanes as of the add)
and when a non-member takes it over (orphan takeover: once no member keeps it going,
`kept_until`). Pure functions of the workflow, the mesh state, the live peers (their
heartbeats) and a time passed in; a job without `members` (or any job while lanes are off,
`MeshState.lanes_on`) has none of this.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from peer.jobs.claims import Standing, TaskSkips, standing
from peer.jobs.retention import finished_at
from peer.jobs.spec import Workflow
from peer.log import Event, EventType, JobMembers, JobSubmitted, MeshState
from peer.log.fold import n_chunks
from peer.log.lanes import lane, lane_of
from peer.rendezvous import rendezvous
from tasks.registry import TaskDef


def lanes_size(wf: Workflow, catalog: Mapping[str, TaskDef]) -> float:
    """The tasks a job of `wf` runs, as its submitter weighs lanes against full replication
    (Node.lanes_members: a job of fewer than `lanes_min_job_tasks` is held in full): each
    task with a call counts one (a source of existing data by CID runs nothing), a task
    marked to split by its values (`TaskSpec.split_args`) its number of values (one chunk
    each: `planner.value_chunks`; as many as its call's check lets through, FETCH_FESTVOX's
    64 URLs), a per-item task as unbounded (math.inf): its items, and so its chunks, are
    listed only when it is split, from an input that at submit may not exist yet or not be
    held here."""
    n = 0.0
    for t in wf.tasks:
        if t.call is None:
            continue
        tdef = catalog.get(t.call)
        if tdef is not None and tdef.per_item:
            n += math.inf
        elif tdef is not None and t.split_args and tdef.split_arg is not None:
            n += len(t.params[tdef.split_arg])
        else:
            n += 1
    return n


def ordered(state: MeshState, job: str) -> list[str]:
    """The members of lanes job `job` in `members` order: its JOB_SUBMITTED's `members`
    (the home first, then the replicas), then those JOB_MEMBERS added, by rendezvous hash of
    the job (an order every peer computes alike from the folded set, whatever order the
    JOB_MEMBERS came in). Empty for a job that is no lanes job here (lanes off, no
    `members`, its JOB_SUBMITTED not held)."""
    held = state.members_of.get(job) if state.lanes_on else None
    if held is None or job not in state.jobs:
        return []
    first = named(state, job)
    return first + rendezvous(job, [p for p in held if p not in first])


def named(state: MeshState, job: str) -> list[str]:
    """The members of lanes job `job` that its (winning) JOB_SUBMITTED names in `members`,
    in that order (the submission members: the home first, then the replicas); empty if it
    is not held."""
    sub = state.jobs.get(job)
    return [] if sub is None else list(dict.fromkeys(sub.body_as(JobSubmitted).members or ()))


def home(job: str, state: MeshState, live: Collection[str]) -> str | None:
    """The peer that holds `job`'s home duties now (splitting its tasks without input,
    assembling them, its JOB_ENDED): the first member in `members` order that is in `live`
    (the live peers, the asking one included); None if none is (or no lanes job)."""
    return next((p for p in ordered(state, job) if p in live), None)


def running(state: MeshState, job: str, max_attempts: int, skips: TaskSkips | None = None,
            ) -> bool:
    """Is lanes job `job` held and not over: not cancelled, no JOB_ENDED folded, and (as far
    as this peer's fold shows: a non-member holds none of its task events) some task can
    still move on (`retention.finished_at`; `skips`: the failures a scheduler leaves out)?"""
    sub = state.jobs.get(job)
    return (sub is not None and job not in state.cancelled and job not in state.ended
            and finished_at(state, job, sub.payload["workflow"]["tasks"], max_attempts,
                            skips) is None)


def open_chunks(state: MeshState, job: str, tasks: Iterable[str], max_attempts: int,
                skips: TaskSkips | None = None) -> dict[str, int]:
    """Task -> the chunks of its winning split that are ready and unclaimed (their current
    attempt open: `claims.standing`, `skips` leaving out the failures a scheduler does), of
    `tasks` that are split and not done. Costs the chunks events are about that are not
    done, not the chunks the splits declare."""
    out: dict[str, int] = {}
    table = state.chunks
    for task in tasks:
        split = state.splits.get((job, task))
        if split is None or (job, task) in state.task_done:
            continue
        sk, n = (job, task, *split.id), n_chunks(split)
        untouched = n - sum(1 for i in table.of_split(sk) if i < n)
        skip = None if skips is None else skips(task)
        opened = sum(1 for i in list(table.open_or_failed(sk)) if i < n and standing(
            state.chunk(job, task, i), split.id, max_attempts, skip)[0] is Standing.OPEN)
        if untouched + opened:
            out[task] = untouched + opened
    return out


def spread_to(job: str, state: MeshState, live: Mapping[str, int], chunks: int,
              work_s: float, spread_s: float) -> list[str]:
    """The peers to add to lanes job `job`'s members (scale-out, design 5.3) when its
    `chunks` ready, unclaimed chunks hold `work_s` seconds of work: none while that is at
    most `spread_s` per slot of its live members; else the next live peers that are no
    members, by rendezvous hash of the job, until their slots with the members' hold it at
    that rate. While no live member has a usable slot, any open chunk is more than they hold,
    its work known or not (no run of its call ended yet: `work_s` 0), and the first peer at
    least is added (review i, session 42, I3: the job stalled while its member lived).
    `live`: the live peers that run at least one of the job's calls (the asking one
    included) -> their slots, those with none usable left out."""
    order = ordered(state, job)
    slots = sum(live[p] for p in order if p in live)
    if not order or not chunks or (slots and work_s <= spread_s * slots):
        return []
    need = math.inf if spread_s <= 0 else max(math.ceil(work_s / spread_s) - slots, 1)
    out: list[str] = []
    for p in rendezvous(job, [p for p in live if p not in order]):
        if need <= 0:
            break
        out.append(p)
        need -= max(live[p], 1)
    return out


def join_heads(me: str, job: str, heads: object) -> dict[str, int]:
    """What `me`, added to lanes job `job` by a JOB_MEMBERS, waits to hold before it runs
    any of the job (design 5.3): the JOB_MEMBERS's `heads` (lane origin -> seq, its adder's
    heads of the job's lanes then; LANES_FEATURE, written by `_spread` since session 38), of
    the job's lanes but `me`'s (it emitted nothing in the job: `joins`), each seq a positive
    int (a peer's wire data: anything else is left out, so a malformed entry waits for
    nothing). A lane of a peer that is no member as folded here is waited for too: its
    add (another origin's JOB_MEMBERS, in that origin's stream) may come after ours, and
    its lane events are held here whoever's they are (review e, session 41, E7). Empty
    without `heads` (an orphan takeover adds itself: there are no lanes to wait for; an
    adder of an earlier release)."""
    if not isinstance(heads, Mapping):
        return {}
    return {o: q for o, q in heads.items() if (got := lane_of(o)) is not None and got[1] == job
            and got[0] != me and type(q) is int and q > 0}


def caught_up(state: MeshState, heads: Mapping[str, int], since_hlc: int) -> bool:
    """Does `state` hold every lane of `heads` (a JOB_MEMBERS's, `join_heads`, of HLC
    `since_hlc`) as far as its adder held it then: contiguously up to its seq there, or up
    to an event of the lane made at or after `since_hlc` (its adder, whose clock had passed
    every event it held, held none such, so none past it either)? A seq an adder made up
    past a lane's end is waited for until that lane's next event comes, not lease_s."""
    held, logs = state.heads, state.by_origin
    for o, q in heads.items():
        h = held.get(o, 0)
        if h < q and ((last := logs.get(o, {}).get(h)) is None or last.hlc < since_hlc):
            return False
    return True


def joins(state: MeshState, me: str, job: str) -> bool:
    """Would `me` join lanes job `job` by a JOB_MEMBERS, and so wait for its lanes before it
    runs any of it (design 5.3)? It is a member (the add folded), the job's JOB_SUBMITTED
    does not name it in `members` (those run it from the start: they never wait), and it
    holds no lane of its own in the job (it emitted nothing there: it ran none of it). An
    earlier add that made it a member is the caller's to rule out (`Scheduler._added`,
    `first_adds`: the earliest add)."""
    sub = state.jobs.get(job)
    return (sub is not None and me in state.members_of.get(job, ())
            and me not in (sub.body_as(JobSubmitted).members or ())
            and lane(me, job) not in state.heads)


def first_adds(state: MeshState, me: str, jobs: Collection[str],
               ) -> dict[str, tuple[Event, dict[str, int]]]:
    """Of lanes jobs `jobs`, those `me` joins (`joins`: it is a member by an add alone and
    ran none of it) -> the earliest JOB_MEMBERS naming it held (the add that made it a
    member: a later one, a second home's or a hostile member's, does not make it wait
    again) and that add's `heads` (`join_heads`): what `Scheduler._join` waits for, or
    finds held, when no add was noted in this run (at `recover`, or a JOB_SUBMITTED folded
    after the add: `Scheduler._wait_to_join`). Derived from what is held (nothing of the
    wait is stored). One pass over the events in memory, and only if some job could be one
    (a peer restarted in none has no pass)."""
    maybe = {j for j in jobs if joins(state, me, j)}
    first: dict[str, Event] = {}
    for ev in state.events.values() if maybe else ():
        if ev.type is not EventType.JOB_MEMBERS:
            continue
        b = ev.body_as(JobMembers)
        if b.job in maybe and me in b.add and (
                (got := first.get(b.job)) is None or ev.order < got.order):
            first[b.job] = ev
    return {job: (ev, join_heads(me, job, ev.payload.get("heads")))
            for job, ev in first.items()}


def cannot_claim(info: Mapping[str, Any]) -> bool:
    """Does a live peer's heartbeat `info` say it can start no run: no usable slot (`slots`
    0: given-up workers hold every one, its executor wedged), or no free slot (`free_slots`
    0) with fewer runs than slots (`running`): it holds its claims back, its log unwritable
    (`Node.local_info`; a busy peer's runs fill its slots: it is not one). A heartbeat
    without these (an earlier release) or of odd types says nothing: False."""
    slots, free, runs = info.get("slots"), info.get("free_slots"), info.get("running")
    if type(slots) is not int:
        return False
    return slots <= 0 or (type(free) is int and free <= 0 and isinstance(runs, list)
                          and len(runs) < slots)


def busy(info: Mapping[str, Any]) -> bool:
    """Does a live peer's heartbeat `info` say its runs fill its usable slots (`slots` above
    0, `free_slots` 0, as many runs or more in `running`): it claims again once one of them
    ends, so a job it is a member of waits for its slot (review r2 of session 46, L3: an
    added member's sign that it keeps the job, `kept_until`). A heartbeat without these (an
    earlier release) or of odd types says nothing: False."""
    slots, free, runs = info.get("slots"), info.get("free_slots"), info.get("running")
    return (type(slots) is int and slots > 0 and type(free) is int and free <= 0
            and isinstance(runs, list) and len(runs) >= slots)


def kept_until(job: str, state: MeshState, live: Collection[str], stuck: Mapping[str, float],
               seen: Mapping[str, float], now: float, window_s: float) -> float:
    """Until when lanes job `job` is kept going by one of its members, as a non-member
    judges it (orphan takeover, design 5.4; review r1 M3, session 46): math.inf while a
    member its JOB_SUBMITTED names (`named`) is live and can claim (not in `stuck`: live
    peers that `cannot_claim` -> since when); else `window_s` past the last sign that a
    live member keeps it: a run of the job in its heartbeat, the job in its heartbeat's
    `working` (a fetch for its split or assembly, a wait for its lanes) or its slots all
    busy (`busy`: it waits for its slot) (review r2 of session 46, L3; `seen`: member ->
    when, `Scheduler.heard`, `_signs_seen`), for a member no JOB_SUBMITTED names the time
    it was first judged so (`seen`, else `now`: an added member gets a window to claim),
    for a named one since when it cannot claim; -math.inf if no member is live (or no
    lanes job). A live member that added itself and
    runs nothing of the job (or a named one that can claim nothing) keeps it no longer
    than that: the job is taken over (`takeover_at`)."""
    first = set(named(state, job))
    out = -math.inf
    for p in ordered(state, job):
        if p not in live:
            continue
        if p in first:
            if (since := stuck.get(p)) is None:
                return math.inf
            out = max(out, since + window_s, seen.get(p, -math.inf) + window_s)
        else:
            out = max(out, seen.get(p, now) + window_s)
    return out


def takeover_at(job: str, state: MeshState, me: str, live: Collection[str],
                orphaned_s: float, lease_s: float, wait_s: float) -> float | None:
    """When `me`, a live peer that is no member of lanes job `job`, adds itself to its
    members (orphan takeover, design 5.4) once no member keeps the job going (`kept_until`,
    the caller's to ask): `lease_s` after that began (at `orphaned_s`), and its rank among
    the live peers that are no members (`live`: those that run at least one of the job's
    calls, `me` included, whatever their usable slots: a rank that moves as they change lets
    two peers see their turn at once; a live member that keeps nothing going is no rank) by
    rendezvous hash of the job × `wait_s` more. None if `me` is a member, or no lanes job."""
    order = ordered(state, job)
    if not order or me in order:
        return None
    ranked = rendezvous(job, {*live, me} - set(order))
    return orphaned_s + lease_s + ranked.index(me) * wait_s

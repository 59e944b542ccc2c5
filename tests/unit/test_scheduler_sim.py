"""Schedulers on an in-memory mesh (peer/jobs/sim.py): claim races, leases, retries, restarts
and cancels with a fake clock and a fake runner; no processes, sockets or sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from peer.ipfs.store import StoreConfig
from peer.jobs import kinds
from peer.jobs.claims import task_status
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType
from tasks import registry
from tests.helpers import meshes

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3)
WRITE = {"name": "w", "call": "T_WRITE", "params": {"files": 2}}
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
UPPER = {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w"]}

TURN_S = max(CFG.stagger_s * 2, CFG.tick_s)  # time for a peer of rank 1 to take its turn
MeshFactory = Callable[..., JobMesh]


@pytest.fixture(params=[False, True], ids=["single", "batched"])
async def make_mesh(request: pytest.FixtureRequest) -> AsyncIterator[MeshFactory]:
    """Meshes whose peers emit single events (a mesh with a peer of the previous version)
    or a TURN per round: every scenario holds either way."""
    async with meshes(CATALOG, CFG, batch=request.param) as make:
        yield make


def runners_of(mesh: JobMesh, key: str) -> list[str]:
    """Peers whose runner was handed run `key`."""
    return [pid for pid, p in mesh.peers.items() if key in p.runner.started]


def only_runner(mesh: JobMesh, key: str) -> str:
    """The one peer running `key` (a duplicate started from stale load info has stopped)."""
    peers = [pid for pid, p in mesh.peers.items() if key in p.runner.running]
    assert len(peers) == 1, f"{key} runs on {peers}"
    return peers[0]


def chunk_events(mesh: JobMesh, typ: EventType, pid: str = "p0") -> list[Event]:
    return mesh.events(typ, pid, task="w")


async def started_job(mesh: JobMesh, tasks: list[dict[str, object]] | None = None,
                      ) -> tuple[str, str]:
    """Submit a job at p0 and settle: its id and the peer running chunk 0 of `w`."""
    job = mesh.submit("p0", tasks or [WRITE])
    await mesh.settle()
    return job, only_runner(mesh, f"{job}/w/0/0")


# -- a claim race ------------------------------------------------------------------------------
async def test_two_peers_racing_for_one_claim_run_it_once(make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    mesh.hold = lambda ev, to: ev.type == EventType.CLAIM  # claims are slow on the wire
    job = mesh.submit("p0", [WRITE])
    await mesh.settle()
    key = f"{job}/w/0/0"
    await mesh.advance(TURN_S)  # the second in rank takes its turn: a race
    assert sorted(runners_of(mesh, key)) == ["p0", "p1"]
    assert mesh["p0"].runner.targets[key] == kinds.RUNNER  # a python task's target
    claims = [mesh.events(EventType.CLAIM, pid, job=job)[0] for pid in ("p0", "p1")]
    winner = min(claims, key=lambda e: e.order).origin
    loser = "p1" if winner == "p0" else "p0"

    mesh.hold = None  # the claims arrive: the later one stops its duplicate
    await mesh.settle()
    assert mesh[loser].runner.cancelled == [key]
    assert mesh[winner].runner.cancelled == []
    assert mesh[loser].sched.runs == {}

    mesh[winner].runner.finish(key)
    await mesh.advance(CFG.lease_s * 3)
    for pid in mesh.peers:
        done = chunk_events(mesh, EventType.CHUNK_DONE, pid)
        assert [e.origin for e in done] == [winner]
        assert chunk_events(mesh, EventType.CHUNK_FAILED, pid) == []  # the loser records nothing
        assert task_status(mesh[pid].state, job, "w", CFG.max_attempts) == "done"
    assert len(mesh.events(EventType.TASK_DONE, job=job)) == 1


async def test_the_second_in_rank_waits_and_never_claims_a_claimed_chunk(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(3)
    job, holder = await started_job(mesh)
    await mesh.advance(TURN_S * 10)
    assert len(mesh.events(EventType.CLAIM, job=job)) == 1
    assert runners_of(mesh, f"{job}/w/0/0") == [holder]


async def test_a_run_on_a_losing_split_stops_and_the_task_is_done_once(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    mesh.hold = lambda ev, to: ev.type in (EventType.TASK_SPLIT, EventType.CLAIM)
    job = mesh.submit("p0", [WRITE])
    await mesh.settle()
    await mesh.advance(TURN_S)  # both split, each claims its own split's chunk
    splits = [mesh.events(EventType.TASK_SPLIT, pid, job=job)[0] for pid in ("p0", "p1")]
    assert sorted(s.origin for s in splits) == ["p0", "p1"]
    key = f"{job}/w/0/0"
    assert sorted(runners_of(mesh, key)) == ["p0", "p1"]
    winner = min(splits, key=lambda e: e.order).origin
    loser = "p1" if winner == "p0" else "p0"

    mesh.hold = None
    await mesh.settle()
    assert mesh[loser].runner.cancelled == [key]
    mesh[only_runner(mesh, key)].runner.finish(key)
    await mesh.settle()
    won = min(splits, key=lambda e: e.order).id
    for pid in mesh.peers:
        assert mesh[pid].state.split_id(job, "w") == won
        assert len(mesh.events(EventType.TASK_DONE, pid, job=job)) == 1
        [done] = chunk_events(mesh, EventType.CHUNK_DONE, pid)
        assert (done.origin, tuple(done.payload["split"])) == (winner, won)
        assert chunk_events(mesh, EventType.CHUNK_FAILED, pid) == []  # the loser records nothing


# -- leases ------------------------------------------------------------------------------------
async def test_a_lease_lapsing_on_a_silent_peer_is_failed_and_rerun_elsewhere(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job, holder = await started_job(mesh)
    other = "p1" if holder == "p0" else "p0"
    mesh.silent.add(holder)  # hung: it neither steps, sends, nor is heard

    await mesh.advance(CFG.lease_s * 0.9)
    assert chunk_events(mesh, EventType.CHUNK_FAILED, other) == []  # the lease still holds
    await mesh.advance(CFG.lease_s * 0.2)
    [failed] = chunk_events(mesh, EventType.CHUNK_FAILED, other)
    assert (failed.origin, failed.payload["kind"], failed.payload["attempt"]) == \
        (other, "lease", 0)
    assert only_runner(mesh, f"{job}/w/0/1") == other

    mesh[other].runner.finish(f"{job}/w/0/1")
    await mesh.settle()
    [done] = chunk_events(mesh, EventType.CHUNK_DONE, other)
    assert (done.origin, done.payload["attempt"]) == (other, 1)
    assert task_status(mesh[other].state, job, "w", CFG.max_attempts) == "done"


async def test_heartbeats_renew_the_lease_of_a_long_run(make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job, holder = await started_job(mesh)
    for _ in range(6):
        await mesh.advance(CFG.lease_s / 2)  # heartbeats flow every half lease
    assert mesh.events(EventType.CHUNK_FAILED, job=job) == []
    assert mesh[holder].runner.running == [f"{job}/w/0/0"]
    assert task_status(mesh["p0"].state, job, "w", CFG.max_attempts) == "running"


# -- a holder whose run failed -----------------------------------------------------------------
@pytest.mark.parametrize(("end", "kind", "retried"), [
    ("crash", "crash", True),
    ("timeout", "timeout", True),
    ("memory", "memory", True),
    ("error", "error", False),  # the task raised: not retried
    ("explode", "crash", True),  # the executor call itself raised
])
async def test_a_failed_run_is_retried_only_for_a_retryable_kind(
        make_mesh: MeshFactory, end: str, kind: str, retried: bool) -> None:
    mesh = make_mesh(2)
    job, holder = await started_job(mesh)
    runner = mesh[holder].runner
    if end == "explode":
        runner.explode(f"{job}/w/0/0")
    else:
        runner.fail(f"{job}/w/0/0", end, f"{end} happened")
    await mesh.advance(CFG.lease_s * 2)
    [failed] = chunk_events(mesh, EventType.CHUNK_FAILED)
    assert (failed.origin, failed.payload["kind"], failed.payload["attempt"]) == (holder, kind, 0)
    if not retried:
        assert runners_of(mesh, f"{job}/w/0/1") == []
        assert mesh.events(EventType.CLAIM, attempt=1) == []
        assert task_status(mesh["p1"].state, job, "w", CFG.max_attempts) == "failed"
        return
    mesh[only_runner(mesh, f"{job}/w/0/1")].runner.finish(f"{job}/w/0/1")
    await mesh.settle()
    assert task_status(mesh["p1"].state, job, "w", CFG.max_attempts) == "done"


async def test_a_chunk_failing_max_attempts_times_fails_its_task(make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job, _ = await started_job(mesh)
    for attempt in range(CFG.max_attempts):
        key = f"{job}/w/0/{attempt}"
        mesh[only_runner(mesh, key)].runner.fail(key, "crash")
        await mesh.advance(TURN_S)
    assert [e.payload["attempt"] for e in chunk_events(mesh, EventType.CHUNK_FAILED)] == [0, 1, 2]
    assert runners_of(mesh, f"{job}/w/0/{CFG.max_attempts}") == []
    await mesh.advance(CFG.lease_s * 2)
    assert {e.payload["attempt"] for e in mesh.events(EventType.CLAIM, job=job)} == {0, 1, 2}
    for pid in mesh.peers:
        assert task_status(mesh[pid].state, job, "w", CFG.max_attempts) == "failed"


async def test_runs_that_no_worker_slot_could_run_do_not_count_against_the_attempts(
        make_mesh: MeshFactory) -> None:
    """A run failed at once because its peer's workers given up hold every slot (the
    executor's `no_slot`) never started: it counted one of the chunk's max_attempts, so a
    task queued on such a peer could fail for good without once running (review h, session
    42). Its failure is marked not counted (as a claim released for want of a slot); the
    chunk runs again and its task ends done."""
    mesh = make_mesh(2)
    job, _ = await started_job(mesh)
    for attempt in range(CFG.max_attempts):
        key = f"{job}/w/0/{attempt}"
        mesh[only_runner(mesh, key)].runner.fail(key, "crash", "no worker can run it",
                                                 no_slot=True)
        await mesh.advance(TURN_S)
    failed = chunk_events(mesh, EventType.CHUNK_FAILED)
    assert [(e.payload["attempt"], e.payload["kind"], e.payload.get("counts"))
            for e in failed] == [(a, "crash", False) for a in range(CFG.max_attempts)]
    key = f"{job}/w/0/{CFG.max_attempts}"
    mesh[only_runner(mesh, key)].runner.finish(key)
    await mesh.settle()
    for pid in mesh.peers:
        assert task_status(mesh[pid].state, job, "w", CFG.max_attempts) == "done"


# -- a restart ---------------------------------------------------------------------------------
async def test_a_peer_restarting_mid_chunk_fails_its_claim_as_lost_and_it_reruns(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job, holder = await started_job(mesh)
    old = mesh[holder].runner
    await mesh.restart(holder)
    assert old.cancelled == [f"{job}/w/0/0"]  # the stop killed the worker...
    await mesh.settle()
    failed = chunk_events(mesh, EventType.CHUNK_FAILED)
    # ... and recorded nothing; the new scheduler fails the old claim as lost
    assert [(e.origin, e.payload["kind"], e.payload["attempt"]) for e in failed] == \
        [(holder, "lost", 0)]
    rerun = only_runner(mesh, f"{job}/w/0/1")
    mesh[rerun].runner.finish(f"{job}/w/0/1")
    await mesh.settle()
    [done] = chunk_events(mesh, EventType.CHUNK_DONE)
    assert (done.origin, done.payload["attempt"]) == (rerun, 1)
    assert task_status(mesh["p0"].state, job, "w", CFG.max_attempts) == "done"


async def test_a_restart_leaves_finished_chunks_and_others_claims_alone(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    job, holder = await started_job(mesh)
    other = "p1" if holder == "p0" else "p0"
    await mesh.restart(other)  # holds no claim
    await mesh.settle()
    assert mesh.events(EventType.CHUNK_FAILED, job=job) == []
    assert mesh[holder].runner.running == [f"{job}/w/0/0"]


async def test_a_peer_restarting_inside_a_cancelled_job_fails_its_claim_as_cancelled(
        make_mesh: MeshFactory) -> None:
    """The holder hears of the cancel and stops before its killed run recorded it: on
    restart its old claim is failed as cancelled (its job will not run again), not lost."""
    mesh = make_mesh(2)
    job, holder = await started_job(mesh)
    mesh.emit(holder, EventType.JOB_CANCELLED, {"job": job, "reason": "test"})
    await mesh.restart(holder)  # in the loop turn of the cancel: the run records nothing
    await mesh.settle()
    [failed] = chunk_events(mesh, EventType.CHUNK_FAILED)
    assert (failed.origin, failed.payload["kind"], failed.payload["attempt"]) == (
        holder, "cancelled", 0)
    await mesh.advance(CFG.lease_s * 3)
    assert all(p.runner.started == [] for p in mesh.peers.values())  # nothing runs again
    assert len(mesh.events(EventType.CLAIM, job=job)) == 1
    for pid in mesh.peers:
        assert task_status(mesh[pid].state, job, "w", CFG.max_attempts) == "cancelled"


# -- a cancel ----------------------------------------------------------------------------------
async def test_a_cancel_stops_local_runs_and_nothing_more_is_claimed(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(3)
    job, holder = await started_job(mesh, [WRITE, UPPER])
    canceller = next(p for p in mesh.peers if p != holder)
    mesh.emit(canceller, EventType.JOB_CANCELLED, {"job": job, "reason": "test"})
    await mesh.settle()
    assert mesh[holder].runner.cancelled == [f"{job}/w/0/0"]
    assert mesh[holder].sched.runs == {}
    [failed] = chunk_events(mesh, EventType.CHUNK_FAILED)
    assert (failed.origin, failed.payload["kind"]) == (holder, "cancelled")
    claims = len(mesh.events(EventType.CLAIM, job=job))
    await mesh.advance(CFG.lease_s * 3)
    assert len(mesh.events(EventType.CLAIM, job=job)) == claims == 1
    assert mesh.events(EventType.TASK_SPLIT, job=job, task="u") == []
    for pid in mesh.peers:
        assert task_status(mesh[pid].state, job, "w", CFG.max_attempts) == "cancelled"
        assert all(k.startswith(f"{job}/w/0/0") for k in mesh[pid].runner.started)


async def test_a_cancel_stops_a_run_still_fetching_its_input(make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    mesh.content.files[CID] = b"some input"  # a source another peer could serve
    for p in mesh.peers.values():
        p.data.stall = True  # fetches wait until released
    job = mesh.submit("p0", [{"name": "src", "cid": CID},
                             {"name": "w", "call": "T_CONCAT", "params": {}, "depends": ["src"]}])
    await mesh.settle()
    [fetching] = [p for p in mesh.peers.values() if p.sched.runs]
    assert fetching.runner.started == []  # claimed, still fetching its input
    mesh.emit("p1", EventType.JOB_CANCELLED, {"job": job, "reason": "test"})
    await mesh.settle()
    assert fetching.sched.runs == {}
    [failed] = mesh.events(EventType.CHUNK_FAILED, job=job)  # recorded as a worker's cancel
    assert (failed.origin, failed.payload["kind"], failed.payload["error"]) == (
        fetching.peer_id, "cancelled", "cancelled")
    for p in mesh.peers.values():
        p.data.release()
    await mesh.advance(CFG.lease_s * 3)
    assert all(p.runner.started == [] for p in mesh.peers.values())
    assert len(mesh.events(EventType.CLAIM, job=job)) == 1


async def test_a_cancel_in_the_loop_turn_of_a_claim_still_ends_it(make_mesh: MeshFactory) -> None:
    """A claim, then the cancel of its job before the run's task took its first step (so
    cancelled, its body never runs): the claim ends as a cancelled run's, and the slot frees."""
    mesh = make_mesh(1)
    job = mesh.submit("p0", [WRITE])
    p = mesh["p0"]
    p.sched.step()  # split and claim: the run's task is made, not yet started
    assert list(p.sched.runs) == [(job, "w", 0, 0)]
    mesh.emit("p0", EventType.JOB_CANCELLED, {"job": job, "reason": "test"})  # same loop turn
    await mesh.settle()
    assert p.sched.runs == {} and p.sched.running == [] and p.sched.free_slots == 1
    assert p.runner.started == []
    [failed] = mesh.events(EventType.CHUNK_FAILED, job=job)
    assert (failed.origin, failed.payload["kind"], failed.payload["error"]) == (
        "p0", "cancelled", "cancelled")


async def test_a_second_cancel_before_the_killed_run_resumes_leaves_its_record(
        make_mesh: MeshFactory) -> None:
    """Two peers cancel the job at once. The first cancel kills the worker; the second comes
    in the loop turns before the run resumes with that outcome (the runner no longer has the
    run): the run must not be stopped again, it records the cancel."""
    mesh = make_mesh(3)
    job, holder = await started_job(mesh)
    for pid in (p for p in mesh.peers if p != holder):
        mesh.emit(pid, EventType.JOB_CANCELLED, {"job": job, "reason": "test"})
    await mesh.settle()  # both cancels reach the holder in one loop turn
    p = mesh[holder]
    assert p.runner.cancelled == [f"{job}/w/0/0"]
    assert p.sched.runs == {} and p.sched.running == []
    [failed] = chunk_events(mesh, EventType.CHUNK_FAILED)
    assert (failed.origin, failed.payload["kind"], failed.payload["error"]) == (
        holder, "cancelled", "cancelled")


async def test_a_cancel_before_a_finished_run_resumes_leaves_its_outcome(
        make_mesh: MeshFactory) -> None:
    """The run ended (its result is in) and its job's cancel comes before the run resumed
    with it: nothing is left to kill, and the run records what it did."""
    mesh = make_mesh(2)
    job, holder = await started_job(mesh)
    key = f"{job}/w/0/0"
    mesh[holder].runner.finish(key)
    other = next(p for p in mesh.peers if p != holder)
    mesh.emit(other, EventType.JOB_CANCELLED, {"job": job, "reason": "test"})
    await mesh.settle()  # the cancel reaches the holder before its run resumed
    assert mesh[holder].runner.cancelled == []
    assert mesh[holder].sched.runs == {} and mesh[holder].sched.running == []
    [done] = chunk_events(mesh, EventType.CHUNK_DONE)
    assert (done.origin, done.payload["attempt"]) == (holder, 0)
    assert chunk_events(mesh, EventType.CHUNK_FAILED) == []
    assert task_status(mesh["p0"].state, job, "w", CFG.max_attempts) == "cancelled"


@pytest.mark.parametrize("end", ["finish", "fail"])
async def test_a_run_whose_job_was_deleted_meanwhile_emits_nothing_of_it(
        make_mesh: MeshFactory, end: str) -> None:
    """A run still going when its job is deleted (a duplicate of a chunk done elsewhere)
    records no outcome: once every member reported the deletion, an event of the job could
    reach a peer after it forgot the job (docs/architecture.md, Compaction, item 9)."""
    mesh = make_mesh(2)
    job, holder = await started_job(mesh)
    other = next(p for p in mesh.peers if p != holder)
    mesh.emit(other, EventType.JOB_DELETED, {"job": job, "reason": "test"})
    await mesh.settle()
    assert job not in mesh[holder].state.jobs
    key = f"{job}/w/0/0"
    getattr(mesh[holder].runner, end)(key)
    await mesh.settle()
    mesh.close_turns()
    assert mesh.sent(EventType.CHUNK_DONE, job=job) == []  # (emitted: memory would not
    assert mesh.sent(EventType.CHUNK_FAILED, job=job) == []  # keep it, its job deleted)
    assert mesh[holder].sched.running == []  # (its slot is free)


async def test_a_chunk_is_not_claimed_again_while_our_lost_run_of_it_ends(
        make_mesh: MeshFactory) -> None:
    """Our run of a chunk of a split that lost (an earlier split of the task came) is killed;
    while its (unrecorded) outcome is settled, the same attempt of the winning split's chunk
    must not be claimed: the old run's end would take the new run out of our runs (not
    reported, not killed by a cancel, its claim shown running forever)."""
    mesh = make_mesh(1)
    job, _ = await started_job(mesh)
    p, key = mesh["p0"], f"{job}/w/0/0"
    [ours] = mesh.events(EventType.TASK_SPLIT, job=job)
    early = Event("px", 1, ours.hlc - 1, EventType.TASK_SPLIT, dict(ours.payload))
    assert p.state.apply(early)  # another peer's earlier split of the task: it wins
    p.sched.poke(early)
    p.sched.step()
    assert p.runner.cancelled == [key]  # our run of the losing split is stopped
    for _ in range(10):  # until the killed run has left the active runs (finishing)
        await asyncio.sleep(0)
        if not p.sched.runs:
            break
    assert p.sched.running != []  # its outcome is being settled
    p.sched.poke(early)  # any event of the task: a round in that window
    p.sched.step()
    await mesh.settle()
    assert p.runner.running == [key]  # the winning split's chunk runs here now...
    assert list(p.sched.runs) == [(job, "w", 0, 0)]  # ...as one of our runs
    mesh.emit("p0", EventType.JOB_CANCELLED, {"job": job, "reason": "test"})
    await mesh.settle()
    assert p.runner.running == [] and p.sched.runs == {}
    failed = [e for e in mesh.events(EventType.CHUNK_FAILED, job=job)
              if tuple(e.payload["split"]) == early.id]
    assert [(e.origin, e.payload["kind"]) for e in failed] == [("p0", "cancelled")]


# -- a whole pipeline --------------------------------------------------------------------------
async def test_a_two_step_pipeline_runs_to_the_end_on_three_peers(make_mesh: MeshFactory) -> None:
    mesh = make_mesh(3, auto=True)
    job = mesh.submit("p0", [{**WRITE, "params": {"files": 8}}, UPPER])
    await mesh.advance(TURN_S)
    [split] = mesh.events(EventType.TASK_SPLIT, job=job, task="u")
    assert [len(c) for c in split.payload["chunks"]] == [4, 4]
    for pid in mesh.peers:
        assert task_status(mesh[pid].state, job, "u", CFG.max_attempts) == "done"
    done = mesh.events(EventType.CHUNK_DONE, job=job, task="u")
    assert sorted(e.payload["chunk"] for e in done) == [0, 1]  # each chunk ran once
    [out] = mesh.events(EventType.TASK_DONE, job=job, task="u")
    listing = mesh.content.dirs[out.payload["output"]]
    assert sorted(listing) == [f"f{i:04d}.txt" for i in range(8)]


# -- batched events (issue 12) -------------------------------------------------------------
async def test_one_round_claims_and_finishes_many_tasks_in_few_events(
        make_mesh: MeshFactory) -> None:
    """Eight independent tasks on two peers of 4 slots: with turns, each peer's events of a
    round (splits, claims, outcomes, finished tasks) are one TURN event; without (a peer of
    the previous version in the mesh), one event each. The outcome is the same: every task
    done once, by a run of the winning claim."""
    mesh = make_mesh(2, slots=4, auto=True)
    tasks = [{"name": f"e{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)}}
             for i in range(8)]
    job = mesh.submit("p0", tasks)
    await mesh.advance(TURN_S)
    await mesh.advance(TURN_S)
    for pid in mesh.peers:
        assert len(mesh.events(EventType.TASK_DONE, pid, job=job)) == 8
        assert {e.payload["task"] for e in mesh.events(EventType.CHUNK_DONE, pid, job=job)} == {
            t["name"] for t in tasks}
    runs = [k for p in mesh.peers.values() for k in p.runner.started]
    assert sorted(runs) == sorted(f"{job}/e{i}/0/0" for i in range(8))  # each ran once
    kinds = [e.type for p in mesh.peers.values() for e in p.emitted]
    if mesh.batch:
        assert EventType.TURN in kinds
        assert len(kinds) <= 16  # split + claim + chunk done + task done each: 32 singles
    else:
        assert EventType.TURN not in kinds and len(kinds) >= 8 * 4


async def test_a_round_reads_the_live_peers_once_however_many_tasks_it_evaluates(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(2)
    sched = mesh["p0"].sched
    reads: list[int] = []
    peers = sched.peers
    sched.peers = lambda: reads.append(1) or peers()  # type: ignore[method-assign]
    job = mesh.submit("p0", [{**WRITE, "name": f"w{i}"} for i in range(20)])
    sched.step()  # the 20 ready tasks of the submission: planned (split) in one round
    assert len(reads) == 1
    assert len(mesh.events(EventType.TASK_SPLIT, "p0", job=job)) >= 1
    reads.clear()
    sched.step()  # the splits marked the tasks again: the next round reads afresh, once
    assert reads == [1]


async def test_outputs_finished_while_a_pin_runs_are_pinned_together(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(1)
    sched, store = mesh["p0"].sched, mesh["p0"].store
    batches: list[list[str]] = []
    gate = asyncio.Event()

    async def gated(fn: Callable[[], Any]) -> Any:
        await gate.wait()  # a slow disk: the first pin is still under way
        return fn()

    store.pin_many = lambda cids: batches.append(list(cids))  # type: ignore[method-assign]
    sched.offload = gated  # type: ignore[assignment]
    for cid in ("c1", "c2", "c3"):
        sched._pin_soon(cid)
        await asyncio.sleep(0)
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert batches == [["c1"], ["c2", "c3"]]  # the first at once, the rest in one batch


async def test_a_runs_outcome_its_tasks_completion_and_the_next_claim_share_a_loop_turn(
        ) -> None:
    mesh = JobMesh(1, CATALOG, CFG, auto=True, batch=True)
    turn = [0]  # loop iterations so far (a callback that reschedules itself each iteration)
    loop = asyncio.get_running_loop()

    def count() -> None:
        turn[0] += 1
        if turn[0] < 10_000:
            loop.call_soon(count)

    when: dict[tuple[EventType, str], int] = {}
    emit = mesh.emit

    def spy(pid: str, typ: EventType, payload: dict[str, Any]) -> Event:
        when.setdefault((typ, str(payload.get("task"))), turn[0])
        return emit(pid, typ, payload)

    mesh.emit = spy  # type: ignore[method-assign]
    try:
        await mesh["p0"].sched.start()  # its own loop, as in a peer
        loop.call_soon(count)
        mesh.submit("p0", [{**WRITE, "name": "a"}, {**WRITE, "name": "b"}])
        async with asyncio.timeout(10):
            while (EventType.TASK_DONE, "b") not in when:
                await asyncio.sleep(0.01)
        first = "a" if when[(EventType.CLAIM, "a")] < when[(EventType.CLAIM, "b")] else "b"
        second = "b" if first == "a" else "a"
        # one slot: the second task is claimed as the first one's outcome is recorded
        assert when[(EventType.CHUNK_DONE, first)] == when[(EventType.TASK_DONE, first)] \
            == when[(EventType.CLAIM, second)]
    finally:
        turn[0] = 10_000
        await mesh.close()


async def test_a_peer_ticks_only_while_something_waits_on_time(make_mesh: MeshFactory) -> None:
    """`timed()` (the loop's fast tick) holds while a claim, a lease of another peer or a
    stagger is being watched, and not once every job is done: an idle peer's loop sleeps
    until an event wakes it."""
    mesh = make_mesh(2)
    assert not any(p.sched.timed() for p in mesh.peers.values())  # nothing submitted yet
    job, holder = await started_job(mesh)
    other = "p1" if holder == "p0" else "p0"
    assert mesh[holder].sched.timed()  # its own claims, checked at each tick
    assert mesh[other].sched.timed()  # the holder's leases, watched at each tick
    for key in list(mesh[holder].runner.running):
        mesh[holder].runner.finish(key)
    await mesh.advance(TURN_S * 4)
    assert task_status(mesh[other].state, job, "w", CFG.max_attempts) == "done"
    await mesh.advance(TURN_S)  # the next tick forgets what it watched for the finished task
    assert not any(p.sched.timed() for p in mesh.peers.values())


async def test_a_peer_claims_the_task_it_splits_in_the_same_round() -> None:
    """The split and the claim of its chunk are parts of one TURN: one loop turn, one
    signature, one write and one frame before the run starts, not two."""
    mesh = JobMesh(1, CATALOG, CFG, batch=True)
    try:
        job = mesh.submit("p0", [WRITE])
        mesh.close_turns()  # the submission goes out on its own (not a part of a turn)
        mesh["p0"].sched.step()  # one evaluation round
        mesh.close_turns()
        last = mesh["p0"].emitted[-1]
        assert last.type == EventType.TURN
        assert [e.type for e in last.singles] == [EventType.TASK_SPLIT, EventType.CLAIM]
        await asyncio.sleep(0)
        assert mesh["p0"].runner.started == [f"{job}/w/0/0"]
    finally:
        await mesh.close()


async def test_a_staggered_peer_takes_its_turn_when_it_comes_not_at_the_next_tick() -> None:
    """Splits slow on the wire: the peer of rank 1 splits (and claims) once its split_wait_s
    has passed; its loop sleeps until then, not for a whole tick."""
    cfg = SchedulerConfig(store=CFG.store, lease_s=CFG.lease_s, stagger_s=0.05, tick_s=10.0)
    mesh = JobMesh(2, CATALOG, cfg, batch=True)
    mesh.hold = lambda ev, to: ev.type == EventType.TASK_SPLIT
    try:
        job = mesh.submit("p0", [WRITE])
        await mesh.settle()
        split = {pid for pid in mesh.peers if mesh.events(EventType.TASK_SPLIT, pid, job=job)}
        assert len(split) == 1  # rank 0 at once
        (later,) = set(mesh.peers) - split
        sched = mesh[later].sched
        # a task without input: split_wait_s and split_wait_per_task_s per task, per rank
        wait = cfg.split_wait_s + cfg.split_wait_per_task_s
        assert sched.sleep_s() == pytest.approx(wait)  # not tick_s
        await mesh.advance(wait / 2)
        assert not mesh.events(EventType.TASK_SPLIT, later, job=job)
        assert sched.sleep_s() == pytest.approx(wait / 2)
        await mesh.advance(wait / 2 + 1e-9)  # far less than a tick: its turn came
        assert mesh.events(EventType.TASK_SPLIT, later, job=job)
        assert sched.sleep_s() == pytest.approx(cfg.tick_s)
    finally:
        await mesh.close()


# -- results of other peers' chunks (issue 12: MFCC on two pinned peers) ---------------------
async def test_the_splitter_fetches_a_chunk_done_elsewhere_at_once_not_at_the_partials_pace(
        ) -> None:
    """A per-item task in three chunks on two peers: right after the splitter published a
    PARTIAL (the next one is due only after progress_interval_s), the other peer finishes
    a chunk; the splitter fetches that chunk's results at once, so that its final assembly
    does not wait for them after its own last chunk."""
    cfg = SchedulerConfig(store=CFG.store, lease_s=CFG.lease_s, stagger_s=0.05,
                          max_chunk_items=4, progress_interval_s=0.5)
    mesh = JobMesh(2, CATALOG, cfg, batch=True)
    try:
        job = mesh.submit("p0", [{**WRITE, "params": {"files": 12}}, UPPER])
        await mesh.settle()
        w = only_runner(mesh, f"{job}/w/0/0")
        mesh[w].runner.finish(f"{job}/w/0/0")
        await mesh.advance(TURN_S)
        [split] = mesh.events(EventType.TASK_SPLIT, job=job, task="u")
        assert [len(c) for c in split.payload["chunks"]] == [4, 4, 4]
        s = split.origin
        (o,) = set(mesh.peers) - {s}
        mine = next(k for k in mesh[s].runner.running if k.startswith(f"{job}/u/"))
        theirs = next(k for k in mesh[o].runner.running if k.startswith(f"{job}/u/"))
        mesh[s].runner.finish(mine)
        await mesh.settle()
        assert mesh.events(EventType.PARTIAL, s, job=job, task="u")  # next one not yet due
        made = [v["c"] for v in mesh[o].runner._output(theirs)["items"].values()]
        mesh[o].runner.finish(theirs)
        await mesh.settle()  # no time passes
        assert len(mesh.events(EventType.CHUNK_DONE, s, job=job, task="u")) == 2
        assert set(made) <= set(mesh[s].data.fetched)
        assert len(mesh.events(EventType.PARTIAL, s, job=job, task="u")) == 1
    finally:
        await mesh.close()


# -- who splits a task whose input several peers hold -------------------------------------
SPLITS = (EventType.TASK_SPLIT, EventType.TASK_SPLIT_REF)
SPLIT_W = CFG.split_wait_s


async def _input_everywhere(mesh: JobMesh) -> tuple[str, str]:
    """A job of `w` (8 files) then `u` (per item): `w` ends on one peer (the producer),
    whose TASK_DONE and split of `u` are held while every other peer gets `w`'s output (as
    replication does) and says so; then `w`'s TASK_DONE goes out (splits stay held). The
    job and the producer."""
    mesh.hold = lambda ev, to: ev.type == EventType.TASK_DONE or u_split(ev)
    job = mesh.submit("p0", [{**WRITE, "params": {"files": 8}}, UPPER])
    await mesh.settle()
    producer = only_runner(mesh, f"{job}/w/0/0")
    mesh[producer].runner.finish(f"{job}/w/0/0")
    await mesh.settle()
    assert splitters(mesh, job) == [producer]  # at once
    out = mesh.events(EventType.TASK_DONE, producer, job=job, task="w")[0].payload["output"]
    for pid in set(mesh.peers) - {producer}:
        mesh[pid].data.mark(out)
        mesh.emit(pid, EventType.PROVIDE, {"cids": [out]})
    mesh.hold = lambda ev, to: u_split(ev)
    await mesh.settle()  # every peer holds the input and knows that `w` is done
    for pid in mesh.peers:
        assert mesh[pid].state.providers[out] == set(mesh.peers)
        assert (job, "w") in mesh[pid].state.task_done
    return job, producer


def u_split(ev: Event) -> bool:
    return ev.type in SPLITS and ev.payload["task"] == "u"


def splitters(mesh: JobMesh, job: str) -> list[str]:
    """The peers that emitted a split of `u`."""
    mesh.close_turns()
    return sorted({s.origin for p in mesh.peers.values() for e in p.emitted for s in e.singles
                   if u_split(s) and s.payload["job"] == job})


def splits_seen(mesh: JobMesh, pid: str, job: str) -> list[str]:
    """The origins of the splits of `u` that `pid` folded."""
    return [e.origin for e in mesh.events(EventType.TASK_SPLIT, pid, job=job, task="u")]


@pytest.mark.parametrize("n", [2, 3])
async def test_peers_holding_the_input_leave_its_split_to_the_producer(
        make_mesh: MeshFactory, n: int) -> None:
    """Every peer holds `u`'s input when `w`'s TASK_DONE reaches it: the producer splits
    at once, the others wait split_wait_s per rank and see its split meanwhile (a second
    split would lose, and its runs be killed)."""
    mesh = make_mesh(n)
    job, producer = await _input_everywhere(mesh)
    assert splitters(mesh, job) == [producer]  # no time has passed: the others wait
    mesh.hold = None
    await mesh.settle()
    for p in mesh.peers.values():  # the chunks of `u` run to the end
        p.runner.auto = True
        for key in p.runner.running:
            p.runner.finish(key)
    await mesh.advance(SPLIT_W * n)
    assert splitters(mesh, job) == [producer]
    for pid in mesh.peers:
        assert splits_seen(mesh, pid, job) == [producer]
        assert task_status(mesh[pid].state, job, "u", CFG.max_attempts) == "done"


async def test_a_hung_producer_is_taken_over_after_split_wait_s(make_mesh: MeshFactory,
                                                                ) -> None:
    """The producer is still heard but its split never comes: the holder of rank 1 splits
    after split_wait_s, the one of rank 2 sees that split in its wait and does not."""
    mesh = make_mesh(3)
    job, producer = await _input_everywhere(mesh)
    mesh.hold = lambda ev, to: ev.origin == producer and u_split(ev)
    await mesh.advance(SPLIT_W * 0.9)  # (a tick passes: its turn is not due yet)
    assert splitters(mesh, job) == [producer]
    await mesh.advance(SPLIT_W * 0.2)
    [taker] = set(splitters(mesh, job)) - {producer}
    await mesh.advance(SPLIT_W * 3)
    assert splitters(mesh, job) == sorted([producer, taker])
    for pid in set(mesh.peers) - {producer}:
        assert splits_seen(mesh, pid, job) == [taker]


async def test_when_the_producer_left_the_next_holder_splits_at_its_next_tick(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh(3)
    job, producer = await _input_everywhere(mesh)
    mesh.hold = lambda ev, to: ev.origin == producer and u_split(ev)
    mesh.silent.add(producer)  # gone: no longer a live peer (its split never came)
    assert CFG.tick_s / 2 < SPLIT_W * 0.75
    await mesh.advance(SPLIT_W * 0.75)  # a tick, before the wait of rank 1 ends
    [taker] = set(splitters(mesh, job)) - {producer}
    await mesh.advance(SPLIT_W * 3)
    assert splitters(mesh, job) == sorted([producer, taker])
    for pid in set(mesh.peers) - {producer}:
        assert splits_seen(mesh, pid, job) == [taker]


async def test_a_lone_peer_splits_the_next_task_as_soon_as_its_input_is_made() -> None:
    """One peer: no wait for a split (nor for a tick): the pipeline runs through at once."""
    mesh = JobMesh(1, CATALOG, CFG, auto=True)
    try:
        job = mesh.submit("p0", [{**WRITE, "params": {"files": 8}}, UPPER])
        await mesh.settle()  # no time passes
        assert task_status(mesh["p0"].state, job, "u", CFG.max_attempts) == "done"
    finally:
        await mesh.close()

"""Partial replication, step 6 (docs/design/partial-replication.md, sections 3, 5.2 and 8):
Schedulers on an in-memory mesh with lanes on (peer/jobs/sim.py `JobMesh(lanes=True)`: a
lanes job's task events travel in its members' lanes; a non-member drops those that reach
it). A peer that is no member of a job runs none of its tasks and folds none of its lanes;
its members run it, and its home emits one JOB_ENDED (in its mesh stream), which every peer
folds: the non-member's cache then holds the members' entries for the job's tasks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from peer.http.views import job_record, job_view
from peer.ipfs.store import StoreConfig
from peer.jobs import scheduler
from peer.jobs.ports import SchedulerConfig
from peer.jobs.retention import ended_hlc, finished_at, record_facts
from peer.jobs.sim import JobMesh
from peer.log import EventType, JobSubmitted, MeshState
from peer.log.lanes import lane
from peer.log.snapframe import job_digest3, outputs_sha
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3)
TURN_S = max(CFG.stagger_s * 2, CFG.tick_s)
TASKS = [*({"name": f"w{i}", "call": "T_WRITE", "params": {"files": 1}} for i in range(5)),
         {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w0"]}]
MeshFactory = Callable[..., JobMesh]


@pytest.fixture(params=[False, True], ids=["single", "batched"])
async def make_mesh(request: pytest.FixtureRequest) -> AsyncIterator[MeshFactory]:
    meshes: list[JobMesh] = []

    def make(n: int = 3, **kw: object) -> JobMesh:
        mesh = JobMesh(n, CATALOG, CFG, auto=True, lanes=True, batch=request.param,
                       **kw)  # type: ignore[arg-type]
        meshes.append(mesh)
        return mesh

    yield make
    for m in meshes:
        await m.close()


async def run_to_end(mesh: JobMesh, job: str, rounds: int = 40) -> None:
    for _ in range(rounds):
        await mesh.advance(TURN_S)
        if all(job in p.state.ended for pid, p in mesh.peers.items()
               if pid not in mesh.silent):
            return
    raise AssertionError("the job did not end everywhere")


def job_endeds(s: MeshState) -> list[str]:
    """The origins of the JOB_ENDEDs held."""
    return [e.origin for e in s.events.values() if e.type == EventType.JOB_ENDED]


async def test_a_non_member_runs_nothing_folds_no_lane_and_the_home_ends_the_job_once(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh()
    a, b, c = mesh.peers
    job = mesh.submit(a, TASKS, implicit=None, members=[a, b])
    await run_to_end(mesh, job)
    for _ in range(3):  # (nothing more comes)
        await mesh.advance(TURN_S)
    other = mesh[c].state
    assert not mesh[c].runner.started and not mesh[c].sched.runs  # (2b5ab6b: it ran tasks)
    assert mesh[c].refused > 0  # lane events came, and were dropped
    assert not other.lanes and not any("/" in o for o in other.heads)
    assert not any(k[0] == job for k in (*other.splits, *other.task_done))
    assert not any(k.job == job for k in other.chunks)
    assert {e.origin for e in mesh.sent(EventType.JOB_ENDED)} == {a}
    assert len(mesh.sent(EventType.JOB_ENDED)) == 1
    home = mesh[a].state
    for pid in mesh.peers:  # one JOB_ENDED, the home's, folded everywhere
        assert job_endeds(mesh[pid].state) == [a]
        assert mesh[pid].state.ended[job].origin == a and not mesh[pid].state.unended
    ended = home.ended[job].payload
    assert ended["state"] == "done" and ended["n_tasks"] == len(TASKS)
    assert set(ended["outputs"]) == {t["name"] for t in TASKS}
    keys = [ended["outputs"][t][0] for t in ended["outputs"]]
    assert all(keys)
    for k in keys:  # the non-member's cache: the members' entries, of the same orders
        assert other.outputs[k] == home.outputs[k] == mesh[b].state.outputs[k]
        assert other._outputs_src[k] == home._outputs_src[k]
    for t, (_key, cid, hlc, origin, seq) in ended["outputs"].items():
        done = home.task_done[(job, t)]
        assert (cid, hlc, origin, seq) == (done.payload["output"], *done.order)
        assert origin.startswith(a + "/") or origin.startswith(b + "/")  # (in a lane)
        assert other.providers.get(cid) == home.providers.get(cid)


async def test_the_job_ended_carries_the_digest_of_the_members_record(
        make_mesh: MeshFactory) -> None:
    """What a compacted member's thin row has (`snapframe.job_digest3` of its index row:
    the JOB_SUBMITTED's order, the record's end and state, its facts' outputs)."""
    mesh = make_mesh()
    a, b, _c = mesh.peers
    job = mesh.submit(a, TASKS, implicit=None, members=[a, b])
    await run_to_end(mesh, job)
    s = mesh[a].state
    sub = s.jobs[job]
    end_s = finished_at(s, job, sub.body_as(JobSubmitted).workflow["tasks"], CFG.max_attempts)
    assert end_s is not None
    record = job_record(s, job, CFG.max_attempts)
    facts = record_facts(record, end_s)
    want = job_digest3(job, sub.hlc, sub.origin, sub.seq, ended_hlc(end_s), record["state"],
                       outputs_sha(facts["outputs"]))
    assert s.ended[job].payload["digest"] == want
    assert s.ended[job].payload["end"] == ended_hlc(end_s)


async def test_the_home_does_not_end_a_job_twice_even_restarted(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh()
    a, b, _c = mesh.peers
    job = mesh.submit(a, TASKS, implicit=None, members=[a, b])
    await run_to_end(mesh, job)
    await mesh.restart(a)
    for _ in range(3):
        await mesh.advance(TURN_S)
    assert len(mesh.sent(EventType.JOB_ENDED)) == 1


async def test_the_first_live_member_ends_the_job_when_the_home_is_not_live(
        make_mesh: MeshFactory) -> None:
    mesh = make_mesh()
    a, b, c = mesh.peers
    job = mesh.submit(a, TASKS, implicit=None, members=[a, b])
    await mesh.settle()
    mesh.silent.add(a)  # the home goes silent mid-job: b finishes what is left, and ends it
    await run_to_end(mesh, job, rounds=200)
    assert {e.origin for e in mesh.sent(EventType.JOB_ENDED)} == {b}
    assert not mesh[c].runner.started


async def test_a_members_rankings_name_members_only(make_mesh: MeshFactory) -> None:
    """Who splits, claims or comes first for a lanes job's task is a member: nobody waits
    a turn for a peer that holds none of its claims."""
    mesh = make_mesh(4)
    a, b, *others = mesh.peers
    job = mesh.submit(a, TASKS, implicit=True, members=[a, b])
    mesh.deliver()
    sched, everyone = mesh[b].sched, list(mesh.peers)
    for t in TASKS:
        key = (job, str(t["name"]))
        assert sched._first_peer(key, everyone) in {a, b}
        if not t.get("depends"):
            assert set(sched._implicit_rank(job, key[1], str(t["call"]))) == {a, b}
            assert set(sched._claimers(key, {}) or {}) == {a}
    other = mesh.submit(a, TASKS, implicit=True, members=everyone)  # (a job of all four)
    mesh.deliver()
    assert set(sched._implicit_rank(other, "w0", "T_WRITE")) == set(everyone)
    mesh.emit(a, EventType.JOB_MEMBERS, {"job": job, "add": [others[0]]})  # one joins
    mesh.deliver()
    assert set(sched._implicit_rank(job, "w1", "T_WRITE")) == {a, b, others[0]}


async def test_outputs_over_a_quarter_of_max_split_bytes_go_as_a_listing() -> None:
    """As a large split's chunks: the JSON object {"outputs", "producers"} stored as a
    file, named by the JOB_ENDED's `listing` (its own `outputs` and `producers` empty)."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                          max_attempts=3, max_split_bytes=1600)
    mesh = JobMesh(3, CATALOG, cfg, auto=True, lanes=True)
    try:
        a, b, _c = mesh.peers
        job = mesh.submit(a, TASKS, implicit=None, members=[a, b])
        await run_to_end(mesh, job)
        p = mesh[a].state.ended[job].payload
        assert p["outputs"] == p["producers"] == {} and p["listing"]
        listed = json.loads(mesh.content.files[p["listing"]])
        assert set(listed["outputs"]) == {t["name"] for t in TASKS}
        assert set(listed["producers"]) <= {o[1] for o in listed["outputs"].values()}
        assert len(json.dumps(listed, separators=(",", ":"))) > cfg.max_split_bytes // 4
        assert p["listing"] in mesh[a].store.pinned
    finally:
        await mesh.close()


async def test_the_home_ends_the_job_once_it_stayed_finished_for_the_grace(
        make_mesh: MeshFactory) -> None:
    """(Review r1, risk 5: on 99be419 the home emits at the first tick its fold says the job
    finished, maybe before a push or a pair round brought another member's last lane
    events.) The end it carries is still the job's end."""
    mesh = make_mesh()
    a, b, _c = mesh.peers
    job = mesh.submit(a, TASKS, implicit=None, members=[a, b])
    await run_to_end(mesh, job, rounds=80)
    s = mesh[a].state
    end_s = finished_at(s, job, s.jobs[job].body_as(JobSubmitted).workflow["tasks"],
                        CFG.max_attempts)
    assert end_s is not None
    [ended] = mesh.sent(EventType.JOB_ENDED)
    assert (ended.hlc >> 16) / 1000 >= end_s + CFG.end_grace_s
    assert (ended.hlc >> 16) / 1000 <= end_s + CFG.end_grace_s + 2 * TURN_S
    assert ended.payload["end"] == ended_hlc(end_s)


async def test_the_home_makes_a_jobs_end_again_only_after_an_event_of_the_job(
        make_mesh: MeshFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Review r1, risk 4: on 99be419 the home made `job_ended` of every running lanes job
    at every tick: 0.6 ms a call with 1,000 tasks waiting.)"""
    calls: list[str] = []
    real = scheduler.job_ended

    def counted(state: MeshState, job: str, max_attempts: int) -> object:
        calls.append(job)
        return real(state, job, max_attempts)

    monkeypatch.setattr(scheduler, "job_ended", counted)
    mesh = make_mesh()
    a, b, _c = mesh.peers
    for p in mesh.peers.values():
        p.runner.auto = False  # (runs stay open: no event of the job)
    mesh.submit(a, TASKS, implicit=None, members=[a, b])
    await mesh.settle()
    for _ in range(3):
        await mesh.advance(TURN_S)
    before = len(calls)
    for _ in range(20):
        await mesh.advance(TURN_S)
    assert len(calls) == before


async def test_a_home_whose_job_ended_its_fold_refuses_for_good_emits_it_once(
        make_mesh: MeshFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Session 40.) A JOB_ENDED whose body alone is flawed (`end_flaw`; here an output's
    order past the end, as a clock set back could make) is kept in no table (on a95f359 it
    stayed in `unended` until its job left memory), and its home, which that table held
    back, does not emit another one every end_grace_s."""
    real = scheduler.job_ended

    def flawed(state: MeshState, job: str, max_attempts: int) -> dict[str, Any] | None:
        got = real(state, job, max_attempts)
        if got is not None:
            for out in got["outputs"].values():
                out[2] += 1000_000 << 16  # (its TASK_DONE's HLC 1,000 s later: past the end)
        return got

    monkeypatch.setattr(scheduler, "job_ended", flawed)
    mesh = make_mesh()
    a, b, _c = mesh.peers
    job = mesh.submit(a, TASKS, implicit=None, members=[a, b])
    for _ in range(40):
        await mesh.advance(TURN_S)
        if mesh.sent(EventType.JOB_ENDED):
            break
    for _ in range(int(4 * CFG.end_grace_s / TURN_S)):
        await mesh.advance(TURN_S)
    [ended] = mesh.sent(EventType.JOB_ENDED)
    assert ended.origin == a
    for pid in mesh.peers:
        st = mesh[pid].state
        assert job not in st.ended and not st.unended and st.holds(ended.id)


async def test_a_members_view_names_the_peers_that_ran_chunks_not_their_lanes(
        make_mesh: MeshFactory) -> None:
    """A chunk's runner (`peer`) and a task's `peers` in the job view and record are peer
    ids: a lanes job's outcomes come in lanes ("<peer>/<job>"), whose peer ran them (591f744
    showed the lane: the web UI and bench_mesh name no peer by it)."""
    mesh = make_mesh()
    a, b, _ = mesh.peers
    job = mesh.submit(a, TASKS, implicit=None, members=[a, b])
    await run_to_end(mesh, job)
    view = job_view(mesh[a].state, job, CFG.max_attempts)
    ran = {c["peer"] for t in view["tasks"] for c in t["chunks"]}
    assert ran and ran <= {a, b}, ran
    record = job_record(mesh[a].state, job, CFG.max_attempts)
    assert {p for t in record["tasks"] for p in t["peers"]} == ran


async def test_a_member_behind_runs_nothing_of_a_job_whose_job_ended_it_holds(
        make_mesh: MeshFactory) -> None:
    """A member that was away while the job ran and ended (as one restarted after the end),
    back with the JOB_SUBMITTED and the JOB_ENDED but not yet the other member's lanes (a
    pair round brings them): its fold shows the job's tasks open, yet it runs none of them
    (on be87029 it ran the done job again, task by task)."""
    mesh = make_mesh()
    a, b, _c = mesh.peers
    mesh.silent.add(b)
    job = mesh.submit(a, TASKS, implicit=None, members=[a, b])
    mesh.hold = lambda ev, dst: dst == b and ev.origin == lane(a, job)  # (never come)
    await run_to_end(mesh, job, rounds=200)
    mesh.silent.clear()
    for _ in range(20):
        await mesh.advance(TURN_S)
    s = mesh[b].state
    assert job in s.ended and not mesh[b].runner.started
    assert not any(k[0] == job for k in s.task_done)  # (its fold: the job's tasks open)

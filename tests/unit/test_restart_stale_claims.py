"""A lanes member restarted mid-job claims from what its log replayed, which misses what the
mesh did meanwhile (session 51, helper f's left: a real member's restart lost 11 claims to
the others' earlier ones, 10 of them run to the end twice). Since session 51, helper i, a
peer that restarts on a log holding work (`Scheduler.recover`) claims nothing new until a
pair round shows it holds what a member holds (`Scheduler.heads_seen`) or
`restart_hold_s` passed (a lone peer goes on then); since session 52, helper e, per lanes job
(a member's vector of that job's lanes). On the in-memory job mesh."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from peer.ipfs.store import StoreConfig
from peer.jobs.ports import SchedulerConfig
from peer.jobs.scheduler import SETTLING
from peer.jobs.sim import JobMesh
from peer.log import Event, EventType
from peer.log.lanes import peer_of
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3, spread_s=1.0)
STEP_S = 0.1


def writes(n: int) -> list[dict[str, Any]]:
    return [{"name": f"w{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)}}
            for i in range(n)]


async def run(mesh: JobMesh, pids: tuple[str, ...], rounds: int) -> None:
    """`rounds` of STEP_S: `pids`' runs end as each round starts."""
    for _ in range(rounds):
        for pid in pids:
            for key in mesh[pid].runner.running:
                mesh[pid].runner.finish(key, duration_s=0.02)
        await mesh.advance(STEP_S)


async def restarted_cut_off(mesh: JobMesh) -> int:
    """A job of 60 tasks replicated in full, run by both peers, then by p0 alone while p1 is
    silent; p1 restarted and cut off from p0. How many events p1 had emitted before."""
    p0, p1 = mesh.peers
    mesh.submit(p0, writes(60), implicit=None, local=False)
    await mesh.settle()
    await run(mesh, (p0, p1), 3)
    mesh.silent.add(p1)
    await run(mesh, (p0,), 12)
    n = len(mesh[p1].emitted)
    await mesh.restart(p1)
    mesh.silent.discard(p1)
    mesh.partition({p1}, {p0})
    return n


def claims_after(mesh: JobMesh, pid: str, n: int) -> list[Event]:
    mesh.close_turns()
    return [e for ev in mesh[pid].emitted[n:] for e in ev.singles if e.type == EventType.CLAIM]


def lost(mesh: JobMesh, pid: str, claims: list[Event], judge: str,
         before_hlc: float = float("inf")) -> list[str]:
    """The tasks of `claims` (of `pid`) whose attempt another peer's claim wins, as `judge`
    folds them (`before_hlc`: a claim made before it only, not a race with a live peer)."""
    st, out = mesh[judge].state, []
    for c in claims:
        p = c.payload
        w = st.chunk(p["job"], p["task"], p["chunk"]).winner(
            p["attempt"], st.split_id(p["job"], p["task"]))
        if w is None or (peer_of(w.origin) != pid and w.hlc < before_hlc):
            out.append(p["task"])
    return out


async def restarted_alone(cfg: SchedulerConfig) -> tuple[JobMesh, str, str, str, int]:
    """Three peers, a job of 20 tasks on members p0 and p1; p1 is away (silent) while p0 runs
    on, then restarts on its log cut off from the others (as a peer before SWIM's join and
    its first pair round). The mesh, its peers, the job and p1's events before the restart."""
    mesh = JobMesh(3, CATALOG, cfg, lanes=True)
    p0, p1, _p2 = mesh.peers
    job = mesh.submit(p0, writes(20), implicit=None, local=False, members=[p0, p1])
    await mesh.settle()
    await run(mesh, (p0, p1), 3)
    mesh.silent.add(p1)  # (crashed: its runs die with it)
    await run(mesh, (p0,), 12)  # p0 takes p1's share too
    n = len(mesh[p1].emitted)
    await mesh.restart(p1)
    mesh.silent.discard(p1)
    mesh.partition({p1}, set(mesh.peers) - {p1})
    return mesh, p0, p1, job, n


async def test_without_the_hold_a_restarted_member_loses_claims_it_made_from_its_log() -> None:
    """What helper f saw, made here (`restart_hold_s` 0: the behaviour before the hold)."""
    mesh, p0, p1, job, n = await restarted_alone(replace(CFG, restart_hold_s=0.0))
    try:
        await run(mesh, (p0, p1), 3)
        mine = claims_after(mesh, p1, n)
        mesh.heal()
        mesh.pair_round(p1, p0, job)
        await mesh.advance(STEP_S)
        assert lost(mesh, p1, mine, p0)  # run here, and by p0 before
    finally:
        await mesh.close()


async def test_a_restarted_member_claims_nothing_until_a_pair_round_then_loses_none() -> None:
    """Failed on 093917e5 (p1 claimed at once from its log, and p0's earlier claims won
    w15 and w16)."""
    mesh, p0, p1, job, n = await restarted_alone(CFG)
    try:
        sched, t0 = mesh[p1].sched, mesh.clock()
        assert sched.settling
        await run(mesh, (p0, p1), 3)
        assert claims_after(mesh, p1, n) == [] and mesh[p1].runner.started == []
        assert SETTLING in sched.waiting().values()
        mesh.heal()
        mesh.pair_round(p1, p0, job)  # (its vector is seen here: covered once its events come)
        await mesh.advance(STEP_S)
        assert not sched.settling  # well before restart_hold_s
        assert mesh.clock() - t0 < CFG.restart_hold_s / 2
        await run(mesh, (p0, p1), 30)
        mine = claims_after(mesh, p1, n)
        assert mine and lost(mesh, p1, mine, p0) == []
        assert len(mesh[p1].runner.started) == len(mine)
    finally:
        await mesh.close()


async def test_a_restarted_peer_alone_claims_once_restart_hold_s_passed() -> None:
    mesh, _p0, p1, _job, n = await restarted_alone(CFG)
    try:
        sched = mesh[p1].sched
        rounds = round(CFG.restart_hold_s / STEP_S)
        await run(mesh, (p1,), rounds - 1)
        assert sched.settling and claims_after(mesh, p1, n) == []
        await run(mesh, (p1,), 5)
        assert not sched.settling and claims_after(mesh, p1, n)
        assert SETTLING not in sched.waiting().values()
    finally:
        await mesh.close()


async def test_a_restart_without_work_and_a_first_start_do_not_wait() -> None:
    mesh = JobMesh(2, CATALOG, CFG, lanes=True)
    try:
        p0, _p1 = mesh.peers
        assert not mesh[p0].sched.settling
        await mesh.restart(p0)  # (its log holds no job)
        assert not mesh[p0].sched.settling
        mesh.submit(p0, writes(4), implicit=None, local=False)
        await mesh.settle()
        assert mesh.sent(EventType.CLAIM)
    finally:
        await mesh.close()


async def test_a_member_covered_in_one_job_releases_that_job_only() -> None:
    """p1 shares j1 with p0 and j2 with p2, and after its restart hears p0 only: p0's vector
    of j1's lanes, once covered, lets p1 claim in j1, not in j2, whose lanes it holds as its
    log left them until p2's vector of them is covered. Failed on a04f558d (the first
    member's vector released every job: p1 claimed j2's tasks from its stale view)."""
    mesh = JobMesh(3, CATALOG, CFG, lanes=True, slots=4)  # (room in p1 for both jobs)
    try:
        p0, p1, p2 = mesh.peers
        j1 = mesh.submit(p0, writes(40), implicit=None, local=False, members=[p0, p1])
        j2 = mesh.submit(p2, writes(160), implicit=None, local=False, members=[p2, p1])
        await mesh.settle()
        await run(mesh, (p0, p1, p2), 3)
        mesh.silent.add(p1)  # (crashed: its runs die with it)
        await run(mesh, (p0, p2), 12)
        n = len(mesh[p1].emitted)
        await mesh.restart(p1)
        mesh.silent.discard(p1)
        mesh.partition({p1}, {p0, p2})
        mesh.cut.discard(frozenset((p0, p1)))  # it hears p0 only
        sched, t0 = mesh[p1].sched, mesh.clock()
        mesh.pair_round(p1, p0, j1)
        await run(mesh, (p0, p1, p2), 5)
        assert mesh.clock() - t0 < CFG.restart_hold_s / 2
        mine = claims_after(mesh, p1, n)
        assert mine and {c.payload["job"] for c in mine} == {j1}
        assert lost(mesh, p1, mine, p0) == []
        held = {k for k, why in sched.waiting().items() if why == SETTLING}
        assert sched.settling and held and {k[0] for k in held} == {j2}
        mesh.heal()
        mesh.close_turns()
        seen = max(e.hlc for ev in mesh[p2].emitted for e in ev.singles)  # (all p1 gets now)
        mesh.pair_round(p1, p2, j2)  # (covered once its events come: j2 too)
        await run(mesh, (p0, p1, p2), 2)
        assert not sched.settling
        assert mesh.clock() - t0 < CFG.restart_hold_s / 2
        await run(mesh, (p0, p1, p2), 30)
        in_j2 = [c for c in claims_after(mesh, p1, n) if c.payload["job"] == j2]
        assert in_j2 and lost(mesh, p1, in_j2, p2, before_hlc=seen + 1) == []
    finally:
        await mesh.close()


async def test_a_job_replicated_in_full_waits_for_a_members_vector_of_the_mesh_streams() -> None:
    """Without lanes (a job replicated in full, as one below lanes_min_job_tasks): held until
    a digest's vector of the mesh streams is covered, then no claim lost to one made while
    it was away (as since session 51, helper i: a guard, not a change)."""
    mesh = JobMesh(2, CATALOG, CFG, slots=2)
    try:
        p0, p1 = mesh.peers
        n = await restarted_cut_off(mesh)
        sched, t0 = mesh[p1].sched, mesh.clock()
        await run(mesh, (p0, p1), 3)
        assert sched.settling and claims_after(mesh, p1, n) == []
        assert SETTLING in sched.waiting().values()
        mesh.heal()
        mesh.close_turns()
        seen = max(e.hlc for ev in mesh[p0].emitted for e in ev.singles)
        await run(mesh, (p0, p1), 2)
        assert not sched.settling and mesh.clock() - t0 < CFG.restart_hold_s / 2
        await run(mesh, (p0, p1), 30)
        mine = claims_after(mesh, p1, n)
        assert mine and lost(mesh, p1, mine, p0, before_hlc=seen + 1) == []
    finally:
        await mesh.close()


async def test_a_digest_from_a_peer_new_to_us_does_not_end_the_mesh_hold() -> None:
    """A job replicated in full: a digest's vector that this restarted peer covers, from a
    peer whose events its replayed log does not hold (one just joined, its log empty), ended
    the hold of the mesh part at once; now only a known peer's does (p0's, here), or the
    time. (Session 52, helper h, review r2 finding 4; fails on 95469dfe: claims at once.)"""
    mesh = JobMesh(2, CATALOG, CFG, slots=2)
    try:
        p0, p1 = mesh.peers
        n = await restarted_cut_off(mesh)
        sched = mesh[p1].sched
        assert sched.settling
        sched.heads_seen("fresh", {p0: 1}, mesh=True)  # (below p1's heads: covered)
        await run(mesh, (p1,), 3)
        assert sched.settling and claims_after(mesh, p1, n) == []
        sched.heads_seen(p0, {p0: 1}, mesh=True)  # a peer the log knows: ends it
        await run(mesh, (p1,), 2)
        assert not sched.settling
    finally:
        await mesh.close()

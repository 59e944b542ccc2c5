"""Review rr of session 50, RR-2: scale-out (`Scheduler._spread`) and takeover
(`Scheduler._take_over`) asked `members.running` and `members.open_chunks`, which counted a
self-added member's CHUNK_FAILEDs that the scheduler's own look at a chunk leaves out while
a vouched member that can run the task is live (`_unvouched_failures`): the job was over
and the chunk settled for them while the vouched members were to run it again. They now
read the same view (`Scheduler._skips`). In-memory job mesh (fake clock, fake runner)."""

from __future__ import annotations

from peer.jobs import members
from peer.jobs.claims import task_failed
from peer.jobs.sim import JobMesh
from peer.log import EventType
from peer.rendezvous import rendezvous
from tests.unit.test_lanes_unvouched_done import CATALOG, SIM_CFG
from tests.unit.test_members_sim import done, finish_all, writes


async def test_a_self_added_members_failure_stops_no_scale_out_of_a_home_with_no_slot(
) -> None:
    """p0, the job's one named member (its home), has no usable slot (as
    test_members_sim's `..._spreads_it_before_any_run_ended`); before its first look at
    scale-out p3, at 0 slots too, adds itself and fails w0's one chunk with a made-up
    `error` no one claimed. In the fold w0 is failed (and the job over); in the home's view
    it is not (p0, vouched, can run it). The home spreads the job to a peer with a slot,
    which runs w0: the job ends done (on ded7c6f2 `members.running` saw it over: nobody was
    added, and the job stalled unended while its home lived)."""
    mesh = JobMesh(4, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2, p3 = mesh.peers
    tasks = writes(1)
    try:
        mesh[p0].runner.slots = mesh[p3].runner.slots = 0
        await mesh.advance(0.01)
        job = mesh.submit(p0, tasks, members=[p0], implicit=True)
        mesh.deliver()
        sid = mesh[p0].state.splits[(job, "w0")].id
        mesh.emit(p3, EventType.JOB_MEMBERS, {"job": job, "add": [p3]})
        mesh.emit(p3, EventType.CHUNK_FAILED, {
            "job": job, "task": "w0", "chunk": 0, "attempt": 0, "split": list(sid),
            "kind": "error", "error": "made up"})
        mesh.deliver()
        st = mesh[p0].state
        assert task_failed(st, job, "w0", SIM_CFG.max_attempts)  # (the fold's count)
        assert not members.running(st, job, SIM_CFG.max_attempts)
        await finish_all(mesh, rounds=30)
        added = [e for e in mesh.sent(EventType.JOB_MEMBERS) if e.origin == p0]
        assert [e.payload["add"] for e in added] == [rendezvous(job, [p1, p2])[:1]]
        assert done(mesh, p0, job, tasks) and job in st.ended
        assert not st.ended[job].payload["failed"]
        assert mesh[p3].runner.started == []
    finally:
        await mesh.close()


async def test_a_self_added_members_slot_is_no_slot_of_a_vouched_home() -> None:
    """As above, but p3 (self-added, not vouched) has a slot: it runs nothing a live vouched
    member can (`_for_vouched`), so the home counts it no slot and spreads the job (on
    ded7c6f2, and with RR-2's view alone, p3's slot held the job's open work: nobody added)."""
    mesh = JobMesh(4, CATALOG, SIM_CFG, lanes=True)
    p0, p1, p2, p3 = mesh.peers
    tasks = writes(1)
    try:
        mesh[p0].runner.slots = 0
        await mesh.advance(0.01)
        job = mesh.submit(p0, tasks, members=[p0], implicit=True)
        mesh.deliver()
        sid = mesh[p0].state.splits[(job, "w0")].id
        mesh.emit(p3, EventType.JOB_MEMBERS, {"job": job, "add": [p3]})
        mesh.emit(p3, EventType.CHUNK_FAILED, {
            "job": job, "task": "w0", "chunk": 0, "attempt": 0, "split": list(sid),
            "kind": "error", "error": "made up"})
        mesh.deliver()
        await finish_all(mesh, rounds=30)
        added = [e for e in mesh.sent(EventType.JOB_MEMBERS) if e.origin == p0]
        assert [e.payload["add"] for e in added] == [rendezvous(job, [p1, p2])[:1]]
        st = mesh[p0].state
        assert done(mesh, p0, job, tasks) and not st.ended[job].payload["failed"]
        assert mesh[p3].runner.started == []
    finally:
        await mesh.close()

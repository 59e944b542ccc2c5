"""Lanes jobs' home takeover, orphan takeover and scale-out on the in-memory job mesh (fake
clock, fake runner; design docs/design/partial-replication.md 5.3, 5.4): `JobMesh(lanes=True)`
folds `members`, and a peer that is no member of a job drops its lane events as they come
(none is sent again: the sim has no periodic pair rounds; a peer added to a job asks a member
for its lanes, `JobMesh.pair`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import replace
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.http.views import elsewhere_entry, held_elsewhere, job_view
from peer.ipfs.store import StoreConfig
from peer.jobs import members
from peer.jobs.claims import task_status
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import JobMesh
from peer.log import EventType, MeshState
from peer.log.lanes import lane_of, peer_of
from peer.rendezvous import rendezvous
from tasks import registry
from tests.helpers import closing

CATALOG = registry.load(("tests.fixture_tasks",))
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                      max_attempts=3, spread_s=1.0)


def writes(n: int) -> list[dict[str, Any]]:
    return [{"name": f"w{i}", "call": "T_WRITE", "params": {"files": 1, "tag": str(i)}}
            for i in range(n)]


CHAIN = [{"name": "a", "call": "T_WRITE", "params": {"files": 1}},
         {"name": "b", "call": "T_WRITE", "params": {"files": 2}, "depends": ["a"]}]


async def finish_all(mesh: JobMesh, duration_s: float = 0.01, step_s: float = 1.0,
                     rounds: int = 60) -> None:
    """Finish every run of the live peers, round after round, `step_s` apart."""
    for _ in range(rounds):
        for pid, p in mesh.peers.items():
            if pid not in mesh.silent:
                for key in p.runner.running:
                    p.runner.finish(key, duration_s=duration_s)
        await mesh.advance(step_s)


async def until_spread(mesh: JobMesh, members: tuple[str, ...]) -> None:
    """Finish `members`' runs as 5 s each, a second at a time, until a JOB_MEMBERS is sent
    (the home spreads the job: its open work is more than spread_s per member slot)."""
    while not mesh.sent(EventType.JOB_MEMBERS):
        for pid in members:
            for key in mesh[pid].runner.running:
                mesh[pid].runner.finish(key, duration_s=5.0)
        await mesh.advance(1.0)


def done(mesh: JobMesh, pid: str, job: str, tasks: list[dict[str, Any]]) -> bool:
    return all(task_status(mesh[pid].state, job, t["name"], CFG.max_attempts) == "done"
               for t in tasks)


async def test_the_home_splits_and_when_it_is_gone_the_next_member_finishes() -> None:
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p1, p0])  # p1 is the home
        await mesh.settle()
        [split] = mesh.sent(EventType.TASK_SPLIT, job=job, task="a")
        assert peer_of(split.origin) == p1  # the home splits a task without input, at once
        mesh.silent.add(p1)  # the home is gone mid-job
        await finish_all(mesh, rounds=20)
        assert done(mesh, p0, job, CHAIN)
        [split_b] = mesh.sent(EventType.TASK_SPLIT, job=job, task="b")
        assert peer_of(split_b.origin) == p0  # the next member took the home's duties
        assert mesh[p2].runner.started == []  # the non-member ran nothing
        assert mesh.sent(EventType.JOB_MEMBERS) == []  # a member was live: no takeover


async def test_with_every_member_gone_a_non_member_adds_itself_after_a_lease_and_finishes(
        ) -> None:
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        await mesh.settle()
        assert mesh.sent(EventType.CLAIM, job=job, task="a")  # running on a member
        mesh.silent.update((p0, p1))
        gone_at = mesh.clock()
        for _ in range(9):  # within lease_s: it waits
            await mesh.advance(1.0)
        assert mesh.sent(EventType.JOB_MEMBERS) == []
        await finish_all(mesh, rounds=20)
        [joined] = mesh.sent(EventType.JOB_MEMBERS)
        assert (joined.origin, joined.payload["add"]) == (p2, [p2])
        assert joined.hlc >> 16 >= (gone_at + CFG.lease_s) * 1000
        assert done(mesh, p2, job, CHAIN) and mesh[p2].runner.started


async def test_a_job_of_long_calls_spreads_to_the_third_peer() -> None:
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        tasks = writes(12)
        job = mesh.submit(p0, tasks, members=[p0, p1])
        await mesh.settle()
        assert mesh[p2].runner.started == []
        await finish_all(mesh, duration_s=5.0, rounds=40)  # 5 s a run: 50 s of work on 2
        [added] = mesh.sent(EventType.JOB_MEMBERS)
        assert (added.origin, added.payload["add"]) == (p0, [p2])  # by its home
        assert done(mesh, p0, job, tasks) and mesh[p2].runner.started
        # The joiner waited for the members' lanes (review r1 risk 3): it split nothing
        # again and ran none of what they ran before the add (on be87029: 19 runs)
        assert all(peer_of(s.origin) == p0 for s in mesh.sent(EventType.TASK_SPLIT))
        runs = Counter(key for p in mesh.peers.values() for key in p.runner.started)
        # (After the add no chunk runs twice but one at the tail: two members out of
        # their own tasks whose slots free at once, each seeing the other busy in its
        # last heartbeat, take the same last one: claims.candidates, as without lanes.)
        assert sum(runs.values()) <= len(tasks) + 1


async def test_a_job_whose_members_are_every_capable_peer_counts_no_open_work(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone lanes peer's job (its members every live peer that runs its calls): scale-out
    has no one to add, so its home does not count the job's open chunks per spread_s (a walk
    over every task, ~10 ms a look at 1,000 tasks); a job that may spread still does."""
    counted: list[str] = []
    real = members.open_chunks
    monkeypatch.setattr(members, "open_chunks",
                        lambda st, job, *a, **k: counted.append(job) or real(st, job, *a, **k))
    async with closing(JobMesh(2, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1 = mesh.peers
        every = mesh.submit(p0, writes(12), members=[p0, p1])
        await finish_all(mesh, duration_s=5.0, rounds=3)
        assert every not in counted
        assert mesh.sent(EventType.JOB_MEMBERS) == []
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, _ = mesh.peers
        may = mesh.submit(p0, writes(12), members=[p0, p1])
        await finish_all(mesh, duration_s=5.0, rounds=3)
        assert may in counted


async def test_a_job_of_short_calls_stays_on_its_members() -> None:
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        tasks = writes(12)
        job = mesh.submit(p0, tasks, members=[p0, p1])
        await finish_all(mesh, duration_s=0.001, rounds=40)  # 10 ms of work in all
        assert done(mesh, p0, job, tasks)
        assert mesh.sent(EventType.JOB_MEMBERS) == [] and mesh[p2].runner.started == []


async def test_lanes_off_a_job_runs_on_every_peer_as_before() -> None:
    """Without lanes folded, `members` are held unfolded: no member rules at all."""
    async with closing(JobMesh(3, CATALOG, CFG)) as mesh:
        p0 = next(iter(mesh.peers))
        tasks = writes(12)
        job = mesh.submit(p0, tasks, members=["0" * 20, "1" * 20])
        await finish_all(mesh, duration_s=5.0, rounds=40)
        assert done(mesh, p0, job, tasks) and all(mesh[p].runner.started for p in mesh.peers)
        assert mesh.sent(EventType.JOB_MEMBERS) == []


async def test_a_non_member_ticks_while_a_job_has_no_live_member() -> None:
    """Its loop wakes every tick, not every IDLE_TICK_S, while it waits to take a job over
    (its rank's wait among the non-members is a split wait: a 2 s tick would swamp it)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        mesh.submit(p0, CHAIN, members=[p0, p1])
        mesh.deliver()
        mesh.silent.update((p0, p1))
        await mesh.advance(CFG.tick_s)
        assert mesh[p2].sched.timed() and mesh[p2].sched.sleep_s() <= CFG.tick_s


async def test_of_two_non_members_only_the_first_in_the_jobs_order_takes_over() -> None:
    """The second's turn comes a split wait later: by then the first's JOB_MEMBERS is
    folded and it is a live member."""
    async with closing(JobMesh(4, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2, p3 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        await mesh.settle()
        mesh.silent.update((p0, p1))
        await finish_all(mesh, rounds=150, step_s=0.1)  # (ticks finer than a split wait)
        [joined] = mesh.sent(EventType.JOB_MEMBERS)
        first = rendezvous(job, [p2, p3])[0]
        assert (joined.origin, joined.payload["add"]) == (first, [first])
        assert done(mesh, first, job, CHAIN)


async def _orphaned_first_at_0_slots(mesh: JobMesh) -> tuple[str, str, str]:
    """A lanes job of p0 and p1 on 4 peers, both gone silent; the first non-member in its
    order (`first`) at 0 slots, the other (`other`) not: (job, first, other)."""
    p0, p1, p2, p3 = mesh.peers
    job = mesh.submit(p0, CHAIN, members=[p0, p1])
    first, other = rendezvous(job, [p2, p3])
    mesh[first].runner.slots = 0
    await mesh.settle()
    mesh.silent.update((p0, p1))
    return job, first, other


async def test_a_peer_with_no_usable_slot_takes_no_orphaned_job_over() -> None:
    """The non-member first in the job's order has 0 slots (its given-up workers hold every
    slot): it took the job over, and nothing ran while an idle peer waited (review h, H3).
    The other non-member takes it over and runs it."""
    async with closing(JobMesh(4, CATALOG, CFG, lanes=True)) as mesh:
        job, first, other = await _orphaned_first_at_0_slots(mesh)
        await finish_all(mesh, rounds=150, step_s=0.1)
        [joined] = mesh.sent(EventType.JOB_MEMBERS)
        assert (joined.origin, joined.payload["add"]) == (other, [other])
        assert done(mesh, other, job, CHAIN)
        assert mesh[first].runner.started == []


async def test_a_jobs_only_member_with_no_usable_slot_spreads_it_before_any_run_ended(
        ) -> None:
    """Review i (session 42), I3: the only member (its home) of a job none of whose calls
    ran yet has 0 slots (its given-up workers hold every slot). With no run's duration known
    its open work counted 0 s, which never passed spread_s × its 0 slots: nobody was added,
    no one took the job over (its member is live) and the job stalled while it lived (on
    f513d90: no JOB_MEMBERS, nothing run). The home adds the first non-member."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        tasks = writes(6)
        mesh[p0].runner.slots = 0
        await mesh.advance(0.01)
        job = mesh.submit(p0, tasks, members=[p0])
        await finish_all(mesh, rounds=30)
        [added] = mesh.sent(EventType.JOB_MEMBERS)
        assert (added.origin, added.payload["add"]) == (p0, rendezvous(job, [p1, p2])[:1])
        assert done(mesh, p0, job, tasks) and mesh[p0].runner.started == []


async def test_a_non_member_seen_at_0_slots_keeps_its_takeover_rank() -> None:
    """Review i (session 42), R2: the first non-member in the job's order got a slot back
    (a given-up worker exited) since its last heartbeat, which the others still see at 0
    slots. It ranks itself first; ranked over the peers with usable slots the other one did
    too, and both took the job over at once (on f513d90: two JOB_MEMBERS). Ranked over every
    peer that runs the job's calls, the other one waits its turn and hears the first's add."""
    async with closing(JobMesh(4, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2, p3 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        first, other = rendezvous(job, [p2, p3])
        mesh.tamper = lambda pid, info: {**info, "slots": 0, "free_slots": 0} if (
            pid == first) else info  # (its heartbeat lags: it said 0)
        await mesh.settle()
        mesh.silent.update((p0, p1))
        await finish_all(mesh, rounds=150, step_s=0.1)
        [joined] = mesh.sent(EventType.JOB_MEMBERS)
        assert (joined.origin, joined.payload["add"]) == (first, [first])
        assert done(mesh, first, job, CHAIN) and mesh[other].runner.started == []


async def test_a_non_member_at_0_slots_takes_an_orphaned_job_over_once_it_has_a_slot() -> None:
    """The one non-member is at 0 slots when the members go; its given-up worker exits later.
    It keeps looking (on f513d90 it looked again only once the job or the live peers moved:
    neither did, and the job stalled for good) and takes the job over."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        mesh[p2].runner.slots = 0
        await mesh.settle()
        mesh.silent.update((p0, p1))
        await finish_all(mesh, rounds=30)
        assert mesh.sent(EventType.JOB_MEMBERS) == [] and mesh[p2].sched.timed()
        mesh[p2].runner.slots = 1
        await finish_all(mesh, rounds=10)
        [joined] = mesh.sent(EventType.JOB_MEMBERS)
        assert (joined.origin, joined.payload["add"]) == (p2, [p2])
        assert done(mesh, p2, job, CHAIN)


async def test_a_non_member_whose_turn_passed_at_0_slots_leaves_the_next_ones_add_time_to_come(
        ) -> None:
    """Review r1 (session 43), L2: the first non-member in the job's order is at 0 slots when
    its takeover turn comes; the next one's turn comes and it adds itself. The first gets a
    slot back (a given-up worker exits) before that add reached it (gossip's delay, less than
    a rank's wait): its turn long passed, it added itself at once, and the job had two new
    members (on d2110a8: two JOB_MEMBERS). A turn passed at 0 slots comes again only a round
    of every rank later, by when the next one's add is heard."""
    async with closing(JobMesh(4, CATALOG, CFG, lanes=True)) as mesh:
        job, first, other = await _orphaned_first_at_0_slots(mesh)
        mesh.hold = lambda ev, to: to == first and ev.type is EventType.JOB_MEMBERS
        for _ in range(1200):  # (60 s of the fake clock at most)
            if mesh.sent(EventType.JOB_MEMBERS):
                break
            await mesh.advance(0.05)
        assert mesh.sent(EventType.JOB_MEMBERS), "nobody took the job over"
        mesh[first].runner.slots = 1
        for _ in range(4):  # 0.2 s: the add still on its way
            await mesh.advance(0.05)
        mesh.hold = None
        await finish_all(mesh, rounds=100, step_s=0.1)
        [joined] = mesh.sent(EventType.JOB_MEMBERS)
        assert (joined.origin, joined.payload["add"]) == (other, [other])
        assert done(mesh, other, job, CHAIN) and mesh[first].runner.started == []


async def test_a_busy_peer_that_takes_an_orphaned_job_over_splits_it_at_once() -> None:
    """Its one slot busy with a long run of another job, the peer that takes over a job whose
    members are gone splits its first task at once (a split needs no slot); its tasks waited
    for a free slot (review h, H4)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        mesh.submit(p2, [{"name": "long", "call": "T_WRITE", "params": {"files": 3}}],
                    members=[p2])
        await mesh.settle()
        assert mesh[p2].runner.running
        mesh.silent.update((p0, p1))  # the members are gone before they hear of the job
        job = mesh.submit(p2, CHAIN, members=[p0, p1])
        for _ in range(30):
            await mesh.advance(1.0)
        [joined] = mesh.sent(EventType.JOB_MEMBERS, job=job)
        assert (joined.origin, joined.payload["add"]) == (p2, [p2])
        assert [e.payload["task"] for e in mesh.sent(EventType.TASK_SPLIT, job=job)] == ["a"]
        assert len(mesh[p2].runner.running) == 1  # (still the long run)


async def test_a_non_member_stops_ticking_once_an_orphaned_job_is_cancelled() -> None:
    """Its wait to take the job over ends with the job: the loop is back to IDLE_TICK_S."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        mesh.deliver()
        mesh.silent.update((p0, p1))
        await mesh.advance(CFG.tick_s)
        assert mesh[p2].sched.timed()
        mesh.emit(p2, EventType.JOB_CANCELLED, {"job": job, "reason": "user"})
        await mesh.advance(1.0)
        assert not mesh[p2].sched.timed()
        assert mesh.sent(EventType.JOB_MEMBERS) == []


async def test_a_peer_that_runs_none_of_an_orphaned_jobs_calls_does_not_tick_for_it() -> None:
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        mesh[p2].sched.catalog = {}  # (it runs no call: it never takes a job over)
        mesh.submit(p0, CHAIN, members=[p0, p1])
        mesh.deliver()
        mesh.silent.update((p0, p1))
        await mesh.advance(CFG.tick_s)
        assert not mesh[p2].sched.timed()


# -- a live member that keeps nothing going (review r1 M3, session 46) ---------------------

async def test_a_live_peer_that_added_itself_and_runs_nothing_does_not_hold_an_orphaned_job(
        ) -> None:
    """Review r1 M3: the members gone, a peer adds itself to the job (any peer may: the door
    lets a non-member add itself) and stays live but runs nothing (hostile, or its executor
    or log broken). On 5c96899 it was a live member: no one else took the job over and it
    never finished. It keeps the job a lease past its add; then the other non-member's
    takeover turn comes, it adds itself and the job is done there."""
    async with closing(JobMesh(4, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2, p3 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        await mesh.settle()
        idle, other = rendezvous(job, [p2, p3])  # (the idle one would come first)
        mesh[idle].sched.catalog = {}  # (it runs no call: it claims nothing)
        mesh.silent.update((p0, p1))
        mesh.emit(idle, EventType.JOB_MEMBERS, {"job": job, "add": [idle]})
        added_at = mesh.clock()
        await finish_all(mesh, rounds=60)
        adds = sorted(mesh.sent(EventType.JOB_MEMBERS), key=lambda e: e.hlc)
        assert [(e.origin, e.payload["add"]) for e in adds] == [(idle, [idle]), (other, [other])]
        # (a lease to show a run, then the orphan's lease: no sooner)
        assert adds[1].hlc >> 16 >= (added_at + 2 * CFG.lease_s) * 1000
        assert done(mesh, other, job, CHAIN) and mesh[idle].runner.started == []


async def test_a_peer_that_took_an_orphaned_job_over_and_runs_it_is_not_displaced() -> None:
    """The honest taker runs the job's chunks (one 1 s run after another, 30 s of work): its
    heartbeats report runs of the job, so the other non-member never adds itself, however
    long the job runs past the taker's first lease."""
    no_scale_out = replace(CFG, spread_s=1e9)
    async with closing(JobMesh(4, CATALOG, no_scale_out, lanes=True)) as mesh:
        p0, p1, *_ = mesh.peers
        tasks = writes(30)
        job = mesh.submit(p0, tasks, members=[p0, p1])
        await mesh.settle()
        mesh.silent.update((p0, p1))
        await finish_all(mesh, duration_s=1.0, rounds=80)
        [joined] = mesh.sent(EventType.JOB_MEMBERS)
        taker = joined.origin
        assert joined.payload["add"] == [taker]
        assert done(mesh, taker, job, tasks) and len(mesh[taker].runner.started) >= len(tasks)


async def test_an_honest_taker_gets_a_lease_to_claim_before_anyone_looks_past_it() -> None:
    """The taker's first claim comes late: its one slot runs another job's chunk for 15 s
    after its add. It keeps the job a lease past its add, and the other non-member waits the
    orphan's lease after that before its turn: the taker's runs of the job are reported by
    then, and the other never adds itself."""
    await _a_taker_busy_for(busy_s=15.0)


async def test_a_taker_whose_slot_stays_busy_for_4_leases_keeps_the_job() -> None:
    """Review r2 L3 (session 46): as above, but the taker's one slot runs another job's chunk
    for 40 s, past its lease and the orphan's after it. On 9590a1d the other non-member
    added itself about 2 leases after the taker's add (an extra member, running the job
    beside it). Its heartbeats say its runs fill its slots (`members.busy`): it waits for
    its slot, and that keeps the job as a run of it would."""
    await _a_taker_busy_for(busy_s=40.0)


async def _a_taker_busy_for(busy_s: float) -> None:
    """The job's members fall silent, the taker adds itself while its one slot runs another
    job's chunk for `busy_s`: the taker alone adds itself, then, its slot free, runs the job
    to its end."""
    async with closing(JobMesh(4, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2, p3 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        await mesh.settle()
        taker = rendezvous(job, [p2, p3])[0]
        mesh.submit(taker, [{"name": "long", "call": "T_WRITE", "params": {"files": 3}}],
                    members=[taker])
        await mesh.settle()
        [long_run] = mesh[taker].runner.running
        mesh.silent.update((p0, p1))
        while not mesh.sent(EventType.JOB_MEMBERS, job=job):
            await mesh.advance(0.5)
        for _ in range(int(busy_s / 0.5)):  # the taker's slot stays busy
            await mesh.advance(0.5)
        assert [e.origin for e in mesh.sent(EventType.JOB_MEMBERS, job=job)] == [taker]
        mesh[taker].runner.finish(long_run)
        await mesh.settle()
        await finish_all(mesh, duration_s=1.0, rounds=30)
        assert [e.origin for e in mesh.sent(EventType.JOB_MEMBERS, job=job)] == [taker]
        assert done(mesh, taker, job, CHAIN)


async def test_a_taker_that_runs_nothing_with_a_free_slot_is_not_kept_by_busy_peers(
        ) -> None:
    """The busy rule keeps a job only for its own members: the idle self-added peer (a free
    slot, no run) is passed as before although the other non-member's slot is busy with a
    job of its own meanwhile; that one adds itself once its turn comes."""
    async with closing(JobMesh(4, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2, p3 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        await mesh.settle()
        idle, other = rendezvous(job, [p2, p3])
        mesh[idle].sched.catalog = {}  # (it runs no call: it claims nothing)
        mesh.submit(other, [{"name": "long", "call": "T_WRITE", "params": {"files": 3}}],
                    members=[other])
        await mesh.settle()
        [long_run] = mesh[other].runner.running
        mesh.silent.update((p0, p1))
        mesh.emit(idle, EventType.JOB_MEMBERS, {"job": job, "add": [idle]})
        for _ in range(60):  # 30 s: a lease to show a run, the orphan's lease, its turn
            await mesh.advance(0.5)
        adds = sorted(mesh.sent(EventType.JOB_MEMBERS, job=job), key=lambda e: e.hlc)
        assert [e.origin for e in adds] == [idle, other]
        mesh[other].runner.finish(long_run)
        await mesh.settle()
        await finish_all(mesh, rounds=30)
        assert done(mesh, other, job, CHAIN) and mesh[idle].runner.started == []


async def test_a_taker_fetching_its_splits_input_for_4_leases_keeps_the_job() -> None:
    """Review r2 L3 (session 46): the taker's first step of the job is a per-item task's
    split, and the fetch of its input (a directory held elsewhere) takes 40 s: it runs
    nothing of the job meanwhile. On 9590a1d the other non-member added itself about 2
    leases after the taker's add. Its heartbeats name the job in `working` (a fetch under
    way for it): that keeps the job as a run of it would; once the input came, the job is
    done on the taker alone."""
    async with closing(JobMesh(4, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2, p3 = mesh.peers
        files = {f"f{i}.txt": mesh[p0].store.add_bytes(f"item {i}".encode()) for i in range(3)}
        inp = str(sha256_cid(b"the input", "dag-pb", 1))  # (a valid CID for the spec)
        mesh.content.dirs[inp] = files
        mesh[p0].data.mark(inp)
        tasks = [{"name": "src", "cid": inp},
                 {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["src"]}]
        job = mesh.submit(p0, tasks, members=[p0, p1])
        await mesh.settle()
        taker = rendezvous(job, [p2, p3])[0]
        mesh[taker].data.stall = True  # (its fetches wait until released)
        mesh.silent.update((p0, p1))
        while not mesh.sent(EventType.JOB_MEMBERS, job=job):
            await mesh.advance(0.5)
        for _ in range(80):  # 40 s
            await mesh.advance(0.5)
        assert mesh[taker].sched.working == [job] and mesh[taker].runner.started == []
        assert [e.origin for e in mesh.sent(EventType.JOB_MEMBERS, job=job)] == [taker]
        mesh[taker].data.release()
        await finish_all(mesh, rounds=20)
        assert [e.origin for e in mesh.sent(EventType.JOB_MEMBERS, job=job)] == [taker]
        assert done(mesh, taker, job, tasks) and mesh[taker].sched.working == []


async def test_a_member_fetching_for_more_jobs_than_a_heartbeat_names_names_each_in_turn(
        ) -> None:
    """Review r2 of session 47, finding 6: `working` named the 16 smallest job ids at every
    heartbeat, so a member fetching the data of 20 lanes jobs never showed a sign for 4
    of them (a non-member judging one could take it over). Each heartbeat's read names
    MAX_WORKING, the next ones after the last named, round: every job within 2 reads, each
    once (on 21d172b, 4 never); a read for /api/peers steps nothing (it skipped a slice)."""
    mesh = JobMesh(2, CATALOG, CFG, lanes=True)
    p0, _ = mesh.peers
    try:
        jobs = []
        mesh[p0].data.stall = True  # (its fetches wait until released)
        for i in range(20):
            inp = str(sha256_cid(f"input {i}".encode(), "dag-pb", 1))
            mesh.content.dirs[inp] = {"f.txt": mesh[p0].store.add_bytes(f"item {i}".encode())}
            jobs.append(mesh.submit(p0, [{"name": "src", "cid": inp},
                                         {"name": "u", "call": "T_UPPER", "params": {},
                                          "depends": ["src"]}], members=[p0]))
        for _ in range(10):
            await mesh.advance(0.5)
        sched = mesh[p0].sched
        assert {k[0] for k in sched.locality.fetching} == set(jobs)
        shown = sched.working  # (/api/peers' read: steps nothing)
        assert [sched.working for _ in range(3)] == [shown] * 3
        reads = [sched.next_working() for _ in range(5)]
        assert reads[0] == shown
        assert all(len(r) == 16 and len(set(r)) == 16 for r in reads)
        assert sorted([*reads[0], *reads[1]][:20]) == sorted(jobs)  # (each in 2 reads)
        assert set(reads[2]) | set(reads[3]) == set(jobs)
    finally:
        mesh[p0].data.release()
        await mesh.close()


async def test_a_named_member_whose_log_takes_nothing_does_not_hold_its_job_for_ever() -> None:
    """The job's one live member holds its claims back (its log unwritable: its heartbeat
    says no free slot with fewer runs than slots) once its run of the first task ended: it
    can claim nothing more. On 5c96899 it was live, so no one took the job over while the
    outage lasted; now it keeps the job a lease past since then, and the non-member takes
    it over and finishes it."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        await mesh.settle()
        # (the member that runs the first task: rendezvous by the job's id, which is drawn)
        held, other = (p0, p1) if mesh[p0].runner.running else (p1, p0)
        [run] = mesh[held].runner.running
        mesh.silent.add(other)
        mesh[held].sched.hold_claims(True)
        mesh[held].runner.finish(run)
        held_at = mesh.clock()
        for _ in range(15):
            await mesh.advance(1.0)
        assert mesh.sent(EventType.JOB_MEMBERS) == []  # (within its lease, then the orphan's)
        await finish_all(mesh, rounds=30)
        [joined] = mesh.sent(EventType.JOB_MEMBERS)
        assert (joined.origin, joined.payload["add"]) == (p2, [p2])
        assert joined.hlc >> 16 >= (held_at + 2 * CFG.lease_s) * 1000
        assert done(mesh, p2, job, CHAIN)


async def test_a_named_member_busy_with_another_jobs_run_holds_its_job() -> None:
    """An honest busy member: its one slot runs another job's chunk for a minute (no free
    slot, but its runs fill its slots: it can claim, once one ends). Nobody takes its job
    over."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, _ = mesh.peers
        mesh.submit(p0, [{"name": "long", "call": "T_WRITE", "params": {"files": 3}}],
                    members=[p0])
        await mesh.settle()
        [long_run] = mesh[p0].runner.running
        mesh.silent.add(p1)
        job = mesh.submit(p0, CHAIN, members=[p0, p1])
        for _ in range(60):
            await mesh.advance(1.0)
        assert mesh.sent(EventType.JOB_MEMBERS) == []
        mesh[p0].runner.finish(long_run)
        await mesh.settle()
        await finish_all(mesh, rounds=10)
        assert done(mesh, p0, job, CHAIN) and mesh.sent(EventType.JOB_MEMBERS) == []


async def test_a_non_member_looks_at_a_running_jobs_members_only_when_something_moved(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(Review r1, risk 4: on 99be419 every peer ordered the members of every running lanes
    job at every tick: 31.6 ms a tick with 10,000 jobs.) No event and no change of the live
    peers: nothing to look at."""
    looked: list[MeshState] = []  # (the state of the peer that looked)
    real_ordered, real_home = members.ordered, members.home

    def ordered(state: MeshState, job: str) -> list[str]:
        looked.append(state)
        return real_ordered(state, job)

    def home(job: str, state: MeshState, live: Collection[str]) -> str | None:
        looked.append(state)
        return real_home(job, state, live)

    monkeypatch.setattr(members, "ordered", ordered)
    monkeypatch.setattr(members, "home", home)
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        job = mesh.submit(p0, writes(2), members=[p0, p1])
        await mesh.settle()
        for _ in range(3):
            await mesh.advance(CFG.tick_s)
        assert members.running(mesh[p2].state, job, CFG.max_attempts)  # (it holds it)
        looked.clear()
        for _ in range(20):
            await mesh.advance(CFG.tick_s)
        assert mesh[p2].state not in looked


async def test_a_job_spreads_only_to_peers_that_meet_its_tasks_requires() -> None:
    """Scale-out adds a peer only if it may run one of the job's tasks (its call and the
    task's `requires`): one that does not meet them would fold every lane and run nothing
    (591f744 added it: profile_mesh --lanes --kind dag0, the third peer at a member's cost)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        tasks = [{**t, "requires": {"labels": {"rack": "a"}}} for t in writes(12)]
        for pid in (p0, p1):  # p2 is not labelled
            mesh.announce(pid, {"rack": "a"})
        await mesh.advance(0.01)
        job = mesh.submit(p0, tasks, members=[p0, p1])
        await mesh.settle()
        await finish_all(mesh, duration_s=5.0, rounds=40)  # 5 s a run: 50 s of work on 2
        assert done(mesh, p0, job, tasks)
        assert mesh.sent(EventType.JOB_MEMBERS) == [] and mesh[p2].runner.started == []


async def test_a_lanes_jobs_per_item_chunks_left_to_non_members_spread_it() -> None:
    """(Review i, session 42, I0.) A lanes job's per-item task is cut for the slots of every
    live peer that runs it, not its members' only: sized for its one member's slot, its one
    chunk was claimed at once, no open work was left and the job never spread; the other
    chunks are open work now, and the home adds peers that run them."""
    async with closing(JobMesh(4, CATALOG, replace(CFG, max_chunk_items=1000), lanes=True)) as mesh:
        p0, *others = mesh.peers
        job = mesh.submit(p0, [{"name": "w", "call": "T_WRITE", "params": {"files": 40}},
                               {"name": "u", "call": "T_UPPER", "params": {},
                                "depends": ["w"]}], members=[p0])
        await mesh.settle()
        for _ in range(40):
            if mesh.sent(EventType.TASK_DONE, job=job, task="u"):
                break
            for p in mesh.peers.values():
                for key in p.runner.running:
                    p.runner.finish(key, duration_s=5.0)
            await mesh.advance(5.0)
        assert [len(e.payload["chunks"]) for e in mesh.sent(EventType.TASK_SPLIT, job=job,
                                                            task="u")] == [4]
        assert mesh.sent(EventType.JOB_MEMBERS, job=job)
        assert any(mesh[p].runner.started for p in others)
        assert task_status(mesh[p0].state, job, "u", CFG.max_attempts) == "done"


async def test_a_peer_added_runs_nothing_of_the_job_until_it_holds_its_lanes_or_lease_s_passed(
        ) -> None:
    """Design 5.3 (review r1 risk 3): the JOB_MEMBERS says the adder's heads of the job's
    lanes; the joiner asks the adder for them at once (`JobMesh.pair`) and claims nothing of
    the job until it holds them; if none come within lease_s it runs the job from what it
    holds (as an orphan takeover would)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        mesh.hold = lambda ev, to: to == p2 and lane_of(ev.origin) is not None  # none reach it
        job = mesh.submit(p0, writes(12), members=[p0, p1])
        await mesh.settle()
        await until_spread(mesh, (p0, p1))
        [added] = mesh.sent(EventType.JOB_MEMBERS)
        assert set(added.payload["heads"]) == {f"{p}/{job}" for p in (p0, p1)}  # (its lanes)
        assert mesh[p2].state.member_of(job, p2) and mesh[p2].sched.timed()
        added_at = mesh.clock()
        while mesh.clock() < added_at + CFG.lease_s - 1.0:
            await mesh.advance(1.0)
            assert mesh[p2].runner.started == []  # (the members' runs go on: not finished)
        for _ in range(3):  # (then it splits the tasks it holds no split of: its rank's wait)
            await mesh.advance(1.0)
        assert mesh[p2].runner.started  # the wait is bounded


async def test_a_peer_added_and_restarted_before_the_lanes_came_waits_for_them_again(
        ) -> None:
    """Session 38's gap: the joiner's wait (`Scheduler._joining`) was in memory only, so a
    joiner restarted before the members' lanes came ran the job at once (split its tasks
    again, ran what the members ran). The wait is derived at `recover` from the JOB_MEMBERS
    held and the lanes the log holds (`members.first_adds`): nothing new is stored."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        held = True
        mesh.hold = lambda ev, to: held and to == p2 and lane_of(ev.origin) is not None
        job = mesh.submit(p0, writes(12), members=[p0, p1])
        await mesh.settle()
        await until_spread(mesh, (p0, p1))
        await mesh.advance(1.0)
        await mesh.restart(p2)
        assert mesh[p2].sched.timed()  # waits again (and asked the adder again)
        [(add, heads)] = members.first_adds(mesh[p2].state, p2, [job]).values()
        assert add.origin == p0 and set(heads) == {f"{p}/{job}" for p in (p0, p1)}
        assert job in mesh[p2].sched._joining
        assert not members.caught_up(mesh[p2].state, heads, add.hlc)
        for _ in range(5):
            await mesh.advance(1.0)
            assert mesh[p2].runner.started == []  # (on 30bc9d5: it split and ran at once)
        held = False
        await mesh.advance(0.01)
        ran = {k for pid in (p0, p1) for k in mesh[pid].runner.started}
        assert mesh[p2].runner.started and not ran & set(mesh[p2].runner.started)
        assert all(peer_of(s.origin) == p0 for s in mesh.sent(EventType.TASK_SPLIT))


async def test_a_restarted_member_that_ran_some_of_a_job_does_not_wait_to_join() -> None:
    """A joiner that ran some of the job (its own lane holds events) joined: a restart
    does not make it wait again, and a member named at submission never waits."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        job = mesh.submit(p0, writes(12), members=[p0, p1])
        await mesh.settle()
        while not mesh[p2].runner.started:
            for pid in (p0, p1, p2):
                for key in mesh[pid].runner.running:
                    mesh[pid].runner.finish(key, duration_s=5.0)
            await mesh.advance(1.0)
        for pid in (p1, p2):
            await mesh.restart(pid)
            assert not mesh[pid].sched._joining
        assert members.first_adds(mesh[p2].state, p2, [job]) == {}


async def test_a_peer_added_runs_the_open_chunks_once_the_lanes_come() -> None:
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        held = True
        mesh.hold = lambda ev, to: held and to == p2 and lane_of(ev.origin) is not None
        job = mesh.submit(p0, writes(12), members=[p0, p1])
        await mesh.settle()
        await until_spread(mesh, (p0, p1))
        await mesh.advance(1.0)
        assert mesh[p2].runner.started == []
        held = False  # (the pair round's answer and the pushes held back come now)
        await mesh.advance(0.01)
        ran = {k for pid in (p0, p1) for k in mesh[pid].runner.started}
        assert mesh[p2].runner.started and not ran & set(mesh[p2].runner.started)
        assert not mesh[p2].sched.timed() or not mesh[p2].sched._joining
        assert peer_of(mesh.sent(EventType.CLAIM, job=job)[-1].payload["split"][0]) == p0


async def test_both_members_start_a_jobs_implicit_tasks_at_once() -> None:
    """A lanes job of tasks without input and implicit splits (what `POST /api/jobs` makes
    of a big dag): each member comes first, at once, for its share of the tasks by
    rendezvous hash over the members, as every peer does for its share lanes off; the home
    is not first for every task, the other member waiting a split wait per task (on
    30bc9d5 the replica started nothing for split_wait_s + 0.5 ms per task: bench_mesh's
    1,000-task dag ran ~85 % on its home)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        tasks = writes(12)
        job = mesh.submit(p0, tasks, implicit=True, members=[p0, p1])
        await mesh.settle()  # (no time passes: no split wait is over)
        assert mesh[p0].runner.started and mesh[p1].runner.started
        await finish_all(mesh, duration_s=0.001, step_s=CFG.tick_s, rounds=40)
        assert done(mesh, p0, job, tasks) and mesh[p2].runner.started == []
        runs = Counter(key for p in mesh.peers.values() for key in p.runner.started)
        assert sum(runs.values()) == len(tasks)  # (none ran twice)


async def test_a_job_its_members_finish_within_spread_s_stays_on_them_after_one_slow_run(
        ) -> None:
    """Scale-out's first look at a job's open work is spread_s after its home first saw it
    running, not at once: at once, the whole backlog times the call's last run here (one
    slow run: 3 ms where ECHO takes ~0.5) spread bench_mesh's 1,000-task dag to the third
    peer in 3 of 6 jobs (2.6-3.2 s of open work estimated), whose joiner then waited for
    the lanes and the job ran at 575-659 tasks/s against 1,039-1,168 on two members (on
    30bc9d5 this job got a JOB_MEMBERS at its first tick)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        tasks = writes(12)
        mesh[p0].sched._runs.last_s["T_WRITE"] = 0.5  # (its last run, before the job: slow)
        job, start = mesh.submit(p0, tasks, implicit=True, members=[p0, p1]), mesh.clock()
        await finish_all(mesh, duration_s=0.001, step_s=0.05, rounds=15)
        assert mesh.clock() - start < CFG.spread_s and done(mesh, p0, job, tasks)
        assert mesh.sent(EventType.JOB_MEMBERS) == [] and mesh[p2].runner.started == []


async def test_a_claim_made_while_the_add_travelled_is_not_run_again_by_the_joiner() -> None:
    """The double-run window of a scale-out (design 5.3, 9): p1 claims the last open chunk
    after p0 added p2 and before p1 folded that add, so the claim goes to p0 alone (a
    lanes push goes to the members its sender folds) and is not in the JOB_MEMBERS's
    `heads`; here it is also still on its way to p0 when p2 asks p0 for the lanes. On
    30bc9d5 p2, caught up with `heads`, saw the chunk open and ran it too (5 runs of 4
    tasks). Now p1, folding the add, starts a pair round of the job with p2 (`_note`):
    p2 gets the claim before it claims."""
    mesh = JobMesh(3, CATALOG, CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    tasks = writes(4)
    add_held = p1_held = True  # the JOB_MEMBERS to p1 and p2; p1's lane to p0
    mesh.hold = lambda ev, to: ((add_held and ev.type is EventType.JOB_MEMBERS) or (
        p1_held and to == p0 and lane_of(ev.origin) == (p1, ev.payload.get("job"))))
    try:
        mesh.submit(p0, tasks, members=[p0, p1])
        await mesh.settle()
        p1_held = False
        await mesh.settle()
        for key in mesh[p0].runner.running:  # (a run's duration: the open work is 5 s)
            mesh[p0].runner.finish(key, duration_s=5.0)
        while not mesh.sent(EventType.JOB_MEMBERS):
            await mesh.advance(0.5)
        p1_held = True
        [key] = mesh[p1].runner.running
        mesh[p1].runner.finish(key, duration_s=5.0)
        await mesh.advance(0.5)
        [claimed] = mesh[p1].runner.running  # (the last open chunk, claimed meanwhile)
        add_held = False
        for _ in range(3):
            await mesh.advance(0.5)
        p1_held = False
        await finish_all(mesh, duration_s=5.0, rounds=30)
        runs = Counter(k for p in mesh.peers.values() for k in p.runner.started)
        assert claimed not in mesh[p2].runner.started  # (30bc9d5: p2 ran it too)
        assert runs[claimed] == 1 and sum(runs.values()) == len(tasks)  # (30bc9d5: 2 and 5)
    finally:
        await mesh.close()


async def test_a_member_added_again_keeps_claiming_its_job() -> None:
    """Review r0 finding 4: a JOB_MEMBERS naming a peer already a member (here one named at
    submission, running the job) with `heads` that never come (the door lets a member add
    anyone, and `heads` are its word) made it wait to join: on 0e63aa2 p1 started no run
    of its job for lease_s while p0 ran on (again at each such add). Now only the add that
    makes a peer a member makes it wait (`members.joins`, `Scheduler._added`)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, _ = mesh.peers
        job = mesh.submit(p0, writes(40), members=[p0, p1])
        await mesh.settle()
        await finish_all(mesh, duration_s=0.5, rounds=3)
        before = len(mesh[p1].runner.started)
        assert before > 0
        mesh.emit(p0, EventType.JOB_MEMBERS,
                  {"job": job, "add": [p1], "heads": {f"{p0}/{job}": 10**9}})
        await mesh.advance(0.01)
        assert not mesh[p1].sched._joining
        await finish_all(mesh, duration_s=0.5, rounds=int(CFG.lease_s) - 2)
        assert len(mesh[p1].runner.started) - before >= int(CFG.lease_s) - 3


async def test_a_second_add_does_not_make_a_joiner_wait_longer() -> None:
    """A joiner waits for the lanes as of the add that made it a member, at most lease_s
    from that add: a later JOB_MEMBERS naming it (a second peer that saw itself home, or
    a member's with seqs that never come) neither re-arms the wait nor asks for its
    `heads` (on 0e63aa2 p2 waited lease_s from the last add: nothing run by then)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        mesh.hold = lambda ev, to: to == p2 and lane_of(ev.origin) is not None  # none reach it
        job = mesh.submit(p0, writes(12), members=[p0, p1])
        await mesh.settle()
        await until_spread(mesh, (p0, p1))
        added_at = mesh.clock()
        assert job in mesh[p2].sched._joining
        await mesh.advance(CFG.lease_s - 3.0)
        mesh.emit(p1, EventType.JOB_MEMBERS,
                  {"job": job, "add": [p2], "heads": {f"{p1}/{job}": 10**9}})
        while mesh.clock() < added_at + CFG.lease_s + 3.0:  # (the first add's bound, then
            await mesh.advance(1.0)  # its rank's split wait, as a joiner whose lanes never came)
        assert mesh[p2].runner.started


async def test_a_peer_added_before_its_jobs_submission_came_waits_for_the_lanes_too() -> None:
    """(Session 40.) A JOB_MEMBERS folded before its JOB_SUBMITTED (events out of order:
    the sim has no door, whose `members_job` refuses such an add from peers) started no
    wait: once the JOB_SUBMITTED came, the joiner split and ran the job at once (on
    a95f359, a run within a second). It waits for the lanes as of the add, as a joiner
    whose JOB_SUBMITTED came first does (`Scheduler._wait_to_join`)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        submission_held = True
        mesh.hold = lambda ev, to: to == p2 and (lane_of(ev.origin) is not None or (
            submission_held and ev.type is EventType.JOB_SUBMITTED))
        job = mesh.submit(p0, writes(12), members=[p0, p1])
        await mesh.settle()
        await until_spread(mesh, (p0, p1))
        await mesh.advance(0.01)
        assert mesh[p2].state.member_of(job, p2) and job not in mesh[p2].state.jobs
        submission_held = False
        await mesh.advance(0.01)
        added_at = mesh.clock()
        assert job in mesh[p2].state.jobs and job in mesh[p2].sched._joining
        while mesh.clock() < added_at + CFG.lease_s - 1.0:
            await mesh.advance(1.0)
            assert mesh[p2].runner.started == []  # (on a95f359: one within a second)
        for _ in range(3):  # (the bound: then from what it holds)
            await mesh.advance(1.0)
        assert mesh[p2].runner.started


async def test_a_seq_an_adder_made_up_holds_a_joiner_only_until_that_lanes_next_event(
        ) -> None:
    """(Session 40.) A JOB_MEMBERS whose `heads` name a seq past the end of a member's lane
    (its adder's word: nothing checks it before the lanes come) held the joiner for lease_s
    (on a95f359: no run of p2's before it). The adder's clock had passed every event it
    held: once p2 holds that lane up to an event made after the add (p1's next claim or
    outcome), it holds all the adder held of it (`members.caught_up`), and runs."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, p2 = mesh.peers
        job = mesh.submit(p0, writes(40), members=[p0, p1])
        await mesh.settle()
        heads = mesh[p0].state.lane_heads([job])
        assert set(heads) == {f"{p}/{job}" for p in (p0, p1)}
        made_up = {**heads, f"{p1}/{job}": heads[f"{p1}/{job}"] + 10**6}
        mesh.emit(p0, EventType.JOB_MEMBERS, {"job": job, "add": [p2], "heads": made_up})
        added_at = mesh.clock()
        await mesh.advance(0.01)
        assert job in mesh[p2].sched._joining
        while mesh.clock() < added_at + 3.0:  # (the members finish a run each second)
            for pid in (p0, p1, p2):
                for key in mesh[pid].runner.running:
                    mesh[pid].runner.finish(key, duration_s=5.0)
            await mesh.advance(1.0)
        assert job not in mesh[p2].sched._joining
        assert mesh[p2].runner.started  # (lease_s is 10 s)
        assert mesh[p2].state.heads[f"{p1}/{job}"] < made_up[f"{p1}/{job}"]


async def test_a_joiner_waits_for_the_lane_of_a_member_whose_add_comes_after_its_own() -> None:
    """Review e, session 41, E7: the adder's `heads` name the lane of X (p3, added by p1:
    another origin's JOB_MEMBERS, in p1's stream) that the joiner p2 folds after its own add
    (p0's), and X's lane comes after the others. On 8facbac `join_heads` dropped X's lane
    at the add (no member as folded then), so p2 ran once it held p0's and p1's lanes, saw
    X's chunk open and ran it too. The wait counts every lane the adder named (but p2's)."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                          max_attempts=3, spread_s=1e9)  # (no spread of its own: adds by hand)
    mesh = JobMesh(4, CATALOG, cfg, lanes=True)
    p0, p1, p2, p3 = mesh.peers
    tasks = writes(3)
    held = True  # X's lane and X's add, to p2
    mesh.hold = lambda ev, to: held and to == p2 and (
        (lane_of(ev.origin) or ("", ""))[0] == p3
        or (ev.type is EventType.JOB_MEMBERS and p3 in ev.payload["add"]))
    try:
        job = mesh.submit(p0, tasks, members=[p0, p1])
        await mesh.settle()
        mesh.emit(p1, EventType.JOB_MEMBERS,
                  {"job": job, "add": [p3], "heads": mesh[p1].state.lane_heads([job])})
        for _ in range(3):  # (p3 joins and claims the chunk p0 and p1 left open)
            await mesh.advance(1.0)
        [x_run] = mesh[p3].runner.running
        heads = mesh[p0].state.lane_heads([job])
        assert f"{p3}/{job}" in heads  # (p0 holds X's lane: a member's push)
        mesh.emit(p0, EventType.JOB_MEMBERS, {"job": job, "add": [p2], "heads": heads})
        for _ in range(3):
            await mesh.advance(1.0)
            assert mesh[p2].runner.started == []  # (8facbac: X's chunk, at once)
        assert job in mesh[p2].sched._joining and not mesh[p2].state.member_of(job, p3)
        held = False
        await finish_all(mesh, rounds=10)
        runs = Counter(k for p in mesh.peers.values() for k in p.runner.started)
        assert runs[x_run] == 1 and sum(runs.values()) == len(tasks)
        assert done(mesh, p0, job, tasks)
    finally:
        await mesh.close()


async def joiners_first_runs(how: str) -> list[str]:
    """p2, added to a job of 12 tasks whose members p0 and p1 each run one, gets their
    lanes (held back from it until then) and takes its first chunks: as a joiner that waited
    for them (`how` "waited"), restarted once they came and before it claimed anything
    ("restarted"), or given them before the job's JOB_SUBMITTED ("early"). Its runs."""
    mesh = JobMesh(3, CATALOG, CFG, lanes=True)
    p0, p1, p2 = mesh.peers
    held = True
    mesh.hold = lambda ev, to: to == p2 and (
        (held and lane_of(ev.origin) is not None)
        or (how == "early" and held is not None and ev.type is EventType.JOB_SUBMITTED))
    try:
        mesh.submit(p0, writes(12), members=[p0, p1])
        await mesh.settle()
        await until_spread(mesh, (p0, p1))
        await mesh.advance(0.01)
        assert mesh[p2].runner.started == []
        held = False
        if how == "restarted":
            mesh.deliver()  # (the lanes are folded; no round of p2's before it stops)
            await mesh.restart(p2)
        elif how == "early":
            await mesh.advance(0.01)
            assert mesh[p2].runner.started == [] and not mesh[p2].state.jobs
            held = None  # (then the JOB_SUBMITTED)
        await mesh.advance(0.01)
        return list(mesh[p2].runner.started)
    finally:
        await mesh.close()


@pytest.mark.parametrize("how", ["restarted", "early"])
async def test_a_joiner_found_caught_up_takes_the_jobs_tasks_as_one_that_waited(how: str,
                                                                               ) -> None:
    """Review e, session 41, E8: a joiner that holds the lanes as of its add when it is
    restarted before it claimed anything, or when the job's JOB_SUBMITTED comes after them,
    took the job's tasks in name order (`recover`'s, the JOB_SUBMITTED's marks), not as a
    freed slot takes starved ones, first those it comes first for (`Scheduler._joined`:
    else it claims what a member whose slot frees takes at once). It claims what a joiner
    that waited for the lanes claims."""
    waited = await joiners_first_runs("waited")
    assert waited and await joiners_first_runs(how) == waited


async def test_the_holder_of_a_per_item_tasks_input_comes_first_for_its_chunks() -> None:
    """(Session 42.) A lanes job's per-item task is split by the member that holds its
    input (here the one that ran T_WRITE), and that member comes first for its chunks, as
    with lanes off: it queues a chunk of a short call behind its busy slot. On 8facbac the
    rendezvous hash of the task over the members ranked first the member without the input,
    which queues nothing (it would fetch the items), so the holder claimed one chunk at a
    time (bench_mesh's per-file map on 3 peers, lanes on: 1,735 items/s against 2,296)."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05, tick_s=0.25,
                          queue_ahead=1, max_chunk_items=4)
    mesh = JobMesh(2, CATALOG, cfg, lanes=True, batch=True)
    p0, p1 = mesh.peers
    tasks = [{"name": "w", "call": "T_WRITE", "params": {"files": 24}},
             {"name": "u", "call": "T_UPPER", "params": {}, "depends": ["w"]}]
    try:
        while True:  # a job whose hash of u puts first the member that does not run w
            job = mesh.submit(p0, tasks, members=[p0, p1])
            if rendezvous(f"{job}/u", [p0, p1])[0] != rendezvous(f"{job}/w", [p0, p1])[0]:
                break
            mesh.emit(p0, EventType.JOB_CANCELLED, {"job": job, "reason": "another case"})
        await mesh.settle()
        [holder] = [pid for pid, p in mesh.peers.items() if p.runner.running]
        other = p1 if holder == p0 else p0
        assert rendezvous(f"{job}/u", [p0, p1])[0] == other  # (the case looked at)
        mesh[holder].runner.finish(mesh[holder].runner.running[0])
        await mesh.settle()
        [split] = mesh.sent(EventType.TASK_SPLIT, job=job, task="u")
        assert peer_of(split.origin) == holder
        h = mesh[holder]
        for s in (h.sched, mesh[other].sched):
            assert s._first_peer((job, "u"), [p0, p1]) == holder
        h.runner.finish(h.runner.running[0], duration_s=0.01)  # a short call
        await mesh.settle()  # no time passes
        assert len(h.runner.running) == 2  # its next chunk, and one queued behind it
    finally:
        await mesh.close()


def answer(mesh: JobMesh, pid: str, job: str) -> tuple[str, dict[str, str]]:
    """What a user asking peer `pid` for `job`'s list entry reads: its state and outputs."""
    st = mesh[pid].state
    entry = (elsewhere_entry(st, job) if held_elsewhere(st, job, pid)
             else job_view(st, job, CFG.max_attempts, detail=False))
    return entry["state"], entry["outputs"]


@pytest.mark.parametrize("lanes", [True, False])
async def test_after_a_partition_every_peer_reports_one_result_of_the_job(lanes: bool) -> None:
    """(Review r1 of session 45, M5.) Members p0 | p1 cut apart, the non-member p2 with p1:
    w0 fails every attempt on p0's side and is done on p1's; each side's home ends the job
    (p0 `failed`, p1 `done`). After the heal every peer reports the job `done` with the same
    outputs, as every peer does with lanes off (the reference: each folds both sides' task
    events). On 4f5ca2e p0's `failed` JOB_ENDED (the earlier by (hlc, origin, seq)) won on
    every peer: the non-member reported `failed`, the members `done`."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=lanes)) as mesh:
        p0, p1, p2 = mesh.peers
        tasks = writes(4)
        job = mesh.submit(p0, tasks, members=[p0, p1] if lanes else None)
        await mesh.settle()
        mesh.partition({p0}, {p1, p2})
        await cut_and_run(mesh, {p0: "w0"})
        assert answer(mesh, p0, job)[0] == "failed" and answer(mesh, p1, job)[0] == "done"
        if lanes:
            ends = {e.origin: e.payload["state"] for e in mesh.sent(EventType.JOB_ENDED)}
            assert ends == {p0: "failed", p1: "done"}  # (the case looked at)
        mesh.heal()
        await finish_all(mesh, rounds=30)
        answers = {pid: answer(mesh, pid, job) for pid in mesh.peers}
        assert answers[p0][0] == "done" and set(answers[p0][1]) == {t["name"] for t in tasks}
        assert answers == dict.fromkeys(mesh.peers, answers[p0])
        if lanes:
            assert {mesh[pid].state.ended[job].origin for pid in mesh.peers} == {p1}


async def cut_and_run(mesh: JobMesh, fails: dict[str, str], rounds: int = 80) -> None:
    """Run every live peer's chunks for `rounds` seconds, failing every attempt of task
    `fails[pid]` on peer `pid` (its other chunks finish)."""
    for _ in range(rounds):
        for pid, p in mesh.peers.items():
            for key in list(p.runner.running):
                if pid in fails and fails[pid] in key:
                    p.runner.fail(key, kind="error", error="flaky")
                else:
                    p.runner.finish(key)
        await mesh.advance(1.0)


@pytest.mark.parametrize("lanes", [True, False])
async def test_after_a_crossing_partition_every_peer_reports_the_job_done(lanes: bool) -> None:
    """(Session 46, helper b: review r1 M5's open case (1).) Members p0 | p1 cut apart, the
    non-member p2 with p1: p0's side does w0 and fails w1, p1's side the reverse, so each
    home ends the job `failed` with one failed task. After the heal every member's merged
    fold says both done, no end does: the home (p0) emits another from its fold, `done`,
    which ranks first on every peer (`end_rank`: fewer failed), and only one (it ties with
    nothing later). With lanes off (the reference) every peer folds both sides' task
    events. On 5c96899 the members reported `done`, the non-member `failed`."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=lanes)) as mesh:
        p0, p1, p2 = mesh.peers
        tasks = writes(4)
        job = mesh.submit(p0, tasks, members=[p0, p1] if lanes else None)
        await mesh.settle()
        mesh.partition({p0}, {p1, p2})
        await cut_and_run(mesh, {p0: "w1", p1: "w0", p2: "w0"})
        assert answer(mesh, p0, job)[0] == "failed" and answer(mesh, p1, job)[0] == "failed"
        if lanes:
            ends = [(e.origin, e.payload["state"], sorted(e.payload["failed"]))
                    for e in mesh.sent(EventType.JOB_ENDED)]
            assert sorted(ends) == [(p0, "failed", ["w1"]), (p1, "failed", ["w0"])]
        mesh.heal()
        await finish_all(mesh, rounds=30)
        answers = {pid: answer(mesh, pid, job) for pid in mesh.peers}
        assert answers[p0][0] == "done" and set(answers[p0][1]) == {t["name"] for t in tasks}
        assert answers == dict.fromkeys(mesh.peers, answers[p0])
        if lanes:
            [better] = [e for e in mesh.sent(EventType.JOB_ENDED) if not e.payload["failed"]]
            assert (better.origin, better.payload["state"], better.payload["failed"]) == (
                p0, "done", {})
            assert {mesh[pid].state.ended[job].id for pid in mesh.peers} == {better.id}
            await finish_all(mesh, rounds=10)
            assert len(mesh.sent(EventType.JOB_ENDED)) == 3  # (no end ties and goes out)


async def crossed(mesh: JobMesh) -> str:
    """Submit 4 tasks at p0 (members p0, p1), cut p0 from p1 and p2, run each side until its
    home ended the job `failed` (p0's side fails w1, p1's w0), heal, and deliver for a
    second (the members' merged folds fail no task, every end fails one): the job."""
    p0, p1, p2 = mesh.peers
    job = mesh.submit(p0, writes(4), members=[p0, p1])
    await mesh.settle()
    mesh.partition({p0}, {p1, p2})
    await cut_and_run(mesh, {p0: "w1", p1: "w0", p2: "w0"})
    assert len(mesh.sent(EventType.JOB_ENDED)) == 2
    mesh.heal()
    await mesh.advance(1.0)
    assert mesh[p0].sched._better.keys() == mesh[p1].sched._better.keys() == {job}
    return job


def the_better_end(mesh: JobMesh, job: str) -> tuple[str, str] | None:
    """The origin and state of the one JOB_ENDED sent that fails no task (None if none
    was), which every live peer took for the job's end."""
    better = [e for e in mesh.sent(EventType.JOB_ENDED, job=job) if not e.payload["failed"]]
    if not better:
        return None
    [ev] = better
    assert {mesh[pid].state.ended[job].id for pid in mesh.peers
            if pid not in mesh.silent} == {ev.id}
    return ev.origin, ev.payload["state"]


async def test_after_a_crossing_partition_the_next_member_ends_the_job_if_the_home_is_gone(
        ) -> None:
    """The home (p0) leaves within end_grace_s of the heal, before its better end went
    out: p1, whose fold makes the same end, is home once p0 is no longer live (the live
    peers changed: `_better` is looked at again) and emits it. (On 5c96899 no member
    ended the job again.)"""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, _ = mesh.peers
        job = await crossed(mesh)
        mesh.silent.add(p0)
        await finish_all(mesh, rounds=30)
        assert the_better_end(mesh, job) == (p1, "done")


async def test_after_a_crossing_partition_a_home_restarted_in_its_grace_ends_the_job(
        ) -> None:
    """A home restarted between the heal and its better end (the grace is in memory only)
    looks at the ended jobs it is a member of once, at `recover`, and emits it then."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, _, _ = mesh.peers
        job = await crossed(mesh)
        await mesh.restart(p0)
        await finish_all(mesh, rounds=10)
        assert the_better_end(mesh, job) == (p0, "done")


async def test_an_ended_job_is_looked_at_again_only_when_an_event_of_it_is_noted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cost (session 46, helper b): once the better end is out and folded, the ticks
    that look at the running lanes jobs (a second job's, its runs held) walk no ended job
    (`ending.better_end` is not called, `Merits` reads no task's status), however many
    pass."""
    import peer.jobs.scheduler as scheduler
    calls: list[str] = []

    def counted(state: MeshState, job: str, me: str, max_attempts: int) -> Any:
        calls.append(me)
        return better(state, job, me, max_attempts)

    better = scheduler.better_end
    monkeypatch.setattr(scheduler, "better_end", counted)
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        job = await crossed(mesh)
        await finish_all(mesh, rounds=10)
        assert the_better_end(mesh, job) is not None
        p0, p1, _ = mesh.peers
        fresh = [{**t, "params": {"files": 1, "tag": "x"}} for t in writes(1)]  # (no hit)
        second = mesh.submit(p0, fresh, members=[p0, p1])
        await mesh.settle()
        calls.clear()
        walked = {pid: mesh[pid].sched._merits.walked for pid in mesh.peers}
        for _ in range(30):  # (its runs go on: it stays running, `_lanes_tick` looks)
            await mesh.advance(1.0)
        assert calls == [] and second in mesh[p0].sched._lanes_live
        assert {pid: mesh[pid].sched._merits.walked for pid in mesh.peers} == walked
        assert all(not mesh[pid].sched._better and not mesh[pid].sched._reend
                   for pid in mesh.peers)


async def test_a_look_at_an_ended_job_reads_the_status_of_the_tasks_noted_since_the_last(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r2 of session 46, L2: a job of 40 tasks ended `failed` (one failed for good:
    its winning end is not first by merit, so each look asks whether the member's fold now
    makes a better one). A late lane event of one task (a member's second TASK_DONE of a
    task done: a heal's straggler) makes the next look read that task's status alone
    (`ending.Merits`); on 9590a1d each such look walked every task twice (`job_ended`,
    `finished_at`: 80 statuses)."""
    import peer.jobs.ending as ending
    import peer.jobs.retention as retention
    async with closing(JobMesh(2, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1 = mesh.peers
        tasks = writes(40)
        job = mesh.submit(p0, tasks, members=[p0, p1])
        await mesh.settle()
        await cut_and_run(mesh, {p0: "w0", p1: "w0"}, rounds=60)
        [end] = mesh.sent(EventType.JOB_ENDED, job=job)
        assert end.payload["failed"].keys() == {"w0"}
        done_w1 = mesh[p0].state.task_done[(job, "w1")]
        counted: list[str] = []
        real = ending.task_status

        def task_status(state: MeshState, job_: str, task: str, max_attempts: int) -> str:
            counted.append(task)
            return real(state, job_, task, max_attempts)

        monkeypatch.setattr(ending, "task_status", task_status)
        monkeypatch.setattr(retention, "task_status", task_status)
        late = mesh.emit(p1, EventType.TASK_DONE, {  # (w1's again: the earlier one stays)
            "job": job, "task": "w1", "output": done_w1.payload["output"],
            "key": done_w1.payload["key"], "cached": False})
        await mesh.settle()
        await mesh.advance(1.0)  # (a tick: `_better_ends` looks)
        assert mesh[p0].state.holds(late.id)
        assert counted == ["w1"] * 2  # (each member's look: p1's own event, p0's)
        assert mesh.sent(EventType.JOB_ENDED, job=job) == [end]  # (no better end)


async def test_a_restart_looks_at_its_ended_jobs_a_bounded_number_of_tasks_a_tick(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r2 of session 46, L2: a restart looks at every ended job in memory it is a
    member of (its grace for a better end is in memory only); those of more than
    `_REEND_TASKS` tasks in all are looked at over several ticks, each job once, not in one
    (here 3 jobs of 20 tasks ended `failed`, a tick stopping once it read 25 statuses: 40,
    then 20, then none)."""
    import peer.jobs.scheduler as scheduler
    async with closing(JobMesh(2, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1 = mesh.peers
        jobs = []
        for i in range(3):
            jobs.append(mesh.submit(p0, [{**t, "params": {"files": 1, "tag": f"{i}{t['name']}"}}
                                         for t in writes(20)], members=[p0, p1]))
            await mesh.settle()
            await cut_and_run(mesh, {p0: "w0", p1: "w0"}, rounds=40)
        assert all(mesh[p0].state.ended[j].payload["failed"].keys() == {"w0"} for j in jobs)
        monkeypatch.setattr(scheduler, "_REEND_TASKS", 25)
        await mesh.restart(p0)
        sched = mesh[p0].sched
        walked = []
        for _ in range(4):
            before = sched._merits.walked
            sched._better_ends(mesh.clock())
            walked.append(sched._merits.walked - before)
        assert walked == [40, 20, 0, 0] and not sched._reend and not sched._better


async def test_after_a_crossing_partition_a_job_deleted_meanwhile_is_not_ended_again() -> None:
    """A job deleted within end_grace_s of the heal (its record gone: no fold of it left)
    gets no other end, and leaves the members' tables of ended jobs (`_sweep_gone`)."""
    async with closing(JobMesh(3, CATALOG, CFG, lanes=True)) as mesh:
        p0, p1, _ = mesh.peers
        job = await crossed(mesh)
        mesh.emit(p1, EventType.JOB_DELETED, {"job": job, "reason": "test"})
        await finish_all(mesh, rounds=10)
        assert the_better_end(mesh, job) is None
        assert all(job in mesh[pid].state.deleted for pid in mesh.peers)
        assert not mesh[p0].sched._better and not mesh[p1].sched._better

"""Partial replication on real peers (lanes, on by default since session 44; each peer here says
--lanes: docs/design/partial-replication.md, step 10): three peers with lanes on, a job's task
events held by its two members only, the third keeping its submission and end (the same job list
and state) and answering its view; a job of fewer tasks than --lanes-min-job-tasks held in full
by every peer beside it."""

from __future__ import annotations

import signal
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.log import EventType
from peer.log.lanes import lane_of
from tests.conftest import PeerProc, start_peer, stop_peers
from tests.helpers import get_json as get
from tests.helpers import post_json as post
from tests.helpers import wait_job, wait_mesh
from tests.integration.test_mesh import start_all

TASKS = 200
SMALL = 3  # tasks of a job under --lanes-min-job-tasks (its default): held in full
KILL_TASKS = 1000  # (about 10 s of ECHO runs on 2 slots: long enough to kill a member mid-job)
# the kill -9 tests' job: killed at a tenth done (`_under_way` asserts it is not done), its
# survivors run the rest; 1,000 made the third peer of the `members` case run 900 tasks alone
# on its one slot (~9 s) after the lease (the restart tests keep 1,000: a member restarted at
# once must find the job still running, which none of them asserts; the one restarted once
# the job ended takes 400 too)
KILLED_TASKS = 400
WAIT_S = 120.0  # a bound on each wait below (the job takes a few seconds on 2 cores)


def _job(n: int) -> list[dict[str, object]]:
    tag = uuid.uuid4().hex[:8]
    return [{"call": "ECHO", "args": [f"{tag}-{i}"]} for i in range(n)]


def _peer_id(p: PeerProc) -> str:
    return str(get(f"{p.url}/api/health")["peer"])


def _lane_rows(p: PeerProc, job: str) -> int:
    """The rows of `job`'s lanes in a stopped peer's log."""
    db = sqlite3.connect(p.data_dir / "events.sqlite")
    try:
        return sum(1 for (o,) in db.execute("SELECT origin FROM events")
                   if (got := lane_of(o)) is not None and got[1] == job)
    finally:
        db.close()


def _job_rows(p: PeerProc, job: str, origin: str = "%") -> int:
    """The rows of a stopped peer's log that name `job` (of origins LIKE `origin`)."""
    db = sqlite3.connect(p.data_dir / "events.sqlite")
    try:
        return int(db.execute("SELECT count(*) FROM events WHERE payload LIKE ? AND origin "
                              "LIKE ?", (f"%{job}%", origin)).fetchone()[0])
    finally:
        db.close()


def _mesh_rows(p: PeerProc, job: str) -> dict[EventType, int]:
    """Event type -> the rows of a stopped peer's log in mesh streams (no lane) that name
    `job`."""
    db = sqlite3.connect(p.data_dir / "events.sqlite")
    try:
        out: dict[EventType, int] = {}
        for o, t in db.execute("SELECT origin, type FROM events WHERE payload LIKE ?",
                               (f"%{job}%",)):
            if lane_of(o) is None:
                out[EventType(t)] = out.get(EventType(t), 0) + 1
        return out
    finally:
        db.close()


def _state(p: PeerProc, job: str, timeout_s: float = WAIT_S) -> str:
    """`job`'s state in `p`'s job list once it is final there (bounded)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        entry = {j["id"]: j for j in get(f"{p.url}/api/jobs")["jobs"]}.get(job)
        if entry is not None and entry["state"] in ("done", "failed", "cancelled"):
            return str(entry["state"])
        time.sleep(0.2)
    raise AssertionError(f"job {job} not final in {p.url}/api/jobs")


@pytest.fixture
def trio(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[PeerProc]]:
    """Three peers with --lanes of one mesh found by mDNS (--slots 1, and the flags of an
    indirect parameter, if any). A test may put a restarted peer in the list in its place."""
    mesh, started, peers = f"lanes-{uuid.uuid4().hex[:12]}", [], []
    flags = tuple(getattr(request, "param", ()))

    def start(name: str) -> PeerProc:
        started.append(p := start_peer(tmp_path / name, "--slots", "1", "--lanes", *flags,
                                       mesh=mesh))
        return p

    try:
        peers = start_all(start, ("l0",), ("l1",), ("l2",))
        wait_mesh(peers, 3)
        yield peers
    finally:
        stop_peers({id(p): p for p in [*started, *peers]}.values())


def _restart(p: PeerProc) -> PeerProc:
    """`p` (stopped) started again on its data dir with the same flags and environment (a
    new HTTP port)."""
    at = p.args.index("--mesh-name")
    return start_peer(p.data_dir, *p.args[at + 2:], mesh=p.args[at + 1], env=p.env)


def _entries(p: PeerProc) -> dict[str, dict[str, object]]:
    return {j["id"]: j for j in get(f"{p.url}/api/jobs")["jobs"]}


def _members(peers: list[PeerProc], job: str) -> list[str]:
    """`job`'s members as a non-member's list entry names them (bounded wait: its
    JOB_SUBMITTED reaches every peer)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for p in peers:
            got = _entries(p).get(job, {}).get("members")
            if got:
                assert isinstance(got, list)
                return [str(m) for m in got]
        time.sleep(0.1)
    raise AssertionError(f"no peer's list entry of {job} names members: no lanes job")


def test_a_lanes_job_runs_on_its_members_and_the_third_peer_holds_no_lane(
        trio: list[PeerProc]) -> None:
    ids = {_peer_id(p): p for p in trio}
    job = post(f"{trio[0].url}/api/jobs", _job(TASKS))["job"]
    members = _members(trio, job)
    assert len(members) == 2 and set(members) <= set(ids), members
    (other_id,) = set(ids) - set(members)
    other = ids[other_id]
    view = wait_job(other, job, timeout_s=WAIT_S)  # (a member's view while it runs)
    assert view["state"] == "done", view
    # every peer: the same job list and state; the non-member its own record of the job
    states = {p.url: _state(p, job) for p in trio}
    assert set(states.values()) == {"done"}, states
    seen = get(f"{other.url}/api/jobs/{job}")
    assert seen["state"] == "done" and seen["id"] == job, seen
    lists = [sorted((j["id"], j["state"]) for j in get(f"{p.url}/api/jobs")["jobs"])
             for p in trio]
    assert lists[0] == lists[1] == lists[2], lists
    # the non-member keeps the job in its recent history as the members do (200 tasks, within
    # compact_recent_tasks): every peer holds the same jobs, so anti-entropy's content digests
    # agree (issue 12; its record from the JOB_ENDED once pushed out: test_lanes_compact)
    compacted = [get(f"{p.url}/api/health")["log"]["compaction"]["jobs"] for p in trio]
    assert compacted == [0, 0, 0], compacted
    seen = get(f"{other.url}/api/jobs/{job}")
    assert seen["state"] == "done" and seen["id"] == job, seen
    refused = get(f"{other.url}/api/health")["log"]["refused"]
    assert refused["total"] == 0, refused  # (no lane event was sent to it)
    stop_peers(trio)
    rows = {pid: _lane_rows(p, job) for pid, p in ids.items()}
    assert all(rows[m] > 0 for m in members) and rows[other_id] == 0, (rows, refused)


def test_a_lanes_job_is_found_on_every_peer_right_after_its_post(
        trio: list[PeerProc]) -> None:
    """Posted to each peer in turn: as soon as the POST answered, every peer lists the job
    and answers its view, its non-member too (the JOB_SUBMITTED reaches it in the push that
    reaches the replica; before, it waited for the lazy push: 404 meanwhile); a cancel on
    the non-member ends the job cancelled on every peer."""
    for p in trio:
        job = post(f"{p.url}/api/jobs", _job(TASKS))["job"]
        for q in trio:
            assert job in _entries(q), q.url
            assert get(f"{q.url}/api/jobs/{job}")["id"] == job
    ids = {_peer_id(p): p for p in trio}
    job = post(f"{trio[0].url}/api/jobs", _job(KILL_TASKS))["job"]
    members = _members(trio, job)
    (other,) = [p for pid, p in ids.items() if pid not in members]
    assert post(f"{other.url}/api/jobs/{job}/cancel")["state"] == "cancelled"
    assert {_state(p, job) for p in trio} == {"cancelled"}


def _pinned(p: PeerProc) -> set[str]:
    return set(post(f"{p.url}/api/v0/pin/ls?type=recursive")["Keys"])


def test_every_output_of_a_lanes_job_is_pinned_on_two_peers(trio: list[PeerProc]) -> None:
    """--replicas 2 (the default) holds with lanes: each output on its producer and one
    other peer, the other member (it alone folds the TASK_DONE and its inline blocks).
    Before: the lane was ranked as a peer, the producer among the others, and a non-member
    named for outputs it never sees: most outputs were on their producer alone."""
    job = post(f"{trio[0].url}/api/jobs", _job(TASKS))["job"]
    assert len(_members(trio, job)) == 2
    view = wait_job(trio[0], job, timeout_s=WAIT_S)
    assert view["state"] == "done", view
    outputs = set(view["outputs"].values())
    assert len(outputs) == TASKS

    def short() -> dict[str, int]:  # output -> the peers pinning it, where fewer than two
        pins = [_pinned(p) for p in trio]
        return {c: n for c in outputs if (n := sum(c in x for x in pins)) < 2}

    deadline = time.monotonic() + WAIT_S  # (inline outputs: written as their replica folds)
    while (left := short()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"{len(left)} of {TASKS} outputs pinned on fewer than 2 peers"


@pytest.mark.parametrize("trio", [("--lease-s", "3")], indirect=True)
@pytest.mark.parametrize("killed", ["runner", "home", "members"])
def test_a_lanes_job_finishes_when_members_are_killed(trio: list[PeerProc], killed: str) -> None:
    """kill -9 mid-job of the member that is not the home (the submitter: `members`' first),
    of the home, of both (the third peer adds itself and runs the job: design 5.4). The
    non-member's view of the running job is a member's answer. Leases of 3 s (as the restart
    tests'): each case waits one lease after the kill (the dead runner's claims lapse, the
    home's duties pass on, the orphaned job is taken), 10 s by default."""
    ids = {_peer_id(p): p for p in trio}
    job = post(f"{trio[0].url}/api/jobs", _job(KILLED_TASKS))["job"]
    members = _members(trio, job)
    assert members[0] == _peer_id(trio[0]), members
    (other,) = [p for pid, p in ids.items() if pid not in members]
    victims = {"runner": [ids[members[1]]], "home": [ids[members[0]]],
               "members": [ids[m] for m in members]}[killed]
    _under_way(other, job)
    for p in victims:
        p.kill(signal.SIGKILL)
    alive = [p for p in trio if p not in victims]
    assert {_state(p, job) for p in alive} == {"done"}
    assert wait_job(other, job, timeout_s=WAIT_S)["state"] == "done"


def test_a_small_job_is_held_in_full_by_every_peer_beside_a_lanes_job(
        trio: list[PeerProc]) -> None:
    """A job of fewer tasks than --lanes-min-job-tasks (its default), posted while a big job
    runs in lanes: it names no members, every peer answers its own view of it (none passed on
    from a member) and holds its task events in the mesh streams, as without lanes, and no
    JOB_MEMBERS or JOB_ENDED is made of it; the big job stays on its two members."""
    ids = {_peer_id(p): p for p in trio}
    big = post(f"{trio[0].url}/api/jobs", _job(TASKS))["job"]
    small = post(f"{trio[1].url}/api/jobs", _job(SMALL))["job"]
    members = _members(trio, big)
    for p in trio:
        _all_done(p, small, SMALL)
    assert {_state(p, big) for p in trio} == {"done"}
    assert all("members" not in _entries(p)[small] for p in trio)
    stop_peers(trio)
    for p in trio:
        rows = _mesh_rows(p, small)
        task_rows = sum(rows.get(t, 0) for t in (EventType.TURN, EventType.CLAIM,
                                                 EventType.CHUNK_DONE, EventType.TASK_DONE))
        assert _lane_rows(p, small) == 0 and task_rows > 0, rows
        assert EventType.JOB_ENDED not in rows and EventType.JOB_MEMBERS not in rows, rows
    assert [_lane_rows(p, big) > 0 for pid, p in ids.items()] == [pid in members for pid in ids]


def test_a_mesh_with_a_peer_without_lanes_makes_jobs_every_peer_holds(tmp_path: Path) -> None:
    """One peer with --no-lanes (as a peer of an earlier release, where lanes were off by
    default: it does not announce lanes-v1): a job submitted to a lanes peer names no
    members and every peer runs and holds it in full, as before lanes."""
    mesh = f"lanes-{uuid.uuid4().hex[:12]}"
    peers: list[PeerProc] = []
    try:
        peers += start_all(lambda name, *flags: start_peer(
            tmp_path / name, "--slots", "1", *flags, mesh=mesh),
            ("l0", "--lanes"), ("l1", "--lanes"), ("old", "--no-lanes"))
        wait_mesh(peers, 3)
        job = post(f"{peers[0].url}/api/jobs", _job(TASKS))["job"]
        assert {_state(p, job) for p in peers} == {"done"}
        entries = [_entries(p)[job] for p in peers]
        assert all("members" not in e and not e.get("partial") for e in entries), entries
        views = [get(f"{p.url}/api/jobs/{job}") for p in peers]
        assert all(len(v["tasks"]) == TASKS for v in views)
    finally:
        stop_peers(peers)
    assert all(_lane_rows(p, job) == 0 for p in peers)
    # (each peer holds the job's task events in full: its own copy of every TASK_DONE)
    for p in peers:
        assert _job_rows(p, job) > TASKS // 2, (p.data_dir.name, _job_rows(p, job))


def test_the_members_drop_a_compacted_job_s_lanes_once_each_holds_the_other_s(
        tmp_path: Path) -> None:
    """With --compact-recent-tasks 0 every peer compacts the job once it ended; its members'
    lanes leave their logs once a pair round proved the other member holds them (gossip's
    pair vectors, the compactor's `pair_vvs`), not at the horizon (7 days): before, the
    node passed no pair vector and the lanes stayed."""
    mesh, peers = f"lanes-{uuid.uuid4().hex[:12]}", []
    try:
        peers += start_all(lambda name: start_peer(
            tmp_path / name, "--slots", "1", "--lanes", "--compact-recent-tasks", "0",
            mesh=mesh), ("l0",), ("l1",), ("l2",))
        wait_mesh(peers, 3)
        ids = {_peer_id(p): p for p in peers}
        job = post(f"{peers[0].url}/api/jobs", _job(TASKS))["job"]
        members = [ids[m] for m in _members(peers, job)]
        assert {_state(p, job) for p in peers} == {"done"}
        deadline = time.monotonic() + WAIT_S
        rows = {p.data_dir.name: _lane_rows(p, job) for p in members}
        while any(rows.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = {p.data_dir.name: _lane_rows(p, job) for p in members}
        assert not any(rows.values()), rows
        # (the non-member compacts on its own tick, which the members' lane drop does not wait for)
        compacted = [-1]
        while compacted != [1] * len(peers) and time.monotonic() < deadline:
            compacted = [get(f"{p.url}/api/health")["log"]["compaction"]["jobs"] for p in peers]
            time.sleep(0.2)
        assert compacted == [1] * len(peers), compacted
        assert all(get(f"{p.url}/api/jobs/{job}")["state"] == "done" for p in peers)
    finally:
        stop_peers(peers)


def _under_way(p: PeerProc, job: str) -> None:
    """Until `job` is under way in `p`'s view (a tenth of it done, bounded), and not done:
    what a test of a failure mid-job is about."""
    deadline = time.monotonic() + WAIT_S
    progress = 0.0
    while progress < 0.1 and time.monotonic() < deadline:
        progress = get(f"{p.url}/api/jobs/{job}")["progress"]
        time.sleep(0.05)
    assert 0.1 <= progress < 1.0, progress


def _all_done(p: PeerProc, job: str, n: int) -> None:
    """`p`'s own view of `job` (a member's: not passed on from another) is done with its `n`
    tasks each done: none lost, none left pending."""
    view = wait_job(p, job, timeout_s=WAIT_S)
    assert "served_by" not in view, view["served_by"]
    states = [t["state"] for t in view["tasks"]]
    assert view["state"] == "done" and states == ["done"] * n, (view["state"], states[:5])


@pytest.mark.parametrize("trio", [("--lease-s", "3")], indirect=True)
@pytest.mark.parametrize("restarted", ["runner", "home", "runner-after-end"])
def test_a_member_restarted_mid_job_replays_its_lanes_and_the_job_finishes(
        trio: list[PeerProc], restarted: str) -> None:
    """SIGTERM of a member mid-job (the non-home one, or the home), then a start on its data
    dir (at once, or once the job ended on the others: the non-member lists it done): it
    replays its lanes (its rows of the job are in its log), catches up the rest, and every
    member's own view says each task done; the non-member lists the job done."""
    ids = {_peer_id(p): p for p in trio}
    # (restarted once the job ended: no need of a job still running at the restart)
    tasks = KILLED_TASKS if restarted == "runner-after-end" else KILL_TASKS
    job = post(f"{trio[0].url}/api/jobs", _job(tasks))["job"]
    members = _members(trio, job)
    (other,) = [p for pid, p in ids.items() if pid not in members]
    victim = ids[members[0] if restarted == "home" else members[1]]
    _under_way(other, job)
    victim.kill(signal.SIGTERM)
    assert victim.proc.returncode == 0, victim.output[-2000:]
    if restarted == "runner-after-end":
        assert _state(other, job) == "done"
    assert _lane_rows(victim, job) > 0  # (what it replays)
    trio[trio.index(victim)] = again = _restart(victim)
    for pid in members:
        _all_done(again if ids[pid] is victim else ids[pid], job, tasks)
    assert _state(other, job) == "done"
    health = get(f"{again.url}/api/health")["log"]
    assert health["quarantined"] == 0 and health["refused"]["total"] == 0, health


@pytest.mark.parametrize("trio", [("--lease-s", "3")], indirect=True)
def test_an_acknowledged_lanes_job_survives_kill_9_of_its_home_right_after_the_answer(
        trio: list[PeerProc]) -> None:
    """kill -9 of the home as soon as `POST /api/jobs` answered: the replica acknowledged
    (fsynced) the JOB_SUBMITTED, takes the home's duties after lease_s and finishes the job;
    the third peer lists it done."""
    home = trio[0]
    home_id = _peer_id(home)
    job = post(f"{home.url}/api/jobs", _job(TASKS))["job"]
    home.kill(signal.SIGKILL)
    alive = trio[1:]
    members = _members(alive, job)
    assert members[0] == home_id and len(members) == 2, members
    (replica,) = [p for p in alive if _peer_id(p) == members[1]]
    _all_done(replica, job, TASKS)
    assert {_state(p, job) for p in alive} == {"done"}


def test_a_member_s_data_dir_opens_with_lanes_off_and_again_with_lanes_on(
        tmp_path: Path) -> None:
    """A member of a lanes job (two peers with --lanes) stopped, started alone with
    --no-lanes, stopped, started with --lanes again: with lanes off it starts, keeps the job
    (as a newer peer's: it runs none of it) and its lanes' rows stay on disk; with lanes on
    they fold again: its own view has every task done, none run again. Before, the rows went
    to the quarantine with lanes off and never came back: with lanes on the job was run
    again from its first task."""
    mesh = f"lanes-{uuid.uuid4().hex[:12]}"
    peers: list[PeerProc] = []
    try:
        peers += start_all(lambda name: start_peer(
            tmp_path / name, "--slots", "1", "--lanes", mesh=mesh), ("l0",), ("l1",))
        wait_mesh(peers, 2)
        job = post(f"{peers[0].url}/api/jobs", _job(TASKS))["job"]
        for p in peers:
            _all_done(p, job, TASKS)
        stop_peers(peers)
        member = peers[0]
        rows = _lane_rows(member, job)
        assert rows > TASKS, rows
        at = member.args.index("--mesh-name")
        flags = [f for f in member.args[at + 2:] if f != "--lanes"]
        peers.append(off := start_peer(member.data_dir, *flags, "--no-lanes", mesh=mesh))
        assert get(f"{off.url}/api/health")["log"]["quarantined"] == 0
        assert job in _entries(off)
        stop_peers([off])
        assert _lane_rows(off, job) == rows
        peers.append(on := _restart(member))
        _all_done(on, job, TASKS)
        assert get(f"{on.url}/api/health")["log"]["quarantined"] == 0
        stop_peers([on])
        assert _lane_rows(on, job) == rows  # (no task ran again)
    finally:
        stop_peers(peers)

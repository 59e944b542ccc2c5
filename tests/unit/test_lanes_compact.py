"""Compaction and snapshots with lanes (docs/design/partial-replication.md, section 4
"Compaction and the log", "Snapshots and catch-up"; step 8), with lanes on explicitly
(`Node(cfg, lanes=True)`): a member compacts a lanes job once its JOB_ENDED is held, and its
lanes leave the log once every live member's pair vector covers them, their heads forgotten
(`MeshState.forget_lanes`); a lane event of the job that comes after is refused at the door
(`lane_closed`); a snapshot holds no lane row. Real data dirs in tmp_path, no gossip, no live
peers (the compactor's `heard` and `pair_vvs` set by hand where another member is live)."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.config import PeerConfig
from peer.http.metrics import Metrics
from peer.jobs.ending import job_ended
from peer.log import Event, EventType, JobEnded
from peer.log.compact import ended_record
from peer.log.events import Output
from peer.log.jobindex import JobIndex, JobRecord
from peer.log.lanes import lane
from peer.log.snapframe import FrameSpool, against3, job_digest3
from peer.log.snapstream import Spool
from peer.mesh.antientropy import heads_sum
from peer.mesh.keyring import SECRET_FILE_NAME
from peer.node import Node

J1, J2 = "j0000000000b1", "j0000000000b2"
OTHER = "0123456789abcdef0123"  # another member of J1 (a peer id's form), never live here
TASKS = ("t0", "t1")
OUT = {t: str(sha256_cid(t.encode(), "raw", 1)) for t in TASKS}  # each task's output
WORKFLOW = {"name": "w", "tasks": [{"name": t, "call": "c", "params": {}, "depends": []}
                                   for t in TASKS]}


class _Gossip:
    """No peer is pushed to; `heads`: the live peers and the mesh vector each last sent."""

    def __init__(self) -> None:
        self.heads: dict[str, Mapping[str, int]] = {}

    def broadcast(self, events: Sequence[Event]) -> None:
        pass

    def acknowledge(self, origins: object) -> None:
        pass

    def live_peers(self) -> list[str]:
        return list(self.heads)

    def heads_of(self, peer: str) -> Mapping[str, int]:
        return self.heads[peer]


def _node(d: Path, members: Sequence[str] = ()) -> Node:
    """A node with lanes on, alone, that submitted J1 (members: itself and `members`) and ran
    its tasks (their TASK_DONEs in its lane of J1); J2 is submitted, never run."""
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    node.listeners[:] = [node.compactor.note]  # no scheduler: this is about the log
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    node.gossip = _Gossip()  # type: ignore[assignment]
    me = node.peer_id
    for job in (J1, J2):
        node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": WORKFLOW,
                                            "members": [me, *members]})
    for t in TASKS:
        node.emit(EventType.TASK_DONE, {"job": J1, "task": t, "output": OUT[t]})
    node.flush()
    return node


def _end(node: Node, job: str) -> Event:
    """The job's JOB_ENDED as its home emits it (`peer.jobs.ending.job_ended`): the fold
    refuses one whose orders or digest a member could not have made (`fold.end_refusal`)."""
    payload = job_ended(node.state, job, node.cfg.max_attempts)
    assert payload is not None  # (the job ended)
    ev = node.emit(EventType.JOB_ENDED, payload)
    node.flush()
    return ev


def _lane_rows(node: Node) -> list[tuple[str, int]]:
    return node.log.db.execute("SELECT origin, seq FROM events WHERE origin LIKE '%/%' "
                               "ORDER BY 1, 2").fetchall()


def _lane_state(node: Node, job: str) -> dict[str, Any]:
    """What the fold keeps of `job`'s lanes (empty once forgotten)."""
    st = node.state
    o = lane(node.peer_id, job)
    return {k: v for k, v in {"heads": st.heads.get(o), "floors": st.floors.get(o),
                              "evicted": st.evicted.get(o), "by_origin": st.by_origin.get(o),
                              "sums": st.sums.lanes.get(o), "lanes": st.lanes.get(job),
                              "members_of": st.members_of.get(job)}.items() if v}


def test_a_member_s_lanes_leave_the_log_once_compacted_ended_and_covered(
        tmp_path: Path) -> None:
    node = _node(tmp_path)
    try:
        me = node.peer_id
        node.catchup.compact()
        assert J1 not in node.state.compacted  # finished, but no JOB_ENDED held yet
        assert _lane_rows(node) == [(lane(me, J1), 1), (lane(me, J1), 2)]
        _end(node, J1)
        out = node.catchup.compact()
        assert out.jobs == [J1] and out.dropped >= 2
        # we are its one live member and hold its lanes: they leave the log, their heads go
        assert _lane_rows(node) == []
        assert _lane_state(node, J1) == {}
        assert lane(me, J1) not in node.compactor.floors  # (no floor: nothing to come back)
        assert node.index.record(J1)["members"] == [me]  # type: ignore[index]
        # a straggling lane event of the job is refused at the door, not stored
        late = Event(lane(me, J1), 3, node.hlc.now(), EventType.CLAIM, {
            "job": J1, "task": "t0", "split": ["x", 1], "chunk": 0, "attempt": 1})
        assert node.merge([late]) == []
        assert node.door.refused.by_reason.get("lane_closed") == 1
        assert _lane_rows(node) == [] and _lane_state(node, J1) == {}
    finally:
        node.log.close()


def test_the_lanes_wait_for_every_live_member_s_pair_vector(tmp_path: Path) -> None:
    node = _node(tmp_path, [OTHER])
    try:
        me = node.peer_id
        mine = lane(me, J1)
        pairs: dict[str, Mapping[str, int]] = {}
        node.compactor.pair_vvs = lambda: pairs
        _end(node, J1)
        gossip: Any = node.gossip
        gossip.heads[OTHER] = dict(node.heads())  # live, its mesh vector covers ours
        node.catchup.compact()
        assert J1 in node.state.compacted
        assert len(_lane_rows(node)) == 2  # its pair vector is not known: they stay
        pairs[OTHER] = {mine: 1}
        node.catchup.compact()
        assert len(_lane_rows(node)) == 2  # it lacks seq 2
        assert node.state.lanes[J1] == {mine}
        pairs[OTHER] = {mine: 2}
        node.catchup.compact()
        assert _lane_rows(node) == [] and _lane_state(node, J1) == {}
        # after a restart, nothing of the lanes comes back
        node.log.close()
        node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False,
                               compact_recent_tasks=0), lanes=True)
        assert _lane_rows(node) == [] and _lane_state(node, J1) == {}
        assert J1 in node.state.compacted
    finally:
        node.log.close()


@pytest.mark.parametrize("v", [2, 3])
def test_a_snapshot_from_a_member_holds_no_lane_event_and_the_mesh_heads(
        tmp_path: Path, v: int) -> None:
    """A member's snapshot (every version) leaves its lanes out of the events and the
    heads; a fresh peer that takes it holds the member's mesh streams: the same heads and
    content digests of the mesh origins, and no lane."""
    a = _node(tmp_path / "a")
    (tmp_path / "b").mkdir(mode=0o700)
    shutil.copy(tmp_path / "a" / SECRET_FILE_NAME, tmp_path / "b" / SECRET_FILE_NAME)
    b = Node(PeerConfig(data_dir=tmp_path / "b", slots=1, mdns=False), lanes=True)
    try:
        me = a.peer_id
        a.emit(EventType.MEMBER, a.capabilities())  # (the taker checks its signer by it)
        a.flush()
        assert len(_lane_rows(a)) == 2  # J1 is not ended: its lanes are held
        for w, part in ((2, None), (3, None), (3, "jobs"), (1, None)):
            body = b"".join(a.catchup.snapshot_stream(w, part))
            assert lane(me, J1).encode() not in body, (w, part)
            assert J1.encode() in body  # (its JOB_SUBMITTED, a mesh event, is there)
        read = a.catchup.digest_reader()()
        assert set(read["heads"]) == {me} and not any("/" in o for o in read["floors"])
        body = b"".join(a.catchup.snapshot_stream(v))
        path = tmp_path / "rows"
        with path.open("wb") as f:
            spool = (Spool if v == 2 else FrameSpool)(f, 1 << 30)
            spool.feed(body)
        assert b.catchup.take_stream(spool, path) is None
        assert heads_sum(b.heads()) == heads_sum(a.heads())
        assert b.state.content_sum() == a.state.content_sum()
        assert _lane_rows(b) == [] and not b.state.lanes and not b.heads([J1])
        assert b.door.refused.total == 0  # (no lane came to be refused)
    finally:
        a.log.close()
        b.log.close()


def test_a_non_member_s_record_is_made_of_the_job_ended() -> None:
    sub = Event("0123456789abcdef", 1, 5 << 16, EventType.JOB_SUBMITTED, {
        "job": J1, "workflow": {**WORKFLOW, "tasks": [*WORKFLOW["tasks"], {
            "name": "t2", "call": "c", "params": {}, "depends": [], "cid": "given"}]},
        "members": [OTHER]})
    end = Event("0123456789abcdef", 2, 9000 << 16, EventType.JOB_ENDED, {
        "job": J1, "state": "failed", "n_tasks": 3, "end": 9000 << 16,
        "outputs": {"t0": ["k0", "c0", 7, f"{OTHER}/{J1}", 1],
                    "t2": [None, "c2", 8, f"{OTHER}/{J1}", 2]},
        "producers": {}, "failed": {"t1": "boom"}, "digest": "0" * 32})
    f = ended_record(sub, end)
    assert (f.state, f.ended_hlc, f.n_tasks) == ("failed", 9000 << 16, 3)
    assert [(t["name"], t["state"], t["output"], t["error"]) for t in f.record["tasks"]] == [
        ("t0", "done", "c0", None), ("t1", "failed", None, "boom"), ("t2", "done", "c2", None)]
    assert f.summary["tasks"][1] == {"name": "t1", "state": "failed", "progress": 0.0}
    assert "workflow" not in f.summary and f.record["workflow"]["name"] == "w"
    # the outputs of computed tasks only (a task given its output by CID: not), as a member's
    # record_facts lists them
    assert f.facts == {"finished_s": 9.0, "outputs": ["c0"], "logs": []}
    assert (f.summary["finished_ms"], f.summary["duration_s"]) == (9000, 9.0 - 0.005)


def test_no_lane_is_taken_of_a_job_whose_job_submitted_is_not_held(tmp_path: Path) -> None:
    """A JOB_MEMBERS naming us makes no member of a job whose JOB_SUBMITTED we do not hold
    (design review h: `member_of` answered yes for a job it holds no submission of); once
    the JOB_SUBMITTED is here, its lanes are taken."""
    node = _node(tmp_path)
    try:
        me, job = node.peer_id, "j0000000000c1"
        members = Event(OTHER, 1, node.hlc.now(), EventType.JOB_MEMBERS,
                        {"job": job, "add": [me]})
        assert node.merge([members]) == []  # (from a peer: refused, `members_job`)
        assert node.door.refused.by_reason == {"members_job": 1}
        node.state.apply(members)  # (as a row read back from disk is folded: unchecked)
        assert me in node.state.members_of[job]
        claim = Event(lane(OTHER, job), 1, node.hlc.now(), EventType.CLAIM, {
            "job": job, "task": "t0", "split": ["x", 1], "chunk": 0, "attempt": 0})
        assert node.merge([claim]) == []
        assert node.door.refused.by_reason == {"members_job": 1, "not_member": 1}
        node.merge([Event(OTHER, 2, node.hlc.now(), EventType.JOB_SUBMITTED,
                          {"job": job, "workflow": WORKFLOW, "members": [OTHER]})])
        assert node.merge([claim]) == [claim]
    finally:
        node.log.close()


def test_node_lets_go_of_its_own_lane_s_flushes_once_the_lanes_are_forgotten(
        tmp_path: Path) -> None:
    """Review r2, finding 7: `_durable` and `_flushes` kept an entry per lanes job for good."""
    node = _node(tmp_path)
    try:
        mine = lane(node.peer_id, J1)
        assert node._durable[mine] == 2 and node._flushes[mine]
        _end(node, J1)
        node.catchup.compact()
        assert _lane_state(node, J1) == {}  # (forgotten)
        assert mine not in node._durable and mine not in node._flushes
        assert node._durable[node.peer_id] == node.heads()[node.peer_id]  # (ours stays)
    finally:
        node.log.close()


def _ended_by_other(node: Node, job: str, payload: Mapping[str, Any], seq: int = 1) -> Event:
    """`job`'s JOB_ENDED from OTHER (its member; its `seq`th event), folded as a row read
    back is, noted."""
    end = node.hlc.now() + (10 << 16)  # (after every output's order)
    ev = Event(OTHER, seq, end, EventType.JOB_ENDED, {
        "job": job, "state": "done", "n_tasks": len(TASKS), "end": end, "outputs": {},
        "producers": {}, "failed": {}, "digest": "0" * 32, **payload})
    node.state.apply(ev)
    node.compactor.note(ev)
    assert node.state.ended.get(job) is ev  # (folded: OTHER is a member)
    return ev


def test_a_non_member_keeps_a_job_whose_job_ended_lists_its_outputs(tmp_path: Path) -> None:
    """Review r2, finding 1: a JOB_ENDED whose outputs are in a `listing` (not fetched and
    folded yet) made a record saying every task pending and no output; such a job now
    stays in memory, ended, its list entry the JOB_ENDED's."""
    node = _node(tmp_path)
    try:
        job = "j0000000000c2"
        node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": WORKFLOW,
                                            "members": [OTHER]})
        node.flush()
        _ended_by_other(node, job, {"listing": OUT["t0"]})
        node.catchup.compact()
        assert job not in node.state.compacted and node.index.record(job) is None
        assert job in node.state.jobs  # (its list entry: peer.http.views.elsewhere_entry)
    finally:
        node.log.close()


def test_a_member_whose_fold_never_finishes_compacts_from_the_job_ended_at_the_horizon(
        tmp_path: Path) -> None:
    """Review r2, finding 2: a member that holds the JOB_ENDED but not the job's last lane
    events (they left the other members' logs while it was away) kept the job in memory
    for good; past the horizon its record is the JOB_ENDED's. Fake clock."""
    node = _node(tmp_path, [OTHER])
    try:
        job = "j0000000000c3"
        node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": WORKFLOW,
                                            "members": [OTHER, node.peer_id]})
        node.flush()
        t = node.hlc.now()
        outs = {n: [None, OUT[n], t + i + 1, lane(OTHER, job), i + 1]
                for i, n in enumerate(TASKS)}
        ev = _ended_by_other(node, job, {"outputs": outs})
        now = [ev.hlc]
        node.compactor.now_hlc = lambda: now[0]
        node.catchup.compact()
        assert job not in node.state.compacted  # our fold has not finished: we wait
        now[0] += int(node.compact_cfg.horizon_s * 1000 - 1) << 16
        node.catchup.compact()
        assert job not in node.state.compacted
        now[0] += 1 << 16  # the horizon
        node.catchup.compact()
        assert job in node.state.compacted and job not in node.state.jobs
        record: Any = node.index.record(job)
        assert record["state"] == "done" and record["members"] == sorted([OTHER, node.peer_id])
        assert [(t["state"], t["output"]) for t in record["tasks"]] == [
            ("done", OUT[n]) for n in TASKS]
        assert not node.compactor.unfolded and not node.compactor.overdue
    finally:
        node.log.close()


def test_a_member_behind_on_an_ended_job_names_it_in_its_pair_rounds_until_its_fold_ends(
        tmp_path: Path) -> None:
    """A member that holds the JOB_ENDED but not the other member's lane events (as one
    restarted after the job ended elsewhere) names the job in its pair rounds
    (`Node.lane_jobs`) until its fold finished, so they come now, not only the horizon's
    record (on be87029 pair rounds stopped at the JOB_ENDED: test_lanes' runner-after-end
    member listed the job running, its tasks pending, and ran them again); once its fold
    finished it names the job no more."""
    node = _node(tmp_path, [OTHER])
    try:
        job = "j0000000000c6"
        node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": WORKFLOW,
                                            "members": [OTHER, node.peer_id]})
        node.flush()
        t = node.hlc.now()
        done = [Event(lane(OTHER, job), i + 1, t + i + 1, EventType.TASK_DONE,
                      {"job": job, "task": n, "output": OUT[n]}) for i, n in enumerate(TASKS)]
        ev = _ended_by_other(node, job, {"outputs": {
            e.payload["task"]: [None, e.payload["output"], e.hlc, e.origin, e.seq]
            for e in done}})
        node.compactor.now_hlc = lambda: ev.hlc
        assert node.lane_jobs() == [J1, J2]  # (the JOB_ENDED not looked at yet)
        node.catchup.compact()
        assert node.lane_jobs() == [J1, J2, job]  # our fold has not finished: behind
        for e in done:  # (what the pair round brings)
            node.state.apply(e)
            node.compactor.note(e)
        node.catchup.compact()
        assert job not in node.lane_jobs() and not node.compactor.unfolded
    finally:
        node.log.close()


def test_a_non_member_keeps_an_ended_lanes_job_in_its_recent_history_as_a_member_does(
        tmp_path: Path) -> None:
    """Issue 12, falsifier 3: a non-member compacted an ended lanes job at once while its
    members kept it in their recent history, so the mesh origins' contents held differed
    and every anti-entropy round sent their blocks (the job's big JOB_SUBMITTED and
    JOB_ENDED) both ways, dropped as held. It now counts the job's tasks as a member does:
    kept while within recent_tasks, compacted once a newer job pushes it out."""
    node = _node(tmp_path)
    try:
        node.compactor.cfg = replace(node.compactor.cfg, recent_tasks=len(TASKS))
        old, new = "j0000000000c4", "j0000000000c5"
        for job in (old, new):
            node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": WORKFLOW,
                                                "members": [OTHER]})
            node.flush()
        _ended_by_other(node, old, {})
        node.catchup.compact()
        assert old in node.state.jobs and old not in node.state.compacted  # (recent)
        _ended_by_other(node, new, {}, seq=2)
        node.catchup.compact()
        assert old in node.state.compacted and node.index.record(old) is not None
        assert new in node.state.jobs and new not in node.state.compacted
    finally:
        node.log.close()


def test_a_pair_round_lets_a_compacted_job_s_covered_lanes_leave_before_the_horizon(
        tmp_path: Path) -> None:
    """Step 8's leftover: the node passed no `pair_vvs` to its compactor, and pair rounds
    stopped at JOB_ENDED, so a member with another live member kept a compacted job's lanes
    until the horizon (7 days). A compacted job whose lanes wait stays in the pair rounds
    (`lane_jobs`, `shared`), and what a round proves (gossip's `pair_seen`: `_pair_seen`)
    is the compactor's pair vector. Fake clock: the horizon never passes."""
    node = _node(tmp_path, [OTHER])
    try:
        mine = lane(node.peer_id, J1)
        _end(node, J1)
        frozen = node.hlc.now()
        node.compactor.now_hlc = lambda: frozen
        gossip: Any = node.gossip
        gossip.heads[OTHER] = dict(node.heads())  # live
        node.catchup.compact()
        assert J1 in node.state.compacted and len(_lane_rows(node)) == 2
        assert node.lane_jobs() == [J1, J2] and node.shared([J1], OTHER) == [J1]
        node._pair_seen(OTHER, {mine: 1})  # (a round before its last outcome)
        node.catchup.compact()
        assert len(_lane_rows(node)) == 2
        node._pair_seen(OTHER, {mine: 2})
        node.catchup.compact()
        assert _lane_rows(node) == [] and _lane_state(node, J1) == {}
        assert node._pair_vvs == {}  # (the forgotten lane leaves the pair vectors)
        assert node.lane_jobs() == [J2] and node.shared([J1], OTHER) == []
    finally:
        node.log.close()


def _emitted(node: Node) -> float:
    """/metrics' banzai_events_emitted_total of `node`."""
    gossip, node.gossip = node.gossip, None  # (the fake has no peers' reports)
    try:
        got = Metrics(node).registry.get_sample_value("banzai_events_emitted_total")
    finally:
        node.gossip = gossip
    assert got is not None
    return got


def test_events_emitted_counts_our_lane_events_and_keeps_them_once_forgotten(
        tmp_path: Path) -> None:
    """/metrics' `banzai_events_emitted` counted our stream's seq only: a lanes job's task
    events (our lane's seqs) were missing, so events per task read low with lanes on. It
    counts each of our lanes' seqs as our stream's (a TURN is one), those of lanes forgotten
    since start too (a counter does not go down when a job's lanes leave)."""
    node = _node(tmp_path)
    try:
        me = node.peer_id
        assert node.state.heads[lane(me, J1)] == 2
        assert _emitted(node) == node.state.heads[me] + 2
        _end(node, J1)
        made = _emitted(node)
        assert made == node.state.heads[me] + 2
        node.catchup.compact()
        assert _lane_state(node, J1) == {}  # (forgotten)
        assert _emitted(node) == made
    finally:
        node.log.close()


def test_a_late_task_event_of_a_compacted_lanes_job_goes_nowhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our task event of a lanes job emitted after its compaction (a late outcome) went to our
    own stream, so every peer (non-members too) got it. It now goes nowhere (design, section
    4: its record is made, its lanes leave the logs, a straggling lane event is refused at
    the members' doors): while its lanes wait for the members' vectors and after they left.
    A job replicated in full is as before: its late event goes to our stream. (Review r1:
    the job index is read once a job, not once an event; /api/health counts them.)"""
    node = _node(tmp_path, [OTHER])
    try:
        me = node.peer_id
        full = "j0000000000e1"
        node.emit(EventType.JOB_SUBMITTED, {"job": full, "workflow": WORKFLOW})
        for t in TASKS:
            node.emit(EventType.TASK_DONE, {"job": full, "task": t, "output": OUT[t]})
        _end(node, J1)
        gossip: Any = node.gossip
        gossip.heads[OTHER] = dict(node.heads())
        node.catchup.compact()
        assert {J1, full} <= set(node.state.compacted) and len(_lane_rows(node)) == 2
        late = {"job": J1, "task": "t0", "split": ["x", 1], "chunk": 0, "attempt": 1,
                "error": "late", "kind": "error"}
        rows = node.log.db.execute("SELECT count(*) FROM events").fetchone()
        mesh = node.state.heads[me]
        node.emit(EventType.CHUNK_FAILED, late)  # (its lanes wait)
        node.flush()
        assert node.state.heads[me] == mesh and len(_lane_rows(node)) == 2
        node._pair_seen(OTHER, {lane(me, J1): 2})
        node.catchup.compact()
        assert _lane_rows(node) == [] and _lane_state(node, J1) == {}
        reads: list[str] = []
        record = node.index.record
        monkeypatch.setattr(node.index, "record", lambda j: reads.append(j) or record(j))
        for _ in range(2):
            node.emit(EventType.CHUNK_FAILED, late)  # (its lanes left)
        node.flush()
        assert node.state.heads[me] == mesh and _lane_state(node, J1) == {}
        assert node.late_lane_events == 3 and reads == [J1]
        assert node.log_health()["lanes"]["late_lane_events"] == 3
        assert node.log.db.execute("SELECT count(*) FROM events").fetchone() < rows
        node.emit(EventType.CHUNK_FAILED, {**late, "job": full})  # (as before)
        assert node.state.heads[me] == mesh + 1 and node.late_lane_events == 3
    finally:
        node.log.close()


def test_a_non_member_compacts_a_job_whose_listing_never_folds_at_the_horizon(
        tmp_path: Path) -> None:
    """Review r1 of session 45, M4: a JOB_ENDED whose `listing` is refused for good or never
    served kept its job in memory for ever on every non-member (on 4f5ca2e: still held past
    the horizon). Past the horizon from its end the record is made of the JOB_ENDED's own
    fields, without outputs, and says so (`outputs_unlisted`). Fake clock."""
    node = _node(tmp_path)
    try:
        job = "j0000000000c4"
        node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": WORKFLOW,
                                            "members": [OTHER]})
        node.flush()
        ev = _ended_by_other(node, job, {"listing": OUT["t0"]})
        now = [ev.hlc]
        node.compactor.now_hlc = lambda: now[0]
        node.catchup.compact()
        assert node.compactor.unlisted == {job: OUT["t0"]}  # (fetched meanwhile: EndListings)
        now[0] += int(node.compact_cfg.horizon_s * 1000 - 1) << 16
        node.catchup.compact()
        assert job not in node.state.compacted and job in node.state.jobs
        now[0] += 1 << 16  # the horizon
        node.catchup.compact()
        assert job in node.state.compacted and job not in node.state.jobs
        assert not node.compactor.unlisted and not node.compactor.bare
        record: Any = node.index.record(job)
        assert record["state"] == "done" and record["outputs"] == {}
        assert record["outputs_unlisted"] == OUT["t0"]
        assert [(t["state"], t["output"]) for t in record["tasks"]] == [
            ("done", None) for _ in TASKS]
    finally:
        node.log.close()


def test_a_deleted_lanes_job_s_lane_tables_leave_with_its_rows(tmp_path: Path) -> None:
    """(Review r1 of session 45, L5: on 4f5ca2e a deleted lanes job's lanes, heads and
    per-peer index stayed in memory until a restart, once its rows left the log.)"""
    node = _node(tmp_path)
    try:
        node.emit(EventType.JOB_DELETED, {"job": J1, "reason": "test"})
        node.flush()
        later = node.hlc.now() + ((7 * 86_400_000 + 1) << 16)  # (past the horizon)
        node.compactor.now_hlc = lambda: later  # type: ignore[method-assign]
        for _ in range(3):  # (the sweep, then the drop)
            node.catchup.compact()
        assert _lane_rows(node) == []
        assert _lane_state(node, J1) == {}
        assert node.peer_id not in node.state.peer_lanes
    finally:
        node.log.close()


X = "c3" * 8  # a peer that adds itself to a job (an orphan takeover while the home looked dead)
V = "d4" * 8  # a member the JOB_SUBMITTED names that adds X (`_crossing`: X vouched for)


def _non_member(d: Path) -> Node:
    """A node with lanes on, alone, a member of no job (compact_recent_tasks=0: a busy mesh,
    whose recent history a job leaves within seconds)."""
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    node.listeners[:] = [node.compactor.note]
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    node.gossip = _Gossip()  # type: ignore[assignment]
    return node


def _ends(t: int, job: str) -> tuple[list[Event], Event]:
    """[OTHER's JOB_SUBMITTED of `job` naming it its one member, X's JOB_MEMBERS adding
    itself, X's JOB_ENDED failing every task] and OTHER's later JOB_ENDED, `done`: ranked
    first (a submission member's, then fewer failed), whatever order the two came in."""
    def ended(origin: str, seq: int, hlc: int, failed: Mapping[str, str]) -> Event:
        return Event(origin, seq, hlc, EventType.JOB_ENDED, {
            "job": job, "state": "failed" if failed else "done", "n_tasks": len(TASKS),
            "end": hlc, "outputs": {}, "producers": {}, "failed": dict(failed),
            "digest": "0" * 32})
    return [Event(OTHER, 1, t + (1 << 16), EventType.JOB_SUBMITTED,
                  {"job": job, "workflow": WORKFLOW, "members": [OTHER]}),
            Event(X, 1, t + (2 << 16), EventType.JOB_MEMBERS, {"job": job, "add": [X]}),
            ended(X, 2, t + (3 << 16), {k: "gave up" for k in TASKS})], \
        ended(OTHER, 2, t + (9 << 16), {})


def test_a_non_member_records_the_best_ranked_end_whether_it_came_before_or_after_compaction(
        tmp_path: Path) -> None:
    """Review r1 of session 46, F9: a non-member compacted an ended lanes job once it left
    the recent history and kept the end it held (here a self-added peer's, `failed`); the
    home's `done` end, ranked first (`end_rank`), came later and folded as a straggler of a
    compacted job: its record said `failed`, that of a non-member which got both ends in
    time `done`, and their thin digests differed (on d8519ea: ('failed', ...) vs ('done',
    ...)). A JOB_ENDED that ranks before the one a record was made of now makes it again
    (`Compactor._late`); a restart (the replay) keeps it; a worse one that comes after
    changes nothing."""
    job = "j0000000000d9"
    seen: list[tuple[Any, ...]] = []
    t = 0
    for name, late in (("a", True), ("b", False)):
        node = _non_member(tmp_path / name)
        try:
            t = t or node.hlc.now()  # (the same events on both)
            first, home_end = _ends(t, job)
            for ev in first if late else [first[0], first[1], home_end]:
                node.state.apply(ev)
                node.compactor.note(ev)
            node.catchup.compact()
            assert job in node.state.compacted
            if late:  # first a `done` end of a peer no member names: not admitted
                stray = Event("e5" * 8, 1, t + (4 << 16), EventType.JOB_ENDED,
                              {**home_end.payload, "end": t + (4 << 16)})
                node.state.apply(stray)
                node.catchup.compact()
                assert node.index.record(job)["state"] == "failed"  # type: ignore[index]
            later = [home_end] if late else [first[2]]  # (b: X's, ranked after, comes late)
            for ev in later:
                node.state.apply(ev)
                node.compactor.note(ev)
            node.catchup.compact()
            rec: Any = node.index.record(job)
            seen.append((rec["state"], rec["finished_ms"], rec["outputs"],
                         node.index.thin_digests(job_digest3)[job]))
        finally:
            node.log.close()
    assert seen[0] == seen[1] and seen[0][0] == "done"
    node = _non_member(tmp_path / "a")  # restarted: the replay folds both ends again
    try:
        node.catchup.compact()
        rec = node.index.record(job)
        assert (rec["state"], node.index.thin_digests(job_digest3)[job]) == (
            "done", seen[0][3])
    finally:
        node.log.close()


def test_a_bare_record_is_left_out_of_the_per_job_digests_a_catch_up_compares() -> None:
    """Review r1 of session 46, F6: a non-member that never folded a JOB_ENDED's listing by
    the horizon makes its record without the outputs (`bare`), one that fetched it with
    them: the same events, two outputs hashes, for good (a record is not made again), so a
    catch-up from one's snapshot with the other as second member was refused as a
    `digest_mismatch` (on d8519ea: Mismatch). A bare row is now neither in a peer's thin
    digests nor compared when a snapshot brings it."""
    job = "j0000000000e1"
    sub = Event(OTHER, 1, 1 << 16, EventType.JOB_SUBMITTED,
                {"job": job, "workflow": WORKFLOW, "members": [OTHER]})
    end = Event(OTHER, 2, 9 << 16, EventType.JOB_ENDED, {
        "job": job, "state": "done", "n_tasks": len(TASKS), "end": 9 << 16, "outputs": {},
        "producers": {}, "failed": {}, "digest": "0" * 32, "listing": OUT["t0"]})
    full = replace(end.body_as(JobEnded), listing=None, outputs={
        t: Output(f"key-{t}", OUT[t], 5 << 16, lane(OTHER, job), i + 1)
        for i, t in enumerate(TASKS)})
    indexes = []
    for f in (ended_record(sub, end, unlisted=OUT["t0"]), ended_record(sub, end, full)):
        index = JobIndex(sqlite3.connect(":memory:", isolation_level=None))
        index.put([JobRecord(job, sub.order, f.ended_hlc, f.state, f.summary, f.record, (),
                             f.facts)], (), ())
        indexes.append(index)
    bare, listed = indexes
    assert job not in bare.thin_digests(job_digest3) and job in listed.thin_digests(job_digest3)
    for served, second in ((bare, listed), (listed, bare)):
        rows = served._db.execute(  # (what a version 3 snapshot sends of it)
            "SELECT j.job, j.hlc, j.origin, j.seq, j.ended, j.state, t.summary, t.facts, "
            "t.sha FROM job_index j JOIN job_thin t USING (job)").fetchall()
        assert list(against3([("t", rows)], second.thin_digests(job_digest3))) == [("t", rows)]


def _crossing(t: int, job: str, by: str = V) -> tuple[list[Event], Event, Event]:
    """[OTHER's JOB_SUBMITTED of `job` naming it and V its members, `by`'s JOB_MEMBERS
    adding X (V's: a member's scale-out, X vouched for; X's own: X added itself)], X's
    JOB_ENDED and OTHER's (each `done`, each side's outputs of both tasks: a crossing
    partition): OTHER's ranks first (a submission member's), X's t0 is the earlier (by its
    TASK_DONE's order), OTHER's t1."""
    def ended(origin: str, hlc: int, at: Mapping[str, int]) -> Event:
        seq = 1 if origin == X and by != X else 2  # (X's first event unless it added itself)
        return Event(origin, seq, hlc, EventType.JOB_ENDED, {
            "job": job, "state": "done", "n_tasks": len(TASKS), "end": hlc,
            "outputs": {task: [None, _side_cid(origin, task), t + (h << 16), lane(origin, job),
                               i + 1] for i, (task, h) in enumerate(at.items())},
            "producers": {}, "failed": {}, "digest": "0" * 32})
    return [Event(OTHER, 1, t + (1 << 16), EventType.JOB_SUBMITTED,
                  {"job": job, "workflow": WORKFLOW, "members": [OTHER, V]}),
            Event(by, 1, t + (2 << 16), EventType.JOB_MEMBERS, {"job": job, "add": [X]})], \
        ended(X, t + (7 << 16), {"t0": 3, "t1": 6}), \
        ended(OTHER, t + (8 << 16), {"t0": 4, "t1": 5})


def _side_cid(origin: str, task: str) -> str:
    return str(sha256_cid(f"{origin} {task}".encode(), "raw", 1))


def _around_compaction(node: Node, job: str, *batches: Sequence[Event]) -> None:
    """Each of `batches` folded and noted, then a compaction pass, after which `job` is
    compacted."""
    for evs in batches:
        for ev in evs:
            node.state.apply(ev)
            node.compactor.note(ev)
        node.catchup.compact()
        assert job in node.state.compacted


def test_a_non_member_records_the_merged_outputs_whichever_end_came_after_compaction(
        tmp_path: Path) -> None:
    """Review r3 of session 46, R3-B: a record made again of a JOB_ENDED that came after
    compaction took that end's own outputs, while one made with both ends held took each
    task's earliest of the two (`MeshState.end_body`): after a crossing partition a
    non-member that compacted before the home's end named the home's t0, one that held
    both X's earlier t0, and a home's end held first, X's after, kept the home's (on
    9590a1d: three outputs for two). Now every arrival order records the same outputs
    (and thin digest), and a restart keeps them."""
    job = "j0000000000f3"
    seen: dict[str, tuple[Any, ...]] = {}
    t = 0
    for name in ("x_then_home", "home_then_x", "both"):
        node = _non_member(tmp_path / name)
        try:
            t = t or node.hlc.now()  # (the same events on both)
            first, x_end, home_end = _crossing(t, job)
            before, after = {"x_then_home": ([x_end], [home_end]),
                             "home_then_x": ([home_end], [x_end]),
                             "both": ([x_end, home_end], [])}[name]
            _around_compaction(node, job, first + before, after)
            rec: Any = node.index.record(job)
            seen[name] = (rec["state"], rec["outputs"], [t["output"] for t in rec["tasks"]],
                          node.index.thin_digests(job_digest3)[job])
        finally:
            node.log.close()
    want = {"t0": _side_cid(X, "t0"), "t1": _side_cid(OTHER, "t1")}
    assert seen["both"][:2] == ("done", want)
    assert seen["x_then_home"] == seen["both"] and seen["home_then_x"] == seen["both"]
    for name in ("x_then_home", "home_then_x"):  # restarted: the replay changes nothing
        node = _non_member(tmp_path / name)
        try:
            node.catchup.compact()
            rec = node.index.record(job)
            assert (rec["outputs"], node.index.thin_digests(job_digest3)[job]) == (
                want, seen["both"][3])
        finally:
            node.log.close()


def test_a_self_added_peer_s_end_after_compaction_puts_no_output_in_the_record(
        tmp_path: Path) -> None:
    """R3-D for a record made again (lead, session 47): X added itself, so its JOB_ENDED's
    outputs are not merged (`fold._end_outputs`: no vouched member's), whether it came
    before compaction or after it (the record's facts keep the vouched members,
    `end.vouched`): the record names the home's outputs in both orders. (Before the
    record kept them, the late end's earlier t0 entered the record made again.)"""
    job = "j0000000000f7"
    seen: dict[str, Any] = {}
    t = 0
    for name in ("home_then_x", "both"):
        node = _non_member(tmp_path / name)
        try:
            t = t or node.hlc.now()
            first, x_end, home_end = _crossing(t, job, by=X)
            before, after = {"home_then_x": ([home_end], [x_end]),
                             "both": ([x_end, home_end], [])}[name]
            _around_compaction(node, job, first + before, after)
            seen[name] = node.index.record(job)["outputs"]  # type: ignore[index]
        finally:
            node.log.close()
    assert seen["both"] == seen["home_then_x"] == {t: _side_cid(OTHER, t) for t in TASKS}


def test_a_record_of_a_folded_listing_merges_a_later_end_s_earlier_outputs(
        tmp_path: Path) -> None:
    """R3-B with the home's end in a listing, fetched and folded before compaction: the
    record shows each task's earliest of the listing's outputs and every inline end's
    (`end_body`); X's inline end, with the earlier t0, came after compaction (the record
    keeps its listing's orders, `end.listed`) or before it: the same outputs (on 9590a1d:
    the home's t0 when X's came after)."""
    job = "j0000000000f4"
    seen: dict[str, Any] = {}
    t = 0
    for name in ("home_then_x", "both"):
        node = _non_member(tmp_path / name)
        try:
            t = t or node.hlc.now()
            first, x_end, inline = _crossing(t, job)
            listing = _side_cid(OTHER, "listing")
            home_end = Event(OTHER, 2, inline.hlc, EventType.JOB_ENDED, {
                **inline.payload, "outputs": {}, "listing": listing})
            full = replace(home_end.body_as(JobEnded), listing=None,
                           outputs=inline.body_as(JobEnded).outputs)
            before = [x_end, home_end] if name == "both" else [home_end]
            for ev in first + before:
                node.state.apply(ev)
                node.compactor.note(ev)
            assert node.state.fold_listing(home_end, full) is None
            node.compactor.note(home_end)
            node.catchup.compact()
            assert job in node.state.compacted
            if name == "home_then_x":
                node.state.apply(x_end)
                node.compactor.note(x_end)
                node.catchup.compact()
            rec: Any = node.index.record(job)
            seen[name] = (rec["state"], rec["outputs"], node.index.thin_digests(job_digest3)[job])
        finally:
            node.log.close()
    want = {"t0": _side_cid(X, "t0"), "t1": _side_cid(OTHER, "t1")}
    assert seen["both"][:2] == ("done", want) and seen["home_then_x"] == seen["both"]


J_OLD = "j0000000000f5"


@pytest.mark.parametrize("end_facts", [
    {"merged": None}, {"merged": {"t0": "not an output"}}, {"listed": {"t0": [1, 2, 3, 4]}},
    {"merged": {"t0": [1, 0, 1, OUT["t0"]]}},  # (ordered before the JOB_SUBMITTED)
    {"lanes": [lane(X, J_OLD), lane("e5" * 8, J_OLD)],  # (made in no member's lane)
     "listed": {"t0": [1 << 60, 1, 1]}}])
def test_a_record_without_merged_outputs_is_made_again_as_session_46_made_it(
        tmp_path: Path, end_facts: Mapping[str, Any]) -> None:
    """A record of session 46 (its facts' `end` without `merged`: no output orders), or one
    whose outputs facts do not read back or name an output no admitted JOB_ENDED could
    carry (a snapshot's signer may write anything), is made again as then: of a
    better-ranked end's own outputs; a record of an earlier release (no `end`) is left as
    it is. Neither raises."""
    job = J_OLD
    for name, old in (("s46", True), ("s45", False)):
        node = _non_member(tmp_path / name)
        try:
            first, x_end, home_end = _crossing(node.hlc.now(), job)
            for ev in [*first, x_end]:
                node.state.apply(ev)
                node.compactor.note(ev)
            node.catchup.compact()
            held = node.index.full(job)
            assert held is not None and held.facts is not None
            assert set(held.facts["end"]) == {"rank", "homes", "vouched", "merged", "lanes"}
            end = {k: v for k, v in {**held.facts["end"], **end_facts}.items()
                   if v is not None}
            facts = {**held.facts, "end": end} if old else {
                k: v for k, v in held.facts.items() if k != "end"}
            node.index.put([replace(held, facts=facts)], (), ())
            node.state.apply(home_end)
            node.compactor.note(home_end)
            node.catchup.compact()
            rec: Any = node.index.record(job)
            own = {t: _side_cid(OTHER if old else X, t) for t in TASKS}
            assert rec["outputs"] == own
        finally:
            node.log.close()


def test_three_ends_make_one_record_in_any_order_around_compaction(tmp_path: Path) -> None:
    """R3-B, every order: the home's first end A (t1 failed), X's (both done, the earliest
    outputs) and the home's better end B (done): B wins, and each task's output is X's
    (the earliest by order of every admitted end's), in whatever order the three come and
    wherever the compaction falls among them (a record made before X's t1 was shown keeps
    its order and CID in its facts: A failed t1), once the next pass made it again (an end
    held past a gap in its origin's seqs, B before A, leaves memory after that pass's
    `_late`). On 9590a1d the record named A's or B's CIDs unless all three came before
    compaction."""
    import itertools
    job = "j0000000000f6"
    t = 0
    seen: set[tuple[Any, ...]] = set()
    for i, order in enumerate(itertools.permutations("AXB")):
        for cut in (1, 2, 3):
            if cut == 3 and i:
                continue
            node = _non_member(tmp_path / f"{i}{cut}")
            try:
                t = t or node.hlc.now()
                first, x_end, home = _crossing(t, job)
                ends = {"X": x_end, "A": _home_end(home, 2, t + (7 << 16), {"t1": "lost"},
                                                   {"t0": 4}),
                        "B": _home_end(home, 3, t + (9 << 16), {}, {"t0": 4, "t1": 7})}
                _around_compaction(node, job, first + [ends[k] for k in order[:cut]],
                                   [ends[k] for k in order[cut:]])
                node.catchup.compact()  # (B held past a gap before A: swept after `_late`)
                rec: Any = node.index.record(job)
                seen.add((rec["state"], tuple(sorted(rec["outputs"].items())),
                          node.index.thin_digests(job_digest3)[job]))
            finally:
                node.log.close()
    assert [s[:2] for s in seen] == [("done", tuple((k, _side_cid(X, k)) for k in TASKS))]


def _home_end(like: Event, seq: int, hlc: int, failed: Mapping[str, str],
              at: Mapping[str, int]) -> Event:
    """OTHER's `seq`th event, a JOB_ENDED of `like`'s job at `hlc` failing `failed`, its
    outputs those of `like` made at `at` (`_crossing`'s t + (h << 16))."""
    t = like.hlc - (8 << 16)
    job = like.body_as(JobEnded).job
    return Event(OTHER, seq, hlc, EventType.JOB_ENDED, {
        **like.payload, "end": hlc, "state": "failed" if failed else "done",
        "failed": dict(failed),
        "outputs": {task: [None, _side_cid(OTHER, task if h != 7 else "t1 again"),
                           t + (h << 16), lane(OTHER, job), 1 + TASKS.index(task)]
                    for task, h in at.items()}})

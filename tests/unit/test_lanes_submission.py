"""Submission of a lanes job (docs/design/partial-replication.md, 5.1 and 6; step 7): with
lanes on and every live peer and member announcing LANES_FEATURE, the submitter writes
`members` (itself and `submit_acks` replicas) and the workflow's `"lanes": 1`; replicas fsync
and acknowledge the JOB_SUBMITTED, non-members neither; `Node.submitted` counts the members'
acknowledgements only. The key is a peer's, never a user's. Real data dirs in tmp_path, a
fake gossip (its live peers and their vectors set by the test); no sleeps."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from peer.config import LANES_MIN_JOB_TASKS, PeerConfig
from peer.errors import SpecError
from peer.jobs.spec import LANES_TOP_KEYS, from_obj, parse, workflow_from_json
from peer.log import LANES_FEATURE, Event, EventType, JobSubmitted
from peer.node import Node
from peer.rendezvous import rendezvous
from tests.unit.api_client import api_client

P1, P2, P3, P4 = (c * 16 for c in "1234")
J1, J2, J3 = "j0000000000c1", "j0000000000c2", "j0000000000c3"
WORKFLOW = {"name": "w", "tasks": [{"name": "t", "call": "ECHO", "params": {"text": "x"},
                                    "depends": []}]}
FEATURES = ["batch-v1", LANES_FEATURE]


class _Stats:
    def as_dict(self) -> dict[str, int]:
        return {}


class _Gossip:
    """The node's gossip: live peers (`live`), their vectors (`heads`), acknowledgements
    sent (`acked`: the origins of each)."""

    address = "127.0.0.1:1"
    stats = _Stats()

    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.heads: dict[str, dict[str, int]] = {}
        self.acked: list[set[str]] = []

    def broadcast(self, events: Sequence[Event]) -> None:
        pass

    def live_peers(self) -> dict[str, Any]:
        return dict(self.live)

    def heads_of(self, peer: str) -> dict[str, int]:
        return self.heads.get(peer, {})

    def acknowledge(self, origins: set[str]) -> None:
        if origins:  # (a merge calls it with none: nothing is sent)
            self.acked.append(set(origins))

    async def close(self) -> None:
        return None


def _node(d: Path, lanes: bool = True, min_tasks: int = 0) -> Node:
    """A node on data dir `d` (lanes on unless said), its MEMBER announcing LANES_FEATURE, no
    live peer yet; no scheduler reactions. Its jobs of `min_tasks` tasks or more are lanes
    jobs (`lanes_min_job_tasks`; 0 unless said: every job, as these tests are of lanes jobs)."""
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False, ack_timeout_s=0.0,
                           lanes_min_job_tasks=min_tasks), lanes=lanes)
    node.listeners.clear()
    node.gossip = _Gossip()  # type: ignore[assignment]
    node.emit(EventType.MEMBER, {**node.capabilities(), "features": FEATURES})
    node.flush()
    return node


def _gossip(node: Node) -> _Gossip:
    g = node.gossip
    assert isinstance(g, _Gossip)
    return g


def _live(node: Node, pid: str, calls: Sequence[str] = ("ECHO",), free: int = 1,
          features: Sequence[str] = FEATURES) -> None:
    _gossip(node).live[pid] = {"calls": list(calls), "free_slots": free,
                               "features": list(features)}


def _member_event(pid: str, features: Sequence[str]) -> Event:
    return Event(pid, 1, 1000, EventType.MEMBER, {
        "name": pid[:4], "http": "", "calls": ["ECHO"], "slots": 1, "cores": 1, "mem_mb": 1,
        "gpu": False, "features": list(features)})


def _submission(origin: str, job: str, members: list[str] | None) -> Event:
    lanes = {} if members is None else {"members": members}
    return Event(origin, 1, 1001, EventType.JOB_SUBMITTED,
                 {"job": job, "workflow": WORKFLOW, **lanes})


class _Syncs:
    """Records the node's log writes' `sync` and its fsyncs off the loop."""

    def __init__(self, node: Node) -> None:
        self.appends: list[bool | None] = []
        self.fsyncs = 0
        self._append, self._sync = node.log.append, node.log.sync
        node.log.append = self.append  # type: ignore[method-assign]
        node.log.sync = self.sync  # type: ignore[method-assign]

    def append(self, events: Sequence[Event], sync: bool | None = None,
               keep_texts: bool = False) -> None:
        self.appends.append(sync)
        self._append(events, sync, keep_texts)

    def sync(self, since: int | None = None) -> None:
        self.fsyncs += 1
        self._sync(since)


# -- receiving: replicas fsync and acknowledge, non-members neither -----------------------------
@pytest.mark.parametrize("lanes", [True, False], ids=["lanes", "lanes-off"])
async def test_a_non_members_merge_of_a_lanes_submission_starts_no_fsync_and_sends_no_ack(
        tmp_path: Path, opened: list[Node], lanes: bool) -> None:
    """With lanes on, a JOB_SUBMITTED whose `members` do not name us is written without an
    fsync, none is started for it, no acknowledgement goes to its origin, and our heads
    count it at once; with lanes off it is fsynced and acknowledged as every submission."""
    node = _node(tmp_path, lanes)
    opened.append(node)
    node._loop = asyncio.get_running_loop()
    syncs = _Syncs(node)
    assert node.merge([_submission(P1, J1, [P1, P2])])
    assert syncs.appends == [False]  # written, no fsync at commit
    await asyncio.gather(*node._bg)
    if lanes:
        assert syncs.fsyncs == 0 and not node._syncing and _gossip(node).acked == []
        assert node.heads()[P1] == 1  # not held back for an fsync: none comes
    else:
        assert syncs.fsyncs == 1 and _gossip(node).acked == [{P1}]
    node._loop = None  # no loop: written through, with the fsync at commit if any is due
    assert node.merge([_submission(P3, J3, [P3, P4])])
    assert syncs.appends == [False, not lanes]


async def test_a_replicas_merge_fsyncs_and_acknowledges_only_its_own_submissions(
        tmp_path: Path, opened: list[Node]) -> None:
    """A frame holding a submission naming us among its `members`, one naming others, and one
    of a job without members: one fsync off the loop, then the origins of the first and the
    third are acknowledged, not the second's; our heads stop below those two until then."""
    node = _node(tmp_path)
    opened.append(node)
    node._loop = asyncio.get_running_loop()
    syncs = _Syncs(node)
    me = node.peer_id
    assert len(node.merge([_submission(P1, J1, [P1, me]), _submission(P2, J2, [P2, P3]),
                           _submission(P4, J3, None)])) == 3
    assert node.heads().get(P1, 0) == 0 and node.heads().get(P4, 0) == 0  # until fsynced
    assert node.heads()[P2] == 1
    await asyncio.gather(*node._bg)
    assert syncs.fsyncs == 1
    assert _gossip(node).acked == [{P1, P4}]
    assert (node.heads()[P1], node.heads()[P4]) == (1, 1)


# -- the submitter: acknowledgements of members only ---------------------------------------------
async def test_submitted_counts_the_acknowledgements_of_the_members_only(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """`submitted` of a lanes JOB_SUBMITTED counts the live replicas that hold it (its other
    `members`), not the other live peers; and waits for no more of them than are live."""
    node = _node(tmp_path)
    opened.append(node)

    async def on_disk(_ev: object) -> None:
        return None

    monkeypatch.setattr(node, "durable", on_disk)
    g = _gossip(node)
    for p in (P1, P2, P3):
        _live(node, p)
    me = node.peer_id
    ev = node.emit(EventType.JOB_SUBMITTED, {"job": J1, "workflow": WORKFLOW,
                                             "members": [me, P2]})
    g.heads = {P1: {me: ev.seq}, P3: {me: ev.seq}}  # held by two non-members
    assert await node.submitted(ev) == 0
    g.heads[P2] = {me: ev.seq}
    assert await node.submitted(ev) == 1
    plain = node.emit(EventType.JOB_SUBMITTED, {"job": J2, "workflow": WORKFLOW})
    g.heads = {p: {me: plain.seq} for p in (P1, P2, P3)}
    assert await node.submitted(plain) == 3  # a job without members: every live peer
    # A replica that is not live is not waited for (`want`: the live replicas, at most
    # submit_acks), however long the wait may be
    node.cfg = dataclasses.replace(node.cfg, ack_timeout_s=3600.0)
    away = node.emit(EventType.JOB_SUBMITTED, {"job": J3, "workflow": WORKFLOW,
                                               "members": [me, P4]})
    waiter = asyncio.create_task(node.submitted(away))
    await asyncio.sleep(0)
    assert waiter.done() and waiter.result() == 0


# -- the submitter: `members` under the flag rule -------------------------------------------------
def test_members_are_written_only_while_every_peer_and_member_announce_lanes(
        tmp_path: Path, opened: list[Node]) -> None:
    """`lanes_members`: us and `submit_acks` replicas among the live peers that run one of the
    job's calls, those with a free slot first, each group by rendezvous hash of (job, peer);
    None while any live peer, or any member the fold knows, does not announce LANES_FEATURE,
    and with lanes off."""
    node = _node(tmp_path / "a")
    opened.append(node)
    me = node.peer_id
    wf = from_obj(WORKFLOW, node.catalog)
    _live(node, P1, free=0)
    _live(node, P2)
    _live(node, P3, calls=["OTHER"])
    assert node.lanes_members(J1, wf) == [me, P2]  # P2 has a free slot, P3 runs no call
    node.cfg = dataclasses.replace(node.cfg, submit_acks=3)
    assert node.lanes_members(J1, wf) == [me, P2, P1]  # (P3 runs none: two replicas only)
    _live(node, P3)
    _live(node, P4)
    ranked = node.lanes_members(J1, wf)
    assert ranked == [me, *rendezvous(J1, [P2, P3, P4])]  # P1 has no free slot: after them
    assert node.lanes_members(J2, wf) == [me, *rendezvous(J2, [P2, P3, P4])]
    _live(node, P4, features=["batch-v1"])  # one live peer of the previous release
    assert node.lanes_members(J1, wf) is None
    del _gossip(node).live[P4]
    node.state.apply(_member_event(P4, ["batch-v1"]))  # a member of it, away now
    assert node.lanes_members(J1, wf) is None
    node.state.apply(dataclasses.replace(_member_event(P4, FEATURES), seq=2, hlc=1001))
    assert node.lanes_members(J1, wf) == [me, *rendezvous(J1, [P2, P3]), P1]  # it is away
    off = _node(tmp_path / "b", lanes=False)
    opened.append(off)
    _live(off, P2)
    assert off.lanes_members(J1, wf) is None


async def test_a_submission_with_lanes_says_members_and_the_lanes_key(
        tmp_path: Path, opened: list[Node]) -> None:
    """POST /api/jobs with lanes on and every peer announcing them: the JOB_SUBMITTED names
    `members` and its workflow says `"lanes": 1`, which this peer knows (it plans the job);
    with lanes off, the same POST makes a job without either."""
    for lanes, d in ((True, tmp_path / "a"), (False, tmp_path / "b")):
        node = _node(d, lanes)
        opened.append(node)
        _live(node, P1)
        _gossip(node).heads = {P1: {node.peer_id: 99}}
        async with api_client(node) as client:
            r = await client.post("/api/jobs", json=WORKFLOW)
            assert r.status == 201, await r.text()
            job = (await r.json())["job"]
        sub = node.state.jobs[job]
        if lanes:
            assert sub.body_as(JobSubmitted).members == (node.peer_id, P1)
            assert sub.payload["workflow"]["lanes"] == 1
            assert node.workflows.workflow(sub.payload["workflow"]).lanes
            assert not any(t.newer for t in node.scheduler.workflow(job).tasks)
        else:
            assert "members" not in sub.payload and "lanes" not in sub.payload["workflow"]


def _echoes(n: int) -> dict[str, Any]:
    return {"name": f"w{n}", "tasks": [{"name": f"e{i}", "call": "ECHO", "args": [str(i)]}
                                       for i in range(n)]}


async def test_a_job_of_fewer_tasks_than_lanes_min_job_tasks_is_held_in_full(
        tmp_path: Path, opened: list[Node]) -> None:
    """With the default `lanes_min_job_tasks`, a job of fewer tasks names no `members` (every
    peer holds it in full, as without lanes: a small job pays more for lanes than they
    save); one of that many, or with a per-item task (its items are listed at its split
    only), is a lanes job. POST /api/jobs writes the one without `members` and `"lanes"`."""
    node = _node(tmp_path, min_tasks=LANES_MIN_JOB_TASKS)
    opened.append(node)
    _live(node, P1, calls=("ECHO", "CHECKSUM"))
    small = from_obj(_echoes(LANES_MIN_JOB_TASKS - 1), node.catalog)
    big = from_obj(_echoes(LANES_MIN_JOB_TASKS), node.catalog)
    per_item = from_obj({"name": "m", "tasks": [
        {"name": "src", "cid": "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"},
        {"name": "sum", "call": "CHECKSUM", "args": [], "depends": ["src"]}]}, node.catalog)
    assert node.lanes_members(J1, small) is None
    assert node.lanes_members(J1, big) == [node.peer_id, P1]
    assert node.lanes_members(J1, per_item) == [node.peer_id, P1]
    _gossip(node).heads = {P1: {node.peer_id: 99}}
    async with api_client(node) as client:
        jobs = []
        for doc in (_echoes(1), _echoes(LANES_MIN_JOB_TASKS)):
            r = await client.post("/api/jobs", json=doc)
            assert r.status == 201, await r.text()
            jobs.append((await r.json())["job"])
    full, lanes = (node.state.jobs[j].payload for j in jobs)
    assert "members" not in full and "lanes" not in full["workflow"]
    assert lanes["members"] == [node.peer_id, P1] and lanes["workflow"]["lanes"] == 1


# -- the key is a peer's: a user's is refused; a peer without lanes plans none of such a job ----
async def test_a_users_submission_carrying_lanes_is_refused_naming_the_key(
        tmp_path: Path, opened: list[Node]) -> None:
    node = _node(tmp_path)
    opened.append(node)
    doc = {**WORKFLOW, "lanes": 1}
    with pytest.raises(SpecError) as e:
        parse(json.dumps(doc), node.catalog)
    assert e.value.field == "lanes" and "set by the peer" in e.value.message
    async with api_client(node) as client:
        r = await client.post("/api/jobs", json=doc)
        assert r.status == 400
        body = await r.json()
    assert body["field"] == "lanes" and "'lanes'" in body["message"]
    assert "set by the peer" in body["message"]
    assert not node.state.jobs


def test_a_stored_lanes_key_is_known_only_with_lanes_on_and_only_as_one() -> None:
    """A stored workflow's `"lanes": 1` is known to a peer with lanes on (LANES_TOP_KEYS) and
    written back; a peer with lanes off (as an older one) takes it for a newer peer's key:
    every task waits (`newer`), none is planned; another value is a newer peer's on both."""
    doc = {**WORKFLOW, "lanes": 1}
    on = workflow_from_json(doc, LANES_TOP_KEYS)
    assert on.lanes and not any(t.newer for t in on.tasks)
    assert on.to_json()["lanes"] == 1
    off = workflow_from_json(doc)
    assert not off.lanes and all(t.newer == ("workflow.lanes",) for t in off.tasks)
    for other in (True, 2, "1"):
        wf = workflow_from_json({**WORKFLOW, "lanes": other}, LANES_TOP_KEYS)
        assert not wf.lanes and all(t.newer == ("workflow.lanes",) for t in wf.tasks)

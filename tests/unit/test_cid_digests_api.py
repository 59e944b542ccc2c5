"""Review finding 8 where a user meets it: a CID with a truncated digest (`bafkreare2e`: raw,
sha2-256, 2 bytes, which more than one block verifies against) named to the API is a 400
naming the CID and what is wrong, never a 500, whether read from the gateway, named as a
submission's existing data or asked of the CAR export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.jobs.claims import task_status
from peer.log import Event, EventType
from peer.node import Node
from tests.unit.api_client import api_client

SHORT = "bafkreare2e"


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    n.listeners.clear()  # (no scheduler reactions: this is about reading the request)
    yield n
    n.log.close()


async def test_a_truncated_digest_cid_is_a_400_naming_it_everywhere(node: Node) -> None:
    async with api_client(node) as client:
        r = await client.get(f"/ipfs/{SHORT}")
        assert r.status == 400, await r.text()
        assert "its digest is 2 bytes, not the 32" in await r.text()
        r = await client.post("/api/jobs", json=[{"cid": SHORT}, {"call": "ECHO", "args": ["x"]}])
        assert r.status == 400, await r.text()
        body = await r.json()
        assert body["field"] == "tasks[0].cid" and SHORT in body["message"], body
        assert "its digest is 2 bytes" in body["message"]
        r = await client.post("/api/car", json={"cids": [SHORT]})
        assert r.status == 400, await r.text()
        assert "its digest is 2 bytes" in (await r.json())["message"]
    assert not node.state.jobs  # (nothing submitted)


GOOD = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"


def _source_and_echo(cid: str) -> dict[str, object]:
    return {"name": "x", "tasks": [{"name": "src", "cid": cid},
                                   {"name": "e", "call": "ECHO", "params": {"text": "hi"},
                                    "depends": ["src"]}]}


async def test_a_stored_job_naming_a_truncated_digest_fails_and_the_rest_is_kept(
        tmp_path: Path) -> None:
    """(Session 41.) A data dir of a release that took a truncated digest as a workflow's
    source (its submit check py-cid's, written here bypassing today's): its JOB_SUBMITTED
    was quarantined at the next start (the job gone from the peer's view, its other events
    left without it), and a peer that held it as its parse changed raised SpecError from
    every look at the job. Now the job is kept and fails: its source task with a reason
    naming it and the CID, and where the earlier release recorded the source done, the task
    reading it; nothing else is set aside."""
    cfg = PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False)
    old = Node(cfg)
    old.listeners.clear()  # (what an earlier release stored, written as it was)
    old.emit(EventType.JOB_SUBMITTED, {"job": "j1", "workflow": _source_and_echo(SHORT)})
    old.emit(EventType.JOB_SUBMITTED, {"job": "j2", "workflow": _source_and_echo(SHORT)})
    old.emit(EventType.TASK_DONE, {"job": "j2", "task": "src", "output": SHORT, "cached": True})
    old.emit(EventType.JOB_SUBMITTED, {"job": "j3", "workflow": {
        "name": "y", "tasks": [{"name": "src", "cid": GOOD}]}})
    old.flush()
    old.log.close()
    node = Node(cfg)
    try:
        assert node.door.quarantined == 0 and sorted(node.state.jobs) == ["j1", "j2", "j3"]
        node.scheduler.recover()
        node.scheduler.step()
        node.scheduler.step()
        why = ("task 'src': its source 'bafkreare2e' is not a valid CID (invalid CID "
               "'bafkreare2e': its digest is 2 bytes, not the 32 of its hash function; an "
               "earlier release took it)")
        for job, task in (("j1", "src"), ("j2", "e")):
            assert task_status(node.state, job, task, node.cfg.max_attempts) == "failed"
            assert [f.payload["error"] for f in node.state.chunk(job, task, 0).failures.values()
                    ] == [why]
        assert task_status(node.state, "j1", "e", node.cfg.max_attempts) == "pending"
        assert task_status(node.state, "j3", "src", node.cfg.max_attempts) == "done"
        async with api_client(node) as client:
            r = await client.get("/api/jobs/j2")
            assert r.status == 200, await r.text()
            tasks = {t["name"]: t for t in (await r.json())["tasks"]}
            assert (tasks["src"]["state"], tasks["e"]["state"]) == ("done", "failed")
            assert tasks["e"]["error"] == why
    finally:
        node.flush()
        node.log.close()


async def test_a_peers_job_naming_a_truncated_digest_is_kept_and_leaves_no_gap(
        tmp_path: Path) -> None:
    """(Session 42, review h H1.) A JOB_SUBMITTED naming a source's CID only an earlier
    release took, received from a peer (one that upgraded relays what it stored), is kept
    as a stored one is: refusing it left a permanent gap in its origin's stream here, every
    later event of that origin held past it. The origin's next event is folded; the task
    fails naming the CID."""
    peer = "peer0000000000000042"  # another peer (never live here)
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False))
    node.listeners.clear()
    try:
        hlc = node.hlc.now()
        old = Event(peer, 1, hlc, EventType.JOB_SUBMITTED,
                    {"job": "j1", "workflow": _source_and_echo(SHORT)})
        later = Event(peer, 2, hlc + 1, EventType.JOB_SUBMITTED,
                      {"job": "j3", "workflow": {"name": "y",
                                                 "tasks": [{"name": "src", "cid": GOOD}]}})
        assert node.merge([old, later]) == [old, later]
        assert node.heads()[peer] == 2 and sorted(node.state.jobs) == ["j1", "j3"]
        node.scheduler.recover()  # (the node is not started: its tasks looked at now)
        node.scheduler.step()
        assert task_status(node.state, "j1", "src", node.cfg.max_attempts) == "failed"
        [error] = [f.payload["error"] for f in
                   node.state.chunk("j1", "src", 0).failures.values()]
        assert SHORT in error and "earlier release" in error
    finally:
        node.flush()
        node.log.close()

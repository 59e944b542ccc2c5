"""Copies of a lanes job's outputs on a peer that is no member of it (peer/ipfs/replicate.py,
review r2 F3, F4): a non-member the replica rule names (fewer live members than
`--replicas`) makes them as soon as its fold takes the job's JOB_ENDED, be it when it comes
or once what it waited for comes, and once that JOB_ENDED's `listing` folds; before, both
waited for the next rescan (at start, or when a peer leaves), which a stable mesh may never
have. Lanes on, a real data dir in tmp_path, events merged as received ones are, no gossip:
the job's members are never live here, so this peer is named for every output (their data
is in its store, not pinned nor provided: the fetch is local)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.log.lanes import lane
from peer.node import Node

JOB = "j0000000000e1"
HOME, ADDED = "0123456789abcdef0123", "fedcba9876543210fedc"  # members, never live here
TASKS = ("t0", "t1")
WORKFLOW = {"name": "w", "tasks": [{"name": t, "call": "c", "params": {}, "depends": []}
                                   for t in TASKS]}
SUBMITTED = 5 << 16
END = 9000 << 16


def _node(d: Path) -> tuple[Node, list[str], list[str]]:
    """A node with lanes on, `--replicas 2`, holding the job's outputs' data (unpinned), its
    replicator started; the CIDs of that data, and the list of the CIDs it fetches."""
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False), lanes=True)
    cids = [node.store.add_bytes(f"output of {t}".encode()) for t in TASKS]
    fetched: list[str] = []
    ensure = node.fetcher.ensure

    async def counted(cids: Sequence[str], *a: Any, **kw: Any) -> None:
        fetched.extend(cids)
        await ensure(cids, *a, **kw)

    node.fetcher.ensure = counted  # type: ignore[method-assign]
    assert not set(cids) & set(node.store.pins())
    node.replicator.settle_s = 3600.0  # (its first rescan: not within the test)
    node.replicator.start()  # (as the node's start)
    node.compactor.now_hlc = lambda: END + (60_000 << 16)  # (within the horizon, past which
    # a listing not folded is given up: `Compactor.bare`)
    return node, cids, fetched


def _submitted() -> Event:
    return Event(HOME, 1, SUBMITTED, EventType.JOB_SUBMITTED,
                 {"job": JOB, "workflow": WORKFLOW, "members": [HOME]})


def _outputs(cids: list[str], member: str) -> dict[str, Any]:
    """A JOB_ENDED's `outputs` and `producers` of `cids`, made in `member`'s lane."""
    return {"outputs": {t: [f"key-{t}", c, SUBMITTED + i + 1, lane(member, JOB), i + 1]
                        for i, (t, c) in enumerate(zip(TASKS, cids, strict=True))},
            "producers": {c: [member] for c in cids}}


def _ended(origin: str, **body: Any) -> Event:
    return Event(origin, 1 if origin == ADDED else 2, END, EventType.JOB_ENDED, {
        "job": JOB, "state": "done", "n_tasks": len(TASKS), "end": END, "failed": {},
        "digest": "0" * 32, **body})


async def _copied(node: Node, cids: list[str]) -> bool:
    """Once the replicator's queue drained: is every one of `cids` pinned and provided here?"""
    drainer = node.replicator._drainer
    assert drainer is not None, "nothing was queued to replicate"
    await drainer
    me = node.peer_id
    pins = set(node.store.pins())
    return all(me in node.state.providers.get(c, ()) and c in pins for c in cids)


async def test_a_job_ended_taken_once_its_job_members_comes_is_replicated_then(
        tmp_path: Path) -> None:
    """F4: a member added after the JOB_ENDED it sent arrived (its JOB_MEMBERS comes later):
    the fold holds the JOB_ENDED, then takes it when the JOB_MEMBERS comes; on 4f5ca2e the
    replicator looked only at the JOB_ENDED event itself, so no copy until a rescan."""
    node, cids, fetched = _node(tmp_path)
    try:
        node.merge([_submitted()])
        node.merge([_ended(ADDED, **_outputs(cids, ADDED))])
        assert JOB not in node.state.ended and node.replicator._drainer is None  # (held)
        node.merge([Event(HOME, 2, SUBMITTED + 10, EventType.JOB_MEMBERS,
                          {"job": JOB, "add": [ADDED]})])
        assert node.state.ended[JOB].origin == ADDED
        assert await _copied(node, cids)
        assert sorted(fetched) == sorted(cids)  # once each
        assert node.replicator.rescan() == 0  # (a rescan finds them held: nothing again)
    finally:
        await node.replicator.close()
        node.log.close()


async def test_a_job_ended_whose_outputs_are_in_a_listing_is_replicated_once_it_folds(
        tmp_path: Path) -> None:
    """F3: a JOB_ENDED with too many outputs for the event names a `listing`, fetched and
    folded later (`EndListings`); its outputs are copied once it folds (on 4f5ca2e, at the
    next rescan: the JOB_ENDED names none, and nothing told the replicator of the fold)."""
    node, cids, fetched = _node(tmp_path)
    try:
        listing = node.store.add_bytes(json.dumps(_outputs(cids, HOME)).encode())
        node.merge([_submitted(), _ended(HOME, outputs={}, producers={}, listing=listing)])
        assert node.state.ended[JOB].payload["listing"] == listing
        assert node.replicator._drainer is None  # (it names no output yet)
        node.catchup.compact()  # (the compactor asks for the listing: it makes the record)
        await node.end_listings.step()
        assert JOB in node.state.listed
        assert await _copied(node, cids)
        assert sorted(fetched) == sorted(cids)  # once each
        assert node.replicator.rescan() == 0
    finally:
        await node.replicator.close()
        node.log.close()

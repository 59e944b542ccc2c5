"""A JOB_ENDED whose outputs are too many for the event names a `listing` (a stored JSON
object of its `outputs` and `producers`: peer.jobs.ending.framed). A peer that makes the
job's record of the JOB_ENDED (a non-member) fetches, reads and folds that listing
(peer.jobs.ending.EndListings, `MeshState.fold_listing`), then compacts the job as one
whose JOB_ENDED carries them inline; a listing that is too large, not JSON, or names what
the job did not make is refused with one log line naming the job and the CID, the job kept
as before (in memory, ended, no record). Lanes on explicitly (`Node(cfg, lanes=True)`), real
data dirs in tmp_path, no gossip, no live peers."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.config import PeerConfig
from peer.http.views import elsewhere_entry
from peer.log import Event, EventType
from peer.log.lanes import lane
from peer.node import Node

JOB = "j0000000000d1"
OTHER = "0123456789abcdef0123"  # the job's one member (a peer id's form), never live here
TASKS = ("t0", "t1")
OUT = {t: str(sha256_cid(t.encode(), "raw", 1)) for t in TASKS}
WORKFLOW = {"name": "w", "tasks": [{"name": t, "call": "c", "params": {}, "depends": []}
                                   for t in TASKS]}
SUBMITTED = 5 << 16
END = 9000 << 16
OUTPUTS = {t: [f"key-{t}", OUT[t], SUBMITTED + i + 1, lane(OTHER, JOB), i + 1]
           for i, t in enumerate(TASKS)}
PRODUCERS = {OUT["t0"]: [OTHER]}


def _node(d: Path) -> Node:
    """A node with lanes on, alone, holding OTHER's JOB_SUBMITTED of JOB (members: OTHER)."""
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    node.listeners[:] = [node.compactor.note]  # no scheduler: this is about the log
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    _fold(node, Event(OTHER, 1, SUBMITTED, EventType.JOB_SUBMITTED,
                      {"job": JOB, "workflow": WORKFLOW, "members": [OTHER]}))
    return node


def _fold(node: Node, ev: Event) -> Event:
    """`ev` folded as a row read back is, noted."""
    node.state.apply(ev)
    node.compactor.note(ev)
    return ev


def _ended(node: Node, **payload: Any) -> Event:
    """OTHER's JOB_ENDED of JOB (inline outputs unless `payload` says otherwise)."""
    ev = _fold(node, Event(OTHER, 2, END, EventType.JOB_ENDED, {
        "job": JOB, "state": "done", "n_tasks": len(TASKS), "end": END, "outputs": OUTPUTS,
        "producers": PRODUCERS, "failed": {}, "digest": "0" * 32, **payload}))
    assert node.state.ended.get(JOB) is ev  # (folded: OTHER is the member)
    return ev


def _listed(node: Node, raw: bytes) -> str:
    """JOB's JOB_ENDED with its outputs in a listing of `raw` (stored here); its CID."""
    cid = node.store.add_bytes(raw)
    _ended(node, outputs={}, producers={}, listing=cid)
    return cid


def _cache(node: Node) -> dict[str, Any]:
    """The cache entries and providers of JOB's outputs, with their orders."""
    st = node.state
    keys = [f"key-{t}" for t in TASKS]
    return {"outputs": {k: st.outputs.get(k) for k in keys},
            "src": {k: st._outputs_src.get(k) for k in keys},
            "providers": {c: sorted(st.providers.get(c, ())) for c in OUT.values()}}


async def test_a_listed_job_ended_folds_into_what_the_inline_one_does(tmp_path: Path) -> None:
    inline, listed = _node(tmp_path / "inline"), _node(tmp_path / "listed")
    try:
        _ended(inline)
        _listed(listed, json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode())
        listed.catchup.compact()
        assert JOB in listed.state.jobs and listed.index.record(JOB) is None  # (not folded)
        assert listed.compactor.unlisted == {JOB: listed.state.ended[JOB].payload["listing"]}
        await listed.end_listings.step()
        assert not listed.end_listings.refused
        assert _cache(listed) == _cache(inline)
        assert _cache(listed)["outputs"] == {f"key-{t}": OUT[t] for t in TASKS}
        # its list entry, while it is in memory, lists them as the inline one's does
        assert elsewhere_entry(listed.state, JOB) == elsewhere_entry(inline.state, JOB)
        assert elsewhere_entry(listed.state, JOB)["outputs"] == OUT
        for node in (inline, listed):
            assert node.catchup.compact().jobs == [JOB]
            assert JOB in node.state.compacted and JOB not in node.state.jobs
        assert listed.index.record(JOB) == inline.index.record(JOB)
        record: Any = listed.index.record(JOB)
        assert [(t["state"], t["output"]) for t in record["tasks"]] == [
            ("done", OUT[t]) for t in TASKS]
        assert _cache(listed) == _cache(inline)  # (from the job index now)
        assert not listed.compactor.unlisted
    finally:
        inline.log.close()
        listed.log.close()


BAD = {
    "not JSON": b'{"outputs": ',
    "a JSON list": b"[]",
    "another key": json.dumps({"outputs": OUTPUTS, "producers": {}, "x": 1}).encode(),
    "a task the job has not": json.dumps({"outputs": {"tx": OUTPUTS["t0"]},
                                          "producers": {}}).encode(),
    "a producer of no output": json.dumps({"outputs": OUTPUTS,
                                           "producers": {"bafyother": [OTHER]}}).encode(),
    "an output of no member's lane": json.dumps({"outputs": {"t0": [
        None, OUT["t0"], SUBMITTED + 1, lane("fedcba9876543210fedc", JOB), 1]},
        "producers": {}}).encode(),
    "a malformed output": json.dumps({"outputs": {"t0": [None, OUT["t0"]]},
                                      "producers": {}}).encode(),
    "too large": json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode(),
    "a directory": b"",  # (its CID: an empty directory's)
}


@pytest.mark.parametrize("what", sorted(BAD))
async def test_a_bad_listing_is_refused_with_one_line_and_the_job_is_kept(
        tmp_path: Path, what: str, caplog: pytest.LogCaptureFixture) -> None:
    node = _node(tmp_path)
    try:
        if what == "a directory":
            cid = node.store.make_dir({})
            _ended(node, outputs={}, producers={}, listing=cid)
        else:
            cid = _listed(node, BAD[what])
        node.catchup.compact()
        if what == "too large":
            node.end_listings.max_bytes = len(BAD[what]) - 1
        caplog.set_level(logging.INFO, logger="peer.jobs.ending")
        for _ in range(2):
            await node.end_listings.step()
            node.catchup.compact()
        lines = [r.getMessage() for r in caplog.records if r.name == "peer.jobs.ending"]
        assert len(lines) == 1 and JOB in lines[0] and cid in lines[0], lines
        assert "refused" in lines[0]
        assert cid in node.end_listings.refused
        assert JOB in node.state.jobs and JOB not in node.state.compacted
        assert node.index.record(JOB) is None and JOB not in node.state.listed
        assert _cache(node)["outputs"] == {f"key-{t}": None for t in TASKS}
        assert node.compactor.unlisted == {JOB: cid}  # (still waits: as before)
    finally:
        node.log.close()


async def test_a_listing_not_here_is_tried_again_not_refused(tmp_path: Path) -> None:
    node = _node(tmp_path)
    try:
        raw = json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode()
        cid = str(sha256_cid(raw, "raw", 1))  # (not stored here, no peer to fetch it from)
        _ended(node, outputs={}, producers={}, listing=cid)
        node.catchup.compact()
        await node.end_listings.step()
        assert not node.end_listings.refused and JOB not in node.state.compacted
        fetched: list[str] = []

        async def fetch(cids: Any) -> None:  # (a peer serves it now)
            fetched.extend(cids)
            assert node.store.add_bytes(raw, 1) == cid

        node.end_listings.fetch = fetch
        await node.end_listings.step()
        assert fetched == [cid]
        node.catchup.compact()
        assert JOB in node.state.compacted and node.index.record(JOB) is not None
    finally:
        node.log.close()

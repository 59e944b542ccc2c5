"""What a member's events and heartbeats put in front of a person, checked at the door and
when served (review r1 of session 49, helper g: F3, F2's server side, F5, F7). Real Nodes
(not started) through their app (aiohttp's test client, loopback only), the real wire
checks; no sleeps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.log import Event, EventLog, EventType, turn_event
from peer.log.clock import HLC
from peer.log.door import Door, DoorConfig
from peer.log.events import MAX_SHOWN_CHARS
from peer.mesh.gossip import Gossip, GossipConfig
from peer.mesh.keyring import SECRET_FILE_NAME
from peer.mesh.transport import MemoryNetwork
from peer.mesh.wire import parse_info
from peer.node import Node
from tests.unit.api_client import api_client
from tests.unit.test_compaction import _open

OTHER = "a5b44bb0377bec946ae7"  # another peer's id, as the review's hostile member sent it


# -- F3: a MEMBER payload's keys ---------------------------------------------------------------
async def test_a_member_payloads_id_and_other_keys_do_not_change_its_entry(
        tmp_path: Path, opened: list[Node]) -> None:
    """On 6c66b4c1 /api/peers spread the MEMBER payload after `id`: a payload `id` of
    another peer replaced the member's own (it posed as that peer), and any key it sent was
    served. Now the entry holds the member's real id and the typed fields only."""
    n = _open(tmp_path / "a", opened)
    n.emit(EventType.MEMBER, {**n.capabilities(), "id": OTHER, "self": False,
                              "state": "alive", "extra": "<script>", "name": "victim-A"})
    async with api_client(n) as c:
        r = await c.get("/api/peers")
        peers: list[dict[str, Any]] = (await r.json())["peers"]
    assert r.status == 200
    assert [(p["id"], p["self"], p["name"]) for p in peers] == [(n.peer_id, True, "victim-A")]
    assert "extra" not in peers[0] and peers[0]["state"] == "alive"
    assert {"http", "calls", "slots", "cores", "mem_mb", "gpu", "key", "features", "kinds",
            "labels"} <= set(peers[0])



# -- F2 (the server's side): a heartbeat's `running` and `working` -----------------------------
@pytest.mark.parametrize("entry", [
    None, 5, "x", {"job": "j"}, ["j", "t", 0], ["", "t", 0, 0], ["j", "t" * 257, 0, 0],
    ["j", "t", -1, 0], ["j", "t", 0, True], ["j", "t", 0.0, 0], ["j", None, 0, 0]])
def test_a_heartbeat_running_entry_that_is_no_attempt_key_is_left_out(entry: Any) -> None:
    """On 6c66b4c1 only the list was checked: `running: [null]` passed, was served in
    /api/peers as it came, and blanked the web UI of every peer. Each entry kept is an
    attempt key [job, task, chunk, attempt] as this release sends; another is left out
    and the rest of the info kept (session 49 refused the whole info for it: a member of a
    later release was one that never heartbeats; review r1 of session 50, R1-7)."""
    good = [["j1a2b3c4d5e6f", "t", 0, 0], ["j1a2b3c4d5e6f.a5b44bb0377bec946ae7", "t", 7, 2]]
    assert parse_info({"info": {"running": good}}) == {"running": good}
    assert parse_info({"info": {"running": [good[0], entry, good[1]], "name": "a"}}) == {
        "running": good, "name": "a"}


def test_a_later_releases_longer_attempt_key_is_read_as_its_first_four() -> None:
    """An entry that starts with an attempt key and holds more (a field a later release
    adds) renews that attempt: it is kept as its first four."""
    assert parse_info({"info": {"running": [["j", "t", 3, 1, {"x": 1}]]}}) == {
        "running": [["j", "t", 3, 1]]}
    for v, why in ((None, "is not a list"), ([["j", "t", 0, 0]] * 4097, "more than 4096")):
        with pytest.raises(ValueError, match=f"info.running {why}|info.running holds"):
            parse_info({"info": {"running": v}})


def test_a_working_entry_longer_than_a_job_id_bound_is_refused_naming_it() -> None:
    """`working` (job ids) and `calls` held strings of any length (a 1 MiB job "id")."""
    assert parse_info({"info": {"working": ["j" * 256], "calls": ["C" * 256]}})
    for key in ("working", "calls"):
        with pytest.raises(ValueError, match=rf"info\.{key}\[1\] holds 257 characters"):
            parse_info({"info": {key: ["j", "j" * 257]}})


def test_such_a_heartbeat_is_dropped_and_counted_and_a_good_one_then_heard(
        tmp_path: Path, opened: list[Node]) -> None:
    """Two peers of one mesh on an in-memory network: a member's signed heartbeat with
    `running: null` is dropped as a bad frame (counted) and its info not kept; its next
    heartbeat, well formed, is heard (on 6c66b4c1 the first was kept as it came)."""
    (tmp_path / "b").mkdir(mode=0o700)
    a = _open(tmp_path / "a", opened)
    shutil.copy(tmp_path / "a" / SECRET_FILE_NAME, tmp_path / "b" / SECRET_FILE_NAME)
    b = Node(PeerConfig(data_dir=tmp_path / "b", slots=1, mdns=False))
    b.listeners.clear()
    opened.append(b)
    info: dict[str, Any] = {"name": "a", "running": None}
    net = MemoryNetwork()
    ga = Gossip(GossipConfig.local(swim=None), net.transport(), a, a, a.peer_id, auth=a.auth,
                local_info=lambda: info)
    gb = Gossip(GossipConfig.local(swim=None), net.transport(), b, b, b.peer_id, auth=b.auth)
    ga.bind()
    gb.bind()
    ga.add_peer(gb.address)
    ga.heartbeat()
    net.pump()
    assert gb.stats.dropped_bad_frame == 1 and gb.stats.merge_errors == 0
    assert a.peer_id not in b.infos
    info["running"] = [["j1a2b3c4d5e6f", "t", 0, 0]]
    ga.heartbeat()
    net.pump()
    assert gb.stats.dropped_bad_frame == 1
    assert b.infos[a.peer_id]["running"] == [["j1a2b3c4d5e6f", "t", 0, 0]]


# -- F5: error texts in a job's view -----------------------------------------------------------
async def test_a_stored_long_error_is_cut_in_the_served_view_and_kept_whole_in_the_log(
        tmp_path: Path, opened: list[Node]) -> None:
    """A CHUNK_FAILED of 300,000 characters (any member's, or one an earlier release stored:
    the door takes up to 1 MiB) made GET /api/jobs/JOB carry it twice (task and chunk), per
    chunk of up to 1,000, at every refetch (on 6c66b4c1: 1.2 MB for one chunk). Now each text
    served is at most MAX_SHOWN_CHARS, head and tail; the event is not refused nor changed."""
    n = _open(tmp_path / "a", opened)
    job = "j0000000000b2"
    n.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": {"name": "big", "tasks": [
        {"name": "t", "call": "ECHO", "params": {"text": "x"}}]}})
    split = n.emit(EventType.TASK_SPLIT, {"job": job, "task": "t", "input": None,
                                          "chunks": [[]]})
    base = {"job": job, "task": "t", "split": list(split.id), "chunk": 0, "attempt": 0}
    n.emit(EventType.CLAIM, base)
    error = "head " + "x" * 300_000 + " tail"
    failed = n.emit(EventType.CHUNK_FAILED, {**base, "error": error, "kind": "error"})
    async with api_client(n) as c:
        r = await c.get(f"/api/jobs/{job}")
        body = await r.read()
    assert r.status == 200 and len(body) < 3 * MAX_SHOWN_CHARS
    [task] = json.loads(body)["tasks"]
    for shown in (task["error"], task["chunks"][0]["error"]):
        assert len(shown) <= MAX_SHOWN_CHARS and shown.startswith("head xx")
        assert shown.endswith("xx tail") and "characters cut)" in shown
    assert failed.payload["error"] == error  # (as signed and stored)


# -- F7: what a member names as a CID ----------------------------------------------------------
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
NOT_CIDS = ("../api/jobs/j0000000000c3/cancel", "ipfs/x", "bafy not", "Qm" + "l" * 44)


@pytest.mark.parametrize("bad", NOT_CIDS)
def test_an_outcome_naming_what_is_not_a_cid_is_refused_at_the_door(
        tmp_path: Path, bad: str) -> None:
    """On 6c66b4c1 a member's TASK_DONE output (and a CHUNK_DONE's output or log, a
    PARTIAL's output) was any string of at most 256 characters: the UI made a gateway link
    of it. One that comes in is refused now, alone or as a TURN's part, naming the field;
    a stored one (an earlier release's) is not refused, and a CID passes."""
    log = EventLog(tmp_path / "e.sqlite")
    door = Door(DoorConfig(), HLC(), log)
    o, hlc = "ab" * 10, HLC().now()
    job = {"job": "j0000000000c3", "task": "t"}
    chunk = {**job, "split": ["ab" * 10, 1], "chunk": 0, "attempt": 0}
    for typ, payload, field in (
            (EventType.TASK_DONE, {**job, "output": bad, "key": "k"}, "output"),
            (EventType.CHUNK_DONE, {**chunk, "output": bad, "cache": {}}, "output"),
            (EventType.CHUNK_DONE, {**chunk, "output": CID, "cache": {}, "log": bad}, "log"),
            (EventType.PARTIAL, {**job, "output": bad, "items": 1, "of": 2}, "output")):
        ev = Event(o, 1, hlc, typ, payload)
        assert door.problem(ev) == f"body: {typ.name}.{field} is not a CID: {bad!r}"
        assert door.problem(ev, stored=True) is None
        good = Event(o, 1, hlc, typ, {**payload, field: CID})
        assert door.problem(good) is None
        turn = turn_event([Event(o, 1, hlc, EventType.CLAIM, chunk), ev])
        assert door.problem(turn) == (f"body: part 1 ({typ.name}).{field} is not a CID: "
                                      f"{bad!r}")
    log.close()


async def test_a_stored_outcome_naming_what_is_not_a_cid_is_not_served_as_one(
        tmp_path: Path, opened: list[Node]) -> None:
    """What an earlier release stored unchecked: the job's view serves no such output (on
    6c66b4c1: the task's `output` and the job's `outputs` held the string)."""
    n = _open(tmp_path / "a", opened)
    job = "j0000000000c3"
    n.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": {"name": "c", "tasks": [
        {"name": "t", "call": "ECHO", "params": {"text": "x"}},
        {"name": "u", "call": "ECHO", "params": {"text": "y"}}]}})
    n.emit(EventType.TASK_DONE, {"job": job, "task": "t", "output": NOT_CIDS[0], "key": "k"})
    n.emit(EventType.TASK_DONE, {"job": job, "task": "u", "output": CID, "key": "k2"})
    async with api_client(n) as c:
        r = await c.get(f"/api/jobs/{job}")
        view = await r.json()
    assert r.status == 200, view
    assert [(t["name"], t["output"]) for t in view["tasks"]] == [("t", None), ("u", CID)]
    assert view["outputs"] == {"u": CID}

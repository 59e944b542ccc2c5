"""Several real banzai-peer processes on loopback: discovery over mDNS bound to 127.0.0.1,
gossip, claims spread across peers, cancellation, secrets and a peer killed mid-task."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import zmq

from peer.mesh.gossip import Kind, encode_frame
from tests.conftest import BIN, ROOT, PeerProc, start_peer, stop_peers

# get, post, wait_job and wait_mesh: other test modules import them from here too
from tests.helpers import get_json as get
from tests.helpers import multipart, wait_job, wait_mesh
from tests.helpers import post_json as post

PIPE = [{"call": "T_WRITE", "args": [48]}, {"call": "T_SLOW_ITEMS", "args": [0.15]},
        {"call": "T_CONCAT"}]


def start_all(start: Any, *specs: tuple[str, ...]) -> list[PeerProc]:
    """`start(*spec)` for every spec at once: a peer's start-up is mostly its own process
    importing, so two start in about the time of one on two cores."""
    with ThreadPoolExecutor(len(specs)) as pool:
        return list(pool.map(lambda spec: start(*spec), specs))


@pytest.fixture(scope="module")
def lone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    """One peer that gossips with nobody (no mDNS, no --join; --slots 2): the single-peer
    reference run, and a peer given a bad submission."""
    p = start_peer(tmp_path_factory.mktemp("lone") / "p0", "--slots", "2", "--no-mdns",
                   mesh=f"lone-{uuid.uuid4().hex[:12]}")
    yield p
    p.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[PeerProc]]:
    """Three peers of one mesh found by mDNS (--slots 1, leases of 120 s), started at once,
    shared by the tests that leave every peer running (they share peers, not jobs)."""
    d, mesh = tmp_path_factory.mktemp("trio"), f"trio-{uuid.uuid4().hex[:12]}"
    started: list[PeerProc] = []

    def start(name: str) -> PeerProc:
        started.append(p := start_peer(d / name, "--slots", "1", "--lease-s", "120",
                                       mesh=mesh))
        return p

    try:
        peers = start_all(start, ("m0",), ("m1",), ("m2",))
        wait_mesh(peers, 3)
        yield peers
    finally:
        stop_peers(started)


def _fetched_bytes(p: PeerProc) -> float:
    with urllib.request.urlopen(f"{p.url}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("banzai_fetched_bytes"):
                return float(line.split()[-1])
    raise AssertionError("no banzai_fetched_bytes in /metrics")


def test_a_small_output_rides_inline_and_is_served_by_cid_without_a_fetch(
        trio: list[PeerProc]) -> None:
    """First on the trio (nothing else fetching): an ECHO output rides in its CHUNK_DONE;
    every peer that did not run it keeps its blocks from the event (counted in /api/health)
    and serves it through /ipfs/ with no fetch from another peer."""
    peers = trio
    wait_mesh(peers, 3)
    text = f"inline {uuid.uuid4().hex}"
    job = post(peers[0].url + "/api/jobs", [{"call": "ECHO", "args": [text]}])["job"]
    views = [wait_job(p, job) for p in peers]
    assert all(v["state"] == "done" for v in views), views
    ran = views[0]["tasks"][0]["chunks"][0]["peer"]
    out = views[0]["outputs"]["echo"]
    others = [p for p, v in zip(peers, views, strict=True)
              if get(p.url + "/api/health")["peer"] != ran]
    assert len(others) == 2
    for p in others:
        until(lambda p=p: (get(p.url + "/api/health")["inline"] or {}).get("kept", 0) >= 1,
              "the inline blocks were not kept")
        before = _fetched_bytes(p)
        with urllib.request.urlopen(f"{p.url}/ipfs/{out}", timeout=10) as resp:
            assert text.encode() in resp.read()
        assert _fetched_bytes(p) == before  # served from what the event carried
        assert get(p.url + "/api/health")["inline"]["refused"] == 0


def test_three_peers_discover_spread_work_and_agree_on_cids(lone: PeerProc,
                                                           trio: list[PeerProc]) -> None:
    ref_job = post(lone.url + "/api/jobs", PIPE)["job"]  # the lone reference runs meanwhile
    peers = trio
    wait_mesh(peers, 3)
    r = post(peers[0].url + "/api/jobs", PIPE)
    assert r["replicas"] >= 2  # acknowledged by another live peer before returning
    v = wait_job(peers[1], r["job"])  # any peer shows the job
    assert v["state"] == "done", v
    ref = wait_job(lone, ref_job)
    assert ref["state"] == "done", ref
    assert v["outputs"] == ref["outputs"]
    ran = {c["peer"] for c in v["tasks"][1]["chunks"]}
    assert len(ran) > 1, f"all chunks ran on one peer: {ran}"
    for p in peers:  # every peer can serve the final result through its gateway
        with urllib.request.urlopen(f"{p.url}/ipfs/{v['outputs']['t_concat']}") as resp:
            assert resp.read().count(b"\n") == 48


def test_per_item_task_is_assembled_without_waiting_for_a_lease(trio: list[PeerProc]) -> None:
    """Assembling a per-item task's output reads its input's listing, which only the
    holders of the input have: here one peer, which got the upload. The peer that split
    the task (a holder) assembles it at once; the last chunk finisher used to, and when it
    lacked the listing the task waited a whole lease for another peer to take over. Leases
    are 120 s here, beyond wait_job's 60 s; repeated so that other peers finish last."""
    peers = trio
    wait_mesh(peers, 3)
    ran: set[str] = set()
    for rep in range(4):
        body, headers = multipart({f"in/f{i:02d}.txt": f"{rep} {i}\n".encode()
                                   for i in range(12)})
        req = urllib.request.Request(peers[0].url + "/api/add", data=body, headers=headers)
        with urllib.request.urlopen(req, timeout=30) as r:
            cid = json.loads(r.read())["cid"]
        job = post(peers[rep % 3].url + "/api/jobs",
                   [{"cid": cid}, {"call": "T_SLOW_ITEMS", "args": [0.2]}])["job"]
        v = wait_job(peers[1], job, timeout_s=60)
        assert v["state"] == "done", v
        assert len(v["tasks"][1]["chunks"]) == 3
        ran |= {c["peer"] for c in v["tasks"][1]["chunks"]}
    assert len(ran) == 3, f"the chunks never spread over the three peers: {ran}"


def test_a_one_task_job_runs_on_the_peer_it_was_posted_to(trio: list[PeerProc]) -> None:
    """A small job runs where it was submitted: posted to each idle peer in turn, each
    one-task job says `local` in its JOB_SUBMITTED and is claimed by that peer (before this
    release, two jobs in three went to the first peer by rendezvous hash: a gossip hop each
    way); its JOB_SUBMITTED says `claimed` too, and no CLAIM event of it is in any log."""
    peers = trio
    wait_mesh(peers, 3)
    ids = [next(x for x in get(f"{p.url}/api/peers")["peers"] if x["self"])["id"]
           for p in peers]
    tag = secrets.token_hex(6)
    for rep in range(2):
        for i, p in enumerate(peers):
            until(lambda: _own_running(peers) == [0, 0, 0], "a peer is still running a job")
            job = post(p.url + "/api/jobs", [{"call": "ECHO", "args": [f"{tag} {rep} {i}"]}])
            v = wait_job(p, job["job"])
            assert v["state"] == "done", v
            assert [c["peer"] for c in v["tasks"][0]["chunks"]] == [ids[i]], (i, v["tasks"])
            submitted, claims = _logged(p, job["job"])
            assert submitted.get("claimed") is True and claims == [], (submitted, claims)


def _logged(p: PeerProc, job: str) -> tuple[dict[str, Any], list[Any]]:
    """From `p`'s own log (SQLite, read-only): the JOB_SUBMITTED payload of `job`, and every
    CLAIM of it, as single events or as parts of a TURN."""
    uri = f"file:{p.data_dir / 'events.sqlite'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
        rows = db.execute("SELECT type, payload FROM events WHERE payload LIKE ?",
                          (f'%"{job}"%',)).fetchall()
    singles = [(t, json.loads(raw)) for t, raw in rows]
    singles += [(pt, pp) for t, body in list(singles) if t == 17 for pt, pp in body["parts"]]
    submitted = next(b for t, b in singles if t == 1 and b.get("job") == job)
    return submitted, [b for t, b in singles if t == 4 and b.get("job") == job]


def until(cond: Any, what: Any, timeout_s: float = 30, every_s: float = 0.05) -> Any:
    """Poll until `cond()` is truthy and return it; the deadline only fails a state that
    never comes (`what`: the message, or a callable making it)."""
    deadline = time.monotonic() + timeout_s
    while not (got := cond()):
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(every_s)
    return got


def _own_running(peers: list[PeerProc]) -> list[int]:
    return [len(next(x for x in get(f"{p.url}/api/peers")["peers"] if x["self"])["running"])
            for p in peers]


def _ran(p: PeerProc, job: str) -> list[dict[str, Any]]:
    """The chunks of the job's second task that a peer claimed, in `p`'s view."""
    return [c for c in get(f"{p.url}/api/jobs/{job}")["tasks"][1]["chunks"] if c["peer"]]


def test_cancel_stops_workers_on_every_peer(trio: list[PeerProc]) -> None:
    peers = trio
    wait_mesh(peers, 3)
    job = post(peers[0].url + "/api/jobs", [{"call": "T_WRITE", "args": [12]},
                                           {"call": "T_SLOW_ITEMS", "args": [3600]}])["job"]
    until(lambda: sum(_own_running(peers)) >= 2, lambda: f"not running: {_own_running(peers)}")
    post(f"{peers[2].url}/api/jobs/{job}/cancel")
    until(lambda: sum(_own_running(peers)) == 0,
          lambda: f"still running after cancel: {_own_running(peers)}")
    v = wait_job(peers[0], job)
    assert v["state"] == "cancelled"
    assert all(c["state"] != "running" for t in v["tasks"] for c in t["chunks"]), v
    # an item takes an hour: every chunk that ran was ended by the cancel, on its own peer,
    # which recorded it (heard on peers[0] once gossip brings it: it may still be on its way)
    # (the wait is for records of at least two peers: one peer's may come first)
    ran = until(lambda: (r := _ran(peers[0], job)) and all(c["error"] == "cancelled" for c in r)
                and len({c["peer"] for c in r}) >= 2 and r,
                lambda: f"not all recorded as cancelled on 2 peers: {_ran(peers[0], job)}")
    assert all(c["state"] != "done" for c in ran), ran
    # how soon (the design's bound: within a second): scripts/bench_latency.py


def test_peer_with_another_secret_never_joins(trio: list[PeerProc], tmp_path: Path) -> None:
    other = tmp_path / "other-secret"
    other.write_text(secrets.token_hex(32))
    wait_mesh(trio, 3)
    a = trio[0]
    health = get(a.url + "/api/health")
    ga, before = health["gossip_address"], health["gossip"]["refused_handshakes"]
    c = start_peer(tmp_path / "s2", "--secret-file", str(other), "--join", ga,
                   mesh=trio[0].args[trio[0].args.index("--mesh-name") + 1])
    try:
        # c finds the mesh's peers by mDNS (same mesh name) and leaves them alone (another
        # key id); told to --join a, it tries: every CURVE handshake is refused and counted
        until(lambda: get(a.url + "/api/health")["gossip"]["refused_handshakes"] >= before + 3,
              "the other-secret peer's connections were not refused")
        until(lambda: "uses a mesh secret this peer does not hold" in c.output,
              "the other-secret peer never saw the mesh's peers by mDNS")
        cid = get(c.url + "/api/health")["peer"]
        for p in trio:
            assert cid not in {x["id"] for x in get(p.url + "/api/peers")["peers"]}
        assert {x["id"] for x in get(c.url + "/api/peers")["peers"]} == {cid}
    finally:
        c.kill(signal.SIGTERM)


def test_plain_connection_is_refused_and_counted(peer_factory: Any, tmp_path: Path) -> None:
    """Gossip is CURVE: a plain ZeroMQ client (here sending HMAC-tagged frames, as before
    CURVE) fails the handshake, counted; none of its frames reaches the frame layer."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(secrets.token_hex(32))
    a = peer_factory("h0", "--secret-file", str(secret_file), "--no-mdns")
    health = get(a.url + "/api/health")
    before = health["gossip"]["refused_handshakes"]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://{health['gossip_address']}")
    try:
        body = json.dumps({"info": {"http": "x"}}).encode()
        frame = encode_frame(int(Kind.HEARTBEAT), _mesh_id(a), "intruder", "127.0.0.1:1",
                             body, secret=secret_file.read_bytes().strip())
        for _ in range(3):  # (without a pipe, the handshake refused, a DEALER's send
            with contextlib.suppress(zmq.Again):  # would block for good: never wait)
                sock.send(frame, zmq.NOBLOCK)
        until(lambda: get(a.url + "/api/health")["gossip"]["refused_handshakes"] > before,
              "the plain connection was not refused")
    finally:
        sock.close()
        ctx.term()
    g = get(a.url + "/api/health")["gossip"]
    assert g["frames_in"] == g["dropped_bad_mac"] == 0, g
    ids = {p["id"] for p in get(a.url + "/api/peers")["peers"]}
    assert "intruder" not in ids


def _mesh_id(p: PeerProc) -> str:
    from peer.mesh.discovery import mesh_hash

    name = p.args[p.args.index("--mesh-name") + 1]
    return mesh_hash(name)


def test_killed_peer_task_is_reclaimed_after_its_lease(peer_factory: Any) -> None:
    """The holder is killed as soon as its claim shows (its 2 s sleep far from over): the
    other peer takes the chunk over once the 2 s lease lapses."""
    a, b = start_all(peer_factory, *((f"k{i}", "--slots", "1", "--lease-s", "2")
                                     for i in range(2)))
    wait_mesh([a, b], 2)
    job = post(a.url + "/api/jobs", [{"call": "T_SLEEP", "args": [2]}])["job"]
    deadline = time.monotonic() + 20
    victim = None
    while victim is None:
        assert time.monotonic() < deadline
        v = get(f"{a.url}/api/jobs/{job}")
        chunks = v["tasks"][0]["chunks"]
        if chunks and chunks[0]["peer"]:
            victim = chunks[0]["peer"]
        time.sleep(0.05)
    dead, alive = (a, b) if get(a.url + "/api/health")["peer"] == victim else (b, a)
    dead.kill(signal.SIGKILL)
    v = wait_job(alive, job, timeout_s=60)
    assert v["state"] == "done", v
    t = v["tasks"][0]
    assert t["attempts"] >= 2 or t["chunks"][0]["attempt"] >= 1
    assert t["chunks"][0]["peer"] != victim


def test_a_peer_stopped_with_sigterm_leaves_and_nothing_waits_for_its_lease(
        peer_factory: Any) -> None:
    """SIGTERM: the peer announces LEFT (SWIM) as it stops, and the other fails its claim at
    once, uncounted. Leases are 120 s here, beyond wait_job's 60 s."""
    a, b = start_all(peer_factory, *((f"g{i}", "--slots", "1", "--lease-s", "120")
                                     for i in range(2)))
    wait_mesh([a, b], 2)
    job = post(a.url + "/api/jobs", [{"call": "T_SLEEP", "args": [2]}])["job"]
    deadline = time.monotonic() + 20
    holder = None
    while holder is None:
        assert time.monotonic() < deadline
        chunks = get(f"{a.url}/api/jobs/{job}")["tasks"][0]["chunks"]
        if chunks and chunks[0]["peer"]:
            holder = chunks[0]["peer"]
        time.sleep(0.05)
    gone, stays = (a, b) if get(a.url + "/api/health")["peer"] == holder else (b, a)
    gone.kill(signal.SIGTERM)
    assert gone.proc.returncode == 0  # a clean stop
    v = wait_job(stays, job, timeout_s=60)
    assert v["state"] == "done", v
    chunk = v["tasks"][0]["chunks"][0]
    assert chunk["peer"] != holder
    assert "left the mesh" in chunk["error"]  # failed by the other on hearing LEFT
    states = {p["id"]: p["state"] for p in get(stays.url + "/api/peers")["peers"]}
    assert states[holder] == "left"  # dropped at once, shown apart from a failed peer


def test_submission_is_rejected_when_body_is_bad_but_mesh_keeps_running(
        lone: PeerProc) -> None:
    a = lone
    with pytest.raises(urllib.error.HTTPError) as e:
        post(a.url + "/api/jobs", [{"call": "NOPE"}])
    e.value.close()
    assert e.value.code == 400
    assert get(a.url + "/api/health")["ok"]


def test_tasks_run_only_on_peers_meeting_their_requires_or_wait_visibly(
        peer_factory: Any) -> None:
    """Operator labels (`--label`) announced in MEMBER events; a task's `requires` places
    it: every chunk on the peer labelled so; a requirement no live peer meets waits with
    its reason in the job view and `banzai status`."""
    a, b = start_all(peer_factory, ("la", "--slots", "2", "--label", "site=a"),
                     ("lb", "--slots", "1", "--label", "site=b", "--label", "gpu-box=no"))
    wait_mesh([a, b], 2)
    pipe = {"tasks": [{"name": "w", "call": "T_WRITE", "args": [12]},
                      {"name": "s", "call": "T_SLOW_ITEMS", "args": [0.01], "depends": ["w"],
                       "requires": {"labels": {"site": "b"}, "kind": "python"}}]}
    v = wait_job(a, post(a.url + "/api/jobs", pipe)["job"])
    assert v["state"] == "done", v
    me_b = next(x for x in get(f"{b.url}/api/peers")["peers"] if x["self"])
    b_id = me_b["id"]
    assert me_b["labels"] == {"gpu-box": "no", "site": "b"}
    assert "python" in me_b["kinds"] and "shell" not in me_b["kinds"]  # no --allow-shell
    assert {c["peer"] for c in v["tasks"][1]["chunks"]} == {b_id}

    pipe["tasks"][1].update(args=[0.02], requires={"labels": {"site": "c"}})  # not cached
    job = post(b.url + "/api/jobs", pipe)["job"]
    reason = until(lambda: get(f"{a.url}/api/jobs/{job}")["tasks"][1]["waiting"],
                   "no waiting reason shown")
    assert reason.startswith("waiting for a live peer that meets its requires"), reason
    assert "lacks label site=c (it has site=a)" in reason and "(it has site=b)" in reason
    r = subprocess.run([str(BIN / "banzai"), "--peer", a.url, "status", job],
                       capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250"})
    assert r.returncode == 0, r.stderr
    assert "s waiting for a live peer that meets its requires" in r.stdout, r.stdout
    assert get(f"{a.url}/api/jobs/{job}")["tasks"][1]["state"] == "pending"
    post(f"{a.url}/api/jobs/{job}/cancel")

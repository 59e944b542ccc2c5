"""Real banzai-peer processes in network namespaces (issue 4): kill -9, partitions, whole-mesh
restarts, HMAC, cancellation and mDNS on namespace links.

Every test builds its own throw-away network with `tests.integration.netns.TestNet`
(bridge namespace + one namespace per peer on 10.213.0.0/24, nothing in the root
namespace) and tears it down, processes included, even on failure. The test process
talks to each peer's API from inside that peer's namespace (see netns.py). Needs root
and `ip netns`; skipped otherwise.
"""

from __future__ import annotations

import collections
import json
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from peer.log import EventType, hlc_ms
from peer.log.lanes import lane_of
from peer.mesh.gossip import GossipConfig
from tests.conftest import PeerProc, start_peer
from tests.helpers import event_heads, lanes_held_alike, lanes_members, logged_events
from tests.integration import netns
from tests.integration.netns import NsPeer, PeerSet, TestNet, until

pytestmark = pytest.mark.integration

FINAL = ("done", "failed", "cancelled")
LEASE_S = 3.0


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def netns_ok() -> None:
    reason = netns.unavailable_reason()
    if reason:
        pytest.skip(reason)
    netns.sweep_stale()


class Mesh:
    """One test's network plus the peers started in it."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.net: TestNet | None = None
        self.set: PeerSet | None = None

    def network(self, n: int) -> TestNet:
        assert self.net is None
        self.net = TestNet(n).create()
        self.set = PeerSet(self.net, self.tmp)
        return self.net

    def peers(self, hosts: range | list[int], *extra: str,
              env: Callable[[int], dict[str, str]] | None = None) -> list[NsPeer]:
        """Start one peer per host (in parallel) with the same flags."""
        assert self.set is not None
        made = [self.set.make(h, *extra, env=env(h) if env else None, lease_s=LEASE_S)
                for h in hosts]
        return self.set.start(made)

    def close(self) -> list[str]:
        errors: list[str] = []
        if self.set is not None:
            for p in self.set.peers:
                p.kill(signal.SIGKILL, timeout_s=5)
        if self.net is not None:
            errors = self.net.destroy()
        return errors


@pytest.fixture
def mesh(netns_ok: None, tmp_path: Path) -> Iterator[Mesh]:
    m = Mesh(tmp_path)
    try:
        yield m
    finally:
        if m.set is not None:  # captured output: pytest shows it only when the test failed
            for p in m.set.peers:
                print(f"---- {p.name} ({p.ns}) {p.log} ----\n{p.output[-3000:]}")
        errors = m.close()
        left = [n for n in netns.ip("netns", "list", check=False).stdout.split()
                if m.net is not None and n.startswith(m.net.tag)]
        assert not errors and not left, f"netns cleanup failed: {errors} {left}"


@pytest.fixture(scope="module")
def trio(netns_ok: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """Three peers (--slots 1) in their namespaces, found by mDNS only, shared by the tests
    that neither kill, cut nor restart one (discovery, cancel)."""
    m = Mesh(tmp_path_factory.mktemp("trio"))
    try:
        m.network(3)
        m.peers(range(3), "--slots", "1")  # no --join: only mDNS can introduce them
        yield m
    finally:
        if m.set is not None:
            for p in m.set.peers:
                print(f"---- {p.name} ({p.ns}) {p.log} ----\n{p.output[-3000:]}")
        errors = m.close()
        left = [n for n in netns.ip("netns", "list", check=False).stdout.split()
                if m.net is not None and n.startswith(m.net.tag)]
        assert not errors and not left, f"netns cleanup failed: {errors} {left}"


class Reference:
    """Undisturbed runs of pipelines on one plain loopback peer (no mDNS, no mesh), one at a
    time in a thread of their own: a test submits its reference run first and builds its
    network while it runs (the items mostly sleep), then takes the result."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.peer: PeerProc | None = None
        self.pool = ThreadPoolExecutor(1)
        self.done: dict[str, Future[dict[str, str]]] = {}

    def submit(self, pipe: list[dict[str, Any]]) -> Future[dict[str, str]]:
        """The run's outputs (name -> CID) once it is done; each pipeline runs once."""
        key = json.dumps(pipe, sort_keys=True)
        if key not in self.done:
            self.done[key] = self.pool.submit(self._run, pipe)
        return self.done[key]

    def _run(self, pipe: list[dict[str, Any]]) -> dict[str, str]:
        import urllib.request

        if self.peer is None:
            self.peer = start_peer(self.tmp / "ref", "--no-mdns", "--slots", "4")
        req = urllib.request.Request(self.peer.url + "/api/jobs", data=json.dumps(pipe).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            job = json.loads(r.read())["job"]
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"{self.peer.url}/api/jobs/{job}", timeout=10) as r:
                v = json.loads(r.read())
            if v["state"] in FINAL:
                break
            assert time.monotonic() < deadline, "reference run did not finish"
            time.sleep(0.1)
        assert v["state"] == "done", v
        outputs: dict[str, str] = v["outputs"]
        return outputs


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    ref = Reference(tmp_path_factory.mktemp("reference"))
    yield ref
    ref.pool.shutdown(wait=True)
    if ref.peer is not None:
        ref.peer.kill(signal.SIGTERM)


# -- helpers -------------------------------------------------------------------------------
def me(p: NsPeer) -> dict[str, Any]:
    """The peer's own entry in its /api/peers."""
    return next(x for x in p.get("/api/peers")["peers"] if x["self"])


def alive_ids(p: NsPeer) -> set[str]:
    return {x["id"] for x in p.get("/api/peers")["peers"] if x["state"] == "alive"}


def wait_mesh(peers: list[NsPeer], timeout_s: float = 30) -> None:
    """Until every peer sees all of `peers` alive (itself included)."""
    want = {p.get("/api/health")["peer"] for p in peers}
    until(lambda: all(alive_ids(p) >= want for p in peers), timeout_s,
          lambda: f"mesh did not form: {[sorted(alive_ids(p)) for p in peers]} want "
                  f"{sorted(want)}")


def job(p: NsPeer, jid: str) -> dict[str, Any]:
    v: dict[str, Any] = p.get(f"/api/jobs/{jid}")
    return v


def wait_job(p: NsPeer, jid: str, timeout_s: float = 60) -> dict[str, Any]:
    v: dict[str, Any] = until(lambda: (v := job(p, jid))["state"] in FINAL and v, timeout_s,
                              lambda: f"job {jid} not finished on {p.name}: "
                                      f"{job(p, jid)['state']}")
    return v


def task(v: dict[str, Any], call: str) -> dict[str, Any]:
    return next(t for t in v["tasks"] if t["call"] == call)


def counts(files: list[Path]) -> collections.Counter[str]:
    c: collections.Counter[str] = collections.Counter()
    for f in files:
        if f.exists():
            c.update(x for x in f.read_text().splitlines() if x)
    return c


def holds_what_it_should(peers: list[NsPeer], ids: list[str]) -> bool:
    """Every peer holds the same mesh streams (each peer's own among them) and, of a lanes
    job, exactly the lanes its members hold if it is one, none if not (docs/design/
    partial-replication.md, section 3); with lanes off, the same heads everywhere."""
    heads = [event_heads(p.data_dir / "events.sqlite") for p in peers]
    mesh = [{o: h for o, h in hs.items() if lane_of(o) is None} for hs in heads]
    if any(m != mesh[0] for m in mesh) or not set(mesh[0]) >= set(ids):
        return False
    # (the mesh streams, so the members, are the same on every peer)
    return lanes_held_alike(heads, ids, lanes_members(peers[0].data_dir / "events.sqlite"))


def reclaim_gap_ms(p: NsPeer, victim: str, jid: str, name: str, chunk: int) -> int:
    """HLC milliseconds from the victim's last event to the first claim of a later attempt
    of `chunk` (both as the peer's log holds them; read-only)."""
    db = sqlite3.connect(f"file:{p.data_dir / 'events.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        (last,) = db.execute("SELECT MAX(hlc) FROM events WHERE origin = ?", (victim,)).fetchone()
    finally:
        db.close()
    logged = logged_events(p.data_dir / "events.sqlite", (EventType.CLAIM,))
    claims = [hlc for hlc, _, d in logged if d["job"] == jid and d["task"] == name
              and d["chunk"] == chunk and d["attempt"] >= 1]
    assert claims and last is not None, (claims, last)
    return hlc_ms(min(claims)) - hlc_ms(int(last))


def timed(report: dict[str, float], name: str, t0: float) -> None:
    report[name] = round(time.monotonic() - t0, 2)
    print(f"[timing] {name}: {report[name]} s")


# -- 6. discovery ----------------------------------------------------------------------------
def test_peers_in_namespaces_discover_each_other_over_mdns(trio: Mesh) -> None:
    t0 = time.monotonic()
    assert trio.net is not None and trio.set is not None
    net, peers = trio.net, trio.set.peers
    started = time.monotonic()
    wait_mesh(peers, timeout_s=30)
    print(f"[timing] mesh formed {time.monotonic() - started:.2f} s after the peers started")
    ids = {p.get("/api/health")["peer"] for p in peers}
    for i, p in enumerate(peers):
        h = p.get("/api/health")
        assert (h["mdns"]["running"], h["mdns"]["error"]) == (True, None), h
        assert h["gossip_address"].startswith(net.addr(i) + ":"), h
        listed = {x["id"]: x for x in p.get("/api/peers")["peers"]}
        assert set(listed) == ids and all(x["state"] == "alive" for x in listed.values())
        others = [x for x in listed.values() if not x["self"]]
        assert all(x["http"].startswith(f"http://{netns.SUBNET}.") for x in others), others
    # mDNS sockets exist only in the namespaces, bound where they may be: the namespace's
    # own eth0 address or the wildcard of a namespace whose only other link is lo.
    ss = net.run(0, "ss", "-Hunap").stdout.decode()
    mdns = [ln for ln in ss.splitlines() if ":5353 " in ln]
    assert mdns, ss
    assert all(f"{net.addr(0)}:5353" in ln or "0.0.0.0:5353" in ln or "224.0.0.251:5353" in ln
               for ln in mdns), mdns
    print(f"[timing] total {time.monotonic() - t0:.2f} s")


# -- 1. kill -9 mid-task ---------------------------------------------------------------------
KILL_PIPE: list[dict[str, Any]] = [
    {"call": "T_WRITE", "args": [8, "kill9"]}, {"call": "T_SLOW_ITEMS", "args": [1.0]},
    {"call": "T_CONCAT"}]


@pytest.mark.timeout(180)
def test_kill_9_mid_task_is_reclaimed_after_lease_with_same_cids(
        mesh: Mesh, reference: Reference) -> None:
    t0 = time.monotonic()
    want = reference.submit(KILL_PIPE)
    mesh.network(2)
    peers = mesh.peers(range(2), "--slots", "1")
    wait_mesh(peers)
    ids = [p.get("/api/health")["peer"] for p in peers]
    jid = peers[0].post("/api/jobs", KILL_PIPE)["job"]

    def both_running() -> dict[str, Any] | None:
        v = job(peers[0], jid)
        chunks = task(v, "T_SLOW_ITEMS")["chunks"]
        running = [c for c in chunks if c["state"] == "running" and c["progress"] > 0]
        return v if len(chunks) == 2 and len(running) == 2 else None

    v = until(both_running, 40, lambda: f"two chunks never ran at once: {job(peers[0], jid)}",
              every_s=0.05)
    # Kill the peer that did not produce T_WRITE's output: the survivor then holds the data
    # the killed chunk needs (the data of a mesh with one copy dies with its holder).
    producer = task(v, "T_WRITE")["chunks"][0]["peer"]
    victim_i = 1 if ids[0] == producer else 0
    victim, survivor = peers[victim_i], peers[1 - victim_i]
    lost = next(i for i, c in enumerate(task(v, "T_SLOW_ITEMS")["chunks"])
                if c["peer"] == ids[victim_i])
    victim.kill(signal.SIGKILL)

    def reclaimed() -> bool:
        c = task(job(survivor, jid), "T_SLOW_ITEMS")["chunks"][lost]
        return bool(c["attempt"] >= 1 and c["peer"] == ids[1 - victim_i])

    until(reclaimed, 30, "the killed peer's chunk was never reclaimed")
    v = wait_job(survivor, jid, 60)
    assert v["state"] == "done", v
    assert v["outputs"] == want.result()  # same CIDs as the undisturbed run
    c = task(v, "T_SLOW_ITEMS")["chunks"][lost]
    assert c["attempt"] >= 1 and c["peer"] == ids[1 - victim_i], c
    # Not before the lease, as the survivor's log stamps it: the lease counts from the
    # victim's last heartbeat, at most one interval before its kill and after its last event.
    # (How long after the lease: scripts/bench_latency.py.)
    heartbeat_s = GossipConfig().heartbeat_s
    silent_ms = reclaim_gap_ms(survivor, ids[victim_i], jid, task(v, "T_SLOW_ITEMS")["name"],
                               lost)
    assert silent_ms >= (LEASE_S - heartbeat_s - 0.1) * 1000, silent_ms
    assert survivor.raw(f"/ipfs/{v['outputs']['t_concat']}").count(b"\n") == 8
    print(f"[timing] reclaimed {silent_ms} ms after the victim's last event; total "
          f"{time.monotonic() - t0:.2f} s")


# -- 2. partition ------------------------------------------------------------------------------
def part_pipe(tag: str) -> list[dict[str, Any]]:
    return [{"call": "T_WRITE", "args": [6, tag]}, {"call": "T_UPPER"}, {"call": "T_CONCAT"}]


def states(p: NsPeer) -> dict[str, str]:
    """Peer id -> its state as `p` holds it (alive, suspect, dead, ...)."""
    return {x["id"]: x["state"] for x in p.get("/api/peers")["peers"]}


def holds_dead(p: NsPeer, others: list[str]) -> bool:
    """True if `p` holds every peer of `others` dead (SWIM's suspicion ran out)."""
    held = states(p)
    return all(held.get(i) == "dead" for i in others)


@pytest.mark.timeout(240)
def test_partitioned_peer_keeps_working_and_converges_after_healing(
        mesh: Mesh, reference: Reference) -> None:
    t0 = time.monotonic()
    pa, pb = part_pipe("side-a"), part_pipe("side-b")
    ref_a, ref_b = reference.submit(pa), reference.submit(pb)
    net = mesh.network(3)
    peers = mesh.peers(range(3), "--slots", "1")
    wait_mesh(peers)
    ids = [p.get("/api/health")["peer"] for p in peers]
    major, lone = peers[:2], peers[2]

    net.cut(2)
    t_cut = time.monotonic()
    # both sides notice (suspect after 2 s without a frame) before anything is submitted
    until(lambda: alive_ids(lone) == {ids[2]}, 15, "the cut-off peer still sees others alive")
    until(lambda: all(ids[2] not in alive_ids(p) for p in major), 15,
          "the majority still sees the cut-off peer alive")
    ja = major[0].post("/api/jobs", pa)["job"]
    jb = lone.post("/api/jobs", pb)["job"]
    va = wait_job(major[1], ja, 30)
    vb = wait_job(lone, jb, 30)
    want_a, want_b = ref_a.result(), ref_b.result()
    assert va["state"] == "done" and va["outputs"] == want_a, va
    assert vb["state"] == "done" and vb["outputs"] == want_b, vb
    assert {p for t in va["tasks"] for p in t["peers"]} <= set(ids[:2]), va
    assert {p for t in vb["tasks"] for p in t["peers"]} == {ids[2]}, vb
    # the partition is real: neither side knows the other's job yet
    assert jb not in {j["id"] for j in major[0].get("/api/jobs")["jobs"]}
    assert ja not in {j["id"] for j in lone.get("/api/jobs")["jobs"]}
    both_done = time.monotonic() - t_cut
    # The partition lasts until each side holds the other dead (not merely suspect): the
    # healing then has to bring back members both sides declared dead.
    until(lambda: holds_dead(lone, ids[:2]) and all(holds_dead(p, [ids[2]]) for p in major),
          60, lambda: f"no side holds the other dead: {[states(p) for p in peers]}")
    t_partition = time.monotonic() - t_cut
    net.heal(2)
    t_heal = time.monotonic()

    def converged() -> bool:
        for p in peers:
            jobs = {j["id"]: j for j in p.get("/api/jobs")["jobs"]}
            if set(jobs) != {ja, jb}:
                return False
            if job(p, ja)["outputs"] != want_a or job(p, jb)["outputs"] != want_b:
                return False
        return holds_what_it_should(peers, ids)

    until(converged, 40, lambda: "no convergence after healing: " + json.dumps(
        {p.name: {"jobs": [j["id"] for j in p.get("/api/jobs")["jobs"]],
                  "heads": event_heads(p.data_dir / "events.sqlite")} for p in peers}),
          every_s=0.25)
    t_conv = time.monotonic() - t_heal
    wait_mesh(peers, 20)
    for p in peers:  # nothing lost: every result is servable from every peer
        for v in (va, vb):
            body = p.raw(f"/ipfs/{v['outputs']['t_concat']}")
            assert body.count(b"\n") == 6, (p.name, body[:200])
        assert p.get("/api/health")["jobs"] == 2
    print(f"[timing] both jobs done {both_done:.2f} s into the partition of "
          f"{t_partition:.2f} s; converged {t_conv:.2f} s after healing; "
          f"total {time.monotonic() - t0:.2f} s")


# -- 3. whole-mesh restart -------------------------------------------------------------------
RESTART_PIPE: list[dict[str, Any]] = [
    {"call": "T_WRITE", "args": [9, "restart"]}, {"call": "T_UPPER"},
    {"call": "T_SLOW_ITEMS", "args": [0.8]}, {"call": "T_CONCAT"}]


@pytest.mark.timeout(240)
def test_whole_mesh_restart_resumes_without_recomputing_finished_items(
        mesh: Mesh, reference: Reference, tmp_path: Path) -> None:
    t0 = time.monotonic()
    want = reference.submit(RESTART_PIPE)
    mesh.network(2)
    counters = [tmp_path / f"count{i}.txt" for i in range(2)]
    # 2 peers x 2 slots: 9 items split into chunks of 4, 4 and 1, all running at once, so
    # the 1-item chunk is done while the others are still running.
    peers = mesh.peers(range(2), "--slots", "2",
                       env=lambda h: {"BANZAI_TEST_COUNTER": str(counters[h])})
    wait_mesh(peers)
    jid = peers[0].post("/api/jobs", RESTART_PIPE)["job"]

    started = [0]

    def mixed() -> dict[str, Any] | None:
        """A done chunk, running ones, and an item that just started (the kill then lands
        mid-item, far from the instant an item finishes and is recorded)."""
        n = sum(k.startswith("T_SLOW_ITEMS") * c for k, c in counts(counters).items())
        just_started, started[0] = n > started[0], n
        v = job(peers[0], jid)
        chunks = task(v, "T_SLOW_ITEMS")["chunks"]
        done = [c for c in chunks if c["state"] == "done"]
        running = [c for c in chunks if c["state"] == "running"]
        return v if done and running and just_started else None

    v = until(mixed, 60, lambda: f"no mix of done and running chunks: {job(peers[0], jid)}",
              every_s=0.05)
    for p in peers:
        p.kill(signal.SIGKILL)
    # What had run when the whole mesh died; finished chunks must not run again.
    chunks = task(v, "T_SLOW_ITEMS")["chunks"]
    undone_items = sum(c["items"] for c in chunks if c["state"] != "done")
    in_flight = sum(1 for c in chunks if c["state"] == "running")
    assert sum(c["items"] for c in chunks) == 9, chunks
    before = counts(counters)
    assert before["T_WRITE"] >= 1 and before["T_CONCAT"] == 0, before

    t_restart = time.monotonic()
    for p in peers:
        p.spawn()
    for p in peers:
        p.wait_url(60)
    v = wait_job(peers[1], jid, 90)
    t_resume = time.monotonic() - t_restart
    assert v["state"] == "done", v
    assert v["outputs"] == want.result()
    after = counts(counters)
    slow_after = {k: n - before[k] for k, n in after.items()
                  if k.startswith("T_SLOW_ITEMS") and n > before[k]}
    # Tasks finished before the kill ran not once more. (Not "== 1": a split collision can
    # run a whole task twice before the kill, a known scheduler issue reported separately.)
    assert after["T_WRITE"] == before["T_WRITE"], (before, after)
    assert all(after[k] == before[k] >= 1 for k in (f"T_UPPER f{i:04d}.txt" for i in range(9))), \
        (before, after)
    assert after["T_CONCAT"] >= 1, after
    assert all(after[f"T_SLOW_ITEMS f{i:04d}.txt"] >= 1 for i in range(9)), after
    # Only items that had not finished ran again: items of chunks not done, and of those
    # not the ones finished inside a running chunk (recorded per item as they finish). At
    # most one item per running chunk was in flight at the kill, and per running chunk one
    # more may have finished with its record not yet acknowledged (the chunks run their
    # 0.8 s items in lockstep, so another chunk's item can end just as one starts; only
    # acknowledged events are durable).
    started_before = sum(n for k, n in before.items() if k.startswith("T_SLOW_ITEMS"))
    finished_before = started_before - in_flight
    assert 0 < sum(slow_after.values()) <= min(undone_items, 9 - finished_before + in_flight), \
        (before, slow_after, chunks)
    assert max(n for k, n in after.items() if k.startswith("T_SLOW_ITEMS")) <= 2, after
    print(f"[timing] job done {t_resume:.2f} s after the restart began (peer start-up "
          f"included); re-ran {sum(slow_after.values())} items ({undone_items} in unfinished "
          f"chunks, {finished_before} had finished); "
          f"total {time.monotonic() - t0:.2f} s")


# -- 4. secrets ------------------------------------------------------------------------------
INTRUDER = r"""
import faulthandler, json, sys, time
faulthandler.dump_traceback_later(20, exit=True)  # a hang says where (stderr), then exits 1
import zmq
from peer.mesh.wire import Kind, encode_frame
addr, mesh_id = sys.argv[1], sys.argv[2]
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)  # its frames cannot get through (no CURVE): none to wait for
s.connect("tcp://" + addr)
body = json.dumps({"info": {"http": "x"}}).encode()
bad = encode_frame(int(Kind.HEARTBEAT), mesh_id, "intruder", sys.argv[3], body,
                   secret=b"not-the-mesh-secret-123")
forged = bad[:-1] + bytes([bad[-1] ^ 1])
untagged = encode_frame(int(Kind.HEARTBEAT), mesh_id, "intruder", sys.argv[3], body,
                        secret=None)
for f in (bad, bad, forged, untagged):
    try:  # (a DEALER whose one connection the peer refused has no pipe: a blocking send hangs)
        s.send(f, zmq.NOBLOCK)
    except zmq.Again:
        pass
time.sleep(2.0)  # the connection attempts the peer refuses run meanwhile
s.close()
ctx.term()
"""


@pytest.mark.timeout(180)
def test_peer_without_the_secret_is_refused_and_never_joins(mesh: Mesh, tmp_path: Path) -> None:
    """Gossip is CURVE with keys from the mesh secret: a client without them (plain ZeroMQ,
    or a peer of another secret) fails the handshake, counted; no frame of it is read."""
    from peer.mesh.discovery import mesh_hash

    t0 = time.monotonic()
    good, other = tmp_path / "secret", tmp_path / "other-secret"
    good.write_text(secrets.token_hex(32))
    other.write_text(secrets.token_hex(32))
    net = mesh.network(4)  # h3: no peer, the intruder's host
    a, b = mesh.peers(range(2), "--secret-file", str(good))
    wait_mesh([a, b])
    ha = a.get("/api/health")
    before = ha["gossip"]["refused_handshakes"]
    assert ha["gossip"]["dropped_bad_mac"] == 0, ha
    assert mesh.set is not None
    r = net.run(3, str(netns.BIN / "python"), "-c", INTRUDER, ha["gossip_address"],
                mesh_hash(mesh.set.mesh), f"{net.addr(3)}:1", timeout=60)
    assert r.returncode == 0, f"the intruder failed ({r.returncode}): {r.stderr.decode()}"
    until(lambda: a.get("/api/health")["gossip"]["refused_handshakes"] > before, 10,
          lambda: f"plain connection not refused: {a.get('/api/health')['gossip']}")
    g = a.get("/api/health")["gossip"]
    assert g["dropped_bad_mac"] == g["dropped_bad_frame"] == 0, g  # no frame got through
    assert "intruder" not in {x["id"] for x in a.get("/api/peers")["peers"]}

    # A peer with another secret, same mesh name, found by mDNS and told to --join: never in.
    c = mesh.set.make(2, "--secret-file", str(other), "--join", ha["gossip_address"],
                      lease_s=LEASE_S)
    mesh.set.start([c])
    cid = c.get("/api/health")["peer"]
    mark = a.get("/api/health")["gossip"]["refused_handshakes"]
    until(lambda: a.get("/api/health")["gossip"]["refused_handshakes"] >= mark + 2, 30,
          "the other-secret peer's connections were not refused")  # it keeps trying, in vain
    until(lambda: "uses a mesh secret this peer does not hold" in c.output, 20,
          "the other-secret peer never saw the mesh's peers by mDNS")
    for p in (a, b):
        assert cid not in {x["id"] for x in p.get("/api/peers")["peers"]}
    assert {x["id"] for x in c.get("/api/peers")["peers"]} == {cid}
    print(f"[timing] total {time.monotonic() - t0:.2f} s")


# -- 5. cancel ---------------------------------------------------------------------------------
def job_events(p: NsPeer, jid: str, typ: EventType) -> list[int]:
    """The HLCs of `jid`'s events of `typ` in the peer's log, TURNs opened (read-only)."""
    return [hlc for hlc, _, d in logged_events(p.data_dir / "events.sqlite", (typ,))
            if d.get("job") == jid]


@pytest.mark.timeout(180)
def test_cancel_stops_every_peer(trio: Mesh) -> None:
    """A job runs on every peer that runs it (all three; with lanes, its members, the third
    none): a cancel posted to a peer that runs none of it if there is one (else any) stops
    each run; the job ends cancelled on every peer, each chunk that ran recorded cancelled
    by its peer, and no chunk is claimed after the cancel."""
    t0 = time.monotonic()
    assert trio.set is not None
    peers = trio.set.peers
    wait_mesh(peers)
    ids = [p.get("/api/health")["peer"] for p in peers]
    jid = peers[0].post("/api/jobs", [{"call": "T_WRITE", "args": [12, "cancel"]},
                                      {"call": "T_SLOW_ITEMS", "args": [3600]}])["job"]

    def runners() -> list[str]:  # (with lanes, the members named so far)
        return sorted(lanes_members(peers[0].data_dir / "events.sqlite").get(jid, ids))

    with ThreadPoolExecutor(len(peers)) as pool:

        def own_running() -> list[int]:
            return list(pool.map(lambda p: len(me(p)["running"]), peers))

        until(lambda: own_running() == [int(i in runners()) for i in ids], 40,
              lambda: f"not every peer of {runners()} runs a chunk: {own_running()}",
              every_s=0.1)
        ran_by = runners()
        at = next((p for p, i in zip(peers, ids, strict=True) if i not in ran_by), peers[2])
        at.post(f"/api/jobs/{jid}/cancel")
        until(lambda: sum(own_running()) == 0, 30,
              lambda: f"still running after cancel: {own_running()}", every_s=0.02)
    views = [wait_job(p, jid, 10) for p in peers]
    assert [v["state"] for v in views] == ["cancelled"] * 3, [v["state"] for v in views]
    # an item takes an hour: each run was ended by the cancel (how soon, the design's bound
    # being a second: scripts/bench_latency.py)
    ran = [c for c in task(views[1], "T_SLOW_ITEMS")["chunks"] if c["peer"]]
    assert sorted({c["peer"] for c in ran}) == ran_by == runners(), (ran, ran_by)
    assert all(c["state"] != "done" and c["error"] == "cancelled" for c in ran), ran
    for p in peers:  # (a runner's log holds its own claims: none after the cancel it folded)
        (cancelled,) = job_events(p, jid, EventType.JOB_CANCELLED)
        assert max(job_events(p, jid, EventType.CLAIM), default=0) < cancelled, p.name
    print(f"[timing] ran on {len(ran_by)} peers, cancelled on {at.name}; "
          f"total {time.monotonic() - t0:.2f} s")

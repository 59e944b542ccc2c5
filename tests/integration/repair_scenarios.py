"""The two self-repair scenarios of issue 11 with real peers in network namespaces, as plain
functions (run once each by tests/integration/test_netns_repair.py with cheap settings, and
repeated by scripts/repeat_netns.py with the full ones). Each builds and destroys its own
TestNet; each returns a result dict (timings, counts) or raises AssertionError.

(a) `cut_off`: three peers run a first pipeline whose output is replicated; the peer that
    produced it is cut off; a job on the other side, whose input those two hold, finishes
    while the third stays away for `away_s`.
(b) `kill_all`: kill -9 of every peer mid-job; the item results recorded in the log are
    removed from every store (as lost unsynced writes would be); after a restart the job
    finishes, the lost items recomputed.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer.cids import parse_cid
from peer.errors import NotFound
from peer.ipfs.embedded import EmbeddedStore
from peer.log import EventType
from tests.helpers import logged_events
from tests.integration.netns import NsPeer, PeerSet, TestNet, until

FINAL = ("done", "failed", "cancelled")
TASKS = ("--task-module", "tests.repair_tasks")  # T_SLOW_TAG
COLD = {"BANZAI_WARM_WORKERS": "0"}  # no warm-up (librosa): these runs use fixture tasks
START_S = 150.0  # a peer answers once its workers are up: slow on a loaded 2-core host


@dataclass(frozen=True)
class Settings:
    """What makes a run cheap (the suite) or full (the repeat script)."""

    files: int = 6  # items of the pipelines
    item_s: float = 0.3  # seconds per slow item
    away_s: float = 0.0  # (a): how long the cut-off peer stays away after the job is done
    lease_s: float = 3.0
    timeout_s: float = 60.0  # a job that takes longer has stalled


def _peers(net: TestNet, tmp: Path, n: int, s: Settings, *extra: str,
           env: dict[str, str] | None = None) -> tuple[PeerSet, list[NsPeer]]:
    ps = PeerSet(net, tmp)
    made = [ps.make(h, "--slots", "1", *TASKS, *extra, env={**COLD, **(env or {})},
                    lease_s=s.lease_s) for h in range(n)]
    return ps, ps.start(made, START_S)


def _alive(p: NsPeer) -> set[str]:
    return {x["id"] for x in p.get("/api/peers")["peers"] if x["state"] == "alive"}


def _wait_mesh(peers: list[NsPeer], timeout_s: float = 30) -> list[str]:
    ids = [p.get("/api/health")["peer"] for p in peers]
    until(lambda: all(_alive(p) >= set(ids) for p in peers), timeout_s, "mesh did not form")
    return ids


def _job(p: NsPeer, jid: str) -> dict[str, Any]:
    v: dict[str, Any] = p.get(f"/api/jobs/{jid}")
    return v


def _wait_job(p: NsPeer, jid: str, timeout_s: float) -> dict[str, Any]:
    def state() -> str:
        v = _job(p, jid)
        return f"{v['state']}: " + json.dumps(
            [(t["name"], t["state"], t.get("waiting"),
              [(c["state"], c["attempt"], (c["peer"] or "")[:6]) for c in t["chunks"]])
             for t in v["tasks"]])

    v: dict[str, Any] = until(lambda: (v := _job(p, jid))["state"] in FINAL and v, timeout_s,
                              lambda: f"job {jid} not finished on {p.name}: {state()}")
    return v


def _task(v: dict[str, Any], call: str) -> dict[str, Any]:
    return next(t for t in v["tasks"] if t["call"] == call)


def _complete(p: NsPeer, cid: str) -> bool:
    """True if every block of `cid` is in the peer's store (read from disk; multi-process)."""
    try:
        for _ in EmbeddedStore(p.data_dir / "store").dag(cid):
            pass
    except NotFound:
        return False
    return True


def _expected(files: int, tag: str, suffix: str, upper: bool) -> bytes:
    """What T_WRITE(files, tag) -> [T_UPPER] -> T_SLOW_TAG(suffix) -> T_CONCAT gives."""
    text = "".join(f"file {i} {tag}\n{suffix}" for i in range(files))
    return (text.upper() if upper else text).encode()


def _destroy(net: TestNet, ps: PeerSet | None) -> None:
    if ps is not None:
        for p in ps.peers:
            p.kill(signal.SIGKILL, timeout_s=5)
    errors = net.destroy()
    assert not errors, f"netns cleanup failed: {errors}"


# -- (a) one peer of three cut off ----------------------------------------------------------
def cut_off(tmp: Path, s: Settings) -> dict[str, Any]:
    t0 = time.monotonic()
    net = TestNet(3).create()
    ps: PeerSet | None = None
    try:
        ps, peers = _peers(net, tmp, 3, s, "--replicas", "2")
        ids = _wait_mesh(peers)
        first = [{"call": "T_WRITE", "args": [s.files, "cut"]}, {"call": "T_UPPER"}]
        j1 = peers[0].post("/api/jobs", first)["job"]
        v1 = _wait_job(peers[0], j1, s.timeout_s)
        assert v1["state"] == "done", v1
        out1 = _task(v1, "T_UPPER")["output"]
        # Its producer (the peer that assembled it) goes away once another holds a copy.
        done = peers[0].get(f"/api/jobs/{j1}")
        producer = next((p for p in peers if p.get("/api/health")["peer"]
                         in _task(done, "T_UPPER")["peers"]), peers[0])
        until(lambda: len([p for p in peers if _complete(p, out1)]) >= 2, 30,
              "the first pipeline's output was never replicated")
        holders = [p for p in peers if _complete(p, out1)]
        away = producer if producer in holders else holders[0]
        rest = [p for p in peers if p is not away]
        net.cut(away.host)
        t_cut = time.monotonic()
        away_id = ids[peers.index(away)]
        until(lambda: all(away_id not in _alive(p) for p in rest), 30,
              "the others still see the cut-off peer alive")
        second = [{"cid": out1}, {"call": "T_SLOW_TAG", "args": [s.item_s, "+"]},
                  {"call": "T_CONCAT"}]
        j2 = rest[0].post("/api/jobs", second)["job"]
        v2 = _wait_job(rest[1], j2, s.timeout_s)
        t_done = time.monotonic() - t_cut
        assert v2["state"] == "done", v2
        body = rest[0].raw(f"/ipfs/{_task(v2, 'T_CONCAT')['output']}")
        assert body == _expected(s.files, "cut", "+", upper=True), body[:300]
        assert away_id not in {p for t in v2["tasks"] for p in t["peers"]}, v2
        time.sleep(max(0.0, s.away_s - (time.monotonic() - t_cut)))  # the rest of the absence
        net.heal(away.host)
        until(lambda: _job(away, j2)["state"] == "done", 60,
              "the peer that was away never learnt the job was done")
        return {"scenario": "cut_off", "ok": True, "done_after_cut_s": round(t_done, 1),
                "total_s": round(time.monotonic() - t0, 1)}
    finally:
        _destroy(net, ps)


# -- (b) kill -9 of every peer mid-job -----------------------------------------------------
def _recorded_items(db_path: Path, task: str) -> dict[str, str]:
    """Item result CIDs the log records for `task` (CHUNK_DONE and CACHE_PUT), by cache key."""
    out: dict[str, str] = {}
    for _, typ, p in logged_events(db_path, (EventType.CHUNK_DONE, EventType.CACHE_PUT)):
        if typ == EventType.CHUNK_DONE and p.get("task") != task:
            continue
        out.update((k, v["c"]) for k, v in (p.get("cache") or {}).items() if v)
    return out


def _remove_blocks(peers: list[NsPeer], cids: list[str]) -> int:
    removed = 0
    for p in peers:
        store = EmbeddedStore(p.data_dir / "store")
        for c in cids:
            path = store.blocks.path(parse_cid(c).key)
            if path.exists():
                path.unlink()
                removed += 1
    return removed


def kill_all(tmp: Path, s: Settings) -> dict[str, Any]:
    t0 = time.monotonic()
    net = TestNet(3).create()
    ps: PeerSet | None = None
    counters = [tmp / f"count{i}.txt" for i in range(3)]
    try:
        ps = PeerSet(net, tmp)
        made = [ps.make(h, "--slots", "1", *TASKS,
                        env={**COLD, "BANZAI_TEST_COUNTER": str(counters[h])},
                        lease_s=s.lease_s) for h in range(3)]
        peers = ps.start(made, START_S)
        _wait_mesh(peers)
        pipe = [{"call": "T_WRITE", "args": [s.files, "kill"]},
                {"call": "T_SLOW_TAG", "args": [s.item_s, "+"]}, {"call": "T_CONCAT"}]
        jid = peers[0].post("/api/jobs", pipe)["job"]

        def mixed() -> str | None:
            t = _task(_job(peers[0], jid), "T_SLOW_TAG")
            chunks = t["chunks"]
            return t["name"] if (any(c["state"] == "done" for c in chunks)
                                 and any(c["state"] == "running" for c in chunks)) else None

        name = until(mixed, s.timeout_s, "no mix of done and running chunks", every_s=0.05)
        for p in peers:
            p.kill(signal.SIGKILL)
        recorded: dict[str, str] = {}
        for p in peers:
            recorded.update(_recorded_items(p.data_dir / "events.sqlite", name))
        assert recorded, "no item result was recorded before the kill"
        lost = sorted(set(recorded.values()))
        removed = _remove_blocks(peers, lost)
        before = _counts(counters)
        t_restart = time.monotonic()
        for p in peers:
            p.spawn()
        for p in peers:
            p.wait_url(START_S)
        v = _wait_job(peers[1], jid, s.timeout_s)
        t_done = time.monotonic() - t_restart
        assert v["state"] == "done", v
        body = peers[1].raw(f"/ipfs/{_task(v, 'T_CONCAT')['output']}")
        assert body == _expected(s.files, "kill", "+", upper=False), body[:300]
        after = _counts(counters)
        rerun = sum(after[k] - before[k] for k in after if k.startswith("T_SLOW_TAG"))
        assert rerun >= 1, (before, after)
        return {"scenario": "kill_all", "ok": True, "lost_items": len(lost),
                "blocks_removed": removed, "items_rerun": rerun,
                "done_after_restart_s": round(t_done, 1),
                "total_s": round(time.monotonic() - t0, 1)}
    finally:
        _destroy(net, ps)


def _counts(files: list[Path]) -> Counter[str]:
    c: Counter[str] = Counter()
    for f in files:
        if f.exists():
            c.update(x for x in f.read_text().splitlines() if x)
    return c

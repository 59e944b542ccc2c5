"""Replication (peer/replicate.py): outputs are pinned by their producer and r-1 other peers,
so killing the producer after a job loses no result."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from peer.ipfs import EmbeddedStore
from peer.ipfs.replicate import Replicator, replica_peers
from peer.log import Event, EventType
from tests.conftest import BIN, ROOT, PeerProc
from tests.helpers import ReplicaFakes, wait_job, wait_mesh
from tests.helpers import get_json as get
from tests.helpers import post_json as post

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_replica_choice_is_deterministic_and_excludes_the_producer() -> None:
    peers = [f"p{i}" for i in range(6)]
    for cid in ("bafya", "bafyb", "bafyc"):
        got = replica_peers(cid, "p0", peers, 3)
        assert len(got) == 2 and "p0" not in got
        assert replica_peers(cid, "p0", reversed(peers), 3) == got
    assert replica_peers("bafya", "p0", peers, 1) == []
    assert replica_peers("bafya", "p0", ["p0", "p1"], 5) == ["p1"]


def _done(i: int, cid: str, cached: bool = False) -> Event:
    return Event("p1", i, 0, EventType.TASK_DONE,
                 {"job": "j", "task": f"t{i}", "output": cid, "cached": cached})


async def until(cond: Callable[[], object], timeout_s: float = 30) -> None:
    """Poll until `cond()` holds; the deadline only fails a state that never comes."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "the replicator never got there"
        await asyncio.sleep(0.005)


def test_replicator_pins_and_provides_only_what_it_is_chosen_for_in_one_batch() -> None:
    async def go() -> None:
        f = ReplicaFakes()
        r = Replicator("me", 2, lambda: {"p1": {}, "p2": {}}, lambda c: {"p1"}, f, f, f.emit,
                       batch_window_s=0.01)
        cids = [f"bafy{i}" for i in range(12)]
        for i, c in enumerate(cids):
            r.on_event(_done(i + 1, c))
        r.on_event(_done(99, "bafyx", cached=True))
        await until(lambda: f.emitted)
        mine = [c for c in cids if replica_peers(c, "p1", ["me", "p1", "p2"], 2) == ["me"]]
        assert mine and len(mine) < len(cids)
        assert f.fetched == f.pinned == mine
        assert f.emitted == [(EventType.PROVIDE, {"cids": mine})]  # one event for the burst
        await r.close()

    asyncio.run(go())


def test_a_failed_replica_is_retried_without_holding_up_the_others() -> None:
    async def go() -> None:
        cids = [f"bafy{i}" for i in range(3)]
        f = ReplicaFakes(flaky=[cids[1]])
        r = Replicator("me", 2, lambda: {"p1": {}}, lambda c: {"p1"}, f, f, f.emit,
                       batch_window_s=0.01, backoff_s=0.05)
        for i, c in enumerate(cids):
            r.on_event(_done(i + 1, c))
        await until(lambda: f.emitted)  # the first batch does not wait for the flaky one
        assert f.emitted == [(EventType.PROVIDE, {"cids": [cids[0], cids[2]]})]
        await until(lambda: len(f.emitted) > 1)  # its retry, after the backoff
        assert f.emitted[1:] == [(EventType.PROVIDE, {"cids": [cids[1]]})]
        assert sorted(f.pinned) == cids
        await r.close()

    asyncio.run(go())


def _pinned_by(peers: Sequence[PeerProc], cid: str) -> list[str]:
    return [p.data_dir.name for p in peers
            if cid in EmbeddedStore(p.data_dir / "store").pins()]


def test_killing_the_producer_loses_no_result(peer_factory: Any, tmp_path: Path) -> None:
    # inline off: a small output would ride in its event and every peer would pin it; here
    # outputs replicate by CID to the r-1 peers of their rendezvous order
    with ThreadPoolExecutor(3) as pool:
        peers: list[PeerProc] = list(pool.map(lambda n: peer_factory(
            n, "--slots", "1", "--inline-output-max-bytes", "0"), ["r0", "r1", "r2"]))
    wait_mesh(peers, 3)
    ids = {get(p.url + "/api/health")["peer"]: p for p in peers}
    v = wait_job(peers[0], post(peers[0].url + "/api/jobs", [
        {"call": "T_WRITE", "args": [3, "replicated"]}, {"call": "T_CONCAT"}])["job"])
    assert v["state"] == "done", v
    z = v["outputs"]["t_concat"]
    producer = ids[v["tasks"][1]["peers"][0]]
    want = {producer.data_dir.name} | {
        ids[p].data_dir.name for p in replica_peers(z, v["tasks"][1]["peers"][0], ids, 2)}
    deadline = time.monotonic() + 20
    while sorted(_pinned_by(peers, z)) != sorted(want) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(_pinned_by(peers, z)) == sorted(want)

    producer.kill()
    survivors = [p for p in peers if p is not producer]
    expected = b"".join(f"file {i} replicated\n".encode() for i in range(3))
    for p in survivors:  # the replica serves it; the other fetches it from the replica
        with urllib.request.urlopen(f"{p.url}/ipfs/{z}", timeout=30) as r:
            assert r.read() == expected
        out = tmp_path / f"got-{p.data_dir.name}"
        done = subprocess.run([str(BIN / "banzai"), "--peer", p.url, "get", z, "-o", str(out)],
                              capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == expected

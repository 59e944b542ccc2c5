"""Storage lifecycle (issue 11 item 4) on real peers through the real CLI: pin rm then gc frees
the bytes, kept outputs survive gc, `jobs rm`, a tiny --store-max-gb evicts the oldest finished
job's outputs so that a rerun recomputes, and what a kill -9 left is swept at start. Two peers,
each shared by its tests (periodic cycles off: every cycle here is a `banzai gc`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from peer.cids import RAW, Cid
from peer.ipfs import EmbeddedStore
from tests.conftest import PeerProc
from tests.helpers import JsonApi, launch, multipart, stop
from tests.integration.test_cli import banzai, no_traceback
from tests.integration.test_mesh import until

pytestmark = pytest.mark.integration
API = JsonApi(job_timeout_s=60)
ON_DEMAND = ("--gc-interval-s", "0", "--gc-grace-s", "0", "--slots", "2")
STALE = ("upload-1a2b", "kubo-add-3c4d", "work/banzai-exec-5e6f/12/in")


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    p = launch(tmp_path_factory.mktemp("lifecycle") / "p0", *ON_DEMAND,
               "--mesh-name", f"lc-{uuid.uuid4().hex[:12]}")
    yield p
    stop(p)


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerProc]:
    """A peer bounded to 0 GB of outputs, started over a data dir a kill -9 left dirty."""
    data = tmp_path_factory.mktemp("tight") / "p0"
    for rel in STALE:
        (data / rel).mkdir(parents=True)
        (data / rel / "partial.bin").write_bytes(b"\0" * 1000)
    (data / "store" / "staging" / "4242-abcdef").mkdir(parents=True)
    p = launch(data, *ON_DEMAND, "--store-max-gb", "0",
               "--mesh-name", f"lc-{uuid.uuid4().hex[:12]}")
    yield p
    stop(p)


def store(p: PeerProc) -> EmbeddedStore:
    return EmbeddedStore(p.data_dir / "store")


def gc(p: PeerProc) -> tuple[int, int]:
    """`banzai gc` -> (blocks, bytes) it reports."""
    r = banzai("gc", peer=p)
    assert r.returncode == 0, r.stderr
    no_traceback(r)
    m = re.search(r"freed (\d+) blocks, (\d+) bytes", r.stdout)
    assert m, r.stdout
    return int(m.group(1)), int(m.group(2))


def metric(p: PeerProc, name: str) -> float:
    """One sample of the peer's /metrics (`name` with its labels, if any)."""
    r = urllib.request.Request(f"{p.url}/metrics", headers=p.auth)
    with urllib.request.urlopen(r, timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, text
    return float(m.group(1))


def trims(p: PeerProc) -> float:
    """banzai_malloc_trims_total of the peer's /metrics."""
    return metric(p, "banzai_malloc_trims_total")


def run(p: PeerProc, pipeline: list[dict[str, object]]) -> dict[str, object]:
    view = API.wait(p.url, API.submit(p.url, pipeline))
    assert view["state"] == "done", view
    return view


def test_pin_rm_then_gc_frees_the_bytes_and_the_cid_is_gone(peer: PeerProc,
                                                           tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(600_000))  # three 256 KiB chunks and a root
    r = banzai("add", str(f), peer=peer)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert cid in banzai("pin", "ls", peer=peer).stdout.split()
    assert store(peer).has(cid)
    r = banzai("pin", "rm", cid, peer=peer)
    assert r.returncode == 0 and r.stdout.strip() == f"unpinned {cid}", r.stderr
    assert cid not in banzai("pin", "ls", peer=peer).stdout.split()
    blocks, freed = gc(peer)
    assert blocks >= 4 and freed >= 600_000
    assert not store(peer).has(cid)
    assert trims(peer) >= 1  # glibc's malloc_trim ran after the cycle (this host has glibc)
    # The peer's garbage collector keeps its pace (peer.gcpace): the default threshold, and
    # the storage cycle's sweep of cyclic garbage (a full collection: the first since start)
    assert metric(peer, "banzai_gc_young_allocs") == 50_000
    assert metric(peer, 'banzai_gc_collections_total{generation="2"}') >= 1
    again = banzai("pin", "rm", cid, peer=peer)  # Kubo's answer: not pinned
    assert again.returncode == 2 and "not pinned or pinned indirectly" in again.stderr
    no_traceback(again)


def test_pin_rm_removes_a_pin_an_earlier_release_made_under_a_truncated_digest(
        tmp_path: Path) -> None:
    """(Review c, session 42, C4.) A data dir where an earlier release pinned a block under
    a CID whose digest is shorter than its hash function's (taken before c3c9d56): that pin
    was listed nowhere and `banzai pin rm` refused its CID, so its blocks stayed for good.
    `pin rm` takes it, saying why, and `gc` frees the block; any other bad CID is refused
    as before, naming what is wrong."""
    data = tmp_path / "p0"
    old = EmbeddedStore(data / "store")  # (as that release wrote it: the block, a pin file)
    block = b"pinned by an earlier release " + uuid.uuid4().bytes
    short = Cid(1, RAW, bytes([0x12, 20]) + hashlib.sha256(block).digest()[:20])
    old.blocks.begin()
    old.blocks.put_trusted(short, block)
    old.blocks.sync()
    (old.root / "pins" / str(short)).touch()
    p = launch(data, *ON_DEMAND, "--mesh-name", f"lc-{uuid.uuid4().hex[:12]}")
    try:
        bad = banzai("pin", "rm", "bafkreare2e", peer=p)  # (pinned nowhere)
        assert bad.returncode == 2 and "invalid CID 'bafkreare2e': its digest is 2 bytes, " \
            "not the 32 of its hash function" in bad.stderr, bad.stderr
        no_traceback(bad)
        assert str(short) not in banzai("pin", "ls", peer=p).stdout
        r = banzai("pin", "rm", str(short), peer=p)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == (
            f"unpinned {short} (pinned by an earlier release under a CID refused now (its "
            "digest is 20 bytes, not the 32 of its hash function): unpinned, its blocks go at "
            "the next gc)"), r.stdout
        assert gc(p) == (1, len(block))
        assert not store(p).blocks.has(short)
        again = banzai("pin", "rm", str(short), peer=p)
        assert again.returncode == 2 and "its digest is 20 bytes" in again.stderr
        no_traceback(again)
    finally:
        stop(p)


def test_kubo_rpc_pin_rm_and_repo_gc(peer: PeerProc) -> None:
    url = f"{peer.url}/api/v0/add?pin=true&cid-version=1"
    status, _, body = API.http("POST", url, *_multipart())
    assert status == 200, body
    cid = json.loads(body.splitlines()[-1])["Hash"]
    status, _, body = API.http("POST", f"{peer.url}/api/v0/pin/rm?arg={cid}")
    assert status == 200 and json.loads(body) == {"Pins": [cid]}
    status, _, body = API.http("POST", f"{peer.url}/api/v0/pin/rm?arg={cid}")
    assert status == 400 and json.loads(body) == {
        "Message": "not pinned or pinned indirectly", "Code": 0, "Type": "error"}
    status, headers, body = API.http("POST", f"{peer.url}/api/v0/repo/gc")
    assert status == 200 and headers["X-Chunked-Output"] == "1"
    keys = [json.loads(line)["Key"]["/"] for line in body.splitlines()]
    assert cid in keys  # a one-block file: its raw CIDv1 is what repo gc names


def _multipart() -> tuple[bytes, dict[str, str]]:
    return multipart({"note.txt": b"unpin me " + uuid.uuid4().bytes})


def test_a_kept_output_survives_gc(peer: PeerProc, tmp_path: Path) -> None:
    view = run(peer, [{"call": "T_WRITE", "args": [3, "kept"]}, {"call": "T_UPPER"}])
    outputs = view["outputs"]
    assert isinstance(outputs, dict)
    gc(peer)
    for cid in outputs.values():
        assert sum(1 for _ in store(peer).dag(cid)) > 0  # every block of the DAG is there
    r = banzai("get", outputs["t_upper"], "-o", str(tmp_path / "out"), peer=peer)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "f0001.txt").read_text() == "FILE 1 KEPT\n"


def test_jobs_rm_deletes_a_finished_job_only(peer: PeerProc) -> None:
    job = str(run(peer, [{"call": "T_WRITE", "args": [1, "rm"]}])["id"])
    slow = API.submit(peer.url, [{"call": "T_SLEEP", "args": [600]}])
    API.wait(peer.url, slow, states=("running",))
    r = banzai("jobs", "rm", slow, peer=peer)
    assert r.returncode == 2 and "has not finished" in r.stderr
    r = banzai("jobs", "rm", job, peer=peer)
    assert r.returncode == 0 and r.stdout.strip() == f"deleted {job}", r.stderr
    status, _ = API.api("GET", f"{peer.url}/api/jobs/{job}")
    assert status == 404
    _, listing = API.api("GET", f"{peer.url}/api/jobs")
    assert job not in [j["id"] for j in listing["jobs"]] and slow in [
        j["id"] for j in listing["jobs"]]
    assert banzai("jobs", "rm", job, peer=peer).returncode == 2  # gone: 404
    API.api("POST", f"{peer.url}/api/jobs/{slow}/cancel")


def test_stale_dirs_are_swept_at_start(tight: PeerProc) -> None:
    data = tight.data_dir
    for top in ("upload-1a2b", "kubo-add-3c4d", "work/banzai-exec-5e6f"):
        assert not (data / top).exists(), top
    assert not (data / "store" / "staging" / "4242-abcdef").exists()
    assert "swept what an earlier run left" in tight.output
    assert "upload-1a2b" in tight.output and "work/banzai-exec-5e6f" in tight.output


def test_a_tiny_store_bound_evicts_finished_outputs_and_a_rerun_recomputes(
        tight: PeerProc, tmp_path: Path) -> None:
    f = tmp_path / "mine.txt"
    f.write_text("an explicit pin survives any bound\n")
    mine = banzai("add", str(f), peer=tight).stdout.strip()
    pipeline: list[dict[str, object]] = [{"call": "T_WRITE", "args": [3, "tight"]},
                                         {"call": "T_UPPER"}]
    first = run(tight, pipeline)
    outputs = first["outputs"]
    assert isinstance(outputs, dict)
    r = banzai("gc", peer=tight)
    assert r.returncode == 0 and "unpinned 2 output(s)" in r.stdout, r.stdout
    for cid in outputs.values():
        assert not store(tight).has(cid)
    assert store(tight).has(mine) and mine in store(tight).pins()
    second = run(tight, pipeline)  # the cache points at outputs no peer holds: recomputed
    tasks = second["tasks"]
    assert isinstance(tasks, list)
    assert [t["cached"] for t in tasks] == [False, False]
    assert [c["state"] for c in tasks[1]["chunks"]] == ["done"] * len(tasks[1]["chunks"])
    assert second["outputs"] == outputs  # the same content again


def _pinned(p: PeerProc) -> list[str]:
    status, _, body = API.http("POST", f"{p.url}/api/v0/pin/ls?type=recursive")
    assert status == 200, body
    return list(json.loads(body)["Keys"])


def test_an_unpinned_inline_output_stays_unpinned_after_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "p0"
    flags = (*ON_DEMAND, "--mesh-name", f"lc-{uuid.uuid4().hex[:12]}")
    p = launch(data, *flags)
    try:
        outputs = run(p, [{"call": "T_WRITE", "args": [1, uuid.uuid4().hex]}])["outputs"]
        assert isinstance(outputs, dict)
        cid = outputs["t_write"]
        assert cid in _pinned(p)
        status, _, body = API.http("POST", f"{p.url}/api/v0/pin/rm?arg={cid}")
        assert status == 200, body
        p.kill(signal.SIGTERM)  # a clean close: the inline writes made durable, marked
        stop(p)
        assert (data / "inline-durable").exists()
        p = launch(data, *flags, fresh_log=True)
        until(lambda: "(0 logged since the last clean close)" in p.output,
              "the start's restore did not end, or restored every event")
        assert cid not in _pinned(p) and store(p).has(cid)  # left unpinned, not collected
    finally:
        stop(p)

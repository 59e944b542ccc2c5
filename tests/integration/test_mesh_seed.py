"""The seed pipeline across a mesh: four real banzai-peer processes on loopback find each
other over mDNS bound to 127.0.0.1 and run FETCH_FESTVOX (HTTP from a serve_dir server on
127.0.0.1) -> FILTER_LONGER(5) -> EXTRACT_MFCC(32, 24, 1, 8000, 16000) -> LEARN with the
EXTRACT_MFCC chunks spread over several peers, and get the very CIDs a lone peer gets.

The corpus (1 espeak-ng speaker x 40 utterances, 11 of them >= 5 s) is cached in
.cache/mesh-seed-corpus, so warm runs skip the synthesis. The splitting peer cuts the 11 kept
utterances into about items / free slots chunks of at least 4, so 2 or 3 chunks when another
peer reports a free slot, and a peer with one slot runs one chunk at a time: other peers
claim the rest. Why four peers and not three: free slots are known from heartbeats (every
0.5 s), and the split comes ~0.1 s after the FILTER_LONGER chunks end, so a peer that has
just finished its FILTER chunk may still be reported busy; with every other peer reported
busy the split is one chunk and one peer runs it all. With three peers, 3 runs in 11 had
one of the two others reported busy (2 chunks instead of 3); four peers make "all three
others look busy" unlikely.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import ROOT, PeerProc
from tests.helpers import get_json, post_json, serve_corpus, wait_job, wait_mesh

pytestmark = pytest.mark.integration

CORPUS = ROOT / ".cache" / "mesh-seed-corpus"
SPEAKER = "awb"
UTTERANCES = 40
JOB_TIMEOUT_S = 90.0
N_PEERS = 4
TASKS = ["fetch_festvox", "filter_longer", "extract_mfcc", "learn"]
FETCH_ALLOW = ("--fetch-allow", "127.0.0.1/32")  # the corpus server's address


@pytest.fixture(scope="module")
def corpus_url() -> Iterator[str]:
    """Base URL (ends with /) of a 127.0.0.1 file server holding the speaker's zip."""
    with serve_corpus(CORPUS, [SPEAKER], UTTERANCES) as url:
        yield url


def seed_pipeline(url: str) -> list[dict[str, Any]]:
    """examples/seed.json, fetching from the test server."""
    text = (ROOT / "examples" / "seed.json").read_text()
    pipe: list[dict[str, Any]] = json.loads(text.replace("http://127.0.0.1:8765/", url))
    assert [(s["call"], s["args"][1:] if s["call"] == "FETCH_FESTVOX" else s["args"])
            for s in pipe] == [("FETCH_FESTVOX", []), ("FILTER_LONGER", [5]),
                               ("EXTRACT_MFCC", [32, 24, 1, 8000, 16000]), ("LEARN", [])]
    assert pipe[0]["args"] == [f"{url}cmu_us_{SPEAKER}_arctic-0.90-release.zip"]
    return pipe


def run(peer: PeerProc, pipeline: Any) -> dict[str, Any]:
    """Submit on `peer`, wait for the final view and require it done."""
    v = wait_job(peer, post_json(peer.url + "/api/jobs", pipeline)["job"],
                 timeout_s=JOB_TIMEOUT_S)
    assert v["state"] == "done", json.dumps(v, indent=1)[:4000]
    assert [t["name"] for t in v["tasks"]] == TASKS
    return v


def task_outputs(view: dict[str, Any]) -> dict[str, str]:
    return {t["name"]: t["output"] for t in view["tasks"]}


def timeline(view: dict[str, Any], name: str) -> list[tuple[str, int, int]]:
    """(peer, started, finished) of each chunk of a task, in ms since the job was submitted
    (which peers were busy when the next task was split)."""
    t0 = view["submitted_ms"]
    task = next(t for t in view["tasks"] if t["name"] == name)
    return [(c["peer"], (c["started_ms"] or t0) - t0, (c["finished_ms"] or t0) - t0)
            for c in task["chunks"]]


def test_seed_pipeline_spreads_over_the_mesh_with_the_cids_of_a_lone_peer(
        peer_factory: Any, corpus_url: str) -> None:
    pipe = seed_pipeline(corpus_url)
    with ThreadPoolExecutor(N_PEERS + 1) as pool:  # start them at once: each takes seconds
        lone = pool.submit(peer_factory, "single", "--slots", "2", "--no-mdns", *FETCH_ALLOW)
        mesh = [pool.submit(peer_factory, f"m{i}", "--slots", "1", *FETCH_ALLOW)
                for i in range(N_PEERS)]
        single = lone.result()
        reference = pool.submit(run, single, pipe)  # the lone peer's run, while the mesh forms
        peers = [m.result() for m in mesh]
        wait_mesh(peers, N_PEERS)  # each peer's GET /api/peers shows them all alive
        ref = reference.result()
    single.kill(signal.SIGTERM)  # the reference is recorded: free the CPU for the mesh
    ids = {get_json(p.url + "/api/health")["peer"]: p.url for p in peers}
    v = run(peers[0], pipe)  # its wall time against a lone peer's: scripts/bench_mesh.py
    assert not any(t["cached"] for t in v["tasks"]), v["tasks"]  # computed, not looked up

    mfcc = next(t for t in v["tasks"] if t["name"] == "extract_mfcc")
    chunks = [(c["peer"], c["state"], c["items"]) for c in mfcc["chunks"]]
    ran = {peer for peer, _, _ in chunks}
    assert all(state == "done" for _, state, _ in chunks), chunks
    assert ran <= set(ids), (chunks, ids)  # every chunk ran on a mesh peer
    assert len(ran) > 1, (f"every EXTRACT_MFCC chunk ran on one peer: {chunks}; "
                          f"FILTER_LONGER's chunks: {timeline(v, 'filter_longer')}, "
                          f"EXTRACT_MFCC's: {timeline(v, 'extract_mfcc')}")

    # the mesh's CIDs are the lone peer's, task by task
    assert task_outputs(v) == task_outputs(ref)
    assert v["outputs"] == ref["outputs"]
    # any peer shows the same finished job
    for p in peers[1:]:
        other = get_json(f"{p.url}/api/jobs/{v['id']}")
        assert other["state"] == "done" and task_outputs(other) == task_outputs(ref), p.url
    print(f"EXTRACT_MFCC chunks {chunks} filter {timeline(v, 'filter_longer')} "
          f"mfcc {timeline(v, 'extract_mfcc')}")

"""FETCH_FESTVOX split by its URLs across two real peers: one chunk per URL, run on both
peers, and the task's output (the merge of the chunks' speaker folders) is the very directory
CID of the unsplit task (its function run on all the URLs in this process, its output added
to a store as a peer's runner adds it). Corpus: 4 espeak-ng speakers x 4 utterances, served
on 127.0.0.1, cached in .cache/fetch-split-corpus. The peers' server answers its first two
requests only once both have come (a barrier): the chunk of the peer that claims first cannot
end before the other peer runs one too, so both peers make part of the output (without it,
chunks this short all run on the first peer, one after the other)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from peer.ipfs.embedded import EmbeddedStore
from tasks.audio import fetch_festvox
from tests.conftest import ROOT
from tests.helpers import get_json, load_script, post_json, serve_corpus, wait_job, wait_mesh

pytestmark = pytest.mark.integration

CORPUS = ROOT / ".cache" / "fetch-split-corpus"
SPEAKERS = ["awb", "bdl", "clb", "jmk"]
FETCH_ALLOW = ("--fetch-allow", "127.0.0.1/32")
BARRIER_S = 30.0


@pytest.fixture(scope="module")
def urls() -> Iterator[list[str]]:
    with serve_corpus(CORPUS, SPEAKERS, 4) as base:
        yield [f"{base}cmu_us_{s}_arctic-0.90-release.zip" for s in SPEAKERS]


class _Together(http.server.SimpleHTTPRequestHandler):
    """Serves the corpus; its first two GETs wait for each other (BARRIER_S at most: then
    both are served, and the test fails on where the chunks ran)."""

    barrier = threading.Barrier(2)
    lock = threading.Lock()
    seen = 0

    def do_GET(self) -> None:
        with self.lock:
            type(self).seen += 1
            first_two = self.seen <= 2
        if first_two:
            with contextlib.suppress(threading.BrokenBarrierError):
                self.barrier.wait(BARRIER_S)
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Ctx:
    """What fetch_festvox reads of a worker's context."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.fetch_allow = ("127.0.0.1/32",)

    def progress(self, fraction: float) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def metric(self, name: str, step: int, value: float) -> None:
        pass


def unsplit_output(urls: list[str], tmp: Path) -> str:
    """The CID of FETCH_FESTVOX's output on all `urls` at once (one run, no split)."""
    out = tmp / "unsplit"
    out.mkdir()
    fetch_festvox(_Ctx(tmp), None, out, urls=urls)
    return EmbeddedStore(tmp / "store").add_path(out)


def test_a_fetch_split_by_url_over_two_peers_makes_the_unsplit_output(
        peer_factory: Any, urls: list[str], tmp_path: Path) -> None:
    with ThreadPoolExecutor(2) as pool:
        peers = list(pool.map(lambda n: peer_factory(n, "--slots", "1", *FETCH_ALLOW),
                              ["p0", "p1"]))
    wait_mesh(peers, 2)
    ids = {get_json(p.url + "/api/health")["peer"] for p in peers}
    handler = functools.partial(_Together, directory=str(CORPUS))
    with load_script("serve_dir").serve(CORPUS, handler=handler) as base:
        together = [base + u.rsplit("/", 1)[1] for u in urls]
        job = post_json(peers[0].url + "/api/jobs",
                        [{"call": "FETCH_FESTVOX", "args": together}])["job"]
        v = wait_job(peers[0], job, timeout_s=90)
    assert v["state"] == "done", v
    (task,) = v["tasks"]
    chunks = [(c["peer"], c["state"]) for c in task["chunks"]]
    assert len(chunks) == len(urls) and all(s == "done" for _, s in chunks), chunks
    assert {p for p, _ in chunks} == ids, chunks  # both peers ran some

    assert task["output"] == unsplit_output(urls, tmp_path)
    other = get_json(f"{peers[1].url}/api/jobs/{job}")
    assert other["state"] == "done" and other["tasks"][0]["output"] == task["output"]

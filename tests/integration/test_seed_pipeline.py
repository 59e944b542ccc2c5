"""The seed pipeline on a real banzai-peer process: FETCH_FESTVOX over HTTP (a serve_dir
server on 127.0.0.1) -> FILTER_LONGER -> EXTRACT_MFCC -> LEARN, its caching, the 4-speaker
DAG's accuracy and the errors a user gets for bad input.

The corpus (4 espeak-ng speakers x 20 utterances) is cached in .cache/test-corpus, so warm
runs skip the synthesis. One peer serves the whole module (its outputs are reused by
later tests only where a test says so).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pytest
import soundfile as sf

from peer.ipfs import EmbeddedStore
from tasks import audio
from tasks.audio_wav import wav_info
from tests.helpers import FakeCtx, lone_peer, serve_corpus

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / ".cache" / "test-corpus"
SPEAKERS = ["awb", "bdl", "clb", "jmk"]
UTTERANCES = 20
JOB_TIMEOUT_S = 90.0
SEED_MFCC = {"fft_size": 32, "n_mels": 24, "fmin": 1.0, "fmax": 8000.0, "sample_rate": 16000,
             "n_mfcc": 13}  # the seed's positional args plus the default n_mfcc


# -- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus_url() -> Iterator[str]:
    """Base URL (ends with /) of a 127.0.0.1 file server holding the 4 speaker zips."""
    with serve_corpus(CORPUS, SPEAKERS, UTTERANCES) as url:
        yield url


@dataclass
class Peer:
    """A banzai-peer process started by this module; its output goes to a file."""

    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log: Path


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    """One real peer, alone (no mDNS, own mesh name), output to a file (no pipe to drain).

    4 slots: as many as the DAG has root tasks. With fewer, the scheduler (at the time of
    writing) never starts the roots that found no free slot (reported to the lead).
    """
    d = tmp_path_factory.mktemp("seed")
    log = d / "peer.log"
    with lone_peer(d / "peer", log, 4, mesh_prefix="seed", log_level="INFO",
                   extra=["--fetch-allow", "127.0.0.1/32"], stop_timeout_s=15) as (proc, url):
        yield Peer(proc, url, d / "peer", log)


# -- helpers -----------------------------------------------------------------------------
def api(peer: Peer, path: str, body: Any = None) -> tuple[int, Any]:
    """(status, JSON body) of GET, or POST when `body` is given."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(peer.url + path, data=data,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read() or b"null")


def run(peer: Peer, pipeline: Any) -> dict[str, Any]:
    """Submit and wait (bounded) for the job's final view."""
    status, r = api(peer, "/api/jobs", pipeline)
    assert status == 201, r
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        _, v = api(peer, f"/api/jobs/{r['job']}")
        if v["state"] in ("done", "failed", "cancelled"):
            return dict(v)
        time.sleep(0.2)
    raise AssertionError(f"job {r['job']} did not finish in {JOB_TIMEOUT_S} s: {v}")


def task(view: dict[str, Any], name: str) -> dict[str, Any]:
    return next(t for t in view["tasks"] if t["name"] == name)


def store(peer: Peer) -> EmbeddedStore:
    """The peer's own store, read from this process (it is multi-process safe)."""
    return EmbeddedStore(peer.data_dir / "store")


def files(peer: Peer, cid: str) -> dict[str, str]:
    """{relative path: cid} of every file under a directory CID."""
    return {e.path: e.cid for e in store(peer).walk(cid)}


def seed(url: str, speaker: str = "awb") -> list[dict[str, Any]]:
    """examples/seed.json with the test server's URL."""
    text = (ROOT / "examples" / "seed.json").read_text()
    pipe: list[dict[str, Any]] = json.loads(text.replace("http://127.0.0.1:8765/", url))
    pipe[0]["args"] = [a.replace("_awb_", f"_{speaker}_") for a in pipe[0]["args"]]
    return pipe


def librosa_mfcc(path: Path, p: dict[str, Any]) -> np.ndarray:
    """The mapping documented in tasks/audio.py, spelled out with librosa directly."""
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    assert sr == p["sample_rate"]  # the corpus is 16 kHz: no resampling
    n = p["fft_size"]
    s = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=2 * n, hop_length=n, win_length=None, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=p["n_mels"], fmin=p["fmin"], fmax=p["fmax"],
        htk=True, norm=None)
    db = librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=80.0)
    return librosa.feature.mfcc(S=db, n_mfcc=p["n_mfcc"], dct_type=2, norm="ortho",
                                lifter=0).T


@pytest.fixture(scope="module")
def seed_job(peer: Peer, corpus_url: str) -> dict[str, Any]:
    """The seed pipeline (examples/seed.json) run once, cold, on the module's peer."""
    return run(peer, seed(corpus_url))


# -- the seed pipeline -------------------------------------------------------------------
def test_seed_pipeline_is_done(seed_job: dict[str, Any]) -> None:
    assert seed_job["state"] == "done", seed_job
    names = [t["name"] for t in seed_job["tasks"]]
    assert names == ["fetch_festvox", "filter_longer", "extract_mfcc", "learn"]
    assert not any(t["cached"] for t in seed_job["tasks"])


def test_filter_keeps_the_input_cids_of_long_files(peer: Peer, seed_job: dict[str, Any],
                                                   tmp_path: Path) -> None:
    fetched = files(peer, task(seed_job, "fetch_festvox")["output"])
    kept = files(peer, task(seed_job, "filter_longer")["output"])
    wavs_in = {p: c for p, c in fetched.items() if p.endswith(".wav")}
    wavs_kept = {p: c for p, c in kept.items() if p.endswith(".wav")}
    assert len(wavs_in) == UTTERANCES and 0 < len(wavs_kept) < len(wavs_in)
    assert kept["awb/prompts.json"] == fetched["awb/prompts.json"]  # passthrough
    for path, cid in wavs_kept.items():
        assert fetched[path] == cid, f"{path}: FILTER re-added the file instead of reusing it"
    st = store(peer)
    for path, cid in wavs_in.items():
        dest = tmp_path / path.replace("/", "_")
        st.materialize(cid, dest)
        seconds = wav_info(dest).duration_s
        assert (path in wavs_kept) == (seconds >= 5.0), f"{path}: {seconds:.2f} s"


def test_mfcc_equals_librosa(peer: Peer, seed_job: dict[str, Any], tmp_path: Path) -> None:
    kept = files(peer, task(seed_job, "filter_longer")["output"])
    feats = files(peer, task(seed_job, "extract_mfcc")["output"])
    assert sorted(feats) == sorted(p[:-4] + ".npy" for p in kept if p.endswith(".wav"))
    path = sorted(p for p in kept if p.endswith(".wav"))[0]
    wav, npy = tmp_path / "utt.wav", tmp_path / "utt.npy"
    store(peer).materialize(kept[path], wav)
    store(peer).materialize(feats[path[:-4] + ".npy"], npy)
    got = np.load(npy, allow_pickle=False)
    n_samples = sf.info(wav).frames
    assert got.dtype == np.float32
    assert got.shape == (1 + n_samples // SEED_MFCC["fft_size"], SEED_MFCC["n_mfcc"])
    with pytest.warns(UserWarning, match="Empty filters"):  # 33 FFT bins for 24 mel bands
        want = librosa_mfcc(wav, SEED_MFCC)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_learn_outputs(peer: Peer, seed_job: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "learn"
    store(peer).materialize(task(seed_job, "learn")["output"], out)
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.json", "model.json", "model.npz", "report.md"]
    with np.load(out / "model.npz", allow_pickle=False) as z:
        assert list(z["speakers"]) == ["awb"]
        assert z["means"].shape == (1, 8, SEED_MFCC["n_mfcc"])
    model = json.loads((out / "model.json").read_text())
    assert model["speakers"] == ["awb"] and model["feature_dim"] == SEED_MFCC["n_mfcc"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert np.isfinite(metrics["heldout_loglik"]) and metrics["test_utterances"] >= 1
    assert "# LEARN" in (out / "report.md").read_text()


def test_learn_metrics_were_exported(peer: Peer, seed_job: dict[str, Any]) -> None:
    status, r = api(peer, f"/api/jobs/{seed_job['id']}/tasks/learn/metrics")
    assert status == 200, r
    names = {m[0] for m in r["metrics"]}
    assert {"train_loglik", "heldout_loglik"} <= names
    steps = [m[1] for m in r["metrics"] if m[0] == "train_loglik"]
    assert steps == list(range(1, len(steps) + 1))


def test_identical_rerun_is_fully_cached(peer: Peer, corpus_url: str,
                                         seed_job: dict[str, Any]) -> None:
    again = run(peer, seed(corpus_url))
    assert again["state"] == "done", again
    assert [t["cached"] for t in again["tasks"]] == [True] * 4
    assert again["outputs"] == seed_job["outputs"]


# -- the 4-speaker DAG -------------------------------------------------------------------
def test_four_speaker_dag_accuracy(peer: Peer, corpus_url: str, tmp_path: Path) -> None:
    text = (ROOT / "examples" / "speakers-dag.json").read_text()
    dag = json.loads(text.replace("http://127.0.0.1:8765/", corpus_url))
    assert task(dag, "mfcc")["args"] == [512, 40, 20, 8000, 16000]
    v = run(peer, dag)
    assert v["state"] == "done", v
    out = tmp_path / "learn"
    store(peer).materialize(task(v, "learn")["output"], out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["speakers"] == SPEAKERS
    assert metrics["accuracy"] >= 0.9, metrics["confusion"]
    # LEARN ran as one chunk per speaker (in the peer's 4 workers) plus the assembling step,
    # and its output equals the serial LEARN's on the same input, byte for byte
    learn = task(v, "learn")
    assert [c["items"] for c in learn["chunks"]] == [1, 1, 1, 1, 0], learn["chunks"]
    feats, serial = tmp_path / "feats", tmp_path / "serial"
    store(peer).materialize(task(v, "mfcc")["output"], feats)
    serial.mkdir()
    audio.learn(FakeCtx(tmp_path), feats, serial, n_components=8, test_fraction=0.25, seed=0,
                max_iter=100, normalize=False)
    for name in ("model.npz", "model.json", "metrics.json", "report.md"):
        assert (serial / name).read_bytes() == (out / name).read_bytes(), name
    assert store(peer).add_path(serial) == learn["output"]


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(("step", "field", "words"), [
    ({"call": "FILTER_LONGER", "args": [-1]}, "seconds", ["seconds", "-1"]),
    ({"call": "EXTRACT_MFCC", "args": [32, 24, 1, 9000, 16000]}, "fmax", ["fmax", "8000"]),
    ({"call": "EXTRACT_MFCC", "params": {"fft_size": 32, "n_bands": 24}}, "n_bands",
     ["n_bands"]),
])
def test_bad_arguments_are_rejected_with_the_argument_named(
        peer: Peer, step: dict[str, Any], field: str, words: list[str]) -> None:
    pipe = [{"call": "FETCH_FESTVOX", "args": ["http://127.0.0.1:9/x.zip"]}, step]
    status, r = api(peer, "/api/jobs", pipe)
    assert status == 400, r
    text = f"{r['message']} {r.get('field', '')}"
    assert field in text and all(w in text for w in words), r


def test_filter_keeping_nothing_gives_an_empty_dir_and_learn_says_so(
        peer: Peer, corpus_url: str) -> None:
    pipe = seed(corpus_url)
    pipe[1]["args"] = [1000]
    v = run(peer, pipe)
    assert v["state"] == "failed", v
    filt = task(v, "filter_longer")
    assert filt["state"] == "done"
    assert [e.path for e in store(peer).walk(filt["output"]) if e.path.endswith(".wav")] == []
    mfcc = task(v, "extract_mfcc")
    assert mfcc["state"] == "done" and files(peer, mfcc["output"]) == {}
    learn = task(v, "learn")
    assert learn["state"] == "failed"
    assert "LEARN needs at least one .npy feature file" in learn["error"], learn
    assert "Traceback" not in learn["error"]
    assert api(peer, "/api/health")[1]["ok"]


def test_filter_keeping_nothing_warns_in_the_log(peer: Peer, corpus_url: str) -> None:
    pipe = seed(corpus_url)[:2]
    pipe[1]["args"] = [2000]
    v = run(peer, pipe)
    assert v["state"] == "done", v
    _, r = api(peer, f"/api/jobs/{v['id']}/tasks/filter_longer/log")
    text = "\n".join(r["lines"]) + peer.log.read_text()
    assert re.search(r"kept none|no item|empty (dir|directory|output)", text, re.I), text[-2000:]


def test_fetch_of_a_missing_url_fails_saying_404(peer: Peer, corpus_url: str) -> None:
    v = run(peer, [{"call": "FETCH_FESTVOX", "args": [corpus_url + "no-such-speaker.zip"]}])
    assert v["state"] == "failed", v
    err = task(v, "fetch_festvox")["error"]
    assert "404" in err and "no-such-speaker.zip" in err, err
    assert "Traceback" not in err

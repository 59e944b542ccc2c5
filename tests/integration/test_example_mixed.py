"""examples/mixed-kinds.yaml end to end on a real banzai-peer process (--allow-shell,
--allow-containers): FETCH_FESTVOX over HTTP, the shell resample with sox, EXTRACT_MFCC and
LEARN in Python, the summary in a podman container; the output of each kind is checked.

Cheap: 2 espeak-ng speakers x 8 utterances (cached in .cache/test-corpus-mixed), one peer.
Skips with the reason when podman cannot run here (scripts/setup.sh --test installs it).
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from peer.ipfs import EmbeddedStore
from tests.helpers import lone_peer, serve_corpus
from tests.integration.test_kinds import NO_PODMAN

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(NO_PODMAN is not None, reason=str(NO_PODMAN)),
              pytest.mark.skipif(shutil.which("sox") is None,
                                 reason="needs sox (scripts/setup.sh installs it)")]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "mixed-kinds.yaml"
CORPUS = ROOT / ".cache" / "test-corpus-mixed"
SPEAKERS = ["awb", "bdl"]  # the example's
UTTERANCES = 8
JOB_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(URL, data dir) of one real peer that runs shell and container tasks."""
    d = tmp_path_factory.mktemp("mixed")
    with lone_peer(d / "peer", d / "peer.log", 2, mesh_prefix="mixed", log_level="INFO",
                   extra=["--fetch-allow", "127.0.0.1/32", "--allow-shell",
                          "--allow-containers", "--no-warm-workers"],
                   stop_timeout_s=15) as (_, url):
        yield url, d / "peer"


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def job(peer: tuple[str, Path]) -> dict[str, Any]:
    """The example as a user submits it (the YAML file, only the corpus URL changed)."""
    url, _ = peer
    with serve_corpus(CORPUS, SPEAKERS, UTTERANCES) as corpus:
        body = EXAMPLE.read_text().replace("http://127.0.0.1:8765/", corpus).encode()
        req = urllib.request.Request(url + "/api/jobs", data=body,
                                     headers={"Content-Type": "application/yaml"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                job_id = json.load(r)["job"]
        except urllib.error.HTTPError as e:
            raise AssertionError(f"submit refused: {e.code} {e.read()!r}") from None
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while (v := get(f"{url}/api/jobs/{job_id}"))["state"] not in ("done", "failed",
                                                                     "cancelled"):
            assert time.monotonic() < deadline, f"the job did not end: {v}"
            time.sleep(0.2)
    assert v["state"] == "done", json.dumps(v["tasks"], indent=1)
    return dict(v)


def out(peer: tuple[str, Path], job: dict[str, Any], task: str, dest: Path) -> Path:
    """The task's output directory, materialised from the peer's store (once per test)."""
    if not (dest / task).exists():
        EmbeddedStore(peer[1] / "store").materialize(job["outputs"][task], dest / task)
    return dest / task


def test_the_python_fetch_and_the_shell_resample(peer: tuple[str, Path], job: dict[str, Any],
                                                 tmp_path: Path) -> None:
    fetched, resampled = out(peer, job, "fetch", tmp_path), out(peer, job, "resample", tmp_path)
    wavs = sorted(p.relative_to(fetched) for p in fetched.rglob("*.wav"))
    assert len(wavs) == len(SPEAKERS) * UTTERANCES
    assert sorted(p.relative_to(resampled) for p in resampled.rglob("*")
                  if p.is_file()) == wavs  # one WAV for each, the same layout, nothing else
    for rel in wavs:
        src, dst = sf.info(str(fetched / rel)), sf.info(str(resampled / rel))
        assert (src.samplerate, dst.samplerate, dst.channels) == (16000, 8000, 1), rel
        assert dst.subtype == "PCM_16"
        assert abs(dst.duration - src.duration) < 0.01, rel  # the same sound, resampled
    task = next(t for t in job["tasks"] if t["name"] == "resample")
    assert task["call"] == "shell" and not task["cached"]


def test_the_python_mfcc_and_learn_at_the_new_rate(peer: tuple[str, Path],
                                                   job: dict[str, Any], tmp_path: Path) -> None:
    resampled, mfcc = out(peer, job, "resample", tmp_path), out(peer, job, "mfcc", tmp_path)
    for wav in resampled.rglob("*.wav"):
        feats = np.load(mfcc / wav.relative_to(resampled).with_suffix(".npy"))
        # frames of fft_size=128 samples at 8000 Hz: the input was not resampled again
        assert feats.shape == (1 + sf.info(str(wav)).frames // 128, 13)
    metrics = json.loads((out(peer, job, "learn", tmp_path) / "metrics.json").read_text())
    assert metrics["speakers"] == SPEAKERS
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["test_utterances"] >= len(SPEAKERS)


def test_the_container_summary(peer: tuple[str, Path], job: dict[str, Any],
                               tmp_path: Path) -> None:
    summary = out(peer, job, "summary", tmp_path)
    metrics = json.loads((out(peer, job, "learn", tmp_path) / "metrics.json").read_text())
    assert (summary / "summary.txt").read_text().splitlines() == [
        *(f"{s}: {UTTERANCES} utterances at 8000 Hz" for s in SPEAKERS),
        f"accuracy: {json.dumps(metrics['accuracy'])}"]
    report = (out(peer, job, "learn", tmp_path) / "report.md").read_text()
    assert (summary / "report.md").read_text() == report
    task = next(t for t in job["tasks"] if t["name"] == "summary")
    assert task["call"] == "container"

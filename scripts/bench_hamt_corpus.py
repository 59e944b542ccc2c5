#!/usr/bin/env python3
"""A corpus of 10,000 WAVs in one speaker folder through the seed pipeline (issue 14 item 3).

    python scripts/bench_hamt_corpus.py                       # 10,000 WAVs, --slots nproc
    python scripts/bench_hamt_corpus.py --write docs/benchmarks.md

One synthetic festvox zip (`cmu_us_big_arctic-0.90-release.zip`: 16 kHz mono 16-bit tones of
0.2 to 1.2 s, seeded, so the zip is byte-identical on every run) is served over HTTP from
127.0.0.1 to a lone banzai-peer, which runs FETCH_FESTVOX -> FILTER_LONGER 0.5 ->
EXTRACT_MFCC [32, 24, 1, 8000, 16000]. Every folder of 10,000 entries is above Kubo's 256 KiB
threshold, so the fetched folder, the filtered one and the MFCC one are HAMT-sharded
directories. The script checks that each output folder is a HAMT listing the expected
entries and, with Kubo on PATH, that `ipfs add -r` of the materialised FETCH output gives the
same CID. Timings are wall times of the job view. Every WAV differs from every other: per-item
results are cached by content, and a per-item task's output names a cached result by the name
it was first computed under, so two identical WAVs under two names come out as one (a
scheduler bug found with this script, reported, not fixed here).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from scriptlib import load_script, machine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # peer.ipfs, for the checks
SECTION = "## 10,000 WAVs in one folder: HAMT directories through the seed pipeline (issue 14)"
SPEAKER = "big"
RATE = 16_000
ZIP_TIME = (2003, 1, 1, 0, 0, 0)
MFCC = [32, 24, 1, 8000, 16000]
MIN_S = 0.5


def durations(count: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(0.2, 1.2), 3) for _ in range(count)]


def _wav(seconds: float, freq: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    pcm = (0.3 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)
    return buf.getvalue()


def build_zip(directory: Path, count: int) -> Path:
    """The festvox-style zip of `count` WAVs (cached by name and count)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"cmu_us_{SPEAKER}_arctic-{count}-v2-0.90-release.zip"
    if path.exists():
        return path
    base = f"cmu_us_{SPEAKER}_arctic"
    prompts = []
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for i, seconds in enumerate(durations(count)):
            utt = f"arctic_a{i:05d}"
            info = zipfile.ZipInfo(f"{base}/wav/{utt}.wav", ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, _wav(seconds, 200 + i * 0.07))  # no two WAVs alike (see below)
            prompts.append(f'( {utt} "utterance number {i}" )')
        info = zipfile.ZipInfo(f"{base}/etc/txt.done.data", ZIP_TIME)
        zf.writestr(info, "\n".join(prompts) + "\n")
    tmp.replace(path)
    return path


def _listing(base: str, cid: str, path: str) -> tuple[str, int]:
    """(CID, entry count) of the folder `path` under `cid`, through the gateway."""
    req = urllib.request.Request(f"{base}/ipfs/{cid}/{path}/",
                                 headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as r:
        roots = r.headers.get("X-Ipfs-Roots", "")
        body = json.load(r)
    if os.environ.get("BENCH_HAMT_DUMP"):
        Path(os.environ["BENCH_HAMT_DUMP"], f"{cid}.json").write_text(json.dumps(body))
    return roots.split(",")[-1], len(body["Links"])


def _block_type(base: str, cid: str) -> int:
    """The UnixFS Type of `cid` (1 directory, 5 HAMT shard), from its raw block."""
    with urllib.request.urlopen(f"{base}/ipfs/{cid}?format=raw", timeout=60) as r:
        block = r.read()
    from peer.ipfs import dagpb

    return int(dagpb.decode_unixfs(dagpb.decode_node(block).data or b"").type)


def check_outputs(base: str, outputs: dict[str, str], kept: int, count: int) -> dict[str, Any]:
    """Each output's speaker folder: a HAMT with the expected number of entries."""
    out: dict[str, Any] = {}
    expected = {"FETCH_FESTVOX": count + 1, "FILTER_LONGER": kept, "EXTRACT_MFCC": kept}
    for call, cid in outputs.items():
        folder, entries = _listing(base, cid, SPEAKER)
        out[call] = {"cid": cid, "folder": folder, "entries": entries,
                     "type": _block_type(base, folder)}
        if abs(entries - expected[call]) > 1 or out[call]["type"] != 5:
            raise RuntimeError(f"{call}: expected a HAMT of {expected[call]} entries (±1: "
                               f"prompts.json), got {out[call]}")
    return out


def kubo_cid(base: str, cid: str, work: Path) -> str | None:
    """`ipfs add -r --only-hash` of the FETCH output fetched back as files (None: no Kubo)."""
    ipfs = shutil.which("ipfs")
    if ipfs is None:
        return None
    from peer.ipfs import EmbeddedStore

    store = EmbeddedStore(work / "store")
    with urllib.request.urlopen(f"{base}/ipfs/{cid}?format=car", timeout=600) as r:
        store.import_car(iter(lambda: r.read(1 << 20), b""))
    store.materialize(cid, work / "fetched")
    env = {**os.environ, "IPFS_PATH": str(work / "kubo")}
    subprocess.run([ipfs, "init", "--profile=test", "-e"], env=env, check=True,
                   capture_output=True)
    done = subprocess.run([ipfs, "--offline", "add", "-Q", "-r", "--only-hash", "--hidden",
                           "--cid-version=1", str(work / "fetched")], env=env, check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


def report(r: dict[str, Any]) -> str:
    s = r["stages"]
    lines = [
        SECTION, "",
        f"**Command**: `python scripts/bench_hamt_corpus.py --wavs {r['wavs']} --write "
        "docs/benchmarks.md`", "",
        f"**Machine**: {r['machine']}; load average {r['load']:.1f} at the start.", "",
        f"**Conditions**: one peer, `--slots {r['slots']}`, the zip ({r['zip_mb']:.0f} MB, "
        f"{r['wavs']} WAVs of 0.2-1.2 s) served from 127.0.0.1; FILTER_LONGER {MIN_S}, "
        f"EXTRACT_MFCC {MFCC}.", "",
        "| stage | wall s | output folder | entries | UnixFS type |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, info in r["outputs"].items():
        lines.append(f"| {name} | {s.get(name, 0):.1f} | `{info['folder']}` | "
                     f"{info['entries']} | {'HAMT shard' if info['type'] == 5 else info['type']} |")
    fetched = r["outputs"]["FETCH_FESTVOX"]["cid"]
    lines += ["", f"Job wall time {r['seconds']:.1f} s. FETCH_FESTVOX output `{fetched}`; Kubo "
              "0.39 `ipfs add -r --cid-version=1` of it, materialised: "
              f"{r['kubo'] or 'not run (no ipfs on PATH)'}"
              + (" (identical)" if r["kubo"] == fetched else " (DIFFERENT)"), ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wavs", type=int, default=10_000)
    ap.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--corpus", type=Path, default=ROOT / ".cache" / "hamt-corpus")
    ap.add_argument("--write", type=Path, help="update this markdown file's section")
    a = ap.parse_args()
    bp = load_script("bench_pipeline")
    z = build_zip(a.corpus, a.wavs)
    kept = sum(1 for d in durations(a.wavs) if d >= MIN_S)
    base = Path(tempfile.mkdtemp(prefix="bench-hamt-"))
    r: dict[str, Any] = {"wavs": a.wavs, "slots": a.slots, "load": os.getloadavg()[0],
                         "zip_mb": z.stat().st_size / 1e6, "machine": machine()}
    try:
        with load_script("serve_dir").serve(a.corpus) as url, \
                bp.peer(base / "peer", a.slots) as p:
            pipe = [{"call": "FETCH_FESTVOX", "args": [url + z.name]},
                    {"call": "FILTER_LONGER", "args": [MIN_S]},
                    {"call": "EXTRACT_MFCC", "args": MFCC}]
            t0 = time.perf_counter()
            job = bp.run_job(p, pipe)
            r["seconds"] = time.perf_counter() - t0
            r["stages"] = {t["call"]: t["duration_s"] or 0.0 for t in job["view"]["tasks"]}
            outputs = {t["call"]: t["output"] for t in job["view"]["tasks"] if t["output"]}
            r["outputs"] = check_outputs(p.url, outputs, kept, a.wavs)
            r["kubo"] = kubo_cid(p.url, outputs["FETCH_FESTVOX"], base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    text = report(r)
    print(text)
    if a.write:
        bp.write_section(a.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

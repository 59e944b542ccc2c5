#!/usr/bin/env python3
"""Build synthetic CMU ARCTIC-like speaker zips with espeak-ng (deterministic, cached).

Each speaker gets `cmu_us_<spk>_arctic-0.90-release.zip` holding
`cmu_us_<spk>_arctic/wav/arctic_a0001.wav ...` (16 kHz mono 16-bit PCM) and
`cmu_us_<spk>_arctic/etc/txt.done.data`. All speakers read the same prompts (as in
ARCTIC), generated from a word list with a seeded RNG. Same arguments and the same
espeak-ng give byte-identical zips; a sidecar `<zip>.json` manifest lets reruns skip.

    python scripts/make_corpus.py --speakers awb,bdl,clb,slt --utterances 40 --out corpus
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import subprocess
import sys
import tempfile
import wave
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

GENERATOR_VERSION = "1"  # bump when synthesis or zip layout changes (prompts are hashed)
SAMPLE_RATE = 16_000
ZIP_TIME = (2003, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Voice:
    """espeak-ng voice+variant, words per minute and pitch (0-99) of one speaker."""

    voice: str
    speed: int
    pitch: int


# Named after the real ARCTIC speakers; the voice loosely echoes each one's accent/gender.
VOICES: dict[str, Voice] = {
    "awb": Voice("en-gb-scotland+m1", 165, 45),
    "bdl": Voice("en-us+m3", 170, 35),
    "clb": Voice("en-us+f2", 160, 65),
    "jmk": Voice("en-029+m7", 155, 30),
    "ksp": Voice("en-gb-x-gbcwmd+m4", 175, 50),
    "rms": Voice("en-us+m1", 150, 25),
    "slt": Voice("en-us+f4", 165, 75),
    "aew": Voice("en-gb-x-rp+m2", 160, 40),
    "ahw": Voice("en-gb+m5", 170, 55),
    "aup": Voice("en-gb-x-gbclan+m6", 155, 45),
    "axb": Voice("en-us+f1", 150, 60),
    "eey": Voice("en-us+f5", 170, 70),
    "fem": Voice("en-gb+m2", 160, 35),
    "gka": Voice("en-us-nyc+m4", 165, 40),
    "ljm": Voice("en-gb+f3", 155, 80),
    "lnh": Voice("en-us+f3", 160, 55),
    "rxr": Voice("en-029+m2", 170, 30),
    "slp": Voice("en-gb-x-rp+f1", 165, 68),
}

_WORD_TEXT = """
author danger trail philip steels river morning winter garden silver window letter
captain forest mountain village kitchen station harbour market evening shadow thunder
lantern blanket journey message promise quarrel stranger whisper canyon prairie cabin
horse rifle wagon camp fire smoke water stone bridge island valley meadow orchard old
young quiet bright heavy narrow gentle sudden distant broken golden hollow strange
bitter careful eager faithful weary silent crooked patient famous humble lonely walked
carried watched followed answered whispered noticed turned gathered wondered dropped
lifted reached crossed pulled opened closed looked waited listened remembered slowly
quickly softly nearly almost never always often perhaps surely suddenly the a his her
their our every another that this of in on over under across beyond behind toward beside
through without against and but while because although until after before when men women
children friends soldiers hunters sailors farmers traders neighbours hours days weeks
years miles minutes seasons
"""
WORDS = _WORD_TEXT.split()
_STOP = {"the", "a", "his", "her", "their", "our", "every", "another", "that", "this",
         "of", "in", "on", "over", "under", "across", "beyond", "behind", "toward", "beside",
         "through", "without", "against", "and", "but", "while", "because", "although",
         "until", "after", "before", "when"}


def prompts(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` (utt_id, sentence) pairs; ids follow ARCTIC (a0001..a0593, then b0001...)."""
    rng = random.Random(f"banzai-corpus:{seed}")
    out = []
    for i in range(n):
        utt = f"arctic_a{i + 1:04d}" if i < 593 else f"arctic_b{i - 592:04d}"
        n_words = rng.choice([4, 5, 6, 6, 7, 8, 8, 9, 10, 11, 12, 13, 15, 17, 19])
        words = [rng.choice(WORDS) for _ in range(n_words)]
        while words[-1] in _STOP:
            words[-1] = rng.choice(WORDS)
        if n_words > 9:
            cut = rng.randrange(3, n_words - 3)
            words[cut] += ","
        text = " ".join(words)
        out.append((utt, text[0].upper() + text[1:] + rng.choice([".", ".", ".", "?", "!"])))
    return out


def synthesize(text: str, v: Voice) -> bytes:
    """16 kHz mono 16-bit PCM WAV bytes of `text` spoken by espeak-ng with voice `v`."""
    import soxr

    with tempfile.TemporaryDirectory() as td:
        raw = Path(td) / "x.wav"
        subprocess.run(["espeak-ng", "-v", v.voice, "-s", str(v.speed), "-p", str(v.pitch),
                        "-w", str(raw), text], check=True, capture_output=True)
        with wave.open(str(raw), "rb") as w:
            rate, width, ch = w.getframerate(), w.getsampwidth(), w.getnchannels()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if width != 2 or ch != 1:
        raise RuntimeError(f"espeak-ng produced {ch} channel(s) of {8 * width} bits")
    x = pcm.astype(np.float64) / 32768.0
    if rate != SAMPLE_RATE:
        x = soxr.resample(x, rate, SAMPLE_RATE, quality="HQ")
    out = np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(out.tobytes())
    return buf.getvalue()


def espeak_version() -> str:
    r = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True)
    return r.stdout.strip()


def zip_name(speaker: str) -> str:
    return f"cmu_us_{speaker}_arctic-0.90-release.zip"


def _entry(zf: zipfile.ZipFile, name: str, data: bytes | None) -> None:
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.create_system = 3  # unix, so the permission bits below are meaningful
    if data is None:
        info.external_attr = (0o40755 << 16) | 0x10
        zf.writestr(info, b"")
    else:
        info.external_attr = 0o100644 << 16
        zf.writestr(info, data, compress_type=zipfile.ZIP_STORED)


def build_zip(path: Path, speaker: str, utts: Sequence[tuple[str, str]], workers: int) -> None:
    """Write one speaker's zip: sorted entries, fixed timestamps and permissions, stored."""
    v = VOICES[speaker]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        wavs = list(pool.map(lambda u: synthesize(u[1], v), utts))
    root = f"cmu_us_{speaker}_arctic"
    txt = "".join(f'( {u} "{t}" )\n' for u, t in utts).encode()
    files: dict[str, bytes | None] = {f"{root}/": None, f"{root}/etc/": None,
                                      f"{root}/wav/": None, f"{root}/etc/txt.done.data": txt}
    files.update({f"{root}/wav/{u}.wav": w for (u, _), w in zip(utts, wavs, strict=True)})
    tmp = path.with_suffix(".zip.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(files):
            _entry(zf, name, files[name])
    tmp.replace(path)


def build_corpus(out_dir: Path, speakers: Sequence[str], utterances: int, seed: int = 0,
                 workers: int = 4) -> list[Path]:
    """Build (or reuse, when the manifest matches) one zip per speaker; return their paths."""
    unknown = [s for s in speakers if s not in VOICES]
    if unknown:
        raise ValueError(f"unknown speaker(s) {unknown}; known: {', '.join(VOICES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    utts = prompts(utterances, seed)
    version = espeak_version()
    paths = []
    for spk in speakers:
        path = out_dir / zip_name(spk)
        manifest = {"generator": GENERATOR_VERSION, "espeak": version, "speaker": spk,
                    "voice": asdict(VOICES[spk]), "utterances": utterances, "seed": seed,
                    "prompts_sha256": hashlib.sha256(repr(utts).encode()).hexdigest()}
        side = path.with_name(path.name + ".json")
        if path.exists() and side.exists():
            old = json.loads(side.read_text())
            if old.get("params") == manifest and old.get("sha256") == _sha256(path):
                paths.append(path)
                continue
        build_zip(path, spk, utts, workers)
        side.write_text(json.dumps({"params": manifest, "sha256": _sha256(path)},
                                   indent=1, sort_keys=True) + "\n")
        paths.append(path)
    return paths


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def durations(path: Path) -> list[float]:
    """Durations in seconds of the WAVs in a corpus zip."""
    out = []
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            if name.endswith(".wav"):
                with wave.open(io.BytesIO(zf.read(name))) as w:
                    out.append(w.getnframes() / w.getframerate())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--speakers", help=f"comma-separated, from: {','.join(VOICES)}")
    g.add_argument("--n-speakers", type=int, default=4, help="the first N speakers")
    ap.add_argument("--utterances", type=int, default=50, help="utterances per speaker")
    ap.add_argument("--out", type=Path, default=Path("corpus"), help="output directory")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompt generator")
    ap.add_argument("--workers", type=int, default=4, help="parallel espeak-ng processes")
    a = ap.parse_args(argv)
    speakers = a.speakers.split(",") if a.speakers else list(VOICES)[: a.n_speakers]
    paths = build_corpus(a.out, speakers, a.utterances, a.seed, a.workers)
    ds = [d for p in paths for d in durations(p)]
    long = sum(d >= 5.0 for d in ds)
    for p in paths:
        print(p)
    print(f"{len(ds)} utterances, {long} ({long / max(len(ds), 1):.0%}) last >= 5 s, "
          f"mean {np.mean(ds):.2f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

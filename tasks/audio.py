"""Audio tasks of the seed pipeline: FETCH_FESTVOX, FILTER_LONGER/SHORTER, EXTRACT_MFCC, LEARN.

Plain synchronous functions over local files, run inside worker processes.

MFCC parameters. The seed's `EXTRACT_MFCC [32, 24, 1, 8000, 16000]` are the defaults of
the npm `mfcc` library (vail-systems/node-mfcc) `construct(fftSize, bankCount,
lowFrequency, highFrequency, sampleRate)`. That library is handed `fftSize` FFT
*magnitude bins* (README: "N-sample frames give F = N/2 bins"), i.e. frames of
2*fftSize samples; it sums peak-1 triangular filters spaced on the HTK mel scale
(1127 ln(1 + f/700)) over the magnitudes, takes ln(1 + x), an unnormalised DCT-II, and
keeps coefficients 1..12. We map it onto librosa as follows (`mfcc_features`):

    S = librosa.feature.melspectrogram(y=y, sr=sample_rate,
        n_fft=2*fft_size       # frame = 2*fftSize samples, as the npm library assumes
        hop_length=fft_size    # 50% overlap (the framer used with that library)
        win_length=None, window="hann"   # npm applied no window; Hann limits leakage
        center=True, pad_mode="constant" # librosa defaults: frame t centred at t*hop
        power=2.0              # power spectrum (npm: magnitudes; both are then logged)
        n_mels=n_mels, fmin=fmin, fmax=fmax,
        htk=True, norm=None)   # HTK mel formula and peak-1 triangles, like the npm bank
    librosa.feature.mfcc(S=librosa.power_to_db(S, ref=1.0, amin=1e-10, top_db=80.0),
        n_mfcc=n_mfcc, dct_type=2, norm="ortho", lifter=0)  # c0 kept, no liftering

(two calls because `mfcc(y=...)` cannot pass the filter bank's `norm`: it takes that
name for the DCT). The log is 10 log10 floored at 1e-10 and at 80 dB below the peak
(npm: ln(1 + x)). The DCT-II is orthonormal (npm: unnormalised, x2: a constant scale
per coefficient). c0 is kept (npm dropped it). `y` is
read with soundfile as float32, averaged to mono, and resampled with soxr (librosa
"soxr_hq") only when the file's rate differs from `sample_rate`.

Measured (scripts/make_corpus.py seed 0; LEARN defaults; details in
tests/unit/test_audio_learn.py): on 4 speakers x 20 and x 40 utterances both
[512, 40, 20, 8000, 16000] and the seed's [32, 24, 1, 8000, 16000] (64-sample = 4 ms
frames, 33 FFT bins for 24 filters: some filters empty) reach 100% held-out accuracy;
on 7 speakers x 100 after FILTER_LONGER 5 they reach 98.3% and 100%. The espeak-ng
voices are too far apart to rank the two settings; the seed's gives 8x the frames and
makes LEARN about 10x slower.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peer.errors import ArgError, BanzaiError
from tasks.audio_fetch import FetchLimits, download, extract_festvox
from tasks.fetch_policy import AddressPolicy, PolicyError, Resolver, check_url, system_resolver
from tasks.registry import KEEP, Arg, Keep, TaskContext, task

# numpy, soundfile and the LEARN code are imported by the functions that use them: a peer
# imports this module for its task catalog (and its forkserver preloads it), ~0.2 s of CPU
# each that a peer's start need not pay (workers pay it once, or the warm-up does).
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from tasks.audio_learn import LearnParams

DAY_S = 86_400.0

# ---------------------------------------------------------------- FETCH_FESTVOX


MAX_URLS = 64  # zips of one FETCH_FESTVOX task (CMU ARCTIC has 18 speakers)


def _check_urls(params: Mapping[str, Any]) -> None:
    urls = params["urls"]
    if len(urls) > MAX_URLS:
        raise ArgError(f"urls: {len(urls)} URLs, over the limit of {MAX_URLS} per task "
                       "(split them over several tasks)", field="urls")
    for i, url in enumerate(urls):
        try:
            check_url(url)
        except PolicyError as e:
            raise ArgError(f"{url!r}: {e.message}", field=f"urls[{i}]") from None


@task("FETCH_FESTVOX", version="1", needs_input=False, check=_check_urls, split_arg="urls",
      args=[
    Arg("urls", "str", variadic=True,
        doc="festvox zip(s): http:// or https:// URLs, one speaker each (public addresses, "
            "or those the peer allows with --fetch-allow)"),
])
def fetch_festvox(ctx: TaskContext, inp: Path | None, out: Path, *, urls: list[str],
                  limits: FetchLimits | None = None,
                  resolver: Resolver = system_resolver) -> None:
    """Download CMU ARCTIC (festvox) speaker zips into one folder per speaker.

    Each archive `cmu_us_<spk>_arctic...zip` becomes `<spk>/arctic_*.wav` plus
    `<spk>/prompts.json` ({utterance id: text} from etc/txt.done.data). Only http(s) URLs
    of public addresses are fetched, or of those the peer allows (ctx.fetch_allow, from
    --fetch-allow), checked after DNS resolution and on every redirect. Transient errors
    are retried with exponential backoff; archives are checked before extraction
    (no absolute or `..` paths, no symlinks, bounded size, file count and ratio).
    """
    lim = limits or FetchLimits()
    policy = AddressPolicy.from_cidrs(ctx.fetch_allow)
    n = len(urls)
    for i, url in enumerate(urls):
        def part(f: float, base: float, span: float, i: int = i) -> None:
            ctx.progress((i + base + span * min(max(f, 0.0), 1.0)) / n)

        tmp = ctx.workdir / f"fetch-{i}.zip"
        try:
            local = download(url, tmp, lim, lambda f: part(f, 0.0, 0.7), policy, resolver)
            speakers = extract_festvox(local, out, lim, url, lambda f: part(f, 0.7, 0.3))
        finally:
            tmp.unlink(missing_ok=True)
        ctx.log(f"FETCH_FESTVOX: {url} -> {', '.join(speakers)}")
    ctx.progress(1.0)


# ---------------------------------------------------------------- FILTER_LONGER / SHORTER


def _check_seconds(params: Mapping[str, Any]) -> None:
    if not math.isfinite(params["seconds"]):
        raise ArgError(f"seconds must be a finite number, got {params['seconds']}",
                       field="seconds")


def _duration(ctx: TaskContext, src: Path) -> float | None:
    from tasks.audio_wav import WavError, wav_info

    try:
        return wav_info(src).duration_s
    except (WavError, OSError) as e:
        ctx.log(f"dropped {src.name}: {e}")
        return None


_SECONDS_DOC = "threshold in seconds (0 to 86400), read from the WAV header"


@task("FILTER_LONGER", version="1", per_item=True, items="*.wav", passthrough=True,
      check=_check_seconds,
      args=[Arg("seconds", "float", min=0.0, max=DAY_S, doc=_SECONDS_DOC)])
def filter_longer(ctx: TaskContext, src: Path, out_dir: Path, *, seconds: float) -> Keep | None:
    """Keep the WAVs lasting at least `seconds`; drop the shorter and unreadable ones.

    Durations come from the RIFF header (no decoding); other files pass through.
    """
    d = _duration(ctx, src)
    return KEEP if d is not None and d >= seconds else None


@task("FILTER_SHORTER", version="1", per_item=True, items="*.wav", passthrough=True,
      check=_check_seconds,
      args=[Arg("seconds", "float", min=0.0, max=DAY_S, doc=_SECONDS_DOC)])
def filter_shorter(ctx: TaskContext, src: Path, out_dir: Path, *, seconds: float) -> Keep | None:
    """Keep the WAVs lasting at most `seconds`; drop the longer and unreadable ones.

    Durations come from the RIFF header (no decoding); other files pass through.
    """
    d = _duration(ctx, src)
    return KEEP if d is not None and d <= seconds else None


# ---------------------------------------------------------------- EXTRACT_MFCC


def _check_mfcc(p: Mapping[str, Any]) -> None:
    fft, sr = p["fft_size"], p["sample_rate"]
    if fft & (fft - 1):
        raise ArgError(f"fft_size must be a power of two, got {fft}", field="fft_size")
    if p["fmax"] > sr / 2:
        raise ArgError(f"fmax must be <= sample_rate/2 = {sr / 2:g}, got {p['fmax']:g}",
                       field="fmax")
    if p["fmin"] >= p["fmax"]:
        raise ArgError(f"fmin must be < fmax, got fmin={p['fmin']:g} fmax={p['fmax']:g}",
                       field="fmin")
    if p["n_mfcc"] > p["n_mels"]:
        raise ArgError(f"n_mfcc must be <= n_mels={p['n_mels']}, got {p['n_mfcc']}",
                       field="n_mfcc")


def mfcc_features(y: npt.NDArray[np.float32], sr: int, *, fft_size: int, n_mels: int,
                  fmin: float, fmax: float, n_mfcc: int) -> npt.NDArray[np.float32]:
    """MFCC of mono `y` at rate `sr` with the documented librosa mapping: frames x n_mfcc."""
    import librosa  # heavy import (numba): only in workers that extract
    import numpy as np

    power = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=2 * fft_size, hop_length=fft_size, win_length=None, window="hann",
        center=True, pad_mode="constant", power=2.0,
        n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm=None)
    db = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=80.0)
    m = librosa.feature.mfcc(S=db, n_mfcc=n_mfcc, dct_type=2, norm="ortho", lifter=0)
    return np.ascontiguousarray(m.T, dtype=np.float32)


class ResampleError(BanzaiError):
    """A file's rate is too far below the asked sample_rate to resample it."""


MAX_UPSAMPLE = 16  # target rate / source rate: 8 kHz telephone audio to 128 kHz at most


def load_mono(src: Path, sample_rate: int) -> npt.NDArray[np.float32]:
    """Samples of `src` as float32 mono at `sample_rate` (soxr resampling only if needed).

    Upsampling by more than MAX_UPSAMPLE is refused (ResampleError): a 10 Hz file resampled to
    384 kHz holds 38,400 times its samples.
    """
    import numpy as np
    import soundfile as sf

    sr = sf.info(src).samplerate
    if sample_rate > sr * MAX_UPSAMPLE:
        raise ResampleError(f"{src.name}: its rate of {sr} Hz is too low to resample to "
                            f"sample_rate {sample_rate} Hz (at most {MAX_UPSAMPLE}x, "
                            f"{sr * MAX_UPSAMPLE} Hz)")
    import librosa

    y, sr = sf.read(src, dtype="float32", always_2d=True)
    mono = np.ascontiguousarray(y.mean(axis=1), dtype=np.float32)
    if sr != sample_rate:
        mono = librosa.resample(mono, orig_sr=sr, target_sr=sample_rate, res_type="soxr_hq")
    return mono


_warned_empty_filters = False


def warm_mfcc() -> None:
    """EXTRACT_MFCC's warm-up: import librosa (its lazy submodules, numba and the
    functions it compiles), soundfile and soxr, and run the seed's and the common MFCC
    settings once on 0.1 s of noise, so that no worker pays for it on its first file."""
    import librosa
    import numpy as np
    import soundfile  # noqa: F401  (load_mono's reader)

    y = np.random.default_rng(0).standard_normal(1600).astype(np.float32) * 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty mel filters at fft_size 32
        for fft_size, n_mels, fmin in ((32, 24, 1.0), (512, 40, 20.0)):
            mfcc_features(y, 16000, fft_size=fft_size, n_mels=n_mels, fmin=fmin, fmax=8000.0,
                          n_mfcc=13)
        librosa.resample(y, orig_sr=22050, target_sr=16000, res_type="soxr_hq")


@task("EXTRACT_MFCC", version="1", per_item=True, items="*.wav", check=_check_mfcc, warm=warm_mfcc,
      args=[
    Arg("fft_size", "int", 32, "FFT magnitude bins per frame (frame = 2*fft_size samples, "
        "hop = fft_size); a power of two", min=16, max=16384),
    Arg("n_mels", "int", 24, "number of mel filters (bankCount)", min=2, max=256),
    Arg("fmin", "float", 1.0, "lowest filter frequency in Hz", min=0.0),
    Arg("fmax", "float", 8000.0, "highest filter frequency in Hz (<= sample_rate/2)", min=1.0),
    Arg("sample_rate", "int", 16000, "analysis rate in Hz; other rates are resampled",
        min=1000, max=384000),
    Arg("n_mfcc", "int", 13, "coefficients kept per frame, c0 included (<= n_mels)",
        min=1, max=256),
])
def extract_mfcc(ctx: TaskContext, src: Path, out_dir: Path, *, fft_size: int, n_mels: int,
                 fmin: float, fmax: float, sample_rate: int, n_mfcc: int) -> Path | None:
    """MFCCs of each WAV as `<stem>.npy` (float32, frames x n_mfcc); other files dropped.

    Positional args follow the npm `mfcc` library of the original seed: fftSize,
    bankCount, lowFrequency, highFrequency, sampleRate. Computed with librosa
    (Hann window, HTK mel, power spectrum in dB, orthonormal DCT-II).
    """
    import numpy as np

    global _warned_empty_filters
    try:
        y = load_mono(src, sample_rate)
    except ResampleError:
        raise  # the task's parameters do not fit this file: fail, naming both rates
    except Exception as e:  # soundfile raises its own LibsndfileError/RuntimeError types
        ctx.log(f"dropped {src.name}: unreadable audio ({e})")
        return None
    with warnings.catch_warnings(record=True) as caught:
        # Small FFTs with many mel bands leave some filters empty; librosa warns about it.
        warnings.filterwarnings("always", message="Empty filters detected", category=UserWarning)
        feats = mfcc_features(y, sample_rate, fft_size=fft_size, n_mels=n_mels, fmin=fmin,
                              fmax=fmax, n_mfcc=n_mfcc)
    for w in caught:
        if "Empty filters detected" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif not _warned_empty_filters:
            _warned_empty_filters = True
            ctx.log(f"EXTRACT_MFCC: fft_size={fft_size} gives too few FFT bins for "
                    f"n_mels={n_mels}: some mel filters are empty (their bands are constant)")
    dest = out_dir / f"{src.stem}.npy"
    np.save(dest, feats, allow_pickle=False)
    return dest


# ---------------------------------------------------------------- LEARN


_LEARN_ARGS = [
    Arg("n_components", "int", 8, "Gaussians per speaker model", min=1, max=512),
    Arg("test_fraction", "float", 0.25, "share of each speaker's utterances held out",
        min=0.05, max=0.9),
    Arg("seed", "int", 0, "seed of the train/test split and of the GMM initialisation",
        min=0),
    Arg("max_iter", "int", 100, "maximum EM iterations", min=1, max=10_000),
    Arg("normalize", "bool", False, "per-utterance cepstral mean/variance normalisation"),
]


def _learn_params(n_components: int, test_fraction: float, seed: int, max_iter: int,
                  normalize: bool) -> LearnParams:
    from tasks.audio_learn import LearnParams

    return LearnParams(n_components=n_components, test_fraction=test_fraction, seed=seed,
                       max_iter=max_iter, normalize=normalize)


def learn_assemble(ctx: TaskContext, inp: Path | None, out: Path, **params: Any) -> None:
    """LEARN's assembling step: the per-speaker models (`<speaker>.npz`) -> model.npz,
    model.json, metrics.json (accuracy, confusion, curves) and report.md."""
    from tasks.audio_learn import LearnError, assemble

    if inp is None or not inp.exists():
        raise LearnError("LEARN needs at least one .npy feature file as input, got nothing")
    m = assemble(inp, out, _learn_params(**params), ctx.metric)
    ctx.log(f"LEARN: {len(m['speakers'])} speaker(s), {m['train_utterances']} training and "
            f"{m['test_utterances']} held-out utterances")
    if "accuracy" in m:
        ctx.log(f"LEARN: held-out accuracy {m['accuracy']:.1%} on {m['test_utterances']} "
                f"utterances")
    ctx.progress(1.0)


def warm_learn() -> None:
    """LEARN's warm-up: import scikit-learn's GaussianMixture (0.35 s of CPU after
    EXTRACT_MFCC's warm-up, 0.7 s alone, more on a cold disk), so that each peer pays it
    once in its forkserver, not in the first speaker of each of its workers."""
    from sklearn.exceptions import ConvergenceWarning  # noqa: F401
    from sklearn.mixture import GaussianMixture  # noqa: F401


@task("LEARN", version="2", per_item=True, items="*.npy", groups=True, reduce=learn_assemble,
      args=_LEARN_ARGS, warm=warm_learn)
def learn_speaker_task(ctx: TaskContext, src: Path, out_dir: Path, **params: Any) -> Path | None:
    """Train one GMM per speaker on MFCC frames; report held-out speaker-ID accuracy.

    Input: `<speaker>/<utterance>.npy` (frames x coefficients). Each speaker is trained on
    its own (in parallel across the mesh: one chunk per speaker directory, then an
    assembling step). Utterances are split per speaker into train/test by a seeded shuffle;
    an utterance is assigned to the model with the highest summed frame log-likelihood. One
    speaker: held-out log-likelihood. Writes model.npz, model.json, metrics.json (accuracy,
    confusion, curves) and report.md.
    """
    from tasks.audio_learn import learn_speaker

    made = learn_speaker(src, out_dir, _learn_params(**params), ctx.metric)
    ctx.log(f"LEARN: speaker {src.name}: " + ("trained" if made else "no frames, left out"))
    return made


def learn(ctx: TaskContext, inp: Path | None, out: Path, *, n_components: int,
          test_fraction: float, seed: int, max_iter: int, normalize: bool) -> None:
    """The serial LEARN (every speaker in this process, then the assembling step): the same
    output, byte for byte, as the mesh's per-speaker chunks and assembly."""
    from tasks.audio_learn import LearnError, learn_dir

    if inp is None or not inp.exists():
        raise LearnError("LEARN needs at least one .npy feature file as input, got nothing")
    p = _learn_params(n_components, test_fraction, seed, max_iter, normalize)
    m = learn_dir(inp, out, p, ctx.metric, ctx.log)
    if "accuracy" in m:
        ctx.log(f"LEARN: held-out accuracy {m['accuracy']:.1%} on {m['test_utterances']} "
                f"utterances")
    ctx.progress(1.0)

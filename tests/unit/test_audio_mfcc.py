"""EXTRACT_MFCC: equals the documented librosa calls; argument checks; empty-filter warning."""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from peer.errors import ArgError
from tasks import audio
from tasks.registry import catalog
from tests.helpers import FakeCtx


def chirp(path: Path, rate: int = 16000, seconds: float = 0.5, channels: int = 1) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    y = 0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.01 * np.cos(2 * np.pi * 3100 * t)
    sf.write(path, np.repeat(y[:, None], channels, axis=1), rate, subtype="PCM_16")
    return path


SEED = {"fft_size": 32, "n_mels": 24, "fmin": 1.0, "fmax": 8000.0, "sample_rate": 16000,
        "n_mfcc": 13}
GOOD = {"fft_size": 512, "n_mels": 40, "fmin": 20.0, "fmax": 8000.0, "sample_rate": 16000,
        "n_mfcc": 13}


def reference(path: Path, p: dict[str, float]) -> np.ndarray:
    """The mapping documented in tasks/audio.py, spelled out with librosa directly."""
    y, sr = sf.read(path, dtype="float32", always_2d=True)
    y = y.mean(axis=1)  # mono: the channel average
    if sr != p["sample_rate"]:
        y = librosa.resample(y, orig_sr=sr, target_sr=int(p["sample_rate"]), res_type="soxr_hq")
    n = int(p["fft_size"])
    s = librosa.feature.melspectrogram(
        y=y, sr=int(p["sample_rate"]), n_fft=2 * n, hop_length=n, window="hann", center=True,
        pad_mode="constant", power=2.0, n_mels=int(p["n_mels"]), fmin=p["fmin"],
        fmax=p["fmax"], htk=True, norm=None)
    return librosa.feature.mfcc(S=librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=80.0),
                                n_mfcc=int(p["n_mfcc"]), dct_type=2, norm="ortho").T


@pytest.mark.parametrize("rate", [16000, 22050])
def test_mfcc_equals_librosa(tmp_path: Path, rate: int) -> None:
    src = chirp(tmp_path / "utt.wav", rate=rate)
    out = tmp_path / "out"
    out.mkdir()
    ctx = FakeCtx(tmp_path)
    got_path = audio.extract_mfcc(ctx, src, out, **GOOD)  # type: ignore[arg-type]
    assert got_path == out / "utt.npy"
    got = np.load(got_path, allow_pickle=False)
    assert got.dtype == np.float32 and got.shape[1] == 13
    assert got.shape[0] == 1 + int(16000 * 0.5) // 512
    np.testing.assert_allclose(got, reference(src, GOOD), rtol=1e-5, atol=1e-4)


def test_seed_parameters_log_empty_filters_once(tmp_path: Path) -> None:
    audio._warned_empty_filters = False
    ctx = FakeCtx(tmp_path)
    for name in ("a", "b"):
        src = chirp(tmp_path / f"{name}.wav", channels=2)
        got = np.load(audio.extract_mfcc(ctx, src, tmp_path, **SEED))  # type: ignore[arg-type]
        assert got.shape == (1 + 8000 // 32, 13)
    assert len(ctx.logs) == 1 and "empty" in ctx.logs[0]
    with pytest.warns(UserWarning, match="Empty filters"):
        reference(src, SEED)


def test_unreadable_audio_dropped(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    ctx = FakeCtx(tmp_path)
    assert audio.extract_mfcc(ctx, bad, tmp_path, **GOOD) is None  # type: ignore[arg-type]
    assert "bad.wav" in ctx.logs[0]


def test_seed_args_bind_positionally() -> None:
    d = catalog()["EXTRACT_MFCC"]
    assert d.bind([32, 24, 1, 8000, 16000], None, "tasks[2]") == SEED
    assert d.bind([512, 40, 20, 8000, 16000], None, "tasks[2]") == GOOD
    assert d.items == "*.wav" and d.per_item and not d.passthrough


@pytest.mark.parametrize(("args", "field"), [
    ([48, 24, 1, 8000, 16000], "fft_size"),
    ([8, 24, 1, 8000, 16000], "fft_size"),
    ([32, 24, 1, 9000, 16000], "fmax"),
    ([32, 24, 8000, 8000, 16000], "fmin"),
    ([32, 12, 1, 8000, 16000, 13], "n_mfcc"),
    ([32, 24, -1, 8000, 16000], "fmin"),
    ([32, 24, 1, 8000, 16000, 0], "n_mfcc"),
])
def test_bad_mfcc_args(args: list[float], field: str) -> None:
    with pytest.raises(ArgError, match=field):
        catalog()["EXTRACT_MFCC"].bind(args, None, "tasks[2]")


def test_resample_target_bounded_by_the_source_rate(tmp_path: Path) -> None:
    """A 10 Hz file asked at 384 kHz would hold 38,400 times its samples: refused, naming both."""
    src = chirp(tmp_path / "low.wav", rate=1000, seconds=0.2)
    ctx = FakeCtx(tmp_path)
    ok = {**SEED, "sample_rate": 1000 * audio.MAX_UPSAMPLE}
    assert audio.extract_mfcc(ctx, src, tmp_path, **ok) is not None  # type: ignore[arg-type]
    bad = {**SEED, "sample_rate": 1000 * audio.MAX_UPSAMPLE + 1}
    with pytest.raises(audio.ResampleError) as e:
        audio.extract_mfcc(ctx, src, tmp_path, **bad)  # type: ignore[arg-type]
    assert e.value.message.startswith("low.wav: its rate of 1000 Hz is too low to resample to "
                                      f"sample_rate {1000 * audio.MAX_UPSAMPLE + 1} Hz")

"""WAV headers read with soundfile (tasks/audio_wav.py) and FILTER_LONGER / FILTER_SHORTER."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.errors import ArgError
from tasks import audio
from tasks.audio_wav import WavError, wav_info
from tasks.registry import KEEP, catalog
from tests.helpers import FakeCtx


def chunk(cid: bytes, body: bytes) -> bytes:
    return cid + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")


def fmt(tag: int, ch: int, rate: int, bits: int, ext_tag: int | None = None) -> bytes:
    ba = ch * bits // 8
    body = struct.pack("<HHIIHH", tag, ch, rate, rate * ba, ba, bits)
    if ext_tag is not None:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        body += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", ext_tag) + guid_tail
    return chunk(b"fmt ", body)


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


PCM16 = fmt(1, 1, 16000, 16)
CASES = [
    # name, bytes, (encoding, channels, rate, frames)
    ("pcm16", riff(PCM16, chunk(b"data", b"\0" * 32000)), ("pcm", 1, 16000, 16000)),
    ("float32 stereo", riff(fmt(3, 2, 8000, 32), chunk(b"data", b"\0" * 8 * 4000)),
     ("float", 2, 8000, 4000)),
    ("extensible pcm24", riff(fmt(0xFFFE, 2, 48000, 24, ext_tag=1),
                              chunk(b"data", b"\0" * 6 * 4800)), ("pcm", 2, 48000, 4800)),
    ("extensible float", riff(fmt(0xFFFE, 1, 22050, 32, ext_tag=3),
                              chunk(b"data", b"\0" * 4 * 2205)), ("float", 1, 22050, 2205)),
    ("LIST before data", riff(PCM16, chunk(b"LIST", b"INFOISFT\x05\0\0\0banz\0\0"),
                              chunk(b"data", b"\0" * 200)), ("pcm", 1, 16000, 100)),
    ("odd chunk padded", riff(PCM16, chunk(b"junk", b"abc"), chunk(b"fact", b"\0" * 4),
                              chunk(b"data", b"\0" * 64)), ("pcm", 1, 16000, 32)),
    ("8-bit odd data", riff(fmt(1, 1, 8000, 8), chunk(b"data", b"\x80" * 801)),
     ("pcm", 1, 8000, 801)),
    ("mulaw", riff(fmt(7, 1, 8000, 8), chunk(b"data", b"\xff" * 80)), ("mulaw", 1, 8000, 80)),
]


@pytest.mark.parametrize(("name", "data", "want"), CASES, ids=[c[0] for c in CASES])
def test_wav_info_table(tmp_path: Path, name: str, data: bytes,
                        want: tuple[str, int, int, int]) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(data)
    info = wav_info(p)
    assert (info.encoding, info.channels, info.sample_rate, info.frames) == want
    assert info.duration_s == want[3] / want[2]


BAD = [
    ("empty", b"", "not a RIFF/WAVE file$"),
    ("not riff", b"ID3\x03" + b"\0" * 100, "not a RIFF/WAVE file$"),
    ("riff not wave", b"RIFF\x04\0\0\0AVI ", "not a RIFF/WAVE file$"),
    ("truncated data", riff(PCM16, chunk(b"data", b"\0" * 100))[:-40],
     "truncated: data chunk declares 100 bytes, 60 present"),
    ("unknown length", riff(PCM16, b"data\xff\xff\xff\xff" + b"\0" * 64), "truncated"),
    ("no data", riff(PCM16), "unreadable WAV header"),
    ("no fmt", riff(chunk(b"data", b"\0" * 4)), "unreadable WAV header"),
    ("data before fmt", riff(chunk(b"data", b"\0" * 20), PCM16), "unreadable WAV header"),
    ("short fmt", riff(chunk(b"fmt ", b"\1\0\1\0"), chunk(b"data", b"")),
     "unreadable WAV header"),
    ("bad adpcm fmt", riff(fmt(2, 1, 8000, 4), chunk(b"data", b"\0" * 10)),
     "unreadable WAV header"),
    ("zero rate", riff(fmt(1, 1, 0, 16), chunk(b"data", b"\0" * 10)), "unreadable WAV header"),
    ("ext short", riff(fmt(0xFFFE, 1, 8000, 16), chunk(b"data", b"")), "unreadable WAV header"),
]


@pytest.mark.parametrize(("name", "data", "msg"), BAD, ids=[c[0] for c in BAD])
def test_wav_info_rejects(tmp_path: Path, name: str, data: bytes, msg: str) -> None:
    p = tmp_path / "x.wav"
    p.write_bytes(data)
    with pytest.raises(WavError, match=rf"^x\.wav: {msg}"):
        wav_info(p)


@pytest.mark.parametrize(("fmt_", "subtype", "msg"), [
    ("FLAC", "PCM_16", "not a RIFF/WAVE file [(]a FLAC file[)]"),
    ("AIFF", "PCM_16", "not a RIFF/WAVE file [(]a AIFF file[)]"),
    ("WAV", "IMA_ADPCM", "unsupported sample format IMA_ADPCM"),
    ("WAV", "GSM610", "unsupported sample format GSM610")])
def test_wav_info_rejects_other_audio(tmp_path: Path, fmt_: str, subtype: str, msg: str) -> None:
    p = tmp_path / "y.wav"  # named .wav, but another container or a compressed encoding
    sf.write(p, np.zeros(800, dtype=np.float32), 8000, format=fmt_, subtype=subtype)
    with pytest.raises(WavError, match=rf"^y\.wav: {msg}$"):
        wav_info(p)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WavError, match=r"^gone\.wav: unreadable WAV header"):
        wav_info(tmp_path / "gone.wav")


FIXTURE_OK = [HealthCheck.function_scoped_fixture]  # tmp_path is reused; each example rewrites


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURE_OK)
@given(rate=st.integers(1, 200_000), channels=st.integers(1, 8),
       width=st.sampled_from([1, 2, 3, 4]), frames=st.integers(0, 3000))
def test_duration_matches_wave_module(tmp_path: Path, rate: int, channels: int, width: int,
                                      frames: int) -> None:
    p = tmp_path / "h.wav"
    with wave.open(str(p), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(b"\x01" * frames * channels * width)
    assert wav_info(p).duration_s == frames / rate


WIDTHS = {"PCM_U8": ("pcm", 8), "PCM_16": ("pcm", 16), "PCM_24": ("pcm", 24),
          "PCM_32": ("pcm", 32), "FLOAT": ("float", 32), "DOUBLE": ("float", 64),
          "ALAW": ("alaw", 8), "ULAW": ("mulaw", 8)}


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(rate=st.sampled_from([8000, 11025, 16000, 44100, 48000, 96000]),
       channels=st.integers(1, 6), frames=st.integers(1, 2000),
       subtype=st.sampled_from(sorted(WIDTHS)))
def test_every_sample_format_written_is_measured(tmp_path: Path, rate: int, channels: int,
                                                 frames: int, subtype: str) -> None:
    p = tmp_path / "s.wav"  # soundfile writes EXTENSIBLE headers for > 2 channels
    sf.write(p, np.zeros((frames, channels), dtype=np.float32), rate, subtype=subtype)
    info = wav_info(p)
    assert (info.encoding, info.bits_per_sample) == WIDTHS[subtype]
    assert (info.channels, info.sample_rate, info.frames) == (channels, rate, frames)
    assert info.duration_s == frames / rate


def write_pcm(path: Path, seconds: float, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * round(seconds * rate))
    return path


@pytest.mark.parametrize(("seconds", "longer", "shorter"), [
    (4.0, None, KEEP), (5.0, KEEP, KEEP), (6.0, KEEP, None)])
def test_filters_keep_or_drop(tmp_path: Path, seconds: float, longer: object,
                              shorter: object) -> None:
    ctx = FakeCtx(tmp_path)
    src = write_pcm(tmp_path / "a.wav", seconds)
    assert audio.filter_longer(ctx, src, tmp_path, seconds=5.0) is longer
    assert audio.filter_shorter(ctx, src, tmp_path, seconds=5.0) is shorter


def test_filters_drop_corrupt_with_log(tmp_path: Path) -> None:
    ctx = FakeCtx(tmp_path)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert audio.filter_longer(ctx, bad, tmp_path, seconds=0.0) is None
    assert audio.filter_shorter(ctx, bad, tmp_path, seconds=10.0) is None
    assert len(ctx.logs) == 2 and "bad.wav" in ctx.logs[0] and "RIFF" in ctx.logs[0]


@pytest.mark.parametrize("name", ["FILTER_LONGER", "FILTER_SHORTER"])
@pytest.mark.parametrize("bad", [-1, 86_401, float("nan"), float("inf")])
def test_filter_rejects_absurd_thresholds(name: str, bad: float) -> None:
    with pytest.raises(ArgError, match="seconds"):
        catalog()[name].bind([bad], None, "tasks[1]")


def test_filter_registration() -> None:
    d = catalog()["FILTER_LONGER"]
    assert d.per_item and d.passthrough and d.items == "*.wav"
    assert d.bind([5], None, "tasks[1]") == {"seconds": 5.0}
    assert d.doc.startswith("Keep the WAVs lasting at least")

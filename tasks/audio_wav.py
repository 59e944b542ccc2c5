"""WAV headers read with soundfile (libsndfile): format and duration without decoding samples.

Pure and thread-safe; libsndfile reads only the header chunks. Errors name the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

WAV_FORMATS = ("WAV", "WAVEX")  # libsndfile's names for RIFF/WAVE and WAVE_FORMAT_EXTENSIBLE
# Subtypes whose duration is what the header says (one block per frame), as (encoding, bits).
SUBTYPES = {"PCM_U8": ("pcm", 8), "PCM_16": ("pcm", 16), "PCM_24": ("pcm", 24),
            "PCM_32": ("pcm", 32), "FLOAT": ("float", 32), "DOUBLE": ("float", 64),
            "ALAW": ("alaw", 8), "ULAW": ("mulaw", 8)}
SF_ERR_UNRECOGNISED_FORMAT = 1
# libsndfile measures a data chunk longer than the file by the bytes present and says so only in
# its log ("data : 100 (should be 60)"): a truncated file is refused, as a short read would be.
_SHORT_DATA = re.compile(r"^data : (\d+) \(should be (\d+)\)$", re.M)


class WavError(ValueError):
    """The file is not a RIFF/WAVE file we can measure (corrupt, truncated, unsupported)."""


@dataclass(frozen=True)
class WavInfo:
    """What the header says: sample format, layout, and the number of frames."""

    encoding: str  # pcm | float | alaw | mulaw
    channels: int
    sample_rate: int
    bits_per_sample: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def wav_info(path: Path) -> WavInfo:
    """The header of `path`; WavError (naming the file) if it is not a measurable WAV."""
    try:
        info = sf.info(str(path))
    except sf.LibsndfileError as e:
        if e.code == SF_ERR_UNRECOGNISED_FORMAT:
            raise WavError(f"{path.name}: not a RIFF/WAVE file") from e
        raise WavError(f"{path.name}: unreadable WAV header ({e.error_string})") from e
    if info.format not in WAV_FORMATS:
        raise WavError(f"{path.name}: not a RIFF/WAVE file (a {info.format} file)")
    if info.subtype not in SUBTYPES:
        raise WavError(f"{path.name}: unsupported sample format {info.subtype}")
    short = _SHORT_DATA.search(str(info.extra_info))
    if short is not None and int(short[1]) > int(short[2]):
        raise WavError(f"{path.name}: truncated: data chunk declares {short[1]} bytes, "
                       f"{short[2]} present")
    encoding, bits = SUBTYPES[info.subtype]
    return WavInfo(encoding, int(info.channels), int(info.samplerate), bits, int(info.frames))

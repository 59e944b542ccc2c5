"""RIFF/WAVE header parser: format and duration of a WAV file without reading its samples.

Pure and thread-safe; reads only chunk headers and the `fmt ` chunk (a few hundred bytes).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

WAVE_FORMAT_PCM = 0x0001
WAVE_FORMAT_IEEE_FLOAT = 0x0003
WAVE_FORMAT_ALAW = 0x0006
WAVE_FORMAT_MULAW = 0x0007
WAVE_FORMAT_EXTENSIBLE = 0xFFFE
# Formats whose duration is data bytes / (block_align * rate): one block is one frame.
FRAME_FORMATS = {WAVE_FORMAT_PCM: "pcm", WAVE_FORMAT_IEEE_FLOAT: "float",
                 WAVE_FORMAT_ALAW: "alaw", WAVE_FORMAT_MULAW: "mulaw"}
MAX_FMT_BYTES = 4096


class WavError(ValueError):
    """The file is not a RIFF/WAVE file we can measure (corrupt, truncated, unsupported)."""


@dataclass(frozen=True)
class WavInfo:
    """What the header says: sample format, layout, and the size of the sample data."""

    encoding: str  # pcm | float | alaw | mulaw
    channels: int
    sample_rate: int
    bits_per_sample: int
    block_align: int
    data_bytes: int

    @property
    def frames(self) -> int:
        return self.data_bytes // self.block_align

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def wav_info(path: Path) -> WavInfo:
    """Parse the RIFF chunks of `path`; raise WavError if it is not a measurable WAV."""
    with open(path, "rb") as f:
        return read_wav_info(f, os.fstat(f.fileno()).st_size)


def read_wav_info(f: BinaryIO, file_size: int) -> WavInfo:
    """Parse from an open binary file of `file_size` bytes (chunks in any order)."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    fmt: bytes | None = None
    data_bytes: int | None = None
    pos = 12
    while pos + 8 <= file_size and (fmt is None or data_bytes is None):
        f.seek(pos)
        cid, size = struct.unpack("<4sI", f.read(8))
        body = pos + 8
        if cid == b"fmt ":
            if size > MAX_FMT_BYTES or body + size > file_size:
                raise WavError(f"bad fmt chunk of {size} bytes")
            fmt = f.read(size)
        elif cid == b"data":
            if body + size > file_size:
                raise WavError(f"truncated: data chunk declares {size} bytes, "
                               f"{file_size - body} present")
            data_bytes = size
        pos = body + size + (size & 1)  # chunks are padded to an even size
    if fmt is None:
        raise WavError("no fmt chunk")
    if data_bytes is None:
        raise WavError("no data chunk")
    return _parse_fmt(fmt, data_bytes)


def _parse_fmt(fmt: bytes, data_bytes: int) -> WavInfo:
    if len(fmt) < 16:
        raise WavError(f"fmt chunk too short ({len(fmt)} bytes)")
    tag, channels, rate, _byte_rate, block_align, bits = struct.unpack("<HHIIHH", fmt[:16])
    if tag == WAVE_FORMAT_EXTENSIBLE:
        # cbSize(2) validBits(2) channelMask(4) SubFormat GUID(16): its first 2 bytes are the tag
        if len(fmt) < 40:
            raise WavError("WAVE_FORMAT_EXTENSIBLE fmt chunk too short")
        (tag,) = struct.unpack("<H", fmt[24:26])
    if tag not in FRAME_FORMATS:
        raise WavError(f"unsupported sample format 0x{tag:04x}")
    if channels == 0 or rate == 0 or block_align == 0:
        raise WavError(f"bad fmt: channels={channels} rate={rate} block_align={block_align}")
    return WavInfo(FRAME_FORMATS[tag], channels, rate, bits, block_align, data_bytes)

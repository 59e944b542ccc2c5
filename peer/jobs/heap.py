"""The C heap settings of a worker process (glibc's mallopt), applied once at its start.

Why: glibc's default thresholds start low (128 KiB) and adapt to the largest mapped block
freed so far (up to 32 MiB), giving the top of the heap back to the kernel above twice that.
A task that allocates and frees a few MiB of arrays per item (numpy, librosa: EXTRACT_MFCC)
then has those pages mapped afresh for every item: about 600 page faults per 7 s WAV, 0.5-0.6
ms of a 3.3 ms file on this machine; LEARN's per-speaker arrays (tens of MiB) 65k-125k faults
per speaker. The defaults here are the values glibc's adaptation reaches at most, fixed from
the start: blocks under 32 MiB come from the heap, 64 MiB of free top are kept. Applied as a
worker starts, before its runs allocate.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Protocol

from peer.errors import ConfigError

# mallopt's parameter numbers (glibc malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_MIB = 1 << 20
# glibc caps M_MMAP_THRESHOLD at HEAP_MAX_SIZE/2 (32 MiB on 64-bit): mallopt refuses more.
MAX_MMAP_THRESHOLD_BYTES = 32 * _MIB


@dataclass(frozen=True)
class HeapConfig:
    """A worker's heap thresholds; invalid values raise ConfigError at construction."""

    # Blocks from this size up are mapped on their own (and unmapped when freed).
    mmap_threshold_bytes: int = MAX_MMAP_THRESHOLD_BYTES
    # Free memory at the heap's top is given back to the kernel only above this.
    trim_threshold_bytes: int = 2 * MAX_MMAP_THRESHOLD_BYTES

    def __post_init__(self) -> None:
        if not 0 < self.mmap_threshold_bytes <= MAX_MMAP_THRESHOLD_BYTES:
            raise ConfigError(f"heap mmap_threshold_bytes must be in 1..{MAX_MMAP_THRESHOLD_BYTES}",
                              field="mmap_threshold_bytes")
        if self.trim_threshold_bytes < self.mmap_threshold_bytes:
            raise ConfigError("heap trim_threshold_bytes must be >= mmap_threshold_bytes",
                              field="trim_threshold_bytes")


class Mallopt(Protocol):
    """glibc's `int mallopt(int param, int value)`: 1 on success, 0 on error."""

    def __call__(self, param: int, value: int, /) -> int: ...


def libc_mallopt() -> Mallopt | None:
    """This process's mallopt, or None where the C library has none (not glibc)."""
    try:
        fn = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return fn


def tune(cfg: HeapConfig, mallopt: Mallopt | None) -> bool:
    """Set both thresholds (fixed: glibc stops adapting them); True if both were taken. The
    trim threshold is set only once the mmap threshold was: alone, it would fix the mmap
    threshold at its 128 KiB start."""
    if mallopt is None or mallopt(M_MMAP_THRESHOLD, cfg.mmap_threshold_bytes) != 1:
        return False
    return mallopt(M_TRIM_THRESHOLD, cfg.trim_threshold_bytes) == 1

"""Our SWIM incarnation's high-water mark (<data dir>/swim-incarnation): no incarnation at or
above the mark was ever announced, so a restart starts at it. Written ahead in steps (one
fsynced, atomic write per RESERVE_STEP incarnations), read at start as hostile input.
Synchronous: the start's fsync runs in a thread before the loop uses it (`Gossip.start`), then
owned by the event loop (an fsync once per step crossed)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from peer.mesh.swim import MAX_START_INC
from peer.privfile import replace_private

log = logging.getLogger("banzai.swim")

NAME = "swim-incarnation"
RESERVE_STEP = 1024  # incarnations reserved per write: one fsync per 1,024 refutations at most
MAX_BYTES = 64  # a mark is a decimal number of at most 20 digits: anything longer is not one


class IncarnationMark:
    """The mark file at `path` (implements swim.IncarnationStore). A missing file is a data dir
    of an earlier release (floor 0: the start counter alone, as before); a damaged one is
    ignored and a value above MAX_START_INC capped, each with a warning, so that neither stops
    the start nor leaves it no room to refute."""

    def __init__(self, path: Path, *, step: int = RESERVE_STEP) -> None:
        if step < 1:
            raise ValueError("step must be >= 1")
        self.path = path
        self.step = step
        self.write_failures = 0
        self._floor = self._read()
        self._reserved = self._floor  # no incarnation at or above it announced, on disk

    def floor(self) -> int:
        """The lowest incarnation this start may announce (0: no mark)."""
        return self._floor

    def reserve(self, inc: int) -> None:
        """`inc` is about to be announced: past the mark, write `inc` + step first. A failed
        write is logged and not retried before the next step (a restart may then start below
        what others hold of us: held dead until they forget us, as without a mark)."""
        if inc < self._reserved:
            return
        mark = inc + self.step
        try:
            self._write(mark)
        except OSError as e:
            self.write_failures += 1
            log.warning("swim: cannot write the incarnation mark %s (%s): after a restart, "
                        "other members may hold this peer dead until they forget it",
                        self.path, e.strerror or e)
        self._reserved = mark

    def _read(self) -> int:
        try:  # no symlink followed, no FIFO waited for: a regular file or nothing
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return 0
        except OSError as e:
            log.warning("swim: incarnation mark %s unreadable, ignored (%s)", self.path,
                        e.strerror or e)
            return 0
        try:
            with os.fdopen(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise ValueError("not a regular file")
                value = parse_mark(f.read(MAX_BYTES + 1))
        except (OSError, ValueError) as e:
            log.warning("swim: incarnation mark %s ignored (%.120s): this start's incarnation "
                        "comes from the start counter alone", self.path, e)
            return 0
        if value > MAX_START_INC:
            log.warning("swim: incarnation mark %s holds %.30s, above %d: capped to it",
                        self.path, value, MAX_START_INC)
            return MAX_START_INC
        return value

    def _write(self, mark: int) -> None:
        """`mark` in the file, durably and atomically (`peer.privfile.replace_private`)."""
        replace_private(self.path, f"{mark}\n".encode())


def parse_mark(raw: bytes) -> int:
    """The mark a file holds: ASCII decimal digits and one optional newline; ValueError
    naming what is wrong otherwise."""
    if len(raw) > MAX_BYTES:
        raise ValueError(f"longer than {MAX_BYTES} bytes")
    text = raw[:-1] if raw.endswith(b"\n") else raw
    if not text or not all(0x30 <= c <= 0x39 for c in text):
        raise ValueError(f"not a decimal number: {raw[:24]!r}")
    return int(text)


__all__ = ["MAX_BYTES", "NAME", "RESERVE_STEP", "IncarnationMark", "parse_mark"]

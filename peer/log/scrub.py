"""A periodic integrity check of the log's SQLite file (`PRAGMA quick_check`). Damage in the
middle of the file (a bad sector, a write the disk lost) is otherwise found only by the read
or write that meets it, maybe months later, when the peer holding it may be the last one that
held those events. The check walks every b-tree page over a connection of its own, in a
thread (SQLite releases the GIL; the peer's writes go on: WAL), and its outcome is shown in
/api/health (`log.check`) and logged once per change. It repairs nothing: the remedy is the
operator's (docs/architecture.md, "The log's integrity check").
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peer.memtrim import Offload

log = logging.getLogger("banzai.log")



@dataclass(frozen=True)
class ScrubConfig:
    first_s: float = 600.0  # the first check, this long after the start (not in its rush)
    interval_s: float = 6 * 3600.0  # then one every this long; 0: never check
    max_errors: int = 10  # problems listed (quick_check stops there)

    def __post_init__(self) -> None:
        if not (self.first_s >= 0 and self.interval_s >= 0 and self.max_errors >= 1):
            raise ValueError("first_s and interval_s must be >= 0, max_errors >= 1")


def quick_check(path: Path, max_errors: int) -> list[str]:
    """`PRAGMA quick_check` of the SQLite file at `path`: [] if sound, else the problems it
    lists (at most `max_errors`) or the error that stopped it. Reads only; its own
    connection, closed before it returns."""
    try:
        con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        try:
            rows = con.execute(f"PRAGMA quick_check({int(max_errors)})").fetchall()
        finally:
            con.close()
    except sqlite3.Error as e:  # DatabaseError ("malformed"), a lock held past the timeout
        return [f"{type(e).__name__}: {e}"]
    problems = [str(r[0]) for r in rows]
    return [] if problems == ["ok"] else problems


class Scrub:
    """Checks `path` every `cfg.interval_s` (`run`, a task of the loop); `health()` for
    /api/health. `wall` stamps the last check (seconds since the epoch)."""

    def __init__(self, cfg: ScrubConfig, path: Path,
                 offload: Offload[list[str]] = asyncio.to_thread,
                 wall: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.cfg = cfg
        self.path = path
        self._offload = offload
        self._wall = wall
        self._clock = clock
        self.checks = 0
        self.last: dict[str, Any] | None = None  # the last check's outcome

    async def run(self) -> None:
        if self.cfg.interval_s <= 0:
            return
        await asyncio.sleep(self.cfg.first_s)
        while True:
            await self.check()
            await asyncio.sleep(self.cfg.interval_s)

    async def check(self) -> list[str]:
        """One check now; its problems ([] if sound)."""
        t0 = self._clock()
        problems = await self._offload(lambda: quick_check(self.path, self.cfg.max_errors))
        was_ok = self.last is None or self.last["ok"]
        self.checks += 1
        self.last = {"ok": not problems, "problems": problems, "at": round(self._wall()),
                     "s": round(self._clock() - t0, 3)}
        if problems and was_ok:
            log.error("%s is damaged (%s); this peer serves what it can still read. To "
                      "repair it, see docs/architecture.md, \"The log's integrity check\"",
                      self.path, "; ".join(problems)[:500])
        elif not problems and not was_ok:
            log.warning("%s passes its integrity check again", self.path)
        return problems

    def health(self) -> dict[str, Any]:
        return {"checks": self.checks, **(self.last or {"ok": None})}


__all__ = ["Scrub", "ScrubConfig", "quick_check"]

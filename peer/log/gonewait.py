"""What changed in gone lanes jobs' waits (`fold.GoneWait`) since the compactor last wrote
them to the job index (`WaitJournal`), so that a restart whose log no longer holds a gone
job's rows reads back what waited (review r3 of session 48, F1). Pure; the fold's loop only."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from peer.log.events import Event

# What a held event of a gone job waits as (a column of the job index's `gone_wait_held`;
# the numbers are written to disk: append only)
HELD_LANE = 0  # a lane event of a peer that is no member (`_gone_task_fold`)
HELD_DONE = 1  # a TASK_DONE or CHUNK_DONE of a lane not vouched for (`GoneWait.done`)


def event_text(ev: Event) -> str:
    """The row text of a held event (its wire form, keys sorted: one text per event)."""
    return json.dumps(ev.to_json(), sort_keys=True, separators=(",", ":"))


@dataclass
class JobWaits:
    """One job's changes: `dropped` (every row of it goes first), then each (adder, peer)
    add and each (kind, text) held event as it is now (True / (peer, event): kept; False /
    None: gone)."""

    dropped: bool = False
    adds: dict[tuple[str, str], bool] = field(default_factory=dict)
    held: dict[tuple[int, str], tuple[str, Event] | None] = field(default_factory=dict)


class WaitJournal:
    """The changes of the gone jobs' waits not yet written (coalesced: a key's last change
    only). `take` hands them to the writer, which clears them once committed."""

    __slots__ = ("jobs",)

    def __init__(self) -> None:
        self.jobs: dict[str, JobWaits] = {}

    def __bool__(self) -> bool:
        return bool(self.jobs)

    def _of(self, job: str) -> JobWaits:
        got = self.jobs.get(job)
        if got is None:
            got = self.jobs[job] = JobWaits()
        return got

    def parked(self, job: str, by: str, peers: Any, kept: bool = True) -> None:
        """`by`'s adds of `peers` wait now (`kept`) or no longer (walked)."""
        adds = self._of(job).adds
        for p in peers:
            adds[(by, p)] = kept

    def held(self, job: str, kind: int, peer: str, ev: Event, kept: bool = True) -> None:
        """`ev` waits now under `peer` (`kept`) or no longer (folded)."""
        self._of(job).held[(kind, event_text(ev))] = (peer, ev) if kept else None

    def dropped(self, job: str) -> None:
        """Everything of `job` that waited goes (its tombstone went, or a bound let it go)."""
        self.jobs[job] = JobWaits(dropped=True)

    def clear(self, jobs: dict[str, JobWaits]) -> None:
        """`jobs` (a `jobs` dict as it was handed to the writer) are written: those not
        changed since are no longer pending."""
        for job, got in jobs.items():
            if self.jobs.get(job) is got:
                del self.jobs[job]

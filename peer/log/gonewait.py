"""What changed in gone lanes jobs' waits (`fold.GoneWait`) since the compactor last wrote
them to the job index (`WaitJournal`), so that a restart whose log no longer holds a gone
job's rows reads back what waited (review r3 of session 48, F1). Pure; the fold's loop only."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from peer.log.events import MAX_ID_CHARS, SET_HELD, Event, EventType
from peer.log.lanes import LANE_PARTS, lane_of

# What a held event of a gone job waits as (a column of the job index's `gone_wait_held`;
# the numbers are written to disk: append only)
HELD_LANE = 0  # a lane event of a peer that is no member (`_gone_task_fold`)
HELD_DONE = 1  # a TASK_DONE or CHUNK_DONE of a lane not vouched for (`GoneWait.done`)


# What a held event costs in its job's bounds (peer.log.fold `wait_room`, GONE_WAIT_MAX and
# GONE_WAIT_ALL): one, and one more for each HELD_UNIT characters of its text; one whose
# text is over HELD_TEXT_MAX is not held (HELD_REFUSED passes every bound), let go as before
# session 48: it is a lane event of a peer not vouched for, and if a vouched add comes
# later the job's re-run (vouched) makes and fetches its output again. Counted by count
# only, 65,536 held CHUNK_DONEs of ~457 KB were ~30 GB (review r1 of session 50, R1-1).
HELD_UNIT = 1024
HELD_TEXT_MAX = 65536
HELD_REFUSED = 1 << 40
HELD_BATCH = 256  # rows of the job index's held events read back at a time (`wait_rows`)
DONE_TYPES = frozenset({EventType.TASK_DONE, EventType.CHUNK_DONE})


def event_text(ev: Event) -> str:
    """The row text of a held event (its wire form, keys sorted: one text per event)."""
    return json.dumps(ev.to_json(), sort_keys=True, separators=(",", ":"))


def held_id(text: str) -> str:
    """What a held event's row is keyed by (its text's SHA-256, not the text: the index
    would be a second copy of it)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def held_key(ev: Event, text: str | None = None) -> tuple[str, int]:
    """(`held_id`, length) of held event `ev`'s row text (`text`, if made already): made
    once per event and kept on it (`Event.held`), so that its park, journal, frees and undos
    encode it no more (the row's write does, once: `WaitJournal.held`'s `text`)."""
    got = ev.held
    if got is None:
        if text is None:
            text = event_text(ev)
        got = (held_id(text), len(text))
        SET_HELD(ev, got)
    return got


def held_text(ev: Event, text: str | None = None) -> str | None:
    """Held event `ev`'s row text for its first steps: `text` if made already, else made now
    unless its key is kept on it (`held_key`: then None, and the row's write makes it)."""
    if text is None and ev.held is None:
        text = event_text(ev)
    return text


def held_cost(ev: Event, text: str | None = None) -> int:
    """What held event `ev` (of row text `text`, if made already) costs (HELD_UNIT;
    HELD_REFUSED over HELD_TEXT_MAX)."""
    n = held_key(ev, text)[1]
    return 1 + n // HELD_UNIT if n <= HELD_TEXT_MAX else HELD_REFUSED


def held_problem(job: str, kind: int, peer: str, ev: Event) -> str | None:
    """Why a held row read back (job, kind, peer, event) is not what this release writes,
    or None: a single task event of the lane of (`peer`, `job`), of `job` (the door's
    stored check of a lane event: lane_type, lane_job), a TASK_DONE or CHUNK_DONE if
    HELD_DONE (review r1 of session 50, R1-2)."""
    if kind not in (HELD_LANE, HELD_DONE):
        return f"kind {kind!r:.20} is none this release writes"
    if not (0 < len(job) <= MAX_ID_CHARS and 0 < len(peer) <= MAX_ID_CHARS):
        return "its job or peer is not an id"
    if lane_of(ev.origin) != (peer, job):
        return f"its event is not of the lane of {peer[:16]!r} of {job[:64]!r}"
    if ev.type not in (DONE_TYPES if kind == HELD_DONE else LANE_PARTS):
        return f"a {ev.type.name} is not held as kind {kind}"
    if getattr(ev.body, "job", None) != job:
        return "its event's body is of another job"
    return None


@dataclass
class JobWaits:
    """One job's changes: `dropped` (every row of it goes first), then each (adder, peer)
    add and each (kind, `held_id`) held event as it is now (True / (peer, event): kept;
    False / None: gone); `texts`: the row texts of those kept that their park made already
    (the write takes them; the others it encodes)."""

    dropped: bool = False
    adds: dict[tuple[str, str], bool] = field(default_factory=dict)
    held: dict[tuple[int, str], tuple[str, Event] | None] = field(default_factory=dict)
    texts: dict[tuple[int, str], str] = field(default_factory=dict)


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

    def held(self, job: str, kind: int, peer: str, ev: Event, kept: bool = True,
             text: str | None = None) -> None:
        """`ev` waits now under `peer` (`kept`) or no longer (folded); `text`: its row text,
        if its park made it (kept for the write)."""
        waits = self._of(job)
        k = (kind, held_key(ev, text)[0])
        waits.held[k] = (peer, ev) if kept else None
        if kept and text is not None:
            waits.texts[k] = text
        else:
            waits.texts.pop(k, None)

    def let_go(self, job: str, kind: int, key: str) -> None:
        """The held row of `job` keyed (`kind`, `key`) goes (let go as it was read back)."""
        waits = self._of(job)
        waits.held[(kind, key)] = None
        waits.texts.pop((kind, key), None)

    def dropped(self, job: str) -> None:
        """Everything of `job` that waited goes (its tombstone went, or a bound let it go)."""
        self.jobs[job] = JobWaits(dropped=True)

    def clear(self, jobs: dict[str, JobWaits]) -> None:
        """`jobs` (a `jobs` dict as it was handed to the writer) are written: those not
        changed since are no longer pending."""
        for job, got in jobs.items():
            if self.jobs.get(job) is got:
                del self.jobs[job]

"""The door of the log: every event from a peer or from disk is checked here before it is
stored or folded (its typed body was validated when it was built; here: the clock drift bound
and the checks the layers above add per type). Refused events are counted per origin (a
bounded table) and never stored; events of unknown types are held within a per-origin cap;
replay at start quarantines what fails. Loop-owned, like the state and the log it guards.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from peer.cids import reads_as_cid
from peer.errors import BanzaiError
from peer.log.clock import HLC, hlc_ms
from peer.log.events import (
    MAX_ID_CHARS,
    MAX_OWN_SEQ,
    Event,
    EventType,
    JobEnded,
    JobMembers,
    JobSubmitted,
)
from peer.log.fold import MeshState
from peer.log.ids import submitter_problem
from peer.log.lanes import LANE_PARTS, LANE_TYPES, lane_of, owned_by, shown_origin

log = logging.getLogger("banzai.log")
LANES_OFF = "lanes_off"  # the refusal of a lane event while lanes are off
ENDED_JOB = "ended_job"  # the refusal of a JOB_ENDED of no lanes job we hold

OTHER = "other"  # the counter of every origin beyond the tracked ones
Check = Callable[[Event], object]  # raises BanzaiError or ValueError to refuse an event
MemberOf = Callable[[str], bool]  # job -> are we a member of that lanes job (held lanes)?
# job -> are its lanes closed here (compacted, and its lanes dropped: MeshState.forget_lanes)?
Closed = Callable[[str], bool]
# job -> the peers that may add anyone to its members (its members, while we hold its
# JOB_SUBMITTED as a lanes job; anyone once it left memory); None: a job we know no such
# JOB_SUBMITTED of
Adders = Callable[[str], Container[str] | None]


@dataclass(frozen=True)
class DoorConfig:
    """Bounds of what the log takes in; invalid values raise ValueError at construction."""

    max_clock_drift_s: float = 300.0  # an hlc at most this far past the local wall clock
    max_origins_counted: int = 64  # origins with their own refusal counter; the rest: "other"
    max_unknown_events_per_origin: int = 10_000  # events of unknown types held per origin
    max_unknown_bytes_per_origin: int = 16 << 20  # and their payloads' bytes
    max_unknown_events: int = 100_000  # events of unknown types held, all origins together
    max_unknown_bytes: int = 256 << 20  # and their payloads' bytes
    log_every_s: float = 10.0  # at most one warning per reason per this

    def __post_init__(self) -> None:
        if not self.max_clock_drift_s >= 0:
            raise ValueError("max_clock_drift_s must be >= 0")
        if self.max_origins_counted < 1 or self.max_unknown_events_per_origin < 1:
            raise ValueError("max_origins_counted and max_unknown_events_per_origin must be >= 1")
        if self.max_unknown_bytes_per_origin < 1:
            raise ValueError("max_unknown_bytes_per_origin must be >= 1")
        if self.max_unknown_events < 1 or self.max_unknown_bytes < 1:
            raise ValueError("max_unknown_events and max_unknown_bytes must be >= 1")

    @property
    def max_clock_drift_ms(self) -> int:
        return int(self.max_clock_drift_s * 1000)


class LogStore(Protocol):
    """What the door needs of the SQLite log (peer.log.sqlite.EventLog)."""

    path: Path  # (named in what is logged of its rows)

    def load(self) -> Iterable[Event]: ...
    def quarantine(self, bad: Sequence[tuple[tuple[str, int], str]]) -> None: ...
    def quarantined(self) -> int: ...
    def quarantine_health(self) -> Mapping[str, int]: ...
    def quarantined_max_seqs(self, own: str, below: int) -> dict[str, int]: ...
    def quarantined_jobs(self, typ: int) -> set[str] | None: ...  # None: one unreadable
    def delete(self, ids: Iterable[tuple[str, int]]) -> object: ...  # (what left: unused)
    def delete_origins(self, origins: Iterable[str]) -> int: ...  # every row of each: how many
    def floors(self, own: str = "") -> dict[str, int]: ...
    def set_floor(self, origin: str, seq: int) -> None: ...


def _orphans(state: MeshState, lanes: Mapping[str, Mapping[str, int]],
             submitted: Collection[str], store: LogStore) -> dict[str, int]:
    """Of the lanes whose sound rows are on disk (`lanes`: job -> its lanes' origins -> how
    many; per lane, not per row: a start with lanes off holds no id of the rows it leaves
    unfolded, review r1 L3), those (origin -> rows) of jobs compacted or deleted here whose
    JOB_SUBMITTED is not on disk (not among `submitted`, the jobs of every JOB_SUBMITTED row
    the log yields, one the door refuses at this start included: it is kept, and may be
    restored, review r1 L2) nor in the quarantine (one the log's own load set aside as
    damaged, at this start or before; and none at all while a quarantined JOB_SUBMITTED
    names no job that reads: lanes are not deleted on the strength of a row that could not
    be read, review r3 N2). A lane row is stored only while
    its job's JOB_SUBMITTED is held, and with lanes on a job's lanes leave the log with its
    events (Compactor._drop); with lanes off they were never folded, so its events left
    without them (review r2 F2): nothing can use them (no job to fold into, no pair round
    over them), and folded they made an orphan lane held until the
    job's end + horizon."""
    gone = {job for job in lanes if (job in state.compacted or job in state.deleted)
            and job not in submitted}
    if gone:  # (one small query, only then)
        kept = store.quarantined_jobs(int(EventType.JOB_SUBMITTED))
        if kept is None:  # (said once a start, so the cost shows: review r2 L3)
            log.info("the lane rows of %d jobs compacted or deleted here are kept: a "
                     "quarantined JOB_SUBMITTED cannot be read (restore or drop it)", len(gone))
        gone = set() if kept is None else gone - kept
    return {origin: n for job in gone for origin, n in lanes[job].items()}


def _submission_of(ev: Event) -> tuple[Any, ...]:
    """The job of `ev` if it is a JOB_SUBMITTED row (sound or not), for `_orphans`."""
    return (ev.payload.get("job"),) if ev.type is EventType.JOB_SUBMITTED else ()


def origin_label(origin: Any) -> str:
    """An origin as a counter key (a malformed one is not worth keeping as is)."""
    if isinstance(origin, str) and 0 < len(origin) <= MAX_ID_CHARS:
        return origin
    return "(malformed)"


# The fields of outcome events that name a CID (TURN parts included): strings of at most
# MAX_CID_CHARS to the body's check, any text; a member's is served to people (a task's output
# and its gateway link, a chunk's log: review r1 of session 49, F7)
CID_FIELDS: Mapping[EventType, tuple[str, ...]] = {
    EventType.TASK_DONE: ("output",), EventType.CHUNK_DONE: ("output", "log"),
    EventType.CHUNK_FAILED: ("log",), EventType.PARTIAL: ("output",)}


def _incoming_problem(ev: Event) -> str | None:
    """What `Door.problem` asks of an event that comes in, not of one stored: a
    JOB_SUBMITTED's job id bound to another submitter (a stored one: the fold skips it),
    a part naming what is not a CID where a CID belongs."""
    if ev.type is EventType.JOB_SUBMITTED:
        why = submitter_problem(ev.origin, ev.body_as(JobSubmitted).job)
        if why is not None:
            return why
    return cid_problem(ev)


def cid_problem(ev: Event) -> str | None:
    """Why `ev` (or a part of it) names something that is not a CID where a CID belongs
    (CID_FIELDS), or None. Parsed as the store reads CIDs it was given (`lenient`: a digest
    an earlier release took is taken). Checked for events that come in, not for those
    stored: what an earlier release stored is kept, and left out when served."""
    for i, part in enumerate(ev.singles):
        for name in CID_FIELDS.get(part.type, ()):
            v = part.payload.get(name)
            if isinstance(v, str) and not reads_as_cid(v):
                at = f"part {i} ({part.type.name})" if ev.parts else part.type.name
                return f"body: {at}.{name} is not a CID: {v[:80]!r}"
    return None


@dataclass
class Refusals:
    """Refused events by origin (at most `max_origins` keys, then OTHER) and by reason."""

    max_origins: int = 64
    total: int = 0
    by_origin: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, origin: Any, reason: str) -> None:
        key = origin_label(origin)
        if key not in self.by_origin and len(self.by_origin) >= self.max_origins:
            key = OTHER  # an attacker chooses origins: the table stays bounded
        self.by_origin[key] = self.by_origin.get(key, 0) + 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self.total += 1

    def as_dict(self) -> dict[str, Any]:
        return {"total": self.total, "by_origin": dict(self.by_origin),
                "by_reason": dict(self.by_reason)}


@dataclass
class _Held:
    """The unknown-type events held of one origin: seq -> payload bytes, and a heap of their
    seqs (lazily pruned)."""

    seqs: dict[int, int] = field(default_factory=dict)
    bytes: int = 0
    heap: list[int] = field(default_factory=list)


class UnknownCap:
    """Bounds the events of unknown types held per origin (count and bytes); past the cap
    the one of lowest seq is let go (counted in `dropped`). By seq, not by arrival: peers
    that saw the same events then hold the same ones (their content digests agree).

    All origins together are bounded too (`max_total_events`, `max_total_bytes`: origins
    are not bounded, a member may mint identities): over either, the origins holding the
    most (events, or bytes if those are over; ties by origin) let go of their lowest seqs
    until a tenth of the bound is free. Which ones go depends on everything a peer holds, so
    two peers past this bound may hold different ones; below it, nothing changes."""

    def __init__(self, max_events: int, max_bytes: int, *, max_total_events: int = 100_000,
                 max_total_bytes: int = 256 << 20) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_total_events = max_total_events
        self.max_total_bytes = max_total_bytes
        self.dropped = 0
        self._held: dict[str, _Held] = {}
        self._events = 0  # held in all
        self._bytes = 0

    def add(self, ev: Event) -> list[tuple[str, int]]:
        """Hold `ev`; returns the ids let go to stay within the cap (possibly `ev`'s own)."""
        h = self._held.setdefault(ev.origin, _Held())
        size = len(repr(ev.payload))  # a cheap bound of its JSON size; only unknown types
        grew = size - h.seqs.get(ev.seq, 0)
        h.bytes += grew
        self._bytes += grew
        if ev.seq not in h.seqs:
            heapq.heappush(h.heap, ev.seq)
            self._events += 1
        h.seqs[ev.seq] = size
        out: list[tuple[str, int]] = []
        while h.seqs and (len(h.seqs) > self.max_events or h.bytes > self.max_bytes):
            out.append((ev.origin, self._let_go(ev.origin, h)))
        if not h.seqs:
            del self._held[ev.origin]
        if self._events > self.max_total_events or self._bytes > self.max_total_bytes:
            out += self._over_all()
        self.dropped += len(out)
        return out

    def _let_go(self, origin: str, h: _Held) -> int:
        """Let go of `origin`'s lowest seq held (`h.seqs` is not empty); returns it."""
        while (seq := heapq.heappop(h.heap)) not in h.seqs:  # else released already
            pass
        size = h.seqs.pop(seq)
        h.bytes -= size
        self._events -= 1
        self._bytes -= size
        return seq

    def _over_all(self) -> list[tuple[str, int]]:
        """Over the bound of all origins: the origins holding the most let go of their lowest
        seqs until a tenth of the bound is free (one pass over the origins per tenth)."""
        by_bytes = self._bytes > self.max_total_bytes
        low_events = self.max_total_events - self.max_total_events // 10
        low_bytes = self.max_total_bytes - self.max_total_bytes // 10
        most = [(-(h.bytes if by_bytes else len(h.seqs)), o) for o, h in self._held.items()]
        heapq.heapify(most)
        out: list[tuple[str, int]] = []
        while most and (self._events > low_events or self._bytes > low_bytes):
            _, origin = heapq.heappop(most)
            h = self._held[origin]
            out.append((origin, self._let_go(origin, h)))
            if h.seqs:
                heapq.heappush(most, (-(h.bytes if by_bytes else len(h.seqs)), origin))
            else:
                del self._held[origin]
        return out

    def release(self, ev: Event) -> None:
        """`ev` (of an unknown type) is no longer held (replaced by another content)."""
        h = self._held.get(ev.origin)
        if h is not None and ev.seq in h.seqs:
            size = h.seqs.pop(ev.seq)
            h.bytes -= size
            self._events -= 1
            self._bytes -= size
            if not h.seqs:
                del self._held[ev.origin]

    def held(self) -> tuple[int, int]:
        """(events, bytes) held in all."""
        return self._events, self._bytes


class _RateLimited:
    def __init__(self, every_s: float) -> None:
        self._every = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warn(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -self._every) < self._every:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        n = self._suppressed.pop(key, 0)
        self._last[key] = now
        log.warning(msg + (f" ({n} similar suppressed)" if n else ""), *args)


class Door:
    """Checks events before the log stores them and the state folds them.

    `admit` filters what came from peers; `fold` folds what was stored (quarantining an
    event whose fold raises); `replay` does both for the events on disk at start. `checks`
    are the upper layers' checks per type (e.g. a workflow's shape for JOB_SUBMITTED).
    `member_of` says which lanes jobs we hold the lanes of (peer.log.lanes); None: lanes
    are not enabled (LANES_FEATURE is not announced), every lane event is refused
    (`lanes_off`): from peers, never stored; from disk, left there unfolded (`replay`).
    `lane_closed` says which jobs' lanes were dropped here (a member's straggling outcome
    that comes after is refused: `lane_closed`).
    `adders` (with lanes) says who may add anyone to a job's members (`_members_problem`).
    A JOB_SUBMITTED of a bound job id from another origin than the peer the id names is
    refused (`job_submitter`, peer.log.ids: with or without lanes; session 46, helper f).
    A lanes job's task event from the lane of a peer that is no member (yet), or from a
    peer's own stream, is admitted: the fold holds it unfolded (peer.log.fold `_task_fold`),
    whatever order its JOB_MEMBERS comes in (a refusal here, session 45 helper f's
    `lane_peer` and `lane_stream`, hung on the order events came in: a taker's lane before
    its lazily pushed JOB_MEMBERS waited for anti-entropy, and peers that got a stray before
    and after its JOB_SUBMITTED held different events of that stream for good: review r3)."""

    def __init__(self, cfg: DoorConfig, hlc: HLC, store: LogStore,
                 checks: Mapping[EventType, Check] | None = None,
                 member_of: MemberOf | None = None,
                 lane_closed: Closed | None = None, adders: Adders | None = None) -> None:
        self.cfg = cfg
        self.hlc = hlc
        self.store = store
        self.checks = dict(checks or {})
        self.member_of = member_of
        self.lane_closed = lane_closed
        self.adders = adders
        self.refused = Refusals(cfg.max_origins_counted)
        self.unknown = UnknownCap(cfg.max_unknown_events_per_origin,
                                  cfg.max_unknown_bytes_per_origin,
                                  max_total_events=cfg.max_unknown_events,
                                  max_total_bytes=cfg.max_unknown_bytes)
        self.quarantined = 0  # by this run
        self._warn = _RateLimited(cfg.log_every_s)
        # The lanes jobs whose JOB_SUBMITTED (one with `members`) the door admitted in the
        # batch `admit` is checking (none folded yet): a JOB_ENDED of one is no `ended_job`.
        # Empty outside `admit` (session 46, helper g: it trusted a JOB_SUBMITTED merely in
        # the batch, one refused too, and outlived the batch: review r1 F7).
        self._batch_jobs: set[str] = set()

    def problem(self, ev: Event, *, stored: bool = False) -> str | None:
        """Why `ev` must not be stored or folded, or None. A stored event's clock is not
        checked: it passed when it came in (and the clock may have moved back since)."""
        if not stored and not self.hlc.accepts(ev.hlc):
            ahead_s = (hlc_ms(ev.hlc) - hlc_ms(self.hlc.ceiling())) / 1000
            return (f"clock: hlc {ev.hlc} is {ahead_s + self.cfg.max_clock_drift_s:.0f} s "
                    f"ahead (bound {self.cfg.max_clock_drift_s:g} s)")
        if "/" in ev.origin:  # (no peer's own stream has one: peer.log.ids)
            lane = lane_of(ev.origin)
            if lane is not None:
                why = self._lane_problem(ev, lane, stored)
                if why is not None:
                    return why
        if not stored and (why := _incoming_problem(ev)) is not None:
            return why
        if ev.type is EventType.JOB_MEMBERS and self.adders is not None and not stored:
            why = self._members_problem(ev)
            if why is not None:
                return why
        if (ev.type is EventType.JOB_ENDED and self.adders is not None and not stored
                and self.adders(ev.body_as(JobEnded).job) is None
                and ev.body_as(JobEnded).job not in self._batch_jobs):
            return (f"{ENDED_JOB}: a JOB_ENDED of job {ev.body_as(JobEnded).job}, no lanes job we "
                    "hold (as `members_job`: anti-entropy brings it again once we hold it)")
        check = self.checks.get(ev.type)
        if check is not None:
            try:
                check(ev)
            except (BanzaiError, ValueError, TypeError, KeyError) as e:
                return f"body: {e!s:.200}"
        return None

    def _lane_problem(self, ev: Event, lane: tuple[str, str], stored: bool) -> str | None:
        """Why an event of lane `lane` (peer, job) must not be stored or folded, or None: a
        lane holds its job's task events only (`lane_type`, `lane_job`: every part's, for a
        TURN), and only a member of the job holds them (`not_member`; a stored one is not
        asked: the job's membership is folded with it, later steps of LANES_FEATURE), only
        until the job's lanes were dropped here (`lane_closed`, likewise); with lanes off,
        none (`lanes_off`). One of the lane of a peer that is no member (yet) is admitted,
        and held by the fold until a JOB_MEMBERS adds it (peer.log.fold `_task_fold`)."""
        job = lane[1]
        if ev.type not in LANE_TYPES:
            return f"lane_type: a {ev.type.name} in a lane of job {job} (task events only)"
        for i, part in enumerate(ev.singles):
            if part.type not in LANE_PARTS:
                return (f"lane_type: part {i} of a TURN in a lane of job {job} is a "
                        f"{part.type.name} (task events only)")
            other = getattr(part.body, "job", None)  # (every lane part's body has a job)
            if other != job:
                return (f"lane_job: a {part.type.name} of job {other!r:.40} in the lane of "
                        f"job {job}")
        if self.member_of is None:
            return f"{LANES_OFF}: an event of the lane of job {job} (lanes are not enabled)"
        if not stored and self.lane_closed is not None and self.lane_closed(job):
            return (f"lane_closed: an event of the lane of job {job}, whose lanes were "
                    "dropped here (the job is compacted)")
        if not stored and not self.member_of(job):
            return f"not_member: an event of the lane of job {job}, which we are no member of"
        return None

    def _members_problem(self, ev: Event) -> str | None:
        """Why a JOB_MEMBERS must not be stored or folded, or None (design section 3): it is
        of a lanes job we hold the JOB_SUBMITTED of (`members_job`: else a JOB_MEMBERS would
        make a job of every peer's a lanes job of a few, or come before its job: anti-entropy
        brings it again once we hold it), and a member may add anyone, another peer only
        itself (`members_add`). That a peer adds itself only as an orphan takeover (no member
        live for a lease) is its own rule, not checked here: liveness is each peer's view,
        and a refusal on it would hold back the adder's stream where a member is seen live.
        A stored one is not asked (replay folds the JOB_SUBMITTED after it, maybe)."""
        b = ev.body_as(JobMembers)
        adders = self.adders(b.job) if self.adders is not None else None
        if adders is None:
            return f"members_job: a JOB_MEMBERS of job {b.job}, no lanes job we hold"
        if ev.origin in adders or b.add == (ev.origin,):
            return None
        return (f"members_add: a JOB_MEMBERS of job {b.job} from a peer that is no member "
                f"adds others ({len(b.add)} peer(s)); a non-member may add only itself")

    def refuse(self, origin: Any, reason: str) -> None:
        """Count (and log, rate-limited) an event refused at the door."""
        kind = reason.split(":", 1)[0]
        self.refused.add(self._counted_as(origin), kind)
        self._warn.warn(kind, "refused an event from %s: %s", shown_origin(origin_label(origin)),
                        reason)

    def _counted_as(self, origin: Any) -> Any:
        """The origin a refusal is counted under: with lanes on, a lane's peer (one job's
        lanes would fill the origins counted, `DoorConfig.max_origins_counted`)."""
        lane = lane_of(origin) if self.member_of is not None else None
        return origin if lane is None else lane[0]

    def admit(self, events: Iterable[Event]) -> list[Event]:
        """The events fit to store and fold; the others are refused (counted, logged)."""
        out: list[tuple[int, Event]] = []
        later: list[tuple[int, Event]] = []  # JOB_ENDEDs refused as `ended_job` at first
        self._batch_jobs = set()
        try:
            for i, ev in enumerate(events):
                reason = self.problem(ev)
                if reason is None:
                    out.append((i, ev))
                    self._batch_jobs.update(_lanes_job_of(ev))
                elif reason.startswith(ENDED_JOB + ":"):
                    later.append((i, ev))  # (its JOB_SUBMITTED may come after it)
                else:
                    self.refuse(ev.origin, reason)
            if later:  # once: every JOB_SUBMITTED admitted in the batch is known now
                for i, ev in later:
                    again = self.problem(ev)
                    if again is None:
                        out.append((i, ev))
                    else:
                        self.refuse(ev.origin, again)
                out.sort(key=lambda pair: pair[0])  # (in batch order, as before)
        finally:
            self._batch_jobs = set()
        return [ev for _, ev in out]

    def fold(self, state: MeshState, events: Sequence[Event]) -> list[Event]:
        """Fold stored events; returns those that were new (an unknown type's too: it is held
        and forwarded, see `Event.known`). An event whose fold raises is quarantined;
        unknown types are held within their cap."""
        out: list[Event] = []
        bad: list[tuple[tuple[str, int], str]] = []
        for ev in events:
            self.hlc.observe(ev.hlc)
            try:
                new = state.apply(ev)
            except Exception as e:  # a fold bug must not take the peer down: set it aside
                bad.append((ev.id, f"fold: {type(e).__name__}: {e!s:.200}"))
                continue
            if new:
                out.append(ev)
                if not ev.known:
                    self._hold(state, ev)
        if bad:
            self.quarantined += len(bad)
            for (origin, _), _reason in bad:
                self.refused.add(self._counted_as(origin), "fold")
            self.store.quarantine(bad)  # logs each with its origin, seq and reason
        return out

    def replaced(self, state: MeshState, loser: Event, winner: Event) -> None:
        """`winner` is held in place of `loser` (the conflict rule): the cap of unknown types
        follows."""
        if not loser.known:
            self.unknown.release(loser)
        if not winner.known:
            self._hold(state, winner)

    def _hold(self, state: MeshState, ev: Event) -> None:
        let_go = self.unknown.add(ev)
        if not let_go:
            return
        for origin, seq in let_go:
            state.forget((origin, seq))
            if seq <= state.heads.get(origin, 0):  # held up to there: count it held for good
                state.raise_floor(origin, seq)
                self.store.set_floor(origin, seq)
        self.store.delete(let_go)
        self._warn.warn("unknown_cap", "let go of %d events of unknown types from %s (cap)",
                        len(let_go), shown_origin(ev.origin))

    def replay(self, state: MeshState, own_origin: str) -> int:
        """Fold the events on disk into `state`; any that fails its checks or its fold is
        quarantined, never fatal. Returns the number folded. With lanes off, a sound lane
        row (a data dir run with lanes on, started with --no-lanes) is left on disk
        unfolded: it folds again once lanes are on (set aside, it would never come back, and
        a member would run its job's tasks again), unless its job left the log (`_orphans`:
        then its lane is deleted whole, lanes on or off, after the quarantine took its rows
        that fail their checks)."""
        ok: list[Event] = []
        bad: list[tuple[tuple[str, int], str]] = []
        unfolded = 0
        lanes: dict[str, dict[str, int]] = {}  # job -> its lanes -> their sound rows
        submitted: set[Any] = set()  # the jobs of the JOB_SUBMITTED rows, bad ones too
        for ev in self.store.load():
            submitted.update(_submission_of(ev))
            reason = self.problem(ev, stored=True)
            if reason is None and ev.seq > MAX_OWN_SEQ and owned_by(ev.origin, own_origin):
                reason = f"a seq of this peer past {MAX_OWN_SEQ}: no room to go on"
            if reason is None:
                ok.append(ev)
            elif reason.startswith(LANES_OFF + ":"):
                unfolded += 1
            else:
                bad.append((ev.id, reason))
                continue
            if "/" in ev.origin and (got := lane_of(ev.origin)) is not None:
                of = lanes.setdefault(got[1], {})
                of[ev.origin] = of.get(ev.origin, 0) + 1
        if bad:  # (first: a row of an orphan lane that fails its checks is kept, set aside)
            self.quarantined += len(bad)
            self.store.quarantine(bad)
        orphans = _orphans(state, lanes, submitted, self.store) if lanes else {}
        if orphans:
            gone = self.store.delete_origins(orphans)
            log.info("deleted %d lane rows of jobs compacted or deleted here while lanes were "
                     "off (their lanes were never folded, nothing can use them)", gone)
            if self.member_of is None:  # (lanes off: every sound lane row is kept unfolded)
                unfolded -= sum(orphans.values())
            else:
                ok = [ev for ev in ok if ev.origin not in orphans]
        if unfolded:
            log.warning("%d events of lanes jobs' lanes are kept on disk, not folded: lanes "
                        "are off; they fold again when the peer starts with lanes on (without "
                        "--no-lanes)", unfolded)
        n = len(self.fold(state, ok))
        for origin, seq in self.store.floors(own_origin).items():  # (ours within MAX_OWN_SEQ)
            state.raise_floor(origin, seq)
        # Never reuse a seq of our own (our stream's, a lane's of ours) that sits in the
        # quarantine (peers may hold it).
        for origin, seq in self.store.quarantined_max_seqs(own_origin, MAX_OWN_SEQ).items():
            state.raise_floor(origin, seq)
        return n

    def health(self) -> dict[str, Any]:
        """What /api/health shows of the door."""
        events, size = self.unknown.held()
        return {"refused": self.refused.as_dict(), "quarantined": self.store.quarantined(),
                "quarantine": dict(self.store.quarantine_health()),
                "unknown": {"events": events, "bytes": size, "dropped": self.unknown.dropped},
                "max_clock_drift_s": self.cfg.max_clock_drift_s}


def _lanes_job_of(ev: Event) -> tuple[str, ...]:
    """The lanes job `ev` submits, if it is a JOB_SUBMITTED with `members` (admitted in a
    batch, it waives `ended_job` for that batch's JOB_ENDEDs of it: a sync's answer may
    hold a job's JOB_SUBMITTED and its JOB_ENDED; session 45, helper h: refused, the end came
    back only through anti-entropy)."""
    if ev.type is EventType.JOB_SUBMITTED and (b := ev.body_as(JobSubmitted)).members is not None:
        return (b.job,)
    return ()

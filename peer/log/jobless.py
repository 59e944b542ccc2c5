"""Events of no job that only feed caches and provider sets (PROVIDE, UNPROVIDE, CACHE_PUT; a
TURN of CACHE_PUT parts): which may leave memory and which may leave the log. Pure: the
compactor (peer.log.compact) asks and acts.

Such an event leaves memory once its origin's head is `MeshState.jobless_window` seqs (a
content-digest block, 256) past it (`MeshState._let_go_jobless`, as events are recorded or a
floor rises): decided by the held events alone, so two peers that hold the same events hold
the same ones in memory and their content digests agree, and late enough that the conflict
rule still compares a rival content of a recent one. (Two first forms were measured against
the fuzzed mesh of tests/integration/test_log_door.py and failed it: at a compaction pass,
peers' digests differed between their passes; as soon as the head covered it, a rival
content that came later was never compared, and peers that met the two contents in
different orders kept different ones.) What it did is in the provider sets and cache tables,
which go to the job index at the next compaction pass (`Compactor.unindexed`). It leaves the
log once every live member holds it or past the horizon (its own hlc standing for a job's
end), with one more condition for an UNPROVIDE: no event of its origin that could provide a
CID and has a lower seq is left in the log, and no snapshot's rows are still being taken.
The fold remembers an UNPROVIDE (`MeshState._dropped`) so that such an earlier event, folded
again (a restart's replay, a refold) or arriving late, does not make its origin a provider
again; once the UNPROVIDE is dropped the fold forgets it (`MeshState.forget_drops`), so it
must outlive those events. Until this release these events stayed in memory and in the log
for good, and `_dropped` kept one entry per CID ever collected. Only a state with a log to
serve what leaves memory (`MeshState.archive`) lets them go (simulations keep them)."""

from __future__ import annotations

import bisect
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from peer.log.clock import hlc_ms
from peer.log.events import CachePut, Event, EventType, IpnsRecord, Provide, Unprovide

_JOBLESS = frozenset({Provide, Unprovide, CachePut})
# The types of event that may provide a CID (a TURN: any of its parts): an UNPROVIDE waits in
# the log while one of its origin with a lower seq is there.
PROVIDING = (EventType.TURN, EventType.TASK_DONE, EventType.CHUNK_DONE, EventType.CACHE_PUT,
             EventType.PROVIDE, EventType.PARTIAL)

Id = tuple[str, int]


def jobless(ev: Event) -> bool:
    """Is `ev` only PROVIDE, UNPROVIDE or CACHE_PUT (a TURN: every part)?"""
    return all(type(p.body) in _JOBLESS for p in ev.singles)


def ipns_only(ev: Event) -> bool:
    """Is `ev` one IPNS_RECORD (its fold is nothing: it leaves memory as a jobless one)?"""
    return type(ev.body) is IpnsRecord


def leaves_memory(ev: Event) -> bool:
    """Does `ev` leave memory a window behind its origin's head (`MeshState._age`)?"""
    return jobless(ev) or ipns_only(ev)


# (name, record) of an IPNS_RECORD -> (its name in one spelling, its rank among that name's
# records: peer.ipfs.ipns.event_rank, by the record's own signature and sequence), or None if
# the name is none or the record does not validate for it
Rank = Callable[[str, str], tuple[str, Any] | None]
# (a rank, the ms of the event's hlc, the ms now) -> has its record ended for the log:
# peer.ipfs.ipns.log_expired (its end of life, counted at most a year after the event, a
# week past)
Ended = Callable[[Any, int, int], bool]


class Records:
    """The IPNS_RECORD events out of memory and still in the log (rebuilt at start from what
    the replay lets go), and the rule by which one leaves the log: once it is held by every
    live member (and one at least) or past the horizon, an event leaves if a newer valid
    record of its name waits here too, settled alike (one copy of the name's newest), or if
    its record does not validate for its name (or the name is none: such a record is never
    kept nor served by a peer of this release; one a newer release finds valid stays in its
    own log). Names and ranks are the node's `rank` (peer.ipfs.ipns decides, this package
    may not import it): one key's spellings are one name. Decided by the records, never by
    the events' order, so a member without a name's key cannot retire its newest record
    (its record does not validate, so supersedes nothing); every copy of the newest is kept.
    Not a per-origin prefix as `Jobless`: no event depends on an IPNS_RECORD's order, and
    one name's current record must not hold back its origin's later events. A record that
    has ended for the log (`ended`: a week past its end of life, counted at most a year
    after its event; set by the node) leaves too, settled alike, the name's newest as well:
    it names nothing any peer resolves (session 52: before, each name's newest stayed in
    every log and in `waiting` for good, a name minted once cost every log for ever)."""

    def __init__(self) -> None:
        self.rank: Rank | None = None  # set by the node; nothing leaves until it is
        self.ended: Ended | None = None  # set by the node; None: the newest stays
        self.waiting: dict[Id, int] = {}  # (origin, seq) -> hlc, in the log, out of memory
        self._unranked: dict[Id, tuple[str, str]] = {}  # (name, record) until ranked
        # (name, rank) once ranked (a signature check each), None: invalid; the record's
        # bytes are not held (its rank holds their digest)
        self._ranks: dict[Id, tuple[str, Any] | None] = {}

    def left(self, ev: Event) -> None:
        """`ev` (an IPNS_RECORD) left memory: it waits to leave the log."""
        b = ev.body
        assert isinstance(b, IpnsRecord)
        self.waiting[ev.id] = ev.hlc
        self._unranked[ev.id] = (b.name, b.record)

    def _ranked(self, rank: Rank, i: Id) -> tuple[str, Any] | None:
        if i in self._unranked:
            got = rank(*self._unranked.pop(i))
            self._ranks[i] = None if got is None else (sys.intern(got[0]), got[1])
        return self._ranks[i]

    def droppable(self, vvs: Sequence[Mapping[str, int]], now_hlc: int, horizon_s: float,
                  room: int) -> list[Id]:
        """At most `room` waiting events, settled (held by every live member, and one at
        least, or past the horizon), whose record a newer one of its name supersedes (the
        event of the name's newest, one copy, settled too), does not validate, or has ended
        (`ended`)."""
        rank, ended = self.rank, self.ended
        if rank is None or room <= 0:
            return []
        now_ms = hlc_ms(now_hlc)
        best: dict[str, tuple[Any, Id]] = {}
        ranked: list[tuple[Id, tuple[str, Any] | None]] = []
        for i in list(self.waiting):
            got = self._ranked(rank, i)
            ranked.append((i, got))
            if got is None:
                continue
            name, r = got
            top = best.get(name)
            if top is None or top[0] < r or (top[0] == r and self._settled(
                    i, vvs, now_hlc, horizon_s) and not self._settled(
                    top[1], vvs, now_hlc, horizon_s)):
                best[name] = (r, i)
        out: list[Id] = []
        for i, got in ranked:
            if len(out) >= room:
                break
            if not self._settled(i, vvs, now_hlc, horizon_s):
                continue
            if got is None or (ended is not None and ended(  # (its record does not
                    got[1], hlc_ms(self.waiting[i]), now_ms)):  # validate, or has ended: it
                out.append(i)  # names nothing, here or on any peer of this release)
                continue
            r_best, carrier = best[got[0]]
            if got[1] < r_best and self._settled(carrier, vvs, now_hlc, horizon_s):
                out.append(i)
        return out

    def _settled(self, i: Id, vvs: Sequence[Mapping[str, int]], now_hlc: int,
                 horizon_s: float) -> bool:
        """Held by every live member (and one at least), or past the horizon."""
        if bool(vvs) and all(vv.get(i[0], 0) >= i[1] for vv in vvs):
            return True
        return hlc_ms(now_hlc) - hlc_ms(self.waiting[i]) >= horizon_s * 1000

    def dropped(self, ids: Iterable[Id]) -> None:
        """These (from `droppable`) left the log."""
        for i in ids:
            self.waiting.pop(i, None)
            self._unranked.pop(i, None)
            self._ranks.pop(i, None)

    def __len__(self) -> int:
        return len(self.waiting)


class Jobless:
    """The jobless events out of memory and still in the log, per origin in seq order
    (`waiting`: rebuilt at start from what the replay lets go)."""

    def __init__(self) -> None:
        self.waiting: dict[str, list[tuple[int, int, bool]]] = {}  # (seq, hlc, unprovide)

    def left(self, ev: Event) -> None:
        """`ev` (jobless) left memory: it waits to leave the log."""
        row = (ev.seq, ev.hlc, type(ev.body) is Unprovide)
        seqs = self.waiting.setdefault(ev.origin, [])
        if not seqs or seqs[-1] < row:
            seqs.append(row)
        else:
            bisect.insort(seqs, row)

    def droppable(self, vvs: Sequence[Mapping[str, int]], now_hlc: int, horizon_s: float,
                  room: int, lowest: Callable[[str], int | None], spooling: bool,
                  ) -> tuple[list[Id], dict[str, int]]:
        """At most `room` waiting events that may leave the log, per origin a prefix in seq
        order: held by every live member (and one at least) or past the horizon; an
        UNPROVIDE also needs no providing event of its origin below it in the log
        (`lowest(origin)`: the lowest seq of one, asked at most once per origin) and no
        snapshot rows being taken (`spooling`: a stale row of it may still come). Also
        returns, per origin, the highest seq of an UNPROVIDE among them."""
        out: list[Id] = []
        marks: dict[str, int] = {}
        now_ms, horizon_ms = hlc_ms(now_hlc), horizon_s * 1000
        for origin, rows in self.waiting.items():
            cover = min((vv.get(origin, 0) for vv in vvs), default=0)
            low: int | None = -1  # not asked yet
            for seq, hlc, unprovide in rows:
                if len(out) >= room:
                    return out, marks
                if seq > cover and now_ms - hlc_ms(hlc) < horizon_ms:
                    break
                if unprovide:
                    if spooling:
                        break
                    if low == -1:
                        low = lowest(origin)
                    if low is not None and low < seq:
                        break
                    marks[origin] = seq
                out.append((origin, seq))
        return out, marks

    def dropped(self, ids: Iterable[Id]) -> None:
        """These (a prefix of their origin's, from `droppable`) left the log."""
        counts: dict[str, int] = {}
        for origin, _ in ids:
            counts[origin] = counts.get(origin, 0) + 1
        for origin, n in counts.items():
            rows = self.waiting[origin]
            del rows[:n]
            if not rows:
                del self.waiting[origin]

    def __len__(self) -> int:
        """How many wait to leave the log (/api/health: `log.compaction.jobless_waiting`)."""
        return sum(len(r) for r in self.waiting.values())

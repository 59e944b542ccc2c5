"""Replicated mesh state: the event log folded into jobs, tasks, claims, results and cache.

Algorithm. Every change is an immutable Event(origin, seq, hlc, type, payload)
appended to its origin's log; (origin, seq) identifies it; the fold reads only its
typed, validated body (peer.log.events). MeshState.apply is a
fold that is commutative and idempotent: conflicting facts are settled by the
smallest (hlc, origin), monotone facts (progress) by max, sets by union. So any
two peers that hold the same set of events hold the same state whatever the
order of arrival or duplication (a state-based CRDT), which gossip relies on.
Local observations (liveness, lease renewals heard) are not events and live in
the scheduler. An event of a type this version does not know is recorded (held, counted in
the heads, served to others) but not folded. A TURN (one peer's events of one loop turn) is
folded as its parts: single events sharing its (origin, seq, hlc), in order. `apply` is
all-or-nothing: the appliers check before they change anything (a turn's parts are all
validated before the first is folded), and an event is recorded as known only after its
applier returned. Not thread-safe: owned by the event loop.
"""


from __future__ import annotations

import bisect
import heapq
import itertools
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, KeysView, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, cast

from peer.log.contents import BLOCK_SEQS, ContentSums, block_digest, block_seqs
from peer.log.endrules import least, merge_earliest, output_flaw, vouched_lane
from peer.log.events import (
    CachePut,
    ChunkDone,
    ChunkEvent,
    ChunkFailed,
    ChunkKey,
    Claim,
    Event,
    EventType,
    IpnsRecord,
    JobCancelled,
    JobDeleted,
    JobEnded,
    JobMembers,
    JobSubmitted,
    Member,
    Output,
    Partial,
    Progress,
    Provide,
    Renew,
    Revoke,
    TaskDone,
    TaskKey,
    TaskSplit,
    TaskSplitRef,
    Unknown,
    Unprovide,
    implicit_roots,
    implied_claims,
    implied_done,
    part_event,
)
from peer.log.gonewait import (
    HELD_DONE,
    HELD_LANE,
    WaitJournal,
    event_text,
    held_cost,
    held_key,
    held_problem,
    held_text,
)
from peer.log.ids import submitter_problem
from peer.log.jobless import leaves_memory
from peer.log.jobtable import JobTable
from peer.log.lanes import LANE_PARTS, SEPARATOR, in_scope, lane_of, peer_of

Order = tuple[int, str, int]  # (hlc, origin, seq): the order of every conflict rule
_MISSING = object()
_NO_PEERS: frozenset[str] = frozenset()


# Seqs behind its origin's head past which a jobless event leaves memory (`_let_go_jobless`):
# a content-digest block, so that a rival content of a recent one is still compared.
JOBLESS_WINDOW = BLOCK_SEQS

# Entries read back from the job index that a Tiered keeps (per table, by default: the
# peer setting is compact_read_back_entries): past this many, the first read goes first (read
# again from the index when asked again). One costs 0.3-0.6 KB of memory (2.2 KB for the five
# tables), a miss one SQLite lookup of about 12 us (docs/benchmarks.md, "Read-back cache"):
# about 9 MB for the five tables when full.
READ_MAX = 4096
# A JOB_ENDED's outputs whose keys (and CIDs) are looked up in the job index at once
# (`_end_outputs`: within its memo of keys it does not hold, jobindex.ABSENT_MAX)
AHEAD = 4096


class Tiered(dict[str, Any]):
    """A dict in front of the job index: a key missing here is looked up there (`lookup`,
    None if it has none) and kept here once found; with `default`, a key found nowhere is
    made (as a defaultdict). Iteration, len and values cover what is in memory only.

    What is kept of the index is bounded: at most `read_max` entries read back and unchanged
    since (`_read`), the first read going first (FIFO: a hit records nothing, it costs one
    dict lookup as before; an entry read often is read again once per `read_max` reads). An
    entry written here (`t[k] = v`, or made by `default`) or changed in place (`pin`: the
    fold adds to or takes from a provider set) is live: kept until compaction spills it (the
    provider sets that PROVIDE or UNPROVIDE events, which belong to no job, changed are
    spilled past a bound: peer.log.compact.CompactConfig.provider_sets_max)."""

    def __init__(self, default: Callable[[], Any] | None = None,
                 read_max: int | None = None) -> None:
        super().__init__()
        self.default = default
        self.lookup: Callable[[str], Any] | None = None
        # Told the keys about to be looked up one by one (`ahead`): the job index notes those
        # it does not hold in one batch, so that their look-ups cost no query each
        self.screen: Callable[[list[str]], None] | None = None
        self.read_max = READ_MAX if read_max is None else read_max
        if self.read_max < 1:
            raise ValueError(f"read_max: must be at least 1, got {self.read_max}")
        self._read: OrderedDict[str, None] = OrderedDict()  # in memory, as read back

    def _load(self, k: str) -> Any:
        if self.lookup is None:
            return _MISSING
        v = self.lookup(k)
        if v is None:
            return _MISSING
        dict.__setitem__(self, k, v)
        read = self._read
        read[k] = None
        self._trim()
        return v

    def _trim(self) -> None:
        read = self._read
        while len(read) > self.read_max:
            dict.__delitem__(self, read.popitem(last=False)[0])

    def ahead(self, keys: Iterable[str]) -> None:
        """`keys` are about to be looked up one by one: those missing from memory are told to
        `screen` at once."""
        if self.screen is not None:
            missing = [k for k in keys if not dict.__contains__(self, k)]
            if missing:
                self.screen(missing)

    def bound(self, read_max: int) -> None:
        """Keep at most `read_max` entries read back from now on (ValueError below 1)."""
        if read_max < 1:
            raise ValueError(f"read_max: must be at least 1, got {read_max}")
        self.read_max = read_max
        self._trim()

    def is_live(self, k: str) -> bool:
        """Is `k`'s entry in memory and written or changed here (not as read back)?"""
        return dict.__contains__(self, k) and k not in self._read

    def live_count(self) -> int:
        """How many entries in memory are live (not as read back)."""
        return dict.__len__(self) - len(self._read)

    def live(self) -> list[str]:
        """The keys of the live entries, in the order they entered memory."""
        read = self._read
        return [k for k in dict.keys(self) if k not in read]

    def pin(self, k: str) -> None:
        """`k`'s entry (in memory) was changed in place: it is live, no longer let go as read
        back (also what every write and removal does)."""
        if self._read:
            self._read.pop(k, None)

    def get(self, k: str, default: Any = None) -> Any:
        if dict.__contains__(self, k):
            return dict.__getitem__(self, k)
        v = self._load(k)
        return default if v is _MISSING else v

    def __contains__(self, k: object) -> bool:
        return dict.__contains__(self, k) or (isinstance(k, str) and self._load(k) is not _MISSING)

    def __missing__(self, k: str) -> Any:
        v = self._load(k)
        if v is not _MISSING:
            return v
        if self.default is None:
            raise KeyError(k)
        v = self.default()
        dict.__setitem__(self, k, v)
        return v

    # Writes and removals keep `_read` to the entries in memory as read back.
    def __setitem__(self, k: str, v: Any) -> None:
        self.pin(k)
        dict.__setitem__(self, k, v)

    def __delitem__(self, k: str) -> None:
        dict.__delitem__(self, k)
        self.pin(k)

    def pop(self, k: str, *default: Any) -> Any:
        self.pin(k)
        return dict.pop(self, k, *default)

    def popitem(self) -> tuple[str, Any]:
        k, v = dict.popitem(self)
        self.pin(k)
        return k, v

    def clear(self) -> None:
        dict.clear(self)
        self._read.clear()

    def setdefault(self, k: str, default: Any = None) -> Any:
        if k in self:  # in memory, or read back from the index
            return dict.__getitem__(self, k)
        self[k] = default
        return default

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def __ior__(self, other: Any) -> Tiered:  # type: ignore[override,misc]
        self.update(other)
        return self


class Tombstones(Tiered):
    """Deleted jobs' tombstones (job -> order of its first JOB_DELETED) in front of the job
    index: a Tiered that is true while the index holds one, even with none in memory (the
    fold's per-event test asks it only then), and keeps nothing it read back (who asks of a
    deleted job asks rarely: a late event of it, a replay, a sweep; the job index remembers
    the jobs it does not hold, which the first events of each job ask about: `fold_only`
    skips the test for a job in `jobs`)."""

    some = False

    def __bool__(self) -> bool:
        return self.some or dict.__len__(self) > 0

    def _load(self, k: str) -> Any:
        if self.lookup is None or not self.some:  # (a mesh that never deleted asks nothing)
            return _MISSING
        v = self.lookup(k)
        return _MISSING if v is None else v


# Jobs a TieredSet keeps in memory once it has a lookup (the rest: asked of the job index),
# and jobs the index did not hold that it remembers (live jobs, mostly: one query each).
MEMBERS_MAX = 4096
ABSENT_MAX = 4096


class TieredSet(set[str]):
    """A set of job ids in front of the job index (`tier(lookup)`: does the index hold this
    job?): `in` asks the index for a job missing here. Without a lookup, a plain set.
    Iteration, len and equality cover what is in memory only.

    Once it has a lookup, what is kept is bounded: at most `members_max` members (added or
    found in the index, the first in going first: the index answers for it after) and
    `absent_max` jobs the index did not hold (a live job's events ask once each; forgotten
    when the job is added). A member must be in the index before it is added (compaction
    writes its record first). `added` counts the members added, ever: a change counter (len
    stays level once full)."""

    def __init__(self, members_max: int = MEMBERS_MAX, absent_max: int = ABSENT_MAX) -> None:
        super().__init__()
        if members_max < 1 or absent_max < 1:
            raise ValueError("members_max and absent_max must be at least 1")
        self.members_max = members_max
        self.absent_max = absent_max
        self.lookup: Callable[[str], bool] | None = None
        self.added = 0
        self._some = False  # the index held a job when tiered
        self._in: OrderedDict[str, None] = OrderedDict()  # members in memory, first in first
        self._absent: OrderedDict[str, None] = OrderedDict()

    def tier(self, lookup: Callable[[str], bool], some: bool) -> None:
        """Ask `lookup` for a job missing from memory; `some`: the index holds a job."""
        self.lookup = lookup
        self._some = self._some or some
        for k in self:
            self._in[k] = None
        self._trim()

    def _keep(self, k: str) -> None:
        set.add(self, k)
        if self.lookup is not None:
            self._in[k] = None
            self._in.move_to_end(k)
            self._trim()

    def _trim(self) -> None:
        while len(self._in) > self.members_max:
            set.discard(self, self._in.popitem(last=False)[0])

    def __contains__(self, k: object) -> bool:
        if set.__contains__(self, k):
            return True
        if self.lookup is None or not isinstance(k, str) or k in self._absent:
            return False
        if self.lookup(k):
            self._keep(k)
            return True
        self._absent[k] = None
        if len(self._absent) > self.absent_max:
            self._absent.popitem(last=False)
        return False

    def __bool__(self) -> bool:
        return self._some or set.__len__(self) > 0

    def add(self, k: str) -> None:
        if not set.__contains__(self, k):
            self.added += 1
        self._absent.pop(k, None)
        self._some = True
        self._keep(k)

    def discard(self, k: object) -> None:
        """`k` is no longer a member (its index record was deleted)."""
        set.discard(self, k)
        if isinstance(k, str):
            self._in.pop(k, None)

    def update(self, *others: Iterable[str]) -> None:
        for other in others:
            for k in other:
                self.add(k)

    def __ior__(self, other: Any) -> TieredSet:  # type: ignore[override,misc]
        self.update(other)
        return self

    def _memory_only(self, other: Any) -> Any:
        raise TypeError("a TieredSet's set operations would see its members in memory only")

    __or__ = __and__ = __sub__ = __xor__ = __ror__ = __rand__ = __rsub__ = __rxor__ = _memory_only
    __le__ = __lt__ = __ge__ = __gt__ = __isub__ = __iand__ = __ixor__ = _memory_only
    union = intersection = difference = symmetric_difference = _memory_only  # type: ignore[assignment]
    issubset = issuperset = isdisjoint = _memory_only


@dataclass
class ChunkState:
    """`done`: the chunk's CHUNK_DONE by (not made in a vouched lane, latest attempt, order)
    (`_chunk_done`: a self-added member's backdated one wins no chunk a vouched member did,
    session 49); `latest`: by (latest attempt, order) alone, what `finished` falls back to
    when `done`'s attempt was reopened (a self-added taker redid a vouched member's lost
    chunk: the orphan takeover goes on)."""

    claims: dict[int, list[Event]] = field(default_factory=lambda: defaultdict(list))
    failures: dict[int, Event] = field(default_factory=dict)
    done: Event | None = None
    progress: dict[int, float] = field(default_factory=dict)
    latest: Event | None = None

    def winner(self, attempt: int, split: tuple[str, int] | None) -> Event | None:
        """The valid claim of `attempt` (on the winning split) with the smallest order."""
        cs = [c for c in self.claims.get(attempt, ()) if split is None
              or c.body_as(Claim).split == split]
        return min(cs, key=lambda e: e.order) if cs else None

    @property
    def attempt(self) -> int:
        """The current attempt: one past the last failed one."""
        return max(self.failures, default=-1) + 1

    def finished(self) -> Event | None:
        """The chunk's CHUNK_DONE (`done`) unless a later failure reopened it (its results
        were lost), then the latest attempt's (`latest`) unless one reopened that too:
        `claims.chunk_done`."""
        d = self.done
        if d is None or not self.failures:
            return d
        if not self._reopened(d):
            return d
        late = self.latest
        return late if late is not None and late is not d and not self._reopened(late) else None

    def logs(self) -> list[str]:
        """The CIDs of the chunk's run records: its failed attempts' (in attempt order: what a
        run printed before it failed, session 51), then its CHUNK_DONE's."""
        out = [b.log for _, f in sorted(self.failures.items())
               if (b := f.body_as(ChunkFailed)).log]
        done = self.done.body_as(ChunkDone).log if self.done is not None else None
        return [*out, done] if done else out

    def _reopened(self, d: Event) -> bool:
        a = d.payload["attempt"]
        return any(f.payload.get("reopen") is True for at, f in self.failures.items() if at >= a)


# A chunk no event is about, as every reader sees it (`MeshState.chunk`): one shared state
# whose tables refuse writes, so that reading a split's chunks makes nothing (a writer goes
# through `MeshState.chunks`, which makes the chunk's own).
NO_CHUNK = ChunkState(cast(Any, MappingProxyType({})), cast(Any, MappingProxyType({})), None,
                      cast(Any, MappingProxyType({})))

SplitKey = tuple[str, str, str, int]  # (job, task, split origin, split seq): one split's chunks
_NONE: Mapping[int, None] = MappingProxyType({})  # (an index's keys when it holds none)
# The changes of every chunk table's done index (`ChunkTable.done_epoch`): an epoch is never
# made twice, in any table (a refold makes a new one; a reader may hold an old one's)
_CHANGES = itertools.count(1)


class Untasked:
    """A live job's task events held, not folded (`_task_fold`): those of mesh streams (held
    until a JOB_SUBMITTED of the job is here, then folded or let go for good) and those of
    each lane's peer, ordered by their order (`_order`). A lane event is admitted once its
    peer is a member and the winning JOB_SUBMITTED is ordered before it: as the winner only
    gets earlier, those a change admits are the latest of their peer's, a suffix taken at
    one bisection (`take_after`), so that a JOB_MEMBERS re-checks only the peers it adds and
    each held event is folded once (session 46, helper g: review r1 F5, every held event was
    re-folded at each JOB_SUBMITTED and JOB_MEMBERS, N x M folds on the loop). One ordered
    before the winner is kept, not let go: a rival JOB_SUBMITTED ordered earlier still may
    come and admit it."""

    __slots__ = ("lanes", "mesh")

    def __init__(self) -> None:
        self.mesh: list[Event] = []
        self.lanes: dict[str, list[Event]] = {}  # lane's peer -> its events, by order

    def hold(self, ev: Event, peer: str | None) -> None:
        """Hold `ev`, of a mesh stream (`peer` None) or of `peer`'s lane."""
        if peer is None:
            self.mesh.append(ev)
        else:
            bisect.insort_right(self.lanes.setdefault(peer, []), ev, key=_order)

    def holds(self, ev: Event, peer: str) -> bool:
        """Is `ev` held already in `peer`'s lane (a refold folds it again)?"""
        held = self.lanes.get(peer, ())
        i = bisect.bisect_left(held, _order(ev), key=_order)
        return i < len(held) and held[i].id == ev.id

    def drop(self, ev: Event, peer: str) -> bool:
        """`ev` is no longer held in `peer`'s lane (False: it was not)."""
        held = self.lanes.get(peer, ())
        i = bisect.bisect_left(held, _order(ev), key=_order)
        if not (i < len(held) and held[i].id == ev.id):
            return False
        del self.lanes[peer][i]
        if not self.lanes[peer]:
            del self.lanes[peer]
        return True

    def take_mesh(self) -> list[Event]:
        """The mesh streams' events held; they are no longer."""
        out, self.mesh = self.mesh, []
        return out

    def take_after(self, peer: str, after: Order) -> list[Event]:
        """`peer`'s lane events held ordered after `after`; they are no longer."""
        held = self.lanes.get(peer)
        if not held or not after < _order(held[-1]):  # (none after: one comparison)
            return []
        i = bisect.bisect_right(held, after, key=_order)
        out = held[i:]
        del held[i:]
        if not held:
            del self.lanes[peer]
        return out

    def __iter__(self) -> Iterator[Event]:
        yield from self.mesh
        for held in self.lanes.values():
            yield from held

    def __len__(self) -> int:
        return len(self.mesh) + sum(map(len, self.lanes.values()))


@dataclass(frozen=True)
class GoneLanes:
    """What decides a compacted or deleted job's task events (`_gone_task_fold`) as its
    live fold decided them (`_task_fold`): is it a lanes job (a JOB_SUBMITTED of it named
    `members`), its members (united with every JOB_MEMBERS's `add`), and its winning
    JOB_SUBMITTED's order (None: none was folded). Kept as the job leaves memory
    (`MeshState._unlist`; session 46, helper g: review r1 F1).

    `fixed`: as the job left memory, or as the job index says (its record, or the facts
    kept beside its tombstone): what comes after changes them no more, live or at a replay
    (session 47, review r3 R3-C: once a job left memory any peer may add itself to it,
    `Node._adders`; a JOB_MEMBERS then grew them, and a restart folded a non-member's lane
    event the live fold had let go). Not fixed: nothing was known as the job went (its
    JOB_SUBMITTED came after its JOB_DELETED): a straggling JOB_SUBMITTED still says what
    it was, a JOB_MEMBERS never adds a member.

    `vouched`: its vouched members (`MeshState._vouched`). A fixed job's members still grow
    by a vouched member's JOB_MEMBERS folded after it went, whatever its order, and its adds
    are vouched for (`_gone_members`): as the live fold adds them, so that the members do not
    depend on whether it came before this peer's compaction or deletion (review r2 of
    session 47, finding 3); a JOB_MEMBERS of a peer not vouched for adds none (R3-C)."""

    lanes: bool
    members: AbstractSet[str]
    sub: Order | None
    fixed: bool = True
    vouched: AbstractSet[str] = frozenset()
    # (`members` and `vouched` are frozensets but in the facts `_gone_members` grew: sets
    # that state owns and grows in place, a JOB_MEMBERS costing what it adds, not the whole
    # sets: review r3 of session 48, F4; `owned`. Never hashed.)

    def owned(self) -> bool:
        """Grown in place by `_gone_members` (its sets are not shared)."""
        return isinstance(self.members, set) and isinstance(self.vouched, set)

    def frozen(self) -> GoneLanes:
        """The same facts with sets no fold grows (a refold's copy)."""
        if not self.owned():
            return self
        return GoneLanes(self.lanes, frozenset(self.members), self.sub, self.fixed,
                         frozenset(self.vouched))

    def united(self, other: GoneLanes) -> GoneLanes:
        """Both known of the same job: every input only grows or gets earlier."""
        subs = [o for o in (self.sub, other.sub) if o is not None]
        return GoneLanes(self.lanes or other.lanes, frozenset(self.members | other.members),
                         min(subs) if subs else None, self.fixed or other.fixed,
                         frozenset(self.vouched | other.vouched))


# What is known of a gone job without members, or of one nothing is known of (decided as
# without a record: `gone_lanes`); a straggling JOB_SUBMITTED may still say more.
NO_LANES = GoneLanes(False, frozenset(), None, fixed=False)

# Gone jobs whose `GoneLanes` memory keeps (the first in going first; a job index answers
# for a compacted one beyond: `MeshState.gone_lookup`): one costs about 0.5 KB.
GONE_LANES_MAX = 16384

# What memory keeps for a vouched member's JOB_MEMBERS that may come after a lanes job went
# (`GoneWait`), counted by what it costs: one for each (adder, peer) add parked (a
# JOB_MEMBERS names up to MAX_MEMBERS peers: counting it as one let a non-member park ~51
# MB per job, review r3 of session 48, F3), and for each event held one and one more a KiB
# of its text, none over 64 KiB (peer.log.gonewait `held_cost`: counted one each, 60 held
# CHUNK_DONEs took 27 MB, review r1 of session 50, R1-1). At most GONE_WAIT_MAX of a job
# (~4 MiB of held events), GONE_WAIT_ALL in all (~64 MiB; an add is ~100 bytes), of at most
# GONE_WAIT_JOBS jobs (the first in going first); what would pass a bound is let go whole,
# as before session 48. A job's is freed when its tombstone or record leaves memory.
GONE_WAIT_JOBS = 256
GONE_WAIT_MAX = 4096
GONE_WAIT_ALL = 65536

# Gone jobs' JOB_MEMBERS and lane events that left memory as they were folded (`record`: no
# gap before them) kept aside with their undo notes, the last this many (`_gone_recent`,
# by count: as many events as a live job's lanes hold in memory until it is compacted): a
# second content of one that comes later is still settled (review r3 of session 49, A4)
GONE_RECENT_MAX = 256


class GoneWait:
    """What waits, of a gone lanes job with fixed facts, for a vouched member's JOB_MEMBERS
    (`_gone_members`): the lane events of peers that are no member (`_gone_task_fold`; none
    is folded or let go for good while a later add may still admit it) and the adds of peers
    not vouched for (folded if a vouched member adds their adder: `_vouch`'s closure), and
    the TASK_DONEs and CHUNK_DONEs of lanes whose peer is not vouched for (`done`: lane
    peer -> `held_id` -> event; those set aside while the job was live, `_aside_done`, and
    a gone job's stragglers), whose outputs enter the cache once a vouched add vouches for
    their peer, as `_vouch` takes them in while the job is live (review rr of session 48,
    S2). `n` is what it costs (GONE_WAIT_MAX), `MeshState.wait_room` charges it."""

    __slots__ = ("adds", "done", "job", "lanes", "n")

    def __init__(self, job: str = "") -> None:
        self.job = job
        self.lanes = Untasked()
        self.adds: dict[str, set[str]] = {}
        self.done: dict[str, dict[str, Event]] = {}
        self.n = 0

    def copy(self) -> GoneWait:
        """A copy sharing no mutable part (a refold's: review r3 of session 48, F5)."""
        out = GoneWait(self.job)
        out.lanes.mesh = list(self.lanes.mesh)
        out.lanes.lanes = {p: list(evs) for p, evs in self.lanes.lanes.items()}
        out.adds = {by: set(peers) for by, peers in self.adds.items()}
        out.done = {p: dict(evs) for p, evs in self.done.items()}
        out.n = self.n
        return out


# What an event's fold changed of a gone job (`MeshState._gone_undo`): (kind, job, who,
# what): its facts grown (who: the members added, what: the vouched ones added), a waiting
# add walked or parked (who: the adder, what: the peers), a lane event held or folded out
# of its wait (who: its lane's peer, what: the event), a TASK_DONE or CHUNK_DONE of a lane
# not vouched for parked or taken in (who: its lane's peer, what: the event), and the
# peers a vouched add named that were vouched for already (who: the adder, what: those
# peers; nothing to undo: kept once the event leaves memory, `MeshState._gone_kept`).
(UNDO_GROWN, UNDO_WALKED, UNDO_PARKED, UNDO_HELD, UNDO_FREED, UNDO_DONE, UNDO_TAKEN,
 UNDO_NAMED) = range(8)
GoneUndo = tuple[int, str, Any, Any]


def _undo_wait(w: GoneWait, kind: int, who: str, what: Any,
               journal: WaitJournal | None) -> int:
    """Undo one change of `w` (`MeshState._gone_undone`); returns what its cost changes by."""
    if kind in (UNDO_WALKED, UNDO_PARKED):
        peers = cast(frozenset[str], what)
        got = w.adds.setdefault(who, set())
        had = len(got)  # (what it changes by: an event that left memory may have walked
        if kind == UNDO_WALKED:  # the adds parked, or parked those walked, for good)
            got |= peers
        else:
            got -= peers
        if not got:
            del w.adds[who]
        if journal is not None:
            journal.parked(w.job, who, peers, kept=kind == UNDO_WALKED)
        return len(got) - had
    ev, d = cast(Event, what), 0
    if kind in (UNDO_DONE, UNDO_TAKEN):
        return _undo_done(w, kind == UNDO_TAKEN, who, ev, journal)
    if kind == UNDO_HELD and w.lanes.drop(ev, who):
        d = -held_cost(ev)
    elif kind == UNDO_FREED and not w.lanes.holds(ev, who):
        w.lanes.hold(ev, who)
        d = held_cost(ev)
    if journal is not None:
        journal.held(w.job, HELD_LANE, who, ev, kept=kind == UNDO_FREED)
    return d


def _undo_done(w: GoneWait, taken: bool, peer: str, ev: Event,
               journal: WaitJournal | None) -> int:
    """Undo `ev`'s parking in `w.done` (or, `taken`, its taking in): `_undo_wait`."""
    key, d = held_key(ev)[0], 0
    got = w.done.setdefault(peer, {})
    if not taken and got.pop(key, None) is not None:
        d = -held_cost(ev)
    elif taken and key not in got:
        got[key] = ev
        d = held_cost(ev)
    if not got:
        del w.done[peer]
    if journal is not None:
        journal.held(w.job, HELD_DONE, peer, ev, kept=taken)
    return d


def _split_key(k: ChunkKey) -> SplitKey:
    return (k.job, k.task, k.split_origin, k.split_seq)


class ChunkTable(dict[ChunkKey, ChunkState]):
    """The chunks that events are about: `t[key]` makes the state of one no event was about
    yet (as a defaultdict; the appliers write through it), a reader `get`s (MeshState.chunk).
    Indexed per split and per job by every write and removal, so that what reads a split's
    chunks costs what events made of them, not what the split declares (a member may declare
    a million empty chunks): `of_split` (the chunks with a state, by index), `failed` (those
    with a failure, `note_failure`), `open` (those with no CHUNK_DONE, `note_done`),
    `done` (those done and not reopened, `ChunkState.finished`) and `done_epoch` (when that
    last changed), `first_untouched` (the first with no state), `top` (the highest index
    held) and `drop_job` (every chunk of a job)."""

    def __init__(self) -> None:
        super().__init__()
        self._split: dict[SplitKey, dict[int, ChunkState]] = {}
        # (index -> None: `failed` and `open` are their keys, live views with no copy)
        self._failed: dict[SplitKey, dict[int, None]] = {}
        self._open: dict[SplitKey, dict[int, None]] = {}
        self._fresh: dict[SplitKey, int] = {}  # (0 when absent)
        self._jobs: dict[str, set[SplitKey]] = {}  # job -> its splits with a chunk here
        self._tasks: dict[tuple[str, str], set[SplitKey]] = {}  # (job, task) -> the same
        self._done: dict[SplitKey, dict[int, Event]] = {}  # (ChunkState.finished)
        self._epoch: dict[SplitKey, int] = {}  # a split's last change of `_done` (0: none)
        # a split's last change of `_done` other than a chunk added at its end (its making,
        # a removal, a replacement: `done_added`; absent with the split's `_done`)
        self._shape: dict[SplitKey, int] = {}
        self._top: dict[SplitKey, int] = {}  # the highest index held since the split came

    def of_split(self, sk: SplitKey) -> Mapping[int, ChunkState]:
        """Chunk index -> state of the chunks of split `sk` that events are about (unordered)."""
        return MappingProxyType(self._split.get(sk, {}))

    def failed(self, sk: SplitKey) -> KeysView[int]:
        """The indexes of the chunks of split `sk` with a failure (a read-only view of the
        index, no copy: a reader that writes to the table while it walks them copies first)."""
        return self._failed.get(sk, _NONE).keys()

    def open(self, sk: SplitKey) -> KeysView[int]:
        """The indexes of the chunks of split `sk` with a state and no CHUNK_DONE (claimed,
        failed, in progress); those with one are done unless a failure reopened them (a view,
        as `failed`'s)."""
        return self._open.get(sk, _NONE).keys()

    def open_or_failed(self, sk: SplitKey) -> Iterator[int]:
        """The indexes of `open(sk)` and of `failed(sk)`, each once (in no order): the
        chunks with a state that may not be done. Read from the views: a reader that writes
        to the table while it walks them copies them first."""
        opened = self.open(sk)
        yield from opened
        yield from (i for i in self.failed(sk) if i not in opened)

    def done(self, sk: SplitKey) -> Mapping[int, Event]:
        """Chunk index -> CHUNK_DONE of the chunks of split `sk` that are done and not
        reopened (`ChunkState.finished`; unordered)."""
        return MappingProxyType(self._done.get(sk, {}))

    def done_epoch(self, sk: SplitKey) -> int:
        """A number that changes whenever `done(sk)` does (and never comes back)."""
        return self._epoch.get(sk, 0)

    def top(self, sk: SplitKey) -> int:
        """At least the highest chunk index of split `sk` held (-1 when none): a reader
        whose split has fewer chunks filters out those past its last (a member may send
        events about them)."""
        return self._top.get(sk, -1)

    def first_untouched(self, sk: SplitKey) -> int:
        """The lowest chunk index of split `sk` that no event is about (every one below it
        has a state)."""
        return self._fresh.get(sk, 0)

    def note_failure(self, k: ChunkKey) -> None:
        """Chunk `k` (in the table) has a failure now."""
        sk = _split_key(k)
        self._failed.setdefault(sk, {})[k.chunk] = None
        self._note_finished(sk, k.chunk, dict.__getitem__(self, k).finished())

    def note_done(self, k: ChunkKey) -> None:
        """Chunk `k` (in the table) has a CHUNK_DONE now."""
        sk = _split_key(k)
        self._discard(self._open, sk, k.chunk)
        self._note_finished(sk, k.chunk, dict.__getitem__(self, k).finished())

    def done_added(self, sk: SplitKey, mark: tuple[int, int],
                   ) -> tuple[tuple[int, int], Iterator[tuple[int, Event]] | None]:
        """What `done(sk)` gained since a reader saw it at `mark` (an earlier answer's; (0, 0)
        for none): this one's mark, and the chunks done since, newest first (O(them)), or
        None when it changed otherwise (a chunk reopened or dropped, a CHUNK_DONE replaced:
        the reader reads `done(sk)` again)."""
        by = self._done.get(sk, {})
        now = (self._shape.get(sk, 0), len(by))
        if now[0] != mark[0] or now[1] < mark[1]:
            return now, None
        return now, itertools.islice(reversed(by.items()), now[1] - mark[1])

    def _note_finished(self, sk: SplitKey, i: int, d: Event | None) -> None:
        """Chunk `i` of split `sk` is done by `d` now (ChunkState.finished; None: not)."""
        by = self._done.get(sk)
        added = True  # (at the end of `_done[sk]`, as it was: `done_added` reads it alone)
        if by is None:
            if d is None:
                return
            by = self._done[sk] = {}
            added = False  # (a new index: a new shape)
        elif (old := by.get(i)) is d:
            return
        elif old is not None:
            added = False
        change = next(_CHANGES)
        if d is None:
            del by[i]
            if not by:
                del self._done[sk], self._shape[sk]
                self._epoch[sk] = change
                return
        else:
            by[i] = d
        if not added:
            self._shape[sk] = change
        self._epoch[sk] = change

    def of_every_split(self, job: str, task: str, chunk: int) -> Iterator[ChunkState]:
        """The states of chunk `chunk` of each split of the task held (the winning one's and
        a rival's), in no order: O(the task's splits with a chunk here)."""
        for sk in self._tasks.get((job, task), ()):
            if (c := self._split[sk].get(chunk)) is not None:
                yield c

    def drop_job(self, job: str) -> None:
        """Remove every chunk of `job` (what its deletion or compaction costs: its own)."""
        for sk in list(self._jobs.get(job, ())):
            for i in list(self._split.get(sk, ())):
                del self[ChunkKey(*sk, i)]

    def _index(self, k: ChunkKey, v: ChunkState) -> None:
        sk = _split_key(k)
        by = self._split.get(sk)
        if by is None:
            by = self._split[sk] = {}
            self._jobs.setdefault(k.job, set()).add(sk)
            self._tasks.setdefault((k.job, k.task), set()).add(sk)
        by[k.chunk] = v
        if k.chunk > self._top.get(sk, -1):
            self._top[sk] = k.chunk
        if v.failures:
            self._failed.setdefault(sk, {})[k.chunk] = None
        else:
            self._discard(self._failed, sk, k.chunk)
        if v.done is None:
            self._open.setdefault(sk, {})[k.chunk] = None
            if k.chunk in self._done.get(sk, ()):  # (a state replaced: a new one is made
                self._note_finished(sk, k.chunk, None)  # per chunk, with no CHUNK_DONE yet)
        else:
            self._discard(self._open, sk, k.chunk)
            self._note_finished(sk, k.chunk, v.finished())
        fresh = self._fresh.get(sk, 0)
        if k.chunk == fresh:
            while fresh in by:
                fresh += 1
            self._fresh[sk] = fresh

    def _unindex(self, k: ChunkKey) -> None:
        sk = _split_key(k)
        by = self._split.get(sk)
        if by is not None:
            by.pop(k.chunk, None)
            if not by:
                del self._split[sk]
                self._fresh.pop(sk, None)
                self._top.pop(sk, None)
                splits = self._jobs[k.job]
                splits.discard(sk)
                if not splits:
                    del self._jobs[k.job]
                splits = self._tasks[k.job, k.task]
                splits.discard(sk)
                if not splits:
                    del self._tasks[k.job, k.task]
            elif 0 <= k.chunk < self._fresh.get(sk, 0):
                self._fresh[sk] = k.chunk
        self._discard(self._failed, sk, k.chunk)
        self._discard(self._open, sk, k.chunk)
        self._note_finished(sk, k.chunk, None)
        if sk not in self._split:
            self._epoch.pop(sk, None)

    @staticmethod
    def _discard(index: dict[SplitKey, dict[int, None]], sk: SplitKey, i: int) -> None:
        held = index.get(sk)
        if held is not None:
            held.pop(i, None)
            if not held:
                del index[sk]

    def __missing__(self, k: ChunkKey) -> ChunkState:
        v = ChunkState()
        self[k] = v
        return v

    def __setitem__(self, k: ChunkKey, v: ChunkState) -> None:
        dict.__setitem__(self, k, v)
        self._index(k, v)

    def __delitem__(self, k: ChunkKey) -> None:
        dict.__delitem__(self, k)
        self._unindex(k)

    def pop(self, k: ChunkKey, *default: Any) -> Any:
        if dict.__contains__(self, k):
            self._unindex(k)
        return dict.pop(self, k, *default)

    def popitem(self) -> tuple[ChunkKey, ChunkState]:
        k, v = dict.popitem(self)
        self._unindex(k)
        return k, v

    def clear(self) -> None:
        dict.clear(self)
        for index in (self._split, self._failed, self._open, self._fresh, self._jobs,
                      self._tasks, self._done, self._epoch, self._shape, self._top):
            index.clear()

    def setdefault(self, k: ChunkKey, default: Any = None) -> Any:
        if k not in self:
            self[k] = default
        return dict.__getitem__(self, k)

    def update(self, *args: Any, **kwargs: Any) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def __ior__(self, other: Any) -> ChunkTable:  # type: ignore[override,misc]
        self.update(other)
        return self


@dataclass
class MeshState:
    """The fold of all events seen (see the module docstring for the conflict rules)."""

    events: dict[tuple[str, int], Event] = field(default_factory=dict)
    jobs: JobTable = field(default_factory=JobTable)  # (pages newest first)
    cancelled: dict[str, Event] = field(default_factory=dict)
    # The winning TASK_SPLIT of each task, or its implicit split (`implicit_splits`: made
    # from a flagged job's JOB_SUBMITTED, never held; `implicit` tells it apart)
    splits: dict[TaskKey, Event] = field(default_factory=dict)
    # The chunks that events are about (indexed per split: ChunkTable); a chunk of a split
    # that no event is about has no entry (`chunk` reads it as NO_CHUNK).
    chunks: ChunkTable = field(default_factory=ChunkTable)
    task_done: dict[TaskKey, Event] = field(default_factory=dict)
    partials: dict[TaskKey, Event] = field(default_factory=dict)  # the fullest PARTIAL
    # Item key -> {"n": name, "c": cid}. This and the other cache tables are Tiered: entries
    # of compacted jobs live in the job index and are read from it on demand.
    cache: dict[str, Any] = field(default_factory=Tiered)
    _cache_src: dict[str, tuple[int, str, int]] = field(default_factory=Tiered)
    # Task key -> whole output CID. Apart from the item cache: a per-item task fed one file
    # has the same key as that file's item, and the two values must not shadow each other.
    outputs: dict[str, str] = field(default_factory=Tiered)
    _outputs_src: dict[str, tuple[int, str, int]] = field(default_factory=Tiered)
    providers: dict[str, set[str]] = field(default_factory=lambda: Tiered(set))
    members: dict[str, Event] = field(default_factory=dict)
    revoked: dict[str, Event] = field(default_factory=dict)  # peer id -> first REVOKE of it
    by_origin: dict[str, dict[int, Event]] = field(default_factory=lambda: defaultdict(dict))
    heads: dict[str, int] = field(default_factory=dict)  # origin -> highest contiguous seq
    # The heads of the mesh origins (every origin but a lane, peer.log.lanes), kept with
    # `heads` by `_advance`: what every mesh-wide reader reads (the vector sent to any peer,
    # `events_after` without a scope), so that a lane never leaves its job's members. Readers
    # of one origin's head (contiguity, floors, the door's seq checks) read `heads`.
    mesh_heads: dict[str, int] = field(default_factory=dict)
    # Job -> the lane origins held of it (each has a head: `heads`, not `mesh_heads`), and
    # the same by the lanes' peer (what a revoked peer's bounds walk: Node.servable_upto)
    lanes: dict[str, set[str]] = field(default_factory=dict)
    peer_lanes: dict[str, set[str]] = field(default_factory=dict)
    # Job -> the peers that hold its lanes: its JOB_SUBMITTEDs' `members` united with every
    # JOB_MEMBERS's `add` (grow-only: nothing to settle); a job without `members` has none
    # (a job replicated in full, as every job before lanes)
    members_of: dict[str, set[str]] = field(default_factory=dict)
    ended: dict[str, Event] = field(default_factory=dict)  # job -> its JOB_ENDED (`_end`)
    # Job -> the JOB_ENDEDs of it held but not folded (`end_refusal`: who may end a job),
    # by id: each is folded once the events that make it admissible are (its JOB_SUBMITTED,
    # a JOB_MEMBERS naming its origin: both may come later). One whose body alone names what
    # the job cannot have made (`end_flaw`) is refused for good, not kept here. Their count
    # is this table's (/metrics: `sizes`); they leave with the job.
    unended: dict[str, dict[tuple[str, int], Event]] = field(default_factory=dict)
    # Job -> (the id of its JOB_ENDED whose outputs are in a `listing`, that body with the
    # listing's outputs and producers): set once the listing was fetched, read and folded
    # (`fold_listing`); `end_body` answers it for that JOB_ENDED. It leaves with the job.
    listed: dict[str, tuple[tuple[str, int], JobEnded]] = field(default_factory=dict)
    # Told of each JOB_ENDED as the fold takes it for its job's end (`_end`: when it comes,
    # or once what it waited for in `unended` comes) and as its `listing` folds
    # (`fold_listing`): the node's replicator, whose copies of a lanes job's outputs on a
    # peer that is no member of it come from there (review r2 F3, F4). A `refold` tells
    # it only of an end it took that was not the job's before (`_tell_new_ends`).
    on_end: Callable[[Event], None] | None = None
    # Job -> task -> the earliest output (by its TASK_DONE's order) among the inline outputs
    # of the job's JOB_ENDEDs folded whose origin is a vouched member (`_end_outputs`; not a
    # listing's, which only the peers that held it while its JOB_ENDED won fetch: review r1
    # of session 46, F3; nor a self-added peer's: `_aside`): what `end_body` shows
    # of the winning one (with its own listing's), so that a non-member names the output a
    # member's fold does (first-wins) when two homes cut apart each ended the job. It leaves
    # with the job.
    end_outputs: dict[str, dict[str, Output]] = field(default_factory=dict)
    # Job -> its vouched members: the peers the `members` of its JOB_SUBMITTEDs name (every
    # one's: grow-only, as `_lanes_tasks`) and those a vouched member's JOB_MEMBERS adds (a
    # home's scale-out), not a peer that added itself (an orphan takeover, or a hostile
    # one) nor one it added; the origins whose JOB_ENDEDs' outputs enter the output cache
    # and `end_outputs` (`_end_outputs`). `_adds`: job -> peer -> the peers its JOB_MEMBERS
    # added (vouched for once it is: `_vouch`). `_aside`: job -> origin not vouched for ->
    # its JOB_ENDEDs folded, whose outputs enter neither until it is (by origin: a vouching
    # walks the peers it vouches for, not every end set aside), by id; and likewise, under
    # the peer of each lane not vouched for that an end's output was made in, that end
    # (such an output enters neither until that peer is vouched for: session 48). Why
    # (review r3 of session 46, R3-D): an output's order in a JOB_ENDED is a claim no peer
    # that holds no lane of the job can check, and first-wins by order let a self-added
    # peer's losing end put a made-up early output in every peer's cache, the home's too.
    # All three only grow (the vouched set is a closure of events), and leave with the job.
    _vouched: dict[str, set[str]] = field(default_factory=dict)
    _adds: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    _aside: dict[str, dict[str, dict[tuple[str, int], Event]]] = field(default_factory=dict)
    # Job -> lane peer not vouched for -> its TASK_DONEs (a CHUNK_DONE's implied one too),
    # CHUNK_DONEs, TASK_SPLITs and CHUNK_FAILEDs (ranked as TASK_DONEs: `_split`,
    # `_chunk_failed`, session 50) of the live job folded while it was not (`_unvouched`):
    # such a
    # TASK_DONE ranks after every vouched lane's for its task (`task_done`: by (not
    # vouched, order), so it wins only where no vouched member's is folded: an orphan
    # takeover still finishes the job), and neither puts its output nor a CHUNK_DONE its
    # items in the cache; once its peer is vouched for (`_vouch`) they are folded again
    # as a vouched lane's. Why (R3-D's rest, session 48): a self-added member's own lane
    # TASK_DONE ordered early (the door bounds only how far an hlc is ahead) won its task
    # and key on every member, and the home's end named it. Grows as `_aside`, leaves with
    # the job.
    _aside_done: dict[str, dict[str, list[Event]]] = field(default_factory=dict)
    # Partial replication enabled (`lanes-v1`, not announced yet: docs/design/partial-
    # replication.md): until then `members` and JOB_MEMBERS/JOB_ENDED are held, not folded
    # (as before they had types: one JOB_ENDED of any member would otherwise set cache
    # entries and providers for any job).
    lanes_on: bool = False
    # The peer whose state this is (None: one that holds every job's lanes). With lanes on,
    # a lanes job's implicit splits and implied claims are made only if it is a member
    # (design, section 5.2; `runs`): the fold is a function of the events and this id.
    me: str | None = None
    # Job -> the JOB_SUBMITTEDs of a lanes job we are no member of, whose implicit splits
    # and implied claims were not made: made if a JOB_MEMBERS adds us (order-free)
    _unjoined: dict[str, list[Event]] = field(default_factory=dict)
    # Job -> the task names of its JOB_SUBMITTEDs that name `members` (grow-only:
    # `end_refusal` reads it, not the winning one's, so that a JOB_ENDED once folded stays
    # so whatever comes)
    _lanes_tasks: dict[str, set[str]] = field(default_factory=dict)
    # Job -> the task events (parts) of it held, not folded (`_task_fold`: a lanes job's
    # count only from its members' lanes): in the lane of a peer not a member yet, or in a
    # mesh stream before the job's JOB_SUBMITTED (it may be a lanes job). Folded once a
    # JOB_SUBMITTED or JOB_MEMBERS admits them (`_tasks_due`), let go if it shows them a
    # lanes job's in a mesh stream (`Untasked`: by lane peer and order); once the job is
    # deleted or compacted, decided as the events that come after (`_gone_task_fold`).
    _untasked: dict[str, Untasked] = field(default_factory=dict)
    # Job -> what decides its task events once it is compacted or deleted (`GoneLanes`: a
    # lanes job's or a job's with members), kept as it leaves memory, at most
    # GONE_LANES_MAX; `gone_lookup` (the job index: a compacted job's record) answers for
    # one not here, None without it
    _gone_lanes: OrderedDict[str, GoneLanes] = field(default_factory=OrderedDict)
    gone_lookup: Callable[[str], GoneLanes | None] | None = None
    # Gone lanes job -> what of it waits for a vouched member's JOB_MEMBERS (`GoneWait`: its
    # lane events of peers that are no member, the adds of peers not vouched for), at most
    # GONE_WAIT_JOBS (review r2 of session 47, finding 3)
    _gone_waits: OrderedDict[str, GoneWait] = field(default_factory=OrderedDict)
    # What they cost in all (`GoneWait.n` summed, at most GONE_WAIT_ALL: `wait_room`)
    _gone_wait_n: int = 0
    # Their changes since the compactor last wrote them to the job index (`WaitJournal`;
    # None: not kept, a state without a job index), read back at a start (`load_waits`):
    # a restart whose log no longer holds a gone job's rows waits as before it (review r3
    # of session 48, F1)
    wait_journal: WaitJournal | None = None
    # Event id -> what its fold changed of gone jobs' facts and waits (`GoneUndo`: grown
    # members, walked, parked, held and folded waiting things), while it is in memory: a
    # refold folds it again, so it starts from the gone jobs' state without it, and a
    # replaced loser's growth is not kept (review r3 of session 48, F5). Dropped as the
    # event leaves memory (`_evict_one`): what it changed is then for good.
    _gone_undo: dict[tuple[str, int], list[GoneUndo]] = field(default_factory=dict)
    # Gone job -> the peers a vouched add that left memory named when they were vouched for
    # already (UNDO_NAMED: its fold changed nothing, so it noted no growth): that add
    # vouches for them for good, so a refold that undid another event's growth of them
    # vouches for them again (`_gone_revouch`; review r3 of session 49, A5: the held
    # loser's undo dropped a peer an honest member's evicted add had added too). Kept
    # while the job's facts are (`_keep_gone`, `spill_deleted`, `forget_lanes`).
    _gone_kept: dict[str, set[str]] = field(default_factory=dict)
    # Id -> a gone job's JOB_MEMBERS or lane event that left memory as it was folded
    # (`record`: no gap before it, the common case for a gone job's straggler), the last
    # GONE_RECENT_MAX, their `_gone_undo` notes kept while here: a second content of one
    # that comes later (`straggler`: Node.merge) goes to the conflict rule as a held one's
    # does, and a winner `replace`s it so that the refold undoes the loser's changes and
    # folds the winner (review r3 of session 49, A4: F5's undo reached only losers held past
    # a gap). A rival that never reaches this peer is not compared: evicted events are in
    # no content digest.
    _gone_recent: OrderedDict[tuple[str, int], Event] = field(default_factory=OrderedDict)
    # Job -> origin -> the least by `end_rank` of its JOB_ENDEDs of the job folded (those
    # `end_refusal` admitted: only grows or gets less): the job's end (`ended`) is the least
    # of them, `end_rank` reading the winning JOB_SUBMITTED's `members`, which rank every
    # end of one origin alike; when an earlier one wins, the least is taken again
    # (`_rerank`: a walk of origins, not of every end). They leave with the job.
    _ends: dict[str, dict[str, Event]] = field(default_factory=dict)
    # Origin -> every seq up to here is held or was set aside on purpose (an unknown type's
    # event past its cap, a quarantined own event): the heads count them as held.
    floors: dict[str, int] = field(default_factory=dict)
    # Deleted jobs (JOB_DELETED): job -> the order of its first JOB_DELETED (the tombstone:
    # not the event, which leaves memory as the job's other events do). Their per-job tables
    # are emptied, whatever arrives later, and their events leave memory as a compacted
    # job's do (`gone`). Tombstones live in the job index once a compaction pass wrote them
    # (`Tombstones`, read on demand); `deletions` counts the jobs deleted here, ever.
    deleted: dict[str, Order] = field(default_factory=Tombstones)
    deletions: int = 0
    # Deleted lanes jobs whose tombstone is in memory (not written yet) -> their facts
    # (`GoneLanes`, as they left memory): what `_bury` writes beside the tombstones
    # (peer.log.compact), read here and not from `_gone_lanes`, whose bound would push out
    # the facts of the first of more than GONE_LANES_MAX jobs deleted between two passes
    # (session 47, review r2 finding 2). Bounded as the tombstones in memory are: let go
    # with them (`spill_deleted`).
    tomb_lanes: dict[str, GoneLanes] = field(default_factory=dict)
    # (cid, origin) -> order of the latest UNPROVIDE: an origin provides a CID only through
    # an event later than that (so the fold stays order-free).
    _dropped: dict[tuple[str, str], tuple[int, str, int]] = field(default_factory=dict)
    # Origin -> the seqs of its jobless events in memory (peer.log.jobless), in order: those
    # `jobless_window` seqs behind its head leave memory (only with an `archive`: a log).
    _jobless: dict[str, list[int]] = field(default_factory=dict)
    jobless_window: int = field(default_factory=lambda: JOBLESS_WINDOW)
    # Origin -> the seqs held beyond its head (past a gap): with the heads, the per-origin
    # index that serves `events_after` without scanning the log.
    beyond: dict[str, set[int]] = field(default_factory=dict)
    # How many times a head moved past seqs held beyond a gap (`_advance`), ever: the events
    # held there that are of compacted or deleted jobs leave memory only at a sweep, which
    # the compactor asks for when this count changed (peer.log.compact.Compactor.step).
    gaps_filled: int = 0
    # How many events entered memory (`record`, a rival's `replace`), ever (a refold keeps
    # counting): the compactor's scan for events about deleted jobs is redone only when
    # this changed (peer.log.compact.Compactor._busy).
    entered: int = 0
    # Digests of the held contents per origin and block (peer.log.contents): what heads do not
    # say, compared by anti-entropy.
    sums: ContentSums = field(default_factory=ContentSums)
    # Compaction (peer.log.jobindex): finished jobs whose record is in the job index (in
    # memory the ones compacted or asked for last; the job index answers for the others). Their
    # per-job tables are emptied and their events leave memory (`evicted`: origin -> the
    # highest seq held on disk only, served by `archive`); their cache entries stay.
    compacted: TieredSet = field(default_factory=TieredSet)
    evicted: dict[str, int] = field(default_factory=dict)
    # (origin, after, upto, limit) -> the origin's events in (after, upto] from disk, in seq
    # order, at most limit; None: every event held is in memory.
    archive: Callable[[str, int, int, int], Iterable[Event]] | None = None
    # Told of every event that leaves memory (`_evict_one`): the compactor, which drops a
    # deleted job's events from the log (peer.log.compact.Compactor.evicted).
    on_evict: Callable[[Event], None] | None = None
    # Told of a gone lanes job's facts each time a vouched member's JOB_MEMBERS folded after
    # it went grows them (`_gone_members`): the compactor, which writes them to the job index
    # where it keeps the job's (its record, or beside its tombstone), so that a replay whose
    # log no longer holds that JOB_MEMBERS reads them (review r2 of session 47, finding 3).
    on_members: Callable[[str, GoneLanes], None] | None = None

    def sizes(self) -> dict[str, int]:
        """The entries each table keeps in memory (a Tiered's, a TieredSet's: in memory
        only), by field name: /metrics shows them, so that an operator (and
        scripts/soak.py) sees which one grows."""
        return {f.name.lstrip("_"): len(v) for f in fields(self)
                if isinstance(v := getattr(self, f.name), dict | set)}

    def _unlist(self, job: str, straggler: bool = False) -> None:
        """Empty `job`'s entries of the tables keyed by the job alone (it is deleted or
        compacted, or `straggler`: an event of it folded after it went); what decides its
        task events from now on is kept (`_gone`): as it leaves memory (`fixed`), and of a
        straggler only a JOB_SUBMITTED's, while nothing fixed is known (a JOB_MEMBERS of a
        gone job adds no member: R3-C)."""
        lanes = job in self._lanes_tasks
        members = self.members_of.get(job)
        sub = self.jobs.get(job)
        if (lanes or members) and not (straggler and sub is None):
            facts = GoneLanes(lanes, frozenset(members or ()),
                              None if sub is None else sub.order, fixed=not straggler,
                              vouched=frozenset(self._vouched.get(job, ())))
            known = self.gone_lanes(job) if straggler else None
            if known is None or not known.fixed:
                self._gone(job, facts)
            vouched = self._vouched.get(job, ())
            waiting = {by: peers for by, peers in self._adds.get(job, {}).items()
                       if by not in vouched}  # (`_vouch`'s closure goes on once the job
            if not straggler and waiting:  # went: `_gone_members`)
                wait = self.gone_wait(job)
                for by, peers in waiting.items():
                    self.park_adds(wait, by, peers)
            if not straggler and lanes and (aside := self._aside_done.get(job)):
                wait = self.gone_wait(job)  # (taken in once a vouched add vouches for
                for peer, evs in aside.items():  # their peer: review rr of s48, S2; a
                    for ev in evs:  # CHUNK_DONE of no items has nothing to take in; a
                        b = ev.body  # TASK_SPLIT or CHUNK_FAILED set aside ranks a live
                        if type(b) is TaskDone or (type(b) is ChunkDone and b.cache):
                            self.park_done(wait, peer, ev)  # job only: review rr, RR-3)
        for per_job in (self.jobs, self.cancelled, self.members_of, self.ended, self.unended,
                        self.listed, self.end_outputs, self._unjoined, self._untasked,
                        self._ends, self._vouched, self._adds, self._aside,
                        self._aside_done):
            per_job.pop(job, None)
        self._lanes_tasks.pop(job, None)

    def _gone(self, job: str, facts: GoneLanes) -> None:
        """Keep `facts` of gone `job` (united with those known: `gone_lanes`)."""
        old = self.gone_lanes(job)
        self._keep_gone(job, facts if old is None else old.united(facts))

    def _keep_gone(self, job: str, facts: GoneLanes) -> None:
        table = self._gone_lanes
        table[job] = facts
        table.move_to_end(job)
        while len(table) > GONE_LANES_MAX:
            out = table.popitem(last=False)[0]
            if self._gone_kept and out not in self.tomb_lanes:
                self._gone_kept.pop(out, None)

    def gone_wait(self, job: str) -> GoneWait:
        """What of gone `job` waits for a vouched member's JOB_MEMBERS (`GoneWait`), made if
        none was (the first of more than GONE_WAIT_JOBS let go)."""
        waits = self._gone_waits
        got = waits.get(job)
        if got is None:
            got = waits[job] = GoneWait(job)
            while len(waits) > GONE_WAIT_JOBS:
                first, out = waits.popitem(last=False)
                self._gone_wait_n -= out.n
                if self.wait_journal is not None:
                    self.wait_journal.dropped(first)
        return got

    def drop_wait(self, job: str) -> None:
        """`job`'s tombstone or record went: what of it waited goes (review r3 of session
        48, F3: nothing freed a `GoneWait` but the GONE_WAIT_JOBS bound)."""
        got = self._gone_waits.pop(job, None)
        if got is not None:
            self._gone_wait_n -= got.n
            if self.wait_journal is not None:
                self.wait_journal.dropped(job)

    def wait_room(self, wait: GoneWait, cost: int) -> bool:
        """May `wait` keep `cost` more (GONE_WAIT_MAX of a job, GONE_WAIT_ALL in all)? If so
        it is charged."""
        if wait.n + cost > GONE_WAIT_MAX or self._gone_wait_n + cost > GONE_WAIT_ALL:
            return False
        wait.n += cost
        self._gone_wait_n += cost
        return True

    def wait_free(self, wait: GoneWait, cost: int) -> None:
        """Give back `cost` of `wait`'s room (what `wait_room` charged)."""
        wait.n -= cost
        self._gone_wait_n -= cost

    def park_adds(self, wait: GoneWait, by: str, peers: Iterable[str],
                  ev: Event | None = None) -> None:
        """`by`'s adds of `peers` wait in `wait` (the closure of a gone job): only those not
        parked yet cost (a refold's re-parking costs none: review r3 of session 48, F6),
        all of them or none (past a bound they are let go, as before session 48)."""
        had = wait.adds.get(by)
        new = set(peers) if had is None else set(peers) - had
        if new and self.wait_room(wait, len(new)):
            if had is None:
                wait.adds[by] = new
            else:
                had |= new
            if self.wait_journal is not None and (job := self._wait_job(wait)) is not None:
                self.wait_journal.parked(job, by, new)
            self._undo_note(ev, (UNDO_PARKED, wait.job, by, frozenset(new)))  # (not `new`:
            # the set parked, which later adds grow)

    def park_done(self, wait: GoneWait, peer: str, ev: Event, by: Event | None = None,
                  text: str | None = None) -> bool:
        """TASK_DONE or CHUNK_DONE `ev` of the lane of `peer`, not vouched for, waits in
        `wait` (`GoneWait.done`; once: a refold parks it again at no cost), `by`'s fold
        parking it; False if a bound lets it go."""
        text = held_text(ev, text)  # (made once: `held_key`)
        key = held_key(ev, text)[0]
        if key in wait.done.get(peer, ()):
            return True
        if not self.wait_room(wait, held_cost(ev)):
            return False
        wait.done.setdefault(peer, {})[key] = ev
        if self.wait_journal is not None and (job := self._wait_job(wait)) is not None:
            self.wait_journal.held(job, HELD_DONE, peer, ev, text=text)
        self._undo_note(by, (UNDO_DONE, wait.job, peer, ev))
        return True

    def _wait_job(self, wait: GoneWait) -> str | None:
        """`wait`'s job if it is this state's (its changes are written: `wait_journal`)."""
        return wait.job if self._gone_waits.get(wait.job) is wait else None

    def load_waits(self, adds: Iterable[tuple[str, str, str]],
                   held: Iterable[tuple[str, int, str, Event | None, str]]) -> int:
        """What waited of gone jobs as the job index kept it (`WaitJournal`: (job, adder,
        peer) adds, (job, kind, peer, event, row key) held events, read back as hostile),
        taken in at a start before the replay, in row order, each add and event alone
        within the bounds (`wait_room`); returns how many were let go. Let go, and their
        rows' deletion noted in `wait_journal` (review r1 of session 50, R1-6): what would
        pass a bound (as it would have been), a held row that is not what this release
        writes (`held_problem`, R1-2) or whose event is over HELD_TEXT_MAX (None), and
        every row of a job that is not gone here (neither compacted nor a tombstone: the
        previous release drops tombstones and leaves their rows, review r3 of session 49,
        A2) or whose wait GONE_WAIT_JOBS let go. (Rows that do not read back are not
        here: the index keeps them, `JobIndex.wait_rows`.)"""
        here: dict[str, bool] = {}

        def gone(job: str) -> bool:
            if (got := here.get(job)) is None:
                got = here[job] = job in self.compacted or job in self.deleted
            return got

        out = 0
        journal, self.wait_journal = self.wait_journal, None  # (on disk already)
        try:
            for job, by, peer in adds:
                if not gone(job):
                    out += 1
                    continue
                wait = self.gone_wait(job)
                self.park_adds(wait, by, (peer,))
                if peer not in wait.adds.get(by, ()):
                    out += 1
                    if journal is not None:
                        journal.parked(job, by, (peer,), kept=False)
            for job, kind, peer, ev, key in held:
                out += not gone(job) or not self._load_held(job, kind, peer, ev, key, journal)
        finally:
            self.wait_journal = journal
        if journal is not None:
            for job in sorted(j for j, ok in here.items()
                              if not ok or j not in self._gone_waits):
                journal.dropped(job)
        return out

    def settle_waits(self) -> None:
        """After the replay: what waits (`load_waits`) under a peer its gone job vouched
        already is taken in, as a vouched add would have (`_gone_settle`)."""
        for job in list(self._gone_waits):
            _gone_settle(self, job)

    def _load_held(self, job: str, kind: int, peer: str, ev: Event | None, key: str,
                   journal: WaitJournal | None) -> bool:
        """A held row of gone `job` read back (`load_waits`) waits again; False if it is
        let go (its row's deletion noted in `journal`)."""
        wait = self.gone_wait(job)
        text = None if ev is None else event_text(ev)  # (once: its cost, key, check)
        if ev is not None and held_problem(job, kind, peer, ev) is None and (
                self.park_done(wait, peer, ev, text=text) if kind == HELD_DONE
                else wait.lanes.holds(ev, peer) or self._hold_loaded(wait, peer, ev, text)):
            if key != held_key(ev, text)[0] and journal is not None:
                journal.held(job, kind, peer, ev, text=text)  # (a row keyed otherwise:
                # written anew)
                journal.let_go(job, kind, key)
            return True
        if journal is not None:
            journal.let_go(job, kind, key)
        return False

    def _hold_loaded(self, wait: GoneWait, peer: str, ev: Event, text: str | None) -> bool:
        """Lane event `ev` of `peer` (row text `text`) read back waits in `wait` if the
        bounds let it."""
        if not self.wait_room(wait, held_cost(ev, text)):
            return False
        wait.lanes.hold(ev, peer)
        return True

    def gone_lanes(self, job: str) -> GoneLanes | None:
        """What decides compacted or deleted `job`'s task events (`GoneLanes`), None if
        nothing is known of it (a job without members, or one gone long ago: GONE_LANES_MAX).
        What `gone_lookup` answers is kept (`fixed`), its "none" too (as NO_LANES, which
        decides alike): a replay's events of a compacted job replicated in full ask it once,
        not one query each."""
        got = self._gone_lanes.get(job) or self.tomb_lanes.get(job)  # (past the bound)
        if got is None and self.gone_lookup is not None:
            got = self.gone_lookup(job)
            self._keep_gone(job, NO_LANES if got is None else got)
        return got

    def member_of(self, job: str, peer: str) -> bool:
        """Does `peer` hold `job`'s lanes? Every peer does of a job without members (one
        replicated in full, as every job before lanes, or one whose JOB_SUBMITTED and
        JOB_MEMBERS are not here yet)."""
        members = self.members_of.get(job)
        return members is None or peer in members

    def runs(self, job: str) -> bool:
        """Does the peer of this state (`me`) hold `job`'s lanes, and so fold and run its
        tasks? (Any job but a lanes job it is no member of.)"""
        return self.me is None or self.member_of(job, self.me)

    def vouched(self, job: str) -> frozenset[str]:
        """The vouched members of `job` (`_vouched`): those whose JOB_ENDEDs' outputs enter
        the cache and `end_outputs` (what a compacted record's facts keep for a JOB_ENDED
        that comes after: peer.log.compact.Compactor._late_end)."""
        return frozenset(self._vouched.get(job, ()))

    def is_vouched(self, job: str, peer: str) -> bool:
        """Is `peer` a vouched member of live `job` (`vouched`, without a copy)?"""
        return peer in self._vouched.get(job, ())

    def lanes_unvouched(self, job: str) -> bool:
        """Is `job` a lanes job (lanes on, members known) with a member not vouched for
        (`some_unvouched`): where a self-added member's failures may be left out?"""
        return self.lanes_on and job in self.members_of and self.some_unvouched(job)

    def some_unvouched(self, job: str) -> bool:
        """Has live lanes job `job` a member no vouched member vouched for (a self-added
        one, or one such a peer added)?"""
        vouched = self._vouched.get(job, ())
        return any(p not in vouched for p in self.members_of.get(job, ()))

    def unvouched_lane(self, job: str, ev: Event) -> str | None:
        """The peer of the lane task event `ev` of `job` was made in, if that peer is no
        vouched member of it (`_unvouched`: a self-added member's TASK_DONE or CHUNK_DONE,
        which a vouched member's scheduler runs again, session 49); else None."""
        return _unvouched(self, job, ev)

    def knows_job(self, job: str) -> bool:
        """Does any event here name `job`: live, compacted or deleted (the job index answers
        for those not in memory), or only heard of (an event held for a JOB_SUBMITTED not
        here yet)? A new submission must not take its id (peer.log.ids.new_job_id)."""
        return any(job in table for table in (
            self.jobs, self.cancelled, self.members_of, self.unended, self._untasked,
            self.deleted, self.compacted))

    def holds(self, ev_id: tuple[str, int]) -> bool:
        """Is this event held (in memory, on disk, or set aside on purpose below a head)?"""
        return ev_id in self.events or ev_id[1] <= self.heads.get(ev_id[0], 0)

    def apply(self, ev: Event) -> bool:
        """Fold one event in; False if it was already known (idempotent). If its applier
        raises, the state is unchanged and the event is not recorded as known."""
        if self.holds(ev.id):
            return False
        if type(ev.body) is not Unknown:  # a newer peer's type: held and served, never folded
            if len(ev.parts) > 1:
                self._ahead_turn(ev.parts)
            for part in ev.parts or (ev,):  # a TURN folds as its parts, in order
                self.fold_only(part)
        self.record(ev)
        return True

    def _ahead_turn(self, parts: Sequence[Event]) -> None:
        """A TURN's parts are about to be folded: the output keys and the CIDs they hold that
        memory misses are looked up in the job index at once (`Tiered.ahead`), not one query
        each as each part is folded (a TURN of another peer's tasks: fresh keys and CIDs,
        two look-ups a task that all miss)."""
        keys: list[str] = []
        cids: list[str] = []
        for part in parts:
            b = part.body
            if type(b) is ChunkDone and b.done is not None and b.done.key:
                keys.append(b.done.key)  # (its implied TASK_DONE's: `_task_done`)
            elif type(b) is TaskDone and b.key:
                keys.append(b.key)
            cids += provided(b)
        if len(keys) > 1:  # (one key: its own look-up costs the same query)
            _ahead(self._outputs_src, keys)
        if len(cids) > 1:
            _ahead(self.providers, cids)

    def fold_only(self, ev: Event) -> None:
        """Fold a single event (a part of a turn this peer is still making) without recording
        it as held: `record` does, once the turn is closed."""
        b = ev.body
        job = getattr(b, "job", None)
        # A job in `jobs` is neither deleted nor compacted (both take it out, whatever comes
        # later): its events skip the two tests, which may ask the job index.
        live = job is not None and job in self.jobs
        gone = not live and job is not None and bool(self.deleted or self.compacted) and (
            job in self.deleted or job in self.compacted)
        if (self.lanes_on and job is not None and ev.type in LANE_PARTS
                and not (_gone_task_fold if gone else _task_fold)(self, ev, job)):
            return
        _APPLY[type(b)](self, ev, b)
        if gone:
            _forget(self, ev, cast(str, job))

    def record(self, ev: Event) -> None:
        """Record an event as held (its parts folded already), moving its origin's head."""
        self.events[ev.id] = ev
        self.entered += 1
        log = self.by_origin[ev.origin]
        log[ev.seq] = ev
        self.sums.touch(ev.origin, ev.seq)
        self._advance(ev.origin, self.heads.get(ev.origin, 0))
        if ev.seq > self.heads[ev.origin]:
            self.beyond.setdefault(ev.origin, set()).add(ev.seq)
        elif (self.compacted or self.deleted) and self.gone(ev):  # a straggler of a job
            self._evict_one(ev, recent=True)  # compacted or deleted (its JOB_DELETED too)
        if self.archive is not None:  # (with a log to serve what leaves memory)
            self._age(ev)

    def gone(self, ev: Event, also: set[str] | None = None) -> bool:
        """Is every job `ev` is about compacted or deleted (or in `also`), and is it about
        one at least? Such an event leaves memory once its origin's head covers it.

        Deleted jobs count as compacted here: a job deleted before it was compacted never
        is (its record is gone), so without them its events (every TURN, CHUNK_DONE with
        its inline bytes) stayed in memory for ever. Unlike compaction (which follows each
        peer's recent history) this is decided by the events alone: every peer that holds
        the same events, JOB_DELETED among them, holds the same ones in memory after its
        next sweep (`compact(())`, at most one compaction pass after the JOB_DELETED), so
        their content digests agree. A peer of the previous release keeps them: see
        peer.log.compact.Compactor for what anti-entropy then does."""
        jobs = {j for p in ev.singles if (j := getattr(p.body, "job", None)) is not None}
        if not jobs:
            return False
        c, d, live = self.compacted, self.deleted, self.jobs
        for j in jobs:
            if also is not None and j in also:
                continue
            if j in live or not (j in c or j in d):  # (a live job is neither: see fold_only)
                return False
        return True

    def _evict_one(self, ev: Event, recent: bool = False) -> None:
        """`ev` leaves memory (it stays held): it leaves the content digests too, so that
        they cover the same events on every peer that compacted the same jobs, restarted or
        not (an evicted event can no longer be compared nor replaced, but for a `recent`
        straggler kept in `_gone_recent`)."""
        del self.events[ev.id]
        del self.by_origin[ev.origin][ev.seq]
        self.sums.touch(ev.origin, ev.seq)
        if ev.seq > self.evicted.get(ev.origin, 0):
            self.evicted[ev.origin] = ev.seq
        if self.on_evict is not None:
            self.on_evict(ev)
        if recent and self.lanes_on and (SEPARATOR in ev.origin
                                         or ev.type is EventType.JOB_MEMBERS):
            self._keep_recent(ev)  # (its notes stay: a refold undoes them)
        elif self._gone_undo:
            self._undo_gone(ev.id)

    def _keep_recent(self, ev: Event) -> None:
        """Keep gone job's straggler `ev` aside (`_gone_recent`); past the bound the first
        kept leaves it: what that one changed is for good."""
        self._gone_recent[ev.id] = ev
        if len(self._gone_recent) > GONE_RECENT_MAX:
            self._undo_gone(self._gone_recent.popitem(last=False)[0])

    def left_log(self, ids: Iterable[tuple[str, int]]) -> None:
        """The events `ids` left the log (peer.log.compact.Compactor's drop): those kept aside
        as gone jobs' stragglers (`_gone_recent`) go too, for good (as one leaving the window:
        `_undo_gone`), so that no rival of one is settled and written back into the log below
        its origin's floor (review rr of session 50, RR-7)."""
        recent = self._gone_recent
        if recent:
            for i in ids:
                if recent.pop(i, None) is not None:
                    self._undo_gone(i)

    def _undo_gone(self, ev_id: tuple[str, int]) -> None:
        """The event `ev_id` left memory: what its fold changed of gone jobs is for good (its
        `_gone_undo` notes go; the peers it named vouched for already are kept)."""
        for kind, job, _, what in self._gone_undo.pop(ev_id, ()):
            if kind == UNDO_NAMED:
                self._gone_kept.setdefault(job, set()).update(what)

    def straggler(self, ev_id: tuple[str, int]) -> Event | None:
        """The content held for `ev_id` if it is a gone job's straggler that left memory
        as it came and is still kept aside (`_gone_recent`), else None."""
        return self._gone_recent.get(ev_id)

    def drops_copy(self, origin: str, seq: int, h: bytes) -> bool:
        """Would a merge drop unchanged a received copy of content hash `h` at (origin, seq):
        the very content held in memory, signed, or an id that left memory for good (below
        a head, not a gone job's straggler kept aside: a merge drops any content of it)?
        Gossip leaves such a copy out undecoded (`MemberKeys.accept`'s `holds`, session 51)."""
        ev = self.events.get((origin, seq))
        if ev is None:
            return self.holds((origin, seq)) and self.straggler((origin, seq)) is None
        hash_at = getattr(ev.att, "hash_at", None)  # (its signed batch: signing.Batch)
        return hash_at is not None and hash_at(seq) == h

    def content(self, ev_id: tuple[str, int]) -> Event:
        """The content held in memory for `ev_id`: in `events`, or a gone job's straggler
        kept aside (`straggler`); KeyError if neither."""
        ev = self.events.get(ev_id)
        return ev if ev is not None else self._gone_recent[ev_id]

    def _undo_note(self, ev: Event | None, change: GoneUndo) -> None:
        """`ev`'s fold made `change` to a gone job's facts or wait (`_gone_undo`)."""
        if ev is not None:
            self._gone_undo.setdefault(ev.id, []).append(change)

    def _gone_undone(self) -> tuple[OrderedDict[str, GoneLanes], OrderedDict[str, GoneWait],
                                    int, dict[str, GoneLanes]]:
        """The gone jobs' facts, waits, their cost and `tomb_lanes` without what the events
        held in memory changed of them (`_gone_undo`, undone last first), copies sharing
        nothing with this state's: where a refold starts (review r3 of session 48, F5)."""
        facts = OrderedDict((j, f.frozen()) for j, f in self._gone_lanes.items())
        waits = OrderedDict((j, w.copy()) for j, w in self._gone_waits.items())
        tombs = {j: f.frozen() for j, f in self.tomb_lanes.items()}
        n = self._gone_wait_n
        recent = self._gone_recent  # (folded again too: `refold`)
        changes = [c for i, cs in self._gone_undo.items() if i in self.events or i in recent
                   for c in cs if c[0] != UNDO_NAMED]
        shrunk = set[str]()
        for kind, job, who, what in reversed(changes):
            if kind == UNDO_GROWN:
                for table in (facts, tombs):
                    if (f := table.get(job)) is not None:
                        table[job] = replace(f, members=frozenset(f.members - who),
                                             vouched=frozenset(f.vouched - what))
                shrunk.add(job)
            elif (w := waits.get(job)) is not None:
                d = _undo_wait(w, kind, who, what, self.wait_journal)
                w.n += d
                n += d
        if self.on_members is not None:  # (what the compactor writes: not the loser's)
            for job in shrunk:
                if (f := facts.get(job)) is not None:
                    self.on_members(job, f)
        return facts, waits, n, tombs

    def compactable(self, jobs: Iterable[str]) -> list[Event]:
        """The events that leave memory when `jobs` are compacted: held up to their origin's
        head, and every job they are about compacted or deleted (`gone`)."""
        also = set(jobs)
        return [ev for ev in self.events.values()
                if ev.seq <= self.heads.get(ev.origin, 0) and self.gone(ev, also)]

    def forget_drops(self, upto: Mapping[str, int]) -> int:
        """Forget the UNPROVIDEs (`_dropped`) of an origin up to seq `upto[origin]`, which
        left the log (peer.log.jobless: no event of that origin that could provide a CID
        with a lower seq was left there, nor in memory; every live member held them, so a
        snapshot one of them signs no longer lists the origin, see `unprovided`) and which
        its head covers (none earlier can still come). Returns how many were forgotten.
        Without this, one entry per CID ever collected stayed."""
        heads = self.heads
        old = [k for k, order in self._dropped.items()
               if order[2] <= min(upto.get(k[1], 0), heads.get(k[1], 0))]
        for k in old:
            del self._dropped[k]
        return len(old)

    def compact(self, jobs: Iterable[str]) -> list[Event]:
        """Jobs whose record is now in the job index: empty their per-job tables and let the
        `compactable` events leave memory (they stay on disk until dropped); returns them.
        The cache entries they made stay. With no new job, it sweeps what is left (after a
        replay, or a JOB_DELETED: the events of a deleted job held before it)."""
        new = set(jobs)  # (the job index holds them already: asking it tells nothing)
        self.compacted |= new
        held: list[Event] = []
        for job in new:
            held += self._untasked.get(job, ())
            self._unlist(job)
        if new:
            for table in (self.splits, self.task_done, self.partials):
                for k in [k for k in table if k[0] in new]:
                    del table[k]
            for job in new:
                self.chunks.drop_job(job)
        for part in held:  # decided as if they came now, as at a deletion (`_job_deleted`)
            self.fold_only(part)
        out = self.compactable(())
        for ev in out:
            self._evict_one(ev)
        return out

    def tier(self, outputs: Callable[[str], Any], outputs_src: Callable[[str], Any],
             cache: Callable[[str], Any], cache_src: Callable[[str], Any],
             providers: Callable[[str], set[str] | None],
             deleted: Callable[[str], Any] | None = None, some_deleted: bool = False,
             read_max: int | None = None,
             screens: Mapping[str, Callable[[list[str]], None]] | None = None) -> None:
        """Read the cache tables' entries and the tombstones missing from memory from the
        job index (each lookup returns None for a key it does not hold); each table keeps a
        bounded number of them (`read_max`, READ_MAX without it: `Tiered.read_max`).
        `some_deleted`: the index holds a tombstone. `screens`: table name -> its
        `Tiered.screen` (peer.log.jobindex.JobIndex.screen)."""
        tables = {"outputs": (self.outputs, outputs),
                  "outputs_src": (self._outputs_src, outputs_src),
                  "cache": (self.cache, cache), "cache_src": (self._cache_src, cache_src),
                  "providers": (self.providers, providers), "deleted": (self.deleted, deleted)}
        for table, fn in tables.values():
            if isinstance(table, Tiered) and fn is not None:
                table.lookup = fn
                if read_max is not None:
                    table.bound(read_max)
        for name, screen in (screens or {}).items():
            if isinstance(table := tables[name][0], Tiered):
                table.screen = screen
        if isinstance(self.deleted, Tombstones):
            self.deleted.some = self.deleted.some or some_deleted

    def spill_deleted(self) -> dict[str, Order]:
        """The tombstones in memory, which the caller has just written to the job index:
        memory lets them go (read on demand). Returns them."""
        tombs = dict(dict.items(self.deleted))
        for job in tombs:
            self.deleted.pop(job, None)
            self.tomb_lanes.pop(job, None)
            if self._gone_kept and job not in self._gone_lanes:
                self._gone_kept.pop(job, None)
        if isinstance(self.deleted, Tombstones) and tombs:
            self.deleted.some = True
        return tombs

    def take_providers(self, rows: Iterable[tuple[str, str]]) -> None:
        """(cid, origin) provider rows a snapshot brought, now in the job index: a CID's set
        changed here (PROVIDE, UNPROVIDE: not yet in the index) takes them in, but for an
        origin whose UNPROVIDE of it was folded (a later PROVIDE is in the set already);
        the other sets leave memory (read on demand, the rows included)."""
        t = self.providers
        for c, o in rows:
            if isinstance(t, Tiered) and not t.is_live(c):
                t.pop(c, None)
            elif dict.__contains__(t, c) and (c, o) not in self._dropped:
                dict.__getitem__(t, c).add(o)

    def unprovided(self, rows: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of (cid, origin) provider rows a snapshot brought, those whose origin's UNPROVIDE
        of the CID was folded here: not taken into the job index either (a set spilled there,
        or deleted with the cache entries of its CID, would take back an origin that dropped
        it; a later PROVIDE of it is folded already)."""
        dropped = self._dropped
        return {(r[0], r[1]) for r in rows if (r[0], r[1]) in dropped} if dropped else set()

    def spill(self, outputs: Iterable[str], items: Iterable[str], cids: Iterable[str]) -> None:
        """These entries are in the job index now: memory lets them go (read on demand)."""
        for k in outputs:
            self.outputs.pop(k, None)
            self._outputs_src.pop(k, None)
        for k in items:
            self.cache.pop(k, None)
            self._cache_src.pop(k, None)
        for c in cids:
            self.providers.pop(c, None)

    def _advance(self, origin: str, head: int) -> None:
        """Set `origin`'s head to `head` moved on over the seqs held after it. `beyond` holds
        no seq up to the head it had: only those up to the new one leave it (read as a range
        where that is shorter: a snapshot's 25,500 events held past a gap, its scan at every
        event was 5 s of the take's 6.2 on the loop). A mesh origin's head is kept in
        `mesh_heads` too; a lane's origin joins its job's `lanes`."""
        log = self.by_origin.get(origin, {})
        beyond = self.beyond.get(origin)
        heads, mesh = self.heads, self.mesh_heads
        old = heads.get(origin, 0)
        while head + 1 in log:
            head += 1
        if origin in mesh:
            mesh[origin] = head
        elif origin not in heads:  # a new origin: a lane of a job, or of the mesh
            lane = lane_of(origin)
            if lane is None:
                mesh[origin] = head
            else:
                self.lanes.setdefault(lane[1], set()).add(origin)
                self.peer_lanes.setdefault(lane[0], set()).add(origin)
        heads[origin] = head
        if beyond and head > old:
            held = len(beyond)
            beyond.difference_update(range(old + 1, head + 1) if head - old < held
                                     else [q for q in beyond if q <= head])
            if len(beyond) < held:
                self.gaps_filled += 1
            if not beyond:
                del self.beyond[origin]

    def forget(self, ev_id: tuple[str, int]) -> None:
        """Stop holding an event that was never folded (an unknown type's): it is no longer
        served. Its seq stays counted in the heads if it was (see `raise_floor`)."""
        ev = self.events.pop(ev_id, None)
        if ev is None:
            return
        if ev.known:
            raise ValueError(f"event {ev_id} was folded: it cannot be forgotten")
        log = self.by_origin.get(ev.origin)
        if log is not None:
            log.pop(ev.seq, None)
        self.sums.touch(ev.origin, ev.seq)
        beyond = self.beyond.get(ev.origin)
        if beyond is not None:
            beyond.discard(ev.seq)
            if not beyond:
                del self.beyond[ev.origin]

    def replace(self, ev: Event) -> bool:
        """Hold `ev` in place of the other content held for its (origin, seq) (the conflict
        rule's winner, peer.log.contents.wins). True if the state is up to date; False if
        the loser was folded: its effects stay until `refold` (no fold can be undone in
        place). A winner of a known type replacing an unknown one is folded now (if its
        applier raises, nothing changes)."""
        if ev.id not in self.events:  # a straggler that left memory (`_gone_recent`): the
            self._gone_recent.pop(ev.id)  # refold undoes its notes and folds the winner
            self.events[ev.id] = ev
            self.entered += 1
            self.by_origin[ev.origin][ev.seq] = ev
            self.sums.touch(ev.origin, ev.seq)
            return False
        old = self.events[ev.id]
        if ev.known and not old.known:
            for part in ev.singles:
                self.fold_only(part)
        self.events[ev.id] = ev
        self.entered += 1
        self.by_origin[ev.origin][ev.seq] = ev
        self.sums.touch(ev.origin, ev.seq)
        if self.archive is not None:  # a jobless winner leaves memory with its window
            self._age(ev)
        return not old.known

    def refold(self) -> list[tuple[Event, Exception]]:
        """Fold the held events again from an empty state, in place (the objects that hold
        this state keep it): afterwards it is what a peer that never held a replaced loser
        holds. Floors are kept. An event whose fold raises stays held, unfolded, and is
        returned with its error (the same on every peer: the fold is deterministic)."""
        # The tombstones whose JOB_DELETED left memory are not folded again: kept as they are
        # (and those in the job index are read from it).
        tombs = {j: o for j, o in self.deleted.items() if (o[1], o[2]) not in self.events}
        gone, waits, wait_n, tomb_lanes = self._gone_undone()  # (review r3 of s48, F5)
        fresh = MeshState(compacted=self.compacted, evicted=dict(self.evicted),
                          archive=self.archive, on_evict=self.on_evict,
                          on_members=self.on_members,
                          deletions=self.deletions, jobless_window=self.jobless_window,
                          gaps_filled=self.gaps_filled, entered=self.entered,
                          lanes_on=self.lanes_on, me=self.me,
                          _gone_lanes=gone, _gone_waits=waits, _gone_wait_n=wait_n,
                          wait_journal=self.wait_journal, _gone_kept=self._gone_kept,
                          tomb_lanes={j: f for j, f in tomb_lanes.items() if j in tombs},
                          gone_lookup=self.gone_lookup)
        for name in ("outputs", "_outputs_src", "cache", "_cache_src", "providers", "deleted"):
            old, new = getattr(self, name), getattr(fresh, name)
            if isinstance(old, Tiered) and isinstance(new, Tiered):
                new.lookup = old.lookup  # the job index's entries (compaction)
                new.screen = old.screen
                new.read_max = old.read_max
        if isinstance(self.deleted, Tombstones) and isinstance(fresh.deleted, Tombstones):
            fresh.deleted.some = self.deleted.some
        fresh.deleted.update(tombs)
        # Likewise the UNPROVIDEs that left memory (peer.log.jobless): still remembered.
        fresh._dropped = {k: o for k, o in self._dropped.items()
                          if (o[1], o[2]) not in self.events}
        failed: list[tuple[Event, Exception]] = []
        for ev in self.events.values():
            try:
                fresh.apply(ev)
            except Exception as e:  # kept held (heads and sums stay right), reported
                fresh.record(ev)
                failed.append((ev, e))
        failed += fresh._fold_recent(self._gone_recent.values())
        _gone_revouch(fresh)  # (review r3 of session 49, A5)
        for origin, seq in self.floors.items():
            fresh.raise_floor(origin, seq)
        if self.evicted:  # events that left memory (compaction) are still held below heads
            for origin, head in self.heads.items():
                fresh.raise_floor(origin, head)
        for origin, seq in self.events.keys() - fresh.events.keys():  # left memory now (a
            self.sums.touch(origin, seq)  # deleted job's events waiting for their sweep)
        fresh.sums = self.sums  # the same events are held: their digests stay right
        before = {j: e.id for j, e in self.ended.items()}
        on_end = self.on_end
        self.__dict__.update(fresh.__dict__)
        self.on_end = on_end
        self._tell_new_ends(before)
        return failed

    def _fold_recent(self, kept: Iterable[Event]) -> list[tuple[Event, Exception]]:
        """A refold's last fold: the stragglers kept aside (`_gone_recent`), folded again as
        they were, after the events that made their jobs gone, and kept aside here (not held
        in memory). Returns those whose fold raised, with the error."""
        failed: list[tuple[Event, Exception]] = []
        for ev in kept:
            try:
                for part in ev.singles:
                    self.fold_only(part)
            except Exception as e:
                failed.append((ev, e))
            self._keep_recent(ev)
        return failed

    def _tell_new_ends(self, before: Mapping[str, tuple[str, int]]) -> None:
        """`on_end` told of each job's end a refold took that was not its end `before` (not
        of those taken again: review r2 L5)."""
        if self.on_end is not None:
            for job, ev in self.ended.items():
                if before.get(job) != ev.id:
                    self.on_end(ev)

    def content_sum(self, scope: Collection[str] | None = None) -> str:
        """One digest of the held contents of the mesh origins (no `scope`) or of the lanes
        of the jobs in `scope` (peer.log.contents)."""
        return self.sums.total(self.by_origin, scope)

    def content_digests(self, scope: Collection[str] | None = None) -> dict[str, str]:
        """Origin -> the digest of its held contents, for the origins of `scope` (as
        `content_sum`'s)."""
        return self.sums.digests(self.by_origin, scope)

    def block_digests(self, origin: str, scope: Collection[str] | None = None,
                      ) -> dict[int, str]:
        """Block -> the digest of `origin`'s held contents in it (non-empty blocks only);
        none for an origin out of `scope` (`in_scope`)."""
        if not in_scope(origin, scope):
            return {}
        self.sums.refresh(self.by_origin)
        return dict(self.sums.blocks.get(origin, {}))

    def block_sizes(self, origin: str, scope: Collection[str] | None = None,
                    ) -> dict[int, int]:
        """Block -> how many of `origin`'s events up to its head are in memory there (of
        `block_digests`' blocks; those wholly beyond the head left out: 0). At equal heads
        two peers hold the same seqs up to it, so counts that differ are events one of them
        let go of from memory (compaction, `compact`); an event beyond a gap is never let go
        of, and is what an exchange may bring (peer.mesh.antientropy)."""
        if not in_scope(origin, scope):
            return {}
        self.sums.refresh(self.by_origin)
        head = self.heads.get(origin, 0)
        out: dict[int, int] = {}
        for b, n in self.sums.sizes.get(origin, {}).items():
            seqs = block_seqs(b)
            if seqs[-1] <= head:
                out[b] = n
            elif seqs[0] <= head:  # (the head's block: counted up to the head)
                log = self.by_origin.get(origin, {})
                out[b] = sum(1 for q in range(seqs[0], head + 1) if q in log)
        return out

    def block_digest(self, origin: str, block: int) -> str:
        """The digest of `origin`'s held contents in `block` ("" if none), computed now."""
        return block_digest(self.by_origin.get(origin, {}), block)

    def events_in(self, origin: str, blocks: Iterable[int],
                  scope: Collection[str] | None = None) -> list[Event]:
        """`origin`'s held events in these blocks, in seq order; none for an origin out of
        `scope` (`in_scope`: an asker names the origin, a lane's is never served
        mesh-wide)."""
        if not in_scope(origin, scope):
            return []
        log = self.by_origin.get(origin, {})
        return [e for b in sorted(set(blocks)) for q in block_seqs(b)
                if (e := log.get(q)) is not None]

    def raise_floor(self, origin: str, seq: int) -> None:
        """Count every seq of `origin` up to `seq` as held (the caller knows they are held
        or were set aside on purpose); the head moves on over what follows it."""
        if seq <= self.floors.get(origin, 0):
            return
        self.floors[origin] = seq
        self._advance(origin, max(self.heads.get(origin, 0), seq))
        if self.archive is not None:
            self._let_go_jobless(origin)

    def _age(self, ev: Event) -> None:
        """`ev` was recorded (or replaced a rival): if jobless (peer.log.jobless) it joins
        its origin's jobless events in memory; those a window behind the head (which `ev` may
        have moved) leave."""
        if leaves_memory(ev):  # (an IPNS_RECORD too, since session 50: its fold is nothing)
            seqs = self._jobless.setdefault(ev.origin, [])
            if not seqs or seqs[-1] < ev.seq:
                seqs.append(ev.seq)
            elif ev.seq not in seqs:  # (past a gap, or a rival's winner: rare)
                bisect.insort(seqs, ev.seq)
        self._let_go_jobless(ev.origin)

    def _let_go_jobless(self, origin: str) -> None:
        """The jobless events of `origin` in memory `jobless_window` seqs or more behind its
        head leave it (they stay held; the compactor indexes what they made): decided by the
        held events alone, the same on every peer that holds them, and late enough that the
        conflict rule compares a rival content of one while its origin is within a window."""
        seqs = self._jobless.get(origin)
        if not seqs:
            return
        upto = self.heads.get(origin, 0) - self.jobless_window
        n = bisect.bisect_right(seqs, upto)
        if not n:
            return
        log = self.by_origin.get(origin, {})
        for q in seqs[:n]:
            held = log.get(q)
            if held is not None and leaves_memory(held):
                self._evict_one(held)
        del seqs[:n]

    def events_after(self, vv: dict[str, int] | Any, limit: int,
                     scope: Collection[str] | None = None) -> list[Event]:
        """Events with seq above `vv[origin]` (a version vector), at most limit: first those
        up to our own heads, oldest first, then those beyond a gap. The asker may hold some
        events beyond its heads already; serving ours within the heads first, oldest first,
        always includes one that moves its heads on, so a peer always catches up. Of the
        mesh origins only without `scope` (a lane is never served mesh-wide), else of the
        lanes of the jobs in `scope` only.

        Served from the per-origin index (heads, `beyond`): an origin the asker is level
        with costs one comparison (an in-sync digest is O(origins)); one it lags takes at
        most `limit` events from its seq on, and the origins are merged lazily by
        (hlc, origin, seq) (an origin's hlc grows with its seq), nothing else sorted."""
        if limit <= 0:
            return []
        heads = self.mesh_heads if scope is None else self.lane_heads(scope)
        runs: list[Iterator[Event]] = []
        for origin, head in heads.items():
            have = vv.get(origin, 0)
            if have < head:
                if self.archive is not None and have < self.evicted.get(origin, 0):
                    runs.append(iter(self.archive(origin, have, head, limit)))  # from disk
                else:
                    runs.append(self._run(origin, have, head, limit))
        out = list(itertools.islice(heapq.merge(*runs, key=_order), limit))
        if len(out) < limit and self.beyond:  # (an origin held has a head, 0 at least)
            rest = [self.by_origin[o][q] for o, seqs in self.beyond.items() if o in heads
                    for q in seqs if q > vv.get(o, 0)]
            out += heapq.nsmallest(limit - len(out), rest, key=_order)
        return out

    def lane_heads(self, jobs: Iterable[str]) -> dict[str, int]:
        """The heads of the lanes of `jobs` held (lane origin -> head)."""
        heads = self.heads
        return {o: heads[o] for j in jobs for o in self.lanes.get(j, ())}

    def forget_lanes(self, job: str) -> list[str]:
        """Forget `job`'s lanes (their events left the log: peer.log.compact.Compactor's drop
        of a compacted lanes job): their heads, floors, evicted marks, held seqs and content
        digests, and the job's `lanes`, `peer_lanes`, `members_of` and `ended` entries, so
        that what the state keeps of lanes is bounded by the jobs not yet dropped. A lane
        event of the job that comes later is refused at the door (`lane_closed`). Returns
        the lane origins."""
        origins = sorted(self.lanes.pop(job, ()))
        for origin in origins:
            peer = peer_of(origin)
            held = self.peer_lanes.get(peer)
            if held is not None:
                held.discard(origin)
                if not held:
                    del self.peer_lanes[peer]
            for q in self.by_origin.pop(origin, {}):
                self.events.pop((origin, q), None)
                if self._gone_undo:  # (left memory: review r3 of session 49, A1)
                    self._undo_gone((origin, q))
        if self._gone_recent and origins:
            lanes = set(origins)
            for i in [i for i in self._gone_recent if i[0] in lanes]:
                del self._gone_recent[i]
                self._undo_gone(i)
        for origin in origins:
            for table in (self.heads, self.floors, self.evicted, self.beyond):
                table.pop(origin, None)
            self.sums.forget(origin)
        for per_job in (self.members_of, self.ended, self._ends, self.listed,
                        self.end_outputs, self._vouched, self._adds, self._aside,
                        self._aside_done):
            per_job.pop(job, None)
        return origins

    def end_body(self, ev: Event) -> JobEnded:
        """JOB_ENDED `ev`'s body as folded: with the outputs and producers of its `listing`
        once `fold_listing` folded them, else as the event says (none while listed); the
        job's winning one (`ended`) with each task's earliest output of its JOB_ENDEDs
        folded inline whose origin is a vouched member (`end_outputs`; its own listing's
        counted too)."""
        b = ev.body_as(JobEnded)
        got = self.listed.get(b.job) if b.listing is not None else None
        if got is not None and got[0] == ev.id:
            b = got[1]
        won, merged = self.ended.get(b.job), self.end_outputs.get(b.job)
        if won is None or won.id != ev.id or not merged:
            return b
        outputs = {t: least(o, merged.get(t)) or o
                   for t, o in b.outputs.items()}  # (its listing's are not in `merged`)
        return b if outputs == b.outputs else replace(b, outputs=outputs)

    def unlisted(self, job: str) -> str | None:
        """The `listing` CID of `job`'s JOB_ENDED (the winning one) while its outputs are
        not folded (`fold_listing`); None if it lists none, or they are."""
        ev = self.ended.get(job)
        if ev is None:
            return None
        listing = ev.body_as(JobEnded).listing
        got = self.listed.get(job)
        return None if listing is None or (got is not None and got[0] == ev.id) else listing

    def fold_listing(self, ev: Event, full: JobEnded) -> str | None:
        """Fold JOB_ENDED `ev`'s body with what its `listing` holds (`full`: read and
        checked as the event's bounds say, `peer.jobs.ending.listing_body`) as an inline
        JOB_ENDED's outputs and producers are (`_end`), and keep it for `end_body`. Not
        folded, with the reason returned, unless `ev` is its job's JOB_ENDED (`ended`) and
        `end_refusal` admits `full` (it names only what the job made, in its members'
        lanes: monotone, so one refused may be admitted once more events are folded).
        Marked folded (`listed`) only once all of it is: an error part way (e.g. DataError
        from the job index) leaves it unlisted, folded again from the start when read
        again (the merges are first-wins by order, so folding a part twice changes
        nothing)."""
        b = ev.body_as(JobEnded)
        if b.listing is None or (won := self.ended.get(b.job)) is None or won.id != ev.id:
            return "it is not the job's JOB_ENDED with a listing"
        why = end_refusal(self, ev, full)
        if why is not None:
            return why
        _end_outputs(self, ev, full, inline=False)
        self.listed[b.job] = (ev.id, full)
        if self.on_end is not None:
            self.on_end(ev)
        return None

    def _run(self, origin: str, have: int, head: int, limit: int) -> Iterator[Event]:
        """`origin`'s events held in (have, head], in seq order, at most `limit` (the seqs
        set aside under a floor are skipped). Once more seqs were missed than are held (a
        floor raised over seqs let go, as the unknown-type cap's: no evicted mark, no archive
        read), the held seqs left are read instead of every seq of the range."""
        log = self.by_origin.get(origin, {})
        n = missed = 0
        for q in range(have + 1, head + 1):
            ev = log.get(q)
            if ev is None:
                missed += 1
                if missed > len(log):
                    for k in heapq.nsmallest(limit - n, (k for k in log if q < k <= head)):
                        yield log[k]
                    return
                continue
            yield ev
            n += 1
            if n >= limit:
                return

    # -- helpers used by the appliers -------------------------------------------------
    def _first(self, table: dict[Any, Event], key: Any, ev: Event) -> None:
        cur = table.get(key)
        if cur is None or ev.order < cur.order:
            table[key] = ev

    @staticmethod
    def _merge_first(table: dict[str, Any], srcs: dict[str, tuple[int, str, int]],
                     entries: Mapping[str, Any], order: Order) -> None:
        # Values for one key should be equal (content-addressed); if a buggy or
        # non-deterministic task disagrees, the earliest event wins everywhere.
        for k, v in entries.items():
            src = srcs.get(k)
            if src is None or order < src:
                table[k] = v
                srcs[k] = order

    def cache_since(self, hlc: int) -> Iterator[str]:
        """CIDs of the item results whose winning event is from `hlc` on."""
        for k, src in self._cache_src.items():
            v = self.cache.get(k)
            if src[0] >= hlc and isinstance(v, dict) and isinstance(v.get("c"), str):
                yield v["c"]

    def chunk(self, job: str, task: str, chunk: int) -> ChunkState:
        """Chunk `chunk` of the winning split of a task (events about chunks of a losing
        split, made by a peer that split concurrently, are kept apart and never count)."""
        sid = self.split_id(job, task)
        if sid is None:
            return NO_CHUNK
        return self.chunks.get(ChunkKey(job, task, sid[0], sid[1], chunk), NO_CHUNK)

    def split_chunks(self, job: str, task: str) -> Mapping[int, ChunkState]:
        """Chunk index -> state of the chunks of the task's winning split that an event is
        about, unordered (every other chunk is NO_CHUNK): what a reader of a whole split
        walks, so that its cost follows the events, not the chunks the split declares.
        Events about a chunk past the split's last (a member may send them) do not count."""
        split = self.splits.get((job, task))
        if split is None:
            return {}
        held = self.chunks.of_split((job, task, *split.id))
        n = n_chunks(split)
        if all(i < n for i in held):
            return held
        return {i: c for i, c in held.items() if i < n}

    def failed_chunks(self, job: str, task: str) -> AbstractSet[int]:
        """The indexes of the chunks of the task's winning split that have a failure (a
        chunk without one is neither exhausted nor reopened; past its last: not counted).
        A view of the chunk table's index while no chunk past the last has a state."""
        split = self.splits.get((job, task))
        if split is None:
            return frozenset()
        sk = (job, task, *split.id)
        failed = self.chunks.failed(sk)
        n = n_chunks(split)
        return failed if self.chunks.top(sk) < n else frozenset(i for i in failed if i < n)

    def implicit(self, split: Event) -> bool:
        """Is `split` an implicit split (`implicit_splits`: no peer made it)? Its id is its
        job's JOB_SUBMITTED's, which no real split's is."""
        job = self.jobs.get(split.payload["job"])
        return job is not None and job.id == split.id

    def split_id(self, job: str, task: str) -> tuple[str, int] | None:
        s = self.splits.get((job, task))
        return s.id if s else None


def n_chunks(split: Event) -> int:
    """How many chunks a (winning) split has."""
    b = split.body
    return len(b.sizes) if isinstance(b, TaskSplitRef) else len(split.body_as(TaskSplit).chunks)


def _order(e: Event) -> tuple[int, str, int]:
    return (e.hlc, e.origin, e.seq)


def _job(s: MeshState, ev: Event, b: JobSubmitted) -> None:
    if submitter_problem(ev.origin, b.job) is not None:  # a rival of a bound id (session 46,
        return  # helper f): the door refuses it; one stored is held, never folded
    was = s.jobs.get(b.job)
    s._first(s.jobs, b.job, ev)
    if s.lanes_on:
        if b.members is not None:  # a lanes job (every JOB_SUBMITTED's: order-free,
            s.members_of.setdefault(b.job, set()).update(b.members)  # grow-only)
            s._lanes_tasks.setdefault(b.job, set()).update(
                str(t["name"]) for t in b.workflow["tasks"])
            _vouch(s, b.job, b.members)
        if was is not None and s.jobs[b.job] is ev:  # an earlier rival won: its members
            _rerank(s, b.job)  # rank first now (`end_rank`)
        _tasks_due(s, b.job)
        _ends_due(s, b.job)
        if not s.runs(b.job):  # no implicit split nor implied claim: a JOB_MEMBERS
            s._unjoined.setdefault(b.job, []).append(ev)  # adding us makes them
            return
    _implied(s, ev, b)


def _implied(s: MeshState, ev: Event, b: JobSubmitted) -> None:
    """Fold a JOB_SUBMITTED's implicit splits and the claims it implies."""
    for split in implicit_splits(ev, b):
        s._first(s.splits, (b.job, split.body_as(TaskSplit).task), split)
    for claim in implied_claims(ev):  # (of a job saying `claimed`: CLAIMED_FEATURE)
        _claim(s, claim, claim.body_as(Claim))


def implicit_splits(ev: Event, b: JobSubmitted) -> list[Event]:
    """The implicit splits of a JOB_SUBMITTED whose workflow says `"splits": "implicit"`
    (only while every live member folds them: Node.implicit_splits): one per task without
    input (no `depends`, no `cid`), the one whole chunk of a TASK_SPLIT that no peer emits.
    Each is a part event with the JOB_SUBMITTED's origin, seq and hlc (its id is the job's:
    the CLAIMs carry that as `split`; its order is the job's, earlier than any real split of
    the task, which loses to it). Folded into `splits` only, never held: the log and its
    digests are as without them; refolding the JOB_SUBMITTED (a restart) makes them again."""
    out = []
    for t in implicit_roots(b.workflow):
        payload: dict[str, Any] = {"job": b.job, "task": t, "input": None,
                                   "chunks": [[]], "kept": {}}  # (a split of this release)
        out.append(part_event(ev.origin, ev.seq, ev.hlc, EventType.TASK_SPLIT, payload,
                              TaskSplit(b.job, t, None, ((),), {})))
    return out


def _cancel(s: MeshState, ev: Event, b: JobCancelled) -> None:
    s._first(s.cancelled, b.job, ev)


def _ranks_first(s: MeshState, job: str, ev: Event, peer: str | None,
                 cur: Event | None) -> bool:
    """Does `ev` (made in the lane of `peer` not vouched for, None: vouched) rank before
    `cur` (None: nothing yet) by (made in a lane not vouched for, order): a self-added
    member's ranks after every vouched member's, whatever their orders."""
    return cur is None or ((peer is not None, ev.order)
                           < (_unvouched(s, job, cur) is not None, cur.order))


def _split(s: MeshState, ev: Event, b: TaskSplit | TaskSplitRef) -> None:
    """A task's split (`splits`) is the first by (not made in a vouched lane, order), as a
    TASK_DONE is (`_task_done`): a self-added member's, backdated, wins no task a vouched
    member split (its chunks, which the vouched members would run and assemble, are its
    word); where none did (an orphan takeover) it still does. One of a live job's lane not
    vouched for waits in `_aside_done` and is ranked again once its peer is (`_vouch`).
    An implicit split is its JOB_SUBMITTED's (no lane: vouched). Session 50, helper f."""
    peer = _unvouched(s, b.job, ev)
    k = (b.job, b.task)
    if _ranks_first(s, b.job, ev, peer, s.splits.get(k)):
        s.splits[k] = ev
    if peer is not None and b.job in s.jobs:
        s._aside_done.setdefault(b.job, {}).setdefault(peer, []).append(ev)


def _claim(s: MeshState, ev: Event, b: Claim) -> None:
    s.chunks[b.key].claims[b.attempt].append(ev)


def _renew(s: MeshState, ev: Event, b: Renew) -> None:
    pass  # liveness only: the scheduler notes when it heard it


def _ipns_record(s: MeshState, ev: Event, b: IpnsRecord) -> None:
    pass  # held by the IPNS layer (peer.ipfs.ipns), which a listener hands it to


def _job_members(s: MeshState, ev: Event, b: JobMembers) -> None:
    if not s.lanes_on:
        return  # held, not folded (`MeshState.lanes_on`)
    if b.job not in s.jobs and (s.deleted or s.compacted) and (
            b.job in s.deleted or b.job in s.compacted):
        _gone_members(s, ev, b)
        return
    s.members_of.setdefault(b.job, set()).update(b.add)  # (grow-only: order-free)
    by = peer_of(ev.origin)
    if by in s._vouched.get(b.job, ()):
        _vouch(s, b.job, b.add)
    else:  # (walked once `by` is vouched for: the vouched set only grows)
        s._adds.setdefault(b.job, {}).setdefault(by, set()).update(b.add)
    if s.me in b.add:  # we joined: the implicit splits and claims the job's make
        for sub in s._unjoined.pop(b.job, ()):
            _implied(s, sub, sub.body_as(JobSubmitted))
    _tasks_due(s, b.job, b.add)
    _ends_due(s, b.job)


def _gone_members(s: MeshState, ev: Event, b: JobMembers) -> None:
    """A JOB_MEMBERS of compacted or deleted `b.job`, folded after the job left memory (once
    it did, the door admits one from anyone: `Node._adders`). It adds its peers to the fixed
    facts (`GoneLanes`) as the live fold adds them, if its origin is vouched for there (a
    vouched member's, whatever its order: the live fold adds every one, ordered before or
    after the job's end or deletion), and they are vouched for, with the peers they added
    that waited (`GoneWait.adds`); the lane events of the peers it adds that waited fold
    (`GoneWait.lanes`). One of a peer not vouched for waits (a later vouching may count it)
    and adds none: a peer that adds itself once the job went makes no member (R3-C), and
    nor does one backdated before the job's end or deletion. Without fixed facts (nothing
    was known of the job as it went) none adds a member, as before. So every peer that
    holds the same events holds the same members of a gone job, whichever of them came
    before its compaction or deletion (review r2 of session 47, finding 3), except a peer
    not vouched for that a JOB_MEMBERS folded while the job was live here added (a
    member then, as its lane events folded then: what left memory is not taken back)."""
    facts = s.gone_lanes(b.job)
    if facts is None or not facts.fixed or not facts.lanes:
        return
    by = peer_of(ev.origin)
    if by not in facts.vouched:
        s.park_adds(s.gone_wait(b.job), by, b.add, ev)
        return
    if named := frozenset(p for p in b.add if p in facts.vouched):  # (review r3 of s49, A5)
        s._undo_note(ev, (UNDO_NAMED, b.job, by, named))
    _gone_vouch(s, ev, b.job, facts, b.add)


def _gone_revouch(s: MeshState) -> None:
    """A refold's last step: the peers vouched adds that left memory named
    (`MeshState._gone_kept`) and that the refold's undo took back (another event, held in
    memory, had grown them first) are vouched for again, with what that vouching walks and
    folds, as those adds did (review r3 of session 49, A5)."""
    for job, kept in list(s._gone_kept.items()):
        facts = s.gone_lanes(job)
        if facts is None or not facts.fixed or not facts.lanes:
            continue
        if again := kept - facts.vouched:
            _gone_vouch(s, None, job, facts, sorted(again))


def _gone_vouch(s: MeshState, ev: Event | None, job: str, facts: GoneLanes,
                add: Iterable[str]) -> None:
    """A vouched add of `add` to gone `job` (fixed `facts`), `ev`'s (None: one that left
    memory, `_gone_revouch`): `_gone_members`."""
    wait = s._gone_waits.get(job)
    new = _walk_waiting(s, ev, job, wait, add, facts.vouched)
    if not new:
        return
    added = new - facts.members
    s._undo_note(ev, (UNDO_GROWN, job, frozenset(added), frozenset(new)))
    # Grown in place once these facts are this state's own (`GoneLanes.owned`): a vouched
    # add costs what it adds (copied per event, 400 adds of 1,024 peers took 11 s against
    # 0.5 s live: review r3 of session 48, F4).
    grown = facts if facts.owned() else GoneLanes(
        facts.lanes, set(facts.members), facts.sub, facts.fixed, set(facts.vouched))
    members, vouched = grown.members, grown.vouched
    assert isinstance(members, set) and isinstance(vouched, set)
    members |= new
    vouched |= new
    s._keep_gone(job, grown)
    if job in s.tomb_lanes:  # (written beside its tombstone: `_bury`)
        s.tomb_lanes[job] = grown
    if s.on_members is not None:
        s.on_members(job, grown)
    if wait is not None and wait.done:
        _take_done(s, ev, wait, new & wait.done.keys())
    if wait is None or grown.sub is None:
        return
    _gone_lane_tail(s, ev, job, wait, [
        (p, e) for p in sorted(added) for e in wait.lanes.take_after(p, grown.sub)], grown.sub)


def _gone_lane_tail(s: MeshState, ev: Event | None, job: str, wait: GoneWait,
                    due: list[tuple[str, Event]], sub: Order | None) -> None:
    """The lane events of gone `job` that waited in `wait` under peers now vouched for
    (`due`: (peer, event), taken out of `wait` already), `ev`'s doing (None: no undo noted):
    their room is free again (as a walked add's), the journal says they left, and those
    ordered after `sub` (the job's JOB_SUBMITTED; None: none) fold; those before it are let
    go (the live fold never folds them either). `_gone_vouch`'s and `_gone_settle`'s."""
    s.wait_free(wait, sum(held_cost(e) for _, e in due))
    for p, part in due:
        if s.wait_journal is not None:
            s.wait_journal.held(job, HELD_LANE, p, part, kept=False)
        s._undo_note(ev, (UNDO_FREED, job, p, part))
        if sub is not None and sub < part.order:
            s.fold_only(part)


def _gone_settle(s: MeshState, job: str) -> None:
    """What of gone `job` waits under a peer it vouched already is taken in: a previous
    release vouched the peer without knowing what waited on disk (a downgrade and back,
    review r1 of session 50, R1-3), and no later add walks a vouched peer. The adds of such
    an adder are walked as its vouched add (`_gone_vouch`), its TASK_DONEs and CHUNK_DONEs
    taken in (`_take_done`), its lane events ordered after the job's JOB_SUBMITTED folded,
    and those before it let go (the live fold never folds them either)."""
    wait, facts = s._gone_waits.get(job), s.gone_lanes(job)
    if wait is None or facts is None or not facts.fixed or not facts.lanes:
        return
    for by in sorted(wait.adds.keys() & facts.vouched):
        more = wait.adds.pop(by)
        s.wait_free(wait, len(more))
        if s.wait_journal is not None:
            s.wait_journal.parked(job, by, more, kept=False)
        _gone_vouch(s, None, job, cast(GoneLanes, s.gone_lanes(job)), more)
    vouched = cast(GoneLanes, s.gone_lanes(job)).vouched
    if wait.done.keys() & vouched:
        _take_done(s, None, wait, wait.done.keys() & vouched)
    for p in sorted(wait.lanes.lanes.keys() & vouched):
        _gone_lane_tail(s, None, job, wait, [(p, e) for e in wait.lanes.lanes.pop(p)], facts.sub)


def _walk_waiting(s: MeshState, ev: Event | None, job: str, wait: GoneWait | None,
                  add: Iterable[str], vouched: AbstractSet[str]) -> set[str]:
    """The peers not `vouched` for that a vouched add of `add` to gone `job` vouches for: those,
    and the peers they added that waited (`wait.adds`, taken out: their room is free)."""
    new = set[str]()
    todo = [p for p in add if p not in vouched]  # (what it adds only: F4)
    while todo:  # (each peer once, as `_vouch`)
        p = todo.pop()
        if p in vouched or p in new:
            continue
        new.add(p)
        if wait is not None and (more := wait.adds.pop(p, None)) is not None:
            todo += more
            s.wait_free(wait, len(more))
            if s.wait_journal is not None:
                s.wait_journal.parked(job, p, more, kept=False)
            s._undo_note(ev, (UNDO_WALKED, job, p, frozenset(more)))
    return new


def _task_fold(s: MeshState, ev: Event, job: str) -> bool:
    """May task event `ev` (a part) of live `job` be folded now (with lanes on)? A lanes
    job's task events count only from the lanes of its members (review r1 of session 45,
    H1: one TASK_DONE of a non-member won its task, and the home's JOB_ENDED naming it was
    refused, so the job never ended on a non-member nor was compacted anywhere): one in a
    lane whose peer is no member (yet), or ordered before the (winning) JOB_SUBMITTED's (a
    backdated one would win its task, and `end_refusal` refuse the home's JOB_ENDED naming
    it), is held in `_untasked`, folded once a JOB_SUBMITTED or JOB_MEMBERS admits it; one
    in a mesh stream is never folded once the job is known to be a lanes job, and held
    until its JOB_SUBMITTED is here (it may be one). Every input only grows (members, lanes
    jobs) or gets earlier (the winning JOB_SUBMITTED), so the fold stays order-free; and a
    home's JOB_ENDED made from its fold (peer.jobs.ending.job_ended) names only outputs
    `end_refusal` admits."""
    lane = lane_of(ev.origin) if SEPARATOR in ev.origin else None
    if lane is None:
        if job in s._lanes_tasks:
            return False  # (no honest peer makes one: an older one plans no lanes job)
        if job in s.jobs:
            return True
    elif lane[1] != job:
        return False  # (refused at the door, stored or not)
    elif (lane[0] in s.members_of.get(job, ()) and (sub := s.jobs.get(job)) is not None
          and sub.order < ev.order):
        return True
    held = s._untasked.get(job)
    if held is None:
        held = s._untasked[job] = Untasked()
    held.hold(ev, None if lane is None else lane[0])
    return False


def _gone_task_fold(s: MeshState, ev: Event, job: str) -> bool:
    """May task event `ev` (a part) of compacted or deleted `job` be folded (with lanes on;
    its per-job effects are then forgotten, `_forget`: what stays is its cache entries,
    outputs and providers)? As `_task_fold` decided while the job was live, by what is kept
    of it (`GoneLanes`): a mesh stream's, unless it was a lanes job; a lane's, if its peer
    is a member and the winning JOB_SUBMITTED is ordered before it. A lane's of a peer that
    is no member waits (`GoneWait`, bounded), as the live fold holds it: a vouched member's
    JOB_MEMBERS that comes after may add its peer (`_gone_members`; review r2 of session 47,
    finding 3). Without a record of the job (no JOB_SUBMITTED of it came before it went, or
    it went long ago) a mesh stream's is folded (a job replicated in full), a lane's is
    not (session 46, helper g: review r1 F1; a non-member's backdated TASK_DONE dropped
    while the job was live was folded once it was gone: the output cache then depended on
    the order events came in, and a hostile peer got its output into every cache by sending
    late)."""
    facts = s.gone_lanes(job)
    lane = lane_of(ev.origin) if SEPARATOR in ev.origin else None
    if lane is None:
        return facts is None or not facts.lanes
    if lane[1] != job or facts is None or facts.sub is None or not facts.sub < ev.order:
        return False
    if lane[0] in facts.members:
        return True
    if not (facts.fixed and facts.lanes) or (wait := s.gone_wait(job)).lanes.holds(ev, lane[0]):
        return False
    text = held_text(ev)  # (made once: `held_key`)
    if s.wait_room(wait, held_cost(ev, text)):
        wait.lanes.hold(ev, lane[0])  # (a vouched member may add its peer: `_gone_members`)
        if s.wait_journal is not None:
            s.wait_journal.held(job, HELD_LANE, lane[0], ev, text=text)
        s._undo_note(ev, (UNDO_HELD, job, lane[0], ev))
    return False


def _tasks_due(s: MeshState, job: str, peers: Iterable[str] | None = None) -> None:
    """Fold the task events of `job` held in `_untasked` that a JOB_SUBMITTED (`peers`
    None) or a JOB_MEMBERS adding `peers` may admit: once a JOB_SUBMITTED is here, every
    mesh stream's (folded, or let go: `_task_fold`), and of the lanes of the members
    re-checked those ordered after the winning JOB_SUBMITTED (`Untasked.take_after`)."""
    held = s._untasked.get(job)
    sub = s.jobs.get(job)
    if held is None or sub is None:
        return
    due = held.take_mesh()
    members = s.members_of.get(job, set())
    for peer in (held.lanes.keys() & members if peers is None
                 else [p for p in dict.fromkeys(peers) if p in members]):
        due += held.take_after(peer, sub.order)
    if not held:
        del s._untasked[job]
    for ev in due:
        s.fold_only(ev)


def end_refusal(s: MeshState, ev: Event, b: JobEnded) -> str | None:
    """Why JOB_ENDED `ev` may not end its job (None: it may): its job must be a lanes job
    whose JOB_SUBMITTED is here, its origin one of the job's members, its `producers` name
    only CIDs of its outputs, and each output be of a task of the job, made in the lane of
    one of its members, at an order between the (winning) JOB_SUBMITTED's and the
    JOB_ENDED's. Monotone in the events (members and task names only grow, the winning
    JOB_SUBMITTED only gets earlier): once None, None for good, so that folding each held
    one once it passes (`_ends_due`) keeps the fold order-free; what `end_flaw` finds in
    `b` alone is refused whatever is folded later. What it cannot check (no peer that holds
    no lane of the job can): that those lane events exist and say what it says; a member is
    trusted there (design, section 3)."""
    members = s.members_of.get(b.job)
    sub = s.jobs.get(b.job)
    tasks = s._lanes_tasks.get(b.job)
    if members is None or sub is None or tasks is None:
        return "its job's JOB_SUBMITTED with `members` is not here"
    return refusal_of(ev, b, members, sub.order, tasks)


def refusal_of(ev: Event, b: JobEnded, members: AbstractSet[str], sub_order: Order,
               tasks: AbstractSet[str]) -> str | None:
    """`end_refusal` given what it reads of the job: its `members`, its winning
    JOB_SUBMITTED's order and its task names (the compactor asks it of a compacted job's
    record for a JOB_ENDED that comes after: peer.log.compact.Compactor._late)."""
    if ev.origin not in members:
        return f"its origin {ev.origin} is no member of the job"
    if not sub_order < ev.order:  # (review r1 of session 45, H2 (a): backdated)
        return "its order is not after its job's JOB_SUBMITTED's"
    if (flaw := end_flaw(ev, b)) is not None:
        return flaw
    lanes: dict[str, bool] = {}
    for task, o in b.outputs.items():  # (the rule the compactor applies too: endrules)
        if (flaw := output_flaw(b.job, task, o, members, sub_order, tasks, lanes)) is not None:
            return flaw
    return None


def end_flaw(ev: Event, b: JobEnded) -> str | None:
    """Why `end_refusal` refuses JOB_ENDED `ev` (body `b`) whatever else is folded, from `b`
    alone (None if nothing there says so): its `producers` name a CID of no output of it, or
    an output's order is not before the JOB_ENDED's or its origin is no lane of the job."""
    cids = {o.cid for o in b.outputs.values()}
    if any(c not in cids for c in b.producers):
        return "`producers` names a CID that is no output of it"
    for task, o in b.outputs.items():
        if not (o.hlc, o.origin, o.seq) < ev.order:
            return (f"outputs.{task}'s order is not between the job's JOB_SUBMITTED's and "
                    "the JOB_ENDED's")
    for origin in {o.origin for o in b.outputs.values()}:  # (a few: a lane per member)
        made_in = lane_of(origin)
        if made_in is None or made_in[1] != b.job:
            return _no_lane(b, origin)
    return None


def _no_lane(b: JobEnded, origin: str) -> str:
    """`end_refusal`'s reason for an output of `b` whose `origin` is no lane of a member."""
    task = next(t for t, o in b.outputs.items() if o.origin == origin)
    return f"outputs.{task}'s origin {origin} is no lane of a member of the job"


def end_inputs(s: MeshState, job: str) -> tuple[int, tuple[str, int] | None, int]:
    """What `end_refusal` reads of `job`'s state (its members, winning JOB_SUBMITTED, task
    names), as a value that changes whenever they do (they only grow, or get earlier): one
    refused is worth asking again only once this changed."""
    sub = s.jobs.get(job)
    return (len(s.members_of.get(job, ())), None if sub is None else sub.id,
            len(s._lanes_tasks.get(job, ())))


def _job_ended(s: MeshState, ev: Event, b: JobEnded) -> None:
    """A lanes job's end, if its origin may end the job (`end_refusal`; else held in
    `unended`, folded once it may, unless its body alone refuses it whatever comes:
    `end_flaw`, refused for good, kept in no table). Held, not folded, while lanes are off
    (`MeshState.lanes_on`)."""
    if not s.lanes_on:
        return
    if end_refusal(s, ev, b) is None:
        _end(s, ev, b)
    elif end_flaw(ev, b) is None:
        s.unended.setdefault(b.job, {})[ev.id] = ev


def _ends_due(s: MeshState, job: str) -> None:
    """Fold the JOB_ENDEDs of `job` held in `unended` that may end it now."""
    held = s.unended.get(job)
    if not held:
        return
    for ev in list(held.values()):
        b = ev.body_as(JobEnded)
        if end_refusal(s, ev, b) is None:
            del held[ev.id]
            _end(s, ev, b)
    if not held:
        del s.unended[job]


def end_rank(s: MeshState, ev: Event) -> tuple[bool, int, bool, int, str, int]:
    """How JOB_ENDED `ev` ranks among its job's (`_end`: the lowest is the job's). First,
    one of a peer its job's winning JOB_SUBMITTED names as `members` (`_homes`): a peer that
    added itself (an orphan takeover, or a hostile one: review r1 of session 45, H2 (b)), or
    that a losing rival JOB_SUBMITTED names (review r3, R3-1: any member can send one),
    ends the job only where no such member did. Then by its failed tasks (fewest first),
    then `done` before any other state, then (hlc, origin, seq): two homes cut apart each
    end the job from what their side folded; their merged fold has every output of both (a
    task done stays done) and fails only what failed on every side, so the end whose tasks'
    outcomes the members' merged folds report ranks first (design docs/design/partial-
    replication.md, section 3: one result per job on every peer; review r1 M5). The winning
    JOB_SUBMITTED only gets earlier, and when it changes `_rerank` takes the least of the
    JOB_ENDEDs folded again; the rest is a key of the event alone: the winner is the least
    of those folded by the winning JOB_SUBMITTED's members, whatever order they came in."""
    b = ev.body_as(JobEnded)
    return rank_among(ev, _homes(s, b.job))


def rank_among(ev: Event, homes: Collection[str]) -> tuple[bool, int, bool, int, str, int]:
    """`end_rank` of JOB_ENDED `ev` whose job's winning JOB_SUBMITTED names `homes` (what a
    compacted job's record keeps of it: peer.log.compact.Compactor._late)."""
    b = ev.body_as(JobEnded)
    return (*_merit(ev.origin, homes, len(b.failed), b.state), *ev.order)


def end_merit(s: MeshState, job: str, origin: str, failed: int, state: str,
              ) -> tuple[bool, int, bool]:
    """`end_rank` without the order: what a JOB_ENDED of `job` from `origin` with `failed`
    failed tasks and `state` ranks by before its order breaks a tie. A member whose fold
    would end the job with a merit strictly below its winning end's emits that end
    (peer.jobs.ending.better_end: each such end lowers it, so they are few)."""
    return _merit(origin, _homes(s, job), failed, state)


def _merit(origin: str, homes: Collection[str], failed: int, state: str,
           ) -> tuple[bool, int, bool]:
    return origin not in homes, failed, state != "done"


def _homes(s: MeshState, job: str) -> tuple[str, ...]:
    """The peers `job`'s winning JOB_SUBMITTED names as `members` (none if it names none, or
    is not here): those whose JOB_ENDEDs rank first (`end_rank`)."""
    sub = s.jobs.get(job)
    return () if sub is None else sub.body_as(JobSubmitted).members or ()


def _end(s: MeshState, ev: Event, b: JobEnded) -> None:
    """The JOB_ENDED of least `end_rank` is the job's (`ended`; each one folded is kept,
    `_ends`, for `_rerank`). Its outputs enter the cache, whatever its rank, if its origin
    is a vouched member (`MeshState._vouched`: a JOB_SUBMITTED names it, or a vouched one
    added it; a self-added peer's are set aside: `_end_outputs`), by the orders of the
    TASK_DONEs they carry (the first-wins rule of `_merge_first`), and the peers that hold
    them the providers, each as of the earliest order of an output of its CID (else the
    JOB_ENDED's): on a peer that holds no lane of the job, the same entries as on a member,
    which folded those TASK_DONEs. (An output `listing` is folded once fetched and read:
    `MeshState.fold_listing`; until then its keys miss.) `on_end` is told if `ev` is the
    job's end."""
    ends = s._ends.setdefault(b.job, {})  # (an origin's least: the homes rank it alike)
    if (mine := ends.get(ev.origin)) is None or end_rank(s, ev) < end_rank(s, mine):
        ends[ev.origin] = ev
    cur = s.ended.get(b.job)
    if cur is None or end_rank(s, ev) < end_rank(s, cur):
        s.ended[b.job] = ev
    _end_outputs(s, ev, b)
    if s.on_end is not None and s.ended[b.job] is ev:
        s.on_end(ev)


def _rerank(s: MeshState, job: str) -> None:
    """An earlier JOB_SUBMITTED of `job` won (review r3 of session 45, R3-1): `end_rank`
    reads its `members` now, so the job's end is the least of its JOB_ENDEDs folded
    (`_ends`) again (their outputs are in already, or aside: `_end_outputs` merges every
    one folded of a vouched member, whatever its rank, and a rival naming more peers takes
    their ends' in: `_vouch`), and `on_end` is told if it changed (as `_end` tells it).
    Rare: no honest peer sends a second JOB_SUBMITTED of a job (job ids are random), so the
    JOB_ENDEDs walked are those of a job under attack (or an id collision): one per origin,
    its least (review r2 of session 46, L1: each rival walked every end kept, R x E)."""
    ends = s._ends.get(job)
    if not ends:
        return
    won = min(ends.values(), key=lambda e: end_rank(s, e))
    if s.ended.get(job) is not won:
        s.ended[job] = won
        if s.on_end is not None:
            s.on_end(won)


def _end_outputs(s: MeshState, ev: Event, b: JobEnded, inline: bool = True) -> None:
    """A JOB_ENDED's outputs into the cache and its producers into the providers (`_end`),
    AHEAD at a time: the keys and CIDs of each slice that memory misses are looked up in
    the job index at once (`Tiered.ahead`), most of them fresh, not one query each. Its
    outputs join `end_outputs` only if they are its own (`inline`), not a listing's: every
    peer folds every admitted JOB_ENDED, but only the listing of the one that won while it
    held the job (`fold_listing`), so a losing one's listing folded while it briefly won
    made `end_body` (and the record) depend on the order the ends came in (review r1 of
    session 46, F3); `end_body` counts the winner's own listing.

    Neither the cache nor `end_outputs` takes the outputs of an end whose origin is no
    vouched member (`MeshState._vouched`: a JOB_SUBMITTED of the job names it, or a vouched
    member's JOB_MEMBERS adds it; review r3 of session 46, R3-D): that end is kept aside
    (`MeshState._aside`) and taken in once its origin is vouched for (`_vouch`); its
    producers count as any end's. Each output's order is a claim of the end's origin that a
    peer holding no lane of the job cannot check: a self-added peer's losing end named an
    early made-up output and won its key on every peer, the home's too. The vouched set
    only grows, so every peer that folded the same events holds the same cache, in any
    order."""
    made: dict[str, Order] = {}  # CID -> the earliest order of an output of it
    vouched = s._vouched.get(b.job, _NO_PEERS)
    counts = ev.origin in vouched
    lanes = {o: vouched_lane(o, vouched)  # (origin -> counts; a few: a lane per member)
             for o in {o.origin for o in b.outputs.values()}}
    _set_aside(s, ev, b.job, {peer_of(o) for o, ok in lanes.items() if not ok}
               | (set() if counts else {ev.origin}))
    merged = s.end_outputs.setdefault(b.job, {})
    if inline and counts:  # (order-free: each task's least by order)
        merge_earliest(merged, b.outputs, vouched=vouched)
    outputs = list(b.outputs.values())
    for i in range(0, len(outputs), AHEAD):
        part = outputs[i:i + AHEAD]
        if counts:
            _ahead(s._outputs_src, [o.key for o in part if o.key and lanes[o.origin]])
        for o in part:
            order = (o.hlc, o.origin, o.seq)
            if o.key and counts and lanes[o.origin]:  # (as `_task_done`'s)
                s._merge_first(s.outputs, s._outputs_src, {o.key: o.cid}, order)
            if o.cid not in made or order < made[o.cid]:
                made[o.cid] = order
    cids = list(b.producers)
    for i in range(0, len(cids), AHEAD):
        _ahead(s.providers, cids[i:i + AHEAD])
        for cid in cids[i:i + AHEAD]:
            for p in b.producers[cid]:
                _hold_all(s, (cid,), p, made.get(cid, ev.order))


def _set_aside(s: MeshState, ev: Event, job: str, peers: AbstractSet[str]) -> None:
    """JOB_ENDED `ev` of `job` waits under each of `peers` not vouched for (its origin, the
    peers of the lanes its outputs not taken in were made in: `_end_outputs`) until `_vouch`
    takes it in (session 48: a vouched member's end naming what a self-added member's lane
    made, R3-D's rest; by id: an end is taken again under each)."""
    if peers:
        aside = s._aside.setdefault(job, {})
        for p in peers:
            aside.setdefault(p, {})[ev.id] = ev


def _vouch(s: MeshState, job: str, peers: Iterable[str]) -> None:
    """`peers` are vouched for as members of `job` (a JOB_SUBMITTED names them, or a vouched
    member's JOB_MEMBERS adds them): so is every peer they added (`MeshState._adds`), and the
    outputs of their JOB_ENDEDs set aside enter now (`_end_outputs`; a listing's too once
    folded: `listed`), and their lanes' TASK_DONEs and CHUNK_DONEs set aside are folded
    again as a vouched lane's (`_aside_done`), as if they had been vouched for when those
    came."""
    vouched = s._vouched.setdefault(job, set())
    adds = s._adds.get(job, {})
    aside = s._aside.get(job, {})
    done = s._aside_done.get(job, {})
    todo = list(peers)
    while todo:  # (each peer once: its adds and ends are walked when first vouched for)
        p = todo.pop()
        if p in vouched:
            continue
        vouched.add(p)
        todo += adds.get(p, ())
        for ev in aside.pop(p, {}).values():  # (not set aside under `p` again)
            _end_outputs(s, ev, ev.body_as(JobEnded))
            if (got := s.listed.get(job)) is not None and got[0] == ev.id:
                _end_outputs(s, ev, got[1], inline=False)
        for ev in done.pop(p, ()):  # its lane's TASK_DONEs ranked again, as a vouched
            if type(b := ev.body) is TaskDone:  # lane's (`_task_done`), their outputs
                _task_done(s, ev, b)  # and items into the cache
            elif type(b) is ChunkDone:  # (its chunk ranked again, as a vouched lane's)
                _rank_chunk_done(s, s.chunks[b.key], ev, b, None)
                _merge_items(s, ev, b.cache)
            elif type(b) is TaskSplit or type(b) is TaskSplitRef:  # (ranked again)
                _split(s, ev, b)
            elif type(b) is ChunkFailed:
                _chunk_failed(s, ev, b)
    if job in s._aside and not aside:
        del s._aside[job]
    if job in s._aside_done and not done:
        del s._aside_done[job]


def _ahead(table: Mapping[str, Any], keys: list[str]) -> None:
    """`keys` of `table` are about to be looked up one by one (`Tiered.ahead`)."""
    if isinstance(table, Tiered):
        table.ahead(keys)


def _progress(s: MeshState, ev: Event, b: Progress) -> None:
    c = s.chunks[b.key]
    c.progress[b.attempt] = max(c.progress.get(b.attempt, 0.0), b.progress)


def _chunk_done(s: MeshState, ev: Event, b: ChunkDone) -> None:
    c = s.chunks[b.key]
    peer = _unvouched(s, b.key.job, ev)
    _rank_chunk_done(s, c, ev, b, peer)
    if peer is None:
        _merge_items(s, ev, b.cache)
    else:  # its items' providers now, their entries once its peer is vouched for (`_vouch`,
        if b.cache:  # which ranks it again as a vouched lane's; a gone job's: `_gone_done`)
            _merge_items(s, ev, b.cache, entries=False)
        if b.key.job in s.jobs:
            s._aside_done.setdefault(b.key.job, {}).setdefault(peer, []).append(ev)
        elif b.cache:  # (a gone job's waits only for its items: no rank to take again)
            _gone_done(s, b.key.job, peer, ev)
    if b.output:
        _hold(s, b.output, ev)
    if b.done is not None and (done := implied_done(ev)) is not None:
        _task_done(s, done, b.done)  # the task's completion it implies (DONE_FEATURE)


def _rank_chunk_done(s: MeshState, c: ChunkState, ev: Event, b: ChunkDone,
                     peer: str | None) -> None:
    """CHUNK_DONE `ev` (made in the lane of `peer` not vouched for, None: a vouched one or
    no lane) wins chunk `c` (`done`) if it ranks first by (not vouched, latest attempt,
    earliest order), and `latest` if first by (latest attempt, earliest order): a chunk
    reopened because its results were lost is done again by a later attempt. A self-added
    member's CHUNK_DONE, backdated or of a made-up attempt, so wins no chunk a vouched
    member did (session 49, helper a's left (c) of session 48); where none did (an orphan
    takeover) it still does. Every input only grows (the CHUNK_DONEs, the vouched set:
    `_vouch` ranks a newly vouched peer's again), so the winners are one in any order."""
    changed = False
    late = c.latest
    if late is None or (-b.attempt, ev.order) < (-late.body_as(ChunkDone).attempt, late.order):
        c.latest = ev
        changed = True
    cur = c.done
    if cur is None or ((peer is not None, -b.attempt, ev.order)
                       < (_unvouched(s, b.key.job, cur) is not None,
                          -cur.body_as(ChunkDone).attempt, cur.order)):
        c.done = ev
        changed = True
    if changed:
        s.chunks.note_done(b.key)


def _chunk_failed(s: MeshState, ev: Event, b: ChunkFailed) -> None:
    """An attempt's failure (`ChunkState.failures`) is its first CHUNK_FAILED by (not made
    in a vouched lane, order), as a chunk's CHUNK_DONE: a self-added member's, backdated,
    does not stand for a vouched member's failure of that attempt (which a scheduler
    counts where it leaves an unvouched lane's out: `claims.chunk_exhausted`'s `skip`).
    A live job's unvouched one waits in `_aside_done` too, ranked again by `_vouch`."""
    c = s.chunks[b.key]
    peer = _unvouched(s, b.key.job, ev)
    if _ranks_first(s, b.key.job, ev, peer, c.failures.get(b.attempt)):
        c.failures[b.attempt] = ev
    if peer is not None and b.key.job in s.jobs:
        s._aside_done.setdefault(b.key.job, {}).setdefault(peer, []).append(ev)
    s.chunks.note_failure(b.key)


def _task_done(s: MeshState, ev: Event, b: TaskDone) -> None:
    """A task's TASK_DONE (or a CHUNK_DONE's implied one): the task's (`task_done`) if it
    ranks first by (not made in a vouched lane, order) (`_unvouched`: a self-added member's
    ranks after every vouched member's, whatever their orders), its output into the cache
    (`outputs`, first-wins by order) only if made in a vouched lane, else both once its
    peer is vouched for (`_aside_done`, `_vouch`). Every input only grows (the vouched
    set, the TASK_DONEs folded), so the winner and the cache are one for every order."""
    peer = _unvouched(s, b.job, ev)
    k = (b.job, b.task)
    if _ranks_first(s, b.job, ev, peer, s.task_done.get(k)):
        s.task_done[k] = ev
    if not b.cached:
        _hold(s, b.output, ev)
    if peer is not None:
        if b.job in s.jobs:  # (a gone job's waits with it: `_gone_done`)
            s._aside_done.setdefault(b.job, {}).setdefault(peer, []).append(ev)
        else:
            _gone_done(s, b.job, peer, ev)
    elif b.key:
        s._merge_first(s.outputs, s._outputs_src, {b.key: b.output}, ev.order)


def _gone_done(s: MeshState, job: str, peer: str, ev: Event) -> None:
    """A gone lanes job's TASK_DONE or CHUNK_DONE `ev` made in the lane of `peer`, not
    vouched for, waits in its `GoneWait` (fixed facts only; bounded): a vouched add of
    `peer` that comes later takes its output in (`_gone_members`), as `_vouch` does while
    the job is live (review rr of session 48, S2)."""
    facts = s.gone_lanes(job)
    if facts is not None and facts.fixed and facts.lanes:
        s.park_done(s.gone_wait(job), peer, ev, ev)


def _take_done(s: MeshState, ev: Event | None, wait: GoneWait, peers: Iterable[str]) -> None:
    """The TASK_DONEs and CHUNK_DONEs waiting in `wait` under `peers`, now vouched for by
    `ev`'s fold: their outputs and items enter the cache (first-wins by order, as a
    vouched lane's: `_task_done`, `_chunk_done`), and they wait no more."""
    for p in sorted(peers):
        for part in (got := wait.done.pop(p, {})).values():
            s._undo_note(ev, (UNDO_TAKEN, wait.job, p, part))
            if s.wait_journal is not None:
                s.wait_journal.held(wait.job, HELD_DONE, p, part, kept=False)
            if type(b := part.body) is TaskDone and b.key:
                s._merge_first(s.outputs, s._outputs_src, {b.key: b.output}, part.order)
            elif type(b) is ChunkDone:
                s._merge_first(s.cache, s._cache_src, b.cache, part.order)
        freed = sum(held_cost(e) for e in got.values())
        s.wait_free(wait, freed)


def _unvouched(s: MeshState, job: str, ev: Event) -> str | None:
    """The peer of the lane `ev` (a task event of `job`) was made in, if the job is a lanes
    job (lanes on) and that peer no vouched member of it: `MeshState._vouched` while the
    job is live, the vouched set kept as it went (`GoneLanes.vouched`) once it is gone, so
    that a self-added member's straggler is judged as the live fold judged it (the seam of
    session 48's helpers a and c). Else None: a mesh stream's, a vouched member's, any of a
    job replicated in full, and a gone job's whose vouched set was not kept (an earlier
    release's facts: judged by its members as before, `_gone_task_fold`)."""
    if not s.lanes_on or SEPARATOR not in ev.origin:
        return None
    peer = ev.origin.partition(SEPARATOR)[0]  # (a lane of `job`: `_task_fold`)
    if job in s.jobs:
        return None if peer in s._vouched.get(job, ()) else peer
    facts = s.gone_lanes(job)
    if facts is None or not facts.lanes or not facts.vouched:
        return None
    return None if peer in facts.vouched else peer


def _cache_put(s: MeshState, ev: Event, b: CachePut) -> None:
    _merge_items(s, ev, b.cache)


def _merge_items(s: MeshState, ev: Event, cache: Mapping[str, Any], entries: bool = True,
                 ) -> None:
    cids = [c for v in cache.values() if type(v) is dict and type(c := v.get("c")) is str]
    if entries:  # (not of a lane not vouched for: `_chunk_done`)
        s._merge_first(s.cache, s._cache_src, cache, ev.order)
    # values are any JSON: only a string "c" is an item's CID; the peer that made it holds it
    _hold_all(s, cids, peer_of(ev.origin), ev)


def _provide(s: MeshState, ev: Event, b: Provide) -> None:
    _hold_all(s, b.cids, peer_of(ev.origin), ev)


def _hold(s: MeshState, cid: str, ev: Event) -> None:
    """`ev`'s origin holds `cid` (a lane's: its peer), unless it said later that it dropped
    it."""
    _hold_all(s, (cid,), peer_of(ev.origin), ev)


def _hold_all(s: MeshState, cids: Iterable[str], peer: str, at: Order | Event) -> None:
    """`peer` holds each of `cids` as of `at` (an order, or an event's), unless it said
    later that it dropped it."""
    holders = s.providers
    tiered = isinstance(holders, Tiered)  # read back from the job index, maybe: live now
    for cid in cids:
        if s._dropped:
            dropped = s._dropped.get((cid, peer))
            if dropped is not None and dropped > (at if isinstance(at, tuple) else at.order):
                continue
        holders[cid].add(peer)
        if tiered:
            holders.pin(cid)  # type: ignore[attr-defined]


def provided(b: object) -> list[str]:
    """The CIDs an event's origin says it holds (CHUNK_DONE, TASK_DONE, CACHE_PUT, PROVIDE,
    PARTIAL)."""
    if isinstance(b, Provide):
        return list(b.cids)
    if isinstance(b, Partial):
        return [b.output]
    if isinstance(b, TaskDone):
        return [] if b.cached else [b.output]
    out: list[str] = []
    if isinstance(b, ChunkDone):
        out += [b.output] if b.output else []
    if isinstance(b, ChunkDone | CachePut):
        out += [v["c"] for v in b.cache.values() if isinstance(v, dict) and v.get("c")]
    return out


def _unprovide(s: MeshState, ev: Event, b: Unprovide) -> None:
    # An event of this origin later than the drop may provide a CID again (events arrive in
    # any order). One scan of the origin's events per UNPROVIDE (a peer sends one per gc).
    later = [e for e in s.by_origin[ev.origin].values() if e.order > ev.order]
    for cid in b.cids:
        key = (cid, ev.origin)
        drop = max(s._dropped.get(key, ev.order), ev.order)
        s._dropped[key] = drop
        holders = s.providers.get(cid)
        if holders is None or ev.origin not in holders:
            continue
        if any(e.order > drop and cid in provided(p.body) for e in later for p in e.singles):
            continue
        holders.discard(ev.origin)
        if isinstance(s.providers, Tiered):  # read back from the job index, maybe: live now
            s.providers.pin(cid)
        if not holders and getattr(s.providers, "lookup", None) is None:
            del s.providers[cid]  # (an empty set stays in front of the job index's)


def _partial(s: MeshState, ev: Event, b: Partial) -> None:
    cur = s.partials.get((b.job, b.task))
    if cur is None or (b.items, ev.order) > (cur.payload["items"], cur.order):
        s.partials[(b.job, b.task)] = ev  # the fullest (then the latest) wins: order-free
    _hold(s, b.output, ev)  # its origin made the directory (the UI's browser fetches it)


def _job_deleted(s: MeshState, ev: Event, b: JobDeleted) -> None:
    cur = s.deleted.get(b.job)  # (read from the job index, maybe: replayed after a restart)
    if cur is None:
        s.deletions += 1
    if cur is None or ev.order < tuple(cur):
        s.deleted[b.job] = ev.order
    held = list(s._untasked.get(b.job, ()))
    s._unlist(b.job)  # (as `_forget`: a job in `jobs` is never a deleted one)
    if cur is None and (f := s.gone_lanes(b.job)) is not None and f.lanes and f.sub is not None:
        s.tomb_lanes[b.job] = f  # (written beside its tombstone: `_bury`, R3-A)
    for table in (s.splits, s.task_done, s.partials):
        for k in [k for k in table if k[0] == b.job]:
            del table[k]
    s.chunks.drop_job(b.job)
    for part in held:  # stragglers now, decided as those that come after the JOB_DELETED
        s.fold_only(part)  # (`_gone_task_fold`; compaction likewise: `compact`): order-free


def _forget(s: MeshState, ev: Event, job: str) -> None:
    """Empty what an event of a deleted job put in the per-job tables (the cache, outputs
    and providers stay: a rerun may use them)."""
    b = ev.body
    s._unlist(job, straggler=True)
    if isinstance(b, JobSubmitted):  # its implicit splits (and the claims it implies)
        for name in b.tasks:
            s.splits.pop((job, name), None)
            s.chunks.pop(ChunkKey(job, name, ev.origin, ev.seq, 0), None)
    task = getattr(b, "task", None)
    if task is not None:
        s.splits.pop((job, task), None)
        s.task_done.pop((job, task), None)
        s.partials.pop((job, task), None)
    if isinstance(b, ChunkEvent):
        s.chunks.pop(b.key, None)


def _member(s: MeshState, ev: Event, b: Member) -> None:
    cur = s.members.get(ev.origin)
    if cur is None or ev.order > cur.order:  # the newest self-description wins
        s.members[ev.origin] = ev


def _revoke(s: MeshState, ev: Event, b: Revoke) -> None:
    s._first(s.revoked, b.peer, ev)


# Keyed by the body's class: each applier gets the body type it declares.
_APPLY: dict[type, Callable[[MeshState, Event, Any], None]] = {
    JobSubmitted: _job,
    JobCancelled: _cancel,
    TaskSplit: _split,
    TaskSplitRef: _split,
    Claim: _claim,
    Renew: _renew,
    Progress: _progress,
    ChunkDone: _chunk_done,
    ChunkFailed: _chunk_failed,
    TaskDone: _task_done,
    CachePut: _cache_put,
    Provide: _provide,
    Member: _member,
    JobDeleted: _job_deleted,
    Unprovide: _unprovide,
    Revoke: _revoke,
    IpnsRecord: _ipns_record,
    Partial: _partial,
    JobEnded: _job_ended,
    JobMembers: _job_members,
}


def fold(events: Iterable[Event], into: MeshState | None = None) -> MeshState:
    s = MeshState() if into is None else into
    for e in events:
        s.apply(e)
    return s


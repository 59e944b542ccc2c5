"""Events: the immutable, append-only facts that every peer replicates: their types, their
typed bodies (validated once, when an Event is built) and their wire form. Pure values."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any, ClassVar, NamedTuple, TypeVar

from peer.errors import InvalidEvent
from peer.jsontext import (
    MAX_DEPTH,
    deep_path,
    is_text,
    lone_surrogate,
    nesting,
    nesting_and_ascii,
    show_path,
)
from peer.log.ids import hex_digits, is_job_id, is_peer_id

PROTOCOL_VERSION = 1


class EventType(IntEnum):
    """Append-only: the numeric values are part of the protocol. Payloads: see the bodies.
    A number up to MAX_TYPE that this version does not know (a newer peer's type) is a
    pseudo-member named UNKNOWN_<n>: its events are kept and forwarded, never folded."""

    JOB_SUBMITTED = 1
    JOB_CANCELLED = 2
    TASK_SPLIT = 3
    CLAIM = 4
    RENEW = 5  # unused: leases ride on heartbeats
    PROGRESS = 6
    CHUNK_DONE = 7
    CHUNK_FAILED = 8
    TASK_DONE = 9
    CACHE_PUT = 10
    PROVIDE = 11
    MEMBER = 12
    JOB_DELETED = 13  # a finished job's record removed; older peers ignore it
    UNPROVIDE = 14  # CIDs a peer no longer holds (collected); older peers ignore it
    REVOKE = 15  # a member revoked (peer.log.signing); older peers ignore it
    TASK_SPLIT_REF = 16  # a TASK_SPLIT too large for one frame: its chunks in a stored listing
    # One peer's events of one loop turn in one (issue 12), folded as its parts; emitted only
    # while every live member announces BATCH_FEATURE (older peers keep it unfolded).
    TURN = 17
    # 18, 19: kept for batching (issue 12)
    PARTIAL = 23  # a per-item task's output so far (progressive answers); older peers ignore it
    IPNS_RECORD = 25  # a signed IPNS record (peer.ipfs.ipns) for every peer to hold; older
    #                   peers keep and forward it
    # A lanes job's end and outputs, folded by every peer instead of its lanes' task events;
    # and peers added to a lanes job's members (LANES_FEATURE, not emitted yet: older peers
    # keep and forward both)
    JOB_ENDED = 26
    JOB_MEMBERS = 27

    @classmethod
    def _missing_(cls, value: object) -> EventType | None:
        if type(value) is int and 0 < value <= MAX_TYPE:
            unknown = int.__new__(cls, value)
            unknown._name_ = f"UNKNOWN_{value}"
            unknown._value_ = value
            return unknown
        return None

    @property
    def known(self) -> bool:
        """A type this version folds (not a newer peer's)."""
        return self._value_ in _NAME


class FailureKind(StrEnum):
    """Why an attempt of a chunk failed (CHUNK_FAILED's `kind`); append-only wire values."""

    ERROR = "error"  # the task itself raised or was refused: not retried
    CRASH = "crash"  # the worker process died
    TIMEOUT = "timeout"  # the run exceeded its time limit
    MEMORY = "memory"  # the run exceeded its memory limit
    CANCELLED = "cancelled"  # the job was cancelled
    LEASE = "lease"  # no renewal heard from the holder within the lease
    LOST = "lost"  # the holder restarted while running the chunk
    FETCH = "fetch"  # the chunk's input could not be fetched
    STORAGE = "storage"  # the disk was full (ENOSPC, EDQUOT): retried, not counted


_NAME: dict[int, str] = {t.value: t.name for t in EventType}  # Enum.name is slow to read

# Failure kinds that are worth another attempt (the work itself may succeed).
RETRYABLE: frozenset[str] = frozenset({
    FailureKind.CRASH, FailureKind.TIMEOUT, FailureKind.LEASE, FailureKind.LOST,
    FailureKind.MEMORY, FailureKind.FETCH, FailureKind.STORAGE})
# Failure kinds that do not count against a chunk's max_attempts: the fault is the peer's
# circumstances, not the work (the attempt is retried once the disk has room again).
UNCOUNTED: frozenset[str] = frozenset({FailureKind.STORAGE})

# Bounds of the fields. Generous: they refuse garbage, never a payload this code writes.
MAX_ID_CHARS = 256  # origin, job, task, task names, call names
MAX_CID_CHARS = 256  # as peer.jobs.spec (base58 decoding is quadratic)
MAX_KEY_CHARS = 1024  # cache keys
MAX_PATH_CHARS = 4096  # relative paths of items
MAX_LABEL_CHARS = 1024  # peer names, URLs, failure kinds
MAX_TEXT_CHARS = 1 << 20  # errors, reasons, warnings
# ... of which a peer writes and shows at most this many (review r1 of session 49, F5): a run's
# error is cut where it is made (`cut_text`), a stored or a member's longer text when served
MAX_SHOWN_CHARS = 4096
MAX_CHUNKS = 1_000_000  # chunks of a split (and so a chunk's index)
MAX_ITEMS = 1_000_000  # items of a split, entries of a cache map, CIDs of a PROVIDE
MAX_TASKS = 100_000  # tasks of a workflow, calls of a member
MAX_COUNT = (1 << 31) - 1  # attempts, slots, cores, mem_mb
MAX_CLOCK = (1 << 63) - 1  # seq and hlc: SQLite's INTEGER
# A peer's own seqs read back from its data dir stay below this, with room to go on: a row
# above (damaged, edited) is set aside, else the next seq would overflow (peer.log.door).
MAX_OWN_SEQ = MAX_CLOCK - (1 << 32)
MAX_TYPE = 255  # event type numbers: the known ones and room for newer peers' types
MAX_PARTS = 10_000  # parts of a TURN
MAX_INLINE_BLOCKS = 64  # blocks riding inline in one CHUNK_DONE
MAX_INLINE_CHARS = 64 * 1024  # their base64, in all (a peer's own bound is far lower)
MAX_MEMBERS = 1024  # peers named by a job's `members`, a JOB_MEMBERS, an output's producers
MAX_REVOKED_LANES = 10_000  # lanes of the revoked peer a REVOKE's `lanes_after` names
JOB_DIGEST_HEX = 32  # the hex digits of a job's digest (snapframe.job_digest3)
BATCH_FEATURE = "batch-v1"  # a MEMBER's `features` (and heartbeat's): it folds TURN events
# A MEMBER's `features` (and heartbeat's): it folds a job whose workflow says
# `"splits": IMPLICIT_SPLITS` (its tasks without input have an implicit split: MeshState).
SPLITS_FEATURE = "splits-v1"
IMPLICIT_SPLITS = "implicit"
# A MEMBER's `features` (and heartbeat's): it folds a job whose workflow says
# `"splits": ARG_SPLITS`: implicit splits as IMPLICIT_SPLITS's, but for the tasks marked
# `"split": SPLIT_BY_ARGS`, which a peer splits by the values of their call's `split_arg`
# (chunks of values run on several peers; the task's output merges theirs). Set by the
# submitter only while every live peer announces this: a peer of the previous version
# takes the value for a newer peer's and runs none of the job.
ARGSPLITS_FEATURE = "argsplits-v1"
ARG_SPLITS = "args"
SPLIT_BY_ARGS = "args"
# A MEMBER's `features` (and heartbeat's): it folds the TASK_DONE that a CHUNK_DONE's `done`
# implies (`implied_done`): the one chunk of an implicit split is its whole task, so its
# outcome says the task is done and no TASK_DONE follows (only while every live member
# announces this: a peer of the previous version ignores the key and would assemble the task
# itself after its grace, with a later TASK_DONE that loses to the implied one).
DONE_FEATURE = "done-v1"
# A heartbeat's (and MEMBER's) `features`: it ranks a JOB_SUBMITTED's origin first for the
# job's tasks without input when the event says `"local": true` (set by the submitter only
# while every live peer announces this: a peer of the previous version ignores the key and
# ranks by rendezvous hash alone, and two rankings would claim some tasks twice).
LOCAL_FEATURE = "local-v1"
# A heartbeat's (and MEMBER's) `features`: it folds the CLAIMs that a JOB_SUBMITTED saying
# `"claimed": true` (with `local`) implies (`implied_claims`): attempt 0 of the one chunk of
# each task with an implicit split, held by the event's origin, so that no CLAIM event
# follows (set by the submitter only while every member, live or not, announces this: a
# peer of the previous version would see the chunk unclaimed and, once its turn came, claim
# and run a task that the submitter is running, its own claim the winner in its view).
CLAIMED_FEATURE = "claimed-v1"
# A heartbeat's (and MEMBER's) `features`: it keeps a job's task events in lanes, origins of
# their own named "<peer>/<job>" (peer.log.lanes), held by the job's members only, and folds
# JOB_ENDED and JOB_MEMBERS (docs/design/partial-replication.md). Defined, not announced yet.
LANES_FEATURE = "lanes-v1"

_MISSING: Any = object()
Item = tuple[str, str]  # (relpath, cid) of one input item of a split
SplitId = tuple[str, int]  # (origin, seq) of a TASK_SPLIT event
TaskKey = tuple[str, str]  # job, task


class ChunkKey(NamedTuple):
    """A chunk of the split (identified by its TASK_SPLIT event's id) of a task."""

    job: str
    task: str
    split_origin: str
    split_seq: int
    chunk: int


# -- field readers: each returns the field's value or raises InvalidEvent naming it ------


def _show(v: Any) -> str:
    """A short description of a bad value for an error message."""
    if v is _MISSING:
        return "nothing (the field is missing)"
    try:
        shown = repr(v)
    except RecursionError:  # nested deeper than the stack: described by its size
        shown = ""
    if shown and len(shown) <= 40:
        return shown
    if isinstance(v, str | list | dict):
        what = "a string of {} characters" if isinstance(v, str) else (
            "a list of {} items" if isinstance(v, list) else "an object of {} keys")
        return what.format(len(v))
    return shown[:40] + "..." if shown else "a value nested too deeply"


def _too_deep(kind: str, path: Sequence[str | int], where: str = "payload") -> InvalidEvent:
    """A payload nested deeper than MAX_DEPTH at `path` (from `where`)."""
    return InvalidEvent(f"{kind} {show_path(path, where)}: nested too deeply (deeper than "
                        f"{MAX_DEPTH} levels)", field=show_path(path[:1], where))


def _bad(kind: str, name: str, want: str, got: Any) -> InvalidEvent:
    where = f"payload.{name}" if name else "payload"
    return InvalidEvent(f"{kind} {where}: expected {want}, got {_show(got)}", field=where)


_LEAF = frozenset({str, int, float, bool, type(None)})  # JSON's scalars, as the wire gives them


# Local payloads may hold subclasses (a StrEnum, a tuple): they have the same wire form. The
# hot paths test the exact types first and fall back on these.
def _is_str(v: Any, lo: int, hi: int) -> bool:
    """A string of `lo` to `hi` characters that is text (no lone surrogate: ids, keys and
    names are stored and hashed as UTF-8)."""
    return isinstance(v, str) and lo <= len(v) <= hi and is_text(v)


def _is_int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _is_list(v: Any) -> bool:
    return isinstance(v, list | tuple)


def _check_str(kind: str, name: str, v: Any, lo: int, hi: int) -> str:
    if _is_str(v, lo, hi):
        return str(v)
    want = f"a string of {lo} to {hi} characters" if lo else f"a string of at most {hi} characters"
    if isinstance(v, str) and lo <= len(v) <= hi:
        want = "text (a lone surrogate such as \\ud800 is not)"
    raise _bad(kind, name, want, v)


def _str(kind: str, p: Mapping[str, Any], name: str, hi: int = MAX_ID_CHARS, lo: int = 1,
         ) -> str:
    return _check_str(kind, name, p.get(name, _MISSING), lo, hi)


def _opt_str(kind: str, p: Mapping[str, Any], name: str, hi: int) -> str | None:
    """An optional non-empty string: missing, null or "" (the fold always ignored "") is None."""
    v = p.get(name)
    return None if v is None or v == "" else _check_str(kind, name, v, 1, hi)


def _input(kind: str, p: Mapping[str, Any]) -> str | None:
    """A split's `input`: null (no input) or a CID's text, and present: every release wrote
    it, and the scheduler reads the payload's `input` as it came (a split without it failed
    its task on every peer, review h H0; "" is no CID)."""
    v = p.get("input", _MISSING)
    if v is None:
        return None
    if not _is_str(v, 1, MAX_CID_CHARS):
        raise _bad(kind, "input", f"null (no input) or a CID's text of 1 to {MAX_CID_CHARS} "
                   "characters", v)
    return str(v)


def _int(kind: str, p: Mapping[str, Any], name: str, hi: int = MAX_COUNT, lo: int = 0) -> int:
    v = p.get(name, _MISSING)
    if (type(v) is int and lo <= v <= hi) or _is_int(v, lo, hi):
        return int(v)
    too_big = isinstance(v, int) and not isinstance(v, bool) and v > hi
    raise _bad(kind, name, f"an integer <= {hi}" if too_big else f"an integer >= {lo}", v)


def _num(kind: str, p: Mapping[str, Any], name: str, lo: float, hi: float,
         default: float | None = None) -> float:
    v = p.get(name, _MISSING)
    if v is _MISSING and default is not None:
        return default
    if isinstance(v, float | int) and not isinstance(v, bool) and lo <= v <= hi:  # NaN fails
        return float(v)
    raise _bad(kind, name, f"a number from {lo:g} to {hi:g}", v)


def _bool(kind: str, p: Mapping[str, Any], name: str, default: bool) -> bool:
    v = p.get(name, default)
    if type(v) is bool:
        return v
    if v is None:  # null reads as the default, as the fold's truthiness test did
        return default
    raise _bad(kind, name, "true or false", v)


def _list(kind: str, name: str, v: Any, hi: int) -> list[Any]:
    if _is_list(v) and len(v) <= hi:
        return list(v) if type(v) is not list else v
    raise _bad(kind, name, f"a list of at most {hi} items", v)


def _split(kind: str, p: Mapping[str, Any]) -> SplitId | None:
    v = p.get("split")
    if v is None:  # chunk events of logs older than splits: they never match a split
        return None
    if (_is_list(v) and len(v) == 2 and _is_str(v[0], 1, MAX_ID_CHARS)
            and _is_int(v[1], 1, MAX_CLOCK)):
        return (str(v[0]), int(v[1]))
    raise _bad(kind, "split", "[origin, seq] of a TASK_SPLIT event", v)


def _cache(kind: str, p: Mapping[str, Any], required: bool, name: str = "cache",
           ) -> Mapping[str, Any]:
    """A map of cache key -> result; values are any JSON (item results, CIDs, ...)."""
    v = p.get(name, _MISSING)
    if v is _MISSING and not required:
        return {}
    if not isinstance(v, dict) or len(v) > MAX_ITEMS:
        raise _bad(kind, name, f"an object of at most {MAX_ITEMS} keys", v)
    deeper = []  # results that are not scalars nor objects of scalars (an item's, as a rule)
    for k, r in v.items():
        if not (type(k) is str and 0 < len(k) <= MAX_KEY_CHARS and k.isascii()):
            _check_str(kind, f"{name} (a key)", k, 1, MAX_KEY_CHARS)
        t = type(r)
        if t is dict:
            for x in r.values():
                if type(x) not in _LEAF:
                    deeper.append(r)
                    break
        elif t not in _LEAF:
            deeper.append(r)
    # the results are at level 3 of the payload (`deeper` stands for the map's level 2)
    if deeper and nesting(deeper, MAX_DEPTH - 1) >= MAX_DEPTH:
        for k, r in v.items():
            if nesting(r, MAX_DEPTH - 2) > MAX_DEPTH - 2:
                raise _too_deep(kind, [name, k, *(deep_path(r, MAX_DEPTH - 2) or [])])
    return v


def _kept(kind: str, p: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A split's `kept`: absent (None), or a map of cache key -> result as `cache` is."""
    if p.get("kept", _MISSING) is _MISSING:
        return None
    return _cache(kind, p, required=True, name="kept")


def _inline(kind: str, p: Mapping[str, Any]) -> Mapping[str, str] | None:
    """CHUNK_DONE's `inline`: an object of at most MAX_INLINE_BLOCKS CID -> base64 strings,
    MAX_INLINE_CHARS in all (its blocks are checked against their CIDs by peer.ipfs.inline)."""
    v = p.get("inline")
    if v is None:
        return None
    if not isinstance(v, dict) or len(v) > MAX_INLINE_BLOCKS:
        raise _bad(kind, "inline", f"an object of at most {MAX_INLINE_BLOCKS} keys", v)
    total = 0
    for c, b in v.items():
        if not (_is_str(c, 1, MAX_CID_CHARS) and isinstance(b, str)):
            raise _bad(kind, "inline", "CID -> base64 strings", {c: b})
        total += len(b)
    if total > MAX_INLINE_CHARS:
        raise _bad(kind, "inline", f"at most {MAX_INLINE_CHARS} characters of blocks", v)
    return v


def cut_text(s: str, most: int = MAX_SHOWN_CHARS) -> str:
    """`s` if at most `most` characters, else its head and tail (about `most` in all)
    around a marker saying how many characters were cut."""
    if len(s) <= most:
        return s
    tail = most // 4
    head = most - tail - 48
    return f"{s[:head]}\n... ({len(s) - head - tail} characters cut) ...\n{s[-tail:]}"


def _cids(kind: str, p: Mapping[str, Any], name: str) -> tuple[str, ...]:
    v = _list(kind, name, p.get(name, _MISSING), MAX_ITEMS)
    for i, c in enumerate(v):
        if not _is_str(c, 1, MAX_CID_CHARS):
            _check_str(kind, f"{name}[{i}]", c, 1, MAX_CID_CHARS)
    return tuple(v)


def _peers(kind: str, name: str, v: Any) -> tuple[str, ...]:
    """A list of 1 to MAX_MEMBERS distinct peer ids (peer.log.ids.is_peer_id)."""
    if not (_is_list(v) and 0 < len(v) <= MAX_MEMBERS):
        raise _bad(kind, name, f"a list of 1 to {MAX_MEMBERS} peer ids", v)
    for i, x in enumerate(v):
        if not is_peer_id(x):
            raise _bad(kind, f"{name}[{i}]", "a peer id (16 or 20 lowercase hex digits)", x)
    if len(set(v)) < len(v):
        raise _bad(kind, name, "distinct peer ids", v)
    return tuple(v)


def _map(kind: str, p: Mapping[str, Any], name: str, hi: int, key_hi: int = MAX_ID_CHARS,
         ) -> Mapping[str, Any]:
    """An optional object (missing: empty) of at most `hi` keys, each a string of 1 to
    `key_hi` characters (a task name, a CID); its values are the caller's to check."""
    v = p.get(name, _MISSING)
    if v is _MISSING:
        return {}
    if not isinstance(v, dict) or len(v) > hi:
        raise _bad(kind, name, f"an object of at most {hi} keys", v)
    for key in v:
        _check_str(kind, f"{name} (a key)", key, 1, key_hi)
    return v


def _chunks(kind: str, p: Mapping[str, Any]) -> tuple[tuple[Item, ...], ...]:
    chunks = _list(kind, "chunks", p.get("chunks", _MISSING), MAX_CHUNKS)
    out: list[tuple[Item, ...]] = []
    total = 0
    for i, chunk in enumerate(chunks):
        items = _list(kind, f"chunks[{i}]", chunk, MAX_ITEMS - total)
        total += len(items)
        for it in items:  # the hot loop of a large split: no call, no string per item
            if not (type(it) is list and len(it) == 2 and type(it[0]) is str
                    and len(it[0]) <= MAX_PATH_CHARS and type(it[1]) is str
                    and 0 < len(it[1]) <= MAX_CID_CHARS) and not (
                        _is_list(it) and len(it) == 2 and _is_str(it[0], 0, MAX_PATH_CHARS)
                        and _is_str(it[1], 1, MAX_CID_CHARS)):
                raise _bad(kind, f"chunks[{i}][{items.index(it)}]", "[relpath, cid]", it)
        out.append(tuple([(str(a), str(b)) for a, b in items]))
    return tuple(out)


def _workflow(kind: str, p: Mapping[str, Any]) -> tuple[Mapping[str, Any], tuple[str, ...]]:
    """The workflow document's shape as far as the log needs it (peer.jobs.spec checks the
    rest): an object whose `tasks` are objects with a name."""
    wf = p.get("workflow", _MISSING)
    if not isinstance(wf, dict):
        raise _bad(kind, "workflow", "an object", wf)
    tasks = _list(kind, "workflow.tasks", wf.get("tasks", _MISSING), MAX_TASKS)
    names: list[str] = []
    for i, t in enumerate(tasks):
        if not isinstance(t, dict):
            raise _bad(kind, f"workflow.tasks[{i}]", "an object", t)
        names.append(_check_str(kind, f"workflow.tasks[{i}].name", t.get("name", _MISSING), 1,
                                MAX_ID_CHARS))
    return wf, tuple(names)


# -- the typed bodies: one frozen class per event type ------------------------------------


_B = TypeVar("_B", bound="Body")


@dataclass(frozen=True, slots=True)
class JobSubmitted:
    """A job: its canonical workflow document (`peer.jobs.spec.Workflow.to_json`); `local`:
    its submitter (the event's origin) comes first for its tasks without input (LOCAL_FEATURE;
    absent from older peers' events, which ignore it; anything but true reads as false);
    `claimed`: with `local`, the event is also its submitter's claim of those tasks
    (CLAIMED_FEATURE, `implied_claims`; read as `local` is, and false without it)."""

    TYPE: ClassVar[EventType] = EventType.JOB_SUBMITTED
    job: str
    workflow: Mapping[str, Any]  # the payload's own object: read, never mutate
    tasks: tuple[str, ...]  # the workflow's task names, in its order
    local: bool = False
    claimed: bool = False
    # A lanes job's first members, its submitter (home) first, then its replicas
    # (LANES_FEATURE); None (absent or null): a job every peer holds in full, as before
    members: tuple[str, ...] | None = None

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> JobSubmitted:
        k = _NAME[cls.TYPE]
        # `local` and `claimed` are hints: anything but true reads as absent (as a malformed
        # `done` of a CHUNK_DONE is ignored), so that a later release may widen them
        local = p.get("local") is True
        members = p.get("members")
        return cls(_str(k, p, "job"), *_workflow(k, p), local,
                   local and p.get("claimed") is True,
                   None if members is None else _peers(k, "members", members))


@dataclass(frozen=True, slots=True)
class JobCancelled:
    TYPE: ClassVar[EventType] = EventType.JOB_CANCELLED
    job: str
    reason: str

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> JobCancelled:
        k = _NAME[cls.TYPE]
        return cls(_str(k, p, "job"), _str(k, p, "reason", MAX_TEXT_CHARS, lo=0))


@dataclass(frozen=True, slots=True)
class TaskSplit:
    """How a task's input is cut into chunks of items; a whole-input task has one empty chunk."""

    TYPE: ClassVar[EventType] = EventType.TASK_SPLIT
    job: str
    task: str
    input: str | None  # the input CID (None: the task has no input)
    chunks: tuple[tuple[Item, ...], ...]
    # The cached results of the items a per-item task's split left out (cache key -> result,
    # as MeshState.cache holds them), which its assembly reads instead of the cache; empty
    # for a whole task (None: a split of an older peer, which older peers ignore)
    kept: Mapping[str, Any] | None = None

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> TaskSplit:
        k = _NAME[cls.TYPE]
        return cls(_str(k, p, "job"), _str(k, p, "task"),
                   _input(k, p), _chunks(k, p), _kept(k, p))


@dataclass(frozen=True, slots=True)
class TaskSplitRef:
    """A split whose chunks are too many for one frame: they are the JSON list stored as a
    file at `listing` (fetched by the peers that claim or assemble); `sizes` are the
    chunks' item counts. Folded as a TASK_SPLIT (the earliest of either kind wins)."""

    TYPE: ClassVar[EventType] = EventType.TASK_SPLIT_REF
    job: str
    task: str
    input: str | None
    listing: str  # CID of the JSON chunks list
    sizes: tuple[int, ...]
    kept: Mapping[str, Any] | None = None  # as TaskSplit's, when it is small
    kept_listing: str | None = None  # else the CID of its JSON object, stored as a file

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> TaskSplitRef:
        k = _NAME[cls.TYPE]
        sizes = _list(k, "sizes", p.get("sizes", _MISSING), MAX_CHUNKS)
        for i, n in enumerate(sizes):
            if type(n) is not int or not 0 <= n <= MAX_ITEMS:
                raise _bad(k, f"sizes[{i}]", f"an integer in [0, {MAX_ITEMS}]", n)
        return cls(_str(k, p, "job"), _str(k, p, "task"), _input(k, p),
                   _str(k, p, "listing", MAX_CID_CHARS), tuple(sizes), _kept(k, p),
                   _opt_str(k, p, "kept_listing", MAX_CID_CHARS))


@dataclass(frozen=True, slots=True)
class ChunkEvent:
    """The fields every event about one attempt of one chunk carries."""

    job: str
    task: str
    split: SplitId | None  # the TASK_SPLIT the chunk belongs to (None only in old logs)
    chunk: int
    attempt: int

    @property
    def key(self) -> ChunkKey:
        so, sq = self.split or ("", 0)
        return ChunkKey(self.job, self.task, so, sq, self.chunk)


def _chunk_fields(k: str, p: Mapping[str, Any]) -> tuple[str, str, SplitId | None, int, int]:
    job: Any = p.get("job")
    task: Any = p.get("task")
    chunk: Any = p.get("chunk")
    attempt: Any = p.get("attempt")
    if not (type(job) is str and 0 < len(job) <= MAX_ID_CHARS and job.isascii()
            and type(task) is str and 0 < len(task) <= MAX_ID_CHARS and task.isascii()
            and type(chunk) is int and 0 <= chunk < MAX_CHUNKS
            and type(attempt) is int and 0 <= attempt <= MAX_COUNT):
        # Not the plain types the wire gives: the readers accept subclasses or name the field.
        _str(k, p, "job"), _str(k, p, "task"), _int(k, p, "chunk", MAX_CHUNKS - 1)
        _int(k, p, "attempt")
        return str(job), str(task), _split(k, p), int(chunk), int(attempt)
    sp = p.get("split")
    if (type(sp) is list and len(sp) == 2 and type(sp[0]) is str and 0 < len(sp[0]) <= MAX_ID_CHARS
            and sp[0].isascii() and type(sp[1]) is int and 0 < sp[1] <= MAX_CLOCK):
        return job, task, (sp[0], sp[1]), chunk, attempt
    return job, task, _split(k, p), chunk, attempt


@dataclass(frozen=True, slots=True)
class Claim(ChunkEvent):
    TYPE: ClassVar[EventType] = EventType.CLAIM

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Claim:
        return cls(*_chunk_fields(_NAME[cls.TYPE], p))


@dataclass(frozen=True, slots=True)
class Renew(ChunkEvent):
    TYPE: ClassVar[EventType] = EventType.RENEW

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Renew:
        return cls(*_chunk_fields(_NAME[cls.TYPE], p))


@dataclass(frozen=True, slots=True)
class Progress(ChunkEvent):
    TYPE: ClassVar[EventType] = EventType.PROGRESS
    progress: float  # 0 .. 1

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Progress:
        k = _NAME[cls.TYPE]
        return cls(*_chunk_fields(k, p), _num(k, p, "progress", 0.0, 1.0))


@dataclass(frozen=True, slots=True)
class ChunkDone(ChunkEvent):
    """A chunk's outcome: its output (whole-input task) or its items' results (`cache`)."""

    TYPE: ClassVar[EventType] = EventType.CHUNK_DONE
    output: str | None
    cache: Mapping[str, Any]  # item cache key -> result (the payload's object: never mutate)
    log: str | None  # CID of the run's {"log": [...], "metrics": [...]}
    s: float | None  # the run's duration in seconds
    # small outputs' blocks, CID -> base64 (peer.ipfs.inline checks them against the CIDs);
    # older peers ignore the key and fetch the output by CID
    inline: Mapping[str, str] | None = None
    # The TASK_DONE this outcome implies (payload `"done": {"key": cache key or null}`: the
    # run was its task's whole work, `output` the task's output; DONE_FEATURE), else None
    done: TaskDone | None = None

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> ChunkDone:
        k = _NAME[cls.TYPE]
        s = _num(k, p, "s", 0.0, 1e9) if p.get("s") is not None else None
        fields = _chunk_fields(k, p)
        output = _opt_str(k, p, "output", MAX_CID_CHARS)
        cache = _cache(k, p, required=False)
        done = None
        if "done" in p:
            d = p["done"]
            if not (type(d) is dict and _LEAF.issuperset(map(type, d.values()))) and nesting(
                    d, MAX_DEPTH - 1) >= MAX_DEPTH:  # (at level 2; its scalars looked at in C)
                raise _too_deep(k, ["done", *(deep_path(d, MAX_DEPTH - 1) or [])])
            done = _done(fields[0], fields[1], output, cache, d)
        return cls(*fields, output, cache, _opt_str(k, p, "log", MAX_CID_CHARS), s,
                   _inline(k, p) if "inline" in p else None, done)


def _done(job: str, task: str, output: str | None, cache: Mapping[str, Any], d: Any,
          ) -> TaskDone | None:
    """The TASK_DONE a CHUNK_DONE's `done` implies; None if it implies none: not an object,
    a key that is not a string of at most MAX_KEY_CHARS, or an outcome that is no whole
    output (item results). Not refused: an older peer folds such an event (it ignores the
    key), so every peer must hold it alike; a newer peer's other `done` keys are ignored."""
    if type(d) is not dict or not output or cache:
        return None
    key = d.get("key")
    if key is not None and (type(key) is not str or not 0 < len(key) <= MAX_KEY_CHARS):
        return None
    return TaskDone(job, task, output, key, False, None)


_FAILURE_KINDS: dict[str, FailureKind] = {k.value: k for k in FailureKind}


@dataclass(frozen=True, slots=True)
class ChunkFailed(ChunkEvent):
    TYPE: ClassVar[EventType] = EventType.CHUNK_FAILED
    error: str
    kind: FailureKind | str  # a kind this version does not know is kept as a string
    # CID of the failed run's {"log": [...], "metrics": [...]}, as a CHUNK_DONE's `log`
    # (session 51; an older peer ignores the key); None: the run left none (it never ran,
    # its lease ran out, or its peer is older)
    log: str | None = None

    @property
    def retryable(self) -> bool:
        """Worth another attempt; an unknown kind is not."""
        return self.kind in RETRYABLE

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> ChunkFailed:
        k = _NAME[cls.TYPE]
        kind = _str(k, p, "kind", MAX_LABEL_CHARS)
        # A run result's error is typed `str | None`: a null one is not worth losing the failure.
        error = "" if p.get("error", 0) is None else _str(k, p, "error", MAX_TEXT_CHARS, lo=0)
        # (a `log` that is no short text is ignored, not refused: an older peer folds the
        # event whatever it holds; what is no CID is left out where it is served)
        logs = p.get("log")
        return cls(*_chunk_fields(k, p), error, _FAILURE_KINDS.get(kind, kind),
                   logs if type(logs) is str and 0 < len(logs) <= MAX_CID_CHARS else None)


@dataclass(frozen=True, slots=True)
class TaskDone:
    TYPE: ClassVar[EventType] = EventType.TASK_DONE
    job: str
    task: str
    output: str  # CID
    key: str | None  # the task's cache key (None: not cacheable)
    cached: bool  # the output came from the cache (this peer did not make it)
    warning: str | None

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> TaskDone:
        k = _NAME[cls.TYPE]
        return cls(_str(k, p, "job"), _str(k, p, "task"), _str(k, p, "output", MAX_CID_CHARS),
                   _opt_str(k, p, "key", MAX_KEY_CHARS), _bool(k, p, "cached", False),
                   _opt_str(k, p, "warning", MAX_TEXT_CHARS))


@dataclass(frozen=True, slots=True)
class Partial:
    """A running per-item task's output directory so far: the results of `items` of its
    `of` input items (cached ones first). The fullest one is shown until the task is done."""

    TYPE: ClassVar[EventType] = EventType.PARTIAL
    job: str
    task: str
    output: str  # CID of the directory of the results so far
    items: int
    of: int

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Partial:
        k = _NAME[cls.TYPE]
        return cls(_str(k, p, "job"), _str(k, p, "task"), _str(k, p, "output", MAX_CID_CHARS),
                   _int(k, p, "items", MAX_ITEMS), _int(k, p, "of", MAX_ITEMS))


@dataclass(frozen=True, slots=True)
class CachePut:
    """Per-item results flushed while a chunk runs."""

    TYPE: ClassVar[EventType] = EventType.CACHE_PUT
    cache: Mapping[str, Any]  # the payload's object: never mutate

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> CachePut:
        return cls(_cache(_NAME[cls.TYPE], p, required=True))


@dataclass(frozen=True, slots=True)
class Provide:
    TYPE: ClassVar[EventType] = EventType.PROVIDE
    cids: tuple[str, ...]

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Provide:
        return cls(_cids(_NAME[cls.TYPE], p, "cids"))


@dataclass(frozen=True, slots=True)
class Member:
    """A peer's self-description; its newest MEMBER event wins."""

    TYPE: ClassVar[EventType] = EventType.MEMBER
    name: str
    http: str  # its API's base URL ("" while unknown)
    calls: tuple[str, ...]  # the task calls it runs
    slots: int
    cores: int
    mem_mb: int
    gpu: bool
    key: str | None = None  # its Ed25519 public key (hex; None from peers of 0.1.0)
    features: tuple[str, ...] = ()  # protocol features it understands (BATCH_FEATURE)
    kinds: tuple[str, ...] = ("python",)  # executor kinds it runs (absent before placement)
    labels: tuple[tuple[str, str], ...] = ()  # operator-declared (--label), name order

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Member:
        k = _NAME[cls.TYPE]
        calls = _list(k, "calls", p.get("calls", _MISSING), MAX_TASKS)
        for i, c in enumerate(calls):
            _check_str(k, f"calls[{i}]", c, 1, MAX_ID_CHARS)
        features = _list(k, "features", p.get("features", []), 256)
        for i, f in enumerate(features):
            _check_str(k, f"features[{i}]", f, 1, MAX_LABEL_CHARS)
        kinds = _list(k, "kinds", p.get("kinds", ["python"]), MAX_TASKS)
        for i, c in enumerate(kinds):
            _check_str(k, f"kinds[{i}]", c, 1, MAX_ID_CHARS)
        labels = p.get("labels", {})
        if not isinstance(labels, Mapping) or len(labels) > MAX_TASKS:
            raise _bad(k, "labels", f"an object of at most {MAX_TASKS} strings", labels)
        for n, v in labels.items():
            _check_str(k, f"labels.{n}", v, 0, MAX_LABEL_CHARS)
        return cls(_str(k, p, "name", MAX_LABEL_CHARS), _str(k, p, "http", MAX_LABEL_CHARS, lo=0),
                   tuple(calls), _int(k, p, "slots"), _int(k, p, "cores"),
                   _int(k, p, "mem_mb"), _bool(k, p, "gpu", False),
                   _opt_str(k, p, "key", MAX_LABEL_CHARS), tuple(features), tuple(kinds),
                   tuple(sorted(labels.items())))


def _lane_seqs(kind: str, p: Mapping[str, Any], name: str) -> Mapping[str, int]:
    """An optional object (missing: empty) of at most MAX_REVOKED_LANES job id -> seq."""
    v = _map(kind, p, name, MAX_REVOKED_LANES)
    for job, seq in v.items():
        if not is_job_id(job):
            raise _bad(kind, f"{name} (a key)", "a job id ('j' and 12 lowercase hex digits, "
                       "maybe '.' and a peer id)", job)
        if not _is_int(seq, 0, MAX_CLOCK):
            raise _bad(kind, f"{name}.{job}", f"an integer from 0 to {MAX_CLOCK}", seq)
    return v


@dataclass(frozen=True, slots=True)
class Revoke:
    """A member revoked by another: its events of seq above `after` and its frames are
    refused from then on (peer.log.signing). `lanes_after` (LANES_FEATURE; absent from a
    lanes-off peer's REVOKE and older peers', which ignore it): job -> the last seq of the
    revoked member's lane of that job the revoker held, that lane's own bound (a lane it
    names not: `after` bounds it, as before)."""

    TYPE: ClassVar[EventType] = EventType.REVOKE
    peer: str
    after: int  # the revoked member's last seq the revoker held (kept everywhere)
    reason: str
    lanes_after: Mapping[str, int] = field(default_factory=dict)  # (read, never mutate)

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Revoke:
        k = _NAME[cls.TYPE]
        return cls(_str(k, p, "peer"), _int(k, p, "after", MAX_CLOCK),
                   _str(k, p, "reason", MAX_TEXT_CHARS, lo=0),
                   _lane_seqs(k, p, "lanes_after"))

    def lane_after(self, job: str) -> int:
        """The last seq of the revoked member's lane of `job` still accepted."""
        return self.lanes_after.get(job, self.after)


@dataclass(frozen=True, slots=True)
class JobDeleted:
    """A finished job's record removed (by a user or --keep-jobs-days): every peer forgets
    the job; its outputs stay in the cache while some peer holds them."""

    TYPE: ClassVar[EventType] = EventType.JOB_DELETED
    job: str
    reason: str

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> JobDeleted:
        k = _NAME[cls.TYPE]
        return cls(_str(k, p, "job"), _str(k, p, "reason", MAX_TEXT_CHARS, lo=0))


@dataclass(frozen=True, slots=True)
class Unprovide:
    """CIDs the origin no longer holds (unpinned and collected): the reverse of PROVIDE."""

    TYPE: ClassVar[EventType] = EventType.UNPROVIDE
    cids: tuple[str, ...]

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Unprovide:
        return cls(_cids(_NAME[cls.TYPE], p, "cids"))


MAX_IPNS_RECORD_CHARS = 14_000  # base64 of the IPNS spec's 10 KiB bound


@dataclass(frozen=True, slots=True)
class IpnsRecord:
    """A signed IPNS record for a name (base36 CID of its key), base64: every peer checks it
    (peer.ipfs.ipns.validate) before it keeps it; the fold ignores it."""

    TYPE: ClassVar[EventType] = EventType.IPNS_RECORD
    name: str
    record: str

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> IpnsRecord:
        k = _NAME[cls.TYPE]
        return cls(_str(k, p, "name", MAX_CID_CHARS), _str(k, p, "record",
                                                            MAX_IPNS_RECORD_CHARS))


class Output(NamedTuple):
    """A done task's output as a JOB_ENDED carries it: its cache key (None: not cacheable),
    its CID, and the order (hlc, origin, seq) of the TASK_DONE (or implied one) that made it,
    so that every peer's cache keeps the same first entry (MeshState's first-wins rule)."""

    key: str | None
    cid: str
    hlc: int
    origin: str
    seq: int


JOB_END_STATES = ("done", "failed", "cancelled")


def _output(kind: str, task: str, v: Any) -> Output:
    if (_is_list(v) and len(v) == 5 and (v[0] is None or _is_str(v[0], 1, MAX_KEY_CHARS))
            and _is_str(v[1], 1, MAX_CID_CHARS) and _is_int(v[2], 0, MAX_CLOCK)
            and _is_str(v[3], 1, MAX_ID_CHARS) and _is_int(v[4], 1, MAX_CLOCK)):
        return Output(None if v[0] is None else str(v[0]), str(v[1]), int(v[2]), str(v[3]),
                      int(v[4]))
    raise _bad(kind, f"outputs.{task}", "[key or null, cid, hlc, origin, seq]", v)


@dataclass(frozen=True, slots=True)
class JobEnded:
    """A lanes job's end (LANES_FEATURE), emitted by its home into its mesh stream: what every
    peer folds of the job instead of its lanes' task events. `state` one of JOB_END_STATES,
    `end` its hlc; `outputs` task -> Output; `producers` an output CID -> the peers that
    hold it; `failed` a failed task -> its short error; `digest` the job's
    snapframe.job_digest3. Outputs too many for one frame are in the JSON object
    {"outputs": ..., "producers": ...} stored as a block named by `listing` (a CID, as
    TASK_SPLIT_REF's): then the event's own `outputs` and `producers` are empty."""

    TYPE: ClassVar[EventType] = EventType.JOB_ENDED
    job: str
    state: str
    n_tasks: int
    end: int
    outputs: Mapping[str, Output]
    producers: Mapping[str, tuple[str, ...]]
    failed: Mapping[str, str]
    digest: str
    listing: str | None = None

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> JobEnded:
        k = _NAME[cls.TYPE]
        job = _str(k, p, "job")
        state = p.get("state", _MISSING)
        if type(state) is not str or state not in JOB_END_STATES:
            raise _bad(k, "state", "one of " + ", ".join(map(repr, JOB_END_STATES)), state)
        n = _int(k, p, "n_tasks", MAX_TASKS)
        end = _int(k, p, "end", MAX_CLOCK)
        listing = _opt_str(k, p, "listing", MAX_CID_CHARS)
        raw = _map(k, p, "outputs", n)
        outputs = {t: _output(k, t, v) for t, v in raw.items()}
        producers = {}
        for c, v in _map(k, p, "producers", n, MAX_CID_CHARS).items():
            producers[c] = _peers(k, f"producers.{c}", v)
        if listing is not None and (outputs or producers):
            raise _bad(k, "listing", "no `outputs` nor `producers` beside it (they are in the "
                       "listing)", listing)
        failed = _map(k, p, "failed", n)
        for t, e in failed.items():
            _check_str(k, f"failed.{t}", e, 0, MAX_LABEL_CHARS)
        digest = p.get("digest", _MISSING)
        if not hex_digits(digest, JOB_DIGEST_HEX):
            raise _bad(k, "digest", f"{JOB_DIGEST_HEX} lowercase hex digits", digest)
        return cls(job, state, n, end, outputs, producers, failed, digest, listing)


@dataclass(frozen=True, slots=True)
class JobMembers:
    """Peers added to a lanes job's members (LANES_FEATURE): a grow-only set, the
    JOB_SUBMITTED's `members` and every JOB_MEMBERS's `add`."""

    TYPE: ClassVar[EventType] = EventType.JOB_MEMBERS
    job: str
    add: tuple[str, ...]

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> JobMembers:
        k = _NAME[cls.TYPE]
        return cls(_str(k, p, "job"), _peers(k, "add", p.get("add", _MISSING)))


# The types a TURN may hold: the scheduler's and runs' events about tasks and chunks. Not the
# acknowledged ones (JOB_SUBMITTED, JOB_CANCELLED, PROVIDE: fsynced on receipt), nor those
# about members and data (MEMBER, REVOKE, JOB_DELETED, UNPROVIDE).
TURN_PARTS: frozenset[EventType] = frozenset({
    EventType.TASK_SPLIT, EventType.TASK_SPLIT_REF, EventType.CLAIM, EventType.PROGRESS,
    EventType.CHUNK_DONE, EventType.CHUNK_FAILED, EventType.TASK_DONE, EventType.CACHE_PUT})
# The types whose stored row is the canonical text of the payload (its keys sorted at every
# level: the text its content hash covers, encoded once for both; peer.log.signing.stored_text)
# where other types' rows keep the payload's own key order (compact JSON). A task's events
# only: nothing reads their payloads' key order back (the audit: docs/design/
# partial-replication.md, section 8, session 48 helper e), while a JOB_SUBMITTED's workflow
# goes as it is into views and into a compacted job's record text, whose hash other peers
# check a fetched copy against (peer.log.snapframe.check_record).
ONE_TEXT_TYPES: frozenset[EventType] = TURN_PARTS | {EventType.TURN}


@dataclass(frozen=True, slots=True)
class Turn:
    """One peer's events of one loop turn in one event: `parts` is a list of [type, payload]
    (each payload valid as its type, one of TURN_PARTS). Folded as single events that share
    the turn's (origin, seq, hlc), in the order of the list."""

    TYPE: ClassVar[EventType] = EventType.TURN
    types: tuple[EventType, ...]
    bodies: tuple[Body, ...]
    payloads: tuple[dict[str, Any], ...]  # the parts' wire objects (never mutate)

    @classmethod
    def from_payload(cls, p: Mapping[str, Any]) -> Turn:
        k = _NAME[cls.TYPE]
        v = p.get("parts", _MISSING)
        if not (type(v) is list and 0 < len(v) <= MAX_PARTS):
            raise _bad(k, "parts", f"a list of 1 to {MAX_PARTS} [type, payload]", v)
        types, bodies, payloads = [], [], []
        for i, x in enumerate(v):
            if not (type(x) is list and len(x) == 2 and type(x[0]) is int
                    and x[0] in _PART_SPECS and type(x[1]) is dict):
                raise _bad(k, f"parts[{i}]", "[type, payload] of a type a turn holds", x)
            typ, parse = _PART_SPECS[x[0]]
            try:
                bodies.append(parse(x[1]))
            except InvalidEvent as e:  # "TURN payload.parts[3]: CLAIM payload.job: ..."
                sub = (e.field or "").removeprefix("payload.")
                raise InvalidEvent(f"{k} payload.parts[{i}]: {e.message}",
                                   field=f"payload.parts[{i}].{sub}") from None
            types.append(typ)
            payloads.append(x[1])
        return cls(tuple(types), tuple(bodies), tuple(payloads))


@dataclass(frozen=True, slots=True)
class Unknown:
    """The body of an event of a type this version does not know (a newer peer's): the
    payload is an object, stored and forwarded as received, never folded."""

    type: int


Body = (JobSubmitted | JobCancelled | TaskSplit | Claim | Renew | Progress | ChunkDone
        | ChunkFailed | TaskDone | CachePut | Provide | Member | JobDeleted | Unprovide
        | Revoke | TaskSplitRef | IpnsRecord | Turn | Partial | JobEnded | JobMembers | Unknown)

# The fields each body's reader checks to be scalars or to nest at most 3 levels, each
# element looked at (ids, counts, a split's items, a PROVIDE's CIDs, MEMBER's lists), or
# checks against the bound itself (cache results in the loop over their keys, a `done`):
# the depth walk leaves them out, so that it is folded into the reading that happens anyway
# and an event of these fields alone costs no walk. The others (workflows, hints read
# loosely as `local`, fields of newer peers) are walked. A TURN's parts are each walked as a
# payload of their own.
_CHUNK_FIELDS = ("job", "task", "split", "chunk", "attempt")
_FLAT: dict[type, frozenset[str]] = {cls: frozenset(keys) for cls, keys in (
    (JobSubmitted, ("job", "members")), (JobCancelled, ("job", "reason")),
    (TaskSplit, ("job", "task", "input", "chunks", "kept")),
    (TaskSplitRef, ("job", "task", "input", "listing", "sizes", "kept", "kept_listing")),
    (Claim, _CHUNK_FIELDS), (Renew, _CHUNK_FIELDS), (Progress, (*_CHUNK_FIELDS, "progress")),
    (ChunkDone, (*_CHUNK_FIELDS, "output", "log", "s", "inline", "cache", "done")),
    (ChunkFailed, (*_CHUNK_FIELDS, "kind", "error")),
    (TaskDone, ("job", "task", "output", "key", "cached", "warning")), (CachePut, ("cache",)),
    (Provide, ("cids",)), (Unprovide, ("cids",)),
    (Member, ("name", "http", "calls", "slots", "cores", "mem_mb", "gpu", "key", "features",
              "kinds", "labels")),
    (JobDeleted, ("job", "reason")), (Revoke, ("peer", "after", "reason")),
    (IpnsRecord, ("name", "record")), (Partial, ("job", "task", "output", "items", "of")),
    (Turn, ("parts",)),
    (JobEnded, ("job", "state", "n_tasks", "end", "outputs", "producers", "failed", "digest",
                "listing")),
    (JobMembers, ("job", "add")))}
_NONE: frozenset[str] = frozenset()


# type -> (its member, its name, its reader, the keys a payload of which alone needs no walk:
# `_FLAT`'s, none for a TURN, whose parts are walked)
_SPECS: dict[int, tuple[EventType, str, Callable[[Mapping[str, Any]], Body], frozenset[str]]] = {
    cls.TYPE.value: (cls.TYPE, cls.TYPE.name, cls.from_payload,
                     _NONE if cls is Turn else _FLAT[cls])
    for cls in (JobSubmitted, JobCancelled, TaskSplit, Claim, Renew, Progress, ChunkDone,
                ChunkFailed, TaskDone, CachePut, Provide, Member, JobDeleted, Unprovide,
                Revoke, TaskSplitRef, IpnsRecord, Turn, Partial, JobEnded, JobMembers)}
_PART_SPECS: dict[int, tuple[EventType, Callable[[Mapping[str, Any]], Body]]] = {
    t.value: (t, _SPECS[t.value][2]) for t in TURN_PARTS}
_setattr = object.__setattr__  # how a frozen dataclass sets its own fields


def _check_depth(kind: str, p: dict[str, Any], body: Body | None) -> None:
    """InvalidEvent if the payload `p` nests deeper than MAX_DEPTH levels (a TURN: each of
    its parts' payloads, counted from their own top, and its other fields), naming where:
    everything a peer takes in can be encoded again at any later stack (jsontext)."""
    if type(body) is Turn:
        for i, pp in enumerate(body.payloads):
            pb = body.bodies[i]
            if not pp.keys() <= _FLAT[type(pb)]:  # (else its reader checked every field)
                _deep(kind, pp, pb, i)
    _deep(kind, p, body)


def _deep(kind: str, p: dict[str, Any], body: Body | None, part: int | None = None) -> None:
    flat = _FLAT.get(type(body), _NONE)
    rest = [v for k, v in p.items() if k not in flat and type(v) not in _LEAF and v]
    if not rest:  # (an empty list or object nests 1 level: within any bound)
        return
    if type(body) is JobSubmitted:  # its workflow's strings are looked at in the same walk
        depth, plain = nesting_and_ascii(rest)
        if not plain:
            _text(kind, body.workflow)
    else:
        depth = nesting(rest)
    if depth <= MAX_DEPTH:  # (the list `rest` stands for the payload's level)
        return
    where = "payload" if part is None else f"payload.parts[{part}]"
    for k, v in p.items():
        if k not in flat and nesting(v, MAX_DEPTH - 1) >= MAX_DEPTH:
            raise _too_deep(kind, [k, *(deep_path(v, MAX_DEPTH - 1) or [])], where)


def _text(kind: str, workflow: Mapping[str, Any]) -> None:
    """InvalidEvent if a string of a job's workflow (its args) holds a lone surrogate: not
    text, no cache key (UTF-8) can be made of it (every peer's scheduler would fail the
    task with an internal error)."""
    bad = lone_surrogate(workflow)
    if bad is not None:
        at = show_path(bad, "payload.workflow")
        raise InvalidEvent(f"{kind} {at}: holds a lone surrogate (such as \\ud800), which is "
                           "not text", field=show_path(bad[:6], "payload.workflow"))


# -- the event -----------------------------------------------------------------------------


def _check_envelope(ev: Event, kind: str) -> None:
    """Raise InvalidEvent naming the first bad field of the envelope, if any."""
    if not _is_str(ev.origin, 1, MAX_ID_CHARS):
        raise InvalidEvent(f"{kind} origin: expected a string of 1 to {MAX_ID_CHARS} "
                           f"characters, got {_show(ev.origin)}", field="origin")
    for name, v, lo in (("seq", ev.seq, 1), ("hlc", ev.hlc, 0)):
        if not _is_int(v, lo, MAX_CLOCK):
            raise InvalidEvent(f"{kind} {name}: expected an integer from {lo} to {MAX_CLOCK}, "
                               f"got {_show(v)}", field=name)
    if not isinstance(ev.payload, dict):
        raise _bad(kind, "", "an object", ev.payload)


@dataclass(frozen=True, slots=True)
class Event:
    """One fact: `payload` is the wire object (sent byte for byte as received; stored so,
    or as its canonical text for ONE_TEXT_TYPES: the same object read back); `body` its
    typed, validated form, built at construction (InvalidEvent if it is not)."""

    origin: str
    seq: int
    hlc: int
    type: EventType
    payload: dict[str, Any]
    body: Body = field(init=False, repr=False, compare=False)
    # The signed batch (peer.log.signing.Batch) that vouches for it; None for an event of the
    # previous release not yet attested, or a local event not yet flushed. Set once.
    att: Any = field(default=None, init=False, repr=False, compare=False)
    # A TURN's parts: single events sharing its origin, seq and hlc, each with its part's
    # payload and body (what the fold and the listeners see). () for any other event.
    parts: tuple[Event, ...] = field(default=(), init=False, repr=False, compare=False)
    # The canonical JSON text of `payload` (peer.log.signing.event_hash's), kept by the hash
    # of an event about to be written (ONE_TEXT_TYPES: a flush's signing, a receiver's check)
    # for its row, which takes it and clears it (peer.log.sqlite): one encoding serves both;
    # a flush's own events keep it past the write for their push's frames (the wire's
    # payload, peer.mesh.wire.encode_event), dropped once pushed (peer.node.Node._send).
    # None at any other time (an event held in memory keeps no second copy of its payload).
    text: str | None = field(default=None, init=False, repr=False, compare=False)
    # (`held_id`, length) of its row text as a gone job's held event (peer.log.gonewait
    # `held_key`): made once, when it is first held, for its park, journal, frees and undos.
    held: tuple[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        t = self.type
        spec = _SPECS.get(t) if type(t) is EventType or _is_int(t, 0, MAX_CLOCK) else None
        if spec is None:
            self._init_unknown()
            return
        typ, kind, parse, flat = spec
        o, seq, hlc = self.origin, self.seq, self.hlc
        if not (type(o) is str and 0 < len(o) <= MAX_ID_CHARS and o.isascii() and type(seq) is int
                and 0 < seq <= MAX_CLOCK and type(hlc) is int and 0 <= hlc <= MAX_CLOCK
                and type(self.payload) is dict):
            _check_envelope(self, kind)
        if t is not typ:
            _setattr(self, "type", typ)
        body = parse(self.payload)
        if not self.payload.keys() <= flat:  # (else its reader checked every field)
            _check_depth(kind, self.payload, body)
        _setattr(self, "body", body)
        if type(body) is Turn:
            _setattr(self, "parts", _turn_parts(self, body))

    def _init_unknown(self) -> None:
        """A type number this version does not know: kept (Unknown body) if it is in range."""
        t = self.type
        if not _is_int(t, 1, MAX_TYPE):
            raise InvalidEvent(f"event type: expected an integer from 1 to {MAX_TYPE}, got "
                               f"{_show(t)}", field="type")
        typ = EventType(int(t))
        _check_envelope(self, typ.name)
        _check_depth(typ.name, self.payload, None)
        _setattr(self, "type", typ)
        _setattr(self, "body", Unknown(int(t)))

    @property
    def singles(self) -> tuple[Event, ...]:
        """The single events this one stands for: a TURN's parts, else itself."""
        return self.parts or (self,)

    @property
    def known(self) -> bool:
        """Of a type this version folds; False for a newer peer's type (kept, not folded)."""
        return type(self.body) is not Unknown

    @property
    def id(self) -> tuple[str, int]:
        return (self.origin, self.seq)

    @property
    def order(self) -> tuple[int, str, int]:
        """The total order used by every conflict rule: earliest (hlc, origin, seq) wins."""
        return (self.hlc, self.origin, self.seq)

    def body_as(self, cls: builtins.type[_B]) -> _B:
        """The body narrowed to `cls` (TypeError if this event is of another type)."""
        b = self.body
        if not isinstance(b, cls):
            raise TypeError(f"a {self.type.name} event has no {cls.__name__} body")
        return b

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "seq": self.seq, "hlc": self.hlc,
                "type": int(self.type), "payload": self.payload}

    @staticmethod
    def from_json(d: Any) -> Event:
        """An event from its wire form; InvalidEvent if it is malformed."""
        if type(d) is not dict:
            raise InvalidEvent(f"event: expected an object, got {_show(d)}")
        try:
            origin, seq, hlc, typ, payload = (d["origin"], d["seq"], d["hlc"], d["type"],
                                              d["payload"])
        except KeyError as e:
            raise InvalidEvent(f"event {e.args[0]}: missing", field=str(e.args[0])) from None
        return Event(origin, seq, hlc, typ, dict(payload) if type(payload) is dict else payload)


def _turn_parts(ev: Event, body: Turn) -> tuple[Event, ...]:
    """The part events of a TURN (their bodies are validated already)."""
    out = []
    for t, b, p in zip(body.types, body.bodies, body.payloads, strict=True):
        out.append(part_event(ev.origin, ev.seq, ev.hlc, t, p, b))
    return tuple(out)


# The setters of Event's slots: a part is made slot by slot, as object.__setattr__ would set
# them past the frozen class's check, at less than half its cost (the fold makes about five
# parts per task of a TURN: its parts, the TASK_DONE each CHUNK_DONE implies).
(_SET_ORIGIN, _SET_SEQ, _SET_HLC, _SET_TYPE, _SET_PAYLOAD, _SET_BODY, _SET_ATT,
 _SET_PARTS, SET_TEXT, SET_HELD) = (Event.__dict__[f].__set__ for f in (
     "origin", "seq", "hlc", "type", "payload", "body", "att", "parts", "text", "held"))


def part_event(origin: str, seq: int, hlc: int, typ: EventType, payload: dict[str, Any],
               body: Body) -> Event:
    """An event built from a body already validated (a TURN's part): no second check."""
    part = object.__new__(Event)
    _SET_ORIGIN(part, origin)
    _SET_SEQ(part, seq)
    _SET_HLC(part, hlc)
    _SET_TYPE(part, typ)
    _SET_PAYLOAD(part, payload)
    _SET_BODY(part, body)
    _SET_ATT(part, None)
    _SET_PARTS(part, ())
    SET_TEXT(part, None)
    SET_HELD(part, None)
    return part


def implied_done(ev: Event) -> Event | None:
    """The TASK_DONE part that a CHUNK_DONE (a single event or a TURN's part) implies
    (ChunkDone.done), with its origin, seq and hlc; None if it implies none. Folded with it
    (peer.log.fold) and told to listeners after it (`facts`), never held: the log, digests
    and what is sent are the CHUNK_DONE's alone."""
    b = ev.body
    if type(b) is not ChunkDone or b.done is None:
        return None
    d = b.done
    payload = {"job": d.job, "task": d.task, "output": d.output, "key": d.key, "cached": False}
    return part_event(ev.origin, ev.seq, ev.hlc, EventType.TASK_DONE, payload, d)


def implicit_roots(workflow: Mapping[str, Any]) -> list[str]:
    """The tasks with an implicit split of a JOB_SUBMITTED's workflow: none unless it says
    `"splits": IMPLICIT_SPLITS` (or ARG_SPLITS), else its tasks without input (no `depends`,
    no `cid`) but those marked `"split": SPLIT_BY_ARGS` (of ARG_SPLITS: a peer splits them)."""
    splits = workflow.get("splits")
    if splits != IMPLICIT_SPLITS and splits != ARG_SPLITS:
        return []
    return [t["name"] for t in workflow["tasks"] if not t.get("depends") and t.get("cid") is None
            and (splits != ARG_SPLITS or t.get("split") != SPLIT_BY_ARGS)]


def implied_claims(ev: Event) -> list[Event]:
    """The CLAIM parts that a JOB_SUBMITTED saying `claimed` implies (CLAIMED_FEATURE): of
    attempt 0 of the one chunk of each implicit split (`implicit_roots`; the split's id is
    the job's), with the event's origin, seq and hlc, so the earliest claim of the chunk.
    Folded with it (peer.log.fold) and told to listeners after it (`facts`), never held:
    the log, digests and what is sent are the JOB_SUBMITTED's alone."""
    b = ev.body
    if type(b) is not JobSubmitted or not b.claimed:
        return []
    split = (ev.origin, ev.seq)
    return [part_event(ev.origin, ev.seq, ev.hlc, EventType.CLAIM,
                       {"job": b.job, "task": t, "split": list(split), "chunk": 0,
                        "attempt": 0}, Claim(b.job, t, split, 0, 0))
            for t in implicit_roots(b.workflow)]


def facts(ev: Event) -> Sequence[Event]:
    """The single events `ev` stands for as the fold and the listeners see them: a TURN's
    parts, else itself; each CHUNK_DONE followed by the TASK_DONE it implies, each
    JOB_SUBMITTED by the CLAIMs it implies."""
    singles = ev.parts or (ev,)
    if not any((type(b := p.body) is ChunkDone and b.done is not None)
               or (type(b) is JobSubmitted and b.claimed) for p in singles):
        return singles
    out = []
    for p in singles:
        out.append(p)
        if (t := implied_done(p)) is not None:
            out.append(t)
        out += implied_claims(p)
    return out


def turn_event(parts: list[Event]) -> Event:
    """The TURN event of these part events (of one origin, seq and hlc; already validated),
    or the one event itself when there is only one."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    ev = object.__new__(Event)
    body = Turn(tuple(p.type for p in parts), tuple(p.body for p in parts),
                tuple(p.payload for p in parts))
    for name, v in (("origin", first.origin), ("seq", first.seq), ("hlc", first.hlc),
                    ("type", EventType.TURN),
                    ("payload", {"parts": [[int(p.type), p.payload] for p in parts]}),
                    ("body", body), ("att", None), ("parts", tuple(parts)), ("text", None),
                    ("held", None)):
        _setattr(ev, name, v)
    return ev

"""Claim, lease and retry rules: pure functions of the mesh state, the peers' heartbeat info
and a time passed in (`now_s`). No I/O, no clock, no mutation: safe wherever the state is.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, NamedTuple

from peer.log import (
    RETRYABLE,
    UNCOUNTED,
    ChunkState,
    Event,
    EventType,
    FailureKind,
    MeshState,
)
from peer.log.lanes import peer_of
from peer.rendezvous import rendezvous

# The rules. A chunk's current attempt is one past its last failure. Peers able to run it
# are ranked by rendezvous hash (input holders first); rank r claims after r × stagger_s
# unless it hears a claim first. The earliest claim of an attempt wins; a claim whose holder
# is not heard from for lease_s is failed (kind lease) by whoever notices; a retryable
# failure gets another attempt, until max_attempts. A failure marked `"counts": false` (its
# holder left the mesh or restarted: the work itself did not fail) is not one of those
# max_attempts, but at most MAX_UNCOUNTED of them are allowed (a task that kills its peer
# must not be retried forever). A failure marked `"reopen": true` at or after a chunk's done
# attempt reopens the chunk: its results were lost from every live store and are recomputed.

MAX_UNCOUNTED = 10  # failures not counted against max_attempts, at most, per chunk


class AttemptKey(NamedTuple):
    """One attempt of one chunk of a task's winning split."""

    job: str
    task: str
    chunk: int
    attempt: int

    @property
    def unit(self) -> str:
        """The rendezvous unit (also the executor's run key)."""
        return f"{self.job}/{self.task}/{self.chunk}/{self.attempt}"


class Standing(Enum):
    """Where a chunk stands for claiming."""

    SETTLED = "settled"  # done, or failed for good: nothing more to do
    HELD = "held"  # the current attempt has a winning claim
    OPEN = "open"  # the current attempt may be claimed


# -- retry and exhaustion -----------------------------------------------------------------
def retryable(kind: str | None) -> bool:
    """True if a failure of this kind is worth another attempt."""
    return kind in RETRYABLE


def counted(failure: Event) -> bool:
    """True if a failure counts against the chunk's max_attempts (see the rules above; a
    failure of an UNCOUNTED kind, a full disk, does not either)."""
    return (failure.payload.get("counts", True) is not False
            and failure.payload.get("kind") not in UNCOUNTED)


# Task -> the failures a scheduler leaves out of its chunks' counts (`chunk_exhausted`'s
# `skip`; None: every one counts): `Scheduler._skips`, read by `members.running`,
# `members.open_chunks` and `retention.finished_at` (review rr of session 50, RR-2)
TaskSkips = Callable[[str], "Callable[[Event], bool] | None"]


def chunk_exhausted(failures: Mapping[int, Event], max_attempts: int,
                    skip: Callable[[Event], bool] | None = None) -> bool:
    """True if the chunk failed for good: max_attempts counted failures (or MAX_UNCOUNTED
    more in all), or a last one not retryable. `skip`: the failures left out (a scheduler's
    view: an unvouched lane's while a vouched member that can run the task is live)."""
    if skip is not None:
        failures = {a: f for a, f in failures.items() if not skip(f)}
    if not failures:
        return False
    last = failures[max(failures)]
    n = sum(1 for f in failures.values() if counted(f))
    return (n >= max_attempts or len(failures) >= max_attempts + MAX_UNCOUNTED
            or not retryable(last.payload.get("kind")))


# The chunk's CHUNK_DONE unless a later failure reopened it (its results were lost): the
# fold's, which indexes the done chunks of each split by it (read per chunk: no call between)
chunk_done = ChunkState.finished


def reopened(c: ChunkState) -> bool:
    """True if the chunk was ever reopened (its rerun recomputes every item, cached or not)."""
    return any(f.payload.get("reopen") is True for f in c.failures.values())


def standing(c: ChunkState, split: tuple[str, int] | None, max_attempts: int,
             skip: Callable[[Event], bool] | None = None) -> tuple[Standing, Event | None]:
    """The chunk's standing and, when HELD, the winning claim of its current attempt
    (`skip`: as `chunk_exhausted`)."""
    if chunk_done(c) is not None or chunk_exhausted(c.failures, max_attempts, skip):
        return Standing.SETTLED, None
    w = c.winner(c.attempt, split)
    return (Standing.HELD, w) if w is not None else (Standing.OPEN, None)


def n_chunks(split: Event) -> int:
    """How many chunks a split has (TASK_SPLIT inline, TASK_SPLIT_REF by a listing)."""
    if split.type == EventType.TASK_SPLIT_REF:
        return len(split.payload["sizes"])
    return len(split.payload["chunks"])


def chunk_size(split: Event, i: int) -> int:
    """How many items chunk `i` of a split has (0 past its last)."""
    if split.type == EventType.TASK_SPLIT_REF:
        sizes = split.payload["sizes"]
        return int(sizes[i]) if i < len(sizes) else 0
    chunks = split.payload["chunks"]
    return len(chunks[i]) if i < len(chunks) else 0


def task_status(state: MeshState, job: str, task: str, max_attempts: int,
                skip: Callable[[Event], bool] | None = None) -> str:
    """pending | running | done | failed | cancelled (derived, never stored). Reads the chunks
    that events are about only (the others are open and unclaimed): its cost follows the
    events, not the chunks the split declares. `skip`: as `chunk_exhausted`."""
    if (job, task) in state.task_done:
        return "done"
    if job in state.cancelled:
        return "cancelled"
    split = state.splits.get((job, task))
    if split is None:
        return "pending"
    if task_failed(state, job, task, max_attempts, skip):
        return "failed"
    if any(chunk_done(c) is None and c.winner(c.attempt, split.id) is not None
           for c in state.split_chunks(job, task).values()):
        return "running"
    return "pending"


def job_state(task_states: list[str], cancelled: bool) -> str:
    """A job's state (as its view shows it) from its tasks' (`task_status`) and whether it
    was cancelled."""
    if task_states and all(s == "done" for s in task_states):
        return "done"
    if "failed" in task_states:
        return "failed"
    if cancelled:
        return "cancelled"
    if any(s in ("running", "done") for s in task_states):
        return "running"
    return "pending"


def task_failed(state: MeshState, job: str, task: str, max_attempts: int,
                skip: Callable[[Event], bool] | None = None) -> bool:
    """`task_status(...) == "failed"`, without looking for who runs the task (the winning
    claim of each open chunk): the scheduler asks it at every evaluation of every task, on
    every peer. Only the chunks with a failure are read (one without is not exhausted).
    `skip`: as `chunk_exhausted`."""
    if (job, task) in state.task_done or job in state.cancelled:
        return False
    chunks = state.split_chunks(job, task)
    return any(chunk_done(c) is None and chunk_exhausted(c.failures, max_attempts, skip)
               for c in map(chunks.__getitem__, state.failed_chunks(job, task)))


# -- a lanes job's members (docs/design/partial-replication.md, section 5) ------------------
def members_only(state: MeshState, job: str, peers: Iterable[str]) -> list[str]:
    """Of `peers`, those that may run `job`'s tasks: its members, of a lanes job (one whose
    JOB_SUBMITTED names `members`: the others hold none of its claims); all of them of
    any other job."""
    members = state.members_of.get(job)
    return list(peers) if members is None else [p for p in peers if p in members]


# -- ranking and the stagger ----------------------------------------------------------------
def candidates(unit: str, call: str, split: Event, me: str,
               peers: Mapping[str, Mapping[str, Any]], holders: set[str],
               full: Collection[str] = (), splitter: str | None = None) -> list[str]:
    """Peers that may claim `unit`, in claim order: live peers that run `call` and have a
    free slot (`me` included); those holding the input (`holders`) first, then the peer
    that split the task (it saw the task first: no gossip hop; the split's origin unless
    `splitter` names another: an implicit split's origin is its job's submitter, who did
    not split it), then the others, each group
    ordered by rendezvous hash so that every peer computes the same order. `full`: peers
    whose claims the log shows filling their slots (their heartbeat's free_slots is up to
    a report period old): left out, as a peer reporting no free slot is, so that nobody
    waits a stagger for a holder that cannot take the chunk now."""
    able = [p for p, info in peers.items()
            if call in info.get("calls", ()) and int(info.get("free_slots", 0)) > 0
            and p not in full]
    able.append(me)
    near = rendezvous(unit, [p for p in able if p in holders])
    first = peer_of(split.origin) if splitter is None else splitter
    if first in able and first not in holders:
        near.append(first)
    return near + rendezvous(unit, [p for p in able if p not in near])


def full_peers(state: MeshState, held: Iterable[AttemptKey], me: str,
               peers: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The live peers (`peers`: their heartbeat info) whose winning claims of open chunks,
    among `held` (the other peers' claims this peer watches), number at least their
    `slots`: the log says they cannot take another chunk now, whatever their last
    heartbeat's free_slots says."""
    count: dict[str, int] = {}
    for ak in held:
        c = state.chunk(ak.job, ak.task, ak.chunk)
        if c.attempt != ak.attempt or chunk_done(c) is not None:
            continue
        w = c.winner(ak.attempt, state.split_id(ak.job, ak.task))
        if w is not None and (p := peer_of(w.origin)) != me and p in peers:
            count[p] = count.get(p, 0) + 1
    return {p for p, n in count.items() if n >= max(int(peers[p].get("slots", 1) or 1), 1)}


def turn_at(ranked: Sequence[str], me: str, since_s: float, stagger_s: float) -> float:
    """When the turn of `me`, of rank r in `ranked`, comes: r × stagger_s after `since_s`."""
    return since_s + ranked.index(me) * stagger_s


def turn_due(ranked: Sequence[str], me: str, since_s: float, now_s: float,
             stagger_s: float) -> bool:
    """True once `me`, of rank r in `ranked`, has waited r × stagger_s since `since_s`."""
    return now_s >= turn_at(ranked, me, since_s, stagger_s)


def duplicate(run_split: tuple[str, int], split: tuple[str, int], winner: Event | None,
              me: str) -> bool:
    """True if our run of an attempt must stop: its split lost, or another peer's claim won."""
    return run_split != split or (winner is not None and peer_of(winner.origin) != me)


# -- claims, leases and failures as event payloads ------------------------------------------
def claim(ak: AttemptKey, split: tuple[str, int]) -> dict[str, Any]:
    """The CLAIM payload for an attempt."""
    return {"job": ak.job, "task": ak.task, "chunk": ak.chunk, "attempt": ak.attempt,
            "split": list(split)}


def lease_lapsed(heard_s: float, now_s: float, lease_s: float) -> bool:
    """True if the holder was last heard (or its claim first seen) more than lease_s ago."""
    return now_s - heard_s > lease_s


def lease_failure(ak: AttemptKey, holder: Event, lease_s: float, left: bool = False,
                  ) -> dict[str, Any]:
    """The CHUNK_FAILED payload that ends a claim whose lease lapsed; `left`: the holder is
    no longer a live member (it left or restarted), so the failure does not count."""
    p: dict[str, Any] = {
        "job": ak.job, "task": ak.task, "split": holder.payload["split"], "chunk": ak.chunk,
        "attempt": ak.attempt, "kind": FailureKind.LEASE.value,
        "error": f"lease expired: no renewal heard from {peer_of(holder.origin)} for {lease_s:g} s"
                 + (" (it left the mesh)" if left else "")}
    if left:
        p["counts"] = False
    return p


def orphan_failure(ak: AttemptKey, split: tuple[str, int]) -> dict[str, Any]:
    """The CHUNK_FAILED payload (kind lost) with which a peer ends its own claim that no
    run of its own is behind (the run ended without recording an outcome)."""
    return {"job": ak.job, "task": ak.task, "split": list(split), "chunk": ak.chunk,
            "attempt": ak.attempt, "kind": FailureKind.LOST.value,
            "error": "no run behind this claim: the run ended without an outcome"}


def released_failure(ak: AttemptKey, split: tuple[str, int]) -> dict[str, Any]:
    """The CHUNK_FAILED payload (kind lost, not counted) with which a submitter ends the
    claim its JOB_SUBMITTED implied (CLAIMED_FEATURE) when it finds no free slot for the
    run after all: the next attempt is anyone's, at once (not after the claim's lease)."""
    return {"job": ak.job, "task": ak.task, "split": list(split), "chunk": ak.chunk,
            "attempt": ak.attempt, "kind": FailureKind.LOST.value, "counts": False,
            "error": "released by its submitter: no free slot for it after all"}


def reopen_failure(job: str, task: str, split: tuple[str, int], chunk: int, attempt: int,
                   missing: int) -> dict[str, Any]:
    """The CHUNK_FAILED payload that reopens a done chunk whose results (`missing` of them)
    no live peer could provide: the chunk is run again, all its items recomputed."""
    return {"job": job, "task": task, "split": list(split), "chunk": chunk,
            "attempt": attempt, "kind": FailureKind.LOST.value, "reopen": True,
            "error": f"{missing} result(s) of this chunk are in no live peer's store: "
                     "recomputing them"}


def assembly_failure(state: MeshState, job: str, task: str, error: str,
                     ) -> dict[str, Any] | None:
    """The CHUNK_FAILED payload (kind error, `reopen`) that fails for good a task whose
    chunks are all done but whose output cannot be assembled (an input or merge past the
    planner's bound, a value split's chunk output that is a file): its last chunk is
    reopened and failed at once, so that the task, and its job, end (review rr of session
    51, RR-4: such a task was left neither done nor failed). None without a split."""
    split = state.splits.get((job, task))
    if split is None:
        return None
    i = n_chunks(split) - 1
    c = state.chunk(job, task, i)
    done = chunk_done(c)
    attempt = max(c.attempt, int(done.payload["attempt"]) if done is not None else 0,
                  int(c.latest.payload["attempt"]) if c.latest is not None else 0)
    return {"job": job, "task": task, "split": list(split.id), "chunk": i,
            "attempt": attempt, "error": error, "kind": FailureKind.ERROR.value,
            "reopen": True}


def cancelled_failure(base: Mapping[str, Any]) -> dict[str, Any]:
    """The CHUNK_FAILED payload of an attempt its job's cancel ended (`base`: its fields)."""
    return {**base, "error": "cancelled", "kind": FailureKind.CANCELLED.value}


def restart_failures(state: MeshState, me: str) -> list[dict[str, Any]]:
    """CHUNK_FAILED payloads (kind lost) for the open claims `me` held before a restart:
    the runs died with the process, so they are failed to be retried; in a cancelled job
    (kind cancelled) they are not, and end as its killed runs do."""
    out: list[dict[str, Any]] = []
    for (job, task, so, sq, i), c in list(state.chunks.items()):
        split = state.split_id(job, task)
        if split != (so, sq) or (job, task) in state.task_done:
            continue  # (a done task's claim that no outcome ended: a cache hit, say)
        w = c.winner(c.attempt, split)
        if chunk_done(c) is None and w is not None and peer_of(w.origin) == me:
            p = {"job": job, "task": task, "split": list(split), "chunk": i,
                 "attempt": c.attempt, "kind": FailureKind.LOST.value,
                 "error": "the peer restarted while running this chunk", "counts": False}
            out.append(cancelled_failure(p) if job in state.cancelled else p)
    return out


def task_failure(state: MeshState, job: str, task: str, error: str) -> dict[str, Any] | None:
    """The CHUNK_FAILED payload (kind error) that fails a task for good at its first
    unfinished chunk; None if every chunk is done (or the task has no split)."""
    split = state.splits.get((job, task))
    if split is None:
        return None
    for i in range(n_chunks(split)):
        c = state.chunk(job, task, i)
        if chunk_done(c) is None:
            return {"job": job, "task": task, "split": list(split.id), "chunk": i,
                    "attempt": c.attempt, "error": error, "kind": FailureKind.ERROR.value}
    return None

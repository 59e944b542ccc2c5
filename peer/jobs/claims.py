"""Claim, lease and retry rules: pure functions of the mesh state, the peers' heartbeat info
and a time passed in (`now_s`). No I/O, no clock, no mutation: safe wherever the state is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, NamedTuple

from peer.log import RETRYABLE, UNCOUNTED, ChunkState, Event, FailureKind, MeshState
from peer.rendezvous import rendezvous

# The rules. A chunk's current attempt is one past its last failure. Peers able to run it
# are ranked by rendezvous hash (input holders first); rank r claims after r × stagger_s
# unless it hears a claim first. The earliest claim of an attempt wins; a claim whose holder
# is not heard from for lease_s is failed (kind lease) by whoever notices; a retryable
# failure gets another attempt, until max_attempts.


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


def chunk_exhausted(failures: Mapping[int, Event], max_attempts: int) -> bool:
    """True if the chunk failed for good: max_attempts failures (not counting those of an
    UNCOUNTED kind: a full disk), or a last one not retryable."""
    if not failures:
        return False
    last = failures[max(failures)]
    counted = sum(1 for f in failures.values() if f.payload.get("kind") not in UNCOUNTED)
    return counted >= max_attempts or not retryable(last.payload.get("kind"))


def standing(c: ChunkState, split: tuple[str, int] | None, max_attempts: int,
             ) -> tuple[Standing, Event | None]:
    """The chunk's standing and, when HELD, the winning claim of its current attempt."""
    if c.done is not None or chunk_exhausted(c.failures, max_attempts):
        return Standing.SETTLED, None
    w = c.winner(c.attempt, split)
    return (Standing.HELD, w) if w is not None else (Standing.OPEN, None)


def task_status(state: MeshState, job: str, task: str, max_attempts: int) -> str:
    """pending | running | done | failed | cancelled (derived, never stored)."""
    if (job, task) in state.task_done:
        return "done"
    if job in state.cancelled:
        return "cancelled"
    split = state.splits.get((job, task))
    if split is None:
        return "pending"
    chunks = [state.chunk(job, task, i) for i in range(len(split.payload["chunks"]))]
    if any(c.done is None and chunk_exhausted(c.failures, max_attempts) for c in chunks):
        return "failed"
    if any(c.done is None and c.winner(c.attempt, split.id) is not None for c in chunks):
        return "running"
    return "pending"


# -- ranking and the stagger ----------------------------------------------------------------
def candidates(unit: str, call: str, split: Event, me: str,
               peers: Mapping[str, Mapping[str, Any]], holders: set[str]) -> list[str]:
    """Peers that may claim `unit`, in claim order: live peers that run `call` and have a
    free slot (`me` included); those holding the input (`holders`) first, then the peer
    that split the task (it saw the task first: no gossip hop), then the others, each group
    ordered by rendezvous hash so that every peer computes the same order."""
    able = [p for p, info in peers.items()
            if call in info.get("calls", ()) and int(info.get("free_slots", 0)) > 0]
    able.append(me)
    near = rendezvous(unit, [p for p in able if p in holders])
    if split.origin in able and split.origin not in holders:
        near.append(split.origin)
    return near + rendezvous(unit, [p for p in able if p not in near])


def turn_due(ranked: Sequence[str], me: str, since_s: float, now_s: float,
             stagger_s: float) -> bool:
    """True once `me`, of rank r in `ranked`, has waited r × stagger_s since `since_s`."""
    return now_s - since_s >= ranked.index(me) * stagger_s


def duplicate(run_split: tuple[str, int], split: tuple[str, int], winner: Event | None,
              me: str) -> bool:
    """True if our run of an attempt must stop: its split lost, or another peer's claim won."""
    return run_split != split or (winner is not None and winner.origin != me)


# -- claims, leases and failures as event payloads ------------------------------------------
def claim(ak: AttemptKey, split: tuple[str, int]) -> dict[str, Any]:
    """The CLAIM payload for an attempt."""
    return {"job": ak.job, "task": ak.task, "chunk": ak.chunk, "attempt": ak.attempt,
            "split": list(split)}


def lease_lapsed(heard_s: float, now_s: float, lease_s: float) -> bool:
    """True if the holder was last heard (or its claim first seen) more than lease_s ago."""
    return now_s - heard_s > lease_s


def lease_failure(ak: AttemptKey, holder: Event, lease_s: float) -> dict[str, Any]:
    """The CHUNK_FAILED payload that ends a claim whose lease lapsed."""
    return {"job": ak.job, "task": ak.task, "split": holder.payload["split"],
            "chunk": ak.chunk, "attempt": ak.attempt, "kind": FailureKind.LEASE.value,
            "error": f"lease expired: no renewal heard from {holder.origin} for {lease_s:g} s"}


def restart_failures(state: MeshState, me: str) -> list[dict[str, Any]]:
    """CHUNK_FAILED payloads (kind lost) for the open claims `me` held before a restart:
    the runs died with the process, so they are failed to be retried."""
    out: list[dict[str, Any]] = []
    for (job, task, so, sq, i), c in list(state.chunks.items()):
        split = state.split_id(job, task)
        if split != (so, sq):
            continue
        w = c.winner(c.attempt, split)
        if c.done is None and w is not None and w.origin == me:
            out.append({"job": job, "task": task, "split": list(split), "chunk": i,
                        "attempt": c.attempt, "kind": FailureKind.LOST.value,
                        "error": "the peer restarted while running this chunk"})
    return out


def task_failure(state: MeshState, job: str, task: str, error: str) -> dict[str, Any] | None:
    """The CHUNK_FAILED payload (kind error) that fails a task for good at its first
    unfinished chunk; None if every chunk is done (or the task has no split)."""
    split = state.splits.get((job, task))
    if split is None:
        return None
    for i in range(len(split.payload["chunks"])):
        c = state.chunk(job, task, i)
        if c.done is None:
            return {"job": job, "task": task, "split": list(split.id), "chunk": i,
                    "attempt": c.attempt, "error": error, "kind": FailureKind.ERROR.value}
    return None

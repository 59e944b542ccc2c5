"""Events: the immutable, append-only facts that every peer replicates (types and wire form)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

PROTOCOL_VERSION = 1


class EventType(IntEnum):
    """Append-only: the numeric values are part of the protocol."""

    JOB_SUBMITTED = 1  # {job, workflow, at_ms}
    JOB_CANCELLED = 2  # {job, reason}
    TASK_SPLIT = 3  # {job, task, input, chunks: [[[relpath, cid], ...] ...]} (whole: [[]])
    # Chunk events carry "split": [origin, seq] of the TASK_SPLIT their chunk belongs to.
    CLAIM = 4  # {job, task, split, chunk, attempt}
    RENEW = 5  # {job, task, split, chunk, attempt} (unused: leases ride on heartbeats)
    PROGRESS = 6  # {job, task, split, chunk, attempt, progress}
    CHUNK_DONE = 7  # {job, task, split, chunk, attempt, output?, cache: {key: value}, log, s}
    CHUNK_FAILED = 8  # {job, task, split, chunk, attempt, error, kind}
    TASK_DONE = 9  # {job, task, output, key, cached}
    CACHE_PUT = 10  # {cache: {key: value}} (per-item results flushed while a chunk runs)
    PROVIDE = 11  # {cids: [...]}
    MEMBER = 12  # {name, http, gossip, calls, slots, cores, mem_mb, gpu}


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


# Failure kinds that are worth another attempt (the work itself may succeed).
RETRYABLE: frozenset[str] = frozenset({
    FailureKind.CRASH, FailureKind.TIMEOUT, FailureKind.LEASE, FailureKind.LOST,
    FailureKind.MEMORY, FailureKind.FETCH})


@dataclass(frozen=True)
class Event:
    origin: str
    seq: int
    hlc: int
    type: EventType
    payload: dict[str, Any]

    @property
    def id(self) -> tuple[str, int]:
        return (self.origin, self.seq)

    @property
    def order(self) -> tuple[int, str, int]:
        """The total order used by every conflict rule: earliest (hlc, origin, seq) wins."""
        return (self.hlc, self.origin, self.seq)

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "seq": self.seq, "hlc": self.hlc,
                "type": int(self.type), "payload": self.payload}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Event:
        return Event(str(d["origin"]), int(d["seq"]), int(d["hlc"]), EventType(d["type"]),
                     dict(d["payload"]))


TaskKey = tuple[str, str]  # job, task


class ChunkKey(NamedTuple):
    """A chunk of the split (identified by its TASK_SPLIT event's id) of a task."""

    job: str
    task: str
    split_origin: str
    split_seq: int
    chunk: int


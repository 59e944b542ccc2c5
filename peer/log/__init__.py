"""The replicated log: typed events, the hybrid logical clock, the fold into mesh state and
its SQLite persistence. Pure but for `EventLog`; imports nothing else of the peer."""

from peer.log.clock import HLC, hlc_ms
from peer.log.door import Door, DoorConfig, Refusals
from peer.log.events import (
    BATCH_FEATURE,
    CLAIMED_FEATURE,
    DONE_FEATURE,
    IMPLICIT_SPLITS,
    LOCAL_FEATURE,
    PROTOCOL_VERSION,
    RETRYABLE,
    SPLITS_FEATURE,
    UNCOUNTED,
    Body,
    CachePut,
    ChunkDone,
    ChunkEvent,
    ChunkFailed,
    ChunkKey,
    Claim,
    Event,
    EventType,
    FailureKind,
    IpnsRecord,
    JobCancelled,
    JobDeleted,
    JobSubmitted,
    Member,
    Partial,
    Progress,
    Provide,
    Renew,
    Revoke,
    SplitId,
    TaskDone,
    TaskKey,
    TaskSplit,
    TaskSplitRef,
    Turn,
    Unknown,
    Unprovide,
    facts,
    implied_claims,
    implied_done,
    turn_event,
)
from peer.log.fold import ChunkState, MeshState, fold
from peer.log.sqlite import EventLog

__all__ = ["BATCH_FEATURE", "CLAIMED_FEATURE", "DONE_FEATURE", "HLC", "IMPLICIT_SPLITS",
           "LOCAL_FEATURE", "PROTOCOL_VERSION", "RETRYABLE", "SPLITS_FEATURE", "UNCOUNTED", "Body",
           "CachePut", "ChunkDone", "ChunkEvent", "ChunkFailed", "ChunkKey", "ChunkState", "Claim",
           "Door", "DoorConfig", "Event", "EventLog", "EventType", "FailureKind", "IpnsRecord",
           "JobCancelled", "JobDeleted", "JobSubmitted", "Member", "MeshState", "Partial",
           "Progress", "Provide", "Refusals", "Renew", "Revoke", "SplitId", "TaskDone", "TaskKey",
           "TaskSplit", "TaskSplitRef", "Turn", "Unknown", "Unprovide", "facts", "fold", "hlc_ms",
           "implied_claims", "implied_done", "turn_event"]

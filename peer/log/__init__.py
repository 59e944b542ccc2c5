"""The replicated log: typed events, the hybrid logical clock, the fold into mesh state and
its SQLite persistence. Pure but for `EventLog`; imports nothing else of the peer."""

from peer.log.clock import HLC, hlc_ms
from peer.log.events import (
    PROTOCOL_VERSION,
    RETRYABLE,
    ChunkKey,
    Event,
    EventType,
    FailureKind,
    TaskKey,
)
from peer.log.fold import ChunkState, MeshState, fold
from peer.log.sqlite import EventLog

__all__ = ["HLC", "PROTOCOL_VERSION", "RETRYABLE", "ChunkKey", "ChunkState", "Event", "EventLog",
           "EventType", "FailureKind", "MeshState", "TaskKey", "fold", "hlc_ms"]

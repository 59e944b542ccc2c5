"""Typed events (peer/log/events.py): each event type's body, its validation errors (a table:
every type, a missing field, a wrong type, a value out of bounds) and the wire form."""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.errors import BanzaiError, DataError, InvalidEvent
from peer.log import (
    CachePut,
    ChunkDone,
    ChunkFailed,
    ChunkKey,
    Claim,
    Event,
    EventLog,
    EventType,
    FailureKind,
    JobCancelled,
    JobEnded,
    JobMembers,
    JobSubmitted,
    Member,
    Progress,
    Provide,
    Renew,
    Revoke,
    TaskDone,
    TaskSplit,
    TaskSplitRef,
    fold,
)
from peer.log.events import Output
from peer.log.jobindex import JobIndex
from peer.log.signing import Identity, sign_events

CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
P20, P16 = "0123456789abcdef0123", "fedcba9876543210"  # peer ids: this release's, 0.1.0's
DIGEST = "0123456789abcdef" * 2
CHUNK = {"job": "j1", "task": "t", "split": ["a", 3], "chunk": 2, "attempt": 1}
WORKFLOW = {"name": "w", "tasks": [{"name": "t", "call": "c", "params": {}, "depends": []},
                                   {"name": "u", "cid": CID}]}

# One valid payload per type, as this code writes them.
VALID: dict[EventType, dict[str, Any]] = {
    EventType.JOB_SUBMITTED: {"job": "j1", "workflow": WORKFLOW},
    EventType.JOB_CANCELLED: {"job": "j1", "reason": "cancelled by a user"},
    EventType.TASK_SPLIT: {"job": "j1", "task": "t", "input": CID,
                           "chunks": [[["a.wav", CID], ["b/c.wav", CID]], [["d.wav", CID]]]},
    EventType.CLAIM: dict(CHUNK),
    EventType.RENEW: dict(CHUNK),
    EventType.PROGRESS: {**CHUNK, "progress": 0.5},
    EventType.CHUNK_DONE: {**CHUNK, "log": CID, "s": 1.25,
                           "cache": {"k1": {"n": "a.npy", "c": CID}, "k2": None}},
    EventType.CHUNK_FAILED: {**CHUNK, "error": "worker died", "kind": "crash"},
    EventType.TASK_DONE: {"job": "j1", "task": "t", "output": CID, "key": "k" * 64,
                          "cached": False, "warning": "kept nothing"},
    EventType.CACHE_PUT: {"cache": {"k1": {"n": "a.npy", "c": CID}}},
    EventType.PROVIDE: {"cids": [CID, CID]},
    EventType.MEMBER: {"name": "host-ab12", "http": "http://127.0.0.1:8000", "calls": ["c"],
                       "slots": 2, "cores": 4, "mem_mb": 8192, "gpu": False,
                       "features": ["batch-v1"]},
    EventType.JOB_DELETED: {"job": "j1", "reason": "deleted by a user"},
    EventType.UNPROVIDE: {"cids": [CID]},
    EventType.REVOKE: {"peer": "b", "after": 3, "reason": "left the lab"},
    EventType.TASK_SPLIT_REF: {"job": "j1", "task": "t", "input": CID, "listing": CID,
                               "sizes": [2, 1]},
    EventType.IPNS_RECORD: {
        "name": "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8",
        "record": "CgA="},
    EventType.TURN: {"parts": [[4, dict(CHUNK)], [7, {**CHUNK, "chunk": 3, "output": CID}],
                               [9, {"job": "j1", "task": "u", "output": CID, "cached": True}]]},
    EventType.PARTIAL: {"job": "j1", "task": "t", "output": CID, "items": 3, "of": 7},
    EventType.JOB_ENDED: {"job": "j1", "state": "failed", "n_tasks": 2, "end": 99,
                          "outputs": {"t": ["k" * 64, CID, 42, f"{P20}/j0123456789ab", 3]},
                          "producers": {CID: [P20, P16]}, "failed": {"u": "worker died"},
                          "digest": DIGEST},
    EventType.JOB_MEMBERS: {"job": "j1", "add": [P16]},
}


def ev(typ: EventType, payload: Any, origin: str = "a", seq: int = 1, hlc: int = 7) -> Event:
    return Event(origin, seq, hlc, typ, payload)


def test_every_type_has_a_valid_example() -> None:
    assert set(VALID) == set(EventType)


def test_bodies_carry_the_payload_typed() -> None:
    b = ev(EventType.JOB_SUBMITTED, VALID[EventType.JOB_SUBMITTED]).body
    assert b == JobSubmitted("j1", WORKFLOW, ("t", "u"))
    assert ev(EventType.JOB_CANCELLED, VALID[EventType.JOB_CANCELLED]).body == JobCancelled(
        "j1", "cancelled by a user")
    assert ev(EventType.TASK_SPLIT, VALID[EventType.TASK_SPLIT]).body == TaskSplit(
        "j1", "t", CID, ((("a.wav", CID), ("b/c.wav", CID)), (("d.wav", CID),)))
    claim = ev(EventType.CLAIM, CHUNK).body
    assert claim == Claim("j1", "t", ("a", 3), 2, 1)
    assert isinstance(claim, Claim) and claim.key == ChunkKey("j1", "t", "a", 3, 2)
    assert ev(EventType.RENEW, CHUNK).body == Renew("j1", "t", ("a", 3), 2, 1)
    assert ev(EventType.PROGRESS, VALID[EventType.PROGRESS]).body == Progress(
        "j1", "t", ("a", 3), 2, 1, 0.5)
    assert ev(EventType.CHUNK_DONE, VALID[EventType.CHUNK_DONE]).body == ChunkDone(
        "j1", "t", ("a", 3), 2, 1, None, VALID[EventType.CHUNK_DONE]["cache"], CID, 1.25)
    assert ev(EventType.CHUNK_FAILED, VALID[EventType.CHUNK_FAILED]).body == ChunkFailed(
        "j1", "t", ("a", 3), 2, 1, "worker died", FailureKind.CRASH)
    assert ev(EventType.TASK_DONE, VALID[EventType.TASK_DONE]).body == TaskDone(
        "j1", "t", CID, "k" * 64, False, "kept nothing")
    assert ev(EventType.CACHE_PUT, VALID[EventType.CACHE_PUT]).body == CachePut(
        VALID[EventType.CACHE_PUT]["cache"])
    assert ev(EventType.PROVIDE, VALID[EventType.PROVIDE]).body == Provide((CID, CID))
    assert ev(EventType.MEMBER, VALID[EventType.MEMBER]).body == Member(
        "host-ab12", "http://127.0.0.1:8000", ("c",), 2, 4, 8192, False, None, ("batch-v1",))
    older = {k: v for k, v in VALID[EventType.MEMBER].items() if k != "features"}
    assert ev(EventType.MEMBER, older).body_as(Member).features == ()
    assert ev(EventType.JOB_ENDED, VALID[EventType.JOB_ENDED]).body == JobEnded(
        "j1", "failed", 2, 99, {"t": Output("k" * 64, CID, 42, f"{P20}/j0123456789ab", 3)},
        {CID: (P20, P16)}, {"u": "worker died"}, DIGEST)
    assert ev(EventType.JOB_MEMBERS, VALID[EventType.JOB_MEMBERS]).body == JobMembers(
        "j1", (P16,))


def test_a_job_ended_with_many_outputs_names_their_listing() -> None:
    """Outputs too many for a frame are in a listing (a CID): then none beside it."""
    p = {**VALID[EventType.JOB_ENDED], "outputs": {}, "producers": {}, "listing": CID}
    b = ev(EventType.JOB_ENDED, p).body_as(JobEnded)
    assert (b.listing, b.outputs, b.producers) == (CID, {}, {})
    done = {"job": "j1", "state": "done", "n_tasks": 1, "end": 5, "digest": DIGEST,
            "listing": CID}  # (`outputs`, `producers` and `failed` may be left out)
    assert ev(EventType.JOB_ENDED, done).body_as(JobEnded).failed == {}
    unkeyed = _with(EventType.JOB_ENDED, outputs={"t": [None, CID, 0, "a", 1]})
    assert ev(EventType.JOB_ENDED, unkeyed).body_as(JobEnded).outputs["t"].key is None


def test_a_job_submitted_may_name_its_members() -> None:
    """`members` (LANES_FEATURE): absent or null in every job before lanes; a payload
    without it reads as before and its wire form is kept byte for byte."""
    older = VALID[EventType.JOB_SUBMITTED]
    raw = json.dumps({"origin": "a", "seq": 1, "hlc": 2, "type": 1, "payload": older},
                     separators=(",", ":"))
    e = Event.from_json(json.loads(raw))
    assert e.body == JobSubmitted("j1", WORKFLOW, ("t", "u")) and e.body.members is None
    assert json.dumps(e.to_json(), separators=(",", ":")) == raw
    assert ev(EventType.JOB_SUBMITTED, {**older, "members": None}).body_as(
        JobSubmitted).members is None
    lanes = ev(EventType.JOB_SUBMITTED, {**older, "members": [P20, P16]}).body_as(JobSubmitted)
    assert lanes.members == (P20, P16)


def test_a_revoke_may_bound_the_revoked_peers_lanes() -> None:
    """`lanes_after` (LANES_FEATURE): job -> the revoker's head of the revoked peer's lane
    of it, that lane's bound; a lane it does not name (and every lane of a REVOKE without
    it, as before) is bounded by `after`. Without it the wire form is kept byte for byte."""
    older = VALID[EventType.REVOKE]
    raw = json.dumps({"origin": "a", "seq": 1, "hlc": 2, "type": 15, "payload": older},
                     separators=(",", ":"))
    e = Event.from_json(json.loads(raw))
    assert e.body == Revoke("b", 3, "left the lab") and e.body_as(Revoke).lanes_after == {}
    assert json.dumps(e.to_json(), separators=(",", ":")) == raw
    assert e.body_as(Revoke).lane_after("j0123456789ab") == 3
    lanes = ev(EventType.REVOKE, {**older, "lanes_after": {"j0123456789ab": 1,
                                                           "j0000000000a1": 0}})
    b = lanes.body_as(Revoke)
    assert b.lanes_after == {"j0123456789ab": 1, "j0000000000a1": 0}
    assert (b.lane_after("j0123456789ab"), b.lane_after("j0000000000a1"),
            b.lane_after("j0000000000a2")) == (1, 0, 3)


def test_a_job_ended_and_job_members_are_held_not_folded_yet() -> None:
    """Until LANES_FEATURE: kept and served as any event (known now, so checked), folded
    into nothing: a JOB_ENDED of any member would set cache entries and providers (with an
    order it makes up) for any job, a JOB_SUBMITTED's `members` the job's members."""
    sub = {**VALID[EventType.JOB_SUBMITTED], "members": [P16, P20]}
    s = fold([ev(EventType.JOB_ENDED, VALID[EventType.JOB_ENDED], origin="p", seq=1),
              ev(EventType.JOB_MEMBERS, VALID[EventType.JOB_MEMBERS], origin="p", seq=2),
              ev(EventType.JOB_SUBMITTED, sub, origin="p", seq=3)])
    assert s.heads["p"] == 3 and all(e.known for e in s.events.values())
    assert list(s.jobs) == ["j1"] and not s.task_done
    assert not s.outputs and not s.providers and not s.ended and not s.members_of


def test_a_split_keeps_the_results_of_the_items_it_left_out() -> None:
    """`kept` (and a TASK_SPLIT_REF's `kept_listing`): absent in an older peer's split (None,
    its assembly reads the cache), checked as a `cache` map when present."""
    split = {"job": "j", "task": "t", "input": CID, "chunks": [[["a", CID]]]}
    assert ev(EventType.TASK_SPLIT, split).body_as(TaskSplit).kept is None
    kept = {"k" * 64: {"n": "b", "c": CID}, "l" * 64: None}
    assert ev(EventType.TASK_SPLIT, {**split, "kept": kept}).body_as(TaskSplit).kept == kept
    with pytest.raises(InvalidEvent, match="kept"):
        ev(EventType.TASK_SPLIT, {**split, "kept": [CID]})
    ref = {"job": "j", "task": "t", "input": CID, "listing": CID, "sizes": [1]}
    b = ev(EventType.TASK_SPLIT_REF, {**ref, "kept_listing": CID}).body_as(TaskSplitRef)
    assert (b.kept, b.kept_listing) == (None, CID)
    b = ev(EventType.TASK_SPLIT_REF, ref).body_as(TaskSplitRef)
    assert (b.kept, b.kept_listing) == (None, None)


def test_optional_fields_default() -> None:
    """What older payloads and the tests' short forms leave out: the fold treated these
    fields as absent, so do the bodies."""
    done = ev(EventType.CHUNK_DONE, {**CHUNK, "output": CID}).body
    assert done == ChunkDone("j1", "t", ("a", 3), 2, 1, CID, {}, None, None)
    task = ev(EventType.TASK_DONE, {"job": "j", "task": "t", "output": CID}).body
    assert task == TaskDone("j", "t", CID, None, False, None)
    whole = ev(EventType.TASK_SPLIT, {"job": "j", "task": "t", "input": None, "chunks": [[]]})
    assert whole.body == TaskSplit("j", "t", None, ((),))
    no_split = ev(EventType.CLAIM, {k: v for k, v in CHUNK.items() if k != "split"}).body
    assert isinstance(no_split, Claim) and no_split.split is None
    assert no_split.key == ChunkKey("j1", "t", "", 0, 2)  # never matches a real split


@pytest.mark.parametrize("kind", list(FailureKind))
def test_known_failure_kinds(kind: FailureKind) -> None:
    b = ev(EventType.CHUNK_FAILED, {**CHUNK, "error": "", "kind": kind.value}).body_as(
        ChunkFailed)
    assert b.kind is kind
    assert b.retryable == (kind not in (FailureKind.ERROR, FailureKind.CANCELLED))


def test_an_unknown_failure_kind_is_kept_and_not_retried() -> None:
    e = ev(EventType.CHUNK_FAILED, {**CHUNK, "error": "x", "kind": "quota"})
    b = e.body_as(ChunkFailed)
    assert b.kind == "quota" and not isinstance(b.kind, FailureKind)
    assert not b.retryable
    assert e.payload["kind"] == "quota"


def test_body_as_narrows_or_raises() -> None:
    e = ev(EventType.CLAIM, CHUNK)
    assert e.body_as(Claim) is e.body
    with pytest.raises(TypeError, match="a CLAIM event has no TaskDone body"):
        e.body_as(TaskDone)


class Exit(StrEnum):
    ERROR = "error"


class Num(IntEnum):
    TWO = 2


def test_local_payloads_may_hold_subclasses_with_the_same_wire_form() -> None:
    """A scheduler passes an executor's StrEnum exit kind, tuples for lists, IntEnums."""
    p = {"job": "j1", "task": "t", "split": ("a", Num.TWO), "chunk": Num.TWO, "attempt": 0,
         "error": "boom", "kind": Exit.ERROR}
    b = ev(EventType.CHUNK_FAILED, p).body_as(ChunkFailed)
    assert b == ChunkFailed("j1", "t", ("a", 2), 2, 0, "boom", FailureKind.ERROR)
    assert ev(EventType.CHUNK_FAILED, {**p, "error": None}).body_as(ChunkFailed).error == ""
    assert b.kind is FailureKind.ERROR and type(b.chunk) is int
    assert json.loads(json.dumps(p))["kind"] == "error"
    split = ev(EventType.TASK_SPLIT, {"job": "j", "task": "t", "input": None,
                                      "chunks": ((("p", CID),),)}).body_as(TaskSplit)
    assert split.chunks == ((("p", CID),),)


def _without(p: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in p.items() if k != key}


def _with(typ: EventType, **kw: Any) -> dict[str, Any]:
    return {**VALID[typ], **kw}


T = EventType
LONG = "x" * 257

# (type, payload, the field named, the message's "expected ..., got ..." part)
INVALID: list[tuple[EventType, dict[str, Any], str, str]] = [
    # JOB_SUBMITTED
    (T.JOB_SUBMITTED, _without(VALID[T.JOB_SUBMITTED], "job"), "payload.job",
     "expected a string of 1 to 256 characters, got nothing (the field is missing)"),
    (T.JOB_SUBMITTED, _with(T.JOB_SUBMITTED, workflow=[]), "payload.workflow",
     "expected an object, got []"),
    (T.JOB_SUBMITTED, _with(T.JOB_SUBMITTED, workflow={"tasks": [{"name": ""}]}),
     "payload.workflow.tasks[0].name", "expected a string of 1 to 256 characters, got ''"),
    (T.JOB_SUBMITTED, _with(T.JOB_SUBMITTED, job=LONG), "payload.job",
     "expected a string of 1 to 256 characters, got a string of 257 characters"),
    # JOB_CANCELLED
    (T.JOB_CANCELLED, _without(VALID[T.JOB_CANCELLED], "reason"), "payload.reason",
     "expected a string of at most 1048576 characters, got nothing (the field is missing)"),
    (T.JOB_CANCELLED, _with(T.JOB_CANCELLED, job=3), "payload.job",
     "expected a string of 1 to 256 characters, got 3"),
    (T.JOB_CANCELLED, _with(T.JOB_CANCELLED, job=""), "payload.job",
     "expected a string of 1 to 256 characters, got ''"),
    # TASK_SPLIT
    (T.TASK_SPLIT, _without(VALID[T.TASK_SPLIT], "chunks"), "payload.chunks",
     "expected a list of at most 1000000 items, got nothing (the field is missing)"),
    (T.TASK_SPLIT, _with(T.TASK_SPLIT, chunks=[[["a", CID]], [["b"]]]), "payload.chunks[1][0]",
     "expected [relpath, cid], got ['b']"),
    (T.TASK_SPLIT, _with(T.TASK_SPLIT, input="c" * 257), "payload.input",
     "expected null (no input) or a CID's text of 1 to 256 characters, got a string of 257 "
     "characters"),
    (T.TASK_SPLIT, _with(T.TASK_SPLIT, chunks=[[["a", ""]]]), "payload.chunks[0][0]",
     "expected [relpath, cid], got ['a', '']"),
    # every release wrote `input` (null for none); the scheduler reads it as it came (H0)
    (T.TASK_SPLIT, _without(VALID[T.TASK_SPLIT], "input"), "payload.input",
     "expected null (no input) or a CID's text of 1 to 256 characters, got nothing (the field "
     "is missing)"),
    (T.TASK_SPLIT, _with(T.TASK_SPLIT, input=""), "payload.input",
     "expected null (no input) or a CID's text of 1 to 256 characters, got ''"),
    # CLAIM
    (T.CLAIM, _without(CHUNK, "task"), "payload.task",
     "expected a string of 1 to 256 characters, got nothing (the field is missing)"),
    (T.CLAIM, {**CHUNK, "attempt": -1}, "payload.attempt", "expected an integer >= 0, got -1"),
    (T.CLAIM, {**CHUNK, "attempt": "1"}, "payload.attempt", "expected an integer >= 0, got '1'"),
    (T.CLAIM, {**CHUNK, "attempt": True}, "payload.attempt",
     "expected an integer >= 0, got True"),
    (T.CLAIM, {**CHUNK, "chunk": 1_000_000}, "payload.chunk",
     "expected an integer <= 999999, got 1000000"),
    (T.CLAIM, {**CHUNK, "split": ["a"]}, "payload.split",
     "expected [origin, seq] of a TASK_SPLIT event, got ['a']"),
    (T.CLAIM, {**CHUNK, "split": ["a", 0]}, "payload.split",
     "expected [origin, seq] of a TASK_SPLIT event, got ['a', 0]"),
    (T.CLAIM, {**CHUNK, "split": "a/3"}, "payload.split",
     "expected [origin, seq] of a TASK_SPLIT event, got 'a/3'"),
    # RENEW
    (T.RENEW, _without(CHUNK, "chunk"), "payload.chunk",
     "expected an integer >= 0, got nothing (the field is missing)"),
    (T.RENEW, {**CHUNK, "chunk": 1.0}, "payload.chunk", "expected an integer >= 0, got 1.0"),
    (T.RENEW, {**CHUNK, "attempt": 1 << 31}, "payload.attempt",
     "expected an integer <= 2147483647, got 2147483648"),
    # PROGRESS
    (T.PROGRESS, _without(VALID[T.PROGRESS], "progress"), "payload.progress",
     "expected a number from 0 to 1, got nothing (the field is missing)"),
    (T.PROGRESS, _with(T.PROGRESS, progress="0.5"), "payload.progress",
     "expected a number from 0 to 1, got '0.5'"),
    (T.PROGRESS, _with(T.PROGRESS, progress=1.5), "payload.progress",
     "expected a number from 0 to 1, got 1.5"),
    (T.PROGRESS, _with(T.PROGRESS, progress=float("nan")), "payload.progress",
     "expected a number from 0 to 1, got nan"),
    # CHUNK_DONE
    (T.CHUNK_DONE, _without(VALID[T.CHUNK_DONE], "job"), "payload.job",
     "expected a string of 1 to 256 characters, got nothing (the field is missing)"),
    (T.CHUNK_DONE, _with(T.CHUNK_DONE, cache=[]), "payload.cache",
     "expected an object of at most 1000000 keys, got []"),
    (T.CHUNK_DONE, _with(T.CHUNK_DONE, cache={"": 1}), "payload.cache (a key)",
     "expected a string of 1 to 1024 characters, got ''"),
    (T.CHUNK_DONE, _with(T.CHUNK_DONE, s=-0.5), "payload.s",
     "expected a number from 0 to 1e+09, got -0.5"),
    (T.CHUNK_DONE, _with(T.CHUNK_DONE, output=7), "payload.output",
     "expected a string of 1 to 256 characters, got 7"),
    # CHUNK_FAILED
    (T.CHUNK_FAILED, _without(VALID[T.CHUNK_FAILED], "kind"), "payload.kind",
     "expected a string of 1 to 1024 characters, got nothing (the field is missing)"),
    (T.CHUNK_FAILED, _with(T.CHUNK_FAILED, error=5), "payload.error",
     "expected a string of at most 1048576 characters, got 5"),
    (T.CHUNK_FAILED, _with(T.CHUNK_FAILED, kind=""), "payload.kind",
     "expected a string of 1 to 1024 characters, got ''"),
    # TASK_DONE
    (T.TASK_DONE, _without(VALID[T.TASK_DONE], "output"), "payload.output",
     "expected a string of 1 to 256 characters, got nothing (the field is missing)"),
    (T.TASK_DONE, _with(T.TASK_DONE, cached="no"), "payload.cached",
     "expected true or false, got 'no'"),
    (T.TASK_DONE, _with(T.TASK_DONE, key="k" * 1025), "payload.key",
     "expected a string of 1 to 1024 characters, got a string of 1025 characters"),
    (T.TASK_DONE, _with(T.TASK_DONE, warning=["w"]), "payload.warning",
     "expected a string of 1 to 1048576 characters, got ['w']"),
    # CACHE_PUT
    (T.CACHE_PUT, {}, "payload.cache",
     "expected an object of at most 1000000 keys, got nothing (the field is missing)"),
    (T.CACHE_PUT, {"cache": "k"}, "payload.cache",
     "expected an object of at most 1000000 keys, got 'k'"),
    (T.CACHE_PUT, {"cache": {"k" * 1025: 1}}, "payload.cache (a key)",
     "expected a string of 1 to 1024 characters, got a string of 1025 characters"),
    # PROVIDE
    (T.PROVIDE, {}, "payload.cids",
     "expected a list of at most 1000000 items, got nothing (the field is missing)"),
    (T.PROVIDE, {"cids": CID}, "payload.cids",
     "expected a list of at most 1000000 items, got a string of 59 characters"),
    (T.PROVIDE, {"cids": [CID, None]}, "payload.cids[1]",
     "expected a string of 1 to 256 characters, got None"),
    (T.PROVIDE, {"cids": ["c" * 257]}, "payload.cids[0]",
     "expected a string of 1 to 256 characters, got a string of 257 characters"),
    # MEMBER
    (T.MEMBER, _without(VALID[T.MEMBER], "calls"), "payload.calls",
     "expected a list of at most 100000 items, got nothing (the field is missing)"),
    (T.MEMBER, _with(T.MEMBER, calls=["c", 2]), "payload.calls[1]",
     "expected a string of 1 to 256 characters, got 2"),
    (T.MEMBER, _with(T.MEMBER, slots=-1), "payload.slots", "expected an integer >= 0, got -1"),
    (T.MEMBER, _with(T.MEMBER, gpu="yes"), "payload.gpu", "expected true or false, got 'yes'"),
    # JOB_DELETED
    (T.JOB_DELETED, {"reason": ""}, "payload.job",
     "expected a string of 1 to 256 characters, got nothing (the field is missing)"),
    # UNPROVIDE
    (T.UNPROVIDE, {}, "payload.cids",
     "expected a list of at most 1000000 items, got nothing (the field is missing)"),
    (T.UNPROVIDE, {"cids": [None]}, "payload.cids[0]",
     "expected a string of 1 to 256 characters, got None"),
    (T.REVOKE, _without(VALID[T.REVOKE], "peer"), "payload.peer",
     "expected a string of 1 to 256 characters, got nothing (the field is missing)"),
    (T.REVOKE, _with(T.REVOKE, after=-1), "payload.after", "expected an integer >= 0, got -1"),
    (T.REVOKE, _with(T.REVOKE, lanes_after=[]), "payload.lanes_after",
     "expected an object of at most 10000 keys, got []"),
    (T.REVOKE, _with(T.REVOKE, lanes_after=None), "payload.lanes_after",
     "expected an object of at most 10000 keys, got None"),
    (T.REVOKE, _with(T.REVOKE, lanes_after={f"j{i:012x}": 1 for i in range(10_001)}),
     "payload.lanes_after", "expected an object of at most 10000 keys, got an object of "
                            "10001 keys"),
    (T.REVOKE, _with(T.REVOKE, lanes_after={"": 1}), "payload.lanes_after (a key)",
     "expected a string of 1 to 256 characters, got ''"),
    (T.REVOKE, _with(T.REVOKE, lanes_after={f"{P16}/j0123456789ab": 1}),
     "payload.lanes_after (a key)", "expected a job id ('j' and 12 lowercase hex digits, "
                                    f"maybe '.' and a peer id), got '{P16}/j0123456789ab'"),
    (T.REVOKE, _with(T.REVOKE, lanes_after={"j0123456789ab": -1}),
     "payload.lanes_after.j0123456789ab", f"expected an integer from 0 to {2**63 - 1}, got -1"),
    (T.REVOKE, _with(T.REVOKE, lanes_after={"j0123456789ab": 2**63}),
     "payload.lanes_after.j0123456789ab",
     f"expected an integer from 0 to {2**63 - 1}, got {2**63}"),
    (T.REVOKE, _with(T.REVOKE, lanes_after={"j0123456789ab": True}),
     "payload.lanes_after.j0123456789ab", f"expected an integer from 0 to {2**63 - 1}, got True"),
    (T.REVOKE, _with(T.REVOKE, lanes_after={"j0123456789ab": "3"}),
     "payload.lanes_after.j0123456789ab", f"expected an integer from 0 to {2**63 - 1}, got '3'"),
    # TASK_SPLIT_REF
    (T.TASK_SPLIT_REF, _without(VALID[T.TASK_SPLIT_REF], "sizes"), "payload.sizes",
     "expected a list of at most 1000000 items, got nothing (the field is missing)"),
    (T.TASK_SPLIT_REF, _without(VALID[T.TASK_SPLIT_REF], "input"), "payload.input",
     "expected null (no input) or a CID's text of 1 to 256 characters, got nothing (the field "
     "is missing)"),
    # IPNS_RECORD
    (T.IPNS_RECORD, _without(VALID[T.IPNS_RECORD], "record"), "payload.record",
     "expected a string of 1 to 14000 characters, got nothing (the field is missing)"),
    # TURN: a list of [type, payload], each payload valid as its type
    (T.TURN, {}, "payload.parts",
     "expected a list of 1 to 10000 [type, payload], got nothing (the field is missing)"),
    (T.TURN, {"parts": []}, "payload.parts",
     "expected a list of 1 to 10000 [type, payload], got []"),
    (T.TURN, {"parts": [[4, dict(CHUNK)], 3]}, "payload.parts[1]",
     "expected [type, payload] of a type a turn holds, got 3"),
    (T.TURN, {"parts": [[1, VALID[T.JOB_SUBMITTED]]]}, "payload.parts[0]",
     "expected [type, payload] of a type a turn holds, got a list of 2 items"),
    (T.TURN, {"parts": [[4, dict(CHUNK)], [4, {**CHUNK, "attempt": -1}]]},
     "payload.parts[1].attempt", "CLAIM payload.attempt: expected an integer >= 0, got -1"),
    (T.TURN, {"parts": [[9, {"job": "j", "task": "t"}]]}, "payload.parts[0].output",
     "TASK_DONE payload.output: expected a string of 1 to 256 characters, got nothing "
     "(the field is missing)"),
    # PARTIAL
    (T.PARTIAL, _without(VALID[T.PARTIAL], "output"), "payload.output",
     "expected a string of 1 to 256 characters, got nothing (the field is missing)"),
    (T.PARTIAL, _with(T.PARTIAL, items=-1), "payload.items", "expected an integer >= 0, got -1"),
    # MEMBER's capabilities for placement
    (T.MEMBER, _with(T.MEMBER, kinds="python"), "payload.kinds",
     "expected a list of at most 100000 items, got 'python'"),
    (T.MEMBER, _with(T.MEMBER, labels={"site": 3}), "payload.labels.site",
     "expected a string of at most 1024 characters, got 3"),
    # JOB_SUBMITTED's members (LANES_FEATURE)
    (T.JOB_SUBMITTED, _with(T.JOB_SUBMITTED, members=[]), "payload.members",
     "expected a list of 1 to 1024 peer ids, got []"),
    (T.JOB_SUBMITTED, _with(T.JOB_SUBMITTED, members=P20), "payload.members",
     "expected a list of 1 to 1024 peer ids, got '0123456789abcdef0123'"),
    (T.JOB_SUBMITTED, _with(T.JOB_SUBMITTED, members=[P20, P20.upper()]), "payload.members[1]",
     "expected a peer id (16 or 20 lowercase hex digits), got '0123456789ABCDEF0123'"),
    (T.JOB_SUBMITTED, _with(T.JOB_SUBMITTED, members=[P16, "p1"]), "payload.members[1]",
     "expected a peer id (16 or 20 lowercase hex digits), got 'p1'"),
    (T.JOB_SUBMITTED, _with(T.JOB_SUBMITTED, members=[P16, P16]), "payload.members",
     "expected distinct peer ids, got ['fedcba9876543210', 'fedcba9876543210']"),
    (T.JOB_SUBMITTED, _with(T.JOB_SUBMITTED, members=[P16] * 1025), "payload.members",
     "expected a list of 1 to 1024 peer ids, got a list of 1025 items"),
    # JOB_ENDED
    (T.JOB_ENDED, _without(VALID[T.JOB_ENDED], "digest"), "payload.digest",
     "expected 32 lowercase hex digits, got nothing (the field is missing)"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, digest=DIGEST.upper()), "payload.digest",
     "expected 32 lowercase hex digits, got '0123456789ABCDEF0123456789ABCDEF'"),
    (T.JOB_ENDED, _without(VALID[T.JOB_ENDED], "job"), "payload.job",
     "expected a string of 1 to 256 characters, got nothing (the field is missing)"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, state="running"), "payload.state",
     "expected one of 'done', 'failed', 'cancelled', got 'running'"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, state=["done"]), "payload.state",
     "expected one of 'done', 'failed', 'cancelled', got ['done']"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, n_tasks=100_001), "payload.n_tasks",
     "expected an integer <= 100000, got 100001"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, end=-1), "payload.end", "expected an integer >= 0, got -1"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, outputs=[]), "payload.outputs",
     "expected an object of at most 2 keys, got []"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, n_tasks=1, outputs={"t": ["k", CID, 1, "a", 1],
                                                         "u": ["k", CID, 1, "a", 2]}),
     "payload.outputs", "expected an object of at most 1 keys, got an object of 2 keys"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, outputs={"": ["k", CID, 1, "a", 1]}),
     "payload.outputs (a key)", "expected a string of 1 to 256 characters, got ''"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, outputs={"t": ["k", "c", 1, "a", 0]}), "payload.outputs.t",
     "expected [key or null, cid, hlc, origin, seq], got ['k', 'c', 1, 'a', 0]"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, outputs={"t": ["k", CID, 1, "a"]}), "payload.outputs.t",
     "expected [key or null, cid, hlc, origin, seq], got a list of 4 items"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, outputs={"t": ["", "c", 1, "a", 1]}), "payload.outputs.t",
     "expected [key or null, cid, hlc, origin, seq], got ['', 'c', 1, 'a', 1]"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, outputs={"t": {"cid": "c"}}), "payload.outputs.t",
     "expected [key or null, cid, hlc, origin, seq], got {'cid': 'c'}"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, producers={CID: []}), f"payload.producers.{CID}",
     "expected a list of 1 to 1024 peer ids, got []"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, producers={CID: ["a"]}), f"payload.producers.{CID}[0]",
     "expected a peer id (16 or 20 lowercase hex digits), got 'a'"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, producers={"c" * 257: [P16]}),
     "payload.producers (a key)",
     "expected a string of 1 to 256 characters, got a string of 257 characters"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, failed={"u": 3}), "payload.failed.u",
     "expected a string of at most 1024 characters, got 3"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, failed={"u": "e" * 1025}), "payload.failed.u",
     "expected a string of at most 1024 characters, got a string of 1025 characters"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, listing=CID), "payload.listing",
     "expected no `outputs` nor `producers` beside it (they are in the listing), got a "
     "string of 59 characters"),
    (T.JOB_ENDED, _with(T.JOB_ENDED, outputs={}, producers={}, listing=5), "payload.listing",
     "expected a string of 1 to 256 characters, got 5"),
    # JOB_MEMBERS
    (T.JOB_MEMBERS, _without(VALID[T.JOB_MEMBERS], "add"), "payload.add",
     "expected a list of 1 to 1024 peer ids, got nothing (the field is missing)"),
    (T.JOB_MEMBERS, _with(T.JOB_MEMBERS, add=[P16, f"{P16}/j0123456789ab"]), "payload.add[1]",
     "expected a peer id (16 or 20 lowercase hex digits), got 'fedcba9876543210/j0123456789ab'"),
    (T.JOB_MEMBERS, _with(T.JOB_MEMBERS, job=None), "payload.job",
     "expected a string of 1 to 256 characters, got None"),
]


@pytest.mark.parametrize(("typ", "payload", "field", "expected"), INVALID,
                         ids=[f"{t.name}-{f}-{i}" for i, (t, _, f, _) in enumerate(INVALID)])
def test_invalid_payloads_raise_naming_the_type_and_field(
        typ: EventType, payload: dict[str, Any], field: str, expected: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        ev(typ, payload)
    # a turn's invalid part: the turn names the part, the part's type its field
    where = field.split("]", 1)[0] + "]" if expected.split(" ")[0].isupper() else field
    assert str(info.value) == f"{typ.name} {where}: {expected}"
    assert info.value.field == field


def test_a_turn_folds_as_its_parts_sharing_its_id() -> None:
    """TURN: parts are single events with the turn's (origin, seq, hlc), their own payload
    objects and bodies; the fold folds only the parts, and records the turn."""
    t = ev(EventType.TURN, VALID[EventType.TURN], origin="p", seq=4, hlc=9)
    assert [(p.origin, p.seq, p.hlc, p.type) for p in t.parts] == [
        ("p", 4, 9, EventType.CLAIM), ("p", 4, 9, EventType.CHUNK_DONE),
        ("p", 4, 9, EventType.TASK_DONE)]
    assert t.parts[1].payload is VALID[EventType.TURN]["parts"][1][1]
    assert t.parts[0].body == Claim("j1", "t", ("a", 3), 2, 1) and t.singles == t.parts
    plain = ev(EventType.CLAIM, CHUNK)
    assert plain.parts == () and plain.singles == (plain,)
    s = fold([t])
    assert s.chunks[ChunkKey("j1", "t", "a", 3, 2)].claims[1][0].id == ("p", 4)
    assert s.chunks[ChunkKey("j1", "t", "a", 3, 3)].done is t.parts[1]
    assert s.task_done[("j1", "u")].payload["cached"] is True
    assert s.providers[CID] == {"p"}
    assert set(s.events) == {("p", 4)} and s.events[("p", 4)] is t
    assert Event.from_json(t.to_json()).parts == t.parts  # the wire form round-trips


def test_turn_event_of_parts_equals_the_decoded_turn() -> None:
    from peer.log import turn_event
    parts = [ev(EventType(k), p, origin="p", seq=2, hlc=5)
             for k, p in VALID[EventType.TURN]["parts"]]
    made = turn_event(parts)
    assert made.type == EventType.TURN and made.parts == tuple(parts)
    assert made == Event("p", 2, 5, EventType.TURN, VALID[EventType.TURN])
    assert turn_event(parts[:1]) is parts[0]  # a lone part is a single event


def test_an_older_peer_keeps_a_turn_unfolded(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a peer of the previous version does with a TURN: an unknown type (kept, counted
    in the heads, served), folded by none of its tables."""
    from peer.log import events
    monkeypatch.delitem(events._SPECS, int(EventType.TURN))
    e = Event.from_json({"origin": "p", "seq": 1, "hlc": 1, "type": 17,
                         "payload": VALID[EventType.TURN]})
    assert not e.known and e.parts == ()
    s = fold([e])
    assert s.heads["p"] == 1 and not s.chunks and not s.task_done


def test_the_table_covers_every_type_with_a_missing_field() -> None:
    missing = {t for t, _, _, e in INVALID if e.endswith("(the field is missing)")}
    assert missing == set(EventType)


@pytest.mark.parametrize(("args", "message"), [
    (("", 1, 0), "CLAIM origin: expected a string of 1 to 256 characters, got ''"),
    ((LONG, 1, 0), "CLAIM origin: expected a string of 1 to 256 characters, got a string "
                   "of 257 characters"),
    ((5, 1, 0), "CLAIM origin: expected a string of 1 to 256 characters, got 5"),
    (("a", 0, 0), f"CLAIM seq: expected an integer from 1 to {2**63 - 1}, got 0"),
    (("a", "1", 0), f"CLAIM seq: expected an integer from 1 to {2**63 - 1}, got '1'"),
    (("a", 1, -1), f"CLAIM hlc: expected an integer from 0 to {2**63 - 1}, got -1"),
    (("a", 1, 2**63), f"CLAIM hlc: expected an integer from 0 to {2**63 - 1}, "
                      f"got {2**63}"),
])
def test_invalid_envelopes(args: tuple[Any, Any, Any], message: str) -> None:
    with pytest.raises(InvalidEvent, match="^" + message.replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[").replace("]", r"\]") + "$"):
        Event(*args, EventType.CLAIM, dict(CHUNK))


def test_bounds_of_the_envelope_are_inclusive() -> None:
    e = Event("o" * 256, 2**63 - 1, 2**63 - 1, EventType.CLAIM, dict(CHUNK))
    assert Event("a", 1, 0, EventType.CLAIM, dict(CHUNK)).hlc == 0
    assert e.seq == 2**63 - 1


def test_invalid_type_or_payload() -> None:
    with pytest.raises(InvalidEvent, match=r"^event type: expected an integer from 1 to 255, "
                                           r"got 999$"):
        Event("a", 1, 1, 999, {})  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match=r"^event type: expected an integer from 1 to 255, "
                                           r"got 0$"):
        Event("a", 1, 1, 0, {})  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match=r"^UNKNOWN_99 payload: expected an object, got \[\]$"):
        Event("a", 1, 1, 99, [])  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match=r"^UNKNOWN_99 seq: expected an integer"):
        Event("a", 0, 1, 99, {})  # type: ignore[arg-type]
    with pytest.raises(InvalidEvent, match=r"^PROVIDE payload: expected an object, got \[\]$"):
        Event("a", 1, 1, EventType.PROVIDE, [])  # type: ignore[arg-type]
    # an int on the wire becomes the EventType
    assert Event("a", 1, 1, 11, {"cids": []}).type is EventType.PROVIDE  # type: ignore[arg-type]


@pytest.mark.parametrize(("doc", "message"), [
    ([], "event: expected an object, got []"),
    ({"origin": "a", "seq": 1, "hlc": 1, "type": 11}, "event payload: missing"),
    ({"seq": 1, "hlc": 1, "type": 11, "payload": {}}, "event origin: missing"),
    ({"origin": "a", "seq": 1, "hlc": 1, "type": True, "payload": {"cids": []}},
     "event type: expected an integer from 1 to 255, got True"),
    ({"origin": "a", "seq": 1, "hlc": 1, "type": 11, "payload": [["cids", []]]},
     "PROVIDE payload: expected an object, got [['cids', []]]"),
])
def test_from_json_rejects_malformed_wire_forms(doc: Any, message: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        Event.from_json(doc)
    assert str(info.value) == message


def test_invalid_event_is_a_banzai_error_and_a_value_error() -> None:
    """Gossip drops a frame whose decoding raises ValueError (counted as bad_frame)."""
    with pytest.raises(InvalidEvent) as info:
        ev(EventType.CLAIM, {**CHUNK, "attempt": -1})
    assert isinstance(info.value, BanzaiError) and isinstance(info.value, ValueError)
    assert (info.value.message, info.value.field) == (
        "CLAIM payload.attempt: expected an integer >= 0, got -1", "payload.attempt")


@pytest.mark.parametrize("typ", list(EventType))
def test_wire_form_is_unchanged_byte_for_byte(typ: EventType) -> None:
    raw = json.dumps({"origin": "a", "seq": 4, "hlc": 99, "type": int(typ),
                      "payload": {**VALID[typ], "future_field": [1, {"x": None}]}},
                     separators=(",", ":"))
    e = Event.from_json(json.loads(raw))
    assert json.dumps(e.to_json(), separators=(",", ":")) == raw
    assert Event.from_json(e.to_json()) == e


# -- any JSON in, an Event or InvalidEvent out --------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 2**64) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8)


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(list(EventType)), st.data())
def test_any_mutation_of_a_payload_builds_or_raises_invalid_event(
        typ: EventType, data: st.DataObject) -> None:
    """Validation never lets a TypeError or KeyError escape, whatever a peer sends."""
    payload = dict(VALID[typ])
    key = data.draw(st.sampled_from(sorted(payload)) | st.text(max_size=3))
    if data.draw(st.booleans()):
        payload.pop(key, None)
    else:
        payload[key] = data.draw(JSON)
    try:
        e = ev(typ, payload)
    except InvalidEvent as err:
        assert str(err).startswith(f"{typ.name} payload.")
    else:
        assert e.body is not None and e.payload is payload


# -- the log on disk ----------------------------------------------------------------------


def test_event_log_opens_quarantining_invalid_rows(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "events.sqlite"
    good = [ev(EventType.JOB_SUBMITTED, VALID[EventType.JOB_SUBMITTED], seq=1, hlc=1),
            ev(EventType.PROVIDE, {"cids": [CID]}, seq=4, hlc=9)]
    log = EventLog(path)
    log.append(good)
    log.close()
    db = sqlite3.connect(str(path))
    bad_rows = [("a", 2, 2, int(EventType.CLAIM), json.dumps({**CHUNK, "attempt": -1})),
                ("a", 3, 3, 99, "{}"),  # a type this version does not know
                ("", 1, 4, int(EventType.PROVIDE), '{"cids": []}'),
                ("b", 1, 5, int(EventType.PROVIDE), "{not json"),
                ("c", 1, 6, int(EventType.PROVIDE), "[" * 100_000 + "]" * 100_000)]  # too deep
    db.executemany("INSERT INTO events (origin, seq, hlc, type, payload) VALUES (?, ?, ?, ?, ?)",
                   bad_rows)
    db.commit()
    db.close()
    again = EventLog(path)
    with caplog.at_level(logging.WARNING, logger="peer.log.sqlite"):
        loaded = list(again.load())
    unknown = Event("a", 3, 3, 99, {})  # type: ignore[arg-type]
    assert loaded == [*good[:1], unknown, good[1]]  # a newer peer's type is kept
    assert again.skipped == 4
    assert "CLAIM payload.attempt: expected an integer >= 0, got -1" in caplog.text
    assert "c/1: maximum recursion depth exceeded" in caplog.text
    assert fold(loaded).heads == {"a": 1}
    assert again.quarantined() == 4  # moved aside: a second load finds only good rows
    assert list(again.load()) == loaded and again.skipped == 4
    again.close()


def test_event_log_quarantines_a_row_that_is_not_what_its_batch_signed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A row edited on disk no longer hashes to its signed batch: set aside as an invalid
    row, not loaded (and folded, served) under the batch's signature."""
    path = tmp_path / "events.sqlite"
    evs = [ev(EventType.PROVIDE, {"cids": [CID]}, seq=s, hlc=s) for s in (1, 2, 3)]
    sign_events(Identity.generate(), "a", evs, None)
    log = EventLog(path)
    log.append(evs)
    log.close()
    db = sqlite3.connect(str(path))
    db.execute("UPDATE events SET payload = ? WHERE seq = 2", (json.dumps({"cids": [CID] * 2}),))
    db.execute("UPDATE events SET seq = 9 WHERE seq = 3")  # a seq its batch does not cover
    db.commit()
    db.close()
    again = EventLog(path)
    with caplog.at_level(logging.WARNING, logger="peer.log.sqlite"):
        loaded = list(again.load())
    assert loaded == evs[:1] and loaded[0].att == evs[0].att
    assert f"{path}: quarantined the event a/2: bad_hash" in caplog.text
    assert f"{path}: quarantined the event a/9: bad_batch_ref" in caplog.text
    assert again.skipped == 2 and again.quarantined() == 2  # the rows are kept there
    assert list(again.load()) == loaded
    again.close()


def _signed_log(path: Path) -> None:
    evs = [ev(EventType.PROVIDE, {"cids": [CID + str(s)]}, seq=s, hlc=s) for s in range(1, 301)]
    sign_events(Identity.generate(), "a", evs, None)
    log = EventLog(path)
    log.append(evs)
    log.set_meta("incarnation", "3")
    log.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.close()


def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(b"garbage" * 100), "file is not a database"),
    (_truncate, "database disk image is malformed"),
], ids=["not_a_database", "truncated"])
def test_a_log_file_sqlite_cannot_read_is_an_error_naming_it(tmp_path: Path, damage: Any,
                                                              message: str) -> None:
    path = tmp_path / "events.sqlite"
    _signed_log(path)
    damage(path)
    before = path.read_bytes()
    with pytest.raises(DataError, match=re.escape(f"{path}: {message}: the file is damaged")):
        EventLog(path)
    assert path.read_bytes() == before  # left as it was, for a human


@pytest.mark.parametrize("stmt,read,message", [
    ("INSERT INTO floors VALUES ('o', 'x')", lambda log: log.floors(),
     "a row of floors holds ('o', 'x'), not (origin, seq)"),
    ("INSERT INTO compact_floors VALUES ('o', 2.5)", lambda log: JobIndex(log.db).floors(),
     "a row of compact_floors holds ('o', 2.5), not (origin, seq)"),
    ("INSERT INTO meta VALUES ('peer_id', NULL)", lambda log: log.get_meta("peer_id"),
     "meta 'peer_id' holds None, not a text"),
    ("UPDATE meta SET v = 'x' WHERE k = 'incarnation'",
     lambda log: log.get_meta_int("incarnation"), "meta 'incarnation' holds 'x', not a count"),
    ("UPDATE batches SET key = 'zz'", lambda log: list(log.load()),
     "the signed batch of row 1 is malformed (bad batch key"),
    ("UPDATE batches SET first = 'x'", lambda log: log.signer_keys(),
     "the signed batch of row 1 is malformed (bad batch origin, signer or first seq)"),
], ids=["floor", "compact_floor", "peer_id", "incarnation", "batch_key", "batch_first"])
def test_a_bad_value_in_the_log_file_is_an_error_naming_it(tmp_path: Path, stmt: str,
                                                           read: Any, message: str) -> None:
    path = tmp_path / "events.sqlite"
    _signed_log(path)
    db = sqlite3.connect(path)
    JobIndex(db)  # (its tables)
    db.execute(stmt)
    db.commit()
    db.close()
    log = EventLog(path)
    with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
        read(log)
    log.close()


def test_a_part_event_is_the_checked_event_slot_for_slot() -> None:
    """`part_event` (a TURN's part, set slot by slot past the frozen class's check) holds
    what the checked constructor makes of the same fields: every slot, none left unset."""
    from dataclasses import fields

    from peer.log.events import part_event
    checked = Event("p" * 20, 3, 7, EventType.CLAIM,
                    {"job": "j", "task": "t", "split": ["p" * 20, 1], "chunk": 0, "attempt": 0})
    part = part_event(checked.origin, checked.seq, checked.hlc, checked.type, checked.payload,
                      checked.body)
    for f in fields(Event):
        assert getattr(part, f.name) == getattr(checked, f.name), f.name
    assert part == checked and part.singles == (part,)

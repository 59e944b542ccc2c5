"""One JSON encoding per written event of a task (issue 12, session 48 helper e): the canonical
text a flush's signing or a receiver's check makes for an event's content hash is the text of
its row (peer.log.signing.event_hash with `keep`, stored_text), and the rows of both forms
(an earlier release's, in the payload's own key order, and this one's, sorted) read back as
the same events, whose hashes verify on any peer."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from peer.config import PeerConfig
from peer.log import Event, EventType, turn_event
from peer.log.events import ONE_TEXT_TYPES, SET_TEXT
from peer.log.signing import (
    CANONICAL,
    EVENT_DOMAIN,
    Identity,
    MemberKeys,
    event_hash,
    peer_id_for,
    sign_events,
)
from peer.log.sqlite import EventLog
from peer.mesh.wire import encode_event, pack_frames
from peer.node import Node

ME = Identity.generate()
ID = peer_id_for(ME.key)
JOB = "j0123456789ab"
# A user's workflow: its task's keys and params in the user's order, not sorted
WORKFLOW = {"name": "w", "tasks": [{"name": "t", "call": "ECHO", "params": {"text": "x",
                                                                           "b": 2, "a": 1},
                                    "depends": []}]}


def _turn(seq: int, hlc: int, origin: str = ID) -> Event:
    """A TURN of a CLAIM and a CHUNK_DONE whose payloads' keys are not in sorted order (as a
    runner makes them), a cache entry's value an object of unsorted keys too."""
    base = {"task": "t", "job": JOB, "split": [origin, 1], "chunk": 0, "attempt": 0}
    done = {**base, "output": "bafkout", "cache": {"k1": {"n": 2, "c": "bafkitem"}},
            "log": "bafklog", "s": 0.002, "done": {"key": "k" * 64}}
    return turn_event([Event(origin, seq, hlc, EventType.CLAIM, base),
                       Event(origin, seq, hlc, EventType.CHUNK_DONE, done)])


def _rows(path: Path) -> dict[int, str]:
    db = sqlite3.connect(path)
    try:
        return {seq: text for seq, text in db.execute("SELECT seq, payload FROM events")}
    finally:
        db.close()


def _wire(events: list[Event]) -> tuple[list[Any], list[Any]]:
    frames, _ = pack_frames(events, 1 << 20, 512)
    assert len(frames) == 1
    return ([json.loads(e) for e in frames[0].events],
            [json.loads(b) for b in frames[0].batches])


def _plain_hash(e: Event) -> bytes:
    """The content hash as every release defines it: the canonical JSON of the whole list."""
    canon = json.dumps([e.origin, e.seq, e.hlc, int(e.type), e.payload], separators=(",", ":"),
                       sort_keys=True)
    return hashlib.sha256(EVENT_DOMAIN + canon.encode()).digest()


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.floats(allow_nan=False), st.text(max_size=8))
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)),
    max_leaves=20)


@given(cache=st.dictionaries(st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                     min_size=1, max_size=12), _JSON, min_size=1, max_size=5),
       seq=st.integers(1, 2**53), hlc=st.integers(0, 2**60))
def test_the_kept_text_gives_the_hash_of_the_whole_list(cache: dict[str, Any], seq: int,
                                                         hlc: int) -> None:
    """event_hash with `keep` hashes the head's text and the payload's kept text joined: byte
    for byte the canonical text of the whole list (any JSON: escapes, non-ASCII, floats)."""
    e = Event(ID, seq, hlc, EventType.CACHE_PUT, {"cache": cache})
    assert e.type in ONE_TEXT_TYPES
    assert event_hash(e, keep=True) == _plain_hash(e) == event_hash(e)
    assert e.text == CANONICAL.encode(e.payload)


def test_a_flush_encodes_a_turn_once_for_its_hash_and_its_row(tmp_path: Path) -> None:
    """Signing keeps the canonical text (sorted keys) and the row is that text: no second
    encoding; the write takes it (not kept in memory after); the content hash unchanged."""
    log = EventLog(tmp_path / "log.db")
    e = _turn(1, 10)
    assert list(e.payload["parts"][0][1]) == ["task", "job", "split", "chunk", "attempt"]
    sign_events(ME, ID, [e], None)
    kept = e.text
    assert kept == CANONICAL.encode(e.payload)
    assert e.att.hash_at(1) == _plain_hash(e)
    log.append([e])
    assert e.text is None
    assert _rows(tmp_path / "log.db") == {1: kept}
    log.close()


def test_a_receiver_writes_the_text_its_check_kept(tmp_path: Path) -> None:
    """A received TURN: the check's hash keeps the canonical text, its row is that text."""
    sender = _turn(1, 10)
    sign_events(ME, ID, [sender], None)
    sender_text = sender.text
    keys = MemberKeys()
    got = keys.accept(*_wire([sender]))
    assert [g.id for g in got] == [(ID, 1)]
    assert got[0].text == sender_text
    log = EventLog(tmp_path / "log.db")
    log.append(got)
    assert got[0].text is None
    assert _rows(tmp_path / "log.db") == {1: sender_text}
    log.close()


def test_rows_of_both_forms_replay_and_serve_to_the_same_events(tmp_path: Path) -> None:
    """A data dir holding a TURN row as an earlier release wrote it (compact JSON, the
    sender's key order) beside one written now (canonical) and a JOB_SUBMITTED: every row
    loads (its hash checked against its signed batch: nothing quarantined) as the event
    that was written, is served (`range`) and accepted by a receiver, whose check hashes
    the payload canonically as a peer of an earlier release does."""
    path = tmp_path / "log.db"
    log = EventLog(path)
    sub = Event(ID, 1, 5, EventType.JOB_SUBMITTED, {"job": JOB, "workflow": WORKFLOW})
    old, new = _turn(2, 10), _turn(3, 11)
    written = [sub, old, new]
    sign_events(ME, ID, written, None)
    log.append(written)
    old_form = json.dumps(old.payload, separators=(",", ":"))  # an earlier release's row
    assert old_form != CANONICAL.encode(old.payload)
    log._db.execute("UPDATE events SET payload = ? WHERE seq = 2", (old_form,))
    log.close()
    rows = _rows(path)
    assert rows[2] == old_form and rows[3] == CANONICAL.encode(new.payload)
    log = EventLog(path)
    loaded = list(log.load())
    assert log.skipped == 0 and log.quarantined() == 0
    assert [(e.id, e.payload) for e in loaded] == [(e.id, e.payload) for e in written]
    assert all(e.text is None for e in loaded)  # (a loaded event keeps no text)
    served = log.range(ID, 0, 3, 10)
    assert [e.payload for e in served] == [e.payload for e in written]
    accepted = MemberKeys().accept(*_wire(served))
    assert [e.id for e in accepted] == [(ID, 1), (ID, 2), (ID, 3)]
    log.close()


def test_a_job_submitted_row_keeps_its_workflows_key_order(tmp_path: Path) -> None:
    """A JOB_SUBMITTED is no type of one text: its row keeps the workflow as the user wrote
    it (views show it, and a compacted job's record text, whose hash another peer checks a
    fetched copy against, holds it), across a restart."""
    path = tmp_path / "log.db"
    log = EventLog(path)
    sub = Event(ID, 1, 5, EventType.JOB_SUBMITTED, {"job": JOB, "workflow": WORKFLOW})
    sign_events(ME, ID, [sub], None)
    assert sub.text is None
    log.append([sub])
    log.close()
    log = EventLog(path)
    (back,) = list(log.load())
    task = back.payload["workflow"]["tasks"][0]
    assert list(task) == ["name", "call", "params", "depends"]
    assert list(task["params"]) == ["text", "b", "a"]
    log.close()


def test_attesting_old_events_keeps_no_text(tmp_path: Path) -> None:
    """Events of the previous release signed at start (`attest`: their rows stay as they
    are) keep no text in memory after."""
    log = EventLog(tmp_path / "log.db")
    e = _turn(1, 10)
    log.append([e])
    sign_events(ME, ID, [e], None)
    assert e.text is not None
    log.attest([e])
    assert e.text is None
    log.close()


def test_a_row_of_one_text_is_checked_as_it_reads(tmp_path: Path) -> None:
    """At a start a canonical row is hashed as its text reads (no encoding); a row edited
    since (another content, still valid JSON; or the same content with its keys in another
    order, as an earlier release wrote it) is not the signed text: the payload it decodes to
    is checked as before, so the edited one is quarantined and the reordered one loads."""
    path = tmp_path / "log.db"
    log = EventLog(path)
    events = [_turn(1, 10), _turn(2, 11), _turn(3, 12)]
    sign_events(ME, ID, events, None)
    log.append(events)
    text = CANONICAL.encode(events[0].payload)
    assert '"chunk":0' in text
    log._db.execute("UPDATE events SET payload = ? WHERE seq = 1",
                    (text.replace('"chunk":0', '"chunk":1', 1),))
    log._db.execute("UPDATE events SET payload = ? WHERE seq = 2",
                    (json.dumps(events[1].payload, separators=(",", ":")),))
    log.close()
    log = EventLog(path)
    loaded = list(log.load())
    assert [e.id for e in loaded] == [(ID, 2), (ID, 3)]
    assert [e.payload for e in loaded] == [events[1].payload, events[2].payload]
    assert log.quarantined() == 1
    log.close()


# -- the wire (session 49 helper e): a flush's push sends the kept text, not a third encoding --


def _old_wire(e: Event) -> bytes:
    """An event's wire form as every earlier release encoded it."""
    d = e.to_json()
    if e.att is not None:
        d["b"] = e.att.first
        if e.att.signer != e.att.origin:
            d["bs"] = e.att.signer
    return json.dumps(d, separators=(",", ":")).encode()


@given(cache=st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1,
                                     max_size=8), _JSON, min_size=1, max_size=5),
       seq=st.integers(1, 2**53), hlc=st.integers(0, 2**60), signed=st.booleans())
def test_an_event_without_a_kept_text_goes_on_the_wire_byte_for_byte_as_before(
        cache: dict[str, Any], seq: int, hlc: int, signed: bool) -> None:
    """Without a kept text (received, read back, of another type) the wire form is the
    compact JSON of the event and its batch reference, byte for byte as earlier releases
    sent it (any JSON: escapes, non-ASCII, floats)."""
    e = Event(ID, seq, hlc, EventType.CACHE_PUT, {"cache": cache})
    if signed:
        sign_events(ME, ID, [e], None)
        SET_TEXT(e, None)
    assert encode_event(e) == _old_wire(e)
    other = Event("0" * 16, seq, hlc, EventType.CACHE_PUT, {"cache": cache})
    sign_events(ME, ID, [other], None)  # (attested: its signer is not its origin: "bs")
    SET_TEXT(other, None)
    assert encode_event(other) == _old_wire(other) and b'"bs":' in encode_event(other)


def test_a_kept_text_is_the_wire_payload_and_reads_as_the_same_event() -> None:
    """With a kept text the payload on the wire is that text (its keys sorted), the rest as
    before; a receiver (this release's check, or any earlier one's json.loads) reads the
    same event and hashes it to the signed hash."""
    e = _turn(1, 10)
    sign_events(ME, ID, [e], None)
    kept = e.text
    assert kept is not None
    wire = encode_event(e)
    assert wire == (b'{"origin":"%s","seq":1,"hlc":10,"type":%d,"payload":%s,"b":1}'
                    % (ID.encode(), int(EventType.TURN), kept.encode()))
    assert wire != _old_wire(e)  # (the payload's own order: runners' keys are not sorted)
    assert json.loads(wire) == json.loads(_old_wire(e))
    (got,) = MemberKeys().accept(*_wire([e]))
    assert got.payload == e.payload and got.text == kept


class _Wire:
    """A gossip that encodes what it is given to push, as `Gossip.broadcast` does then."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, str | None]] = []

    def broadcast(self, events: list[Event]) -> None:
        self.sent += [(encode_event(e), e.text) for e in events]

    def live_peers(self) -> dict[str, Any]:
        return {}


async def test_a_flush_pushes_the_text_its_signing_kept_and_keeps_none_after(
        tmp_path: Path) -> None:
    """A loop turn's TURN: its signing's canonical text is its row and its wire payload (one
    encoding for the hash, the row and the frame), and no event keeps it after the push."""
    node = Node(PeerConfig(data_dir=tmp_path / "p", slots=1, mdns=False))
    node.listeners.clear()
    wire = _Wire()
    node.gossip = wire  # type: ignore[assignment]
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    node.state.apply(Event("s" * 16, 1, 1, EventType.JOB_SUBMITTED, {
        "job": JOB, "workflow": {"name": "w", "tasks": []}}))
    for i in range(3):
        node.emit(EventType.CLAIM, {"task": f"t{i}", "job": JOB, "split": ["s" * 16, 1],
                                    "chunk": 0, "attempt": 0})
    await asyncio.sleep(0)
    ((sent, text_then),) = wire.sent
    (turn,) = [node.state.by_origin[node.peer_id][1]]
    assert turn.type is EventType.TURN and text_then is not None
    assert text_then == CANONICAL.encode(turn.payload) != json.dumps(turn.payload,
                                                                    separators=(",", ":"))
    assert b'"payload":' + text_then.encode() + b',"b":1}' in sent
    assert turn.text is None  # (not held past the push)
    row = node.log._db.execute("SELECT payload FROM events WHERE seq = 1").fetchone()[0]
    assert row == text_then
    node.log.close()

"""A Node signs what it flushes, signs or attests a data dir of 0.1.0 once when it opens it,
and settles two contents for one (origin, seq) the same way whatever the order."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.log.signing import Identity, MemberKeys, event_hash, peer_id_for, sign_events
from peer.mesh.wire import pack_frames
from peer.node import Node

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "datadir-v0.1.0"
OLD_ID = "9b79d67a1e23336a"


def _open(d: Path, nodes: list[Node]) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    n.listeners.clear()
    nodes.append(n)
    return n


def _rows(db: Path) -> set[tuple[object, ...]]:
    c = sqlite3.connect(db)
    try:
        return set(c.execute("SELECT origin, seq, hlc, type, payload FROM events"))
    finally:
        c.close()


def _batches(db: Path) -> int:
    c = sqlite3.connect(db)
    try:
        return int(c.execute("SELECT count(*) FROM batches").fetchone()[0])
    finally:
        c.close()


def test_a_data_dir_of_0_1_0_is_signed_once_by_its_own_peer(tmp_path: Path,
                                                           opened: list[Node]) -> None:
    d = tmp_path / "old"
    shutil.copytree(FIXTURE, d)
    before = _rows(FIXTURE / "events.sqlite")
    n = _open(d, opened)
    assert n.peer_id == OLD_ID and n.incarnation == 1
    evs = list(n.log.load())  # (its PROVIDEs left memory at start: read from the log)
    assert len(evs) == len(before)
    assert all(e.att is not None and e.att.signer == e.att.origin == OLD_ID for e in evs)
    n.log.close()
    opened.clear()
    assert _rows(d / "events.sqlite") == before  # every 0.1.0 column byte for byte
    count = _batches(d / "events.sqlite")
    again = _open(d, opened)
    assert again.incarnation == 2  # one more at each start
    assert all(e.att is not None for e in again.log.load())
    assert _batches(d / "events.sqlite") == count  # nothing signed twice
    frames, _ = pack_frames(list(again.log.load()), 16 << 20, 512)
    k = MemberKeys()
    got = [e for f in frames for e in k.accept([json.loads(x) for x in f.events],
                                               [json.loads(x) for x in f.batches])]
    assert len(got) == len(before) and not k.refused.total


def test_other_origins_events_of_0_1_0_are_attested(tmp_path: Path,
                                                     opened: list[Node]) -> None:
    d = tmp_path / "relay"
    shutil.copytree(FIXTURE, d)
    c = sqlite3.connect(d / "events.sqlite")
    c.execute("DELETE FROM meta WHERE k = 'peer_id'")  # a new peer that holds the old history
    c.commit()
    c.close()
    n = _open(d, opened)
    assert n.peer_id == peer_id_for(n.identity.key) != OLD_ID
    old = [e for e in n.state.events.values() if e.origin == OLD_ID]
    assert old and all(e.att.signer == n.peer_id for e in old)
    frames, _ = pack_frames(old, 16 << 20, 512)
    k = MemberKeys()
    got = [e for f in frames for e in k.accept([json.loads(x) for x in f.events],
                                               [json.loads(x) for x in f.batches])]
    assert len(got) == len(old)  # the origin signed nothing: an admitted member's word holds
    k2 = MemberKeys()
    k2.keys[OLD_ID] = Identity.generate().key  # once the origin signs, only it speaks for it
    assert [e for f in frames for e in k2.accept([json.loads(x) for x in f.events],
                                                 [json.loads(x) for x in f.batches])] == []


def test_flush_signs_each_turn_once(tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "p", opened)

    async def turn() -> list[Event]:
        out = [n.emit(EventType.PROVIDE, {"cids": [f"c{i}"]}) for i in range(3)]
        await asyncio.sleep(0)  # the flush at the end of the turn
        return out
    evs = asyncio.run(turn())
    assert {id(e.att) for e in evs} == {id(evs[0].att)} and evs[0].att.count == 3
    reopened = _open(tmp_path / "p", [])
    try:
        held = {e.id: e for e in reopened.log.load()}  # (PROVIDEs leave memory at start)
        assert held[evs[1].id].att.sig == evs[1].att.sig
    finally:
        reopened.log.close()


def test_two_contents_for_one_id_settle_on_the_smaller_hash(tmp_path: Path,
                                                             opened: list[Node]) -> None:
    other = Identity.generate()
    oid = peer_id_for(other.key)
    a = Event(oid, 1, 5, EventType.PROVIDE, {"cids": ["ca"]})
    b = Event(oid, 1, 5, EventType.PROVIDE, {"cids": ["cb"]})
    sign_events(other, oid, [a], None)
    sign_events(other, oid, [b], None)
    win, lose = sorted((a, b), key=event_hash)
    winners = []
    for i, order in enumerate(((a, b), (b, a))):
        n = _open(tmp_path / f"n{i}", opened)
        for e in order:
            n.merge([e])
        held = n.state.events[(oid, 1)]
        winners.append(held.payload)
        assert n.conflicts.by_origin == {oid: {"conflict": 1}}
        assert set(n.state.providers) >= {win.payload["cids"][0]}
        assert lose.payload["cids"][0] not in n.state.providers
        stored = _rows(tmp_path / f"n{i}" / "events.sqlite")
        assert (oid, 1, 5, int(EventType.PROVIDE), json.dumps(win.payload,
                                                              separators=(",", ":"))) in stored
    assert winners == [win.payload, win.payload]


def test_revoke_names_a_known_member_once(tmp_path: Path, opened: list[Node]) -> None:
    from peer.errors import Conflict, NotFound

    n = _open(tmp_path / "r", opened)
    other = Identity.generate()
    oid = peer_id_for(other.key)
    member = Event(oid, 1, 5, EventType.MEMBER, {"name": "o", "http": "", "calls": [],
                                                "slots": 1, "cores": 1, "mem_mb": 1,
                                                "key": other.key.hex()})
    sign_events(other, oid, [member], None)
    n.merge([member])
    with pytest.raises(NotFound):
        n.revoke("nobody", "x")
    ev = n.revoke(oid, "left")
    assert ev.payload == {"peer": oid, "after": 1, "reason": "left"} and ev.att is not None
    assert n.keyring.is_revoked(oid) and n.security()["revoked"] == {oid: n.peer_id}
    with pytest.raises(Conflict):
        n.revoke(oid, "again")
    n.emit(EventType.MEMBER, n.capabilities())
    with pytest.raises(Conflict):
        n.revoke(n.peer_id, "myself")

"""IPNS_RECORD events leave memory as jobless events do, and the log once a newer valid record
of their name is held and every live member holds both (peer.log.jobless.Records, ranked by
peer.ipfs.ipns): each name's newest record stays (until a week past its end of life),
whatever the events' order, a hostile member's records or a restart. Real nodes on temp
dirs, no scheduler running (as test_jobless)."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from peer.ipfs.ipns import MAX_LIFETIME_S, event_rank, key_name, make_record
from peer.log import Event, EventType
from peer.log.jobless import Records
from peer.node import Node
from tests.unit.test_compaction import _open
from tests.unit.test_provider_sets import _cid, _hlc, _reopen

A, B, EVIL = "aaaa0000000000000000", "bbbb0000000000000000", "eeee0000000000000000"
C = "cccc0000000000000000"
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
NAME = key_name(KEY.public_key())
EOL = datetime(2030, 1, 1, tzinfo=UTC)
V = "/ipfs/bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"

pytestmark = pytest.mark.usefixtures("no_jobless_window")


def _rec(origin: str, seq: int, hlc: int, sequence: int,
         key: ed25519.Ed25519PrivateKey = KEY) -> Event:
    raw = make_record(key, V, sequence, EOL, 10**9)
    return Event(origin, seq, hlc, EventType.IPNS_RECORD,
                 {"name": NAME, "record": base64.b64encode(raw).decode()})


def _rows(n: Node, origin: str) -> list[int]:
    return [q for (q,) in n.log.db.execute(
        "SELECT seq FROM events WHERE origin = ? ORDER BY seq", (origin,))]


def test_old_records_leave_memory_and_the_log_the_newest_stays(
        tmp_path: Path, opened: list[Node]) -> None:
    """A name published four times: the first three leave the log (every live member, here
    this node alone, holds them and the newest), the newest stays, across a restart; a
    PROVIDE after them is not held back. Before, every one stayed in memory and in the log."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    evs = [_rec(A, i + 1, hlc + i, i) for i in range(4)]
    evs.append(Event(A, 5, hlc + 9, EventType.PROVIDE, {"cids": [_cid("p")]}))
    n.merge(evs)
    n.catchup.compact()
    assert not any(e.id in n.state.events for e in evs)
    assert all(n.state.holds(e.id) for e in evs)
    assert _rows(n, A) == [4]
    again = _reopen(n, opened)
    assert again.state.heads.get(A) == 5 and _rows(again, A) == [4]
    assert len(again.compactor.records) == 1  # the newest, rebuilt from the replay
    again.catchup.compact()
    assert _rows(again, A) == [4]


def test_the_record_decides_not_the_event_order(tmp_path: Path, opened: list[Node]) -> None:
    """B's event comes later but carries an older record: B's leaves, A's stays."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    n.merge([_rec(A, 1, hlc, 5), _rec(B, 1, hlc + 100, 3)])
    n.catchup.compact()
    assert _rows(n, A) == [1] and _rows(n, B) == []


def test_a_member_without_the_key_retires_nothing(tmp_path: Path, opened: list[Node]) -> None:
    """A higher sequence signed by another key, and a copy of the newest: nothing of the
    name's own records leaves but the older one; the copies of the newest all stay (the
    forged one, which does not validate, leaves)."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    newest = _rec(A, 2, hlc + 1, 1)
    n.merge([_rec(A, 1, hlc, 0), newest, _rec(EVIL, 1, hlc + 2, 99, OTHER),
             Event(EVIL, 2, hlc + 3, EventType.IPNS_RECORD, dict(newest.payload))])
    n.catchup.compact()
    assert _rows(n, A) == [2] and _rows(n, EVIL) == [2]


def test_records_that_do_not_validate_leave_the_log_and_are_not_stored_again(
        tmp_path: Path, opened: list[Node]) -> None:
    """A member's junk IPNS_RECORDs (another key's record, bytes that are no record, no
    base64, a name that is none) stayed in every peer's log for good (session 50's Left):
    now each leaves once every live member holds it, the valid one of the name stays, and a
    copy sent again (a peer of the previous release keeps them) is not stored again."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    junk = [_rec(EVIL, 1, hlc, 99, OTHER),
            Event(EVIL, 2, hlc + 1, EventType.IPNS_RECORD,
                  {"name": NAME, "record": base64.b64encode(b"\x00no record").decode()}),
            Event(EVIL, 3, hlc + 2, EventType.IPNS_RECORD, {"name": NAME, "record": "!!"}),
            Event(EVIL, 4, hlc + 3, EventType.IPNS_RECORD,
                  {"name": "not-a-name", "record": _rec(A, 1, hlc, 1).payload["record"]})]
    n.merge([_rec(A, 1, hlc, 1), *junk])
    n.catchup.compact()
    assert _rows(n, EVIL) == [] and _rows(n, A) == [1]
    again = _reopen(n, opened)
    assert len(again.compactor.records) == 1 and again.state.heads.get(EVIL) == 4
    assert not again.merge(junk)
    assert _rows(again, EVIL) == []


def test_a_names_newest_record_leaves_the_log_a_week_after_its_end_of_life(
        tmp_path: Path, opened: list[Node]) -> None:
    """Each name's newest record stayed in every log (and in `Records.waiting`) for good,
    expired or not: a name minted once cost every log for ever (session 51 helper c's
    Left). Now it leaves, as `forget_expired` removes its file, once its end of life (counted
    at most a year after its event) is a week past; one ended less long ago stays, as does
    one valid for centuries until a year and a week after its event."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    now_s = (hlc >> 16) / 1000
    keys = [ed25519.Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in (5, 6, 7, 8)]

    def rec(origin: str, key: ed25519.Ed25519PrivateKey, eol_s: float, at: int) -> Event:
        raw = make_record(key, V, 1, datetime.fromtimestamp(eol_s, UTC), 10**9)
        return Event(origin, 1, at, EventType.IPNS_RECORD, {
            "name": key_name(key.public_key()), "record": base64.b64encode(raw).decode()})

    year_ago = hlc - (int((MAX_LIFETIME_S + 8 * 86400) * 1000) << 16)
    ended = rec(A, keys[0], now_s - 8 * 86400, hlc)
    n.merge([ended,  # ended 8 days ago: leaves
             rec(B, keys[1], now_s - 6 * 86400, hlc),  # 6 days ago: stays
             rec(EVIL, keys[2], 253402300000.0, year_ago),  # year 9999, a year and 8 days
             rec(C, keys[3], 253402300000.0, hlc)])  # year 9999, made now: stays
    n.catchup.compact()
    assert (_rows(n, A), _rows(n, B), _rows(n, EVIL), _rows(n, C)) == ([], [1], [], [1])
    assert len(n.compactor.records) == 2
    again = _reopen(n, opened)
    assert again.state.holds((A, 1)) and not again.merge([ended])  # (not stored again)
    assert _rows(again, A) == [] and len(again.compactor.records) == 2


def test_an_old_record_waits_for_every_live_member_to_hold_the_newest(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    n.merge([_rec(A, 1, hlc, 0), _rec(B, 1, hlc + 1, 1)])
    n.compactor.vvs = lambda: [dict(n.state.heads), {A: 1}]  # a member lacks B's, the newest
    n.catchup.compact()
    assert _rows(n, A) == [1] and _rows(n, B) == [1]
    again = _reopen(n, opened)  # waiting, rebuilt from the replay
    again.compactor.vvs = lambda: [dict(again.state.heads), {A: 1, B: 1}]
    again.catchup.compact()
    assert _rows(again, A) == [] and _rows(again, B) == [1]
    assert again.state.holds((A, 1))  # a copy sent again is not stored again
    assert not again.merge([_rec(A, 1, hlc, 0)])
    assert _rows(again, A) == []


@given(st.lists(st.tuples(st.sampled_from([A, B, EVIL]), st.integers(0, 3), st.booleans()),
                min_size=1, max_size=8),
       st.randoms(use_true_random=False))
def test_records_drop_the_older_valid_records_in_any_order_of_leaving(
        made: list[tuple[str, int, bool]], rnd: random.Random) -> None:
    """The compactor's waiting list (every live member holding all) drops exactly the valid
    records below the name's highest sequence and those signed by another key (they do not
    validate), whatever the order they left memory in."""
    hlc = _hlc()
    evs = [_rec(o, i + 1, hlc + i, seq, KEY if signed else OTHER)
           for i, (o, seq, signed) in enumerate(made)]
    top = max((seq for _, seq, signed in made if signed), default=None)
    expected = {e.id for e, (_, seq, signed) in zip(evs, made, strict=True)
                if not signed or (top is not None and seq < top)}
    for _ in range(2):
        rnd.shuffle(evs)
        records = Records()
        records.rank = event_rank
        for e in evs:
            records.left(e)
        vv = {o: len(made) for o in (A, B, EVIL)}
        assert set(records.droppable([vv], hlc, 7 * 86400.0, 1000)) == expected

"""Which IPNS_RECORD events leave the log (peer.log.jobless.Records, ranked by
peer.ipfs.ipns.event_rank, as the node wires them): the rule decides by the records' own
signatures and sequences, never by the events' order or their origins, counts one key's
spellings as one name, never takes a name's newest record until a week past its end of life
(the one clock it reads), and lets a record that does not validate go. Every event here is
held by every live member, so the rule alone decides (but where a test says otherwise)."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import multibase
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from peer.ipfs.ipns import (
    MAX_RECORD_BYTES,
    event_rank,
    key_name,
    log_expired,
    make_record,
    parse_name,
)
from peer.log import Event, EventType
from peer.log.jobless import Records

EOL = datetime(2030, 1, 1, tzinfo=UTC)
PAST = datetime(2001, 1, 1, tzinfo=UTC)  # long expired
V = "/ipfs/bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
KEY_A = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY_B = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
A, B = key_name(KEY_A.public_key()), key_name(KEY_B.public_key())
HLC = 1_800_000_000_000 << 16

Id = tuple[str, int]


def base58(name: str) -> str:
    """The other spelling of a key's name: its multihash in base58btc (12D3KooW...)."""
    mh = parse_name(name)[0].multihash
    zeros = len(mh) - len(mh.lstrip(b"\0"))  # (py-multibase drops leading zero bytes)
    return "1" * zeros + str(multibase.encode("base58btc", mh).decode())[1:]


A58 = base58(A)


def origin(o: str) -> str:
    return (o.encode().hex() + "0" * 20)[:20]


def rec(seq: int, key: ed25519.Ed25519PrivateKey = KEY_A, eol: datetime = EOL,
        value: str = V) -> bytes:
    return make_record(key, value, seq, eol, 10**9)


def superseded(events: Iterable[tuple[Id, str, bytes]]) -> set[Id]:
    """The production rule: the events (key (origin, seq), name, record bytes) wait in a
    `Records` ranked by `event_rank`, every one held by every live member; what leaves."""
    records = Records()
    records.rank, records.ended = event_rank, log_expired
    evs = [Event(origin(o), q, HLC + q, EventType.IPNS_RECORD,
                 {"name": name, "record": base64.b64encode(raw).decode()})
           for (o, q), name, raw in events]
    for e in evs:
        records.left(e)
    vv = {e.origin: max(x.seq for x in evs if x.origin == e.origin) for e in evs}
    back = {(origin(o), q): (o, q) for (o, q), _, _ in events}
    return {back[i] for i in records.droppable([vv], HLC, 7 * 86400.0, 10**6)}


def test_a_higher_sequence_supersedes_the_lower_ones_of_its_name_only() -> None:
    events = [(("o1", 1), A, rec(0)), (("o1", 2), A, rec(1)), (("o2", 1), A, rec(2)),
              (("o1", 3), B, rec(0, KEY_B))]
    assert superseded(events) == {("o1", 1), ("o1", 2)}


def test_the_newest_wins_in_any_order_of_the_events() -> None:
    """The event made last (the highest seq of the log) may carry the older record."""
    events = [(("o", 1), A, rec(5)), (("o", 2), A, rec(3))]
    assert superseded(events) == {("o", 2)}


def test_expired_records_are_ranked_as_the_others_and_leave_a_week_past_their_end() -> None:
    """An expired record supersedes an older one as any other (its end of life does not
    lower its rank), and stays while its end of life is less than a week past; then it
    leaves too, the name's newest as well (before session 52 it stayed for good)."""
    now = datetime.fromtimestamp((HLC >> 16) / 1000, UTC)
    recent = now - timedelta(days=6)
    assert superseded([(("o", 1), A, rec(1, eol=recent)), (("o", 2), A, rec(0))]) == {("o", 2)}
    assert superseded([(("o", 1), A, rec(1, eol=PAST)), (("o", 2), A, rec(0))]) == {
        ("o", 1), ("o", 2)}


def test_equal_sequences_the_later_end_of_life_wins() -> None:
    events = [(("o", 1), A, rec(4, eol=EOL + timedelta(days=1))), (("o", 2), A, rec(4))]
    assert superseded(events) == {("o", 2)}


def test_equal_sequences_and_ends_of_life_one_of_two_records_stays_in_any_order() -> None:
    """A key holder's two records of one sequence and end of life (another value): exactly
    one leaves, the same one whichever came first (the bytes' digest decides)."""
    one, two = rec(4), rec(4, value=V[:-2] + "aa")
    gone = superseded([(("o", 1), A, one), (("o", 2), A, two)])
    assert len(gone) == 1
    assert superseded([(("o", 1), A, two), (("o", 2), A, one)]) == {("o", 3 - next(
        iter(gone))[1])}


def test_every_copy_of_the_newest_is_kept() -> None:
    newest = rec(2)
    events = [(("o", 1), A, rec(1)), (("o", 2), A, newest), (("m", 7), A, newest)]
    assert superseded(events) == {("o", 1)}


def test_two_spellings_of_one_key_are_one_name() -> None:
    """A record sent under the base58 spelling of a name (parse_name takes both) is ranked
    with those under its base36 one: before, `Records` grouped by the text as sent, and an
    old record under one spelling never left beside a newer one under the other (review rr
    of session 50, RR-5)."""
    assert A58 != A and A58.startswith("12D3KooW")
    assert superseded([(("o", 1), A58, rec(0)), (("o", 2), A, rec(1))]) == {("o", 1)}
    assert superseded([(("o", 1), A58, rec(3)), (("o", 2), A, rec(1))]) == {("o", 2)}


def test_a_rank_holds_a_digest_of_the_record_not_its_bytes() -> None:
    """The rank kept while an event waits: before, it held the record's bytes (up to
    MAX_RECORD_BYTES each) for as long as it waited (review rr of session 50, RR-5)."""
    raw = rec(1, value="/ipfs/" + "b" * 2000)
    got = event_rank(A58, base64.b64encode(raw).decode())
    assert got is not None
    name, (sequence, eol, digest) = got
    assert (name, sequence, eol) == (A, 1, EOL) and len(digest) == 32
    assert 2000 < len(raw) < MAX_RECORD_BYTES


@pytest.mark.parametrize("hostile", [
    rec(99, KEY_B),  # a higher sequence, signed by another key than the name's
    rec(99)[:-1] + bytes([rec(99)[-1] ^ 1]),  # the name's record, a bit of its data flipped
    b"\x00not a record",
    b"\xff",
])
def test_a_record_that_does_not_validate_supersedes_nothing_and_leaves(hostile: bytes) -> None:
    """It retires no valid record, and leaves itself: before, it stayed for good (session
    50's Left)."""
    events = [(("o", 1), A, rec(1)), (("evil", 1), A, hostile)]
    assert superseded(events) == {("evil", 1)}
    assert superseded([*events, (("o", 2), A, rec(2))]) == {("o", 1), ("evil", 1)}


def test_a_name_that_is_not_one_supersedes_nothing_and_leaves() -> None:
    assert superseded([(("o", 1), "not-a-name", rec(1)), (("o", 2), A, rec(0))]) == {("o", 1)}


def test_a_record_that_is_not_base64_leaves() -> None:
    records = Records()
    records.rank = event_rank
    bad = Event(origin("o"), 1, HLC, EventType.IPNS_RECORD, {"name": A, "record": "!!"})
    records.left(bad)
    assert records.droppable([{bad.origin: 1}], HLC, 7 * 86400.0, 10) == [bad.id]


def test_a_record_that_does_not_validate_waits_for_every_live_member_or_the_horizon() -> None:
    """As a superseded one: not before every live member holds it (a member of the previous
    release keeps it meanwhile, so nothing it lacks goes), or its hlc is past the horizon."""
    records = Records()
    records.rank = event_rank
    bad = Event(origin("evil"), 3, HLC, EventType.IPNS_RECORD,
                {"name": A, "record": base64.b64encode(rec(9, KEY_B)).decode()})
    records.left(bad)
    behind = {bad.origin: 2}
    assert records.droppable([{bad.origin: 3}, behind], HLC, 7 * 86400.0, 10) == []
    assert records.droppable([], HLC, 7 * 86400.0, 10) == []  # (no member known: waits)
    week = HLC + (7 * 86400_000 << 16)
    assert records.droppable([behind], week, 7 * 86400.0, 10) == [bad.id]
    assert records.droppable([{bad.origin: 3}, behind], HLC, 7 * 86400.0, 0) == []
    records.dropped([bad.id])
    assert len(records) == 0


@given(st.lists(st.tuples(st.sampled_from([0, 1, 2]), st.integers(0, 3), st.booleans()),
                min_size=1, max_size=8),
       st.randoms(use_true_random=False))
def test_order_independent_and_the_newest_of_each_name_kept(
        made: list[tuple[int, int, bool]], rnd: random.Random) -> None:
    """Two keys, one of them under both spellings: the events left are every copy of each
    key's newest record (by sequence, then end of life), whatever the events' order; none
    if that record ended more than a week ago."""
    keys = [(KEY_A, A), (KEY_B, B), (KEY_A, A58)]
    events = [((f"o{i % 3}", i + 1), keys[k][1], rec(seq, keys[k][0], EOL if late else PAST))
              for i, (k, seq, late) in enumerate(made)]
    gone = superseded(events)
    shuffled = events[:]
    rnd.shuffle(shuffled)
    assert superseded(shuffled) == gone
    for key in (KEY_A, KEY_B):
        mine = [k for k in range(3) if keys[k][0] is key]
        made_here = [(seq, late) for k, seq, late in made if k in mine]
        if not made_here:
            continue
        seq, late = max(made_here)
        newest = rec(seq, key, EOL if late else PAST)
        kept = [e for e in events if e[1] in {keys[k][1] for k in mine} and e[0] not in gone]
        assert all(raw == newest for _, _, raw in kept)
        assert len(kept) == (sum(1 for e in events if e[2] == newest) if late else 0)

"""Which IPNS_RECORD events' records a newer one supersedes (`ipns.superseded`): the rule that
lets old records leave a log decides by the records' own signatures and sequences, never by the
events' order, their origins or the clock, and never takes a name's newest record."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from peer.ipfs.ipns import key_name, make_record, superseded

EOL = datetime(2030, 1, 1, tzinfo=UTC)
PAST = datetime(2001, 1, 1, tzinfo=UTC)  # long expired
V = "/ipfs/bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
KEY_A = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
KEY_B = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
A, B = key_name(KEY_A.public_key()), key_name(KEY_B.public_key())


def rec(seq: int, key: ed25519.Ed25519PrivateKey = KEY_A, eol: datetime = EOL,
        value: str = V) -> bytes:
    return make_record(key, value, seq, eol, 10**9)


def test_a_higher_sequence_supersedes_the_lower_ones_of_its_name_only() -> None:
    events = [(("o1", 1), A, rec(0)), (("o1", 2), A, rec(1)), (("o2", 1), A, rec(2)),
              (("o1", 3), B, rec(0, KEY_B))]
    assert superseded(events) == {("o1", 1), ("o1", 2)}


def test_the_newest_wins_in_any_order_of_the_events() -> None:
    """The event made last (the highest seq of the log) may carry the older record."""
    events = [(("o", 1), A, rec(5)), (("o", 2), A, rec(3))]
    assert superseded(events) == {("o", 2)}


def test_expired_records_are_ranked_as_the_others() -> None:
    """No clock: the newest record is kept even once expired (this peer's next sequence, and
    the same decision on every peer at any time)."""
    events = [(("o", 1), A, rec(1, eol=PAST)), (("o", 2), A, rec(0))]
    assert superseded(events) == {("o", 2)}


def test_equal_sequences_the_later_end_of_life_wins() -> None:
    events = [(("o", 1), A, rec(4, eol=EOL + timedelta(days=1))), (("o", 2), A, rec(4))]
    assert superseded(events) == {("o", 2)}


def test_every_copy_of_the_newest_is_kept() -> None:
    newest = rec(2)
    events = [(("o", 1), A, rec(1)), (("o", 2), A, newest), (("m", 7), A, newest)]
    assert superseded(events) == {("o", 1)}


@pytest.mark.parametrize("hostile", [
    rec(99, KEY_B),  # a higher sequence, signed by another key than the name's
    rec(99)[:-1] + bytes([rec(99)[-1] ^ 1]),  # the name's record, a bit of its data flipped
    b"\x00not a record",
    b"",
])
def test_a_record_that_does_not_validate_supersedes_nothing(hostile: bytes) -> None:
    events = [(("o", 1), A, rec(1)), (("evil", 1), A, hostile)]
    assert superseded(events) == set()
    assert superseded([*events, (("o", 2), A, rec(2))]) == {("o", 1)}  # nor is itself judged


def test_a_name_that_is_not_one_is_left_alone() -> None:
    assert superseded([(("o", 1), "not-a-name", rec(1)), (("o", 2), A, rec(0))]) == set()


@given(st.lists(st.tuples(st.sampled_from([0, 1]), st.integers(0, 3), st.booleans()),
                min_size=1, max_size=8),
       st.randoms(use_true_random=False))
def test_order_independent_and_the_newest_of_each_name_kept(
        made: list[tuple[int, int, bool]], rnd: random.Random) -> None:
    keys = [(KEY_A, A), (KEY_B, B)]
    events = [((f"o{i % 3}", i), keys[k][1], rec(seq, keys[k][0], EOL if late else PAST))
              for i, (k, seq, late) in enumerate(made)]
    gone = superseded(events)
    shuffled = events[:]
    rnd.shuffle(shuffled)
    assert superseded(shuffled) == gone
    for name in {n for _, n, _ in events}:
        kept = [e for e in events if e[1] == name and e[0] not in gone]
        assert kept and len({raw for _, _, raw in kept}) == 1  # the newest, every copy
        top = max((seq, late) for k, seq, late in made if keys[k][1] == name)
        assert all(ev[2] == rec(top[0], keys[[n for _, n in keys].index(name)][0],
                                EOL if top[1] else PAST) for ev in kept)

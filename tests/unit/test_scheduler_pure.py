"""Pure functions of peer/jobs/planner.py and peer/rendezvous.py: cache keys, chunking and
rendezvous ranking."""

from __future__ import annotations

import dataclasses
import math
import random

from hypothesis import given
from hypothesis import strategies as st

from peer.jobs.planner import cache_key, chunk_items
from peer.rendezvous import rendezvous
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))
WRITE = CATALOG["T_WRITE"]
UPPER = CATALOG["T_UPPER"]
CID_A = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
CID_B = "bafybeidpcbanksrlx2idf35xjn3cccvzligxs65uoutjn6gxujyq2btloi"


# -- cache_key ---------------------------------------------------------------------------
def test_cache_key_is_a_stable_hex_digest() -> None:
    k = cache_key(WRITE, {"files": 3, "tag": ""}, None)
    assert k == cache_key(WRITE, {"files": 3, "tag": ""}, None)
    assert len(k) == 64 and int(k, 16) >= 0


def test_cache_key_changes_with_call_version_params_and_input() -> None:
    base = cache_key(UPPER, {"suffix": ""}, CID_A)
    assert cache_key(CATALOG["T_CONCAT"], {"suffix": ""}, CID_A) != base  # call
    assert cache_key(dataclasses.replace(UPPER, version="2"), {"suffix": ""}, CID_A) != base
    assert cache_key(UPPER, {"suffix": "!"}, CID_A) != base  # a param value
    assert cache_key(UPPER, {"suffix": "", "x": 1}, CID_A) != base  # an extra param
    assert cache_key(UPPER, {"suffix": ""}, CID_B) != base  # input
    assert cache_key(UPPER, {"suffix": ""}, None) != base  # no input
    # types matter: 1 and "1" are different parameters
    assert cache_key(WRITE, {"files": 1}, None) != cache_key(WRITE, {"files": "1"}, None)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                   max_size=4),
    max_leaves=12)


def _shuffled(value: object, rnd: random.Random) -> object:
    """The same JSON value with every dict's insertion order shuffled."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: _shuffled(v, rnd) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rnd) for v in value]
    return value


@given(st.dictionaries(st.text(max_size=8), _json, max_size=6), st.integers(0, 2**32))
def test_cache_key_ignores_dict_order(params: dict[str, object], seed: int) -> None:
    shuffled = _shuffled(params, random.Random(seed))
    assert isinstance(shuffled, dict)
    assert cache_key(UPPER, shuffled, CID_A) == cache_key(UPPER, params, CID_A)


# -- chunk_items -------------------------------------------------------------------------
def test_chunk_items_examples() -> None:
    assert chunk_items([], 4, 4, 64) == []
    assert chunk_items(list(range(3)), 2, 4, 64) == [[0, 1, 2]]  # fewer than lo: one chunk
    assert chunk_items(list(range(12)), 2, 4, 64) == [list(range(6)), list(range(6, 12))]
    assert chunk_items(list(range(10)), 0, 1, 64) == [list(range(10))]  # 0 slots acts as 1
    # more than a round: whole rounds of equal chunks, not 64 + 64 + 64 + 8
    assert [len(c) for c in chunk_items(list(range(200)), 2, 4, 64)] == [50, 50, 50, 50]
    assert [len(c) for c in chunk_items(list(range(153)), 2, 4, 64)] == [39, 39, 39, 36]
    assert len(chunk_items(list(range(1000)), 3, 4, 64)) == 18  # 6 rounds of 3


@given(st.lists(st.integers(), max_size=300), st.integers(0, 16), st.integers(1, 20),
       st.integers(0, 80))
def test_chunk_items_keeps_order_and_bounds(items: list[int], free: int, lo: int,
                                            extra: int) -> None:
    hi = lo + extra
    chunks = chunk_items(items, free, lo, hi)
    assert [x for c in chunks for x in c] == items  # concatenation is the input, in order
    if not items:
        assert chunks == []
        return
    size = len(chunks[0])
    assert all(c for c in chunks)
    assert all(len(c) <= hi for c in chunks)
    assert all(len(c) == size for c in chunks[:-1])  # only the last chunk may be short
    if len(items) >= lo:
        assert all(len(c) >= lo for c in chunks[:-1]) and size >= lo
    assert len(chunks) == math.ceil(len(items) / size)
    ideal = math.ceil(len(items) / max(free, 1))
    if lo <= ideal <= hi:  # no bound interferes: about one chunk per free slot
        assert len(chunks) <= max(free, 1)


# -- rendezvous --------------------------------------------------------------------------
PEERS = [f"peer{i:02d}" for i in range(10)]


@given(st.text(max_size=20), st.lists(st.text(min_size=1, max_size=8), unique=True,
                                      max_size=12), st.integers(0, 2**32))
def test_rendezvous_is_a_deterministic_permutation(unit: str, peers: list[str],
                                                   seed: int) -> None:
    order = rendezvous(unit, peers)
    assert sorted(order) == sorted(peers)
    shuffled = list(peers)
    random.Random(seed).shuffle(shuffled)
    assert rendezvous(unit, shuffled) == order  # independent of the input order
    assert rendezvous(unit, iter(peers)) == order  # any iterable


def test_rendezvous_removing_a_peer_moves_only_its_units() -> None:
    units = [f"job/task/{i}/0" for i in range(2000)]
    gone = PEERS[3]
    rest = [p for p in PEERS if p != gone]
    for u in units:
        full = rendezvous(u, PEERS)
        # the others keep their relative order, so only units whose first choice left move
        assert rendezvous(u, rest) == [p for p in full if p != gone]


def test_rendezvous_adding_a_peer_changes_few_assignments() -> None:
    units = [f"job/task/{i}/0" for i in range(2000)]
    new = "peer-new"
    moved = [u for u in units if rendezvous(u, PEERS)[0] != rendezvous(u, [*PEERS, new])[0]]
    assert all(rendezvous(u, [*PEERS, new])[0] == new for u in moved)
    expected = len(units) / (len(PEERS) + 1)  # about 1/(n+1) of the units
    assert 0.5 * expected < len(moved) < 1.5 * expected

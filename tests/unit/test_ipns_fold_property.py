"""A property of a real node: whatever IPNS_RECORD events it merges (valid and invalid records
of several names, each name under both spellings, sequences, ends of life, values, copies),
in whatever order and batches, once compacted its log holds exactly every copy of each
canonical name's newest valid record (none if it ended more than a week ago), and its ipns/
files exactly each name's newest record valid now. The expectation is a model of the IPNS
rules written here (sequence, then end of life, then the SHA-256 of the bytes), not the
code's own rank."""

from __future__ import annotations

import base64
import hashlib
import random
from datetime import UTC, datetime

import multibase
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.ipfs.ipns import key_name, make_record, parse_name
from peer.log import Event, EventType
from peer.node import Node
from tests.unit.test_compaction import _open
from tests.unit.test_provider_sets import _hlc

KEYS = [ed25519.Ed25519PrivateKey.from_private_bytes(bytes([i]) * 32) for i in (1, 2, 3)]
NAMES = [key_name(k.public_key()) for k in KEYS]
ORIGINS = ["aaaa0000000000000000", "bbbb0000000000000000", "cccc0000000000000000"]
EOLS = [datetime(2001, 1, 1, tzinfo=UTC),  # long expired: ranked, then leaves; never kept
        datetime(2090, 1, 1, tzinfo=UTC), datetime(2090, 1, 2, tzinfo=UTC)]
VALUES = ["/ipfs/bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am",
          "/ipfs/bafkqaaa"]
# how a drawn record is sent: valid, signed by the next key (a member without the name's
# key), a bit of its signed data flipped, under a name that is none
KINDS = ["valid", "forged", "flipped", "no name"]

pytestmark = pytest.mark.usefixtures("no_jobless_window")


def _base58(name: str) -> str:
    mh = parse_name(name)[0].multihash
    zeros = len(mh) - len(mh.lstrip(b"\0"))
    return "1" * zeros + str(multibase.encode("base58btc", mh).decode())[1:]


Drawn = tuple[int, bool, int, int, int, int]  # key, base58, sequence, eol, value, kind

_draw = st.tuples(st.integers(0, 2), st.booleans(), st.integers(0, 3), st.integers(0, 2),
                  st.integers(0, 1), st.sampled_from([0, 0, 0, 1, 2, 3]))


def _record(d: Drawn) -> tuple[str, bytes]:
    k, b58, seq, eol, value, kind = d
    signer = KEYS[(k + 1) % 3] if KINDS[kind] == "forged" else KEYS[k]
    raw = make_record(signer, VALUES[value], seq, EOLS[eol], 10**9)
    if KINDS[kind] == "flipped":
        raw = raw[:-1] + bytes([raw[-1] ^ 1])
    name = "no-such-name" if KINDS[kind] == "no name" else (
        _base58(NAMES[k]) if b58 else NAMES[k])
    return name, raw


def _rank(d: Drawn, raw: bytes) -> tuple[int, datetime, bytes]:
    return d[2], EOLS[d[3]], hashlib.sha256(raw).digest()


@settings(max_examples=30, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(_draw, min_size=1, max_size=12), st.randoms(use_true_random=False),
       st.integers(1, 3))
def test_a_node_keeps_exactly_the_newest_valid_record_of_each_name(
        tmp_path_factory: pytest.TempPathFactory, opened: list[Node], drawn: list[Drawn],
        rnd: random.Random, batches: int) -> None:
    n = _open(tmp_path_factory.mktemp("n"), opened, recent_tasks=0)
    n.listeners.append(n.ipns.on_event)  # (no loop: each record is kept as it is merged)
    hlc = _hlc()
    evs, seqs = [], dict.fromkeys(ORIGINS, 0)
    for i, d in enumerate(drawn):
        name, raw = _record(d)
        origin = ORIGINS[i % 3]
        seqs[origin] += 1
        evs.append((d, raw, Event(origin, seqs[origin], hlc + i, EventType.IPNS_RECORD,
                                  {"name": name, "record": base64.b64encode(raw).decode()})))
    # the model: per key, the newest valid record (in the log: by rank, expired or not,
    # but none if that one ended more than a week ago; on disk: of those valid now)
    valid = [(d, raw, e) for d, raw, e in evs if KINDS[d[5]] == "valid"]
    top = {k: max((_rank(d, raw) for d, raw, _ in valid if d[0] == k), default=None)
           for k in range(3)}
    kept_rows = {e.id for d, raw, e in valid if _rank(d, raw) == top[d[0]] and d[3] > 0}
    on_disk = {}
    for k in range(3):
        live = [(_rank(d, raw), raw) for d, raw, _ in valid if d[0] == k and d[3] > 0]
        if live:
            on_disk[NAMES[k]] = max(live)[1]
    order = [e for _, _, e in evs]
    rnd.shuffle(order)
    cut = sorted(rnd.sample(range(1, len(order)), min(batches - 1, len(order) - 1)))
    try:
        for a, b in zip([0, *cut], [*cut, len(order)], strict=True):
            n.merge(order[a:b])
        n.catchup.compact()
        rows = {(str(o), int(q)) for o, q in n.log.db.execute(
            "SELECT origin, seq FROM events WHERE type = ?", (int(EventType.IPNS_RECORD),))}
        assert rows == kept_rows
        assert not any(e.id in n.state.events for e in order)  # (out of memory, all)
        held = n.ipns.names.held()
        assert {name: r.raw for name, r in held.items()} == on_disk
    finally:
        opened.remove(n)  # (closed here: one node an example)
        n.log.close()

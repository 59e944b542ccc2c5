"""Events of no job that only feed caches and provider sets (PROVIDE, UNPROVIDE, CACHE_PUT:
peer/log/jobless.py): they leave memory at the pass after their origin's head covers them
and the log once droppable, an UNPROVIDE only after every earlier providing event of its
origin; what they did stays right after a restart, a refold, a gap and a snapshot's rows.
Real nodes on temp dirs, no scheduler running (as test_compaction); the pure rule alone at
the end."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import Event, EventType, MeshState
from peer.log.compact import CompactConfig, Compactor
from peer.log.jobindex import ITEM, SPOOL_DIR, JobIndex, spool_name
from peer.log.jobless import Jobless, jobless
from peer.log.snapframe import row_frames
from peer.node import Node
from tests.unit.test_cache_reap import _Log
from tests.unit.test_compaction import _open
from tests.unit.test_provider_sets import REPLICA, _cid, _hlc, _job, _live, _reopen

A = "aaaa0000000000000000"
# What happens once they left memory: as soon as their origin's head covers them (the window
# of a block of seqs they stay in memory first is tested on its own below).
_LEFT = pytest.mark.usefixtures("no_jobless_window")


def _events_of(n: Node, origin: str) -> list[int]:
    return [q for (q,) in n.log.db.execute(
        "SELECT seq FROM events WHERE origin = ? ORDER BY seq", (origin,))]


@_LEFT
def test_provides_and_unprovides_leave_memory_and_the_log_with_their_sets_indexed(
        tmp_path: Path, opened: list[Node]) -> None:
    """Once their origin's head covers them, PROVIDE and UNPROVIDE events leave memory at
    the next pass, their sets go to the job index (an emptied set's rows are deleted), and
    they leave the log once every live member holds them (here: this node only). Before,
    each stayed in memory and in the log for good, and each (CID, origin) an UNPROVIDE
    named stayed in `_dropped`. An UNPROVIDE leaves the log (and `_dropped`) only once no
    earlier event of its origin that could provide is left there: a pass after the PROVIDEs."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    cids = [_cid(f"up/{i}") for i in range(4)]
    evs = [Event(REPLICA, i + 1, hlc + i, EventType.PROVIDE, {"cids": [c]})
           for i, c in enumerate(cids)]
    evs.append(Event(REPLICA, 5, hlc + 10, EventType.UNPROVIDE, {"cids": cids[:2]}))
    n.merge(evs)
    assert n.state._dropped  # the UNPROVIDE, until its origin's head covers it
    n.catchup.compact()
    assert not any(e.id in n.state.events for e in evs)
    assert all(n.state.holds(e.id) for e in evs)
    assert _live(n) == 0
    assert [c for c in cids if n.state.providers.get(c)] == cids[2:]
    assert {c for (c,) in n.log.db.execute("SELECT cid FROM provider_index")} == set(cids[2:])
    assert _events_of(n, REPLICA) == [5]  # the PROVIDEs dropped: every live member has them
    assert n.state._dropped  # (the UNPROVIDE waited for them)
    n.catchup.compact()
    assert _events_of(n, REPLICA) == [] and not n.state._dropped
    # A later PROVIDE of an unprovided CID by the same origin counts (the drop is forgotten).
    n.merge([Event(REPLICA, 6, hlc + 20, EventType.PROVIDE, {"cids": [cids[0]]})])
    assert n.state.providers.get(cids[0]) == {REPLICA}
    n.catchup.compact()
    again = _reopen(n, opened)
    assert [c for c in cids if again.state.providers.get(c)] == [cids[0], *cids[2:]]
    assert again.state.heads.get(REPLICA) == 6 and not again.state.events


@_LEFT
def test_provides_stay_in_the_log_while_a_live_member_lacks_them(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    evs = [Event(REPLICA, i + 1, hlc + i, EventType.PROVIDE, {"cids": [_cid(f"k/{i}")]})
           for i in range(3)]
    n.merge(evs)
    n.compactor.vvs = lambda: [dict(n.state.heads), {REPLICA: 1}]  # a member holds seq 1
    n.catchup.compact()
    assert not any(e.id in n.state.events for e in evs)  # memory: decided by the events
    assert _events_of(n, REPLICA) == [2, 3]
    n.compactor.vvs = lambda: [dict(n.state.heads), {REPLICA: 3}]
    n.catchup.compact()
    assert _events_of(n, REPLICA) == []
    assert all(n.state.providers.get(_cid(f"k/{i}")) == {REPLICA} for i in range(3))


# -- an UNPROVIDE outlives the earlier events of its origin that provide -------------------
def _done_then_unprovided(cid: str) -> list[Event]:
    """A's job (seqs 1-5; its TASK_DONE provides `cid`), then A's UNPROVIDE of it (seq 6)."""
    hlc = _hlc()
    return [*_job(A, "jobA", cid, 1, hlc), Event(A, 6, hlc + 10, EventType.UNPROVIDE,
                                                 {"cids": [cid]})]


@_LEFT
def test_an_unprovided_origin_stays_unprovided_after_a_restart(
        tmp_path: Path, opened: list[Node]) -> None:
    """The job stays recent (in memory and in the log): its TASK_DONE is folded again at a
    restart, so the UNPROVIDE stays in the log (and remembered) until that job's events
    leave it. Review 16: it was dropped at once and A came back as X's provider."""
    x = _cid("x")
    n = _open(tmp_path / "a", opened, recent_tasks=100)
    n.merge(_done_then_unprovided(x))
    for _ in range(2):
        n.catchup.compact()
    assert not n.state.providers.get(x)
    assert _events_of(n, A) == [1, 2, 3, 4, 5, 6] and n.state._dropped
    again = _reopen(n, opened, recent_tasks=100)
    assert not again.state.providers.get(x)
    again.catchup.compact()
    assert not again.state.providers.get(x)


@_LEFT
def test_an_unprovided_origin_stays_unprovided_after_a_refold(
        tmp_path: Path, opened: list[Node]) -> None:
    x = _cid("x")
    n = _open(tmp_path / "a", opened, recent_tasks=100)
    n.merge(_done_then_unprovided(x))
    n.catchup.compact()  # the UNPROVIDE leaves memory (the TASK_DONE stays: recent job)
    assert (A, 6) not in n.state.events and (A, 5) in n.state.events
    n.state.refold()  # what the conflict rule does after a replaced loser
    assert not n.state.providers.get(x)


@_LEFT
def test_the_unprovide_leaves_the_log_once_the_job_before_it_did(
        tmp_path: Path, opened: list[Node]) -> None:
    x = _cid("x")
    n = _open(tmp_path / "a", opened, recent_tasks=0)  # the job is compacted, then dropped
    n.merge(_done_then_unprovided(x))
    n.catchup.compact()
    n.catchup.compact()
    assert _events_of(n, A) == [] and not n.state._dropped
    again = _reopen(n, opened)
    assert not again.state.providers.get(x)


# -- a gap, a snapshot's rows ----------------------------------------------------------------
@_LEFT
def test_a_provide_past_a_gap_leaves_memory_once_a_job_event_fills_it(
        tmp_path: Path, opened: list[Node]) -> None:
    """Review 16: the pass that ran while the gap was open forgot it; the job's event that
    filled it asked for nothing, and the PROVIDE stayed in memory (and the digests) on this
    peer only."""
    hlc = _hlc()
    sub = Event(REPLICA, 1, hlc, EventType.JOB_SUBMITTED, {"job": "live", "workflow": {
        "name": "live", "tasks": [{"name": "t0", "call": "ECHO", "params": {"text": "x"}}]}})
    prov = Event(REPLICA, 2, hlc + 1, EventType.PROVIDE, {"cids": [_cid("g")]})
    a = _open(tmp_path / "a", opened, recent_tasks=100)
    a.merge([sub, prov])
    a.catchup.compact()
    b = _open(tmp_path / "b", opened, recent_tasks=100)
    b.merge([prov])
    b.catchup.compact()
    assert prov.id in b.state.events  # past the gap: stays
    b.merge([sub])
    b.catchup.compact()
    assert prov.id not in a.state.events and prov.id not in b.state.events
    assert a.state.content_sum() == b.state.content_sum()


@_LEFT
def test_an_unprovide_stays_while_snapshot_rows_are_being_taken(
        tmp_path: Path, opened: list[Node]) -> None:
    """A spooled snapshot's provider rows are taken over later passes: one signed before an
    UNPROVIDE must not make its origin a provider again, so the UNPROVIDE (and the fold's
    memory of it) stays until they are all taken. Review 16: it was forgotten first."""
    x = _cid("x")
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    n.merge([Event(A, 1, hlc, EventType.PROVIDE, {"cids": [x]})])
    n.catchup.compact()
    spool = tmp_path / "a" / SPOOL_DIR / spool_name(bytes(16))
    spool.parent.mkdir(exist_ok=True)
    spool.write_bytes(b"".join(row_frames([("p", [(x, A)])])))  # signed before the drop
    n.index.spooled(str(spool), "signer00000000000000", "signer00000000000000")
    n.merge([Event(A, 2, hlc + 10, EventType.UNPROVIDE, {"cids": [x]})])
    for _ in range(2):
        n.catchup.compact()
    assert _events_of(n, A) == [2] and n.state._dropped
    while n.compactor.ingest():
        pass
    assert not n.state.providers.get(x)
    assert not {o for (o,) in n.log.db.execute(
        "SELECT origin FROM provider_index WHERE cid = ?", (x,))}
    n.catchup.compact()
    assert _events_of(n, A) == [] and not n.state._dropped


# -- CACHE_PUT of no job -----------------------------------------------------------------
@_LEFT
def test_a_cache_put_of_no_job_leaves_memory_and_the_log_its_items_kept(
        tmp_path: Path, opened: list[Node]) -> None:
    """Per-item results flushed while a chunk runs (a CACHE_PUT, a part of no job): before,
    a lone one stayed in memory and in the log for good."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    item = {"n": "a.wav", "c": _cid("a.wav/mfcc")}
    put = Event(A, 1, _hlc(), EventType.CACHE_PUT, {"cache": {"k-item": item}})
    n.merge([put])
    n.catchup.compact()
    assert put.id not in n.state.events and _events_of(n, A) == []
    assert n.state.cache.get("k-item") == item
    assert n.state.providers.get(item["c"]) == {A}
    assert [k for (k,) in n.log.db.execute(
        "SELECT k FROM cache_index WHERE kind = ?", (ITEM,))] == ["k-item"]
    again = _reopen(n, opened)
    assert again.state.cache.get("k-item") == item and not again.state.events


# -- the rule alone ----------------------------------------------------------------------
def _left(j: Jobless, origin: str, seq: int, hlc: int, unprovide: bool = False) -> None:
    typ = EventType.UNPROVIDE if unprovide else EventType.PROVIDE
    j.left(Event(origin, seq, hlc, typ, {"cids": [_cid(f"{origin}{seq}")]}))


def test_drops_are_a_prefix_per_origin_in_seq_order() -> None:
    j = Jobless()
    now = _hlc()
    for seq in (3, 1, 2, 5):  # (left memory in any order)
        _left(j, A, seq, now)
    _left(j, REPLICA, 1, now)
    ids, marks = j.droppable([{A: 3, REPLICA: 9}, {A: 2, REPLICA: 1}], now, 3600, 100,
                             lambda o: None, False)
    assert ids == [(A, 1), (A, 2), (REPLICA, 1)] and marks == {}
    assert j.droppable([{A: 9}], now, 3600, 2, lambda o: None, False)[0] == [(A, 1), (A, 2)]
    assert j.droppable([], now, 3600, 9, lambda o: None, False)[0] == []  # nobody holds them
    j.dropped(ids)
    assert len(j) == 2 and j.droppable([{A: 9}], now, 3600, 9, lambda o: None, False)[0] == [
        (A, 3), (A, 5)]


def test_past_the_horizon_a_drop_needs_no_member() -> None:
    j = Jobless()
    old = _hlc() - (7200 * 1000 << 16)
    _left(j, A, 1, old)
    _left(j, A, 2, _hlc())
    assert j.droppable([{}], _hlc(), 3600, 9, lambda o: None, False)[0] == [(A, 1)]


def test_an_unprovide_waits_for_the_providing_events_below_it_and_for_snapshot_rows() -> None:
    j = Jobless()
    now = _hlc()
    _left(j, A, 4, now, unprovide=True)
    _left(j, A, 6, now)
    asked: list[str] = []

    def lowest(o: str) -> int | None:
        asked.append(o)
        return 2

    vv = [{A: 9}]
    assert j.droppable(vv, now, 3600, 9, lowest, False) == ([], {})  # a TASK_DONE at 2
    assert asked == [A]
    assert j.droppable(vv, now, 3600, 9, lambda o: 5, False) == ([(A, 4), (A, 6)], {A: 4})
    assert j.droppable(vv, now, 3600, 9, lambda o: None, True) == ([], {})  # spooling


# -- property: passes interleaved with arrival, a refold, a restart --------------------------
ORIGINS = ("orga0000000000000000", "orgb0000000000000000")
CIDS = [_cid(f"p{i}") for i in range(3)]


@st.composite
def _jobless_events(draw: st.DrawFn) -> list[Event]:
    """PROVIDEs, UNPROVIDEs and CACHE_PUTs of two origins over three CIDs."""
    out: list[Event] = []
    n = draw(st.integers(0, 8))
    hlcs = sorted(draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True)))
    seqs = dict.fromkeys(ORIGINS, 0)
    base = _hlc()
    for hlc in hlcs:
        o = draw(st.sampled_from(ORIGINS))
        seqs[o] += 1
        typ = draw(st.sampled_from([EventType.PROVIDE, EventType.UNPROVIDE,
                                    EventType.CACHE_PUT]))
        cids = draw(st.lists(st.sampled_from(CIDS), min_size=1, max_size=3, unique=True))
        payload: dict[str, object] = (
            {"cache": {f"i{hlc}-{j}": {"n": "r", "c": c} for j, c in enumerate(cids)}}
            if typ is EventType.CACHE_PUT else {"cids": cids})
        out.append(Event(o, seqs[o], base + hlc, typ, payload))
    return out


def _view(s: MeshState) -> dict[str, list[str]]:
    return {c: sorted(s.providers.get(c) or ()) for c in CIDS}


@settings(max_examples=300, deadline=None)
@given(evs=_jobless_events(), data=st.data())
def test_provider_sets_are_those_of_a_plain_fold_whatever_the_passes(
        evs: list[Event], data: st.DataObject) -> None:
    """Events arrive in any order, with passes in between (they leave memory, the log, the
    fold's memory of UNPROVIDEs); afterwards, after a refold, and after a restart (a fresh
    state in front of the same job index, folding what is left in the log in hlc order), the
    provider sets are a plain fold's. Found by review 16: a refold or a restart brought an
    unprovided origin back once its UNPROVIDE was forgotten."""
    ref = MeshState()
    for ev in evs:
        ref.apply(ev)
    index = JobIndex(sqlite3.connect(":memory:", isolation_level=None))
    log = _Log()

    def peer() -> tuple[MeshState, Compactor]:
        state = MeshState(jobless_window=0)  # (leave memory at once: served by the log)
        state.archive = lambda o, after, upto, limit: sorted(
            (e for (q_o, q), e in log.held.items() if q_o == o and after < q <= upto),
            key=lambda e: e.seq)[:limit]
        state.tier(**index.lookups())
        c = Compactor(CompactConfig(provider_sets_max=data.draw(st.integers(0, 2))), state,
                      log, index, lambda job: None, lambda: [dict(state.heads)],
                      lambda: _hlc() + (1 << 30))
        return state, c

    state, c = peer()
    passes = set(data.draw(st.lists(st.integers(0, len(evs)), max_size=4)))
    for i, ev in enumerate(data.draw(st.permutations(evs))):
        if i in passes:
            c.step()
        log.put(ev)
        if state.apply(ev):
            c.note(ev)
    c.step()
    c.step()
    assert _view(state) == _view(ref)
    state.refold()
    assert _view(state) == _view(ref), "after a refold"
    assert not any(jobless(e) and e.seq <= state.heads.get(e.origin, 0)
                   for e in state.events.values())  # (they did leave memory)
    again, c2 = peer()
    for ev in sorted(log.held.values(), key=lambda e: e.hlc):
        again.apply(ev)
    c2.settle()
    assert _view(again) == _view(ref), "after a restart"


# -- the window: a block of seqs in memory first -------------------------------------------
def test_a_jobless_event_stays_in_memory_until_its_origin_is_a_block_past_it(
        tmp_path: Path, opened: list[Node]) -> None:
    """So that the conflict rule still compares a rival content of a recent one (an
    equivocating origin: tests/integration/test_log_door.py), and whatever the peers' pass
    times (at a pass, in a first form, two peers' digests differed while a chunk flushed
    items). Review 16 / this session."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    window = n.state.jobless_window
    assert window == 256
    evs = [Event(A, q, hlc + q, EventType.PROVIDE, {"cids": [_cid(f"w{q}")]})
           for q in range(1, window + 1)]
    n.merge(evs)
    n.catchup.compact()
    assert all(e.id in n.state.events for e in evs)  # the head is not a window past any
    n.merge([Event(A, window + 1, hlc + window + 1, EventType.PROVIDE, {"cids": ["x"]})])
    assert (A, 1) not in n.state.events and (A, 2) in n.state.events and n.state.holds((A, 1))
    rival = Event(A, 2, hlc + 2, EventType.PROVIDE, {"cids": [_cid("rival")]})
    n.merge([rival])
    assert n.conflicts.by_origin == {A: {"conflict": 1}}  # still compared


# -- review 2 of session 16: a restart, a refold before the pass ------------------------------
def _provides(first: int, last: int, hlc: int) -> list[Event]:
    return [Event(A, i, hlc + i, EventType.PROVIDE, {"cids": [_cid(f"p/{i}")]})
            for i in range(first, last + 1)]


def test_jobless_events_replayed_at_a_restart_leave_memory_with_their_window(
        tmp_path: Path, opened: list[Node]) -> None:
    """The replay ran without a log to serve from (`archive` set after it): every jobless
    event replayed stayed in memory, and so in the log, for good."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    n.merge(_provides(1, 300, hlc))
    n.catchup.compact()
    assert (A, 44) not in n.state.events and (A, 45) in n.state.events  # the window
    again = _reopen(n, opened)
    assert (A, 44) not in again.state.events and (A, 45) in again.state.events
    again.merge(_provides(301, 600, hlc))
    again.catchup.compact()
    assert sorted(q for (o, q) in again.state.events if o == A) == list(range(345, 601))


def test_a_restarted_peer_holds_the_same_events_in_memory_as_one_that_did_not(
        tmp_path: Path, opened: list[Node]) -> None:
    hlc = _hlc()
    first, later = _provides(1, 300, hlc), _provides(301, 600, hlc)
    a = _open(tmp_path / "a", opened, recent_tasks=0)
    b = _open(tmp_path / "b", opened, recent_tasks=0)
    a.merge(first)
    b.merge(first)
    a = _reopen(a, opened)
    a.merge(later)
    b.merge(later)
    assert a.state.content_digests().get(A) == b.state.content_digests().get(A)


def test_a_refold_before_the_pass_keeps_what_jobless_events_out_of_memory_made(
        tmp_path: Path, opened: list[Node]) -> None:
    """They leave memory as they are recorded, what they made is indexed at the next pass: a
    refold (the conflict rule) in between rebuilt the tables without it, and the pass then
    wrote that into the index. The node indexes them first."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    item = {"n": "a.wav", "c": _cid("a.wav/mfcc")}
    n.merge([Event(A, 1, hlc, EventType.CACHE_PUT, {"cache": {"k-item": item}}),
             *_provides(2, 300, hlc)])
    assert (A, 1) not in n.state.events and (A, 2) not in n.state.events  # left memory
    n.rule.stale = True  # (a rival content was settled: the loser's effects stay)
    n._refold_now()  # what the conflict rule runs
    n.catchup.compact()
    assert n.state.providers.get(_cid("p/2")) == {A} and n.state.cache.get("k-item") == item


@_LEFT
def test_a_refold_before_the_pass_keeps_an_unprovide_out_of_memory(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    hlc = _hlc()
    x = _cid("x")
    n.merge([Event(A, 1, hlc, EventType.PROVIDE, {"cids": [x]})])
    n.catchup.compact()  # X -> {A} in the job index
    n.merge([Event(A, 2, hlc + 1, EventType.UNPROVIDE, {"cids": [x]})])
    assert (A, 2) not in n.state.events and not n.state.providers.get(x)
    n.rule.stale = True
    n._refold_now()
    n.catchup.compact()
    n.catchup.compact()
    assert not n.state.providers.get(x)


def test_a_jobless_winner_of_the_conflict_rule_leaves_memory_with_its_window() -> None:
    """A jobless content replacing another (`replace`) at a seq already a window behind its
    origin's head left memory only when the origin recorded again (never, if quiet)."""
    st = MeshState(jobless_window=0)
    st.archive = lambda o, after, upto, limit: []
    loser = Event(A, 1, _hlc(), EventType.JOB_CANCELLED, {"job": "j", "reason": "r"})
    st.apply(loser)
    assert loser.id in st.events  # (not jobless: stays)
    st.replace(Event(A, 1, loser.hlc, EventType.PROVIDE, {"cids": [_cid("w")]}))
    assert loser.id not in st.events and st.holds(loser.id)


@_LEFT
def test_health_shows_the_jobless_events_waiting_to_leave_the_log(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    n.compactor.vvs = lambda: [dict(n.state.heads), {}]  # a live member lacks them
    n.merge(_provides(1, 3, _hlc()))
    assert n.log_health()["compaction"]["jobless_waiting"] == 3
    n.compactor.vvs = lambda: [dict(n.state.heads)]
    n.catchup.compact()
    assert n.log_health()["compaction"]["jobless_waiting"] == 0

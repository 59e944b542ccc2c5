"""The fold is a CRDT: any order and any duplication of the same events give the same state."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import HLC, Event, EventLog, EventType, FailureKind, MeshState, fold
from peer.log.events import TURN_PARTS

PEERS = ["a", "b", "c"]


def _mk(origin: str, seq: int, hlc: int, typ: EventType, payload: dict[str, object]) -> Event:
    return Event(origin, seq, hlc, typ, payload)


@st.composite
def event_sets(draw: st.DrawFn) -> list[Event]:
    """Events from several origins about one job: claims, failures, dones, cache, progress."""
    out: list[Event] = []
    for origin in PEERS:
        n = draw(st.integers(0, 12))
        for seq in range(1, n + 1):
            typ = draw(st.sampled_from([EventType.CLAIM, EventType.CHUNK_FAILED,
                                        EventType.CHUNK_DONE, EventType.PROGRESS,
                                        EventType.TASK_DONE, EventType.JOB_CANCELLED,
                                        EventType.CACHE_PUT, EventType.PROVIDE]))
            chunk = draw(st.integers(0, 2))
            attempt = draw(st.integers(0, 2))
            hlc = draw(st.integers(1, 50))
            base = {"job": "j", "task": "t", "chunk": chunk, "attempt": attempt}
            payload: dict[str, object] = {
                EventType.CLAIM: {**base, "split": ["a", 1]},
                EventType.CHUNK_FAILED: {**base, "error": f"e{origin}{seq}", "kind": "crash"},
                EventType.CHUNK_DONE: {**base, "output": f"out{chunk}", "cache": {"k": "v"}},
                EventType.PROGRESS: {**base, "progress": draw(st.floats(0, 1))},
                EventType.TASK_DONE: {"job": "j", "task": "t", "output": "o", "key": "k2"},
                EventType.JOB_CANCELLED: {"job": "j", "reason": origin},
                EventType.CACHE_PUT: {"cache": {f"k{chunk}": "v"}},
                EventType.PROVIDE: {"cids": [f"c{chunk}"]},
            }[typ]
            out.append(_mk(origin, seq, hlc, typ, payload))
    return out


def snapshot(s: MeshState) -> object:
    chunks = {k: (sorted((a, sorted(e.id for e in cs)) for a, cs in c.claims.items()),
                  {a: e.id for a, e in c.failures.items()},
                  c.done.id if c.done else None, dict(sorted(c.progress.items())))
              for k, c in s.chunks.items()}
    return (sorted(s.events), {k: v.id for k, v in s.task_done.items()},
            {k: v.id for k, v in s.cancelled.items()}, dict(sorted(s.cache.items())),
            dict(sorted(s.outputs.items())),
            {k: sorted(v) for k, v in s.providers.items()}, dict(sorted(s.heads.items())),
            dict(sorted(chunks.items())))


@settings(max_examples=150, deadline=None)
@given(event_sets(), st.randoms(use_true_random=False), st.integers(0, 5))
def test_fold_ignores_order_and_duplicates(events: list[Event], rnd: object, dups: int) -> None:
    shuffled = list(events) + list(events[:dups])
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert snapshot(fold(events)) == snapshot(fold(shuffled))


# -- every event type, built from its wire form ---------------------------------------

SPLITS = [["a", 1], ["b", 2]]
# Every type, those that conflict per chunk twice.
TYPES = [*EventType, EventType.CLAIM, EventType.PROGRESS, EventType.CHUNK_DONE,
         EventType.CHUNK_FAILED, EventType.CACHE_PUT, EventType.UNPROVIDE]
KINDS = [*(k.value for k in FailureKind), "quota"]  # and one this version does not know


CACHES = [{}, {"k1": None}, {"k1": {"n": "x", "c": "c4"}}, {"k2": {"n": "x", "c": "c5"}},
          {"k1": {"n": "y", "c": "c5"}, "k3": None}]


@st.composite
def typed_payload(draw: st.DrawFn, typ: EventType) -> dict[str, object]:
    """A valid payload of `typ` over small domains, so that events collide and conflict."""
    if typ == EventType.TURN:  # 1 to 3 parts of the types a turn holds (they may collide too)
        kinds = [draw(st.sampled_from(sorted(TURN_PARTS))) for _ in range(draw(st.integers(1, 3)))]
        return {"parts": [[int(k), draw(typed_payload(k))] for k in kinds]}
    pick = draw(st.integers(0, 2**16))  # one draw, spread over the fields (keeps it fast)
    job, task, cid = "jjjk"[pick % 4], "ttu"[pick // 4 % 3], ["c1", "c2", "c3"][pick % 3]
    chunk = {"job": job, "task": task, "split": SPLITS[pick // 12 % 4 // 3],
             "chunk": pick // 48 % 2, "attempt": pick // 96 % 2}
    cache = CACHES[pick // 576 % len(CACHES)]
    flat: dict[EventType, dict[str, object]] = {
        EventType.CACHE_PUT: {"cache": cache},
        EventType.REVOKE: {"peer": PEERS[pick % len(PEERS)], "after": pick % 4, "reason": ""},
        EventType.TASK_SPLIT_REF: {"job": job, "task": task, "input": None, "listing": cid,
                                   "sizes": [1, 0]},
        EventType.IPNS_RECORD: {"name": "k51", "record": "CgA="},
        EventType.PARTIAL: {"job": job, "task": task, "output": cid, "items": pick // 4 % 3,
                            "of": 3},
        EventType.JOB_ENDED: {"job": job, "state": "done", "n_tasks": 2, "end": pick,
                              "outputs": {task: ["k1", cid, pick % 30, "a", 1]},
                              "digest": "0" * 32},
        EventType.JOB_MEMBERS: {"job": job, "add": ["fedcba9876543210"]}}
    if typ in flat:
        return flat[typ]
    match typ:
        case EventType.JOB_SUBMITTED:
            return {"job": job, "workflow": {"name": job, "tasks": [{"name": "t"},
                                                                    {"name": "u"}]}}
        case EventType.JOB_CANCELLED | EventType.JOB_DELETED:
            return {"job": job, "reason": str(pick)}
        case EventType.TASK_SPLIT:
            return {"job": job, "task": task, "input": cid if pick & 64 else None,
                    "chunks": [[["p", cid]], []]}
        case EventType.CLAIM | EventType.RENEW:
            return chunk
        case EventType.PROGRESS:
            return {**chunk, "progress": pick % 11 / 10}
        case EventType.CHUNK_DONE:
            return {**chunk, "output": cid if pick & 64 else None, "cache": cache,
                    "log": cid, "s": 0.5}
        case EventType.CHUNK_FAILED:
            return {**chunk, "error": "e", "kind": KINDS[pick % len(KINDS)]}
        case EventType.TASK_DONE:
            return {"job": job, "task": task, "output": cid, "cached": bool(pick & 64),
                    "key": [None, "k1", "k9"][pick // 192 % 3]}
        case EventType.PROVIDE | EventType.UNPROVIDE:
            return {"cids": [["c1"], ["c2", "c9"], [], ["c1", "c2"]][pick % 4]}
        case _:
            return {"name": "n", "http": "", "calls": ["c"], "slots": pick % 5,
                    "cores": 1, "mem_mb": 1, "gpu": False}


@st.composite
def typed_event_sets(draw: st.DrawFn) -> list[Event]:
    """Events of every type from several origins, each decoded from its wire form."""
    out: list[Event] = []
    for origin in PEERS:
        for seq in range(1, draw(st.integers(0, 8)) + 1):
            typ = draw(st.sampled_from(TYPES))
            out.append(Event.from_json({"origin": origin, "seq": seq,
                                        "hlc": draw(st.integers(0, 30)), "type": int(typ),
                                        "payload": draw(typed_payload(typ))}))
    return out


def full_snapshot(s: MeshState) -> object:
    """Everything the fold derives, in a form that ignores arrival order."""
    return (snapshot(s), {k: v.id for k, v in s.jobs.items()},
            {k: v.id for k, v in s.partials.items()},
            dict(s.deleted),
            {k: v.id for k, v in s.splits.items()}, {k: v.id for k, v in s.members.items()},
            {k: v.id for k, v in s.revoked.items()})


@settings(max_examples=150, deadline=None)
@given(typed_event_sets(), st.randoms(use_true_random=False), st.integers(0, 8))
def test_fold_of_typed_events_ignores_order_and_duplicates(
        events: list[Event], rnd: object, dups: int) -> None:
    """Any hlcs (an origin's clock may be wrong); no deletion (below: what it lets leave
    memory depends on when it came, until a sweep)."""
    events = [e for e in events if e.type != EventType.JOB_DELETED]
    shuffled = list(events) + list(events[:dups])
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert full_snapshot(fold(events)) == full_snapshot(fold(shuffled))


@settings(max_examples=150, deadline=None)
@given(typed_event_sets(), st.randoms(use_true_random=False), st.integers(0, 8))
def test_fold_of_typed_events_with_deletions_ignores_order_after_a_sweep(
        events: list[Event], rnd: object, dups: int) -> None:
    # An origin's hlc grows with its seq (its clock): so an event that leaves memory (a
    # deleted job's) is never one an UNPROVIDE of its origin held before it must see.
    hlcs: dict[str, list[int]] = {}
    for e in events:
        hlcs.setdefault(e.origin, []).append(e.hlc)
    events = [Event(e.origin, e.seq, sorted(hlcs[e.origin])[e.seq - 1], e.type, e.payload)
              for e in events]
    shuffled = list(events) + list(events[:dups])
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    # A deleted job's events held before its JOB_DELETED leave memory at the next sweep (a
    # compaction pass), those after it at once: the same in-memory events after a sweep.
    a, b = fold(events), fold(shuffled)
    a.compact(())
    b.compact(())
    assert full_snapshot(a) == full_snapshot(b)
    assert a.content_sum() == b.content_sum()


@settings(max_examples=100, deadline=None)
@given(typed_event_sets())
def test_fold_of_typed_events_is_idempotent(events: list[Event]) -> None:
    s = fold(events)
    before = full_snapshot(s)
    assert not any(s.apply(e) for e in events)  # every event is already known
    copies = [Event.from_json(e.to_json()) for e in events]  # equal events, new objects
    assert not any(s.apply(e) for e in copies)
    assert full_snapshot(s) == before == full_snapshot(fold(copies))


SPLIT = _mk("x", 1, 1, EventType.TASK_SPLIT, {"job": "j", "task": "t", "input": None,
                                              "chunks": [[]]})


def test_earliest_claim_wins_whatever_arrives_first() -> None:
    late = _mk("a", 1, 20, EventType.CLAIM, {"job": "j", "task": "t", "chunk": 0,
                                            "attempt": 0, "split": ["x", 1]})
    early = _mk("b", 1, 10, EventType.CLAIM, {"job": "j", "task": "t", "chunk": 0,
                                             "attempt": 0, "split": ["x", 1]})
    for order in ([SPLIT, late, early], [early, late, SPLIT]):
        s = fold(order)
        w = s.chunk("j", "t", 0).winner(0, ("x", 1))
        assert w is not None and w.origin == "b"


def test_events_of_a_losing_split_never_count() -> None:
    """Two peers split at once: the later split's claims and outcomes are kept apart."""
    other = _mk("y", 1, 2, EventType.TASK_SPLIT, {"job": "j", "task": "t", "input": None,
                                                  "chunks": [[]]})
    base = {"job": "j", "task": "t", "chunk": 0, "attempt": 0, "split": ["y", 1]}
    claim = _mk("y", 2, 3, EventType.CLAIM, base)
    done = _mk("y", 3, 4, EventType.CHUNK_DONE, {**base, "output": "o", "cache": {}})
    for order in ([SPLIT, other, claim, done], [done, claim, other, SPLIT]):
        s = fold(order)
        c = s.chunk("j", "t", 0)
        assert c.winner(0, ("x", 1)) is None and c.done is None


def test_heads_are_contiguous_and_events_after_fills_gaps() -> None:
    evs = [_mk("a", q, q, EventType.PROVIDE, {"cids": [str(q)]}) for q in (1, 2, 4)]
    s = fold(evs)
    assert s.heads["a"] == 2
    assert [e.seq for e in s.events_after({"a": 1}, 10)] == [2, 4]
    assert [e.seq for e in s.events_after({}, 2)] == [1, 2]


def test_hlc_is_monotonic_and_passes_remote_time() -> None:
    wall = [1000]
    c = HLC(lambda: wall[0])
    a = c.now()
    b = c.now()
    assert b > a
    c.observe((5000 << 16) + 7)
    assert c.now() > (5000 << 16) + 7
    wall[0] = 900  # the wall clock going back never makes timestamps go back
    assert c.now() > b


def test_event_log_persists_and_ignores_duplicates(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "e.sqlite")
    ev = _mk("a", 1, 3, EventType.JOB_SUBMITTED, {"job": "j", "workflow": {"tasks": []}})
    log.append([ev, ev])
    log.close()
    again = EventLog(tmp_path / "e.sqlite")
    assert list(again.load()) == [ev]
    again.close()


def test_event_json_round_trip() -> None:
    ev = _mk("a", 2, 9, EventType.CACHE_PUT, {"cache": {"k": {"n": "x", "c": "y"}}})
    assert Event.from_json(ev.to_json()) == ev


def test_a_task_output_and_an_item_result_under_one_key_do_not_shadow_each_other() -> None:
    # A per-item task fed one file has the key of that file's item: cache_key(call, params, cid).
    key = "k"
    item = _mk("a", 2, 2, EventType.CHUNK_DONE, {
        "job": "j", "task": "t", "split": ["a", 1], "chunk": 0, "attempt": 0,
        "cache": {key: {"n": "x.txt", "c": "bafyitem"}}})
    done = _mk("a", 3, 3, EventType.TASK_DONE, {"job": "j", "task": "t", "output": "bafydir",
                                                "key": key, "cached": False})
    for order in ([item, done], [done, item]):
        s = fold(order)
        assert s.cache[key] == {"n": "x.txt", "c": "bafyitem"}
        assert s.outputs[key] == "bafydir"


def test_events_beyond_a_gap_never_crowd_out_those_that_move_heads_on() -> None:
    """An asker that already holds many events beyond a gap (which its version vector cannot
    say) still gets, in every reply, the events that move its heads on."""
    stray = [_mk("g", 1000 + i, i, EventType.PROVIDE, {"cids": [str(i)]}) for i in range(600)]
    mine = [_mk("a", q, 10_000 + q, EventType.PROVIDE, {"cids": [f"a{q}"]}) for q in (1, 2, 3)]
    s = fold([*stray, *mine])
    got = s.events_after({}, 512)
    assert [e.id for e in got[:3]] == [("a", 1), ("a", 2), ("a", 3)]
    assert len(got) == 512 and all(e.origin == "g" for e in got[3:])

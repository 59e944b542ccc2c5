"""The fold is a CRDT: any order and any duplication of the same events give the same state."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log import HLC, Event, EventLog, EventType, MeshState, fold

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
            {k: sorted(v) for k, v in s.providers.items()}, dict(sorted(s.heads.items())),
            dict(sorted(chunks.items())))


@settings(max_examples=150, deadline=None)
@given(event_sets(), st.randoms(use_true_random=False), st.integers(0, 5))
def test_fold_ignores_order_and_duplicates(events: list[Event], rnd: object, dups: int) -> None:
    shuffled = list(events) + list(events[:dups])
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert snapshot(fold(events)) == snapshot(fold(shuffled))


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

"""peer.log.endrules: the output rules the fold and the compactor share (session 48, helper
a). A table of the pure rules, and a property: the merged outputs a non-member's compacted
record keeps (made at compaction, then again as JOB_ENDEDs come after it) are the fold's
`end_outputs` over the same ends, in any order and wherever the compaction falls."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peer.config import PeerConfig
from peer.log import Event, EventType, MeshState, fold
from peer.log.compact import _end_of_facts, _outs_of
from peer.log.endrules import earlier, least, merge_earliest, output_flaw
from peer.log.events import Output
from peer.log.lanes import lane
from peer.node import Node

JOB = "j0000000000a8"
H, V, X, Y = "a1" * 8, "b2" * 8, "c3" * 8, "e5" * 8  # named, named, added by V, self-added
TASKS = ("t0", "t1")
WORKFLOW = {"name": "w", "tasks": [{"name": t, "call": "c", "params": {}, "depends": []}
                                   for t in TASKS]}
SUB_ORDER = (100, H, 1)


def out(hlc: int, origin: str = lane(H, JOB), seq: int = 1, cid: str = "c") -> Output:
    return Output("k", cid, hlc, origin, seq)


@pytest.mark.parametrize(("task", "o", "want"), [
    ("t0", out(200), None),
    ("u", out(200), "outputs.u is no task of the job"),
    ("t0", out(100, H, 1), "outputs.t0's order is not between"),
    ("t0", out(99, lane(H, JOB)), "outputs.t0's order is not between"),
    ("t0", out(200, lane(X, JOB)), "is no lane of a member of the job"),  # (no member)
    ("t0", out(200, H), "is no lane of a member of the job"),  # (a mesh stream)
    ("t0", out(200, lane(H, "j0000000000a9")), "is no lane of a member of the job"),
])
def test_output_flaw_names_what_no_admitted_end_can_carry(task: str, o: Output,
                                                          want: str | None) -> None:
    got = output_flaw(JOB, task, o, {H, V}, SUB_ORDER, set(TASKS))
    assert got == want if want is None else want in (got or "")


def test_the_earliest_wins_a_tie_keeps_the_first() -> None:
    a, b = out(200, cid="a"), out(300, cid="b")
    same = out(200, cid="same order")
    assert earlier(a, None) and earlier(a, b) and not earlier(b, a) and not earlier(same, a)
    assert least(a, b) is a and least(b, a) is a and least(a, same) is a
    assert least(same, a) is same and least(None, a) is a and least(a, None) is a
    merged: dict[str, Output] = {"t0": b}
    merge_earliest(merged, {"t0": a, "t1": same}, keyless=True)
    assert merged == {"t0": Output(None, "a", 200, lane(H, JOB), 1),
                      "t1": Output(None, "same order", 200, lane(H, JOB), 1)}
    merge_earliest(merged, {"t0": same})
    assert merged["t0"].cid == "a"  # (a tie keeps the one there)


class _Gossip:
    """No peer is pushed to, none is live."""

    def __init__(self) -> None:
        self.heads: dict[str, Mapping[str, int]] = {}

    def broadcast(self, events: object) -> None:
        pass

    def acknowledge(self, origins: object) -> None:
        pass

    def live_peers(self) -> list[str]:
        return []


def _non_member(d: Path) -> Node:
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    node.listeners[:] = [node.compactor.note]  # no scheduler: this is about the log
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    node.gossip = _Gossip()  # type: ignore[assignment]
    return node


@st.composite
def ends(draw: st.DrawFn) -> list[Event]:
    """1-4 JOB_ENDEDs of JOB by H, V (named), X (added by V: vouched) or Y (self-added: not),
    each `done` or failing t1, naming each task's output made in a random member's lane at
    a random order after the JOB_SUBMITTED's (several of a task at one order, some)."""
    out_ = []
    seqs = {H: 2, V: 2, X: 1, Y: 2}  # (after each one's JOB_SUBMITTED or JOB_MEMBERS)
    for _ in range(draw(st.integers(1, 4))):
        by = draw(st.sampled_from((H, V, X, Y)))
        failed = draw(st.booleans())
        outputs = {}
        for t in TASKS[:1] if failed else TASKS:
            made_in = draw(st.sampled_from((H, V, X, Y)))
            hlc, seq = draw(st.integers(3, 6)) << 16, draw(st.integers(1, 2))
            outputs[t] = [f"key-{t}", f"cid-{t}-{made_in[:2]}-{hlc >> 16}-{seq}",
                          hlc, lane(made_in, JOB), seq]
        end = (draw(st.integers(7, 9)) << 16) + seqs[by]
        out_.append(Event(by, seqs[by], end, EventType.JOB_ENDED, {
            "job": JOB, "state": "failed" if failed else "done", "n_tasks": len(TASKS),
            "end": end, "outputs": outputs, "producers": {},
            "failed": {"t1": "lost"} if failed else {}, "digest": "0" * 32}))
        seqs[by] += 1
    return out_


FIRST = [Event(H, 1, 1 << 16, EventType.JOB_SUBMITTED,
               {"job": JOB, "workflow": WORKFLOW, "members": [H, V]}),
         Event(V, 1, 2 << 16, EventType.JOB_MEMBERS, {"job": JOB, "add": [X]}),
         Event(Y, 1, 2 << 16, EventType.JOB_MEMBERS, {"job": JOB, "add": [Y]})]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ends(), st.integers(0, 2**32), st.integers(1, 4))
def test_a_compacted_record_keeps_the_folds_merged_outputs_whichever_ends_came_after(
        evs: list[Event], seed: int, cut: int) -> None:
    """The record's facts' merged outputs (`end.merged`, `compact._outs_of`) equal the fold's
    `end_outputs` of every end (their keys left out), the ends shuffled and the compaction
    after the first `cut` of them (the rest come after it: `Compactor._late_end`)."""
    want = {t: Output(None, *o[1:])
            for t, o in fold(FIRST + evs, MeshState(lanes_on=True, me="f6" * 8))
            .end_outputs.get(JOB, {}).items()}
    evs = list(evs)
    random.Random(seed).shuffle(evs)
    with tempfile.TemporaryDirectory() as d:
        node = _non_member(Path(d))
        try:
            for batch in (FIRST + evs[:cut], evs[cut:], []):  # (the last: an end held
                for ev in batch:  # past a gap in its origin's seqs leaves after `_late`)
                    node.state.apply(ev)
                    node.compactor.note(ev)
                node.catchup.compact()
            assert JOB in node.state.compacted
            held = node.index.full(JOB)
            assert held is not None and held.facts is not None
            end: Any = _end_of_facts(held.facts)
            got = _outs_of(end[2], held.record.get("outputs"))
            assert got is not None and got[0] == want
        finally:
            node.log.close()

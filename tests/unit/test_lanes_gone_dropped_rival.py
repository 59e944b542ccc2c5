"""Review rr of session 50, RR-7: a gone lanes job's JOB_MEMBERS kept aside in
`MeshState._gone_recent` outlived the job's drop from the log (`Compactor._drop`), so a
rival content of it that came later went to the conflict rule, whose winner is written with
INSERT OR REPLACE: a row of a dropped job came back into the log below its origin's floor
(and back into memory and the content digests). A real `Node` (its log, compactor, conflict
rule and refold; no network, no sleeps: the compactor's clock is set past the horizon)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peer.log import Event, EventType
from peer.log.signing import held_hash
from peer.node import Node
from tests.unit.test_lanes_compact import J1, _node
from tests.unit.test_lanes_gone_refold import Y, Z
from tests.unit.test_lanes_hostile import R

HORIZON_MS = 7 * 86_400_000


def _rows(node: Node, origin: str) -> list[tuple[int, str]]:
    return node.log.db.execute("SELECT seq, origin FROM events WHERE origin = ? ORDER BY 1",
                               (origin,)).fetchall()


def _past_horizon(node: Node) -> None:
    later = node.hlc.now() + ((HORIZON_MS + 1) << 16)
    node.compactor.now_hlc = lambda: later  # type: ignore[method-assign]


@pytest.mark.parametrize("loser_first", [True, False])
def test_a_rival_of_a_dropped_jobs_straggler_is_not_written_back(tmp_path: Path,
                                                                 loser_first: bool) -> None:
    """R, a vouched member, adds a peer to J1 after J1 was deleted (gap-free: the add leaves
    memory as it is folded, kept aside); J1's events then leave the log (past the horizon).
    A second content of R's add that comes now is of an event no longer held: it is not
    settled, not written back, not held in memory (on ded7c6f2 the winner was REPLACEd into
    the log below R's floor, and into `events`)."""
    node = _node(tmp_path, [R])
    try:
        node.janitor.delete_job(J1)
        node.flush()
        t = node.hlc.now()
        lose, win = sorted((Event(R, 1, t + (1 << 16), EventType.JOB_MEMBERS,
                                  {"job": J1, "add": [p]}) for p in (Y, Z)),
                           key=held_hash, reverse=True)
        first, second = (lose, win) if loser_first else (win, lose)
        assert node.merge([first]) == [first]
        assert node.state.straggler(first.id) is first
        _past_horizon(node)
        for _ in range(3):  # (the sweep, then the drop)
            node.catchup.compact()
        assert _rows(node, R) == []  # J1's events left the log, R's add among them
        assert node.state.straggler(first.id) is None  # and what memory kept aside of them
        assert node.merge([second]) == []
        node.rule.refold()
        assert _rows(node, R) == []
        assert second.id not in node.state.events and first.id not in node.state.events
        assert node.rule.counts.by_origin == {}
    finally:
        node.log.close()


def test_the_rule_writes_no_winner_back_whose_held_row_left_the_log(tmp_path: Path) -> None:
    """The rule's own guard, whatever took the row: a straggler kept aside whose row is no
    longer in the log (deleted here by hand, not by the compactor's drop) is not settled by
    a REPLACE: its rival is counted, not written, and the straggler is let go (on ded7c6f2
    the winner was written back)."""
    node = _node(tmp_path, [R])
    try:
        node.janitor.delete_job(J1)
        node.flush()
        t = node.hlc.now()
        lose, win = sorted((Event(R, 1, t + (1 << 16), EventType.JOB_MEMBERS,
                                  {"job": J1, "add": [p]}) for p in (Y, Z)),
                           key=held_hash, reverse=True)
        assert node.merge([lose]) == [lose]
        node.log.delete([lose.id])
        assert node.merge([win]) == []
        node.rule.refold()
        assert _rows(node, R) == [] and win.id not in node.state.events
        assert node.state.straggler(lose.id) is None and node.rule.replaced == 0
    finally:
        node.log.close()

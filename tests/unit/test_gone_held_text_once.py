"""Issue 12 (session 52, helper b): a gone lanes job's held event is encoded as its row text
once (`gonewait.held_key`, kept on the event; the journal keeps the text its park made for
the row's write), not again at each step: its park, the journal, the write, each free. A
real `Node` (no network), its real log and job index."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peer.log import Event, EventType
from peer.log.gonewait import HELD_LANE, event_text
from tests.unit.test_lanes_compact import J1, _node
from tests.unit.test_lanes_gone_wait_hostile import Y, _chunk_done, _held_rows
from tests.unit.test_lanes_gone_wait_restart import _delete_and_drop


@pytest.fixture
def encodings(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Event]]:
    """The events `Event.to_json` is called on (what `event_text` encodes), in call order."""
    seen: list[Event] = []
    plain = Event.to_json

    def counted(self: Event) -> dict[str, Any]:
        seen.append(self)
        return plain(self)

    monkeypatch.setattr(Event, "to_json", counted)
    yield seen


def test_a_held_event_is_encoded_once_from_its_park_to_its_free(
        tmp_path: Path, encodings: list[Event]) -> None:
    """A non-member's lane event of J1 waits once J1 is gone (parked, journaled, its row
    written), then a vouched add of its peer frees it (journaled, its row deleted): its row
    text was made once (on a04f558d: 5 times: park, journal, write, free, journal); the row is keyed
    and written as before."""
    node = _node(tmp_path)
    ev = _chunk_done(node.hlc.now(), 1, 3)
    try:
        assert node.merge([ev]) == [ev]
        encodings.clear()
        _delete_and_drop(node)
        text = event_text(ev)  # (the test's own: not counted)
        assert list(node.state._gone_waits[J1].lanes) == [ev]
        assert _held_rows(node) == [(J1, HELD_LANE, Y, hashlib.sha256(text.encode()).hexdigest(),
                                     text)]
        node.emit(EventType.JOB_MEMBERS, {"job": J1, "add": [Y]})  # (vouched: folded)
        node.flush()
        node.catchup.compact()  # (the journal's frees written)
        assert node.state._gone_wait_n == 0 and _held_rows(node) == []
        assert set(ev.body.cache) <= set(node.state.cache)
        assert sum(e == ev for e in encodings) == 2  # (one of them the test's own)
    finally:
        node.log.close()

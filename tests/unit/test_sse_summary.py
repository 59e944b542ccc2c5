"""What an event stream (/api/events) sends of each event stays small whatever a member's valid
event holds (peer/http/app.py `_event_summary`; session 50, helper c): the scalars of the keys
the web UI and the docs name, a text cut to 4 KiB around a marker."""

from __future__ import annotations

import json

from peer.http.app import _sse
from peer.log.events import MAX_SHOWN_CHARS, Event, EventType


def _data(ev: Event) -> dict[str, object]:
    text = _sse(ev)
    head, data, end = text.split("\n", 2)
    assert (head, end) == (f"event: {ev.type.name.lower()}", "\n")
    out: dict[str, object] = json.loads(data.removeprefix("data: "))
    return out


def test_a_usual_event_is_summarized_as_before() -> None:
    ev = Event("p1", 4, 99, EventType.CHUNK_DONE,
               {"job": "j1", "task": "t", "chunk": 2, "attempt": 0, "split": ["p1", 3],
                "output": "bafkqaaa", "log": "bafkqaab", "s": 0.5})
    assert _data(ev) == {"type": "chunk_done", "origin": "p1", "hlc": 99, "job": "j1",
                         "task": "t", "chunk": 2, "attempt": 0, "output": "bafkqaaa"}


def test_a_members_megabyte_error_goes_to_each_stream_cut_to_4_kib() -> None:
    """A CHUNK_FAILED's `error` may hold 1 MiB at the door (MAX_TEXT_CHARS): every open
    stream was sent all of it."""
    ev = Event("p1", 5, 100, EventType.CHUNK_FAILED,
               {"job": "j1", "task": "t", "chunk": 0, "attempt": 1, "kind": "error",
                "error": "E" * (1 << 20)})
    assert len(_sse(ev)) < MAX_SHOWN_CHARS + 300
    data = _data(ev)
    error = str(data.pop("error"))
    assert "characters cut" in error and error.startswith("EEE") and error.endswith("EEE")
    assert data == {"type": "chunk_failed", "origin": "p1", "hlc": 100, "job": "j1",
                    "task": "t", "chunk": 0, "attempt": 1, "kind": "error"}


def test_values_that_are_no_scalars_are_left_out() -> None:
    """An event of a type this version does not know (kept and forwarded, its payload not
    checked) with a long list under `task`, an int of 400 digits and a NaN (not JSON: the
    browser's parse of the event failed) under keys the summary names."""
    ev = Event("p1", 6, 101, EventType(99),
               {"job": "j1", "task": ["x"] * 100_000, "chunk": 10 ** 400,
                "progress": float("nan"), "attempt": 1, "cached": True, "name": None})
    assert _data(ev) == {"type": "unknown_99", "origin": "p1", "hlc": 101, "job": "j1",
                         "attempt": 1, "cached": True, "name": None}
    assert len(_sse(ev)) < 200

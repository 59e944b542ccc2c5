"""Flaps: which lines of a flapping outage are logged (review r1 M2's second half, session
46). A fake clock: every call is given its time."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from peer.log.flaps import Flaps

W = 60.0


def test_an_outage_alone_logs_its_start_and_its_end() -> None:
    f = Flaps(W)
    assert f.start(0.0) == "" and f.end(5.0) == ""
    assert f.start(100.0) == "" and f.end(101.0) == ""  # a window after: not a flap


def test_a_disk_failing_every_other_write_logs_two_lines_a_window_then_a_summary() -> None:
    """Ten writes a second for ten minutes, every other one failing: 3,000 outages, which
    logged 6,000 lines (and as many claims lines). Now a start and an end per window, the
    start naming the outages not logged since the line before it."""
    f = Flaps(W)
    lines: list[tuple[float, str, str]] = []
    for i in range(3000):
        t = i * 0.2
        if (s := f.start(t)) is not None:
            lines.append((t, "start", s))
        if (e := f.end(t + 0.1)) is not None:
            lines.append((t + 0.1, "end", e))
    assert len(lines) == 20, lines
    assert lines[0] == (0.0, "start", "") and lines[1] == (0.1, "end", "")
    t, kind, words = lines[2]
    assert (kind, round(t, 1)) == ("start", 60.2)
    assert words == " (300 more outages in the last 60 s, not logged each: it flaps)"
    assert not f.on and not f.said_on  # the last line said it ended: true


def test_a_flap_that_lasts_is_logged_a_window_after_the_last_line() -> None:
    """The log's last word must not stay "writable again" while it fails: the retry timer
    asks `still`, which logs once the window since the last line has passed."""
    f = Flaps(W)
    assert f.start(0.0) == "" and f.end(1.0) == ""
    assert f.start(2.0) is None and f.quiet  # a flap: not logged, nor its claims line
    assert [f.still(t) for t in (2.5, 30.0, 60.9)] == [None, None, None]
    words = f.still(61.0)
    assert words == " (1 more outage in the last 60 s, not logged each: it flaps)"
    assert f.said_on and not f.quiet and f.still(200.0) is None  # said once
    assert f.end(300.0) == ""  # and so its end is logged


def test_a_flap_ended_before_the_timer_asks_says_nothing_more() -> None:
    f = Flaps(W)
    f.start(0.0), f.end(1.0)
    assert f.start(2.0) is None and f.end(3.0) is None  # the log says "ended": true
    assert f.still(100.0) is None  # (not on)
    assert f.start(100.0) == (
        " (1 more outage in the last 99 s, not logged each: it flaps)")


def test_calls_out_of_state_are_ignored() -> None:
    f = Flaps(W)
    assert f.end(0.0) is None and f.still(0.0) is None
    assert f.start(1.0) == "" and f.start(2.0) is None and f.unlogged == 0


Step = tuple[float, str]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 90.0), st.sampled_from(["start", "end", "still"])),
                max_size=80))
def test_lines_are_bounded_true_and_count_every_outage(steps: list[Step]) -> None:
    """At most two lines in any window; the log never last says an outage is on when it
    is not; one that is on is said so once the window since the last line has passed;
    every outage begun is logged or counted in a later line (or still waits to be)."""
    f = Flaps(W)
    now, logged, starts, counted = 0.0, [], 0, 0
    for dt, op in steps:
        now += dt
        was_on = f.on
        words = getattr(f, op)(now)
        starts += op == "start" and not was_on
        if words is not None:
            logged.append(now)
            if words:
                counted += int(words.split()[0][1:])
            counted += op == "start"  # (a start logged counts itself)
        assert f.on or not f.said_on  # never "on" last while it is off
    for i, t in enumerate(logged):
        assert sum(1 for u in logged[i:] if u < t + W) <= 2, logged
    assert counted + f.unlogged == starts
    if f.on and not f.said_on:
        last = logged[-1] if logged else now
        assert f.still(max(now, last + W + 0.001)) is not None  # (float sums)

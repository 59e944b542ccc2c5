"""What a peer holds of a running task's log lines and metrics, and stores as the run's record,
stays bounded however long the task runs (peer/jobs/live.py `Kept`; session 50, helper c):
its first and its last entries within a budget, a marker line where lines were cut. The
in-memory mesh and fake runner of peer/jobs/sim.py."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from peer.jobs.live import LINE_OVERHEAD, METRIC_NAME_MAX_CHARS, Kept, log_line, log_lines
from peer.jobs.sim import JobMesh
from peer.log import EventType
from tests.unit.test_scheduler_sim import CATALOG, CFG, WRITE


def _kept(budget: int, n: int) -> Kept[int]:
    k: Kept[int] = Kept(budget, lambda _: 1, lambda cut, size: -cut)
    for i in range(n):
        k.append(i)
    return k


@pytest.mark.parametrize(("budget", "n", "held"), [
    (10, 0, []),
    (10, 5, [0, 1, 2, 3, 4]),
    (10, 10, list(range(10))),
    (10, 11, [0, 1, 2, 3, 4, -1, 6, 7, 8, 9, 10]),  # the 6th entry cut, the marker there
    (10, 1000, [0, 1, 2, 3, 4, -990, 995, 996, 997, 998, 999]),
    (3, 7, [0, -4, 5, 6]),  # an odd budget: the tail has the larger half
])
def test_kept_holds_the_first_and_the_last_entries_and_counts_the_cut(
        budget: int, n: int, held: list[int]) -> None:
    k = _kept(budget, n)
    assert list(k) == held
    assert (len(k), k[-1] if held else None, k[1:3]) == (len(held), held[-1] if held else None,
                                                        held[1:3])


def test_an_entry_larger_than_the_tail_is_cut_not_held() -> None:
    k: Kept[str] = Kept(10, len)
    for s in ("ab", "cd", "xxxxxxxxxxxx", "e"):
        k.append(s)
    assert (list(k), k.cut, k.cut_size) == (["ab", "cd", "e"], 1, 12)  # (no marker: none shown)


def test_a_log_line_longer_than_its_bound_is_cut_around_a_marker() -> None:
    line = log_line("x" * 1_000_000, budget=40_000)
    assert len(line) < 10_100 and "characters cut" in line
    assert log_line("short") == "short"


def test_the_log_marker_says_how_many_lines_and_characters_were_cut() -> None:
    k = log_lines(budget=10 * (LINE_OVERHEAD + 4))
    for i in range(1000):
        k.append(f"{i:04d}")
    assert k[:5] == ["0000", "0001", "0002", "0003", "0004"]
    assert k[5] == ("[banzai] ... 990 log lines (3960 characters) cut here: a run keeps its "
                    "first and its last lines within --task-log-max-bytes (680) ...")
    assert k[6:] == [f"{i:04d}" for i in range(995, 1000)]


async def test_a_long_running_tasks_live_log_and_stored_record_stay_bounded() -> None:
    """A task that logs a line and a metric point per item for days grew the peer's memory
    without limit (`Runs._message` appended to lists), and its run record stored when the
    chunk ends (gossiped by CID) with it. Now the live log holds its first and last lines
    within --task-log-max-bytes (here 64 KiB) around a marker, the metrics their first and
    last 10,000 points, and the stored record is what was held (plus a note of the cut
    metric points)."""
    budget = 64 << 10
    cfg = dataclasses.replace(CFG, kind_settings={"log_max_bytes": budget})
    mesh = JobMesh(1, CATALOG, cfg)
    try:
        job = mesh.submit("p0", [WRITE])
        await mesh.settle()
        p = mesh["p0"]
        [key] = p.runner.running
        send = p.runner.messages[key]
        n = 200_000
        for i in range(n):
            send("log", (f"item {i} done",))
            send("metric", ("loss", i, 1.0 / (i + 1)))
        lines, points = p.sched.logs[(job, "w")], p.sched.metrics[(job, "w")]
        assert sum(len(s) + LINE_OVERHEAD for s in lines) <= budget + 200
        assert (lines[0], lines[-1]) == ("item 0 done", f"item {n - 1} done")
        [marker] = [s for s in lines if s.startswith("[banzai] ...")]
        assert f"{n - len(lines) + 1} log lines" in marker
        assert len(points) == 20_000
        assert (points[0], points[-1][:2]) == (["loss", 0, 1.0], ["loss", n - 1])

        p.runner.finish(key)
        await mesh.settle()
        [done] = mesh.events(EventType.CHUNK_DONE, "p0", task="w")
        data = b"".join(p.store.cat(done.payload["log"]))
        record: dict[str, Any] = json.loads(data)
        assert len(data) < budget + 20_000 * 45  # (was: every line and point, ~13 MB)
        assert record["log"][:-1] == list(lines)
        assert record["log"][-1] == ("[banzai] 180000 metric points cut between the first and "
                                     "the last 10000 of this run")
        assert record["metrics"] == [list(x) for x in points]
    finally:
        await mesh.close()


async def test_a_metrics_name_is_cut_so_the_points_bound_bounds_bytes_too() -> None:
    """The points' bound counts points: 20,000 points of 64 KiB names held 1.3 GB (helper c
    of session 50, left). A name is held cut to METRIC_NAME_MAX_CHARS."""
    mesh = JobMesh(1, CATALOG, CFG)
    try:
        job = mesh.submit("p0", [WRITE])
        await mesh.settle()
        p = mesh["p0"]
        [key] = p.runner.running
        p.runner.messages[key]("metric", ("n" * (64 << 10), 3, 0.5))
        [point] = p.sched.metrics[(job, "w")]
        assert point == ["n" * METRIC_NAME_MAX_CHARS, 3, 0.5]
    finally:
        await mesh.close()

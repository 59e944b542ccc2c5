"""scripts/bench_mesh.py: a batch's CPU window holds the compaction it causes (issue 12)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from scripts.scriptlib import load_script

bench_mesh = load_script("bench_mesh")


@dataclass
class FakeMesh:
    """A mesh of no real peer: the jobs posted to it, its CPU seconds as the test sets them."""

    finished: list[int] = field(default_factory=list)
    idle_s_per_s: float = 0.0
    cpu: float = 0.0
    peers: list[Any] = field(default_factory=list)

    def cpu_s(self) -> float:
        return self.cpu


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_jobs_held_reads_the_folds_jobs_in_memory() -> None:
    text = (
        "# HELP banzai_memory_entries Entries of the fold's tables in memory, by table\n"
        "# TYPE banzai_memory_entries gauge\n"
        'banzai_memory_entries{table="events"} 40.0\n'
        'banzai_memory_entries{table="jobs"} 2.0\n')
    assert bench_mesh.jobs_held(text) == 2.0
    assert bench_mesh.jobs_held(text.replace('"jobs"} 2.0', '"jobs"} 0.0')) == 0.0


def test_recent_jobs_are_the_newest_within_the_recent_tasks() -> None:
    warm = [24, 1, 1, 1, 1, 1]
    assert bench_mesh.recent_jobs(warm) == 6
    assert bench_mesh.recent_jobs([*warm, *[1] * 200, 1000]) == 1  # a dag pushes out all
    assert bench_mesh.recent_jobs([*warm, 1000, *[1] * 1000]) == 1000  # so do 1,000 jobs
    assert bench_mesh.recent_jobs([1000, *[1] * 1000, 2]) == 999  # the map's job: 2 tasks
    assert bench_mesh.recent_jobs([*[1] * 999, 2]) == 999
    assert bench_mesh.recent_jobs([1001]) == 0
    assert bench_mesh.recent_jobs([]) == 0


def test_settle_waits_until_every_peer_has_compacted_what_the_batch_pushed_out() -> None:
    mesh = FakeMesh(finished=[24, 1, 1, 1, 1, 1, *[1] * 200, 1000])
    reads = iter([[207.0, 207.0, 1.0], [1.0, 207.0, 1.0], [1.0, 1.0, 1.0]])
    clock = FakeClock()
    seen: list[list[float]] = []

    def held(m: Any) -> list[float]:
        seen.append(next(reads))
        return seen[-1]

    waited = bench_mesh.settle(mesh, held=held, clock=clock, sleep=clock.sleep)
    assert len(seen) == 3  # p1 compacted last
    assert waited == pytest.approx(0.2)


def test_settle_gives_up_with_the_peers_that_did_not_compact() -> None:
    mesh = FakeMesh(finished=[1000, 1000])
    clock = FakeClock()
    with pytest.raises(TimeoutError, match=r"in 30 s: p1 holds 2 jobs in memory, .* holds 1"):
        bench_mesh.settle(mesh, held=lambda m: [1.0, 2.0], clock=clock, sleep=clock.sleep)
    assert clock.t == pytest.approx(130.0, abs=0.11)  # 30 s of 0.1 s sleeps


def test_net_cpu_takes_off_the_idle_mesh_over_the_wait() -> None:
    assert bench_mesh.net_ms_per_task(2.5, 0.02, 5.0, 1000) == pytest.approx(2.4)
    assert bench_mesh.net_ms_per_task(2.5, 0.0, 0.0, 1000) == pytest.approx(2.5)


def test_the_cpu_window_ends_after_the_compaction_and_takes_the_idle_mesh_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    mesh = FakeMesh(finished=[1000], idle_s_per_s=0.02, cpu=11.0)  # 1 s since the start

    def settle(m: FakeMesh) -> float:
        m.cpu += 0.5  # every peer's compaction pass, and 0.1 s idle over the 5 s wait
        return 5.0

    monkeypatch.setattr(bench_mesh, "settle", settle)
    got = bench_mesh.close_window(mesh, 1000, (0.5, 10.0, None), True)
    assert got["settle_s"] == 5.0
    assert got["cpu_window_ms_per_task"] == pytest.approx(1.5)
    assert got["cpu_ms_per_task"] == pytest.approx(1.4)
    unsettled = bench_mesh.close_window(mesh, 1000, (0.5, 10.0, None), False)
    assert unsettled["settle_s"] == 0.0
    assert unsettled["cpu_ms_per_task"] == pytest.approx(1.5)  # no wait, nothing taken off


def test_the_job_view_is_read_apart_from_the_window() -> None:
    names = {"a": "p0", "b": "p1"}
    dag = {"submitted_ms": 1000, "tasks": [
        {"finished_ms": 1010, "chunks": [{"peer": "a"}]},
        {"finished_ms": 1030, "chunks": [{"peer": "b"}]},
        {"finished_ms": 1020, "chunks": [{"peer": "a"}]}]}
    got = bench_mesh.view_figures(dag, names, "dag")
    assert got["per_peer"] == {"p0": 2, "p1": 1}
    assert got["hlc_p50_ms"] == 20
    mapped = {"submitted_ms": 0, "tasks": [
        {"finished_ms": 1, "chunks": [{"peer": None}]},
        {"finished_ms": 2, "chunks": [{"peer": "a"}, {"peer": "b"}, {"peer": "b"}]}]}
    assert bench_mesh.view_figures(mapped, names, "map") == {
        "per_peer": {"p0": 1, "p1": 2}, "chunks": 3}


class Started(Exception):
    """start_mesh's stand-in stops the run once it knows the peers' flags."""


def test_lanes_on_is_the_default_with_its_own_section_and_no_lanes_the_earlier_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a lanes flag (or with --lanes) every peer runs with --lanes, their default, in
    its own section; --no-lanes passes --no-lanes, the section of the earlier sessions' rows
    (full replication); --lanes-min-job-tasks goes to every peer."""
    flags: list[tuple[int, tuple[str, ...]]] = []

    def start_mesh(n: int, base: Any, extra: tuple[str, ...] = ()) -> Any:
        flags.append((n, tuple(extra)))
        raise Started

    monkeypatch.setattr(bench_mesh, "start_mesh", start_mesh)
    for argv, want in ((["--peers", "3"], ("--lanes",)),
                       (["--peers", "3", "--lanes"], ("--lanes",)),
                       (["--peers", "3", "--no-lanes"], ("--no-lanes",)),
                       (["--peers", "3", "--lanes-min-job-tasks", "0"],
                        ("--lanes", "--lanes-min-job-tasks", "0"))):
        with pytest.raises(Started):
            bench_mesh.main(argv)
        assert flags.pop() == (3, want)
    assert bench_mesh.mesh_section({"lanes": False}) == bench_mesh.MESH_SECTION
    assert bench_mesh.mesh_section({"lanes": True}) == (
        bench_mesh.MESH_SECTION + ", lanes on (the peers' default)")


def test_a_lanes_job_the_watched_peer_is_no_member_of_is_done_at_its_job_ended() -> None:
    async def go() -> tuple[float, float, float]:
        w = bench_mesh.Watcher(None, "http://127.0.0.1:1")
        waiting = asyncio.create_task(w.wait("j1", 1))
        await asyncio.sleep(0)
        w._ended("j1", 5.0)  # no task_done of j1 on this peer: its end
        w._ended("j2", 7.0)  # ended before anyone waited for it
        w._note({"job": "j3", "task": "t"}, 8.0)
        w._ended("j3", 9.0)  # a member's job: its last task_done is the time
        return await waiting, await w.wait("j2", 1), await w.wait("j3", 1)

    assert asyncio.run(go()) == (5.0, 7.0, 8.0)


def test_the_idle_window_polls_the_peers_as_settle_does() -> None:
    clock, polls = FakeClock(), []
    waited = bench_mesh.polled_idle(FakeMesh(), 0.95, held=polls.append, clock=clock,
                                    sleep=clock.sleep)
    assert bench_mesh.SETTLE_POLL_S == 0.1
    assert len(polls) == 10  # settle's rate: every 0.1 s, the last at 0.9 s
    assert waited == pytest.approx(1.0)


def test_rows_refuses_an_unknown_row_and_write_without_every_row(
        capsys: pytest.CaptureFixture[str]) -> None:
    """--rows (session 42): a row it does not know, or --write with rows left out (the
    section's tables need every row), or --write with a --lanes-min-job-tasks (the section
    holds the peers' default's rows), is a usage error naming the option, not a run."""
    for argv, said in ((["--rows", "map,maps"], "--rows: unknown row(s) maps"),
                       (["--rows", "map", "--write", "x.md"], "--write needs every row"),
                       (["--lanes-min-job-tasks", "0", "--write", "x.md"],
                        "leave --lanes-min-job-tasks out")):
        with pytest.raises(SystemExit) as e:
            bench_mesh.main(argv)
        assert e.value.code == 2
        assert said in capsys.readouterr().err


def test_a_run_of_some_rows_prints_their_figures_per_repetition_and_medians() -> None:
    run = {"map": {"tasks_per_s": 2000.0, "per_peer": {"p0": 18}}}
    r = {"rows": ["map"], "lanes": True, "code": "abc", "by_n": {3: {
        "banzai": [run, {"map": {"tasks_per_s": 1000.0, "per_peer": {"p0": 9, "p1": 9}}}],
        "dask": [{"map": {"tasks_per_s": 800.0}}, {"map": {"tasks_per_s": 700.0}}]}}}
    assert bench_mesh.rows_text(r).splitlines() == [
        "rows map, lanes on, code abc",
        "N=3 banzai map tasks_per_s: median 1500.0 (2000.0, 1000.0)",
        "N=3 dask map tasks_per_s: median 750.0 (800.0, 700.0)",
        "N=3 map chunks per peer: p0:18; p0:9/p1:9"]
    assert bench_mesh.rows_text({**r, "lanes_min_job_tasks": 0}).splitlines()[0] == (
        "rows map, lanes on, --lanes-min-job-tasks 0, code abc")

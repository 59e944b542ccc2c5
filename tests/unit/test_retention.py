"""Storage lifecycle (issue 11 item 4): the retention decisions as pure functions with a fake
clock, job facts from a folded state, and one janitor cycle over a real store in a temp dir."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from peer.cids import parse_cid
from peer.errors import Conflict, NotFound
from peer.ipfs import EmbeddedStore
from peer.jobs import retention
from peer.jobs.janitor import Janitor, JanitorConfig, sweep_stale
from peer.jobs.planner import Planner
from peer.jobs.retention import (
    UNNAMED_MIN_AGE_S,
    JobFacts,
    RetentionConfig,
    StoreFacts,
    archived_facts,
    gc_roots,
    job_facts,
    plan_job_deletions,
    plan_unpins,
    record_facts,
)
from peer.log import Event, EventType, MeshState

DAY = 86400.0
NOW = 100 * DAY  # the fake clock: wall seconds


def job(name: str, finished: float | None, outputs: set[str], needs: set[str] | None = None,
        logs: set[str] | None = None) -> JobFacts:
    return JobFacts(name, finished, frozenset(outputs), frozenset(needs or set()) | frozenset(
        outputs), frozenset(logs or set()))


def store(pins: dict[str, int], explicit: set[str] | None = None, used: int | None = None,
          ) -> StoreFacts:
    return StoreFacts(pins, frozenset(explicit or set()),
                      sum(pins.values()) if used is None else used)


# -- plan_unpins -------------------------------------------------------------------------------
JOBS = [job("old", NOW - 10 * DAY, {"o1"}), job("mid", NOW - 3 * DAY, {"o2"}),
        job("new", NOW - 60, {"o3"}), job("live", None, {"o4"}, needs={"in4"})]
PINS = {"o1": 100, "o2": 200, "o3": 300, "o4": 400, "in4": 50, "user": 1000, "legacy": 7}


@pytest.mark.parametrize(("cfg", "expected"), [
    (RetentionConfig(), []),  # no bound: today's behaviour, keep everything
    (RetentionConfig(keep_outputs_s=7 * DAY), ["o1"]),
    (RetentionConfig(keep_outputs_s=1 * DAY), ["o1", "o2"]),
    (RetentionConfig(keep_outputs_s=0), ["o1", "o2", "o3"]),
    # used 2057; oldest finished first until under the bound, however recent
    (RetentionConfig(store_max_bytes=2000), ["o1"]),
    (RetentionConfig(store_max_bytes=1800), ["o1", "o2"]),
    (RetentionConfig(store_max_bytes=0), ["o1", "o2", "o3"]),
    # both: the age bound first, then the size bound on what is left
    (RetentionConfig(keep_outputs_s=7 * DAY, store_max_bytes=1700), ["o1", "o2", "o3"]),
    (RetentionConfig(keep_outputs_s=7 * DAY, store_max_bytes=1900), ["o1", "o2"]),
])
def test_unpins_oldest_finished_outputs_and_never_what_is_kept(
        cfg: RetentionConfig, expected: list[str]) -> None:
    facts = store(PINS, explicit={"user"})
    got = plan_unpins(JOBS, facts, ["o1", "o2", "o3", "o4"], NOW, cfg)
    assert got == expected
    # never: an explicit pin, a pin that is no task's output, what a live job made or needs
    assert not {"user", "legacy", "o4", "in4"} & set(got)


def test_an_output_shared_by_jobs_ages_with_the_newest() -> None:
    jobs = [job("a", NOW - 30 * DAY, {"x"}), job("b", NOW - DAY, set(), needs={"x"})]
    cfg = RetentionConfig(keep_outputs_s=7 * DAY)
    assert plan_unpins(jobs, store({"x": 1}), [], NOW, cfg) == []
    assert plan_unpins(jobs, store({"x": 1}), [], NOW + 7 * DAY, cfg) == ["x"]


def test_a_live_job_keeps_an_old_output_it_reads() -> None:
    jobs = [job("a", NOW - 30 * DAY, {"x"}), job("b", None, set(), needs={"x"})]
    assert plan_unpins(jobs, store({"x": 1}), [], NOW, RetentionConfig(keep_outputs_s=0)) == []


def test_outputs_of_deleted_jobs_go_first() -> None:
    # "gone" is an output recorded in the cache whose job record was deleted: no age
    jobs = [job("a", NOW - DAY, {"x"})]
    got = plan_unpins(jobs, store({"x": 10, "gone": 10}), ["gone", "x"], NOW,
                      RetentionConfig(store_max_bytes=15))
    assert got == ["gone"]


def test_the_size_bound_counts_what_the_age_bound_already_freed() -> None:
    jobs = [job("a", NOW - 30 * DAY, {"x"}), job("b", NOW - DAY, {"y"})]
    cfg = RetentionConfig(keep_outputs_s=7 * DAY, store_max_bytes=10)
    assert plan_unpins(jobs, store({"x": 100, "y": 5}), [], NOW, cfg) == ["x"]


def test_bounds_must_not_be_negative() -> None:
    with pytest.raises(Exception, match="store_max_bytes"):
        RetentionConfig(store_max_bytes=-1)


# -- plan_job_deletions ------------------------------------------------------------------------
@pytest.mark.parametrize("facts", [{"finished_s": "x"}, {"finished_s": True},
                                   {"outputs": "bafyabc"}, {"logs": [1]}, {"logs": None}])
def test_archived_facts_refuse_what_record_facts_does_not_write(facts: dict[str, Any]) -> None:
    """Read back from the job index: "outputs" as a string is not a set of its characters."""
    with pytest.raises(ValueError):
        archived_facts("j", facts)


def test_archived_facts_read_back_what_record_facts_writes() -> None:
    record = {"tasks": [{"state": "done", "output": "o1", "cid": None, "logs": ["l1"]},
                        {"state": "done", "output": "s", "cid": "s", "logs": []}]}
    assert archived_facts("j", record_facts(record, 5.0)) == JobFacts(
        "j", 5.0, frozenset({"o1"}), frozenset({"o1"}), frozenset({"l1"}))


def test_job_records_older_than_the_bound_are_deleted_oldest_first() -> None:
    assert plan_job_deletions(JOBS, NOW, None) == []
    assert plan_job_deletions(JOBS, NOW, 2 * DAY) == ["old", "mid"]
    assert plan_job_deletions(JOBS, NOW, 0) == ["old", "mid", "new"]  # never the live one


# -- facts from a folded state -----------------------------------------------------------------
class Mesh:
    """A one-peer mesh state fed by `emit`, with HLCs in wall milliseconds."""

    def __init__(self, peer: str = "p") -> None:
        self.peer = peer
        self.state = MeshState()
        self.ms = int(NOW * 1000)

    def emit(self, typ: EventType, payload: dict[str, Any]) -> Event:
        self.ms += 1000
        ev = Event(self.peer, self.state.heads.get(self.peer, 0) + 1, self.ms << 16, typ,
                   payload)
        self.state.apply(ev)
        return ev

    def submit(self, job: str, tasks: list[dict[str, Any]]) -> None:
        self.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": {"name": job,
                                                                      "tasks": tasks}})

    def run(self, job: str, task: str, output: str, *, log: str = "", fail: bool = False,
            inp: str | None = None) -> None:
        split = self.emit(EventType.TASK_SPLIT, {"job": job, "task": task, "input": inp,
                                                 "chunks": [[]]})
        base = {"job": job, "task": task, "chunk": 0, "attempt": 0, "split": list(split.id)}
        self.emit(EventType.CLAIM, base)
        if fail:
            self.emit(EventType.CHUNK_FAILED, {**base, "error": "boom", "kind": "error"})
            return
        self.emit(EventType.CHUNK_DONE, {**base, "output": output, **({"log": log} if log
                                                                        else {})})
        self.emit(EventType.TASK_DONE, {"job": job, "task": task, "output": output,
                                        "key": f"k-{job}-{task}", "cached": False})


T = {"call": "T_WRITE", "params": {}, "depends": []}


def test_job_facts_finished_live_and_failed() -> None:
    m = Mesh()
    m.submit("done", [{"name": "a", **T}, {"name": "b", **T, "depends": ["a"]}])
    m.run("done", "a", "oa", log="la")
    m.run("done", "b", "ob", inp="oa")
    m.submit("live", [{"name": "src", "cid": "csrc"}, {"name": "a", **T, "depends": ["src"]}])
    m.emit(EventType.TASK_DONE, {"job": "live", "task": "src", "output": "csrc", "key": None,
                                 "cached": True})
    m.submit("failed", [{"name": "a", **T}, {"name": "b", **T, "depends": ["a"]}])
    m.run("failed", "a", "", fail=True)
    m.submit("partly", [{"name": "a", **T}, {"name": "c", **T}])  # c can still run
    m.run("partly", "a", "", fail=True)
    facts = {f.job: f for f in job_facts(m.state, max_attempts=3)}
    done = facts["done"]
    assert done.finished_s == m.state.task_done[("done", "b")].hlc / 65536 / 1000
    assert done.outputs == {"oa", "ob"} and {"oa", "ob"} <= done.needs and done.logs == {"la"}
    live = facts["live"]
    assert live.finished_s is None and live.outputs == frozenset() and "csrc" in live.needs
    assert facts["failed"].finished_s is not None  # b waits on a failed task: it never runs
    assert facts["partly"].finished_s is None
    roots = gc_roots(m.state, list(facts.values()))
    assert {"la", "csrc"} <= roots and "oa" not in roots  # finished outputs: pins decide


def test_gc_roots_of_a_live_job_gone_from_the_state_meanwhile() -> None:
    """Facts read before the cycle awaited may name a live job the state no longer holds
    (cancelled and deleted meanwhile: session 25's soak logged a KeyError here, and the
    cycle failed): what they list is kept once more; the item results kept are those since
    the oldest live job the state still holds began (none: none kept for it)."""
    m = Mesh()
    m.submit("gone", [{"name": "a", **T}])
    m.submit("live", [{"name": "a", **T}])
    m.emit(EventType.CACHE_PUT, {"cache": {"k1": {"n": "r", "c": "citem"}}})
    facts = {f.job: f for f in job_facts(m.state, max_attempts=3)}
    m.emit(EventType.JOB_CANCELLED, {"job": "gone", "reason": "by a user"})
    m.emit(EventType.JOB_DELETED, {"job": "gone", "reason": "by a user"})
    assert "gone" not in m.state.jobs
    stale = job("gone", None, set(), needs={"cin"}, logs={"clog"})
    assert gc_roots(m.state, [stale]) == {"cin", "clog"}
    assert gc_roots(m.state, [stale, facts["live"]]) >= {"cin", "clog", "citem"}


def test_a_live_job_needs_the_cached_results_its_split_kept() -> None:
    m = Mesh()
    m.submit("live", [{"name": "a", **T}])
    m.emit(EventType.TASK_SPLIT, {"job": "live", "task": "a", "input": "cin", "chunks": [[]],
                                  "kept": {"k1": {"n": "r", "c": "ckept"}, "k2": None}})
    [live] = job_facts(m.state, max_attempts=3)
    assert {"cin", "ckept"} <= live.needs and "ckept" in gc_roots(m.state, [live])


def test_a_live_job_needs_the_cached_results_its_kept_listing_lists() -> None:
    """A split whose kept results are too many for its event lists them in a stored file:
    they are what the live job needs once that file is read (and unknown before)."""
    m = Mesh()
    m.submit("live", [{"name": "a", **T}])
    m.emit(EventType.TASK_SPLIT_REF, {"job": "live", "task": "a", "input": "cin",
                                      "listing": "clist", "sizes": [1],
                                      "kept_listing": "ckl"})
    kept = {"k1": {"n": "r", "c": "ckept"}, "k2": None}
    [live] = job_facts(m.state, 3, {"ckl": kept}.get)
    assert "ckept" in live.needs and "ckept" in gc_roots(m.state, [live])
    assert {"clist", "ckl"} <= live.needs  # the listings themselves
    [unread] = job_facts(m.state, 3)
    assert "ckept" not in unread.needs
    assert retention.kept_listings(m.state, "live") == ["ckl"]


def test_a_live_job_of_independent_tasks_is_known_live_without_every_tasks_status(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every peer's compaction pass asks whether each changed job has finished: a running job
    of 1,000 independent tasks is live as soon as one of them is neither done nor failed
    (issue 12), not after the status of every task; a finished one still gets its end."""
    m = Mesh()
    m.submit("j", [{"name": f"t{i}", **T} for i in range(200)])
    m.run("j", "t0", "o0")
    asked: list[str] = []
    real, real_failed = retention.task_status, retention.task_failed

    def status(state: MeshState, job: str, task: str, max_attempts: int,
               skip: Any = None) -> str:
        asked.append(task)
        return real(state, job, task, max_attempts, skip)

    def failed(state: MeshState, job: str, task: str, max_attempts: int,
               skip: Any = None) -> bool:
        asked.append(task)  # (its "failed?" only)
        return real_failed(state, job, task, max_attempts, skip)

    monkeypatch.setattr(retention, "task_status", status)
    monkeypatch.setattr(retention, "task_failed", failed)
    tasks = m.state.jobs["j"].payload["workflow"]["tasks"]
    assert retention.finished_at(m.state, "j", tasks, 3) is None
    assert len(asked) <= 2
    m.run("j", "t1", "", fail=True)  # a failed task does not make its job live
    asked.clear()
    assert retention.finished_at(m.state, "j", tasks, 3) is None
    assert asked[:2] == ["t1", "t2"] and len(asked) <= 3
    m2 = Mesh()
    m2.submit("k", [{"name": "a", **T}, {"name": "b", **T}])
    m2.run("k", "a", "oa")
    m2.run("k", "b", "", fail=True)
    k_tasks = m2.state.jobs["k"].payload["workflow"]["tasks"]
    assert retention.finished_at(m2.state, "k", k_tasks, 3) is not None


def test_a_running_tasks_partial_output_is_kept_while_its_job_is_live() -> None:
    m = Mesh()
    m.submit("j", [{"name": "a", **T}, {"name": "b", **T, "depends": ["a"]}])
    m.run("j", "a", "oa")
    m.emit(EventType.TASK_SPLIT_REF, {"job": "j", "task": "b", "input": "oa",
                                      "listing": "clist", "sizes": [1, 1]})
    m.emit(EventType.PARTIAL, {"job": "j", "task": "b", "output": "cpart", "items": 1, "of": 2})
    (live,) = job_facts(m.state, max_attempts=3)
    assert live.finished_s is None and {"oa", "cpart"} <= live.needs
    assert "cpart" in gc_roots(m.state, [live])


def test_a_deleted_job_is_forgotten_whatever_arrives_later() -> None:
    m = Mesh()
    m.submit("j", [{"name": "a", **T}])
    m.run("j", "a", "oa")
    m.emit(EventType.JOB_DELETED, {"job": "j", "reason": "test"})
    assert "j" not in m.state.jobs and ("j", "a") not in m.state.task_done
    assert not [k for k in m.state.chunks if k.job == "j"]
    assert m.state.outputs["k-j-a"] == "oa"  # the cache entry stays (while a peer holds it)
    late = Event("q", 1, 1, EventType.CHUNK_FAILED, {"job": "j", "task": "a", "chunk": 0,
                                                    "attempt": 0, "error": "", "kind": "lease"})
    m.state.apply(late)
    assert not [k for k in m.state.chunks if k.job == "j"]


def test_unprovide_drops_a_provider_and_a_later_provide_restores_it() -> None:
    m = Mesh()
    m.emit(EventType.PROVIDE, {"cids": ["x", "y"]})
    m.emit(EventType.UNPROVIDE, {"cids": ["x"]})
    assert "x" not in m.state.providers and m.state.providers["y"] == {"p"}
    m.emit(EventType.PROVIDE, {"cids": ["x"]})
    assert m.state.providers["x"] == {"p"}


# -- one janitor cycle over a real store --------------------------------------------------------
class Data:
    def is_complete(self, cid: str) -> bool:
        return True

    def mark(self, cid: str) -> None:
        pass

    async def ensure(self, cids: Any, hints: Any = ()) -> None:
        pass


def _janitor(m: Mesh, s: EmbeddedStore, retention: RetentionConfig) -> Janitor:
    cfg = JanitorConfig(retention, gc_interval_s=0, gc_grace_s=0)
    return Janitor(cfg, m.peer, m.state, s, m.emit, wall=lambda: NOW + 3600)


async def test_a_cycle_over_the_bound_unpins_collects_and_unprovides(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path / "store")
    out = s.add_bytes(b"an output" * 1000)
    s.pin(out)
    user = s.add_path(_file(tmp_path / "u.txt", b"mine"), pin=True)
    m = Mesh()
    m.submit("j", [{"name": "a", **T}])
    m.run("j", "a", out)
    planner = Planner(m.state, s, Data(), 1, 64)
    assert planner.cached_output("k-j-a") == out
    report = await _janitor(m, s, RetentionConfig(store_max_bytes=0)).cycle()
    assert report.unpinned == (out,) and report.gc.blocks == 1 and report.gc.bytes == 9000
    assert report.unprovided == 1 and s.pins() == [user]
    assert not s.has(out) and out not in m.state.providers
    assert planner.cached_output("k-j-a") is None  # a rerun recomputes instead of waiting


async def test_only_a_store_budget_reads_the_pins_dag_sizes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DAG walk per pin (most of a cycle's reads with many pins) is for the budget
    alone: a cycle with an age bound only does not size any pin; one with a budget sizes
    each, and unpins by those sizes."""
    s = EmbeddedStore(tmp_path / "store")
    out = s.add_bytes(b"an output" * 1000)
    s.pin(out)
    m = Mesh()
    m.submit("j", [{"name": "a", **T}])
    m.run("j", "a", out)
    sized: list[str] = []
    real = s.dag_size

    def dag_size(cid: str) -> int:
        sized.append(cid)
        return real(cid)

    monkeypatch.setattr(s, "dag_size", dag_size)
    report = await _janitor(m, s, RetentionConfig(keep_outputs_s=30 * DAY)).cycle()
    assert sized == [] and report.unpinned == () and s.pins() == [out]
    report = await _janitor(m, s, RetentionConfig(store_max_bytes=9000)).cycle()
    assert sized == [out] and report.unpinned == ()  # 9,000 bytes: within the budget
    report = await _janitor(m, s, RetentionConfig(store_max_bytes=8999)).cycle()
    assert report.unpinned == (out,)


async def test_a_job_that_takes_an_output_while_the_cycle_awaits_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job submitted (or a cached output taken) while the cycle reads the store in a
    thread is among the jobs its unpins and gc keep what they need for (they used the list
    made before the awaits)."""
    s = EmbeddedStore(tmp_path / "store")
    out = s.add_bytes(b"an old job's output" * 100)
    s.pin(out)
    m = Mesh()
    m.submit("old", [{"name": "a", **T}])
    m.run("old", "a", out)
    real = s.output_pins

    def meanwhile() -> Mapping[str, float]:  # (in the cycle's thread, as the loop would fold)
        m.submit("new", [{"name": "a", **T}, {"name": "b", **T, "depends": ["a"]}])
        m.run("new", "a", out)  # a cache hit: b, still to run, reads it
        return real()

    monkeypatch.setattr(s, "output_pins", meanwhile)
    report = await _janitor(m, s, RetentionConfig(store_max_bytes=0)).cycle()
    assert report.unpinned == () and s.has(out) and out in s.pins()


async def test_a_live_job_deleted_while_the_cycle_awaits_does_not_fail_the_cycle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A live job cancelled and deleted while the cycle reads the store in a thread (its
    facts, read before, still say live): the cycle goes on to its gc, and the facts go with
    the job (`_refreshed` kept them: what they listed was kept once more)."""
    s = EmbeddedStore(tmp_path / "store")
    needed = s.add_bytes(b"an input of the live job" * 100)
    m = Mesh()
    m.submit("j", [{"name": "src", "cid": needed}, {"name": "a", **T, "depends": ["src"]}])
    m.emit(EventType.TASK_DONE, {"job": "j", "task": "src", "output": needed, "key": None,
                                 "cached": True})
    real = s.output_pins

    def meanwhile() -> Mapping[str, float]:  # (in the cycle's thread, as the loop would fold)
        m.emit(EventType.JOB_CANCELLED, {"job": "j", "reason": "by a user"})
        m.emit(EventType.JOB_DELETED, {"job": "j", "reason": "by a user"})
        return real()

    monkeypatch.setattr(s, "output_pins", meanwhile)
    report = await _janitor(m, s, RetentionConfig(keep_outputs_s=DAY)).cycle()
    assert "j" not in m.state.jobs and report.gc.blocks == 1 and not s.has(needed)


async def test_without_bounds_a_cycle_keeps_outputs_and_deletes_nothing(tmp_path: Path,
                                                                        ) -> None:
    s = EmbeddedStore(tmp_path / "store")
    out = s.add_bytes(b"kept")
    s.pin(out)
    loose = s.add_bytes(b"garbage")
    m = Mesh()
    m.submit("j", [{"name": "a", **T}])
    m.run("j", "a", out)
    report = await _janitor(m, s, RetentionConfig()).cycle()
    assert report.unpinned == () and report.deleted_jobs == () and s.has(out)
    assert report.gc.removed == (loose,)


async def test_garbage_does_not_count_against_the_bound(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path / "store")
    out = s.add_bytes(b"o" * 1000)
    s.pin(out)
    s.add_bytes(b"g" * 5000)  # garbage: collected before the store is measured
    m = Mesh()
    m.submit("j", [{"name": "a", **T}])
    m.run("j", "a", out)
    report = await _janitor(m, s, RetentionConfig(store_max_bytes=2000)).cycle()
    assert report.unpinned == () and (report.gc.blocks, report.gc.bytes) == (1, 5000)
    assert s.has(out)


async def test_job_records_are_deleted_only_once_finished(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path / "store")
    m = Mesh()
    m.submit("live", [{"name": "a", **T}])
    m.submit("old", [{"name": "a", **T}])
    m.run("old", "a", s.add_bytes(b"x"))
    j = _janitor(m, s, RetentionConfig(keep_jobs_s=0))
    with pytest.raises(Conflict):
        j.delete_job("live")
    with pytest.raises(NotFound):
        j.delete_job("nope")
    report = await j.cycle()
    assert report.deleted_jobs == ("old",) and set(m.state.jobs) == {"live"}


async def test_a_running_jobs_unpinned_data_survives_gc(tmp_path: Path) -> None:
    s = EmbeddedStore(tmp_path / "store")
    m = Mesh()
    m.submit("j", [{"name": "a", **T}, {"name": "b", **T, "depends": ["a"]}])
    made = s.add_bytes(b"a's output, not pinned yet")
    m.run("j", "a", made)  # b is still to run: j is live and reads `made`
    stats = await _janitor(m, s, RetentionConfig(store_max_bytes=0)).collect()
    assert stats.blocks == 0 and s.has(made)


def test_the_start_sweep_removes_what_a_kill_left(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "peer"
    s = EmbeddedStore(data / "store")
    for d in ("upload-abc", "kubo-add-x", "work/banzai-exec-1/7"):
        (data / d).mkdir(parents=True)
        (data / d / "f").write_bytes(b"partial")
    (data / "store" / "staging" / "1-ab").mkdir(parents=True)
    (data / "events.sqlite").write_bytes(b"")  # not ours to touch
    with caplog.at_level("INFO", logger="banzai.janitor"):
        removed = sweep_stale(data, s)
    assert removed == {"upload dirs": 2, "work dirs": 1, "store staging": 1}
    assert sorted(p.name for p in data.iterdir()) == ["events.sqlite", "store", "work"]
    assert "upload-abc" in caplog.text and "work/banzai-exec-1" in caplog.text


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path



def test_lifecycle_settings_parse_and_refuse_negatives() -> None:
    from peer import config
    from peer.errors import ConfigError

    cfg = config.from_args(["--store-max-gb", "0.5", "--keep-outputs-days", "7",
                            "--keep-jobs-days", "30", "--gc-interval-s", "0"])[0]
    assert (cfg.store_max_gb, cfg.keep_outputs_days, cfg.keep_jobs_days) == (0.5, 7, 30)
    assert cfg.gc_interval_s == 0 and cfg.gc_grace_s == 300
    assert config.load({}, env={}).store_max_gb is None  # default: no bound
    with pytest.raises(ConfigError, match="store_max_gb"):
        config.load({}, env={"BANZAI_STORE_MAX_GB": "-1"})


def _kept_listing_job(m: Mesh, s: EmbeddedStore, listing: bytes) -> tuple[str, str]:
    """An old finished job whose output a live job's split keeps, listed in a stored file:
    (that output, the listing's CID)."""
    old = s.add_bytes(b"an old result" * 100)
    s.pin(old)
    m.submit("old", [{"name": "a", **T}])
    m.run("old", "a", old)
    m.submit("live", [{"name": "a", **T}, {"name": "b", **T}])
    cid = s.add_bytes(listing.replace(b"OLD", old.encode()))
    s.pin(cid)
    m.emit(EventType.TASK_SPLIT_REF, {"job": "live", "task": "a", "input": "cin",
                                      "listing": "clist", "sizes": [1], "kept_listing": cid})
    return old, cid


async def test_a_cycle_keeps_a_live_jobs_results_listed_in_its_kept_listing(tmp_path: Path,
                                                                            ) -> None:
    s = EmbeddedStore(tmp_path / "store")
    m = Mesh()
    old, _ = _kept_listing_job(m, s, b'{"k1": {"n": "r", "c": "OLD"}}')
    report = await _janitor(m, s, RetentionConfig(keep_outputs_s=0)).cycle()
    assert old not in report.unpinned and s.has(old)
    stats = await _janitor(m, s, RetentionConfig(keep_outputs_s=0)).collect()
    assert stats.blocks == 0 and s.has(old)


@pytest.mark.parametrize("listing", [b"[1, 2]", b"{not json", b"\xff\xfe", None,
                                     b"[" * 100_000 + b"]" * 100_000])
async def test_a_kept_listing_not_read_here_stops_unpinning_and_gc(
        tmp_path: Path, listing: bytes | None, caplog: pytest.LogCaptureFixture) -> None:
    """Not a JSON object, not JSON, not UTF-8, nested past the stack (a RecursionError out
    of the cycle before), or not here and not fetched: the results it
    lists are unknown, so a cycle unpins and collects nothing (and says why) and `repo gc`
    is refused; it goes on once the listing is read."""
    s = EmbeddedStore(tmp_path / "store")
    m = Mesh()
    old, cid = _kept_listing_job(m, s, listing or b"{}")
    if listing is None:
        s.unpin(cid)
        s.gc(set(), 0)
        assert not s.has(cid) and s.has(old)
    loose = s.add_bytes(b"garbage")
    j = _janitor(m, s, RetentionConfig(keep_outputs_s=0))
    fetched: list[str] = []

    async def fetch(cids: Any) -> None:
        fetched.extend(cids)
        raise NotFound("no live peer could provide it")

    j.fetch = fetch
    report = await j.cycle()
    assert report.unpinned == () and report.gc.blocks == 0 and s.has(old) and s.has(loose)
    assert cid in caplog.text and fetched == [cid] and report.held_back == (cid,)
    assert report.to_json()["held_back"] == [cid]
    with pytest.raises(Conflict, match=cid):
        await j.collect()
    m.emit(EventType.TASK_DONE, {"job": "live", "task": "a", "output": s.add_bytes(b"o"),
                                 "key": "k-live-a", "cached": False})  # its task is done
    report = await j.cycle()  # (the job is live: b runs; a's output holds what it kept)
    assert report.unpinned == (old,) and not s.has(old) and not s.has(loose)
    assert report.held_back == ()


def test_an_output_pin_that_the_mesh_no_longer_records_ages_from_when_it_was_written() -> None:
    """A pin of the inline pack (StoreFacts.outputs) whose job record and cache entry are
    gone is an output still, aged from when it was written, where an unknown pin is kept."""
    pins = {"old": 10, "new": 10, "unknown": 10}
    facts = StoreFacts(pins, frozenset(), 30, {"old": NOW - 8 * DAY, "new": NOW - 60})
    keep = RetentionConfig(keep_outputs_s=7 * DAY)
    assert plan_unpins([], facts, [], NOW, keep) == ["old"]  # aged from when pinned
    # Under the store's bound too, one pinned within UNNAMED_MIN_AGE_S stays (its job may
    # not be folded here yet), however full the store.
    assert plan_unpins([], facts, [], NOW, RetentionConfig(store_max_bytes=15)) == ["old"]
    assert plan_unpins([], facts, [], NOW + UNNAMED_MIN_AGE_S,
                       RetentionConfig(store_max_bytes=15)) == ["old", "new"]
    # One a job still names ages with that job, as any output.
    named = [job("j", NOW - 10 * DAY, {"new"})]
    assert plan_unpins(named, facts, [], NOW, keep) == ["new", "old"]
    explicit = StoreFacts({"old": 10}, frozenset({"old"}), 10, {"old": 0.0})
    assert plan_unpins([], explicit, [], NOW, RetentionConfig(keep_outputs_s=0)) == []


def test_a_finished_jobs_chunk_output_ages_from_the_jobs_end_not_its_pin() -> None:
    """A chunk output (a need of its job, not one of its outputs) that is a pin of the inline
    pack ages with its job, as before (it did from its pin, so a long job lost its chunks at
    its end)."""
    facts = StoreFacts({"chunk": 10}, frozenset(), 10, {"chunk": NOW - 30 * DAY})
    j = JobFacts("j", NOW - 60, frozenset(), frozenset({"chunk"}), frozenset())
    assert plan_unpins([j], facts, [], NOW, RetentionConfig(keep_outputs_s=DAY)) == []


@pytest.mark.parametrize("listing", [b"{not json", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000])
def test_a_split_listing_that_is_not_json_is_an_error_naming_it(tmp_path: Path,
                                                                listing: bytes) -> None:
    """A split by reference names a listing (the chunks) by a CID its member chose: bytes
    that are not JSON within the nesting bound are a BanzaiError naming the listing (the
    scheduler fails the task with that message), not a bare ValueError or RecursionError
    (an "internal error" and a traceback in the log before)."""
    from peer.errors import BanzaiError

    s = EmbeddedStore(tmp_path / "store")
    m = Mesh()
    m.submit("live", [{"name": "a", **T}])
    cid = s.add_bytes(listing)
    split = m.emit(EventType.TASK_SPLIT_REF, {"job": "live", "task": "a", "input": "cin",
                                              "listing": cid, "sizes": [1]})
    shown = {b"{": ": invalid JSON", b"\xff": " is not UTF-8 text", b"[": " is nested too"}
    with pytest.raises(BanzaiError, match=f"a: the split listing {cid}{shown[listing[:1]]}"):
        Planner(m.state, s, Data(), 1, 64).chunks(split)


async def test_a_cycle_held_back_after_its_budget_gc_reports_and_unprovides_what_that_freed(
        tmp_path: Path) -> None:
    """With a store budget a cycle collects garbage first (to measure the store), unpins,
    then collects again. A second gc held back (a pinned DAG's linking block unreadable
    meanwhile) lost the first one's stats: the report said nothing freed, and what it freed
    stayed announced as provided here (session 47, helper h's open case)."""
    s = EmbeddedStore(tmp_path / "store")
    out = s.add_bytes(b"an output" * 1000)
    s.pin(out)
    loose = s.add_bytes(b"g" * 5000)
    upload = s.add_bytes(b"".join(bytes([i]) * (256 * 1024) for i in range(3)))
    s.pin(upload)
    m = Mesh()
    m.submit("j", [{"name": "a", **T}])
    m.run("j", "a", out)
    m.emit(EventType.PROVIDE, {"cids": [loose]})
    janitor = _janitor(m, s, RetentionConfig(store_max_bytes=0))  # (`upload`: explicit)

    async def damage(unpinned: Any) -> None:  # (between the two gcs)
        s.blocks.path(parse_cid(upload).key).unlink()

    janitor.on_unpinned.append(damage)
    report = await janitor.cycle()
    assert report.unpinned == (out,) and len(report.held_back) == 1
    assert (report.gc.blocks, report.gc.bytes, report.gc.removed) == (1, 5000, (loose,))
    assert report.unprovided == 1 and loose not in m.state.providers
    assert s.has(out)  # (unpinned, not collected: the second gc was held back)

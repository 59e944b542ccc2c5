"""Splits by values (issue 12): a task without input whose call declares a `split_arg`
(FETCH_FESTVOX's `urls`) and has several values of it is marked by the peer it is submitted
to (`"split": "args"`, the workflow `"splits": "args"`, while every live peer announces
ARGSPLITS_FEATURE); the fold makes no implicit split for it, a peer splits it into one chunk
per value, each chunk runs the task on its value alone and the task's output merges theirs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from peer.errors import BanzaiError, SpecError
from peer.ipfs.store import StoreConfig
from peer.jobs import scheduler
from peer.jobs.planner import chunk_params, merged_outputs, value_chunks
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import PREVIOUS_TOP_KEYS, JobMesh
from peer.jobs.spec import from_obj, with_splits, workflow_from_json
from peer.log import ARG_SPLITS, IMPLICIT_SPLITS, Event, EventType, fold
from peer.rendezvous import rendezvous
from tasks import registry
from tasks.registry import Arg

CATALOG = registry.load(("tests.fixture_tasks",))
FETCH = CATALOG["FETCH_FESTVOX"]
URLS = [f"http://127.0.0.1:8765/cmu_us_{s}_arctic-0.90-release.zip" for s in ("awb", "bdl",
                                                                              "clb")]
ORIGIN = "origin00000000000000"


def _pipeline(urls: list[str]) -> Any:
    return {"name": "x", "tasks": [
        {"name": "fetch", "call": "FETCH_FESTVOX", "args": urls},
        {"name": "echo", "call": "ECHO", "args": ["hi"]},
        {"name": "longer", "call": "FILTER_LONGER", "args": [5], "depends": ["fetch"]}]}


def _stored(urls: list[str] = URLS, by_args: bool = True) -> dict[str, Any]:
    return with_splits(from_obj(_pipeline(urls), CATALOG), CATALOG, True, by_args).to_json()


# -- the chunks ----------------------------------------------------------------------------
def test_one_chunk_per_value_naming_its_index() -> None:
    params = {"urls": URLS}
    chunks = value_chunks(FETCH, params)
    assert chunks == [[["urls[0]", "0"]], [["urls[1]", "1"]], [["urls[2]", "2"]]]
    assert chunk_params(FETCH, params, chunks[1]) == {"urls": [URLS[1]]}
    assert chunk_params(FETCH, params, [*chunks[2], *chunks[0]]) == {"urls": [URLS[2], URLS[0]]}


@pytest.mark.parametrize("index", ["3", "-1", "x", "", "\u00b2", "\u0662", "02", "1 "])
def test_a_chunk_naming_no_value_is_refused(index: str) -> None:
    with pytest.raises(BanzaiError, match=f"names value {index!r} of urls, which holds 3"):
        chunk_params(FETCH, {"urls": URLS}, [["urls[?]", index]])


def test_a_chunk_naming_no_value_at_all_is_refused() -> None:
    with pytest.raises(BanzaiError, match="a chunk of a split by urls names no value of it"):
        chunk_params(FETCH, {"urls": URLS}, [])


def test_the_merge_keeps_every_chunks_files() -> None:
    a = [("awb/a.wav", "c1"), ("awb/prompts.json", "c2")]
    b = [("bdl/b.wav", "c3"), ("bdl/prompts.json", "c4")]
    assert merged_outputs("fetch", [a, b]) == {**dict(a), **dict(b)}


def test_two_chunks_making_one_top_level_name_fail_the_merge() -> None:
    a = [("awb/a.wav", "c1")]
    b = [("bdl/b.wav", "c3"), ("awb/prompts.json", "c4")]
    with pytest.raises(BanzaiError, match="fetch: chunks 0 and 1 both made 'awb'"):
        merged_outputs("fetch", [a, b])


# -- the submitter's marks -----------------------------------------------------------------
def test_a_task_of_several_values_is_marked_while_every_peer_splits_by_values() -> None:
    doc = _stored()
    assert doc["splits"] == ARG_SPLITS
    tasks = {t["name"]: t for t in doc["tasks"]}
    assert tasks["fetch"]["split"] == "args"
    assert "split" not in tasks["echo"] and "split" not in tasks["longer"]
    wf = workflow_from_json(doc)
    assert wf.task("fetch").split_args and not wf.task("echo").split_args
    assert wf.newer == {} and all(t.newer == () for t in wf.tasks)
    assert workflow_from_json(wf.to_json()) == wf


def test_no_mark_for_one_value_nor_without_the_feature() -> None:
    for doc in (_stored(URLS[:1]), _stored(by_args=False)):
        assert doc["splits"] == IMPLICIT_SPLITS
        assert not any("split" in t for t in doc["tasks"])
    wf = with_splits(from_obj(_pipeline(URLS), CATALOG), CATALOG, False, True)
    assert wf.splits is None and not any(t.split_args for t in wf.tasks)


def test_a_user_may_not_mark_a_task() -> None:
    pipe = _pipeline(URLS)
    pipe["tasks"][0]["split"] = "args"
    with pytest.raises(SpecError) as e:
        from_obj(pipe, CATALOG)
    assert e.value.field == "tasks[0].split"


def test_another_split_value_is_a_newer_peers() -> None:
    doc = _stored()
    doc["tasks"][0]["split"] = "ranges"
    wf = workflow_from_json(doc)
    assert wf.task("fetch").newer == ("split",) and not wf.task("fetch").split_args
    assert wf.task("echo").newer == ()


def test_a_mark_counts_only_in_a_workflow_split_by_values() -> None:
    doc = {**_stored(), "splits": IMPLICIT_SPLITS}  # (the fold splits it implicitly then)
    assert not workflow_from_json(doc).task("fetch").split_args


def test_a_previous_release_reads_the_job_as_a_newer_peers() -> None:
    wf = workflow_from_json(_stored(), known=PREVIOUS_TOP_KEYS)
    assert wf.newer == {"splits": ARG_SPLITS}
    assert all(t.newer[:1] == ("workflow.splits",) for t in wf.tasks)


# -- the fold ------------------------------------------------------------------------------
def test_the_fold_makes_no_implicit_split_for_a_marked_task() -> None:
    job = Event(ORIGIN, 1, 100, EventType.JOB_SUBMITTED, {"job": "j", "workflow": _stored()})
    assert set(fold([job]).splits) == {("j", "echo")}  # not fetch (marked), not longer
    unmarked = Event(ORIGIN, 1, 100, EventType.JOB_SUBMITTED,
                     {"job": "j", "workflow": _stored(by_args=False)})
    assert set(fold([unmarked]).splits) == {("j", "fetch"), ("j", "echo")}


# -- the catalog ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    {"split_arg": "n", "args": [Arg("n", "int")]},  # not variadic
    {"split_arg": "xs", "args": [Arg("xs", "int", variadic=True)], "needs_input": True},
    {"split_arg": "xs", "args": [Arg("xs", "int", variadic=True)], "per_item": True},
    {"split_arg": "ys", "args": [Arg("xs", "int", variadic=True)]},
])
def test_split_arg_names_the_variadic_arg_of_a_whole_task_without_input(kw: Any) -> None:
    kw = {"needs_input": False, **kw}
    with pytest.raises(ValueError, match="split_arg must name the variadic last argument"):
        registry.task("T_BAD_SPLIT", **kw)(lambda ctx, inp, out, **p: None)


def test_fetch_festvox_splits_by_its_urls() -> None:
    assert FETCH.split_arg == "urls" and not FETCH.per_item and not FETCH.needs_input


# -- the likely assembler's prefetch -------------------------------------------------------
def _fetch_mesh(peers: int) -> JobMesh:
    """A simulated mesh of `peers` holding job j1: a FETCH_FESTVOX of URLS marked to split by
    its values (submitted at p0)."""
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05)
    m = JobMesh(peers, CATALOG, cfg)
    wf = with_splits(from_obj({"name": "x", "tasks": [
        {"name": "fetch", "call": "FETCH_FESTVOX", "args": URLS}]}, CATALOG), CATALOG, True, True)
    m.emit("p0", EventType.JOB_SUBMITTED, {"job": "j1", "workflow": wf.to_json()})
    return m


async def test_a_prefetch_that_failed_is_tried_again_only_when_another_chunk_is_done() -> None:
    """(Review r, session 40.) A chunk's output whose only holder lost it before the likely
    assembler fetched it: each failed prefetch's end woke the scheduler, whose next step
    started the same fetch again, a loop with no event in between (50 fetches in 50 steps).
    The prefetch starts once per chunk done (or reopened): steps alone start none."""
    m = _fetch_mesh(3)
    try:
        await m.settle()
        await m.advance(0.3)
        await m.advance(0.3)
        where = {k: pid for pid, p in m.peers.items() for k in p.runner.running}
        k0, k1 = "j1/fetch/0/0", "j1/fetch/1/0"
        p0, p1 = where[k0], where[k1]
        assert p0 != p1
        calls = {pid: 0 for pid in m.peers}
        for pid, p in m.peers.items():
            def counting(cids: Any, hints: Any = (), _o: Any = p.data.ensure,
                         _pid: str = pid) -> Any:
                calls[_pid] += 1
                return _o(cids, hints)
            p.data.ensure = counting  # type: ignore[method-assign]
        st = m[p0].store
        m[p0].runner.finish(k0, {"output": st.make_dir({"awb": st.make_dir(
            {"a.wav": st.add_bytes(b"a")})})})
        await m.settle()
        st1 = m[p1].store
        out1 = st1.make_dir({"bdl": st1.make_dir({"b.wav": st1.add_bytes(b"b")})})
        m[p1].runner.finish(k1, {"output": out1})
        del m.content.dirs[out1]  # (its only holder lost it before anyone fetched it)
        for p in m.peers.values():
            p.store.local.discard(out1)
        await m.settle()
        before = dict(calls)
        for _ in range(50):  # steps, no event
            for p in m.peers.values():
                p.sched.step()
            await asyncio.sleep(0)
        assert {k: calls[k] - before[k] for k in calls} == {pid: 0 for pid in m.peers}
    finally:
        await m.close()


async def test_a_split_not_naming_each_value_once_is_not_assembled(
        caplog: pytest.LogCaptureFixture) -> None:
    """(Review r, session 40.) A split that names some values only (forged, or made by a peer
    whose call splits otherwise) was assembled as the merge of its chunks and recorded
    under the whole task's cache key: an incomplete output for every later job of the same
    URLs. It is not assembled: no TASK_DONE, the assembly's failure logged naming why (as
    any assembly failure: `Scheduler._fail_task` once every chunk is done)."""
    m = _fetch_mesh(1)
    try:
        m.emit("p0", EventType.TASK_SPLIT, {"job": "j1", "task": "fetch", "input": None,
                                            "chunks": [[["urls[0]", "0"]]]})
        await m.settle()
        await m.advance(0.3)
        st = m["p0"].store
        m["p0"].runner.finish("j1/fetch/0/0", {"output": st.make_dir({"awb": st.make_dir(
            {"a.wav": st.add_bytes(b"a")})})})
        await m.settle()
        await m.advance(0.3)
        assert m.events(EventType.CHUNK_DONE, task="fetch")
        assert not m.events(EventType.TASK_DONE, task="fetch")
        assert any("its split does not name each value of urls once" in r.getMessage()
                   for r in caplog.records)
    finally:
        await m.close()


# -- a peer of the release before (a95f359) -------------------------------------------------
async def test_no_turn_waits_for_a_peer_that_runs_none_of_the_job() -> None:
    """(Review r, session 40, finding 6.) A peer announcing splits-v1 but not argsplits-v1,
    live again after the job was submitted, reads its `"splits": "args"` as a newer peer's
    and runs none of it: it was ranked all the same (here first for the implicit task and
    the marked task's split, and for claims of its chunks), and the others waited a turn
    for it each time. Ranked for nothing now: the implicit task and the split at once, the
    chunks the splitter has no slot for after one stagger (heartbeats said it was free)."""
    peers = ["p0", "p1", "p2"]
    job = next(j for j in (f"j{i}" for i in range(1000))
               if all(rendezvous(f"{j}/{t}", peers)[0] == "p2" for t in ("echo", "fetch")))
    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05)
    m = JobMesh(3, CATALOG, cfg, slots=2, valueless={"p2"})
    try:
        m.emit("p0", EventType.JOB_SUBMITTED, {"job": job, "workflow": _stored()})
        await m.settle()
        assert [e.origin for e in m.events(EventType.TASK_SPLIT, task="fetch")] == ["p1"]
        assert m["p1"].runner.running == [f"{job}/echo/0/0", f"{job}/fetch/0/0"]
        await m.advance(cfg.stagger_s)
        assert m["p0"].runner.running == [f"{job}/fetch/1/0", f"{job}/fetch/2/0"]
        assert m["p2"].runner.started == []
    finally:
        await m.close()


LANES_CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05,
                            spread_s=1.0)


def _lanes_job(m: JobMesh, at: str, members: list[str]) -> str:
    """A lanes job of the stored "args" workflow, submitted at `at` naming `members`."""
    job = f"j{999:012x}"
    m.emit(at, EventType.JOB_SUBMITTED, {"job": job, "workflow": _stored(),
                                         "members": members})
    return job


async def test_a_lanes_job_whose_only_live_member_runs_none_of_it_is_taken_over() -> None:
    """(Review c, session 42, C5.) Of a lanes "args" job whose members are p0 and a peer
    that runs none of it (p2: splits-v1 without argsplits-v1), p0 is gone: p2 was counted a
    live member, so the job looked held, nobody took it over while p2 lived and it stalled.
    p1 takes it over after lease_s now, runs it and ends it (its home: the first live member
    that runs it, not p2, the first in its members' order); p2 still runs none of it."""
    m = JobMesh(3, CATALOG, LANES_CFG, slots=2, lanes=True, valueless={"2" * 20})
    p0, p1, p2 = m.peers
    try:
        job = _lanes_job(m, p0, [p0, p2])
        await m.settle()
        assert m[p0].runner.started  # running on its member that runs it
        m.silent.add(p0)
        for _ in range(int(LANES_CFG.lease_s) + 5):
            await m.advance(1.0)
        [joined] = m.sent(EventType.JOB_MEMBERS, job=job)
        assert (joined.origin, joined.payload["add"]) == (p1, [p1])
        st = m[p1].store
        for _ in range(20):
            for key in m[p1].runner.running:  # (a fetch chunk makes a directory of its own)
                m[p1].runner.finish(key, {"output": st.make_dir({key.replace("/", "_"): (
                    st.make_dir({"a.txt": st.add_bytes(key.encode())}))})}
                                    if "/fetch/" in key else None)
            await m.advance(1.0)
        ended = [(e.origin, e.payload["state"]) for e in m.sent(EventType.JOB_ENDED, job=job)]
        assert (p1, "done") in ended  # by its home now (the sim's p2 ends it too, as its home)
        assert m[p2].runner.started == []
    finally:
        await m.close()


async def test_two_homes_of_a_lanes_job_end_it_twice_and_every_peer_keeps_one_end() -> None:
    """(Review i, session 42, R1.) Of a lanes "args" job
    whose members are p0 and p2 (splits-v1 without argsplits-v1: it runs none of it), p0 is
    gone and p1 took the job over. Two peers are its home then: p1 by this release's count
    (the first live member that runs the job) and p2 by its own (the first live member).
    Both emit a JOB_ENDED, of the same payload (made from the same lane events); every peer,
    p0 back too, keeps the same one (p2's: a peer its JOB_SUBMITTED names ranks first,
    review r1 of session 45, H2 (b)), and nothing else is doubled: each task done once,
    no member added but p1, p2 still running nothing. The cost is one
    extra JOB_ENDED."""
    m = JobMesh(3, CATALOG, LANES_CFG, slots=2, lanes=True, valueless={"2" * 20})
    p0, p1, p2 = m.peers
    try:
        job = _lanes_job(m, p0, [p0, p2])
        await m.settle()
        m.silent.add(p0)
        for _ in range(int(LANES_CFG.lease_s) + 5):
            await m.advance(1.0)
        st = m[p1].store
        for _ in range(20):
            for key in m[p1].runner.running:
                m[p1].runner.finish(key, {"output": st.make_dir({key.replace("/", "_"): (
                    st.make_dir({"a.txt": st.add_bytes(key.encode())}))})}
                                    if "/fetch/" in key else None)
            await m.advance(1.0)
        ends = m.sent(EventType.JOB_ENDED, job=job)
        assert sorted(e.origin for e in ends) == [p1, p2]
        same = [{k: v for k, v in e.payload.items() if k != "producers"} for e in ends]
        assert same[0] == same[1] and same[0]["state"] == "done"
        m.heal()
        await m.advance(1.0)
        first = next(e for e in ends if e.origin == p2)  # a submission member's end ranks
        assert all(m[p].state.ended[job].id == first.id for p in m.peers)  # first (r1 H2 b)
        assert len({str(sorted(m[p].state.outputs.items())) for p in m.peers}) == 1
        runs = [(e.payload["task"], e.payload["chunk"]) for e in m.sent(EventType.CHUNK_DONE,
                                                                         job=job)]
        assert len(runs) == len(set(runs)) == 4  # (echo, and a fetch chunk per URL)
        assert [(e.origin, e.payload["add"]) for e in m.sent(EventType.JOB_MEMBERS)] == [
            (p1, [p1])]
        assert m[p2].runner.started == []
    finally:
        await m.close()


async def test_a_lanes_job_spreads_only_to_peers_that_run_it() -> None:
    """(Review c, session 42, C5.) Scale-out added the next live peers that run the job's
    calls, p2 among them although it runs none of an "args" job (splits-v1 without
    argsplits-v1): a member whose slots counted as the members' and ran nothing. Only p1
    is added now."""
    m = JobMesh(3, CATALOG, LANES_CFG, slots=1, lanes=True, valueless={"2" * 20})
    p0, p1, p2 = m.peers
    try:
        job = _lanes_job(m, p0, [p0])
        await m.settle()
        for _ in range(30):  # runs of 5 s each: more open work than spread_s per slot
            if m.sent(EventType.JOB_MEMBERS):
                break
            for key in m[p0].runner.running:
                m[p0].runner.finish(key, duration_s=5.0)
            await m.advance(1.0)
        [added] = m.sent(EventType.JOB_MEMBERS, job=job)
        assert (added.origin, added.payload["add"]) == (p0, [p1])
        assert m[p2].runner.started == []
    finally:
        await m.close()


async def test_implicit_ranks_of_jobs_of_both_split_kinds_are_remembered_apart(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(Review c, session 42, C3.) With p2 live (splits-v1 without argsplits-v1), a task of
    an "args" job is ranked among p0 and p1, one of an implicit job among all three: the
    memo of the ranks was of one peer set and started afresh at each look at the other
    kind's task, hashing the task again every time (20 looks, 20 rankings). None now."""
    m = JobMesh(3, CATALOG, SchedulerConfig(store=StoreConfig("/nonexistent")), slots=2,
                valueless={"p2"})
    try:
        m.emit("p0", EventType.JOB_SUBMITTED, {"job": "ja", "workflow": _stored()})
        ji = m.submit("p0", [{"name": "e", "call": "ECHO", "args": ["hi"]}], implicit=True)
        await m.settle()
        s = m["p0"].sched
        ranked = [s._implicit_rank("ja", "echo", "ECHO"), s._implicit_rank(ji, "e", "ECHO")]
        assert [sorted(r) for r in ranked] == [["p0", "p1"], ["p0", "p1", "p2"]]
        hashed: list[str] = []
        monkeypatch.setattr(scheduler, "rendezvous",
                            lambda unit, peers: hashed.append(unit) or rendezvous(unit, peers))
        for _ in range(10):
            assert s._implicit_rank("ja", "echo", "ECHO") == ranked[0]
            assert s._implicit_rank(ji, "e", "ECHO") == ranked[1]
        assert hashed == []
        assert sorted(map(sorted, s._ranks)) == [["p0", "p1"], ["p0", "p1", "p2"]]  # (a set
        # once, not in each task's key: review i, I1)
    finally:
        await m.close()

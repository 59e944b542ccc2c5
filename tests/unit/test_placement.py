"""Placement by capabilities (peer/jobs/placement.py): the `requires` of a task checked in
workflows, met or not by a peer's announced capabilities, and the scheduler placing by it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.errors import SpecError
from peer.jobs.placement import no_peer_reason, parse_requires, suited, unmet
from peer.jobs.spec import from_obj, workflow_from_json
from peer.log import EventType
from tasks import registry

CATALOG = registry.load(("tests.fixture_tasks",))

names = st.text("abcxyz_.-019", min_size=1, max_size=8)
requirements = st.fixed_dictionaries({}, optional={
    "kind": st.sampled_from(["python", "shell", "container"]),
    "mem_mb": st.integers(1, 10_000), "cores": st.integers(1, 64), "gpu": st.booleans(),
    "calls": st.lists(st.sampled_from(["A", "B", "C"]), max_size=3),
    "labels": st.dictionaries(names, names, max_size=3)})
capabilities = st.fixed_dictionaries({
    "kinds": st.lists(st.sampled_from(["python", "shell", "container"]), min_size=1),
    "mem_mb": st.integers(0, 10_000), "cores": st.integers(0, 64), "gpu": st.booleans(),
    "calls": st.lists(st.sampled_from(["A", "B", "C"])),
    "labels": st.dictionaries(names, names, max_size=3)})


def exactly(req: dict[str, Any]) -> dict[str, Any]:
    """The least capabilities that meet `req`."""
    return {"kinds": [req.get("kind", "python")], "mem_mb": req.get("mem_mb", 0),
            "cores": req.get("cores", 0), "gpu": req.get("gpu", False),
            "calls": list(req.get("calls", [])), "labels": dict(req.get("labels", {}))}


def grown(caps: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """`caps` with more of everything (`more`'s additions; labels it adds are new names)."""
    return {"kinds": [*caps["kinds"], *more["kinds"]], "mem_mb": caps["mem_mb"] + more["mem_mb"],
            "cores": caps["cores"] + more["cores"], "gpu": caps["gpu"] or more["gpu"],
            "calls": [*caps["calls"], *more["calls"]],
            "labels": {**{f"new{k}": v for k, v in more["labels"].items()}, **caps["labels"]}}


@given(requirements)
def test_parsing_is_idempotent_and_canonical(req: dict[str, Any]) -> None:
    once = parse_requires(req, "r")
    assert parse_requires(once, "r") == once
    assert list(once) == sorted(once)


@given(requirements, capabilities)
def test_the_least_capabilities_meet_a_requirement_and_more_still_do(
        req: dict[str, Any], more: dict[str, Any]) -> None:
    r = parse_requires(req, "r")
    assert unmet(r, exactly(r)) is None
    assert unmet(r, grown(exactly(r), more)) is None


@given(requirements, capabilities)
def test_unmet_names_a_requirement_iff_some_part_is_short(req: dict[str, Any],
                                                         caps: dict[str, Any]) -> None:
    r = parse_requires(req, "r")
    short = (("kind" in r and r["kind"] not in caps["kinds"])
             or r.get("mem_mb", 0) > caps["mem_mb"] or r.get("cores", 0) > caps["cores"]
             or (r.get("gpu", False) and not caps["gpu"])
             or any(c not in caps["calls"] for c in r.get("calls", []))
             or any(caps["labels"].get(k) != v for k, v in r.get("labels", {}).items()))
    assert (unmet(r, caps) is not None) == short
    assert suited(r, ["a"], {"a": caps}) == ([] if short else ["a"])


def test_nothing_required_is_met_by_anyone_even_unknown() -> None:
    assert unmet({}, None) is None
    assert unmet({"cores": 1}, None) == "its capabilities are not known yet"


def test_a_peer_announcing_no_kinds_runs_python_only() -> None:
    caps = {"mem_mb": 1, "cores": 1, "gpu": False, "calls": []}  # a MEMBER of an older peer
    assert unmet({"kind": "python"}, caps) is None
    assert unmet({"kind": "shell"}, caps) == "kind 'shell' (it runs python)"


def test_the_reason_names_each_peer_and_what_it_lacks() -> None:
    members = {"p1": {"name": "alpha", "mem_mb": 100, "kinds": ["python"]},
               "p2": {"name": "beta", "mem_mb": 4000, "labels": {"site": "a"}}}
    why = no_peer_reason({"mem_mb": 2000, "labels": {"site": "b"}}, ["p2", "p1"], members,
                         {"p1": "alpha", "p2": "beta"})
    assert why == ("waiting for a live peer that meets its requires: alpha lacks 2000 MiB of "
                   "memory (it has 100); beta lacks label site=b (it has site=a)")


@pytest.mark.parametrize(("requires", "field", "words"), [
    ([1], "tasks[0].requires", "must be an object"),
    ({"ram": 1}, "tasks[0].requires.ram", "unknown requirement 'ram'"),
    ({"mem_mb": "2G"}, "tasks[0].requires.mem_mb", "positive integer"),
    ({"mem_mb": 0}, "tasks[0].requires.mem_mb", "positive integer"),
    ({"cores": True}, "tasks[0].requires.cores", "positive integer"),
    ({"gpu": "yes"}, "tasks[0].requires.gpu", "true or false"),
    ({"kind": 3}, "tasks[0].requires.kind", "kind name"),
    ({"calls": "ECHO"}, "tasks[0].requires.calls", "list"),
    ({"calls": [3]}, "tasks[0].requires.calls[0]", "task name"),
    ({"labels": ["a"]}, "tasks[0].requires.labels", "object"),
    ({"labels": {"a b": "x"}}, "tasks[0].requires.labels.a b", "label name"),
    ({"labels": {"a": 1}}, "tasks[0].requires.labels.a", "label value"),
])
def test_a_bad_requires_is_refused_naming_its_field(requires: Any, field: str,
                                                    words: str) -> None:
    with pytest.raises(SpecError) as e:
        from_obj([{"call": "T_WRITE", "args": [1], "requires": requires}], CATALOG)
    assert e.value.field == field
    assert e.value.message.startswith(field) and words in e.value.message


def test_requires_round_trips_and_is_absent_when_empty() -> None:
    wf = from_obj({"tasks": [
        {"name": "w", "call": "T_WRITE", "args": [1],
         "requires": {"mem_mb": 5, "gpu": False, "labels": {"site": "b"}}},
        {"name": "u", "call": "T_UPPER", "depends": ["w"], "requires": {}}]}, CATALOG)
    doc = wf.to_json()
    assert doc["tasks"][0]["requires"] == {"labels": {"site": "b"}, "mem_mb": 5}
    assert "requires" not in doc["tasks"][1]  # the stored form of older workflows
    assert workflow_from_json(doc) == wf
    with pytest.raises(SpecError, match="a cid source takes no requires"):
        from_obj([{"cid": "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q",
                   "requires": {}}, {"call": "T_UPPER"}], CATALOG)


# -- the scheduler places by it (sim: in-memory mesh, fake clock) ------------------------------
async def test_only_a_peer_meeting_the_requires_claims_and_none_waits_visibly() -> None:
    from peer.ipfs.store import StoreConfig
    from peer.jobs.ports import SchedulerConfig
    from peer.jobs.sim import JobMesh

    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), stagger_s=0.05)
    mesh = JobMesh(2, CATALOG, cfg, auto=True)  # runs finish at once
    try:
        for pid, labels in (("p0", {}), ("p1", {"site": "b"})):
            mesh.emit(pid, EventType.MEMBER, {"name": pid, "http": "", "calls": sorted(CATALOG),
                                              "slots": 1, "cores": 2, "mem_mb": 1000,
                                              "gpu": False, "labels": labels})
        job = mesh.submit("p0", [{"name": "w", "call": "T_WRITE", "params": {"files": 1},
                                  "requires": {"labels": {"site": "b"}}}])
        await mesh.advance(1.0)
        assert [e.origin for e in mesh.events(EventType.CLAIM, job=job)] == ["p1"]
        assert mesh["p0"].sched.waiting() == {}  # p1 can: no reason to show

        job2 = mesh.submit("p0", [{"name": "w", "call": "T_WRITE", "params": {"files": 2},
                                   "requires": {"mem_mb": 4000}}])
        await mesh.advance(1.0)
        assert mesh.events(EventType.CLAIM, job=job2) == []
        for pid in ("p0", "p1"):
            why = mesh[pid].sched.waiting()[(job2, "w")]
            assert why.startswith("waiting for a live peer that meets its requires")
            assert "p0 lacks 4000 MiB of memory (it has 1000)" in why

        # a peer with more memory announces itself: it claims, and the reason goes
        mesh.emit("p1", EventType.MEMBER, {"name": "p1", "http": "", "calls": sorted(CATALOG),
                                           "slots": 1, "cores": 2, "mem_mb": 8000,
                                           "gpu": False})
        await mesh.advance(1.0)
        assert [e.origin for e in mesh.events(EventType.CLAIM, job=job2)] == ["p1"]
        assert (job2, "w") not in mesh["p0"].sched.waiting()
    finally:
        await mesh.close()


async def test_chunks_are_sized_for_the_slots_of_the_peers_meeting_the_requires() -> None:
    """Three peers of one slot each, one of them labelled: a per-item task that only the
    labelled peer may run is split into chunks for its one slot, not for all three."""
    from peer.ipfs.store import StoreConfig
    from peer.jobs.ports import SchedulerConfig
    from peer.jobs.sim import JobMesh

    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), min_chunk_items=1,
                          max_chunk_items=6)
    mesh = JobMesh(3, CATALOG, cfg, auto=True)
    try:
        for pid in ("p0", "p1", "p2"):
            mesh.emit(pid, EventType.MEMBER, {
                "name": pid, "http": "", "calls": sorted(CATALOG), "slots": 1, "cores": 2,
                "mem_mb": 1000, "gpu": False, "labels": {"site": "b"} if pid == "p2" else {}})
        steps = [{"name": "w", "call": "T_WRITE", "params": {"files": 6}},
                 {"name": "u", "call": "T_UPPER", "depends": ["w"]}]
        free = mesh.submit("p0", steps)
        placed = mesh.submit("p0", [steps[0], {**steps[1], "requires": {"labels": {"site": "b"}}}])
        await mesh.advance(3.0)

        def chunks(job: str) -> int:
            (split,) = mesh.events(EventType.TASK_SPLIT, "p0", job=job, task="u")
            return len(split.payload["chunks"])
        assert chunks(free) == 3  # one per slot of the mesh
        assert chunks(placed) == 1  # one slot meets the requires
        assert {e.origin for e in mesh.events(EventType.CLAIM, job=placed)
                if e.payload.get("task") == "u"} <= {"p2"}
    finally:
        await mesh.close()


# -- progressive answers: PARTIAL events of a per-item task ----------------------------------
async def _run_items(partials: bool) -> tuple[list[dict[str, Any]], str]:
    """A per-item task of 6 items in 3 chunks on 2 peers, its runs finished one by one: the
    PARTIAL payloads p0 saw and the task's output."""
    from peer.ipfs.store import StoreConfig
    from peer.jobs.ports import SchedulerConfig
    from peer.jobs.sim import JobMesh

    cfg = SchedulerConfig(store=StoreConfig("/nonexistent"), min_chunk_items=1,
                          max_chunk_items=2, partial_outputs=partials)
    mesh = JobMesh(2, CATALOG, cfg)
    try:
        job = mesh.submit("p0", [{"name": "w", "call": "T_WRITE", "params": {"files": 6}},
                                 {"name": "u", "call": "T_UPPER", "depends": ["w"]}])
        await mesh.advance(1.0)
        for _ in range(20):
            running = sorted(k for p in mesh.peers.values() for k in p.runner.running)
            if not running:
                break
            owner = next(p for p in mesh.peers.values() if running[0] in p.runner.running)
            owner.runner.finish(running[0])
            await mesh.advance(1.0)
        done = mesh.events(EventType.TASK_DONE, job=job, task="u")
        assert len(done) == 1
        seen = mesh.events(EventType.PARTIAL, "p0", job=job, task="u")
        return [e.payload for e in seen], done[0].payload["output"]
    finally:
        await mesh.close()


async def test_a_per_item_task_publishes_its_output_as_it_grows_and_ends_the_same() -> None:
    parts, output = await _run_items(partials=True)
    assert len(parts) >= 2, parts  # after the first and the second of three chunks
    assert [p["items"] for p in parts] == sorted({p["items"] for p in parts})  # it grows
    assert all(p["of"] == 6 and 0 < p["items"] < 6 for p in parts)
    assert len({p["output"] for p in parts}) == len(parts)
    none, same = await _run_items(partials=False)
    assert none == []
    assert same == output  # the final CID is that of a run without progress


def test_the_fullest_partial_wins_whatever_the_order() -> None:
    from itertools import permutations

    from peer.log import Event, MeshState

    evs = [Event("a", 1, 10, EventType.PARTIAL, {"job": "j", "task": "t", "output": "c1",
                                                  "items": 2, "of": 9}),
           Event("b", 1, 11, EventType.PARTIAL, {"job": "j", "task": "t", "output": "c3",
                                                  "items": 5, "of": 9}),
           Event("a", 2, 12, EventType.PARTIAL, {"job": "j", "task": "t", "output": "c2",
                                                  "items": 4, "of": 9})]
    for order in permutations(evs):
        s = MeshState()
        for e in order:
            s.apply(e)
        assert s.partials[("j", "t")].payload["output"] == "c3"
        assert "b" in s.providers["c3"]

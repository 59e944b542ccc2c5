"""Per-item tasks of groups with a reduce (LEARN's shape) on the in-memory mesh: one chunk per
group, then the assembling step as the split's last chunk, run once, after the others."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from peer.ipfs.store import StoreConfig
from peer.jobs import planner
from peer.jobs.ports import SchedulerConfig
from peer.jobs.sim import Content, JobMesh, MemoryData, MemoryStore
from peer.jobs.spec import TaskSpec
from peer.log import EventType, MeshState
from tasks import registry
from tasks.registry import TaskDef


def _never(*_: Any, **__: Any) -> None:
    raise AssertionError("the fake runner runs nothing")


GROUPS = TaskDef(name="T_GROUPS", version="1", fn=_never, args=(), per_item=True,
                 items="*.txt", groups=True, reduce=_never)
CATALOG = {**registry.load(("tests.fixture_tasks",)), "T_GROUPS": GROUPS}
CFG = SchedulerConfig(store=StoreConfig("/nonexistent"), lease_s=10.0, stagger_s=0.05)


@pytest.fixture
async def mesh() -> AsyncIterator[JobMesh]:
    m = JobMesh(2, CATALOG, CFG)
    yield m
    await m.close()


def corpus(m: JobMesh, pid: str) -> tuple[str, dict[str, dict[str, str]]]:
    """At `pid`: a/ and b/ with two .txt files each, c/ with one and a notes file, a .txt at
    the root; returns the root CID and, per group, its matching files."""
    st = m[pid].store
    groups: dict[str, dict[str, str]] = {}
    dirs = {}
    for name, files in {"a": ["1.txt", "2.txt"], "b": ["1.txt", "3.txt"], "c": ["9.txt"]}.items():
        groups[name] = {f: st.add_bytes(f"{name}/{f}".encode()) for f in files}
        extra = {"notes.md": st.add_bytes(b"not an item")} if name == "c" else {}
        dirs[name] = st.make_dir({**groups[name], **extra})
    groups["src"] = {"top.txt": st.add_bytes(b"at the root")}
    return st.make_dir({**dirs, **groups["src"]}), groups


async def source(mesh: JobMesh, job: str) -> tuple[str, dict[str, dict[str, str]]]:
    """Finish the job's source task `src` with the corpus as its output."""
    await mesh.settle()
    await mesh.advance(0.3)
    key = f"{job}/src/0/0"
    (pid,) = [pid for pid, p in mesh.peers.items() if key in p.runner.running]
    root, groups = corpus(mesh, pid)
    mesh[pid].runner.finish(key, {"output": root})
    await mesh.advance(0.3)
    return root, groups


SRC = {"name": "src", "call": "T_WRITE", "params": {"files": 1}}
G = {"name": "g", "call": "T_GROUPS", "params": {}, "depends": ["src"]}


async def test_groups_run_as_chunks_then_the_reduce_once(mesh: JobMesh) -> None:
    job = mesh.submit("p0", [SRC, G])
    _, groups = await source(mesh, job)
    split = mesh.events(EventType.TASK_SPLIT, job=job, task="g")[0]
    chunks = split.payload["chunks"]
    st = mesh["p0"].store
    # one chunk per directory holding items (only its items: c's notes.md is left out; the
    # root's files are one group named after the task they came from), then the reduce's
    assert [[p for p, _ in c] for c in chunks] == [["src"], ["a"], ["b"], ["c"], []]
    for (path, cid), in chunks[:-1]:
        assert st.content.dirs[cid] == dict(sorted(groups[path].items()))
    running = {pid: [k for k in p.runner.running if k.startswith(f"{job}/g/")]
               for pid, p in mesh.peers.items()}
    reduce_key = f"{job}/g/4/0"
    # one slot per peer: each runs one group, the others wait for a free slot
    assert [len(ks) for ks in running.values()] == [1, 1], running
    assert reduce_key not in {k for ks in running.values() for k in ks}
    for _ in range(4):  # the groups end one by one; the reduce starts only after the last
        for p in mesh.peers.values():
            for key in list(p.runner.running):
                if key != reduce_key:
                    assert not any(reduce_key in q.runner.started for q in mesh.peers.values())
                    p.runner.finish(key)
                    break
        await mesh.advance(0.3)
    runs = [pid for pid, p in mesh.peers.items() if reduce_key in p.runner.started]
    assert len(runs) == 1, runs
    p = mesh[runs[0]]
    payload = p.runner.payloads[reduce_key]
    assert payload["reduce"] is True and payload["items"] is None
    # its input: the groups' results, as the per-item task's output would hold them
    assert sorted(p.store.content.dirs[payload["input"]]) == ["a", "b", "c", "src"]
    p.runner.finish(reduce_key)
    await mesh.advance(0.3)
    done = mesh.events(EventType.CHUNK_DONE, job=job, task="g", chunk=4)
    assert len(done) == 1 and "output" in done[0].payload and "cache" not in done[0].payload
    for pid in mesh.peers:
        (td,) = mesh.events(EventType.TASK_DONE, pid, job=job, task="g")
        assert td.payload["output"] == done[0].payload["output"]


async def test_a_rerun_after_one_group_changed_recomputes_only_that_group(
        mesh: JobMesh) -> None:
    first = mesh.submit("p0", [SRC, G])
    _, groups = await source(mesh, first)
    mesh["p0"].runner.auto = mesh["p1"].runner.auto = True
    for p in mesh.peers.values():
        for key in list(p.runner.running):
            p.runner.finish(key)
    await mesh.advance(1.0)
    assert mesh.events(EventType.TASK_DONE, job=first, task="g")
    mesh["p0"].runner.auto = mesh["p1"].runner.auto = False
    second = mesh.submit("p0", [{**SRC, "params": {"files": 2}}, G])  # another source run
    await mesh.settle()
    await mesh.advance(0.3)
    key = f"{second}/src/0/0"
    (pid,) = [pid for pid, p in mesh.peers.items() if key in p.runner.running]
    st = mesh[pid].store
    entries = {"a": st.make_dir(groups["a"]), "b": st.make_dir(groups["b"]),
               "c": st.make_dir({**groups["c"], "8.txt": st.add_bytes(b"new")}),
               **groups["src"]}
    mesh["p0"].runner.auto = mesh["p1"].runner.auto = True
    mesh[pid].runner.finish(key, {"output": st.make_dir(entries)})
    await mesh.advance(1.0)
    split = mesh.events(EventType.TASK_SPLIT, job=second, task="g")[0]
    assert [[p for p, _ in c] for c in split.payload["chunks"]] == [["c"], []]
    assert mesh.events(EventType.TASK_DONE, job=second, task="g")


def test_groups_and_reduce_need_a_per_item_task() -> None:
    with pytest.raises(ValueError, match="per-item"):
        registry.task("T_BAD_REDUCE", reduce=_never)(_never)


async def test_the_splitter_fetches_a_group_done_elsewhere_before_the_reduce(
        mesh: JobMesh) -> None:
    """LEARN's shape on two peers: while the splitter still runs a group, the other peer's
    finished group output is fetched at once, not only when every group is done (the
    assembling step then starts without waiting for it)."""
    job = mesh.submit("p0", [SRC, G])
    await source(mesh, job)
    split = mesh.events(EventType.TASK_SPLIT, job=job, task="g")[0]
    s = split.origin
    (o,) = set(mesh.peers) - {s}
    theirs = next(k for k in mesh[o].runner.running if k.startswith(f"{job}/g/"))
    assert any(k.startswith(f"{job}/g/") for k in mesh[s].runner.running)
    value = mesh[o].runner._output(theirs)
    made = [v["c"] for v in value["items"].values()]
    assert made and not any(mesh[s].data.is_complete(c) for c in made)
    mesh[o].runner.finish(theirs, value)
    await mesh.settle()  # no time passes; the splitter's own group still runs
    assert mesh.events(EventType.CHUNK_DONE, s, job=job, task="g")
    assert not mesh.events(EventType.TASK_DONE, s, job=job, task="g")
    assert set(made) <= set(mesh[s].data.fetched)


def test_groups_are_split_largest_first_ties_in_path_order() -> None:
    sizes = {"a": 5, "b": 9, "c": 5, "d": 7}
    groups = [[name, f"cid-{name}"] for name in sorted(sizes)]
    ordered = planner.longest_first(groups, lambda g: sizes[g[0]])
    assert [g[0] for g in ordered] == ["b", "d", "a", "c"]
    assert planner.longest_first([], lambda g: 0) == []


@pytest.mark.parametrize("holds_input", [True, False])
async def test_a_peer_that_ran_a_group_fetches_the_others_outputs_if_it_can_assemble(
        mesh: JobMesh, holds_input: bool) -> None:
    """Whichever peer ends the last group may claim the assembling step if it holds the
    task's input (the step's input lists it): once every group is claimed, such a peer
    running one (not only the splitter) fetches the groups done elsewhere as they end, so
    that it holds every result when its own last group ends, and claims the step at once.
    A peer without the input could not assemble before the splitter: it fetches nothing
    (LEARN's second peer on two pinned cores copied each group's output for nothing)."""
    job = mesh.submit("p0", [SRC, G])
    await source(mesh, job)
    split = mesh.events(EventType.TASK_SPLIT, job=job, task="g")[0]
    s = split.origin
    (o,) = set(mesh.peers) - {s}
    if holds_input:  # e.g. a replica
        mesh[o].data.mark(split.payload["input"])
    mine = next(k for k in mesh[o].runner.running if k.startswith(f"{job}/g/"))
    mesh[o].runner.finish(mine)  # o has ended a group; it runs the next one
    await mesh.advance(0.3)
    assert any(k.startswith(f"{job}/g/") for k in mesh[o].runner.running)
    theirs = next(k for k in mesh[s].runner.running if k.startswith(f"{job}/g/"))
    value = mesh[s].runner._output(theirs)
    made = [v["c"] for v in value["items"].values()]
    assert made and not any(mesh[o].data.is_complete(c) for c in made)
    mesh[s].runner.finish(theirs, value)
    await mesh.settle()  # no time passes; o's group still runs
    assert not mesh.events(EventType.TASK_DONE, o, job=job, task="g")
    assert any(k.startswith(f"{job}/g/") for k in mesh[o].runner.running)
    assert all(mesh[o].state.chunk(job, "g", i).claims for i in range(4))  # the tail
    assert (set(made) <= set(mesh[o].data.fetched)) is holds_input
    assert split.payload["input"] not in mesh[o].data.fetched  # results only, not the input
    if not holds_input:
        return
    last = next(k for k in mesh[s].runner.running if k.startswith(f"{job}/g/"))
    mesh[s].runner.finish(last)  # s ends its last group; o runs the last one
    await mesh.advance(0.3)
    mesh[o].runner.finish(next(k for k in mesh[o].runner.running))
    await mesh.settle()  # no time passes: o holds every result and the input
    assert f"{job}/g/4/0" in mesh[o].runner.started
    assert f"{job}/g/4/0" not in mesh[s].runner.started


async def test_a_peer_claims_at_once_when_the_input_holder_is_full(mesh: JobMesh) -> None:
    """The input's holder ranks first for every group, but once the log shows its claim
    filling its one slot (its last heartbeat still says it has a free one), the other
    peer claims the next group without waiting a stagger for it."""
    mesh.tamper = lambda _, info: {**info, "free_slots": 1}  # heartbeats a period old
    job = mesh.submit("p0", [SRC, G])
    await mesh.settle()
    await mesh.advance(0.3)
    key = f"{job}/src/0/0"
    (pid,) = [pid for pid, p in mesh.peers.items() if key in p.runner.running]
    (other,) = set(mesh.peers) - {pid}
    root, _ = corpus(mesh, pid)
    mesh[pid].runner.finish(key, {"output": root})
    await mesh.settle()  # no time passes: no stagger is waited out
    assert mesh["p0"].sched.peers()  # (the peers hear each other)
    assert any(k.startswith(f"{job}/g/") for k in mesh[pid].runner.running)
    assert any(k.startswith(f"{job}/g/") for k in mesh[other].runner.running)
    claims_ = mesh.events(EventType.CLAIM, job=job, task="g")
    assert len({c.payload["chunk"] for c in claims_}) == len(claims_) == 2  # no duplicate



def test_the_groups_of_an_input_are_made_once_while_their_directories_are_here() -> None:
    """The split and the assembling step both list a task's groups: each group's
    directory is made (every file of it read, for its size) once, not at every listing;
    made again if a directory was collected meanwhile."""
    store = MemoryStore(Content())
    made: list[dict[str, str]] = []
    make_dir = store.make_dir

    def counting(entries: Any, cid_version: int = 1) -> str:
        made.append(dict(entries))
        return make_dir(entries, cid_version)

    plan = planner.Planner(MeshState(), store, MemoryData(store), 4, 64)
    root, _ = corpus_in(store)
    store.make_dir = counting  # type: ignore[method-assign]
    spec = TaskSpec(name="g", call="T_GROUPS", params={}, depends=("src",))
    first = plan.items(root, spec, GROUPS)
    assert [p for p, _ in first] == ["src", "a", "b", "c"] and len(made) == 4
    assert plan.items(root, spec, GROUPS) == first and len(made) == 4  # memoised
    store.local.discard(first[2][1])  # b's directory collected
    assert plan.items(root, spec, GROUPS) == first and len(made) == 8  # made again
    assert plan.items(root, spec, GROUPS) == first and len(made) == 8


def corpus_in(st: Any) -> tuple[str, dict[str, dict[str, str]]]:
    """`corpus`'s directory tree in the store `st`."""
    groups: dict[str, dict[str, str]] = {}
    dirs = {}
    for name, files in {"a": ["1.txt", "2.txt"], "b": ["1.txt", "3.txt"], "c": ["9.txt"]}.items():
        groups[name] = {f: st.add_bytes(f"{name}/{f}".encode()) for f in files}
        dirs[name] = st.make_dir(groups[name])
    groups["src"] = {"top.txt": st.add_bytes(b"at the root")}
    return st.make_dir({**dirs, **groups["src"]}), groups

"""The tombstone bound over data dirs of earlier releases (docs/architecture.md, Compaction,
item 9): a data dir written by the code of db471b6 (its tables made, no straggler noted) or
of e71ec14 (no `deleted_ids` yet: backfilled once) opens, finds every event of its deleted
jobs in the log (a straggler that release kept too), and forgets them once every clause
holds; a restart then folds nothing of them.

Each earlier release writes its data dir in a subprocess running its own code (`git archive`
of the commit; the test is skipped where the repository's history is not at hand)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import uuid
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.log.tombs import TOMB_FEATURE, TOMB_GRACE_S
from peer.node import Node
from tests.conftest import mesh_secret_file, start_peer, stop_peers
from tests.helpers import get_json, post_json

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
OTHER = "othr0000000000000000"

# Run by the earlier release's code (its tests' helpers): three finished jobs, job000 and
# job001 compacted with their events kept in the log (a live member lacks them); a late
# claim of each from OTHER (a straggler: after its compaction); job000 deleted. Prints what
# the test needs.
WRITE = r"""
import json, sys
from pathlib import Path
from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.node import Node
from tests.unit.test_compaction import ORIGIN, _deleted, history

n = Node(PeerConfig(data_dir=Path(sys.argv[1]), slots=1, mdns=False, compact_recent_tasks=1))
n.listeners[:] = [n.compactor.note]
n.compactor.vvs = lambda: [dict(n.heads()), {}]
evs = history(jobs=3, per_job=1)
n.merge(evs)
n.catchup.compact()
late = []
for k, job in enumerate(("job000", "job001")):
    split = next(e for e in evs if e.type == EventType.TASK_SPLIT and e.payload["job"] == job)
    late.append(Event("othr0000000000000000", k + 1, evs[-1].hlc + 5, EventType.CLAIM, {
        "job": job, "task": "t0", "split": [ORIGIN, split.seq], "chunk": 0, "attempt": 1}))
n.merge(late)
n.catchup.compact()
gone = _deleted(evs, "job000")
n.merge([gone])
n.catchup.compact()
print(json.dumps({"events": [list(e.id) for e in evs], "late": [list(e.id) for e in late],
                  "gone": [gone.origin, gone.seq, gone.hlc], "next": len(evs) + 2,
                  "last_hlc": evs[-1].hlc}))
n.log.close()
"""


def _release(commit: str, into: Path) -> Path:
    into.mkdir()
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit],
                                 capture_output=True, check=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"the code of {commit} is not at hand: {e}")
    return into


def _written_by(commit: str, tmp: Path) -> tuple[Path, dict[str, Any]]:
    code = _release(commit, tmp / commit)
    data = tmp / "data"
    out = subprocess.run([sys.executable, "-c", WRITE, str(data)], cwd=code, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(code),
                              "HOME": str(tmp)},
                         capture_output=True, text=True, check=True)
    return data, json.loads(out.stdout.strip().splitlines()[-1])


def _open(d: Path, opened: list[Node]) -> Node:
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=1))
    n.listeners[:] = [n.compactor.note]
    opened.append(n)
    return n


def _rows(n: Node) -> set[tuple[str, int]]:
    return {(str(o), int(q)) for o, q in n.log.db.execute("SELECT origin, seq FROM events")}


@pytest.fixture
def opened() -> Any:
    nodes: list[Node] = []
    yield nodes
    for n in nodes:
        n.log.close()


@pytest.mark.parametrize("commit", ["db471b6", "e71ec14"])
def test_a_data_dir_of_an_earlier_release_finds_every_event_and_forgets_once_it_may(
        tmp_path: Path, opened: list[Node], commit: str) -> None:
    data, got = _written_by(commit, tmp_path)
    late = [tuple(i) for i in got["late"]]
    origin, seq, hlc = got["gone"]
    gone = (origin, seq)
    n = _open(data, opened)
    assert set(late) <= _rows(n) and gone in _rows(n)  # (that release kept the stragglers)
    assert n.index.tombstone("job000") is not None
    assert {(j, o, q) for j, o, q in n.log.db.execute(
        "SELECT job, origin, seq FROM deleted_ids")} == {("job000", origin, seq)}
    n.catchup.compact()  # alone: job000's straggler leaves the log (we hold it)
    assert late[0] not in _rows(n)
    deleted = Event(origin, got["next"], got["last_hlc"] + 7, EventType.JOB_DELETED,
                    {"job": "job001", "reason": "rm"})
    n.merge([deleted])  # job001, compacted under that release, deleted now
    assert late[1] not in _rows(n)  # its straggler was found by the replay
    step = int(TOMB_GRACE_S * 1000 + 1000) << 16
    n.compactor.now_hlc = lambda: deleted.hlc + step
    forgotten = 0
    for _ in range(3):
        forgotten += n.catchup.compact().forgotten
    assert forgotten == 2
    assert n.index.tombstone("job000") is None and n.index.tombstone("job001") is None
    assert not {gone, deleted.id, *late} & _rows(n)
    assert not {i for i in _rows(n) if i in {tuple(e) for e in got["events"][:10]}}
    held, digest = sorted(n.state.events), n.state.content_sum()
    n.log.close()
    opened.remove(n)
    again = _open(data, opened)  # the replay folds nothing of them
    assert not {"job000", "job001"} & set(again.state.jobs)
    assert not [k for k in again.state.chunks if k.job in ("job000", "job001")]
    assert sorted(again.state.events) == held and again.state.content_sum() == digest
    assert hlc  # (the deletion's hlc, written by that release)


# -- a mixed mesh: a peer of db471b6 (no tomb-v1) among ours ----------------------------------

async def _until(fn: Any, what: str, timeout_s: float = 60) -> Any:
    """Poll `fn` (blocking: run in a thread, our node's loop goes on) until it is truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            v = await asyncio.to_thread(fn)
        except urllib.error.HTTPError as e:
            v = e.code if e.code == 404 else None
        if v:
            return v
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {what}")


async def test_a_peer_of_db471b6_among_ours_holds_every_tombstone_back(tmp_path: Path) -> None:
    """The old peer (a subprocess running db471b6's code) and ours (in process, its
    compactor's clock faked past the grace) run and delete jobs together; ours forgets
    nothing while the old one is a member, and names it in /api/health."""
    code = _release("db471b6", tmp_path / "db471b6")
    mesh = f"test-{uuid.uuid4().hex[:12]}"
    old = start_peer(tmp_path / "old", "--no-mdns", mesh=mesh,  # its workers' code too: cwd
                     env={"PYTHONPATH": str(code)}, cwd=code)
    try:
        health = get_json(f"{old.url}/api/health")
        node = Node(PeerConfig(
            data_dir=tmp_path / "new", slots=1, mdns=False, gossip="127.0.0.1:0",
            join=(health["gossip_address"],), secret_file=mesh_secret_file(mesh),
            mesh_name=mesh, task_modules=("tests.fixture_tasks",), warm_workers=False,
            compact_recent_tasks=0))
        await node.start()
        try:
            await _until(lambda: health["peer"] in node.state.members, "the old MEMBER")
            assert node._tomb_members()[health["peer"]] is False  # (its MEMBER's features)
            assert node._tomb_members()[node.peer_id] is True
            job = "mixed-ours"
            node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": {
                "name": job, "tasks": [{"name": "t0", "call": "ECHO",
                                        "params": {"text": "mixed"}}]}})
            theirs = post_json(f"{old.url}/api/jobs", [{"call": "ECHO", "args": ["old"]}])
            await _until(lambda: get_json(f"{old.url}/api/jobs/{job}")["state"] == "done",
                         "our job done on the old peer")
            await _until(lambda: get_json(f"{old.url}/api/jobs/{theirs['job']}")["state"]
                         == "done", "the old peer's job done")
            await _until(lambda: theirs["job"] in node.index or theirs["job"] in
                         node.state.jobs, "the old peer's job here")
            # (the old peer's JOB_SUBMITTED can reach us before its run's outcome of ours:
            # a deletion before it is a 409, the job not finished here yet)
            await _until(lambda: (job, "t0") in node.state.task_done
                         or job in node.state.compacted, "our job done here")
            await node.durable(node.janitor.delete_job(job))
            await _until(lambda: get_json(f"{old.url}/api/jobs/{job}") == 404 or None,
                         "the deletion folded by the old peer")
            await _until(lambda: node.index.tombstone(job) is not None, "our tombstone")
            real = node.compactor.now_hlc
            step = int(TOMB_GRACE_S * 1000 + 60_000) << 16
            node.compactor.now_hlc = lambda: real() + step
            for _ in range(2):
                assert node.catchup.compact().forgotten == 0
            assert node.index.tombstone(job) is not None
            held_by = node.log_health()["compaction"]["tombstones_held_by"]
            assert held_by == f"{health['peer']} (no {TOMB_FEATURE})"
            await _until(lambda: get_json(f"{old.url}/api/health")["log"]["heads_digest"]
                         == node.log_health()["heads_digest"], "equal heads")
        finally:
            await node.close()
    finally:
        stop_peers([old])

"""A peer of an earlier release in a lanes mesh (docs/design/partial-replication.md, section 6): a
peer of 2b5ab6b (session 36's main, before `--lanes`) or of f513d90 (session 42's main: lanes
off by default), each announcing no lanes-v1 and holding JOB_ENDED, JOB_MEMBERS and a
JOB_SUBMITTED's `members` unfolded (each runs its own default: lanes off), joins two peers of
this release running theirs (lanes on since session 44) while a lanes job runs, and leaves. The
lanes job goes on on its members (the old peer keeps it as a newer peer's job and runs none of
it: `"lanes": 1`); jobs submitted while it is live, and after it left (its MEMBER without
lanes-v1 is still known, not revoked), are held in full by every peer, and named by unbound
ids (the lanes job, submitted before it came, by a bound one: boundids-v1, session 46
helper f); the old peer crashes on
nothing, quarantines and refuses nothing, and opens its data dir again with every row.

The old peer runs the code of that commit (`git archive`; the test is skipped where the
repository's history is not at hand)."""

from __future__ import annotations

import signal
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from peer.log.ids import submitter_of
from tests.conftest import PeerProc, start_peer, stop_peers
from tests.helpers import get_json as get
from tests.helpers import post_json as post
from tests.helpers import wait_mesh
from tests.integration.test_lanes import (
    TASKS,
    WAIT_S,
    _entries,
    _job,
    _job_rows,
    _lane_rows,
    _peer_id,
    _state,
)
from tests.integration.test_mesh import start_all
from tests.integration.test_tomb_compat import _release

# session 36's main (before --lanes), session 42's (lanes off by default: the release before
# this one)
OLD = ("2b5ab6b", "f513d90")
# one task of the lanes job (T_GATE) runs until the test opens its gate: the job runs while
# the old peer joins and the job submitted then runs, and ends as soon as they are done (before:
# a T_SLEEP of 15 s, mostly waited out; and on a slow machine it could end too early). That job
# is a chain of ECHOs: until session 51 (helper f) the gate's peer, first for its first task,
# could queue it behind the gate (`queue_ahead`) and hold it there, and the chain never moved


def _rows(p: PeerProc) -> set[tuple[str, int]]:
    """The (origin, seq) of every event row of a stopped peer's log."""
    db = sqlite3.connect(p.data_dir / "events.sqlite")
    try:
        return {(str(o), int(q)) for o, q in db.execute("SELECT origin, seq FROM events")}
    finally:
        db.close()


def _clean(p: PeerProc) -> None:
    """`p`'s door refused and quarantined nothing."""
    log = get(f"{p.url}/api/health")["log"]
    assert log["refused"]["total"] == 0 and log["quarantined"] == 0, (p.data_dir.name, log)


def _same_heads(peers: list[PeerProc]) -> None:
    """Until every peer's log has the same mesh heads (bounded): each holds what the others
    made, but the lanes of jobs it is no member of."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        digests = {get(f"{p.url}/api/health")["log"]["heads_digest"] for p in peers}
        if len(digests) == 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"the heads of {[p.data_dir.name for p in peers]} differ: {digests}")


@pytest.mark.parametrize("release", OLD)
def test_a_peer_of_an_earlier_release_joins_a_lanes_mesh_mid_job_and_leaves(
        tmp_path: Path, release: str) -> None:
    code = _release(release, tmp_path / release)
    mesh = f"lanes-{uuid.uuid4().hex[:12]}"
    lanes: list[PeerProc] = []
    old: list[PeerProc] = []
    gate = tmp_path / "gate"

    def start_old() -> PeerProc:
        """The old peer on its data dir, its code and its workers' (`cwd`) the release's."""
        return start_peer(tmp_path / "old", "--slots", "1", mesh=mesh,
                          env={"PYTHONPATH": str(code)}, cwd=code)

    try:
        lanes += start_all(lambda name: start_peer(
            tmp_path / name, "--slots", "1", mesh=mesh), ("l0",), ("l1",))  # (the default)
        wait_mesh(lanes, 2)
        l0 = lanes[0]
        held = post(f"{l0.url}/api/jobs", [*_job(TASKS),
                                           {"call": "T_GATE", "args": [str(gate), WAIT_S]}])
        lanes_job = held["job"]
        assert get(f"{l0.url}/api/jobs/{lanes_job}")["workflow"].get("lanes") == 1
        assert submitter_of(lanes_job) == _peer_id(l0)  # (bound: every member announces it)
        old.append(p := start_old())
        wait_mesh([*lanes, p], 3)
        assert get(f"{l0.url}/api/jobs/{lanes_job}")["state"] == "running"  # (joined mid-job)
        old_id = _peer_id(p)
        while_live = post(f"{l0.url}/api/jobs", _job(TASKS))["job"]
        assert submitter_of(while_live) is None  # (unbound while an old peer is live)
        assert {_state(q, while_live) for q in [*lanes, p]} == {"done"}
        assert get(f"{l0.url}/api/jobs/{lanes_job}")["state"] == "running"  # (held all along)
        gate.touch()  # the lanes job ends
        assert {_state(q, lanes_job) for q in lanes} == {"done"}
        _same_heads([*lanes, p])  # (the old peer holds the lanes job's JOB_ENDED too)
        for q in [*lanes, p]:
            assert "members" not in _entries(q)[while_live]
            assert len(get(f"{q.url}/api/jobs/{while_live}")["tasks"]) == TASKS
            _clean(q)
        assert p.proc.poll() is None
        p.kill(signal.SIGTERM)  # the old peer leaves
        assert p.proc.returncode == 0, p.output[-3000:]
        wait_mesh(lanes, 2)
        after = post(f"{l0.url}/api/jobs", _job(TASKS))["job"]  # (its MEMBER is still known)
        assert submitter_of(after) is None
        assert {_state(q, after) for q in lanes} == {"done"}
        assert all("members" not in _entries(q)[after] for q in lanes)
        kept = _rows(p)
        old[0] = p = start_old()  # the old peer on its data dir again: every row, as it was
        assert _peer_id(p) == old_id
        _clean(p)
        assert _state(p, while_live) == "done"
        stop_peers(old)
        assert kept <= _rows(p)
    finally:
        gate.touch()
        stop_peers([*lanes, *old])
    # the old peer ran none of the lanes job and holds none of its lanes; every peer holds
    # the job submitted while it was live in full
    assert _lane_rows(p, lanes_job) == 0 and _job_rows(p, lanes_job, old_id) == 0
    for q in [*lanes, p]:
        assert _job_rows(q, while_live) > TASKS // 2, q.data_dir.name

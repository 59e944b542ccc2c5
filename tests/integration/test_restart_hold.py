"""A peer killed (SIGKILL) mid-job and started again on its data dir, on real peers, in a job
replicated in full (every peer holds its task events: here --no-lanes, the path of a job
below --lanes-min-job-tasks; the simulator alone covered it): its replayed log misses what
the others claimed while it was down, so it claims nothing until it holds a live peer's
vector of the mesh streams, or --restart-hold-s passed (`Scheduler.recover`; session 51
helper i, session 52 helper e). A per-item task: its chunks are listed by its one split, so
a restarted peer finds open chunks in its log and may claim them at once (a task of its own
waits its turn to be split, which hid a stale view). Read from the peers' own run counters
(T_SLOW_ITEMS counts each item's run): it runs no item that another peer had run before it
came back, and the job ends."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PeerProc, start_peer, stop_peers
from tests.helpers import get_json as get
from tests.helpers import multipart, wait_job, wait_mesh
from tests.helpers import post_json as post
from tests.integration.test_mesh import start_all

ITEMS = 1500  # (24 chunks of 63 at 3 free slots; ~0.7 s each: ~6 s of runs on 3 slots)
ITEM_S = 0.01
WAIT_S = 60.0  # a bound on each wait below
FLAGS = ("--slots", "1", "--lease-s", "3", "--no-lanes")


def _runs(path: Path) -> Counter[str]:
    """Item -> the runs a peer's counter file (BANZAI_TEST_COUNTER) holds of it."""
    if not path.exists():
        return Counter()
    return Counter(line.removeprefix("T_SLOW_ITEMS ") for line in path.read_text().splitlines()
                   if line.startswith("T_SLOW_ITEMS "))


def _chunks(view: dict[str, Any]) -> list[str]:
    """The states of the per-item task's chunks in a job view."""
    tasks = view["tasks"]
    return [str(c["state"]) for c in tasks[-1].get("chunks", ())] if len(tasks) > 1 else []


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[list[PeerProc]]:
    """Three peers of one mesh (mDNS on loopback), each counting its runs in NAME.runs. A
    test may put a restarted peer in the list in its place (stopped here too)."""
    mesh, started, peers = f"hold-{uuid.uuid4().hex[:12]}", [], []

    def start(name: str) -> PeerProc:
        started.append(p := start_peer(tmp_path / name, *FLAGS, mesh=mesh, env={
            "BANZAI_TEST_COUNTER": str(tmp_path / f"{name}.runs")}))
        return p

    try:
        peers = start_all(start, ("h0",), ("h1",), ("h2",))
        wait_mesh(peers, 3)
        yield peers
    finally:
        stop_peers({id(p): p for p in [*started, *peers]}.values())


def test_a_peer_killed_mid_job_and_restarted_runs_nothing_from_a_stale_claim(
        tmp_path: Path, trio: list[PeerProc]) -> None:
    home, victim, other = trio
    tag = uuid.uuid4().hex[:8]
    body, headers = multipart({f"in/f{i:04d}.txt": f"{tag} {i}\n".encode()
                               for i in range(ITEMS)})
    req = urllib.request.Request(f"{home.url}/api/add", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as r:
        cid = json.loads(r.read())["cid"]
    job = post(f"{home.url}/api/jobs", [{"cid": cid}, {"call": "T_SLOW_ITEMS",
                                                       "args": [ITEM_S]}])["job"]
    deadline = time.monotonic() + WAIT_S
    while (states := _chunks(get(f"{other.url}/api/jobs/{job}"))).count("done") < 3:
        assert time.monotonic() < deadline, f"the job did not get under way: {states}"
        time.sleep(0.05)
    victim.kill(signal.SIGKILL)
    at = victim.args.index("--mesh-name")
    again = start_peer(victim.data_dir, *victim.args[at + 2:], mesh=victim.args[at + 1],
                       env={**victim.env, "BANZAI_TEST_COUNTER": str(tmp_path / "again.runs")})
    trio[1] = again  # (stopped by the fixture)
    # What the others ran before it was back (read as its start is seen: its log, which it
    # would claim from at once without the hold, holds nothing they claimed since the
    # kill). Its run of one of these comes from that stale view, not from a race with a
    # live peer's claim (of a few ms, after this read)
    before = _runs(tmp_path / "h0.runs") + _runs(tmp_path / "h2.runs")
    assert len(before) < ITEMS, "the job ended before the restart: nothing to claim"
    for p in trio:
        view = wait_job(p, job, timeout_s=WAIT_S)
        assert view["state"] == "done", (p.url, view["state"], _chunks(view))
    ran_again = _runs(tmp_path / "again.runs")
    stale = sorted(t for t in ran_again if t in before)
    assert not stale, f"{len(stale)} item(s) run again after the restart: {stale[:5]}"
    every = {*ran_again, *(t for n in ("h0", "h1", "h2") for t in _runs(tmp_path / f"{n}.runs"))}
    assert every == {f"f{i:04d}.txt" for i in range(ITEMS)}

#!/usr/bin/env python3
"""A lone peer's CPU per task, lanes off against on, in this process (issue 12, design 9's
falsifier 3: a lone `--lanes` peer's job has members [itself], its task events go to its lane
"<peer>/<job>"): a Node (2 slots, warm workers, no mDNS) per run, one n-task ECHO dag job
submitted as `POST /api/jobs` builds it (implicit splits, `members`, `local`, `claimed`);
the peer process's CPU (`time.process_time`: its threads, not its workers) from the submit
to the n-th TASK_DONE, per task. Off and on alternate `--repeat` times after one unmeasured
warm-up; medians printed as JSON. `--profile on|off`: one cProfile'd run (after one
unprofiled), its stats written to `--stats F`.

    PYTHONPATH=TREE .venv/bin/python scripts/bench_lanes_lone.py [-n 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import json
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from peer.config import PeerConfig
from peer.jobs.spec import parse
from peer.log import Event, EventType
from peer.log.events import IMPLICIT_SPLITS
from peer.log.ids import new_job_id
from peer.node import Node

WAIT_S = 120.0


def submission(node: Node, n: int) -> dict[str, Any]:
    """The JOB_SUBMITTED payload `POST /api/jobs` makes of n ECHO tasks (peer.http.app)."""
    tag = uuid.uuid4().hex
    body = json.dumps({"tasks": [{"name": f"t{i}", "call": "ECHO", "args": [f"{tag}{i}"]}
                                 for i in range(n)]}).encode()
    wf = parse(body, node.catalog)
    wf = dataclasses.replace(wf, splits=IMPLICIT_SPLITS if node.implicit_splits() else None)
    job = new_job_id()
    members = node.lanes_members(job, wf)
    if members is not None:
        wf = dataclasses.replace(wf, lanes=True)
    payload: dict[str, Any] = {"job": job, "workflow": wf.to_json()}
    if members is not None:
        payload["members"] = members
    if node.local_first(job, wf):
        payload["local"] = True
        if node.claims_first(job, wf):
            payload["claimed"] = True
    return payload


async def one(lanes: bool, n: int, tmp: Path, prof: cProfile.Profile | None = None) -> float:
    """One fresh peer's job of n tasks: its CPU ms per task."""
    cfg = PeerConfig(data_dir=tmp / uuid.uuid4().hex[:8], slots=2, mdns=False,
                     warm_workers=True, log_level="WARNING", lanes=lanes)
    node = Node(cfg)
    await node.start()
    try:
        await asyncio.sleep(0.5)  # its workers warm
        payload = submission(node, n)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        count = [0]

        def listen(ev: Event) -> None:
            if ev.type == EventType.TASK_DONE and ev.payload.get("job") == payload["job"]:
                count[0] += 1
                if count[0] >= n and not done.done():
                    done.set_result(None)

        node.listeners.append(listen)
        if prof is not None:
            prof.enable()
        c0 = time.process_time()
        node.emit(EventType.JOB_SUBMITTED, payload)
        await asyncio.wait_for(done, WAIT_S)
        c1 = time.process_time()
        if prof is not None:
            prof.disable()
        return (c1 - c0) / n * 1000
    finally:
        await node.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", choices=["on", "off"])
    ap.add_argument("--stats", default="lanes_lone.pstats")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="lanes_lone"))
    try:
        if a.profile:
            await one(a.profile == "on", a.n, tmp)
            prof = cProfile.Profile()
            print(a.profile, round(await one(a.profile == "on", a.n, tmp, prof), 3))
            prof.dump_stats(a.stats)
            return
        res: dict[str, list[float]] = {"off": [], "on": []}
        await one(False, min(a.n, 200), tmp)
        for _ in range(a.repeat):
            for k in res:
                res[k].append(round(await one(k == "on", a.n, tmp), 3))
        print(json.dumps({k: {"ms_per_task": v, "median": statistics.median(v)}
                          for k, v in res.items()}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # (the workers' forkserver imports this module again)
    asyncio.run(main())

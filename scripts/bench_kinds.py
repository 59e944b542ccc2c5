#!/usr/bin/env python3
"""Per-task overhead of the shell and container task kinds (issue 13's measure), side by side
in one run:

    .venv/bin/python scripts/bench_kinds.py [-n 30] [--containers 10] [--write docs/benchmarks.md]

  shell      the same command (`echo hi > OUT/x`) run directly with /bin/sh (subprocess.run)
             vs as a shell task: (a) one chunk through the peer's executor and runner (input
             materialised, command run, output added to the store: what the kind adds to a
             worker's run) and (b) a one-task job in a peer, submit -> TASK_DONE (plus
             planning, claim, events, the run's log blob)
  python     for reference, the smallest Python task (ECHO) through (a) and (b)
  container  `podman run --rm --network none -v IN:/in:ro -v OUT:/out IMAGE sh -c ...`
             directly vs the same as a container task, (a) and (b) as above
Every job has "cache": false (nothing is a cache hit). Medians; the peer is in this process
(a Node with 2 slots, no mDNS), as tests/integration/test_kinds.py runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_pipeline import write_section  # noqa: E402
from scriptlib import machine  # noqa: E402

from peer.config import PeerConfig  # noqa: E402
from peer.jobs import kinds  # noqa: E402
from peer.jobs.spec import parse, resolve_images  # noqa: E402
from peer.log import Event, EventType  # noqa: E402
from peer.node import Node  # noqa: E402

SECTION = "## Task kinds: shell and container overhead per task (issue 13)"
IMAGE = "localhost/busybox:test"
SHELL_CMD = "echo hi > {out}/x"
BOX_CMD = "echo hi > /out/x"


def median_ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def direct_shell(tmp: Path) -> Callable[[], object]:
    def run() -> None:
        out = Path(tempfile.mkdtemp(dir=tmp))
        subprocess.run(["/bin/sh", "-c", SHELL_CMD.replace("{out}", str(out))], check=True)
        shutil.rmtree(out)
    return run


def direct_podman(tmp: Path) -> Callable[[], object]:
    inp = tmp / "in"
    inp.mkdir(exist_ok=True)

    def run() -> None:
        out = Path(tempfile.mkdtemp(dir=tmp))
        subprocess.run(["podman", "run", "--rm", "--network", "none", "-v", f"{inp}:/in:ro",
                        "-v", f"{out}:/out", IMAGE, "sh", "-c", BOX_CMD], check=True)
        shutil.rmtree(out)
    return run


async def via_executor(node: Node, task: dict[str, Any], n: int) -> list[float]:
    """One chunk of the task through the executor and the runner, as the scheduler sends it."""
    wf = _workflow(node, task)
    spec = wf.tasks[0]
    tdef = node.catalog[spec.call or ""]
    walls = []
    for i in range(n):
        payload = {"store": node.scheduler.cfg.store.to_json(), "modules": [],
                   "call": tdef.name, "params": dict(spec.params), "input": None, "items": None,
                   "fetch_allow": [], "kind": kinds.work_settings(
                       tdef, spec.params, node.scheduler.cfg.kind_settings, f"bench/{i}")}
        t0 = time.perf_counter()
        res = await node.executor.run(f"bench-{uuid.uuid4().hex}", kinds.target(tdef), payload)
        walls.append(time.perf_counter() - t0)
        assert res.ok, res.error
    return walls


def _workflow(node: Node, task: dict[str, Any]) -> Any:
    wf = parse(json.dumps({"tasks": [task]}), node.catalog)
    return resolve_images(wf, {p: m.payload.get("images") or {}
                               for p, m in node.state.members.items()})


async def via_jobs(node: Node, task: dict[str, Any], n: int) -> list[float]:
    """Submit -> TASK_DONE of one-task jobs, one after the other."""
    done: dict[str, asyncio.Future[None]] = {}

    def listen(ev: Event) -> None:
        if ev.type in (EventType.TASK_DONE, EventType.CHUNK_FAILED):
            f = done.get(ev.payload["job"])
            if f is not None and not f.done():
                if ev.type == EventType.TASK_DONE:
                    f.set_result(None)
                else:
                    f.set_exception(RuntimeError(ev.payload.get("error")))

    node.listeners.append(listen)
    walls = []
    try:
        for _ in range(n):
            job = f"b{uuid.uuid4().hex[:10]}"
            done[job] = asyncio.get_running_loop().create_future()
            wf = _workflow(node, task)
            t0 = time.perf_counter()
            node.emit(EventType.JOB_SUBMITTED, {"job": job, "workflow": wf.to_json()})
            await done[job]
            walls.append(time.perf_counter() - t0)
    finally:
        node.listeners.remove(listen)
    return walls


async def measure(n: int, n_box: int, tmp: Path) -> dict[str, Any]:
    cfg = PeerConfig(data_dir=tmp / "peer", slots=2, mdns=False, warm_workers=False,
                     allow_shell=True, allow_containers=n_box > 0, log_level="WARNING")
    node = Node(cfg)
    await node.start()
    out: dict[str, Any] = {}
    try:
        shell = {"name": "sh", "shell": SHELL_CMD, "cache": False}
        for _ in range(3):  # warm-up: workers import the runner and the kind
            direct_shell(tmp)()
        await via_executor(node, shell, 3)
        await via_jobs(node, shell, 3)
        echo = {"name": "e", "call": "ECHO", "args": ["hi"], "cache": False}
        await via_executor(node, echo, 3)
        out["python"] = await interleaved(node, echo, None, n)
        out["shell"] = await interleaved(node, shell, direct_shell(tmp), n)
        if n_box > 0 and "container" in node.catalog:
            box = {"name": "box", "image": IMAGE, "command": ["sh", "-c", BOX_CMD],
                   "cache": False}
            direct_podman(tmp)()
            await via_executor(node, box, 1)
            out["container"] = await interleaved(node, box, direct_podman(tmp), n_box)
    finally:
        await node.close()
    return out


async def interleaved(node: Node, task: dict[str, Any], direct: Callable[[], object] | None,
                      n: int) -> dict[str, list[float]]:
    """n rounds of (direct, executor, job), so that a change of the machine's load during
    the run weighs on the three ways alike."""
    out: dict[str, list[float]] = {"direct": [], "executor": [], "job": []}
    for _ in range(n):
        if direct is not None:
            out["direct"] += timed(direct, 1)
        out["executor"] += await via_executor(node, task, 1)
        out["job"] += await via_jobs(node, task, 1)
    return out


def report(res: dict[str, Any], n: int, n_box: int) -> str:
    py = res["python"]
    rows = [f"| python `ECHO` (any task's cost, for reference) | - | "
            f"{median_ms(py['executor']):.1f} | {median_ms(py['job']):.1f} | | |"]
    for kind, target in (("shell", 20.0), ("container", 50.0)):
        if kind not in res:
            rows.append(f"| {kind} | (not run: the runtime cannot run here) | | | | |")
            continue
        d = median_ms(res[kind]["direct"])
        e = median_ms(res[kind]["executor"])
        j = median_ms(res[kind]["job"])
        rows.append(f"| {kind} | {d:.1f} | {e:.1f} (+{e - d:.1f}) | {j:.1f} (+{j - d:.1f}) | "
                    f"≤ {target:g} | {'met' if e - d <= target else 'missed'} (a), "
                    f"{'met' if j - d <= target else 'missed'} (b) |")
    return "\n".join([
        SECTION, "", "**Command**", "", "```",
        f".venv/bin/python scripts/bench_kinds.py -n {n} --containers {n_box} "
        "--write docs/benchmarks.md", "```", "", "**Conditions**", "",
        f"- {machine()}; podman with runc and cgroupfs (../shared/MACHINE.md), image "
        f"`{IMAGE}` (static busybox).",
        "- The same command each way: shell `echo hi > OUT/x` by /bin/sh; container "
        "`sh -c 'echo hi > /out/x'` in the image, `--network none`, /in mounted read-only.",
        "- direct: `subprocess.run` of /bin/sh, or of `podman run --rm ...`, from this "
        "process. (a) executor: one chunk of the task through the peer's executor and runner "
        "(a forkserver worker materialises the input, runs the kind, adds the output to the "
        "store). (b) job: a one-task job in an in-process peer (2 slots), JOB_SUBMITTED -> "
        "TASK_DONE, `\"cache\": false`, jobs one after the other.",
        f"- Medians of {n} (shell) and {n_box} (container) runs after warm-up, the three ways "
        "interleaved (direct, executor, job, direct, ...) so that a change of load weighs on "
        "each alike; the overhead in parentheses is against direct.",
        f"- Load average (1 min) at the start and the end: {res['load'][0]:.1f}, "
        f"{res['load'][1]:.1f} (other work shares the 2 CPUs when it is above ~1).", "",
        f"**Results** ({time.strftime('%d %b %Y %H:%M UTC', time.gmtime())})", "",
        "| kind | direct ms | (a) executor ms | (b) job ms | target overhead ms | |",
        "| --- | --- | --- | --- | --- | --- |", *rows, ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=30, help="shell runs per way")
    ap.add_argument("--containers", type=int, default=10, help="container runs per way (0: none)")
    ap.add_argument("--write", type=Path, help="update this markdown file's section")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-kinds-") as d:
        load0 = os.getloadavg()[0]
        res = asyncio.run(measure(a.n, a.containers, Path(d)))
        res["load"] = (load0, os.getloadavg()[0])
    text = report(res, a.n, a.containers)
    print(text)
    if a.write:
        write_section(a.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

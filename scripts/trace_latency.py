#!/usr/bin/env python3
"""Where the milliseconds of one-at-a-time submit->done go, peer by peer.

    flock /work/wt/bench.lock .venv/bin/python scripts/trace_latency.py [--peers 1,3] [-n 60]
        [--keep DIR]

For each N: bench_mesh's mesh of N peers (--slots 1), each run as `python -m latency_hooks`
with BANZAI_TRACE_DIR set (scripts/latency_hooks.py: timestamps on the job's path), a warm
batch, then `-n` one-task ECHO jobs one at a time as bench_mesh's latency batch does (POST
to peer 0, wait for the task_done on peer 0's SSE stream). Prints, per milestone, the median
time since the POST (and the median step from the milestone before), for the jobs peer 0
ran and for those another peer ran. The hooks cost a few microseconds per mark: the totals
are a little above an uninstrumented run's.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# --tree DIR: the peers run DIR's code, started by DIR's bench_mesh (another version's flags)
TREE = Path(sys.argv[sys.argv.index("--tree") + 1]).resolve() if "--tree" in sys.argv \
    else HERE.parent
sys.path.insert(0, str(TREE / "scripts"))

import bench_engine as be  # noqa: E402
import bench_mesh as bm  # noqa: E402
import bench_pipeline as bp  # noqa: E402

try:
    from scriptlib import peer_auth
    MIDDLEWARES: tuple[Any, ...] = (peer_auth,)
except ImportError:  # a version without HTTP tokens
    MIDDLEWARES = ()

Mark = tuple[int, int, str, str, str]  # ns, pid, tag, job, detail


def wrapper_bin(tmp: Path) -> Path:
    """A directory whose `banzai-peer` runs the peer under latency_hooks."""
    d = tmp / "bin"
    d.mkdir()
    shutil.copy(HERE / "latency_hooks.py", d)
    exe = d / "banzai-peer"
    exe.write_text(f'#!/bin/sh\nexport PYTHONPATH="{TREE}:{d}"\n'
                   f'exec {sys.executable} -m latency_hooks "$@"\n')
    exe.chmod(0o755)
    return d


def cpu_s(mesh: bm.Mesh) -> list[tuple[float, float]]:
    """(peer's own CPU s, its workers' CPU s) per peer, from /proc."""
    def one(pid: int) -> float:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    return [(one(p.proc.pid), sum(one(q) for q in bp.descendants(p.proc.pid)))
            for p in mesh.peers]


def start_spies(mesh: bm.Mesh, out: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy (raw collapsed stacks, 250 Hz, idle excluded) on each peer's main process."""
    out.mkdir(parents=True, exist_ok=True)
    spies = [subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                               str(p.proc.pid), "--rate", "250", "--format", "raw", "--output",
                               str(out / f"p{i}.txt"), "--nonblocking"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i, p in enumerate(mesh.peers)]
    time.sleep(2.0)  # py-spy attaches
    return spies


def stop_spies(spies: list[subprocess.Popen[bytes]]) -> None:
    for s in spies:
        s.send_signal(signal.SIGINT)
    for s in spies:
        try:
            s.wait(60)
        except subprocess.TimeoutExpired:
            s.kill()
            s.wait()


async def latency_batch(mesh: bm.Mesh, n: int, client: list[Mark],
                        cpu: list[list[tuple[float, float]]] | None = None,
                        spy: Path | None = None) -> list[float]:
    import aiohttp

    url = mesh.peers[0].url
    lat = []
    async with aiohttp.ClientSession(middlewares=MIDDLEWARES) as s, bm.Watcher(s, url) as w:
        tag = secrets.token_hex(6)
        warm = await be.post_job(s, url, {"name": "warm", "tasks": [
            {"name": f"w{i}", **bm.echo(f"warm-{tag}-{i}")} for i in range(8 * len(mesh.peers))]})
        await w.wait(warm, 8 * len(mesh.peers))
        for i in range(5):
            await w.wait(await be.post_job(s, url, [bm.echo(f"warm-{tag}-s{i}")]), 1)
        spies = start_spies(mesh, spy) if spy is not None else []
        if cpu is not None:
            cpu.append(cpu_s(mesh))
        for i in range(n):
            t = time.perf_counter_ns()
            job = await be.post_job(s, url, [bm.echo(f"{tag}-{i}")])
            t_post = time.perf_counter_ns()
            done = await w.wait(job, 1)
            client += [(t, 0, "c_post", job, "-"), (t_post, 0, "c_posted", job, "-"),
                       (int(done * 1e9), 0, "c_sse", job, "-")]
            lat.append((done * 1e9 - t) / 1e6)
        if cpu is not None:
            cpu.append(cpu_s(mesh))
        stop_spies(spies)
    return lat


def read_marks(d: Path) -> list[Mark]:
    out: list[Mark] = []
    for f in d.glob("trace.*"):
        for line in f.read_text().splitlines():
            p = line.split(" ", 4)
            if len(p) == 5:
                out.append((int(p[0]), int(p[1]), p[2], p[3], p[4]))
    out.sort()
    return out


def _main_kind(kinds: str) -> str:
    for k in ("TASK_DONE", "CLAIM", "TASK_SPLIT"):
        if k in kinds:
            return k
    return kinds.split(",")[0]


def timeline(job: str, t0: int, marks: list[Mark], names: dict[int, str],
             ) -> list[tuple[str, float]]:
    """(milestone, ms since the POST) along `job`'s path, in time order."""
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    frames: dict[int, list[int]] = defaultdict(list)  # pid -> frame arrival times
    for t, pid, tag, _, _ in marks:
        if tag == "frame_in":
            frames[pid].append(t)

    def add(name: str, t: int) -> None:
        if name not in seen:
            seen.add(name)
            out.append((name, (t - t0) / 1e6))

    for t, pid, tag, j, detail in marks:
        if j != job:
            continue
        who = names.get(pid, "w")
        if tag in ("flush_in", "flush_out", "merged"):
            key = _main_kind(detail.split(":")[0])
            if tag == "merged" and (i := bisect.bisect_right(frames[pid], t)) > 0:
                add(f"frame_in {key} @{who}", frames[pid][i - 1])
            add(f"{tag} {key} @{who}", t)
        elif tag == "to_worker":
            add(f"to_worker @{who}", t)
            for t2, _, tag2, _, d2 in marks:
                if d2 == detail and tag2 in ("w_run_in", "w_run_out") and t2 >= t:
                    add(f"{tag2} @{who}", t2)
        else:
            what = (detail.split(":")[0] if tag == "emit"
                    else detail if tag in ("stagger", "turn") else "")
            add(f"{tag} {what} @{who}".replace("  ", " "), t)
    out.sort(key=lambda x: x[1])
    return out


def report(n_peers: int, lat: list[float], client: list[Mark], marks: list[Mark],
           names: dict[int, str]) -> None:
    posts = {j: t for t, _, tag, j, _ in client if tag == "c_post"}
    allm = sorted(marks + client)
    groups: dict[str, list[list[tuple[str, float]]]] = defaultdict(list)
    for job, t0 in posts.items():
        tl = timeline(job, t0, allm, names)
        ran = next((n.split("@")[1] for n, _ in tl if n.startswith("to_worker")), "?")
        groups[ran].append(tl)
    print(f"\n== N={n_peers}: {len(lat)} jobs, submit->done p50 {statistics.median(lat):.1f} ms,"
          f" p95 {be.pct(lat, 95):.1f} ms; load {os.getloadavg()[0]:.1f}")
    for ran, tls in sorted(groups.items()):
        per: dict[str, list[float]] = defaultdict(list)
        order: dict[str, list[int]] = defaultdict(list)
        for tl in tls:
            for i, (name, ms) in enumerate(tl):
                per[name].append(ms)
                order[name].append(i)
        names_sorted = sorted(per, key=lambda k: statistics.median(per[k]))
        print(f"-- run on {ran}: {len(tls)} jobs (median ms since the POST; milestones seen in"
              f" fewer than half the jobs are marked *)")
        prev = 0.0
        for k in names_sorted:
            m = statistics.median(per[k])
            star = "*" if len(per[k]) < len(tls) / 2 else " "
            print(f"  {m:7.2f}  (+{m - prev:6.2f}) {star} {k}  [n={len(per[k])}]")
            prev = m


def other_marks(marks: list[Mark], names: dict[int, str]) -> None:
    """Per-peer medians of the costs marked with durations (signing, SQLite, merges)."""
    d: dict[str, list[float]] = defaultdict(list)
    for _, pid, tag, _, detail in marks:
        if (tag in ("sign", "sqlite", "w_add_path", "merged") or tag.startswith(("d_", "w_"))) \
                and detail.endswith("us"):
            d[f"{tag} @{names.get(pid, 'w')}"].append(int(detail.split(":")[-1][:-2]) / 1000)
    for k in sorted(d):
        v = d[k]
        print(f"  {k}: median {statistics.median(v):.2f} ms, p90 {be.pct(v, 90):.2f} ms,"
              f" n={len(v)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", default="1,3")
    ap.add_argument("-n", type=int, default=60)
    ap.add_argument("--keep", type=Path, help="keep the traces in this directory")
    ap.add_argument("--tree", type=Path, help="run this tree's code (default: this one)")
    ap.add_argument("--spy", type=Path, help="py-spy each peer during the timed batch into DIR")
    a = ap.parse_args()
    for n in [int(x) for x in a.peers.split(",")]:
        with tempfile.TemporaryDirectory(prefix="trace-latency-") as tmp:
            base = Path(tmp)
            tdir = a.keep / f"n{n}" if a.keep else base / "trace"
            tdir.mkdir(parents=True, exist_ok=True)
            for f in tdir.glob("trace.*"):
                f.unlink()
            os.environ["BANZAI_TRACE_DIR"] = str(tdir)
            bm.BIN = wrapper_bin(base)
            mesh = bm.start_mesh(n, base)
            client: list[Mark] = []
            cpu: list[list[tuple[float, float]]] = []
            try:
                lat = asyncio.run(latency_batch(mesh, a.n, client, cpu,
                                                a.spy / f"n{n}" if a.spy else None))
            finally:
                bm.stop_mesh(mesh)
            names = {p.proc.pid: f"p{i}" for i, p in enumerate(mesh.peers)}
            marks = read_marks(tdir)
            report(n, lat, client, marks, names)
            other_marks(marks, names)
            if len(cpu) == 2:
                per = [(o1 - o0, w1 - w0)
                       for (o0, w0), (o1, w1) in zip(cpu[0], cpu[1], strict=True)]
                print("  CPU ms per job (peer / its workers): " + ", ".join(
                    f"p{i} {o * 1000 / a.n:.1f} / {w * 1000 / a.n:.1f}"
                    for i, (o, w) in enumerate(per))
                    + f"; all {sum(o + w for o, w in per) * 1000 / a.n:.1f}")


if __name__ == "__main__":
    main()

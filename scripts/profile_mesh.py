#!/usr/bin/env python3
"""Where the CPU per task goes (issue 12): one job of n independent ECHO tasks on N real peers
(bench_mesh.py's mesh), or with `--kind jobs` n one-task jobs posted round robin over the
peers (`--kind jobs0`: all posted to peer 0, which runs them while the others only receive;
`--kind dag0`: the dag's tasks require a label only peer 0 announces, so it runs them all),
measured three ways on the same mesh, one batch each. Several kinds (`--kind dag,dag0`) run
on one mesh, alternated `--repeat` times (peer 0 is labelled whenever dag0 is asked for).
With `--lanes` every peer runs with --lanes (partial replication): a job's task events go
to its members only (without it, with --no-lanes); each cpu batch names its last job's
`members` (p0 ...).

    .venv/bin/python scripts/profile_mesh.py [--peers 1,3] [-n 1000]
        [--kind dag|dag0|jobs|jobs0[,...]] [--repeat R] [--settle] [--lanes]
        [--spy DIR [--spy-rate HZ] [--spy-native]] [--strace] [--json PATH]

1. cpu: CPU seconds (/proc, user + system) of every peer process, its forkserver and its
   workers around one batch, per task; and events per task, with the claims, outcomes,
   frames and events received summed over the peers (/metrics: `counted_per_task`;
   claims{by=self} above 1 are claims of a task made twice, chunks done by self above 1
   runs made twice). With --settle each batch's window runs on until every peer has
   compacted what the batch pushed out of the recent history (bench_mesh.settle, as
   bench_mesh's CPU rows; n ≥ 1,000: every job posted before it, on every peer; a pass
   every 5 s: otherwise it falls in whichever window it falls in), and
   `net_ms_per_task` takes off what the idle mesh (`idle_ms_per_s`, measured once) spent
   while the window waited; `per_peer_net_ms` takes off each peer process's own idle CPU
   (`idle_per_peer_ms_per_s`, measured once over IDLE_PEER_S) over that wait. The peers' share is
   also split by thread (`peer_threads_ms`): "loop" (the main thread, the event loop) and
   "other" (the inline writer, the fsync pool, `to_thread`: kernel file-system work, the
   part that varies most between meshes of the same code; docs/benchmarks.md), and per
   peer (`per_peer_ms`, p0 first).
2. spy (--spy DIR): py-spy (100 Hz or --spy-rate, raw, idle excluded; with --spy-native C
   frames too, each sample pausing the peer, and no idle left out: for where C time goes
   within a Python function, not for shares) on every peer with
   --subprocesses during one batch (settled with --settle); the top functions per process
   kind (peer, worker), as a share of that kind's samples and as ms per task (share x the
   kind's CPU per task of step 1), and per peer process (`per_peer`, with lanes the job's
   `members`: the non-member's own).
3. strace (--strace): `strace -c -f` on peer 0 and, separately, on its forkserver and workers
   during one batch; system calls per task (of the whole batch) by name, fsyncs first.
Each instrument perturbs the others, so each has its own batch; step 1 runs uninstrumented.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "scripts"))

import bench_mesh as bm  # noqa: E402  (start_mesh, banzai_batches, hot_spots)
import bench_pipeline as bp  # noqa: E402  (descendants)


def kinds_of(mesh: bm.Mesh) -> dict[int, str]:
    """pid -> "peer", "forkserver" or "worker" for every process of the mesh."""
    out: dict[int, str] = {}
    for p in mesh.peers:
        out[p.proc.pid] = "peer"
        for pid, (ppid, cmd) in bp.descendants(p.proc.pid).items():
            out[pid] = "forkserver" if "forkserver" in cmd and ppid == p.proc.pid else "worker"
    return out


def _cpu_s(pid: int) -> float:
    with contextlib.suppress(OSError):
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def cpu_by_kind(mesh: bm.Mesh) -> dict[int, tuple[str, float]]:
    return {pid: (kind, _cpu_s(pid)) for pid, kind in kinds_of(mesh).items()}


def _thread_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of process `pid` (tid -> s; the main thread's tid is pid)."""
    out: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                f = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    return out


def peer_threads(mesh: bm.Mesh) -> dict[tuple[int, int], float]:
    """(peer pid, tid) -> CPU seconds, for every thread of every peer process."""
    return {(p.proc.pid, tid): s for p in mesh.peers
            for tid, s in _thread_cpu_s(p.proc.pid).items()}


def split_threads(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float],
                  n: int) -> dict[str, float]:
    """The peers' CPU between two `peer_threads` readings, ms per task of `n`: their main
    threads ("loop") and the others ("other"; a thread new since `before` counts from 0)."""
    loop = other = 0.0
    for (pid, tid), s in after.items():
        d = s - before.get((pid, tid), 0.0)
        if tid == pid:
            loop += d
        else:
            other += d
    return {"loop": round(loop * 1000 / n, 3), "other": round(other * 1000 / n, 3)}


KINDS = ("dag", "dag0", "jobs", "jobs0", "jobs0par")
LABEL_FLAG, LABEL = ("--label", "bench=only"), {"labels": {"bench": "only"}}  # dag0's


def batch(mesh: bm.Mesh, n: int, kind: str, settled: bool = False) -> dict[str, Any]:
    """One batch of `n` tasks: `kind` "dag" (one job of n tasks), "dag0" (the same, each task
    requiring peer 0's label), "jobs" (n one-task jobs round robin over the peers), "jobs0"
    (all posted to peer 0) or "jobs0par" (as jobs0, with bench_mesh.PAR_POSTS posted at
    once); `settled`: bench_mesh.banzai_batches'."""
    if kind == "dag0":
        got = dict(bm.banzai_batches(mesh, ["dag"], n, 0, requires=LABEL,
                                     settled=settled)["dag"])
        assert set(got["per_peer"]) == {"p0"}, f"a labelled task ran elsewhere: {got}"
        return got
    return dict(bm.banzai_batches(mesh, [kind], n, 0, settled=settled)[kind])


# Counters read from every peer's /metrics around a cpu batch, summed over the peers, per
# task (a labelled counter by its labels too: claims by whose, chunk outcomes).
COUNTED = ("banzai_frames_received_total", "banzai_frames_sent_total",
           "banzai_events_received_total", "banzai_events_new_total",
           "banzai_claims_total", "banzai_chunks_total")


def counted(text: str) -> dict[str, float]:
    """The COUNTED samples of one peer's /metrics text, by name without `banzai_` and
    `_total`, a labelled one with its labels (`claims{by=self}`)."""
    out: dict[str, float] = {}
    for smp in bm.samples(text):
        if smp.name in COUNTED:
            labels = ",".join(f"{k}={v}" for k, v in sorted(smp.labels.items()))
            key = smp.name.removeprefix("banzai_").removesuffix("_total")
            out[key + (f"{{{labels}}}" if labels else "")] = smp.value
    return out


def counters(mesh: bm.Mesh) -> defaultdict[str, float]:
    """`counted`, summed over the peers."""
    out: defaultdict[str, float] = defaultdict(float)
    for text in bm.metrics_texts(mesh):
        for k, v in counted(text).items():
            out[k] += v
    return out


IDLE_PEER_S = 10.0  # the idle window per peer: /proc's 10 ms ticks, 1 ms/s resolution


def idle_per_peer(mesh: bm.Mesh, window_s: float = IDLE_PEER_S) -> list[float]:
    """CPU ms per second of each idle peer process (all threads; p0 first), compaction
    caught up (bench_mesh.settle): heartbeats, probes, anti-entropy, timers, and settle's
    polls of its /metrics (bench_mesh.polled_idle)."""
    bm.settle(mesh)
    before = peer_threads(mesh)
    waited = bm.polled_idle(mesh, window_s)
    after = peer_threads(mesh)
    return [round(sum(split_threads(_of(before, p), _of(after, p), 1).values()) / waited, 2)
            for p in mesh.peers]


def net_per_peer(per_peer_ms: Sequence[dict[str, float]], idle_ms_per_s: Sequence[float],
                 waited_s: float, n: int) -> list[float]:
    """Each peer process's CPU ms per task of a batch (`per_peer_ms`: loop + other), less
    its idle CPU (`idle_ms_per_s`) over the `waited_s` of the window that waited for
    compaction (as bench_mesh.net_ms_per_task for the mesh)."""
    return [round(x["loop"] + x["other"] - idle * waited_s / n, 3)
            for x, idle in zip(per_peer_ms, idle_ms_per_s, strict=True)]


def step_cpu(mesh: bm.Mesh, n: int, kind: str, settled: bool = False, lanes: bool = False,
             idle_ms_per_s: Sequence[float] = ()) -> dict[str, Any]:
    """One batch's CPU; `settled`: the window runs on until every peer has compacted what the
    batch pushed out of the recent history (bench_mesh.settle; for n ≥ 1,000 every job
    posted before it), and `net_ms_per_task` takes off what the idle mesh spent while the
    window waited (this window also holds the job view and counters bench_mesh reads after
    its own: `cpu_ms_per_task` is that one's), and with `idle_ms_per_s` (`idle_per_peer`)
    `per_peer_net_ms` each peer's; `lanes`: name the job's `members`."""
    before, threads, c0 = cpu_by_kind(mesh), peer_threads(mesh), counters(mesh)
    got = batch(mesh, n, kind, settled)
    after, threads_after = cpu_by_kind(mesh), peer_threads(mesh)
    grown = {k: v - c0[k] for k, v in counters(mesh).items()}
    per: defaultdict[str, float] = defaultdict(float)
    for pid, (what, s) in after.items():
        per[what] += s - before.get(pid, (what, 0.0))[1]  # a new worker counts from 0
    per_peer_ms = [split_threads(_of(threads, p), _of(threads_after, p), n)
                   for p in mesh.peers]
    return {"kind": kind, "tasks_per_s": got["tasks_per_s"],
            "cpu_ms_per_task": got["cpu_ms_per_task"], "per_peer_tasks": got.get("per_peer"),
            **{k: got.get(k) for k in ("events_per_task", "frames_per_task",
                                       "gossip_bytes_per_task")},
            "load1": got["load1"],
            **({"settle_s": got["settle_s"], "net_ms_per_task": round(bm.net_ms_per_task(
                sum(per.values()), mesh.idle_s_per_s, got["settle_s"], n), 3)}
               if settled else {}),
            "by_kind_ms": {k: round(v * 1000 / n, 3) for k, v in sorted(per.items())},
            "peer_threads_ms": split_threads(threads, threads_after, n),
            "per_peer_ms": per_peer_ms,
            **({"per_peer_net_ms": net_per_peer(per_peer_ms, idle_ms_per_s, got["settle_s"],
                                                n)} if settled and idle_ms_per_s else {}),
            "counted_per_task": {k: round(v / n, 3) for k, v in sorted(grown.items()) if v},
            **({"members": members(mesh)} if lanes else {})}


def members(mesh: bm.Mesh) -> list[str] | None:
    """The members (p0, p1 ...) of the newest lanes job, as a non-member's job list names
    them (`members` in its entries); None: no peer's list names any (every peer a member,
    or no lanes job)."""
    names, newest = mesh.names(), None
    for p in mesh.peers:
        for j in bm._get(p.url + "/api/jobs")["jobs"]:
            if j.get("members") and (newest is None or j["submitted_ms"] > newest[0]):
                newest = (j["submitted_ms"], [names.get(m, m) for m in j["members"]])
    return None if newest is None else newest[1]


def _of(threads: dict[tuple[int, int], float], p: bm.Peer) -> dict[tuple[int, int], float]:
    """The threads of peer `p` of a `peer_threads` reading."""
    return {k: s for k, s in threads.items() if k[0] == p.proc.pid}


def step_spy(mesh: bm.Mesh, n: int, kind: str, out_dir: Path, cpu: dict[str, float],
             rate_hz: int = 100, settled: bool = False, lanes: bool = False,
             native: bool = False) -> dict[str, Any]:
    """py-spy on every peer during one batch (`settled`: its window holds the compaction, as
    step_cpu's); the top functions per process kind, and per peer process (`per_peer`: its
    CPU ms per task in this batch, its own top functions as ms of it; `lanes`: the job's
    `members`, so the non-member's is told apart)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raws, spies = [], []
    for i, p in enumerate(mesh.peers):
        raw = out_dir / f"pyspy-{len(mesh.peers)}peers-p{i}.txt"
        raws.append(raw)
        spies.append(subprocess.Popen(
            [str(BIN / "py-spy"), "record", "--pid", str(p.proc.pid), "--subprocesses",
             "--rate", str(rate_hz), "--format", "raw", "--output", str(raw),
             *(["--native"] if native else ["--nonblocking"])],  # (py-spy: not both)
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(2.0)  # py-spy attaches
    threads = peer_threads(mesh)
    got = batch(mesh, n, kind, settled)
    threads_after = peer_threads(mesh)
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    merged = out_dir / f"pyspy-{len(mesh.peers)}peers-all.txt"
    merged.write_text("".join(r.read_text(errors="replace") for r in raws if r.exists()))
    hot = bm.hot_spots(merged, top=25)
    for kind, h in hot.items():  # a share of the kind's samples as ms of its CPU per task
        ms = cpu.get(kind, 0.0) + (cpu.get("forkserver", 0.0) if kind == "worker" else 0.0)
        for key in ("self", "incl"):
            h[key] = [(f, share, round(share * ms / 100, 3)) for f, share in h[key]]
    per_peer = []
    for p, raw in zip(mesh.peers, raws, strict=True):
        ms = sum(split_threads(_of(threads, p), _of(threads_after, p), n).values())
        own = bm.hot_spots(raw, top=25).get("peer", {"samples": 0, "self": [], "incl": []})
        per_peer.append({"ms_per_task": round(ms, 3), "samples": own["samples"],
                         **{key: [(f, share, round(share * ms / 100, 3))
                                  for f, share in own[key]] for key in ("self", "incl")}})
    return {"tasks_per_s": got["tasks_per_s"], "raw": str(merged), "hot": hot,
            "per_peer": per_peer, **({"members": members(mesh)} if lanes else {})}


_STRACE_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)\s*$")


def _strace_calls(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            m = _STRACE_ROW.match(line)
            if m and m.group(3) != "total":
                out[m.group(3)] = int(m.group(1))
    return out


def step_strace(mesh: bm.Mesh, n: int, kind: str, out_dir: Path) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    p0 = mesh.peers[0].proc.pid
    kids = [pid for pid, k in kinds_of(mesh).items() if k != "peer"
            and pid in bp.descendants(p0)]
    files = {"peer": out_dir / f"strace-{len(mesh.peers)}peers-peer0.txt",
             "workers": out_dir / f"strace-{len(mesh.peers)}peers-workers0.txt"}
    pids = {"peer": [p0], "workers": kids}
    procs = []
    for who, path in files.items():
        args = ["strace", "-c", "-f", "-o", str(path)]
        for pid in pids[who]:
            args += ["-p", str(pid)]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    time.sleep(2.0)
    got = batch(mesh, n, kind)
    for sp in procs:
        sp.send_signal(signal.SIGINT)
    for sp in procs:
        sp.wait(60)
    out: dict[str, Any] = {"tasks_per_s": got["tasks_per_s"], "per_peer": got.get("per_peer")}
    for who, path in files.items():
        calls = _strace_calls(path)
        top = sorted(calls.items(), key=lambda kv: -kv[1])
        out[who] = {"total_per_task": round(sum(calls.values()) / n, 1),
                    "fsync_per_task": round(sum(calls.get(c, 0) for c in
                                                ("fsync", "fdatasync")) / n, 2),
                    "top_per_task": [(c, round(v / n, 2)) for c, v in top[:20]]}
    return out


def kinds_arg(text: str) -> list[str]:
    """`--kind`: batch kinds, comma-separated, each one of KINDS."""
    kinds = text.split(",")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise argparse.ArgumentTypeError(f"{', '.join(bad)}: not one of {', '.join(KINDS)}")
    return kinds


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--peers", default="1,3")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--spy", type=Path, help="py-spy output directory")
    ap.add_argument("--spy-rate", type=int, default=100, help="py-spy's samples per second")
    ap.add_argument("--spy-native", action="store_true",
                    help="py-spy --native: C frames too (Ed25519, SQLite, libc); needs root, "
                    "pauses each peer per sample (the batch runs ~8x slower)")
    ap.add_argument("--strace", type=Path, help="strace output directory")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--kind", type=kinds_arg, default=["dag"],
                    help="the batches, comma-separated, alternated on one mesh: dag (one job "
                    "of n tasks), dag0 (its tasks run by p0 alone), jobs, jobs0 or jobs0par "
                    "(n one-task jobs, round robin, all posted to p0, or to p0 with "
                    "PAR_POSTS in flight)")
    ap.add_argument("--repeat", type=int, default=1, help="cpu batches of each kind")
    ap.add_argument("--settle", action="store_true",
                    help="each cpu batch's window holds one job's compaction on every peer (n "
                    ">= 1000)")
    ap.add_argument("--lanes", action="store_true",
                    help="every peer with --lanes (their default), else --no-lanes")
    a = ap.parse_args(argv)
    kinds = a.kind
    res: dict[str, Any] = {"machine": bp.machine(), "n": a.n, "kind": ",".join(kinds),
                           "lanes": a.lanes, "by_n": {}}
    with tempfile.TemporaryDirectory(prefix="profile-mesh-") as tmp:
        for npeers in [int(x) for x in a.peers.split(",")]:
            d = Path(tmp) / f"n{npeers}"
            mesh = bm.start_mesh(npeers, d, extra=bm.lanes_flags(a.lanes),
                                 first_extra=LABEL_FLAG if "dag0" in kinds else ())
            r: dict[str, Any] = {"cpu": []}
            try:
                bm.banzai_batches(mesh, ["warm"], a.n, 0, settled=a.settle)
                if "dag0" in kinds:  # the labelled tasks' first claims and TURNs
                    batch(mesh, min(a.n, 200), "dag0", a.settle)
                if a.settle:
                    r["idle_ms_per_s"] = round(mesh.idle_s_per_s * 1000, 2)
                    r["idle_per_peer_ms_per_s"] = idle_per_peer(mesh)
                for _ in range(a.repeat):
                    for kind in kinds:
                        r["cpu"].append(step_cpu(mesh, a.n, kind, a.settle, a.lanes,
                                                 r.get("idle_per_peer_ms_per_s", ())))
                        print(f"N={npeers} cpu: {r['cpu'][-1]}", file=sys.stderr, flush=True)
                for kind in kinds if a.spy else ():
                    r.setdefault("spy", {})[kind] = step_spy(
                        mesh, a.n, kind, a.spy / kind,
                        next(c for c in r["cpu"] if c["kind"] == kind)["by_kind_ms"],
                        a.spy_rate, a.settle, a.lanes, a.spy_native)
                for kind in kinds if a.strace else ():
                    r.setdefault("strace", {})[kind] = step_strace(mesh, a.n, kind,
                                                                   a.strace / kind)
            finally:
                bm.stop_mesh(mesh)
            res["by_n"][npeers] = r
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if a.json:
        a.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""SWIM membership at scale (issue 12's membership target), in the in-process simulator.

    .venv/bin/python scripts/bench_membership.py [--peers 1000] [--loss 0.05] [--idle-s 20]
        [--victims 5] [--seed 1] [--json PATH] [--write docs/benchmarks.md]

The real Gossip class (SWIM with the lan() timings: probe every 0.5 s, probe timeout
0.25 s, 3 indirect probes, suspicion 4 x log10(N) periods, up to 6 x that unconfirmed) on a
MemoryNetwork with a fake clock, every frame lost with probability --loss. The peers start
as after a finished join (each knows every other alive). Reported:
  idle bytes/s per peer   every frame sent (probes, acks, indirect probes, piggybacked
                          updates, refutations, anti-entropy DIGEST_SUMs) over --idle-s
                          seconds with nothing happening, divided by N;
  false suspicion rate    suspicions raised by a failed probe of a live member, per probe;
                          also the share of live members suspected at least once, and
                          false deaths (must be 0);
  dead known to all       for --victims peers stopped one after the other: seconds from the
                          stop until every other peer holds it DEAD; median and max.

    .venv/bin/python scripts/bench_membership.py --loopback 5,20 [--loopback-s 30]
        [--code DIR]

Real peers instead: N `banzai-peer` processes on 127.0.0.1 (bench_mesh.start_mesh: mDNS on
127.0.0.1, --slots 1), idle once formed; the CPU of each peer's own process (not its
workers) over --loopback-s seconds, in % of one core, mean over the peers. --code runs the
peers from another checkout (the previous release, to compare on the same machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from peer.mesh.gossip import GossipConfig  # noqa: E402
from peer.mesh.sim import Cluster, swim_cluster  # noqa: E402
from peer.mesh.swim import State, SwimConfig  # noqa: E402

DT_S = 0.05  # the simulation's time step


def config() -> GossipConfig:
    # renewals are local calls (no traffic): off, so that 1,000 sinks are not called N^2 times
    return GossipConfig.lan(swim=SwimConfig.lan(), renew_s=1e9)


def run_for(c: Cluster, seconds: float) -> None:
    for _ in range(round(seconds / DT_S)):
        c.clock.advance(DT_S)
        for p in c.peers:
            p.gossip.tick()
        c.net.pump()


def idle(c: Cluster, seconds: float) -> dict[str, Any]:
    run_for(c, 5.0)  # warm up: the random first probes, the queues drained
    b0, f0 = c.net.bytes_sent, c.net.sent
    probes0 = sum(p.gossip.swim.stats.probes for p in c.peers if p.gossip.swim)
    swims0 = [p.gossip.swim for p in c.peers if p.gossip.swim]
    pp0 = [sum(s.stats.push_pulls for s in swims0), sum(s.stats.tables_sent for s in swims0)]
    sus0 = sum(p.gossip.swim.stats.suspicions_raised for p in c.peers if p.gossip.swim)
    suspected: set[str] = set()
    steps = round(seconds / DT_S)
    for _ in range(steps):
        c.clock.advance(DT_S)
        for p in c.peers:
            p.gossip.tick()
        c.net.pump()
        for p in c.peers[:50]:  # a sample of observers is enough to see who gets suspected
            s = p.gossip.swim
            assert s is not None
            suspected.update(m.id for m in s.members.values() if m.state is State.SUSPECT)
    n = len(c.peers)
    swims = [p.gossip.swim for p in c.peers if p.gossip.swim]
    probes = sum(s.stats.probes for s in swims) - probes0
    sus = sum(s.stats.suspicions_raised for s in swims) - sus0
    return {"bytes_per_peer_s": (c.net.bytes_sent - b0) / n / seconds,
            "frames_per_peer_s": (c.net.sent - f0) / n / seconds,
            "probes": probes, "false_suspicions": sus,
            "false_suspicion_rate": sus / probes if probes else 0.0,
            "suspected_share": len(suspected) / n,
            "false_deaths": sum(s.stats.deaths for s in swims),
            "push_pulls": sum(s.stats.push_pulls for s in swims) - pp0[0],
            "tables_sent": sum(s.stats.tables_sent for s in swims) - pp0[1]}


def detect(c: Cluster, victims: int, limit_s: float = 60.0) -> list[float | None]:
    out: list[float | None] = []
    for k in range(victims):
        victim = c.peers[(k * 97 + 13) % len(c.peers)]
        vid = victim.gossip.peer_id
        c.net._nodes[victim.addr].close_now()
        c.peers.remove(victim)
        t0 = c.clock()
        took = None
        while c.clock() - t0 < limit_s:
            run_for(c, 0.25)
            if all((s := p.gossip.swim) is not None and (m := s.members.get(vid)) is not None
                   and m.state is State.DEAD for p in c.peers):
                took = c.clock() - t0
                break
        out.append(took)
        run_for(c, 2.0)
    return out


def cpu_s(pid: int) -> float:
    """user+system CPU seconds of the process `pid` alone (not its children)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def loopback(sizes: list[int], seconds: float, code: Path | None) -> list[dict[str, Any]]:
    import tempfile

    import bench_mesh as bm
    if code is not None:
        bm.ROOT = code.resolve()  # the peers import their code from there
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-membership-") as tmp:
            mesh = bm.start_mesh(n, Path(tmp), timeout_s=300)
            try:
                time.sleep(5.0)  # joined, workers up: idle from here
                pids = [p.proc.pid for p in mesh.peers]
                c0, t0 = [cpu_s(p) for p in pids], time.monotonic()
                load0 = os.getloadavg()[0]
                time.sleep(seconds)
                c1, t1 = [cpu_s(p) for p in pids], time.monotonic()
                per = [(b - a) / (t1 - t0) * 100 for a, b in zip(c0, c1, strict=True)]
                out.append({"peers": n, "cpu_pct_per_peer": statistics.mean(per),
                            "cpu_pct_max": max(per), "seconds": t1 - t0,
                            "load": (load0, os.getloadavg()[0]),
                            "machine": bm.machine_line()})
                print(out[-1], flush=True)
            finally:
                bm.stop_mesh(mesh)
    return out


def markdown(r: dict[str, Any], command: str) -> str:
    d = [x for x in r["dead_known_to_all_s"] if x is not None]
    med = f"{statistics.median(d):.1f} s" if d else "never"
    mx = f"{max(d):.1f} s" if d else "-"
    i = r["idle"]
    return "\n".join([
        f"Command: `{command}` ({r['date']}; {r['wall_s']:.0f} s of simulation on "
        f"{r['machine']}; load average at start / end {r['load'][0]:.1f} / {r['load'][1]:.1f}, "
        "which stretches only the wall time: the simulation is deterministic).",
        "",
        f"N = {r['peers']} SWIM peers, {r['loss'] * 100:g} % of frames lost (each kind, each "
        "direction), `lan()` timings; the peers start as after a finished join.",
        "",
        "| figure | measured | target |",
        "| --- | --- | --- |",
        f"| idle traffic per peer | {i['bytes_per_peer_s']:.0f} B/s "
        f"({i['frames_per_peer_s']:.1f} frames/s) | ≤ 2 KB/s |",
        f"| dead peer known to all (median of {len(r['dead_known_to_all_s'])}) | {med} "
        f"(max {mx}) | ≤ 10 s |",
        f"| false suspicions of live peers, per probe | "
        f"{i['false_suspicion_rate'] * 100:.2f} % ({i['false_suspicions']} of {i['probes']}) "
        "| ≤ 1 % |",
        f"| live peers suspected at least once in {r['idle_s']:g} s | "
        f"{i['suspected_share'] * 100:.1f} % | - |",
        f"| live peers declared dead | {i['false_deaths']} | 0 |",
        f"| push-pull hashes sent / tables sent back (hash mismatch) in {r['idle_s']:g} s | "
        f"{i.get('push_pulls', 0)} / {i.get('tables_sent', 0)} | - |",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--loss", type=float, default=0.05)
    ap.add_argument("--idle-s", type=float, default=20.0)
    ap.add_argument("--victims", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write", type=Path)
    ap.add_argument("--loopback", help="real peers on loopback, e.g. 5,20 (no simulation)")
    ap.add_argument("--loopback-s", type=float, default=30.0)
    ap.add_argument("--code", type=Path, help="the checkout the real peers run")
    a = ap.parse_args(argv)
    if a.loopback:
        rows = loopback([int(x) for x in a.loopback.split(",")], a.loopback_s, a.code)
        print(json.dumps(rows, indent=1))
        if a.json:
            a.json.write_text(json.dumps(rows, indent=1))
        return 0
    import platform
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    c = swim_cluster(a.peers, config(), loss=a.loss, seed=a.seed)
    r: dict[str, Any] = {"peers": a.peers, "loss": a.loss, "idle_s": a.idle_s,
                         "idle": idle(c, a.idle_s),
                         "dead_known_to_all_s": detect(c, a.victims)}
    r["wall_s"] = time.monotonic() - t0
    r["load"] = (load0, os.getloadavg()[0])
    r["date"] = time.strftime("%Y-%m-%d")
    r["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(json.dumps(r, indent=1))
    command = "python scripts/bench_membership.py " + " ".join(argv or sys.argv[1:])
    md = markdown(r, command.strip())
    print(md)
    if a.json:
        a.json.write_text(json.dumps(r, indent=1))
    if a.write:
        from bench_pipeline import write_section
        write_section(a.write, "Membership at N = 1,000 (SWIM, issue 12)", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

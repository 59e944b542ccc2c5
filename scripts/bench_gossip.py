#!/usr/bin/env python3
"""Gossip at scale: in-process simulation (peer.mesh.sim.simulate) of rounds to converge
and idle traffic for 10 .. 1000 peers, with frame loss 0 %, 10 % and 30 %.

    .venv/bin/python scripts/bench_gossip.py [--sizes 10,30,100,300,1000] [--loss 0,0.1,0.3]
        [--fanout 8] [--seeds 5] [--big 1000] [--write docs/benchmarks.md] [--json PATH]

No sockets and no sleeps: the real Gossip class runs on a MemoryNetwork with a fake clock
(see peer/gossip_sim.py). Two dissemination modes per (n, loss):
  push+ae  as deployed: every peer emits one event and broadcasts it (fanout `--fanout`,
           hop budget push_hops), then anti-entropy rounds (every peer starts one
           push-pull exchange with a random live peer per round) until every peer holds
           every event. 0 rounds = the push alone delivered everything.
  ae-only  the same without the push: anti-entropy alone has to spread all n events.
A "round" is one anti-entropy interval (lan(): 1 s). Sizes >= `--big` run one seed only
(the 1000-peer simulation takes minutes); smaller sizes run `--seeds` seeds, median and max
reported. Idle bytes per peer per second are measured on the converged mesh from real
frames (heartbeats to every live peer every 0.5 s + one digest exchange per second).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_mesh import machine_line  # noqa: E402
from bench_pipeline import write_section  # noqa: E402

from peer.mesh.gossip import GossipConfig  # noqa: E402
from peer.mesh.sim import simulate  # noqa: E402

SECTION = "## Gossip at scale (issue 4)"


def run(sizes: list[int], losses: list[float], fanout: int, seeds: int, big: int,
        max_rounds: int, modes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        nseeds = 1 if n >= big else seeds
        for loss in losses:
            for mode in modes:
                rounds: list[int | None] = []
                idle: list[float] = []
                t0 = time.perf_counter()
                for seed in range(nseeds):
                    r, b = simulate(n, loss, fanout, seed=seed, max_rounds=max_rounds,
                                    push=(mode == "push+ae"))
                    rounds.append(r)
                    idle.append(b)
                done = [r for r in rounds if r is not None]
                row = {"n": n, "loss": loss, "mode": mode, "seeds": nseeds, "rounds": rounds,
                       "median": statistics.median(done) if done else None,
                       "max": max(done) if done else None,
                       "failed": len(rounds) - len(done), "log2n": math.log2(n),
                       "idle_bytes_per_peer_s": statistics.median(idle),
                       "sim_s": round(time.perf_counter() - t0, 1),
                       "load1": os.getloadavg()[0]}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def fmt_rounds(r: dict[str, Any], max_rounds: int) -> str:
    if r["median"] is None:
        return f"> {max_rounds} (all {r['seeds']} seeds)"
    s = f"{r['median']:g}" if r["seeds"] == 1 else f"{r['median']:g} (max {r['max']})"
    if r["failed"]:
        s += f", {r['failed']}/{r['seeds']} seeds > {max_rounds}"
    return s


def markdown(rows: list[dict[str, Any]], a: argparse.Namespace, command: str,
             wall_s: float, loads: tuple[float, float]) -> str:
    lan = GossipConfig.lan()
    sizes = sorted({r["n"] for r in rows})
    losses = sorted({r["loss"] for r in rows})
    modes = [m for m in ("push+ae", "ae-only") if any(r["mode"] == m for r in rows)]
    by = {(r["n"], r["loss"], r["mode"]): r for r in rows}
    lines = [
        SECTION, "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}; {wall_s / 60:.1f} min of "
        f"simulation; load average (1 min) at start / end: {loads[0]:.1f} / {loads[1]:.1f}, "
        "which only stretches the wall time: the simulation is deterministic, rounds and "
        "bytes do not depend on the load).",
        f"Machine: {machine_line()}.",
        "",
        "In-process simulation (`peer.mesh.sim.simulate`): the real `peer.mesh.gossip.Gossip` "
        "class on an in-memory network with a fake clock; every frame is dropped with "
        "probability *loss* (both directions, every kind). Every peer emits one event; "
        f"fanout {a.fanout} (the `lan()` default), push hop budget {lan.push_hops}, at most "
        "64 events per anti-entropy frame (`local()` batch size). "
        "**push+ae** = as deployed (broadcast, then anti-entropy); **ae-only** = no push, "
        "anti-entropy alone spreads all n events. A round is one anti-entropy interval "
        f"(`lan()`: {lan.anti_entropy_s:g} s) in which every peer starts one push-pull "
        "exchange with a random live peer; 0 = the push alone delivered everything. "
        f"Cells: median (max) over {a.seeds} seeds for n < {a.big}; "
        f"**n ≥ {a.big}: one seed only** (minutes per simulation), so no spread is given.",
        "",
        "| peers | log2 N | " + " | ".join(f"{m}, loss {int(x * 100)} %" for m in modes
                                          for x in losses) + " |",
        "| --- | --- | " + " | ".join("---" for _ in modes for _ in losses) + " |",
    ]
    for n in sizes:
        cells = [fmt_rounds(by[(n, x, m)], a.max_rounds) if (n, x, m) in by else "not run"
                 for m in modes for x in losses]
        lines.append(f"| {n} | {math.log2(n):.1f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Idle traffic per peer (no jobs; lan() timings: heartbeat every {lan.heartbeat_s:g} s "
        f"to every live peer, one digest exchange every {lan.anti_entropy_s:g} s; measured "
        "from encoded frames, no loss, no UDP/TCP headers):",
        "",
        "| peers | idle bytes / peer / s | per other peer |",
        "| --- | --- | --- |",
    ]
    for n in sizes:
        b = next(r for r in rows if r["n"] == n)["idle_bytes_per_peer_s"]
        lines.append(f"| {n} | {b:,.0f} ({b / 1024:.1f} KiB/s) | {b / max(n - 1, 1):.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,30,100,300,1000")
    ap.add_argument("--loss", default="0,0.1,0.3")
    ap.add_argument("--fanout", type=int, default=GossipConfig.lan().fanout)
    ap.add_argument("--seeds", type=int, default=5, help="seeds per size below --big")
    ap.add_argument("--big", type=int, default=1000, help="sizes from here on: one seed")
    ap.add_argument("--max-rounds", type=int, default=200)
    ap.add_argument("--modes", default="push+ae,ae-only")
    ap.add_argument("--big-modes", default="push+ae,ae-only",
                    help="modes run for sizes >= --big (to bound the time)")
    ap.add_argument("--write", type=Path, help="update this markdown file's section")
    ap.add_argument("--json", type=Path, help="also save the raw rows here")
    ap.add_argument("--render", type=Path, help="no run: rebuild the section from the --json "
                    "rows of an earlier run made with the same options")
    ap.add_argument("--as-command", help="with --render: the command of that run")
    a = ap.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",")]
    losses = [float(x) for x in a.loss.split(",")]
    cmd = ".venv/bin/python scripts/bench_gossip.py" + "".join(
        f" {x}" for x in (argv if argv is not None else sys.argv[1:]))
    if a.render:
        rows = json.loads(a.render.read_text())
        wall = sum(r["sim_s"] for r in rows)
        loads = (rows[0]["load1"], rows[-1]["load1"])
        cmd, a.json = a.as_command or cmd, None
    else:
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        rows = run([n for n in sizes if n < a.big], losses, a.fanout, a.seeds, a.big,
                   a.max_rounds, a.modes.split(","))
        rows += run([n for n in sizes if n >= a.big], losses, a.fanout, a.seeds, a.big,
                    a.max_rounds, a.big_modes.split(","))
        wall = time.perf_counter() - t0
        loads = (load0, os.getloadavg()[0])
    text = markdown(rows, a, cmd, wall, loads)
    print(text)
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    if a.write:
        write_section(a.write, SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

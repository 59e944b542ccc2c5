#!/usr/bin/env python3
"""The mesh fuzzer of tests/integration/test_log_door.py, for longer runs: three banzai-peer
processes on loopback sharing a mesh secret get N random and mutated frames from a member
(CURVE-admitted, events and heartbeats signed; tests/fuzz_frames.py, sent through
tests/gossip_client.py); then they must be up, converge to one state (heads digest and event
count) and run a small pipeline. Prints the counters.

    PYTHONPATH=$PWD .venv/bin/python scripts/fuzz_mesh.py [--frames 100000] [--per-example 50]
        [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import start_peer  # noqa: E402
from tests.fuzz_frames import batches  # noqa: E402
from tests.gossip_client import GossipClient  # noqa: E402
from tests.helpers import wait_mesh  # noqa: E402
from tests.integration.test_log_door import Mesh, run_pipeline, until_converged  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--per-example", type=int, default=50)
    ap.add_argument("--dir", type=Path, default=None, help="data dirs here (kept)")
    a = ap.parse_args()
    d = a.dir or Path(tempfile.mkdtemp(prefix="fuzz-mesh-"))
    d.mkdir(parents=True, exist_ok=True)
    secret = d / "secret"
    secret.write_text(secrets.token_hex(32))
    name = f"fuzz-{uuid.uuid4().hex[:12]}"
    with ThreadPoolExecutor(3) as ex:
        peers = list(ex.map(lambda i: start_peer(
            d / f"p{i}", "--secret-file", str(secret), "--slots", "1", "--lease-s", "5",
            mesh=name, timeout_s=180), range(3)))
    try:
        wait_mesh(peers, 3)
        mesh = Mesh(peers, name, secret.read_bytes().strip())
        addrs = mesh.gossip_addrs()
        t0 = time.monotonic()
        with GossipClient(name, mesh.secret, identity=True) as client:

            @settings(max_examples=a.frames // a.per_example + 1, deadline=None, database=None,
                      phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(batches(client, len(addrs), a.per_example))
            def fuzz(batch: list[tuple[int, bytes]]) -> None:
                for i, frame in batch:
                    client.send_raw(addrs[i], frame)

            fuzz()
            sent = client.sent
        fuzz_s = time.monotonic() - t0
        crashed = [p.url for p in peers if p.proc.poll() is not None]
        hs = until_converged(mesh, timeout_s=300)
        run_pipeline(mesh)
        tracebacks = sum(p.output.count("Traceback") for p in peers)
        print(json.dumps({"frames": sent, "fuzz_s": round(fuzz_s, 1), "crashed": crashed,
                          "tracebacks": tracebacks,
                          "peers": [{"log": h["log"], "gossip": h["gossip"]} for h in hs]},
                         indent=1))
        return 1 if crashed or tracebacks else 0
    finally:
        for p in peers:
            p.kill(signal.SIGTERM)
        print(f"data dirs and logs: {d}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())

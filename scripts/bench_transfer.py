#!/usr/bin/env python3
"""Moving a 200 MB output between two peers (issue 5): embedded trustless-gateway CAR vs
Kubo bitswap, side by side in one run, on 127.0.0.1 only.

One file of random bytes (CIDv1, 256 KiB chunks, raw leaves) is put on a source node of
each kind, then moved to a fresh, empty receiving node; every figure is MB/s (10^6 bytes of
file per second) for one run; run 1 is "first", the rest give the median.

  embedded, stream   peer A (a real banzai-peer, --no-mdns) holds the file (POST /api/add).
                     GET A/ipfs/{cid}?format=car, streamed (1 MiB reads) into
                     EmbeddedStore.import_car(pin=True) of a fresh store in this process:
                     every block hash-verified, DAG checked complete, pinned. This is the
                     receiving half of peer.ipfs.fetch.Fetcher, minus the event loop.
  embedded, peer     a fresh peer B (--no-mdns, --join A's gossip address, same --mesh-name,
                     --replicas 1) that has seen A alive; time HEAD B/ipfs/{cid}: B's gateway
                     misses the CID, Fetcher.ensure GETs the CAR from A, imports and verifies
                     it, walks the DAG (is_complete) and only then answers. Peer B is
                     stopped after each run; its peak RSS (VmHWM) is reported.
  Kubo, bitswap      Kubo 1 and a fresh Kubo 2 per run and command (tests/integration/kubo.py
                     start_kubo: loopback only, Routing none, no bootstrap, no mDNS, `init
                     --profile=test`, default flatfs+leveldb datastore); `ipfs add -Q
                     --cid-version=1 --pin=true` on Kubo 1, Kubo 2 `swarm connect`s to Kubo 1,
                     then time one of `ipfs --api <kubo2> dag export CID > /dev/null` (a CAR,
                     as the peers move data), `cat CID > /dev/null` or `pin add CID` (the
                     replication analogue): each fetches every block by bitswap into Kubo 2's
                     blockstore. The CLI start (~30-40 ms) is included.
Breakdown of the embedded path (per run, separate fresh stores, not part of the headline):
download only (same Python client, chunks kept in memory), import_car of those chunks
without pin (parse + sha256 + staging writes + rename), the completeness walk (`dag`), and
`curl` of the same CAR to /dev/null (A's gateway without the Python client).

Checks: the embedded and Kubo CIDs are equal; the CAR A serves and the CAR Kubo exports have
the same sha256 (same blocks, same order); Kubo 2 holds the DAG after its run.

    .venv/bin/python scripts/bench_transfer.py [--runs 3] [--file-mb 200]
        [--kubo .cache/kubo/bin/ipfs] [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from scriptlib import load_script, lone_peer, machine  # noqa: E402

from peer.ipfs import EmbeddedStore  # noqa: E402
from peer.ipfs.gateway import PEER_FETCH_HEADER  # noqa: E402
from tests.integration.kubo import KuboDaemon, start_kubo  # noqa: E402

MB = 1_000_000
READ = 1 << 20


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def car_chunks(url: str) -> Iterator[bytes]:
    """The body of GET url, in reads of up to 1 MiB (a peer-fetch request: no re-fetch)."""
    req = urllib.request.Request(url, headers={PEER_FETCH_HEADER: "1"})
    with urllib.request.urlopen(req, timeout=300) as r:
        while chunk := r.read(READ):
            yield chunk


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(fn: Callable[[], object]) -> dict[str, Any]:
    """Run fn, timing it; load averages just before and just after."""
    before = loadavg()
    secs, out = timed(fn)
    return {"s": secs, "load_before": before, "load_after": loadavg(), "out": out}


def wait_until(cond: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def vm_hwm_mib(pid: int) -> float | None:
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith("VmHWM:"):
                return int(ln.split()[1]) / 1024
    except OSError:
        pass
    return None


class Kubo:
    """A KuboDaemon driven by the `ipfs --api` CLI (what an operator would run)."""

    def __init__(self, binary: str, daemon: KuboDaemon) -> None:
        self.binary = binary
        self.d = daemon
        self.api_ma = (daemon.repo / "api").read_text().strip()

    def cli(self, *args: str, stdout: Any = subprocess.PIPE) -> str:
        r = subprocess.run([self.binary, "--api", self.api_ma, *args], stdout=stdout,
                           stderr=subprocess.PIPE, check=True, timeout=600)
        return r.stdout.decode().strip() if stdout == subprocess.PIPE else ""

    def export_sha256(self, cid: str) -> str:
        h = hashlib.sha256()
        with subprocess.Popen([self.binary, "--api", self.api_ma, "dag", "export", cid],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as p:
            assert p.stdout is not None
            while chunk := p.stdout.read(READ):
                h.update(chunk)
        if p.returncode != 0:
            raise RuntimeError(f"dag export {cid} failed")
        return h.hexdigest()

    def swarm_addr(self) -> str:
        ident = self.d.rpc("id")
        addr = next(a for a in ident["Addresses"] if a.startswith("/ip4/127.0.0.1/tcp/"))
        return addr if "/p2p/" in addr else f"{addr}/p2p/{ident['ID']}"

    def datastore(self) -> str:
        spec = json.loads((self.d.repo / "config").read_text())["Datastore"]["Spec"]
        parts = []
        for m in spec.get("mounts", []):
            inner = m.get("child", m)  # older repos nest the store under "child"
            extra = f", sync {str(inner['sync']).lower()}" if "sync" in inner else ""
            parts.append(f"{m.get('mountpoint')} {inner.get('type', '?')}{extra}")
        return "; ".join(parts)


def embedded_stream(url: str, store_dir: Path, cid: str) -> dict[str, Any]:
    store = EmbeddedStore(store_dir)
    r = measure(lambda: store.import_car(car_chunks(url), pin=True))
    assert r["out"] == [cid], r["out"]
    del r["out"]
    return r


def embedded_breakdown(url: str, work: Path, cid: str, curl: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    chunks = list(car_chunks(url))
    out["download"] = time.perf_counter() - t0
    out["car_bytes"] = sum(len(c) for c in chunks)
    store = EmbeddedStore(work / f"bd-{secrets.token_hex(4)}")
    t0 = time.perf_counter()
    store.import_car(chunks)
    out["import"] = time.perf_counter() - t0
    chunks.clear()  # free the CAR before the walk
    out["dag_walk"], _ = timed(lambda: sum(len(b) for _, b in store.dag(cid)))
    shutil.rmtree(store.root)
    if curl:
        out["curl"], _ = timed(lambda: subprocess.run(
            [curl, "-sf", "-o", "/dev/null", "-H", f"{PEER_FETCH_HEADER}: 1", url], check=True))
    return out


def embedded_peer(a_gossip: str, mesh: str, work: Path, url_a: str, cid: str, i: int,
                  ) -> dict[str, Any]:
    data = work / f"peer-b-{i}"
    extra = ("--mesh-name", mesh, "--join", a_gossip, "--replicas", "1")
    with lone_peer(data, work / f"peer-b-{i}.log", 1, mesh_prefix="bench-transfer",
                   log_level="INFO", extra=extra) as (proc, url_b):
        id_a = get_json(url_a + "/api/health")["peer"]

        def sees_a() -> bool:
            return any(p["id"] == id_a and p["state"] == "alive" and not p["self"]
                       for p in get_json(url_b + "/api/peers")["peers"])

        wait_until(sees_a, "peer B to see peer A alive")
        time.sleep(1.0)  # let start-up work settle
        req = urllib.request.Request(f"{url_b}/ipfs/{cid}", method="HEAD")

        def head() -> int:
            with urllib.request.urlopen(req, timeout=600) as r:
                return int(r.status)

        r = measure(head)
        assert r["out"] == 200, r["out"]
        del r["out"]
        r["vm_hwm_mib"] = vm_hwm_mib(proc.pid)
    shutil.rmtree(data, ignore_errors=True)
    return r


KUBO_CMDS = {  # name -> `ipfs --api <kubo2> ...` arguments before the CID
    "dag export": ("dag", "export"),
    "cat": ("cat",),
    "pin add": ("pin", "add"),
}


def kubo_bitswap(binary: str, k1: Kubo, work: Path, cid: str, ref_sha: str, i: int,
                 cmd: tuple[str, ...]) -> dict[str, Any]:
    repo = work / f"kubo2-{'-'.join(cmd)}-{i}"
    k2 = Kubo(binary, start_kubo(repo))
    try:
        k2.d.rpc("swarm/connect", k1.swarm_addr())
        id1 = k1.d.peer_id()
        wait_until(lambda: any(p.get("Peer") == id1
                               for p in (k2.d.rpc("swarm/peers").get("Peers") or [])),
                   "Kubo 2 connected to Kubo 1")
        before = k2.d.rpc("refs/local")
        n_before = before.count(b"\n") if isinstance(before, bytes) else 1
        r = measure(lambda: k2.cli(*cmd, cid, stdout=subprocess.DEVNULL))
        del r["out"]
        r["car_sha256_ok"] = k2.export_sha256(cid) == ref_sha
        local = k2.d.rpc("refs/local")
        r["kubo2_local_blocks"] = (local.count(b"\n") if isinstance(local, bytes)
                                   else 1) - n_before
    finally:
        k2.d.stop()
        shutil.rmtree(repo, ignore_errors=True)
    return r


def summary(size: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    secs = [r["s"] for r in runs]
    med = statistics.median(secs)
    return {"first_mbs": size / MB / secs[0], "median_mbs": size / MB / med, "median_s": med,
            "runs_s": secs, "loads": [(r["load_before"], r["load_after"]) for r in runs]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--file-mb", type=int, default=200)
    ap.add_argument("--kubo", default=str(ROOT / ".cache" / "kubo" / "bin" / "ipfs"),
                    help="path of the `ipfs` binary (default .cache/kubo/bin/ipfs)")
    ap.add_argument("--workdir", type=Path, help="where data and stores go (default: a temp "
                    "dir under the repo's .cache)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    if not 1 <= a.runs <= 20:
        ap.error("--runs must be 1..20")
    base = a.workdir or ROOT / ".cache"
    base.mkdir(parents=True, exist_ok=True)
    curl = shutil.which("curl")
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"load average at start: {loadavg()}", flush=True)
    results: dict[str, Any] = {"machine": machine(), "argv": sys.argv, "runs": a.runs}
    with tempfile.TemporaryDirectory(prefix="bench-transfer-", dir=base) as tmp:
        work = Path(tmp)
        fs = subprocess.run(["df", "-T", str(work)], capture_output=True, text=True).stdout
        print("filesystem: " + " ".join(fs.splitlines()[-1].split()[:2]))
        big, _, size, _ = load_script("bench_store").make_data(work, a.file_mb, 0, 0)
        mesh = f"bench-transfer-{secrets.token_hex(6)}"
        k1: Kubo | None = None
        with lone_peer(work / "peer-a", work / "peer-a.log", 1, mesh_prefix="bench-transfer",
                       log_level="INFO", extra=("--mesh-name", mesh, "--replicas", "1"),
                       ) as (_, url_a):
            try:
                with big.open("rb") as f:
                    req = urllib.request.Request(
                        f"{url_a}/api/add?cid-version=1&name=big.bin", data=f, method="POST",
                        headers={"Content-Type": "application/octet-stream",
                                 "Content-Length": str(size)})
                    with urllib.request.urlopen(req, timeout=600) as r:
                        cid = json.loads(r.read())["cid"]
                a_gossip = get_json(url_a + "/api/health")["gossip_address"]
                car_url = f"{url_a}/ipfs/{cid}?format=car"
                ref = hashlib.sha256()
                car_bytes = 0
                for chunk in car_chunks(car_url):  # also warms A's page cache for run 1
                    ref.update(chunk)
                    car_bytes += len(chunk)
                ref_sha = ref.hexdigest()
                k1 = Kubo(a.kubo, start_kubo(work / "kubo1"))
                version = k1.cli("version")
                kcid = k1.cli("add", "-Q", "--cid-version=1", "--pin=true", str(big))
                kubo_sha = k1.export_sha256(kcid)
                print(f"file: {size / MB:.0f} MB random; CAR {car_bytes} bytes; CID {cid}")
                print(f"Kubo: {version}; datastore {k1.datastore()}")
                print(f"CIDs identical (embedded vs Kubo): {cid == kcid}; CAR sha256 "
                      f"identical (A's gateway vs Kubo 1 dag export): {ref_sha == kubo_sha}")
                results |= {"cid": cid, "kubo_cid": kcid, "car_bytes": car_bytes,
                            "kubo": version, "datastore": k1.datastore(),
                            "car_sha_equal": ref_sha == kubo_sha}
                t0, _ = timed(lambda: k1.cli("id"))  # ~ CLI start + one RPC
                results["kubo_cli_overhead_s"] = t0
                stream: list[dict[str, Any]] = []
                peer: list[dict[str, Any]] = []
                kubo: dict[str, list[dict[str, Any]]] = {n: [] for n in KUBO_CMDS}
                parts: list[dict[str, float]] = []
                for i in range(a.runs):  # interleaved, so load drifts hit every method
                    s = embedded_stream(car_url, work / f"recv-{i}", cid)
                    shutil.rmtree(work / f"recv-{i}")
                    stream.append(s)
                    p = embedded_peer(a_gossip, mesh, work, url_a, cid, i)
                    peer.append(p)
                    for n, cmd in KUBO_CMDS.items():
                        kubo[n].append(kubo_bitswap(a.kubo, k1, work, cid, ref_sha, i, cmd))
                    parts.append(embedded_breakdown(car_url, work, cid, curl))
                    print(f"run {i + 1}: stream {s['s']:.2f} s (load {s['load_before']}); "
                          f"peer B {p['s']:.2f} s (load {p['load_before']}, VmHWM "
                          f"{p['vm_hwm_mib']:.0f} MiB); "
                          + "; ".join(f"Kubo {n} {k[-1]['s']:.2f} s (load "
                                      f"{k[-1]['load_before']}, CAR same "
                                      f"{k[-1]['car_sha256_ok']}, "
                                      f"{k[-1]['kubo2_local_blocks']} new local blocks)"
                                      for n, k in kubo.items())
                          + "; breakdown "
                          + ", ".join(f"{n} {v:.2f}" for n, v in parts[-1].items()
                                      if n != "car_bytes"), flush=True)
            finally:
                if k1 is not None:
                    k1.d.stop()
        rows = [("embedded: GET CAR from peer A -> import_car (stream, this process)", stream),
                ("embedded: peer B gateway miss -> Fetcher.ensure from peer A", peer),
                *((f"Kubo {version.split()[-1]} bitswap: `ipfs --api <kubo2> {n} CID`", k)
                  for n, k in kubo.items())]
        print("\n| path | first run MB/s | median MB/s | median s | runs s | "
              "load avg (1/5/15 min) before each run |")
        print("| --- | --- | --- | --- | --- | --- |")
        results["rows"] = {}
        for name, runs in rows:
            sm = summary(size, runs)
            results["rows"][name] = sm | {"raw": runs}
            print(f"| {name} | {sm['first_mbs']:.1f} | {sm['median_mbs']:.1f} | "
                  f"{sm['median_s']:.2f} | {', '.join(f'{x:.2f}' for x in sm['runs_s'])} | "
                  f"{'; '.join(b for b, _ in sm['loads'])} |")
        print("\nbreakdown of the embedded path (median s, MB/s of file):")
        results["breakdown"] = parts
        for n in parts[0]:
            if n == "car_bytes":
                continue
            med = statistics.median(x[n] for x in parts)
            print(f"  {n}: {med:.2f} s ({size / MB / med:.0f} MB/s)")
        print(f"Kubo CLI overhead (`ipfs --api id`): {results['kubo_cli_overhead_s']:.3f} s")
        hwm = ", ".join(f"{p['vm_hwm_mib']:.0f}" for p in peer)
        print(f"peer B peak RSS (VmHWM): {hwm} MiB")
        print(f"load average at end: {loadavg()}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()

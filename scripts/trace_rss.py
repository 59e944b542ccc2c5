"""Find what grows in a live peer's memory per finished task (issue 11's RSS bound): a lone
banzai-peer runs under tracemalloc, `--warm-tasks` ECHO tasks run first, then the peer dumps a
snapshot (on SIGUSR1), `--live-tasks` more run, it dumps again, and this prints the top
`compare_to(..., 'traceback')` entries, the object counts per type that grew, and the sizes of
the peer's own dicts/sets/lists/deques (every `peer.*` object's attributes) that grew.

    PYTHONPATH=$PWD .venv/bin/python scripts/trace_rss.py --warm-tasks 1500 --live-tasks 3000

tracemalloc makes the peer several times slower; RSS is not measured here (bench_log does).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import ctypes.util
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scriptlib import ROOT, load_script, mesh_secret_file, remember_peer, wait_workers_ready

_CONTAINERS = (dict, set, list, collections.deque, frozenset)


def census() -> dict[str, Any]:
    """Object counts per type, and len() of every container attribute of `peer.*` objects
    (keyed "Class.attr", summed over instances)."""
    gc.collect()
    types: collections.Counter[str] = collections.Counter()
    attrs: collections.Counter[str] = collections.Counter()
    for o in gc.get_objects():
        cls = type(o)
        types[cls.__qualname__] += 1
        module = getattr(cls, "__module__", None)
        if not isinstance(module, str) or not module.startswith("peer."):
            continue
        fields = getattr(o, "__dict__", None) or {
            s: getattr(o, s, None) for s in getattr(cls, "__slots__", ())}
        for k, v in fields.items():
            if isinstance(v, _CONTAINERS):
                attrs[f"{cls.__qualname__}.{k}"] += len(v)
    return {"types": dict(types), "attrs": dict(attrs)} | native()


_MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
              "uordblks", "fordblks", "keepcost")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in _MALLINFO2]


def _libc() -> Any:
    return ctypes.CDLL(None)


def native() -> dict[str, Any]:
    """RSS, tracemalloc's traced total, SQLite's heap, glibc's heap (mallinfo2, all arenas),
    pymalloc's live blocks and the thread count: to tell Python objects from native growth."""
    out: dict[str, Any] = {"rss_kb": _status_kb("VmRSS"), "threads": _status_kb("Threads"),
                           "sqlite_bytes": _sqlite_bytes(),
                           "traced_bytes": tracemalloc.get_traced_memory()[0],
                           "py_blocks": sys.getallocatedblocks(), "smaps_kb": _smaps_kb()}
    try:
        fn = _libc().mallinfo2
        fn.restype = _Mallinfo2
        mi = fn()
        out["malloc"] = {f: int(getattr(mi, f)) for f in _MALLINFO2}
    except AttributeError:
        pass
    return out


def trim() -> dict[str, Any]:
    """malloc_trim(0) (every arena's free pages back to the kernel), RSS before and after."""
    before = _status_kb("VmRSS")
    fn = _libc().malloc_trim
    fn.argtypes, fn.restype = (ctypes.c_size_t,), ctypes.c_int
    fn(0)
    return {"rss_before_trim_kb": before, "rss_after_trim_kb": _status_kb("VmRSS")}


def _status_kb(field: str) -> int:
    for ln in Path("/proc/self/status").read_text().splitlines():
        if ln.startswith(field + ":"):
            return int(ln.split()[1])
    return 0


def _smaps_kb() -> dict[str, int]:
    """Resident kB per kind of mapping: [heap] (glibc's main arena), [stack], files, and
    anonymous mappings (other arenas, pymalloc's arenas, thread stacks, large blocks)."""
    out: dict[str, int] = collections.Counter()
    kind = "anon"
    for ln in Path("/proc/self/smaps").read_text().splitlines():
        head = ln.split()
        if head and "-" in head[0] and len(head) >= 5:
            name = head[5] if len(head) > 5 else ""
            kind = name if name.startswith("[") else ("file" if name else "anon")
        elif head[:1] == ["Rss:"]:
            out[kind] += int(head[1])
    return dict(out)


def _sqlite_bytes() -> int:
    """SQLite's own heap (page caches and the rest; not traced by tracemalloc), -1 if the
    library cannot be asked."""
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        lib.sqlite3_memory_used.restype = ctypes.c_int64
        return int(lib.sqlite3_memory_used())
    except (OSError, AttributeError):
        return -1


def peer_main(out: Path, frames: int, argv: list[str]) -> None:
    """Run banzai-peer's main under tracemalloc; each SIGUSR1 writes out/N.snap + N.json."""
    if frames:  # 0: not traced (RSS and the heaps alone, without tracemalloc's own overhead)
        tracemalloc.start(frames)
    os.register_at_fork(after_in_child=tracemalloc.stop)  # the workers are not traced
    dumps, samples = [0], [0]

    def light(_sig: int, _frame: FrameType | None) -> None:
        n = samples[0] = samples[0] + 1
        (out / f"s{n}.json").write_text(json.dumps(native() | {"t": time.monotonic()}))

    def dump(_sig: int, _frame: FrameType | None) -> None:
        n = dumps[0] = dumps[0] + 1
        if tracemalloc.is_tracing():
            tracemalloc.take_snapshot().dump(str(out / f"{n}.snap"))
        c = census()
        if (out / f"{n}.trim").exists():
            c |= trim()
        (out / f"{n}.json").write_text(json.dumps(c))
        (out / f"{n}.done").touch()

    signal.signal(signal.SIGUSR1, dump)
    signal.signal(signal.SIGUSR2, light)
    from peer.main import main
    main(argv)


def _grown(a: dict[str, int], b: dict[str, int], top: int) -> list[tuple[str, int, int]]:
    rows = [(k, a.get(k, 0), v) for k, v in b.items() if v > a.get(k, 0)]
    return sorted(rows, key=lambda r: r[1] - r[2])[:top]


def compare(out: Path, tasks: int, top: int) -> None:
    """Print what grew between out/1 and out/2."""
    if (out / "1.snap").exists():
        _diff(out, tasks, top)
    c1, c2 = (json.loads((out / f"{n}.json").read_text()) for n in (1, 2))
    _report(out, c1, c2, top)


def _diff(out: Path, tasks: int, top: int) -> None:
    s1 = tracemalloc.Snapshot.load(str(out / "1.snap"))
    s2 = tracemalloc.Snapshot.load(str(out / "2.snap"))
    flt = [tracemalloc.Filter(False, tracemalloc.__file__)]
    s1, s2 = s1.filter_traces(flt), s2.filter_traces(flt)
    total = sum(t.size for t in s2.traces) - sum(t.size for t in s1.traces)
    print(f"traced growth over {tasks} tasks: {total / 1e6:.2f} MB "
          f"({total / tasks:.0f} B per task)")
    for st in s2.compare_to(s1, "traceback")[:top]:
        print(f"\n+{st.size_diff / 1024:.1f} KiB, +{st.count_diff} blocks "
              f"({st.size_diff / tasks:.0f} B/task)")
        for line in st.traceback.format(limit=12, most_recent_first=True):
            print("  " + line)


def _report(out: Path, c1: dict[str, Any], c2: dict[str, Any], top: int) -> None:
    print(f"\nRSS (peer): {c1['rss_kb'] / 1024:.1f} -> {c2['rss_kb'] / 1024:.1f} MB; "
          f"SQLite heap: {c1['sqlite_bytes'] / 1e6:.2f} -> {c2['sqlite_bytes'] / 1e6:.2f} MB")
    for c in (c1, c2):
        print("  " + _native_line(c))
    if "rss_after_trim_kb" in c2:
        print(f"malloc_trim(0) at the second snapshot: RSS {c2['rss_before_trim_kb'] / 1024:.1f}"
              f" -> {c2['rss_after_trim_kb'] / 1024:.1f} MB")
    samples = sorted(out.glob("s*.json"), key=lambda p: int(p.stem[1:]))
    if samples:
        print("\nsamples (SIGUSR2):")
        for p in samples:
            print("  " + _native_line(json.loads(p.read_text())))
    print("\nobjects per type that grew (before -> after):")
    for k, x, y in _grown(c1["types"], c2["types"], top):
        print(f"  {k}: {x} -> {y}")
    print("\npeer containers that grew (Class.attr, summed len, before -> after):")
    for k, x, y in _grown(c1["attrs"], c2["attrs"], 3 * top):
        print(f"  {k}: {x} -> {y}")


def _native_line(c: dict[str, Any]) -> str:
    m = c.get("malloc", {})
    return (f"jobs {c.get('jobs', '?')}: RSS {c['rss_kb'] / 1024:.1f} MB, traced "
            f"{c['traced_bytes'] / 1e6:.2f} MB, pymalloc blocks {c['py_blocks']}, SQLite "
            f"{c['sqlite_bytes'] / 1e6:.2f} MB, glibc arena {m.get('arena', 0) / 1e6:.2f} MB "
            f"(in use {m.get('uordblks', 0) / 1e6:.2f}, free {m.get('fordblks', 0) / 1e6:.2f}, "
            f"top {m.get('keepcost', 0) / 1e6:.2f}), mmapped {m.get('hblkhd', 0) / 1e6:.2f} MB, "
            f"threads {c['threads']}, resident kB {c.get('smaps_kb')}")


def mix(url: str, seconds: float, jobs: list[int], rate: float = 4) -> None:
    """soak.py's mix on one peer for `seconds`: jobs of 5 ECHO tasks, reruns, cancels,
    deletes; jobs[0] counts the submits."""
    soak = load_script("soak")
    a = argparse.Namespace(seed=jobs[0] + 1, tasks=5)
    w = soak.Workload(a, argparse.Namespace(peers=[argparse.Namespace(url=url)]))
    w.texts = _TEXTS  # reruns reach back over earlier calls
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if len(w.open) < 8:
            w.submit(time.monotonic())
        w.poll()
        time.sleep(1 / rate)
    jobs[0] += w.counts["submitted"]


_TEXTS: list[str] = []


def run(bench: Any, url: str, n: int, per_job: int) -> None:
    """n ECHO tasks in jobs of `per_job`, one job at a time (as bench_log's live phase)."""
    while n > 0:
        bench.wait_done(url, bench.submit(url, min(per_job, n)), 600)
        n -= per_job


def snap(proc: subprocess.Popen[bytes], out: Path, n: int) -> None:
    proc.send_signal(signal.SIGUSR1)
    while not (out / f"{n}.done").exists():
        if proc.poll() is not None:
            raise RuntimeError("the peer exited")
        time.sleep(0.2)


def _wait(proc: subprocess.Popen[bytes], path: Path) -> None:
    for _ in range(600):
        if path.exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    time.sleep(0.2)  # written, not only created


def _tag(path: Path, jobs: int) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | {"jobs": jobs}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--warm-tasks", type=int, default=1500)
    ap.add_argument("--live-tasks", type=int, default=3000)
    ap.add_argument("--job-tasks", type=int, default=500, help="ECHO tasks per job")
    ap.add_argument("--recent-tasks", type=int, default=1000,
                    help="the peer's --compact-recent-tasks (lower: a shorter warm-up)")
    ap.add_argument("--frames", type=int, default=8, help="traceback depth traced")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--mix-minutes", type=float, nargs=2, metavar=("WARM", "LIVE"),
                    help="soak.py's mix (retention 120 s, gc every 30 s) instead of big jobs")
    ap.add_argument("--sample-s", type=float, default=30, help="light samples in --mix")
    ap.add_argument("--trim", action="store_true", help="malloc_trim(0) at the 2nd snapshot")
    ap.add_argument("--peer", type=Path, help=argparse.SUPPRESS)  # internal: the peer side
    a, rest = ap.parse_known_args()
    if a.peer:
        peer_main(a.peer, a.frames, rest[1:] if rest[:1] == ["--"] else rest)
        return
    bench = load_script("bench_log")
    tmp = Path(tempfile.mkdtemp(prefix="trace-rss-"))
    secret = mesh_secret_file(tmp)
    log = tmp / "peer.log"
    args = [sys.executable, __file__, "--peer", str(tmp), "--frames", str(a.frames), "--",
            "--data-dir", str(tmp / "a"), "--http", "127.0.0.1:0", "--no-mdns",
            "--mesh-name", f"trace-rss-{os.getpid()}", "--secret-file", str(secret),
            "--slots", "1", "--replicas", "1", "--log-level", "warning",
            "--compact-recent-tasks", str(a.recent_tasks)]
    if a.mix_minutes:
        args += ["--keep-jobs-days", f"{120 / 86400:.8f}", "--gc-interval-s", "30"]
    with log.open("wb") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        while (m := re.search(r"^web UI: (http://\S+?)/?$", log.read_text(), re.M)) is None:
            if proc.poll() is not None:
                raise RuntimeError("banzai-peer did not start:\n" + log.read_text())
            time.sleep(0.1)
        url = m.group(1)
        remember_peer(url, tmp / "a")
        wait_workers_ready(url)
        if a.trim:
            (tmp / "2.trim").touch()
        if a.mix_minutes:
            jobs = [0]
            mix(url, a.mix_minutes[0] * 60, jobs)
            snap(proc, tmp, 1)
            _tag(tmp / "1.json", jobs[0])
            for k in range(max(1, round(a.mix_minutes[1] * 60 / a.sample_s))):
                mix(url, a.sample_s, jobs)
                proc.send_signal(signal.SIGUSR2)
                _wait(proc, tmp / f"s{k + 1}.json")
                _tag(tmp / f"s{k + 1}.json", jobs[0])
            snap(proc, tmp, 2)
            _tag(tmp / "2.json", jobs[0])
            a.live_tasks = max(1, 5 * (jobs[0] - json.loads((tmp / "1.json").read_text())["jobs"]))
        else:
            run(bench, url, a.warm_tasks, a.job_tasks)
            snap(proc, tmp, 1)
            run(bench, url, a.live_tasks, a.job_tasks)
            snap(proc, tmp, 2)
    finally:
        proc.terminate()
        proc.wait(60)
    print(f"(dumps in {tmp})")
    compare(tmp, a.live_tasks, a.top)


if __name__ == "__main__":
    main()

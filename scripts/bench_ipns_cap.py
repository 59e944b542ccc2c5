"""What the IPNS record files' cap costs (peer/ipfs/ipns.py `IpnsNames`, session 51): N files
of distinct names already held (written directly, as if heard), then the first `held` pass
(each file validated once), a cached one, and M records of new names `put` past the cap
(each removal pass reads the directory once per MAX_NAMES / EVICT_FRACTION new names).

    env PYTHONPATH=. .venv/bin/python scripts/bench_ipns_cap.py [N] [M]
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from peer.ipfs import ipns

EOL = datetime(2090, 1, 1, tzinfo=UTC)
V = "/ipfs/bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"


def _record(i: int) -> tuple[str, bytes]:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(i.to_bytes(32, "big"))
    return ipns.key_name(key.public_key()), ipns.make_record(key, V, 0, EOL, 10**9)


def main(n: int, m: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        names = ipns.IpnsNames(Path(d) / "ipns", max_names=n)
        names.root.mkdir()
        t = time.perf_counter()
        for i in range(n):
            name, raw = _record(i + 1)
            names.path(name).write_bytes(raw)
        print(f"{n} files written directly: {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        assert len(names.held()) == n
        print(f"first held pass (each validated): {time.perf_counter() - t:.3f} s")
        t = time.perf_counter()
        names.held()
        print(f"cached held pass: {time.perf_counter() - t:.3f} s")
        new = [_record(n + i + 1) for i in range(m)]
        times = []
        for name, raw in new:
            t = time.perf_counter()
            names.put(name, raw)
            times.append(time.perf_counter() - t)
        times.sort()
        print(f"{m} puts of new names at the cap: total {sum(times):.2f} s, median "
              f"{times[m // 2] * 1000:.1f} ms, p99 {times[m * 99 // 100] * 1000:.1f} ms, "
              f"max {times[-1] * 1000:.1f} ms; removed {names.evicted}, files "
              f"{names._count_files()}, refused {names.full}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else ipns.MAX_NAMES,
         int(sys.argv[2]) if len(sys.argv) > 2 else 1000)

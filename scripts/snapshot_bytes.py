"""The bytes of the snapshot streams a peer serves from a data dir, to compare two releases.

Opens a Node (the code on PYTHONPATH, not started) on a copy of DATA_DIR, with the mesh
secret SECRET_FILE (the admission tag in the trailers depends on it), and prints one JSON
line: for each form (`?v=3&part=jobs`, `?v=3&part=rows`, `?v=3`, `?v=2`) the sha256 of the
whole stream, its bytes and the seconds it took (read in this thread, one after another).
Run it with each release's tree on PYTHONPATH; equal digests: byte-identical streams.

  PYTHONPATH=TREE .venv/bin/python scripts/snapshot_bytes.py DATA_DIR SECRET_FILE WORK_DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

from peer.config import PeerConfig
from peer.node import Node

FORMS = {"v3jobs": (3, "jobs"), "v3rows": (3, "rows"), "v3": (3, None), "v2": (2, None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("secret_file", type=Path)
    ap.add_argument("work_dir", type=Path, help="the copy (replaced)")
    a = ap.parse_args()
    shutil.rmtree(a.work_dir, ignore_errors=True)
    shutil.copytree(a.data_dir, a.work_dir,
                    ignore=shutil.ignore_patterns("store", "work", "cache", "snapshots"))
    n = Node(PeerConfig(data_dir=a.work_dir, slots=1, mdns=False, secret_file=a.secret_file))
    out = {}
    try:
        for name, (v, part) in FORMS.items():
            t = time.perf_counter()
            h, size = hashlib.sha256(), 0
            for piece in n.catchup.snapshot_stream(v, part):
                h.update(piece)
                size += len(piece)
            out[name] = {"sha256": h.hexdigest(), "bytes": size,
                         "s": round(time.perf_counter() - t, 3)}
    finally:
        n.log.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()

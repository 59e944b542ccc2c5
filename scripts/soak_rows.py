#!/usr/bin/env python3
"""The job index's cache and provider rows of a soak's peers (`scripts/soak.py --keep-dir
DIR`, read after the soak), related to the CIDs every peer pins (files under
`store/pins/` and the inline pack's `pins` table) and to the jobs: which rows there are, and
whether each names an output someone still holds. Reads copies of the SQLite files (in a
temporary directory), never the peers' own.

    .venv/bin/python scripts/soak_rows.py DIR
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any


def peer_ids(base: Path) -> dict[str, str]:
    """peerN -> its id, as its first log line (`banzai-peer <id> (...) ready`) gives it."""
    out = {}
    for log in sorted(base.glob("peer*.log")):
        if ".restart" in log.name:
            continue
        m = re.search(r"banzai-peer ([0-9a-f]+) ", log.read_text(errors="replace"))
        if m:
            out[log.stem] = m.group(1)
    return out


def _copy(src: Path, dst: Path) -> Path:
    """`src` (an SQLite file) and its WAL copied into `dst`; the copy's path."""
    for f in src.parent.glob(src.name + "*"):
        shutil.copy2(f, dst / f.name)
    return dst / src.name


def pins(d: Path, tmp: Path) -> set[str]:
    """Every CID a peer's store pins: files and the inline pack's rows."""
    out = {f.name for f in (d / "store" / "pins").glob("*")}
    pack = d / "store" / "inline.sqlite"
    if pack.exists():
        db = sqlite3.connect(_copy(pack, tmp))
        try:
            out |= {str(c) for (c,) in db.execute("SELECT cid FROM pins")}
        finally:
            db.close()
    return out


def _owner(origin: str, ids: dict[str, str]) -> str:
    return next((p for p, i in ids.items() if origin.startswith(i)), origin[:12])


def rows(base: Path) -> dict[str, dict[str, Any]]:
    """Per peer: its cache and provider rows, related to the pins of every peer."""
    ids = peer_ids(base)
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="soak-rows-") as t:
        tmp = Path(t)
        pinned: dict[str, set[str]] = {}
        for p in ids:
            (tmp / p).mkdir()
            pinned[p] = pins(base / p, tmp / p)
        by: dict[str, set[str]] = {}
        for p, cids in pinned.items():
            for c in cids:
                by.setdefault(c, set()).add(p)
        for p in ids:
            db = sqlite3.connect(_copy(base / p / "events.sqlite", tmp / p))
            try:
                out[p] = _peer_rows(db, ids, by)
            finally:
                db.close()
    return out


def _peer_rows(db: sqlite3.Connection, ids: dict[str, str],
               by: dict[str, set[str]]) -> dict[str, Any]:
    kinds = Counter(int(k) for (k,) in db.execute("SELECT kind FROM cache_index"))
    outs = {str(json.loads(v)) for (v,) in db.execute(
        "SELECT v FROM cache_index WHERE kind = 1")}
    prov = [(str(c), _owner(str(o), ids)) for c, o in db.execute(
        "SELECT cid, origin FROM provider_index")]
    listed = set()
    for (facts,) in db.execute("SELECT facts FROM job_index"):
        listed.update(json.loads(facts).get("outputs", ()))
    return {
        "cache rows by kind": dict(sorted(kinds.items())),
        "output CIDs": len(outs),
        "output CIDs by holders": dict(Counter(len(by.get(c, ())) for c in outs)),
        "output CIDs of a job with a record": len(outs & listed),
        "provider rows": len(prov),
        "provider rows whose origin pins the CID": sum(o in by.get(c, ()) for c, o in prov),
        "provider CIDs with no output entry": len({c for c, _ in prov} - outs),
        "tombstones": db.execute("SELECT count(*) FROM job_deleted").fetchone()[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="a soak's --keep-dir")
    a = ap.parse_args(argv)
    got = rows(a.dir)
    peers = sorted(got)
    print("| figure | " + " | ".join(peers) + " |")
    print("| --- |" + " --- |" * len(peers))
    for k in got[peers[0]] if peers else ():
        print(f"| {k} | " + " | ".join(str(got[p][k]) for p in peers) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

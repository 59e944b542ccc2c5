#!/usr/bin/env python3
"""A peer's data dir as hostile input: a bounded, seeded fuzzer of what a Banzai peer reads
back from disk (as SQLite's and Kubo's maintainers treat their files).

It builds a realistic data dir (two banzai-peer processes on loopback: peer a runs a few
ECHO jobs, uploads a one-block and a multi-block file and compacts, peer b joins and catches
up by snapshot; both stop cleanly, and a's block files are dated two days back so that a
storage cycle's grace does not hide them; --data-dir takes one instead), keeps it pristine,
and makes mutants of copies of it:

  value    one column of one row of any table of any SQLite file in the dir (enumerated
           from sqlite_master) set to a bad value: NULL, the wrong type, 2 MB, -1, -2^63,
           2^63-1, non-UTF-8 text, a blob, bad or deep JSON, another row's value, a path
           outside the dir (a canary file)
  insert   a row into an empty table, one column bad (the others plausible)
  meta     each key of a meta table deleted or set to a bad value
  bitflip  one bit of a text or blob value flipped (mostly event payloads)
  page     bytes overwritten mid-file in an SQLite file (zeros, 0xff, random)
  file     each file or directory of the dir deleted, truncated, emptied, replaced by a
           directory, by the other peer's file, by a symlink to the canary, by a FIFO,
           appended to; a -wal or -journal planted (the root blocks of the pinned DAGs are
           always among them: a gc over a damaged pinned DAG, review r1 H1)

Each mutant is checked in a worker process the way the node reads its dir (Node(cfg): the
log's replay and the job index; then /api/health, /api/jobs, each job, /api/snapshot served
through aiohttp's test client; the compaction loop's start; one compaction pass; one
storage cycle with the clock ten years on; the log's integrity check; close), each stage
bounded in time. Outcomes: ok, refused (a BanzaiError naming a file), or a finding: a
traceback (or one logged), a non-200 answer, a stuck stage, rows of the pristine dir lost,
the identity or mesh secret changed silently, a file outside the copy touched, or an error
that names no file. A sample (--starts) is also started as a real banzai-peer on loopback:
it must exit with a one-line error naming a file and no traceback, or answer /api/health
and /api/jobs with 200, then stop cleanly.

    PYTHONPATH=$PWD .venv/bin/python scripts/fuzz_datadir.py [--budget-s 600] [--seed 1]
        [--mutations N] [--starts 20] [--data-dir DIR [--other-dir DIR]] [--keep DIR]
        [--only ID] [--json FILE]

Prints a table (mutation class x outcome) and each finding once (by kind, exception type
and innermost peer frame) with the mutation that shows it and a command re-running it;
exits 1 if there are findings.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import secrets
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SQLITE_MAGIC = b"SQLite format 3\x00"
CLASSES = ("value", "insert", "meta", "bitflip", "page", "file")
HUGE_CHARS = 2_000_000
NOT_FINDINGS = ("ok", "refused", "n/a")
JOB_TEXTS = ("fuzz one", "fuzz two", "fuzz three", "fuzz four", "fuzz five")
WORKER_CHECKS = 150  # mutants one worker process checks before a fresh one takes over
REQUEST_S = 5.0  # bound of one in-process HTTP request


# -- the pure parts: outcomes, dedup ---------------------------------------------------------
@dataclass
class Finding:
    """One finding: `kind` (traceback, logged_traceback, http_500, stuck, data_lost, ...), the
    exception type and innermost peer frame (or what stands for them) and a message."""

    kind: str
    exc: str = ""
    frame: str = ""
    message: str = ""
    stage: str = ""

    def key(self) -> tuple[str, str, str]:
        """A traceback is one finding wherever it shows (in a stage, logged, at a real
        start): its exception type and innermost peer frame; others by kind and place."""
        return ("", self.exc, self.frame) if self.exc else (self.kind, "", self.frame)


@dataclass
class Report:
    """Findings deduplicated by Finding.key, each with the first mutation showing it and a
    count; outcomes counted per mutation class."""

    findings: dict[tuple[str, str, str], tuple[Finding, str, int]] = field(default_factory=dict)
    table: dict[str, Counter[str]] = field(default_factory=dict)
    # A start refused over one row (value, insert, bitflip): clear, but maybe more than the
    # row needs (one the peer could set aside): by frame, its message, first mutation, count
    refusals: dict[str, tuple[str, str, int]] = field(default_factory=dict)

    def refused(self, mutation: str, frame: str, message: str) -> None:
        first = self.refusals.get(frame)
        self.refusals[frame] = (first[0], first[1], first[2] + 1) if first else (
            message, mutation, 1)

    def add(self, mutation: str, outcome: str, found: list[Finding]) -> None:
        self.table.setdefault(mutation.split(":", 1)[0], Counter())[outcome] += 1
        for f in found:
            first = self.findings.get(f.key())
            self.findings[f.key()] = (first[0], first[1], first[2] + 1) if first else (
                f, mutation, 1)


def innermost_peer_frame(frames: list[tuple[str, int, str]]) -> str:
    """'peer/x.py:LINE function' of the innermost frame in peer/ or tasks/ ((file, line,
    function) outermost first), else of the innermost frame."""
    def rel(path: str) -> str | None:
        m = re.search(r"(?:^|/)((?:peer|tasks)/[^ ]+\.py)$", path)
        return m.group(1) if m else None

    for path, line, fn in reversed(frames):
        if (r := rel(path)) is not None:
            return f"{r}:{line} {fn}"
    return f"{Path(frames[-1][0]).name}:{frames[-1][1]} {frames[-1][2]}" if frames else ""


JOB_PATH = re.compile(r"/api/jobs/[^/?]+")
TB_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)', re.M)


def traceback_finding(text: str, kind: str) -> Finding | None:
    """The finding a traceback printed in `text` shows (its last one), None without one."""
    at = text.rfind("Traceback (most recent call last):")
    if at < 0:
        return None
    tb = text[at:]
    frames = [(p, int(n), f) for p, n, f in TB_FRAME.findall(tb)]
    last = next((ln for ln in tb.splitlines()[len(frames) * 2 + 1:]
                 if ln and not ln.startswith(" ")), "")
    exc = last.split(":", 1)[0].strip()
    return Finding(kind, exc, innermost_peer_frame(frames), last[:300])


def names_a_file(message: str, names: set[str]) -> bool:
    """`message` names one of the data dir's files (or the dir)."""
    return any(n in message for n in names)


def primary_outcome(found: list[Finding], refused: bool) -> str:
    """The outcome a mutant is counted under: its first finding's kind, else refused/ok."""
    return found[0].kind if found else ("refused" if refused else "ok")


# -- SQLite helpers ---------------------------------------------------------------------------
def is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def connect(path: Path, ro: bool = False) -> sqlite3.Connection:
    """`path`, its values as stored. (Even read only, SQLite may write a -shm beside it: the
    pristine dir is read through copies.)"""
    uri = f"file:{path}?mode=ro" if ro else f"file:{path}"
    db = sqlite3.connect(uri, uri=True, timeout=5, isolation_level=None)
    db.text_factory = bytes  # every value as stored, non-UTF-8 text too
    return db


def tables(db: sqlite3.Connection) -> list[str]:
    return [r[0].decode() for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]


def columns(db: sqlite3.Connection, table: str) -> list[tuple[str, str, bool]]:
    """(name, declared type, in the primary key) of each column."""
    return [(r[1].decode(), r[2].decode().upper(), bool(r[5]))
            for r in db.execute(f'PRAGMA table_info("{table}")')]


def has_rowid(db: sqlite3.Connection, table: str) -> bool:
    try:
        db.execute(f'SELECT rowid FROM "{table}" LIMIT 1').fetchall()
        return True
    except sqlite3.OperationalError:
        return False


def row_keys(db: sqlite3.Connection, table: str) -> list[str]:
    """A WHERE clause naming each row of `table` (by rowid, or by its primary key's values
    as SQL literals), in a fixed order."""
    if has_rowid(db, table):
        return [f"rowid = {r}" for (r,) in
                db.execute(f'SELECT rowid FROM "{table}" ORDER BY rowid')]
    pk = [c for c, _, p in columns(db, table) if p]
    quoted = ", ".join(f'quote("{c}")' for c in pk)
    order = ", ".join(f'"{c}"' for c in pk)
    return [" AND ".join(f'"{c}" IS {lit.decode() if isinstance(lit, bytes) else lit}'
                         for c, lit in zip(pk, r, strict=True))
            for r in db.execute(f'SELECT {quoted} FROM "{table}" ORDER BY {order}')]


def row_digests(path: Path) -> dict[str, set[str]] | None:
    """table -> digests of its rows (None for a table that cannot be read); None if the
    file is no SQLite database one can open."""
    if not path.is_file() or not is_sqlite(path):
        return None
    try:
        db = connect(path, ro=True)
    except sqlite3.Error:
        return None
    out: dict[str, set[str]] = {}
    try:
        for t in tables(db):
            try:
                out[t] = {hashlib.sha256(repr(r).encode()).hexdigest()[:20]
                          for r in db.execute(f'SELECT * FROM "{t}"')}
            except sqlite3.Error:
                continue
    except sqlite3.Error:
        return None
    finally:
        db.close()
    return out


def dir_rows(data: Path) -> dict[str, dict[str, set[str]]]:
    """Every readable SQLite file of `data` (by relative path) -> row_digests."""
    out = {}
    for p in sorted(data.rglob("*")):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink() and (rows := row_digests(p)) is not None:
                out[str(p.relative_to(data))] = rows
    return out


def lost_rows(reference: dict[str, dict[str, set[str]]], stable: dict[str, dict[str, set[str]]],
              after: dict[str, dict[str, set[str]]]) -> dict[str, int]:
    """'file/table' -> how many rows of `reference` that the unmutated dir keeps through the
    same checks (`stable`) are gone `after`."""
    lost = {}
    for f, ts in reference.items():
        for t, rows in ts.items():
            keep = rows & stable.get(f, {}).get(t, set())
            gone = len(keep - after.get(f, {}).get(t, set()))
            if gone:
                lost[f"{f}/{t}"] = gone
    return lost


# -- mutations --------------------------------------------------------------------------------
BAD_VALUES: dict[str, Callable[[Any, Any], Any]] = {
    "null": lambda v, o: None,
    "wrongtype": lambda v, o: 12345 if isinstance(v, (bytes, str)) else "not-a-number",
    "huge": lambda v, o: "A" * HUGE_CHARS,
    "neg": lambda v, o: -1,
    "min": lambda v, o: -(2**63),
    "max": lambda v, o: 2**63 - 1,
    "real": lambda v, o: 1.5,
    "empty": lambda v, o: "",
    "nonutf8": lambda v, o: AsText(b"\xff\xfeA\x80"),
    "blob": lambda v, o: b"\x00\xff\x01",
    "badjson": lambda v, o: '{"a": [1, ',
    "jsonlist": lambda v, o: "[]",
    "deepjson": lambda v, o: "[" * 5000 + "]" * 5000,
    "other": lambda v, o: o,
    "canary": lambda v, o: CANARY_MARK,
}
CANARY_MARK = "\0canary"  # replaced by the canary file's path when applied


@dataclass(frozen=True)
class AsText:
    """Bytes stored as TEXT (CAST): text read back as stored, or one Python's sqlite3 cannot
    decode (plain bytes are stored as a BLOB)."""

    raw: bytes


def _sql_value(v: Any, canary: Path) -> tuple[str, Any]:
    if isinstance(v, AsText):
        return "CAST(? AS TEXT)", v.raw
    if v == CANARY_MARK:
        return "?", str(canary)
    return "?", v


def _as_stored(v: Any, typ: bytes) -> Any:
    """A value read back (text_factory=bytes) as it is to be written again."""
    return AsText(v) if typ == b"text" else v


@dataclass
class Ctx:
    """Where a mutation is applied: the copy, the other peer's dir (or None), the canary."""

    data: Path
    other: Path | None
    canary: Path
    rng: random.Random


class NotApplicable(Exception):
    """The mutation does not apply to this data dir (no such row, file, page)."""


def _db_of(ctx: Ctx, rel: str) -> sqlite3.Connection:
    path = ctx.data / rel
    if not is_sqlite(path):
        raise NotApplicable(f"{rel} is not an SQLite file here")
    return connect(path)


def _pick_row(db: sqlite3.Connection, table: str, index: int) -> str:
    keys = row_keys(db, table)
    if not keys or not -len(keys) <= index < len(keys):
        raise NotApplicable(f"{table} has no row {index}")
    return keys[index]


def apply_value(ctx: Ctx, rel: str, table: str, col: str, index: int, kind: str) -> None:
    db = _db_of(ctx, rel)
    try:
        where = _pick_row(db, table, index)
        old = db.execute(f'SELECT "{col}" FROM "{table}" WHERE {where}').fetchone()[0]
        others = [_as_stored(v, t) for v, t in db.execute(
            f'SELECT DISTINCT "{col}", typeof("{col}") FROM "{table}" LIMIT 50') if v != old]
        new = BAD_VALUES[kind](old, ctx.rng.choice(others) if others else None)
        if kind == "other" and not others:
            raise NotApplicable(f"{table}.{col} has one value")
        expr, v = _sql_value(new, ctx.canary)
        try:
            db.execute(f'UPDATE "{table}" SET "{col}" = {expr} WHERE {where}', (v,))
        except sqlite3.IntegrityError as e:
            raise NotApplicable(f"{table}.{col}: {e}") from None
    finally:
        db.close()


def _plausible(decl: str, col: str, canary: Path, rng: random.Random) -> Any:
    if "INT" in decl:
        return rng.randrange(1, 1000)
    if "REAL" in decl:
        return 1.0
    if "BLOB" in decl:
        return b"x"
    return str(canary) if "path" in col else f"fuzz{rng.randrange(10**6)}"


def apply_insert(ctx: Ctx, rel: str, table: str, col: str, kind: str) -> None:
    db = _db_of(ctx, rel)
    try:
        cols = columns(db, table)
        vals = [BAD_VALUES[kind](None, None) if c == col
                else _plausible(d, c, ctx.canary, ctx.rng) for c, d, _ in cols]
        parts = [_sql_value(v, ctx.canary) for v in vals]
        names = ", ".join(f'"{c}"' for c, _, _ in cols)
        try:
            db.execute(f'INSERT INTO "{table}" ({names}) VALUES '
                       f'({", ".join(e for e, _ in parts)})', [v for _, v in parts])
        except sqlite3.IntegrityError as e:
            raise NotApplicable(f"{table}: {e}") from None
    finally:
        db.close()


def apply_meta(ctx: Ctx, rel: str, table: str, key: str, kind: str) -> None:
    db = _db_of(ctx, rel)
    try:
        k = key.encode()
        found = db.execute(f'SELECT 1 FROM "{table}" WHERE k = CAST(? AS TEXT)', (k,))
        if found.fetchone() is None:
            raise NotApplicable(f"no {table} key {key}")
        if kind == "delete":
            db.execute(f'DELETE FROM "{table}" WHERE k = CAST(? AS TEXT)', (k,))
            return
        others = [_as_stored(v, t) for v, t in db.execute(
            f'SELECT v, typeof(v) FROM "{table}" WHERE k != CAST(? AS TEXT)', (k,))]
        expr, v = _sql_value(BAD_VALUES[kind](None, ctx.rng.choice(others) if others else None),
                             ctx.canary)
        db.execute(f'UPDATE "{table}" SET v = {expr} WHERE k = CAST(? AS TEXT)', (v, k))
    finally:
        db.close()


def apply_bitflip(ctx: Ctx, rel: str, table: str, col: str, index: int, bit: int) -> None:
    db = _db_of(ctx, rel)
    try:
        where = _pick_row(db, table, index)
        old, typ = db.execute(f'SELECT "{col}", typeof("{col}") FROM "{table}" WHERE '
                              f'{where}').fetchone()
        if not isinstance(old, bytes) or not old:
            raise NotApplicable(f"{table}.{col} row {index} holds no text or blob")
        raw = bytearray(old)
        raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
        expr = "CAST(? AS TEXT)" if typ == b"text" else "?"
        db.execute(f'UPDATE "{table}" SET "{col}" = {expr} WHERE {where}', (bytes(raw),))
    finally:
        db.close()


def apply_page(ctx: Ctx, rel: str, page: int, fill: str) -> None:
    path = ctx.data / rel
    if not is_sqlite(path):
        raise NotApplicable(f"{rel} is not an SQLite file here")
    data = path.read_bytes()
    size = int.from_bytes(data[16:18], "big")
    size = 65536 if size == 1 else size
    pages = len(data) // size
    if page > pages:
        raise NotApplicable(f"{rel} has {pages} pages")
    start = (page - 1) * size + ctx.rng.randrange(0 if page > 1 else 16, size - 64)
    n = ctx.rng.randrange(8, 64)
    junk = {"zero": bytes(n), "ff": b"\xff" * n, "rand": ctx.rng.randbytes(n)}[fill]
    with path.open("r+b") as f:
        f.seek(start)
        f.write(junk)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _replace_by_other(ctx: Ctx, rel: str, path: Path) -> None:
    """`path` replaced by the other peer's file (a new secret for mesh.secret)."""
    src = ctx.other / rel if ctx.other is not None else None
    if src is not None and src.exists():
        _remove(path)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, path)
    elif rel == "mesh.secret":
        _remove(path)
        path.write_text(secrets.token_urlsafe(32) + "\n")
        path.chmod(0o600)
    else:
        raise NotApplicable(f"the other peer has no {rel}")


def _edit_in_place(ctx: Ctx, path: Path, op: str) -> None:
    if path.is_dir():
        raise NotApplicable(f"{path.name} is a directory")
    if op == "truncate":
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif op == "append":
        with path.open("ab") as f:
            f.write(ctx.rng.randbytes(4096))
    else:
        path.write_bytes(b"")


def apply_file(ctx: Ctx, rel: str, op: str) -> None:
    path = ctx.data / rel
    if op.startswith("plant"):
        if path.exists():
            raise NotApplicable(f"{rel} exists")
        path.write_bytes(ctx.rng.randbytes(4096) if op == "plant" else SQLITE_MAGIC + bytes(4080))
        return
    if not path.exists() and not path.is_symlink():
        raise NotApplicable(f"no {rel} here")
    if op == "other":
        _replace_by_other(ctx, rel, path)
        return
    if op in ("truncate", "append", "empty"):
        _edit_in_place(ctx, path, op)
        return
    _remove(path)
    if op == "dir":
        path.mkdir()
    elif op == "file":
        path.write_bytes(b"not a directory\n")
    elif op == "symlink":
        path.symlink_to(ctx.canary)
    elif op == "fifo":  # (no writer: a plain open of it blocks for ever)
        os.mkfifo(path)
    elif op != "delete":
        raise NotApplicable(f"unknown op {op}")


def apply(mid: str, ctx: Ctx) -> None:
    """Apply mutation `mid` (its id) to ctx.data; NotApplicable if it does not apply."""
    cls, *a = mid.split(":")
    if cls == "value":
        apply_value(ctx, a[0], a[1], a[2], int(a[3]), a[4])
    elif cls == "insert":
        apply_insert(ctx, a[0], a[1], a[2], a[3])
    elif cls == "meta":
        apply_meta(ctx, a[0], a[1], a[2], a[3])
    elif cls == "bitflip":
        apply_bitflip(ctx, a[0], a[1], a[2], int(a[3]), int(a[4]))
    elif cls == "page":
        apply_page(ctx, a[0], int(a[1]), a[2])
    elif cls == "file":
        apply_file(ctx, a[0], a[1])
    else:
        raise NotApplicable(f"unknown mutation class {cls}")


def _sqlite_mutations(rel: str, db: sqlite3.Connection, rng: random.Random) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {c: [] for c in CLASSES}
    for t in tables(db):
        cols = columns(db, t)
        n = db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
        names = [c for c, _, _ in cols]
        if t.endswith("meta") and "k" in names and "v" in names:
            for (k,) in db.execute(f'SELECT k FROM "{t}" ORDER BY k'):
                key = k.decode(errors="replace")
                if ":" not in key:
                    out["meta"] += [f"meta:{rel}:{t}:{key}:{kind}"
                                    for kind in ("delete", *BAD_VALUES)]
        for c in names:
            if n == 0:
                out["insert"] += [f"insert:{rel}:{t}:{c}:{kind}" for kind in BAD_VALUES
                                  if kind != "other"]
                continue
            out["value"] += [f"value:{rel}:{t}:{c}:{i}:{kind}" for i in sorted({0, -1})
                             for kind in BAD_VALUES]
            flips = 12 if c == "payload" else 2
            out["bitflip"] += [f"bitflip:{rel}:{t}:{c}:{rng.randrange(n)}:{rng.randrange(4096)}"
                               for _ in range(flips)]
    return out


def _pinned_roots(data: Path) -> set[str]:
    """The block files (relative to `data`) of the roots of the store's pinned DAGs."""
    from peer.cids import parse_cid

    out: set[str] = set()
    pins = data / "store" / "pins"
    for p in sorted(pins.iterdir()) if pins.is_dir() and not pins.is_symlink() else []:
        with contextlib.suppress(Exception):
            key = parse_cid(p.name).key
            if (data / "store" / "blocks" / key[-2:] / key).is_file():
                out.add(f"store/blocks/{key[-2:]}/{key}")
    return out


def enumerate_mutations(data: Path, seed: int) -> dict[str, list[str]]:
    """Every mutation of `data` by class, each class in the seed's order."""
    rng = random.Random(seed)
    out: dict[str, list[str]] = {c: [] for c in CLASSES}
    paths = sorted(str(p.relative_to(data)) for p in data.rglob("*"))
    deep = [p for p in paths if p.count("/") >= 2 or (p.count("/") == 1 and (data / p).is_file())]
    keep = set(rng.sample(deep, min(10, len(deep)))) | _pinned_roots(data)
    for rel in paths:
        if rel in deep and rel not in keep and not is_sqlite(data / rel):
            continue
        out["file"] += [f"file:{rel}:{op}" for op in ("delete", "truncate", "empty", "dir",
                                                      "other", "symlink", "append", "file",
                                                      "fifo")]
        path = data / rel
        if path.is_file() and is_sqlite(path):
            out["file"] += [f"file:{rel}-wal:plant", f"file:{rel}-journal:plant",
                            f"file:{rel}-wal:plantsqlite"]
            size = int.from_bytes(path.read_bytes()[16:18], "big") or 4096
            pages = max(1, path.stat().st_size // (65536 if size == 1 else size))
            out["page"] += [f"page:{rel}:{rng.randrange(1, pages + 1)}:{fill}"
                            for fill in ("zero", "ff", "rand") for _ in range(6)]
            out["page"].append(f"page:{rel}:1:rand")
            db = connect(path, ro=True)
            try:
                for c, ms in _sqlite_mutations(rel, db, rng).items():
                    out[c] += ms
            finally:
                db.close()
    for c in CLASSES:
        out[c] = sorted(set(out[c]))
        rng.shuffle(out[c])
    return out


def interleave(by_class: dict[str, list[str]]) -> list[str]:
    """One of each class in turn (each class's own order kept), until all are taken."""
    out: list[str] = []
    lists = [list(v) for v in by_class.values()]
    while any(lists):
        for ls in lists:
            if ls:
                out.append(ls.pop(0))
    return out


# -- the worker: the node's read paths on one data dir ------------------------------------------
def worker() -> int:
    """Read requests (JSON lines) on stdin; for each, report each stage's start and then
    the result on stdout (JSON lines)."""
    import asyncio
    import logging

    out = sys.stdout
    sys.stdout = sys.stderr  # (whatever prints goes to stderr, not into the protocol)
    captured: list[logging.LogRecord] = []

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            captured.append(record)

    logging.basicConfig(level=logging.WARNING, handlers=[Grab()], force=True)

    def tell(msg: dict[str, Any]) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    for line in sys.stdin:
        req = json.loads(line)
        captured.clear()
        result = asyncio.run(_check(Path(req["dir"]), req["names"], tell))
        result["logged"] = [_logged(r, req["names"]) for r in captured
                            if r.exc_info or r.levelno >= 40]
        tell({"result": result})
    return 0


def _frames_of(e: BaseException) -> list[tuple[str, int, str]]:
    import traceback

    return [(f.filename, f.lineno or 0, f.name) for f in traceback.extract_tb(e.__traceback__)]


def _logged(r: Any, names: list[str]) -> dict[str, Any]:
    exc = r.exc_info[1] if r.exc_info else None
    return {"level": r.levelname, "msg": r.getMessage()[:300],
            "named": names_a_file(r.getMessage(), set(names)),
            "exc": type(exc).__name__ if exc else "",
            "frame": innermost_peer_frame(_frames_of(exc)) if exc else "",
            "at": f"{r.module}:{r.lineno}"}


def _exc(stage: str, e: BaseException, names: list[str]) -> dict[str, Any]:
    from peer.errors import BanzaiError

    msg = str(e).splitlines()[0][:300] if str(e) else ""
    return {"stage": stage, "exc": type(e).__name__, "msg": msg,
            "banzai": isinstance(e, BanzaiError), "named": names_a_file(str(e), set(names)),
            "frame": innermost_peer_frame(_frames_of(e))}


async def _check(data: Path, names: list[str], tell: Callable[[dict[str, Any]], None],
                 ) -> dict[str, Any]:
    from peer.config import PeerConfig
    from peer.http.tokens import load_or_create_token
    from peer.node import Node

    res: dict[str, Any] = {"errors": [], "http": []}
    tell({"stage": "open"})
    node = None
    try:
        node = Node(PeerConfig(data_dir=data, slots=1, mdns=False, gossip="127.0.0.1:0",
                               http="127.0.0.1:0"))
        token = load_or_create_token(data)  # (main reads it next: a bad one refuses the start)
    except Exception as e:
        if node is not None:
            node.log.close()
        res["errors"].append(_exc("open", e, names))
        return res
    res["identity"] = hashlib.sha256(node.identity.key).hexdigest()[:16]
    res["token"] = token
    res["secret"] = hashlib.sha256(node.mesh_secrets.primary).hexdigest()[:16]
    res["peer_id"] = node.peer_id[:64]
    try:
        for stage, step in _stages(node, res):
            tell({"stage": stage})
            try:
                await step()
            except Exception as e:
                res["errors"].append(_exc(stage, e, names))
    finally:
        tell({"stage": "close"})
        try:
            await node.close()
        except Exception as e:
            res["errors"].append(_exc("close", e, names))
            with contextlib.suppress(Exception):
                node.log.close()
    return res


def _stages(node: Any, res: dict[str, Any]) -> Iterator[tuple[str, Callable[[], Any]]]:
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from peer.http.app import make_app

    async def http(full: bool = True) -> None:
        async with TestClient(TestServer(make_app(node)),
                              headers={"Authorization": f"Bearer {res['token']}"}) as c:
            paths = ["/api/health", "/api/jobs"]
            if full:
                paths += ["/api/snapshot?v=3&digest=1", "/api/snapshot?v=3", "/api/snapshot?v=2",
                          "/api/snapshot"]
            r = await c.get("/api/jobs")
            if r.status == 200 and full:
                jobs = (await r.json()).get("jobs", [])
                paths += [f"/api/jobs/{j['id']}" for j in jobs[:6]
                          if isinstance(j, dict) and isinstance(j.get("id"), str)]
            for p in paths:
                try:
                    async with asyncio.timeout(REQUEST_S):
                        r = await c.get(p)
                        await r.read()
                    res["http"].append([p, r.status])
                except TimeoutError:
                    res["http"].append([p, "stuck"])

    async def start_loop() -> None:  # the compaction loop's start: the snapshots dir swept
        task = asyncio.get_running_loop().create_task(node.catchup._compact_loop())
        await asyncio.sleep(0.3)
        if task.done():
            task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def compact() -> None:
        node.catchup.compact()

    async def gc() -> None:  # a storage cycle ten years on
        node.janitor.wall = lambda: time.time() + 10 * 365 * 86400
        await node.janitor.cycle()

    async def scrub() -> None:
        res["scrub"] = await node.scrub.check()

    yield from (("http", http), ("start_loop", start_loop), ("compact", compact),
                ("http_after", lambda: http(False)), ("gc", gc), ("scrub", scrub))


class Worker:
    """The worker process: one mutant at a time, each stage bounded by `stage_s`."""

    def __init__(self, stage_s: float) -> None:
        self.stage_s = stage_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.checks = 0

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.checks += 1
        if self.checks % WORKER_CHECKS == 0:  # (what nodes leave behind stays bounded)
            self.kill()
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        return self.proc

    def check(self, data: Path, names: set[str]) -> dict[str, Any]:
        """The worker's result for `data`; {"stuck": stage} if a stage overran."""
        proc = self._spawn()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"dir": str(data), "names": sorted(names)}).encode() + b"\n")
        proc.stdin.flush()
        stage, deadline = "spawn", time.monotonic() + self.stage_s + 30  # (imports)
        fd, buf = proc.stdout.fileno(), b""  # (read unbuffered: select sees what is left)
        while True:
            while b"\n" not in buf:
                ready, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
                more = os.read(fd, 1 << 20) if ready else b""
                if not more:
                    self.kill()
                    return {"stuck": stage} if not ready else {"died": stage}
                buf += more
            line, buf = buf.split(b"\n", 1)
            msg = json.loads(line)
            if "result" in msg:
                return dict(msg["result"])
            stage, deadline = msg["stage"], time.monotonic() + self.stage_s

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            for f in (self.proc.stdin, self.proc.stdout):
                if f is not None:
                    f.close()
            self.proc = None


def classify(res: dict[str, Any], base: dict[str, Any]) -> tuple[list[Finding], bool]:
    """The findings of a worker's result (`base`: the pristine dir's), and whether the
    node refused the dir (a clear error at open)."""
    if "stuck" in res or "died" in res:
        kind = "stuck" if "stuck" in res else "worker_died"
        return [Finding(kind, frame=res.get("stuck") or res.get("died", ""))], False
    found, refused = [], False
    for e in res["errors"]:
        if e["stage"] == "open" and e["banzai"]:
            refused = True
            if not e["named"]:
                found.append(Finding("unnamed_error", e["exc"], e["frame"], e["msg"], "open"))
        else:
            kind = "stage_error" if e["banzai"] else "traceback"
            found.append(Finding(kind, e["exc"], e["frame"], e["msg"], e["stage"]))
    found += _http_findings(res.get("http", []))
    for r in res.get("logged", []):
        if r["exc"]:
            found.append(Finding("logged_traceback", r["exc"], r["frame"], r["msg"]))
        elif not r["named"] and r["msg"] not in {x["msg"] for x in base.get("logged", [])}:
            found.append(Finding("logged_unnamed_error", "", r["at"], r["msg"]))
    for k in ("identity", "secret", "peer_id"):
        if k in res and res[k] != base.get(k):
            found.append(Finding(f"{k}_changed", "", k, f"{k} {base.get(k)} -> {res[k]}"))
    return found, refused


def _http_findings(answers: list[tuple[str, int | str]]) -> list[Finding]:
    """A request with no answer in time, a 5xx, or a non-200 outside /api/snapshot."""
    found = []
    for p, status in answers:
        if status == "stuck":
            found.append(Finding("http_stuck", "", p.split("?")[0], f"GET {p}: no answer "
                                 f"within {REQUEST_S:g} s"))
        elif int(status) >= 500 or (status != 200 and not p.startswith("/api/snapshot")):
            found.append(Finding(f"http_{status}", "", JOB_PATH.sub("/api/jobs/{job}",
                                                                   p.split("?")[0]), p))
    return found


# -- a real peer on the mutant ----------------------------------------------------------------
def peer_args(data: Path, run_dir: Path, mesh: str, *extra: str) -> list[str]:
    return [str(BIN / "banzai-peer"), "--data-dir", str(data), "--http", "127.0.0.1:0",
            "--gossip", "127.0.0.1:0", "--no-mdns", "--mesh-name", mesh, "--slots", "1",
            "--log-level", "INFO", "--runtime-dir", str(run_dir), "--no-warm-workers", *extra]


@contextlib.contextmanager
def running_peer(args: list[str], log: Path, start_s: float,
                 ) -> Iterator[tuple[subprocess.Popen[bytes], str | None]]:
    """The peer of `args` (output to `log`); yields (process, URL or None if it exited or
    did not print it within `start_s`); SIGTERM at exit, then SIGKILL after 30 s."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = None
    try:
        deadline = time.monotonic() + start_s
        while time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"^web UI: (http://\S+?)/?$", log.read_text(errors="replace"), re.M)
            if m:
                url = m.group(1)
                break
            time.sleep(0.05)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def api(url: str, data: Path, path: str, body: bytes | None = None,
        ctype: str = "application/json", timeout: float = 10) -> tuple[int, Any]:
    req = urllib.request.Request(url + path, data=body, headers={
        "Authorization": f"Bearer {(data / 'http-token').read_text().strip()}",
        "Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()[:300]


def real_start(data: Path, run_dir: Path, names: set[str], start_s: float, hold_s: float,
               ) -> tuple[list[Finding], bool]:
    """A banzai-peer on `data`: it exits with a one-line error naming a file and no
    traceback (refused: True), or answers /api/health and /api/jobs with 200, again after
    `hold_s` (its first passes run meanwhile), and stops cleanly."""
    log = data.with_name("peer.log")
    args = peer_args(data, run_dir, f"fuzz-{secrets.token_hex(6)}")
    found: list[Finding] = []
    with running_peer(args, log, start_s) as (proc, url):
        if url is None and proc.poll() is None:
            found.append(Finding("start_stuck", "", "start", f"no URL within {start_s:g} s"))
        elif url is not None:
            found += _answers(url, data)
            time.sleep(hold_s)
            if proc.poll() is not None:
                found.append(Finding("died_while_up", "", f"rc={proc.returncode}"))
            else:
                found += _answers(url, data)
    text = log.read_text(errors="replace")
    refused = url is None and proc.returncode not in (None, 0)
    if (tb := traceback_finding(text, "start_traceback")) is not None:
        found.append(tb)
    elif refused:
        said = [ln for ln in text.splitlines() if ln.startswith("banzai-peer: ")]
        if not said or not names_a_file(said[-1], names):
            found.append(Finding("start_unnamed_error", "", "exit",
                                 (said or text.splitlines() or [""])[-1][:300]))
    elif url is not None and proc.returncode not in (0, -signal.SIGTERM):
        found.append(Finding("unclean_stop", "", f"rc={proc.returncode}", text[-300:]))
    return found, refused


def _answers(url: str, data: Path) -> list[Finding]:
    found = []
    for p in ("/api/health", "/api/jobs"):
        try:
            status, _ = api(url, data, p)
        except OSError as e:
            found.append(Finding("start_http_error", type(e).__name__, p, str(e)[:200]))
            continue
        if status != 200:
            found.append(Finding(f"start_http_{status}", "", p, p))
    return found


# -- building the data dirs -------------------------------------------------------------------
def _until(fn: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, KeyError, TypeError):
            if v := fn():
                return v
        time.sleep(0.2)
    return None


def _run_jobs(url: str, data: Path, texts: tuple[str, ...]) -> None:
    for text in texts:
        wf = [{"call": "ECHO", "args": [text]}, {"call": "ECHO", "args": [text + "!"]}]
        status, body = api(url, data, "/api/jobs", json.dumps(wf).encode(), timeout=30)
        if status != 201:
            raise RuntimeError(f"submit: {status} {body!r}")
        job = body["job"]
        if not _until(lambda j=job: api(url, data, f"/api/jobs/{j}")[1]["state"]
                      in ("done", "failed", "cancelled"), 60):
            raise RuntimeError(f"job {job} did not finish")


def build(root: Path, build_s: float) -> tuple[Path, Path]:
    """Peer a (jobs run and compacted, an upload) and peer b (joined later: caught up by
    snapshot), both on loopback and stopped cleanly; their data dirs."""
    a, b, run_dir = root / "a", root / "b", root / "run"
    run_dir.mkdir(parents=True, mode=0o700)
    mesh = f"fuzz-{secrets.token_hex(6)}"
    t_end = time.monotonic() + build_s
    with running_peer(peer_args(a, run_dir, mesh, "--compact-recent-tasks", "0"),
                      root / "a.log", 60) as (_pa, ua):
        if ua is None:
            raise RuntimeError("peer a did not start:\n" + (root / "a.log").read_text())
        _run_jobs(ua, a, JOB_TEXTS[:3])
        api(ua, a, "/api/add?name=fuzz.txt", b"fuzz upload\n", "application/octet-stream")
        api(ua, a, "/api/add?name=fuzz.bin",  # (a dag-pb root over 4 leaves)
            random.Random(1).randbytes(3 * 256 * 1024 + 100), "application/octet-stream")
        _until(lambda: api(ua, a, "/api/health")[1]["log"]["compaction"]["dropped"], 30)
        gossip = api(ua, a, "/api/health")[1]["gossip_address"]
        b.mkdir(mode=0o700)
        shutil.copy2(a / "mesh.secret", b / "mesh.secret")
        with running_peer(peer_args(b, run_dir, mesh, "--join", gossip), root / "b.log",
                          60) as (_pb, ub):
            if ub is None:
                raise RuntimeError("peer b did not start:\n" + (root / "b.log").read_text())

            def same() -> bool:
                return bool(api(ua, a, "/api/health")[1]["log"]["heads_digest"]
                            == api(ub, b, "/api/health")[1]["log"]["heads_digest"])

            _until(same, max(5.0, t_end - time.monotonic()) / 2)
            _run_jobs(ua, a, JOB_TEXTS[3:])  # a live (uncompacted) job too
            _until(same, max(5.0, t_end - time.monotonic()))
    old = time.time() - 2 * 86400  # (past gc's grace: a mutant's cycle may free them)
    for f in (a / "store" / "blocks").rglob("*"):
        if f.is_file() and not f.is_symlink():
            os.utime(f, (old, old))
    return a, b


# -- the run ----------------------------------------------------------------------------------
@dataclass
class Run:
    args: argparse.Namespace
    root: Path
    pristine: Path
    other: Path | None
    canary: Path
    names: set[str]
    worker: Worker
    base: dict[str, Any] = field(default_factory=dict)
    stable: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    pristine_rows: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    report: Report = field(default_factory=Report)
    peak_bytes: int = 0
    checked: list[tuple[str, str]] = field(default_factory=list)  # (mutation, outcome)

    def mutant(self, mid: str | None) -> Path:
        """A fresh copy of the pristine dir with `mid` applied (NotApplicable if not)."""
        d = self.root / "m"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        data = d / "data"
        shutil.copytree(self.pristine, data, symlinks=True)
        if mid is not None:
            seed = int.from_bytes(hashlib.sha256(f"{self.args.seed}:{mid}".encode()).digest()[:8])
            apply(mid, Ctx(data, self.other, self.canary, random.Random(seed)))
        self.peak_bytes = max(self.peak_bytes, du(self.root))
        return data

    def canary_touched(self) -> bool:
        d = self.canary.parent
        touched = sorted(p.name for p in d.iterdir()) != [self.canary.name] or (
            self.canary.read_bytes() != b"canary\n")
        if touched:
            shutil.rmtree(d)
            plant_canary(d)
        return touched

    def in_process(self, mid: str) -> None:
        try:
            data = self.mutant(mid)
        except (NotApplicable, sqlite3.Error, OSError):
            self.report.add(mid, "n/a", [])
            return
        reference = dir_rows(data)
        if mid.startswith("file:"):  # what the file held, but for the file itself (the log's
            # rows stay: a peer that silently starts a fresh log lost them)
            target = mid.split(":")[1]
            reference = {f: ts for f, ts in self.pristine_rows.items()
                         if f == "events.sqlite" or not (f + "/").startswith(target + "/")}
        res = self.worker.check(data, self.names)
        found, refused = classify(res, self.base)
        if "identity" in res:  # opened
            lost = lost_rows(reference, self.stable, dir_rows(data))
            if lost:
                worst = max(lost, key=lambda k: lost[k])
                found.append(Finding("data_lost", "", worst,
                                     ", ".join(f"{k}: {n}" for k, n in sorted(lost.items()))))
        if self.canary_touched():
            found.append(Finding("outside_touched", "", "canary", str(self.canary)))
        outcome = primary_outcome(found, refused)
        self.report.add(mid, outcome, found)
        self.checked.append((mid, outcome))
        if refused and mid.split(":", 1)[0] in ("value", "insert", "bitflip"):
            e = res["errors"][0]
            self.report.refused(mid, e["frame"], e["msg"])

    def start(self, mid: str) -> None:
        try:
            data = self.mutant(mid)
        except (NotApplicable, sqlite3.Error, OSError):
            return
        found, refused = real_start(data, self.root / "run", self.names, self.args.start_s,
                                    self.args.hold_s)
        if self.canary_touched():
            found.append(Finding("outside_touched", "", "canary", str(self.canary)))
        self.report.add("start:" + mid, primary_outcome(found, refused), found)


def du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def plant_canary(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    canary = d / "victim.frames"
    canary.write_bytes(b"canary\n")
    return canary


def sample_starts(checked: list[tuple[str, str]], n: int, seed: int) -> list[str]:
    """`n` mutations to start for real: one per (class, in-process outcome) first, file-level
    ones among them, then the rest in the seed's order."""
    rng = random.Random(seed)
    pool = [(m, o) for m, o in checked if o != "n/a"]
    rng.shuffle(pool)
    pool.sort(key=lambda mo: not mo[0].startswith("file:"))
    firsts, seen = [], set()
    for m, o in pool:
        if (k := (m.split(":", 1)[0], o)) not in seen:
            seen.add(k)
            firsts.append(m)
    rest = [m for m, _ in pool if m not in firsts]
    return (firsts + rest)[:n]


def baseline(run: Run) -> None:
    """The checks on two pristine copies: their result, and the rows both keep."""
    run.pristine_rows = dir_rows(run.mutant(None))
    runs = []
    for _ in range(2):
        data = run.mutant(None)
        res = run.worker.check(data, run.names)
        runs.append((res, dir_rows(data)))
    run.base = runs[0][0]
    run.stable = {f: {t: rows & runs[1][1].get(f, {}).get(t, set()) for t, rows in ts.items()}
                  for f, ts in runs[0][1].items()}
    found, refused = classify(run.base, {**run.base, "logged": []})
    run.report.add("baseline", primary_outcome(found, refused), found)


def print_report(run: Run, elapsed_s: float) -> None:
    rep = run.report
    print_table(rep)
    print(f"\n{sum(sum(c.values()) for c in rep.table.values())} checks in {elapsed_s:.0f} s; "
          f"disk used at most {run.peak_bytes / 2**20:.1f} MiB under {run.root} (removed)")
    print(f"\n{len(rep.refusals)} kind(s) of refusal over one row (no finding; is the "
          "whole peer's stop needed?):")
    for frame, (msg, mid, n) in sorted(rep.refusals.items()):
        print(f"  {frame}; {n} mutant(s): {msg[:200]}\n    mutation: {mid}")
    print_findings(rep)


def print_table(rep: Report) -> None:
    outcomes = sorted({o for c in rep.table.values() for o in c},
                      key=lambda o: (o not in NOT_FINDINGS, o))
    w = max(len(c) for c in rep.table) + 2
    print("\n" + "class".ljust(w) + "  ".join(f"{o:>{max(5, len(o))}}" for o in outcomes))
    for cls in sorted(rep.table):
        print(cls.ljust(w) + "  ".join(f"{rep.table[cls][o]:>{max(5, len(o))}}"
                                       for o in outcomes))


def print_findings(rep: Report) -> None:
    print(f"\n{len(rep.findings)} finding(s):")
    for i, (f, mid, n) in enumerate(sorted(rep.findings.values(), key=lambda x: x[0].key()), 1):
        starts = " --starts 1" if mid.startswith("start:") else " --starts 0"
        print(f"F{i}. {f.kind} {f.exc} at {f.frame}"
              f"{' (stage ' + f.stage + ')' if f.stage else ''}; {n} mutant(s)\n"
              f"    {f.message[:240]}\n    mutation: {mid}\n"
              f"    re-run: PYTHONPATH=$PWD .venv/bin/python scripts/fuzz_datadir.py "
              f"--only '{mid.removeprefix('start:')}'{starts}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget-s", type=float, default=600, help="the whole run's bound")
    ap.add_argument("--mutations", type=int, default=100_000, help="in-process mutants, at most")
    ap.add_argument("--starts", type=int, default=20, help="mutants started as real peers")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, help="fuzz this data dir (copied; not built)")
    ap.add_argument("--other-dir", type=Path, help="another peer's data dir (file:...:other)")
    ap.add_argument("--keep", type=Path, help="copy the built data dirs here (a, b)")
    ap.add_argument("--only", action="append", default=[], help="this mutation id (repeatable)")
    ap.add_argument("--stage-s", type=float, default=20, help="bound of each in-process stage")
    ap.add_argument("--start-s", type=float, default=60, help="bound of a real peer's start")
    ap.add_argument("--hold-s", type=float, default=3, help="a real peer's time up")
    ap.add_argument("--json", type=Path, help="also write the findings here")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker()
    t0 = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="fuzz-datadir-"))
    worker_proc = Worker(a.stage_s)
    try:
        if a.data_dir is None:
            print(f"building the data dirs in {root} ...", flush=True)
            pristine, other = build(root / "build", min(240.0, a.budget_s / 3))
            if a.keep is not None:
                for d in (pristine, other):
                    shutil.copytree(d, a.keep / d.name, symlinks=True)
        else:
            pristine, other = a.data_dir, a.other_dir
        canary = plant_canary(root / "canary")
        names = {str(pristine.name), *(p.name for p in pristine.iterdir()), "data dir"}
        names.discard("store")  # (too common a word to count as naming a file)
        run = Run(a, root, pristine, other, canary, names, worker_proc)
        run.names.add(str(root / "m" / "data"))
        mids = a.only or interleave(enumerate_mutations(run.mutant(None), a.seed))[:a.mutations]
        print(f"built in {time.monotonic() - t0:.0f} s; {len(mids)} mutation(s); baseline ...",
              flush=True)
        baseline(run)
        reserve = a.starts * (a.hold_s + 4)  # (a start takes ~1-3 s)
        for i, mid in enumerate(mids):
            if time.monotonic() - t0 > a.budget_s - reserve:
                print(f"budget: {i} of {len(mids)} mutations checked in process", flush=True)
                break
            run.in_process(mid)
        worker_proc.kill()
        picks = mids if a.only else sample_starts(run.checked, a.starts, a.seed)
        for mid in picks[:a.starts]:
            if time.monotonic() - t0 > a.budget_s:
                break
            run.start(mid)
        print_report(run, time.monotonic() - t0)
        if a.json is not None:
            a.json.write_text(json.dumps([{"kind": f.kind, "exc": f.exc, "frame": f.frame,
                                           "message": f.message, "stage": f.stage,
                                           "mutation": m, "count": n}
                                          for f, m, n in run.report.findings.values()],
                                         indent=1))
        return 1 if run.report.findings else 0
    finally:
        worker_proc.kill()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

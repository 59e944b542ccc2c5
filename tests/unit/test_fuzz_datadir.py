"""The pure parts of scripts/fuzz_datadir.py: how a worker's result is classified, how
findings are deduplicated, which rows count as lost, and that a mutation id applies the
same way twice (no peer is started)."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path
from typing import Any

from scripts.scriptlib import load_script

fz = load_script("fuzz_datadir")

TB = """2026-01-01 INFO banzai: starting
Traceback (most recent call last):
  File "/x/peer/main.py", line 190, in main
    run(cfg)
  File "/x/peer/log/jobindex.py", line 314, in <listcomp>
    int(at)
  File "/usr/lib/python3.11/json/decoder.py", line 9, in decode
    raise ValueError
ValueError: invalid literal for int() with base 10: ''
"""


def _res(**kw: Any) -> dict[str, Any]:
    return {"errors": [], "http": [], "logged": [], "identity": "i", "secret": "s",
            "peer_id": "p", **kw}


BASE = _res()


def test_the_innermost_peer_frame_names_the_finding() -> None:
    f = fz.traceback_finding(TB, "start_traceback")
    assert (f.exc, f.frame) == ("ValueError", "peer/log/jobindex.py:314 <listcomp>")
    assert f.message == "ValueError: invalid literal for int() with base 10: ''"
    assert fz.traceback_finding("no trace here", "x") is None


def test_a_clear_error_at_open_naming_a_file_is_a_refusal_not_a_finding() -> None:
    named = {"stage": "open", "exc": "StoreError", "msg": "events.sqlite: bad", "banzai": True,
             "named": True, "frame": "peer/log/sqlite.py:1 f"}
    assert fz.classify({"errors": [named]}, BASE) == ([], True)
    found, refused = fz.classify({"errors": [{**named, "named": False}]}, BASE)
    assert refused and [f.kind for f in found] == ["unnamed_error"]
    found, refused = fz.classify({"errors": [{**named, "banzai": False}]}, BASE)
    assert not refused and [f.kind for f in found] == ["traceback"]


def test_answers_stuck_stages_and_silent_changes_are_findings() -> None:
    found, _ = fz.classify(_res(http=[["/api/jobs/j1", 404], ["/api/snapshot?v=3", 404],
                                      ["/api/snapshot?v=2", "stuck"], ["/api/health", 500]],
                                secret="other"), BASE)
    assert [(f.kind, f.frame) for f in found] == [
        ("http_404", "/api/jobs/{job}"), ("http_stuck", "/api/snapshot"),
        ("http_500", "/api/health"), ("secret_changed", "secret")]
    assert [f.kind for f in fz.classify({"stuck": "compact"}, BASE)[0]] == ["stuck"]


def test_a_traceback_is_one_finding_wherever_it_shows() -> None:
    rep = fz.Report()
    frame = "peer/log/jobindex.py:314 <listcomp>"
    rep.add("value:a", "traceback", [fz.Finding("traceback", "ValueError", frame)])
    rep.add("insert:b", "logged_traceback", [fz.Finding("logged_traceback", "ValueError", frame)])
    rep.add("value:c", "http_500", [fz.Finding("http_500", "", "/api/jobs")])
    assert [(m, n) for _, m, n in rep.findings.values()] == [("value:a", 2), ("value:c", 1)]
    assert rep.table["value"] == {"traceback": 1, "http_500": 1}


def test_lost_rows_count_only_rows_the_unmutated_run_keeps() -> None:
    ref = {"events.sqlite": {"events": {"a", "b", "c"}, "meta": {"m"}}}
    stable = {"events.sqlite": {"events": {"a", "b"}, "meta": {"m"}}}
    after = {"events.sqlite": {"events": {"a", "z"}, "meta": {"m"}}}
    assert fz.lost_rows(ref, stable, after) == {"events.sqlite/events": 1}


def test_a_mutation_id_applies_the_same_bytes_twice(tmp_path: Path) -> None:
    def made(name: str, mid: str) -> bytes:
        d = tmp_path / name
        d.mkdir()
        db = sqlite3.connect(d / "events.sqlite")
        db.execute("CREATE TABLE job_index (job TEXT PRIMARY KEY, state TEXT) WITHOUT ROWID")
        db.executemany("INSERT INTO job_index VALUES (?, ?)", [("j1", "done"), ("j2", "done")])
        db.commit()
        db.close()
        seed = int.from_bytes(mid.encode()[:8])
        fz.apply(mid, fz.Ctx(d, None, tmp_path / "canary", random.Random(seed)))
        return (d / "events.sqlite").read_bytes()

    for mid in ("value:events.sqlite:job_index:state:-1:nonutf8",
                "bitflip:events.sqlite:job_index:job:0:3", "page:events.sqlite:1:rand"):
        assert made(mid.replace(":", "_") + "1", mid) == made(mid.replace(":", "_") + "2", mid)
    db = fz.connect(tmp_path / "value_events.sqlite_job_index_state_-1_nonutf81"
                    / "events.sqlite")
    assert db.execute("SELECT state, typeof(state) FROM job_index ORDER BY job").fetchall() == [
        (b"done", b"text"), (b"\xff\xfeA\x80", b"text")]
    db.close()


def test_the_root_block_of_each_pinned_dag_is_mutated_a_fifo_among_the_ways(
        tmp_path: Path) -> None:
    """Session 47 (review r1 H1, M1): the sampled deep files rarely held a pinned DAG's root,
    and no mutation planted a FIFO."""
    import stat

    from peer.cids import parse_cid
    from peer.ipfs import EmbeddedStore

    d = tmp_path / "data"
    store = EmbeddedStore(d / "store")
    root = parse_cid(store.add_bytes(bytes(3 * 256 * 1024 + 100)))
    store.pin(str(root))
    for i in range(20):  # (more deep files than are sampled)
        store.add_bytes(f"loose {i}".encode())
    key = f"store/blocks/{root.key[-2:]}/{root.key}"
    assert fz._pinned_roots(d) == {key}
    files = fz.enumerate_mutations(d, 1)["file"]
    assert f"file:{key}:fifo" in files and f"file:{key}:truncate" in files
    fz.apply(f"file:{key}:fifo", fz.Ctx(d, None, tmp_path / "canary", random.Random(1)))
    assert stat.S_ISFIFO((d / key).lstat().st_mode)

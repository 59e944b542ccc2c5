"""What a peer stores of another peer's job, byte for byte: the log's rows of the TURNs it
received (their payloads as JSON text) and, once the job is compacted, the job index's rows
(the record, its thin row, the cache entries, the providers). Pinned as 7f28943 wrote them,
so a cut of the receive path's cost (issue 12: one encoder for the texts) changes none of
it: a data dir stays what an earlier release reads. The one change since, on purpose: the
log's rows of task events (a TURN, a lone CHUNK_DONE) hold their payloads' canonical text
(keys sorted, the text their content hash covers: one encoding for both, session 48 helper
e), which every release reads as the same payload; the job index's rows did not move."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.node import Node
from tests.helpers import load_script

# sha256 (first 16 hex digits) of repr(rows) per table, ordered by the first two columns, and
# the row count: as 7f28943 stored them from scripts/bench_receive.py's frames (50 tasks, 3 a
# TURN, from hlc 1_700_000_000_000 << 16); the events' rows as 0575111a+ stores them (the
# TURNs' payloads canonical; 7f28943's, compact in the sender's key order: 50e710a35f906362)
LOGGED = (18, "e420d0629d0f737d")
COMPACTED = {"job_index": (1, "bddbb8eceaac3410"), "job_thin": (1, "8364af1301c07e28"),
             "cache_index": (50, "3e2d1006380d8fae"), "provider_index": (50, "785b894c85457dae"),
             "events": (0, "4f53cda18c2baa0c")}


def _digest(node: Node, table: str) -> tuple[int, str]:
    rows = node.log.db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def test_a_received_job_is_stored_and_compacted_as_before(tmp_path: Path) -> None:
    wire = load_script("bench_receive").frames(50, 3, True, 1_700_000_000_000 << 16)
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=0))
    node.listeners[:] = [node.compactor.note]  # (nothing runs here)
    try:
        for w in wire:  # one frame at a time, as a receiver merges them
            node.merge([Event.from_json(json.loads(w))])
        assert _digest(node, "events") == LOGGED
        node.catchup.compact()
        assert {t: _digest(node, t) for t in COMPACTED} == COMPACTED
    finally:
        node.log.close()



def test_a_received_job_compacted_after_a_restart_is_stored_as_before(tmp_path: Path) -> None:
    """The same job, compacted by the peer after a restart (its TURNs replayed from their
    rows, whose payloads' keys are sorted since 0575111a where the live ones kept the
    sender's order): the job index's rows are the pinned ones, byte for byte. A compacted
    job's record text is checked by other peers against the hash another peer made
    (snapframe.check_record), so no order read back from a row may reach it."""
    wire = load_script("bench_receive").frames(50, 3, True, 1_700_000_000_000 << 16)
    cfg = PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=0)
    node = Node(cfg)
    node.listeners[:] = [node.compactor.note]
    try:
        for w in wire:
            node.merge([Event.from_json(json.loads(w))])
    finally:
        node.log.close()
    node = Node(cfg)  # (the replay; it attests the unsigned rows: their batch column moves)
    try:
        assert len(node.state.events) == LOGGED[0]
        turns = [e for e in node.state.events.values() if e.type is EventType.TURN]
        assert turns and all(list(p) == sorted(p) for e in turns for _, p in e.payload["parts"])
        node.catchup.compact()
        assert {t: _digest(node, t) for t in COMPACTED} == COMPACTED
    finally:
        node.log.close()


# the same of 20 jobs of 2 tasks each (scripts/bench_receive.py's `--jobs` frames, from hlc
# 1_700_000_000_000 << 16: per job a JOB_SUBMITTED that claims its tasks, then one TURN of
# their CHUNK_DONEs), merged with the scheduler listening, as e55eb9e stored them (the
# events' rows as 0575111a+ stores them: e55eb9e's 187476c6837728d4, the TURNs compact)
JOBS_LOGGED = (40, "fa18e2109809a6b1")
JOBS_COMPACTED = {"job_index": (20, "ca1834dc87f7493c"), "job_thin": (20, "5e564a00b528d868"),
                  "cache_index": (40, "e7d2259a2003dd43"),
                  "provider_index": (40, "4bc9729766affeb9"), "events": (0, "4f53cda18c2baa0c")}


def test_received_small_jobs_are_stored_and_compacted_as_before(tmp_path: Path) -> None:
    wire = load_script("bench_receive").job_frames(20, 2, 1_700_000_000_000 << 16)
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=0))
    node.listeners[:] = [node.scheduler.poke, node.compactor.note]
    try:
        for w in wire:
            node.merge([Event.from_json(json.loads(w))])
            node.scheduler.step()  # (nothing of another peer's claimed task to run here)
        assert _digest(node, "events") == JOBS_LOGGED
        node.catchup.compact()
        assert {t: _digest(node, t) for t in JOBS_COMPACTED} == JOBS_COMPACTED
    finally:
        node.log.close()


# the same 20 jobs of 2 tasks each as a peer that is no member of them holds them, lanes on
# (`Node(cfg, lanes=True)`; docs/design/partial-replication.md, section 3): per job its
# JOB_SUBMITTED (`members`: the runner) and a JOB_ENDED (scripts/bench_receive.py's
# `--non-member` frames, one event a frame, from hlc 1_700_000_000_000 << 16); the compaction
# pass makes each job's record of its JOB_ENDED, as lanes step 8 (session 37, helper d) stored them
# (re-pinned at the merge with helper a's frames: the runner a member that emits the JOB_ENDED;
# re-pinned by session 37 helper j: the outputs made in the runner's lane of a lanes job's id,
# as `fold.end_refusal` now asks: same counts, other job ids and output origins;
# re-pinned by session 46 helper i: each record's facts keep the `end_rank` of the JOB_ENDED
# it was made of and the homes, `"end"`, so that a later one ranked before it makes it again
# (`Compactor._late`); the rows are those of d8519ea but for that key, and the thin rows'
# `sha`, which hashes the facts; re-pinned by session 47 helper c: the facts' `"end"` also
# keeps the merged outputs' orders, `merged` and `lanes` (review r3 of session 46, R3-B):
# without those two keys the job_index rows and the thin rows' `sha` are 9590a1d's, checked;
# and by the lead: it keeps the vouched members too, `vouched` (R3-D, whose outputs a later
# JOB_ENDED's merge takes))
NON_MEMBER_LOGGED = (40, "366986c50141c166")
NON_MEMBER_COMPACTED = {"job_index": (20, "ab0c3d6bc2220f52"),
                        "job_thin": (20, "23918dde6988c4a6"),
                        "cache_index": (40, "31b8189055546558"),
                        "provider_index": (40, "60f980d55da87278"),
                        "events": (0, "4f53cda18c2baa0c")}


def test_a_non_member_s_jobs_are_stored_and_compacted_from_their_job_ended(
        tmp_path: Path) -> None:
    script = load_script("bench_receive")
    wire = script.non_member_frames(20, 2, 1_700_000_000_000 << 16, 0)
    node = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    node.listeners[:] = [node.scheduler.poke, node.compactor.note]
    try:
        for w in wire:
            events = [Event.from_json(d) for d in json.loads(w)]
            for e in events:  # (a lanes job: the runner is its one member)
                if e.type == EventType.JOB_SUBMITTED:
                    e.payload["members"] = [script.RUNNER]
            node.merge([Event.from_json(e.to_json()) for e in events])
            node.scheduler.step()
        assert _digest(node, "events") == NON_MEMBER_LOGGED
        node.catchup.compact()
        assert {t: _digest(node, t) for t in NON_MEMBER_COMPACTED} == NON_MEMBER_COMPACTED
        assert not node.state.jobs and not node.state.ended  # (their records answer)
        row = node.log.db.execute("SELECT summary, facts FROM job_index WHERE job = ?",
                                  ("j000000000004",)).fetchone()  # (bench-job-3's)
        assert json.loads(row[0])["members"] == [script.RUNNER]
        assert json.loads(row[0])["outputs"] == {"t0": script._cid("bench-job-3/t0"),
                                                 "t1": script._cid("bench-job-3/t1")}
        assert json.loads(row[1])["outputs"] == sorted(json.loads(row[0])["outputs"].values())
    finally:
        node.log.close()

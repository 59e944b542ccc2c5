"""A finished job's compact record, list entry and retention facts (`Node._finished`, made in
one pass) and the job's full view (`job_view`) are byte for byte what the previous release
made (tests/unit/record_oracle.py, its code), on random jobs folded from random logs: done,
failed and cancelled jobs, retried and contested chunks, per-item splits of several chunks
(inline and by listing), losing splits, cached tasks, partial results, implicit splits."""

from __future__ import annotations

import json
import random
from collections import Counter
from types import SimpleNamespace
from typing import Any

from peer.http.views import job_view
from peer.log import Event, EventType, FailureKind, MeshState, fold
from peer.log.compact import _canon
from peer.node import Node
from tests.unit import record_oracle

MAX_ATTEMPTS = 3
PEERS = ("p0", "p1", "p2")
JOBS = 400  # random logs (seeded: the same every run)


def _cid(r: random.Random, what: str) -> str:
    return f"bafk{what}{r.randrange(10**6):06d}"


class _Story:
    """A log of random events about one job "j", made in HLC order (ties between peers)."""

    def __init__(self, r: random.Random) -> None:
        self.r = r
        self.events: list[Event] = []
        self.hlc = 1_700_000_000_000 << 16
        self.seqs: Counter[str] = Counter()

    def add(self, typ: EventType, payload: dict[str, Any], origin: str | None = None,
            ) -> list[Any]:
        origin = origin or self.r.choice(PEERS)
        self.seqs[origin] += 1
        self.hlc += self.r.choice((0, 1, 1 << 16, 5 << 16))  # (0: a tie broken by origin)
        self.events.append(Event(origin, self.seqs[origin], self.hlc, typ, payload))
        return [origin, self.seqs[origin]]


def _chunk(s: _Story, task: str, split: list[Any], i: int, per_item: bool,
           fate: str) -> None:
    """Attempts of one chunk: claims (some on a losing split), progress, failures, and then
    done (fate "done"), failed for good ("failed"), or left as it is."""
    r = s.r
    base = {"job": "j", "task": task, "split": split, "chunk": i}
    for attempt in range(MAX_ATTEMPTS + 2):
        at = {**base, "attempt": attempt}
        for _ in range(r.choice((0, 1, 1, 1, 2))):
            s.add(EventType.CLAIM, at)
        if r.random() < 0.1:
            s.add(EventType.CLAIM, {**at, "split": ["p9", 77]})  # a losing split's chunk
        if r.random() < 0.4:
            s.add(EventType.PROGRESS, {**at, "progress": r.choice((0.0, 0.25, 0.5, 1.0))})
        last = fate == "failed" and attempt >= MAX_ATTEMPTS - 1
        if fate == "done" and (attempt == MAX_ATTEMPTS - 1 or r.random() < 0.6):
            s.add(EventType.CHUNK_DONE, {
                **at, "output": None if per_item else _cid(r, "out"),
                "cache": {_cid(r, "key"): {"n": f"f{i}", "c": _cid(r, "item")}}
                if per_item else {}, **({"log": _cid(r, "log")} if r.random() < 0.8 else {})})
            if r.random() < 0.05:  # lost results: the chunk is reopened
                s.add(EventType.CHUNK_FAILED, {**at, "kind": "lost", "error": "lost",
                                               "reopen": True})
            return
        if fate == "open" and r.random() < 0.5:
            return  # running or pending (a live job, or a cancelled one's)
        kind = (r.choice(("error", "crash")) if last
                else r.choice(("crash", "timeout", "storage", "lease", "lost")))
        if fate == "failed" and r.random() < 0.2:
            kind = FailureKind.ERROR.value  # not retried: failed at once
        s.add(EventType.CHUNK_FAILED, {**at, "kind": kind, "error": f"e{attempt}",
                                       **({"counts": False} if r.random() < 0.1 else {})})
        if kind == "error" and fate == "failed":
            return


def _job(r: random.Random) -> MeshState:
    s = _Story(r)
    implicit = r.random() < 0.3
    tasks: list[dict[str, Any]] = []
    for i in range(r.randint(1, 5)):
        t: dict[str, Any] = {"name": f"t{i}", "call": "ECHO", "params": {"i": i}}
        if i and r.random() < 0.3:
            t["depends"] = [f"t{r.randrange(i)}"]
        elif r.random() < 0.4:
            t["cid"] = _cid(r, "src")
        tasks.append(t)
    wf: dict[str, Any] = {"name": "w", "tasks": tasks}
    if implicit:
        wf["splits"] = "implicit"
    job = s.add(EventType.JOB_SUBMITTED, {"job": "j", "workflow": wf}, origin="p0")
    cancel_at = r.randrange(len(tasks) + 1) if r.random() < 0.25 else None
    for n, t in enumerate(tasks):
        if n == cancel_at:
            s.add(EventType.JOB_CANCELLED, {"job": "j", "reason": "r"})
        _task(s, t, job if implicit and not t.get("depends") and not t.get("cid") else None)
    if cancel_at == len(tasks):
        s.add(EventType.JOB_CANCELLED, {"job": "j", "reason": "r"})
    if r.random() < 0.1:
        r.shuffle(s.events)  # (what counts is the fold's rules, not the order heard in)
    return fold(s.events)


def _task(s: _Story, t: dict[str, Any], implicit: list[Any] | None) -> None:
    r = s.r
    name = t["name"]
    per_item = "cid" in t
    fate = r.choice(("done", "done", "done", "failed", "cached", "open", "skip"))
    if fate == "skip":
        return  # never split (a task after a failed one, or not reached yet)
    split: list[Any] | None = implicit
    n = r.randint(1, 4) if per_item else 1
    if implicit is None or r.random() < 0.2:  # (a real split of an implicit one loses)
        payload: dict[str, Any] = {"job": "j", "task": name, "input": t.get("cid")}
        typ = EventType.TASK_SPLIT
        if per_item and r.random() < 0.3:
            typ = EventType.TASK_SPLIT_REF
            payload |= {"listing": _cid(r, "lst"), "sizes": [r.randint(0, 3) for _ in range(n)]}
        else:
            payload["chunks"] = [[[f"f{i}", _cid(r, "it")] for i in range(r.randint(0, 2))]
                                 for _ in range(n)] if per_item else [[]]
        made = s.add(typ, payload)
        split = split or made
        if r.random() < 0.1:  # a concurrent split, later: it loses
            s.add(typ, payload)
    assert split is not None
    if implicit is not None:
        n = 1
    if fate == "cached" and r.random() < 0.5:
        split = None  # taken from the cache before any chunk was worked on
    if split is not None:
        for i in range(n):
            _chunk(s, name, split, i, per_item,
                   "open" if fate == "cached" else fate if i == n - 1 or fate != "failed"
                   else "done")
    if per_item and fate in ("done", "open", "failed") and r.random() < 0.5:
        s.add(EventType.PARTIAL, {"job": "j", "task": name, "output": _cid(r, "part"),
                                  "items": 1, "of": 3})
    if fate in ("done", "cached"):
        s.add(EventType.TASK_DONE, {"job": "j", "task": name, "output": _cid(r, "task"),
                                    "key": _cid(r, "k"), "cached": fate == "cached",
                                    **({"warning": "w"} if r.random() < 0.1 else {})})


def _bytes(obj: Any) -> tuple[bytes, str]:
    """Canonical bytes (what snapshots sign and peers compare) and the stored form (key order
    kept, as the job index writes it)."""
    return _canon(obj), json.dumps(obj, separators=(",", ":"))


def _listed(view: dict[str, Any]) -> dict[str, Any]:
    """`view` without the keys that say which of a task's chunks it lists (the previous
    release's view listed every one): all of them here, from the first."""
    for t in view["tasks"]:
        assert (t.pop("chunks_total"), t.pop("chunks_from")) == (len(t["chunks"]), 0)
    return view


def test_records_views_and_facts_are_the_previous_releases_byte_for_byte() -> None:
    r = random.Random(12)
    seen: Counter[str] = Counter()
    for n in range(JOBS):
        state = _job(r)
        old_view = record_oracle.job_view(state, "j", MAX_ATTEMPTS)
        assert _bytes(_listed(job_view(state, "j", MAX_ATTEMPTS))) == _bytes(old_view), n
        assert (_bytes(job_view(state, "j", MAX_ATTEMPTS, detail=False))
                == _bytes(record_oracle.summary(old_view))), n
        seen.update(f"chunk {c['state']}" for t in old_view["tasks"] for c in t["chunks"])
        seen["implicit"] += sum(state.implicit(sp) for sp in state.splits.values())
        seen["by listing"] += sum("sizes" in sp.payload for sp in state.splits.values())
        old = record_oracle.finished(state, "j", MAX_ATTEMPTS)
        node: Any = SimpleNamespace(state=state, cfg=SimpleNamespace(max_attempts=MAX_ATTEMPTS))
        f = Node._finished(node, "j")
        if old is None:
            assert f is None, n
            seen["live"] += 1
            continue
        assert f is not None, n
        st, end_s, summary, record, facts = old
        assert (f.state, f.ended_hlc >> 16) == (st, int(end_s * 1000)), n
        assert _bytes(f.summary) == _bytes(summary), n
        assert _bytes(f.record) == _bytes(record), n
        assert _bytes(f.facts) == _bytes(facts), n
        seen[st] += 1
        seen["chunks"] += sum(len(t["chunks"]) for t in old_view["tasks"])
        seen["logs"] += len(facts["logs"])
        seen["skipped"] += sum(c["state"] == "skipped" for t in old_view["tasks"]
                               for c in t["chunks"])
        seen["several chunks"] += sum(len(t["chunks"]) > 1 for t in old_view["tasks"])
        seen["partial"] += sum(t["partial"] is not None for t in record["tasks"])
        seen["cached"] += sum(t["cached"] for t in record["tasks"])
        seen["retried"] += sum(c["attempts"] > 1 for t in old_view["tasks"]
                               for c in t["chunks"])
    # every kind of case was met (else the random jobs stopped covering them)
    for what in ("live", "done", "failed", "cancelled", "logs", "skipped", "several chunks",
                 "partial", "cached", "retried", "implicit", "by listing", "chunk running",
                 "chunk pending", "chunk failed", "chunk cancelled"):
        assert seen[what] >= 10, (what, seen)

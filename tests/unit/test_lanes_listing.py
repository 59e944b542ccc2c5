"""A JOB_ENDED whose outputs are too many for the event names a `listing` (a stored JSON
object of its `outputs` and `producers`: peer.jobs.ending.framed). A peer that makes the
job's record of the JOB_ENDED (a non-member) fetches, reads and folds that listing
(peer.jobs.ending.EndListings, `MeshState.fold_listing`), then compacts the job as one
whose JOB_ENDED carries them inline; a listing that is too large, not UTF-8 JSON, or names
what the job cannot have made is refused with one log line naming the job and the CID, the
job kept as before (in memory, ended, no record). Lanes on explicitly (`Node(cfg,
lanes=True)`), real data dirs in tmp_path, no gossip, no live peers."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from peer.cids import sha256_cid
from peer.config import PeerConfig
from peer.errors import BanzaiError, DataError, NotFound, TooLarge
from peer.http.views import elsewhere_entry
from peer.jobs import ending
from peer.jobs.ending import (
    LONG_WAIT_S,
    MAX_LISTING_BYTES,
    MAX_RETRY_S,
    MAX_TOO_LARGE_FETCHES,
    RETRY_S,
)
from peer.log import Event, EventType
from peer.log.clock import FakeClock
from peer.log.events import JobEnded
from peer.log.lanes import lane
from peer.node import Node

JOB = "j0000000000d1"
OTHER = "0123456789abcdef0123"  # the job's one member (a peer id's form), never live here
TASKS = ("t0", "t1")
OUT = {t: str(sha256_cid(t.encode(), "raw", 1)) for t in TASKS}
WORKFLOW = {"name": "w", "tasks": [{"name": t, "call": "c", "params": {}, "depends": []}
                                   for t in TASKS]}
SUBMITTED = 5 << 16
END = 9000 << 16
OUTPUTS = {t: [f"key-{t}", OUT[t], SUBMITTED + i + 1, lane(OTHER, JOB), i + 1]
           for i, t in enumerate(TASKS)}
PRODUCERS = {OUT["t0"]: [OTHER]}


def _node(d: Path) -> Node:
    """A node with lanes on, alone, holding OTHER's JOB_SUBMITTED of JOB (members: OTHER)."""
    node = Node(PeerConfig(data_dir=d, slots=1, mdns=False, compact_recent_tasks=0),
                lanes=True)
    node.listeners[:] = [node.compactor.note]  # no scheduler: this is about the log
    node.live_peers = dict  # type: ignore[method-assign,assignment]
    node.end_listings.clock = FakeClock()  # (its back-off's: `_later`)
    node.compactor.now_hlc = lambda: END + (60_000 << 16)  # (a minute past END: within the
    # horizon, past which a listing not folded is given up: `Compactor.bare`)
    _fold(node, Event(OTHER, 1, SUBMITTED, EventType.JOB_SUBMITTED,
                      {"job": JOB, "workflow": WORKFLOW, "members": [OTHER]}))
    return node


async def _later(node: Node, wait_s: float) -> None:
    """`wait_s` passes (the listings' clock), then a step."""
    clock = node.end_listings.clock
    assert isinstance(clock, FakeClock)
    clock.advance(wait_s)
    await node.end_listings.step()


def _fold(node: Node, ev: Event) -> Event:
    """`ev` folded as a row read back is, noted."""
    node.state.apply(ev)
    node.compactor.note(ev)
    return ev


def _ended(node: Node, **payload: Any) -> Event:
    """OTHER's JOB_ENDED of JOB (inline outputs unless `payload` says otherwise)."""
    ev = _fold(node, Event(OTHER, 2, END, EventType.JOB_ENDED, {
        "job": JOB, "state": "done", "n_tasks": len(TASKS), "end": END, "outputs": OUTPUTS,
        "producers": PRODUCERS, "failed": {}, "digest": "0" * 32, **payload}))
    assert node.state.ended.get(JOB) is ev  # (folded: OTHER is the member)
    return ev


def _listed(node: Node, raw: bytes) -> str:
    """JOB's JOB_ENDED with its outputs in a listing of `raw` (stored here); its CID."""
    cid = node.store.add_bytes(raw)
    _ended(node, outputs={}, producers={}, listing=cid)
    return cid


def _cache(node: Node) -> dict[str, Any]:
    """The cache entries and providers of JOB's outputs, with their orders."""
    st = node.state
    keys = [f"key-{t}" for t in TASKS]
    return {"outputs": {k: st.outputs.get(k) for k in keys},
            "src": {k: st._outputs_src.get(k) for k in keys},
            "providers": {c: sorted(st.providers.get(c, ())) for c in OUT.values()}}


async def test_a_listed_job_ended_folds_into_what_the_inline_one_does(tmp_path: Path) -> None:
    inline, listed = _node(tmp_path / "inline"), _node(tmp_path / "listed")
    try:
        _ended(inline)
        _listed(listed, json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode())
        listed.catchup.compact()
        assert JOB in listed.state.jobs and listed.index.record(JOB) is None  # (not folded)
        assert listed.compactor.unlisted == {JOB: listed.state.ended[JOB].payload["listing"]}
        await listed.end_listings.step()
        assert not listed.end_listings.refused
        assert _cache(listed) == _cache(inline)
        assert _cache(listed)["outputs"] == {f"key-{t}": OUT[t] for t in TASKS}
        # its list entry, while it is in memory, lists them as the inline one's does
        assert elsewhere_entry(listed.state, JOB) == elsewhere_entry(inline.state, JOB)
        assert elsewhere_entry(listed.state, JOB)["outputs"] == OUT
        for node in (inline, listed):
            assert node.catchup.compact().jobs == [JOB]
            assert JOB in node.state.compacted and JOB not in node.state.jobs
        assert listed.index.record(JOB) == inline.index.record(JOB)
        record: Any = listed.index.record(JOB)
        assert [(t["state"], t["output"]) for t in record["tasks"]] == [
            ("done", OUT[t]) for t in TASKS]
        assert _cache(listed) == _cache(inline)  # (from the job index now)
        assert not listed.compactor.unlisted
    finally:
        inline.log.close()
        listed.log.close()


BAD = {
    "not JSON": b'{"outputs": ',
    "a JSON list": b"[]",
    "another key": json.dumps({"outputs": OUTPUTS, "producers": {}, "x": 1}).encode(),
    "a task the job has not": json.dumps({"outputs": {"tx": OUTPUTS["t0"]},
                                          "producers": {}}).encode(),
    "a producer of no output": json.dumps({"outputs": OUTPUTS,
                                           "producers": {"bafyother": [OTHER]}}).encode(),
    "an output of no member's lane": json.dumps({"outputs": {"t0": [
        None, OUT["t0"], SUBMITTED + 1, lane("fedcba9876543210fedc", JOB), 1]},
        "producers": {}}).encode(),
    "an output of another job's lane": json.dumps({"outputs": {"t0": [
        None, OUT["t0"], SUBMITTED + 1, lane(OTHER, "j0000000000e2"), 1]},
        "producers": {}}).encode(),
    "an output of no lane": json.dumps({"outputs": {"t0": [
        None, OUT["t0"], SUBMITTED + 1, OTHER, 1]}, "producers": {}}).encode(),
    "an output made after the end": json.dumps({"outputs": {"t0": [
        None, OUT["t0"], END + 1, lane(OTHER, JOB), 1]}, "producers": {}}).encode(),
    "a malformed output": json.dumps({"outputs": {"t0": [None, OUT["t0"]]},
                                      "producers": {}}).encode(),
    "UTF-16": json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode("utf-16"),
    "too large": json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode(),
    "a directory": b"",  # (its CID: an empty directory's)
}

# What `end_refusal` refuses until more events are folded (monotone: kept read, tried again;
# review r0, session 39: the rest, even what `end_flaw` finds in the listing alone, for good)
NOT_YET = {"a task the job has not", "an output of no member's lane"}


@pytest.mark.parametrize("what", sorted(BAD))
async def test_a_bad_listing_is_refused_with_one_line_and_the_job_is_kept(
        tmp_path: Path, what: str, caplog: pytest.LogCaptureFixture) -> None:
    node = _node(tmp_path)
    try:
        if what == "a directory":
            cid = node.store.make_dir({})
            _ended(node, outputs={}, producers={}, listing=cid)
        else:
            cid = _listed(node, BAD[what])
        node.catchup.compact()
        if what == "too large":
            node.end_listings.max_bytes = len(BAD[what]) - 1
        caplog.set_level(logging.INFO, logger="peer.jobs.ending")
        for _ in range(2):
            await node.end_listings.step()
            node.catchup.compact()
        lines = [r.getMessage() for r in caplog.records if r.name == "peer.jobs.ending"]
        assert len(lines) == 1 and JOB in lines[0] and cid in lines[0], lines
        if what in NOT_YET:  # (`end_refusal`'s: monotone, so kept read, tried again)
            assert "not admitted yet" in lines[0] and not node.end_listings.refused
            assert (JOB, cid) in node.end_listings.read
        else:
            assert "refused" in lines[0]
            assert (JOB, cid) in node.end_listings.refused and not node.end_listings.read
            assert node.lanes_health()["listings_refused"] == 1
        assert JOB in node.state.jobs and JOB not in node.state.compacted
        assert node.index.record(JOB) is None and JOB not in node.state.listed
        assert _cache(node)["outputs"] == {f"key-{t}": None for t in TASKS}
        assert node.compactor.unlisted == {JOB: cid}  # (still waits: as before)
    finally:
        node.log.close()


async def test_a_listing_not_here_is_tried_again_not_refused(tmp_path: Path) -> None:
    node = _node(tmp_path)
    try:
        raw = json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode()
        cid = str(sha256_cid(raw, "raw", 1))  # (not stored here, no peer to fetch it from)
        _ended(node, outputs={}, producers={}, listing=cid)
        node.catchup.compact()
        await node.end_listings.step()
        assert not node.end_listings.refused and JOB not in node.state.compacted
        fetched: list[str] = []

        async def fetch(cids: Any, max_bytes: int) -> None:  # (a peer serves it now)
            fetched.extend(cids)
            assert node.store.add_bytes(raw, 1) == cid

        node.end_listings.fetch = fetch
        await node.end_listings.step()
        assert fetched == []  # (backed off)
        await _later(node, RETRY_S)
        assert fetched == [cid]
        node.catchup.compact()
        assert JOB in node.state.compacted and node.index.record(JOB) is not None
    finally:
        node.log.close()


ADDED = "fedcba9876543210fedc"  # a member the home adds (JOB_MEMBERS) after the JOB_ENDED


@pytest.mark.parametrize("kept", [True, False])
async def test_a_listing_not_admitted_yet_is_folded_once_its_job_members_is_here(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: bool) -> None:
    """(Review r1, session 38.) A listing naming an output of a member whose JOB_MEMBERS
    comes after the listing was read (an orphan takeover's) was refused for good, though
    `end_refusal` is monotone: the job never got its record. It is kept read (not fetched
    nor read again), asked again once the job's members, JOB_SUBMITTED or tasks changed
    (`end_inputs`), and folded at the first step that admits it. (Review r0, session 39:
    its body is kept while the kept ones hold at most MAX_KEPT_BYTES of JSON, not while
    fewer than 4 are; another is read again then. /api/health counts it once it waited
    LONG_WAIT_S.)"""
    node = _node(tmp_path)
    now = [1000.0]
    node.end_listings.clock = lambda: now[0]
    try:
        outputs = {**OUTPUTS, "t1": ["key-t1", OUT["t1"], SUBMITTED + 2, lane(ADDED, JOB), 1]}
        raw = json.dumps({"outputs": outputs, "producers": PRODUCERS}).encode()
        monkeypatch.setattr(ending, "MAX_KEPT_BYTES", len(raw) - (0 if kept else 1))
        cid = _listed(node, raw)
        node.catchup.compact()
        reads: list[str] = []
        cat = node.store.cat
        monkeypatch.setattr(node.store, "cat", lambda c, *a: reads.append(c) or cat(c, *a))
        asked: list[Event] = []
        fold = node.state.fold_listing
        monkeypatch.setattr(node.state, "fold_listing", lambda e, b: asked.append(e) or fold(e, b))
        for _ in range(3):
            await node.end_listings.step()
            assert JOB not in node.state.listed and not node.end_listings.refused
        assert len(asked) == 1  # (asked again only once what `end_refusal` reads grew)
        assert (node.end_listings.read[(JOB, cid)].body is not None) == kept
        now[0] += LONG_WAIT_S - 1
        assert node.lanes_health()["listings_waiting"] == 0
        now[0] += 1
        assert node.lanes_health()["listings_waiting"] == 1
        _fold(node, Event(OTHER, 3, END + (1 << 16), EventType.JOB_MEMBERS,
                          {"job": JOB, "add": [ADDED]}))
        await node.end_listings.step()
        assert reads == [cid] * (1 if kept else 2)  # (read once, if kept)
        assert _cache(node)["outputs"] == {f"key-{t}": OUT[t] for t in TASKS}
        assert node.lanes_health()["listings_waiting"] == 0
        node.catchup.compact()
        assert JOB in node.state.compacted and node.index.record(JOB) is not None
        assert not node.compactor.unlisted and not node.end_listings.read
    finally:
        node.log.close()


async def test_a_listing_is_parsed_and_checked_off_the_event_loop(tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """(Review r1.) JobEnded.from_payload of a 100k-output listing held the loop about 0.4 s:
    it runs in the reading thread now, with json's parse sharing the GIL."""
    node = _node(tmp_path)
    try:
        _listed(node, json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode())
        node.catchup.compact()
        threads: list[str] = []
        parse = JobEnded.from_payload
        monkeypatch.setattr(JobEnded, "from_payload", staticmethod(
            lambda p: threads.append(threading.current_thread().name) or parse(p)))
        await node.end_listings.step()
        assert JOB in node.state.listed
        assert threads and threading.main_thread().name not in threads
    finally:
        node.log.close()


async def test_a_listing_is_fetched_within_its_bound_and_not_served_backs_off(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """(Review r1.) The listing was fetched with the fetcher's bound (8 GiB a CAR) and one no
    peer served tried at every step for ever. It is fetched at most about MAX_LISTING_BYTES,
    one over it is refused for good, one not served is tried after RETRY_S, then twice as
    long each time, up to MAX_RETRY_S (session 41: it was tried every 64 steps for good,
    whatever the interval's length), and counted in /api/health meanwhile."""
    node = _node(tmp_path)
    try:
        raw = json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode()
        cid = str(sha256_cid(raw, "raw", 1))  # (not stored here)
        _ended(node, outputs={}, producers={}, listing=cid)
        node.catchup.compact()
        bounds: list[int] = []
        answer: BanzaiError = NotFound("no live peer could provide it")

        async def fetch(cids: Any, max_bytes: int = 0) -> None:
            bounds.append(max_bytes)
            raise answer

        node.end_listings.fetch = fetch
        await node.end_listings.step()
        tried = [0.0]
        for i in range(1, int(3600 / RETRY_S)):  # (a step every RETRY_S for an hour)
            n = len(bounds)
            await _later(node, RETRY_S)
            if len(bounds) > n:
                tried.append(i * RETRY_S)
        gaps = [b - a for a, b in itertools.pairwise(tried)]
        doubling = [RETRY_S * 2 ** k for k in range(6)]  # 5 ... 160 s, then the cap
        assert 2 * doubling[-1] == MAX_RETRY_S
        assert gaps == doubling + [MAX_RETRY_S] * (len(gaps) - len(doubling))
        assert len(gaps) >= len(doubling) + 4
        assert MAX_LISTING_BYTES < bounds[0] <= 2 * MAX_LISTING_BYTES
        assert not node.end_listings.refused
        assert node.lanes_health()["listings_waiting"] == 1

        async def stored(cids: Any, max_bytes: int = 0) -> None:  # (served now)
            assert node.store.add_bytes(raw, 1) == cid

        node.end_listings.fetch = stored
        node.end_listings.max_bytes = len(raw) - 1  # (what the stored, verified bytes prove)
        node.end_listings.waits.clear()
        caplog.set_level(logging.INFO, logger="peer.jobs.ending")
        for _ in range(3):
            await node.end_listings.step()
        lines = [r.getMessage() for r in caplog.records if r.name == "peer.jobs.ending"]
        assert len(lines) == 1 and "refused" in lines[0] and cid in lines[0], lines
        assert (JOB, cid) in node.end_listings.refused and JOB not in node.state.listed
    finally:
        node.log.close()


async def test_a_listing_fetched_too_large_again_and_again_is_refused_a_while_at_a_time(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """(Review e, session 41, E9.) A fetch's TooLarge counts the bytes a peer sent before
    they are verified: no proof, backed off as not served (review d, session 40, finding 3),
    but it was never refused: each peer fetched up to ~68 MiB from each peer serving it
    every ~5 minutes for as long as the job was held. After MAX_TOO_LARGE_FETCHES such
    fetches for one JOB_ENDED it is refused (logged once, in /api/health's
    listings_refused). (Review h, session 42, H5.) It stayed refused until a restart, even
    once an honest provider came back: the refusal holds MAX_RETRY_S, then one more fetch
    is made (at most one per MAX_RETRY_S: E9's bound), and the listing an honest provider
    serves again is folded at the next. Another JOB_ENDED naming it counts anew."""
    node = _node(tmp_path)
    try:
        raw = json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode()
        cid = str(sha256_cid(raw, "raw", 1))  # (not stored here)
        _ended(node, outputs={}, producers={}, listing=cid)
        node.catchup.compact()
        tried: list[float] = []
        honest = False

        async def fetch(cids: Any, max_bytes: int = 0) -> None:
            clock = node.end_listings.clock
            assert isinstance(clock, FakeClock)
            tried.append(clock())
            if not honest:
                raise TooLarge(f"{cid}: a CAR of more than {max_bytes} bytes")
            assert node.store.add_bytes(raw, 1) == cid

        node.end_listings.fetch = fetch
        caplog.set_level(logging.INFO, logger="peer.jobs.ending")
        await node.end_listings.step()
        for _ in range(int(3600 / RETRY_S)):  # (a step every RETRY_S for an hour)
            await _later(node, RETRY_S)
            health = node.lanes_health()
            if len(tried) >= MAX_TOO_LARGE_FETCHES:
                assert (health["listings_refused"], health["listings_waiting"]) == (1, 0)
        gaps = [b - a for a, b in itertools.pairwise(tried)]
        assert gaps[:3] == [RETRY_S, 2 * RETRY_S, 4 * RETRY_S]
        assert gaps[3:] == [MAX_RETRY_S] * int((3600 - 35) // MAX_RETRY_S)
        assert node.end_listings.refused[(JOB, cid)][0] == (OTHER, 2)
        lines = [r.getMessage() for r in caplog.records
                 if r.name == "peer.jobs.ending" and "refused" in r.getMessage()]
        assert len(lines) == 1 and cid in lines[0] and "4 fetches found it too large" in \
            lines[0], lines
        assert JOB not in node.state.listed
        _fold(node, Event(OTHER, 3, END - (1 << 16), EventType.JOB_ENDED, {
            "job": JOB, "state": "done", "n_tasks": len(TASKS), "end": END - (1 << 16),
            "outputs": {}, "producers": {}, "failed": {}, "digest": "0" * 32,
            "listing": cid}))  # (wins the job: read anew)
        n = len(tried)
        await _later(node, MAX_RETRY_S)
        assert len(tried) == n + 1 and not node.end_listings.refused
        for _ in range(2):  # (counted anew: refused at the 4th again)
            await _later(node, MAX_RETRY_S)
        assert not node.end_listings.refused and len(tried) == n + 3
        await _later(node, MAX_RETRY_S)
        assert node.end_listings.refused and len(tried) == n + 4
        honest = True  # (an honest provider is back)
        steps = 0
        while JOB not in node.state.listed:
            await _later(node, RETRY_S)
            steps += 1
        assert steps * RETRY_S == MAX_RETRY_S and len(tried) == n + 5
        assert not node.end_listings.refused
        assert node.lanes_health()["listings_refused"] == 0
    finally:
        node.log.close()


J2 = "j0000000000d2"  # OTHER's second job (after JOB in `step`'s order)


def _second_listed(node: Node) -> str:
    """OTHER's job J2, submitted after JOB's end and ended with its outputs in a listing
    (stored here); its CID."""
    sub = END + (1 << 16)
    _fold(node, Event(OTHER, 3, sub, EventType.JOB_SUBMITTED,
                      {"job": J2, "workflow": WORKFLOW, "members": [OTHER]}))
    outputs = {t: [f"key2-{t}", str(sha256_cid(f"2{t}".encode(), "raw", 1)), sub + i + 1,
                   lane(OTHER, J2), i + 1] for i, t in enumerate(TASKS)}
    cid = node.store.add_bytes(json.dumps({"outputs": outputs, "producers": {}}).encode())
    _fold(node, Event(OTHER, 4, sub + (1 << 16), EventType.JOB_ENDED, {
        "job": J2, "state": "done", "n_tasks": len(TASKS), "end": sub + (1 << 16),
        "outputs": {}, "producers": {}, "failed": {}, "digest": "0" * 32, "listing": cid}))
    return cid


@pytest.mark.parametrize("error", [OSError(5, "Input/output error"), MemoryError()])
async def test_a_listing_that_fails_otherwise_backs_off_and_the_others_are_folded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        error: BaseException) -> None:
    """(Review r0, session 39.) An error reading a listing other than NotFound or a
    BanzaiError (the disk's OSError, a MemoryError) ended the whole step: the listings of
    the jobs after it were never folded. It is logged once, naming the job and the CID,
    tried again after RETRY_S, twice as long the next time ..., and the other listings are
    folded."""
    node = _node(tmp_path)
    try:
        cid = _listed(node, json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode())
        cid2 = _second_listed(node)
        node.catchup.compact()
        assert node.compactor.unlisted == {JOB: cid, J2: cid2}
        tries: list[int] = []
        broken, step = True, 0
        cat = node.store.cat

        def failing(c: str, *a: Any) -> Any:
            if c == cid:
                tries.append(step)
                if broken:
                    raise error
            return cat(c, *a)

        monkeypatch.setattr(node.store, "cat", failing)
        caplog.set_level(logging.INFO, logger="peer.jobs.ending")
        for step in range(1, 16):  # noqa: B007 (`failing` reads it): one every RETRY_S
            await _later(node, RETRY_S)
            assert J2 in node.state.listed and JOB not in node.state.listed
        assert tries == [1, 2, 4, 8]
        lines = [r.getMessage() for r in caplog.records if r.name == "peer.jobs.ending"]
        assert len(lines) == 1 and JOB in lines[0] and cid in lines[0], lines
        assert type(error).__name__ in lines[0] and not node.end_listings.refused
        broken = False
        step = 16
        await _later(node, RETRY_S)
        assert tries[-1] == 16 and JOB in node.state.listed
        assert _cache(node)["outputs"] == {f"key-{t}": OUT[t] for t in TASKS}
    finally:
        node.log.close()


async def test_a_listing_whose_block_is_corrupt_here_backs_off_and_is_folded_once_fetched(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """(Session 40.) A store error reading a good listing (here its block corrupt on this
    disk, removed, no live peer to repair it from: IntegrityError; likewise a full disk,
    Kubo unreachable: `ending.STORE_CONDITIONS`) was taken for the listing's fault:
    refused for good on a95f359, the job never got its record in this run. It is this
    store's condition: logged once, tried again after RETRY_S, twice as long the next time
    ..., and folded once a peer serves the block."""
    node = _node(tmp_path)
    try:
        raw = json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode()
        cid = node.store.add_bytes(raw, 1)
        _ended(node, outputs={}, producers={}, listing=cid)
        node.catchup.compact()
        block = node.store.block_file(cid)
        assert block is not None
        block.write_bytes(raw[:-1] + b" ")  # (the disk's damage: same size, other bytes)
        caplog.set_level(logging.INFO, logger="peer.jobs.ending")
        await node.end_listings.step()
        lines = [r.getMessage() for r in caplog.records if r.name == "peer.jobs.ending"]
        assert len(lines) == 1 and JOB in lines[0] and cid in lines[0], lines
        assert "IntegrityError" in lines[0] and "corrupt" in lines[0]
        assert not node.end_listings.refused and (JOB, cid) in node.end_listings.waits
        assert node.lanes_health()["listings_refused"] == 0
        fetched: list[str] = []

        async def fetch(cids: Any, max_bytes: int) -> None:  # (a peer serves it now)
            fetched.extend(cids)
            assert node.store.add_bytes(raw, 1) == cid

        node.end_listings.fetch = fetch
        await _later(node, RETRY_S - 1)  # (its back-off)
        assert fetched == []
        await _later(node, 1)
        assert fetched == [cid] and JOB in node.state.listed
        assert _cache(node)["outputs"] == {f"key-{t}": OUT[t] for t in TASKS}
        node.catchup.compact()
        assert JOB in node.state.compacted and node.index.record(JOB) is not None
    finally:
        node.log.close()


async def test_an_error_part_way_through_folding_a_listing_is_folded_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """(Review d, session 40, finding 2.) `fold_listing` marked a listing folded (`listed`)
    before folding its outputs and producers: an error part way (the job index's read of a
    damaged page: DataError) left the rest unfolded for good, the back-off's retry finding
    nothing to do. It is marked once all of it is folded, so the retry folds it again."""
    node = _node(tmp_path)
    try:
        _listed(node, json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode())
        node.catchup.compact()
        rescans: list[Event] = []
        rescan = node.end_listings.rescan
        node.end_listings.rescan = lambda ev: (rescans.append(ev), rescan(ev))  # type: ignore[method-assign]
        providers = node.state.providers
        screen, calls = providers.screen, [0]

        def damaged(keys: list[str]) -> None:  # (the job index's read, failing once)
            calls[0] += 1
            if calls[0] == 1:
                raise DataError("index.sqlite: database disk image is malformed")
            if screen is not None:
                screen(keys)

        providers.screen = damaged
        caplog.set_level(logging.INFO, logger="peer.jobs.ending")
        await node.end_listings.step()
        lines = [r.getMessage() for r in caplog.records if r.name == "peer.jobs.ending"]
        assert len(lines) == 1 and "DataError" in lines[0], lines
        assert JOB not in node.state.listed and node.state.unlisted(JOB) is not None
        await node.end_listings.step()  # (backed off)
        assert JOB not in node.state.listed
        await _later(node, RETRY_S)
        assert JOB in node.state.listed and len(rescans) == 1
        assert _cache(node)["providers"][OUT["t0"]] == [OTHER]
        assert _cache(node)["outputs"] == {f"key-{t}": OUT[t] for t in TASKS}
        node.catchup.compact()
        assert JOB in node.state.compacted and node.index.record(JOB) is not None
    finally:
        node.log.close()


@pytest.mark.parametrize("how", ["not served", "failing"])
async def test_a_listing_not_served_or_failing_for_long_shows_in_health(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """(Review d, session 40, finding 6.) /api/health's `listings_waiting` counted only the
    listings read but not admitted: one no peer served, or whose reading kept failing, left
    its job without a record with nothing to show for it there. It counts every listing
    neither folded nor refused for LONG_WAIT_S or more."""
    node = _node(tmp_path)
    now = [1000.0]
    node.end_listings.clock = lambda: now[0]
    try:
        raw = json.dumps({"outputs": OUTPUTS, "producers": PRODUCERS}).encode()
        if how == "not served":
            cid = str(sha256_cid(raw, "raw", 1))  # (not stored here, no peer serves it)
            _ended(node, outputs={}, producers={}, listing=cid)
        else:
            cid = _listed(node, raw)
            cat, broken = node.store.cat, [True]

            def failing(c: str, *a: Any) -> Any:
                if broken[0]:
                    raise OSError(5, "Input/output error")
                return cat(c, *a)

            monkeypatch.setattr(node.store, "cat", failing)
        node.catchup.compact()
        for _ in range(3):
            await node.end_listings.step()
        now[0] += LONG_WAIT_S - 1
        assert node.lanes_health()["listings_waiting"] == 0
        now[0] += 1
        assert node.lanes_health()["listings_waiting"] == 1
        assert node.lanes_health()["listings_refused"] == 0
        if how == "not served":
            assert node.store.add_bytes(raw, 1) == cid
        else:
            broken[0] = False
        node.end_listings.waits.clear()  # (its next try now)
        await node.end_listings.step()
        assert JOB in node.state.listed
        assert node.lanes_health()["listings_waiting"] == 0
    finally:
        node.log.close()


async def test_a_listing_refused_for_one_job_ended_is_read_for_another(
        tmp_path: Path) -> None:
    """(Review d, session 40, finding 9.) A refusal was kept by (job, listing CID) though
    its verdict may depend on the JOB_ENDED (its bounds, e.g. `n_tasks`, and orders): a
    JOB_ENDED naming the same listing that wins the job later was never read. It is read
    for each JOB_ENDED that wins."""
    node = _node(tmp_path)
    try:
        cid = node.store.add_bytes(json.dumps({"outputs": OUTPUTS,
                                                "producers": PRODUCERS}).encode())
        _ended(node, outputs={}, producers={}, listing=cid, n_tasks=1)  # (too few for it)
        node.catchup.compact()
        await node.end_listings.step()
        assert (JOB, cid) in node.end_listings.refused and JOB not in node.state.listed
        assert node.lanes_health()["listings_refused"] == 1
        earlier = _fold(node, Event(OTHER, 3, END - (1 << 16), EventType.JOB_ENDED, {
            "job": JOB, "state": "done", "n_tasks": len(TASKS), "end": END - (1 << 16),
            "outputs": {}, "producers": {}, "failed": {}, "digest": "0" * 32,
            "listing": cid}))
        assert node.state.ended[JOB] is earlier and node.compactor.unlisted == {JOB: cid}
        await node.end_listings.step()
        assert JOB in node.state.listed and not node.end_listings.refused
        assert _cache(node)["outputs"] == {f"key-{t}": OUT[t] for t in TASKS}
    finally:
        node.log.close()

"""A snapshot's heads and floors are no longer its signer's word alone (review r1 of session
50, R1-8): a member signing heads (or floors) that put another origin, or the taker's own,
far above the truth made the taker count that origin's seqs up to the made-up head as held
and refuse its real events for good. Each origin's head and floor is now taken up to what
the origin itself proves (its signed events held, its own signed report; the signer for its
own origin), the rest clipped and counted; an honest snapshot of a compacted mesh is still
taken and the returning peer converges. Real signed snapshots of real nodes, in process;
the whole catch-up over loopback HTTP as tests/unit/test_catchup_vote.py serves it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from peer import catchup as catchup_mod
from peer.log import EventType
from peer.log.snapframe import CONTENT_TYPE, FEATURE, job_digest3
from peer.node import Node
from tests.unit.test_catchup_hostile import _members
from tests.unit.test_compaction import _joiner, _open, _pair, _run_history, _take_v3, _v1

LIE = 10**6


def _with_c(tmp_path: Path, opened: list[Node]) -> tuple[Node, Node, Node]:
    """Members a and b, and c, whose MEMBER event (its seq 1) both hold; a ran and
    compacted a few jobs."""
    a, b = _pair(tmp_path, opened)
    c = _joiner(tmp_path, "c", opened)
    c.emit(EventType.MEMBER, c.capabilities())
    c.flush()
    held = list(c.state.events.values())
    a.merge(held)
    b.merge(held)
    _run_history(a, jobs=4, per_job=1)
    a.catchup.compact()
    return a, b, c


def _lie(a: Node, origin: str) -> None:
    """a's own code signs heads putting `origin` at LIE from now on."""
    true_heads = a.heads
    a.heads = lambda: {**true_heads(), origin: LIE}  # type: ignore[method-assign]


def _lie_floor(a: Node, origin: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """a's snapshots (any version) sign a floor of `origin` at LIE from now on."""
    a.compactor.floors[origin] = LIE  # (version 1's)
    real = catchup_mod.compact_floors  # (version 2's and 3's, read on the snapshot's own
    monkeypatch.setattr(catchup_mod, "compact_floors",  # read transaction)
                        lambda *args: {**real(*args), origin: LIE})


def _next_of(c: Node) -> list[Any]:
    """c's next event (a mesh event: a cancel of a job nobody knows)."""
    ev = c.emit(EventType.JOB_CANCELLED, {"job": "j00000000abcd", "reason": "x"})
    c.flush()
    return [ev]


def test_a_made_up_head_of_another_origin_does_not_silence_it(
        tmp_path: Path, opened: list[Node]) -> None:
    """a signs heads putting c at 10**6 (c is at 1; an honest second's digests, of a's true
    heads, are not compared): b took them and refused c's next events, after a restart
    too. Now c's head here stays what c proves, the clip is counted under a, and c's event
    2 is merged (and still held after a restart)."""
    a, b, c = _with_c(tmp_path, opened)
    honest = a.catchup.digest_reader()()
    _lie(a, c.peer_id)
    body = json.loads(_v1(a))
    assert body["snapshot"]["heads"][c.peer_id] == LIE
    assert b.catchup.take_snapshot(body, honest) is None
    assert b.state.heads[c.peer_id] == 1 and b.catchup.job_record("job000") is not None
    assert b.state.heads[a.peer_id] == a.state.heads[a.peer_id]  # (the signer's own: its word)
    assert b.keyring.refused.by_origin[a.peer_id] == {"snapshot_heads_unproven": 1}
    ev = _next_of(c)
    assert ev[0].seq == 2 and len(b.merge(ev)) == 1 and b.state.heads[c.peer_id] == 2
    b.log.close()
    opened.remove(b)
    again = _open(tmp_path / "b", opened)
    assert again.state.heads[c.peer_id] == 2 and c.peer_id not in again.state.beyond


@pytest.mark.parametrize("v", [1, 3])
def test_made_up_floors_of_another_origin_are_neither_taken_nor_announced(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch, v: int) -> None:
    """A signer's floors of another origin are clipped as its heads are: a floor of c at
    10**6 raised b's head of c there (and b announced it in its reports, so that honest
    members asked it and took it in turn)."""
    a, b, c = _with_c(tmp_path, opened)
    _lie_floor(a, c.peer_id, monkeypatch)
    if v == 1:
        assert b.catchup.take_snapshot(json.loads(_v1(a))) is None
    else:
        assert _take_v3(a, b, tmp_path) is None
    assert b.keyring.refused.by_origin[a.peer_id] == {"snapshot_heads_unproven": 1}
    assert b.state.heads[c.peer_id] == 1 and c.peer_id not in b.compactor.floors
    assert c.peer_id not in b.log.floors() and b.state.evicted.get(c.peer_id, 0) <= 1
    assert c.peer_id not in b.local_info().get("cfloor", {})
    assert b.compactor.floors[a.peer_id] == a.compactor.floors[a.peer_id]  # (its own)
    ev = _next_of(c)
    assert len(b.merge(ev)) == 1 and b.state.heads[c.peer_id] == 2


def test_a_snapshot_never_raises_the_takers_own_seq(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """Heads (and floors) putting the taker's own origin at 10**6: its next event took seq
    10**6 + 1 and every other peer held it past a gap that nothing fills. A peer knows its
    own seq: its next event is its own head + 1, and a peer holding its events takes it."""
    a, b, c = _with_c(tmp_path, opened)
    b.emit(EventType.MEMBER, b.capabilities())
    b.flush()
    mine = list(b.state.events.values())
    a.merge(mine)
    c.merge(mine)
    own = b.state.heads[b.peer_id]
    _lie(a, b.peer_id)
    _lie_floor(a, b.peer_id, monkeypatch)
    assert _take_v3(a, b, tmp_path) is None
    assert b.state.heads[b.peer_id] == own and b.peer_id not in b.compactor.floors
    ev = _next_of(b)
    assert ev[0].seq == own + 1
    assert len(c.merge(ev)) == 1 and b.peer_id not in c.state.beyond


async def test_the_whole_catch_up_of_a_lying_signer_leaves_c_heard(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """`CatchUp._catch_up` as a node runs it (a version 3 stream from a, an honest second
    member answering the digests of the true state): the vote was never reached and the
    snapshot taken with c at 10**6. It is still taken (its jobs), c's head clipped."""
    a, b, c = _with_c(tmp_path, opened)
    honest = a.catchup.digest_reader(per_job=True, v=3)()
    _lie(a, c.peer_id)
    body = b"".join(a.catchup.snapshot_stream(v=3, part="jobs"))
    asked: list[str] = []

    async def snapshot(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=CONTENT_TYPE)

    async def second(request: web.Request) -> web.Response:
        asked.append("h")
        return web.json_response(honest)

    async with _members({"a": snapshot, "h": second}) as urls:
        named = {a.peer_id: urls["a"], "h": urls["h"]}
        monkeypatch.setattr(b, "peer_urls", lambda: named)
        monkeypatch.setattr(b, "live_peers", lambda: {
            p: {"http": u, "features": [FEATURE]} for p, u in named.items()})
        assert await b.catchup._catch_up(a.peer_id) == ""
    assert asked == ["h"] and b.state.heads[c.peer_id] == 1
    assert b.catchup.job_record("job000") is not None or b.index.thin_sha("job000")
    assert len(b.merge(_next_of(c))) == 1 and b.state.heads[c.peer_id] == 2


def _gone_c(tmp_path: Path, opened: list[Node]) -> tuple[Node, Node, Node, int]:
    """An honest compacted mesh: c ran jobs (its events all signed), a holds them, then a
    ran more, so that c's jobs left the recent history, were compacted and their events
    dropped: a's floor of c is c's head, and a's snapshot carries c's MEMBER event alone.
    b held nothing of c."""
    a, b = _pair(tmp_path, opened)
    c = _joiner(tmp_path, "c", opened)
    _run_history(c, jobs=2, per_job=1)
    a.merge(list(c.state.events.values()))
    _run_history(a, jobs=4, per_job=1)
    a.catchup.compact()
    top = c.state.heads[c.peer_id]
    assert a.compactor.floors[c.peer_id] == top == a.state.heads[c.peer_id] > 1
    return a, b, c, top


def test_an_honest_compacted_snapshot_is_taken_and_c_vouches_for_its_own_head(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """c's last events left every log: nothing a snapshot carries proves c's head. While
    c is live, its own signed report (its floor of itself) does: b's heads are a's."""
    a, b, c, top = _gone_c(tmp_path, opened)
    monkeypatch.setattr(b, "live_peers", lambda: {c.peer_id: {"cfloor": {c.peer_id: top}}})
    assert _take_v3(a, b, tmp_path, a.catchup.digest_reader(per_job=True, v=3)()) is None
    assert dict(b.heads()) == dict(a.heads()) and b.compactor.floors == a.compactor.floors
    assert a.peer_id not in b.keyring.refused.by_origin


async def test_an_honest_snapshot_of_a_gone_origin_is_taken_asked_again_only_for_more(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """c is gone: nothing proves its head. The snapshot is still taken (every job), c's
    head stays what b proves; a member's floor of c starts no catch-up again (a snapshot
    would prove no more: one was asked for at every `retry_s`, a judged a failure each
    time), until c's next event reaches b past the gap; then a's next snapshot closes it:
    b converges."""
    a, b, c, top = _gone_c(tmp_path, opened)
    assert _take_v3(a, b, tmp_path, a.catchup.digest_reader(per_job=True, v=3)()) is None
    assert b.state.heads[c.peer_id] == 1
    assert b.index.thin_digests(job_digest3) == a.index.thin_digests(job_digest3)
    assert b.keyring.refused.by_origin[a.peer_id] == {"snapshot_heads_unproven": 1}
    told = {"cfloor": {c.peer_id: top}}
    assert not b.catchup._above(told["cfloor"])  # (no loop: below)
    tried: list[str] = []

    async def attempt(peer_id: str, floors: Any) -> None:
        tried.append(peer_id)

    monkeypatch.setattr(b.catchup, "_attempt", attempt)
    monkeypatch.setattr(b.catchup, "_loop", asyncio.get_running_loop())
    b.catchup.behind(a.peer_id, told)
    b.catchup.behind("another", told)
    await asyncio.sleep(0)
    assert tried == [] and not b.catchup._catching
    more = _next_of(c)  # c comes back: its next event, held past the gap
    a.merge(more)
    assert b.merge(more) and b.state.beyond[c.peer_id] == {top + 1}
    b.catchup.behind(a.peer_id, told)
    await asyncio.sleep(0)
    assert tried == [a.peer_id]
    assert _take_v3(a, b, tmp_path) is None
    assert dict(b.heads()) == dict(a.heads()) and c.peer_id not in b.state.beyond
    assert not b.catchup._above(told["cfloor"]) and not b.catchup._unproven


def test_made_up_origins_in_a_snapshots_heads_are_neither_held_nor_kept(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """Heads of origins nobody knows (a signer naming thousands) were all counted held; now
    nothing proves them: no head, and nothing kept for catch-up (its bound is for origins
    we know), while c's made-up head is kept."""
    a, b, c = _with_c(tmp_path, opened)
    true_heads = a.heads
    made_up = {f"{i:020x}": 7 for i in range(50)}
    monkeypatch.setattr(a, "heads", lambda: {**true_heads(), **made_up, c.peer_id: LIE})
    assert _take_v3(a, b, tmp_path) is None
    assert not set(made_up) & set(b.state.heads)
    assert b.catchup._unproven == {c.peer_id: (LIE, 1)}

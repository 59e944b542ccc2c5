"""A second member's digests that differ from a snapshot's go to a vote (session 49, helper
f; left by review r2 of session 48): a liar answering first no longer refuses every signer
it checks; a lying signer is still refused when honest members disagree with it. Real
peers' snapshots and digests, served on loopback (aiohttp test servers)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from peer import catchup as catchup_mod
from peer.log.snapframe import CONTENT_TYPE as SNAPSHOT_TYPE_V3
from peer.log.snapframe import FEATURE as SNAPSHOT_FEATURE
from peer.node import Node
from tests.unit.test_catchup_hostile import _members
from tests.unit.test_compaction import _pair, _run_history, _v1

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _served(a: Node, v: str) -> tuple[bytes, str, dict[str, Any], dict[str, Any]]:
    """`a`'s snapshot as `_catch_up` asks for it in version `v` ("1": an older peer's one
    body; "3full": with its cache and provider rows, which a vote reads past), its
    content type, an honest member's digests of it (one of the same heads and floors:
    `a`'s own) and a liar's (one job's, or the whole, differ)."""
    _run_history(a, jobs=4, per_job=1)
    a.catchup.compact()
    if v == "1":
        honest = a.catchup.digest_reader()()
        liar = {**honest, "digest": "00" * 32}
        return _v1(a), "application/json", honest, liar
    if v.startswith("3"):  # ("3full": its rows too, though `?part=jobs` was asked)
        body = b"".join(a.catchup.snapshot_stream(v=3, part=None if v == "3full" else "jobs"))
        honest = a.catchup.digest_reader(per_job=True, v=3)()
    else:
        body = b"".join(a.catchup.snapshot_stream(v=2))
        honest = a.catchup.digest_reader(per_job=True)()
    assert honest["jobs"], "no compacted job to compare"
    liar = copy.deepcopy(honest)
    liar["jobs"][min(liar["jobs"])] = "0" * 32
    return body, SNAPSHOT_TYPE_V3 if v != "2" else "application/x-ndjson", honest, liar


async def _catch_up(a: Node, b: Node, monkeypatch: pytest.MonkeyPatch, v: str,
                    seconds: dict[str, str], asked: list[str]) -> str | None:
    """`b` catches up from `a` (in version `v`) while the members named in `seconds`
    answer its digests ("honest", "liar", "busy": 503, "nothex", "empty", "holds"), in
    that order of `peer_urls`: what `_catch_up` gives; `asked` lists the members asked
    for digests, in turn."""
    body, ctype, honest, liar = _served(a, v)

    async def snapshot(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=ctype)

    def second(kind: str, name: str) -> Handler:
        async def serve(request: web.Request) -> web.Response:
            asked.append(name)
            if kind == "busy":
                return web.json_response({"error": "busy"}, status=503)
            if kind == "holds":  # (its answer held past any share of the vote's time)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.Event().wait(), 30)
            if kind == "empty":  # (the same heads, no job in common: no opinion)
                return web.json_response({**honest, "jobs": {}})
            if kind == "nothex":  # (an older member's whole digest, garbled)
                return web.json_response({**honest, "digest": "zz"})
            return web.json_response(honest if kind == "honest" else liar)
        return serve

    routes: dict[str, Handler] = {"a": snapshot}
    routes.update({name: second(kind, name) for name, kind in seconds.items()})
    features = [SNAPSHOT_FEATURE] if v.startswith("3") else []
    async with _members(routes) as urls:
        named = {(a.peer_id if n == "a" else n): u for n, u in urls.items()}
        monkeypatch.setattr(b, "peer_urls", lambda: named)
        monkeypatch.setattr(b, "live_peers", lambda: {
            p: {"http": u, "features": features} for p, u in named.items()})
        return await b.catchup._catch_up(a.peer_id)
    raise AssertionError("no server")


@pytest.mark.parametrize("v", ["3", "3full", "2", "1"])
async def test_a_liar_second_member_answering_first_no_longer_blocks_the_catch_up(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, v: str) -> None:
    """The first member to answer digests (here: every time) said one of an honest
    signer's jobs differs: the snapshot was refused (`digest_mismatch`) and every signer
    it checked was, so no snapshot was ever taken. Other members are now asked: two
    agree with the signer, the liar is outvoted (counted, waits, asked last after)."""
    a, b = _pair(tmp_path, opened)
    asked: list[str] = []
    with caplog.at_level(logging.WARNING, logger="banzai.catchup"):
        why = await _catch_up(a, b, monkeypatch, v, {"liar": "liar", "busy": "busy",
                                                     "h1": "honest", "h2": "honest"}, asked)
    assert why == ""
    assert dict(b.heads()) == dict(a.heads()) and b.compactor.floors == a.compactor.floors
    assert asked == ["liar", "busy", "h1", "h2"]
    assert "2 against" not in caplog.text and "3 for the snapshot" in caplog.text
    refused = b.keyring.refused.by_origin
    assert refused == {"liar": {"snapshot_digests_outvoted": 1}}
    assert "liar" in b.catchup._backoff and a.peer_id not in b.catchup._backoff
    assert b.catchup._outvoted == {"liar": 1}  # (asked last from now on: below)


async def test_a_liar_that_is_asked_last_checks_no_snapshot(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """Once outvoted, the liar is asked after honest members: the next catch-up's first
    answer agrees and the snapshot is taken without a vote (the liar not asked at all)."""
    a, b = _pair(tmp_path, opened)
    b.catchup._outvoted["liar"] = 1
    asked: list[str] = []
    assert await _catch_up(a, b, monkeypatch, "3", {"liar": "liar", "h1": "honest"},
                           asked) == ""
    assert asked == ["h1"] and dict(b.heads()) == dict(a.heads())


@pytest.mark.parametrize("v", ["3", "2", "1"])
async def test_a_lying_signer_is_still_refused_when_honest_members_disagree(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch, v: str) -> None:
    """A signer whose snapshot differs from what the honest members hold (here `a`: the
    members answer digests that differ from its own), with a colluder that agrees with
    it asked second: refused, the signer and the colluder outvoted; every member asked
    (before: only the first, whose word alone refused it)."""
    a, b = _pair(tmp_path, opened)
    asked: list[str] = []
    heads = dict(b.heads())
    # (from `b`'s side "liar" is honest: it disagrees with the lying signer)
    why = await _catch_up(a, b, monkeypatch, v, {"h1": "liar", "colluder": "honest",
                                                 "h2": "liar", "h3": "liar"}, asked)
    assert why == "digest_mismatch"
    assert asked == ["h1", "colluder", "h2", "h3"]
    assert len(b.index) == 0 and b.compactor.floors == {} and dict(b.heads()) != heads
    refused = b.keyring.refused.by_origin
    assert refused[a.peer_id] == {"snapshot_digest_mismatch": 1}
    assert refused["colluder"] == {"snapshot_digests_outvoted": 1}
    assert "h1" not in refused and "colluder" in b.catchup._backoff
    assert b.catchup._outvoted == {a.peer_id: 1, "colluder": 1}


async def test_one_against_one_refuses_the_signer_and_counts_both(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """A mesh of three (the signer, a second that disagrees, us): no side can be told
    right. Refused, as before; both count a vote lost, neither second waits."""
    a, b = _pair(tmp_path, opened)
    asked: list[str] = []
    assert await _catch_up(a, b, monkeypatch, "3", {"liar": "liar"}, asked) == (
        "digest_mismatch")
    assert asked == ["liar"] and len(b.index) == 0
    assert b.keyring.refused.by_origin == {a.peer_id: {"snapshot_digest_mismatch": 1}}
    assert b.catchup._outvoted == {a.peer_id: 1, "liar": 1} and not b.catchup._backoff


async def test_two_liars_answering_first_are_outvoted_within_the_bound(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """`max_second_opinions` (4): two liars then two honest members: 3 against 2, taken.
    With a bound of 1 (the first opinion alone, as before the vote): refused."""
    a, b = _pair(tmp_path, opened)
    asked: list[str] = []
    seconds = {"l1": "liar", "l2": "liar", "h1": "honest", "h2": "honest", "h3": "honest"}
    assert await _catch_up(a, b, monkeypatch, "3", seconds, asked) == ""
    assert asked == ["l1", "l2", "h1", "h2"]  # (decided: h3 could not change it)
    assert b.catchup._outvoted == {"l1": 1, "l2": 1}


async def test_a_bound_of_one_opinion_refuses_at_the_first_mismatch(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _pair(tmp_path, opened)
    monkeypatch.setattr(b.catchup, "cfg", catchup_mod.dataclasses.replace(
        b.catchup.cfg, max_second_opinions=1))
    asked: list[str] = []
    assert await _catch_up(a, b, monkeypatch, "3", {"l1": "liar", "h1": "honest"},
                           asked) == "digest_mismatch"
    assert asked == ["l1"]


async def test_a_whole_digest_that_is_not_hex_is_no_opinion(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """An older second member's whole digest that is not hex (same heads and floors)
    raised ValueError out of the take: the signer was judged for it (and waited). It is
    now no opinion: the snapshot is taken on its signature, as with no second member."""
    a, b = _pair(tmp_path, opened)
    assert await _catch_up(a, b, monkeypatch, "1", {"garbled": "nothex"}, []) == ""
    assert dict(b.heads()) == dict(a.heads())


def test_the_members_remembered_by_their_votes_are_bounded(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """At most MAX_BACKOFF_PEERS: members no longer live go first, then the least
    outvoted; a member back on the winning side is forgotten at 0."""
    _, b = _pair(tmp_path, opened)
    cap = catchup_mod.MAX_BACKOFF_PEERS
    live = {f"m{i}": "u" for i in range(cap // 2, cap + 10)} | {"liar": "u"}
    monkeypatch.setattr(b, "peer_urls", lambda: live)
    note = b.catchup._note
    note("liar", 1)
    note("liar", 1)
    for i in range(cap + 10):
        note(f"m{i}", 1)
    kept = b.catchup._outvoted
    assert len(kept) <= cap and kept["liar"] == 2
    assert "m0" not in kept and f"m{cap + 9}" in kept
    note("liar", -1)
    note("liar", -1)
    assert "liar" not in kept


async def test_answers_of_no_opinion_use_their_places_in_the_vote(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r3 of session 49, R1: answers that share no job with the snapshot counted
    neither way, so the vote asked every member (13 of 13) for up to `timeout_s`, each
    answer a full read of the spool. Now each uses a place: 4 asked, a tie, refused."""
    a, b = _pair(tmp_path, opened)
    asked: list[str] = []
    seconds = {"liar": "liar", **{f"e{i}": "empty" for i in range(12)}}
    assert await _catch_up(a, b, monkeypatch, "3", seconds, asked) == "digest_mismatch"
    assert asked == ["liar", "e0", "e1", "e2"]


async def test_a_member_holding_its_answer_takes_only_its_share_of_the_vote(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """R3: one member holding its answer took the vote's whole `timeout_s`, uncounted, so
    a liar first and a staller refused an honest signer. It now has `timeout_s` /
    `max_second_opinions`, the honest members after it are asked, and it is asked after
    the others next time."""
    a, b = _pair(tmp_path, opened)
    monkeypatch.setattr(b.catchup, "cfg", catchup_mod.dataclasses.replace(
        b.catchup.cfg, timeout_s=6.0))
    asked: list[str] = []
    seconds = {"liar": "liar", "staller": "holds", "h1": "honest", "h2": "honest"}
    assert await _catch_up(a, b, monkeypatch, "3", seconds, asked) == ""
    assert asked == ["liar", "staller", "h1", "h2"]
    assert b.catchup._outvoted == {"liar": 1, "staller": 1}


async def test_members_waiting_out_a_backoff_are_asked_for_digests_last(
        tmp_path: Path, opened: list[Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """R4: a member judged (a failed signer, an outvoted second) was asked for digests as
    if it were not; it is now asked after every other."""
    a, b = _pair(tmp_path, opened)
    b.catchup._backoff["judged"] = (b.catchup.clock() + 600.0, 3)
    asked: list[str] = []
    assert await _catch_up(a, b, monkeypatch, "3", {"judged": "honest", "h1": "honest"},
                           asked) == ""
    assert asked == ["h1"]


def test_the_vote_bound_must_be_positive(tmp_path: Path) -> None:
    from peer.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        catchup_mod.CatchUpConfig(tmp_path, max_second_opinions=0)
    assert e.value.field == "max_second_opinions"
    assert json.dumps(catchup_mod.CatchUpConfig(tmp_path).max_second_opinions) == "4"

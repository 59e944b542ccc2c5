"""Partial replication, step 9: the HTTP API on a peer that holds none of a lanes job's lanes
(docs/design/partial-replication.md, section 3, "The UI and the API on a non-member"). Its
list entry is made from the JOB_SUBMITTED and JOB_ENDED it folds; `GET /api/jobs/{id}` is the
view a live member answers (`GET /api/snapshot?v=3&view=`), asked in the members' order,
each answer checked as hostile input, else 503 naming the members. Lanes are switched on
explicitly here (`Node(cfg, lanes=True)`); with them off nothing changes. Fake members are
aiohttp servers on loopback; real Nodes, not started."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from peer.config import PeerConfig
from peer.http.views import elsewhere_entry, held_elsewhere, member_view
from peer.jobs.members import ordered
from peer.log import Event, EventType, MeshState, fold, hlc_ms
from peer.log.lanes import lane
from peer.node import Node
from peer.rendezvous import rendezvous
from tests.unit.api_client import api_client

Client = TestClient[Any, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
A, B, C, D = "a1" * 8, "b2" * 8, "c3" * 10, "d4" * 8  # peers; the Node under test is none
JOB = "j0000000000a1"
HLC = 1_700_000_000_000 << 16
WORKFLOW = {"name": "w", "tasks": [{"name": n, "call": "c", "params": {}, "depends": []}
                                   for n in ("t0", "t1")]}
CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"


def submitted(job: str = JOB, home: str = A, members_: list[str] | None = None) -> Event:
    """A lanes job's JOB_SUBMITTED from `home` (members: home, then B)."""
    return Event(home, 1, HLC, EventType.JOB_SUBMITTED,
                 {"job": job, "workflow": WORKFLOW, "members": members_ or [home, B]})


def ended(state: str = "done", job: str = JOB, outputs: int = 2) -> Event:
    return Event(A, 2, HLC + (5000 << 16), EventType.JOB_ENDED, {
        "job": job, "state": state, "n_tasks": 2, "end": HLC + (4000 << 16),
        "outputs": {f"t{i}": [f"k{i}", CID, HLC + 1, lane(A, job), 1] for i in range(outputs)},
        "producers": {CID: [A]}, "failed": {} if state == "done" else {"t1": "boom"},
        "digest": "0" * 32})


def good_view(job: str = JOB, **over: Any) -> dict[str, Any]:
    """What a member answers for JOB (`GET /api/jobs/{id}`'s shape, cut to what is checked)."""
    view: dict[str, Any] = {
        "id": job, "name": "w", "state": "running", "submitted_by": A,
        "submitted_ms": hlc_ms(HLC), "finished_ms": None, "duration_s": None,
        "progress": 0.5, "outputs": {}, "workflow": WORKFLOW,
        "tasks": [{"name": "t0", "state": "done", "progress": 1.0, "chunks": [],
                   "depends": []},
                  {"name": "t1", "state": "running", "progress": 0.0, "chunks": [],
                   "depends": []}]}
    view.update(over)
    return view


# -- the list entry and the checks, pure --------------------------------------------------


def test_a_non_members_entry_names_the_members_in_the_order_every_peer_asks_them() -> None:
    """The added ones by rendezvous hash of the job, as `members.home` takes them (review
    r1: on 99be419 the entry and the view's proxy took them by id)."""
    s = MeshState(lanes_on=True)
    s.apply(submitted())
    added = ["f6" * 8, "e5" * 8]
    s.apply(Event(D, 1, HLC + 9, EventType.JOB_MEMBERS, {"job": JOB, "add": added}))
    assert rendezvous(JOB, added) != sorted(added)  # (else the test says nothing)
    assert elsewhere_entry(s, JOB)["members"] == [A, B, *rendezvous(JOB, added)]


def test_a_non_members_entry_is_made_from_the_submission_then_from_the_end() -> None:
    s = MeshState(lanes_on=True)
    s.apply(submitted())
    s.apply(Event(D, 1, HLC + 9, EventType.JOB_MEMBERS, {"job": JOB, "add": [C]}))
    assert held_elsewhere(s, JOB, D) and not held_elsewhere(s, JOB, A)
    assert ordered(s, JOB) == [A, B, C]  # home, replica, then the added ones
    entry = elsewhere_entry(s, JOB)
    assert entry == {"id": JOB, "name": "w", "state": "running", "submitted_by": A,
                     "submitted_ms": hlc_ms(HLC), "finished_ms": None, "duration_s": None,
                     "progress": 0.0, "outputs": {}, "tasks": [], "partial": True,
                     "n_tasks": 2, "members": [A, B, C]}
    s.apply(ended("failed", outputs=1))
    entry = elsewhere_entry(s, JOB)
    assert (entry["state"], entry["n_tasks"], entry["outputs"], entry["progress"]) == (
        "failed", 2, {"t0": CID}, 0.5)
    assert entry["finished_ms"] == hlc_ms(HLC) + 4000 and entry["duration_s"] == 4.0


def test_a_cancelled_job_not_ended_yet_is_listed_cancelled() -> None:
    s = MeshState(lanes_on=True)
    s.apply(submitted())
    s.apply(Event(D, 1, HLC + 9, EventType.JOB_CANCELLED, {"job": JOB, "reason": "r"}))
    assert elsewhere_entry(s, JOB)["state"] == "cancelled"


def test_with_lanes_off_or_without_members_every_job_is_held_here() -> None:
    evs = [submitted(), Event(C, 1, HLC, EventType.JOB_SUBMITTED,
                              {"job": "j0000000000b2", "workflow": WORKFLOW})]
    off = fold(evs)
    assert not off.lanes_on and not held_elsewhere(off, JOB, D)
    on = MeshState(lanes_on=True)
    for ev in evs:
        on.apply(ev)
    assert held_elsewhere(on, JOB, D) and not held_elsewhere(on, "j0000000000b2", D)
    assert not held_elsewhere(on, "j0000000000c3", D)  # (unknown here)


@pytest.mark.parametrize(("answer", "why"), [
    ([1], "not a JSON object"),
    (good_view(id="j0000000000b2"), "its id is 'j0000000000b2', not 'j0000000000a1'"),
    (good_view(submitted_by=B), "its submitted_by is"),
    (good_view(submitted_ms=str(hlc_ms(HLC))), "its submitted_ms is"),
    (good_view(state="exploded"), "its state is 'exploded', not one of"),
    (good_view(progress=True), "its progress is True"),
    (good_view(progress=1.5), "its progress is 1.5"),
    (good_view(tasks={"t0": {}}), "its tasks are not a list of objects"),
    (good_view(tasks=[{"name": "t0"}]), "its tasks are ['t0'], not the job's ['t0', 't1']"),
])
def test_a_members_answer_that_is_not_this_jobs_view_is_refused_naming_why(
        answer: Any, why: str) -> None:
    with pytest.raises(ValueError) as e:
        member_view(answer, submitted())
    assert why in str(e.value)


def test_a_members_view_of_the_job_passes() -> None:
    assert member_view(good_view(), submitted()) == good_view()


def _task(i: int = 0, **over: Any) -> dict[str, Any]:
    """Task `i` of good_view with `over` in it (a task's full view's keys)."""
    t = {**good_view()["tasks"][i], "call": "c", "params": {}, "cid": None, "attempts": 1,
         "peers": [A], "output": None, "partial": None, "cached": False, "warning": None,
         "error": None, "waiting": None, "started_ms": hlc_ms(HLC) + 5, "finished_ms": None,
         "duration_s": None, "chunks_total": 1, "chunks_from": 0,
         "chunks": [{"state": "running", "progress": 0.5, "attempt": 0, "attempts": 1,
                     "peer": A, "items": 3, "error": None, "started_ms": hlc_ms(HLC) + 5,
                     "finished_ms": None, "log": None}]}
    t.update(over)
    return t


def _with(**over: Any) -> dict[str, Any]:
    return good_view(tasks=[_task(0, **over), good_view()["tasks"][1]])


def _chunk(**over: Any) -> dict[str, Any]:
    return _with(chunks=[{**_task()["chunks"][0], **over}])


@pytest.mark.parametrize(("answer", "why"), [
    (good_view(name="quarterly-report"), "its name is 'quarterly-report', not 'w'"),
    (good_view(workflow={**WORKFLOW, "name": "x"}), "its workflow is not the job's"),
    (_with(depends=None), "its task 't0''s depends is None, not the workflow's []"),
    (_with(depends=["t1"]), "its task 't0''s depends is ['t1']"),
    (_with(call="other"), "its task 't0''s call is 'other'"),
    (_with(params=[]), "its task 't0''s params is []"),
    (_with(state="done!"), "its task 't0''s state is 'done!'"),
    (_with(progress="1"), "its task 't0''s progress is '1'"),
    (_with(output="../api/jobs/x/cancel"), "its task 't0''s output is '../api/jobs/x/cancel', "
     "not a CID"),
    (_with(output={"a": 1}), "its task 't0''s output is {'a': 1}, not a CID"),
    (_with(peers=None), "its task 't0''s peers is None, not a list of peer ids"),
    (_with(peers=["<b>x</b>"]), "not a list of peer ids"),
    (_with(attempts=-1), "its task 't0''s attempts is -1"),
    (_with(error=["x"]), "its task 't0''s error is ['x'], not a text or null"),
    (_with(cached="yes"), "its task 't0''s cached is 'yes'"),
    (_with(partial={"output": "x", "items": 1, "of": 2}), "its task 't0''s partial output"),
    (_with(chunks=None), "its task 't0''s chunks are not a list"),
    (_with(chunks=[None]), "its task 't0''s chunk 0 is None, not an object"),
    (_with(chunks=[{}] * 1001), "at most 1000"),
    (_chunk(state="won"), "its task 't0''s chunk 0's state is 'won'"),
    (_chunk(peer=7), "its task 't0''s chunk 0's peer is [7]"),
    (_chunk(items="3"), "its task 't0''s chunk 0's items is '3'"),
    (good_view(outputs={"t0": "nope"}), "its outputs['t0'] is 'nope', not a CID"),
    (good_view(outputs={"zz": CID}), "its outputs are"),
    (good_view(outputs=[]), "its outputs are [], not task name -> CID"),
    (good_view(published=[{"name": 1}]), "its published is not a list"),
    (good_view(finished_ms="now"), "its finished_ms is 'now'"),
])
def test_a_members_view_that_lies_about_the_job_or_mistypes_it_is_refused_naming_where(
        answer: Any, why: str) -> None:
    """Session 49, review r1 F9: a member's view was checked for its header and task names
    only; a renamed job, a null `depends` (the job page threw), a done state with any
    "output", any runners passed to every non-member's UI and CLI. Each fails on 6c66b4c1
    (no ValueError)."""
    with pytest.raises(ValueError) as e:
        member_view(answer, submitted())
    assert why in str(e.value)


def test_a_members_full_view_of_the_job_passes() -> None:
    full = good_view(outputs={"t0": CID}, published=[{"name": "k", "value": "/ipfs/" + CID,
                                                       "task": "t0"}],
                     tasks=[_task(0, output=CID, partial=None, state="done",
                                  chunks=[{**_task()["chunks"][0], "log": CID}]),
                            _task(1, partial={"output": CID, "items": 1, "of": 2})])
    assert member_view(full, submitted()) is full


# -- the API of a non-member ---------------------------------------------------------------


@pytest.fixture
def non_member(tmp_path: Path) -> Iterator[Node]:
    """A peer with lanes on that holds JOB's submission (members A, B) and none of its lanes;
    its members asked quickly (each within 0.5 s, all within 2 s)."""
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False), lanes=True)
    node.state.apply(submitted())
    node.catchup.cfg = dataclasses.replace(node.catchup.cfg, view_timeout_s=0.5,
                                           view_total_s=2.0, max_view_bytes=1 << 16)
    try:
        yield node
    finally:
        node.log.close()


@contextlib.asynccontextmanager
async def fake_members(node: Node, handlers: dict[str, Handler],
                       asked: list[str]) -> AsyncIterator[None]:
    """Each peer of `handlers` a live peer of `node` answering GET /api/snapshot with its
    handler, on loopback; `asked` lists who was asked, in order."""
    urls = {}
    async with contextlib.AsyncExitStack() as stack:
        for peer, handler in handlers.items():
            async def route(request: web.Request, peer: str = peer,
                            handler: Handler = handler) -> web.StreamResponse:
                asked.append(peer)
                assert request.query["v"] == "3" and request.query["view"] == JOB
                return await handler(request)
            app = web.Application()
            app.router.add_get("/api/snapshot", route)
            server = await stack.enter_async_context(TestServer(app, host="127.0.0.1"))
            urls[peer] = str(server.make_url("")).rstrip("/")
        node.peer_urls = lambda: dict(urls)  # type: ignore[method-assign]
        yield


async def _garbage(request: web.Request) -> web.Response:
    return web.Response(body=b"{not json", content_type="application/json")


async def _silent(request: web.Request) -> web.Response:
    await asyncio.Event().wait()  # (never set: the asker's own timeout ends it)
    raise AssertionError


async def _other_job(request: web.Request) -> web.Response:
    return web.json_response(good_view(job="j0000000000b2"))


async def _huge(request: web.Request) -> web.Response:
    return web.json_response(good_view(name="x" * (1 << 17)))


async def _good(request: web.Request) -> web.Response:
    return web.json_response(good_view(chunks_from=int(request.query["chunks_from"])))


async def test_a_non_members_job_view_is_a_members_answer_asked_in_order(
        non_member: Node) -> None:
    asked: list[str] = []
    async with fake_members(non_member, {A: _garbage, B: _good}, asked), \
            api_client(non_member) as c:
        r = await c.get(f"/api/jobs/{JOB}?chunks_from=3")
        assert r.status == 200
        assert await r.json() == {**good_view(chunks_from=3), "served_by": B, "unverified": True}
    assert asked == [A, B]


async def test_a_members_view_is_passed_on_as_its_bytes_parsed_sharing_the_gil(
        non_member: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review r2, finding 3: the member's answer was parsed holding the GIL, then dumped
    again on the loop; now parsed with `sharing` in the thread and passed on as its bytes,
    `served_by` spliced in last (over one the member sent)."""
    import peer.catchup

    view = json.dumps(good_view(served_by="me"), indent=1).replace(
        '"progress": 0.5', '"progress": 5e-1').encode() + b"\n "
    parsed: list[dict[str, Any]] = []
    loads = peer.catchup.loads_within

    def spy(data: Any, *args: Any, **kw: Any) -> Any:
        parsed.append(kw)
        return loads(data, *args, **kw)

    monkeypatch.setattr(peer.catchup, "loads_within", spy)

    async def answer(request: web.Request) -> web.Response:
        return web.Response(body=view, content_type="application/json")

    async with fake_members(non_member, {A: answer}, []), api_client(non_member) as c:
        r = await c.get(f"/api/jobs/{JOB}")
        raw = await r.read()
    assert r.status == 200 and parsed == [{"sharing": True}]
    assert raw == view.rstrip()[:-1] + f',"served_by":"{A}","unverified":true}}'.encode()
    assert json.loads(raw) == {**good_view(), "served_by": A, "unverified": True}


async def test_a_members_view_not_in_utf8_is_refused(non_member: Node) -> None:
    async def utf16(request: web.Request) -> web.Response:
        return web.Response(body=json.dumps(good_view()).encode("utf-16-le"),
                            content_type="application/json")

    async with fake_members(non_member, {A: utf16}, []), api_client(non_member) as c:
        r = await c.get(f"/api/jobs/{JOB}")
        body = await r.json()
    assert r.status == 503 and "an answer that is not JSON" in body["message"]


@pytest.mark.parametrize("bad", [_garbage, _silent, _other_job, _huge])
async def test_members_that_answer_garbage_nothing_another_job_or_too_much_give_503_naming_them(
        non_member: Node, bad: Handler) -> None:
    """Each member answering so: the next asked, then 503 naming every member and why; a
    member that is not live is named too (C added by a JOB_MEMBERS, no URL)."""
    non_member.state.apply(Event(A, 3, HLC + 9, EventType.JOB_MEMBERS, {"job": JOB, "add": [C]}))
    asked: list[str] = []
    async with fake_members(non_member, {A: bad, B: bad}, asked), api_client(non_member) as c:
        r = await c.get(f"/api/jobs/{JOB}")
        body = await r.json()
    assert r.status == 503 and body["error"] == "Unavailable" and body["field"] == "members"
    assert asked == [A, B]
    message = body["message"]
    assert f"job {JOB}'s view is held by its members only" in message
    assert f"{C}: not live" in message
    assert message.index(A) < message.index(B) < message.index(C)
    why = {_garbage: "an answer that is not JSON (Expecting property name",
           _silent: "no answer within 0.5 s", _other_job: "another job",
           _huge: "an answer longer than 65536 bytes"}[bad]
    assert message.count(why) == 2, message


async def test_an_ended_job_whose_members_are_not_live_is_a_503_that_says_no_more_than_it_knows(
        non_member: Node) -> None:
    """Its JOB_ENDED held, no member live (as right after a partition healed, before SWIM
    holds the member alive again): 503 naming them, not "runs" (before session 44: "job
    ... runs on its members"); the job list has its state."""
    non_member.state.apply(ended())
    async with fake_members(non_member, {}, []), api_client(non_member) as c:
        r = await c.get(f"/api/jobs/{JOB}")
        body = await r.json()
        [entry] = (await (await c.get("/api/jobs")).json())["jobs"]
    assert r.status == 503 and body["field"] == "members", body
    assert "runs" not in body["message"] and f"{A}: not live; {B}: not live" in body["message"]
    assert "job list has the job's state" in body["message"] and entry["state"] == "done"


async def test_the_members_together_are_asked_within_the_total_bound(non_member: Node) -> None:
    non_member.catchup.cfg = dataclasses.replace(non_member.catchup.cfg, view_total_s=0.3)
    asked: list[str] = []
    async with fake_members(non_member, {A: _silent, B: _good}, asked), \
            api_client(non_member) as c:
        r = await c.get(f"/api/jobs/{JOB}")
        body = await r.json()
    assert r.status == 503 and asked == [A]
    assert f"{A}: no answer before all were asked for 0.3 s" in body["message"]
    assert f"{B}: not asked: 0.3 s passed" in body["message"]


async def test_a_non_member_lists_the_job_from_its_submission_and_its_end(
        non_member: Node) -> None:
    async with api_client(non_member) as c:
        [entry] = (await (await c.get("/api/jobs")).json())["jobs"]
        assert entry == elsewhere_entry(non_member.state, JOB) and entry["state"] == "running"
        non_member.state.apply(ended())
        [entry] = (await (await c.get("/api/jobs?limit=5")).json())["jobs"]
        assert (entry["state"], entry["progress"], entry["outputs"]) == (
            "done", 1.0, {"t0": CID, "t1": CID})
        r = await c.post(f"/api/jobs/{JOB}/cancel")  # (ended: not cancelled again)
        assert r.status == 409 and "already done" in (await r.json())["message"]


@pytest.mark.parametrize("kind", ["log", "metrics"])
async def test_a_non_members_task_log_and_metrics_are_a_503_naming_the_members(
        non_member: Node, kind: str) -> None:
    """Not asked of a member yet: said so, never an empty list as if the task logged nothing."""
    async with api_client(non_member) as c:
        r = await c.get(f"/api/jobs/{JOB}/tasks/t0/{kind}")
        body = await r.json()
    assert r.status == 503 and body["field"] == "job"
    assert f"({A}, {B})" in body["message"] and f"its tasks' {kind} are read on a member" in (
        body["message"])


async def test_a_members_view_reaches_a_non_member_whole(tmp_path: Path) -> None:
    """A real member's app answers `?v=3&view=` from its own state; the non-member passes
    it on as it is, naming the member; the non-member's own app never asks on (404)."""
    member = Node(PeerConfig(data_dir=tmp_path / "m", slots=1, mdns=False), lanes=True)
    other = Node(PeerConfig(data_dir=tmp_path / "o", slots=1, mdns=False), lanes=True)
    try:
        member.listeners.clear()  # (no scheduler: the view as submitted)
        ev = member.emit(EventType.JOB_SUBMITTED, {"job": JOB, "workflow": WORKFLOW,
                                                   "members": [member.peer_id]})
        member.flush()
        other.state.apply(ev)
        async with api_client(member) as mc, api_client(other) as oc:
            url = str(mc.make_url("")).rstrip("/")
            other.peer_urls = lambda: {member.peer_id: url}  # type: ignore[method-assign]
            mine = await (await mc.get(f"/api/jobs/{JOB}")).json()
            r = await oc.get(f"/api/jobs/{JOB}")
            assert r.status == 200
            assert await r.json() == {**mine, "served_by": member.peer_id, "unverified": True}
            r = await oc.get(f"/api/snapshot?v=3&view={JOB}")
            assert r.status == 404 and (await r.json())["field"] == "view"
    finally:
        member.log.close()
        other.log.close()


async def test_with_lanes_off_a_job_with_members_is_viewed_and_listed_here(
        tmp_path: Path) -> None:
    node = Node(PeerConfig(data_dir=tmp_path / "peer", slots=1, mdns=False, lanes=False))
    try:
        node.state.apply(submitted())
        node.peer_urls = lambda: pytest.fail("a member asked")  # type: ignore[method-assign]
        async with api_client(node) as c:
            view = await (await c.get(f"/api/jobs/{JOB}")).json()
            [entry] = (await (await c.get("/api/jobs")).json())["jobs"]
            r = await c.get(f"/api/snapshot?v=3&view={JOB}")  # (review r2: a whole
            assert r.status == 404 and (await r.json())["field"] == "view"  # snapshot)
        assert view["state"] == entry["state"] == "pending" and "served_by" not in view
        assert "members" not in entry and len(entry["tasks"]) == 2
    finally:
        node.log.close()


async def test_banzai_status_of_a_job_served_by_a_member_says_whose_word_it_is(
        non_member: Node, capsys: pytest.CaptureFixture[str]) -> None:
    """Session 49, review r1 F9: the web UI said a member gave the view, `banzai status JOB`
    printed it unmarked (fails on 6c66b4c1: no such line)."""
    import argparse

    from peer import cli

    async def full(request: web.Request) -> web.Response:
        return web.json_response(good_view(tasks=[_task(0), _task(1)]))

    async with fake_members(non_member, {B: full}, []), api_client(non_member) as c:
        client = cli.Client(str(c.make_url("")), c.session)
        rc = await cli.cmd_status(client, argparse.Namespace(job=JOB))
    printed = capsys.readouterr().out
    assert rc == 0
    assert f"(as its member {B} gave it: task states, peers and outputs unverified)" in printed

"""Where POST /api/jobs parses its body (session 51, issue 12): a small one (a one-task job's)
on the loop, without a worker thread's hop; one over INLINE_PARSE_BYTES in a worker thread,
so that a large workflow does not hold the loop. Either way the same job is accepted, and
bad input is the same 400 naming its field."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from peer.http import app
from peer.node import Node

Client = TestClient[Any, Any]


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread each parse of a job's body ran in (the real parse runs)."""
    seen: list[str] = []
    real = app.parse

    def parse(*args: Any, **kwargs: Any) -> Any:
        seen.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(app, "parse", parse)
    return seen


def _job(n: int) -> bytes:
    return json.dumps({"name": "p", "tasks": [
        {"name": f"e{i}", "call": "ECHO", "args": [f"x-{i}"]} for i in range(n)]}).encode()


async def test_a_small_body_is_parsed_on_the_loop(
        served_node: tuple[Client, Node], threads: list[str]) -> None:
    client, node = served_node
    body = json.dumps([{"call": "ECHO", "args": ["one"]}]).encode()
    assert len(body) <= app.INLINE_PARSE_BYTES
    r = await client.post("/api/jobs", data=body, headers={"Content-Type": "application/json"})
    assert r.status == 201, await r.text()
    assert (await r.json())["job"] in node.state.jobs
    assert threads == [threading.main_thread().name]


async def test_a_large_body_is_parsed_in_a_worker_thread(
        served_node: tuple[Client, Node], threads: list[str]) -> None:
    client, node = served_node
    body = _job(40)
    assert len(body) > app.INLINE_PARSE_BYTES
    r = await client.post("/api/jobs", data=body, headers={"Content-Type": "application/json"})
    assert r.status == 201, await r.text()
    assert len(node.state.jobs[(await r.json())["job"]].payload["workflow"]["tasks"]) == 40
    assert len(threads) == 1 and threads[0] != threading.main_thread().name


@pytest.mark.parametrize("body", [b'[{"call": "NOPE"}]', _job(40).replace(b'"ECHO"', b'"NOPE"')])
async def test_bad_input_is_a_400_naming_the_task_either_way(
        served_node: tuple[Client, Node], threads: list[str], body: bytes) -> None:
    client, _ = served_node
    r = await client.post("/api/jobs", data=body, headers={"Content-Type": "application/json"})
    err = await r.json()
    assert r.status == 400 and err["error"] == "SpecError", err
    assert err["field"] == "tasks[0].call" and "unknown task 'NOPE'" in err["message"]

import asyncio, json, time
from pathlib import Path
from peer.config import PeerConfig
from peer.node import Node
from peer.spec import parse
from peer.state import EventType
from peer.views import job_view
PIPE = [{"call": "T_WRITE", "args": [12]}, {"call": "T_UPPER", "args": []}, {"call": "T_CONCAT"}]
async def step(name, coro, t=15):
    try:
        return await asyncio.wait_for(coro, t)
    except TimeoutError:
        for task in asyncio.all_tasks():
            task.print_stack(limit=8)
        raise AssertionError("HANG in " + name)
async def waitjob(node, job):
    while job_view(node.state, job, 3)["state"] not in ("done","failed","cancelled"):
        await asyncio.sleep(0.02)
async def test_hang(tmp_path: Path) -> None:
    for it in range(6):
        cfg = PeerConfig(data_dir=tmp_path / str(it), slots=2, task_modules=("tests.fixture_tasks",), mdns=False)
        n = Node(cfg); await step("start1", n.start())
        wf = parse(json.dumps(PIPE), n.catalog)
        n.emit(EventType.JOB_SUBMITTED, {"job": "j0", "workflow": wf.to_json()})
        await step("wait1", waitjob(n, "j0"))
        await step("close1", n.close())
        n = Node(cfg); await step("start2", n.start())
        n.emit(EventType.JOB_SUBMITTED, {"job": "j1", "workflow": wf.to_json()})
        await step("wait2", waitjob(n, "j1"))
        await step("close2", n.close())

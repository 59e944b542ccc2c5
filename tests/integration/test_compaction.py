"""Compaction between real peers (issue 11 item 3): a peer alone compacts a finished job and
drops its events; the job stays readable and cached; a fresh peer that joins later is behind
the compaction floor and catches up from the first one's signed snapshot."""

from __future__ import annotations

from typing import Any

from tests.helpers import get_json as get
from tests.helpers import post_json as post
from tests.helpers import until, wait_job

JOB = [{"call": "ECHO", "args": ["compact me"]}, {"call": "ECHO", "args": ["and me"]}]


def test_a_compacted_job_is_served_cached_and_reaches_a_late_peer_by_snapshot(
        peer_factory: Any) -> None:
    a = peer_factory("a", "--no-mdns", "--compact-recent-tasks", "0")
    job = post(a.url + "/api/jobs", JOB)["job"]
    view = wait_job(a, job)
    assert view["state"] == "done"
    # alone, every live member (a) holds the job's events: they leave memory and the log
    health = until(lambda: (h := get(a.url + "/api/health"))["log"]["compaction"]["dropped"]
                    and h)
    assert health["log"]["compaction"]["jobs"] == 1
    record = get(f"{a.url}/api/jobs/{job}")
    assert record["state"] == "done" and record["outputs"] == view["outputs"]
    assert [j["id"] for j in get(a.url + "/api/jobs?limit=5")["jobs"]] == [job]
    # its cache entries still answer a rerun
    again = wait_job(a, post(a.url + "/api/jobs", JOB)["job"])
    assert again["outputs"] == view["outputs"] and all(t["cached"] for t in again["tasks"])

    b = peer_factory("b", "--no-mdns", "--join", health["gossip_address"])
    until(lambda: get(b.url + "/api/health")["log"]["heads_digest"]
           == get(a.url + "/api/health")["log"]["heads_digest"])
    stages = until(lambda: (c := get(b.url + "/api/health")["log"]["compaction"])[
        "caught_up_s"].get("rows_indexed_after_take") is not None and c)
    assert stages["snapshots_pending"] == 0  # a version 3 snapshot: its rows are all taken
    assert get(f"{b.url}/api/jobs/{job}") == record  # fetched from a on demand, checked
    assert job in [j["id"] for j in get(b.url + "/api/jobs")["jobs"]]
    refused = get(b.url + "/api/health")["security"]["refused"]
    assert not any(k.startswith("snapshot") for r in refused.values() for k in r), refused

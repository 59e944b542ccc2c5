"""scripts/profile_mesh.py: the peers' CPU split by thread (the event loop, the others)."""

from __future__ import annotations

import argparse
import os

import pytest

from scripts.scriptlib import load_script

profile_mesh = load_script("profile_mesh")


def test_split_threads_tells_the_main_thread_from_the_others() -> None:
    before = {(10, 10): 1.0, (10, 11): 0.5, (20, 20): 2.0}
    after = {(10, 10): 1.5, (10, 11): 0.75, (20, 20): 2.5, (20, 21): 0.25}  # 21: a new thread
    assert profile_mesh.split_threads(before, after, 1000) == {"loop": 1.0, "other": 0.5}


def test_thread_cpu_of_this_process_has_its_main_thread() -> None:
    got = profile_mesh._thread_cpu_s(os.getpid())
    assert os.getpid() in got
    assert all(s >= 0 for s in got.values())


def test_thread_cpu_of_a_gone_process_is_empty() -> None:
    assert profile_mesh._thread_cpu_s(2**22 + 12345) == {}


def test_counted_reads_the_counters_a_batch_is_measured_by_with_their_labels() -> None:
    text = (
        "# HELP banzai_frames_received_total Gossip frames_in\n"
        "# TYPE banzai_frames_received_total counter\n"
        "banzai_frames_received_total 12.0\n"
        "# HELP banzai_claims_total Claims folded, by whose\n"
        "# TYPE banzai_claims_total counter\n"
        'banzai_claims_total{by="self"} 3.0\n'
        'banzai_claims_total{by="others"} 5.0\n'
        "# HELP banzai_slots Worker slots\n"
        "# TYPE banzai_slots gauge\n"
        "banzai_slots 1.0\n")
    assert profile_mesh.counted(text) == {"frames_received": 12.0, "claims{by=self}": 3.0,
                                          "claims{by=others}": 5.0}


def test_kinds_alternate_on_one_mesh_and_a_bad_one_is_refused() -> None:
    assert profile_mesh.kinds_arg("dag,dag0") == ["dag", "dag0"]
    with pytest.raises(argparse.ArgumentTypeError, match="dags: not one of"):
        profile_mesh.kinds_arg("dag,dags")



def test_each_peers_idle_cpu_over_the_compaction_wait_is_taken_off() -> None:
    per_peer = [{"loop": 1.0, "other": 0.1}, {"loop": 0.2, "other": 0.05}]
    # p1 idles at 10 ms/s: 4 s of waiting for compaction is 0.04 ms of each of 1,000 tasks
    assert profile_mesh.net_per_peer(per_peer, [5.0, 10.0], 4.0, 1000) == [1.08, 0.21]
    assert profile_mesh.net_per_peer(per_peer, [5.0, 10.0], 0.0, 1000) == [1.1, 0.25]

"""scripts/profile_mesh.py: the peers' CPU split by thread (the event loop, the others)."""

from __future__ import annotations

import os

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

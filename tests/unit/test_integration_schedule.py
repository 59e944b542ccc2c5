"""tests/integration/schedule.py: how scripts/test.sh spreads the integration tests over xdist
workers (units of work, longest first)."""

from __future__ import annotations

import pytest

from tests.integration.schedule import SPLIT, _LongestFirst, module_of, unit_of

LANES = "tests/integration/test_lanes.py::test_a[members]"
MESH = "tests/integration/test_mesh.py::test_b"


def test_a_module_is_one_unit_but_a_split_module_s_tests_are_one_each() -> None:
    assert "test_lanes" in SPLIT and "test_mesh" not in SPLIT
    assert module_of(LANES) == "test_lanes" and module_of(MESH) == "test_mesh"
    assert unit_of(LANES) == LANES
    assert unit_of(MESH) == unit_of("tests/integration/test_mesh.py::test_c") == \
        "tests/integration/test_mesh.py"


def test_the_longest_unit_waiting_is_taken_first_and_unknown_modules_last() -> None:
    q = _LongestFirst()
    q.module_tests = {"test_lanes": 14, "test_netns": 6, "test_mesh": 11, "test_new": 3}
    q["tests/integration/test_new.py"] = dict.fromkeys(["n1", "n2", "n3"], False)  # 5 s
    q["tests/integration/test_mesh.py"] = dict.fromkeys([f"m{i}" for i in range(11)], False)
    q[LANES] = {LANES: False}  # 216 / 14 s
    q["tests/integration/test_netns.py"] = dict.fromkeys([f"x{i}" for i in range(6)], False)
    order = [q.popitem(last=False)[0] for _ in range(4)]
    assert order == ["tests/integration/test_netns.py", "tests/integration/test_mesh.py", LANES,
                     "tests/integration/test_new.py"]
    assert not q
    q["a"], q["b"] = {}, {}
    assert q.popitem()[0] == "b"  # popitem() as OrderedDict's: the last one


class _Config:
    """The parts of pytest.Config that short_basetemp reads."""

    def __init__(self, workers: int | None, basetemp: str | None = None) -> None:
        self.option = type("Option", (), {"basetemp": basetemp})()
        self._workers = workers

    def getoption(self, name: str, default: object = None) -> object:
        assert name == "numprocesses"
        return self._workers


def test_a_run_on_workers_gets_a_base_short_enough_for_a_peer_s_forkserver_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's test dir, a peer's data dir in it and the forkserver socket multiprocessing
    binds under its TMPDIR (<data dir>/tmp) fit in AF_UNIX's 107 bytes for the longest test
    name pytest keeps (30); under xdist's default base (/tmp/pytest-of-root/pytest-501/
    popen-gw1/) they took 111 and a third of the integration tests failed."""
    from tests.integration.conftest import short_basetemp

    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert short_basetemp(_Config(None)) is None  # one process: pytest's default
    assert short_basetemp(_Config(2, "/given")) is None  # a base named on the command line
    base = short_basetemp(_Config(2))
    assert base is not None and base.is_dir()
    try:
        sock = base / "popen-gw1" / ("t" * 30 + "0") / "l0" / "tmp" / "pymp-12345678" / \
            "listener-12345678"
        assert len(str(sock).encode()) <= 107, (len(str(sock)), sock)
    finally:
        base.rmdir()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    assert short_basetemp(_Config(2)) is None  # a worker takes the base its controller made

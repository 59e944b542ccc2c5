"""tests/integration/schedule.py: how scripts/test.sh spreads the integration tests over xdist
workers (units of work, longest first)."""

from __future__ import annotations

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

"""The suite's guard (tests/conftest.py `_listener_guard`): a test whose in-process Node had
a listener raise (logged and counted by Node._tell, not raised) fails, unless it is marked
`listener_errors` (session 48)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

_TESTS = '''
import time

import pytest

from peer.config import PeerConfig
from peer.log import Event, EventType
from peer.node import Node


def _merge_with_a_broken_listener(tmp_path, raises):
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False))
    try:
        def broken(ev):
            if raises:
                raise RuntimeError("a bug")
        n.listeners.append(broken)
        wf = {"name": "w", "tasks": [{"name": "t", "call": "ECHO", "params": {"text": "x"},
                                      "depends": []}]}
        n.merge([Event("o", 1, int(time.time() * 1000) << 16, EventType.JOB_SUBMITTED,
                       {"job": "j", "workflow": wf})])
    finally:
        n.log.close()


def test_swallowed(tmp_path):
    _merge_with_a_broken_listener(tmp_path, True)


@pytest.mark.listener_errors
def test_expected(tmp_path):
    _merge_with_a_broken_listener(tmp_path, True)


def test_clean(tmp_path):
    _merge_with_a_broken_listener(tmp_path, False)
'''


@pytest.mark.listener_errors  # (the inner tests' Nodes are made under this test's guard too)
def test_a_swallowed_listener_error_fails_its_test_unless_marked(
        pytester: pytest.Pytester) -> None:
    pytester.makeconftest("from tests.conftest import _listener_guard  # noqa: F401\n")
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                     "markers =\n    listener_errors: expected\n")
    pytester.makepyfile(test_inner=_TESTS)
    res = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-p", "no:xdist")
    res.assert_outcomes(passed=3, errors=1)  # (test_swallowed: its teardown fails)
    res.stdout.fnmatch_lines(["*ERROR at teardown of test_swallowed*",
                              "*a listener raised*listener_errors*: 1*"])

"""How scripts/test.sh spreads the integration tests over 2 xdist workers (`--dist loadfile`
picks this scheduler; any other `--dist` is xdist's own).

A unit of work is a whole module (its module-scoped peers, corpora and browser start once,
on one worker), except the modules of `SPLIT`, whose tests share nothing but the machine:
each of their tests is a unit of its own. The longest unit still waiting goes to the next
free worker (`EXPECTED_S`, seconds of the one-at-a-time run of session 49, per module): the
long modules start first and short ones fill the end, so that no worker ends a long unit
alone while the other has long finished (test_lanes alone was 216 s of 836).

Nothing else is shared between two workers: every test makes its own data dirs (tmp_path,
one base per worker), mesh name and secret (tests/conftest.py), netns names (netns.py: the
pid is in the name), local users (helpers.local_user: the pid and a random suffix), Kubo
repos (tmp_path, ports chosen by the OS), container names (kind_container: a uuid) and
Chromium profiles (Playwright makes one per launch); every listening socket is bound to
port 0 by its owner. The corpora under .cache/ are one per module, so one writer each.

One thing two workers changed: the length of a data dir's path. xdist puts a worker's tmp
under <pytest's>/popen-gw<N>/, 10 bytes deeper, and a peer binds its workers' forkserver
socket under <data dir>/tmp/pymp-*/ (TMPDIR: peer/main.py's private_dirs): past 107 bytes
`AF_UNIX path too long` and the peer does not start (a third of the tests failed so, in
session 50's first run). A run on workers gets a short base of its own (`SHORT_BASE`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.schedule import scheduler

SHORT_BASE = "/tmp"  # pytest's default base is /tmp/pytest-of-<user>/pytest-<N>/


def short_basetemp(config: pytest.Config) -> Path | None:
    """The base of a run's tmp dirs when it runs on xdist workers and names none (None: the
    default): SHORT_BASE/bzi-<8 random>, the workers' dirs popen-gw<N> in it; 15 bytes
    shorter than the default's, with the worker's part 5 shorter than a serial run's."""
    if (not config.getoption("numprocesses", None) or config.option.basetemp
            or "PYTEST_XDIST_WORKER" in os.environ):
        return None
    return Path(tempfile.mkdtemp(prefix="bzi-", dir=SHORT_BASE))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    base = short_basetemp(config)
    if base is not None:  # (before pytest's tmp_path_factory reads it)
        config.option.basetemp = str(base)
        config.stash[_MADE] = base


_MADE = pytest.StashKey[Path]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The short base is removed after a run that passed; kept (for the logs) otherwise."""
    base = session.config.stash.get(_MADE, None)
    if base is not None and exitstatus == 0:
        shutil.rmtree(base, ignore_errors=True)


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadfile":
        return None
    return scheduler(config, log)

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
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.schedule import scheduler


@pytest.hookimpl(tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") != "loadfile":
        return None
    return scheduler(config, log)

"""The scheduler of the integration tests on xdist workers: see tests/integration/conftest.py."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

# Modules whose tests have no module-scoped fixture: each test is a unit of its own.
SPLIT = frozenset({"test_lanes", "test_lanes_compat", "test_durable", "test_tomb_compat",
                   "test_systemd", "test_kubo_backend", "test_compaction", "test_replication",
                   "test_scratch_bounds", "test_engine"})

# Seconds per module, one test at a time (session 49's junit.xml, rounded); a module not
# listed counts as DEFAULT_S. Only the order of the units depends on these.
EXPECTED_S = {
    "test_lanes": 216, "test_netns": 60, "test_lanes_compat": 56, "test_webui": 49,
    "test_mesh": 41, "test_cli": 38, "test_kubo_parity": 32, "test_netns_repair": 23,
    "test_log_door": 21, "test_webui_bounds": 20, "test_durable": 20, "test_lifecycle": 19,
    "test_systemd": 18, "test_tomb_compat": 17, "test_kinds": 16, "test_webui_hostile": 15,
    "test_mesh_seed": 15, "test_kubo_backend": 15, "test_security_http": 15,
    "test_peer_api": 12, "test_bad_input": 12, "test_admission": 12, "test_seed_pipeline": 11,
    "test_mdns_loopback": 10, "test_compaction": 9, "test_scratch_bounds": 8,
    "test_example_mixed": 8, "test_engine": 8, "test_signing": 7, "test_replication": 7,
    "test_http_limits": 6, "test_conformance": 6, "test_datadir_compat": 6,
    "test_fetch_split": 5, "test_kubo_rpc": 4,
}
DEFAULT_S = 5.0


def module_of(nodeid: str) -> str:
    """"tests/integration/test_x.py::test_y[p]" -> "test_x"."""
    return nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")


def unit_of(nodeid: str) -> str:
    """The unit of work of a test: its module's path, or itself in a `SPLIT` module."""
    return nodeid if module_of(nodeid) in SPLIT else nodeid.split("::", 1)[0]


def cost(unit: str, tests: int, module_tests: int) -> float:
    """Expected seconds of a unit of `tests` tests of a module of `module_tests` tests."""
    return EXPECTED_S.get(module_of(unit), DEFAULT_S) * tests / max(module_tests, 1)


class _LongestFirst(OrderedDict[str, dict[str, bool]]):
    """xdist's work queue; popitem(last=False), how the scheduler takes the next unit, takes
    the one of the highest cost (ties: the first queued). `module_tests`: how many tests each
    module has (the scheduler sets it once the collection is known)."""

    def __init__(self) -> None:
        super().__init__()
        self.module_tests: dict[str, int] = {}

    def popitem(self, last: bool = True) -> tuple[str, dict[str, bool]]:
        if last or not self:
            return super().popitem(last)
        per_module: dict[str, int] = {}
        for unit, tests in self.items():
            per_module[module_of(unit)] = per_module.get(module_of(unit), 0) + len(tests)
        totals = self.module_tests or per_module
        unit = max(self, key=lambda u: cost(u, len(self[u]), totals.get(module_of(u), 1)))
        return unit, self.pop(unit)


def scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class IntegrationScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def __init__(self, config: pytest.Config, log: Any = None) -> None:
            super().__init__(config, log)
            self.workqueue = _LongestFirst()

        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

        def schedule(self) -> None:
            if self.collection is None and self.collection_is_completed:
                ids = next(iter(self.registered_collections.values()), [])
                counts: dict[str, int] = {}
                for nodeid in ids:
                    counts[module_of(nodeid)] = counts.get(module_of(nodeid), 0) + 1
                self.workqueue.module_tests = counts
            super().schedule()

    return IntegrationScheduling(config, log)

"""Live logs and metrics of this peer's running chunks, by task, that the API serves until the
task is done (then they come from the chunks' records in the store). Loop-owned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peer.log import TaskKey


@dataclass
class LiveRecords:
    """The log lines and metrics ([name, step, value]) of the latest local run of each task."""

    logs: dict[TaskKey, list[str]] = field(default_factory=dict)
    metrics: dict[TaskKey, list[list[Any]]] = field(default_factory=dict)

    def open(self, key: TaskKey) -> tuple[list[str], list[list[Any]]]:
        """Fresh records for a run of task `key`; they replace those of its previous run."""
        lines: list[str] = []
        metrics: list[list[Any]] = []
        self.logs[key] = lines
        self.metrics[key] = metrics
        return lines, metrics

"""Live logs and metrics of this peer's running chunks, by task, that the API serves until the
task is done (then they come from the chunks' records in the store), each bounded (`Kept`: its
first and its last entries, and a count of those cut between). Loop-owned.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from peer.log import TaskKey
from peer.log.events import cut_text

T = TypeVar("T")

LOG_MAX_BYTES = 10 << 20  # a run's log without --task-log-max-bytes (as kind_shell's)
LINE_OVERHEAD = 64  # what a held line costs beyond its characters (a str and its place)
LINE_MAX_CHARS = 64 << 10  # a longer line is cut (head, tail and a marker), as a shell's
METRICS_MAX_POINTS = 20_000  # of one run: the first and the last 10,000 are kept (~1 MB JSON)
METRIC_NAME_MAX_CHARS = 256  # a metric's name is cut to this (20,000 points of 64 KiB names
# would hold 1.3 GB: the points' bound counts points, not bytes)


class Kept(Sequence[T]):
    """Entries appended over a run, held within `budget` (each costs `size(entry)`): the first
    half-budget of them, then the latest half-budget; those cut between are counted and, if
    `marker` is given, stand as one entry `marker(count, size)` where they were."""

    def __init__(self, budget: int, size: Callable[[T], int],
                 marker: Callable[[int, int], T] | None = None) -> None:
        self.size = size
        self.marker = marker
        self.head: list[T] = []
        self.head_left = budget // 2
        self.full = False  # the head is closed: every later entry goes to the tail
        self.tail: deque[T] = deque()
        self.tail_size = 0
        self.tail_budget = budget - budget // 2
        self.cut = 0  # entries cut, and what they cost
        self.cut_size = 0

    def append(self, entry: T) -> None:
        s = self.size(entry)
        if not self.full:
            if s <= self.head_left:
                self.head.append(entry)
                self.head_left -= s
                return
            self.full = True
        self.tail.append(entry)
        self.tail_size += s
        while self.tail_size > self.tail_budget and self.tail:
            gone = self.size(self.tail.popleft())
            self.tail_size -= gone
            self.cut += 1
            self.cut_size += gone

    def _marked(self) -> list[T]:
        return [] if not self.cut or self.marker is None else [
            self.marker(self.cut, self.cut_size)]

    def __iter__(self) -> Iterator[T]:
        yield from self.head
        yield from self._marked()
        yield from self.tail

    def __reversed__(self) -> Iterator[T]:
        return reversed(list(self))

    def __len__(self) -> int:
        return len(self.head) + len(self._marked()) + len(self.tail)

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        return list(self)[i]  # (a copy: the API reads a run's log whole, tests an entry)


def line_cost(line: str) -> int:
    """What a held log line costs against its run's budget (about the bytes Python holds)."""
    return len(line) + LINE_OVERHEAD


def log_lines(budget: int = LOG_MAX_BYTES) -> Kept[str]:
    """A run's log lines within `budget`, a marker line where lines were cut."""
    def marker(n: int, size: int) -> str:
        chars = size - n * LINE_OVERHEAD
        return (f"[banzai] ... {n} log lines ({chars} characters) cut here: a run keeps "
                f"its first and its last lines within --task-log-max-bytes ({budget}) ...")
    return Kept(budget, line_cost, marker)


def log_line(text: str, budget: int = LOG_MAX_BYTES) -> str:
    """One line as a run's log holds it: one longer than LINE_MAX_CHARS (or a quarter of the
    budget) is cut to its head and tail around a marker."""
    return cut_text(text, min(LINE_MAX_CHARS, budget // 4))


def metric_points(most: int = METRICS_MAX_POINTS) -> Kept[list[Any]]:
    """A run's metric points ([name, step, value]): the first and the last `most` / 2."""
    return Kept(most, lambda _: 1)


def metric_point(name: Any, step: Any, value: Any) -> list[Any]:
    """A point as a run holds it: its name cut to METRIC_NAME_MAX_CHARS."""
    return [str(name)[:METRIC_NAME_MAX_CHARS], int(step), float(value)]


@dataclass(frozen=True)
class PointsCut:
    """Where a run's metric points were cut (`Kept`'s count between its first and its last
    points), as the API marks it: `note` says it as the log's marker says its lines'."""

    points: int

    @property
    def note(self) -> str:
        return (f"[banzai] ... {self.points} metric points cut here: a run keeps its first "
                f"and its last {METRICS_MAX_POINTS // 2} points ...")


def points_cut(metrics: Kept[list[Any]]) -> list[Any]:
    """A run's held points with a PointsCut where points were cut (what the API reads)."""
    held: list[Any] = list(metrics)
    if metrics.cut:
        held.insert(len(metrics.head), PointsCut(metrics.cut))
    return held


def run_record(log: Kept[str], metrics: Kept[list[Any]]) -> dict[str, Any]:
    """The record of a run stored when it ends: what was held of its log (a note added if
    metric points were cut) and of its metrics (`metrics_cut`, if points were: where, and
    how many; the list itself stays [name, step, value] points, as an older peer reads)."""
    lines = list(log)
    out: dict[str, Any] = {"log": lines, "metrics": list(metrics)}
    if metrics.cut:
        lines.append(f"[banzai] {metrics.cut} metric points cut between the first and the "
                     f"last {len(metrics.tail)} of this run")
        out["metrics_cut"] = {"at": len(metrics.head), "points": metrics.cut}
    return out


def record_points(record: Mapping[str, Any], points: list[Any]) -> list[Any]:
    """A stored record's `points` (its metrics list) with a PointsCut where its
    `metrics_cut` says points were cut (one that does not fit is ignored: a member's)."""
    cut = record.get("metrics_cut")
    at = cut.get("at") if isinstance(cut, dict) else None
    n = cut.get("points") if isinstance(cut, dict) else None
    if (type(at) is not int or type(n) is not int or not 0 <= at <= len(points)
            or not 0 < n <= 1 << 62):
        return points
    return [*points[:at], PointsCut(n), *points[at:]]


@dataclass
class LiveRecords:
    """The log lines and metrics ([name, step, value]) of the latest local run of each task."""

    log_max_bytes: int = LOG_MAX_BYTES
    logs: dict[TaskKey, Sequence[str]] = field(default_factory=dict)
    metrics: dict[TaskKey, Sequence[list[Any]]] = field(default_factory=dict)

    def open(self, key: TaskKey) -> tuple[Kept[str], Kept[list[Any]]]:
        """Fresh records for a run of task `key`; they replace those of its previous run."""
        lines = log_lines(self.log_max_bytes)
        metrics = metric_points()
        self.logs[key] = lines
        self.metrics[key] = metrics
        return lines, metrics

    def close(self, key: TaskKey, lines: Kept[str], metrics: Kept[list[Any]]) -> None:
        """The run of task `key` that holds `lines` and `metrics` ended and its record is
        stored (the API reads it there): its entries go, unless a later run replaced them."""
        if self.logs.get(key) is lines:
            del self.logs[key]
        if self.metrics.get(key) is metrics:
            del self.metrics[key]

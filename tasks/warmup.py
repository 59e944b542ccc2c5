"""Runs the warm-up hooks of the task modules imported before it (`registry.warm_up`) when
it is imported: the peer's executor preloads it last in its forkserver (--warm-workers), so
workers fork warm. Import-time only, single-threaded."""

from __future__ import annotations

from tasks.registry import warm_up

ERRORS = warm_up()
"""One line per warm-up that failed in this process (also logged)."""

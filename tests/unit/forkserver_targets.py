"""A module that records which process imported it, and a probe target that reports it.

Imported by the main script of a probe in tests/unit/test_executor.py and by its workers.
"""

from __future__ import annotations

import os
from typing import Any

IMPORTED_BY = os.getpid()  # the process that ran this module's code


def probe(payload: Any, ctx: Any) -> dict[str, int]:
    return {"pid": os.getpid(), "imported_by": IMPORTED_BY}

"""peer.fdlimit: the open-files soft limit goes up to what a peer needs, never down, never
past the hard limit. Run in a child process: the limit is process-wide."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import resource, sys
from peer.fdlimit import raise_open_files
soft, hard = int(sys.argv[1]), int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
got = raise_open_files(int(sys.argv[3]))
print(got, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def limits(soft: int, hard: int, want: int) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(soft), str(hard), str(want)],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.parametrize(("soft", "hard", "want", "after"), [
    (1024, 4096, 8192, 4096),  # up to the hard limit
    (1024, 20000, 8192, 8192),  # up to what is wanted
    (10000, 20000, 8192, 10000),  # never down
])
def test_the_soft_limit_is_raised_within_the_hard_one(soft: int, hard: int, want: int,
                                                      after: int) -> None:
    import resource

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < hard:
        pytest.skip(f"this process's hard limit is below {hard}")
    assert limits(soft, hard, want) == (after, after)

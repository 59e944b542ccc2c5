"""peer.jobs.leases: which watched claims' leases lapsed, as reading every one would say."""

from __future__ import annotations

import random

from peer.jobs.claims import AttemptKey, lease_lapsed
from peer.jobs.leases import Leases


def test_lapsed_is_what_reading_every_watched_claim_says() -> None:
    r = random.Random(5)
    leases, now = Leases(10.0), 0.0
    keys = [AttemptKey("j", f"t{i % 3}", i, 0) for i in range(12)]
    for _ in range(400):
        ak = r.choice(keys)
        op = r.randrange(5)
        if op == 0:
            leases[ak] = now  # heard (renewed)
        elif op == 1:
            leases.setdefault(ak, now)
        elif op == 2:
            leases.pop(ak, None)
        elif op == 3 and ak in leases:
            leases[ak] = -float("inf")  # its holder left
        else:
            now += r.choice((0.5, 3.0, 11.0))
        want = {(k.job, k.task) for k, seen in leases.items() if lease_lapsed(seen, now, 10.0)}
        assert leases.lapsed(now) == want

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


def test_of_lists_the_watched_attempts_each_peer_claimed() -> None:
    """`of(peer)` (what a heartbeat of `peer` reads) is, after any sequence of writes and
    removals, the attempts still watched that `peer` claimed: as the state held them when
    the attempt started being watched (`claimers`), or noted since (`claimed_by`)."""
    r = random.Random(9)
    held: dict[AttemptKey, set[str]] = {}  # the claims the state holds
    leases = Leases(10.0, lambda ak: sorted(held.get(ak, ())))
    model: dict[AttemptKey, set[str]] = {}
    keys = [AttemptKey("j", "t", i, r.randrange(2)) for i in range(10)]
    peers = ["p1", "p2", "p3"]
    for _ in range(800):
        ak, peer = r.choice(keys), r.choice(peers)
        op = r.randrange(7)
        if op == 0:
            held.setdefault(ak, set()).add(peer)  # a claim folded
            leases.claimed_by(ak, peer)
            if ak in model:
                model[ak].add(peer)
        elif op in (1, 2):
            if op == 1:
                leases[ak] = 1.0
            else:
                leases.setdefault(ak, 2.0)
            model.setdefault(ak, set(held.get(ak, ())))
        elif op == 3:
            leases.pop(ak, None)
            model.pop(ak, None)
        elif op == 4 and ak in leases:
            del leases[ak]
            del model[ak]
        elif op == 5 and leases and r.random() < 0.2:
            k, _ = leases.popitem()
            del model[k]
        elif op == 6 and r.random() < 0.02:
            leases.clear()
            model.clear()
        for p in peers:
            assert sorted(leases.of(p)) == sorted(k for k, ps in model.items() if p in ps)

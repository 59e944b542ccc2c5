"""Who holds and runs a lanes job (docs/design/partial-replication.md, sections 5.3 and 5.4):
its members in order, its home (who splits its tasks without input, assembles and ends it),
when it spreads to more peers (scale-out) and when a non-member takes it over (orphan
takeover). Pure functions of the mesh state, the live peers and a time passed in; a job
without `members` (or any job while lanes are off, `MeshState.lanes_on`) has none of this.
"""

from __future__ import annotations

from collections.abc import Collection

from peer.log import JobSubmitted, MeshState
from peer.rendezvous import rendezvous


def ordered(state: MeshState, job: str) -> list[str]:
    """The members of lanes job `job` in `members` order: its JOB_SUBMITTED's `members`
    (the home first, then the replicas), then those JOB_MEMBERS added, by rendezvous hash of
    the job (an order every peer computes alike from the folded set, whatever order the
    JOB_MEMBERS came in). Empty for a job that is no lanes job here (lanes off, no
    `members`, its JOB_SUBMITTED not held)."""
    held = state.members_of.get(job)
    sub = state.jobs.get(job)
    if not state.lanes_on or held is None or sub is None:
        return []
    first = list(dict.fromkeys(sub.body_as(JobSubmitted).members or ()))
    return first + rendezvous(job, [p for p in held if p not in first])


def home(job: str, state: MeshState, live: Collection[str]) -> str | None:
    """The peer that holds `job`'s home duties now (splitting its tasks without input,
    assembling them, its JOB_ENDED): the first member in `members` order that is in `live`
    (the live peers, the asking one included); None if none is (or no lanes job)."""
    return next((p for p in ordered(state, job) if p in live), None)

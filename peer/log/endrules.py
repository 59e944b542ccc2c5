"""The rules of a JOB_ENDED's outputs that the fold (peer.log.fold) and the compactor's
remade records (peer.log.compact) both apply, stated once so that a change reaches both
(session 47: R3-D's fix nearly missed the compactor). Pure functions of their arguments."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet

from peer.log.events import Output
from peer.log.lanes import SEPARATOR, lane_of

Order = tuple[int, str, int]  # (hlc, origin, seq), as peer.log.fold.Order


def output_order(o: Output) -> Order:
    """The order of the TASK_DONE (or implied one) that made output `o`."""
    return (o.hlc, o.origin, o.seq)


def output_flaw(job: str, task: str, o: Output, members: AbstractSet[str], sub_order: Order,
                tasks: AbstractSet[str], lanes: dict[str, bool] | None = None) -> str | None:
    """Why no admitted JOB_ENDED of `job` can carry `o` as `task`'s output (None: one can):
    `task` must be one of the job's `tasks`, `o` ordered after its winning JOB_SUBMITTED's
    (`sub_order`) and made in the lane of `job` of one of its `members`
    (`fold.refusal_of`; the compactor asks it of the outputs a record's facts keep).
    `lanes`: origin -> whether it is such a lane, as found for the outputs asked before
    (the caller's, for one end's outputs: a lane per member, each parsed once)."""
    if task not in tasks:
        return f"outputs.{task} is no task of the job"
    if not sub_order < o[2:]:  # (`output_order`)
        return (f"outputs.{task}'s order is not between the job's JOB_SUBMITTED's and the "
                "JOB_ENDED's")
    ok = None if lanes is None else lanes.get(o.origin)
    if ok is None:
        made_in = lane_of(o.origin)
        ok = made_in is not None and made_in[1] == job and made_in[0] in members
        if lanes is not None:
            lanes[o.origin] = ok
    if not ok:
        return f"outputs.{task}'s origin {o.origin} is no lane of a member of the job"
    return None


def vouched_lane(origin: str, vouched: AbstractSet[str]) -> bool:
    """Is `origin` (an output's, of an admitted end: a lane of its job, `output_flaw`) the
    lane of a peer in `vouched` (the job's vouched members)? Only an output made there
    enters the output cache and a job's merged outputs (R3-D's rest, session 48: a vouched
    member's end may name what a self-added member's lane made)."""
    return origin.partition(SEPARATOR)[0] in vouched


def earlier(o: Output, than: Output | None) -> bool:
    """Does `o` take a task's place from `than` (none yet, or `o` strictly earlier by
    order): the first-wins rule by which each task keeps its earliest output."""
    return than is None or o[2:] < than[2:]  # (`output_order`'s, sliced: the fold's hot path)


def merge_earliest(merged: dict[str, Output], outputs: Mapping[str, Output],
                   keyless: bool = False, vouched: AbstractSet[str] | None = None) -> None:
    """`outputs` (task -> output) into `merged`, each task's earliest by order (`earlier`: a
    tie keeps the one there), the cache key left out if `keyless` (a record's facts keep
    none), and with `vouched` only those made in a vouched member's lane
    (`vouched_lane`): `fold._end_outputs`'s `end_outputs`, `compact._late_body`'s
    merge."""
    lanes: dict[str, bool] = {}  # origin -> `vouched_lane` (a few: a lane per member)
    for t, o in outputs.items():
        if vouched is not None:
            ok = lanes.get(o.origin)
            if ok is None:
                ok = lanes[o.origin] = vouched_lane(o.origin, vouched)
            if not ok:
                continue
        if (cur := merged.get(t)) is None or o[2:] < cur[2:]:  # (`earlier`, inlined)
            merged[t] = Output(None, *o[1:]) if keyless else o


def least(a: Output | None, b: Output | None) -> Output | None:
    """The earlier by order of `a` and `b` (`a` on a tie, or if `b` is None): which output a
    task of the winning end shows of its own and the merged one (`MeshState.end_body`,
    `compact._late_body`)."""
    return a if b is None or (a is not None and output_order(a) <= output_order(b)) else b

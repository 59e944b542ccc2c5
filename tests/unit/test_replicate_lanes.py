"""The replicas of a lanes job's outputs (peer/ipfs/replicate.py; docs/design/
partial-replication.md, 5.2): its TASK_DONEs come in its producer's lane, so the producer is
that lane's peer, and the replicas are its members first (they alone fold those TASK_DONEs);
a non-member the rule names anyway (no other live member) replicates from the JOB_ENDED its
fold takes (`Replicator.ended`; through a node's fold: tests/unit/test_replicate_ends.py)."""

from __future__ import annotations

from collections.abc import Sequence

from peer.errors import BanzaiError
from peer.ipfs.replicate import Replicator, is_replica, mirrored, repair_peers, replica_peers
from peer.log import Event, EventType, JobEnded
from peer.log.lanes import lane
from tests.helpers import ReplicaFakes

P, M, N = "a" * 16, "b" * 16, "c" * 16  # producer, the other member, a non-member
JOB = "j" + "0" * 12
CIDS = [f"bafy{i:02d}" for i in range(24)]


class Fakes(ReplicaFakes):
    """`ReplicaFakes` as `me`, with the live peers and the outputs its fold takes from a
    JOB_ENDED."""

    def __init__(self, me: str, live: Sequence[str]) -> None:
        super().__init__(me=me)
        self.live = {p: {} for p in live if p != me}
        self.folded = True  # the fold took each JOB_ENDED for its job's end

    def end_outputs(self, ev: Event) -> list[tuple[str, str]]:
        return [(o.cid, P) for o in ev.body_as(JobEnded).outputs.values()] if self.folded else []

    def replicator(self) -> Replicator:
        r = Replicator(self.me, 2, lambda: self.live, lambda c: {P}, self, self, self.emit,
                       batch_window_s=60.0, members=lambda j: {P, M} if j == JOB else (),
                       end_outputs=self.end_outputs, settle_s=3600.0)
        r.start()  # (`ended` is told nothing before; its first rescan, an hour later)
        return r


def done(cid: str, seq: int) -> Event:
    return Event(lane(P, JOB), seq, seq, EventType.TASK_DONE,
                 {"job": JOB, "task": f"t{seq}", "output": cid, "key": None})


def ended(cids: Sequence[str]) -> Event:
    return Event(P, 9, 1000, EventType.JOB_ENDED, {
        "job": JOB, "state": "done", "n_tasks": len(cids), "end": 1000, "producers": {},
        "failed": {}, "digest": "0" * 32,
        "outputs": {f"t{i}": [None, c, i + 1, lane(P, JOB), i + 1] for i, c in enumerate(cids)}})


async def test_the_producer_of_a_lanes_output_is_its_lanes_peer() -> None:
    """Two live peers, r = 2: the one that did not make an output holds its copy, whichever
    stream its TASK_DONE came in (before: the lane's origin was ranked as a peer, so the
    producer was named for about half of its own outputs and no copy was made)."""
    for me, want in ((M, CIDS), (P, [])):
        f = Fakes(me, [P, M])
        r = Replicator(me, 2, lambda f=f: f.live, lambda c: {P}, f, f, f.emit,
                       batch_window_s=60.0)
        for i, c in enumerate(CIDS):
            r.on_event(done(c, i + 1))
        assert sorted(r._queue) == want
        await r.close()


async def test_the_other_member_replicates_every_output_of_a_members_lane() -> None:
    """Before: the lane's origin was taken for the producer, so every live peer, the producer
    too, was ranked for each output: the other member held about a third of them, the
    producer "replicated" its own, and the non-member was named for the rest, which it never
    sees (one copy in the mesh)."""
    m = Fakes(M, [P, M, N]).replicator()
    p = Fakes(P, [P, M, N]).replicator()
    for i, c in enumerate(CIDS):
        m.on_event(done(c, i + 1))
        p.on_event(done(c, i + 1))
    assert sorted(m._queue) == CIDS and all(v[0] == P for v in m._queue.values())
    assert p._queue == {}  # its own outputs
    await m.close()
    await p.close()


async def test_a_non_member_replicates_from_the_job_ended_only_while_no_other_member_lives(
        ) -> None:
    with_member = Fakes(N, [P, M, N]).replicator()
    with_member.ended(ended(CIDS))
    assert with_member._queue == {}  # M is the replica
    alone = Fakes(N, [P, N]).replicator()  # M is not live: N is named
    alone.ended(ended(CIDS))
    assert sorted(alone._queue) == CIDS
    member = Fakes(M, [P, N]).replicator()  # a member folded the TASK_DONEs: not again
    member.ended(ended(CIDS))
    assert member._queue == {}
    for r in (with_member, alone, member):
        await r.close()


async def test_a_non_member_replicates_nothing_of_a_job_ended_the_fold_did_not_take() -> None:
    """Review r2 F1: a JOB_ENDED the fold holds back or refuses (from a non-member of the
    job, outputs ordered after its end...) names CIDs nobody made; before, every non-member
    the rule named fetched and pinned them, as many as one event could name."""
    f = Fakes(N, [P, N])  # M is not live: N would be named
    f.folded = False
    r = f.replicator()
    r.ended(ended(CIDS))
    assert r._queue == {}
    await r.close()


def test_members_rank_before_the_other_peers() -> None:
    alive = [P, M, N, "d" * 16]
    for c in CIDS:
        assert replica_peers(c, P, alive, 2, {P, M}) == [M]
        assert replica_peers(c, P, alive, 3, {P, M})[0] == M
        assert is_replica(c, P, M, alive, 2, {P, M})
        assert not is_replica(c, P, N, alive, 2, {P, M})
        assert repair_peers(c, {P}, alive, 2, {P, M}) == [M]
        others = [P, N, "d" * 16]  # M gone: the live non-members, as without lanes
        assert repair_peers(c, {P}, others, 2, {P, M}) == repair_peers(c, {P}, others, 2)


def test_our_lanes_outputs_are_mirrored_into_kubo() -> None:
    """Before: a Kubo-backed peer copied into Kubo only the outputs of its own stream, none
    of a lanes job's (they are in its lane)."""
    assert mirrored(done(CIDS[0], 1), P) == [CIDS[0]]
    assert mirrored(done(CIDS[0], 1), M) == []


async def test_an_output_told_again_while_its_retry_waits_is_not_fetched_twice() -> None:
    """An output whose fetch failed waits for its retry (`backoff_s`); told again meanwhile
    (a CHUNK_DONE's implied TASK_DONE, then the TASK_DONE; a JOB_ENDED the fold takes, then
    its listing: `Replicator.ended`), it is not queued again beside that retry (before, it
    was: fetched at once, and again when the retry came)."""
    f = Fakes(M, [P, M])
    fetches: list[str] = []

    async def fails(cids: Sequence[str], hints: Sequence[str] = ()) -> None:
        fetches.extend(cids)
        raise BanzaiError("no provider answered")

    f.ensure = fails  # type: ignore[method-assign]
    r = Replicator(M, 2, lambda: f.live, lambda c: {P}, f, f, f.emit, batch_window_s=0.0,
                   backoff_s=3600.0)
    r.on_event(done(CIDS[0], 1))
    assert r._drainer is not None
    await r._drainer
    assert fetches == [CIDS[0]] and list(r._retries) == [CIDS[0]]
    r.on_event(done(CIDS[0], 1))
    assert r._queue == {}
    await r.close()


async def test_nothing_is_queued_once_the_replicator_is_closed() -> None:
    """An output told after `close` (the node closes the replicator before its last flushes
    and folds) starts no drain nobody would await or cancel (review r2 L4)."""
    f = Fakes(M, [P, M])
    r = Replicator(M, 2, lambda: f.live, lambda c: {P}, f, f, f.emit, batch_window_s=0.0)
    await r.close()
    r.on_event(done(CIDS[0], 1))
    assert r._drainer is None and r._queue == {}

"""The provider sets the fold keeps in front of the job index: bounded in memory whatever
events changed them, removals (UNPROVIDE) kept in the index, and the janitor's passes over
what only the index holds. Real nodes on temp dirs, no scheduler running (as
test_compaction)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from peer.config import PeerConfig
from peer.errors import ConfigError
from peer.jobs.janitor import JanitorConfig
from peer.jobs.retention import RetentionConfig
from peer.log import Event, EventType
from peer.log.compact import CompactConfig
from peer.log.fold import Tiered
from peer.node import Node
from tests.unit.test_cache_reap import _job as job_of
from tests.unit.test_compaction import ORIGIN, _cid, _open, history

OTHER = "othr0000000000000000"
REPLICA = "repl0000000000000000"


def _compacted(tmp_path: Path, opened: list[Node], jobs: int = 1) -> tuple[Node, list[Event]]:
    """A node (recent history 0) whose `jobs` one-task jobs of ORIGIN are compacted."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    evs = history(jobs=jobs, per_job=1)
    n.merge(evs)
    n.catchup.compact()
    return n, evs


def _hlc() -> int:
    return (int(time.time() * 1000) - 30_000) << 16


def _job(origin: str, job: str, output: str, first_seq: int, hlc: int) -> list[Event]:
    """One finished job of one task by `origin` (its output cached under k-<job>), its seqs
    from `first_seq`."""
    return job_of(origin, job, f"k-{job}", output, first_seq, hlc)


def _live(n: Node) -> int:
    """Provider sets in memory that were changed there (not as read back from the index)."""
    table = n.state.providers
    assert isinstance(table, Tiered)
    return len([k for k in dict.keys(table) if k not in table._read])


def _reopen(n: Node, opened: list[Node], recent_tasks: int = 0) -> Node:
    n.log.close()
    opened.remove(n)
    return _open(n.cfg.data_dir, opened, recent_tasks=recent_tasks)


# -- 1: sets changed by PROVIDE and UNPROVIDE events (of no job) are bounded in memory ---------
def test_provider_sets_of_replicated_cids_leave_memory_past_the_bound(
        tmp_path: Path, opened: list[Node]) -> None:
    """Held past a gap (seq 1 missing), the events stay in memory: their sets are spilled
    past the bound all the same."""
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    n.compactor.cfg = dataclasses.replace(n.compactor.cfg, provider_sets_max=8)
    hlc = _hlc()
    cids = [_cid(f"replica/{i}") for i in range(40)]
    provides = [Event(REPLICA, i + 2, hlc + i, EventType.PROVIDE, {"cids": cids[i:i + 1]})
                for i in range(40)]
    n.merge(provides)
    assert _live(n) == 40
    n.catchup.compact()
    assert _live(n) <= 8
    assert all(n.state.providers.get(c) == {REPLICA} for c in cids)  # read back on demand
    assert all(e.id in n.state.events for e in provides)  # past the gap: held in memory
    gone = Event(REPLICA, 42, hlc + 50, EventType.UNPROVIDE, {"cids": cids[:20]})
    n.merge([gone])
    n.catchup.compact()
    assert _live(n) <= 8
    assert [c for c in cids if n.state.providers.get(c)] == cids[20:]
    again = _reopen(n, opened)
    assert [c for c in cids if again.state.providers.get(c)] == cids[20:]


def test_provider_sets_max_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="provider_sets_max"):
        CompactConfig(provider_sets_max=-1)
    with pytest.raises(ConfigError) as e:
        PeerConfig(compact_provider_sets_max=-1)
    assert e.value.field == "compact_provider_sets_max"


def test_the_peer_settings_reach_the_compactor_and_the_tables(tmp_path: Path,
                                                              opened: list[Node]) -> None:
    """--compact-provider-sets-max and --compact-read-back-entries."""
    n = Node(PeerConfig(data_dir=tmp_path, slots=1, mdns=False, compact_provider_sets_max=8,
                        compact_read_back_entries=3))
    opened.append(n)
    assert n.compactor.cfg.provider_sets_max == 8
    assert n.compactor.cfg.read_back_entries == 3
    for t in (n.state.outputs, n.state.cache, n.state.providers):
        assert isinstance(t, Tiered) and t.read_max == 3


# -- 2: a removal reaches the index's rows ---------------------------------------------------
def test_an_unprovided_origin_does_not_come_back_when_its_cid_is_spilled_again(
        tmp_path: Path, opened: list[Node]) -> None:
    n, evs = _compacted(tmp_path, opened)
    cid = _cid("job000/t0")
    assert n.state.providers.get(cid) == {ORIGIN}  # read back from the index
    n.merge([Event(ORIGIN, len(evs) + 1, evs[-1].hlc + 1, EventType.UNPROVIDE,
                   {"cids": [cid]})])
    assert not n.state.providers.get(cid)
    # Another peer computes the same output; its job is compacted: the CID is spilled again.
    n.merge(_job(OTHER, "again", cid, 1, evs[-1].hlc + 10))
    assert n.state.providers.get(cid) == {OTHER}
    n.catchup.compact()
    assert "again" in n.state.compacted and dict.get(n.state.providers, cid) is None
    assert n.state.providers.get(cid) == {OTHER}
    assert {o for (o,) in n.log.db.execute(
        "SELECT origin FROM provider_index WHERE cid = ?", (cid,))} == {OTHER}
    again = _reopen(n, opened)
    assert again.state.providers.get(cid) == {OTHER}


def test_an_unprovide_of_a_set_read_back_holds_after_a_restart(
        tmp_path: Path, opened: list[Node]) -> None:
    """The changed set spilled (item 1) holds the removal: a restart reads it back as it is
    (before, the UNPROVIDE replayed against the index's set made it right again)."""
    n, evs = _compacted(tmp_path, opened, jobs=2)
    cid, kept = _cid("job000/t0"), _cid("job001/t0")
    n.merge([Event(ORIGIN, len(evs) + 1, evs[-1].hlc + 1, EventType.UNPROVIDE,
                   {"cids": [cid]})])
    n.compactor.cfg = dataclasses.replace(n.compactor.cfg, provider_sets_max=0)
    n.catchup.compact()  # the changed set goes to the index as it is
    assert _live(n) == 0 and not n.state.providers.get(cid)
    again = _reopen(n, opened)
    assert not again.state.providers.get(cid) and again.state.providers.get(kept) == {ORIGIN}


# -- 3: the janitor's passes see what only the index holds -----------------------------------
async def test_retention_unpins_an_output_only_the_job_index_knows(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    out = n.store.add_bytes(b"an output of a deleted job" * 100)
    n.store.pin(out)
    hlc = _hlc()
    n.merge(_job(OTHER, "gone", out, 1, hlc))
    n.catchup.compact()  # its output entry is in the index only
    n.merge([Event(OTHER, 6, hlc + 10, EventType.JOB_DELETED, {"job": "gone", "reason": "test"})])
    assert "gone" not in n.index and dict.get(n.state.outputs, "k-gone") is None
    n.janitor.cfg = JanitorConfig(RetentionConfig(keep_outputs_s=0), gc_interval_s=0,
                                  gc_grace_s=0)
    report = await n.janitor.cycle()
    assert report.unpinned == (out,) and not n.store.has(out)


async def test_unprovide_announces_a_cid_only_the_job_index_lists_us_for(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    made = n.store.add_bytes(b"made here, then lost" * 100)
    hlc = _hlc()
    n.merge(_job(n.peer_id, "mine", made, 1, hlc))
    n.catchup.compact()
    assert dict.get(n.state.providers, made) is None  # the index's only
    n.janitor.cfg = JanitorConfig(gc_interval_s=0, gc_grace_s=0)  # not pinned: collected
    emitted: list[tuple[EventType, dict[str, object]]] = []
    n.janitor.emit = lambda typ, payload: emitted.append((typ, payload))  # type: ignore
    report = await n.janitor.cycle()
    assert report.gc.blocks and not n.store.has(made)
    assert report.unprovided == 1 and emitted == [(EventType.UNPROVIDE, {"cids": [made]})]


# -- a snapshot's provider rows and the sets changed in memory -------------------------------
def _snap(cid: str, origin: str) -> dict[str, object]:
    return {"jobs": [], "cache": [], "providers": [[cid, origin]], "floors": {}}


def test_a_snapshot_taken_keeps_a_provider_only_memory_knew(
        tmp_path: Path, opened: list[Node]) -> None:
    n = _open(tmp_path / "a", opened, recent_tasks=0)
    cid = _cid("replicated")
    n.merge([Event(REPLICA, 1, _hlc(), EventType.PROVIDE, {"cids": [cid]})])
    assert n.state.providers.get(cid) == {REPLICA}
    n.compactor.take(_snap(cid, OTHER), {})
    assert n.state.providers.get(cid) == {REPLICA, OTHER}


def test_a_snapshot_taken_does_not_bring_back_an_unprovided_origin(
        tmp_path: Path, opened: list[Node]) -> None:
    n, evs = _compacted(tmp_path, opened)
    cid = _cid("job000/t0")
    n.merge([Event(ORIGIN, len(evs) + 1, evs[-1].hlc + 1, EventType.UNPROVIDE,
                   {"cids": [cid]})])
    assert not n.state.providers.get(cid)
    n.compactor.take(_snap(cid, ORIGIN), {})  # a signer's index of before the UNPROVIDE
    assert not n.state.providers.get(cid)
    n.compactor.take(_snap(cid, OTHER), {})  # another origin's row is taken in
    assert n.state.providers.get(cid) == {OTHER}

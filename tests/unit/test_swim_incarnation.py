"""SWIM incarnations across restarts: the high-water mark in the data dir (peer/mesh/incmark.py)
written ahead in steps, a restart that starts above it (a member refuted many times is alive
again at once in the others' view), and a damaged or absurd mark read as hostile input."""

from __future__ import annotations

import logging
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from peer.config import PeerConfig
from peer.log.clock import FakeClock
from peer.mesh.gossip import Gossip, GossipConfig
from peer.mesh.incmark import NAME, IncarnationMark, parse_mark
from peer.mesh.sim import Cluster, MemorySink, RecordingMembers, SimPeer
from peer.mesh.swim import (
    MAX_INC,
    MAX_START_INC,
    UNSIGNED_REFUTE_MAX,
    NoSigner,
    Sig,
    State,
    Swim,
    SwimConfig,
)
from peer.mesh.transport import MemoryNetwork
from peer.node import Node

from .test_swim import Listener, Net, alive, settle, states

CFG = SwimConfig.local()


def swim_on(mark: IncarnationMark | None, inc: int = 5, *, signed: bool = True) -> Swim:
    s = Swim(CFG, "me", inc, Net(), Listener(), random.Random(1),
             NoSigner() if signed else None, store=mark)
    s.bind("127.0.0.1:1", 0.0)
    s.apply_updates([alive("m0", 10)], 0.0)
    return s


class Writes:
    """Counts the mark's writes (each an fsync)."""

    def __init__(self, mark: IncarnationMark) -> None:
        self.marks: list[int] = []
        real = mark._write

        def write(value: int) -> None:
            self.marks.append(value)
            real(value)

        mark._write = write  # type: ignore[method-assign]


# -- the mark file -----------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "value"), [
    (b"0", 0), (b"42\n", 42), (b"0017\n", 17), (str(2**63).encode(), 2**63),
    (b"", None), (b"\n", None), (b"-5\n", None), (b"4 2\n", None), (b"42\n\n", None),
    (b"0x10", None), (b"\xd9\xa3", None), (b"1" * 65, None), (b"+1", None),
])
def test_a_mark_is_ascii_decimal_digits_and_one_newline(raw: bytes, value: int | None) -> None:
    if value is None:
        with pytest.raises(ValueError):
            parse_mark(raw)
    else:
        assert parse_mark(raw) == value


def test_a_data_dir_without_a_mark_starts_as_before_and_the_first_alive_writes_one(
        tmp_path: Path) -> None:
    mark = IncarnationMark(tmp_path / NAME, step=16)
    assert mark.floor() == 0
    s = swim_on(mark, inc=5)
    assert s.inc == 5  # the start counter's incarnation, as without a mark
    assert (tmp_path / NAME).read_bytes() == b"21\n"  # 5 announced: 5 + 16 reserved


def test_the_mark_is_written_ahead_once_per_step_and_a_restart_starts_at_it(
        tmp_path: Path) -> None:
    mark = IncarnationMark(tmp_path / NAME, step=16)
    writes = Writes(mark)
    s = swim_on(mark, inc=5)
    for _ in range(40):  # signed suspicions at ours + 1: each refutation adds 2
        s.apply_updates([{"t": "s", "i": "me", "n": s.inc + 1, "f": "m0"}], 0.0)
    assert s.inc == 85 and s.stats.refutations == 40
    assert writes.marks == [21, 37, 53, 69, 85, 101]  # 6 writes for 80 incarnations
    assert parse_mark((tmp_path / NAME).read_bytes()) == 101 > s.inc
    again = swim_on(IncarnationMark(tmp_path / NAME, step=16), inc=6)  # the next start
    assert again.inc == 101  # above every incarnation the last run announced
    assert not list(tmp_path.glob(".*"))  # no temp file left


def test_a_start_counter_above_the_mark_wins(tmp_path: Path) -> None:
    (tmp_path / NAME).write_text("100\n")
    assert swim_on(IncarnationMark(tmp_path / NAME), inc=3 << 16).inc == 3 << 16


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize(("content", "floor"), [
    (b"garbage\n", 0), (b"", 0), (b"-7\n", 0), (b"\x00" * 40, 0), (b"9" * 200, 0),
    (b"9" * 30, MAX_START_INC), (str(MAX_INC).encode(), MAX_START_INC),
    (str(UNSIGNED_REFUTE_MAX).encode(), MAX_START_INC),
])
def test_a_damaged_or_absurd_mark_neither_stops_the_start_nor_makes_it_unrefutable(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, floor: int,
        signed: bool) -> None:
    path = tmp_path / NAME
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, "banzai.swim"):
        mark = IncarnationMark(path, step=16)
    assert mark.floor() == floor
    assert [r for r in caplog.records if str(path) in r.getMessage()]  # named, with why
    s = swim_on(mark, inc=5, signed=signed)
    assert s.inc == max(5, floor) <= MAX_START_INC
    for _ in range(3):  # still refutes whatever is held of it (signed: at most ours + 1)
        before = s.inc
        s.apply_updates([{"t": "s", "i": "me", "n": s.inc + 1, "f": "m0"}], 0.0)
        assert s.inc == before + 2
    assert parse_mark(path.read_bytes()) > s.inc  # rewritten whole


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo"])
def test_a_mark_that_is_no_regular_file_is_ignored_without_blocking(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str) -> None:
    path = tmp_path / NAME
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        (tmp_path / "elsewhere").write_text("999999\n")
        path.symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(path)  # an open without O_NONBLOCK would wait for a writer
    with caplog.at_level(logging.WARNING, "banzai.swim"):
        mark = IncarnationMark(path)
    assert mark.floor() == 0
    assert [r for r in caplog.records if str(path) in r.getMessage()]


def test_a_failed_write_is_logged_and_the_refutation_still_goes_out(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    mark = IncarnationMark(tmp_path / "gone" / NAME, step=16)  # its directory is missing
    with caplog.at_level(logging.WARNING, "banzai.swim"):
        s = swim_on(mark, inc=5)
        s.apply_updates([{"t": "s", "i": "me", "n": 6, "f": "m0"}], 0.0)
    assert s.inc == 7 and s.alive_update is not None and s.alive_update["n"] == 7
    assert mark.write_failures == 1  # tried once for the step, not once per announce
    assert "cannot write the incarnation mark" in caplog.text


# -- a node's data dir -------------------------------------------------------------------


def test_a_node_reads_the_mark_of_its_data_dir_as_hostile_input(
        tmp_path: Path, opened: list[Node], caplog: pytest.LogCaptureFixture) -> None:
    d = tmp_path / "data"
    n = Node(PeerConfig(data_dir=d, slots=1, mdns=False))  # a data dir with no mark: as before
    opened.append(n)
    assert n.incarnations.floor() == 0 and not (d / NAME).exists()
    n.log.close()
    opened.clear()
    (d / NAME).write_bytes(b"\xff damaged by a crash")
    with caplog.at_level(logging.WARNING, "banzai.swim"):
        n = Node(PeerConfig(data_dir=d, slots=1, mdns=False))
    opened.append(n)
    assert n.incarnations.floor() == 0 and str(d / NAME) in caplog.text


# -- on the in-memory network: a restart after many refutations ----------------------------


def _signed_suspicion(by: SimPeer, of: str, inc: int) -> dict[str, Any]:
    s = by.gossip.swim
    assert s is not None
    return {"t": "s", "i": of, "n": inc, "f": by.gossip.peer_id,
            **s._signer.sign(Sig.SUSPECT, by.gossip.peer_id, "", inc, 0, of.encode())}


def test_a_member_refuted_past_its_next_start_is_alive_again_at_once_after_a_restart(
        tmp_path: Path) -> None:
    """An insider's signed self-suspicions push a member's incarnation past its next start's
    (2^15 refutations in one run: each start's incarnation is its start counter << 16). It is
    killed, and restarted on the same data dir before the others forget it (forget_s): they
    hold it dead at that incarnation and refuse its alive below it, and it may not refute
    beyond its own + 1. With the mark, the restart starts above, and its first alive revives
    it everywhere. (32,768 signed suspicions take seconds: the incarnation is set just below
    the next start's, then 20 real ones, signed by another member, carry it past.)"""
    cfg = GossipConfig.local(swim=SwimConfig.local(forget_s=600.0))
    c = Cluster(2, cfg, signed=True, seed=21, connect=False)
    a = c.add("a", incarnations=IncarnationMark(tmp_path / NAME, step=16))
    for p in c.peers:
        for q in c.peers:
            p.gossip.add_peer(q.addr)
    settle(c, 0.5)
    aid, mallory = a.gossip.peer_id, c.peers[0]
    sa = a.gossip.swim
    assert sa is not None and a.gossip.auth is not None
    next_start = (a.gossip.auth.incarnation + 1) << 16
    sa.inc = next_start - 20
    for _ in range(20):
        sa.apply_updates([_signed_suspicion(mallory, aid, sa.inc + 1)], c.clock())
    held = sa.inc
    assert held == next_start + 20 and sa.stats.refutations == 20
    settle(c, 0.5)
    others = [p for p in c.peers if p is not a]
    for p in others:
        assert p.gossip.swim is not None and p.gossip.swim.members[aid].inc == held
    # killed: the others suspect it, then hold it dead (at `held`)
    c.net._nodes[a.addr].close_now()
    settle(c, 5.0, skip=a)
    assert all(states(p)[aid] == "dead" for p in others)
    b = c.restart(a, IncarnationMark(tmp_path / NAME, step=16))
    sb = b.gossip.swim
    assert sb is not None and sb.inc > held
    settle(c, 0.5)
    for p in others:
        assert p.gossip.swim is not None
        m = p.gossip.swim.members[aid]
        assert (m.state, m.inc) == (State.ALIVE, sb.inc)
        assert p.gossip.status(aid) == "alive" and aid in p.gossip.live_peers()


def test_an_unsigned_restart_still_outbids_what_is_held_of_it(tmp_path: Path) -> None:
    """Unsigned meshes (tests, simulations): the start comes from the wall clock, far above any
    mark a run writes, and a claim above ours is outbid as before."""
    clock = FakeClock()
    mark = IncarnationMark(tmp_path / NAME)
    s = Swim(CFG, "me", 1 << 56, Net(), Listener(), random.Random(1), None, store=mark)
    s.bind("127.0.0.1:1", clock())
    assert s.inc == 1 << 56
    s.apply_updates([{"t": "s", "i": "me", "n": (1 << 57) + 3, "f": "m0"}], clock())
    assert s.inc == (1 << 57) + 4 and parse_mark((tmp_path / NAME).read_bytes()) > s.inc


# -- the start's write: off the event loop ----------------------------------------------------


class ThreadedMark(IncarnationMark):
    """Records the thread each write of the mark ran on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: list[int] = []

    def _write(self, mark: int) -> None:
        self.threads.append(threading.get_ident())
        super()._write(mark)


async def test_the_marks_write_at_start_does_not_run_on_the_event_loop(tmp_path: Path) -> None:
    """Gossip.start's first alive reserved its incarnation with a write and an fsync on the
    loop (every other coroutine waited for the disk)."""
    mark = ThreadedMark(tmp_path / NAME)
    net = MemoryNetwork(mode="loop", seed=1)
    sink = MemorySink("q0")
    g = Gossip(GossipConfig.local(), net.transport(), sink, RecordingMembers(), sink.peer_id,
               incarnations=mark)
    await g.start()
    try:
        assert g.swim is not None and g.swim.alive_update is not None
        assert len(mark.threads) == 1 and mark.threads[0] != threading.get_ident()
        assert parse_mark((tmp_path / NAME).read_bytes()) > g.swim.inc  # written first
    finally:
        await g.close()

"""The pure parts of compaction: the rule that lets a finished job's events go, and the
check of a signed snapshot (peer.log.compact). Times are HLC values made from a fake clock."""

from __future__ import annotations

import pytest

from peer.log import Event, EventType
from peer.log.compact import CompactConfig, Snapshot, check_snapshot, covered, droppable, marks
from peer.log.signing import Counters, Identity, MemberKeys, admit_tag, peer_id_for

DAY_MS = 86_400_000
CFG = CompactConfig(horizon_s=86_400)


def _hlc(ms: int) -> int:
    return ms << 16


def _ev(origin: str, seq: int) -> Event:
    return Event(origin, seq, _hlc(seq), EventType.PROVIDE, {"cids": [f"{origin}{seq}"]})


JOB = marks([_ev("a", 3), _ev("a", 7), _ev("b", 2)])


def test_marks_are_the_highest_seq_per_origin() -> None:
    assert JOB == {"a": 7, "b": 2}
    assert covered(JOB, {"a": 7, "b": 5}) and not covered(JOB, {"a": 6, "b": 5})


@pytest.mark.parametrize(("vvs", "age_ms", "want"), [
    ([{"a": 7, "b": 2}, {"a": 9, "b": 3}], 1000, True),  # every live member holds them
    ([{"a": 7, "b": 2}, {"a": 6, "b": 3}], 1000, False),  # one lacks a7
    ([{"a": 7, "b": 2}, {"a": 6, "b": 3}], DAY_MS, True),  # past the horizon
    ([{"a": 7, "b": 2}, {"a": 6, "b": 3}], DAY_MS - 1, False),
    ([], 1000, False),  # nobody vouches for them
    ([], DAY_MS + 5, True),
])
def test_a_finished_job_goes_once_every_live_member_holds_it_or_past_the_horizon(
        vvs: list[dict[str, int]], age_ms: int, want: bool) -> None:
    ended = _hlc(10 * DAY_MS)
    assert droppable(JOB, ended, vvs, _hlc(10 * DAY_MS + age_ms), CFG) is want


def test_the_horizon_must_be_positive() -> None:
    with pytest.raises(ValueError, match="horizon_s"):
        CompactConfig(horizon_s=0)


SECRET = b"s" * 32
ME = Identity.generate()
ME_ID = peer_id_for(ME.key)
RECORDS = {"jobs": {"j1": {"state": "done", "outputs": {"t": "bafy"}}}}


def _snap(who: Identity = ME, pid: str = ME_ID, secret: bytes = SECRET) -> Snapshot:
    return Snapshot.make(who, pid, admit_tag(secret, pid, who.key), {"a": 7, "b": 2}, RECORDS)


def test_a_good_snapshot_is_taken_and_checked_against_a_second_digest() -> None:
    s = _snap()
    ring = MemberKeys([SECRET])
    assert check_snapshot(s, ring, {ME_ID}) is None
    assert check_snapshot(s, ring, {ME_ID}, second_digest=s.content_digest()) is None


def _tampered() -> Snapshot:
    s = _snap()
    return Snapshot(s.signer, s.key, s.admit, s.heads, {"jobs": {}}, s.sig)


def _other_key() -> Snapshot:
    other = Identity.generate()  # signs, claiming to be ME_ID
    s = _snap()
    forged = Snapshot(ME_ID, other.key, s.admit, s.heads, s.records)
    return Snapshot(ME_ID, other.key, s.admit, s.heads, s.records,
                    other.sign(forged.signed_digest()))


@pytest.mark.parametrize(("snap", "members", "second", "why"), [
    (_tampered, {ME_ID}, None, "bad_signature"),
    (_snap, {"someone-else"}, None, "not_member"),
    (lambda: _snap(secret=b"x" * 32), {ME_ID}, None, "not_admitted"),
    (_other_key, {ME_ID}, None, "key_conflict"),
    (_snap, {ME_ID}, b"\0" * 32, "digest_mismatch"),
])
def test_a_bad_snapshot_is_refused_and_counted(snap: object, members: set[str],
                                               second: bytes | None, why: str) -> None:
    s = snap()  # type: ignore[operator]
    refused = Counters()
    assert check_snapshot(s, MemberKeys([SECRET]), members, second, refused) == why
    assert refused.by_origin == {s.signer: {f"snapshot_{why}": 1}}


def test_a_revoked_members_snapshot_is_refused() -> None:
    ring = MemberKeys([SECRET], revoked=lambda p: 3 if p == ME_ID else None)
    assert check_snapshot(_snap(), ring, {ME_ID}) == "revoked"

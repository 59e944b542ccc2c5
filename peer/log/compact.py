"""Compaction of finished jobs (issue 11 item 3), the pure parts: when a finished job's events
may leave the log (every live member holds them, or the job ended past the horizon), and
signed snapshots of the compacted state, checked by the receiver. Pure; callers own the loop.

Not yet wired into the node: see docs/architecture.md "Compaction" for what is built."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peer.log.clock import hlc_ms
from peer.log.events import Event
from peer.log.signing import Counters, Identity, Keyring, _str_bytes, verify

SNAPSHOT_DOMAIN = b"banzai-snapshot-v1\n"


@dataclass(frozen=True)
class CompactConfig:
    """When the events of a finished job may be dropped; ValueError on a bad value."""

    horizon_s: float = 7 * 86_400.0  # past this since the job ended, dropped even if a
    # live member still lacks them (it then needs a snapshot)

    def __post_init__(self) -> None:
        if not self.horizon_s > 0:
            raise ValueError("horizon_s must be > 0")


def marks(events: Iterable[Event]) -> dict[str, int]:
    """Origin -> the highest seq among `events` (what a holder's version vector must cover)."""
    out: dict[str, int] = {}
    for e in events:
        if e.seq > out.get(e.origin, 0):
            out[e.origin] = e.seq
    return out


def covered(m: Mapping[str, int], vv: Mapping[str, int]) -> bool:
    """Every event summarised by `m` is within the version vector `vv`."""
    return all(vv.get(o, 0) >= q for o, q in m.items())


def droppable(m: Mapping[str, int], ended_hlc: int, live_vvs: Sequence[Mapping[str, int]],
              now_hlc: int, cfg: CompactConfig) -> bool:
    """May a finished job (its events summarised by `m`, ended at `ended_hlc`) leave the
    log? Yes past the horizon; before it, only once every live member's version vector
    (from its heartbeats; ours among them) covers its events, and at least one does."""
    if hlc_ms(now_hlc) - hlc_ms(ended_hlc) >= cfg.horizon_s * 1000:
        return True
    return bool(live_vvs) and all(covered(m, vv) for vv in live_vvs)


# -- snapshots ---------------------------------------------------------------------------


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


@dataclass(frozen=True)
class Snapshot:
    """The compacted state (`records`: JSON, e.g. finished jobs' compact records) as of the
    version vector `heads`, signed by the member `signer` (key `key`, admission tag `admit`).
    A receiver takes it instead of the events it covers, then the events after `heads`."""

    signer: str
    key: bytes
    admit: bytes | None
    heads: Mapping[str, int]
    records: Mapping[str, Any]
    sig: bytes = b""

    def content_digest(self) -> bytes:
        """sha256 of (heads, records): what a second member's digest is compared with."""
        return hashlib.sha256(_canon([dict(self.heads), self.records])).digest()

    def signed_digest(self) -> bytes:
        return hashlib.sha256(SNAPSHOT_DOMAIN + _str_bytes(self.signer) + self.key
                              + self.content_digest()).digest()

    @staticmethod
    def make(me: Identity, signer: str, admit: bytes | None, heads: Mapping[str, int],
             records: Mapping[str, Any]) -> Snapshot:
        s = Snapshot(signer, me.key, admit, dict(heads), records)
        return Snapshot(signer, me.key, admit, s.heads, records, me.sign(s.signed_digest()))


def check_snapshot(s: Snapshot, keyring: Keyring, members: Iterable[str],
                   second_digest: bytes | None = None,
                   refused: Counters | None = None) -> str | None:
    """None if `s` may stand for the events it covers, else why not (counted in `refused`
    by signer): the signer must be a member (MEMBER event held), admitted and bound to its key
    (`Keyring.bind`), not revoked; the signature must hold; and when a second member's
    digest of the same heads is at hand, it must equal the snapshot's."""
    why = _why(s, keyring, set(members), second_digest)
    if why is not None and refused is not None:
        refused.add(s.signer, f"snapshot_{why}")
    return why


def _why(s: Snapshot, keyring: Keyring, members: set[str],
         second_digest: bytes | None) -> str | None:
    if s.signer not in members:
        return "not_member"
    if keyring.is_revoked(s.signer):
        return "revoked"
    why = keyring.bind(s.signer, s.key, s.admit)
    if why is not None:
        return why
    if not verify(s.key, s.sig, s.signed_digest()):
        return "bad_signature"
    if second_digest is not None and second_digest != s.content_digest():
        return "digest_mismatch"
    return None


__all__ = ["CompactConfig", "Snapshot", "check_snapshot", "covered", "droppable", "marks"]

"""Who is alive, as the gossip facade reports it: SWIM members (swim.py) plus peers of the
previous release, judged by their heartbeats (membership.py); each member's last report
(load and runs) handed to the member sink; the signer of SWIM updates. Loop-owned; every
method is non-blocking.

Mixed versions. A peer of the previous release sends HEARTBEATs and does not know the SWIM
frame kinds (it drops them). A peer that hears a HEARTBEAT from a member marks it legacy:
that member is judged as before (quiet time on our clock), gets our HEARTBEATs (with our
version vector, which it reads for acknowledgements, and our runs, which renew our leases)
and gets no SWIM frames. The mark goes when a SWIM frame comes from it (it was upgraded).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from peer.log.events import LANES_FEATURE
from peer.log.signing import MeshAuth, membership_message, peer_id_for, self_certifying, verify
from peer.mesh.antientropy import FIXNONCE_FEATURE, PeerAt
from peer.mesh.membership import Liveness, Membership
from peer.mesh.swim import BAD_SIGNATURE, Member, Sig, State, Swim
from peer.mesh.wire import check_info

MAX_HEADS = 4096  # peers whose version vectors we keep (acknowledgements)
NOT_REPORTED = ("heads", "wall_ms")  # a report leaves these out: they change all the time


class MemberSink(Protocol):
    """Where gossip reports members. Must not block."""

    def heard(self, peer_id: str, info: Mapping[str, Any]) -> None:
        """`peer_id` is alive and reports `info` (its load and runs, plus "gossip")."""
        ...


def tell_forgot(members: MemberSink, peer_id: str) -> None:
    """Tell the member sink that nothing is held of `peer_id` any more (SWIM forgot it, or
    a peer of the previous release long dead): what it keeps of it may go. Optional, as the
    sink's `left`: `forgot(peer_id)`."""
    forgot = getattr(members, "forgot", None)
    if forgot is not None:
        forgot(peer_id)


class AuthSigner:
    """SWIM updates signed with this peer's identity and checked against bound keys (the
    membership signature of docs/security.md, one domain byte per update kind)."""

    def __init__(self, auth: MeshAuth, mesh_id: str) -> None:
        self._auth = auth
        self._mesh = mesh_id

    def sign(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int,
             body: bytes) -> dict[str, Any]:
        a = self._auth
        msg = membership_message(domain, self._mesh, signer, addr, inc, ctr, body)
        proof: dict[str, Any] = {"g": a.identity.sign(msg).hex()}
        if domain == Sig.ALIVE:  # binds our key where it is not bound yet
            proof["k"] = a.identity.key.hex()
            if a.admit is not None:
                proof["x"] = a.admit.hex()
        return proof

    def check(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int, body: bytes,
              proof: Mapping[str, Any]) -> str | None:
        ring = self._auth.keyring
        if ring.is_revoked(signer):
            return "revoked"
        k = proof.get("k")
        if k is not None:
            x = proof.get("x")
            why = ring.bind(signer, bytes.fromhex(k), None if x is None else bytes.fromhex(x))
            if why is not None:
                return why
        key = ring.keys.get(signer)
        if key is None:
            return "unknown_key"
        return None if self._verifies(key, domain, signer, addr, inc, ctr, body, proof) \
            else BAD_SIGNATURE

    def revoked(self, member: str) -> bool:
        return self._auth.keyring.is_revoked(member)

    def signed_by(self, domain: Sig, signer: str, addr: str, inc: int, ctr: int,
                  body: bytes, proof: Mapping[str, Any]) -> bool:
        key = self._auth.keyring.keys.get(signer)
        k = proof.get("k")
        if key is None and isinstance(k, str) and self_certifying(signer):
            key = bytes.fromhex(k)  # (its id certifies its key)
            if peer_id_for(key) != signer:
                return False
        if key is None:
            return False
        return self._verifies(key, domain, signer, addr, inc, ctr, body, proof)

    def _verifies(self, key: bytes, domain: Sig, signer: str, addr: str, inc: int, ctr: int,
                  body: bytes, proof: Mapping[str, Any]) -> bool:
        msg = membership_message(domain, self._mesh, signer, addr, inc, ctr, body)
        return verify(key, bytes.fromhex(proof["g"]), msg)


class MeshView:
    """The union of SWIM members and legacy peers, with their reports and version vectors.
    Implements swim.Listener."""

    def __init__(self, members: MemberSink, legacy: Membership,
                 peer_key: Callable[[str, str], None] = lambda _a, _k: None,
                 disconnect: Callable[[str], None] = lambda _a: None) -> None:
        self.swim: Swim | None = None  # set by the facade (None: heartbeats only)
        self._peer_key = peer_key  # (address, the key id it serves): the transport's hint
        self._disconnect = disconnect  # (address): the transport's path and hint there go
        self._members = members
        self._legacy = legacy
        self.legacy_ids: set[str] = set()  # members heard by HEARTBEAT, not (yet) by SWIM
        self._infos: dict[str, dict[str, Any]] = {}  # member -> its last report, parsed
        self._heads: dict[str, dict[str, int]] = {}  # member -> its version vector
        # The live SWIM members whose last report announces LANES_FEATURE, kept at each
        # change of state or report (a lane event's push reads it, not every report)
        self.lane_peers: dict[str, Member] = {}

    # -- swim.Listener -----------------------------------------------------------------
    def member_changed(self, member: Member, before: State | None) -> None:
        self._note_lanes(member)
        if member.state == State.LEFT:
            gone = getattr(self._members, "left", None)
            if gone is not None:
                gone(member.id)
        if member.state in (State.DEAD, State.LEFT):
            self._heads.pop(member.id, None)
        elif member.state == State.ALIVE and before != State.ALIVE and member.id in self._heads:
            noted = getattr(self._members, "heads_noted", None)  # its vector counts again
            if noted is not None:  # (Node.acks counts live peers only)
                noted(member.id)

    def member_forgotten(self, member: Member) -> None:
        """SWIM forgot `member` (dead or left for `forget_s`): its report, vector and lanes
        mark go, and the member sink is told unless a peer of the previous release holds
        the id (review r2 of session 48, M2: every id ever heard was kept for good); the
        transport's connection to its address and key-id hint go unless a live member holds
        that address (review rr of session 48, S3: they stayed until their bounds evicted
        them)."""
        self._infos.pop(member.id, None)
        self._heads.pop(member.id, None)
        self.lane_peers.pop(member.id, None)
        if member.addr and not self.addr_held_by_other(member.id, member.addr):
            self._disconnect(member.addr)
        if member.id not in self.legacy_ids and self._legacy.judged(member.id) is None:
            tell_forgot(self._members, member.id)

    def member_report(self, member: Member) -> None:
        assert member.report is not None
        try:
            info = json.loads(member.report["d"])
            if isinstance(info, dict):
                check_info(info)
        except (ValueError, RecursionError):  # (nested too deep; signed by the member:
            self._infos.pop(member.id, None)  # kept out as a malformed frame is, and its
            self._note_lanes(member)  # last report renews no lease any more)
            return
        if isinstance(info, dict):
            kid = info.get("kid")
            if isinstance(kid, str) and member.addr:
                self._peer_key(member.addr, kid)
            self._infos[member.id] = info
            self._note_lanes(member)
            self._members.heard(member.id, {**info, "gossip": member.addr})

    def _note_lanes(self, member: Member) -> None:
        """`lane_peers` after a change of `member`'s state or report."""
        feats = self._infos.get(member.id, {}).get("features")
        if (member.state in (State.ALIVE, State.SUSPECT) and isinstance(feats, list)
                and LANES_FEATURE in feats):
            self.lane_peers[member.id] = member
        else:
            self.lane_peers.pop(member.id, None)

    def member_wall(self, member: Member, wall_ms: int) -> None:
        seen = getattr(self._members, "wall_seen", None)  # optional: clock skews
        if seen is not None:
            seen(member.id, wall_ms)

    # -- legacy peers ------------------------------------------------------------------
    def addr_held_by_other(self, peer_id: str, addr: str) -> bool:
        """Whether a live member (alive or suspect, SWIM or legacy) other than `peer_id`
        holds `addr`: a HEARTBEAT naming it is dropped, as SWIM refuses such an alive
        (`Swim._held_by_other`), until its holder is dead, left or revoked."""
        m = None if self.swim is None else self.swim.member_at(addr)
        if m is not None and m.id != peer_id and m.state in (State.ALIVE, State.SUSPECT):
            return True
        p = self._legacy.peer_at(addr)
        return p is not None and p.peer_id != peer_id

    def heard_legacy(self, peer_id: str, addr: str, info: dict[str, Any], now: float) -> None:
        """A HEARTBEAT (checked, its address not `addr_held_by_other`): a peer of the previous
        release, or one in legacy mode."""
        if self.swim is not None:
            self.legacy_ids.add(peer_id)
            self.swim.forget_addr(addr)
        self._legacy.heard(peer_id, addr, info, now)
        heads = info.get("heads")
        if isinstance(heads, dict):
            self.note_heads(peer_id, heads)

    def legacy_forgotten(self, peer_id: str) -> None:
        """`Membership` forgot `peer_id` (long dead by its heartbeats): its legacy mark and
        vector go, and the member sink is told unless SWIM holds the id."""
        self.legacy_ids.discard(peer_id)
        if self.swim is None or peer_id not in self.swim.members:
            self._heads.pop(peer_id, None)
            tell_forgot(self._members, peer_id)

    def heard_swim(self, peer_id: str) -> None:
        """A SWIM frame from `peer_id`: it is no legacy peer (any more)."""
        self.legacy_ids.discard(peer_id)

    def legacy_addrs(self) -> list[str]:
        """Where our HEARTBEATs go (with SWIM: only to legacy peers)."""
        if self.swim is None:
            return self._legacy.heartbeat_targets()
        live = self._legacy.live_peers()
        return sorted(str(live[p]["gossip"]) for p in self.legacy_ids if p in live)

    # -- version vectors (acknowledgements) ------------------------------------------------
    def note_heads(self, peer_id: str, heads: Mapping[str, Any]) -> None:
        """Keep `peer_id`'s version vector if it is a live member (alive or suspect, SWIM or
        legacy): a digest's sender id is not authenticated, and vectors under made-up ids
        would pile up (only live members' are read; a dead or departed one's is freed)."""
        if not self._live_member(peer_id):
            return
        if peer_id in self._heads or len(self._heads) < MAX_HEADS:
            self._heads[peer_id] = {str(k): v for k, v in heads.items() if type(v) is int}
            noted = getattr(self._members, "heads_noted", None)  # optional: a waiter for acks
            if noted is not None:
                noted(peer_id)

    def _live_member(self, peer_id: str) -> bool:
        """Alive or suspect, SWIM or legacy, as last judged: one lookup per frame (`status`
        re-judges every legacy peer)."""
        m = None if self.swim is None else self.swim.members.get(peer_id)
        if m is None or peer_id in self.legacy_ids:
            return self._legacy.judged(peer_id) in (Liveness.ALIVE, Liveness.SUSPECT)
        return m.state in (State.ALIVE, State.SUSPECT)

    def heads_of(self, peer_id: str) -> Mapping[str, int]:
        """The last version vector `peer_id` sent us (a digest or a heartbeat), or {}."""
        return self._heads.get(peer_id, {})

    def member_at(self, addr: str) -> PeerAt | None:
        """The live member (alive or suspect) at `addr`: a SWIM member at the address of its
        alive (signed, with auth), else a legacy peer at that of its last heartbeat (signed,
        with auth); with whether its report announces FIXNONCE_FEATURE (None, needing proof,
        for an address another identity's alive contested: `Swim.contested`)."""
        m = None if self.swim is None else self.swim.member_at(addr)
        if m is not None and m.id not in self.legacy_ids:
            if m.state not in (State.ALIVE, State.SUSPECT):
                return None
            nonces = _announces(self._infos.get(m.id))
            if nonces is False and self.swim is not None and self.swim.contested(addr):
                nonces = None  # another identity claimed it too: it must prove routability
            return PeerAt(m.id, nonces)
        p = self._legacy.peer_at(addr)
        return None if p is None else PeerAt(p.peer_id, _announces(p.info))

    # -- queries -----------------------------------------------------------------------
    def live_peers(self) -> dict[str, dict[str, Any]]:
        """peer_id -> its last report plus "gossip" address and "status" (alive/suspect)."""
        out = {p: i for p, i in self._legacy.live_peers().items()
               if self.swim is None or p in self.legacy_ids or p not in self.swim.members}
        if self.swim is not None:
            for m in self.swim.live():
                out[m.id] = {**self._infos.get(m.id, {}), "gossip": m.addr,
                             "status": m.state.value}
        return out

    def left_ids(self) -> frozenset[str]:
        """Members that announced their departure (SWIM LEFT), as opposed to failed ones."""
        if self.swim is None:
            return frozenset()
        return frozenset(m.id for m in self.swim.members.values() if m.state == State.LEFT)

    def status(self, peer_id: str) -> Liveness | None:
        """alive, suspect, dead (left counts as dead), or None if never heard."""
        m = None if self.swim is None else self.swim.members.get(peer_id)
        if m is None or peer_id in self.legacy_ids:
            return self._legacy.status(peer_id)
        return {State.ALIVE: Liveness.ALIVE, State.SUSPECT: Liveness.SUSPECT}.get(
            m.state, Liveness.DEAD)

    def live_addrs(self) -> frozenset[str]:
        """Addresses of the members alive or suspect, SWIM or legacy."""
        if self.swim is None:
            return self._legacy.live_addrs()
        return self._legacy.live_addrs() | {m.addr for m in self.swim.live() if m.addr}

    def renew(self) -> None:
        """Hand every live SWIM member's last report to the member sink again: the sink
        renews the leases of the runs it reports (a dead or departed member's are not)."""
        if self.swim is None:
            return
        for m in self.swim.live():
            info = self._infos.get(m.id)
            if info is not None:
                self._members.heard(m.id, {**info, "gossip": m.addr})


def _announces(info: Mapping[str, Any] | None) -> bool | None:
    """Whether a member's info announces FIXNONCE_FEATURE (None: it announces no features)."""
    feats = None if info is None else info.get("features")
    return FIXNONCE_FEATURE in feats if isinstance(feats, list) else None


def report_bytes(info: Mapping[str, Any]) -> bytes:
    """Our report: the heartbeat info without what changes all the time."""
    return json.dumps({k: v for k, v in info.items() if k not in NOT_REPORTED},
                      separators=(",", ":"), sort_keys=True).encode()


__all__ = ["NOT_REPORTED", "AuthSigner", "MemberSink", "MeshView", "report_bytes", "tell_forgot"]

"""Identities and signatures: a peer's Ed25519 identity, event content hashes, signed batches,
admission tags, signed membership messages and the keyring that checks them. Pure but for
the key files (`read_key`, `write_key`); a MemberKeys is owned by the event loop. The event
path: docs/architecture.md."""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from peer.errors import BanzaiError, DataError, SignedTextTooLong
from peer.log.events import MAX_CLOCK, MAX_ID_CHARS, ONE_TEXT_TYPES, SET_TEXT, Event
from peer.log.ids import OLD_ID_CHARS, SELF_ID_CHARS, hex_digits, is_peer_id
from peer.log.lanes import lane_of
from peer.privfile import create_private, read_private

HASH_BYTES = 32
KEY_BYTES = 32
SIG_BYTES = 64
MAX_BATCH = 256  # events per signed batch (a flush of more is signed as several)
# A batch is one signature over (signer, origin, first seq, the content hashes of its events in
# seq order): checked once, then each event costs one hash and a comparison, so a relayer can
# forward any subset of a batch with its attestation and every receiver can verify it.
EVENT_DOMAIN = b"banzai-event-v1\n"
BATCH_DOMAIN = b"banzai-batch-v1\n"
ADMIT_DOMAIN = b"banzai-admit-v1"
MEMBERSHIP_DOMAIN = b"banzai-membership-v1\n"
MAX_TRACKED = 1024  # origins with their own counters; the rest share "(other)"
VERIFIED_CACHE = 4096  # batch signatures remembered as good
# Batch signatures that fail in one frame before its other batches are refused unchecked
# ("unverified"): an honest peer sends only batches it checked, so a failure is a forgery
MAX_BAD_SIGNATURES = 2


# The canonical JSON of what an event's hash covers: json.dumps(v, separators=(",", ":"),
# sort_keys=True), byte for byte, without making an encoder per call (dumps does, with
# options: 30 % of an event's hash; every event received and every one read back pays it).
CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True)
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # (peer.jsontext.compact's)


def event_hash(e: Event, keep: bool = False) -> bytes:
    """sha256 of the canonical encoding of (origin, seq, hlc, type, payload). `keep`: `e`
    is about to be written (a flush signs it, a receiver checks it): an event of
    ONE_TEXT_TYPES keeps its payload's canonical text (`Event.text`) for its row
    (`stored_text`), which then costs no second encoding."""
    if not keep or e.type not in ONE_TEXT_TYPES:
        canon = CANONICAL.encode([e.origin, e.seq, e.hlc, int(e.type), e.payload])
        return hashlib.sha256(EVENT_DOMAIN + canon.encode()).digest()
    text = e.text
    if text is None:
        text = CANONICAL.encode(e.payload)
        SET_TEXT(e, text)
    return _hash_of_text(e, text)


def _hash_of_text(e: Event, text: str) -> bytes:
    """The content hash of `e` if `text` is its payload's canonical text."""
    # `[origin,seq,hlc,type,payload]` as CANONICAL encodes that list, byte for byte: the
    # head's list without its `]`, then the payload's text (each item is encoded on its own)
    head = CANONICAL.encode([e.origin, e.seq, e.hlc, int(e.type)])
    return hashlib.sha256(EVENT_DOMAIN + (head[:-1] + "," + text + "]").encode()).digest()


def stored_text(e: Event, keep: bool = False) -> str:
    """The text of `e`'s payload in its row of the log: of ONE_TEXT_TYPES, the canonical
    text (the one `event_hash(e, keep=True)` kept, taken and cleared: it is not held in
    memory past the write, and a write done again encodes it again; with `keep` it stays,
    for the wire: a flush's own events, whose push sends it, `drop_texts` after); of the
    other types, the payload's compact JSON in its own key order, as every earlier release
    stored it. Either reads back as the same payload, whose content hash is the same (it
    sorts the keys)."""
    text = e.text
    if text is not None:
        if not keep:
            SET_TEXT(e, None)
        return text
    if e.type in ONE_TEXT_TYPES:
        return CANONICAL.encode(e.payload)
    return _COMPACT.encode(e.payload)


def drop_texts(events: Iterable[Event]) -> None:
    """Clear the canonical texts `events` kept past their write (`stored_text` with `keep`):
    an event held in memory keeps no second copy of its payload."""
    for e in events:
        if e.text is not None:
            SET_TEXT(e, None)


def held_hash(e: Event) -> bytes:
    """The content hash of an event: read from its batch when it has one (verified on entry)."""
    b = e.att
    return b.hash_at(e.seq) if isinstance(b, Batch) else event_hash(e)


MAX_SIGNED_TEXT_BYTES = 0xFFFF  # a signed text's UTF-8 bytes: its length prefix's bound


def _str_bytes(s: str) -> bytes:
    """`s` as a signed message holds it: its length (2 bytes), then its UTF-8 bytes.
    SignedTextTooLong past MAX_SIGNED_TEXT_BYTES (and UnicodeEncodeError for a lone
    surrogate): both ValueErrors, which every caller meeting a text off the wire drops as
    malformed input (callers bound their ids far below it)."""
    b = s.encode()
    if len(b) > MAX_SIGNED_TEXT_BYTES:
        raise SignedTextTooLong(f"a signed text of {len(b)} UTF-8 bytes ({s[:16]!r}...): at "
                                f"most {MAX_SIGNED_TEXT_BYTES} may be signed")
    return struct.pack("!H", len(b)) + b


def batch_digest(signer: str, origin: str, first: int, hashes: bytes) -> bytes:
    """What a batch's signature signs: domain, signer, origin, first seq, count, hashes."""
    return hashlib.sha256(BATCH_DOMAIN + _str_bytes(signer) + _str_bytes(origin)
                          + struct.pack("!QI", first, len(hashes) // HASH_BYTES)
                          + hashes).digest()


def admit_tag(secret: bytes, peer_id: str, key: bytes) -> bytes:
    """HMAC(secret, "banzai-admit-v1" | peer_id | public key): the mesh secret vouches for
    the binding of `peer_id` to `key`."""
    return hmac.new(secret, ADMIT_DOMAIN + _str_bytes(peer_id) + key, hashlib.sha256).digest()


def peer_id_for(key: bytes) -> str:
    """The self-certifying peer id of an identity made by this release: 20 hex digits of
    sha256(key). Only that key can ever be bound to it."""
    return hashlib.sha256(key).hexdigest()[:SELF_ID_CHARS]


def self_certifying(peer_id: str) -> bool:
    return hex_digits(peer_id, SELF_ID_CHARS)


def stored_peer_id(peer_id: str | None, path: Path) -> str | None:
    """The peer id a data dir's log file (`path`, meta 'peer_id') holds, None if none; a
    DataError naming the file if it is not one a peer was ever given (this release's 20 hex
    digits, 0.1.0's 16): it is signed, sent and named in every event of ours."""
    if peer_id is None or is_peer_id(peer_id):
        return peer_id
    raise DataError(f"{path}: meta 'peer_id' holds {peer_id!r:.40} ({len(peer_id)} "
                    f"characters), not a peer id ({OLD_ID_CHARS} or {SELF_ID_CHARS} hex "
                    "digits): the file is damaged or was edited; restore it from a backup")


class Identity:
    """A peer's Ed25519 key pair."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._sk = private
        self.key = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> Identity:
        """The identity stored at `path` (`read_key`), created (`write_key`) if missing."""
        try:
            return cls(read_key(path))
        except FileNotFoundError:
            pass
        sk = Ed25519PrivateKey.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_key(path, sk)
        except FileExistsError:  # made meanwhile (another process): that one is ours
            return cls(read_key(path))
        return cls(sk)

    def sign(self, msg: bytes) -> bytes:
        return self._sk.sign(msg)


def read_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key stored at `path` (32 raw bytes); DataError naming the file if
    it holds anything else, FileNotFoundError if there is none. A file other users may read
    is made 0600 with a warning (`peer.privfile`)."""
    raw = read_private(path, "identity key", "they may hold this private key", KEY_BYTES)
    if len(raw) != KEY_BYTES:
        raise DataError(f"{path}: {f'more than {KEY_BYTES}' if len(raw) > KEY_BYTES else len(raw)} "
                        f"bytes, not an Ed25519 private key ({KEY_BYTES} raw bytes): the file "
                        "is damaged or was edited; restore it from a backup")
    return Ed25519PrivateKey.from_private_bytes(raw)


def write_key(path: Path, sk: Ed25519PrivateKey) -> None:
    """Store `sk` at `path` (32 raw bytes, mode 0600) whole or not at all; FileExistsError if
    `path` exists (a key is never replaced)."""
    create_private(path, sk.private_bytes_raw())


@functools.lru_cache(maxsize=VERIFIED_CACHE)
def public_key(key: bytes) -> Ed25519PublicKey:
    """The key object of raw public key bytes, made once per key (every received batch and
    membership message is checked against one of a few keys); ValueError if malformed."""
    return Ed25519PublicKey.from_public_bytes(key)


def verify(key: bytes, sig: bytes, msg: bytes) -> bool:
    try:
        public_key(key).verify(sig, msg)
    except (InvalidSignature, ValueError):
        return False
    return True


# -- batches ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    """One signature over consecutive events [first, first + n) of `origin`, by `signer`
    (the origin itself; another member only when attesting events of the previous release,
    which carry no signature of their own). `key` and `admit` announce the signer's binding."""

    signer: str
    origin: str
    first: int
    hashes: bytes  # n * 32 bytes, in seq order
    key: bytes
    admit: bytes | None
    sig: bytes

    @property
    def count(self) -> int:
        return len(self.hashes) // HASH_BYTES

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def covers(self, seq: int) -> bool:
        return self.first <= seq < self.first + self.count

    def hash_at(self, seq: int) -> bytes:
        i = (seq - self.first) * HASH_BYTES
        return self.hashes[i:i + HASH_BYTES]

    def mismatch(self, e: Event, keep: bool = False, row: str | None = None) -> str | None:
        """Why this batch does not vouch for `e`'s content ("bad_batch_ref": not its origin
        or seq; "bad_hash": another content), or None if it does (one hash of `e`; `keep`:
        as `event_hash`'s, for an event about to be written). `row`: the text `e`'s payload
        was read from (a row of the log): of ONE_TEXT_TYPES it is the canonical text as this
        release writes it, then hashed as it is (no encoding); a text that does not give the
        signed hash (an earlier release's row, in the sender's key order, or an edited one)
        is checked by encoding the payload, as before."""
        if self.origin != e.origin or not self.covers(e.seq):
            return "bad_batch_ref"
        if (row is not None and e.type in ONE_TEXT_TYPES
                and _hash_of_text(e, row) == self.hash_at(e.seq)):
            return None  # (the signed text itself: its payload is what it decodes to)
        if event_hash(e, keep) != self.hash_at(e.seq):
            return "bad_hash"
        return None

    def digest(self) -> bytes:
        return batch_digest(self.signer, self.origin, self.first, self.hashes)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"o": self.origin, "f": self.first, "h": self.hashes.hex(),
                             "k": self.key.hex(), "g": self.sig.hex()}
        if self.signer != self.origin:
            d["s"] = self.signer
        if self.admit is not None:
            d["a"] = self.admit.hex()
        return d

    def malformed(self) -> str | None:
        """What makes this batch unusable (a field of the wrong type or size), or None: a
        batch off the wire or read back from disk is checked so before it is used."""
        o, s, first, hashes = self.origin, self.signer, self.first, self.hashes
        if not (type(o) is str and type(s) is str and 0 < len(o) <= MAX_ID_CHARS
                and 0 < len(s) <= MAX_ID_CHARS and type(first) is int and 0 < first <= MAX_CLOCK):
            return "bad batch origin, signer or first seq"
        if (type(hashes) is not bytes or not hashes or len(hashes) % HASH_BYTES
                or len(hashes) > MAX_BATCH * 4 * HASH_BYTES):
            return "bad batch hash list"
        if not (type(self.key) is bytes and len(self.key) == KEY_BYTES and type(self.sig) is bytes
                and len(self.sig) == SIG_BYTES and type(self.admit) in (bytes, type(None))):
            return "bad batch key, admission tag or signature"
        return None

    @staticmethod
    def from_json(d: Any) -> Batch:
        """A batch off the wire; ValueError if malformed (the signature is not checked)."""
        if type(d) is not dict:
            raise ValueError("batch is not an object")
        origin: Any = d.get("o")
        signer: Any = d.get("s", origin)
        first: Any = d.get("f")
        b = Batch(signer, origin, first, bytes.fromhex(_hexstr(d, "h")),
                  bytes.fromhex(_hexstr(d, "k")),
                  bytes.fromhex(_hexstr(d, "a")) if "a" in d else None,
                  bytes.fromhex(_hexstr(d, "g")))
        why = b.malformed()
        if why is not None:
            raise ValueError(why)
        return b


def _hexstr(d: Mapping[str, Any], k: str) -> str:
    v = d.get(k)
    if not isinstance(v, str):
        raise ValueError(f"batch field {k} is not a string")
    return v


def sign_run(me: Identity, signer: str, origin: str, events: Sequence[Event],
             admit: bytes | None) -> Batch:
    """One batch over `events`: consecutive seqs of one origin, in seq order."""
    hashes = b"".join(event_hash(e, True) for e in events)  # (each written next)
    first = events[0].seq
    return Batch(signer, origin, first, hashes, me.key, admit,
                 me.sign(batch_digest(signer, origin, first, hashes)))


def sign_events(me: Identity, signer: str, events: Iterable[Event], admit: bytes | None,
                max_batch: int = MAX_BATCH) -> list[Batch]:
    """Batches over `events` (any origins, any order), one per run of consecutive seqs of one
    origin of at most `max_batch` events; each event's `att` is set to its batch."""
    by_origin: dict[str, list[Event]] = {}
    for e in events:
        by_origin.setdefault(e.origin, []).append(e)
    out: list[Batch] = []
    for origin, evs in by_origin.items():
        evs.sort(key=lambda e: e.seq)
        run: list[Event] = []
        for e in evs:
            if run and (e.seq != run[-1].seq + 1 or len(run) >= max_batch):
                out.append(_attach(sign_run(me, signer, origin, run, admit), run))
                run = []
            run.append(e)
        if run:
            out.append(_attach(sign_run(me, signer, origin, run, admit), run))
    return out


def _attach(b: Batch, events: Sequence[Event]) -> Batch:
    for e in events:
        object.__setattr__(e, "att", b)
    return b


def _owner(origin: str) -> str:
    """The peer whose stream `origin` is: itself, or a lane's peer (peer.log.lanes)."""
    if "/" in origin:  # (no peer's own stream has one)
        lane = lane_of(origin)
        if lane is not None:
            return lane[0]
    return origin


def _by_hash(batches: Sequence[Batch]) -> dict[tuple[int, bytes], Batch]:
    """(seq, content hash) -> the first of `batches` that holds it."""
    out: dict[tuple[int, bytes], Batch] = {}
    for b in batches:
        for seq in range(b.first, b.first + b.count):
            out.setdefault((seq, b.hash_at(seq)), b)
    return out


def decode_events(raw_events: Any) -> list[Event | Exception] | None:
    """`Event.from_json` of each of a frame body's raw events, as `MemberKeys.accept` decodes
    them, needing nothing of the peer (any thread: a big snapshot's events are decoded off
    the loop): an event that does not decode gives its exception, which `accept` raises
    where it meets it. None if `raw_events` is not a list (`accept` refuses it)."""
    if not isinstance(raw_events, list):
        return None
    out: list[Event | Exception] = []
    for d in raw_events:
        try:
            out.append(Event.from_json(d))
        except Exception as e:  # (raised by `accept` in its turn: the same outcome)
            out.append(e)
    return out


# -- membership messages ---------------------------------------------------------------


def membership_message(kind: int, mesh_id: str, sender: str, reply_to: str, inc: int, ctr: int,
                       body: bytes) -> bytes:
    """What a membership message's signature signs: everything a receiver acts on."""
    return (MEMBERSHIP_DOMAIN + bytes([kind]) + _str_bytes(mesh_id) + _str_bytes(sender)
            + _str_bytes(reply_to) + struct.pack("!QQ", inc, ctr) + body)


# -- the keyring -------------------------------------------------------------------------


class Counters:
    """Refusals per origin and reason, bounded: past MAX_TRACKED origins (an attacker
    chooses them) the rest are counted under "(other)"."""

    OTHER = "(other)"

    def __init__(self, max_origins: int = MAX_TRACKED) -> None:
        self._max = max_origins
        self.by_origin: dict[str, dict[str, int]] = {}
        self.total: dict[str, int] = {}

    def add(self, origin: str, reason: str, n: int = 1) -> None:
        if origin not in self.by_origin and len(self.by_origin) >= self._max:
            origin = self.OTHER
        row = self.by_origin.setdefault(origin, {})
        row[reason] = row.get(reason, 0) + n
        self.total[reason] = self.total.get(reason, 0) + n


def _held_already(d: Any, good: Mapping[tuple[Any, str, Any], list[Batch]],
                  holds: Callable[[str, int, bytes], bool]) -> bool:
    """Is raw event `d` (as sent) a copy the sink would drop unchanged: does `holds` say so
    of the content hash its one batch that passed vouches for at its seq (`MemberKeys.accept`)?"""
    if type(d) is not dict:
        return False
    origin, seq = d.get("origin"), d.get("seq")
    if type(origin) is not str or type(seq) is not int:
        return False
    bs = good.get((d.get("bs", origin), origin, d.get("b")))
    if bs is None or len(bs) != 1 or not bs[0].covers(seq):
        return False  # (several contents signed from one seq: decoded and matched, as ever)
    return holds(origin, seq, bs[0].hash_at(seq))


class MemberKeys:
    """Who speaks for which peer id: bindings peer id -> public key (a self-certifying id
    only ever to its own key; an id of 0.1.0 to the first admitted key heard), the
    revoked members, the last (incarnation, counter) accepted from each member, and the
    counters of refusals. `secrets` are the mesh secrets a binding's admit tag may be made
    with (none: bindings need no admission). `revoked`: peer id -> the last seq of its
    stream still accepted (its REVOKE's `after`), None while it is not revoked;
    `revoked_lane`: (peer id, job) -> the same of its lane of that job (its REVOKE's
    `Revoke.lane_after`; without it, `revoked` bounds its lanes too)."""

    def __init__(self, secrets: Sequence[bytes] = (),
                 revoked: Callable[[str], int | None] = lambda _p: None,
                 revoked_lane: Callable[[str, str], int | None] | None = None) -> None:
        self.secrets = tuple(secrets)
        self.keys: dict[str, bytes] = {}
        self.revoked_after = revoked
        self.revoked_lane_after = revoked_lane or (lambda p, _job: self.revoked_after(p))
        self.seen: dict[str, tuple[int, int]] = {}  # peer id -> last (incarnation, counter)
        self.refused = Counters()
        self.key_conflicts = Counters()
        self._good: OrderedDict[bytes, None] = OrderedDict()  # signatures verified
        self.duplicates = 0  # events left out by `accept` as held already (its `holds`)

    # -- bindings ----------------------------------------------------------------------
    def admitted(self, peer_id: str, key: bytes, admit: bytes | None) -> bool:
        if not self.secrets:
            return True
        return admit is not None and any(
            hmac.compare_digest(admit_tag(s, peer_id, key), admit) for s in self.secrets)

    def bind(self, peer_id: str, key: bytes, admit: bytes | None) -> str | None:
        """Bind `peer_id` to `key` if it is unbound and admitted; None when the binding holds
        afterwards, else the reason it does not ("not_admitted", "key_conflict")."""
        cur = self.keys.get(peer_id)
        if cur == key:
            return None
        if cur is not None or (self_certifying(peer_id) and peer_id_for(key) != peer_id):
            self.key_conflicts.add(peer_id, "other_key")
            return "key_conflict"
        if not self.admitted(peer_id, key, admit):
            return "not_admitted"
        self.keys[peer_id] = key
        return None

    def is_revoked(self, peer_id: str) -> bool:
        return self.revoked_after(peer_id) is not None

    def accepted_upto(self, origin: str) -> int | None:
        """The last seq of `origin` (a peer's stream, or a lane of its: peer.log.lanes) still
        accepted: None while its peer is not revoked. The same on every peer that folded
        the same first REVOKE of it, so that a lane's members agree."""
        lane = lane_of(origin) if "/" in origin else None  # (no peer's own stream has one)
        return self.revoked_after(origin) if lane is None else self.revoked_lane_after(*lane)

    # -- batches and events --------------------------------------------------------------
    def check_batch(self, b: Batch, *, verify_new: bool = True) -> str | None:
        """None if `b` may vouch for its events, else the reason to refuse them. Without
        `verify_new`, a signature not verified before is refused unchecked ("unverified")."""
        if self.revoked_after(b.signer) is not None:  # (`is_revoked`, a call less a batch)
            # Its own events up to their bound stay good: they are kept everywhere. Its own:
            # of its stream, and of its lanes (each bounded by the REVOKE's `lanes_after`,
            # else by its `after`: `accepted_upto`).
            upto = self.accepted_upto(b.origin) if b.signer == _owner(b.origin) else None
            if upto is None or b.first > upto:
                return "revoked"
        lane = lane_of(b.origin)
        if lane is not None and lane[0] != b.signer:
            # A lane (peer.log.lanes) is signed by its peer only: no other member, and no
            # key bound to the lane's name, speaks for it (before `bind`: none is bound).
            return "lane_signer"
        why = self.bind(b.signer, b.key, b.admit)
        if why is not None:
            return why
        if b.signer != b.origin and lane is None:  # (a lane is its peer's: checked above)
            if b.origin in self.keys or self_certifying(b.origin):
                # Only an unsigned (0.1.0) origin may be attested: a self-certifying id signs
                # for itself from its first event, heard here yet or not.
                return "attested_signed_origin"
            if not hex_digits(b.origin, OLD_ID_CHARS):
                # Nor an origin that is no peer's id: a member would speak for a peer it
                # made up.
                return "attested_other_origin"
        if b.sig in self._good:
            return None
        if not verify_new:
            return "unverified"
        if not verify(b.key, b.sig, b.digest()):
            return "bad_signature"
        self._good[b.sig] = None
        if len(self._good) > VERIFIED_CACHE:
            self._good.popitem(last=False)
        return None

    def check_event(self, e: Event, b: Batch | None) -> str | None:
        """None if `e` may be stored and folded (its batch `b` already passed check_batch)."""
        upto = self.accepted_upto(e.origin)
        if upto is not None and e.seq > upto:
            return "revoked"
        if b is None:
            return "unsigned"
        why = b.mismatch(e, keep=True)  # (an event accepted is written next)
        if why is not None:
            return why
        object.__setattr__(e, "att", b)
        return None

    def _check_batches(self, raw_batches: list[Any]) -> tuple[
            dict[tuple[Any, str, Any], list[Batch]], set[tuple[Any, str, Any]]]:
        """`accept`'s batches: (signer, origin, first) -> the distinct batches of that
        reference that passed, and the references with one refused."""
        bad_left = MAX_BAD_SIGNATURES
        good: dict[tuple[Any, str, Any], list[Batch]] = {}
        refused: set[tuple[Any, str, Any]] = set()
        seen: set[Batch] = set()
        for d in raw_batches:
            bt = Batch.from_json(d)
            if bt in seen:
                continue
            seen.add(bt)
            ref = (bt.signer, bt.origin, bt.first)
            why = self.check_batch(bt, verify_new=bad_left > 0)
            bad_left -= why == "bad_signature"
            if why is None:
                good.setdefault(ref, []).append(bt)
            else:
                self.refused.add(bt.origin, why, bt.count)
                refused.add(ref)
        return good, refused

    def accept(self, raw_events: Any, raw_batches: Any,
               invalid: Callable[[Any, str], None] | None = None,
               decoded: Sequence[Event | Exception] | None = None,
               holds: Callable[[str, int, bytes], bool] | None = None) -> list[Event]:
        """The events of a frame body whose signatures verify; the others are counted by
        origin and reason. An event that is not valid is reported to `invalid` and left out
        (without it, it raises its BanzaiError). ValueError if the lists themselves are
        malformed. `decoded`: `decode_events(raw_events)`, made already (in a worker
        thread), else each event is decoded here.

        `holds(origin, seq, h)`: would the sink drop unchanged a copy of content hash `h` at
        that id (it holds that very content signed, or the id left its memory for good:
        compacted)? An event whose one batch passed here and vouches for such a hash is left
        out undecoded and unhashed, counted in `duplicates` (session 51: anti-entropy's
        fixes send whole blocks again; two thirds of a receiver's events in a 3-peer run of
        one-task jobs posted to one peer). Another content for a held id (a rival, for the
        conflict rule) is signed with another hash: decoded and checked as ever. A copy whose
        text does not match its batch's hash is left out too, unchecked: the sink would drop
        it, and what it holds is what was signed."""
        if not isinstance(raw_events, list) or not isinstance(raw_batches, list):
            raise ValueError("events or batches is not a list")
        # (signer, origin, first) -> the distinct batches of that reference that passed, and
        # the references with one refused. Several only when an origin signed two contents
        # from one seq (equivocation): a relayer may hold an event of each, and each is
        # checked against its own. A batch repeated in the frame is checked (and counted)
        # once: the work stays linear in the frame, whatever it repeats. After
        # MAX_BAD_SIGNATURES failed, the frame's other new signatures are not verified: a
        # frame of forged batches costs that many verifications, not one per batch it packs.
        good, refused = self._check_batches(raw_batches)
        # of a reference with several: (seq, content hash) -> the first batch that holds it
        held = {ref: _by_hash(bs) for ref, bs in good.items() if len(bs) > 1}
        out: list[Event] = []
        for i, d in enumerate(raw_events):
            if holds is not None and _held_already(d, good, holds):
                self.duplicates += 1
                continue
            try:
                e = Event.from_json(d) if decoded is None else decoded[i]
                if isinstance(e, Exception):
                    raise e
            except BanzaiError as err:
                if invalid is None:
                    raise
                invalid(d.get("origin") if type(d) is dict else None, f"invalid: {err!s:.200}")
                continue
            ref = (d.get("bs", e.origin), e.origin, d.get("b"))
            bs = good.get(ref)
            if bs is None and ref in refused:
                continue  # its batch was refused (counted there, once per event of it)
            if bs is not None and len(bs) > 1:  # the one holding its hash, else the last
                b: Batch | None = held[ref].get((e.seq, event_hash(e)), bs[-1])
            else:
                b = bs[0] if bs else None
            why = self.check_event(e, b)
            if why is None:
                out.append(e)
            else:
                self.refused.add(e.origin, why)
        return out

    # -- membership messages -------------------------------------------------------------
    def check_message(self, sender: str, key: bytes, admit: bytes | None, inc: int, ctr: int,
                      sig: bytes, msg: bytes) -> str | None:
        """None if a membership message from `sender` is authentic and newer than every one
        accepted from it (then it is remembered), else the reason to drop it."""
        if self.is_revoked(sender):
            return "revoked"
        why = self.bind(sender, key, admit)
        if why is not None:
            return why
        if not verify(key, sig, msg):
            return "bad_signature"
        if (inc, ctr) <= self.seen.get(sender, (-1, -1)):
            return "replayed"
        if len(self.seen) < MAX_TRACKED * 16 or sender in self.seen:
            self.seen[sender] = (inc, ctr)
        return None


@dataclass
class MeshAuth:
    """What gossip signs and checks with: this peer's identity, its admit tag, its
    incarnation (persisted, one more at each start) and counter, and the keyring."""

    identity: Identity
    keyring: MemberKeys
    incarnation: int
    admit: bytes | None = None
    counter: int = 0

    def next_counter(self) -> int:
        self.counter += 1
        return self.counter


__all__ = ["BATCH_DOMAIN", "EVENT_DOMAIN", "HASH_BYTES", "MAX_BATCH", "Batch", "Counters",
           "Identity", "MemberKeys", "MeshAuth", "admit_tag", "batch_digest", "decode_events",
           "drop_texts", "event_hash",
           "held_hash", "membership_message", "peer_id_for", "read_key", "self_certifying",
           "sign_events", "sign_run", "stored_peer_id", "stored_text", "verify", "write_key"]

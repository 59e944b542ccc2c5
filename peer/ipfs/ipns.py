"""IPNS names and records: parsing names, validating signed records (the IPNS record spec: a V2
signature over the DAG-CBOR data, V1 fields matching it, an EOL in the future) and the records
this peer holds (one file per name; written by rename, so safe from several threads).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import heapq
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import multibase
import multihash
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from peer.cids import IDENTITY, Cid, parse_cid
from peer.dataentry import check_entry, ensure_dir, read_file
from peer.errors import ArgError, BadCID, BanzaiError, IpnsError, NotFound, StoreError
from peer.ipfs.dagpb import read_varint
from peer.privfile import replace_private

log = logging.getLogger("banzai.ipns")

LIBP2P_KEY = "libp2p-key"
RECORD_TYPE = "application/vnd.ipfs.ipns-record"
MAX_RECORD_BYTES = 10 * 1024  # the spec's bound on a record
_SIGNATURE_PREFIX = b"ipns-signature:"
_KEY_RSA, _KEY_ED25519 = 0, 1
# what parsing hostile bytes (a record, a name, the key a name inlines) may raise besides
# IpnsError: dagpb's varints raise StoreError, multihash and datetime ValueError, the CBOR
# reader IndexError/KeyError; validate turns each into an IpnsError saying so
_MALFORMED = (ValueError, IndexError, KeyError, TypeError, OverflowError, StoreError,
              UnsupportedAlgorithm)


@dataclass(frozen=True)
class Record:
    """A validated IPNS record: its value path, sequence, TTL, end of life and bytes."""

    value: str
    sequence: int
    ttl_ns: int
    eol: datetime
    raw: bytes


def parse_name(name: str) -> tuple[Cid, bool]:
    """(the name as a CIDv1 libp2p-key, True if `name` was already written as a CID); ArgError
    for anything else. Base58 multihashes (12D3KooW..., Qm...) are accepted, not canonical."""
    try:
        c = parse_cid(name)
        if c.version == 1 and c.codec == LIBP2P_KEY:
            return c, True
    except BadCID:
        pass
    try:
        zeros = len(name) - len(name.lstrip("1"))  # py-multibase drops leading zero bytes
        mh = b"\0" * zeros + bytes(multibase.decode("z" + name))
        multihash.decode(mh)
    except (ValueError, TypeError) as exc:
        raise ArgError(f"{name!r} is not an IPNS name (a libp2p key)", field="name") from exc
    return Cid(1, LIBP2P_KEY, mh), False


def canonical(c: Cid) -> str:
    """The name as IPNS writes it: CIDv1 libp2p-key in base36."""
    return str(multibase.encode("base36", c.binary).decode())


def _fields(buf: bytes) -> dict[int, bytes | int]:
    """A protobuf message's fields (last one wins); ValueError (StoreError: a bad varint) if
    malformed."""
    out: dict[int, bytes | int] = {}
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        no, wire = key >> 3, key & 7
        if wire == 0:
            out[no], pos = read_varint(buf, pos)
        elif wire == 2:
            n, pos = read_varint(buf, pos)
            if pos + n > len(buf):
                raise ValueError("truncated field")
            out[no], pos = buf[pos : pos + n], pos + n
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _cbor_map(buf: bytes) -> dict[str, bytes | int]:
    """The IPNS data: a DAG-CBOR map of text keys to uints and byte strings."""
    pos = 0

    def head() -> tuple[int, int]:
        nonlocal pos
        b = buf[pos]
        pos += 1
        major, info = b >> 5, b & 31
        if info < 24:
            return major, info
        width = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        pos += width
        return major, int.from_bytes(buf[pos - width : pos], "big")

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(buf):
            raise ValueError("truncated")
        pos += n
        return buf[pos - n : pos]

    major, n = head()
    if major != 5:
        raise ValueError("data is not a map")
    out: dict[str, bytes | int] = {}
    for _ in range(n):
        kmajor, klen = head()
        if kmajor != 3:
            raise ValueError("a key is not text")
        key = take(klen).decode()
        vmajor, v = head()
        if vmajor == 0:
            out[key] = v
        elif vmajor == 2:
            out[key] = take(v)
        else:
            raise ValueError(f"unexpected item (major type {vmajor}) for {key!r}")
    if pos != len(buf):
        raise ValueError("trailing bytes")
    return out


def _public_key(name: Cid, embedded: bytes | None) -> tuple[int, bytes]:
    """(key type, key bytes) of the name: inlined in its identity multihash, else the record's
    pubKey, which must hash to the name."""
    try:
        mh = multihash.decode(name.multihash)
    except _MALFORMED as exc:
        raise IpnsError(f"the name is not a well-formed multihash ({exc})",
                        field="name") from exc
    if mh.code == IDENTITY:
        key = bytes(mh.digest)
        if embedded is not None and embedded != key:
            raise IpnsError("the record's public key is not the name's key")
    elif embedded is None:
        raise IpnsError("the record carries no public key and the name does not inline one")
    elif b"\x12\x20" + hashlib.sha256(embedded).digest() != name.multihash:
        raise IpnsError("the record's public key does not hash to the name")
    else:
        key = embedded
    try:
        fields = _fields(key)
    except _MALFORMED as exc:
        raise IpnsError(f"malformed public key (not a libp2p protobuf key: {exc})") from exc
    kind, data = fields.get(1, 0), fields.get(2)
    if not isinstance(kind, int) or not isinstance(data, bytes):
        raise IpnsError("malformed public key")
    return kind, data


def _verify(kind: int, key: bytes, signature: bytes, message: bytes) -> None:
    try:
        if kind == _KEY_ED25519:
            ed25519.Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
            return
        if kind == _KEY_RSA:
            pub = serialization.load_der_public_key(key)
            if not isinstance(pub, rsa.RSAPublicKey):
                raise IpnsError("the RSA key is not an RSA key")
            pub.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            return
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError) as exc:
        raise IpnsError("the record's V2 signature does not verify with the name's key "
                        "(signed by another key, or altered)") from exc
    raise IpnsError(f"key type {kind} is not supported (Ed25519 and RSA are)")


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _eol(validity: bytes) -> datetime:
    m = _RFC3339.match(validity.decode("ascii", "replace"))
    if m is None:
        raise IpnsError(f"bad validity {validity[:40]!r} (RFC 3339 expected)")
    frac = (m.group(2) or ".0")[:7]
    zone = "+00:00" if m.group(3) == "Z" else m.group(3)
    try:
        return datetime.fromisoformat(m.group(1) + frac + zone)
    except ValueError as exc:  # (the pattern's shape, but no date: 30 February, hour 25)
        raise IpnsError(f"bad validity {validity[:40]!r} ({exc})") from exc


def _signed_fields(entry: dict[int, bytes | int], data: bytes) -> tuple[bytes, bytes, int, int]:
    """(Value, Validity, Sequence, TTL) of the signed data; the V1 fields must match them."""
    try:
        fields = _cbor_map(data)
    except (ValueError, IndexError, KeyError, UnicodeDecodeError) as exc:
        raise IpnsError(f"malformed IPNS record data: {exc}") from exc
    value, validity = fields.get("Value"), fields.get("Validity")
    sequence, ttl = fields.get("Sequence", 0), fields.get("TTL", 0)
    if not isinstance(value, bytes) or not isinstance(validity, bytes):
        raise IpnsError("the record data lacks Value or Validity")
    if not isinstance(sequence, int) or not isinstance(ttl, int):
        raise IpnsError("the record data has a bad Sequence or TTL")
    for no, key_name in ((1, "Value"), (3, "ValidityType"), (4, "Validity"), (5, "Sequence"),
                         (6, "TTL")):
        if no in entry and entry[no] != fields.get(key_name, 0):
            raise IpnsError(f"the record's V1 {key_name} does not match its signed data")
    if fields.get("ValidityType", 0) != 0:
        raise IpnsError("unknown ValidityType (0, an end of life, is the only one)")
    return value, validity, sequence, ttl


def validate(name: Cid, raw: bytes, now: datetime) -> Record:
    """The record `raw` for `name` if valid at `now`; IpnsError saying why not, and nothing
    else whatever the bytes of the record or the name (both come from the mesh or disk)."""
    try:
        return _validate(name, raw, now)
    except _MALFORMED as exc:  # (each known case is said above; this is the net under them)
        raise IpnsError(f"malformed IPNS record or name: {type(exc).__name__}: {exc}"
                        ) from exc


def _validate(name: Cid, raw: bytes, now: datetime) -> Record:
    if len(raw) > MAX_RECORD_BYTES:
        raise IpnsError(f"the record is larger than {MAX_RECORD_BYTES} bytes")
    try:
        entry = _fields(raw)
    except _MALFORMED as exc:
        raise IpnsError(f"malformed IPNS record: {exc}") from exc
    signature, data, embedded = entry.get(8), entry.get(9), entry.get(7)
    if not isinstance(signature, bytes) or not isinstance(data, bytes):
        raise IpnsError("the record has no V2 signature (V1-only records are refused)")
    kind, key = _public_key(name, embedded if isinstance(embedded, bytes) else None)
    _verify(kind, key, signature, _SIGNATURE_PREFIX + data)
    value, validity, sequence, ttl = _signed_fields(entry, data)
    eol = _eol(validity)
    if eol <= now:
        raise IpnsError(f"the record expired at {eol.isoformat()}")
    try:
        path = value.decode()
    except UnicodeDecodeError as exc:
        raise IpnsError("the record's value is not a path") from exc
    if not path.startswith(("/ipfs/", "/ipns/")):
        raise IpnsError(f"the record's value {path[:80]!r} is not an /ipfs/ or /ipns/ path")
    return Record(path, sequence, ttl, eol, raw)


def key_name(public: ed25519.Ed25519PublicKey) -> str:
    """The IPNS name of an Ed25519 key: CIDv1 libp2p-key of the identity multihash of its
    libp2p protobuf (Type 1, Data 32 bytes), in base36 (k51...), as Kubo writes it."""
    proto = b"\x08\x01\x12\x20" + public.public_bytes(serialization.Encoding.Raw,
                                                          serialization.PublicFormat.Raw)
    return canonical(Cid(1, LIBP2P_KEY, bytes([IDENTITY, len(proto)]) + proto))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(no: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(no << 3) + _varint(value)
    return _varint(no << 3 | 2) + _varint(len(value)) + value


def rfc3339(when: datetime) -> bytes:
    """`when` as Go's time.RFC3339Nano writes it in UTC (no trailing zeros in the fraction)."""
    utc = when.astimezone(UTC)
    frac = f"{utc.microsecond * 1000:09d}".rstrip("0")
    return (utc.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z").encode()


def make_record(key: ed25519.Ed25519PrivateKey, value: str, sequence: int, eol: datetime,
                ttl_ns: int) -> bytes:
    """A signed IPNS record (V1 and V2 signatures, as Kubo makes them) naming `value` (an
    /ipfs/ path) until `eol`; the name's key is inlined in the name, so no pubKey field."""
    from peer.ipfs import ipld

    validity = rfc3339(eol)
    data = ipld.encode_cbor({"Value": value.encode(), "Validity": validity, "ValidityType": 0,
                             "Sequence": sequence, "TTL": ttl_ns})
    sig_v1 = key.sign(value.encode() + validity + b"EOL")
    sig_v2 = key.sign(_SIGNATURE_PREFIX + data)
    return (_pb(1, value.encode()) + _pb(2, sig_v1) + _pb(3, 0) + _pb(4, validity)
            + _pb(5, sequence) + _pb(6, ttl_ns) + _pb(8, sig_v2) + _pb(9, data))


EPOCH = datetime.fromtimestamp(0, UTC)  # (validated "at" it: every check but the end of life)
_WHAT = "the IPNS records' directory"


def read_record(path: Path) -> bytes:
    """The bytes of the record file `path`, at most MAX_RECORD_BYTES + 1 of them (`validate`
    refuses more), read by `dataentry.read_file`: never through a symlink, never waiting on
    a FIFO (DataError naming it if it is not a regular file); FileNotFoundError if it is
    absent, NotADirectoryError if its directory is a file."""
    return read_file(path, "an IPNS record", MAX_RECORD_BYTES)


# A record file stays this long past its record's end of life (then `forget_expired` removes
# it, at most FORGET_PER_PASS a pass): a record expired for a week names nothing any peer
# resolves, and a file per name ever heard made `held` stat every one of them for ever
# (review r2 of session 49 L1).
EXPIRED_KEEP_S = 7 * 86400.0
FORGET_PER_PASS = 256
# A record's end of life counts as at most this long after its file was written (its mtime,
# this peer's clock) for that removal: names are free to mint (a key each), and one signed
# to live until year 9999 stayed for ever (review r1 of session 50, R1-5). A year: the
# longest lifetime `IpnsService.sign` gives; a name still published is written again sooner.
MAX_LIFETIME_S = 365 * 86400.0
# At most this many record files (names) are held, each at most MAX_RECORD_BYTES (~100 MiB
# at worst; ~4 KiB of disk each as Kubo's records are): a record of a name not held that
# would pass it makes room first (`IpnsNames._make_room`: what goes first is said there),
# EVICT_FRACTION of the cap at a time, so a flood of new names reads the directory once per
# that many; with nothing that may go, the record is refused.
MAX_NAMES = 10_000
EVICT_FRACTION = 64
# The origin (`IpnsNames.put`) of every record put through the Kubo RPC's routing/put (a
# local client): one share, so a client minting names there pushes out its own first; each
# was a share of one, the last to go, so that it pushed out a member's names first (review
# r1 of session 52, finding 3). No member's id begins with "/".
RPC_ORIGIN = "/routing/put"


class OlderRecord(IpnsError):
    """A valid record older than the one held for its name (`IpnsNames.put`): not kept, as
    the rule says, no sign of damage (gossip brings records in any order)."""


class IpnsNames:
    """The IPNS records this peer holds, one file per name under `root` (the newest by `rank`
    wins: the sequence, then the end of life); safe from several threads and processes
    (files are replaced by rename). A file that does not read back (damaged, cut, not a
    record) counts as no record: left out by `held` (logged once per version of it), replaced
    by the next valid record `put` here."""

    def __init__(self, root: Path, clock: Callable[[], float] = time.time,
                 max_names: int = MAX_NAMES) -> None:
        if max_names < 1:
            raise ValueError("max_names must be at least 1")
        self.root = Path(root)
        self.clock = clock
        self.max_names = max_names
        # the names never removed to make room (this peer's published names: IpnsService
        # sets it; DataError if they cannot be read, and then nothing is removed)
        self.kept: Callable[[], Collection[str]] = tuple
        self.count: int | None = None  # record files here (None: not counted yet)
        self.evicted = 0  # record files removed to make room for new names, ever
        self.full = 0  # records of new names refused: at the cap with nothing that may go
        # file name -> ((mtime_ns, size), the name, its record or None if invalid): held()
        # validates a file once per version, then only checks its end of life
        self._seen: dict[str, tuple[tuple[int, int], str, Record | None]] = {}
        # file name -> the member whose event brought the record held (`put`'s `origin`;
        # RPC_ORIGIN: routing/put's), for `_make_room`'s shares; in memory only. A file
        # written before a restart, or by this peer, has none: counted as its own share.
        # (Not one shared "unknown" share: after a restart that would be the largest, and
        # a member minting names would push out every name held before it down to its own
        # share; a member's republish, at least every half of a record's lifetime, gives
        # an honest name its origin again. This peer's own names are `kept` anyway.)
        self._origin: dict[str, str] = {}
        self._unread: str | None = None  # why the records cannot be read (logged once)
        self._putting = threading.Lock()  # a put's check and write, one at a time (threads)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _path(self, name: Cid) -> Path:
        return self.root / f"{name.multihash.hex()}.ipns-record"

    def check_root(self) -> None:
        """DataError naming `root` if it is there and not a directory (a file put there)."""
        check_entry(self.root, "directory", _WHAT)

    def path(self, name: str) -> Path:
        """The file holding the record of `name` (ArgError if `name` is not one)."""
        return self._path(parse_name(name)[0])

    def put(self, name: str, raw: bytes, origin: str | None = None) -> Record:
        """Validate and keep `raw` as the record of `name`; IpnsError if invalid, OlderRecord
        if the record held ranks above it (`rank`; one held that does not read back, or
        expired, is replaced; a copy of it is not written again); DataError
        if the IPNS tree holds an entry of the wrong kind (named). `origin`: the member whose
        event brought it (None: this peer's or unknown), what `_make_room` shares by."""
        c, _ = parse_name(name)
        record = validate(c, raw, self._now())
        path = self._path(c)
        with self._putting:  # (the mesh's records off the loop, a publish, a routing/put)
            held = self._held(c, path)
            if held is not None and rank(held) >= rank(record):  # (`rank`: the log's rule too)
                if held.raw == record.raw:
                    return record  # (a copy: written already)
                raise OlderRecord(f"a newer record (sequence {held.sequence}, end of life "
                                  f"{held.eol.isoformat()}) is held for {name}")
            ensure_dir(self.root, _WHAT)
            check_entry(path, "file", "an IPNS record")  # (a directory: named, not OSError)
            new = not os.path.lexists(path)
            if new:
                self._make_room(path.name, origin)
            replace_private(path, raw)  # (fsynced, then the directory: a crash leaves either)
            if origin is None:
                self._origin.pop(path.name, None)
            else:
                self._origin[path.name] = sys.intern(origin)
            if new and self.count is not None:
                self.count += 1
        return record

    def _make_room(self, fname: str, origin: str | None = None) -> None:
        """Before the file `fname` of a name not held (brought by `origin`) is written: if
        `max_names` files are here, remove some (EVICT_FRACTION of the cap), first those that
        do not read back, then expired records (the earliest end of life first), then valid
        ones by `_by_share`: the largest origin's first, so that a member minting names
        pushes out its own, and within one origin the least recently written (an honest name
        is written again at each republish, at least every half of its lifetime); never those
        of `kept` names. IpnsError if none may go (the new name is refused, counted in
        `full`). Under `_putting`."""
        if self.count is None or self.count >= self.max_names:
            self.count = self._count_files()
        if self.count < self.max_names:
            return
        self.held()  # (each file read once per version: its record and end of life known)
        if len(self._origin) > len(self._seen):  # (files removed by hand or by another
            self._origin = {f: o for f, o in self._origin.items() if f in self._seen}  # process)
        try:
            kept = self._kept()
        except BanzaiError as e:
            self.full += 1
            raise IpnsError(f"{self.max_names} IPNS names are held here, and the names "
                            f"published here do not read ({e.message}): none removed for "
                            "a new one") from e
        now = self._now()
        useless: list[tuple[tuple[int, float], str, tuple[int, int]]] = []
        live: list[tuple[str, str, tuple[int, int]]] = []
        for f, (version, name, rec) in self._seen.items():
            if name in kept or f == fname:
                continue
            if rec is None or rec.eol <= now:
                key = (0, 0.0) if rec is None else (1, rec.eol.timestamp())
                useless.append((key, f, version))
            else:
                live.append((self._origin.get(f, "/" + f), f, version))
        useless.sort()
        order = [(f, v) for _, f, v in useless] + _by_share(live, origin)
        want = self.count - self.max_names + max(1, self.max_names // EVICT_FRACTION)
        gone = self._remove(order[:want])
        self.evicted += gone
        if gone:
            log.info("removed %d IPNS record file(s) to keep at most %d names (the largest "
                     "origin's oldest first)", gone, self.max_names)
        if self.count >= self.max_names:
            self.full += 1
            raise IpnsError(f"{self.max_names} IPNS names are held here (the cap), none of "
                            "which may be removed: a record of a new name is not kept")

    def _count_files(self) -> int:
        try:
            with os.scandir(self.root) as it:
                return sum(1 for f in it if f.name.endswith(".ipns-record"))
        except FileNotFoundError:
            return 0

    def _kept(self) -> set[str]:
        """The canonical names of `kept` (BanzaiError if they do not read)."""
        return canonical_names(self.kept())

    def _remove(self, files: Iterable[tuple[str, tuple[int, int]]]) -> int:
        """Remove these record files (file name, the version read) but one replaced since
        it was read; how many went. Under `_putting`."""
        gone = 0
        for fname, version in files:
            path = self.root / fname
            try:
                st = path.lstat()
                if (st.st_mtime_ns, st.st_size) != version:
                    continue  # (a new record put since: read at the next pass)
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                log.warning("IPNS record file %s not removed: %s", path, e)
                continue
            self._seen.pop(fname, None)  # (a `held` in another thread may have
            self._origin.pop(fname, None)
            gone += 1  # replaced `_seen` since: review r1 of session 50, R1-9)
            if self.count is not None:
                self.count = max(0, self.count - 1)
        return gone

    def _held(self, c: Cid, path: Path) -> Record | None:
        """The record held at `path` if it reads back and has not expired, else None (one
        that does not read back is logged: `put` replaces it)."""
        self.check_root()
        try:
            held = validate(c, read_record(path), EPOCH)
        except FileNotFoundError:
            return None
        except IpnsError as e:
            log.warning("%s: the record held does not read back (%s): replaced by the new one",
                        path, e.message)
            return None
        return held if held.eol > self._now() else None

    def get(self, name: str) -> Record:
        """The record held for `name`, validated now; NotFound if none, IpnsError if it is no
        longer valid (expired) or does not read back, DataError if its file (or the
        directory) is of the wrong kind."""
        c, _ = parse_name(name)
        self.check_root()
        try:
            raw = read_record(self._path(c))
        except FileNotFoundError as exc:
            raise NotFound(f"no IPNS record for {name} on this peer", field="name") from exc
        return validate(c, raw, self._now())

    def held(self) -> dict[str, Record]:
        """Every name with a valid record here (expired and invalid ones left out, an invalid
        one logged once per version of its file) and its record, read from the files (each
        validated once per version of it: cached). DataError if `root` is not a directory."""
        now = self._now()
        seen: dict[str, tuple[tuple[int, int], str, Record | None]] = {}
        out: dict[str, Record] = {}
        self.check_root()
        try:
            files = list(os.scandir(self.root))
        except FileNotFoundError:
            files = []
        count = 0
        for f in files:
            stem, _, ext = f.name.partition(".")
            if ext != "ipns-record":
                continue  # published.json, temp files
            count += 1
            try:
                st = f.stat(follow_symlinks=False)
                c = Cid(1, LIBP2P_KEY, bytes.fromhex(stem))
            except (OSError, ValueError):
                continue  # gone, or not a record file
            version = (st.st_mtime_ns, st.st_size)
            cached = self._seen.get(f.name)
            if cached is None or cached[0] != version:
                cached = (version, canonical(c), self._read(c, Path(f.path)))
            seen[f.name] = cached
            if cached[2] is not None and cached[2].eol > now:
                out[cached[1]] = cached[2]
        self._seen = seen
        self.count = count
        return out

    def forget_expired(self, keep: Collection[str] | None = None,
                       grace_s: float = EXPIRED_KEEP_S, limit: int = FORGET_PER_PASS) -> int:
        """Remove the files of records whose end of life passed more than `grace_s` ago, at
        most `limit`, but those of the names in `keep` (default `kept`: this peer's published
        names, whose next sequence is read from the record held, expired or not); an end of
        life more than MAX_LIFETIME_S after the file was written counts as that. A file that
        does not read back is left (the next valid `put` replaces it), and one replaced since
        `held` read it is left. Returns how many went. Blocking (a thread); DataError as
        `held`, or if `kept` does not read (then none goes)."""
        self.held()  # (each file validated once per version: its end of life is known)
        kept = self._kept() if keep is None else canonical_names(keep)
        cutoff = self.clock() - grace_s
        with self._putting:  # (not between a put's check and its write)
            due = [(fname, version) for fname, (version, name, rec) in list(self._seen.items())
                   if rec is not None and name not in kept
                   and end_of_life_s(rec.eol, version[0] / 1e9) <= cutoff]
            gone = self._remove(due[:limit])
        if gone:
            log.info("removed %d IPNS record file(s) expired more than %.0f days ago (an end "
                     "of life counted at most %.0f days after the file was written)", gone,
                     grace_s / 86400, MAX_LIFETIME_S / 86400)
        return gone

    def held_if_read(self) -> dict[str, Record] | None:
        """`held`, or None if the records cannot be read at all (`root` of the wrong kind,
        unreadable): a warning naming why, once until they read again. For what only shows
        them (a job's view), which must not fail for them."""
        try:
            out = self.held()
        except (BanzaiError, OSError) as e:
            why = e.message if isinstance(e, BanzaiError) else f"{self.root}: {e}"
            if why != self._unread:
                self._unread = why
                log.warning("the IPNS records held here cannot be read (left out of the "
                            "jobs' views meanwhile): %s", why)
            return None
        self._unread = None
        return out

    @staticmethod
    def _read(c: Cid, path: Path) -> Record | None:
        """The record of the file `path` (its end of life not checked), or None if it does
        not read back (logged, naming the file: once per version, as `held` caches it)."""
        try:
            return validate(c, read_record(path), EPOCH)
        except FileNotFoundError:
            return None  # (removed meanwhile)
        except (OSError, BanzaiError) as e:  # (IpnsError, DataError: a FIFO, a directory)
            why = e.message if isinstance(e, BanzaiError) else str(e)
            log.warning("IPNS record file %s left out: %s", path, why)
            return None

    def resolve(self, name: str) -> Record:
        """Like get, but a missing or invalid record is an IpnsError (the gateway's 5xx)."""
        try:
            return self.get(name)
        except NotFound as exc:
            raise IpnsError(exc.message, field="name") from exc


def canonical_names(names: Iterable[str]) -> set[str]:
    """The canonical spelling of each of `names` that is an IPNS name (others left out)."""
    out = set()
    for n in names:
        with contextlib.suppress(ArgError):
            out.add(canonical(parse_name(n)[0]))
    return out


def _by_share(files: Iterable[tuple[str, str, tuple[int, int]]], incoming: str | None,
              ) -> list[tuple[str, tuple[int, int]]]:
    """(file name, version) of `files` (origin, file name, version: its mtime_ns first) in
    the order they go to make room: one at a time from the origin holding the most of them
    (the origin of the record coming in counts it too), of two as large the one whose
    oldest is older, and within an origin the least recently written first. So a member
    minting names removes its own down to the share of the next largest before anyone
    else's; with every origin holding one (unknown ones count as their own), the least
    recently written first (the order before session 52)."""
    groups: dict[str, list[tuple[int, str, tuple[int, int]]]] = {}
    for origin, f, version in files:
        groups.setdefault(origin, []).append((version[0], f, version))
    heap: list[tuple[int, int, str]] = []
    for origin, rows in groups.items():
        rows.sort(reverse=True)  # (the oldest last: popped first)
        heap.append((-(len(rows) + (origin == incoming)), rows[-1][0], origin))
    heapq.heapify(heap)
    out: list[tuple[str, tuple[int, int]]] = []
    while heap:
        size, _, origin = heapq.heappop(heap)
        rows = groups[origin]
        _, f, version = rows.pop()
        out.append((f, version))
        if rows:
            heapq.heappush(heap, (size + 1, rows[-1][0], origin))
    return out


Rank = tuple[int, datetime, bytes]


def rank(record: Record) -> Rank:
    """What orders two valid records of one name, newest last: the sequence, then the end of
    life (the IPNS spec's tie rule), then the SHA-256 of the bytes (so that any two differ but
    identical copies: a total order every peer computes alike, whatever the order records came
    in, that holds 32 bytes of a record, not all of them: review rr of session 50, RR-5)."""
    return record.sequence, record.eol, hashlib.sha256(record.raw).digest()


def event_rank(name: str, record: str) -> tuple[str, Rank] | None:
    """(the name as IPNS writes it, `rank` of the record) of an IPNS_RECORD event's name and
    record (base64), validated without a clock; None if the name is none or the record does
    not decode or validate for it. The one rule for "the same name" and "newer"
    (peer.log.jobless.Records, which leaves the log by it, and `IpnsNames.put`): the
    `canonical` name, so a key's base36 and base58 spellings are one name."""
    try:
        c, _ = parse_name(name)
        raw = base64.b64decode(record, validate=True)
        return canonical(c), rank(validate(c, raw, EPOCH))
    except (ValueError, IpnsError, ArgError):
        return None


def end_of_life_s(eol: datetime, written_s: float) -> float:
    """When a record of end of life `eol`, written (or brought by an event) at `written_s`,
    counts as ended: at most MAX_LIFETIME_S after it was written (the files'
    `forget_expired` and the log's `log_expired`)."""
    return min(eol.timestamp(), written_s + MAX_LIFETIME_S)


def log_expired(r: Rank, event_ms: int, now_ms: int) -> bool:
    """Has the record of rank `r`, brought by an event made at `event_ms`, ended for the log
    (peer.log.jobless.Records): its `end_of_life_s` more than EXPIRED_KEEP_S before
    `now_ms`? The rule `forget_expired` applies to the record files (there the file's mtime
    stands for the event)."""
    return (end_of_life_s(r[1], event_ms / 1000) + EXPIRED_KEEP_S) * 1000 <= now_ms


def record_etag(raw: bytes) -> str:
    """A short stable tag of a record's bytes (its ETag)."""
    return hashlib.sha256(raw).hexdigest()[:32]


__all__ = ["LIBP2P_KEY", "MAX_RECORD_BYTES", "RECORD_TYPE", "IpnsNames", "OlderRecord", "Record",
           "canonical", "canonical_names", "event_rank",
           "key_name", "log_expired", "make_record", "parse_name", "rank", "read_record",
           "record_etag",
           "rfc3339", "validate"]

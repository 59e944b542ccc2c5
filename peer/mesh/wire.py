"""The gossip wire format: frame kinds, the frame codec with its HMAC tag and size bounds, and
the JSON body of each kind. Pure (no I/O, no clock); safe from any thread."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from json.encoder import encode_basestring_ascii as _STR
from typing import Any, NamedTuple

from peer.errors import BanzaiError
from peer.jsontext import MAX_DEPTH, nesting
from peer.log import PROTOCOL_VERSION, Event
from peer.log.events import MAX_CHUNKS, MAX_COUNT, MAX_ID_CHARS, MAX_LABEL_CHARS, MAX_TASKS
from peer.mesh.addr import canonical_addr

# A frame (all integers big-endian):
#   b"BZ" | version u8 | kind u8 | flags u8 | mesh id, sender id, reply-to address
#   (each u8 length + UTF-8) | JSON body | HMAC-SHA256 tag (32 bytes, when flags & 1)
MAGIC = b"BZ"
FLAG_MAC = 0x01
TAG_LEN = 32
FRAME_SLACK_BYTES = 2048  # room kept in a frame for header, tag and the body around events
_HEAD = struct.Struct("!2sBBB")  # magic, version, kind, flags


class Kind(IntEnum):
    """Message kinds. Append-only: the numeric values are part of the protocol."""

    HEARTBEAT = 1  # {"info": {...}}
    EVENTS = 2  # {"events": [...], "ttl": int, "batches": [...]}
    DIGEST = 3  # {"vv": {origin: seq}, "peers": [addr, ...]}
    DIGEST_REPLY = 4  # {"events": [...], "vv": {origin: seq} | null, "more": bool, "batches"}
    # SWIM membership (swim.py; peers of 0.2 and earlier drop these kinds). Each may carry
    # "m": [updates] piggybacked (alive, suspect, left, report; see swim.py).
    PING = 5  # {"s": seq, "t": target id, "u"?: the incarnation the sender suspects}
    ACK = 6  # {"s": seq, "u"?: the incarnation the sender suspects the prober at}
    PING_REQ = 7  # {"s": seq, "t": target id, "a": target address}
    NACK = 8  # {"s": seq}: an indirect probe got no ack
    UPDATES = 9  # {"m": [...]}: updates alone (the gossip timer, a leave)
    SYNC = 10  # {"m": [...], "r": bool}: a member's whole table; "r" asks for ours back
    # SYNC keys of the periodic push-pull (swim.py; peers of the previous release ignore them
    # and never answer "h", so they are sent "d" and "w" only by peers that know them):
    # "h": a hash of the sender's table ({member: incarnation} of the live ones, itself
    # included); a member whose hash differs answers "d": its table as [[member, inc], ...]
    # (and "u" when it holds the sender suspect or dead: it may refute; "t": true when the
    # table was cut to its first rows); the asker pushes "m", the updates the other lacks,
    # with "w": [member, ...] it lacks, answered by "m". "h" comes alone: a frame with "h"
    # and "d" or "w" is malformed; "d" and "w" are answered only from whom they were asked.
    DIGEST_SUM = 11  # {"h": hex}: a hash of the version vector; a DIGEST answers a mismatch
# Content digests (peer.log.contents; peers of the previous release ignore the keys, and the
# last two are only sent to a peer that sent the first ones): DIGEST_SUM "c" (a digest of every
# content held) and DIGEST "cs" ({origin: digest}): equal heads, different contents. A
# DIGEST_REPLY "blk" ({origin: [[block, digest], ...]}) gives the replier's blocks of the
# origins whose heads are equal and contents are not; the asker sends its events of the blocks
# that differ, the last EVENTS frame with "fix" (the same shape: its own digests of them), and
# the receiver sends back its events of each block whose digest still differs after merging.
# A DIGEST with "ack": true is an acknowledgement (Gossip.acknowledge): the vector only, no
# sample and no contents; it is noted, not answered (the periodic rounds repair). Peers of
# the previous release ignore the key and answer it as any DIGEST.
# Return routability (antientropy.py; feature fixnonce-v1; peers of the previous release
# ignore the keys): DIGEST_SUM, DIGEST and DIGEST_REPLY carry "n", the sender's cookie for the
# receiver's address, and "e", the receiver's cookie for the sender's address, echoed; a
# DIGEST_SUM of "n", "e" and "k" (no "h") is a handshake, the answer to a frame that did not
# echo our cookie ("k": "s" a sum, "d" a digest, "a" an ack, which then goes again). A
# DIGEST_REPLY with "blk" carries "bn", a nonce that its "fix" echoes ("fn" in that EVENTS
# frame).
# Block sizes (session 52, helper a; peers of the previous release ignore the key): a
# DIGEST_REPLY with "blk" carries "bc" ({origin: [count, ...]}, one per "blk" row of that
# origin, in its order): how many of the block's events up to the origin's head its digest
# covers. The asker sends its events of (and names in "fix") only the differing blocks whose
# counts agree with its own; of one whose count differs, only its events beyond its head
# (in an EVENTS frame with an empty "fix" if that is all): a count that differs is, at
# equal heads, events one side let go of from memory (compaction, each peer on its own
# pass) and the other has not yet, which no exchange settles (a copy of an event that left
# memory is dropped on receipt). A "bc" the asker cannot read is ignored (every differing
# block exchanged, as before).
# Compaction floors (review rr of session 48, S7; peers of the previous release ignore the
# key): a mesh round's DIGEST_REPLY carries "cf" ({origin: seq}, at most 256) when the
# replier dropped events (compacted) above the asker's vector of origins it names: the
# asker's catch-up judges them as a report's "cfloor", which a report's byte bound cuts.
# A "cf" is a hint: a peer ignores one it cannot read and reads the first 256 of a longer
# one (a later release may send more), never failing the round's push and pull for it.
# Events carry "b" (their batch's first seq) and, when the batch's signer is not their
# origin, "bs" (the signer); "batches" holds the signed batches of a frame's events
# (peer.log.signing.Batch.to_json), each once. Peers of 0.1.0 ignore both keys.


class FrameError(Exception):
    """A received frame is rejected; `reason` names the stats counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Frame:
    """A decoded, checked frame."""

    kind: Kind
    mesh_id: str
    sender: str
    reply_to: str
    body: dict[str, Any]
    size: int = field(default=0, compare=False)  # bytes on the wire (0: not received)
    # the reply-to as its sender spelled it (`reply_to` is its one spelling), which its
    # signature covers; "" if the same
    signed_reply_to: str = field(default="", compare=False)
    body_size: int = field(default=0, compare=False)  # bytes of its body (0: not received)


# -- frames --------------------------------------------------------------------------


def _short(s: str) -> bytes:
    b = s.encode()
    if len(b) > 255:
        raise ValueError(f"header string too long: {s[:40]!r}")
    return bytes([len(b)]) + b


def frame_header(kind: int, mesh_id: str, sender: str, reply_to: str,
                 authenticated: bool) -> bytes:
    """Everything before the body: fixed header, mesh id, sender id, reply-to address."""
    flags = FLAG_MAC if authenticated else 0
    return b"".join((_HEAD.pack(MAGIC, PROTOCOL_VERSION, int(kind), flags), _short(mesh_id),
                     _short(sender), _short(reply_to)))


def seal(data: bytes, secret: bytes | None) -> bytes:
    """`data` followed by its HMAC-SHA256 tag under `secret` (unchanged without a secret)."""
    return data if secret is None else data + hmac.new(secret, data, hashlib.sha256).digest()


def encode_frame(kind: int, mesh_id: str, sender: str, reply_to: str, body: bytes,
                 secret: bytes | None) -> bytes:
    """Build a frame around an already JSON-encoded `body` (tagged when `secret` is set)."""
    return seal(frame_header(kind, mesh_id, sender, reply_to, secret is not None) + body,
                secret)


class FrameWriter:
    """Frames from one sender at one reply-to address; the header of each kind is built once."""

    def __init__(self, mesh_id: str, sender: str, reply_to: str, secret: bytes | None) -> None:
        self._secret = secret
        self._heads = {k: frame_header(k, mesh_id, sender, reply_to, secret is not None)
                       for k in Kind}

    def frame(self, kind: Kind, body: bytes) -> bytes:
        return seal(self._heads[kind] + body, self._secret)


def _read_short(data: bytes, pos: int) -> tuple[str, int]:
    n = data[pos]
    end = pos + 1 + n
    if end > len(data):
        raise FrameError("bad_frame", "truncated header")
    return data[pos + 1:end].decode(), end


def _check_mac(data: bytes, flags: int, secret: bytes | None) -> bytes:
    """The frame without its tag, if the tag is right (or no secret is used)."""
    if secret is None:
        if flags & FLAG_MAC:
            raise FrameError("bad_mac", "authenticated frame but no secret configured")
        return data
    if not flags & FLAG_MAC or len(data) < _HEAD.size + 3 + TAG_LEN:
        raise FrameError("bad_mac", "unauthenticated frame")
    want = hmac.new(secret, data[:-TAG_LEN], hashlib.sha256).digest()
    if not hmac.compare_digest(want, data[-TAG_LEN:]):
        raise FrameError("bad_mac", "tag mismatch")
    return data[:-TAG_LEN]


def decode_frame(data: bytes, secret: bytes | None, mesh_id: str, max_bytes: int) -> Frame:
    """Parse and check a frame; raises FrameError(reason) for anything to drop."""
    size = len(data)
    if size > max_bytes:
        raise FrameError("too_large", f"{size} bytes")
    if len(data) < _HEAD.size + 3 or data[:2] != MAGIC:
        raise FrameError("bad_frame", "no magic")
    _, version, kind, flags = _HEAD.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise FrameError("bad_version", f"version {version}")
    data = _check_mac(data, flags, secret)
    try:
        mesh, pos = _read_short(data, _HEAD.size)
        sender, pos = _read_short(data, pos)
        reply_to, pos = _read_short(data, pos)
        sent_reply_to = reply_to
        if reply_to:  # in its one spelling: per-address bounds are keyed on it
            reply_to = canonical_addr(reply_to)
        body = json.loads(data[pos:])
    except (UnicodeDecodeError, ValueError, IndexError, RecursionError) as e:
        raise FrameError("bad_frame", str(e)[:80]) from None  # (nested too deep: recursion)
    if mesh != mesh_id:
        raise FrameError("other_mesh", f"mesh {mesh[:40]!r}")
    if kind not in Kind._value2member_map_:
        raise FrameError("bad_kind", f"kind {kind}")
    if not isinstance(body, dict) or not sender:
        raise FrameError("bad_frame", "body is not an object")
    return Frame(Kind(kind), mesh, sender, reply_to, body, size,
                 "" if sent_reply_to == reply_to else sent_reply_to, len(data) - pos)


# -- bodies --------------------------------------------------------------------------


Blocks = dict[str, list[tuple[int, str]]]  # origin -> [(block, content digest), ...]


class Reply(NamedTuple):
    """What a DIGEST_REPLY adds to its events: the replier's vector when the asker holds
    something it lacks, whether more events are waiting, the replier's block digests of
    the origins whose contents differ, and (fixnonce-v1) its cookie for the asker ("n"), the
    asker's cookie echoed ("e") and the nonce its "fix" must echo ("bn")."""

    vv: Mapping[str, int] | None
    more: bool
    blocks: Blocks | None = None
    cookie: str | None = None
    echo: str | None = None
    blk_nonce: str | None = None
    jobs: Sequence[str] | None = None  # a pair round's (LANES_FEATURE): the jobs it covers
    floors: Mapping[str, int] | None = None  # "cf": the replier's floors above the asker
    sizes: Mapping[str, Sequence[int]] | None = None  # "bc": per "blk" row, its event count


def dumps(obj: Any) -> bytes:
    """Compact JSON, as every body is encoded."""
    return json.dumps(obj, separators=(",", ":")).encode()


_COMPACT = json.JSONEncoder(separators=(",", ":"))  # (`dumps`' encoding, made once)


def encode_event(e: Event) -> bytes:
    """An event's wire form, with the reference to its signed batch when it has one: the
    compact JSON of `Event.to_json` and "b" (and "bs"), in that key order. The payload is
    the canonical text its signing kept when it has one (`Event.text`: a flush's own task
    events, `peer.log.signing.stored_text`; the same object, its keys sorted: every release
    reads it as it reads the payload's own order, and hashes it canonically), not encoded a
    third time; else its compact JSON, byte for byte as `dumps(e.to_json())` is."""
    text = e.text
    if text is None:
        text = _COMPACT.encode(e.payload)
    b = e.att
    ref = ("" if b is None else f',"b":{b.first}' if b.signer == b.origin
           else f',"b":{b.first},"bs":{_STR(b.signer)}')
    return (f'{{"origin":{_STR(e.origin)},"seq":{e.seq},"hlc":{e.hlc},"type":{int(e.type)},'
            f'"payload":{text}{ref}}}').encode()


def heartbeat_body(info: Mapping[str, Any]) -> bytes:
    return dumps({"info": dict(info)})


def digest_body(vv: Mapping[str, int], peers: Sequence[str],
                contents: Mapping[str, str] | None = None, *, ack: bool = False,
                nonces: Mapping[str, str] | None = None,
                jobs: Sequence[str] | None = None) -> bytes:
    """A DIGEST body; with `jobs`, a pair round's (LANES_FEATURE: the vector and digests are
    of those jobs' lanes)."""
    body: dict[str, Any] = {"vv": dict(vv), "peers": list(peers)}
    if contents is not None:
        body["cs"] = dict(contents)
    if ack:
        body["ack"] = True
    if nonces:
        body.update(nonces)
    if jobs is not None:
        body["jobs"] = list(jobs)
    return dumps(body)


def _batches(signed: Sequence[bytes]) -> bytes:
    return b',"batches":[' + b",".join(signed) + b"]" if signed else b""


def _blocks(key: bytes, blocks: Blocks | None) -> bytes:
    return b"" if blocks is None else b',"' + key + b'":' + dumps(blocks)


def _str(key: bytes, value: str | None) -> bytes:
    return b"" if value is None else b',"' + key + b'":' + dumps(value)


def _jobs(jobs: Sequence[str] | None) -> bytes:
    return b"" if jobs is None else b',"jobs":' + dumps(list(jobs))


def events_body(batch: Sequence[bytes], ttl: int, signed: Sequence[bytes] = (),
                fix: Blocks | None = None, fix_echo: str | None = None,
                jobs: Sequence[str] | None = None) -> bytes:
    """An EVENTS body around already encoded events (and the batches that sign them); with
    `fix`, `fix_echo` is the nonce of the block digests it answers ("fn") and `jobs` the
    pair round's it belongs to (LANES_FEATURE)."""
    return (b'{"events":[' + b",".join(batch) + b'],"ttl":%d' % ttl + _batches(signed)
            + _blocks(b"fix", fix) + (_str(b"fn", fix_echo) + _jobs(jobs) if fix is not None
                                      else b"") + b"}")


def reply_body(batch: Sequence[bytes], reply: Reply, signed: Sequence[bytes] = ()) -> bytes:
    """A DIGEST_REPLY body around already encoded events (and the batches that sign them)."""
    vv = None if reply.vv is None else dict(reply.vv)
    return (b'{"events":[' + b",".join(batch) + b'],"vv":' + dumps(vv) + b',"more":'
            + dumps(reply.more) + _batches(signed) + _blocks(b"blk", reply.blocks)
            + _str(b"bn", reply.blk_nonce if reply.blocks else None) + _str(b"n", reply.cookie)
            + _str(b"e", reply.echo) + _jobs(reply.jobs)
            + (b',"cf":' + dumps(dict(reply.floors)) if reply.floors else b"")
            + (b',"bc":' + dumps({o: list(n) for o, n in reply.sizes.items()})
               if reply.sizes and reply.blocks else b"") + b"}")


class Packed(NamedTuple):
    """The encoded events of one frame and the encoded batches that sign them."""

    events: list[bytes]
    batches: list[bytes]


def pack_frames(events: Sequence[Event], max_frame_bytes: int, max_per_frame: int,
                ) -> tuple[list[Packed], list[tuple[Event, int]]]:
    """Encoded events in frames' worth (at most `max_per_frame`, each with the batches of its
    events, each batch once), and the (event, encoded size) of those too large for any frame."""
    budget = max_frame_bytes - FRAME_SLACK_BYTES
    out: list[Packed] = []
    too_large: list[tuple[Event, int]] = []
    cur = Packed([], [])
    carried: dict[int, int] = {}  # id(batch) -> index of the last frame that carries it
    encoded: dict[int, bytes] = {}
    size = 0
    for e in events:
        enc = encode_event(e)
        b = e.att
        benc = b""
        if b is not None:
            benc = encoded.get(id(b)) or encoded.setdefault(id(b), dumps(b.to_json()))
        if len(enc) + len(benc) > budget:
            too_large.append((e, len(enc)))
            continue
        need = benc if carried.get(id(b)) != len(out) else b""
        if cur.events and (size + len(enc) + len(need) > budget
                           or len(cur.events) >= max_per_frame):
            out.append(cur)
            cur, size, need = Packed([], []), 0, benc
        cur.events.append(enc)
        size += len(enc) + 1
        if need:
            cur.batches.append(need)
            carried[id(b)] = len(out)
            size += len(need) + 1
    if cur.events:
        out.append(cur)
    return out, too_large


def write_packed(events: Iterable[Event], out_events: Callable[[bytes], object],
                 out_batches: Callable[[bytes], object]) -> None:
    """The one frame `pack_frames(events, no bound, no bound)` makes, written as the events
    come instead of held: the encoded events joined by commas to `out_events`, their batches
    (each once, first seen first) joined by commas to `out_batches`; byte for byte the same.
    Batches are told apart by their signature, not their object (a caller may read one again)."""
    seen: set[bytes] = set()
    first = True
    for e in events:
        out_events(encode_event(e) if first else b"," + encode_event(e))
        first = False
        b = e.att
        if b is not None and b.sig not in seen:
            out_batches(dumps(b.to_json()) if not seen else b"," + dumps(b.to_json()))
            seen.add(b.sig)


def pack_events(events: Sequence[Event], max_frame_bytes: int, max_per_frame: int,
                ) -> tuple[list[list[bytes]], list[tuple[Event, int]]]:
    """`pack_frames` without the batches."""
    frames, too_large = pack_frames(events, max_frame_bytes, max_per_frame)
    return [f.events for f in frames], too_large


def parse_info(body: Mapping[str, Any]) -> dict[str, Any]:
    """The info object of a HEARTBEAT body; KeyError/ValueError if malformed."""
    info = body["info"]
    if not isinstance(info, dict):
        raise ValueError("info is not an object")
    check_info(info)
    return info


_INFO_STR = ("name", "http", "kid", "status")
_INFO_INT = ("slots", "free_slots", "wall_ms")
# The lists of strings of a peer's info, each with the most entries taken (review r2 of
# session 47, finding 5: the scheduler walks them per tick, a sender's own bound is no
# bound): `calls`, a MEMBER event's (MAX_TASKS: a peer whose catalog held more could not
# announce itself); `features`, a MEMBER event's (256; this release sends 11); `working`,
# 4 x the 16 this release sends (`scheduler.MAX_WORKING`): room for a later release
_INFO_STRS = {"calls": MAX_TASKS, "features": 256, "working": 64}
# ... and the characters of each of their strings, at most: a MEMBER event's bounds (calls,
# features); `working` holds job ids (review r1 of session 49: served in /api/peers)
_INFO_STR_CHARS = {"calls": MAX_ID_CHARS, "features": MAX_LABEL_CHARS, "working": MAX_ID_CHARS}
# `running`, the attempt keys of a peer's runs (one per slot it runs, and those finishing):
# the scheduler builds a set of it per report renewed (review r2 of session 48, M3)
MAX_RUNNING = 4096
_INFO_VV = ("heads", "cfloor")


def check_info(info: dict[str, Any]) -> None:
    """ValueError naming the key if a key of a peer's info (a HEARTBEAT's, a SWIM member's
    report) that this release reads has another type than ours sends, or is a list of more
    entries than _INFO_STRS allows: such input must not reach the scheduler, which reads
    it per task. Keys it does not know pass (a newer
    peer's), within the nesting bound of all JSON a peer takes in. `running` is kept as
    the attempt keys this release reads of it (`_readable_running`), in place."""
    _check_types(info)
    if nesting(info, MAX_DEPTH) > MAX_DEPTH:  # served again (/api/mesh) at a deeper stack
        key = next((k for k, v in info.items() if nesting(v, MAX_DEPTH - 1) >= MAX_DEPTH), "")
        raise ValueError(f"info.{key} is nested deeper than {MAX_DEPTH} levels")


def _check_types(info: dict[str, Any]) -> None:
    for k in _INFO_STR:
        if k in info and not isinstance(info[k], str):
            raise ValueError(f"info.{k} is not a string")
    for k in _INFO_INT:
        if k in info and type(info[k]) is not int:
            raise ValueError(f"info.{k} is not an integer")
    for k, most in _INFO_STRS.items():
        if k in info:
            _check_strs(k, info[k], most, _INFO_STR_CHARS[k])
    if "running" in info:
        info["running"] = _readable_running(info["running"])
    for k in _INFO_VV:
        if k in info:
            try:
                parse_vv(info[k])
            except ValueError:
                raise ValueError(f"info.{k} is not an object of seqs") from None
    if "kubo" in info and not isinstance(info["kubo"], dict):
        raise ValueError("info.kubo is not an object")


def _readable_running(v: Any) -> list[list[Any]]:
    """The attempt keys [job, task, chunk, attempt] of `running` (job and task strings of 1 to
    MAX_ID_CHARS characters, chunk and attempt integers from 0) as this release reads them:
    of an entry that starts with one and holds more (a later release's), its first four;
    an entry of another shape is left out. ValueError unless `v` is a list of at most
    MAX_RUNNING entries. Served in /api/peers, where one `null` entry broke every peer's
    web UI (review r1 of session 49, F2); refusing the whole info for one entry made a
    later release's member one that never heartbeats, its leases lapsing (review r1 of
    session 50, R1-7)."""
    if not isinstance(v, list):
        raise ValueError("info.running is not a list")
    if len(v) > MAX_RUNNING:
        raise ValueError(f"info.running holds {len(v)} entries, more than {MAX_RUNNING}")
    return [k[:4] for k in v
            if isinstance(k, list) and len(k) >= 4
            and all(isinstance(x, str) and 0 < len(x) <= MAX_ID_CHARS for x in k[:2])
            and type(k[2]) is int and 0 <= k[2] < MAX_CHUNKS
            and type(k[3]) is int and 0 <= k[3] <= MAX_COUNT]


def _check_strs(key: str, v: Any, most: int, chars: int) -> None:
    """ValueError naming info key `key` unless `v` is a list of at most `most` strings of
    at most `chars` characters each."""
    if not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
        raise ValueError(f"info.{key} is not a list of strings")
    if len(v) > most:
        raise ValueError(f"info.{key} holds {len(v)} entries, more than {most}")
    for i, x in enumerate(v):
        if len(x) > chars:
            raise ValueError(f"info.{key}[{i}] holds {len(x)} characters, more than {chars}")


def parse_vv(obj: Any) -> dict[str, int]:
    """A version vector off the wire; ValueError if malformed."""
    if not isinstance(obj, dict):
        raise ValueError("version vector is not an object")
    out: dict[str, int] = {}
    for k, v in obj.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError("bad seq in version vector")
        out[str(k)] = v
    return out


def parse_digests(obj: Any) -> dict[str, str]:
    """Content digests by origin off the wire ("cs"); ValueError if malformed."""
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise ValueError("content digests are not an object of strings")
    return {str(k): v for k, v in obj.items()}


MAX_NONCE_CHARS = 64  # a cookie or nonce off the wire ("n", "e", "bn", "fn")


def parse_nonce(body: Mapping[str, Any], key: str) -> str | None:
    """The cookie or nonce at `key` of a body, or None if absent; ValueError naming the key if
    it is no short string."""
    v = body.get(key)
    if v is not None and not (isinstance(v, str) and 0 < len(v) <= MAX_NONCE_CHARS):
        raise ValueError(f"{key} is not a string of 1..{MAX_NONCE_CHARS} characters")
    return v


MAX_PAIR_JOBS = 4096  # jobs one pair round's frame names at most ("jobs", LANES_FEATURE)


def parse_jobs(body: Mapping[str, Any]) -> list[str] | None:
    """The jobs a pair round's frame names ("jobs"), None for a mesh round's; ValueError if
    malformed or more than MAX_PAIR_JOBS."""
    jobs = body.get("jobs")
    if jobs is None:
        return None
    if not (isinstance(jobs, list) and len(jobs) <= MAX_PAIR_JOBS
            and all(isinstance(j, str) for j in jobs)):
        raise ValueError("bad jobs of a pair round")
    return jobs


def parse_blocks(obj: Any, max_blocks: int) -> Blocks:
    """Block digests by origin off the wire ("blk", "fix"); ValueError if malformed or if
    more than `max_blocks` in all."""
    if not isinstance(obj, dict):
        raise ValueError("block digests are not an object")
    out: Blocks = {}
    n = 0
    for origin, rows in obj.items():
        if not isinstance(rows, list):
            raise ValueError("block digests of an origin are not a list")
        n += len(rows)
        if n > max_blocks:
            raise ValueError("too many block digests")
        got: list[tuple[int, str]] = []
        for row in rows:
            if not (isinstance(row, list) and len(row) == 2 and type(row[0]) is int
                    and 0 <= row[0] < 2**63 and isinstance(row[1], str)):
                raise ValueError("bad block digest")
            got.append((row[0], row[1]))
        out[str(origin)] = got
    return out


def parse_sizes(obj: Any, blocks: Blocks) -> dict[str, dict[int, int]]:
    """A DIGEST_REPLY's block sizes ("bc") as origin -> block -> count, for the origins of
    `blocks` (its "blk") it gives a count per row of; ValueError if malformed (not an
    object, an origin's counts not a list of as many non-negative ints as its rows)."""
    if not isinstance(obj, dict):
        raise ValueError("block sizes are not an object")
    out: dict[str, dict[int, int]] = {}
    for origin, rows in blocks.items():
        n = obj.get(origin)
        if n is None:
            continue
        if not (isinstance(n, list) and len(n) == len(rows)
                and all(type(c) is int and 0 <= c < 2**31 for c in n)):
            raise ValueError(f"bad block sizes of origin {origin[:64]!r}")
        out[origin] = {b: c for (b, _), c in zip(rows, n, strict=True)}
    return out


MAX_MEMBER_ID_BYTES = 255  # as a frame header's sender id
TABLE_HASH_CHARS = 32


def parse_table_hash(obj: Any) -> str:
    """A push-pull's table hash ("h"); ValueError if it is no short hex string."""
    if not (isinstance(obj, str) and len(obj) == TABLE_HASH_CHARS
            and all(c in "0123456789abcdef" for c in obj)):
        raise ValueError("bad table hash")
    return obj


def parse_member_id(obj: Any) -> str:
    """A member id as sent (a SWIM update's, a push-pull's): a non-empty text of at most
    MAX_MEMBER_ID_BYTES (a frame header's bound); ValueError if it is not one."""
    if not (isinstance(obj, str) and 0 < len(obj.encode()) <= MAX_MEMBER_ID_BYTES):
        raise ValueError("bad member id")
    return obj


def parse_table(obj: Any, max_rows: int) -> dict[str, int]:
    """A push-pull's table ("d": [[member, incarnation], ...]); ValueError if malformed or
    longer than `max_rows`."""
    if not isinstance(obj, list) or len(obj) > max_rows:
        raise ValueError(f"table is not a list of at most {max_rows} rows")
    out: dict[str, int] = {}
    for row in obj:
        if not (isinstance(row, list) and len(row) == 2 and type(row[1]) is int
                and 0 <= row[1] < 2**63):
            raise ValueError("bad table row")
        out[parse_member_id(row[0])] = row[1]
    return out


def parse_member_ids(obj: Any, max_ids: int) -> list[str]:
    """Members asked for by a push-pull ("w"); ValueError if malformed or more than
    `max_ids`."""
    if not isinstance(obj, list) or len(obj) > max_ids:
        raise ValueError(f"member ids are not a list of at most {max_ids}")
    return [parse_member_id(x) for x in obj]


Refused = Callable[[Any, str], None]  # (the event's origin as sent, why it was refused)


def parse_events(obj: Any, refused: Refused | None = None) -> list[Event]:
    """Events off the wire (Event.from_json). Without `refused`, one malformed event makes it
    raise ValueError (a BanzaiError from validating an event becomes one); with it, each
    malformed event is reported to it and left out, and the others are returned. A list
    that is not a list raises ValueError either way."""
    if not isinstance(obj, list):
        raise ValueError("events is not a list")
    if refused is None:
        try:
            return [Event.from_json(d) for d in obj]
        except BanzaiError as err:  # the event layer refused one: a malformed frame
            raise ValueError(f"bad event: {err!s:.60}") from None
    out: list[Event] = []
    for d in obj:
        try:
            out.append(Event.from_json(d))
        except BanzaiError as err:
            refused(d.get("origin") if type(d) is dict else None, f"invalid: {err!s:.200}")
    return out


__all__ = ["FLAG_MAC", "FRAME_SLACK_BYTES", "MAGIC", "MAX_MEMBER_ID_BYTES", "MAX_NONCE_CHARS",
           "MAX_PAIR_JOBS", "TAG_LEN", "Blocks", "Frame", "FrameError", "FrameWriter", "Kind",
           "Packed", "Refused", "Reply", "check_info", "decode_frame", "digest_body", "dumps",
           "encode_event", "encode_frame", "events_body", "frame_header", "heartbeat_body",
           "pack_events", "pack_frames", "parse_blocks", "parse_digests", "parse_events",
           "parse_info", "parse_jobs", "parse_member_id", "parse_member_ids", "parse_nonce",
           "parse_sizes", "parse_table", "parse_table_hash", "parse_vv", "reply_body", "seal"]

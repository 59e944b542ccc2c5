"""Snapshot streams, version 3 (issue 11 item 3): what a fresh peer must receive before it is
caught up, framed with raw lengths. A compacted job travels as its thin row (its list entry
without the per-task lists, when it ended, the hash of its outputs and of its full record),
the full record is fetched on demand and checked against that hash; cache entries and
providers travel column by column (texts joined by NUL, integers packed), so neither side
escapes or parses them row by row. Pure (I/O only on the files it is given).

The body: MAGIC, then frames `tag (1 byte) + length (uint32, big-endian) + payload`: first
`E` (the events line of version 2: `{"events": [...], "batches": [...]}`), then row frames
`J` (a JSON list of thin job rows, THIN_COLUMNS), then `C` (cache rows, CACHE_COLUMNS) and
`P` ((cid, origin) rows), then `T`, the trailer (snapstream.Trailer with "v": 3), last. The
row frames' bytes (headers included) are hashed in order into the trailer's content digest
(STREAM_DOMAIN_V3). `?part=jobs` sends no C/P frames; `?part=rows` no J frames, no events,
and a trailer over empty heads and floors (it stands for no event)."""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from peer.jsontext import compact, loads_within
from peer.log.ids import hex_digits
from peer.log.snapstream import (
    MAX_LINE_BYTES,
    StreamError,
    Trailer,
    against,
    check_facts,
    check_provider,
    checked_keys,
    facts_cids,
    object_text,
)

MAGIC = b"BANZAI-SNAPSHOT-3\n"
CONTENT_TYPE = "application/x-banzai-snapshot-v3"
FEATURE = "snapshot-v3"  # announced in heartbeats and MEMBER events: it serves `?v=3`
HEADER = struct.Struct(">cI")
MAX_FRAME_BYTES = 32 << 20  # a row frame (the events frame: MAX_LINE_BYTES)
ROWS_PER_FRAME = 4096  # a slice of `Compactor.ingest` is about one frame
RECORD_DOMAIN = b"banzai-job-record-v1\n"
THIN_KEYS = ("tasks", "outputs")  # what a thin list entry leaves out (the full one has them)
_LITTLE = sys.byteorder == "little"


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def _dumps(obj: Any) -> str:
    return compact(obj)


# -- what a thin row holds ---------------------------------------------------------------


def record_sha(summary: str, record: str, facts: str) -> str:
    """The hash a thin row carries of a job's full texts (its list entry, record and facts,
    as the index stores them; compact JSON never holds a raw newline)."""
    return hashlib.sha256(RECORD_DOMAIN + summary.encode() + b"\n" + record.encode() + b"\n"
                          + facts.encode()).hexdigest()


def outputs_sha(outputs: Iterable[Any]) -> str:
    return hashlib.sha256(_canon(sorted(str(c) for c in outputs))).hexdigest()[:32]


def thin(summary: str, record: str, facts: str) -> tuple[str, str, str]:
    """(thin summary, thin facts, record_sha) of a job's full texts: the list entry without
    its per-task lists (`tasks` empty, `n_tasks`, `partial`), the facts without the output
    and log CIDs (their hash instead). ValueError if a text is not a JSON object (the
    record: not an object's text, snapstream.object_text; it is not parsed)."""
    s, f = json.loads(summary), json.loads(facts)
    if not (isinstance(s, dict) and isinstance(f, dict) and object_text(record)):
        raise ValueError("a summary, record or facts that is not an object")
    tasks = s.get("tasks")
    small = {k: v for k, v in s.items() if k not in THIN_KEYS}
    small.update(tasks=[], outputs={}, partial=True,
                 n_tasks=len(tasks) if isinstance(tasks, list) else 0)
    small_facts = {"finished_s": f.get("finished_s", 0.0),
                   "outputs_sha": outputs_sha(facts_cids(f))}
    return _dumps(small), _dumps(small_facts), record_sha(summary, record, facts)


def is_record_sha(v: Any) -> bool:
    """Is `v` a `record_sha` (64 hex digits), as a thin row carries it?"""
    return hex_digits(v, 64)


def is_outputs_sha(v: Any) -> bool:
    """Is `v` an `outputs_sha` (32 hex digits), as a thin row's facts carry it?"""
    return hex_digits(v, 32)


def job_digest3(job: str, h: int, o: str, q: int, ended: int, state: str, osha: str) -> str:
    """What two honest peers holding one compacted job agree on (version 3 of
    snapstream.job_digest: the outputs by their hash, which a thin row carries)."""
    return hashlib.sha256(_canon([job, h, o, q, ended, state, osha])).hexdigest()[:32]


def thin_digest(row: Sequence[Any]) -> str:
    """job_digest3 of a thin row (THIN_COLUMNS)."""
    facts = json.loads(row[7])
    return job_digest3(row[0], row[1], row[2], row[3], row[4], row[5],
                       str(facts.get("outputs_sha", "")))


THIN_COLUMNS = ("job", "hlc", "origin", "seq", "ended", "state", "summary", "facts", "sha")


# -- encoding (the sender) ---------------------------------------------------------------


def frame(tag: bytes, payload: bytes) -> bytes:
    return HEADER.pack(tag, len(payload)) + payload


def _ints(values: Iterable[int]) -> bytes:
    a = array("q", values)
    if not _LITTLE:
        a.byteswap()
    return a.tobytes()


def _idx(values: Sequence[str]) -> tuple[list[str], bytes]:
    names = sorted(set(values))
    at = {o: i for i, o in enumerate(names)}
    a = array("I", map(at.__getitem__, values))
    if not _LITTLE:
        a.byteswap()
    return names, a.tobytes()


def _sections(head: Any, *parts: bytes) -> bytes:
    h = _canon(head)
    return b"".join(struct.pack(">I", len(p)) + p for p in (h, *parts))


def _clean(rows: Sequence[Sequence[Any]], texts: Sequence[int]) -> list[Sequence[Any]]:
    """Rows whose texts hold no NUL (the separator); a text with one cannot come from an
    event the door passed as a key or CID, and is left out of the snapshot."""
    return [r for r in rows if not any("\0" in r[i] for i in texts)]


def cache_frame(rows: Sequence[Sequence[Any]]) -> bytes:
    """A `C` frame of cache rows (CACHE_COLUMNS: kind, k, v, hlc, origin, seq); b"" if no row
    is left."""
    k = v = ""
    for _attempt in (0, 1):
        if not rows:
            return b""
        kinds, keys, vals, hlcs, origins, seqs = zip(*rows, strict=True)
        k, v = "\0".join(keys), "\0".join(vals)
        if k.count("\0") + v.count("\0") == 2 * (len(rows) - 1):
            break
        rows = _clean(rows, (1, 2))
    names, oidx = _idx(origins)
    return frame(b"C", _sections({"n": len(rows), "origins": names}, bytes(kinds), _ints(hlcs),
                                 _ints(seqs), oidx, k.encode(), v.encode()))


def provider_frame(rows: Sequence[Sequence[Any]]) -> bytes:
    """A `P` frame of (cid, origin) rows; b"" if no row is left."""
    c = ""
    for _attempt in (0, 1):
        if not rows:
            return b""
        cids, origins = zip(*rows, strict=True)
        c = "\0".join(cids)
        if c.count("\0") == len(rows) - 1:
            break
        rows = _clean(rows, (0,))
    names, oidx = _idx(origins)
    return frame(b"P", _sections({"n": len(rows), "origins": names}, oidx, c.encode()))


def job_frame(rows: Sequence[Sequence[Any]]) -> bytes:
    """A `J` frame of thin job rows (THIN_COLUMNS)."""
    return frame(b"J", _dumps([list(r) for r in rows]).encode())


def row_frames(batches: Iterable[tuple[str, Sequence[Sequence[Any]]]]) -> Iterator[bytes]:
    """The frames of batches of rows: ("t", thin job rows), ("c", cache rows), ("p",
    provider rows); a batch over ROWS_PER_FRAME rows goes in several frames."""
    make = {"t": job_frame, "c": cache_frame, "p": provider_frame}
    for tag, rows in batches:
        for i in range(0, len(rows), ROWS_PER_FRAME):
            out = make[tag](rows[i:i + ROWS_PER_FRAME])
            if out:
                yield out


# -- receiving ----------------------------------------------------------------------------


@dataclass
class FrameSpool:
    """The receiving side: `feed` the body's bytes as they come; the events frame is kept
    (`head`), the row frames are hashed and written to `out`, the trailer frame must come
    last. StreamError on a bad magic, an unknown tag, a frame out of place or over its bound,
    or a body over `max_bytes`."""

    out: IO[bytes]
    max_bytes: int
    head: bytes | None = None
    rows_sha: Any = field(default_factory=hashlib.sha256)
    total: int = 0
    _tail: bytes | None = None
    _buf: bytearray = field(default_factory=bytearray)
    _magic: bool = False

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.max_bytes:
            raise StreamError(f"a snapshot over {self.max_bytes} bytes")
        self._buf += chunk
        if not self._magic:
            if len(self._buf) < len(MAGIC):
                return
            if self._buf[:len(MAGIC)] != MAGIC:
                raise StreamError("not a version 3 snapshot")
            del self._buf[:len(MAGIC)]
            self._magic = True
        at = 0
        while len(self._buf) - at >= HEADER.size:
            tag, n = HEADER.unpack_from(self._buf, at)
            self._check(tag, n)
            end = at + HEADER.size + n
            if len(self._buf) < end:
                break
            self._take(tag, self._buf, at, end)
            at = end
        del self._buf[:at]

    def _check(self, tag: bytes, n: int) -> None:
        if self._tail is not None:
            raise StreamError("bytes after the trailer")
        if tag == b"E":
            if self.head is not None or n > MAX_LINE_BYTES:
                raise StreamError("a second or oversized events frame")
        elif tag in (b"J", b"C", b"P", b"T"):
            if self.head is None:
                raise StreamError("a frame before the events frame")
            if n > MAX_FRAME_BYTES:
                raise StreamError("a frame over its bound")
        else:
            raise StreamError(f"an unknown frame {tag!r}")

    def _take(self, tag: bytes, buf: bytearray, at: int, end: int) -> None:
        if tag == b"E":
            self.head = bytes(buf[at + HEADER.size:end])
        elif tag == b"T":
            self._tail = bytes(buf[at + HEADER.size:end])
        else:
            view = memoryview(buf)[at:end]
            self.rows_sha.update(view)
            self.out.write(view)
            view.release()

    def trailer(self) -> Trailer:
        """The body ended: its trailer (StreamError if it is missing or bytes follow it)."""
        if self.head is None or self._tail is None or self._buf:
            raise StreamError("a snapshot stream without its trailer")
        return Trailer.parse(self._tail, self.rows_sha.digest(), v=3)


def _split(payload: bytes, parts: int) -> tuple[Any, list[bytes]]:
    """The JSON head and the `parts` sections of a row frame's payload."""
    out: list[bytes] = []
    at = 0
    for _ in range(parts + 1):
        if len(payload) - at < 4:
            raise StreamError("a truncated section")
        (n,) = struct.unpack_from(">I", payload, at)
        at += 4
        if len(payload) - at < n:
            raise StreamError("a section longer than its frame")
        out.append(payload[at:at + n])
        at += n
    if at != len(payload):
        raise StreamError("bytes after a frame's sections")
    head = json.loads(out[0])
    if not isinstance(head, dict) or type(head.get("n")) is not int or not (
            0 < head["n"] <= ROWS_PER_FRAME):
        raise StreamError("a frame's row count")
    names = head.get("origins")
    if not (isinstance(names, list) and names and all(type(o) is str and o for o in names)):
        raise StreamError("a frame's origins")
    return head, out[1:]


def _uints(raw: bytes, code: str, n: int) -> array[int]:
    a = array(code)
    if len(raw) != a.itemsize * n:
        raise StreamError("a column of the wrong length")
    a.frombytes(raw)
    if not _LITTLE:
        a.byteswap()
    if n and min(a) < 0:
        raise StreamError("a negative integer")
    return a


def _texts(raw: bytes, n: int) -> list[str]:
    out = raw.decode("utf-8").split("\0")
    if len(out) != n:
        raise StreamError("a text column of the wrong length")
    return out


def _origins(names: list[str], raw: bytes, n: int) -> list[str]:
    idx = _uints(raw, "I", n)
    if max(idx) >= len(names):
        raise StreamError("an origin out of range")
    return list(map(names.__getitem__, idx))


def decode_cache(payload: bytes) -> list[tuple[Any, ...]]:
    """The checked rows (CACHE_COLUMNS) of a `C` frame; values are parsed when read."""
    head, (kinds, hlcs, seqs, oidx, keys, vals) = _split(payload, 6)
    n = head["n"]
    if len(kinds) != n or kinds.translate(None, b"\x00\x01"):
        raise StreamError("a cache kind out of range")
    return list(zip(kinds, _texts(keys, n), _texts(vals, n), _uints(hlcs, "q", n),
                    _origins(head["origins"], oidx, n), _uints(seqs, "q", n), strict=True))


def decode_providers(payload: bytes) -> list[tuple[Any, ...]]:
    """The checked (cid, origin) rows of a `P` frame (each as version 2 checks it:
    snapstream.check_provider, two texts; the index leaves out a row whose texts are not a
    CID and a peer id as it stores the rows)."""
    head, (oidx, cids) = _split(payload, 2)
    n = head["n"]
    return [check_provider(list(r)) for r in zip(
        _texts(cids, n), _origins(head["origins"], oidx, n), strict=True)]


def _obj(v: Any) -> str:
    if type(v) is not str or not isinstance(loads_within(v), dict):
        raise StreamError("expected the JSON text of an object")
    return v


def check_thin(r: Any) -> tuple[Any, ...]:
    """A thin job row (THIN_COLUMNS) fit to store: its summary and facts parse, its record's
    hash is 64 hex digits."""
    if type(r) is not list or len(r) != len(THIN_COLUMNS):
        raise StreamError("a thin job row of the wrong shape")
    sha = r[8]
    if not is_record_sha(sha):
        raise StreamError("a record hash that is not 64 hex digits")
    facts = loads_within(r[7]) if type(r[7]) is str else None
    if not isinstance(facts, dict):
        raise StreamError("a thin job row whose facts are not the JSON text of an object")
    check_facts(facts)
    return (*checked_keys(r, "a thin job row"), _obj(r[6]), r[7], sha)


def decode_jobs(payload: bytes) -> list[tuple[Any, ...]]:
    rows = json.loads(payload)
    if type(rows) is not list or not 0 < len(rows) <= ROWS_PER_FRAME:
        raise StreamError("a job frame's rows")
    return [check_thin(r) for r in rows]


DECODE = {b"J": ("t", decode_jobs), b"C": ("c", decode_cache), b"P": ("p", decode_providers)}


def _decode(tag: bytes, payload: bytes) -> tuple[str, list[tuple[Any, ...]]]:
    if tag not in DECODE:
        raise StreamError(f"an unknown frame {tag!r}")
    name, decode = DECODE[tag]
    try:
        return name, decode(payload)
    except StreamError:
        raise
    except (TypeError, ValueError, KeyError, OverflowError, RecursionError) as e:
        raise StreamError(f"a malformed frame: {e!s:.60}") from None


def _next(f: IO[bytes]) -> tuple[bytes, bytes] | None:
    """The next (tag, payload) of spooled frames, None at the end."""
    hdr = f.read(HEADER.size)
    if not hdr:
        return None
    if len(hdr) != HEADER.size:
        raise StreamError("a truncated frame header")
    tag, n = HEADER.unpack(hdr)
    if n > MAX_FRAME_BYTES:
        raise StreamError("a frame over its bound")
    payload = f.read(n)
    if len(payload) != n:
        raise StreamError("a truncated frame")
    return tag, payload


def iter_frames(f: IO[bytes], at: int = 0,
                ) -> Iterator[tuple[int, str, list[tuple[Any, ...]]]]:
    """(offset after it, name, checked rows) of each spooled row frame from offset `at`
    (`f` positioned there): ("t", thin job rows), ("c", cache rows), ("p", provider rows).
    StreamError on anything malformed."""
    while (got := _next(f)) is not None:
        tag, payload = got
        at += HEADER.size + len(payload)
        name, rows = _decode(tag, payload)
        yield at, name, rows


def read_frames(f: IO[bytes]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """The checked rows of spooled row frames, a frame at a time (`iter_frames`). StreamError
    on anything malformed (the caller takes nothing of a stream that raises)."""
    for _, name, rows in iter_frames(f):
        yield name, rows


def read_jobs(f: IO[bytes]) -> tuple[list[tuple[str, list[tuple[Any, ...]]]], int]:
    """The checked thin job rows of the leading `J` frames of a spool (a sender sends them
    first) and the offset of the first frame after them (cache and provider rows, taken
    later, a frame at a time: `iter_frames`)."""
    out: list[tuple[str, list[tuple[Any, ...]]]] = []
    at = 0
    while (got := _next(f)) is not None:
        tag, payload = got
        if tag != b"J":
            return out, at
        out.append(_decode(tag, payload))
        at += HEADER.size + len(payload)
    return out, at


def against3(batches: Iterable[tuple[str, list[tuple[Any, ...]]]],
             digests: Mapping[str, str] | None) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """`snapstream.against` for thin rows; a bare one (`is_bare`) is not compared."""
    return against(batches, digests, tag="t", digest=thin_digest,
                   compared=lambda r: not is_bare(r[6]))


def is_bare(summary: Any) -> bool:
    """Does a thin row's summary (its text) say that its record was made without its
    outputs (`outputs_unlisted`: a JOB_ENDED's listing not folded by the horizon,
    peer.log.compact.Compactor.bare)? Such a row is left out of the per-job digests a
    second member's check compares (`JobIndex.thin_digests`, `against3`): another honest
    peer that fetched the listing made the record with them, so the outputs hash differs
    for good (review r1 of session 46, F6)."""
    if not isinstance(summary, str) or '"outputs_unlisted"' not in summary:
        return False  # (most rows: no parse)
    try:
        s = json.loads(summary)
    except ValueError:
        return False
    return isinstance(s, dict) and "outputs_unlisted" in s


def check_record(sha: str, texts: Any) -> tuple[str, str, str]:
    """A job's full texts fetched on demand ([summary, record, facts]) if they hash to the
    thin row's `sha` and each is a JSON object; else StreamError. In a worker thread: each
    text (up to a snapshot line's 256 MiB) is parsed with `sharing`, as the answer around
    them was (catchup.fetch_record), so that the event loop runs meanwhile."""
    if not (isinstance(texts, list) and len(texts) == 3 and all(type(t) is str for t in texts)):
        raise StreamError("a record answer of the wrong shape")
    summary, record, facts = texts
    if record_sha(summary, record, facts) != sha:
        raise StreamError("a record whose hash is not its summary's")
    for t in texts:
        try:
            ok = isinstance(loads_within(t, sharing=True), dict)  # (ValueError: too deep)
        except ValueError:
            ok = False
        if not ok:
            raise StreamError("a record text that is not a JSON object")
    return summary, record, facts


__all__ = ["CONTENT_TYPE", "DECODE", "FEATURE", "MAGIC", "MAX_FRAME_BYTES", "RECORD_DOMAIN",
           "ROWS_PER_FRAME", "THIN_COLUMNS", "FrameSpool", "against3", "cache_frame",
           "check_record", "check_thin", "decode_cache", "decode_jobs", "decode_providers",
           "frame", "is_bare", "is_outputs_sha", "is_record_sha", "iter_frames", "job_digest3",
           "job_frame", "outputs_sha", "provider_frame", "read_frames", "read_jobs",
           "record_sha", "row_frames", "thin", "thin_digest"]

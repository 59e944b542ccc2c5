"""Snapshots as a stream (issue 11 item 3, version 2): the job index's rows travel as lines of
JSON, hashed as they pass and signed in a trailer, so that neither side holds the whole
snapshot nor re-encodes its records; the receiver spools and hashes the lines, checks the
trailer, then checks and takes the rows in bulk. Pure (I/O only on the files it is given).

The body: a first line `{"events": [...], "batches": [...]}` (events in their signed batches,
checked like a frame's; not part of the snapshot's digest), then row lines `["j", [rows]]`,
`["c", [rows]]`, `["p", [rows]]` (peer.log.jobindex JOB_COLUMNS, CACHE_COLUMNS, (cid, origin);
the records' JSON texts as strings, as the index stores them), each ending with a newline,
then the trailer without one: `{"v": 2, "signer", "key", "admit", "heads", "floors", "rows",
"sig"}`. content digest = sha256(domain + canonical [heads, floors, rows] + sha256(the row
lines' bytes)); the signature is over sha256(domain + signer + key + content digest)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from peer.cids import parse_cid
from peer.errors import BadCID
from peer.jsontext import is_text, loads_within
from peer.log.events import MAX_CID_CHARS, MAX_ID_CHARS
from peer.log.signing import Identity, _str_bytes

STREAM_DOMAIN = b"banzai-snapshot-v2\n"
STREAM_DOMAIN_V3 = b"banzai-snapshot-v3\n"  # peer.log.snapframe's streams
_DOMAINS = {2: STREAM_DOMAIN, 3: STREAM_DOMAIN_V3}
MAX_LINE_BYTES = 256 << 20  # a job's record of tens of thousands of tasks fits
MAX_ROWS_PER_LINE = 4096
LINE_BYTES = 1 << 20  # a row line is closed once it holds this much (or MAX_ROWS_PER_LINE)


class StreamError(ValueError):
    """A malformed snapshot stream (nothing of it is taken)."""


def _canon(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=True).encode()


def _line(tag: str, rows: list[Any]) -> bytes:
    return json.dumps([tag, rows], separators=(",", ":")).encode() + b"\n"


def row_lines(rows: Iterable[tuple[str, list[tuple[Any, ...]]]]) -> Iterator[bytes]:
    """The row lines of batches of index rows (peer.log.jobindex.raw_rows): at most
    MAX_ROWS_PER_LINE rows or about LINE_BYTES per line."""
    for tag, batch in rows:
        out: list[Any] = []
        size = 0
        for r in batch:
            out.append(r)
            size += sum(len(v) for v in r if isinstance(v, str))
            if size >= LINE_BYTES or len(out) >= MAX_ROWS_PER_LINE:
                yield _line(tag, out)
                out, size = [], 0
        if out:
            yield _line(tag, out)


def content_digest(heads: Mapping[str, int], floors: Mapping[str, int], rows: int,
                   rows_sha: bytes, v: int = 2) -> bytes:
    return hashlib.sha256(_DOMAINS[v] + _canon([dict(heads), dict(floors), rows])
                          + rows_sha).digest()


def signed_digest(signer: str, key: bytes, content: bytes, v: int = 2) -> bytes:
    return hashlib.sha256(_DOMAINS[v] + _str_bytes(signer) + key + content).digest()


@dataclass(frozen=True)
class Trailer:
    """What a stream's last line says and signs; `rows_sha` is the receiver's hash of the
    row lines it got (not sent: computed)."""

    signer: str
    key: bytes
    admit: bytes | None
    heads: Mapping[str, int]
    floors: Mapping[str, int]
    rows: int
    sig: bytes
    rows_sha: bytes = b""
    v: int = 2  # 3: peer.log.snapframe's (another domain)

    def content_digest(self) -> bytes:
        return content_digest(self.heads, self.floors, self.rows, self.rows_sha, self.v)

    def signed_digest(self) -> bytes:
        return signed_digest(self.signer, self.key, self.content_digest(), self.v)

    @staticmethod
    def make(me: Identity, signer: str, admit: bytes | None, heads: Mapping[str, int],
             floors: Mapping[str, int], rows: int, rows_sha: bytes, v: int = 2) -> bytes:
        """The trailer line (no newline) of a stream whose row lines hash to `rows_sha`."""
        sig = me.sign(signed_digest(signer, me.key,
                                    content_digest(heads, floors, rows, rows_sha, v), v))
        return json.dumps({"v": v, "signer": signer, "key": me.key.hex(),
                           "admit": None if admit is None else admit.hex(),
                           "heads": dict(heads), "floors": dict(floors), "rows": rows,
                           "sig": sig.hex()}, separators=(",", ":")).encode()

    @staticmethod
    def parse(raw: bytes, rows_sha: bytes, v: int = 2) -> Trailer:
        """StreamError if `raw` is not a well-formed trailer of version `v`."""
        try:
            d = json.loads(raw)
            heads, floors = _vv(d["heads"]), _vv(d["floors"])
            rows = d["rows"]
            if d.get("v") != v or not isinstance(d["signer"], str) or type(rows) is not int:
                raise StreamError("version, signer or rows")
            admit = None if d.get("admit") is None else bytes.fromhex(d["admit"])
            return Trailer(d["signer"], bytes.fromhex(d["key"]), admit, heads, floors, rows,
                           bytes.fromhex(d["sig"]), rows_sha, v)
        except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as e:
            raise StreamError(f"malformed trailer: {e!s:.60}") from None


def _vv(d: Any) -> dict[str, int]:
    if not (isinstance(d, dict) and all(isinstance(o, str) and type(q) is int and q >= 0
                                        for o, q in d.items())):
        raise StreamError("not a version vector")
    return d


@dataclass
class Spool:
    """The receiving side: `feed` the body's bytes as they come; the first line is kept
    (`head`), the row lines are hashed and written to `out`, the trailer is the unterminated
    tail at the end. StreamError on a line over MAX_LINE_BYTES or a body over `max_bytes`."""

    out: IO[bytes]
    max_bytes: int
    head: bytes | None = None
    rows_sha: Any = field(default_factory=hashlib.sha256)
    total: int = 0
    _tail: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        if self.total > self.max_bytes:
            raise StreamError(f"a snapshot over {self.max_bytes} bytes")
        self._tail += chunk
        end = self._tail.rfind(b"\n")
        if end < 0:
            if len(self._tail) > MAX_LINE_BYTES:
                raise StreamError("a line too long")
            return
        done = bytes(self._tail[:end + 1])
        del self._tail[:end + 1]
        if self.head is None:
            first = done.find(b"\n")
            self.head, done = done[:first], done[first + 1:]
        self.rows_sha.update(done)
        self.out.write(done)

    def trailer(self) -> Trailer:
        """The body ended: its trailer (StreamError if there is none)."""
        if self.head is None or not self._tail:
            raise StreamError("a snapshot stream without its trailer")
        return Trailer.parse(bytes(self._tail), self.rows_sha.digest())


# -- checking the rows (every byte came from a socket) -----------------------------------


def checked_str(v: Any) -> str:
    """`v` if it is a string (a row's field from a socket), else StreamError."""
    if type(v) is not str:
        raise StreamError("expected a string")
    return v


def _json_text(v: Any, kind: type) -> Any:
    """The value of a JSON text of `kind` (dict or list), as the index stores it."""
    value = loads_within(v) if type(v) is str else None  # (ValueError if deep)
    if not isinstance(value, kind):
        raise StreamError("expected the JSON text of an object")
    return value


def facts_cids(facts: Mapping[str, Any], key: str = "outputs") -> list[str]:
    """A job's facts' `outputs` (or `logs`): the list of CIDs `record_facts` writes (absent:
    none); StreamError (a ValueError) if it is anything else, as a member's row may hold."""
    v = facts.get(key, [])
    if type(v) is not list or not all(type(c) is str for c in v):
        raise StreamError(f"a job's facts.{key} is not a list of CIDs")
    return v


def check_facts(facts: Mapping[str, Any]) -> None:
    """A job's facts as `record_facts` writes them, for retention (`archived_facts`): its
    `finished_s` a time, `outputs` and `logs` lists of CIDs; StreamError (a ValueError)
    naming what is not (a member's snapshot row may hold anything)."""
    finished = facts.get("finished_s", 0.0)
    if type(finished) not in (int, float) or not -MAX_TIME_S <= finished <= MAX_TIME_S:
        raise StreamError(f"a job's facts.finished_s is {finished!r:.40}, not a time")
    facts_cids(facts, "outputs")
    facts_cids(facts, "logs")


MAX_TIME_S = 1e12  # a job's facts.finished_s (Unix seconds) beyond this is no time


# The columns of the job index's tables as it writes them (and a snapshot carries them):
# name and kind ("s" a string, "u" an integer >= 0, "k" a cache kind, "c" a CID, "o" a peer
# id). A job row's key columns are the first six of JOB_COLUMNS and of
# snapframe.THIN_COLUMNS.
JOB_KEYS = (("job", "s"), ("hlc", "u"), ("origin", "s"), ("seq", "u"), ("ended", "u"),
            ("state", "s"))
CACHE_KINDS = (("kind", "k"), ("k", "s"), ("v", "s"), ("hlc", "u"), ("origin", "s"),
               ("seq", "u"))
PROVIDER_KINDS = (("cid", "c"), ("origin", "o"))
# A provider row's shape in a snapshot: two texts. A peer of release e418a64 stored (and sends)
# any text a member's PROVIDE named: its receiver takes the stream and leaves such a row out
# (JobIndex.put_batches, put_rows: PROVIDER_KINDS), refusing only a row not of this shape.
PROVIDER_TEXTS = (("cid", "s"), ("origin", "s"))


def _fits(v: Any, kind: str) -> bool:
    t = type(v)
    if kind == "u":
        return t is int and v >= 0
    if kind == "k":
        return t is int and v in (0, 1)
    if kind == "c":
        return t is str and 0 < len(v) <= MAX_CID_CHARS and _parses(v)
    if kind == "o":  # (an event's origin, as peer.log.events checks it)
        return t is str and 0 < len(v) <= MAX_ID_CHARS and is_text(v)
    return t is str


def _parses(cid: str) -> bool:
    """Does the project's CID parser take `cid` (a PROVIDE's CID, as the store names it)?"""
    try:
        parse_cid(cid)
    except BadCID:
        return False
    return True


def row_fault(r: Sequence[Any], columns: Sequence[tuple[str, str]]) -> str | None:
    """The name of the first of `columns` (JOB_KEYS, CACHE_KINDS, PROVIDER_KINDS) whose value
    in the row `r` is not of its kind (a row read back from the file or from a socket), None
    if each is (or "shape" if `r` is not a sequence of at least that many values). Pure."""
    if not isinstance(r, list | tuple) or len(r) < len(columns):
        return "shape"
    for (name, kind), v in zip(columns, r, strict=False):
        if not _fits(v, kind):
            return name
    return None


def checked_keys(r: Sequence[Any], what: str = "a job row") -> tuple[Any, ...]:
    """A job row's key columns (JOB_KEYS) if each is of its kind, else StreamError naming
    the column."""
    bad = row_fault(r, JOB_KEYS)
    if bad is not None:
        raise StreamError(f"{what} whose {bad} is not what the index writes there")
    return tuple(r[:6])


def object_text(v: Any) -> bool:
    """Is `v` a text the index writes as a JSON object (compact JSON: its first character is
    "{")? Not parsed (a job's record is most of a snapshot's bytes): a JSON text that begins
    so is an object if it parses at all, and one that does not parse is a DataError when
    read (`JobIndex.record`: the API's 503). A text that parses to anything else (a list, a
    number) is not."""
    return type(v) is str and v[:1] == "{"


def check_job(r: Any) -> tuple[Any, ...]:
    """A job row (JOB_COLUMNS) fit to store: its summary and facts must parse (the job list
    and retention read them in bulk), the facts' outputs and logs be lists of CIDs (digests
    and thin rows read them); its full record (most of the bytes) must be an object's text
    (`object_text`) and is parsed when it is read, one job at a time (`JobIndex.record`: a
    malformed one is a DataError, the API's 503)."""
    if type(r) is not list or len(r) != 9:
        raise StreamError("a job row of the wrong shape")
    check_facts(_json_text(r[8], dict))
    _json_text(r[6], dict)
    if not object_text(r[7]):
        raise StreamError("a job row whose record is not the JSON text of an object")
    return (*checked_keys(r), r[6], r[7], r[8])


def check_cache(r: Any) -> tuple[Any, ...]:
    """A cache row (CACHE_COLUMNS); its value's JSON text is parsed when read
    (`JobIndex.entry`: a malformed one reads as absent)."""
    if type(r) is not list or len(r) != 6:
        raise StreamError("a cache row of the wrong shape")
    bad = row_fault(r, CACHE_KINDS)
    if bad is not None:
        raise StreamError(f"a cache row whose {bad} is not what the index writes there")
    return tuple(r)


def check_provider(r: Any) -> tuple[Any, ...]:
    """A provider row (cid, origin) of two texts (PROVIDER_TEXTS); whether they are a CID and
    a peer id (PROVIDER_KINDS) is the index's check as it stores the row (the rest of an
    older peer's honest stream is taken)."""
    if type(r) is not list or len(r) != 2:
        raise StreamError("a provider row of the wrong shape")
    bad = row_fault(r, PROVIDER_TEXTS)
    if bad is not None:
        raise StreamError(f"a provider row whose {bad} is not what the index writes there")
    return tuple(r)


CHECKS = {"j": check_job, "c": check_cache, "p": check_provider}


def read_rows(lines: Iterable[bytes]) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """The checked rows of spooled row lines, a line at a time: (tag, rows). StreamError on
    anything malformed (the caller takes nothing of a stream that raises)."""
    for raw in lines:
        try:
            tag, rows = json.loads(raw)
            check = CHECKS[tag]
            if type(rows) is not list or len(rows) > MAX_ROWS_PER_LINE:
                raise StreamError("rows")
            yield tag, [check(r) for r in rows]
        except (TypeError, ValueError, KeyError, RecursionError) as e:
            raise StreamError(f"a malformed row line: {e!s:.60}") from None


class Mismatch(StreamError):
    """A job row differs from a second member's digest of that job."""


def against(batches: Iterable[tuple[str, list[tuple[Any, ...]]]],
            digests: Mapping[str, str] | None, tag: str = "j",
            digest: Callable[[tuple[Any, ...]], str] | None = None,
            compared: Callable[[tuple[Any, ...]], bool] | None = None,
            ) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """The batches, each job row checked against a second member's digest of that job
    (`job_digest`) when it holds the job: jobs only one of them holds are not compared
    (one may have compacted, or dropped past the horizon, what the other still holds).
    Mismatch on a difference. `tag` and `digest`: another kind of job row (snapframe's thin
    rows); `compared`: False for a row left out of the comparison (snapframe.is_bare)."""
    of = digest or job_digest
    for t, rows in batches:
        if t == tag and digests:
            for r in rows:
                d = digests.get(r[0])
                if d is not None and (compared is None or compared(r)) and d != of(r):
                    raise Mismatch(f"job {r[0]!r} differs from a second member's")
        yield t, rows


def job_digest(row: tuple[Any, ...] | list[Any]) -> str:
    """What two honest peers holding one compacted job agree on (a second member's check):
    its name, order, end, state and outputs (its record's form may differ between
    releases)."""
    job, h, o, q, ended, state = row[:6]
    facts = row[8]
    outputs = facts_cids(json.loads(facts) if isinstance(facts, str) else facts or {})
    return hashlib.sha256(_canon([job, h, o, q, ended, state, sorted(outputs)])).hexdigest()[:32]


__all__ = ["CACHE_KINDS", "CHECKS", "JOB_KEYS", "MAX_LINE_BYTES", "PROVIDER_KINDS",
           "PROVIDER_TEXTS", "STREAM_DOMAIN", "STREAM_DOMAIN_V3", "Mismatch", "Spool",
           "StreamError", "Trailer", "against", "check_cache", "check_job", "check_provider",
           "checked_keys", "content_digest", "facts_cids", "job_digest", "object_text",
           "read_rows", "row_fault", "row_lines", "signed_digest"]

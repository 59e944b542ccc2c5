"""Compaction's peer side: the pass loop, compacted jobs' records, and snapshots served to
and taken from other members (catch-up of a peer behind the compaction horizon).

Loop-owned: every method runs on the peer's event loop, except the generators of
`snapshot_stream`, which read SQLite on a connection of their own (the events too, spooled to
tmp/ and sent in pieces) in any one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import logging
import os
import sqlite3
import time
from collections.abc import (
    AsyncGenerator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

import aiohttp

from peer.dataentry import (
    TMP_DIR,
    check_entry,
    open_dir,
    open_file,
    open_new,
    remove,
    temp_file,
    unlink_in,
)
from peer.errors import BanzaiError, ConfigError, DataError, Unavailable
from peer.jsontext import loads_within, pieces
from peer.log import Event, EventLog, MeshState
from peer.log.compact import Compactor, PassStats, Snapshot, check_snapshot
from peer.log.jobindex import (
    SPOOL_DIR,
    SPOOL_DIR_WHAT,
    JobIndex,
    compact_floors,
    raw_rows,
    spool_name,
    thin_rows,
)
from peer.log.lanes import is_lane
from peer.log.signing import Identity, MemberKeys, decode_events
from peer.log.snapframe import CONTENT_TYPE as SNAPSHOT_TYPE_V3
from peer.log.snapframe import FEATURE as SNAPSHOT_FEATURE
from peer.log.snapframe import (
    HEADER,
    MAGIC,
    FrameSpool,
    against3,
    check_record,
    frame,
    is_bare,
    job_digest3,
    read_jobs,
    row_frames,
    thin_digest,
)
from peer.log.snapstream import (
    MAX_LINE_BYTES,
    Mismatch,
    Spool,
    StreamError,
    Trailer,
    against,
    job_digest,
    read_rows,
    row_lines,
)
from peer.log.sqlite import connect, stored_events, unreadable
from peer.mesh.wire import write_packed

log = logging.getLogger("banzai.catchup")
_Signed = TypeVar("_Signed", Snapshot, Trailer)
T = TypeVar("T")
# a snapshot's JSON part parsed and its events decoded (`_parse`), or why it would not parse
_Parsed = tuple[Any, list[Event | Exception] | None]


@dataclass(frozen=True)
class CatchUpConfig:
    """Settings of catch-up; an invalid value raises ConfigError at construction."""

    data_dir: Path  # the peer's: spools under tmp/, checked ones kept under snapshots/
    retry_s: float = 30.0  # a peer behind the compaction horizon asks for a snapshot this often
    timeout_s: float = 120.0  # one snapshot download (either part), whole
    record_timeout_s: float = 10.0  # a compacted job's full record fetched from one member
    # ... its answer at most this long (a gzip answer is not decompressed: its bytes are
    # the body's): a snapshot stream's line (snapstream.MAX_LINE_BYTES), the longest one
    # job's row with its full texts may be where a peer takes or serves it in a snapshot
    max_record_bytes: int = MAX_LINE_BYTES
    # A lanes job's view asked of its members (a peer that holds none of its lanes): each
    # member within view_timeout_s, all of them within view_total_s, an answer of at most
    # max_view_bytes (a job's view lists at most 1,000 chunks per task)
    view_timeout_s: float = 5.0
    view_total_s: float = 15.0
    max_view_bytes: int = 32 << 20
    max_snapshot_bytes: int = 64 << 30  # a snapshot stream longer than this is refused
    # an older peer's one snapshot body (v1) is held in memory and parsed whole (its objects
    # take several times its bytes): a longer one is refused (~190,000 compacted jobs at
    # 26 MB per 4,750; a peer that holds more is caught up from by a newer member's stream)
    max_snapshot_v1_bytes: int = 1 << 30
    # A second member's per-job digests (`?digest=1`, read into memory and parsed whole, off
    # the loop): a longer answer, or one in a Content-Encoding (never decompressed: 4 MB of
    # gzip was 4 GiB), passes to the next member as a 503 does. ~50-70 bytes a job: 16 MiB
    # is ~250,000 compacted jobs or more. Its parse, in a worker thread, still stops the loop
    # ~10-15 ms per MiB (one flat object: json's C decoder holds the GIL throughout, `sharing`
    # or not), so the bound is kept low (review r2 of session 48, H1; docs/benchmarks.md,
    # "Session 48, helper f")
    max_digests_bytes: int = 16 << 20
    # A snapshot download (either part, an older peer's one body too) that has not brought
    # `min_rate_bytes_s` per second since it was asked, once `rate_grace_s` passed, is cut
    # (at the next piece, or when the next one is that late): a member trickling bytes held
    # a catch-up for `timeout_s` (review r2 of session 48, M1)
    min_rate_bytes_s: float = 16 << 10
    rate_grace_s: float = 30.0
    # A member whose snapshot failed (an error, a cut, a refusal, or taken and still below
    # the floors it announced) is not asked again for retry_s x 2^(failures in a row - 1),
    # at most `max_backoff_s`; other members are asked meanwhile (M1)
    max_backoff_s: float = 600.0
    # When a second member's per-job digests differ from a snapshot's, the digests of more
    # members are compared, up to this many opinions in all (the first's included; members
    # with the fewest mismatches asked first, each answer bounded as the first's): the
    # snapshot is taken when its signer and those that agree with it outnumber those that
    # do not, and the outvoted side waits (`_judge`). A lone liar answering first refused
    # every signer it checked (review r2 of session 48, left; session 49, helper f)
    max_second_opinions: int = 4

    def __post_init__(self) -> None:
        for name in ("retry_s", "timeout_s", "record_timeout_s", "max_record_bytes",
                     "view_timeout_s", "view_total_s", "max_view_bytes", "max_snapshot_bytes",
                     "max_snapshot_v1_bytes", "max_digests_bytes", "min_rate_bytes_s",
                     "rate_grace_s", "max_backoff_s", "max_second_opinions"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"catch-up {name} must be positive", field=name)


_SPOOLS = itertools.count()  # spool files of one process never share a name
_NOT_JOBS = (b'["c",', b'["p",')  # a version 2 stream's lines of other rows than jobs
_SPOOL = "a snapshot download's spool"  # (named in a DataError: written O_EXCL, read O_NOFOLLOW)
PIECE_BYTES = 256 << 10  # a snapshot's events frame is sent in pieces of this size
MAX_BACKOFF_PEERS = 1024  # members remembered as failed (`CatchUp._backoff`); then the one
# free soonest gives way; as many remembered by their digests' mismatches (`CatchUp._outvoted`)
MAX_UNPROVEN = 65536  # origins whose head or floor a snapshot taken could not prove, kept
# (`CatchUp._unproven`, ~200 bytes each); past it, members' floors of the others may start a
# catch-up again, each judged as one that left our heads below them (`_judge`)


async def _read_within(r: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """An answer's body, read as it arrives; ValueError once it is longer than `max_bytes`,
    before a byte is read if its Content-Length says so."""
    if r.content_length is not None and r.content_length > max_bytes:
        raise ValueError(f"an answer longer than {max_bytes} bytes ({r.content_length})")
    got = bytearray()
    async for piece in r.content.iter_any():
        got += piece
        if len(got) > max_bytes:
            raise ValueError(f"an answer longer than {max_bytes} bytes")
    return bytes(got)


def _drop_spool(rows: Path, spool_dir: int) -> None:
    """Remove a download's spool `rows` (if still there) from the directory it was made in,
    by the descriptor `_new_spool` gave (never the same name where a symlink put at tmp/
    points), and close that descriptor."""
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(rows.name, dir_fd=spool_dir)
    finally:
        os.close(spool_dir)


def _servable(events: Iterable[Event], upto: Mapping[str, int]) -> Iterator[Event]:
    """The events an origin's limit of `CatchUpHost.servable_upto` lets through, and no
    lane's (LANES_FEATURE: a snapshot is of the mesh streams, as its heads are, every
    version alike; a fresh peer is a member of no job)."""
    return (e for e in events if e.seq <= upto.get(e.origin, e.seq)
            and ("/" not in e.origin or not is_lane(e.origin)))


def _events_line(data_dir: Path, events: Iterable[Event], before: Callable[[int], bytes],
                 after: bytes, opening: bytes = b"{") -> Iterator[bytes]:
    """A snapshot's events line (`{"events":[...],"batches":[...]}`, as `pack_frames` packs
    them into one frame; `opening` in place of its `{`: empty after a version 1 body's
    snapshot member), `before(its size)` and `after` it, in pieces of PIECE_BYTES (the ends
    joined to the first and the last): the line is written to two unnamed files in the data
    dir's tmp/ as the events come, then read back; memory holds a piece, not the log. They
    are made O_EXCL by a descriptor of tmp/ opened with its check (`open_dir`): a symlink
    put at tmp/, even after the check, is refused (DataError naming it), never followed."""
    spool_dir = open_dir(data_dir / TMP_DIR, "the peer's temp dir")
    try:
        with temp_file(spool_dir) as evs, temp_file(spool_dir) as bats:
            write_packed(events, evs.write, bats.write)
            out = before(len(opening) + len(b'"events":[],"batches":[]}') + evs.tell()
                         + bats.tell())
            out += opening + b'"events":['
            for f, tail in ((evs, b'],"batches":['), (bats, b"]}" + after)):
                f.flush()
                f.seek(0)
                while chunk := f.read(PIECE_BYTES):
                    yield out + chunk if out else chunk
                    out = b""
                out += tail
            yield out
    finally:
        os.close(spool_dir)


def _parse(data: bytes | bytearray) -> _Parsed:
    """A snapshot's JSON part (an older peer's one body, a stream's events line) parsed and
    its events decoded (`decode_events`): the work of taking it that needs nothing of the
    peer, done in a worker thread while the loop runs (the parse sharing the GIL:
    `loads_within`); ValueError if it is not JSON or nests too deep."""
    body = loads_within(data, sharing=True)
    return body, decode_events(body.get("events")) if isinstance(body, dict) else None


async def _parsed(data: bytes | bytearray) -> _Parsed | ValueError:
    """`_parse(data)` in a worker thread; the ValueError it raised, to be refused in turn."""
    try:
        return await asyncio.to_thread(_parse, data)
    except ValueError as e:
        return e


def _job_digests(second: Mapping[str, Any] | None,
                 heads: Mapping[str, int]) -> dict[str, str] | None:
    """A second member's per-job digests (`CatchUp.digest_reader`) if it reported the same
    heads as the snapshot's (it then holds the same events), else None (not compared)."""
    if second is None or second.get("heads") != dict(heads):
        return None
    jobs = second.get("jobs")
    if not isinstance(jobs, dict) or not all(isinstance(v, str) for v in jobs.values()):
        return None
    return jobs


def _whole_digest(second: Mapping[str, Any] | None, snap: Snapshot) -> bytes | None:
    """An older second member's one digest of its whole snapshot, if it reported the same
    heads and floors as `snap` (a snapshot of the previous form), else None."""
    if (second is not None and second.get("heads") == dict(snap.heads)
            and second.get("floors") == snap.records.get("floors") and "digest" in second):
        try:
            return bytes.fromhex(str(second.get("digest", "")))
        except ValueError:  # (not hex: a garbled answer, no opinion; it raised out of the
            return None  # take, and the signer was judged for it)
    return None


def _agrees(records: Mapping[str, Any], digests: Mapping[str, str] | None) -> bool:
    """The job records of a snapshot of the previous form agree with a second member's
    per-job digests (for the jobs it holds; malformed records are refused later)."""
    if not digests:
        return True
    try:
        return all(digests.get(r[0], d) == d for r in records["jobs"]
                   if (d := job_digest(r)) is not None)
    except (KeyError, TypeError, ValueError, AttributeError):
        return True


def _verdict(batches: Iterable[tuple[str, Sequence[Any]]], digests: Mapping[str, str],
             tag: str = "j", of: Callable[[Any], str] = job_digest,
             compared: Callable[[Any], bool] | None = None) -> bool | None:
    """Does a second member's per-job `digests` agree with a snapshot's job rows (of `tag`,
    each digested by `of`; `compared`: False for a row left out, as `against`'s)? True if
    every job both hold agrees and there is one, False at the first that differs, None if
    they hold no job in common (no opinion: it counts neither way in `CatchUp._vote`)."""
    seen = False
    for t, rows in batches:
        if t != tag:
            continue
        for r in rows:
            d = digests.get(r[0])
            if d is None or (compared is not None and not compared(r)):
                continue
            if d != of(r):
                return False
            seen = True
    return True if seen else None




class CatchUpHost(Protocol):
    """What catch-up needs of its peer (peer.node.Node). Loop-owned; nothing here blocks
    but `flush` and `merge` (one SQLite write each)."""

    @property
    def peer_id(self) -> str: ...
    @property
    def state(self) -> MeshState: ...  # the folded state: read (members, heads, compacted)
    @property
    def log(self) -> EventLog: ...  # the events a snapshot serves; its SQLite file
    @property
    def identity(self) -> Identity: ...  # signs what we serve
    @property
    def admit(self) -> bytes | None: ...  # our admission tag
    @property
    def keyring(self) -> MemberKeys: ...  # checks what we take; counts refusals

    def flush(self) -> None: ...  # our emitted events to disk before heads are read
    def heads(self) -> Mapping[str, int]: ...  # our heads as others may see them
    def servable_upto(self) -> Mapping[str, int]: ...  # origin -> highest seq we may serve
    def merge(self, events: Sequence[Event]) -> list[Event]: ...  # a snapshot's events
    def refused(self, origin: Any, reason: str) -> None: ...  # a malformed event, counted
    def live_peers(self) -> Mapping[str, Mapping[str, Any]]: ...  # id -> heartbeat info
    def peer_urls(self) -> Mapping[str, str]: ...  # id -> HTTP URL of live peers


class CatchUp:
    """Compaction passes, compacted jobs' records, snapshots served and taken."""

    def __init__(self, cfg: CatchUpConfig, host: CatchUpHost, compactor: Compactor,
                 index: JobIndex, headers: Mapping[str, str], born: float) -> None:
        self.cfg = cfg
        self._host = host
        self.compactor = compactor
        self.index = index
        self._headers = dict(headers)  # our mesh credential, for other members' HTTP
        self._born = born  # perf_counter at the peer's start: stages are reported from it
        self._ingesting: asyncio.Task[None] | None = None  # a snapshot's rows being taken
        self._fetching: asyncio.Task[None] | None = None  # ... or fetched
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bg: set[asyncio.Task[None]] = set()
        self.clock: Callable[[], float] = time.monotonic  # (a fake one in tests)
        self._snapshot_next = 0.0  # `clock` time before which no snapshot is asked for
        self._catching = False  # a snapshot is being fetched and taken
        # Member -> (`clock` time before which it is not asked for a snapshot again, its
        # failures in a row): `_judge`; at most MAX_BACKOFF_PEERS
        self._backoff: dict[str, tuple[float, int]] = {}
        # Member -> how often its digests were on the losing side of a vote on a snapshot
        # (its signer's too), less how often on the winning one (`_vote`): members with
        # fewer are asked first for their digests; at most MAX_BACKOFF_PEERS
        self._outvoted: dict[str, int] = {}
        # Origin -> (the highest seq snapshots taken claimed for its head or floor and could
        # not prove, the proof it was last clipped to: `Compactor._took`): members' floors of
        # it up to that seq start no catch-up while we prove no more of it (`_above`: an
        # honest snapshot of an origin whose last events left every log proves no more the
        # next time, nor another member's; one was asked at every `retry_s`). What a member
        # holds of it above our head reaches us by anti-entropy, which raises the proof.
        # At most MAX_UNPROVEN origins.
        self._unproven: dict[str, tuple[int, int]] = {}
        compactor.vouched = self._vouched
        self.catch_up_s: dict[str, float] = {}  # the last snapshot taken: seconds per stage
        self.served_s: dict[str, float] = {}  # the last snapshot served: seconds per stage

    def start(self) -> None:
        """Run compaction passes (and take owed snapshot rows) on the running loop."""
        self._loop = asyncio.get_running_loop()
        self._spawn(self._compact_loop())

    async def close(self) -> None:
        """Stop the passes and any catch-up, fetch or take of rows in progress."""
        while self._bg:
            for task in list(self._bg):
                task.cancel()
            await asyncio.gather(*self._bg, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, None],
               loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Task[None]:
        """A task of ours (on `loop`, else the running loop), cancelled by `close`."""
        task = (loop or asyncio.get_running_loop()).create_task(coro)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    def compact(self) -> PassStats:
        """One compaction pass now (the node runs one every few seconds), then a bounded
        step giving the SQLite file's free pages back (what this pass or earlier ones freed:
        EventLog.vacuum)."""
        self._host.flush()
        out = self.compactor.step()
        self._host.log.vacuum()
        return out

    async def _compact_loop(self) -> None:
        keep = {Path(p).name for p, _, _ in self.index.snapshots_pending()}
        spool = self.cfg.data_dir / SPOOL_DIR
        if spool.is_symlink():  # (never delete through a link: it may lead anywhere)
            log.warning("%s is a symbolic link: spooled snapshots left there are not "
                        "removed; make it a directory of the data dir's own", spool)
        else:
            for path in spool.glob("*.frames"):
                if path.name not in keep:  # moved in, then a crash before its take committed
                    try:  # (a symlink goes itself; a directory named so too, not the loop)
                        remove(path)
                    except OSError as e:
                        log.warning("%s is left: %s", path, e)
        while True:
            self._ensure_rows()  # a snapshot's rows owed after a restart or a failed fetch
            self._ensure_ingest()  # ... or left half taken
            await asyncio.sleep(self.compactor.cfg.interval_s)
            try:
                self.compact()
            except Exception:  # a failed pass (a full disk) must not end the next ones
                log.exception("compaction pass failed")

    def job_record(self, job: str) -> dict[str, Any] | None:
        """A compacted job's view from the job index (None if it is not there)."""
        return self.index.record(job) if job in self._host.state.compacted else None

    def record_texts(self, job: str) -> list[str] | None:
        """GET /api/snapshot?v=3&record=JOB: a compacted job's full texts, for a peer that
        took its thin row (None if we hold no full record of it)."""
        return self.index.texts(job) if job in self._host.state.compacted else None

    async def fetch_record(self, job: str) -> dict[str, Any] | None:
        """A compacted job's view when we hold only its thin row (taken from a version 3
        snapshot): fetched from a live member announcing SNAPSHOT_FEATURE, checked against
        the hash the signed snapshot gave, stored; None if no member has it (or the job is
        not such a job)."""
        sha = self.index.thin_sha(job) if job in self._host.state.compacted else None
        if sha is None:
            return None
        asked = [(peer, str(info["http"])) for peer, info in self._host.live_peers().items()
                 if SNAPSHOT_FEATURE in (info.get("features") or ()) and info.get("http")]
        got, _ = await self._ask(
            asked, {"v": "3", "record": job}, f"record of job {job}",
            lambda body: check_record(sha, loads_within(body, sharing=True)),
            self.cfg.record_timeout_s, max_bytes=self.cfg.max_record_bytes)
        if got is None:
            return None
        if self.index.thin_sha(job) == sha:  # not deleted or filled meanwhile
            self.index.fill(job, got[1])
        return self.index.record(job)

    async def fetch_view(self, job: str, members: Sequence[str], chunks_from: int,
                         check: Callable[[Any], object]) -> tuple[str, bytes]:
        """A lanes job's view (`GET /api/snapshot?v=3&view=JOB`) from the first of its live
        `members`, in order, whose answer (JSON in UTF-8) `check` passes (ValueError: the
        next one): (member, its answer's bytes, passed on as they are: not dumped again on
        the loop). Each member within `view_timeout_s`, all within `view_total_s`, an answer
        of at most `max_view_bytes`; else Unavailable (`field` "members") naming the members
        and why each gave none."""
        def parsed(body: bytes) -> bytes:
            try:  # (sharing: a big view parsed in the thread lets the loop run meanwhile)
                value = loads_within(body.decode(), sharing=True)
            except ValueError as e:  # (UnicodeDecodeError too)
                raise ValueError(f"an answer that is not JSON ({e})") from None
            check(value)
            return body

        urls = self._host.peer_urls()
        asked = [(m, urls[m]) for m in members if m in urls]
        got, why = await self._ask(
            asked, {"v": "3", "view": job, "chunks_from": str(chunks_from)},
            f"view of job {job}", parsed, self.cfg.view_timeout_s, self.cfg.max_view_bytes,
            self.cfg.view_total_s)
        if got is not None:
            return got
        said = "; ".join(f"{m}: {why.get(m, 'not live')}" for m in members)
        raise Unavailable(f"job {job}'s view is held by its members only, and this peer holds "
                          f"none of its task events; no member gave it ({said}): try again "
                          "later or ask a member (this peer's job list has the job's state)",
                          field="members")  # (not "runs": it may have ended)

    def _session(self, timeout_s: float, stall_s: float | None = None,
                 ) -> aiohttp.ClientSession:
        """A session to ask members with (our mesh credential; each request within
        `timeout_s`, and, given `stall_s`, no wait for a byte longer than that): an answer
        is read as sent, never decompressed (a Content-Encoding is the member's choice:
        4 MB of gzip made 4 GiB, H1 of review r2, session 48)."""
        return aiohttp.ClientSession(headers=self._headers, auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=timeout_s,
                                                                   sock_read=stall_s))

    async def _within_rate(self, r: aiohttp.ClientResponse, t0: float,
                           ) -> AsyncGenerator[bytes, None]:
        """`r`'s body in pieces (of at most 1 MiB) as they come; StreamError once it has
        brought fewer than `min_rate_bytes_s` a second since it was asked (at `t0`, on
        `clock`), from `rate_grace_s` on: checked at each piece and by a deadline on the
        next one (a member trickling a byte now and then held a catch-up for the whole
        `timeout_s`; one that sends no byte at all: `sock_read`, `_session`)."""
        cfg = self.cfg
        got = 0

        def slow() -> StreamError:
            return StreamError(f"a download slower than {cfg.min_rate_bytes_s:g} bytes/s "
                               f"(min_rate_bytes_s): {got} bytes in "
                               f"{self.clock() - t0:.0f} s; cut")

        pieces = r.content.iter_chunked(1 << 20).__aiter__()
        while True:  # (if nothing more comes, the rate falls below the floor `left` s on)
            left = max(cfg.rate_grace_s, got / cfg.min_rate_bytes_s) - (self.clock() - t0)
            if left <= 0:
                raise slow()
            deadline = asyncio.timeout(left)
            try:
                async with deadline:
                    piece = await anext(pieces)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not deadline.expired():
                    raise  # (aiohttp's own)
                raise slow() from None
            got += len(piece)
            yield piece

    async def _ask(self, asked: Sequence[tuple[str, str]], params: Mapping[str, str],
                   what: str, check: Callable[[bytes], T], timeout_s: float,
                   max_bytes: int, total_s: float | None = None,
                   ) -> tuple[tuple[str, T] | None, dict[str, str]]:
        """GET /api/snapshot with `params` of each (peer, URL) of `asked` in turn, each within
        `timeout_s`, all within `total_s`, an answer of at most `max_bytes` (as sent: not
        decompressed), until one answers
        200 with a body that `check` (in a thread) passes: ((peer, its result) or None, why
        each peer asked gave none). An answer that `check` finds does not match what was
        signed (StreamError) counts a `record_mismatch` refusal of its peer."""
        why: dict[str, str] = {}
        peer = ""
        try:
            async with asyncio.timeout(total_s), self._session(timeout_s) as http:
                for peer, url in asked:
                    try:
                        async with http.get(f"{url}/api/snapshot", params=params) as r:
                            if r.status != 200:
                                why[peer] = f"answered {r.status}"
                                continue
                            body = await _read_within(r, max_bytes)
                        return (peer, await asyncio.to_thread(check, body)), why
                    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                        log.warning("no %s from %s: %s", what, peer[:16], e)
                        why[peer] = str(e) or f"no answer within {timeout_s:g} s"
                        if isinstance(e, StreamError):
                            self._host.keyring.refused.add(peer, "record_mismatch")
        except TimeoutError:  # (asyncio.timeout's: a peer's own is caught above)
            why.setdefault(peer, f"no answer before all were asked for {total_s:g} s")
            for other, _ in asked:
                why.setdefault(other, f"not asked: {total_s:g} s passed")
        return None, why

    # -- snapshots: a peer behind the compaction horizon ----------------------------------
    def _begin(self) -> tuple[dict[str, int], sqlite3.Connection, dict[str, int]]:
        """Our heads, and a read transaction of its own on the log's file begun with them (on
        the loop; any one thread may read on it after) and its compaction floors."""
        self._host.flush()
        heads = dict(self._host.heads())
        db = connect(str(self._host.log.path), isolation_level=None,
                     check_same_thread=False)
        try:
            db.execute("BEGIN")
            floors = compact_floors(db, self._host.log.path, self._host.peer_id)  # the read
            # snapshot starts here
        except BaseException:
            db.close()
            raise
        return heads, db, floors

    def digest_reader(self, per_job: bool = False, v: int = 2,
                      ) -> Callable[[], dict[str, Any]]:
        """What a second member's check compares: our heads, floors and snapshot digest
        (`per_job`, `?v=2`: instead of the digest, one per compacted job, `job_digest`:
        what two honest peers that both compacted a job agree on; `v=3`: `job_digest3`).
        A read transaction of its own begins now, with the heads; the function returned
        reads the job index on it and computes the digests, in any thread, once."""
        heads, db, _ = self._begin()
        floors = dict(sorted(self.compactor.floors.items()))

        def read() -> dict[str, Any]:
            try:
                if per_job:
                    return {"heads": heads, "floors": floors,
                            "jobs": self.index.thin_digests(job_digest3, db) if v == 3
                            else self.index.job_digests(job_digest, db)}
                return {"heads": heads, "floors": floors, "digest": Snapshot(
                    self._host.peer_id, b"", None, heads,
                    self.compactor.record_stream(db, floors)).content_digest().hex()}
            except sqlite3.Error as e:  # (as `_stream3`)
                raise unreadable(self._host.log.path, e) from e
            finally:
                db.close()
        return read

    def snapshot_stream(self, v: int = 2, part: str | None = None,
                        ) -> Generator[bytes, None, None]:
        """GET /api/snapshot: `v=1` (an older peer's, with no `v`): one JSON body, our
        signed snapshot (the job index, as of our heads) and every event our log still
        holds, each in its signed batch (checked like a frame's). `v=2`: the same as a
        stream (peer.log.snapstream). A read transaction of its own begins now, with the
        heads: the events and the index rows it sends are those of now, read (the events
        line spooled to tmp/ first; version 1's records read and signed before) while the
        caller iterates, in any thread; nothing here reads the log. `v=3`:
        peer.log.snapframe's frames (thin job rows, columns of cache entries and providers);
        `part` "jobs": without the cache entries and providers (fetched after,
        `_fetch_rows`), "rows": only them (and no events)."""
        heads, db, floors = self._begin()
        upto = dict(self._host.servable_upto())  # (ours once proven)
        path, max_payload = self._host.log.path, self._host.log.max_payload_bytes

        def events() -> Iterable[Event]:  # in the stream's thread, on its read transaction
            return () if part == "rows" else _servable(stored_events(db, path, max_payload),
                                                       upto)

        if v == 3:  # the rows alone vouch for no heads (they cannot pass for a snapshot)
            return self._stream3(db, events, {} if part == "rows" else heads,
                                 {} if part == "rows" else floors, part)
        if v == 1:  # (its records' floors: the compactor's, as the previous release sent)
            return self._stream1(db, events, heads, dict(self.compactor.floors))
        return self._stream(db, events, heads, floors)

    def _stream1(self, db: sqlite3.Connection, events: Callable[[], Iterable[Event]],
                 heads: dict[str, int], floors: dict[str, int]) -> Generator[bytes, None, None]:
        t0 = time.perf_counter()
        try:
            records = self.compactor.record_stream  # (read twice: hashed to be signed, then
            snap = Snapshot.make(self._host.identity, self._host.peer_id,  # sent, in the
                                 self._host.admit, heads, records(db, floors))  # JSON's order)
            out, total = bytearray(b'{"snapshot":'), 0
            for piece in pieces(dataclasses.replace(snap, records=records(db, floors)
                                                    ).to_json(), 3):
                out += piece
                if len(out) >= PIECE_BYTES:
                    yield bytes(out)
                    total += len(out)
                    out.clear()
            out += b","
            yield bytes(out)
            total += len(out)
            for piece in _events_line(self.cfg.data_dir, events(), lambda _: b"", b"",
                                      b""):
                total += len(piece)
                yield piece
            self.served_s = {"stream": time.perf_counter() - t0, "bytes": total}
        except sqlite3.Error as e:  # (as `_stream3`)
            raise unreadable(self._host.log.path, e) from e
        finally:
            db.close()

    def _stream3(self, db: sqlite3.Connection, events: Callable[[], Iterable[Event]],
                 heads: dict[str, int], floors: dict[str, int], part: str | None,
                 ) -> Generator[bytes, None, None]:
        t0 = time.perf_counter()
        try:
            yield from _events_line(self.cfg.data_dir, events(),
                                    lambda size: MAGIC + HEADER.pack(b"E", size), b"")
            sha = hashlib.sha256()
            rows = total = 0
            for tag, batch in thin_rows(db, jobs=part != "rows", rows=part != "jobs",
                                         left_out=self.index.left_out):
                rows += len(batch)
                for out in row_frames([(tag, batch)]):
                    sha.update(out)
                    total += len(out)
                    yield out
            yield frame(b"T", Trailer.make(self._host.identity, self._host.peer_id,
                                           self._host.admit, heads, floors, rows, sha.digest(),
                                           v=3))
            self.served_s = {"stream": time.perf_counter() - t0, "bytes": total}
        except sqlite3.Error as e:  # (a damaged page met mid-stream: the file is named)
            raise unreadable(self._host.log.path, e) from e
        finally:
            db.close()

    def _stream(self, db: sqlite3.Connection, events: Callable[[], Iterable[Event]],
                heads: dict[str, int], floors: dict[str, int]) -> Generator[bytes, None, None]:
        try:
            yield from _events_line(self.cfg.data_dir, events(), lambda _: b"", b"\n")
            sha = hashlib.sha256()
            rows = 0
            for tag, batch in raw_rows(db, left_out=self.index.left_out):
                rows += len(batch)
                for line in row_lines([(tag, batch)]):
                    sha.update(line)
                    yield line
            yield Trailer.make(self._host.identity, self._host.peer_id, self._host.admit, heads,
                               floors, rows, sha.digest())
        except sqlite3.Error as e:  # (as `_stream3`)
            raise unreadable(self._host.log.path, e) from e
        finally:
            db.close()

    def _merge_events(self, read: Callable[[], tuple[_Signed, Mapping[str, Any], Any]],
                      t: list[float]) -> _Signed | None:
        """The first steps of taking a snapshot (`take_snapshot`, `take_stream`): `read` gives
        its signed part, the body that holds its events and those decoded (`_parse`, or
        None); the events are checked (signatures, batches, the door) and merged like a
        frame's, and the time after each step is appended to `t`. None if anything is
        malformed (logged, nothing merged)."""
        try:
            signed, body, decoded = read()
            events = self._host.keyring.accept(body["events"], body.get("batches", []),
                                               self._host.refused, decoded)
        except (KeyError, TypeError, ValueError, BanzaiError, RecursionError) as e:
            log.warning("refused a malformed snapshot: %s", e)  # (RecursionError: too deep)
            return None
        t.append(time.perf_counter())
        self._host.merge(events)
        t.append(time.perf_counter())
        return signed

    def _check(self, signed: Snapshot | Trailer, second_digest: bytes | None = None,
               ) -> str | None:
        """`check_snapshot` against our members and keyring; a refusal is counted."""
        keyring = self._host.keyring
        return check_snapshot(signed, keyring, self._host.state.members, second_digest,
                              keyring.refused)

    def take_stream(self, spool: Spool | FrameSpool, rows: Path,
                    second: Mapping[str, Any] | None = None,
                    parsed: _Parsed | ValueError | None = None, dir_fd: int | None = None,
                    blame: bool = True) -> str | None:
        """`take_snapshot` for a snapshot stream spooled to `rows` (peer.log.snapstream):
        the events of its first line are checked and merged like a frame's; the trailer must
        check (`check_snapshot`: signer, key, signature, a second member's per-job digests);
        then the rows are checked as they are read and taken in one transaction. None once
        taken, else why not (counted under its signer). `rows` is read back never through a
        symlink put there since it was written (`open_file`: DataError naming it).
        `parsed`: its events line parsed already (`_parsed`, in a worker thread), else
        parsed here. `dir_fd`: a descriptor of the directory it was made in (`_new_spool`),
        where it is read and moved from whatever is put at that directory's path since.
        `blame`: as `take_snapshot`'s (a `digest_mismatch` leaves the spool where it was)."""
        t = [time.perf_counter()]

        def read() -> tuple[Trailer, Any, Any]:
            head = _parse(spool.head or b"") if parsed is None else parsed
            if isinstance(head, ValueError):
                raise head
            return spool.trailer(), *head

        trailer = self._merge_events(read, t)
        if trailer is None:
            return "malformed"
        why = self._check(trailer)
        if why is None:
            digests = _job_digests(second, trailer.heads)
            try:
                if isinstance(spool, FrameSpool):
                    n = self._take_frames(trailer, rows, digests, dir_fd)
                else:
                    with open_file(rows, _SPOOL, dir_fd) as f:
                        n = self.compactor.take_rows(against(read_rows(f), digests),
                                                     trailer.heads, trailer.floors,
                                                     signer=trailer.signer)
            except StreamError as e:
                why = "digest_mismatch" if isinstance(e, Mismatch) else "malformed"
                if blame or why != "digest_mismatch":
                    self._host.keyring.refused.add(trailer.signer, f"snapshot_{why}")
                log.warning("refused the snapshot of %s: %s", trailer.signer[:16], e)
                return why
            t.append(time.perf_counter())
            self.catch_up_s.update(zip(("events_check", "merge", "check_and_take"),
                                       (b - a for a, b in itertools.pairwise(t)), strict=True))
            self.catch_up_s["taken_after_init"] = time.perf_counter() - self._born
            self._remember()
            log.info("caught up from the snapshot of %s: %d job records", trailer.signer[:16], n)
            return None
        log.warning("refused the snapshot of %s: %s", trailer.signer[:16], why)
        return why

    def _take_frames(self, trailer: Trailer, rows: Path, digests: Mapping[str, str] | None,
                     dir_fd: int | None = None) -> int:
        """A checked version 3 stream spooled to `rows` (peer.log.snapframe): its thin job
        rows (checked against a second member's digests) are taken now, with the heads; the
        spool moves into the data dir (fsynced) and its cache and provider rows are taken
        after, a slice per loop turn (`_ingest`; resumed after a restart). StreamError (nothing
        taken) if a job row is malformed or differs. `dir_fd`: as `take_stream`'s."""
        with open_file(rows, _SPOOL, dir_fd) as f:  # (never a symlink put there since written)
            jobs, at = read_jobs(f)
            more = bool(f.read(1))
        jobs = list(against3(jobs, digests))  # (before the spool moves: a vote reads it again)
        if not more:  # `?part=jobs`: its cache and provider rows are fetched after
            n = self.compactor.take_rows(jobs, trailer.heads, trailer.floors,
                                         owed=trailer.signer, signer=trailer.signer)
            self._ensure_rows()
            return n
        path = self._keep_spool(rows, trailer, dir_fd)
        try:
            n = self.compactor.take_rows(jobs, trailer.heads,
                                         trailer.floors, (str(path), at, trailer.signer),
                                         sha=trailer.rows_sha, signer=trailer.signer)
        except BaseException:
            with contextlib.suppress(OSError, DataError):  # (gone, or snapshots/ made a
                unlink_in(path.parent, path.name, SPOOL_DIR_WHAT)  # symlink: not followed)
            raise
        self._ensure_ingest()
        return n

    def _new_spool(self, stem: str, suffix: str) -> tuple[Path, int, BinaryIO]:
        """A new file for a download's spool, in the data dir's tmp/ (swept at start), open to
        write, and a descriptor of tmp/ (`open_dir`) by which it is made, read back, moved
        and removed (`_drop_spool`) whatever is put at tmp/'s path meanwhile (a symlink to a
        directory elsewhere holding the same name): DataError naming it if something is
        there already (a symlink is not followed) or tmp/ is not a directory of its own,
        even if made one after its check; OSError if it cannot be made. The caller drops
        it (`_drop_spool`)."""
        tmp = self.cfg.data_dir / TMP_DIR
        spool_dir = open_dir(tmp, "the peer's temp dir")
        try:
            path = tmp / f"{stem}-{os.getpid()}-{next(_SPOOLS)}{suffix}"
            return path, spool_dir, open_new(path, _SPOOL, spool_dir)
        except BaseException:
            os.close(spool_dir)
            raise

    def _keep_spool(self, rows: Path, trailer: Trailer, dir_fd: int | None = None) -> Path:
        """Move a checked spool into the data dir's snapshots/ (fsynced), where its cache and
        provider rows wait to be taken (`_ingest`, resumed after a restart). DataError naming
        the path if snapshots/ is not a directory of its own (a symlink, even one put there
        after its check: it is moved into by a descriptor, `open_dir`), the spool is no
        longer a regular file (a symlink put there: never followed, not moved) or something
        other than a file is at its place in snapshots/. `dir_fd`: as `take_stream`'s."""
        keep = self.cfg.data_dir / SPOOL_DIR
        path = keep / spool_name(trailer.content_digest())
        with open_file(rows, _SPOOL, dir_fd) as f:  # (a FIFO put there would block an fsync)
            os.fsync(f.fileno())
        keep_dir = open_dir(keep, SPOOL_DIR_WHAT)  # (0o700: its files are deleted once taken)
        try:
            check_entry(path, "file", "a snapshot being taken's spool", real=True)
            os.replace(rows if dir_fd is None else rows.name, path.name, src_dir_fd=dir_fd,
                       dst_dir_fd=keep_dir)  # (a link swapped in meanwhile moves as one)
            os.fsync(keep_dir)
        finally:
            os.close(keep_dir)
        return path

    def _ensure_rows(self) -> None:
        """Fetch the cache and provider rows owed by taken `?part=jobs` snapshots (one task;
        retried from the compaction loop)."""
        if self._fetching is not None or not self.index.snapshots_owed():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a test): the caller fetches
        self._fetching = self._spawn(self._fetch_rows(), loop)

    async def _fetch_rows(self) -> None:
        """GET /api/snapshot?v=3&part=rows of the signer of each owed snapshot (else of any
        live member serving version 3): its trailer must check as a snapshot's (`check_
        snapshot`); the spool moves into the data dir and its rows are taken (`_ingest`)."""
        t0 = time.perf_counter()
        try:
            for owed in self.index.snapshots_owed():
                live = self._host.live_peers()
                order = sorted(live, key=lambda p: p != owed)  # the signer first
                for peer in order:
                    info = live[peer]
                    if (SNAPSHOT_FEATURE in (info.get("features") or ()) and info.get("http")
                            and await self._rows_from(str(info["http"]), owed)):
                        break
            self.catch_up_s["rows_fetched_after_take"] = time.perf_counter() - t0
        finally:
            self._fetching = None
        self._ensure_ingest()

    async def _rows_from(self, url: str, owed: str) -> bool:
        try:
            rows, spool_dir, f = self._new_spool("snapshot-rows", ".frames")
        except (OSError, BanzaiError) as e:
            log.warning("no snapshot rows from %s: %s", url, e)
            return False
        try:
            t0 = self.clock()
            async with self._session(self.cfg.timeout_s, self.cfg.rate_grace_s) as http, \
                    http.get(f"{url}/api/snapshot", params={"v": "3", "part": "rows"}) as r:
                r.raise_for_status()
                with f:
                    spool = FrameSpool(f, self.cfg.max_snapshot_bytes)
                    async with contextlib.aclosing(self._within_rate(r, t0)) as chunks:
                        async for chunk in chunks:
                            spool.feed(chunk)
            return self.take_rows_part(spool, rows, owed, spool_dir)
        except (aiohttp.ClientError, TimeoutError, ValueError, BanzaiError, OSError) as e:
            log.warning("no snapshot rows from %s: %s", url, e)  # (OSError: as `_catch_up`)
            return False
        finally:
            f.close()
            _drop_spool(rows, spool_dir)

    def take_rows_part(self, spool: FrameSpool, rows: Path, owed: str,
                       dir_fd: int | None = None) -> bool:
        """A `?part=rows` stream spooled to `rows`, owed for `owed`'s snapshot: its trailer
        must check as a snapshot's; then the spool moves into the data dir and its rows are
        taken after (`_ingest`). Never raises the heads (its rows stand for no event).
        Whether it was kept (a refusal is counted under its signer). `dir_fd`: as
        `take_stream`'s."""
        trailer = spool.trailer()
        why = self._check(trailer)
        if why is not None:
            log.warning("refused the snapshot rows of %s: %s", trailer.signer[:16], why)
            return False
        path = self._keep_spool(rows, trailer, dir_fd)
        self.index.spooled(str(path), trailer.signer, owed, trailer.rows_sha)
        self._ensure_ingest()
        return True

    def _ensure_ingest(self) -> None:
        """Take the rows of pending snapshots: a slice per loop turn while a loop runs (one
        task), else all of them now."""
        if self._ingesting is not None or not self.index.snapshots_pending():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            while self.compactor.ingest():
                pass
            return
        self._ingesting = self._spawn(self._ingest(), loop)

    async def _ingest(self) -> None:
        t0 = time.perf_counter()
        taken = self.compactor.rows_taken
        try:
            while self.compactor.ingest():
                await asyncio.sleep(0)
            if self.compactor.rows_taken > taken:  # (not when every spool left was unreadable)
                self.catch_up_s["rows_indexed_after_take"] = time.perf_counter() - t0
        except Exception:  # a failed write (a full disk): resumed at the next pass
            log.exception("taking a snapshot's rows failed")
        finally:
            self._ingesting = None

    def take_snapshot(self, body: Mapping[str, Any],
                      second: Mapping[str, Any] | None = None,
                      decoded: list[Event | Exception] | None = None,
                      blame: bool = True) -> str | None:
        """Catch up from another member's snapshot: its events are checked (signatures, the
        door) and merged like a frame's; the snapshot itself must come from an admitted,
        unrevoked member with a valid signature and match a second member's digest of the
        same heads and floors when one is given. None once taken, else why not (counted in
        /api/health `security.refused` under its signer; a `digest_mismatch` only with
        `blame`: without it, the caller puts it to a vote, `_vote`). `decoded`: its events
        decoded already (`_parse`, in a worker thread), else decoded here."""
        t = [time.perf_counter()]
        snap = self._merge_events(lambda: (Snapshot.from_json(body["snapshot"]), body,
                                           decoded), t)
        if snap is None:
            return "malformed"
        digest = _whole_digest(second, snap)
        why = self._check(snap)
        if why is None and ((digest is not None and digest != snap.content_digest())
                            or not _agrees(snap.records, _job_digests(second, snap.heads))):
            why = "digest_mismatch"
            if blame:
                self._host.keyring.refused.add(snap.signer, f"snapshot_{why}")
        t.append(time.perf_counter())
        if why is None:
            try:
                n = self.compactor.take(snap.records, snap.heads, snap.signer)
                t.append(time.perf_counter())
                self.catch_up_s.update(zip(("events_check", "merge", "snapshot_check", "take"),
                                           (b - a for a, b in itertools.pairwise(t)),
                                           strict=True))
            except ValueError as e:
                why = "malformed"
                log.warning("refused the snapshot of %s: %s", snap.signer[:16], e)
            else:
                self._remember()
                log.info("caught up from the snapshot of %s: %d job records", snap.signer[:16],
                         n)
                return None
        log.warning("refused the snapshot of %s: %s", snap.signer[:16], why)
        return why

    def forget(self, peer_id: str) -> None:
        """Gossip forgot member `peer_id` (dead or left long ago): its failures go (review rr
        of session 48, S3: kept until MAX_BACKOFF_PEERS pushed them out, a member back under
        its id after that waited out its old failures' backoff)."""
        self._backoff.pop(peer_id, None)

    def _vouched(self) -> dict[str, int]:
        """Origin -> the highest seq of it that its own signed word vouches for, as this
        peer last heard it from the origin itself (`Compactor.proof`): a live member's
        heartbeat `heads` of itself (a peer of the previous release: a SWIM report leaves
        heads out) and its `cfloor` of itself (its own events it dropped); heartbeats and
        reports are signed by the member they speak for. Another member's word of it counts
        for nothing (DIGESTs, whose vectors `note_heads` keeps, are not signed by their
        sender)."""
        out: dict[str, int] = {}
        for peer, info in self._host.live_peers().items():
            for key in ("heads", "cfloor"):
                vv = info.get(key)
                q = vv.get(peer) if isinstance(vv, dict) else None
                if type(q) is int and q > out.get(peer, 0):
                    out[peer] = q
        return out

    def _remember(self) -> None:
        """A snapshot was taken: what it could not prove (`Compactor.unproven`) is kept for
        `_above`, of origins it asks about only (known: a made-up origin's floor starts no
        catch-up anyway, and a signer naming many would fill the bound), at most
        MAX_UNPROVEN origins (past it, no more are kept); origins whose heads now reach what
        was claimed go."""
        st = self._host.state
        heads = st.heads
        for o in [o for o, (claim, _) in self._unproven.items() if heads.get(o, 0) >= claim]:
            del self._unproven[o]
        for o, (claim, proof) in self.compactor.unproven.items():
            old = self._unproven.get(o)
            if old is not None:
                self._unproven[o] = (max(claim, old[0]), proof)
            elif len(self._unproven) < MAX_UNPROVEN and (
                    o in st.members or o in heads or o in st.beyond):
                self._unproven[o] = (claim, proof)

    def behind(self, peer_id: str, info: Mapping[str, Any]) -> None:
        """`peer_id` dropped events we lack (its compaction floors are above our heads for an
        origin we know: `_above`): ask it for a snapshot (one request at a time, at most every
        `retry_s`, and not while it waits out a failure of its own: `_judge`)."""
        floors = info.get("cfloor")
        if not isinstance(floors, dict) or self._loop is None:
            return
        now = self.clock()
        if now < self._snapshot_next or self._catching:  # one at a time: a slow download is
            return  # not raced by a second one
        wait = self._backoff.get(peer_id)
        if (wait is not None and now < wait[0]) or not self._above(floors):
            return  # (waiting: the turn is left to another member heard meanwhile)
        self._snapshot_next = now + self.cfg.retry_s
        self._catching = True
        self._spawn(self._attempt(peer_id, dict(floors)), self._loop).add_done_callback(
            self._caught)

    def _above(self, floors: Mapping[Any, Any]) -> bool:
        """Is one of a member's `floors` above our head of its origin, an origin we know: one
        whose MEMBER event we hold (a peer emits one before any other: `Node.start`; mesh
        events are never compacted, so every member serves it, and a snapshot's signer must
        be one, `check_snapshot`) or whose events we hold (to our head or past a gap)? A
        floor of any other origin is a member's word alone (`{"x": 2**60}` made every peer
        ask that member, again and again): no snapshot could be checked to cover it. Nor is
        one that a snapshot taken claimed as much of and could not prove, while we prove no
        more of its origin than then (`_unproven`: a snapshot asked for it would prove no
        more; R1-8 of review r1, session 50)."""
        st = self._host.state
        heads = st.heads
        vouched: Mapping[str, int] | None = None
        for o, q in floors.items():
            if not (type(q) is int and heads.get(o, 0) < q
                    and (o in st.members or o in heads or o in st.beyond)):
                continue
            clipped = self._unproven.get(o)
            if clipped is None or q > clipped[0]:
                return True
            if vouched is None:
                vouched = self._vouched()
            if self.compactor.proof(o, vouched) > clipped[1]:
                return True
        return False

    async def _attempt(self, peer_id: str, floors: Mapping[str, Any]) -> None:
        """Catch up from `peer_id`, which announced `floors`, and judge it by the outcome."""
        why = await self._catch_up(peer_id)
        if why == "" and self._above(floors):
            why = "its snapshot was taken and our heads are still below the floors it announced"
        if why is not None:
            self._judge(peer_id, why)

    def _judge(self, peer_id: str, why: str) -> None:
        """A snapshot asked of `peer_id` was taken (`why` ""): it is forgotten. Else (why
        not) it is not asked again for retry_s x 2^(failures in a row - 1), at most
        `max_backoff_s`, and the next member heard that announces floors above us may be
        asked at once (M1: a member that failed, lied or trickled was asked first again at
        every `retry_s`). At most MAX_BACKOFF_PEERS members are remembered: past it, the
        one free soonest goes."""
        if not why:
            self._backoff.pop(peer_id, None)
            return
        now = self.clock()
        failures = self._backoff.pop(peer_id, (0.0, 0))[1] + 1
        if len(self._backoff) >= MAX_BACKOFF_PEERS:
            del self._backoff[min(self._backoff, key=lambda p: self._backoff[p][0])]
        wait_s = min(self.cfg.max_backoff_s, self.cfg.retry_s * 2.0 ** min(failures - 1, 30))
        self._backoff[peer_id] = (now + wait_s, failures)
        self._snapshot_next = min(self._snapshot_next, now)
        log.warning("no snapshot taken from %s (%s): not asked again for %g s (failure %d "
                    "in a row); other members are asked meanwhile", peer_id[:16], why[:200],
                    wait_s, failures)

    def _caught(self, task: asyncio.Task[None]) -> None:
        self._catching = False

    async def _catch_up(self, peer_id: str) -> str | None:
        """Ask `peer_id` for a snapshot and take it: "" once taken, else why not (its answer
        failed, was cut or refused: `_judge`), None if it was not asked (not live to gossip
        yet, or our spool could not be made: nothing of the member's to judge)."""
        urls = self._host.peer_urls()
        url = urls.get(peer_id)
        if url is None:  # not live to gossip yet: ask again at its next heartbeat
            self._snapshot_next = 0.0
            return None
        asked = time.perf_counter() - self._born
        t0 = time.perf_counter()
        v = "3" if SNAPSHOT_FEATURE in (self._host.live_peers().get(peer_id, {}).get("features")
                                        or ()) else "2"
        try:  # (nothing may raise between the spool's making and the try that drops it)
            rows, spool_dir, f = self._new_spool("snapshot", ".rows")
        except (OSError, BanzaiError) as e:
            log.warning("no snapshot from %s: %s", peer_id[:16], e)
            return None
        seconds: set[str] = set()  # members asked for their digests (`_opinion`, `_vote`)
        try:
            begun = self.clock()
            async with self._session(self.cfg.timeout_s, self.cfg.rate_grace_s) as http:
                second_task = asyncio.ensure_future(self._opinion(
                    http, urls, peer_id, v, seconds, time.monotonic() + self.cfg.timeout_s))
                try:
                    params = {"v": v, "part": "jobs"} if v == "3" else {"v": v}
                    async with http.get(f"{url}/api/snapshot", params=params) as r:
                        r.raise_for_status()
                        if r.content_type == "application/json":  # an older peer: one body
                            body: Any = await self._read_v1(r, begun)
                        else:
                            with f:
                                body = (FrameSpool(f, self.cfg.max_snapshot_bytes)
                                        if r.content_type == SNAPSHOT_TYPE_V3
                                        else Spool(f, self.cfg.max_snapshot_bytes))
                                async with contextlib.aclosing(
                                        self._within_rate(r, begun)) as chunks:
                                    async for chunk in chunks:
                                        body.feed(chunk)
                    self.catch_up_s = {"asked_after_init": asked,
                                       "download": time.perf_counter() - t0}
                    if isinstance(body, Spool | FrameSpool):
                        self.catch_up_s["bytes"] = body.total
                    opinion = await second_task
                finally:
                    second_task.cancel()
            why = await self._take_voted(peer_id, v, body, rows, spool_dir, opinion, seconds)
            return why or ""
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:  # (its answer: judged)
            why = str(e) or f"no answer within {self.cfg.timeout_s:g} s (timeout_s)"
            if isinstance(e, aiohttp.ServerTimeoutError):
                why = (f"{why}: no byte for {self.cfg.rate_grace_s:g} s (catch-up "
                       "rate_grace_s)")
            log.warning("no snapshot from %s: %s", peer_id[:16], why)
            return why
        except (BanzaiError, OSError) as e:
            # (ours: the spool removed by another process, a temp cleaner, before its take,
            # or a full disk: not damage, asked again later)
            log.warning("no snapshot from %s: %s", peer_id[:16], e)
            return None
        finally:
            f.close()
            _drop_spool(rows, spool_dir)

    async def _take_voted(self, signer: str, v: str, body: Any, rows: Path, spool_dir: int,
                          opinion: tuple[str, Mapping[str, Any]] | None, seconds: set[str],
                          ) -> str | None:
        """Take `signer`'s snapshot downloaded (`body`: a stream spooled to `rows`, or an
        older peer's one body parsed) checked against a second member's `opinion` (who,
        its digests); if they differ, it goes to a vote (`_vote`, asking members not in
        `seconds`) and, won, is taken checked against one that agreed. As `take_stream`."""
        first, second = opinion if opinion is not None else ("", None)
        take: Callable[[Mapping[str, Any] | None, bool], str | None]
        if isinstance(body, Spool | FrameSpool):
            t1 = time.perf_counter()
            parsed = await _parsed(body.head or b"")
            self.catch_up_s["events_parse"] = time.perf_counter() - t1  # (off the loop)
            stream = body

            def take(second: Mapping[str, Any] | None, blame: bool) -> str | None:
                return self.take_stream(stream, rows, second, parsed, spool_dir, blame)
        else:
            def take(second: Mapping[str, Any] | None, blame: bool) -> str | None:
                return self.take_snapshot(body[0], second, body[1], blame)
        why = take(second, False)
        if why == "digest_mismatch":  # (nothing taken, the spool where it was)
            agreed = await self._vote(signer, first, v, seconds,
                                      self._comparer(body, rows, spool_dir))
            if agreed is not None:  # (taken again, checked against one that agreed)
                why = take(agreed, True)
        return why

    def _comparer(self, body: Any, rows: Path, dir_fd: int,
                  ) -> Callable[[Mapping[str, Any]], bool | None]:
        """What `_vote` asks of each second member's answer, in a worker thread: does it
        agree with the snapshot downloaded (`body`: a stream spooled to `rows`, in the
        directory of `dir_fd`, or an older peer's one body parsed), `_verdict`'s answer;
        None when it is not comparable (other heads, no job in common). StreamError if
        the spool's rows are malformed (the take would refuse them)."""
        if isinstance(body, Spool | FrameSpool):
            heads, thin = body.trailer().heads, isinstance(body, FrameSpool)

            def compare(second: Mapping[str, Any]) -> bool | None:
                digests = _job_digests(second, heads)
                if digests is None:
                    return None
                with open_file(rows, _SPOOL, dir_fd) as f:
                    if thin:
                        return _verdict(read_jobs(f)[0], digests, "t", thin_digest,
                                        lambda r: not is_bare(r[6]))
                    return _verdict(read_rows(ln for ln in f if not ln.startswith(_NOT_JOBS)),
                                    digests)  # (a line of cache or provider rows: unread)
            return compare
        snap = Snapshot.from_json(body[0]["snapshot"])

        def compare_v1(second: Mapping[str, Any]) -> bool | None:
            digest = _whole_digest(second, snap)
            if digest is not None:
                return digest == snap.content_digest()
            digests = _job_digests(second, snap.heads)
            if digests is None:
                return None
            try:  # (malformed records: no opinion; the take refuses them)
                return _verdict([("j", snap.records["jobs"])], digests)
            except (KeyError, TypeError, ValueError, AttributeError):
                return None
        return compare_v1

    async def _vote(self, signer: str, first: str, v: str, asked: set[str],
                    compare: Callable[[Mapping[str, Any]], bool | None],
                    ) -> Mapping[str, Any] | None:
        """`first`'s digests differ from `signer`'s snapshot: a mismatch is not blamed on
        the signer alone (one liar answering first refused every signer it checked). More
        members (not in `asked`, the least outvoted first: `_opinion`) are asked, one at a
        time, until `max_second_opinions` members asked in all (the first included, whatever
        each answers) could not change the outcome, or no member is left (all asked within
        `timeout_s`, each within its share of it: `_opinion`); `compare` says whether each
        agrees (True) or not (False; None, not comparable, counts neither way but uses up
        its place: review r3 of session 49, R1). The signer and those that agree with it
        against those that do not: the larger side wins (so one liar, signer or second, is
        outvoted by one honest second member; but a lying signer and one accomplice outvote
        one honest member, review r3's R2, which the previous rule refused when the honest
        one answered first and took when the accomplice did). Won:
        the snapshot is to be taken, checked against the digests of one that agreed
        (returned). Lost or a tie (a mesh of three members, one a liar: no side can be told
        right): None, the signer is refused (`snapshot_digest_mismatch`; its catch-up
        judges it, `_judge`). The losing side's members, both sides on a tie, count a vote
        lost (`_outvoted`: they are asked after the others); the winning side's one fewer;
        a losing second member is counted (`security.refused` `snapshot_digests_outvoted`)
        and waits as a failed signer does (`_judge`)."""
        agree: list[tuple[str, Mapping[str, Any]]] = []
        disagree = [first]
        most, asked_n = self.cfg.max_second_opinions, 1

        def decided() -> bool:  # (whatever the members left to ask would say)
            left = max(0, most - asked_n)
            return (1 + len(agree) > len(disagree) + left
                    or len(disagree) >= 1 + len(agree) + left)

        deadline = time.monotonic() + self.cfg.timeout_s
        async with self._session(self.cfg.timeout_s) as http:
            while not decided():
                got = await self._opinion(http, self._host.peer_urls(), signer, v, asked,
                                          deadline, self.cfg.timeout_s / most)
                if got is None:
                    break
                asked_n += 1  # (an answer of no opinion uses its place too)
                verdict = await asyncio.to_thread(compare, got[1])
                if verdict is True:
                    agree.append(got)
                elif verdict is False:
                    disagree.append(got[0])
        pro = [signer, *(m for m, _ in agree)]
        tally = (f"{len(pro)} for the snapshot of {signer[:16]} (its signer"
                 f"{''.join(', ' + m[:16] for m in pro[1:])}), {len(disagree)} against "
                 f"({', '.join(m[:16] for m in disagree)})")
        won, lost = len(pro) > len(disagree), len(disagree) > len(pro)
        winners, losers = (pro, disagree) if won else (disagree, pro) if lost else ([], [])
        for m in winners:
            self._note(m, -1)
        for m in losers or [*pro, *disagree]:
            self._note(m, 1)
        for m in losers:
            if m != signer:
                self._host.keyring.refused.add(m, "snapshot_digests_outvoted")
                self._judge(m, f"its snapshot digests were outvoted: {tally}")
        if won:
            log.warning("a second member's digests differed from a snapshot's, which is "
                        "taken: %s", tally)
            return agree[-1][1]
        self._host.keyring.refused.add(signer, "snapshot_digest_mismatch")
        log.warning("refused the snapshot of %s: second members' digests differ from it%s: "
                    "%s", signer[:16], "" if lost else " as many as agree", tally)
        return None

    def _note(self, member: str, by: int) -> None:
        """`member`'s count of votes lost moves `by` (`_vote`; at 0 it is forgotten). At most
        MAX_BACKOFF_PEERS members are remembered: past it, those no longer live go, then
        the least outvoted."""
        n = self._outvoted.pop(member, 0) + by
        if n <= 0:
            return
        if len(self._outvoted) >= MAX_BACKOFF_PEERS:
            live = self._host.peer_urls()
            for m in [m for m in self._outvoted if m not in live]:
                del self._outvoted[m]
            if len(self._outvoted) >= MAX_BACKOFF_PEERS:
                del self._outvoted[min(self._outvoted, key=self._outvoted.__getitem__)]
        self._outvoted[member] = n

    async def _read_v1(self, r: aiohttp.ClientResponse, t0: float) -> _Parsed:
        """An older peer's one snapshot body (`take_snapshot`'s), read into memory up to
        `max_snapshot_v1_bytes` (and `max_snapshot_bytes`; else StreamError), then parsed
        and its events decoded in a worker thread (`_parse`; the parse 0.3-0.65 s at 26 MB:
        on the loop, or in a thread without `sharing`, the loop waited for it)."""
        most = min(self.cfg.max_snapshot_bytes, self.cfg.max_snapshot_v1_bytes)
        data = bytearray()
        async with contextlib.aclosing(self._within_rate(r, t0)) as chunks:
            async for chunk in chunks:
                data += chunk
                if len(data) > most:
                    raise StreamError(f"a snapshot over {most} bytes (an older peer's one "
                                      "body, held in memory)")
        return await asyncio.to_thread(_parse, data)

    async def _second(self, http: aiohttp.ClientSession, urls: Mapping[str, str],
                      peer_id: str, v: str = "2") -> dict[str, Any] | None:
        """The digests of the first member `_opinion` finds, None if there is none."""
        got = await self._opinion(http, urls, peer_id, v, set(),
                                  time.monotonic() + self.cfg.timeout_s)
        return None if got is None else got[1]

    async def _opinion(self, http: aiohttp.ClientSession, urls: Mapping[str, str],
                       peer_id: str, v: str, asked: set[str], deadline: float,
                       each_s: float | None = None) -> tuple[str, dict[str, Any]] | None:
        """Another live member's digests of what it compacted (per job, of version `v`; an
        older peer answers with one digest of its whole snapshot) and who it is, None if
        there is none. Members not in `asked` are asked (and added to it) in the order of
        `urls`, those outvoted least first (`_vote`: a member whose digests lost a vote is
        asked after the others, and those waiting out a backoff (`_judge`) after all of
        them: review r3 of session 49, R4). A member that gives none (a connection error or
        timeout, within `each_s` if given: one that holds its answer takes no more than its
        share of a vote's time, and is asked after the others next time, R3; a
        status other than 200: 503 at its bound of snapshot serves, an answer longer than
        `max_digests_bytes` or in a Content-Encoding, one that is not a JSON object) is
        passed for the next, all of them before `deadline` (`time.monotonic`). An answer is
        read as sent (never decompressed: H1 of review r2, session 48) and parsed in a
        worker thread (`loads_within`)."""
        now = self.clock()
        for other, other_url in sorted(urls.items(), key=lambda m: (
                self._backoff.get(m[0], (0.0, 0))[0] > now, self._outvoted.get(m[0], 0))):
            if other == peer_id or other in asked or (v == "3" and SNAPSHOT_FEATURE not in (
                    self._host.live_peers().get(other, {}).get("features") or ())):
                continue  # (v3: its digests would be of version 2, not comparable)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            asked.add(other)
            try:
                total = left if each_s is None else min(left, each_s)
                async with http.get(f"{other_url}/api/snapshot", params={"digest": "1", "v": v},
                                    timeout=aiohttp.ClientTimeout(total=total)) as r:
                    if r.status != 200:
                        continue
                    coding = r.headers.get(aiohttp.hdrs.CONTENT_ENCODING, "identity")
                    if coding.strip().lower() != "identity":
                        raise ValueError(f"an answer in Content-Encoding {coding[:40]!r} "
                                         "(read as sent: never decompressed)")
                    data = await _read_within(r, self.cfg.max_digests_bytes)
                d = await asyncio.to_thread(loads_within, data)  # (not `sharing`: one flat
                # object, whose pairs its hook would hold twice, +38 MiB at 15 MiB)
                if isinstance(d, dict):
                    return other, d
                raise ValueError("an answer that is not a JSON object")
            except (aiohttp.ClientError, TimeoutError, ValueError) as e:
                if isinstance(e, TimeoutError) and each_s is not None:
                    self._note(other, 1)  # (R3: a staller is asked after the others)
                log.warning("no snapshot digests from %s (%s): %s; the next member is asked",
                            other[:16], other_url[:200], e or "no answer in time")
        return None


"""IPNS publishing: signed records for this peer's named keys (peer/ipfs/keystore.py), handed to
the mesh as IPNS_RECORD events so that every peer holds them, kept by every peer that hears one,
and republished before they expire. Loop-owned; file and signing work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeGuard

from peer.dataentry import ensure_dir, read_file
from peer.errors import ArgError, BanzaiError, DataError, IpnsError, NotFound
from peer.ipfs.ipns import (
    EPOCH,
    IpnsNames,
    OlderRecord,
    key_name,
    make_record,
    parse_name,
    read_record,
    validate,
)
from peer.ipfs.keystore import Keystore
from peer.log import Event, EventType, IpnsRecord
from peer.privfile import replace_private

log = logging.getLogger("banzai.ipns")

DEFAULT_LIFETIME_S = 48 * 3600.0  # Kubo's default --lifetime
DEFAULT_TTL_S = 3600.0  # Kubo's default --ttl
REPUBLISH_CHECK_S = 300.0
MAX_PUBLISHED_BYTES = 64 << 20  # published.json: an entry a name (~200 bytes); more is not ours
MAX_PENDING_BYTES = 8 << 20  # records heard, waiting to be kept off the loop (`on_event`)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

Emit = Callable[[EventType, dict[str, Any]], Any]


def parse_duration(text: str, field: str) -> float:
    """Seconds of a Go duration (`48h`, `1h30m`, `90s`); ArgError if it is not one."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise ArgError(f"{field}: {text!r} is not a duration (e.g. 48h, 30m, 90s)", field=field)
    return total


class IpnsService:
    """Publishes records for the keys held here, keeps those the mesh gossips, republishes
    its own when less than half of their lifetime is left."""

    def __init__(self, keys: Keystore, names: IpnsNames, emit: Emit,
                 clock: Callable[[], float] = time.time) -> None:
        self.keys = keys
        self.names = names
        self.emit = emit
        self.clock = clock
        self._published = names.root / "published.json"  # name -> {key, value, lifetime_s, ttl_s}
        names.kept = self._load  # (the names published here are never removed for room)
        self._bad: set[str] = set()  # names whose entry there is malformed (logged once)
        # IPNS_RECORD events heard whose record was not kept (/api/health): it does not read
        # (malformed, badly signed, expired, or the IPNS tree is damaged), or it is older
        # than the one held (the rule; split from `refused` in session 48)
        self.refused = 0
        self.older = 0
        self._unread: str | None = None  # why published.json cannot be read (logged once)
        self._lost: set[str] = set()  # names whose key derives another name now (logged once)
        # IPNS_RECORD events heard, kept in order by one task off the loop (`_keep_pending`:
        # a put fsyncs; session 48): (name, record, origin), and their bytes
        self._pending: deque[tuple[str, bytes, str]] = deque()
        self._pending_bytes = 0
        self._keeper: asyncio.Task[None] | None = None

    # -- blocking parts (worker threads) ------------------------------------------------------

    def _sequence(self, name: str) -> int:
        """The next sequence number for `name`: one past the record held, expired or not
        (0 if it does not read back); DataError if the IPNS tree is of the wrong kind."""
        self.names.check_root()
        try:
            raw = read_record(self.names.path(name))
            return validate(parse_name(name)[0], raw, EPOCH).sequence + 1
        except (FileNotFoundError, IpnsError):  # (a record that does not read back: replaced)
            return 0

    def _load(self) -> dict[str, dict[str, Any]]:
        """The entries of published.json ({} if absent or not JSON: a file edited by hand);
        DataError naming it if it (or ipns/) is of the wrong kind (a directory, a FIFO) or
        larger than MAX_PUBLISHED_BYTES."""
        self.names.check_root()
        try:
            text = read_file(self._published, "the IPNS names published here",
                             MAX_PUBLISHED_BYTES)
        except FileNotFoundError:
            return {}
        if len(text) > MAX_PUBLISHED_BYTES:
            raise DataError(f"{self._published} (the IPNS names published here) is larger "
                            f"than {MAX_PUBLISHED_BYTES} bytes: not this peer's file; move it "
                            "aside and publish the names again", field="published")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):  # (a file edited by hand)
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        ensure_dir(self.names.root, "the IPNS records' directory")
        replace_private(self._published, json.dumps(entries, sort_keys=True).encode())

    def sign(self, key: str, value: str, lifetime_s: float = DEFAULT_LIFETIME_S,
             ttl_s: float = DEFAULT_TTL_S) -> tuple[str, bytes]:
        """(the name, a new record of it naming `value`), kept here; NotFound for no key."""
        if not value.startswith("/ipfs/"):
            raise ArgError(f"publish: {value!r} is not an /ipfs/ path", field="arg")
        if not 1 <= lifetime_s <= 365 * 86400 or not 0 <= ttl_s <= lifetime_s:
            raise ArgError("publish: lifetime must be from 1 s to a year and ttl at most the "
                           "lifetime", field="lifetime")
        sk = self.keys.get(key)
        name = key_name(sk.public_key())
        eol = datetime.fromtimestamp(self.clock(), UTC) + timedelta(seconds=lifetime_s)
        raw = make_record(sk, value, self._sequence(name), eol, int(ttl_s * 1e9))
        self.names.put(name, raw)
        entries = self._load()
        entries[name] = {"key": key, "value": value, "lifetime_s": lifetime_s, "ttl_s": ttl_s}
        self._save(entries)
        return name, raw

    def due(self) -> list[tuple[str, str, float, float]]:
        """(key, value, lifetime_s, ttl_s) of this peer's published names whose record has
        less than half of its lifetime left (or is gone), and whose key is still here. A
        name whose key is here but derives another name now (its file damaged or replaced)
        is not republished: a warning naming the key's file, once."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        out = []
        keys = self.keys.list()
        held = {k.id for k in keys}
        ids = {k.name: k.id for k in keys}
        try:
            published = self._load()
        except DataError as err:
            if self._unread != err.message:  # (once, until it reads again)
                self._unread = err.message
                log.warning("no IPNS name is republished: %s", err.message)
            return []
        self._unread = None
        for name, e in published.items():
            if name not in held:
                self._lost_key(name, _entry(e), ids)
                continue
            entry = _entry(e)
            if entry is None:
                if name not in self._bad:  # (a hand-edited file: once)
                    self._bad.add(name)
                    log.warning("%s: the entry of %s is not (key, value, lifetime_s, ttl_s): "
                                "not republished", self._published, name[:80])
                continue
            try:
                left = (self.names.get(name).eol - now).total_seconds()
            except (NotFound, IpnsError, DataError):  # (a DataError: said by the republish)
                left = 0.0
            if left < entry[2] / 2:
                out.append(entry)
        return out

    def _lost_key(self, name: str, entry: tuple[str, str, float, float] | None,
                  ids: dict[str, str]) -> None:
        """Warn (once a name) if the key that published `name` is here but no longer derives
        it: any 32 bytes are an Ed25519 seed, so a flipped bit is silently another key."""
        if entry is None or entry[0] not in ids or name in self._lost:
            return  # (a key removed on purpose: nothing to say)
        self._lost.add(name)
        log.warning("the IPNS name %s is not republished (its record expires): its key %r "
                    "(%s) now derives %s, another name: the key file was damaged or replaced; "
                    "restore it from a backup to keep the name", name[:80], entry[0],
                    self.keys.path(entry[0]), ids[entry[0]])

    # -- on the loop ---------------------------------------------------------------------------

    async def publish(self, key: str, value: str, lifetime_s: float = DEFAULT_LIFETIME_S,
                      ttl_s: float = DEFAULT_TTL_S) -> str:
        """Sign and keep a record for `key`'s name, and gossip it; returns the name."""
        name, raw = await asyncio.to_thread(self.sign, key, value, lifetime_s, ttl_s)
        self.emit(EventType.IPNS_RECORD, {"name": name,
                                          "record": base64.b64encode(raw).decode()})
        log.info("published /ipns/%s -> %s (key %s)", name, value, key)
        return name

    def on_event(self, ev: Event) -> None:
        """Keep the record of an IPNS_RECORD event (a listener; invalid or older ones are
        logged and dropped). On a running loop the put (a read, a write, two fsyncs) is made
        off it, after those of the records heard before (one task: `_keep_pending`, so the
        puts of one name keep their order); inline without a loop (tests, tools), or while
        MAX_PENDING_BYTES of records wait (a flood: the loop waits, as before session 48)."""
        b = ev.body
        if not isinstance(b, IpnsRecord):
            return
        try:
            raw = base64.b64decode(b.record, validate=True)
        except ValueError as e:  # (binascii.Error; the door checks an event's signature and
            self._not_kept(b.name, ev.origin, str(e))  # shape, not what its record holds)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self._pending_bytes + len(raw) > MAX_PENDING_BYTES:
            if (why := self._put(b.name, raw, ev.origin)) is not None:
                self._not_kept(b.name, ev.origin, why)
            return
        self._pending.append((b.name, raw, ev.origin))
        self._pending_bytes += len(raw)
        if self._keeper is None or self._keeper.done():
            self._keeper = loop.create_task(self._keep_pending())

    async def _keep_pending(self) -> None:
        """Put the records heard, in the order heard, each in a worker thread."""
        while self._pending:
            name, raw, origin = self._pending[0]
            why: BanzaiError | OSError | str | None
            try:
                why = await asyncio.to_thread(self._put, name, raw, origin)
            except Exception as e:  # (a bug: said, and the records after it are kept still)
                log.exception("IPNS record for %s from %s: keeping it failed", name[:80], origin)
                why = f"{type(e).__qualname__}: {e}"
            finally:
                self._pending.popleft()
                self._pending_bytes -= len(raw)
            if why is not None:
                self._not_kept(name, origin, why)

    def _put(self, name: str, raw: bytes, origin: str) -> BanzaiError | OSError | None:
        """`names.put` (`origin`: the member whose event brought it): None, or why the
        record is not kept (blocking)."""
        try:
            self.names.put(name, raw, origin)
        except (BanzaiError, OSError) as e:
            return e
        return None

    def _not_kept(self, name: str, origin: str, why: BanzaiError | OSError | str) -> None:
        if isinstance(why, OlderRecord):
            self.older += 1
        else:
            self.refused += 1
        message = why.message if isinstance(why, BanzaiError) else str(why)
        log.info("IPNS record for %s from %s not kept: %s", name[:80], origin, message)

    async def close(self) -> None:
        """Wait for the records heard to be kept (Node.close)."""
        if self._keeper is not None:
            await asyncio.gather(self._keeper, return_exceptions=True)

    async def republish(self) -> int:
        """Republish what is due now; returns how many (failures are logged)."""
        done = 0
        for key, value, lifetime_s, ttl_s in await asyncio.to_thread(self.due):
            try:
                await self.publish(key, value, lifetime_s, ttl_s)
                done += 1
            except BanzaiError as e:
                log.warning("IPNS republish of key %s failed: %s", key, e.message)
        return done

    def forget_expired(self) -> int:
        """Remove record files expired for a while (`IpnsNames.forget_expired`), never those
        of the names published here (its `kept`, this `_load`); none while published.json
        does not read (blocking)."""
        try:
            return self.names.forget_expired()
        except (BanzaiError, OSError):  # (published.json or ipns/ of the wrong kind: said by
            return 0  # `due` and `held`)

    async def run(self, every_s: float = REPUBLISH_CHECK_S) -> None:
        """Republish due records every `every_s`, and remove record files long expired,
        until cancelled."""
        while True:
            try:
                await self.republish()
                await asyncio.to_thread(self.forget_expired)
            except Exception:  # a failed round must not end the periodic ones
                log.exception("IPNS republishing failed (tried again in %.0f s)", every_s)
            await asyncio.sleep(every_s)


def _entry(e: Any) -> tuple[str, str, float, float] | None:
    """(key, value, lifetime_s, ttl_s) of a published.json entry; None if malformed."""
    if type(e) is not dict:
        return None
    key, value, life, ttl = (e.get(k) for k in ("key", "value", "lifetime_s", "ttl_s"))
    if not (isinstance(key, str) and isinstance(value, str) and _seconds(life)
            and _seconds(ttl)):
        return None
    return key, value, float(life), float(ttl)


def _seconds(v: object) -> TypeGuard[float]:
    """A number as JSON gives it (not a bool)."""
    return type(v) in (int, float)


def records_dir(data_dir: Path) -> Path:
    return data_dir / "ipns"

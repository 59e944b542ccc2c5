"""Whose log this is: a data dir's event log, its identity key and its mesh secret must
belong together, checked at start (read as hostile: a file lost, restored from another
peer, replaced or emptied by hand).

- The log is made before the key at a peer's first start, so a key kept beside a log that
  did not exist (missing, 0 bytes, no tables) means the log was lost: the peer would write
  its seqs again with other contents, which other peers may hold (`own_identity` refuses).
- The log's meta `key` holds the public key its own events are signed with (recorded at the
  first start of this release; a data dir of an earlier release is checked against its id
  if that certifies a key, else against the keys its own batches were signed with: one of
  them, as an earlier release made a new key when the file was lost). Another is refused.
- A peer that held a mesh secret (noted in the log's meta `mesh_secret` since session 32)
  and whose log holds other peers' events (or floors) was in a mesh: a new mesh secret would
  make it a mesh of its own (`was_meshed`; the caller refuses to make one).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from peer.errors import ConfigError, DataError
from peer.log.signing import Identity, peer_id_for, self_certifying, stored_peer_id
from peer.log.sqlite import EventLog, connect, unreadable

LOG_FILE = "events.sqlite"  # in the data dir
KEY_FILE = "identity.key"  # in the data dir (peer.log.signing.Identity)
_KEY_META = "key"  # the log's meta: hex of the public key of its own signed events
_LOST_META = "lost"  # the log's meta: made at a start refused as a lost log
_SECRET_META = "mesh_secret"  # the log's meta: its peer held a mesh secret (`note_secret`)


def own_identity(log: EventLog, key_file: Path) -> tuple[Identity, str]:
    """The peer's identity (`key_file`, made if the log is new) and id (the log's meta
    `peer_id`, else the key's), once they are checked to belong to `log` (which records
    them); ConfigError naming the files and what the operator can do if they do not."""
    held = key_file.exists() or key_file.is_symlink()
    peer_id = stored_peer_id(log.get_meta("peer_id"), log.path)
    if peer_id is None and held and (log.created or log.get_meta(_LOST_META) is not None):
        log.set_meta(_LOST_META, "1")  # (this start made the log: refused at the next too)
        raise ConfigError(
            f"{key_file} is kept but the event log {log.path} was missing or empty: this "
            "peer would write its events again under seqs that other peers may hold with "
            f"other contents. Restore {log.path.name} from a backup, or move {key_file.name} "
            "aside to join as a new peer", field="data_dir")
    # (no id but a key beside a log that existed: a first start that ended between them)
    recorded = _recorded_key(log)
    if peer_id is not None and not held and (recorded is not None or self_certifying(peer_id)
                                             or _signed_keys(log, peer_id)):
        raise ConfigError(
            f"{key_file} is missing, but the event log {log.path} holds events signed with "
            f"it: restore {key_file.name} from a backup (or move the data dir aside to join "
            "as a new peer)", field="data_dir")
    if not held:  # the key is made now, fsynced with its directory: the log's tables must
        # be on disk before it (they sit in the WAL, not synced at commit): a power cut
        # would leave a key beside a log with no tables, refused as a lost log
        log.db.execute("PRAGMA wal_checkpoint(FULL)")
    identity = Identity.load(key_file)
    if peer_id is None:
        peer_id = peer_id_for(identity.key)
    elif recorded is not None:
        _same_key(recorded == identity.key, key_file, log)
        if self_certifying(peer_id) and peer_id != peer_id_for(identity.key):
            raise DataError(f"{log.path}: meta 'peer_id' holds {peer_id}, but this peer's key "
                            f"certifies {peer_id_for(identity.key)}: the file is damaged or "
                            "was edited; restore it from a backup")
    elif self_certifying(peer_id):  # a data dir of an earlier release: its id tells
        _same_key(peer_id == peer_id_for(identity.key), key_file, log)
    else:  # 0.1.0's id certifies no key: the key must be one its own batches were signed
        signed = _signed_keys(log, peer_id)  # with (an earlier release made a new key
        _same_key(not signed or identity.key in signed, key_file, log)  # for a lost one)
    log.set_meta("peer_id", peer_id)
    log.set_meta(_KEY_META, identity.key.hex())
    return identity, peer_id


def _same_key(same: bool, key_file: Path, log: EventLog) -> None:
    if not same:
        raise ConfigError(
            f"{key_file} is not the key the event log {log.path} was written with (it was "
            f"replaced): restore this data dir's {key_file.name} from a backup, or move the "
            "data dir aside to join as a new peer", field="data_dir")


def _recorded_key(log: EventLog) -> bytes | None:
    """The public key the log's meta records, None if none; DataError naming the file if
    the row is not one."""
    v = log.get_meta(_KEY_META)
    if v is None:
        return None
    try:
        key = bytes.fromhex(v)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise DataError(f"{log.path}: meta {_KEY_META!r} holds {v!r:.80}, not a public key: "
                        "the file is damaged or was edited")
    return key


def _signed_keys(log: EventLog, peer_id: str) -> set[bytes]:
    """The keys of the batches `peer_id` signed in the log (a damaged one, not bytes, is
    left out: the door quarantines its events)."""
    return {k for (k,) in log.db.execute("SELECT DISTINCT key FROM batches WHERE signer = ?",
                                         (peer_id,)) if isinstance(k, bytes)}


def note_secret(log: EventLog) -> None:
    """Record in the log that this peer holds a mesh secret (`was_meshed`)."""
    log.set_meta(_SECRET_META, "1")


def was_meshed(log_file: Path) -> bool:
    """Whether the event log at `log_file` shows its peer was in a mesh: it held a mesh
    secret (`note_secret`) and holds events or floors of other origins than its own. (A data
    dir of a release without mesh secrets, or a peer alone so far, makes one anew.) False if
    there is no log; StoreError naming the file if it cannot be read."""
    if not log_file.exists():
        return False
    try:  # (mode=rw: never made here)
        db = connect(f"{log_file.resolve().as_uri()}?mode=rw", uri=True)
    except sqlite3.Error as e:
        raise unreadable(log_file, e) from e
    try:
        tables = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        meta = dict(db.execute("SELECT k, v FROM meta WHERE k IN ('peer_id', ?)",
                               (_SECRET_META,))) if "meta" in tables else {}
        me = meta.get("peer_id", "")
        return _SECRET_META in meta and any(
            db.execute(f"SELECT 1 FROM {t} WHERE origin < ? OR origin > ? LIMIT 1",
                       (me, me)).fetchone() is not None
            for t in ("events", "floors", "compact_floors") if t in tables)
    except sqlite3.Error as e:
        raise unreadable(log_file, e) from e
    finally:
        db.close()


__all__ = ["KEY_FILE", "LOG_FILE", "note_secret", "own_identity", "was_meshed"]

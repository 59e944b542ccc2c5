"""A data dir's log, identity key and mesh secret must belong together (peer.log.owner; a
data-dir fuzz review, session 32): a lost log beside a kept key, a replaced or lost key, a
lost mesh secret of a peer that was in a mesh are refused at start, naming the files; a
fresh data dir, a first start cut short, and data dirs of earlier releases still open."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from peer.config import PeerConfig
from peer.errors import ConfigError, DataError
from peer.log import EventType
from peer.log.signing import Identity, peer_id_for, write_key
from peer.log.sqlite import EventLog
from peer.mesh.keyring import encode_token
from peer.node import Node, mesh_secrets

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "datadir-v0.1.0"


def _cfg(d: Path, **kw: object) -> PeerConfig:
    return PeerConfig(data_dir=d, slots=1, mdns=False, **kw)  # type: ignore[arg-type]


def _open(d: Path, opened: list[Node], **kw: object) -> Node:
    n = Node(_cfg(d, **kw))
    opened.append(n)
    return n


def _closed(d: Path) -> str:
    """A data dir its peer opened once, then closed; its peer id."""
    n = Node(_cfg(d))
    n.log.close()
    return n.peer_id


def _sql(d: Path, *stmts: str) -> None:
    c = sqlite3.connect(d / "events.sqlite", isolation_level=None)
    for s in stmts:
        c.execute(s)
    c.close()


def _refused(d: Path, *names: str) -> str:
    with pytest.raises(ConfigError) as e:
        Node(_cfg(d))
    for name in names:
        assert str(d / name) in e.value.message
    return e.value.message


# -- a lost log beside a kept key ---------------------------------------------------------


@pytest.mark.parametrize("how", ["deleted", "emptied"])
def test_a_lost_log_beside_a_kept_key_is_refused(tmp_path: Path, how: str) -> None:
    d = tmp_path / "d"
    _closed(d)
    for name in ("events.sqlite", "events.sqlite-wal", "events.sqlite-shm"):
        (d / name).unlink(missing_ok=True)
    if how == "emptied":
        (d / "events.sqlite").write_bytes(b"")
    msg = _refused(d, "identity.key", "events.sqlite")
    assert "Restore" in msg and "move identity.key aside" in msg
    _refused(d, "identity.key", "events.sqlite")  # (again: nothing was made meanwhile)


def test_a_first_start_cut_between_the_log_and_the_key_opens(tmp_path: Path,
                                                             opened: list[Node]) -> None:
    d = tmp_path / "d"
    EventLog(d / "events.sqlite").close()  # the log is made first, then the key
    key = Identity.load(d / "identity.key")
    assert _open(d, opened).peer_id == peer_id_for(key.key)


def test_a_first_start_cut_by_a_power_loss_opens_again(tmp_path: Path,
                                                        opened: list[Node]) -> None:
    """A power loss keeps what was fsynced: the key (and its directory), not the log's WAL.
    A first start killed once its node was made, its WAL then gone, must open again (its
    tables were only in the WAL: refused as a lost log; helper-176's review)."""
    d = tmp_path / "d"
    code = ("import os, sys; from pathlib import Path; from peer.config import PeerConfig; "
            "from peer.node import Node; "
            "Node(PeerConfig(data_dir=Path(sys.argv[1]), slots=1, mdns=False)); "
            "os.kill(os.getpid(), 9)")
    r = subprocess.run([sys.executable, "-c", code, str(d)], capture_output=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert r.returncode == -9, r.stderr
    assert (d / "identity.key").exists()
    for wal in ("events.sqlite-wal", "events.sqlite-shm"):
        (d / wal).unlink(missing_ok=True)
    n = _open(d, opened)
    assert n.peer_id == peer_id_for(Identity.load(d / "identity.key").key)


def test_a_fresh_data_dir_opens_and_again(tmp_path: Path, opened: list[Node]) -> None:
    d = tmp_path / "d"
    pid = _closed(d)
    assert _open(d, opened).peer_id == pid


# -- a replaced or lost key ---------------------------------------------------------------


def test_a_replaced_key_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    _closed(d)
    (d / "identity.key").unlink()
    write_key(d / "identity.key", Ed25519PrivateKey.generate())
    assert "not the key" in _refused(d, "identity.key")


def test_a_damaged_peer_id_of_the_same_shape_is_refused(tmp_path: Path) -> None:
    """One bit flipped in meta peer_id that keeps it 20 hex digits: the peer would sign and
    send another id than its key certifies (the data-dir fuzzer's F27)."""
    d = tmp_path / "d"
    me = _closed(d)
    other = ("1" if me[0] != "1" else "2") + me[1:]
    _sql(d, f"UPDATE meta SET v = '{other}' WHERE k = 'peer_id'")
    with pytest.raises(DataError, match=r"meta 'peer_id' holds .* certifies"):
        Node(_cfg(d))


def test_a_lost_key_is_refused_and_not_made_anew(tmp_path: Path) -> None:
    d = tmp_path / "d"
    _closed(d)
    (d / "identity.key").unlink()
    assert "missing" in _refused(d, "identity.key")
    assert not (d / "identity.key").exists()


def test_a_replaced_key_of_an_earlier_release_is_refused(tmp_path: Path) -> None:
    """A data dir of the release before: no key recorded in the log's meta."""
    d = tmp_path / "d"
    _closed(d)
    _sql(d, "DELETE FROM meta WHERE k = 'key'")
    (d / "identity.key").unlink()
    write_key(d / "identity.key", Ed25519PrivateKey.generate())
    _refused(d, "identity.key")  # (its id certifies the key)


def test_a_replaced_key_of_a_0_1_0_id_is_refused_by_its_signed_rows(tmp_path: Path) -> None:
    d = tmp_path / "d"
    shutil.copytree(FIXTURE, d)
    _closed(d)  # its own rows are now signed with its key
    _sql(d, "DELETE FROM meta WHERE k = 'key'")
    (d / "identity.key").unlink()
    write_key(d / "identity.key", Ed25519PrivateKey.generate())
    _refused(d, "identity.key")


def test_a_0_1_0_id_whose_batches_two_keys_signed_opens_with_either(tmp_path: Path) -> None:
    """An earlier release made a new key when identity.key was lost and signed on with it:
    the log holds batches of both keys, and a backup's key (the first) is as much its own
    as the second (helper-176's review: neither opened). Another key is still refused."""
    d = tmp_path / "d"
    shutil.copytree(FIXTURE, d)
    first = Node(_cfg(d))  # its own rows are now signed with the first key
    first.log.close()
    shutil.copy2(d / "identity.key", tmp_path / "backup.key")
    (d / "identity.key").unlink()
    second = Ed25519PrivateKey.generate()
    write_key(d / "identity.key", second)
    _sql(d, f"UPDATE meta SET v = '{Identity(second).key.hex()}' WHERE k = 'key'")
    n = Node(_cfg(d))  # (as the earlier release did: the same id, a new key)
    n.emit(EventType.PROVIDE, {"cids": ["c"]})
    n.flush()
    n.log.close()
    _sql(d, "DELETE FROM meta WHERE k = 'key'")  # (an earlier release recorded none)
    c = sqlite3.connect(d / "events.sqlite")
    keys = {k for (k,) in c.execute("SELECT DISTINCT key FROM batches WHERE signer = ?",
                                    (n.peer_id,))}
    c.close()
    assert keys == {first.identity.key, n.identity.key}
    for restore in (False, True, False):  # the second key, then the first from a backup
        (d / "identity.key").unlink()
        if restore:
            shutil.copy2(tmp_path / "backup.key", d / "identity.key")
        else:
            write_key(d / "identity.key", second)
        again = Node(_cfg(d))
        assert again.peer_id == first.peer_id
        again.log.close()
        _sql(d, "DELETE FROM meta WHERE k = 'key'")
    (d / "identity.key").unlink()
    write_key(d / "identity.key", Ed25519PrivateKey.generate())
    _refused(d, "identity.key")


def test_a_data_dir_of_0_1_0_gets_a_key_and_keeps_it(tmp_path: Path,
                                                     opened: list[Node]) -> None:
    d = tmp_path / "d"
    shutil.copytree(FIXTURE, d)
    key = Node(_cfg(d))
    key.log.close()
    n = _open(d, opened)
    assert n.peer_id == "9b79d67a1e23336a" and n.identity.key == key.identity.key


# -- a lost mesh secret -------------------------------------------------------------------


@pytest.mark.parametrize("other", ["INSERT INTO events (origin, seq, hlc, type, payload) "
                                   "VALUES ('0123456789abcdef0123', 1, 1, 1, '{}')",
                                   "INSERT INTO floors VALUES ('0123456789abcdef0123', 9)"])
def test_a_lost_secret_of_a_peer_in_a_mesh_is_refused(tmp_path: Path, other: str) -> None:
    d = tmp_path / "d"
    _closed(d)
    _sql(d, other)
    secret = (d / "mesh.secret").read_bytes().strip()
    (d / "mesh.secret").unlink()
    with pytest.raises(ConfigError) as e:
        mesh_secrets(_cfg(d))
    assert str(d / "mesh.secret") in e.value.message and "join token" in e.value.message
    _refused(d, "mesh.secret")
    assert not (d / "mesh.secret").exists()
    got = mesh_secrets(_cfg(d, join_token=encode_token(secret)))  # (the mesh's token: joins)
    assert got.primary == secret


def test_a_lost_secret_of_a_peer_alone_is_made_anew(tmp_path: Path, opened: list[Node]) -> None:
    d = tmp_path / "d"
    _closed(d)
    (d / "mesh.secret").unlink()
    _open(d, opened)
    assert (d / "mesh.secret").exists()


def test_a_data_dir_of_a_release_without_secrets_makes_one(tmp_path: Path,
                                                          opened: list[Node]) -> None:
    """A 0.1.0 peer that was in a mesh: other origins' events, no secret ever held."""
    d = tmp_path / "d"
    shutil.copytree(FIXTURE, d)
    _sql(d, "INSERT INTO events (origin, seq, hlc, type, payload) "
            "SELECT 'fedcba9876543210', seq, hlc, type, payload FROM events")
    assert mesh_secrets(_cfg(d)).source == "generated"
    _open(d, opened)
    assert (d / "mesh.secret").exists()

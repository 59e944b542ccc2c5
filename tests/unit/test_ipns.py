"""IPNS records (peer/ipfs/ipns.py), routing/put and name/resolve (rpc.py) and /ipns/ on the
gateway, with records signed here by an Ed25519 key (no network)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData, web
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from yarl import URL

from peer.cids import Cid
from peer.errors import ArgError, Conflict, DataError, IpnsError, NotFound
from peer.ipfs import EmbeddedStore, gateway, ipns, rpc
from peer.ipfs.dagpb import varint
from peer.ipfs.keystore import Keystore
from peer.ipfs.publish import IpnsService
from peer.log import Event, EventType

HELLO_V1 = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am"
NOW = datetime(2026, 11, 30, tzinfo=UTC)
FUTURE = b"2099-01-01T00:00:00.123456789Z"


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    return bytes([major << 5 | 27]) + n.to_bytes(8, "big")


def _field(no: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return varint(no << 3) + varint(value)
    return varint(no << 3 | 2) + varint(len(value)) + value


class Key:
    def __init__(self) -> None:
        self.private = ed25519.Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        pub = _field(1, 1) + _field(2, raw)  # libp2p PublicKey {Type: Ed25519, Data}
        self.name = ipns.canonical(Cid(1, ipns.LIBP2P_KEY, b"\x00" + bytes([len(pub)]) + pub))

    def record(self, value: str, seq: int = 1, validity: bytes = FUTURE, ttl_ns: int = 60 * 10**9,
               v1_value: bytes | None = None, v2: bool = True, tamper: bool = False) -> bytes:
        items = [("TTL", ttl_ns), ("Value", value.encode()), ("Sequence", seq),
                 ("Validity", validity), ("ValidityType", 0)]  # DAG-CBOR key order
        data = _cbor_head(5, len(items))
        for k, v in items:
            data += _cbor_head(3, len(k)) + k.encode()
            data += _cbor_head(0, v) if isinstance(v, int) else _cbor_head(2, len(v)) + v
        sig = self.private.sign(b"ipns-signature:" + data)
        if tamper:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        out = _field(1, v1_value if v1_value is not None else value.encode())
        if v2:
            out += _field(8, sig) + _field(9, data)
        return out


@pytest.fixture
def key() -> Key:
    return Key()


def test_valid_record(key: Key) -> None:
    c, is_cid = ipns.parse_name(key.name)
    assert is_cid and c.codec == "libp2p-key"
    rec = ipns.validate(c, key.record(f"/ipfs/{HELLO_V1}", seq=7), NOW)
    assert (rec.value, rec.sequence, rec.ttl_ns) == (f"/ipfs/{HELLO_V1}", 7, 60 * 10**9)
    assert rec.eol.year == 2099


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"v2": False}, "no V2 signature"),
    ({"tamper": True}, "does not verify"),
    ({"v1_value": b"/ipfs/other"}, "V1 Value does not match"),
    ({"validity": b"2020-01-01T00:00:00Z"}, "expired"),
    ({"validity": b"tomorrow"}, "bad validity"),
])
def test_invalid_records_are_refused(key: Key, kwargs: dict[str, Any], reason: str) -> None:
    c, _ = ipns.parse_name(key.name)
    with pytest.raises(IpnsError, match=reason):
        ipns.validate(c, key.record(f"/ipfs/{HELLO_V1}", **kwargs), NOW)


def test_record_signed_by_another_key_is_refused(key: Key) -> None:
    c, _ = ipns.parse_name(Key().name)
    with pytest.raises(IpnsError, match="does not verify"):
        ipns.validate(c, key.record(f"/ipfs/{HELLO_V1}"), NOW)


def test_base58_names_are_not_canonical() -> None:
    c, is_cid = ipns.parse_name("12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK")
    assert not is_cid
    assert ipns.canonical(c) == "k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8"
    with pytest.raises(ArgError):
        ipns.parse_name("not-a-name")


def test_names_keep_the_newest_record(key: Key, tmp_path: Path) -> None:
    names = ipns.IpnsNames(tmp_path / "ipns", clock=NOW.timestamp)
    with pytest.raises(NotFound):
        names.get(key.name)
    with pytest.raises(IpnsError):
        names.resolve(key.name)
    names.put(key.name, key.record("/ipfs/a", seq=2))
    with pytest.raises(IpnsError, match="newer record"):
        names.put(key.name, key.record("/ipfs/b", seq=1))
    names.put(key.name, key.record("/ipfs/c", seq=3))
    assert names.get(key.name).value == "/ipfs/c"


Client = TestClient[Any, Any]


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> Client:
    store = EmbeddedStore(tmp_path / "store")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "hello.txt").write_bytes(b"hello\n")
    store.root_cid = store.add_path(src)  # type: ignore[attr-defined]
    names = ipns.IpnsNames(tmp_path / "ipns")
    app = web.Application()
    gateway.add_routes(app, store, names=names)
    rpc.add_routes(app, store, names=names)
    c: Client = await aiohttp_client(app)
    c.root = store.root_cid  # type: ignore[attr-defined]
    return c


async def _put(client: Client, name: str, record: bytes) -> Any:
    form = FormData()
    form.add_field("file", record, filename="r.ipns-record")
    return await client.post(f"/api/v0/routing/put?arg=/ipns/{name}", data=form)


async def test_routing_put_and_ipns_gateway(client: Client, key: Key) -> None:
    root = client.root  # type: ignore[attr-defined]
    r = await _put(client, key.name, key.record(f"/ipfs/{root}/sub", v2=False))
    assert r.status == 400 and "V2 signature" in (await r.json())["Message"]
    r = await client.get(f"/ipns/{key.name}/hello.txt")
    assert r.status == 502  # no valid record: the suite's 5xx, with the reason
    assert (await r.json())["error"] == "IpnsError"
    record = key.record(f"/ipfs/{root}/sub", ttl_ns=1800 * 10**9)
    r = await _put(client, key.name, record)
    assert r.status == 200
    r = await client.get(f"/ipns/{key.name}/hello.txt")
    assert r.status == 200 and await r.read() == b"hello\n"
    assert r.headers["Cache-Control"] == "public, max-age=1800"
    assert r.headers["X-Ipfs-Path"] == f"/ipns/{key.name}/hello.txt"
    r = await client.get(f"/ipns/{key.name}?format=ipns-record")
    assert await r.read() == record
    assert r.headers["Content-Type"] == ipns.RECORD_TYPE
    assert r.headers["Content-Disposition"].startswith("attachment;")
    r = await client.post(f"/api/v0/name/resolve?arg=/ipns/{key.name}")
    assert (await r.json())["Path"] == f"/ipfs/{root}/sub"


@pytest.mark.parametrize("name", ["12D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK",
                                  "%312D3KooWRBy97UB99e3J6hiPesre1MZeuNQvfan4gBziswrRJsNK"])
async def test_base58_name_redirects_to_its_cid_form(client: Client, name: str) -> None:
    r = await client.get(URL(f"/ipns/{name}/a/?x=1", encoded=True), allow_redirects=False)
    assert r.status == 302
    assert r.headers["Location"] == (
        "/ipns/k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8/a/?x=1")
    r = await client.get(URL(f"/ipns/{name}", encoded=True), allow_redirects=False)
    assert r.headers["Location"] == (
        "/ipns/k51qzi5uqu5dlvj2baxnqndepeb86cbk3ng7n3i46uzyxzyqj2xjonzllnv0v8")


# --- keys and publishing (peer/ipfs/keystore.py, peer/ipfs/publish.py) ------------------------


def _service(tmp_path: Path, now: list[float]) -> tuple[IpnsService, list[Any]]:
    emitted: list[Any] = []
    (tmp_path / "data").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "identity.key").write_bytes(b"\x07" * 32)
    svc = IpnsService(Keystore(tmp_path / "data"), ipns.IpnsNames(tmp_path / "data" / "ipns",
                                                                   clock=lambda: now[0]),
                      lambda typ, payload: emitted.append((typ, payload)), clock=lambda: now[0])
    return svc, emitted


def test_keystore_names_keys_and_self_is_the_identity(tmp_path: Path) -> None:
    svc, _ = _service(tmp_path, [NOW.timestamp()])
    keys = svc.keys
    ident = ed25519.Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
    assert [(k.name, k.id) for k in keys.list()] == [("self", ipns.key_name(ident.public_key()))]
    model = keys.gen("model")
    assert model.id.startswith("k51") and ipns.parse_name(model.id)[1]
    assert [k.name for k in keys.list()] == ["self", "model"]
    assert (tmp_path / "data" / "keys" / "model.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(Conflict):
        keys.gen("model")
    with pytest.raises(Conflict):
        keys.gen("self")
    for bad in ("", "../x", "a/b", ".hidden", "x" * 65):
        with pytest.raises(ArgError):
            keys.gen(bad)
    with pytest.raises(NotFound):
        keys.get("nope")


def test_publish_signs_v1_v2_records_with_growing_sequences_and_republishes(
        tmp_path: Path) -> None:
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    svc.keys.gen("model")
    name, raw = svc.sign("model", "/ipfs/bafkqaaa", lifetime_s=3600, ttl_s=60)
    record = ipns.validate(ipns.parse_name(name)[0], raw, NOW)
    assert (record.value, record.sequence, record.ttl_ns) == ("/ipfs/bafkqaaa", 0, 60 * 10**9)
    assert record.eol == datetime.fromtimestamp(now[0] + 3600, UTC)
    assert svc.names.get(name).raw == raw
    assert svc.sign("model", "/ipfs/bafkqaaa", lifetime_s=3600)[1] != raw
    assert svc.names.get(name).sequence == 1
    assert svc.due() == []
    now[0] += 1801  # less than half of the lifetime left
    assert svc.due() == [("model", "/ipfs/bafkqaaa", 3600.0, 3600.0)]
    now[0] += 7200  # expired: still due, the next sequence follows the expired one
    assert svc.sign("model", "/ipfs/bafkqaaa", lifetime_s=3600)[0] == name
    assert svc.names.get(name).sequence == 2
    with pytest.raises(ArgError):
        svc.sign("model", "/ipns/elsewhere")


def test_a_key_file_or_published_entry_that_does_not_read_back_is_skipped_and_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Republishing goes on for the other names (its task used to end for good)."""
    now = [NOW.timestamp()]
    svc, emitted = _service(tmp_path, now)
    for k in ("model", "torn", "edited"):
        svc.keys.gen(k)
        svc.sign(k, "/ipfs/bafkqaaa", lifetime_s=3600)
    torn = tmp_path / "data" / "keys" / "torn.key"
    torn.write_bytes(torn.read_bytes()[:31])
    published = svc.names.root / "published.json"
    entries = json.loads(published.read_text())
    edited = next(n for n, e in entries.items() if e["key"] == "edited")
    del entries[edited]["lifetime_s"]
    published.write_text(json.dumps(entries))
    now[0] += 1801  # every record is due
    with caplog.at_level(logging.WARNING):
        assert [k.name for k in svc.keys.list()] == ["self", "edited", "model"]
        with pytest.raises(DataError, match=re.escape(f"{torn}: 31 bytes, not an Ed25519")):
            svc.keys.get("torn")
        for _ in range(2):
            assert svc.due() == [("model", "/ipfs/bafkqaaa", 3600.0, 3600.0)]
        assert asyncio.run(svc.republish()) == 1 and len(emitted) == 1
    assert caplog.text.count("key 'torn' left out") == 1
    assert caplog.text.count(f"{published}: the entry of {edited} is not") == 1


async def test_the_republish_task_outlives_a_failed_round(tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture,
                                                          ) -> None:
    svc, _ = _service(tmp_path, [NOW.timestamp()])
    rounds: list[int] = []

    async def failing() -> int:
        rounds.append(1)
        raise RuntimeError("a bug")

    svc.republish = failing  # type: ignore[method-assign]
    task = asyncio.create_task(svc.run(every_s=0.001))
    while len(rounds) < 3 and not task.done():
        await asyncio.sleep(0.001)
    assert not task.done()  # it failed three rounds and is still running
    task.cancel()
    assert "IPNS republishing failed (tried again in 0 s)" in caplog.text


def test_held_lists_the_valid_names_and_follows_new_records(tmp_path: Path) -> None:
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    svc.keys.gen("model")
    model, _ = svc.sign("model", "/ipfs/bafkqaaa", lifetime_s=3600)
    me, _ = svc.sign("self", "/ipfs/bafkqaaa/x", lifetime_s=7200)
    (svc.names.root / "zz.ipns-record").write_bytes(b"not hex")
    (svc.names.root / f"{'00' * 34}.ipns-record").write_bytes(b"not a record")
    held = svc.names.held
    assert {n: r.value for n, r in held().items()} == {model: "/ipfs/bafkqaaa",
                                                       me: "/ipfs/bafkqaaa/x"}
    svc.sign("model", "/ipfs/bafkqaab", lifetime_s=3600)  # a new record: read again
    assert held()[model].value == "/ipfs/bafkqaab"
    now[0] += 3601  # the model's record expired
    assert list(held()) == [me]
    assert ipns.IpnsNames(tmp_path / "none").held() == {}


async def test_records_are_emitted_and_kept_by_the_peers_that_hear_them(tmp_path: Path) -> None:
    now = [NOW.timestamp()]
    svc, emitted = _service(tmp_path / "a", now)
    name = await svc.publish("self", "/ipfs/bafkqaaa")
    [(typ, payload)] = emitted
    assert typ is EventType.IPNS_RECORD and payload["name"] == name
    other, _ = _service(tmp_path / "b", now)
    ev = Event("p1", 1, 1, EventType.IPNS_RECORD, payload)
    other.on_event(ev)
    await other.close()  # (kept off the loop: session 48)
    assert other.names.get(name).value == "/ipfs/bafkqaaa"
    forged = dict(payload, name=ipns.key_name(ed25519.Ed25519PrivateKey.generate().public_key()))
    other.on_event(Event("p1", 2, 2, EventType.IPNS_RECORD, forged))  # signed by another key
    await other.close()
    assert other.refused == 1
    with pytest.raises(NotFound):
        other.names.get(forged["name"])


async def test_key_gen_publish_and_foreign_records_over_rpc(aiohttp_client: Any,
                                                            tmp_path: Path) -> None:
    from collections import Counter

    svc, _ = _service(tmp_path, [NOW.timestamp()])
    store = EmbeddedStore(tmp_path / "store")
    cid = store.add_bytes(b"the latest model\n")
    refused: Counter[str] = Counter()
    app = web.Application()
    gateway.add_routes(app, store, names=svc.names)
    rpc.add_routes(app, store, names=svc.names, ipns=svc, refused=refused)
    client: Client = await aiohttp_client(app)
    r = await client.post("/api/v0/key/gen?arg=model&type=ed25519")
    model = (await r.json())["Id"]
    r = await client.post("/api/v0/key/list")
    assert [k["Name"] for k in (await r.json())["Keys"]] == ["self", "model"]
    assert (await client.post("/api/v0/key/gen?arg=x&type=rsa")).status == 501
    r = await client.post(f"/api/v0/name/publish?arg={cid}&key=model&lifetime=2h&ttl=10m")
    assert await r.json() == {"Name": model, "Value": f"/ipfs/{cid}"}
    r = await client.get(f"/ipns/{model}")
    assert r.status == 200 and await r.read() == b"the latest model\n"
    assert r.headers["Cache-Control"] == "public, max-age=600"
    missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    r = await client.post(f"/api/v0/name/publish?arg={missing}&key=model")
    assert r.status == 400
    r = await client.post(f"/api/v0/name/publish?arg={cid}&key=model&lifetime=soon")
    assert r.status == 400
    # a record of the self key put under the model's name: signed by another key
    _, raw = svc.sign("self", f"/ipfs/{cid}")
    r = await _put(client, model, raw)
    assert r.status == 400 and "the name's key" in (await r.json())["Message"]
    assert refused["routing/put"] == 1


def test_the_published_entries_are_not_written_through_a_link_planted_at_their_temp_file(
        tmp_path: Path) -> None:
    """published.json was written to a temp file of a fixed name (published.tmp), opened
    following a symlink put there: the link's target was truncated and overwritten. The
    entries go through a new file of their own now (privfile.replace_private)."""
    svc, _ = _service(tmp_path, [NOW.timestamp()])
    svc.names.root.mkdir(parents=True, exist_ok=True)
    canary = tmp_path / "canary"
    canary.write_bytes(b"another program's file\n")
    (svc.names.root / "published.tmp").symlink_to(canary)
    svc.keys.gen("model")
    name, _ = svc.sign("model", "/ipfs/bafkqaaa", lifetime_s=3600)
    assert canary.read_bytes() == b"another program's file\n"
    assert name in json.loads((svc.names.root / "published.json").read_text())


# --- hostile bytes: validate raises IpnsError only; one bad record or name breaks nothing else --


def _signed_with_validity(sk: ed25519.Ed25519PrivateKey, validity: bytes) -> bytes:
    """A record `make_record` would make, but with `validity` as written (validly signed)."""
    from peer.ipfs import ipld

    data = ipld.encode_cbor({"Value": b"/ipfs/bafkqaaa", "Validity": validity,
                             "ValidityType": 0, "Sequence": 1, "TTL": 10**9})
    return ipns._pb(8, sk.sign(b"ipns-signature:" + data)) + ipns._pb(9, data)


@pytest.mark.parametrize("case", ["30 February", "month 13", "hour 25", "a name with no key",
                                  "a truncated varint", "a name of no multihash"])
def test_validate_says_ipns_error_for_each_parse_error_of_the_review(case: str) -> None:
    """Review r1 H2: each of these raised ValueError or StoreError out of validate (which
    broke held() for every name, and a gossiped record broke the merge of its batch)."""
    sk = ed25519.Ed25519PrivateKey.generate()
    name = ipns.parse_name(ipns.key_name(sk.public_key()))[0]
    good = ipns.make_record(sk, "/ipfs/bafkqaaa", 1, datetime(2099, 1, 1, tzinfo=UTC), 10**9)
    raw, want = {
        "30 February": (_signed_with_validity(sk, b"2099-02-30T00:00:00Z"), "bad validity"),
        "month 13": (_signed_with_validity(sk, b"2099-13-01T00:00:00Z"), "bad validity"),
        "hour 25": (_signed_with_validity(sk, b"2099-01-01T25:00:00Z"), "bad validity"),
        "a name with no key": (ipns._pb(8, b"s" * 64) + ipns._pb(9, b"d"), "public key"),
        "a truncated varint": (good[:1], "malformed IPNS record"),
        "a name of no multihash": (good, "not a well-formed multihash"),
    }[case]
    if case == "a name with no key":
        name = ipns.parse_name("kka1fr668")[0]  # identity multihash, wire type 3 inside
    elif case == "a name of no multihash":
        name = Cid(1, ipns.LIBP2P_KEY, bytes.fromhex("00ff"))  # (held() builds it from hex)
    with pytest.raises(IpnsError, match=want):
        ipns.validate(name, raw, NOW)


def test_validate_raises_ipns_error_or_returns_for_mutated_records_and_names() -> None:
    """A seeded mutation property (the review's fuzz classes: 1-4 bit flips, byte sets, cuts,
    inserts) over a valid record and its name's multihash: nothing but IpnsError escapes."""
    import random

    rng = random.Random(47)
    sk = ed25519.Ed25519PrivateKey.generate()
    name = ipns.parse_name(ipns.key_name(sk.public_key()))[0]
    raw = ipns.make_record(sk, "/ipfs/bafkqaaa", 3, datetime(2099, 1, 1, tzinfo=UTC), 10**12)
    dated = _signed_with_validity(sk, b"2099-01-01T00:00:00Z")

    def mutate(b: bytes) -> bytes:
        out = bytearray(b)
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.4 and out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            elif op < 0.6 and out:
                out[rng.randrange(len(out))] = rng.choice([0, 0x7F, 0x80, 0xFF, rng.randrange(256)])
            elif op < 0.8 and out:
                del out[rng.randrange(len(out)):]
            else:
                out[rng.randrange(len(out) + 1):0] = bytes([rng.randrange(256)])
        return bytes(out)

    outcomes: dict[str, int] = {}
    for i in range(3000):
        c, r = name, (raw, dated)[i % 2]
        if i % 3 == 0:
            c = Cid(1, ipns.LIBP2P_KEY, mutate(name.multihash))
        else:
            r = mutate(r)
        try:
            ipns.validate(c, r, NOW)
            kind = "valid"
        except IpnsError:
            kind = "IpnsError"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    assert sum(outcomes.values()) == 3000 and outcomes["IpnsError"] > 2000


def test_held_leaves_a_record_file_that_does_not_read_back_out_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review r1 H2 (disk): one cut record file made held() raise for every name (and each
    live job's view answer 500); now it is left out, logged once per version, naming it."""
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    svc.keys.gen("model")
    model, _ = svc.sign("model", "/ipfs/bafkqaaa", lifetime_s=3600)
    me, _ = svc.sign("self", "/ipfs/bafkqaaa/x", lifetime_s=3600)
    cut = svc.names.path(model)
    cut.write_bytes(cut.read_bytes()[:1])  # truncated or overlong varint (StoreError)
    nameless = svc.names.root / "00ff.ipns-record"  # hex, but no multihash (ValueError)
    nameless.write_bytes(b"x")
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert list(svc.names.held()) == [me]
    assert caplog.text.count(f"IPNS record file {cut} left out: malformed IPNS record") == 1
    assert caplog.text.count(f"IPNS record file {nameless} left out") == 1


def test_put_replaces_a_held_record_that_does_not_read_back(tmp_path: Path) -> None:
    """Review r1 H2 (the stuck name): put read the held record first and raised StoreError
    on a cut one, so no new record of the name (ours, or the owner's next) was ever kept."""
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    name, _ = svc.sign("self", "/ipfs/bafkqaaa", lifetime_s=3600)
    path = svc.names.path(name)
    path.write_bytes(path.read_bytes()[:1])
    again, raw = svc.sign("self", "/ipfs/bafkqaab", lifetime_s=3600)
    assert again == name and path.read_bytes() == raw
    assert svc.names.get(name).value == "/ipfs/bafkqaab"
    assert path.stat().st_mode & 0o777 == 0o600  # (written as the private files are: fsynced)


def _two_nodes(tmp_path: Path) -> tuple[Any, Any]:
    from peer.config import PeerConfig
    from peer.node import Node

    a = Node(PeerConfig(data_dir=tmp_path / "a", slots=1, mdns=False))
    b = Node(PeerConfig(data_dir=tmp_path / "b", slots=1, mdns=False))
    a.listeners.remove(a.ipns.on_event)  # (A: any member, sending what it likes)
    return a, b


def test_a_merged_ipns_record_of_a_bad_name_or_record_is_refused_and_the_rest_told(
        tmp_path: Path) -> None:
    """Review r1 H2 (network): an IPNS_RECORD whose name inlines no key made the listener
    raise ValueError inside Node.merge after the batch was stored: the later listeners and
    events were never told, and gossip forwarded nothing. Now the record is refused
    (counted) and everything else goes on."""
    a, b = _two_nodes(tmp_path)
    try:
        rec = base64.b64encode(ipns._pb(8, b"s" * 64) + ipns._pb(9, b"d")).decode()
        bad = a.emit(EventType.IPNS_RECORD, {"name": "kka1fr668", "record": rec})
        sk = ed25519.Ed25519PrivateKey.generate()
        dated = base64.b64encode(_signed_with_validity(sk, b"2099-02-30T00:00:00Z")).decode()
        feb30 = a.emit(EventType.IPNS_RECORD, {"name": ipns.key_name(sk.public_key()),
                                               "record": dated})
        good_name = a.ipns.sign("self", "/ipfs/bafkqaaa")[0]
        good = a.emit(EventType.IPNS_RECORD, {"name": good_name, "record": base64.b64encode(
            a.ipns.names.get(good_name).raw).decode()})
        told: list[tuple[str, int]] = []
        b.listeners.append(lambda e: told.append((e.origin, e.seq)))
        assert len(b.merge([bad, feb30, good])) == 3
        assert told == [(e.origin, e.seq) for e in (bad, feb30, good)]
        assert b.ipns.refused == 2 and b.listener_errors == 0
        assert b.ipns.names.get(good_name).value == "/ipfs/bafkqaaa"
    finally:
        a.log.close()
        b.log.close()


@pytest.mark.listener_errors
def test_a_listener_that_raises_does_not_abort_the_merge(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Node._tell: a listener's exception (a bug) was raised out of merge after the batch
    was stored and folded: the others, and the events after it, were never told. Now it is
    logged (the listener, the event) and counted, and the rest are told."""
    a, b = _two_nodes(tmp_path)
    try:
        first = a.emit(EventType.IPNS_RECORD, {"name": "kka1fr668", "record": "AAAA"})
        second = a.emit(EventType.IPNS_RECORD, {"name": "kka1fr668", "record": "AAAA"})

        def broken(ev: Event) -> None:
            if ev.seq == first.seq:
                raise RuntimeError("a bug")

        told: list[int] = []
        b.listeners[:0] = [broken]
        b.listeners.append(lambda e: told.append(e.seq))
        with caplog.at_level(logging.ERROR):
            assert len(b.merge([first, second])) == 2
        assert told == [first.seq, second.seq] and b.listener_errors == 1
        assert b.log_health()["listener_errors"] == 1
        assert f"failed on event {first.origin}/{first.seq}" in caplog.text
        assert "broken" in caplog.text
    finally:
        a.log.close()
        b.log.close()


# --- the IPNS tree's entries of the wrong kind (review r1 M2; M1's IPNS part) ----------------


def test_an_ipns_dir_that_is_a_file_is_a_data_error_naming_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review r1 M2: `ipns/` a file raised NotADirectoryError out of held() (every live
    job's view a 500) and out of name/publish; republishing failed with a traceback."""
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    name, _ = svc.sign("self", "/ipfs/bafkqaaa", lifetime_s=3600)
    root = svc.names.root
    for f in root.iterdir():
        f.unlink()
    root.rmdir()
    root.write_bytes(b"not a directory")
    said = re.escape(f"{root} (the IPNS records' directory) is a file, not a directory")
    for call in (svc.names.held, lambda: svc.names.get(name),
                 lambda: svc.sign("self", "/ipfs/bafkqaaa")):
        with pytest.raises(DataError, match=said):
            call()
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert svc.names.held_if_read() is None
            assert svc.due() == []
    assert caplog.text.count("the IPNS records held here cannot be read") == 1
    assert caplog.text.count("no IPNS name is republished") == 1


def test_published_json_that_is_a_directory_is_a_data_error_naming_it(tmp_path: Path) -> None:
    """Review r1 M2: IsADirectoryError out of _load: name/publish a 500, the republish round
    raised every 300 s (the names stopped being republished, unsaid)."""
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    svc.names.root.mkdir(parents=True)
    published = svc.names.root / "published.json"
    published.mkdir()
    with pytest.raises(DataError, match=re.escape(
            f"{published} (the IPNS names published here) is a directory, not a file")):
        svc.sign("self", "/ipfs/bafkqaaa")
    assert svc.due() == []


def test_a_keys_dir_that_is_a_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    """Review r1 M2: key/gen raised FileExistsError (a 500)."""
    svc, _ = _service(tmp_path, [NOW.timestamp()])
    (tmp_path / "data" / "keys").write_bytes(b"")
    with pytest.raises(DataError, match=re.escape(
            f"{tmp_path / 'data' / 'keys'} (the IPNS keys' directory) is a file, not a dir")):
        svc.keys.gen("model")


def test_a_fifo_or_a_directory_in_place_of_a_record_file_is_left_out_not_waited_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review r1 M1 (its IPNS part): a record file read by read_bytes() opened a FIFO and
    waited for a writer for ever (each job view took a thread of the pool, until none was
    left). Run in a thread joined with a bound, so that the old code fails, not hangs."""
    import os
    import threading

    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    me, _ = svc.sign("self", "/ipfs/bafkqaaa", lifetime_s=3600)
    svc.keys.gen("model")
    model, _ = svc.sign("model", "/ipfs/bafkqaab", lifetime_s=3600)
    fifo, folder = svc.names.path(me), svc.names.path(model)
    fifo.unlink()
    os.mkfifo(fifo)
    folder.unlink()
    folder.mkdir()
    out: list[Any] = []

    def read() -> None:
        try:
            out.append(svc.names.held())
            with pytest.raises(DataError, match=re.escape(f"{fifo} (an IPNS record) is a "
                                                          "special file (a FIFO")):
                svc.names.get(me)
        except BaseException as e:  # (shown by the assertion below)
            out.append(e)

    with caplog.at_level(logging.WARNING):
        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout=30)
    assert out == [{}], out or "held() waited on the FIFO"
    assert f"IPNS record file {fifo} left out" in caplog.text
    assert f"IPNS record file {folder} left out" in caplog.text


async def test_a_job_view_leaves_published_out_when_the_ipns_records_do_not_read(
        served_node: tuple[Any, Any]) -> None:
    """Review r1 M2: GET /api/jobs/<job> of a live job read the IPNS records; `ipns/` a file
    made it answer 500 (NotADirectoryError). The view goes on without `published`."""
    client, node = served_node
    r = await client.post("/api/jobs", data=b"- call: ECHO\n  args: [x]\n",
                          headers={"Content-Type": "application/yaml"})
    assert r.status == 201, await r.text()
    job = (await r.json())["job"]
    r = await client.get(f"/api/jobs/{job}")
    assert r.status == 200 and (await r.json())["published"] == []
    node.ipns.names.root.write_bytes(b"not a directory")
    r = await client.get(f"/api/jobs/{job}")
    assert r.status == 200, await r.text()
    view = await r.json()
    assert view["id"] == job and "published" not in view


def test_a_published_name_whose_key_file_now_derives_another_name_is_said_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Review r1 M3: a bit flipped in keys/NAME.key is another valid Ed25519 key; due()
    skipped the name it published as no longer held, with no word: the name expired."""
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    svc.keys.gen("model")
    svc.keys.gen("gone")
    name, _ = svc.sign("model", "/ipfs/bafkqaaa", lifetime_s=3600)
    svc.sign("gone", "/ipfs/bafkqaaa", lifetime_s=3600)
    path = tmp_path / "data" / "keys" / "model.key"
    flipped = bytearray(path.read_bytes())
    flipped[0] ^= 1
    path.write_bytes(bytes(flipped))
    (tmp_path / "data" / "keys" / "gone.key").unlink()  # removed on purpose: nothing said
    now[0] += 1801
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert svc.due() == []
    said = [r.getMessage() for r in caplog.records if "is not republished" in r.getMessage()]
    assert len(said) == 1, said
    assert f"the IPNS name {name} is not republished" in said[0]
    assert f"its key 'model' ({path}) now derives" in said[0] and "restore it" in said[0]


async def test_a_heard_record_is_kept_off_the_loop_in_the_order_heard(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Session 47's Left: IpnsNames.put (a read, a write, two fsyncs) ran on the event loop,
    in the listener. Now the puts run in worker threads, one at a time, in the order the
    records were heard: of one name, the newest (sequence, then end of life) is held."""
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    k, other = Key(), Key()
    loop_thread = threading.get_ident()
    puts: list[tuple[str, int, bool]] = []
    put = svc.names.put

    def recorded(name: str, raw: bytes, origin: str | None = None) -> ipns.Record:
        try:
            r = put(name, raw, origin)
        except IpnsError:
            puts.append((name, -1, threading.get_ident() == loop_thread))
            raise
        puts.append((name, r.sequence, threading.get_ident() == loop_thread))
        return r

    monkeypatch.setattr(svc.names, "put", recorded)
    heard = [(k, k.record("/ipfs/a", seq=1)), (other, other.record("/ipfs/x", seq=5)),
             (k, k.record("/ipfs/b", seq=2)), (k, k.record("/ipfs/c", seq=1)),
             (k, k.record("/ipfs/d", seq=2, validity=b"2099-01-02T00:00:00Z"))]
    for i, (key_, raw) in enumerate(heard):
        svc.on_event(Event("p1", i + 1, i + 1, EventType.IPNS_RECORD,
                           {"name": key_.name, "record": base64.b64encode(raw).decode()}))
    assert puts == []  # (on 45818f71 every put was made here, on the loop)
    await svc.close()
    assert puts == [(k.name, 1, False), (other.name, 5, False), (k.name, 2, False),
                    (k.name, -1, False), (k.name, 2, False)]
    assert svc.names.get(k.name).value == "/ipfs/d" and (svc.older, svc.refused) == (1, 0)
    assert svc.names.get(other.name).value == "/ipfs/x"


def test_of_two_records_of_one_sequence_the_later_end_of_life_is_held_in_any_order(
        tmp_path: Path, key: Key) -> None:
    """`put` ranks as the log does (`ipns.rank`): before, a record of the sequence held
    replaced it, so which of two was held depended on the order they were heard."""
    early, late = (key.record(f"/ipfs/{v}", seq=3, validity=d) for v, d in (
        ("early", b"2099-01-01T00:00:00Z"), ("late", b"2099-01-02T00:00:00Z")))
    for order in ((early, late), (late, early)):
        names = ipns.IpnsNames(tmp_path / str(order[0] is late), clock=NOW.timestamp)
        names.put(key.name, order[0])
        if order[1] is early:
            with pytest.raises(ipns.OlderRecord):
                names.put(key.name, early)
        else:
            names.put(key.name, late)
        assert names.get(key.name).value == "/ipfs/late"
        assert names.put(key.name, late).value == "/ipfs/late"  # (a copy: not an error)


def test_without_a_loop_a_heard_record_is_kept_at_once(tmp_path: Path, key: Key) -> None:
    svc, _ = _service(tmp_path, [NOW.timestamp()])
    svc.on_event(Event("p1", 1, 1, EventType.IPNS_RECORD, {
        "name": key.name, "record": base64.b64encode(key.record("/ipfs/a")).decode()}))
    assert svc.names.get(key.name).value == "/ipfs/a"
    svc.on_event(Event("p1", 2, 2, EventType.IPNS_RECORD, {"name": key.name, "record": "!"}))
    assert svc.refused == 1


async def test_an_older_record_is_counted_apart_from_one_that_does_not_read(
        served_node: tuple[Any, Any], key: Key) -> None:
    """Session 47 (helper g) left `ipfs.ipns_not_kept` counting records refused because a
    newer one is held (gossip's order, no damage) with those that do not read; now
    /api/health says `ipns_older` for the first, `ipns_not_kept` for the second."""
    client, node = served_node
    svc = node.ipns

    def heard(seq: int, record: str) -> None:
        svc.on_event(Event("p1", seq, seq, EventType.IPNS_RECORD,
                           {"name": key.name, "record": record}))

    heard(1, base64.b64encode(key.record("/ipfs/new", seq=2)).decode())
    heard(2, base64.b64encode(key.record("/ipfs/old", seq=1)).decode())
    heard(3, base64.b64encode(key.record("/ipfs/bad", seq=3, tamper=True)).decode())
    heard(4, "not base64!")
    await svc.close()
    assert svc.names.get(key.name).value == "/ipfs/new"
    r = await client.get("/api/health")
    assert r.status == 200
    ipfs = (await r.json())["ipfs"]
    assert (ipfs["ipns_older"], ipfs["ipns_not_kept"]) == (1, 2)
    assert (ipfs["ipns_names"], ipfs["ipns_names_max"], ipfs["ipns_names_removed"],
            ipfs["ipns_names_refused"]) == (1, ipns.MAX_NAMES, 0, 0)


async def test_a_put_that_fails_with_a_bug_is_said_and_the_records_after_it_are_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The queue's task outlives a put that raises what it does not expect (in the listener
    it was a listener error, counted; off the loop it would have ended the task unsaid)."""
    svc, _ = _service(tmp_path, [NOW.timestamp()])
    k, other = Key(), Key()
    put = svc.names.put

    def buggy(name: str, raw: bytes, origin: str | None = None) -> ipns.Record:
        if name == k.name:
            raise RuntimeError("a bug")
        return put(name, raw, origin)

    monkeypatch.setattr(svc.names, "put", buggy)
    for i, key_ in enumerate((k, other)):
        svc.on_event(Event("p1", i + 1, i + 1, EventType.IPNS_RECORD, {
            "name": key_.name, "record": base64.b64encode(key_.record("/ipfs/a")).decode()}))
    with caplog.at_level(logging.ERROR):
        await svc.close()
    assert svc.names.get(other.name).value == "/ipfs/a" and svc.refused == 1
    assert "keeping it failed" in caplog.text and "RuntimeError: a bug" in caplog.text


# -- record files past their end of life leave (review r2 of session 49 L1) ------------------


def test_record_files_expired_a_week_ago_are_removed_a_bounded_number_a_pass(
        tmp_path: Path) -> None:
    """A file per name ever heard stayed for ever after its record expired: now one whose
    end of life passed more than EXPIRED_KEEP_S (7 days) ago goes, at most `limit` a pass;
    an unexpired one, one expired less long ago and one of a name kept (published here)
    stay."""
    now = [NOW.timestamp()]
    names = ipns.IpnsNames(tmp_path / "ipns", clock=lambda: now[0])
    old = [Key() for _ in range(3)]
    recent, live, mine = Key(), Key(), Key()
    for k in [*old, mine]:
        names.put(k.name, k.record("/ipfs/a", validity=b"2026-12-01T00:00:00Z"))
    names.put(recent.name, recent.record("/ipfs/a", validity=b"2026-12-03T00:00:00Z"))
    names.put(live.name, live.record("/ipfs/a"))
    now[0] = NOW.timestamp() + 9 * 86400  # Dec 9: the old ones ended 8 days ago
    assert names.forget_expired(keep=[mine.name], limit=2) == 2
    assert names.forget_expired(keep=[mine.name], limit=2) == 1
    assert names.forget_expired(keep=[mine.name], limit=2) == 0
    left = {k.name for k in (recent, live, mine) if names.path(k.name).exists()}
    assert left == {recent.name, live.name, mine.name}
    assert not any(names.path(k.name).exists() for k in old)
    assert list(names.held()) == [live.name]


def test_the_service_never_removes_the_record_of_a_name_it_publishes(tmp_path: Path) -> None:
    """Its next sequence is read from the record held, expired or not: the file of a name
    published here stays however long ago it expired (its key removed, say); a name heard
    from the mesh goes."""
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    svc.keys.gen("model")
    mine, _ = svc.sign("model", "/ipfs/bafkqaaa", lifetime_s=3600)
    heard = Key()
    svc.names.put(heard.name, heard.record("/ipfs/a", validity=b"2026-12-01T00:00:00Z"))
    now[0] += 30 * 86400
    assert svc.forget_expired() == 1
    assert svc.names.path(mine).exists() and not svc.names.path(heard.name).exists()
    assert svc._sequence(mine) == 1  # (the next record's sequence follows the one held)


def test_a_held_read_between_a_removal_and_its_bookkeeping_stops_no_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`held` (a job view's, in another thread) replaces the cache of files read; one that
    lands after `forget_expired` unlinked a file and before it let go of the file's entry
    made the pass raise KeyError and leave the rest (review r1 of session 50, R1-9)."""
    now = [NOW.timestamp()]
    names = ipns.IpnsNames(tmp_path / "ipns", clock=lambda: now[0])
    old = [Key() for _ in range(2)]
    for k in old:
        names.put(k.name, k.record("/ipfs/a", validity=b"2026-12-01T00:00:00Z"))
    now[0] = NOW.timestamp() + 9 * 86400
    unlink = Path.unlink

    def unlink_then_held(self: Path, missing_ok: bool = False) -> None:
        unlink(self, missing_ok)
        names.held()  # (the other thread's read, at the worst moment)

    monkeypatch.setattr(Path, "unlink", unlink_then_held)
    assert names.forget_expired() == 2
    assert not any(names.path(k.name).exists() for k in old)


# -- what the disk holds for IPNS is bounded (review r1 of session 50, R1-5) -----------------


def _written(names: ipns.IpnsNames, key: Key, at_s: float) -> None:
    """Say the record file of `key`'s name was written at `at_s` (its mtime)."""
    os.utime(names.path(key.name), (at_s, at_s))


def test_record_files_are_capped_and_what_goes_first_is_the_rule(tmp_path: Path) -> None:
    """Names are free to mint: before, every record file stayed until a week past its end
    of life. Now at most `max_names` are held; a new name past the cap removes first a file
    that does not read back, then an expired record (the earliest end of life first), then
    the least recently written, never a name published here (`kept`); with nothing that may
    go, the new name's record is refused. A new record of a name held needs no room."""
    now = [NOW.timestamp()]
    names = ipns.IpnsNames(tmp_path / "ipns", clock=lambda: now[0], max_names=4)
    mine, soon, old, recent = Key(), Key(), Key(), Key()
    names.kept = lambda: [mine.name]
    names.put(mine.name, mine.record("/ipfs/a"))
    names.put(soon.name, soon.record("/ipfs/a", validity=b"2026-12-01T00:00:00Z"))
    names.put(old.name, old.record("/ipfs/a"))
    names.put(recent.name, recent.record("/ipfs/a"))
    for i, k in enumerate((mine, old, soon, recent)):
        _written(names, k, NOW.timestamp() - 1000 + i)
    names.path(Key().name).write_bytes(b"\x00 not a record")  # (a damaged file)
    now[0] += 2 * 86400  # `soon` expired a day ago, not a week: `forget_expired` keeps it
    assert names.forget_expired(keep=[mine.name]) == 0
    assert names.held() and names.count == 5
    firsts = [Key() for _ in range(3)]
    every = [mine, soon, old, recent, *firsts]
    gone: list[set[str]] = []
    for k in firsts:
        before = {k.name for k in every if names.path(k.name).exists()}
        names.put(k.name, k.record("/ipfs/b"))
        gone.append(before - {k.name for k in every if names.path(k.name).exists()})
    # five files held (one over the cap): the first new name removes two, the damaged one
    # and the expired one, then each the least recently written
    assert gone == [{soon.name}, {old.name}, {recent.name}]
    assert names.count == 4 and names.evicted == 4 and names.full == 0
    assert len(list((tmp_path / "ipns").iterdir())) == 4
    names.put(firsts[0].name, firsts[0].record("/ipfs/c", seq=2))  # (held: no room needed)
    assert names.evicted == 4 and names.get(firsts[0].name).value == "/ipfs/c"
    names.kept = lambda: list(names.held())  # every name held published here
    late = Key()
    with pytest.raises(IpnsError, match="cap"):
        names.put(late.name, late.record("/ipfs/d"))
    assert names.full == 1 and names.count == 4 and not names.path(late.name).exists()


def test_a_new_name_is_refused_at_the_cap_while_the_published_names_do_not_read(
        tmp_path: Path) -> None:
    names = ipns.IpnsNames(tmp_path / "ipns", clock=NOW.timestamp, max_names=1)
    first, second = Key(), Key()
    names.put(first.name, first.record("/ipfs/a"))

    def unread() -> list[str]:
        raise DataError("published.json is a directory")

    names.kept = unread
    with pytest.raises(IpnsError, match="published here do not read"):
        names.put(second.name, second.record("/ipfs/a"))
    assert names.path(first.name).exists() and names.full == 1


def test_the_service_never_removes_a_published_name_for_room(tmp_path: Path) -> None:
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    svc.names.max_names = 2
    svc.keys.gen("model")
    mine, _ = svc.sign("model", "/ipfs/bafkqaaa")
    os.utime(svc.names.path(mine), (NOW.timestamp() - 10**6,) * 2)  # (the oldest file)
    a, b = Key(), Key()
    svc.names.put(a.name, a.record("/ipfs/a"))
    svc.names.put(b.name, b.record("/ipfs/b"))
    assert svc.names.path(mine).exists() and not svc.names.path(a.name).exists()
    assert svc.names.path(b.name).exists()


def test_a_member_minting_names_pushes_out_its_own_names_not_an_honest_one(
        tmp_path: Path) -> None:
    """The cap was per peer and what went first the least recently written: a member minting
    more names than the cap between an honest name's republishes pushed the honest file out
    (session 51 helper c's Left). Now valid records go by their origin's share (the member
    whose event brought them): the largest origin's first, so the minter's own go, down to
    the others' share; the honest names, and a name published here, stay; with every origin
    holding one, the least recently written goes (as before)."""
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    svc.names.max_names = 6
    svc.keys.gen("model")
    mine, _ = svc.sign("model", "/ipfs/bafkqaaa")
    honest = [Key() for _ in range(3)]

    def heard(k: Key, origin: str, seq: int) -> None:
        svc.on_event(Event(origin, seq, seq, EventType.IPNS_RECORD, {
            "name": k.name, "record": base64.b64encode(k.record("/ipfs/a")).decode()}))

    for i, k in enumerate(honest):
        heard(k, f"honest{i}", 1)
        _written(svc.names, k, now[0] - 1000 + i)  # (written long before the minter's)
    minted = [Key() for _ in range(12)]
    for i, k in enumerate(minted):
        heard(k, "minter", i + 1)
    held = set(svc.names.held())
    assert held >= {mine, *(k.name for k in honest)}
    assert len(held) == 6 and svc.names.evicted == 10 and svc.names.full == 0
    assert {k.name for k in minted[-2:]} < held  # (its newest two, down to the others' share)
    # every origin holding one: the least recently written goes, as before
    svc.names.max_names = 5
    late = Key()
    heard(late, "honest9", 1)
    assert not svc.names.path(honest[0].name).exists() and svc.names.path(late.name).exists()


async def test_names_put_through_routing_put_are_one_share_not_each_its_own(
        aiohttp_client: Any, tmp_path: Path) -> None:
    """Review r1 of session 52, finding 3: a record put through routing/put had no origin,
    each a share of one, the last to go: a local client minting names there pushed out a
    member's names first (all three here, on 9de055f1). Now they are one share
    (ipns.RPC_ORIGIN): the client's own go first, the member's stay."""
    now = [NOW.timestamp()]
    svc, _ = _service(tmp_path, now)
    svc.names.max_names = 6
    honest = [Key() for _ in range(3)]
    for i, k in enumerate(honest):  # (one member's three names: a gateway's users, say;
        svc.names.put(k.name, k.record("/ipfs/a"), "honest")  # as its events' are put)
        _written(svc.names, k, now[0] - 1000 + i)  # (written long before the client's)
    app = web.Application()
    rpc.add_routes(app, EmbeddedStore(tmp_path / "store"), names=svc.names)
    c: Client = await aiohttp_client(app)
    minted = [Key() for _ in range(12)]
    for k in minted:
        r = await _put(c, k.name, k.record("/ipfs/a"))
        assert r.status == 200, await r.text()
    held = set(svc.names.held())
    assert held >= {k.name for k in honest}
    assert len(held) == 6 and svc.names.full == 0
    assert {k.name for k in minted[-3:]} <= held  # (the client's newest, down to a share)


def test_a_record_signed_for_centuries_is_removed_a_year_after_it_was_written(
        tmp_path: Path) -> None:
    """Its end of life counts as at most MAX_LIFETIME_S (a year) after its file was written:
    before, a record valid until 9999 was never removed (review r1 of session 50, R1-5)."""
    now = [NOW.timestamp()]
    names = ipns.IpnsNames(tmp_path / "ipns", clock=lambda: now[0])
    far, mine = Key(), Key()
    for k in (far, mine):
        names.put(k.name, k.record("/ipfs/a", validity=b"9999-01-01T00:00:00Z"))
        _written(names, k, NOW.timestamp())
    now[0] += ipns.MAX_LIFETIME_S + ipns.EXPIRED_KEEP_S - 86400  # (a day short)
    assert names.forget_expired(keep=[mine.name]) == 0
    now[0] += 2 * 86400
    assert names.forget_expired(keep=[mine.name]) == 1
    assert not names.path(far.name).exists() and names.path(mine.name).exists()

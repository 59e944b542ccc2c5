"""Hypothesis strategies for fuzzing a live mesh: random and mutated gossip frames and events
(valid ones, valid ones with fields replaced, removed or added, types this version does not
know, clocks out of range, garbage), each frame sent as a member sends it (CURVE-admitted, its
events and heartbeats signed by a GossipClient with an identity) unless the mutation is about
that. Used by tests/integration/test_log_door.py and scripts/fuzz_mesh.py. Pure but for the
client's heartbeat counter."""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Any

from hypothesis import strategies as st

from peer.log import EventType
from peer.mesh.wire import Kind
from tests.gossip_client import GossipClient

CID = "bafkreiaheqdfvsfwin2qysg2nd3n4upuu7oyiwtnuvai2oi3lesbeuh42q"
CHUNK = {"job": "fz-j1", "task": "t", "split": ["fz-0", 3], "chunk": 0, "attempt": 0}
WORKFLOW = {"name": "w", "tasks": [{"name": "t", "call": "FZ_NOPE", "params": {},
                                   "depends": []}]}
# One valid payload per known type (with job and task names no real job uses).
TEMPLATES: dict[int, dict[str, Any]] = {
    EventType.JOB_SUBMITTED: {"job": "fz-j1", "workflow": WORKFLOW},
    EventType.JOB_CANCELLED: {"job": "fz-j1", "reason": "fuzz"},
    EventType.TASK_SPLIT: {"job": "fz-j1", "task": "t", "input": CID,
                           "chunks": [[["a.wav", CID]], [["d.wav", CID]]]},
    EventType.CLAIM: dict(CHUNK),
    EventType.RENEW: dict(CHUNK),
    EventType.PROGRESS: {**CHUNK, "progress": 0.5},
    EventType.CHUNK_DONE: {**CHUNK, "log": CID, "s": 1.25,
                           "cache": {"fz-k1": {"n": "a.npy", "c": CID}, "fz-k2": None}},
    EventType.CHUNK_FAILED: {**CHUNK, "error": "worker died", "kind": "crash"},
    EventType.TASK_DONE: {"job": "fz-j1", "task": "t", "output": CID, "key": "fz" * 32,
                          "cached": False, "warning": "kept nothing"},
    EventType.CACHE_PUT: {"cache": {"fz-k1": {"n": "a.npy", "c": CID}}},
    EventType.PROVIDE: {"cids": [CID]},
    EventType.MEMBER: {"name": "fz", "http": "http://127.0.0.1:9", "calls": ["FZ_NOPE"],
                       "slots": 2, "cores": 4, "mem_mb": 8192, "gpu": False},
}
ORIGINS = [f"fz-{i}" for i in range(6)]  # never a live peer's id (forging those: signing)
SENDERS = [f"fz-peer-{i}" for i in range(4)]
REPLY_TO = ["", "127.0.0.1:9", "[::1]:9"]  # nobody listens there

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=10)
TEXT = st.text(max_size=12) | st.sampled_from(["", "x" * 300, "\x00", "../..", "ü"])


def clocks(now_ms: int) -> st.SearchStrategy[Any]:
    """Timestamps: mostly plausible (the last hour up to the drift bound), some hostile."""
    plausible = st.integers(now_ms - 3_600_000, now_ms + 60_000).map(lambda m: m << 16)
    hostile = st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, (now_ms + 86_400_000) << 16,
                               1.5, "1", None])
    return st.one_of(plausible, plausible, plausible, hostile)


@st.composite
def payloads(draw: st.DrawFn, typ: int) -> Any:
    p = copy.deepcopy(TEMPLATES.get(typ) or {"x": 1})
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.sampled_from(["replace", "remove", "add"]))
        key = draw(st.sampled_from(sorted(p))) if p and how != "add" else draw(TEXT)
        if how == "remove":
            p.pop(key, None)
        else:
            p[key] = draw(JSON)
    return p


@st.composite
def events(draw: st.DrawFn, now_ms: int) -> Any:
    """One event as a peer would send it: valid, mutated, of an unknown type or random."""
    kind = draw(st.sampled_from(["valid", "valid", "mutated", "mutated", "unknown", "random"]))
    if kind == "random":
        return draw(JSON)
    typ: Any = draw(st.sampled_from(sorted(TEMPLATES)))
    if kind == "unknown":
        typ = draw(st.integers(len(EventType) + 1, 255) | st.sampled_from(
            [0, -1, 256, 2**63, "4", 4.0, True, None]))
    payload = dict(TEMPLATES.get(typ, {"x": 1})) if kind == "valid" else draw(payloads(typ))
    ev: dict[str, Any] = {
        "origin": draw(st.sampled_from(ORIGINS) | TEXT) if kind != "valid"
        else draw(st.sampled_from(ORIGINS)),
        "seq": draw(st.integers(1, 64)) if kind == "valid" else draw(
            st.integers(1, 64) | st.sampled_from([0, -1, 2**63 - 1, 2**63, "1", 1.0])),
        "hlc": draw(clocks(now_ms)), "type": typ, "payload": payload}
    if kind == "mutated" and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(ev)))
        if draw(st.booleans()):
            del ev[key]
        else:
            ev[key] = draw(JSON)
    return ev


def dumps(obj: Any) -> bytes:
    """JSON as a peer encodes it; NaN and huge floats too (a peer's json.loads takes them)."""
    return json.dumps(obj, separators=(",", ":")).encode()


@st.composite
def bodies(draw: st.DrawFn, now_ms: int) -> tuple[int, Any]:
    """(kind, body) of an authenticated frame: a JSON document, or bytes."""
    what = draw(st.sampled_from(["events", "events", "reply", "digest", "heartbeat",
                                 "raw", "kind"]))
    evs = st.lists(events(now_ms), max_size=6)
    vv = st.dictionaries(st.sampled_from(ORIGINS) | TEXT,
                         st.integers(-1, 100) | st.sampled_from([2**63, "1", None]), max_size=4)
    if what == "events":
        return Kind.EVENTS, {"events": draw(evs), "ttl": draw(st.integers(-1, 4) | JSON)}
    if what == "reply":
        return Kind.DIGEST_REPLY, {"events": draw(evs), "vv": draw(st.none() | vv | JSON),
                                  "more": draw(st.booleans() | JSON)}
    if what == "digest":
        peers = st.lists(st.sampled_from(REPLY_TO[1:]) | TEXT | JSON, max_size=3)
        return Kind.DIGEST, {"vv": draw(vv | JSON), "peers": draw(peers | JSON)}
    if what == "heartbeat":
        info = st.fixed_dictionaries({}, optional={
            "name": TEXT, "http": st.sampled_from(["http://127.0.0.1:9", ""]) | TEXT | JSON,
            "calls": st.lists(st.sampled_from(["FZ_NOPE", "T_WRITE"]) | TEXT) | JSON,
            "slots": st.integers(-1, 64) | JSON, "free_slots": st.integers(-1, 64) | JSON,
            "running": st.lists(st.lists(JSON, max_size=5), max_size=3) | JSON,
            "heads": vv | JSON})
        return Kind.HEARTBEAT, {"info": draw(info | JSON)}
    if what == "kind":
        return draw(st.integers(0, 255)), draw(JSON)
    return draw(st.sampled_from(list(Kind))), draw(st.binary(max_size=64))


# -- fast mutation: hypothesis draws the bases and the seed, this expands them ------------
# (drawing every frame with hypothesis costs ~50 ms a frame on a loaded 2-core machine)

HOSTILE: list[Any] = [None, True, False, 0, -1, 1.5, 2**31, 2**63 - 1, 2**63, -2**63 - 1, 1e308,
                      float("nan"), float("inf"), "", "x" * 300, "\x00", [], {}, [[]], {"": None}]


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value (NaN and infinities too: a peer's json.loads takes them)."""
    r = rng.random()
    if depth > 2 or r < 0.5:
        return rng.choice(HOSTILE) if r < 0.25 else rng.choice(
            [rng.randint(-5, 70), rng.random(), "".join(rng.choice("ab/.-_ü0") for _ in
                                                        range(rng.randint(0, 6)))])
    if r < 0.75:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["job", "task", "cids", "x", "", "c", "n"]): random_json(rng, depth + 1)
            for _ in range(rng.randint(0, 3))}


def mutate(rng: random.Random, obj: Any, depth: int = 0) -> Any:
    """A copy of `obj` with one change somewhere inside it."""
    if isinstance(obj, dict) and obj and depth < 6 and rng.random() < 0.8:
        out = dict(obj)
        key = rng.choice(sorted(out, key=str))
        how = rng.random()
        if how < 0.15:
            del out[key]
        elif how < 0.25:
            out[rng.choice(["x", "job", "seq", "type", "ttl"])] = random_json(rng)
        else:
            out[key] = mutate(rng, out[key], depth + 1)
        return out
    if isinstance(obj, list) and obj and depth < 6 and rng.random() < 0.8:
        out_l = list(obj)
        i = rng.randrange(len(out_l))
        how = rng.random()
        if how < 0.15:
            del out_l[i]
        elif how < 0.3:
            out_l.insert(i, copy.deepcopy(out_l[i]))  # a duplicate
        else:
            out_l[i] = mutate(rng, out_l[i], depth + 1)
        return out_l
    if isinstance(obj, int) and not isinstance(obj, bool) and rng.random() < 0.6:
        return obj + rng.choice([1, -1, 2**16, 2**62, -obj - 1])
    return random_json(rng)


def sign(rng: random.Random, client: GossipClient, kind: int, body: Any, sender: str,
         reply_to: str) -> Any:
    """`body` signed as a member signs it: each event that parses signed in batches by its
    origin (so it passes the signature check and meets the door's), a heartbeat's info with
    (incarnation, counter). Some stay unsigned, some get a mutated batch: counted refusals."""
    if not isinstance(body, dict) or rng.random() < 0.1:
        return body
    if kind == Kind.HEARTBEAT and isinstance(body.get("info"), dict):
        return client.heartbeat_body(body["info"], sender=sender, reply_to=reply_to)
    if kind in (Kind.EVENTS, Kind.DIGEST_REPLY) and isinstance(body.get("events"), list):
        evs, signed = client.signed_raw(body["events"])
        batches: Any = [json.loads(b) for b in signed]
        if batches and rng.random() < 0.05:
            batches = mutate(rng, batches)
        return {**body, "events": evs, "batches": batches}
    return body


def seal(rng: random.Random, client: GossipClient, kind: int, body: Any) -> bytes:
    """A frame around `body` (signed, see `sign`) as a member sends it over CURVE, or broken on
    the outside (a flipped byte, cut short, HMAC-tagged as before CURVE, another mesh, plain
    garbage)."""
    sender, reply_to = rng.choice(SENDERS), rng.choice(REPLY_TO)
    body = sign(rng, client, kind, body, sender, reply_to)
    raw = body if isinstance(body, bytes) else dumps(body)
    outer = rng.random()
    if outer < 0.03:
        return rng.randbytes(rng.randint(0, 128))
    if outer < 0.06:
        return client.frame(kind, raw, sender=sender, reply_to=reply_to,
                            tag=client.secret or b"fz-secret")
    if outer < 0.08:
        return client.frame(kind, raw, sender=sender, reply_to=reply_to, mesh_id="fz-mesh")
    data = client.frame(kind, raw, sender=sender, reply_to=reply_to)
    if outer < 0.12:
        i = rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ rng.randint(1, 255)]) + data[i + 1:]
    if outer < 0.14:
        return data[:rng.randrange(len(data))]
    return data


@st.composite
def batches(draw: st.DrawFn, client: GossipClient, peers: int, size: int,
            now_ms: int | None = None) -> list[tuple[int, bytes]]:
    """`size` frames, each for one of `peers` peers (by index): hypothesis draws up to three
    base frames and a seed; the first go as drawn, the rest are their mutants."""
    now = NOW_MS if now_ms is None else now_ms
    bases = draw(st.lists(bodies(now), min_size=1, max_size=3))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))  # a real Random: fast
    out: list[tuple[int, bytes]] = []
    for i in range(size):
        kind, body = bases[i % len(bases)]
        if i >= len(bases) and not isinstance(body, bytes):
            if rng.random() < 0.6:
                body = renumber(rng, body, now)
            for _ in range(rng.randint(0, 2)):
                body = mutate(rng, body)
        out.append((rng.randrange(peers), seal(rng, client, kind, body)))
    return out


def renumber(rng: random.Random, body: Any, now_ms: int) -> Any:
    """`body` with its events given fresh ids and plausible clocks (and a well-formed ttl):
    more events that pass the door, so that the fold and the scheduler get their share."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        return body
    fresh = [dict(e, origin=rng.choice(ORIGINS), seq=rng.randint(1, 64),
                  hlc=(now_ms - rng.randint(0, 3_600_000)) << 16)
             if isinstance(e, dict) else e for e in body["events"]]
    return {**body, "events": fresh, **({"ttl": rng.randint(0, 3)} if "ttl" in body else {})}


NOW_MS = int(time.time() * 1000)  # read once, at import: a strategy must draw the same way

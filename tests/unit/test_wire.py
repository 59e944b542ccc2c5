"""The wire codec alone: frames round-trip, everything malformed is refused with the reason
the stats count, random bytes never raise anything else, bodies fit their frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peer.jsontext import MAX_DEPTH
from peer.log import PROTOCOL_VERSION, Event, EventType
from peer.mesh.wire import (
    FLAG_MAC,
    FRAME_SLACK_BYTES,
    MAGIC,
    TAG_LEN,
    Frame,
    FrameError,
    FrameWriter,
    Kind,
    Reply,
    decode_frame,
    digest_body,
    encode_event,
    encode_frame,
    events_body,
    heartbeat_body,
    pack_events,
    parse_events,
    parse_info,
    parse_vv,
    reply_body,
)

from .mesh_helpers import SECRET

REASONS = {"bad_mac", "bad_version", "bad_kind", "too_large", "bad_frame", "other_mesh"}


def test_frame_kinds_are_append_only() -> None:
    assert [(k.name, k.value) for k in Kind] == [
        ("HEARTBEAT", 1), ("EVENTS", 2), ("DIGEST", 3), ("DIGEST_REPLY", 4), ("PING", 5),
        ("ACK", 6), ("PING_REQ", 7), ("NACK", 8), ("UPDATES", 9), ("SYNC", 10),
        ("DIGEST_SUM", 11)]


@pytest.mark.parametrize("secret", [None, SECRET])
def test_frame_roundtrip(secret: bytes | None) -> None:
    data = encode_frame(Kind.DIGEST, "m", "peer-a", "127.0.0.1:5", b'{"vv":{"a":3}}', secret)
    assert data[:2] == MAGIC and data[2] == PROTOCOL_VERSION and data[3] == Kind.DIGEST
    assert data[4] == (FLAG_MAC if secret else 0)
    f = decode_frame(data, secret, "m", 1 << 20)
    assert f == Frame(Kind.DIGEST, "m", "peer-a", "127.0.0.1:5", {"vv": {"a": 3}})


def test_frame_layout_is_fixed() -> None:
    """The bytes of a frame, spelled out: a change here breaks every older peer."""
    data = encode_frame(Kind.HEARTBEAT, "m", "ab", "h:1", b"{}", None)
    assert data == b"BZ" + bytes([PROTOCOL_VERSION, 1, 0, 1]) + b"m\x02ab\x03h:1{}"
    tagged = encode_frame(Kind.HEARTBEAT, "m", "ab", "h:1", b"{}", SECRET)
    assert len(tagged) == len(data) + TAG_LEN and tagged[4] == FLAG_MAC


@pytest.mark.parametrize("secret", [None, SECRET])
def test_writer_matches_encode_frame(secret: bytes | None) -> None:
    w = FrameWriter("m", "peer-a", "[::1]:7", secret)
    for kind in Kind:
        assert w.frame(kind, b'{"x":1}') == encode_frame(kind, "m", "peer-a", "[::1]:7",
                                                         b'{"x":1}', secret)


def test_header_strings_over_255_bytes_refused() -> None:
    with pytest.raises(ValueError):
        encode_frame(Kind.HEARTBEAT, "m", "x" * 256, "", b"{}", None)


def _mutate(data: bytes, i: int, b: int) -> bytes:
    return data[:i] + bytes([b]) + data[i + 1:]


GOOD = encode_frame(Kind.HEARTBEAT, "m", "a", "127.0.0.1:5", b'{"info":{}}', SECRET)
PLAIN = encode_frame(Kind.HEARTBEAT, "m", "a", "127.0.0.1:5", b'{"info":{}}', None)


@pytest.mark.parametrize(("data", "secret", "reason"), [
    (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), SECRET, "bad_mac"),  # tag flipped
    (_mutate(GOOD, 12, GOOD[12] ^ 1), SECRET, "bad_mac"),  # content flipped
    (GOOD, b"t" * 32, "bad_mac"),  # other secret
    (PLAIN, SECRET, "bad_mac"),  # no tag where one is required
    (GOOD, None, "bad_mac"),  # a tag where we use none
    (GOOD[:-TAG_LEN], SECRET, "bad_mac"),  # tag cut off
    (_mutate(PLAIN, 2, PROTOCOL_VERSION + 1), None, "bad_version"),
    (_mutate(PLAIN, 3, 200), None, "bad_kind"),
    (_mutate(PLAIN, 3, 0), None, "bad_kind"),
    (encode_frame(Kind.HEARTBEAT, "other", "a", "", b"{}", None), None, "other_mesh"),
    (encode_frame(Kind.HEARTBEAT, "other", "a", "", b"{}", SECRET), SECRET, "other_mesh"),
    (b"", None, "bad_frame"),
    (b"BZ", None, "bad_frame"),
    (b"XX" + PLAIN[2:], None, "bad_frame"),
    (PLAIN[:9], None, "bad_frame"),
    (PLAIN[:5] + b"\xff", None, "bad_frame"),  # mesh id length past the end
    (encode_frame(Kind.HEARTBEAT, "m", "a", "", b"{not json", None), None, "bad_frame"),
    (encode_frame(Kind.HEARTBEAT, "m", "a", "", b"[1]", None), None, "bad_frame"),
    (encode_frame(Kind.HEARTBEAT, "m", "a", "", b"", None), None, "bad_frame"),
    (encode_frame(Kind.HEARTBEAT, "m", "", "", b"{}", None), None, "bad_frame"),  # no sender
    (encode_frame(Kind.HEARTBEAT, "m", "a", "no-port", b"{}", None), None, "bad_frame"),
    (encode_frame(Kind.HEARTBEAT, "m", "a", "h:99999", b"{}", None), None, "bad_frame"),
    (encode_frame(Kind.HEARTBEAT, "m", "a", "", b"\xff\xfe", None), None, "bad_frame"),
    (PLAIN[:5] + b"\x01\xff" + PLAIN[7:], None, "bad_frame"),  # mesh id not UTF-8
    (PLAIN + b" " * 5000, None, "too_large"),
    (GOOD + b" " * 5000, SECRET, "too_large"),  # size is checked before the tag
])
def test_decode_rejects(data: bytes, secret: bytes | None, reason: str) -> None:
    with pytest.raises(FrameError) as ei:
        decode_frame(data, secret, "m", 4096)
    assert ei.value.reason == reason


def test_a_body_nested_too_deep_is_a_bad_frame() -> None:
    """json.loads raises RecursionError (no ValueError) on a deep nesting: dropped as any
    malformed body is (it escaped Gossip._on_frame, whose contract is never to raise)."""
    data = encode_frame(Kind.EVENTS, "m", "a", "", b"[" * 100_000, None)
    with pytest.raises(FrameError) as ei:
        decode_frame(data, None, "m", 1 << 20)
    assert ei.value.reason == "bad_frame"


def test_frame_of_exactly_max_bytes_accepted() -> None:
    body = b'{"info":{"pad":"' + b"x" * 4000 + b'"}}'
    data = encode_frame(Kind.HEARTBEAT, "m", "a", "", body, None)
    assert decode_frame(data, None, "m", len(data)).body["info"]["pad"] == "x" * 4000
    with pytest.raises(FrameError, match="too_large"):
        decode_frame(data, None, "m", len(data) - 1)


# -- properties ----------------------------------------------------------------------

short_text = st.text(min_size=1, max_size=40)  # at most 160 bytes: fits a u8 length
addrs = st.one_of(st.just(""), st.builds(lambda h, p: f"{h}:{p}",
                                         st.sampled_from(["127.0.0.1", "[::1]", "peer.lan"]),
                                         st.integers(0, 65535)))
scalars = st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20)
json_values = scalars | st.lists(scalars, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                       scalars, max_size=4)
FAST = settings(max_examples=50, deadline=None)  # each property well under a second


@FAST
@given(kind=st.sampled_from(list(Kind)), mesh=short_text, sender=short_text, reply_to=addrs,
       body=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
       secret=st.one_of(st.none(), st.binary(min_size=16, max_size=64)))
def test_property_roundtrip(kind: Kind, mesh: str, sender: str, reply_to: str,
                            body: dict[str, Any], secret: bytes | None) -> None:
    data = encode_frame(kind, mesh, sender, reply_to, json.dumps(body).encode(), secret)
    assert decode_frame(data, secret, mesh, 1 << 20) == Frame(kind, mesh, sender, reply_to, body)


@FAST
@given(data=st.binary(max_size=300), secret=st.one_of(st.none(), st.just(SECRET)))
def test_property_random_bytes_raise_only_frame_error(data: bytes,
                                                      secret: bytes | None) -> None:
    try:
        decode_frame(data, secret, "m", 256)
    except FrameError as e:
        assert e.reason in REASONS


@FAST
@given(prefix=st.integers(0, len(PLAIN)), tail=st.binary(max_size=40))
def test_property_mangled_frames_raise_only_frame_error(prefix: int, tail: bytes) -> None:
    data = PLAIN[:prefix] + tail
    try:
        f = decode_frame(data, None, "m", 4096)
    except FrameError as e:
        assert e.reason in REASONS
    else:
        assert f.mesh_id == "m" and f.sender and isinstance(f.body, dict)


# -- bodies --------------------------------------------------------------------------


def ev(seq: int, size: int = 0, origin: str = "o") -> Event:
    return Event(origin, seq, seq, EventType.CACHE_PUT, {"cache": {f"k{seq}": "x" * size}})


def test_bodies_are_the_json_each_kind_documents() -> None:
    e = [encode_event(ev(1)), encode_event(ev(2))]
    assert json.loads(heartbeat_body({"load": 1})) == {"info": {"load": 1}}
    assert json.loads(digest_body({"a": 3}, ["h:1"])) == {"vv": {"a": 3}, "peers": ["h:1"]}
    assert json.loads(events_body(e, 2)) == {"events": [ev(1).to_json(), ev(2).to_json()],
                                             "ttl": 2}
    assert json.loads(reply_body([], Reply(None, False))) == {"events": [], "vv": None,
                                                              "more": False}
    assert json.loads(reply_body(e[:1], Reply({"a": 1}, True))) == {
        "events": [ev(1).to_json()], "vv": {"a": 1}, "more": True}
    # compact separators: these bytes are what peers of the previous release send
    assert events_body([], 0) == b'{"events":[],"ttl":0}'
    assert reply_body([], Reply({"a": 1}, True)) == b'{"events":[],"vv":{"a":1},"more":true}'


def test_bodies_parse_back() -> None:
    body = json.loads(reply_body([encode_event(ev(3))], Reply({"o": 2}, False)))
    assert parse_events(body["events"]) == [ev(3)]
    assert parse_vv(body["vv"]) == {"o": 2}
    assert parse_info(json.loads(heartbeat_body({"a": 1}))) == {"a": 1}


@pytest.mark.parametrize("obj", [[], None, {"a": -1}, {"a": "1"}, {"a": True}, {"a": 1.5}])
def test_parse_vv_rejects(obj: Any) -> None:
    with pytest.raises(ValueError):
        parse_vv(obj)


@pytest.mark.parametrize("obj", [
    "nope", {"events": []}, [{"origin": "x"}],
    [{"origin": "x", "seq": 1, "hlc": 1, "type": 999, "payload": {}}],
    [{"origin": "x", "seq": 0, "hlc": 1, "type": 10, "payload": {}}],
    [{"origin": "", "seq": 1, "hlc": 1, "type": 10, "payload": {}}],
])
def test_parse_events_rejects(obj: Any) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        parse_events(obj)


@pytest.mark.parametrize("body", [{}, {"info": 3}, {"info": [1]}])
def test_parse_info_rejects(body: dict[str, Any]) -> None:
    with pytest.raises((KeyError, ValueError)):
        parse_info(body)


@pytest.mark.parametrize(("key", "value"), [
    ("calls", 5), ("calls", [1]), ("calls", "T_ECHO"), ("features", {"a": 1}),
    ("name", 3), ("http", None), ("kid", []), ("status", 1), ("slots", "2"),
    ("free_slots", 1.5), ("free_slots", True), ("wall_ms", "now"), ("running", 7),
    ("heads", {"o": -1}), ("heads", [1]), ("cfloor", {"o": "3"}), ("kubo", "x"),
    ("working", "j1"), ("working", [1])])
def test_a_known_info_key_of_another_type_makes_the_frame_malformed(key: str,
                                                                   value: Any) -> None:
    """A member's info reaches the scheduler, which reads `calls` and `free_slots` per task
    (the fuzzed mesh of test_log_door once sent `calls: 5`: a TypeError per evaluation):
    a known key of another type is refused with its name; unknown keys pass."""
    good = {"name": "p", "http": "http://127.0.0.1:1", "calls": ["T_ECHO"], "slots": 2,
            "free_slots": 1, "running": [["j", "t", 0, 0]], "heads": {"o": 3},
            "kid": "k", "wall_ms": 5, "features": ["f"], "cfloor": {"o": 1},
            "kubo": {"id": "q", "addrs": []}, "newer": {"any": ["thing"]}, "working": ["j"]}
    assert parse_info({"info": good}) == good
    with pytest.raises(ValueError, match=f"info.{key} "):
        parse_info({"info": {**good, key: value}})


@pytest.mark.parametrize(("key", "most"), [("calls", 100_000), ("features", 256),
                                         ("working", 64)])
def test_a_list_of_the_info_longer_than_its_bound_makes_the_frame_malformed(
        key: str, most: int) -> None:
    """Review r2 of session 47, finding 5: the door bounded only the type of `working`
    (and `calls`, `features`), the sender its length (16): a heartbeat naming 60,000 jobs
    cost each peer judging a job ~4 ms a tick. A list within its bound passes (`calls`: a
    MEMBER event's bound; `working`: 4 x what this release sends); one entry more is
    refused, naming the key (on 21d172b it passed)."""
    names = [f"j{i:012x}" for i in range(most + 1)]
    assert parse_info({"info": {key: names[:most]}}) == {key: names[:most]}
    with pytest.raises(ValueError, match=f"info.{key} holds {most + 1} entries, more than"):
        parse_info({"info": {key: names}})


def _nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def test_an_info_nested_past_the_bound_makes_the_frame_malformed() -> None:
    """A member's info is served again (/api/mesh, the scheduler's views) at a deeper stack:
    like every JSON value a peer takes in it nests at most MAX_DEPTH levels, an unknown
    (newer) key's value included; `running`'s deep items are left out (since session 50:
    an entry that is not an attempt key, or what a longer one holds past its first four)."""
    assert parse_info({"info": {"newer": _nested(MAX_DEPTH - 1)}})
    for key in ("newer", "kubo"):
        inner = _nested(MAX_DEPTH)
        value = {"k": inner[0]} if key == "kubo" else inner
        with pytest.raises(ValueError, match=f"info.{key} is nested deeper than {MAX_DEPTH}"):
            parse_info({"info": {key: value}})
    deep = _nested(MAX_DEPTH)
    assert parse_info({"info": {"running": [deep, ["j", "t", 0, 0, deep]]}}) == {
        "running": [["j", "t", 0, 0]]}


@FAST
@given(sizes=st.lists(st.integers(0, 3000), max_size=40), max_per_frame=st.integers(1, 8))
def test_property_pack_events_fits_frames(sizes: list[int], max_per_frame: int) -> None:
    max_frame = 4096
    events = [ev(i + 1, n) for i, n in enumerate(sizes)]
    batches, too_large = pack_events(events, max_frame, max_per_frame)
    budget = max_frame - FRAME_SLACK_BYTES
    sent = [e for b in batches for e in b]
    assert sent == [encode_event(e) for e in events if len(encode_event(e)) <= budget]
    assert [e for e, _ in too_large] == [e for e in events if len(encode_event(e)) > budget]
    for b in batches:
        assert 1 <= len(b) <= max_per_frame
        frame = encode_frame(Kind.DIGEST_REPLY, "m" * 255, "s" * 255, "h" * 249 + ":65535",
                             reply_body(b, Reply({"o" * 40: 2**62}, True)), SECRET)
        assert len(frame) <= max_frame


def test_event_validation_errors_become_value_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever error type the event layer raises for an invalid event, the receive path
    sees a malformed frame (counted as bad_frame), not a handler crash."""
    from peer.errors import BanzaiError

    def refuse(d: dict[str, Any]) -> Event:
        raise BanzaiError("payload out of bounds")

    monkeypatch.setattr(Event, "from_json", staticmethod(refuse))
    with pytest.raises(ValueError, match="bad event"):
        parse_events([ev(1).to_json()])

"""Discovery without a network: TXT building, config checks, failure to start."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peer.log import PROTOCOL_VERSION
from peer.mesh.discovery import (
    SERVICE_TYPE,
    Discovery,
    DiscoveryConfig,
    LeftOut,
    Sightings,
    _decode_txt,
    _gossip_addr,
    build_txt,
    mesh_hash,
)


class Calls:
    def __init__(self) -> None:
        self.added: list[tuple[str, dict[str, str]]] = []
        self.removed: list[str] = []

    def add(self, addr: str, info: Mapping[str, str]) -> None:
        self.added.append((addr, dict(info)))

    def remove(self, addr: str) -> None:
        self.removed.append(addr)


def make(cfg: DiscoveryConfig | None = None,
         txt: Mapping[str, str] | None = None) -> tuple[Discovery, Calls]:
    calls = Calls()
    d = Discovery(cfg or DiscoveryConfig(interfaces=("127.0.0.1",)), "abcd1234",
                  txt or build_txt(gossip="127.0.0.1:7000", http_port=8080),
                  calls.add, calls.remove, mesh_hash("lab"))
    return d, calls


def test_build_txt_short_call_list_is_inline() -> None:
    txt = build_txt(gossip="127.0.0.1:7000", http_port=8080, calls=["b.x", "a.y", "a.y"],
                    cores=8, free_slots=3, mem_mb=16000, gpu=True)
    assert txt == {"gossip": "127.0.0.1:7000", "http": "8080", "calls": "a.y,b.x",
                   "cores": "8", "slots": "3", "mem": "16000", "gpu": "1", "kinds": "python"}


def test_build_txt_long_call_list_becomes_hash_and_count() -> None:
    calls = [f"family{i}.some_long_task_name" for i in range(40)]
    txt = build_txt(gossip="127.0.0.1:7000", http_port=1, calls=calls)
    assert "calls" not in txt and txt["calls_n"] == "40" and len(txt["calls_h"]) == 16
    assert build_txt(gossip="h:1", http_port=1, calls=reversed(calls))["calls_h"] == txt["calls_h"]


def test_full_txt_carries_identity_version_and_mesh() -> None:
    d, _ = make()
    assert d._txt["id"] == "abcd1234"
    assert d._txt["v"] == str(PROTOCOL_VERSION)
    assert d._txt["mesh"] == mesh_hash("lab") != mesh_hash("other")
    assert d.name == f"abcd1234.{SERVICE_TYPE}"


@pytest.mark.parametrize("txt", [{"http": "1"}, {"gossip": "nope"},
                                 {"gossip": "127.0.0.1:1", "x": "y" * 300}])
def test_bad_txt_rejected(txt: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        make(txt=txt)


@pytest.mark.parametrize("kw", [{"service_type": "banzai.local."}, {"interfaces": ("eth0",)},
                                {"ttl_s": 1}, {"resolve_timeout_ms": 1}])
def test_bad_config_rejected(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DiscoveryConfig(**kw)


def test_decode_txt_skips_undecodable() -> None:
    assert _decode_txt({b"a": b"1", b"b": None, b"\xff": b"x", b"c": b"\xfe"}) == {
        "a": "1", "b": ""}


async def test_start_on_missing_interface_warns_and_keeps_running(
        caplog: pytest.LogCaptureFixture) -> None:
    # 203.0.113.7 (TEST-NET-3) is on no interface here: binding fails before any packet.
    d, calls = make(DiscoveryConfig(interfaces=("203.0.113.7",)))
    await d.start()  # must not raise
    assert d.running is False and d.error is not None
    assert "mDNS discovery disabled" in caplog.text
    await d.update(build_txt(gossip="127.0.0.1:7000", http_port=1, free_slots=2))
    await d.close()
    assert calls.added == [] and calls.removed == []


def test_removed_service_reports_its_address_once() -> None:
    from zeroconf import ServiceStateChange

    d, calls = make()
    d._sightings.see("peer2." + SERVICE_TYPE, "127.0.0.1:7002", 0.0)
    for _ in range(2):
        d._on_change(None, SERVICE_TYPE, "peer2." + SERVICE_TYPE,  # type: ignore[arg-type]
                     ServiceStateChange.Removed)
    assert calls.removed == ["127.0.0.1:7002"]


def test_gossip_addr_takes_a_wildcard_host_from_the_address_records() -> None:
    from zeroconf.asyncio import AsyncServiceInfo

    info = AsyncServiceInfo(SERVICE_TYPE, "p." + SERVICE_TYPE, port=7000,
                            parsed_addresses=["fe80::1", "10.0.0.5"])
    assert _gossip_addr({"gossip": "0.0.0.0:7000"}, info) == "10.0.0.5:7000"
    assert _gossip_addr({"gossip": "[::1]:7001"}, info) == "[::1]:7001"
    assert _gossip_addr({"gossip": "nope"}, info) is None
    v6_only = AsyncServiceInfo(SERVICE_TYPE, "q." + SERVICE_TYPE, port=7000,
                               parsed_addresses=["fe80::1"])
    assert _gossip_addr({"gossip": "*:7000"}, v6_only) is None


def test_build_txt_announces_kinds_and_labels_and_hashes_long_ones() -> None:
    txt = build_txt(gossip="127.0.0.1:7000", http_port=8080, kinds=["shell", "python"],
                    labels={"site": "b", "rack": "4"})
    assert txt["kinds"] == "python,shell" and txt["labels"] == "rack=4,site=b"
    many = {f"label{i}": "v" * 20 for i in range(20)}
    long = build_txt(gossip="127.0.0.1:7000", http_port=8080, labels=many)
    assert "labels" not in long and long["labels_n"] == "20" and len(long["labels_h"]) == 16
    assert all(len(k) + 1 + len(v) <= 255 for k, v in long.items())
    assert "labels" not in build_txt(gossip="127.0.0.1:7000", http_port=8080)


# -- what a LAN host can make a peer hold (Sightings) -------------------------------------
def test_a_full_table_replaces_the_oldest_silent_sighting_past_its_grace() -> None:
    live = {"10.0.0.1:1"}
    s = Sightings(3, 30.0, live.__contains__)
    for i, t in ((1, 0.0), (2, 5.0), (3, 10.0)):
        assert s.see(f"n{i}", f"10.0.0.{i}:1", t) == (True, [])
    assert s.see("n4", "10.0.0.4:1", 20.0) == (False, [])  # all young: left out
    assert s.ignored == 1
    # n1 is alive (a member answers there): n2, the oldest silent one past 30 s, goes
    assert s.see("n4", "10.0.0.4:1", 40.0) == (True, ["10.0.0.2:1"])
    assert s.peers() == {"n1": "10.0.0.1:1", "n3": "10.0.0.3:1", "n4": "10.0.0.4:1"}
    live.update(s.peers().values())
    assert s.see("n5", "10.0.0.5:1", 1000.0) == (False, [])  # every one alive: kept
    assert len(s) == 3 and s.ignored == 2


def test_an_address_two_sightings_show_is_dropped_with_the_last() -> None:
    s = Sightings(8, 0.0, lambda a: False)
    s.see("a", "h:1", 0.0)
    s.see("b", "h:1", 0.0)
    assert s.forget("a") is None  # b still shows it
    assert s.see("b", "h:2", 1.0) == (True, ["h:1"])  # moved: h:1 shown by none
    assert s.forget("b") == "h:2" and s.forget("b") is None


@given(st.lists(st.tuples(st.sampled_from(["see", "forget"]), st.integers(0, 40),
                          st.integers(0, 12), st.integers(0, 3)), max_size=200),
       st.frozensets(st.integers(0, 12)))
def test_sightings_stay_bounded_and_never_drop_a_live_or_shown_address(
        ops: list[tuple[str, int, int, int]], live_hosts: frozenset[int]) -> None:
    live = {f"h:{i}" for i in live_hosts}
    s = Sightings(5, 2.0, live.__contains__)
    now = 0.0
    for op, name, host, dt in ops:
        now += dt
        before = s.peers()
        if op == "see":
            taken, gone = s.see(f"n{name}", f"h:{host}", now)
        else:
            a = s.forget(f"n{name}")
            taken, gone = True, [] if a is None else [a]
        after = s.peers()
        assert len(after) <= 5
        for a in gone:  # dropped only when no sighting shows it any more
            assert a not in after.values()
        evicted = set(before) - set(after) - {f"n{name}"}
        assert all(before[n] not in live for n in evicted), "a live member's sighting went"
        if not taken:
            assert after == before


def test_at_most_a_few_names_show_one_address() -> None:
    """Names aimed at a live member's address would otherwise hold places for good."""
    s = Sightings(8, 30.0, lambda a: True, per_addr=2)
    assert s.see("a", "h:1", 0.0)[0] and s.see("b", "h:1", 0.0)[0]
    assert s.see("c", "h:1", 0.0) == (False, []) and s.ignored == 1
    assert s.see("c", "h:2", 0.0)[0]


def test_left_out_names_are_bounded_and_picked_at_random() -> None:
    import random

    left = LeftOut(3, random.Random(7))
    for n in "abcde":
        left.add(n)
    left.add("e")  # (once)
    assert len(left) == 3
    left.discard("zz")
    picked = left.pick(2)
    assert len(picked) == 2 and len(left) == 1
    rest = left.pick(5)
    assert len(rest) == 1 and len(left) == 0 and not set(picked) & set(rest)


def test_a_join_address_is_kept_when_mdns_stops_showing_it() -> None:
    """A LAN host can announce a name at a --join address and withdraw it (or have it
    replaced): the --join stays (helper-142's finding); other addresses are dropped."""
    from types import SimpleNamespace

    from peer.node import Node

    removed: list[str] = []
    node = SimpleNamespace(_joins=frozenset({"127.0.0.1:7777"}),
                           gossip=SimpleNamespace(remove_peer=removed.append))
    Node._undiscovered(node, "127.0.0.1:7777")  # type: ignore[arg-type]
    Node._undiscovered(node, "127.0.0.1:7778")  # type: ignore[arg-type]
    assert removed == ["127.0.0.1:7778"]


def test_zeroconfs_record_cache_is_bounded_against_a_lan_flood() -> None:
    """Every record any LAN host multicasts lands in zeroconf's cache for the TTL it chose
    (PTRs at least 1,125 s). We rely on zeroconf's own bound (0.149.7 and later, which
    pyproject.toml asks for): a flood of unique names keeps the cache at its cap, the
    records closest to expiry going first, so a real peer's fresh record stays."""
    from zeroconf import DNSPointer, current_time_millis
    from zeroconf._cache import DNSCache
    from zeroconf.const import _CLASS_IN, _TYPE_PTR

    cache = DNSCache()
    now = current_time_millis()
    flood = [DNSPointer(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN, 1200,
                        f"fake{i}.{SERVICE_TYPE}", created=now) for i in range(12_000)]
    cache.async_add_records(flood[:6_000])
    real = DNSPointer(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN, 4500, f"real.{SERVICE_TYPE}",
                      created=now)
    cache.async_add_records([real])
    cache.async_add_records(flood[6_000:])
    held = sum(len(records) for records in cache.cache.values())
    assert held <= 10_000 < len(flood)
    assert real in cache.cache[SERVICE_TYPE.lower()]

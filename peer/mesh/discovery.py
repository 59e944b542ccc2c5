"""mDNS discovery: announce this peer as `_banzai._tcp.local.` and report peers of our mesh.

Uses python-zeroconf's asyncio API; owned by the event loop, callbacks run in the
loop and must not block. If zeroconf cannot start, Discovery logs a warning, sets
`.error` and stays idle: static `--join` addresses (which the caller hands straight
to `Gossip.add_peer`) keep the mesh working where multicast does not pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from zeroconf import InterfaceChoice, IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from peer.log import PROTOCOL_VERSION
from peer.mesh.addr import WILDCARD_HOSTS, format_addr, parse_addr

log = logging.getLogger("banzai.discovery")

SERVICE_TYPE = "_banzai._tcp.local."
MAX_TXT_VALUE = 200  # bytes; a TXT string holds key=value in at most 255
_WILDCARDS = ("", *WILDCARD_HOSTS)

OnAdd = Callable[[str, Mapping[str, str]], None]
OnRemove = Callable[[str], None]


def mesh_hash(name: str) -> str:
    """The mesh id announced for a mesh name (several meshes can share a LAN)."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def build_txt(*, gossip: str, http_port: int, calls: Iterable[str] = (), cores: int = 0,
              free_slots: int = 0, mem_mb: int = 0, gpu: bool = False,
              key_id: str = "", kinds: Iterable[str] = ("python",),
              labels: Mapping[str, str] | None = None) -> dict[str, str]:
    """TXT fields describing a peer: its capabilities (calls, executor kinds, operator
    labels as "k=v,...", cores, memory, GPU). A list too long for one TXT string (255 bytes
    with its key) is replaced by its hash ("<key>_h") and count ("<key>_n"); the MEMBER
    event and gossip heartbeats carry the full lists. `key_id` ("kid") names the CURVE key
    the peer serves: a hash of a public key, never secret material (keyring.py)."""
    txt = {"gossip": gossip, "http": str(http_port), "cores": str(cores),
           "slots": str(free_slots), "mem": str(mem_mb), "gpu": "1" if gpu else "0"}
    if key_id:
        txt["kid"] = key_id
    _list_field(txt, "calls", sorted(set(calls)))
    _list_field(txt, "kinds", sorted(set(kinds)))
    if labels:
        _list_field(txt, "labels", [f"{k}={v}" for k, v in sorted(labels.items())])
    return txt


def _list_field(txt: dict[str, str], key: str, names: list[str]) -> None:
    joined = ",".join(names)
    if len(joined.encode()) <= MAX_TXT_VALUE:
        txt[key] = joined
    else:
        txt[f"{key}_h"] = hashlib.sha256(joined.encode()).hexdigest()[:16]
        txt[f"{key}_n"] = str(len(names))


@dataclass(frozen=True)
class DiscoveryConfig:
    """mDNS settings. `interfaces`: addresses to bind (("127.0.0.1",) in tests); empty =
    zeroconf's default (all interfaces). `ttl_s`: record TTL, bounds how long a peer
    that vanished without a goodbye stays listed."""

    service_type: str = SERVICE_TYPE
    interfaces: tuple[str, ...] = ()
    ttl_s: int = 120
    resolve_timeout_ms: int = 3000
    # Anyone on the LAN can announce services with our mesh's (public) id and key id: what
    # they make us hold and dial is bounded (`Sightings`), and so are the lookups in flight.
    max_sightings: int = 256
    max_resolving: int = 32
    sighting_grace_s: float = 30.0
    max_left_out: int = 1024  # names to look at again (`LeftOut`)
    retry_s: float = 5.0  # how often they are

    def __post_init__(self) -> None:
        if not (self.service_type.startswith("_") and self.service_type.endswith("._tcp.local.")):
            raise ValueError("service_type must look like _name._tcp.local.")
        for a in self.interfaces:
            ipaddress.ip_address(a)  # ValueError if not an address
        if not 10 <= self.ttl_s <= 4500 or self.resolve_timeout_ms < 100:
            raise ValueError("ttl_s must be in [10, 4500], resolve_timeout_ms >= 100")
        if min(self.max_sightings, self.max_resolving, self.max_left_out) < 1 or (
                self.sighting_grace_s < 0 or self.retry_s <= 0):
            raise ValueError("max_sightings, max_resolving and max_left_out must be at least "
                             "1, sighting_grace_s at least 0, retry_s above 0")


class Sightings:
    """The peers mDNS shows us (service name -> gossip address), at most `max_known`: what a
    LAN host without the mesh secret can make a peer hold and dial (each address is a
    gossip connection that retries for ever), since the mesh id and key id it must copy are
    announced in the clear. When full, a new sighting takes the place of the oldest one
    seen more than `grace_s` ago at whose address no member is alive (`live`): a real peer
    answers there within the grace, a host that merely announced does not. If every one is
    alive or young, the new one is left out and counted (`ignored`); the caller asks again
    later (`Discovery` keeps such names and retries them). At most `per_addr` names show
    one address (names aimed at a live member's address would otherwise hold places for
    good). Pure: the caller gives the clock."""

    def __init__(self, max_known: int, grace_s: float, live: Callable[[str], bool],
                 per_addr: int = 4) -> None:
        self.max_known = max_known
        self.grace_s = grace_s
        self.live = live
        self.per_addr = per_addr
        self.ignored = 0
        self._known: dict[str, tuple[str, float]] = {}  # name -> (addr, first seen), oldest first

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def peers(self) -> dict[str, str]:
        return {n: a for n, (a, _) in self._known.items()}

    def see(self, name: str, addr: str, now: float) -> tuple[bool, list[str]]:
        """Note `name` at `addr`: (taken, addresses no longer shown, for the caller to drop)."""
        old = self._known.get(name)
        if old is not None and old[0] == addr:
            return True, []
        if sum(a == addr for a, _ in self._known.values()) >= self.per_addr:
            self.ignored += 1
            return False, []
        if old is not None:
            self._known[name] = (addr, now)
            return True, [old[0]] if self._unused(old[0]) else []
        gone: list[str] = []
        if len(self._known) >= self.max_known:
            victim = next((n for n, (a, t) in self._known.items()
                           if now - t >= self.grace_s and not self.live(a)), None)
            if victim is None:
                self.ignored += 1
                return False, []
            a, _ = self._known.pop(victim)
            if self._unused(a) and a != addr:
                gone.append(a)
        self._known[name] = (addr, now)
        return True, gone

    def forget(self, name: str) -> str | None:
        """`name` said goodbye: its address, if no other sighting shows it."""
        old = self._known.pop(name, None)
        return old[0] if old is not None and self._unused(old[0]) else None

    def _unused(self, addr: str) -> bool:
        return all(a != addr for a, _ in self._known.values())


class LeftOut:
    """Names mDNS showed that were not taken (the table full, or too many lookups in
    flight), to look at again: zeroconf reports a name once while it stays cached, so a
    real peer left out during a flood would otherwise never be seen. At most `max_names`;
    when full, a random one gives way (a flood cannot push out a given name for sure), and
    each retry picks at random among them."""

    def __init__(self, max_names: int, rng: random.Random) -> None:
        self.max_names = max_names
        self._rng = rng
        self._names: list[str] = []
        self._at: dict[str, int] = {}  # name -> its index in _names

    def __len__(self) -> int:
        return len(self._names)

    def add(self, name: str) -> None:
        if name in self._at:
            return
        if len(self._names) >= self.max_names:
            self.discard(self._names[self._rng.randrange(len(self._names))])
        self._at[name] = len(self._names)
        self._names.append(name)

    def discard(self, name: str) -> None:
        i = self._at.pop(name, None)
        if i is None:
            return
        last = self._names.pop()
        if last != name:  # the last takes the removed one's place
            self._names[i] = last
            self._at[last] = i

    def pick(self, n: int) -> list[str]:
        """Up to `n` of them, at random, taken out (a retry that fails puts one back)."""
        chosen = self._rng.sample(self._names, min(n, len(self._names)))
        for name in chosen:
            self.discard(name)
        return chosen


def _decode_txt(props: Mapping[bytes, bytes | None]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in props.items():
        with contextlib.suppress(UnicodeDecodeError):
            out[k.decode()] = "" if v is None else v.decode()
    return out


class Discovery:
    """Announce ourselves and call `on_add(addr, txt)` / `on_remove(addr)` for peers of
    `mesh_id`, where addr is their gossip "host:port". Callbacks must not block."""

    def __init__(self, cfg: DiscoveryConfig, peer_id: str, txt: Mapping[str, str],
                 on_add: OnAdd, on_remove: OnRemove, mesh_id: str,
                 live: Callable[[str], bool] = lambda addr: False,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        self.cfg = cfg
        self.peer_id = peer_id
        self.mesh_id = mesh_id
        self._on_add = on_add
        self._on_remove = on_remove
        self._txt = self._full_txt(txt)
        self.running = False
        self.error: str | None = None
        self._aiozc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._info: AsyncServiceInfo | None = None
        self._clock = clock
        self._sightings = Sightings(cfg.max_sightings, cfg.sighting_grace_s, live)
        self._left = LeftOut(cfg.max_left_out, rng or random.Random())
        self.unresolved = 0  # sightings not looked up when seen: max_resolving were in flight
        self._tasks: set[asyncio.Task[None]] = set()
        self._resolving: set[str] = set()
        self._retrying: asyncio.Task[None] | None = None
        self._some_left_out = asyncio.Event()
        self._announcing: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """Our service instance name."""
        return f"{self.peer_id}.{self.cfg.service_type}"

    def peers(self) -> dict[str, str]:
        """Service name -> gossip address of the peers currently seen."""
        return self._sightings.peers()

    def health(self) -> dict[str, object]:
        """For /api/health: running, the error that stopped it, and what was left out."""
        return {"running": self.running, "error": self.error, "seen": len(self._sightings),
                "ignored": self._sightings.ignored, "unresolved": self.unresolved,
                "left_out": len(self._left)}

    def _full_txt(self, txt: Mapping[str, str]) -> dict[str, str]:
        full = {**txt, "id": self.peer_id, "v": str(PROTOCOL_VERSION), "mesh": self.mesh_id}
        if "gossip" not in full:
            raise ValueError("txt needs a gossip HOST:PORT")
        parse_addr(full["gossip"])
        for k, v in full.items():
            if len(k.encode()) + 1 + len(v.encode()) > 255:
                raise ValueError(f"TXT field {k} is too long (255 bytes max)")
        return full

    def _service_info(self) -> AsyncServiceInfo:
        host, port = parse_addr(self._txt["gossip"])
        addrs = [host] if host not in _WILDCARDS and _is_ip(host) else list(self.cfg.interfaces)
        return AsyncServiceInfo(
            self.cfg.service_type, self.name, port=port, properties=dict(self._txt),
            server=f"banzai-{self.peer_id}.local.", host_ttl=self.cfg.ttl_s,
            other_ttl=self.cfg.ttl_s, parsed_addresses=addrs)

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Browse at once and announce in the background (the probes before an announcement
        take about a second); never raises (see `.running` and `.error`)."""
        if self._aiozc is not None:
            return
        try:
            _check_interfaces(self.cfg.interfaces)
            ifaces: list[str] | InterfaceChoice = list(self.cfg.interfaces) or InterfaceChoice.All
            v4 = all(":" not in a for a in self.cfg.interfaces) and bool(self.cfg.interfaces)
            self._aiozc = AsyncZeroconf(interfaces=ifaces,
                                        ip_version=IPVersion.V4Only if v4 else None)
            self._info = self._service_info()
            self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, [self.cfg.service_type],
                                                handlers=[self._on_change])
        except Exception as e:  # zeroconf reports bad interfaces as OSError and others
            await self._disable(e)
            return
        self.running = True
        loop = asyncio.get_running_loop()
        self._announcing = loop.create_task(self._announce(self._info))
        self._retrying = loop.create_task(self._retry_left_out())

    async def _retry_left_out(self) -> None:
        """Every `retry_s` while some are left out (an idle peer does not wake for this),
        look again at names left out, as many as lookups may start."""
        while True:
            await self._some_left_out.wait()
            await asyncio.sleep(self.cfg.retry_s)
            for name in self._left.pick(self.cfg.max_resolving - len(self._tasks)):
                self._look_up(self.cfg.service_type, name)
            if not self._left:
                self._some_left_out.clear()

    def _leave_out(self, name: str) -> None:
        self._left.add(name)
        self._some_left_out.set()

    async def _announce(self, info: AsyncServiceInfo) -> None:
        assert self._aiozc is not None
        try:
            await self._aiozc.async_register_service(info)
        except Exception as e:
            await self._disable(e)

    async def _disable(self, e: Exception) -> None:
        self.error = f"{type(e).__name__}: {e}"
        log.warning("mDNS discovery disabled (%s); use --join HOST:PORT to find peers",
                    self.error)
        await self._shutdown()

    async def update(self, txt: Mapping[str, str]) -> None:
        """Replace our TXT record (e.g. free slots changed) and re-announce."""
        self._txt = self._full_txt(txt)
        if self._aiozc is None or not self.running:
            return
        self._info = self._service_info()
        try:
            if self._announcing is not None:
                await asyncio.shield(self._announcing)  # registered before it is updated
            await self._aiozc.async_update_service(self._info)
        except Exception as e:
            log.warning("mDNS update failed: %s", e)

    async def close(self) -> None:
        """Say goodbye (so peers drop us at once), stop browsing, release sockets."""
        await self._shutdown()

    async def __aenter__(self) -> Discovery:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _shutdown(self) -> None:
        self.running = False
        retrying, self._retrying = self._retrying, None
        if retrying is not None:
            retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await retrying
        announcing, self._announcing = self._announcing, None
        if announcing is not None and announcing is not asyncio.current_task():
            announcing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await announcing
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        aiozc, self._aiozc = self._aiozc, None
        if aiozc is None:
            return
        try:
            if self._browser is not None:
                await self._browser.async_cancel()
            await aiozc.async_unregister_all_services()
        except Exception as e:
            log.debug("mDNS shutdown: %s", e)
        finally:
            self._browser = None
            await aiozc.async_close()

    # -- browsing ----------------------------------------------------------------------
    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str,
                   state_change: ServiceStateChange) -> None:
        if name == self.name:
            return
        if state_change is ServiceStateChange.Removed:
            self._left.discard(name)
            addr = self._sightings.forget(name)
            if addr is not None:
                log.info("mDNS: peer %s gone (%s)", name.split(".")[0][:32], addr)
                self._on_remove(addr)
            return
        self._look_up(service_type, name)

    def _look_up(self, service_type: str, name: str) -> None:
        if name in self._resolving:
            return
        if len(self._tasks) >= self.cfg.max_resolving:
            self.unresolved += 1
            self._leave_out(name)
            return
        self._resolving.add(name)
        t = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        t.add_done_callback(lambda _: self._resolving.discard(name))

    async def _resolve(self, service_type: str, name: str) -> None:
        if self._aiozc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        if not await info.async_request(self._aiozc.zeroconf, self.cfg.resolve_timeout_ms):
            log.debug("mDNS: %s did not resolve", name)
            return
        txt = _decode_txt(info.properties)
        if txt.get("mesh") != self.mesh_id or txt.get("id") == self.peer_id:
            return  # another mesh on the same LAN, or ourselves
        addr = _gossip_addr(txt, info)
        if addr is None:
            log.info("mDNS: %s announces no usable gossip address", name)
            return
        taken, gone = self._sightings.see(name, addr, self._clock())
        for a in gone:
            self._on_remove(a)
        if taken:
            self._on_add(addr, {**txt, "addresses": ",".join(info.parsed_addresses())})
        elif len(self._sightings) >= self.cfg.max_sightings:  # (not: too many at its address)
            self._leave_out(name)


def _check_interfaces(addrs: Iterable[str]) -> None:
    """OSError naming the first address that is on no local interface (zeroconf would
    fail later and leak its listening socket)."""
    for a in addrs:
        fam = socket.AF_INET6 if ":" in a else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            try:
                s.bind((a, 0))
            except OSError as e:
                raise OSError(e.errno, f"{a} is not an address of this machine") from None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _gossip_addr(txt: Mapping[str, str], info: AsyncServiceInfo) -> str | None:
    """The TXT gossip address, with the host taken from the A records if it is a wildcard."""
    try:
        host, port = parse_addr(txt.get("gossip", ""))
    except ValueError:
        return None
    if host in _WILDCARDS:
        v4 = [a for a in info.parsed_addresses() if ":" not in a]
        if not v4:
            return None
        host = v4[0]
    return format_addr(host, port)


__all__ = ["SERVICE_TYPE", "Discovery", "DiscoveryConfig", "LeftOut", "Sightings", "build_txt",
           "mesh_hash"]

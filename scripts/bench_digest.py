"""In-process measure of the log's index (issue 11 item 3): an in-sync digest's
`events_after` and a fresh peer's catch-up paged 512 events per reply, over a history of
PROVIDE events from a few origins; and the digest sum an in-sync round exchanges (the heads'
hash and the content digest, peer.log.contents): its first computation, an in-sync read,
and a read after one more event. Run it with PYTHONPATH at the checkout to measure."""

from __future__ import annotations

import argparse
import time

from peer.log import Event, EventType, MeshState
from peer.log.signing import Identity, sign_events
from peer.mesh.antientropy import heads_sum

LIMIT = 512


def build(n: int, origins: int) -> MeshState:
    """The history, signed as a peer holds it (each event's content hash in its batch)."""
    s = MeshState()
    per = n // origins
    me = Identity.generate()
    for o in range(origins):
        evs = [Event(f"o{o}", q, (q << 16) + o, EventType.PROVIDE, {"cids": [f"c{o}-{q}"]})
               for q in range(1, per + 1)]
        sign_events(me, f"o{o}", evs, None)
        for e in evs:
            s.apply(e)
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--origins", type=int, default=4)
    a = ap.parse_args()
    s = build(a.events, a.origins)
    heads = dict(s.heads)
    t = time.perf_counter()
    runs = 20
    for _ in range(runs):
        assert not s.events_after(heads, LIMIT)
    in_sync_ms = (time.perf_counter() - t) / runs * 1000
    t = time.perf_counter()
    s.content_sum()
    first_sum_ms = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    for _ in range(runs):
        heads_sum(s.heads)
        s.content_sum()
    sum_ms = (time.perf_counter() - t) / runs * 1000
    t = time.perf_counter()
    for i in range(runs):  # one more event of one origin between two reads
        q = s.heads["o0"] + 1
        s.apply(Event("o0", q, (q << 16), EventType.PROVIDE, {"cids": [f"x{i}"]}))
        heads_sum(s.heads)
        s.content_sum()
    busy_sum_ms = (time.perf_counter() - t) / runs * 1000
    heads = dict(s.heads)
    vv: dict[str, int] = {}
    replies = 0
    t = time.perf_counter()
    while True:
        got = s.events_after(vv, LIMIT)
        if not got:
            break
        replies += 1
        for e in got:
            if e.seq == vv.get(e.origin, 0) + 1:
                vv[e.origin] = e.seq
        if replies > 10 and replies % 50 == 0 and time.perf_counter() - t > 120:
            break
    catch_s = time.perf_counter() - t
    print(f"events={len(s.events)} origins={a.origins} in_sync_events_after_ms={in_sync_ms:.3f} "
          f"in_sync_digest_sum_ms={sum_ms:.3f} first_content_sum_ms={first_sum_ms:.1f} "
          f"digest_sum_after_one_event_ms={busy_sum_ms:.3f} "
          f"catch_up_replies={replies} catch_up_serving_s={catch_s:.2f} "
          f"caught_up={vv == heads}")


if __name__ == "__main__":
    main()

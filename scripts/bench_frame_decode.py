"""Per-frame CPU of the executor's decoding of worker frames, in one process (no workers):
base (pickle.loads, then json.loads of a done frame's result, as _on_done did) vs head
(_decode: pickle.loads, every field checked, json.loads). Run with PYTHONPATH set to the
tree to measure; prints microseconds per frame, best of 5 x 200,000 calls."""

from __future__ import annotations

import json
import pickle
import timeit
from collections.abc import Callable
from functools import partial

from peer.jobs import executor

P = pickle.HIGHEST_PROTOCOL
CID = "bafy" + "x" * 55
FRAMES = {
    "progress": pickle.dumps(("m", 7, "progress", (0.5,)), P),
    "items": pickle.dumps(("m", 7, "items", ([["a/b.wav", CID, {"n": "b.npy", "c": CID}]] * 16,)),
                          P),
    "done": pickle.dumps(("done", 7, True, json.dumps({"output": CID, "bytes": 123}), None, None,
                          "ok"), P),
}


def base(frame: bytes) -> None:
    msg = pickle.loads(frame)
    if msg[0] == "done":
        json.loads(msg[3])


def main() -> None:
    decode: Callable[[bytes, int], object] | None = getattr(executor, "_decode", None)
    for name, frame in FRAMES.items():
        run = partial(base, frame) if decode is None else partial(decode, frame, 0)
        n = 200_000
        best = min(timeit.repeat(run, number=n, repeat=5)) / n * 1e6
        print(f"{'base' if decode is None else 'head'} {name}: {best:.3f} us/frame")


if __name__ == "__main__":
    main()

"""Run by test_kinds inside a network namespace of its own (`unshare --net`): one container
task through the container kind's worker side with the given network settings; prints the
interfaces the container saw (JSON)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from peer.jobs import kinds
from peer.jobs.kind_container import invoke


class Ctx:
    fetch_allow: tuple[str, ...] = ()

    def __init__(self, workdir: Path, allow: bool) -> None:
        self.workdir = workdir
        self.kind_settings = kinds.peer_settings(log_max_bytes=4096, secrets={},
                                                 runtime="podman", network=allow,
                                                 owner="net-probe")

    def progress(self, fraction: float) -> None: ...
    def log(self, message: str) -> None: ...
    def metric(self, name: str, step: int, value: float) -> None: ...


def main() -> None:
    image, asked, allowed = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
    with tempfile.TemporaryDirectory() as d:
        out = Path(d, "output")
        out.mkdir()
        params = {"image": image, "command": ["sh", "-c", "ls /sys/class/net > /out/net"],
                  "env": {}, "stdin": "", "network": asked, "mem_mb": None, "cpus": None}
        invoke(kinds.KIND_TASKS["container"], Ctx(Path(d), allowed), None, out,  # type: ignore[arg-type]
               params)
        print(json.dumps((out / "net").read_text().split()))


if __name__ == "__main__":
    main()
